"""自注意力与多头注意力，手写实现（路线图：Transformer → 自注意力机制：推导 Q/K/V 矩阵计算过程，手写 Attention 层）

学什么
- 从一句话的词向量 X (L×d_model) 出发：Q = X W_Q，K = X W_K，V = X W_V。
  第 i 个词的 query q_i 与每个词的 key k_j 做点积，得到打分 s_ij = q_i·k_j / √d_k；
  对每一行做 softmax 得到注意力权重 α_ij（每行加起来是 1）；上下文向量 c_i = Σ_j α_ij v_j。
  写成矩阵：Attention(Q, K, V) = softmax(Q Kᵀ / √d_k) V（Vaswani et al. 2017）。
- 为什么除以 √d_k：q、k 的每个分量方差为 1 时，点积 q·k 的方差是 d_k。d_k 越大，打分越分散，
  softmax 越接近 one-hot，梯度几乎为零。脚本量出不同 d_k 下 softmax 每行的熵：不缩放时熵随 d_k 变小，
  缩放后基本不变。
- softmax 自己写：先减去每行最大值再取 exp（数学上结果不变，但 exp 不会溢出），再除以每行之和。
  不减最大值时，打分 1000 的 exp 是 inf，结果是 NaN；脚本里演示了这一点。
- mask（掩码）：本文件约定 mask 是 bool 张量，True 表示"可以看"，与 F.scaled_dot_product_attention
  的 bool attn_mask 相同（注意 nn.MultiheadAttention 的 key_padding_mask / attn_mask 反过来：True 表示"不许看"）。
    · padding mask：batch 里短句补了 <pad>，任何 query 都不许看这些 key（作用在 key 轴上）。
    · causal mask：解码器第 i 个位置只能看 j ≤ i，不能偷看未来（下三角矩阵）。
    · 两者一起用：按位与（&），形状靠广播对齐。
  被挡住的打分当作 -∞，exp 后是 0。如果某一行所有 key 都被挡住（例如 query 本身是 <pad>），
  这一行没有可分配的权重：本实现输出全 0，而不是 0/0 = NaN。torch 2.13 的 F.scaled_dot_product_attention
  在 CPU 上也给 0，nn.MultiheadAttention 却给 NaN（脚本里两种都量了），NaN 一旦进了残差连接就会传遍整个模型。
- 多头注意力：把 d_model 切成 h 个头，每头 d_k = d_model / h，各自做注意力，再拼接、过输出投影 W_O。
  参数量与单头相同，但每个头可以关注不同的关系。MultiHeadAttention 的权重可以从 nn.MultiheadAttention
  原样复制过来，输出一致（tests 里检查最大绝对误差 ≤ 1e-5）。
- 一个常用的提速技巧：先算 exp(s - max) @ V，再逐行除以和（L×d 次除法，而不是 L×L 次）。
  不需要返回权重时（need_weights=False）走这条路；速度与 PyTorch 融合内核的对比见 benchmarks/attention_speed.py。

怎么跑
    roadmap run attention --smoke
    roadmap run attention            # 不需要数据，几秒
输出：打分、权重、上下文的逐步数值（日志），与 PyTorch 参考实现的最大误差，mask 示意图、
√d_k 缩放前后的 softmax 熵曲线、一句话的多头注意力权重图。

结果（2 核 CPU，torch 2.13）：与 F.scaled_dot_product_attention 的最大绝对误差约 1e-7，
与 nn.MultiheadAttention（复制权重）约 1e-7；全被挡住的行输出 0。
"""

from __future__ import annotations

import argparse
import logging
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from roadmap import cli, plots, runs

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- softmax 与 mask


