"""Positional encodings: the sinusoidal table against a hand loop, the rotation property, the learned table's limit,
permutation equivariance of attention, and the lesson script's metrics."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from stage2_transformer import positional_encoding as pe


def hand_sinusoidal_table(length: int, d_model: int) -> torch.Tensor:
    """Compute PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(...) with math.sin/cos, one cell at a time."""
    rows = []
    for position in range(length):
        row = []
        for dimension in range(d_model):
            even = dimension - dimension % 2  # 2i for both columns of a pair
            angle = position / 10000 ** (even / d_model)
            row.append(math.sin(angle) if dimension % 2 == 0 else math.cos(angle))
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("d_model", [8, 64, 7, 1])
def test_sinusoidal_table_matches_hand_loop(d_model):
    table = pe.sinusoidal_table(200, d_model)
    reference = hand_sinusoidal_table(200, d_model)
    assert table.shape == (200, d_model)
    assert table.dtype == torch.float32
    torch.testing.assert_close(table.double(), reference, atol=1e-6, rtol=0)


def test_sinusoidal_table_start_matches_slice():
    full = pe.sinusoidal_table(60, 10, dtype=torch.float64)
    shifted = pe.sinusoidal_table(20, 10, start=40, dtype=torch.float64)
    torch.testing.assert_close(shifted, full[40:60])


def test_sinusoidal_table_rejects_bad_sizes():
    with pytest.raises(ValueError, match="d_model"):
        pe.sinusoidal_table(5, 0)
    with pytest.raises(ValueError, match="length"):
        pe.sinusoidal_table(-1, 4)


@pytest.mark.parametrize("offset", [1, 5, 37, 250])
def test_rotation_maps_position_to_shifted_position(offset):
    d_model = 32
    reference = hand_sinusoidal_table(100 + offset, d_model)
    rotation = pe.relative_rotation(offset, d_model)
    rotated = reference[:100] @ rotation.T  # row p is R(k) PE[p]
    assert (rotated - reference[offset:]).abs().max() < 1e-5


def test_rotation_is_orthogonal_and_composes():
    first, second = pe.relative_rotation(3, 16), pe.relative_rotation(11, 16)
    torch.testing.assert_close(first @ first.T, torch.eye(16, dtype=torch.float64))
    torch.testing.assert_close(first @ second, pe.relative_rotation(14, 16))


def test_rotation_rejects_odd_d_model():
    with pytest.raises(ValueError, match="偶数"):
        pe.relative_rotation(2, 7)


def test_rotation_max_error_is_small():
    assert pe.rotation_max_error(100, 64, offsets=[1, 10, 99]) < 1e-10


def test_dot_product_depends_only_on_offset():
    d_model = 16
    table = hand_sinusoidal_table(80, d_model)
    dot_products = pe.position_dot_products(table, starts=[0, 13, 40], max_offset=30)
    frequencies = [1 / 10000 ** (2 * i / d_model) for i in range(d_model // 2)]
    closed_form = torch.tensor([sum(math.cos(w * k) for w in frequencies) for k in range(31)], dtype=torch.float64)
    for row in dot_products:
        torch.testing.assert_close(row, closed_form)


def test_sinusoidal_module_adds_table():
    module = pe.SinusoidalPositionalEncoding(12, max_len=50)
    x = torch.randn(3, 20, 12)
    output = module(x)
    assert output.shape == (3, 20, 12)
    torch.testing.assert_close(output, x + hand_sinusoidal_table(20, 12).float())


def test_sinusoidal_module_offset_selects_positions():
    module = pe.SinusoidalPositionalEncoding(12, max_len=50)
    x = torch.randn(2, 1, 12)
    torch.testing.assert_close(module(x, offset=7), x + hand_sinusoidal_table(8, 12)[7:].float())


def test_sinusoidal_module_extends_past_max_len():
    short_table = pe.SinusoidalPositionalEncoding(12, max_len=10)
    long_table = pe.SinusoidalPositionalEncoding(12, max_len=100)
    x = torch.randn(2, 30, 12)
    torch.testing.assert_close(short_table(x), long_table(x))
    torch.testing.assert_close(short_table(x[:, :5], offset=8), long_table(x[:, :5], offset=8))


def test_sinusoidal_buffer_not_in_state_dict():
    module = pe.SinusoidalPositionalEncoding(8, max_len=16)
    assert "pe" in dict(module.named_buffers())
    assert "pe" not in module.state_dict()
    assert list(module.state_dict()) == []
    assert list(module.parameters()) == []
    assert module.to(torch.float64).pe.dtype == torch.float64


def test_sinusoidal_module_keeps_input_dtype():
    module = pe.SinusoidalPositionalEncoding(8, max_len=16)
    assert module(torch.zeros(1, 4, 8, dtype=torch.bfloat16)).dtype == torch.bfloat16


@pytest.mark.parametrize("shape", [(4, 8), (1, 4, 9)])
def test_encodings_reject_bad_input_shape(shape):
    for module in (pe.SinusoidalPositionalEncoding(8, 16), pe.LearnedPositionalEncoding(8, 16)):
        with pytest.raises(ValueError, match="d_model=8"):
            module(torch.zeros(shape))


def test_encodings_reject_negative_offset():
    for module in (pe.SinusoidalPositionalEncoding(8, 16), pe.LearnedPositionalEncoding(8, 16)):
        with pytest.raises(ValueError, match="offset"):
            module(torch.zeros(1, 2, 8), offset=-1)


def test_learned_module_adds_embedding_rows():
    module = pe.LearnedPositionalEncoding(6, max_len=10)
    x = torch.randn(2, 4, 6)
    weight = module.position_embeddings.weight.detach()
    torch.testing.assert_close(module(x), x + weight[:4])
    torch.testing.assert_close(module(x, offset=6), x + weight[6:10])
    assert list(module.state_dict()) == ["position_embeddings.weight"]


def test_learned_module_init_std():
    module = pe.LearnedPositionalEncoding(64, max_len=512, init_std=0.02)
    assert abs(float(module.position_embeddings.weight.detach().std()) - 0.02) < 0.002


def test_learned_too_long_raises_clear_error():
    module = pe.LearnedPositionalEncoding(6, max_len=10)
    with pytest.raises(ValueError) as caught:
        module(torch.zeros(1, 11, 6))
    message = str(caught.value)
    assert "max_len=10" in message
    assert "长度 11" in message
    assert "SinusoidalPositionalEncoding" in message


def test_learned_offset_past_table_raises():
    module = pe.LearnedPositionalEncoding(6, max_len=10)
    module(torch.zeros(1, 1, 6), offset=9)  # 最后一个位置仍在表内
    with pytest.raises(ValueError, match="max_len=10"):
        module(torch.zeros(1, 1, 6), offset=10)


def test_dropout_applies_in_training_only():
    for module in (pe.SinusoidalPositionalEncoding(8, 16, dropout=1.0), pe.LearnedPositionalEncoding(8, 16, dropout=1.0)):
        x = torch.randn(2, 5, 8)
        assert torch.count_nonzero(module.train()(x)) == 0
        assert torch.count_nonzero(module.eval()(x)) > 0


def test_make_positional_encoding_kinds():
    assert isinstance(pe.make_positional_encoding("sinusoidal", 8, 16), pe.SinusoidalPositionalEncoding)
    assert isinstance(pe.make_positional_encoding("learned", 8, 16), pe.LearnedPositionalEncoding)
    x = torch.randn(1, 3, 8)
    torch.testing.assert_close(pe.make_positional_encoding("none", 8, 16)(x), x)
    with pytest.raises(ValueError, match="rope"):
        pe.make_positional_encoding("rope", 8, 16)


def test_attention_without_position_is_permutation_equivariant():
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    x = torch.randn(2, 9, 16)
    permutation = torch.randperm(9)
    with torch.no_grad():
        shuffled_first, _ = attention(x[:, permutation], x[:, permutation], x[:, permutation])
        shuffled_after = attention(x, x, x)[0][:, permutation]
    assert (shuffled_first - shuffled_after).abs().max() < 1e-5


@pytest.mark.parametrize("kind", ["sinusoidal", "learned"])
def test_position_breaks_permutation_equivariance(kind):
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    position = pe.make_positional_encoding(kind, 16, 9)
    x = torch.randn(2, 9, 16)
    permutation = torch.randperm(9)
    with torch.no_grad():
        shuffled = position(x[:, permutation])
        shuffled_first, _ = attention(shuffled, shuffled, shuffled)
        encoded = position(x)
        shuffled_after = attention(encoded, encoded, encoded)[0][:, permutation]
    assert (shuffled_first - shuffled_after).abs().max() > 1e-2


def test_equivariance_helper_matches_direct_check():
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    x = torch.randn(2, 9, 16)
    permutation = torch.randperm(9)
    without = pe.SelfAttentionWithPosition(attention, pe.NoPositionalEncoding(16))
    with_sinusoidal = pe.SelfAttentionWithPosition(attention, pe.SinusoidalPositionalEncoding(16, 9))
    assert pe.permutation_equivariance_error(without, x, permutation) < 1e-5
    assert pe.permutation_equivariance_error(with_sinusoidal, x, permutation) > 1e-2


def test_shift_data_labels_are_previous_tokens():
    tokens, labels = pe.make_shift_data(5, 7, 10, torch.Generator().manual_seed(0))
    assert tokens.shape == labels.shape == (5, 7)
    assert torch.all(labels[:, 0] == -100)
    assert torch.equal(labels[:, 1:], tokens[:, :-1])


def test_bag_of_tokens_accuracy_hand_example():
    # 序列 [0, 0, 0, 1]：位置 1、2 的"出现最多的其他 token"是 0（对），位置 3（token 1）也猜 0（对）。
    # 序列 [2, 3, 3, 3]：位置 1 去掉自身后计数 {2:1, 3:2} 猜 3（错，答案 2），位置 2、3 猜 3（对）。
    tokens = torch.tensor([[0, 0, 0, 1], [2, 3, 3, 3]])
    assert pe.bag_of_tokens_accuracy(tokens) == pytest.approx(5 / 6)


def test_script_smoke_metrics_show_position_matters(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    output_dir = tmp_path / "run"
    metrics = pe.main(["--smoke", "--output-dir", str(output_dir)])
    assert metrics["test_accuracy_sinusoidal"] > metrics["test_accuracy_none"] + 0.3
    assert metrics["test_accuracy_learned"] > metrics["test_accuracy_none"] + 0.3
    # 无位置编码最多学到"猜这袋 token 里最多的那个"；留 0.05 给 200 条测试序列的抽样误差。
    assert metrics["test_accuracy_none"] < metrics["bag_of_tokens_accuracy"] + 0.05
    assert metrics["trained_none_equivariance_error"] < 1e-4
    assert metrics["equivariance_error_none"] < 1e-5
    assert metrics["equivariance_error_sinusoidal"] > 1e-2
    assert metrics["equivariance_error_learned"] > 1e-2
    assert metrics["rotation_max_error"] < 1e-10
    assert metrics["dot_product_spread_across_p"] < 1e-10
    assert metrics["learned_rejects_long_input"] is True
    assert metrics["adjacent_cosine_sinusoidal"] > 0.9
    written = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
    assert written == json.loads(json.dumps(metrics))
    for name in ("positional_encoding_tables.png", "relative_position_dot_product.png",
                 "sinusoidal_longer_sequences.png", "training_loss.png"):
        assert (output_dir / name).is_file(), name


@pytest.mark.parametrize("options, message", [
    (["--seq-len", "10", "--long-seq-len", "10"], "--long-seq-len"),
    (["--d-model", "30", "--num-heads", "4"], "--num-heads"),
    (["--seq-len", "1"], "--seq-len"),
    (["--precision", "bf16"], "fp32"),
])
def test_script_rejects_bad_options(options, message, tmp_path, capsys):
    with pytest.raises(SystemExit):
        pe.main([*options, "--output-dir", str(tmp_path / "run")])
    assert message in capsys.readouterr().err
