"""The hand-written attention against PyTorch's own attention functions and modules."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stage2_transformer.attention import (
    MultiHeadAttention,
    causal_mask,
    padding_mask,
    scaled_dot_product_attention,
    softmax,
)

SHAPES = [(1, 1, 1, 1, 1, 1), (2, 3, 5, 5, 4, 4), (3, 2, 70, 70, 8, 6), (2, 4, 13, 150, 16, 16), (4, 1, 130, 130, 8, 8)]


def test_softmax_matches_torch_and_survives_large_scores():
    scores = torch.randn(4, 9) * 30
    assert torch.allclose(softmax(scores), torch.softmax(scores, dim=-1), atol=1e-6)
    assert torch.allclose(softmax(scores, dim=0), torch.softmax(scores, dim=0), atol=1e-6)
    large = torch.tensor([1000.0, 999.0, -1000.0])
    expected = torch.tensor([1 / (1 + math.exp(-1)), math.exp(-1) / (1 + math.exp(-1)), 0.0])
    assert torch.allclose(softmax(large), expected, atol=1e-6)


def test_softmax_mask_rows_and_fully_masked_row():
    scores = torch.randn(3, 4)
    mask = torch.tensor([[True, True, False, False], [False, False, False, False], [True, True, True, True]])
    weights = softmax(scores, mask=mask)
    assert torch.allclose(weights[0, :2], torch.softmax(scores[0, :2], dim=-1), atol=1e-6)
    assert weights[0, 2:].abs().max() == 0
    assert weights[1].abs().max() == 0
    assert not torch.isnan(weights).any()


def test_mask_builders_by_hand():
    assert padding_mask(torch.tensor([2, 3]), 4)[:, 0, 0].tolist() == [[True, True, False, False],
                                                                       [True, True, True, False]]
    assert causal_mask(3).tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    # 两个 query 接在 4 个 key 的后面：第 0 个 query 是位置 2，看得见 key 0..2。
    assert causal_mask(2, 4).tolist() == [[True, True, True, False], [True, True, True, True]]
    with pytest.raises(ValueError, match="max_length"):
        padding_mask(torch.tensor([5]), 3)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: "x".join(map(str, shape)))
@pytest.mark.parametrize("kind", ["none", "padding", "causal", "padding+causal"])
@pytest.mark.parametrize("need_weights", [True, False])
def test_scaled_dot_product_attention_equals_torch(shape, kind, need_weights):
    batch, heads, query_length, key_length, d_k, d_v = shape
    generator = torch.Generator().manual_seed(sum(shape))
    q = torch.randn(batch, heads, query_length, d_k, generator=generator)
    k = torch.randn(batch, heads, key_length, d_k, generator=generator)
    v = torch.randn(batch, heads, key_length, d_v, generator=generator)
    lengths = torch.randint(1, key_length + 1, (batch,), generator=generator)
    masks = {"none": None, "padding": padding_mask(lengths, key_length), "causal": causal_mask(query_length, key_length)}
    masks["padding+causal"] = masks["padding"] & masks["causal"]
    mask = masks[kind]
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    context, weights = scaled_dot_product_attention(q, k, v, mask, need_weights=need_weights)
    assert (context - expected).abs().max() <= 1e-5
    # is_causal=True 与传入 causal mask 的结果相同（不要权重时走分块、跳过未来 key 的路径）。
    if kind in ("causal", "padding+causal"):
        base = masks["padding"] if kind == "padding+causal" else None
        causal_context, _ = scaled_dot_product_attention(q, k, v, base, is_causal=True, need_weights=need_weights)
        assert (causal_context - expected).abs().max() <= 1e-5
    if need_weights:
        reference_weights = torch.softmax((q @ k.transpose(-2, -1) / math.sqrt(d_k)).masked_fill(
            ~mask if mask is not None else torch.zeros(1, dtype=torch.bool), float("-inf")), dim=-1)
        assert (weights - reference_weights).abs().max() <= 1e-5
    else:
        assert weights is None


def test_fully_masked_rows_give_zeros_on_both_paths():
    q, k, v = (torch.randn(2, 2, 4, 3) for _ in range(3))
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[1] = False
    for need_weights in (True, False):
        context, _ = scaled_dot_product_attention(q, k, v, mask, need_weights=need_weights)
        assert not torch.isnan(context).any()
        assert context[:, :, 1].abs().max() == 0
        assert (context[:, :, [0, 2, 3]] - F.scaled_dot_product_attention(q, k, v, attn_mask=mask)[:, :, [0, 2, 3]]
                ).abs().max() <= 1e-5


def test_causal_mask_blocks_the_future():
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 6, 4, generator=generator) for _ in range(3))
    before, weights = scaled_dot_product_attention(q, k, v, causal_mask(6))
    assert weights.triu(diagonal=1).abs().max() == 0
    k2, v2 = k.clone(), v.clone()
    k2[..., 4:, :] += 5.0
    v2[..., 4:, :] -= 3.0
    after, _ = scaled_dot_product_attention(q, k2, v2, causal_mask(6))
    assert torch.equal(before[..., :4, :], after[..., :4, :])
    assert not torch.allclose(before[..., 4:, :], after[..., 4:, :])


def test_bad_inputs_get_clear_errors():
    q = torch.randn(1, 1, 3, 4)
    with pytest.raises(ValueError, match="d_k"):
        scaled_dot_product_attention(q, torch.randn(1, 1, 3, 5), torch.randn(1, 1, 3, 4))
    with pytest.raises(TypeError, match="bool"):
        scaled_dot_product_attention(q, q, q, torch.ones(3, 3))
    with pytest.raises(ValueError, match="整除"):
        MultiHeadAttention(10, 3)


@pytest.mark.parametrize("batch,length,d_model,heads", [(1, 1, 4, 1), (2, 7, 16, 4), (3, 12, 24, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_multi_head_attention_equals_nn_multihead_attention(batch, length, d_model, heads, bias):
    torch.manual_seed(batch * length + d_model)
    reference = nn.MultiheadAttention(d_model, heads, bias=bias, batch_first=True).eval()
    ours = MultiHeadAttention(d_model, heads, bias=bias).load_from_torch(reference).eval()
    query = torch.randn(batch, length, d_model)
    memory = torch.randn(batch, length + 2, d_model)
    lengths = torch.randint(1, length + 3, (batch,))
    with torch.no_grad():
        # 自注意力 + causal mask（nn.MultiheadAttention 的 attn_mask：True = 不许看）
        expected, expected_weights = reference(query, query, query, attn_mask=~causal_mask(length),
                                               average_attn_weights=False)
        got, got_weights = ours(query, query, query, mask=causal_mask(length))
        assert (got - expected).abs().max() <= 1e-5
        assert (got_weights - expected_weights).abs().max() <= 1e-5
        # 交叉注意力 + key 轴上的 padding mask
        expected, _ = reference(query, memory, memory, key_padding_mask=~padding_mask(lengths, length + 2)[:, 0, 0])
        got, _ = ours(query, memory, memory, mask=padding_mask(lengths, length + 2))
        assert (got - expected).abs().max() <= 1e-5
        fast, none = ours(query, memory, memory, mask=padding_mask(lengths, length + 2), need_weights=False)
        assert none is None
        assert (fast - expected).abs().max() <= 1e-5


def test_multi_head_attention_gradients_match_torch():
    torch.manual_seed(3)
    reference = nn.MultiheadAttention(8, 2, batch_first=True)
    ours = MultiHeadAttention(8, 2).load_from_torch(reference)
    x = torch.randn(2, 5, 8)
    reference(x, x, x, need_weights=False)[0].square().sum().backward()
    ours(x, x, x)[0].square().sum().backward()
    assert (ours.out_proj.weight.grad - reference.out_proj.weight.grad).abs().max() <= 1e-5
    q_grad = reference.in_proj_weight.grad[:8]
    assert (ours.q_proj.weight.grad - q_grad).abs().max() <= 1e-5


def test_script_reports_small_differences(tmp_path):
    from stage2_transformer import attention

    summary = attention.main(["--smoke", "--output-dir", str(tmp_path / "run")])
    assert summary["sdpa_max_abs_diff"] <= 1e-5
    assert summary["mha_max_abs_diff"] <= 1e-5
    assert summary["walkthrough_matrix_vs_loop_max_abs_diff"] <= 1e-5
    assert summary["fully_masked_rows_max_abs"] == 0
    assert summary["naive_softmax_overflow_is_nan"] is True
    assert summary["pad_columns_weight_sum"] == 0
    # 不缩放时熵随 d_k 塌缩；缩放后接近均匀分布的量级。
    assert summary["entropy_unscaled_largest_dk"] < 0.5 < 2.5 < summary["entropy_scaled_largest_dk"]