def softmax(scores: torch.Tensor, dim: int = -1, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax along `dim` written by hand: subtract the row maximum, exponentiate, divide by the sum.

    `mask` (bool, True = keep, broadcastable to `scores`) drops entries; a row with no kept entry
    returns zeros instead of NaN.
    """
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    row_max = scores.amax(dim=dim, keepdim=True)
    # 整行都是 -inf 时最大值也是 -inf，(-inf) - (-inf) = NaN；把这种行的最大值换成 0，exp(-inf) = 0。
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    exponentials = torch.exp(scores - row_max)
    total = exponentials.sum(dim=dim, keepdim=True)
    return exponentials / total.clamp_min(torch.finfo(exponentials.dtype).tiny)


def padding_mask(lengths: torch.Tensor, max_length: int | None = None) -> torch.Tensor:
    """Key-axis padding mask from true lengths (B,): shape (B, 1, 1, Lk), True where the key is a real token.

    The two singleton axes broadcast over heads and queries.
    """
    lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1:
        raise ValueError(f"lengths 应该是一维张量 (B,)，实际形状 {tuple(lengths.shape)}")
    max_length = int(lengths.max()) if max_length is None else max_length
    if int(lengths.max()) > max_length:
        raise ValueError(f"有句子长度 {int(lengths.max())} 超过 max_length={max_length}")
    positions = torch.arange(max_length, device=lengths.device)
    return (positions[None, :] < lengths[:, None])[:, None, None, :]


def causal_mask(query_length: int, key_length: int | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """Lower-triangular mask (Lq, Lk), True where query i may see key j (j <= i + Lk - Lq).

    With Lk > Lq the queries are the last Lq positions of the sequence (decoding with earlier keys).
    """
    key_length = query_length if key_length is None else key_length
    if key_length < query_length:
        raise ValueError(f"key_length={key_length} 不能小于 query_length={query_length}")
    return torch.ones(query_length, key_length, dtype=torch.bool, device=device).tril(diagonal=key_length - query_length)


# ---------------------------------------------------------------- 缩放点积注意力


BATCH_CHUNK = 1     # 不要权重时每次算多少个样本：一个样本 8 头 × 256 × 256 的打分约 2 MB，留在 CPU 缓存里
QUERY_BLOCK = 64    # is_causal 时按这么多行 query 分块，每块只算它看得见的 key


def _rows_softmax_times_value(scores: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None, dropout_p: float,
                              training: bool) -> torch.Tensor:
    """softmax(scores) @ value with the division done after the product; `scores` is overwritten."""
    if mask is not None:
        scores.masked_fill_(~mask, float("-inf"))
    row_max = scores.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    exponentials = scores.sub_(row_max).exp_()
    total = exponentials.sum(dim=-1, keepdim=True)
    if dropout_p > 0:
        exponentials = F.dropout(exponentials, p=dropout_p, training=training)
    return (exponentials @ value).div_(total.clamp_min_(torch.finfo(total.dtype).tiny))


def _slice_mask(mask: torch.Tensor | None, batch: slice, rows: slice, keys: slice) -> torch.Tensor | None:
    """Cut a 4-D-broadcastable mask to a batch chunk and a query/key block (size-1 axes stay whole)."""
    if mask is None:
        return None
    mask = mask[(None,) * (4 - mask.dim())] if mask.dim() < 4 else mask
    return mask[batch if mask.shape[0] > 1 else slice(None), :, rows if mask.shape[2] > 1 else slice(None),
                keys if mask.shape[3] > 1 else slice(None)]


def scaled_dot_product_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                 mask: torch.Tensor | None = None, *, is_causal: bool = False, dropout_p: float = 0.0,
                                 training: bool = False, need_weights: bool = True
                                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """softmax(Q Kᵀ / √d_k) V for q (..., Lq, d_k), k (..., Lk, d_k), v (..., Lk, d_v).

    `mask` is bool and broadcastable to (..., Lq, Lk), True = may attend; `is_causal=True` adds the
    causal mask. Returns the context (..., Lq, d_v) and the weights (..., Lq, Lk).
    With `need_weights=False` the weights are None and the work is done in blocks that stay in the
    CPU cache. The causal case then skips the keys a query block cannot see, and rows are normalised
    after the product with V. Both paths give the same context.
    """
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(f"query 和 key 的最后一维（d_k）必须相同：{query.shape[-1]} vs {key.shape[-1]}")
    if key.shape[-2] != value.shape[-2]:
        raise ValueError(f"key 和 value 的长度必须相同：{key.shape[-2]} vs {value.shape[-2]}")
    if mask is not None and mask.dtype != torch.bool:
        raise TypeError(f"mask 必须是 bool 张量（True 表示可以看），实际 dtype 是 {mask.dtype}")
    query_length, key_length = query.shape[-2], key.shape[-2]
    # 先把 q 乘以 1/√d_k：L×d 次乘法，比缩放 L×L 的打分矩阵省。
    query = query * (1.0 / math.sqrt(query.shape[-1]))
    if need_weights or query.dim() != 4 or mask is not None and mask.dim() > 4:
        if is_causal:
            causal = causal_mask(query_length, key_length, device=query.device)
            mask = causal if mask is None else mask & causal
        scores = query @ key.transpose(-2, -1)  # (..., Lq, Lk)
        if not need_weights:
            return _rows_softmax_times_value(scores, value, mask, dropout_p, training), None
        weights = softmax(scores, dim=-1, mask=mask)
        dropped = F.dropout(weights, p=dropout_p, training=training) if dropout_p > 0 else weights
        return dropped @ value, weights

    # 分块计算：每次一个样本（所有头），causal 时 query 再按 QUERY_BLOCK 行分块，
    # 第 i0..i1 行只看得见前 i1 + (Lk - Lq) 个 key，后面的块整块跳过，省下约一半的乘法。
    batch = torch.broadcast_shapes(query.shape[:-2], key.shape[:-2])[0]
    output = query.new_empty(*torch.broadcast_shapes(query.shape[:-2], value.shape[:-2]), query_length, value.shape[-1])
    block = QUERY_BLOCK if is_causal else query_length
    full_causal = causal_mask(query_length, key_length, device=query.device) if is_causal else None
    for start in range(0, batch, BATCH_CHUNK):
        chunk = slice(start, start + BATCH_CHUNK)
        q, k, v = (x[chunk] if x.shape[0] > 1 else x for x in (query, key, value))
        for row in range(0, query_length, block):
            rows = slice(row, min(row + block, query_length))
            visible = min(rows.stop + key_length - query_length, key_length) if is_causal else key_length
            if visible <= 0:
                output[chunk, :, rows] = 0
                continue
            block_mask = _slice_mask(mask, chunk, rows, slice(0, visible))
            if is_causal:
                causal = full_causal[rows, :visible]
                block_mask = causal if block_mask is None else block_mask & causal
            scores = q[:, :, rows] @ k[:, :, :visible].transpose(-2, -1)
            output[chunk, :, rows] = _rows_softmax_times_value(scores, v[:, :, :visible], block_mask, dropout_p,
                                                               training)
    return output, None


# ---------------------------------------------------------------- 多头注意力


class MultiHeadAttention(nn.Module):
    """Multi-head attention, batch first: (B, L, d_model) in and out, `num_heads` heads of d_model / num_heads.

    forward(query, key, value, mask) with `mask` bool broadcastable to (B, H, Lq, Lk), True = may attend
    (build it with `padding_mask` and `causal_mask`). The weights of the last call are kept in
    `last_weights` (B, H, Lq, Lk) for visualisation.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if d_model % num_heads != 0:
            raise ValueError(f"d_model={d_model} 必须能被 num_heads={num_heads} 整除")
        self.d_model = d_model
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.last_weights: torch.Tensor | None = None

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, L, d_k)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None = None,
                need_weights: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        if query.dim() != 3 or query.shape[-1] != self.d_model:
            raise ValueError(f"query 的形状应为 (B, L, {self.d_model})，实际 {tuple(query.shape)}")
        q = self._split_heads(self.q_proj(query))
        k = self._split_heads(self.k_proj(key))
        v = self._split_heads(self.v_proj(value))
        context, weights = scaled_dot_product_attention(q, k, v, mask, dropout_p=self.dropout, training=self.training,
                                                        need_weights=need_weights)
        self.last_weights = None if weights is None else weights.detach()
        batch, _, length, _ = context.shape
        merged = context.transpose(1, 2).reshape(batch, length, self.d_model)  # 拼接各头
        return self.out_proj(merged), weights

    @torch.no_grad()
    def load_from_torch(self, reference: nn.MultiheadAttention) -> "MultiHeadAttention":
        """Copy the weights of a `nn.MultiheadAttention` (same d_model and heads) into this module."""
        if reference.embed_dim != self.d_model or reference.num_heads != self.num_heads:
            raise ValueError("nn.MultiheadAttention 的 embed_dim / num_heads 与本模块不同")
        if not reference._qkv_same_embed_dim:
            raise ValueError("只支持 q、k、v 维度相同的 nn.MultiheadAttention")
        for projection, weight in zip((self.q_proj, self.k_proj, self.v_proj), reference.in_proj_weight.chunk(3)):
            projection.weight.copy_(weight)
        if reference.in_proj_bias is not None:
            for projection, bias in zip((self.q_proj, self.k_proj, self.v_proj), reference.in_proj_bias.chunk(3)):
                projection.bias.copy_(bias)
        self.out_proj.weight.copy_(reference.out_proj.weight)
        if reference.out_proj.bias is not None:
            self.out_proj.bias.copy_(reference.out_proj.bias)
        return self


