"""roadmap.text: tokenizers, vocabulary and padding against hand-written expectations."""

from __future__ import annotations

import pytest
import torch

from roadmap import text


@pytest.mark.parametrize("sentence, expected", [
    ("Hello, World!", ["hello", ",", "world", "!"]),
    ("I don't know.", ["i", "don't", "know", "."]),
    ("Oil hits $50 a barrel", ["oil", "hits", "$", "50", "a", "barrel"]),
    ("", []),
])
def test_tokenize_english_table(sentence, expected):
    assert text.tokenize_english(sentence) == expected


@pytest.mark.parametrize("sentence, expected", [
    ("我喜欢猫。", ["我", "喜", "欢", "猫", "。"]),
    ("我有iPhone12手机", ["我", "有", "iPhone12", "手", "机"]),
    ("你 好", ["你", "好"]),
])
def test_tokenize_chinese_table(sentence, expected):
    assert text.tokenize_chinese(sentence) == expected


def test_vocab_build_orders_by_frequency_then_alphabet():
    vocab = text.Vocab.build([["b", "a", "c"], ["a", "b"], ["a"]])
    assert vocab.itos == [*text.SPECIALS, "a", "b", "c"]
    assert (vocab.pad_id, vocab.unk_id, vocab.bos_id, vocab.eos_id) == (0, 1, 2, 3)


def test_vocab_min_freq_and_max_size():
    token_lists = [["a", "a", "a", "b", "b", "c"]]
    assert text.Vocab.build(token_lists, min_freq=2).itos[4:] == ["a", "b"]
    assert text.Vocab.build(token_lists, max_size=5).itos[4:] == ["a"]
    with pytest.raises(ValueError, match="max_size"):
        text.Vocab.build(token_lists, max_size=2)


def test_vocab_encode_decode_roundtrip_with_unknown():
    vocab = text.Vocab.build([["hello", "world"]])
    ids = vocab.encode(["hello", "there", "world"], add_bos=True, add_eos=True)
    assert ids == [vocab.bos_id, vocab.stoi["hello"], vocab.unk_id, vocab.stoi["world"], vocab.eos_id]
    assert vocab.decode(ids) == ["hello", "world"]
    assert vocab.decode(ids, skip_special=False) == [text.BOS, "hello", text.UNK, "world"]
    assert vocab.decode([vocab.stoi["hello"], vocab.eos_id, vocab.stoi["world"]]) == ["hello"]


def test_vocab_decode_rejects_out_of_range():
    vocab = text.Vocab.build([["a"]])
    with pytest.raises(IndexError, match="超出"):
        vocab.decode([99])


def test_vocab_save_load_roundtrip(tmp_path):
    vocab = text.Vocab.build([["猫", "狗", "猫"]])
    vocab.save(tmp_path / "vocab.json")
    assert text.Vocab.load(tmp_path / "vocab.json").itos == vocab.itos


def test_vocab_rejects_missing_specials():
    with pytest.raises(ValueError, match="特殊符号"):
        text.Vocab(["a", "b"])


def test_pad_sequences_pads_and_truncates():
    batch, lengths = text.pad_sequences([[5, 6, 7], [8], []], pad_id=0)
    assert batch.tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0]]
    assert lengths.tolist() == [3, 1, 0]
    batch, lengths = text.pad_sequences([[1, 2, 3, 4]], max_length=2)
    assert batch.tolist() == [[1, 2]]
    assert lengths.tolist() == [2]
    assert batch.dtype == torch.long


def test_pad_sequences_rejects_empty_batch():
    with pytest.raises(ValueError):
        text.pad_sequences([])
