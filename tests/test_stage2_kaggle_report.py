"""stage2_kaggle/competition_report.py: submission checks, run reading, worst predictions, the report itself."""

from __future__ import annotations

import csv
import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from roadmap import metrics
from stage2_kaggle import competition_report as report

COMMONLIT_IDS = ["c1", "c2", "c3"]
TWEET_IDS = ["t1", "t2", "t3"]


def write_csv(path, rows):
    with open(path, "w", encoding="utf-8", newline="") as stream:
        csv.writer(stream).writerows(rows)
    return path


# ---------------------------------------------------------------- validate_submission


def test_valid_commonlit_submission_is_accepted(tmp_path):
    path = write_csv(tmp_path / "s.csv", [["id", "target"], ["c1", "-0.5"], ["c2", "1e-3"], ["c3", "2"]])
    check = report.validate_submission(path, "commonlit", COMMONLIT_IDS)
    assert check.valid, check.problems
    assert check.rows == 3


def test_tweet_submission_with_quotes_valid(tmp_path):
    path = write_csv(tmp_path / "s.csv", [["textID", "selected_text"], ["t1", 'so "good", really'],
                                          ["t2", "sad"], ["t3", " whole tweet, kept "]])
    check = report.validate_submission(path, "tweet", TWEET_IDS)
    assert check.valid, check.problems


def test_rows_in_another_order_are_accepted(tmp_path):
    path = write_csv(tmp_path / "s.csv", [["id", "target"], ["c3", "0"], ["c1", "0"], ["c2", "0"]])
    assert report.validate_submission(path, "commonlit", COMMONLIT_IDS).valid


COMMONLIT_BAD = {
    "wrong column name": ([["id", "prediction"], ["c1", "0"], ["c2", "0"], ["c3", "0"]], "列应当是"),
    "columns swapped": ([["target", "id"], ["0", "c1"], ["0", "c2"], ["0", "c3"]], "列应当是"),
    "extra column": ([["id", "target", "fold"], ["c1", "0", "0"], ["c2", "0", "1"], ["c3", "0", "2"]], "列应当是"),
    "missing id": ([["id", "target"], ["c1", "0"], ["c2", "0"]], "缺少 1 个"),
    "extra id": ([["id", "target"], ["c1", "0"], ["c2", "0"], ["c3", "0"], ["c4", "0"]], "多出 1 个"),
    "duplicate id": ([["id", "target"], ["c1", "0"], ["c2", "0"], ["c3", "0"], ["c3", "1"]], "重复"),
    "NaN target": ([["id", "target"], ["c1", "0"], ["c2", "nan"], ["c3", "0"]], "不是有限的数字"),
    "empty target": ([["id", "target"], ["c1", "0"], ["c2", ""], ["c3", "0"]], "不是有限的数字"),
    "text target": ([["id", "target"], ["c1", "0"], ["c2", "easy"], ["c3", "0"]], "不是有限的数字"),
    "infinite target": ([["id", "target"], ["c1", "0"], ["c2", "inf"], ["c3", "0"]], "不是有限的数字"),
    "short row": ([["id", "target"], ["c1", "0"], ["c2"], ["c3", "0"]], "字段数"),
    "no header": ([], "空"),
}


@pytest.mark.parametrize("case", COMMONLIT_BAD, ids=list(COMMONLIT_BAD))
def test_bad_commonlit_submission_is_rejected(tmp_path, case):
    rows, message = COMMONLIT_BAD[case]
    check = report.validate_submission(write_csv(tmp_path / "s.csv", rows), "commonlit", COMMONLIT_IDS)
    assert not check.valid
    assert any(message in problem for problem in check.problems), check.problems


TWEET_BAD = {
    "commonlit columns": ([["id", "target"], ["t1", "a"], ["t2", "b"], ["t3", "c"]], "列应当是"),
    "missing id": ([["textID", "selected_text"], ["t1", "a"], ["t3", "c"]], "缺少 1 个"),
    "extra id": ([["textID", "selected_text"], ["t1", "a"], ["t2", "b"], ["t3", "c"], ["x9", "d"]], "多出 1 个"),
    "duplicate id": ([["textID", "selected_text"], ["t1", "a"], ["t1", "a"], ["t2", "b"], ["t3", "c"]], "重复"),
    "empty text": ([["textID", "selected_text"], ["t1", "a"], ["t2", ""], ["t3", "c"]], "是空的"),
    "blank text": ([["textID", "selected_text"], ["t1", "a"], ["t2", "   "], ["t3", "c"]], "是空的"),
}


@pytest.mark.parametrize("case", TWEET_BAD, ids=list(TWEET_BAD))
def test_bad_tweet_submission_is_rejected(tmp_path, case):
    rows, message = TWEET_BAD[case]
    check = report.validate_submission(write_csv(tmp_path / "s.csv", rows), "tweet", TWEET_IDS)
    assert not check.valid
    assert any(message in problem for problem in check.problems), check.problems


