"""Pseudo labelling: confident-row selection, where each fold's pseudo labels come from, the leak that
inflates CV, and runs on the bundled samples and real data."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from roadmap import metrics
from stage2_kaggle import pseudo_labeling


# ---------------------------------------------------------------- selecting confident rows


def test_select_confident_keeps_the_most_confident_fraction():
    confidence = np.array([0.1, 0.9, 0.5, 0.7, 0.3])
    assert pseudo_labeling.select_confident(confidence, 0.4).tolist() == [1, 3]


def test_select_confident_rounds_up_and_skips_ineligible_rows():
    confidence = np.array([0.1, 0.9, -np.inf, 0.7, 0.3])
    eligible = np.array([True, False, True, True, True])
    # 合格且有限的是第 0、3、4 行；一半向上取整是 2 行
    assert pseudo_labeling.select_confident(confidence, 0.5, eligible).tolist() == [3, 4]


def test_split_rows_partitions_rows():
    pool, holdout, rest = pseudo_labeling.split_rows(100, (0.3, 0.2), seed=0)
    assert (len(pool), len(holdout), len(rest)) == (30, 20, 50)
    assert sorted(np.concatenate([pool, holdout, rest]).tolist()) == list(range(100))


# ---------------------------------------------------------------- a toy task whose models record their rows


class RecordingTask:
    """1-nearest-neighbour regression on one number x; every fitted model gets a serial and remembers its rows.

    1-NN memorises its training rows, which makes the leak easy to see.
    """

    def __init__(self):
        self.models = []

    def fit(self, rows):
        from sklearn.neighbors import KNeighborsRegressor

        model = KNeighborsRegressor(n_neighbors=1).fit([[row["x"]] for row in rows], [row["target"] for row in rows])
        model.serial = len(self.models)
        model.labelled_ids = {row["id"] for row in rows if not row.get("pseudo")}
        model.pseudo_sources = [row["source"] for row in rows if row.get("pseudo")]
        self.models.append(model)
        return model

    def predict(self, model, rows):
        return [(float(value), model.serial) for value in model.predict([[row["x"]] for row in rows])]

    def task(self):
        return pseudo_labeling.Task(
            metric="rmse", higher_is_better=False, id_key="id", fit=self.fit, predict=self.predict,
            average=lambda predictions: [(float(np.mean([value for value, _ in row])), -1) for row in zip(*predictions)],
            score=lambda predictions, rows: metrics.rmse([value for value, _ in predictions], [row["target"] for row in rows]),
            pseudo_row=lambda row, prediction: {**row, "target": prediction[0], "source": prediction[1], "pseudo": True},
            confidence=lambda _labels, committee: -np.std([[value for value, _ in p] for p in committee], axis=0),
            committee=True)


def toy_data(seed=0, n=200, n_folds=5):
    """Targets independent of x (nothing to learn); the pool contains near-copies of the labelled rows."""
    rng = np.random.default_rng(seed)
    x = rng.permutation(n).astype(float)
    labelled = [{"id": f"l{index}", "x": x[index], "target": float(rng.normal())} for index in range(n)]
    pool = [{"id": f"p{index}", "x": x[index] + 0.01} for index in range(n)]
    holdout = [{"id": f"h{index}", "x": float(value) + 0.5, "target": float(rng.normal())}
               for index, value in enumerate(rng.permutation(n)[:50])]
    return labelled, pool, holdout, np.arange(n) % n_folds


def test_honest_teacher_never_saw_fold():
    recorder = RecordingTask()
    labelled, pool, holdout, folds = toy_data()
    pseudo_labeling.pseudo_label_experiment(recorder.task(), labelled, folds, pool, holdout, keep_fraction=1.0,
                                            variants=("honest",))
    students = [model for model in recorder.models if model.pseudo_sources]
    assert len(students) == 5
    for student in students:
        validation_ids = {row["id"] for row in labelled} - student.labelled_ids
        assert len(validation_ids) == 40
        teachers = {recorder.models[serial] for serial in student.pseudo_sources}
        assert len(teachers) == 1
        for teacher in teachers:
            assert not teacher.labelled_ids & validation_ids


def test_leaky_teacher_saw_fold():
    recorder = RecordingTask()
    labelled, pool, holdout, folds = toy_data()
    pseudo_labeling.pseudo_label_experiment(recorder.task(), labelled, folds, pool, holdout, keep_fraction=1.0,
                                            variants=("leaky",))
    for student in (model for model in recorder.models if model.pseudo_sources):
        validation_ids = {row["id"] for row in labelled} - student.labelled_ids
        teacher = recorder.models[student.pseudo_sources[0]]
        assert validation_ids <= teacher.labelled_ids


def test_reported_sources_match_recorded_rows():
    labelled, pool, holdout, folds = toy_data()
    result = pseudo_labeling.pseudo_label_experiment(RecordingTask().task(), labelled, folds, pool, holdout,
                                                     keep_fraction=0.5)
    for fold, source in enumerate(result["honest"]["sources"]):
        validation_ids = {row["id"] for row, k in zip(labelled, folds) if k == fold}
        assert source["models"][0] == f"teacher_{fold}"
        assert len(source["models"]) == 5  # teacher + 4 个内层模型组成委员会
        for name in source["models"]:
            assert not result["trained_on"][name] & validation_ids
        assert source["models_saw_fold"] is False
    assert all(source["models_saw_fold"] for source in result["leaky"]["sources"])


def test_inner_committee_models_leave_out_two_folds():
    labelled, pool, holdout, folds = toy_data()
    result = pseudo_labeling.pseudo_label_experiment(RecordingTask().task(), labelled, folds, pool, holdout,
                                                     variants=("honest",))
    for k, j in itertools.permutations(range(5), 2):
        trained = result["trained_on"][f"inner_{k}_{j}"]
        expected = {row["id"] for row, fold in zip(labelled, folds) if fold not in (k, j)}
        assert trained == expected


def test_leak_inflates_cv_not_holdout():
    labelled, pool, holdout, folds = toy_data()
    result = pseudo_labeling.pseudo_label_experiment(RecordingTask().task(), labelled, folds, pool, holdout,
                                                     keep_fraction=1.0)
    baseline, honest, leaky = result["baseline"], result["honest"], result["leaky"]
    # 目标与 x 无关，没有可学的东西：不泄漏时 CV 约为 sqrt(2)（两个独立 N(0,1) 之差）；
    # 泄漏的伪标签把第 k 折的真值带回来，CV 接近 0
    assert baseline["cv"] > 1.2
    assert honest["cv"] > 1.2
    assert leaky["cv"] < 0.1
    assert leaky["holdout"] > 1.0  # 换一批没见过的数据，泄漏的"提升"就没了


# ---------------------------------------------------------------- the script


def test_smoke_run_reports_every_variant(tmp_path):
    output = tmp_path / "run"
    result = pseudo_labeling.main(["--smoke", "--output-dir", str(output)])
    for name in ("baseline", "honest", "leaky"):
        assert np.isfinite(result[f"{name}_cv_rmse"])
        assert np.isfinite(result[f"{name}_holdout_rmse"])
    assert result["honest_sources_saw_validation_fold"] == [False] * 3
    assert result["leaky_sources_saw_validation_fold"] == [True] * 3
    assert result["pool_is_simulated"] is True
    assert (output / "cv_vs_holdout.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((output / "config.json").read_text(encoding="utf-8"))["smoke"] is True


def test_fractions_outside_zero_one_are_rejected(tmp_path):
    with pytest.raises(SystemExit):
        pseudo_labeling.main(["--smoke", "--keep-fraction", "1.5", "--output-dir", str(tmp_path)])


# ---------------------------------------------------------------- real data


@pytest.mark.real
def test_pseudo_labels_on_real_commonlit(real_data_dir, tmp_path):
    result = pseudo_labeling.main(["--data-dir", str(real_data_dir), "--competition", "commonlit",
                                   "--max-train-samples", "1200", "--output-dir", str(tmp_path)])
    assert result["n_labelled"] == 600
    assert result["n_pool"] == 360
    assert result["honest_sources_saw_validation_fold"] == [False] * 5
    assert result["leaky_sources_saw_validation_fold"] == [True] * 5
    assert result["baseline_cv_rmse"] < 0.86  # 测得 0.830
    assert result["honest_holdout_rmse"] < 0.87  # 测得 0.836


@pytest.mark.real
def test_pseudo_labels_on_real_tweets(real_data_dir, tmp_path):
    result = pseudo_labeling.main(["--data-dir", str(real_data_dir), "--competition", "tweet", "--n-folds", "3",
                                   "--max-train-samples", "1000", "--max-pool-samples", "600",
                                   "--output-dir", str(tmp_path)])
    assert result["n_labelled"] == 800
    assert result["n_pool"] == 600
    assert result["honest_sources_saw_validation_fold"] == [False] * 3
    assert result["baseline_cv_jaccard"] > 0.57  # 测得 0.594
    assert result["honest_holdout_jaccard"] > 0.56  # 测得 0.588
