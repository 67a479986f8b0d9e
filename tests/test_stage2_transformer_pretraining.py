"""Pre-training objectives: MLM masking, NSP pairs and the causal-LM shift, checked against HF's own models."""

from __future__ import annotations

import json
import math
import random
import urllib.error

import pytest
import torch
from torch.nn import functional as F
from transformers import BertConfig, BertForPreTraining, BertTokenizerFast, GPT2Config, GPT2LMHeadModel

from roadmap import data
from stage2_transformer import pretraining_objectives as po

VOCAB_SIZE = 1000
MASK_ID = 4


def within_binomial(count: int, total: int, probability: float, sigmas: float = 4.0) -> bool:
    """Return True when count / total is within `sigmas` binomial standard errors of `probability`."""
    standard_error = math.sqrt(probability * (1 - probability) / total)
    return abs(count / total - probability) <= sigmas * standard_error


def random_padded_batch(batch_size: int = 400, length: int = 128, seed: int = 0):
    """Return (input_ids, special_tokens_mask without padding, attention_mask): [CLS] ids [SEP] then padding."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, VOCAB_SIZE, (batch_size, length), generator=generator)
    lengths = torch.randint(length // 2, length + 1, (batch_size,), generator=generator)
    attention_mask = (torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)).long()
    special_tokens_mask = torch.zeros_like(input_ids)
    special_tokens_mask[:, 0] = 1
    special_tokens_mask[torch.arange(batch_size), lengths - 1] = 1
    input_ids[:, 0] = 2
    input_ids[torch.arange(batch_size), lengths - 1] = 3
    input_ids[attention_mask == 0] = 0
    return input_ids, special_tokens_mask, attention_mask


# ---------------------------------------------------------------- MLM


def test_mask_tokens_proportions_follow_bert_recipe():
    input_ids, special, attention = random_padded_batch()
    masked, labels = po.mask_tokens(input_ids, special, mask_token_id=MASK_ID, vocab_size=VOCAB_SIZE,
                                    generator=torch.Generator().manual_seed(1), attention_mask=attention)
    eligible = (special == 0) & (attention == 1)
    selected = labels != po.IGNORE_INDEX
    eligible_count, selected_count = int(eligible.sum()), int(selected.sum())
    assert within_binomial(selected_count, eligible_count, 0.15)

    # A random replacement is uniform over the vocabulary, so it hits [MASK] or the original id with 1/V each.
    became_mask = int((masked[selected] == MASK_ID).sum())
    unchanged = int((masked[selected] == input_ids[selected]).sum())
    other = selected_count - became_mask - unchanged
    assert within_binomial(became_mask, selected_count, 0.8 + 0.1 / VOCAB_SIZE)
    assert within_binomial(unchanged, selected_count, 0.1 + 0.1 / VOCAB_SIZE)
    assert within_binomial(other, selected_count, 0.1 * (1 - 2 / VOCAB_SIZE))


def test_mask_tokens_skips_special_and_padding():
    input_ids, special, attention = random_padded_batch(seed=2)
    _, labels = po.mask_tokens(input_ids, special, mask_token_id=MASK_ID, vocab_size=VOCAB_SIZE,
                               generator=torch.Generator().manual_seed(3), attention_mask=attention)
    selected = labels != po.IGNORE_INDEX
    assert not selected[special == 1].any()
    assert not selected[attention == 0].any()

    # HF tokenizers flag padding in special_tokens_mask itself; that alone must also keep padding out.
    special_with_padding = special | (1 - attention)
    _, labels = po.mask_tokens(input_ids, special_with_padding, mask_token_id=MASK_ID, vocab_size=VOCAB_SIZE,
                               generator=torch.Generator().manual_seed(3))
    assert not (labels != po.IGNORE_INDEX)[special_with_padding == 1].any()


def test_mask_tokens_labels_hold_original_ids():
    input_ids, special, attention = random_padded_batch(seed=4)
    original = input_ids.clone()
    masked, labels = po.mask_tokens(input_ids, special, mask_token_id=MASK_ID, vocab_size=VOCAB_SIZE,
                                    generator=torch.Generator().manual_seed(5), attention_mask=attention)
    selected = labels != po.IGNORE_INDEX
    assert torch.equal(labels[selected], original[selected])
    assert (labels[~selected] == po.IGNORE_INDEX).all()
    assert torch.equal(masked[~selected], original[~selected])
    assert torch.equal(input_ids, original), "mask_tokens modified its input"
    assert masked.dtype == input_ids.dtype
    assert labels.dtype == input_ids.dtype


def test_mask_tokens_seeded_generator_repeats():
    input_ids, special, attention = random_padded_batch(batch_size=8, seed=6)
    first = po.mask_tokens(input_ids, special, mask_token_id=MASK_ID, vocab_size=VOCAB_SIZE,
                           generator=torch.Generator().manual_seed(7), attention_mask=attention)
    second = po.mask_tokens(input_ids, special, mask_token_id=MASK_ID, vocab_size=VOCAB_SIZE,
                            generator=torch.Generator().manual_seed(7), attention_mask=attention)
    assert torch.equal(first[0], second[0])
    assert torch.equal(first[1], second[1])


def test_mask_tokens_probability_one_selects_all_eligible():
    input_ids, special, attention = random_padded_batch(batch_size=4, seed=8)
    _, labels = po.mask_tokens(input_ids, special, mask_token_id=MASK_ID, vocab_size=VOCAB_SIZE, probability=1.0,
                               attention_mask=attention)
    assert torch.equal(labels != po.IGNORE_INDEX, (special == 0) & (attention == 1))


def test_mask_tokens_rejects_bad_arguments():
    input_ids = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="形状"):
        po.mask_tokens(input_ids, torch.zeros(2, 4, dtype=torch.long), mask_token_id=MASK_ID, vocab_size=10)
    with pytest.raises(ValueError, match="probability"):
        po.mask_tokens(input_ids, torch.zeros_like(input_ids), mask_token_id=MASK_ID, vocab_size=10, probability=0.0)


# ---------------------------------------------------------------- NSP


CLS, SEP = 1, 2


def synthetic_documents(count: int = 300, seed: int = 0):
    """Documents of 1-8 sentences of 1-12 tokens; every token id is unique, so its origin is known."""
    rng = random.Random(seed)
    documents, next_id = [], 10
    for _ in range(count):
        document = []
        for _ in range(rng.randint(1, 8)):
            length = rng.randint(1, 12)
            document.append(list(range(next_id, next_id + length)))
            next_id += length
        documents.append(document)
    return documents


def segments_of(example: po.NSPExample) -> tuple[list[int], list[int]]:
    """Split `[CLS] A [SEP] B [SEP]` back into A and B using the token type ids."""
    boundary = example.token_type_ids.index(1)
    return example.input_ids[1:boundary - 1], example.input_ids[boundary:-1]


def concatenated(documents, source: po.SegmentSource) -> list[int]:
    return [token for sentence in documents[source.document][source.start:source.end] for token in sentence]


def test_nsp_examples_half_are_next():
    documents = synthetic_documents(count=1000)
    examples = po.build_nsp_examples(documents, max_length=32, cls_token_id=CLS, sep_token_id=SEP, rng=random.Random(1))
    positives = sum(example.next_sentence_label == po.IS_NEXT for example in examples)
    assert len(examples) > 1000
    assert within_binomial(positives, len(examples), 0.5)
    assert {example.next_sentence_label for example in examples} == {0, 1}


def test_nsp_positive_pairs_are_consecutive():
    documents = synthetic_documents(seed=2)
    examples = po.build_nsp_examples(documents, max_length=24, cls_token_id=CLS, sep_token_id=SEP, rng=random.Random(3))
    positives = [example for example in examples if example.next_sentence_label == po.IS_NEXT]
    assert positives
    for example in positives:
        first, second = segments_of(example)
        assert example.second.document == example.first.document
        assert example.second.start == example.first.end
        # A may lose tokens only at its start and B only at its end, so the A|B boundary is the real one.
        full_first, full_second = concatenated(documents, example.first), concatenated(documents, example.second)
        assert first == full_first[len(full_first) - len(first):]
        assert second == full_second[:len(second)]
        assert second[0] == first[-1] + 1, "B does not start right after A in the document"


def test_nsp_negative_pairs_come_from_other_document():
    documents = synthetic_documents(seed=4)
    examples = po.build_nsp_examples(documents, max_length=24, cls_token_id=CLS, sep_token_id=SEP, rng=random.Random(5))
    negatives = [example for example in examples if example.next_sentence_label == po.NOT_NEXT]
    assert negatives
    for example in negatives:
        first, second = segments_of(example)
        assert example.second.document != example.first.document
        full_second = concatenated(documents, example.second)
        assert second == full_second[:len(second)]
        assert first == concatenated(documents, example.first)[-len(first):]


def test_nsp_examples_respect_max_length():
    documents = synthetic_documents(seed=6)
    documents[0] = [list(range(100_000, 100_050)), list(range(100_050, 100_090))]  # two sentences over the budget
    for max_length in (5, 9, 16, 40):
        examples = po.build_nsp_examples(documents, max_length=max_length, cls_token_id=CLS, sep_token_id=SEP,
                                         rng=random.Random(max_length))
        for example in examples:
            first, second = segments_of(example)
            assert len(example.input_ids) <= max_length
            assert len(example.token_type_ids) == len(example.input_ids)
            assert first and second
            assert example.input_ids[0] == CLS
            assert example.input_ids[-1] == SEP


def test_nsp_pair_matches_tokenizer_pair_encoding(tmp_path):
    paragraphs = po.load_cmrc2018_paragraphs(smoke=True)
    tokenizer = BertTokenizerFast(vocab_file=str(po.write_character_vocab(paragraphs, tmp_path / "vocab.txt")))
    sentences = [po.split_sentences(paragraph) for paragraph in paragraphs]
    documents = po.tokenize_documents(tokenizer, paragraphs)
    examples = po.build_nsp_examples(documents, max_length=256, cls_token_id=tokenizer.cls_token_id,
                                     sep_token_id=tokenizer.sep_token_id, rng=random.Random(0))
    assert examples
    for example in examples:
        text_a = "".join(sentences[example.first.document][example.first.start:example.first.end])
        text_b = "".join(sentences[example.second.document][example.second.start:example.second.end])
        reference = tokenizer(text_a, text_b)
        assert example.input_ids == reference["input_ids"]
        assert example.token_type_ids == reference["token_type_ids"]

    batch = po.collate_nsp(examples[:4], tokenizer.pad_token_id)
    pairs = [("".join(sentences[e.first.document][e.first.start:e.first.end]),
              "".join(sentences[e.second.document][e.second.start:e.second.end])) for e in examples[:4]]
    reference = tokenizer([a for a, _ in pairs], [b for _, b in pairs], padding=True, return_special_tokens_mask=True,
                          return_tensors="pt")
    for key in ("input_ids", "token_type_ids", "attention_mask", "special_tokens_mask"):
        assert torch.equal(batch[key], reference[key]), key
    assert batch["next_sentence_label"].tolist() == [example.next_sentence_label for example in examples[:4]]


def test_nsp_needs_two_documents():
    with pytest.raises(ValueError, match="两篇"):
        po.build_nsp_examples([[[5, 6], [7]]], max_length=16, cls_token_id=CLS, sep_token_id=SEP, rng=random.Random(0))


# ---------------------------------------------------------------- causal LM


def tiny_gpt(vocab_size: int = 50) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=vocab_size, n_positions=16, n_embd=16, n_layer=2, n_head=2)
    return GPT2LMHeadModel(config).eval()


def padded_lm_batch():
    input_ids = torch.randint(3, 50, (3, 12), generator=torch.Generator().manual_seed(0))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 8:] = 0
    attention_mask[2, 5:] = 0
    return input_ids.masked_fill(attention_mask == 0, 0), attention_mask


def test_shift_for_causal_lm_targets_next_token():
    input_ids, attention_mask = padded_lm_batch()
    inputs, labels = po.shift_for_causal_lm(input_ids, attention_mask)
    assert torch.equal(inputs, input_ids[:, :-1])
    assert torch.equal(labels[0], input_ids[0, 1:])
    assert labels[1, :6].tolist() == input_ids[1, 1:7].tolist()
    assert (labels[1, 7:] == po.IGNORE_INDEX).all()
    assert (labels[2, 4:] == po.IGNORE_INDEX).all()


def test_causal_lm_loss_matches_gpt2_internal_shift():
    model = tiny_gpt()
    input_ids, attention_mask = padded_lm_batch()
    with torch.no_grad():
        reference = model(input_ids=input_ids, attention_mask=attention_mask,
                          labels=po.causal_lm_labels(input_ids, attention_mask)).loss
        inputs, labels = po.shift_for_causal_lm(input_ids, attention_mask)
        logits = model(input_ids=inputs, attention_mask=attention_mask[:, :-1]).logits
        ours = po.causal_lm_loss(logits, labels)
    assert torch.allclose(ours, reference, atol=1e-6)


def test_shifting_twice_scores_token_after_next():
    model = tiny_gpt()
    input_ids, attention_mask = padded_lm_batch()
    with torch.no_grad():
        inputs, labels = po.shift_for_causal_lm(input_ids, attention_mask)
        correct = model(input_ids=input_ids, attention_mask=attention_mask,
                        labels=po.causal_lm_labels(input_ids, attention_mask)).loss
        shifted_twice = model(input_ids=inputs, attention_mask=attention_mask[:, :-1], labels=labels).loss
        logits = model(input_ids=inputs, attention_mask=attention_mask[:, :-1]).logits
        two_ahead = po.causal_lm_loss(logits[:, :-1], labels[:, 1:])  # position t against x_{t+2}
    assert torch.allclose(shifted_twice, two_ahead, atol=1e-6)
    assert not torch.allclose(shifted_twice, correct, atol=1e-3)


def test_build_lm_blocks_cover_each_document():
    documents = [list(range(10, 40)), list(range(50, 53)), []]
    blocks = po.build_lm_blocks(documents, block_size=8, bos_token_id=1, eos_token_id=2)
    assert all(2 <= len(block) <= 8 for block in blocks)
    joined = [token for block in blocks for token in block]
    assert joined == [1, *range(10, 40), 2, 1, 50, 51, 52, 2, 1, 2]
    batch = po.collate_lm(blocks[:5], pad_token_id=0)
    assert batch["attention_mask"].sum(1).tolist() == [len(block) for block in blocks[:5]]


def test_unigram_loss_matches_hand_computation():
    # Counts with add-one smoothing over a vocabulary of 4: token 0 -> 3, 1 -> 2, 2 -> 1, 3 -> 1 (total 7).
    loss = po.unigram_loss([0, 0, 1], [0, 3], vocab_size=4)
    assert loss == pytest.approx(-(math.log(3 / 7) + math.log(1 / 7)) / 2)


# ---------------------------------------------------------------- BERT losses


def test_bert_pretraining_losses_match_hf_forward():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    model = BertForPreTraining(config).eval()
    input_ids, special, attention = random_padded_batch(batch_size=6, length=20, seed=9)
    input_ids = input_ids % 60
    token_type_ids = (torch.arange(20) >= 8).long().expand(6, 20) * attention
    masked, labels = po.mask_tokens(input_ids, special, mask_token_id=MASK_ID, vocab_size=60,
                                    generator=torch.Generator().manual_seed(0), attention_mask=attention)
    next_sentence_label = torch.tensor([0, 1, 0, 1, 1, 0])
    with torch.no_grad():
        reference = model(input_ids=masked, attention_mask=attention, token_type_ids=token_type_ids, labels=labels,
                          next_sentence_label=next_sentence_label)
        ours = po.bert_pretraining_losses(model, masked, attention, token_type_ids, labels, next_sentence_label)
    assert torch.allclose(ours.loss, reference.loss, atol=1e-5)
    reference_mlm = F.cross_entropy(reference.prediction_logits.reshape(-1, 60), labels.reshape(-1))
    assert torch.allclose(ours.mlm_loss, reference_mlm, atol=1e-5)
    assert torch.allclose(ours.nsp_logits, reference.seq_relationship_logits, atol=1e-5)


# ---------------------------------------------------------------- data


def test_split_sentences_keeps_end_marks():
    text = "今天下雨。他说：“明天呢？”我不知道！\n第二行没有句号"
    assert po.split_sentences(text) == ["今天下雨。", "他说：“明天呢？”", "我不知道！", "第二行没有句号"]


def test_sample_vocab_covers_sample_text(tmp_path):
    paragraphs = po.load_cmrc2018_paragraphs(smoke=True)
    assert len(paragraphs) == 12
    tokenizer = BertTokenizerFast(vocab_file=str(po.write_character_vocab(paragraphs, tmp_path / "vocab.txt")))
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3, 4]) == list(po.SPECIAL_TOKENS)
    for paragraph in paragraphs:
        assert tokenizer.unk_token_id not in tokenizer(paragraph)["input_ids"], paragraph


def test_split_held_out_is_fixed_and_disjoint():
    paragraphs = [f"段落{i}。" for i in range(50)]
    train, held_out = po.split_held_out(paragraphs)
    assert len(held_out) == 5
    assert sorted(train + held_out) == sorted(paragraphs)
    assert po.split_held_out(paragraphs) == (train, held_out)


def test_load_cmrc_missing_file_names_path_and_smoke(tmp_path, monkeypatch):
    def offline(url, destination, **_):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(data, "download", offline)
    monkeypatch.setattr(data, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    with pytest.raises(data.DataNotFoundError) as error:
        po.load_cmrc2018_paragraphs(tmp_path / "nowhere")
    message = str(error.value)
    assert str(tmp_path / "nowhere" / "cmrc2018") in message
    assert "--smoke" in message
    assert po.CMRC_URL in message


@pytest.mark.parametrize("content, expected", [
    ("{not json", "JSON"),
    (json.dumps([1, 2]), "data"),
    (json.dumps({"data": [{"title": "x"}]}), "paragraphs"),
    (json.dumps({"data": [{"paragraphs": [{"qas": []}]}]}), "context"),
    (json.dumps({"data": [{"paragraphs": [{"context": "  "}]}]}), "没有非空"),
])
def test_load_cmrc_bad_file_raises_format_error(tmp_path, content, expected):
    (tmp_path / "cmrc2018").mkdir()
    (tmp_path / "cmrc2018" / po.CMRC_FILE).write_text(content, encoding="utf-8")
    with pytest.raises(data.DataFormatError, match=expected):
        po.load_cmrc2018_paragraphs(tmp_path)


def test_smoke_run_saves_loadable_models(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    result = po.main(["--smoke", "--output-dir", str(run_dir)])
    bert = BertForPreTraining.from_pretrained(run_dir / "bert")
    gpt = GPT2LMHeadModel.from_pretrained(run_dir / "gpt")
    tokenizer = BertTokenizerFast.from_pretrained(run_dir / "gpt")
    assert bert.config.vocab_size == result["vocab_size"]
    assert gpt.config.vocab_size == result["vocab_size"]
    assert len(tokenizer) == result["vocab_size"]
    assert result["gpt_val_perplexity"] == pytest.approx(math.exp(result["gpt_val_loss"]))
    assert result["bert_steps"] == 6
    history = json.loads((run_dir / "history.json").read_text(encoding="utf-8"))
    assert [record["step"] for record in history["gpt"]["held_out"]] == [0, 3, 6]
    assert history["bert"]["held_out"][-1]["mlm_loss"] == pytest.approx(result["bert_val_mlm_loss"])


# ---------------------------------------------------------------- real data

# Measured with --max-steps 100 on the real CMRC 2018 dev file (763 train / 85 held-out paragraphs):
# MLM loss 9.99 -> 6.94 (accuracy 0.042), perplexity 21,562 -> 1,021 (ratio 21). Floors sit below that.
MLM_LOSS_DROP_FLOOR = 2.5
MLM_ACCURACY_FLOOR = 0.03
PERPLEXITY_RATIO_FLOOR = 10.0


@pytest.mark.real
def test_pretraining_on_cmrc2018_lowers_losses(real_data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = po.main(["--data-dir", str(real_data_dir), "--output-dir", str(tmp_path / "run"),
                      "--max-steps", "100", "--eval-every", "100"])
    assert result["train_paragraphs"] == 763
    assert result["vocab_size"] == 21128
    assert result["bert_val_mlm_loss_before"] - result["bert_val_mlm_loss"] >= MLM_LOSS_DROP_FLOOR
    assert result["bert_val_mlm_accuracy"] >= MLM_ACCURACY_FLOOR
    assert result["gpt_val_perplexity_before"] / result["gpt_val_perplexity"] >= PERPLEXITY_RATIO_FLOOR
    assert (tmp_path / "run" / "pretraining_curves.png").is_file()