def test_every_problem_of_a_file_is_listed(tmp_path):
    rows = [["id", "target"], ["c1", "nan"], ["c1", "0"], ["c9", "0"]]
    problems = report.validate_submission(write_csv(tmp_path / "s.csv", rows), "commonlit", COMMONLIT_IDS).problems
    assert len(problems) == 4  # duplicate c1, missing c2/c3, extra c9, NaN


def test_missing_file_is_reported_not_raised(tmp_path):
    check = report.validate_submission(tmp_path / "none.csv", "commonlit", COMMONLIT_IDS)
    assert not check.valid


def test_baseline_submissions_are_valid(tmp_path):
    train = pd.DataFrame({"id": ["a", "b"], "excerpt": ["x", "y"], "target": [-1.0, 0.0]})
    test = pd.DataFrame({"id": COMMONLIT_IDS, "excerpt": ["p", "q", "r"]})
    path = report.write_baseline_submission(tmp_path / "c.csv", "commonlit", train, test)
    assert report.validate_submission(path, "commonlit", COMMONLIT_IDS).valid
    assert set(pd.read_csv(path)["target"]) == {-0.5}
    tweets = [{"textID": row_id, "text": f'say "{row_id}", ok', "sentiment": "neutral"} for row_id in TWEET_IDS]
    path = report.write_baseline_submission(tmp_path / "t.csv", "tweet", None, tweets)
    assert report.validate_submission(path, "tweet", TWEET_IDS).valid
    assert pd.read_csv(path)["selected_text"].tolist() == [row["text"] for row in tweets]


# ---------------------------------------------------------------- run folders, scores, worst predictions


def commonlit_run(folder, targets, predictions, folds):
    folder.mkdir(parents=True)
    ids = [f"r{index}" for index in range(len(targets))]
    pd.DataFrame({"id": ids, "fold": folds, "target": targets, "prediction": predictions}).to_csv(folder / "oof.csv", index=False)
    (folder / "metrics.json").write_text(json.dumps({"model": "m"}), encoding="utf-8")
    return folder


TWEETS = [
    {"textID": "a", "fold": 0, "sentiment": "positive", "text": "a b c d", "selected_text": "b c", "prediction": "b c d"},
    {"textID": "b", "fold": 1, "sentiment": "negative", "text": "so sad today", "selected_text": "sad", "prediction": "today"},
    {"textID": "c", "fold": 0, "sentiment": "neutral", "text": "just a day", "selected_text": "just a day", "prediction": "just a day"},
    {"textID": "d", "fold": 1, "sentiment": "negative", "text": "bad bad news", "selected_text": "bad news", "prediction": "news"},
    {"textID": "e", "fold": 1, "sentiment": "positive", "text": "yay fun", "selected_text": "fun", "prediction": "yay"},
]


def tweet_run(folder, rows=TWEETS):
    folder.mkdir(parents=True)
    with open(folder / "oof.jsonl", "w", encoding="utf-8") as stream:
        for row in rows:
            words = len(row["text"].split())
            probs = [1.0 / words] * words
            stream.write(json.dumps({**row, "start_probs": probs, "end_probs": probs}) + "\n")
    return folder


def test_find_run_dirs_nested(tmp_path):
    first = commonlit_run(tmp_path / "all" / "cl", [0.0, 1.0], [0.0, 1.0], [0, 1])
    second = tweet_run(tmp_path / "all" / "deep" / "tw")
    third = commonlit_run(tmp_path / "alone", [0.0, 1.0], [0.0, 1.0], [0, 1])
    (tmp_path / "all" / "empty").mkdir()
    found = report.find_run_dirs([tmp_path / "all", third])
    assert sorted(found) == sorted([first, second, third])


def test_commonlit_cv_matches_sklearn(tmp_path):
    from sklearn.metrics import mean_squared_error

    rng = np.random.default_rng(0)
    targets, predictions = rng.normal(size=30), rng.normal(size=30)
    folds = np.arange(30) % 3
    run = report.read_run(commonlit_run(tmp_path / "cl", targets, predictions, folds))
    assert run.competition == "commonlit"
    assert run.score == pytest.approx(math.sqrt(mean_squared_error(targets, predictions)))
    for fold, score in enumerate(report.fold_scores(run.oof, "commonlit")):
        rows = folds == fold
        assert score == pytest.approx(math.sqrt(mean_squared_error(targets[rows], predictions[rows])))