# ---------------------------------------------------------------- 课程演示


def walk_through(generator: torch.Generator) -> dict[str, float]:
    """Log Q, K, V, scores, weights and contexts for a four-token sentence, step by step."""
    words = ["I", "love", "deep", "learning"]
    d_model, d_k = 6, 4
    x = torch.randn(len(words), d_model, generator=generator)
    w_q, w_k, w_v = (torch.randn(d_model, d_k, generator=generator) / math.sqrt(d_model) for _ in range(3))
    q, k, v = x @ w_q, x @ w_k, x @ w_v
    scores = q @ k.T / math.sqrt(d_k)
    weights = softmax(scores)
    context = weights @ v
    # 逐元素的双重循环，与矩阵写法互相核对。
    loop_context = torch.zeros_like(context)
    for i in range(len(words)):
        row = [float(q[i] @ k[j]) / math.sqrt(d_k) for j in range(len(words))]
        top = max(row)
        exps = [math.exp(value - top) for value in row]
        for j in range(len(words)):
            loop_context[i] += exps[j] / sum(exps) * v[j]
    numpy_options = {"precision": 3, "suppress": True}
    with np.printoptions(**numpy_options):
        logger.info("句子 %s，d_model=%d，d_k=%d", words, d_model, d_k)
        logger.info("打分 Q Kᵀ / √d_k（行 = query，列 = key）：\n%s", scores.numpy())
        logger.info("注意力权重 softmax（每行和为 1）：\n%s", weights.numpy())
        logger.info("上下文向量 c = α V：\n%s", context.numpy())
    naive = torch.exp(torch.tensor([1000.0, 999.0])) / torch.exp(torch.tensor([1000.0, 999.0])).sum()
    logger.info("不减最大值的 softmax([1000, 999]) = %s；减去最大值后 = %s", naive.tolist(),
                softmax(torch.tensor([1000.0, 999.0])).tolist())
    return {"walkthrough_matrix_vs_loop_max_abs_diff": float((context - loop_context).abs().max()),
            "naive_softmax_overflow_is_nan": bool(torch.isnan(naive).any())}


