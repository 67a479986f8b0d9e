"""Blend weights on out-of-fold predictions: the simplex constraint, known optima, brute-force references,
the nested check, the run-folder checks, and a real-data blend."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from roadmap import metrics
from roadmap.data import DataFormatError
from stage2_kaggle import ensemble

# ---------------------------------------------------------------- synthetic run folders


def write_commonlit_run(folder, ids, folds, targets, predictions, test_ids, test_predictions, model="model"):
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": ids, "fold": folds, "target": targets, "prediction": predictions}).to_csv(folder / "oof.csv", index=False)
    pd.DataFrame({"id": test_ids, "prediction": test_predictions}).to_csv(folder / "test_predictions.csv", index=False)
    (folder / "metrics.json").write_text(json.dumps({"model": model}), encoding="utf-8")
    return folder


def commonlit_runs(tmp_path, n=300, seed=0, noise=(0.3, 0.6), folds=5):
    """Two unbiased models of one target with independent noise of the given standard deviations."""
    rng = np.random.default_rng(seed)
    targets = rng.normal(size=n)
    ids = [f"r{index:04d}" for index in range(n)]
    fold_ids = np.arange(n) % folds
    test_ids = [f"t{index}" for index in range(7)]
    return [write_commonlit_run(tmp_path / f"m{k}", ids, fold_ids, targets, targets + rng.normal(scale=scale, size=n),
                                test_ids, rng.normal(size=7), model=f"m{k}")
            for k, scale in enumerate(noise)]


def random_probs(rng, words, peak=None):
    probs = rng.random(words) + 0.05
    if peak is not None:
        probs[peak] += 3.0
    return probs / probs.sum()


def tweet_rows(rng, n):
    vocabulary = ["good", "bad", "day", "so", "sad", "happy", "it", "is", "the", "love", "hate", "what", "a", "fun"]
    rows = []
    for index in range(n):
        words = list(rng.choice(vocabulary, size=int(rng.integers(3, 9))))
        start = int(rng.integers(0, len(words)))
        end = int(rng.integers(start, len(words)))
        sentiment = ["positive", "negative", "neutral"][index % 3]
        rows.append({"textID": f"id{index}", "text": " ".join(words), "sentiment": sentiment,
                     "selected_text": " ".join(words[start:end + 1]), "span": (start, end)})
    return rows


def write_tweet_run(folder, rows, folds, probs, test_rows, test_probs, model="model"):
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "oof.jsonl").open("w", encoding="utf-8") as handle:
        for row, fold, (start, end) in zip(rows, folds, probs):
            handle.write(json.dumps({"textID": row["textID"], "fold": int(fold), "sentiment": row["sentiment"],
                                     "text": row["text"], "selected_text": row["selected_text"],
                                     "start_probs": list(start), "end_probs": list(end), "prediction": ""}) + "\n")
    with (folder / "test_predictions.jsonl").open("w", encoding="utf-8") as handle:
        for row, (start, end) in zip(test_rows, test_probs):
            handle.write(json.dumps({"textID": row["textID"], "sentiment": row["sentiment"], "text": row["text"],
                                     "start_probs": list(start), "end_probs": list(end), "prediction": ""}) + "\n")
    (folder / "metrics.json").write_text(json.dumps({"model": model}), encoding="utf-8")
    return folder


def noisy_span_probs(rng, rows, hit_rate):
    """Probabilities that peak at the true span on about `hit_rate` of the rows, elsewhere at random words."""
    probs = []
    for row in rows:
        words = len(row["text"].split())
        hit = rng.random() < hit_rate
        start, end = row["span"] if hit else (int(rng.integers(0, words)), int(rng.integers(0, words)))
        probs.append((random_probs(rng, words, start), random_probs(rng, words, end)))
    return probs


def tweet_runs(tmp_path, n=120, seed=0, hit_rates=(0.7, 0.5)):
    rng = np.random.default_rng(seed)
    rows, test_rows = tweet_rows(rng, n), tweet_rows(rng, 9)
    for row in test_rows:
        row["textID"] = "test-" + row["textID"]
    folds = np.arange(n) % 4
    return [write_tweet_run(tmp_path / f"t{k}", rows, folds, noisy_span_probs(rng, rows, rate), test_rows,
                            noisy_span_probs(rng, test_rows, rate), model=f"t{k}")
            for k, rate in enumerate(hit_rates)]


def reference_decode(text, start_probs, end_probs, sentiment):
    """Brute force over every (s, e) with s <= e, the rule of the prediction-file contract."""
    words = text.split()
    if sentiment == "neutral" or not words:
        return text
    pairs = [(s, e) for s in range(len(words)) for e in range(s, len(words))]
    s, e = max(pairs, key=lambda pair: (start_probs[pair[0]] * end_probs[pair[1]], -pair[0], -pair[1]))
    return " ".join(words[s:e + 1])


def rmse_of(predictions, targets, weights):
    return float(np.sqrt(np.mean((predictions @ weights - targets) ** 2)))


# ---------------------------------------------------------------- the simplex and the weight search


def test_simplex_grid_on_simplex():
    grid = ensemble.simplex_grid(3, 0.1)
    assert grid.shape == (66, 3)  # C(10 + 2, 2)
    assert np.allclose(grid.sum(axis=1), 1.0)
    assert (grid >= 0).all()
    assert len({tuple(point) for point in np.round(grid, 9)}) == 66


def test_simplex_grid_rejects_uneven_step():
    with pytest.raises(ValueError):
        ensemble.simplex_grid(2, 0.3)


def test_rmse_weights_sum_to_one_and_are_nonnegative():
    rng = np.random.default_rng(1)
    targets = rng.normal(size=500)
    error = rng.normal(size=500)
    # p2 的误差是 p1 的两倍、方向相同：只要求和为 1 时最优是 w = (2, -1)（误差互相抵消），加上 w >= 0 后是 (1, 0)
    predictions = np.column_stack([targets + error, targets + 2 * error + rng.normal(scale=0.1, size=500)])
    unconstrained = np.linalg.lstsq(predictions - predictions[:, [1]], targets - predictions[:, 1], rcond=None)[0]
    assert unconstrained[0] > 1.5  # 没有 w >= 0 时第二个权重是负的
    weights = ensemble.fit_rmse_weights(predictions, targets)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)
    assert (weights >= 0).all()
    assert weights[1] == pytest.approx(0.0, abs=1e-6)


def test_rmse_weights_inverse_variance():
    # 两个无偏预测、独立噪声方差 a、b：mean((w e1 + (1-w) e2)^2) = w^2 a + (1-w)^2 b 在 w = b/(a+b) 取最小
    rng = np.random.default_rng(2)
    a, b, n = 1.0, 4.0, 200_000
    targets = rng.normal(size=n)
    predictions = np.column_stack([targets + rng.normal(scale=np.sqrt(a), size=n),
                                   targets + rng.normal(scale=np.sqrt(b), size=n)])
    weights = ensemble.fit_rmse_weights(predictions, targets)
    assert weights[0] == pytest.approx(b / (a + b), abs=0.01)
    assert weights[1] == pytest.approx(a / (a + b), abs=0.01)


@pytest.mark.parametrize("n_models, step", [(2, 0.005), (3, 0.02)])
def test_rmse_weights_beat_brute_force_grid(n_models, step):
    rng = np.random.default_rng(3)
    targets = rng.normal(size=400)
    predictions = np.column_stack([targets * rng.uniform(0.5, 1.5) + rng.normal(scale=rng.uniform(0.3, 1.0), size=400)
                                   for _ in range(n_models)])
    weights = ensemble.fit_rmse_weights(predictions, targets)
    parts = round(1 / step)
    grid = [np.array(c) / parts for c in itertools.product(range(parts + 1), repeat=n_models) if sum(c) == parts]
    grid_best = min(grid, key=lambda w: rmse_of(predictions, targets, w))
    assert rmse_of(predictions, targets, weights) <= rmse_of(predictions, targets, grid_best) + 1e-12
    assert np.abs(weights - grid_best).max() <= step + 1e-9


def test_grid_search_matches_brute_force():
    def score(w):  # 不可导、最大值在 (0.3, 0.45, 0.25)
        return -abs(w[0] - 0.3) - 2 * abs(w[1] - 0.45) - 0.5 * abs(w[2] - 0.25)

    found = ensemble.search_simplex(score, 3, step=0.05)
    brute = max((np.array([i, j, 20 - i - j]) / 20 for i in range(21) for j in range(21 - i)), key=score)
    assert np.allclose(found, brute)
    assert np.allclose(found, [0.3, 0.45, 0.25])


def test_coordinate_search_finds_optimum():
    target = np.array([0.1, 0.5, 0.0, 0.4])

    def score(w):
        return -np.abs(w - target).sum()

    found = ensemble.search_simplex(score, 4, step=0.05, max_grid_models=3)
    assert found.sum() == pytest.approx(1.0)
    assert (found >= 0).all()
    assert np.abs(found - target).max() <= 0.025


# ---------------------------------------------------------------- the two blends


def test_regression_blend_beats_best_single():
    for seed in range(5):
        rng = np.random.default_rng(seed)
        targets = rng.normal(size=200)
        predictions = np.column_stack([targets + rng.normal(scale=rng.uniform(0.1, 1), size=200) for _ in range(3)])
        blend = ensemble.RegressionBlend(predictions, targets)
        weights = blend.fit(np.ones(200, dtype=bool))
        best_single = min(blend.aggregate(blend.row_values(vertex)) for vertex in np.eye(3))
        assert blend.aggregate(blend.row_values(weights)) <= best_single + 1e-12


def _span_blend(tmp_path, hit_rates, n=90, seed=0):
    folders = tweet_runs(tmp_path, n=n, seed=seed, hit_rates=hit_rates)
    model_runs = [ensemble.read_tweet_run(folder) for folder in folders]
    return model_runs, ensemble.SpanBlend([run.oof for run in model_runs], model_runs[0].rows, reference_decode,
                                          step=0.1)


def test_span_blend_matches_brute_force_over_the_grid(tmp_path):
    model_runs, blend = _span_blend(tmp_path, (0.6, 0.5, 0.4))
    weights = blend.fit(np.ones(len(model_runs[0].ids), dtype=bool))

    def brute_force_jaccard(w):
        scores = []
        for index, row in enumerate(model_runs[0].rows):
            start = sum(wk * run.oof[index][0] for wk, run in zip(w, model_runs))
            end = sum(wk * run.oof[index][1] for wk, run in zip(w, model_runs))
            scores.append(metrics.word_jaccard(reference_decode(row["text"], start, end, row["sentiment"]),
                                               row["selected_text"]))
        return float(np.mean(scores))

    grid = [np.array([i, j, 10 - i - j]) / 10 for i in range(11) for j in range(11 - i)]
    best = max(brute_force_jaccard(w) for w in grid)
    assert weights.sum() == pytest.approx(1.0)
    assert blend.aggregate(blend.row_values(weights)) == pytest.approx(best, abs=1e-12)


def test_span_blend_beats_best_single(tmp_path):
    model_runs, blend = _span_blend(tmp_path, (0.7, 0.5))
    weights = blend.fit(np.ones(len(model_runs[0].ids), dtype=bool))
    best_single = max(blend.aggregate(blend.row_values(vertex)) for vertex in np.eye(2))
    assert blend.aggregate(blend.row_values(weights)) >= best_single


def test_span_blend_prefers_perfect_model(tmp_path):
    model_runs, blend = _span_blend(tmp_path, (1.0, 0.0))
    weights = blend.fit(np.ones(len(model_runs[0].ids), dtype=bool))
    # 非 neutral 的行解出的正是标注片段（Jaccard 1）；neutral 的行按规则返回全文
    best_possible = np.mean([metrics.word_jaccard(row["text"], row["selected_text"]) if row["sentiment"] == "neutral"
                             else 1.0 for row in model_runs[0].rows])
    assert weights[0] >= 0.5
    assert blend.aggregate(blend.row_values(weights)) == pytest.approx(best_possible)


def test_nested_weights_exclude_own_fold():
    # 第 0 折上模型 A 完美、B 很差；其余折反过来。只看其余折挑权重时，第 0 折的权重几乎全给 B。
    rng = np.random.default_rng(4)
    n = 500
    folds = np.arange(n) % 5
    targets = rng.normal(size=n)
    model_a = np.where(folds == 0, targets, targets + rng.normal(scale=1.0, size=n))
    model_b = np.where(folds == 0, targets + rng.normal(scale=1.0, size=n), targets)
    blend = ensemble.RegressionBlend(np.column_stack([model_a, model_b]), targets)
    result = ensemble.evaluate_blend(blend, folds, ["a", "b"])
    assert result["fold_weights"][0]["b"] > 0.95
    assert result["fold_weights"][1]["b"] < result["fold_weights"][0]["b"]
    assert result["blend_nested"] > result["blend_in_sample"]  # 样本内的 RMSE 偏乐观
    assert sum(result["weights"].values()) == pytest.approx(1.0)


# ---------------------------------------------------------------- run folders: reading and checking


def test_align_runs_reorders_rows_by_id(tmp_path):
    first, second = commonlit_runs(tmp_path)
    frame = pd.read_csv(second / "oof.csv", dtype={"id": str}).sample(frac=1.0, random_state=0)
    frame.to_csv(second / "oof.csv", index=False)
    runs = ensemble.align_runs([ensemble.read_commonlit_run(first), ensemble.read_commonlit_run(second)], [first, second])
    original = pd.read_csv(second / "oof.csv", dtype={"id": str}).set_index("id").loc[runs[0].ids, "prediction"]
    assert np.allclose(runs[1].oof, original.to_numpy())
    assert runs[1].ids == runs[0].ids


def test_mismatched_ids_raise(tmp_path):
    first, second = commonlit_runs(tmp_path)
    frame = pd.read_csv(second / "oof.csv", dtype={"id": str})
    frame.loc[0, "id"] = "someone-else"
    frame.to_csv(second / "oof.csv", index=False)
    with pytest.raises(DataFormatError, match="id 不一致"):
        ensemble.align_runs([ensemble.read_commonlit_run(first), ensemble.read_commonlit_run(second)], [first, second])


def test_mismatched_folds_raise(tmp_path):
    first, second = commonlit_runs(tmp_path)
    frame = pd.read_csv(second / "oof.csv", dtype={"id": str})
    frame["fold"] = (frame["fold"] + 1) % 5
    frame.to_csv(second / "oof.csv", index=False)
    with pytest.raises(DataFormatError, match="折"):
        ensemble.align_runs([ensemble.read_commonlit_run(first), ensemble.read_commonlit_run(second)], [first, second])


def test_mismatched_test_ids_raise(tmp_path):
    first, second = commonlit_runs(tmp_path)
    frame = pd.read_csv(second / "test_predictions.csv", dtype={"id": str}).iloc[1:]
    frame.to_csv(second / "test_predictions.csv", index=False)
    with pytest.raises(DataFormatError, match="测试集"):
        ensemble.align_runs([ensemble.read_commonlit_run(first), ensemble.read_commonlit_run(second)], [first, second])


def test_tweet_probs_length_checked(tmp_path):
    folder = tweet_runs(tmp_path)[0]
    lines = (folder / "oof.jsonl").read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[0])
    record["start_probs"] = record["start_probs"][:-1]
    (folder / "oof.jsonl").write_text("\n".join([json.dumps(record), *lines[1:]]) + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="个词"):
        ensemble.read_tweet_run(folder)


def test_missing_prediction_file_raises(tmp_path):
    folder = commonlit_runs(tmp_path)[0]
    (folder / "test_predictions.csv").unlink()
    with pytest.raises(DataFormatError, match="缺少 test_predictions.csv"):
        ensemble.read_commonlit_run(folder)


# ---------------------------------------------------------------- main() on synthetic folders


def test_main_blends_commonlit_runs(tmp_path):
    folders = commonlit_runs(tmp_path, noise=(0.3, 0.6))
    output = tmp_path / "blend"
    result = ensemble.main(["--competition", "commonlit", "--runs", *map(str, folders), "--output-dir", str(output)])
    assert sum(result["weights"].values()) == pytest.approx(1.0)
    # 噪声标准差 0.3、0.6：方差 0.09、0.36，最优权重约 0.8 / 0.2
    assert result["weights"]["m0"] == pytest.approx(0.8, abs=0.08)
    assert result["blend_in_sample"] <= min(result["single"].values())
    submission = pd.read_csv(output / "submission.csv")
    assert list(submission.columns) == ["id", "target"]
    assert len(submission) == 7
    assert list(pd.read_csv(output / "oof.csv").columns) == ["id", "fold", "target", "prediction"]
    assert len(result["fold_weights"]) == 5
    assert (output / "weight_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert (output / "blend_vs_single.png").is_file()


def test_main_blends_tweet_runs(tmp_path):
    folders = tweet_runs(tmp_path, hit_rates=(0.7, 0.5))
    output = tmp_path / "blend"
    result = ensemble.main(["--competition", "tweet", "--runs", *map(str, folders), "--output-dir", str(output)])
    assert sum(result["weights"].values()) == pytest.approx(1.0)
    assert result["blend_in_sample"] >= max(result["single"].values())
    submission = pd.read_csv(output / "submission.csv", keep_default_na=False)
    assert list(submission.columns) == ["textID", "selected_text"]
    assert len(submission) == 9
    oof = [json.loads(line) for line in (output / "oof.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(oof) == 120
    jaccard = np.mean([metrics.word_jaccard(row["prediction"], row["selected_text"]) for row in oof])
    assert jaccard == pytest.approx(result["blend_in_sample"], abs=1e-9)


def test_main_requires_two_runs_without_smoke(tmp_path):
    with pytest.raises(SystemExit):
        ensemble.main(["--runs", str(tmp_path), "--output-dir", str(tmp_path / "out")])


# ---------------------------------------------------------------- real data


@pytest.mark.real
def test_blend_of_two_tfidf_runs_on_real_commonlit(real_data_dir, tmp_path):
    from stage2_kaggle import commonlit_readability as commonlit

    common = ["--data-dir", str(real_data_dir), "--model", "tfidf", "--max-train-samples", "800", "--n-folds", "5"]
    commonlit.main([*common, "--output-dir", str(tmp_path / "bigram"), "--alpha", "1", "--ngram-max", "2"])
    commonlit.main([*common, "--output-dir", str(tmp_path / "unigram"), "--alpha", "3", "--ngram-max", "1"])
    result = ensemble.main(["--competition", "commonlit", "--runs", str(tmp_path / "bigram"), str(tmp_path / "unigram"),
                            "--output-dir", str(tmp_path / "blend")])
    assert result["n_train"] == 800
    assert sum(result["weights"].values()) == pytest.approx(1.0)
    assert result["blend_in_sample"] <= min(result["single"].values())
    assert result["blend_nested"] < 0.83  # 测得 0.805（2 核 CPU）


@pytest.mark.real
def test_blend_of_two_tfidf_runs_on_real_tweets(real_data_dir, tmp_path):
    from stage2_kaggle import tweet_sentiment_extraction as tweet

    common = ["--data-dir", str(real_data_dir), "--model", "tfidf", "--max-train-samples", "900", "--n-folds", "3",
              "--max-test-samples", "100"]
    tweet.main([*common, "--output-dir", str(tmp_path / "c3"), "--tfidf-c", "3"])
    tweet.main([*common, "--output-dir", str(tmp_path / "c03"), "--tfidf-c", "0.3"])
    result = ensemble.main(["--competition", "tweet", "--runs", str(tmp_path / "c3"), str(tmp_path / "c03"),
                            "--output-dir", str(tmp_path / "blend")])
    assert result["n_train"] == 900
    assert result["blend_in_sample"] >= max(result["single"].values())
    assert result["blend_nested"] > 0.57  # 测得 0.588
    assert len(pd.read_csv(tmp_path / "blend" / "submission.csv")) == 100


def test_smoke_with_runs_is_rejected(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        ensemble.main(["--smoke", "--runs", str(tmp_path / "a"), str(tmp_path / "b"), "--output-dir", str(tmp_path / "run")])
    assert raised.value.code == 2
    assert "会忽略 --runs" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