def test_mean_guess_rmse_by_hand(tmp_path):
    # fold 0 guesses mean(3, 5) = 4, fold 1 guesses mean(1, 2) = 1.5
    run = report.read_run(commonlit_run(tmp_path / "cl", [1.0, 2.0, 3.0, 5.0], [0.0] * 4, [0, 0, 1, 1]))
    expected = math.sqrt(((1 - 4) ** 2 + (2 - 4) ** 2 + (3 - 1.5) ** 2 + (5 - 1.5) ** 2) / 4)
    assert report.mean_guess_rmse(run.oof) == pytest.approx(expected)


def test_tweet_jaccard_per_row_by_hand(tmp_path):
    run = report.read_run(tweet_run(tmp_path / "tw"))
    assert run.competition == "tweet"
    # a: {b,c} vs {b,c,d} = 2/3; b: 0; c: 1; d: {bad,news} vs {news} = 1/2; e: 0
    assert run.oof["jaccard"].tolist() == pytest.approx([2 / 3, 0.0, 1.0, 0.5, 0.0])
    assert run.score == pytest.approx((2 / 3 + 1 + 0.5) / 5)


def test_tweet_prediction_is_decoded_when_missing(tmp_path):
    rows = [{key: value for key, value in row.items() if key != "prediction"} for row in TWEETS]
    run = report.read_run(tweet_run(tmp_path / "tw", rows))
    neutral = run.oof[run.oof["sentiment"] == "neutral"]
    assert neutral["prediction"].tolist() == neutral["text"].tolist()
    assert run.oof["prediction"].map(bool).all()


def test_worst_commonlit_rows_largest_error(tmp_path):
    rng = np.random.default_rng(1)
    targets = rng.normal(size=40)
    predictions = targets + rng.normal(scale=0.5, size=40)
    run = report.read_run(commonlit_run(tmp_path / "cl", targets, predictions, np.arange(40) % 4))
    worst = report.worst_predictions(run.oof, "commonlit", 5)
    by_hand = sorted(range(40), key=lambda index: -abs(predictions[index] - targets[index]))[:5]
    assert worst["id"].tolist() == [f"r{index}" for index in by_hand]


def test_worst_tweet_rows_lowest_jaccard(tmp_path):
    run = report.read_run(tweet_run(tmp_path / "tw"))
    worst = report.worst_predictions(run.oof, "tweet", 3)
    scores = [metrics.word_jaccard(row["prediction"], row["selected_text"]) for row in TWEETS]
    by_hand = sorted(range(len(TWEETS)), key=lambda index: scores[index])[:3]  # sorted() is stable
    assert worst["textID"].tolist() == [TWEETS[index]["textID"] for index in by_hand]
    assert worst["textID"].tolist() == ["b", "e", "d"]


def test_selected_share_counts_words():
    assert report.selected_share({"text": "a b c d", "selected_text": "b c"}) == 0.5
    assert report.selected_share({"text": "  ", "selected_text": ""}) == 0.0


# ---------------------------------------------------------------- the pitfall experiments


@pytest.fixture
def commonlit_sample():
    from stage2_kaggle import commonlit_readability

    train = commonlit_readability.load_train(smoke=True)
    texts, targets = train["excerpt"].to_numpy(dtype=object), train["target"].to_numpy(dtype=float)
    train_rows, hidden_rows = report.split_hidden(len(texts), 0.25, seed=0)
    return texts, targets, train_rows, hidden_rows


def test_split_hidden_is_a_partition(commonlit_sample):
    texts, _, train_rows, hidden_rows = commonlit_sample
    assert len(hidden_rows) == 10
    assert sorted(np.concatenate([train_rows, hidden_rows]).tolist()) == list(range(len(texts)))


def test_near_duplicate_keeps_most_words_in_order():
    rng = np.random.default_rng(0)
    text = " ".join(f"w{index}" for index in range(200))
    copy = report.near_duplicate(text, rng, drop=0.1).split()
    assert 150 < len(copy) < 200
    assert copy == sorted(copy, key=lambda word: int(word[1:]))


def test_leaky_random_folds_beat_grouped(commonlit_sample):
    texts, targets, train_rows, hidden_rows = commonlit_sample
    leak = report.leaky_split_experiment(texts, targets, train_rows, hidden_rows, seed=0, n_folds=3, alphas=(0.1, 1.0))
    for alpha in (0.1, 1.0):
        assert leak["random_cv"][alpha] < leak["grouped_cv"][alpha]
    assert leak["random_choice"]["cv_rmse"] == min(leak["random_cv"].values())