def compare_with_pytorch(generator: torch.Generator) -> dict[str, float]:
    """Max abs differences against F.scaled_dot_product_attention and nn.MultiheadAttention."""
    batch, heads, length, d_k = 3, 4, 7, 8
    q, k, v = (torch.randn(batch, heads, length, d_k, generator=generator) for _ in range(3))
    lengths = torch.tensor([7, 5, 2])
    mask = padding_mask(lengths, length) & causal_mask(length)
    ours, _ = scaled_dot_product_attention(q, k, v, mask)
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    fast, _ = scaled_dot_product_attention(q, k, v, mask, need_weights=False)

    d_model = heads * d_k
    torch_mha = nn.MultiheadAttention(d_model, heads, batch_first=True).eval()
    ours_mha = MultiHeadAttention(d_model, heads).load_from_torch(torch_mha).eval()
    x = torch.randn(batch, length, d_model, generator=generator)
    key_padding = ~padding_mask(lengths, length)[:, 0, 0, :]  # nn.MultiheadAttention：True = 不许看
    with torch.no_grad():
        expected, expected_weights = torch_mha(x, x, x, key_padding_mask=key_padding, need_weights=True,
                                               average_attn_weights=False)
        got, got_weights = ours_mha(x, x, x, mask=padding_mask(lengths, length))
    fully_masked = scaled_dot_product_attention(q, k, v, torch.zeros(length, length, dtype=torch.bool))[0]
    result = {
        "sdpa_max_abs_diff": float((ours - reference).abs().max()),
        "sdpa_fast_path_max_abs_diff": float((fast - reference).abs().max()),
        "mha_max_abs_diff": float((got - expected).abs().max()),
        "mha_weights_max_abs_diff": float((got_weights - expected_weights).abs().max()),
        "fully_masked_rows_max_abs": float(fully_masked.abs().max()),
    }
    with torch.no_grad():
        blocked = torch.ones(length, length, dtype=torch.bool)
        blocked[0] = False  # 第 0 个 query 什么都不许看
        result["torch_mha_fully_masked_row_is_nan"] = bool(torch.isnan(torch_mha(x, x, x, attn_mask=~blocked)[0]).any())
        result["sdpa_fully_masked_row_is_nan"] = bool(torch.isnan(F.scaled_dot_product_attention(
            q, k, v, attn_mask=blocked)).any())
    logger.info("与 F.scaled_dot_product_attention 的最大绝对误差 %.2e（不返回权重的快速路径 %.2e）",
                result["sdpa_max_abs_diff"], result["sdpa_fast_path_max_abs_diff"])
    logger.info("与 nn.MultiheadAttention（复制权重）的最大绝对误差：输出 %.2e，权重 %.2e",
                result["mha_max_abs_diff"], result["mha_weights_max_abs_diff"])
    logger.info("所有 key 都被挡住的行：本实现输出最大绝对值 %.1f；出现 NaN：F.scaled_dot_product_attention %s，"
                "nn.MultiheadAttention %s", result["fully_masked_rows_max_abs"], result["sdpa_fully_masked_row_is_nan"],
                result["torch_mha_fully_masked_row_is_nan"])
    return result