def test_shakeup_public_choice_is_public_best(commonlit_sample):
    texts, targets, train_rows, hidden_rows = commonlit_sample
    result = report.shakeup_experiment(texts, targets, train_rows, hidden_rows, seed=0, repeats=50, n_folds=3,
                                       alphas=(0.1, 1.0, 10.0), ngrams=(1,))
    example = result["example"]
    assert example["public"][example["public_choice"]] == min(example["public"])
    assert result["n_public"] + result["n_private"] == len(hidden_rows)
    assert len(result["candidates"]) == 3
    assert result["public_choice_optimism"] == pytest.approx(
        result["public_choice_private_rmse"] - result["public_choice_public_rmse"])
    # each candidate's full hidden RMSE sits between its best and worst split scores; check against a direct fit
    from stage2_kaggle import commonlit_readability

    pipeline = commonlit_readability.tfidf_pipeline(alpha=1.0, ngram_max=1).fit(list(texts[train_rows]), targets[train_rows])
    direct = metrics.rmse(pipeline.predict(list(texts[hidden_rows])), targets[hidden_rows])
    assert result["candidates"][1]["hidden_rmse"] == pytest.approx(direct)


# ---------------------------------------------------------------- the whole report


def test_report_smoke_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    summary = report.main(["--smoke", "--output-dir", str(run_dir), "--shakeup-repeats", "50"])

    text = (run_dir / "report.md").read_text(encoding="utf-8")
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(figures) >= 6
    for name in figures:
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    for heading in ("## 1.", "## 2.", "## 3.", "## 4.", "## 5."):
        assert heading in text
    assert summary["n_valid_model_submissions"] >= 3
    assert summary["n_valid_submissions"] == summary["n_submissions_checked"]
    assert summary["competitions"] == "commonlit,tweet"


def test_report_worst_rows_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    summary = report.main(["--smoke", "--output-dir", str(run_dir), "--top-n", "4", "--competition", "tweet"])

    oof_files = list((run_dir / "models").rglob("oof.jsonl"))
    assert len(oof_files) == 1
    rows = [json.loads(line) for line in oof_files[0].read_text(encoding="utf-8").splitlines()]
    scores = [metrics.word_jaccard(row["prediction"], row["selected_text"]) for row in rows]
    by_hand = [rows[index]["textID"] for index in sorted(range(len(rows)), key=lambda index: scores[index])[:4]]
    section = (run_dir / "report.md").read_text(encoding="utf-8").split("## 3.")[1].split("## 4.")[0]
    positions = [section.index(f"| {text_id} |") for text_id in by_hand]
    assert positions == sorted(positions)
    assert summary["best_tweet_cv_jaccard"] == pytest.approx(float(np.mean(scores)))


def test_report_needs_runs_without_smoke(tmp_path):
    with pytest.raises(SystemExit):
        report.main(["--output-dir", str(tmp_path / "run")])


def test_report_on_folder_without_runs_says_so(tmp_path):
    from roadmap.data import DataNotFoundError

    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataNotFoundError, match="oof"):
        report.main(["--runs", str(tmp_path / "nothing"), "--output-dir", str(tmp_path / "run")])


# ---------------------------------------------------------------- real data


@pytest.mark.real
def test_report_on_real_data(real_data_dir, tmp_path, monkeypatch):
    """Two CommonLit TF-IDF runs, their blend and a Tweet TF-IDF run on real data, then the report."""
    from stage2_kaggle import commonlit_readability, ensemble, tweet_sentiment_extraction

    monkeypatch.chdir(tmp_path)
    models = tmp_path / "models"
    common = ["--data-dir", str(real_data_dir), "--max-train-samples", "1200", "--n-folds", "5"]
    commonlit_readability.main([*common, "--model", "tfidf", "--output-dir", str(models / "cl_bigram")])
    commonlit_readability.main([*common, "--model", "tfidf", "--ngram-max", "1", "--alpha", "0.5",
                                "--output-dir", str(models / "cl_unigram")])
    ensemble.main(["--competition", "commonlit", "--runs", str(models / "cl_bigram"), str(models / "cl_unigram"),
                   "--output-dir", str(models / "cl_blend")])
    tweet_sentiment_extraction.main(["--data-dir", str(real_data_dir), "--model", "tfidf", "--max-train-samples", "1500",
                                     "--output-dir", str(models / "tw_tfidf")])
    summary = report.main(["--data-dir", str(real_data_dir), "--runs", str(models), "--output-dir", str(tmp_path / "run"),
                           "--shakeup-repeats", "200"])

    assert summary["n_runs"] == 4
    assert summary["n_valid_model_submissions"] >= 3
    assert summary["best_commonlit_cv_rmse"] < 0.85
    assert summary["best_tweet_cv_jaccard"] > 0.58
    # the leaky random split flatters the CV far below the grouped CV and the hidden test
    assert summary["leak_random_cv_rmse"] < summary["leak_grouped_cv_rmse"] - 0.2
    assert summary["leak_random_cv_rmse"] < summary["leak_random_hidden_rmse"] - 0.2
    assert abs(summary["leak_grouped_cv_rmse"] - summary["leak_grouped_hidden_rmse"]) < 0.1
    assert summary["shakeup_public_choice_public_rmse"] < summary["shakeup_public_choice_private_rmse"]