def scaling_entropy(dims: list[int], generator: torch.Generator, samples: int = 256, length: int = 32
                    ) -> dict[str, list[float]]:
    """Mean entropy (nats) of softmax rows of q·k with and without the 1/√d_k factor, per d_k."""
    unscaled, scaled = [], []
    for d_k in dims:
        q = torch.randn(samples, length, d_k, generator=generator)
        k = torch.randn(samples, length, d_k, generator=generator)
        scores = q @ k.transpose(-2, -1)
        for store, factor in ((unscaled, 1.0), (scaled, 1.0 / math.sqrt(d_k))):
            weights = softmax(scores * factor)
            entropy = -(weights * weights.clamp_min(1e-30).log()).sum(-1).mean()
            store.append(float(entropy))
    return {"unscaled": unscaled, "scaled": scaled}


def plot_masks(length: int, lengths: torch.Tensor, path) -> None:
    """Padding, causal and combined masks of the first sentence side by side."""
    pad = padding_mask(lengths, length)[0, 0].expand(length, length)
    causal = causal_mask(length)
    figure, axes = plt.subplots(1, 3, figsize=(11, 3.6))
    for axis, (title, mask) in zip(axes, (("padding mask (key axis)", pad), ("causal mask", causal),
                                          ("padding & causal", pad & causal))):
        axis.imshow(mask.numpy(), cmap="Greens", vmin=0, vmax=1)
        axis.set(title=title, xlabel="key j", ylabel="query i")
    figure.suptitle(f"True (green) = may attend; sentence length {int(lengths[0])} of {length}")
    plots.save_figure(figure, path)


def build_argument_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser(__doc__.splitlines()[0], epochs=1, batch_size=1, lr=1e-3, shared_loop=False)
    parser.add_argument("--heads", type=cli.positive_int, default=4, help="多头注意力示例的头数")
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_argument_parser()
    args = parser.parse_args(argv)
    run_dir = cli.start_run(args, "attention")
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(args.seed)

    summary: dict[str, float] = {}
    summary.update(walk_through(generator))
    summary.update(compare_with_pytorch(generator))

    dims = [4, 16, 64, 256] if args.smoke else [4, 16, 64, 256, 1024]
    entropy = scaling_entropy(dims, generator, samples=32 if args.smoke else 256)
    for d_k, unscaled, scaled in zip(dims, entropy["unscaled"], entropy["scaled"]):
        logger.info("d_k=%4d：softmax 行熵 不缩放 %.3f，除以 √d_k 后 %.3f（均匀分布的熵 %.3f）", d_k, unscaled, scaled,
                    math.log(32))
    summary["entropy_unscaled_largest_dk"] = entropy["unscaled"][-1]
    summary["entropy_scaled_largest_dk"] = entropy["scaled"][-1]
    figure, axis = plt.subplots(figsize=(5.5, 4))
    axis.plot(dims, entropy["unscaled"], marker="o", label="softmax(q·k)")
    axis.plot(dims, entropy["scaled"], marker="o", label="softmax(q·k / sqrt(d_k))")
    axis.axhline(math.log(32), color="gray", linestyle="--", label="uniform over 32 keys")
    axis.set(xscale="log", xlabel="d_k", ylabel="mean row entropy (nats)", title="why divide by sqrt(d_k)")
    axis.legend()
    axis.grid(alpha=0.3)
    plots.save_figure(figure, run_dir / "scaling_entropy.png")

    plot_masks(8, torch.tensor([6, 8]), run_dir / "masks.png")

    # 一句话（随机词向量，未训练）的多头注意力权重：每个头一张图。
    words = "the cat sat on the mat <pad> <pad>".split()
    d_model = 8 * args.heads
    attention = MultiHeadAttention(d_model, args.heads).eval()
    x = torch.randn(1, len(words), d_model, generator=generator)
    with torch.no_grad():
        attention(x, x, x, mask=padding_mask(torch.tensor([6]), len(words)))
    weights = attention.last_weights[0].numpy()
    figure, axes = plt.subplots(1, args.heads, figsize=(3.2 * args.heads, 3.4), squeeze=False)
    for head, axis in enumerate(axes[0]):
        axis.imshow(weights[head], cmap="viridis", vmin=0, vmax=1)
        axis.set_xticks(range(len(words)), labels=words, rotation=90)
        axis.set_yticks(range(len(words)), labels=words)
        axis.set_title(f"head {head}")
    figure.suptitle("untrained multi-head attention, padding keys masked")
    plots.save_figure(figure, run_dir / "multi_head_weights.png")
    summary["pad_columns_weight_sum"] = float(weights[:, :, 6:].sum())
    summary["seconds"] = round(time.perf_counter() - started, 2)

    runs.save_metrics(run_dir, summary)
    if runs.is_main_process():
        print(runs.markdown_table([
            {"check": "hand attention vs F.scaled_dot_product_attention", "max abs diff": summary["sdpa_max_abs_diff"]},
            {"check": "hand multi-head vs nn.MultiheadAttention", "max abs diff": summary["mha_max_abs_diff"]},
            {"check": "fully masked rows (should be 0)", "max abs diff": summary["fully_masked_rows_max_abs"]},
        ]))
        print(f"图和指标在 {run_dir}")
    return summary


if __name__ == "__main__":
    cli.run_script(main)
