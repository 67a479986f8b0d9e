"""位置编码：正弦 vs 可学习（路线图：Transformer 架构 → 位置编码（正弦 vs 可学习））

学什么
- 为什么需要位置编码：self-attention 对输入顺序是置换等变（permutation-equivariant）的，
  把输入 token 打乱成 xπ，输出只是同样地打乱：f(xπ) = f(x)π。没有位置信息时它看到的只是"一袋 token"。
  脚本用 nn.MultiheadAttention 数值验证：不加位置编码时 max|f(xπ) - f(x)π| 只有浮点舍入（约 1e-7），加上后是 0.26～0.99；
- 正弦位置编码（sinusoidal，Vaswani et al. 2017 "Attention Is All You Need"）：
      PE[pos, 2i] = sin(pos · w_i),  PE[pos, 2i+1] = cos(pos · w_i),  w_i = 1 / 10000^(2i / d_model)，
  波长从 2π 几何增长到 10000·2π：热力图里左边的维度随位置变化快，右边的几乎不变。
  d_model 为奇数时最后一列是没有 cos 配对的 sin；
- 相对位置（relative position）：每对 (sin, cos) 是角度 w_i·pos 的单位向量，位置加 k 就是把它旋转 w_i·k：
      PE[p + k] = R(k) · PE[p]，R(k) 是 2×2 旋转块组成的分块对角矩阵，只依赖 k、不依赖 p（relative_rotation）。
  所以点积 PE[p]·PE[p+k] = Σ_i cos(w_i k) 也只依赖 k：随 k 总体下降、带着振荡。
  点积对 k 和 -k 相同，分不出前后；方向信息在 R(k) 里，要靠 Q/K 投影去用；
- 可学习位置编码（learned，BERT、GPT-2 的做法）：nn.Embedding(max_len, d_model)，每个位置一行参数。
  表外的位置没有向量：LearnedPositionalEncoding 对过长的序列抛出写明两个长度的 ValueError，
  而不是让 nn.Embedding 内部报 index out of range；
- 外推（extrapolation）：正弦公式能给任意位置算出向量，SinusoidalPositionalEncoding 超出 max_len 时按公式现算，
  不报错；但网络从没在那些位置上训练过。实验里训练长度 24、测试长度 48：前 24 个位置照样全对，
  新位置的准确率掉到随机猜测的水平。"算得出向量"不等于"外推得好"；
- offset：两种编码的 forward(x, offset) 都接受起始位置，增量解码（一次只送进位置 t 的新 token）时用。

实验：复制前一个 token
  输入是长度 L 的均匀随机 token 序列，位置 i（i >= 1）的标签是第 i-1 个 token，答案完全由位置关系决定。
  同一个小模型（token embedding + 位置编码 + 2 层 nn.TransformerEncoderLayer + 线性输出）分别用
  正弦、可学习、不加位置编码训练。不加位置编码时，模型最多学会"猜这条序列里出现最多的其他 token"
  （bag_of_tokens_accuracy，按这个规则直接算出的准确率）；训练好的无位置编码模型本身也被验证是置换等变的。

数据
  脚本自己生成随机 token 序列，不需要下载，--data-dir 不起作用；--max-train-samples 是训练序列条数（默认 4000）。

怎么跑
    roadmap run positional_encoding --smoke      # 几秒：长度 12、1 层、2000 条训练序列
    roadmap run positional_encoding              # 默认设置，空闲 2 核 CPU 约 30 秒
    python stage2_transformer/positional_encoding.py --seq-len 32 --long-seq-len 96 --vocab-size 32

结果（默认设置）：词表 16，训练 4000 条、测试 1000 条长度 24 的序列，d_model 64，4 头，2 层，6 个 epoch，lr 2e-3。
在 2 核 CPU 上单线程运行约 29 秒，与其他任务争用 CPU 时 76～113 秒。同一 --seed 在本机跑两次，结果完全相同。
    测试准确率：正弦 1.000，可学习 1.000，不加位置编码 0.162（按最多的其他 token 猜：0.170，随机猜：0.0625）
    训练 loss（第 1 个 → 第 6 个 epoch）：正弦 2.58 → 0.0009，可学习 1.79 → 0.0012，不加 2.64 → 2.41
    （在这个任务和这种初始化下，可学习的表收敛得更快；见 training_loss.png）
    长度 48 的序列：正弦模型在前 24 个位置 0.999，位置 24～47 只有 0.070；可学习编码直接抛出 ValueError
    相邻位置向量的平均余弦相似度：正弦 0.966，训练后的可学习表 0.019（它没有学出"相邻位置相似"的结构）
    旋转性质最大误差 1.4e-14；PE[p]·PE[p+k] 在不同 p 之间最大差 2.5e-14（float64）
    置换等变误差：不加位置编码 1.0e-7，正弦 0.26，可学习 0.99；训练好的无位置编码模型 1.4e-6
"""

from __future__ import annotations

import contextlib
import logging
import math
import time

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from roadmap import cli, plots, runs, training  # roadmap.plots 先选好 Agg 后端，再导入 pyplot

import matplotlib.pyplot as plt  # noqa: E402  isort: skip

logger = logging.getLogger(__name__)

# 原论文（Vaswani et al. 2017, "Attention Is All You Need"）里波长几何级数的底数。
SINUSOIDAL_BASE = 10000.0


# ---------------------------------------------------------------- 正弦位置编码


def sinusoidal_frequencies(d_model: int) -> torch.Tensor:
    """Return the angular frequencies w_i = 1 / 10000^(2i / d_model), i = 0 .. ceil(d_model / 2) - 1, in float64."""
    if d_model < 1:
        raise ValueError(f"d_model 必须是正整数，收到 {d_model}")
    even_dims = torch.arange(0, d_model, 2, dtype=torch.float64)  # 2i = 0, 2, 4, ...
    return torch.exp(-math.log(SINUSOIDAL_BASE) * even_dims / d_model)


def sinusoidal_table(length: int, d_model: int, *, start: int = 0,
                     dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """Build the sinusoidal position table for positions start .. start + length - 1, shape (length, d_model).

    PE[pos, 2i] = sin(pos / 10000^(2i/d_model)), PE[pos, 2i+1] = cos(pos / 10000^(2i/d_model)).
    With an odd d_model the last column is a sin whose cos partner would fall outside the table.
    """
    if length < 0:
        raise ValueError(f"length 不能为负数，收到 {length}")
    if start < 0:
        raise ValueError(f"起始位置 start 不能为负数，收到 {start}")
    frequencies = sinusoidal_frequencies(d_model)  # (ceil(d/2),)
    # 角度在 float64 里算：位置到几千时 float32 的 pos * w 已有 1e-4 量级的误差。
    positions = torch.arange(start, start + length, dtype=torch.float64)
    angles = positions[:, None] * frequencies[None, :]  # (length, ceil(d/2))
    table = torch.empty(length, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles[:, : d_model // 2])
    return table.to(dtype=dtype, device=device)


def relative_rotation(offset: int, d_model: int) -> torch.Tensor:
    """Return the (d_model, d_model) matrix R(k) with PE[p + k] = R(k) @ PE[p] for every position p.

    Each pair (sin(w p), cos(w p)) is rotated by the angle w k, so R(k) is block diagonal with
    2x2 blocks [[cos wk, sin wk], [-sin wk, cos wk]] that depend on k only, not on p.
    Raises ValueError for an odd d_model: a lone sin column has no such linear map.
    """
    if d_model % 2:
        raise ValueError(f"旋转性质只对偶数 d_model 成立（最后一列 sin 没有配对的 cos），收到 d_model={d_model}")
    angles = offset * sinusoidal_frequencies(d_model)  # (d/2,)
    rotation = torch.zeros(d_model, d_model, dtype=torch.float64)
    rotation[0::2, 0::2] = torch.diag(torch.cos(angles))
    rotation[0::2, 1::2] = torch.diag(torch.sin(angles))
    rotation[1::2, 0::2] = torch.diag(-torch.sin(angles))
    rotation[1::2, 1::2] = torch.diag(torch.cos(angles))
    return rotation


def _check_input(x: torch.Tensor, d_model: int, offset: int) -> None:
    if x.dim() != 3 or x.size(-1) != d_model:
        raise ValueError(f"输入应为 (batch, seq_len, d_model={d_model}) 的张量，收到形状 {tuple(x.shape)}")
    if offset < 0:
        raise ValueError(f"offset（起始位置）不能为负数，收到 {offset}")


class SinusoidalPositionalEncoding(nn.Module):
    """Add the fixed sinusoidal table to token embeddings: dropout(x + PE[offset : offset + L]).

    The table for the first `max_len` positions is a buffer registered with persistent=False, so it
    follows `.to(device)` but stays out of state_dict (it is a formula, not a weight). Positions past
    `max_len` are computed on the fly from the same formula, so any length works: that is the
    extrapolation a learned table cannot do. `offset` is the first position of `x`, for incremental
    decoding where one new token at position t arrives at a time.
    The original Transformer scales the token embeddings by sqrt(d_model) before this addition; that
    scaling belongs to the embedding layer, not here.
    """

    def __init__(self, d_model: int, max_len: int = 5000, dropout: float = 0.0):
        super().__init__()
        if max_len < 1:
            raise ValueError(f"max_len 必须是正整数，收到 {max_len}")
        self.d_model = d_model
        self.max_len = max_len
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("pe", sinusoidal_table(max_len, d_model), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        _check_input(x, self.d_model, offset)
        end = offset + x.size(1)
        if end <= self.max_len:
            table = self.pe[offset:end]
        else:
            # 超出预先算好的表：按公式现算，结果与更大的 max_len 完全一致。
            table = sinusoidal_table(x.size(1), self.d_model, start=offset, device=x.device)
        return self.dropout(x + table.to(x.dtype))  # table (L, d) 广播到 (B, L, d)


# ---------------------------------------------------------------- 可学习位置编码


class LearnedPositionalEncoding(nn.Module):
    """Add a trained position embedding (one row per position, as in BERT and GPT-2) to token embeddings.

    The table has exactly `max_len` rows, so a sequence that reaches past position max_len - 1
    raises ValueError: there is no trained vector for those positions. `offset` is the first
    position of `x`, for incremental decoding.
    """

    def __init__(self, d_model: int, max_len: int, dropout: float = 0.0, init_std: float = 1.0):
        super().__init__()
        if max_len < 1:
            raise ValueError(f"max_len 必须是正整数，收到 {max_len}")
        self.d_model = d_model
        self.max_len = max_len
        self.position_embeddings = nn.Embedding(max_len, d_model)
        # 初始化要和词向量同一量级，否则较小的一方几乎被忽略。默认 N(0, 1) 与 nn.Embedding 的默认相同，
        # 也和正弦表的取值 [-1, 1] 同量级。transformers 的 BERT、GPT-2 词向量和位置向量都用 N(0, 0.02)，配它们时传 init_std=0.02。
        nn.init.normal_(self.position_embeddings.weight, mean=0.0, std=init_std)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        _check_input(x, self.d_model, offset)
        end = offset + x.size(1)
        if end > self.max_len:
            raise ValueError(
                f"序列太长：需要位置 {offset}..{end - 1}（长度 {end}），但可学习位置编码只有 max_len={self.max_len} 个位置。"
                f"可学习的表无法外推到没训练过的位置；请截断输入到 {self.max_len} 以内，"
                f"或用更大的 max_len 重新训练，或改用 SinusoidalPositionalEncoding。")
        positions = torch.arange(offset, end, device=x.device)
        return self.dropout(x + self.position_embeddings(positions).to(x.dtype))


class NoPositionalEncoding(nn.Module):
    """Return x unchanged (with optional dropout): the baseline that shows what attention does without order."""

    def __init__(self, d_model: int, max_len: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.d_model = d_model
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        _check_input(x, self.d_model, offset)
        return self.dropout(x)


POSITION_KINDS = ("sinusoidal", "learned", "none")


def make_positional_encoding(kind: str, d_model: int, max_len: int, dropout: float = 0.0) -> nn.Module:
    """Build the positional encoding named `kind` ("sinusoidal", "learned" or "none")."""
    if kind == "sinusoidal":
        return SinusoidalPositionalEncoding(d_model, max_len, dropout)
    if kind == "learned":
        return LearnedPositionalEncoding(d_model, max_len, dropout)
    if kind == "none":
        return NoPositionalEncoding(d_model, max_len, dropout)
    raise ValueError(f"未知的位置编码 {kind!r}；可选：{', '.join(POSITION_KINDS)}")


# ---------------------------------------------------------------- 性质：相对位置与置换等变


def position_dot_products(table: torch.Tensor, starts: list[int], max_offset: int) -> torch.Tensor:
    """Return PE[p] · PE[p + k] for each p in `starts` (rows) and k = 0 .. max_offset (columns)."""
    rows = [table[start: start + max_offset + 1] @ table[start] for start in starts]
    return torch.stack(rows)  # (len(starts), max_offset + 1)


def rotation_max_error(length: int, d_model: int, offsets: list[int]) -> float:
    """Return max |PE[p + k] - R(k) PE[p]| over all p < length and the given offsets k, in float64."""
    table = sinusoidal_table(length + max(offsets), d_model, dtype=torch.float64)
    error = 0.0
    for offset in offsets:
        rotated = table[:length] @ relative_rotation(offset, d_model).T  # 每行 PE[p] 左乘 R(k)
        error = max(error, float((table[offset: offset + length] - rotated).abs().max()))
    return error


def permutation_equivariance_error(layer: nn.Module, x: torch.Tensor, permutation: torch.Tensor) -> float:
    """Return max |f(x[:, π]) - f(x)[:, π]| for f = `layer` applied along the sequence axis of x (B, L, d).

    Zero (up to rounding) means f is permutation-equivariant: shuffling the input tokens only
    shuffles the outputs, so f cannot tell which token came first.
    """
    with torch.no_grad():
        shuffled_then_applied = layer(x[:, permutation])
        applied_then_shuffled = layer(x)[:, permutation]
    return float((shuffled_then_applied - applied_then_shuffled).abs().max())


class SelfAttentionWithPosition(nn.Module):
    """Self-attention (nn.MultiheadAttention) on x + positional encoding; for the equivariance check."""

    def __init__(self, attention: nn.MultiheadAttention, position: nn.Module):
        super().__init__()
        self.attention = attention
        self.position = position

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.position(x)
        output, _ = self.attention(x, x, x, need_weights=False)
        return output


# ---------------------------------------------------------------- 实验：位置决定答案的玩具任务
#
# 任务"复制前一个 token"：输入 t_0 .. t_{L-1} 是均匀随机的 token，位置 i（i >= 1）的标签是 t_{i-1}。
# 答案完全由位置关系决定：没有位置编码时，self-attention 看到的只是一袋 token，
# 最多能猜"这袋 token 里出现最多的那个"。


def make_shift_data(num_sequences: int, length: int, vocab_size: int,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Return random tokens (N, L) and labels (N, L) with labels[:, i] = tokens[:, i - 1], labels[:, 0] = -100 (ignored)."""
    tokens = torch.randint(0, vocab_size, (num_sequences, length), generator=generator)
    labels = tokens.roll(1, dims=1)
    labels[:, 0] = -100
    return tokens, labels


def bag_of_tokens_accuracy(tokens: torch.Tensor) -> float:
    """Return the accuracy of predicting, at every position, the most frequent other token of the sequence.

    Without position information a model receives the sequence as a multiset, so the previous token
    is, for it, any other token of the multiset, and this rule is about the best it can do.
    NOTE: approximate bound, it ignores that t_{L-1} is never a label and position 0 has no label.
    """
    vocab_size = int(tokens.max()) + 1
    counts = torch.nn.functional.one_hot(tokens, vocab_size).sum(dim=1)  # (N, V)
    others = counts[:, None, :] - torch.nn.functional.one_hot(tokens, vocab_size)  # 去掉自身：(N, L, V)
    guesses = others.argmax(dim=-1)  # (N, L)
    labels = tokens.roll(1, dims=1)
    return float((guesses[:, 1:] == labels[:, 1:]).float().mean())


class ShiftTagger(nn.Module):
    """Token embedding + positional encoding + nn.TransformerEncoder + a linear head per position."""

    def __init__(self, kind: str, vocab_size: int, d_model: int, num_heads: int, num_layers: int, max_len: int):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, d_model)  # N(0, 1)，与正弦表、可学习表同量级
        self.position = make_positional_encoding(kind, d_model, max_len)
        layer = nn.TransformerEncoderLayer(d_model, num_heads, dim_feedforward=2 * d_model, dropout=0.0,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden_state = self.encoder(self.position(self.token_embedding(tokens)))  # (B, L, d)
        return self.head(hidden_state)  # logits (B, L, V)


def correct_by_position(model: nn.Module, tokens: torch.Tensor, labels: torch.Tensor,
                        batch_size: int) -> torch.Tensor:
    """Return the fraction of correct predictions at each position (L,), NaN where nothing is labelled."""
    correct = torch.zeros(tokens.size(1))
    counted = torch.zeros(tokens.size(1))
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(tokens), batch_size):
            batch_tokens = tokens[start: start + batch_size].to(device)
            batch_labels = labels[start: start + batch_size].to(device)
            predictions = model(batch_tokens).argmax(dim=-1)
            labelled = batch_labels != -100
            correct += ((predictions == batch_labels) & labelled).sum(dim=0).cpu()
            counted += labelled.sum(dim=0).cpu()
    return correct / counted


def overall_accuracy(per_position: torch.Tensor, counted_positions: slice = slice(1, None)) -> float:
    """Average the per-position accuracy over the labelled positions (every sequence has the same length)."""
    return float(per_position[counted_positions].mean())


def train_shift_tagger(model: nn.Module, tokens: torch.Tensor, labels: torch.Tensor, args,
                       device: torch.device, generator: torch.Generator) -> list[float]:
    """Train with AdamW and cross-entropy over the labelled positions; return the mean loss of each epoch."""
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss(ignore_index=-100)
    epoch_losses = []
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(len(tokens), generator=generator)
        total, batches = 0.0, 0
        for start in range(0, len(tokens), args.batch_size):
            index = order[start: start + args.batch_size]
            logits = model(tokens[index].to(device))  # (B, L, V)
            loss = loss_fn(logits.flatten(0, 1), labels[index].to(device).flatten())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
            batches += 1
        epoch_losses.append(total / batches)
        logger.info("  epoch %d/%d  loss %.4f", epoch, args.epochs, epoch_losses[-1])
    return epoch_losses


# ---------------------------------------------------------------- 图


def position_cosine_similarity(table: torch.Tensor) -> torch.Tensor:
    """Return the (L, L) cosine similarity between the position vectors (rows) of a table."""
    unit = table / table.norm(dim=1, keepdim=True)
    return unit @ unit.T


def plot_tables(sinusoidal: torch.Tensor, learned: torch.Tensor, path) -> None:
    """Draw both tables (positions x dimensions) on top and their position-position cosine similarity below."""
    figure, axes = plt.subplots(2, 2, figsize=(12, 9), gridspec_kw={"width_ratios": [2, 1]})
    panels = ((sinusoidal, f"sinusoidal PE ({len(sinusoidal)} positions)"),
              (learned, f"learned PE after training ({len(learned)} positions)"))
    for column, (values, title) in enumerate(panels):
        limit = float(values.abs().max())
        image = axes[0, column].imshow(values.numpy(), cmap="RdBu_r", aspect="auto", vmin=-limit, vmax=limit,
                                       interpolation="nearest")
        axes[0, column].set(title=title, xlabel="dimension", ylabel="position")
        figure.colorbar(image, ax=axes[0, column], fraction=0.046)
        image = axes[1, column].imshow(position_cosine_similarity(values).numpy(), cmap="RdBu_r", vmin=-1, vmax=1,
                                       interpolation="nearest")
        axes[1, column].set(title="cosine similarity between positions", xlabel="position", ylabel="position")
        figure.colorbar(image, ax=axes[1, column], fraction=0.046)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_dot_products(dot_products: torch.Tensor, starts: list[int], closed_form: torch.Tensor, path) -> None:
    """Draw PE[p] · PE[p + k] against k for several p, with the closed form sum_i cos(w_i k)."""
    figure, axis = plt.subplots(figsize=(7, 4))
    offsets = np.arange(dot_products.size(1))
    for row, start in zip(dot_products, starts):
        axis.plot(offsets, row.numpy(), label=f"p = {start}", linewidth=1.5)
    axis.plot(offsets, closed_form.numpy(), "k:", label="sum_i cos(w_i k)", linewidth=1.5)
    axis.set(xlabel="offset k", ylabel="PE[p] . PE[p+k]",
             title="dot product depends only on the offset k, not on p")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


def plot_long_accuracy(per_position: torch.Tensor, train_length: int, path) -> None:
    """Draw the sinusoidal model's accuracy at each position of the longer test sequences."""
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(np.arange(len(per_position)), per_position.numpy(), marker=".")
    axis.axvline(train_length - 0.5, color="red", linestyle="--", label=f"training length {train_length}")
    axis.set(xlabel="position", ylabel="accuracy", ylim=(-0.02, 1.02),
             title="sinusoidal model on sequences longer than in training")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


# ---------------------------------------------------------------- main


def check_properties(args, device: torch.device) -> dict:
    """Measure the rotation property, the dot-product profile and permutation equivariance; draw two figures."""
    results: dict = {}
    results["rotation_max_error"] = rotation_max_error(args.table_positions, args.d_model, offsets=[1, 3, 10, 50])

    table = sinusoidal_table(args.table_positions + args.max_offset, args.d_model, dtype=torch.float64)
    starts = [0, args.table_positions // 4, args.table_positions // 2]
    dot_products = position_dot_products(table, starts, args.max_offset)
    offsets = torch.arange(args.max_offset + 1, dtype=torch.float64)
    frequencies = sinusoidal_frequencies(args.d_model)
    # sin(a)sin(b) + cos(a)cos(b) = cos(a - b)：每对维度贡献 cos(w_i k)，与 p 无关。
    closed_form = torch.cos(offsets[:, None] * frequencies[None, : args.d_model // 2]).sum(dim=1)
    results["dot_product_spread_across_p"] = float((dot_products.max(dim=0).values
                                                    - dot_products.min(dim=0).values).abs().max())
    results["dot_product_closed_form_max_error"] = float((dot_products - closed_form).abs().max())
    logger.info("旋转性质 PE[p+k] = R(k)·PE[p] 的最大误差：%.2e", results["rotation_max_error"])
    logger.info("PE[p]·PE[p+k] 在 p = %s 之间的最大差：%.2e；与闭式 Σcos(w_i k) 的最大差：%.2e",
                starts, results["dot_product_spread_across_p"], results["dot_product_closed_form_max_error"])
    plot_dot_products(dot_products, starts, closed_form, args.run_dir / "relative_position_dot_product.png")

    torch.manual_seed(args.seed)
    attention = nn.MultiheadAttention(args.d_model, args.num_heads, batch_first=True).to(device)
    x = torch.randn(4, args.seq_len, args.d_model, device=device)
    permutation = torch.randperm(args.seq_len, device=device)
    for kind in POSITION_KINDS:
        layer = SelfAttentionWithPosition(attention, make_positional_encoding(kind, args.d_model, args.seq_len)).to(device)
        results[f"equivariance_error_{kind}"] = permutation_equivariance_error(layer, x, permutation)
    logger.info("self-attention 的置换等变误差 max|f(xπ) - f(x)π|：无位置编码 %.2e，正弦 %.2e，可学习 %.2e",
                results["equivariance_error_none"], results["equivariance_error_sinusoidal"],
                results["equivariance_error_learned"])
    return results


def run_shift_experiment(args, device: torch.device) -> tuple[dict, dict]:
    """Train one ShiftTagger per positional encoding; return metrics and the trained models."""
    generator = torch.Generator().manual_seed(args.seed)
    train_tokens, train_labels = make_shift_data(args.max_train_samples, args.seq_len, args.vocab_size, generator)
    test_tokens, test_labels = make_shift_data(args.test_samples, args.seq_len, args.vocab_size, generator)
    long_tokens, long_labels = make_shift_data(args.test_samples, args.long_seq_len, args.vocab_size, generator)
    logger.info("任务：复制前一个 token；训练 %d 条、测试 %d 条长度 %d 的序列，词表 %d；另测 %d 条长度 %d 的序列",
                len(train_tokens), len(test_tokens), args.seq_len, args.vocab_size, len(long_tokens), args.long_seq_len)

    results: dict = {"bag_of_tokens_accuracy": bag_of_tokens_accuracy(test_tokens),
                     "chance_accuracy": 1.0 / args.vocab_size}
    models: dict = {}
    histories: dict = {}
    for kind in tqdm(POSITION_KINDS, desc="位置编码", leave=False):
        logger.info("训练 %s：", kind)
        torch.manual_seed(args.seed)
        # 两种表都只开到训练长度：正弦编码在更长的序列上按公式现算，可学习编码在那里报错。
        model = ShiftTagger(kind, args.vocab_size, args.d_model, args.num_heads, args.num_layers, args.seq_len)
        histories[kind] = train_shift_tagger(model, train_tokens, train_labels, args, device, generator)
        per_position = correct_by_position(model, test_tokens, test_labels, args.batch_size)
        results[f"test_accuracy_{kind}"] = overall_accuracy(per_position)
        results[f"train_loss_epoch1_{kind}"] = histories[kind][0]
        results[f"train_loss_final_{kind}"] = histories[kind][-1]
        models[kind] = model

    # 训练好的无位置编码模型整体也是置换等变的：打乱输入 token，输出只是跟着打乱。
    permutation = torch.randperm(args.seq_len, generator=generator)
    embedded = models["none"].token_embedding(test_tokens[:8].to(device)).detach()
    trained_none = nn.Sequential(models["none"].encoder, models["none"].head).eval()
    results["trained_none_equivariance_error"] = permutation_equivariance_error(trained_none, embedded,
                                                                                permutation.to(device))

    # 比训练更长的序列：正弦编码能算出新位置的向量，可学习编码没有这些位置的向量。
    long_per_position = correct_by_position(models["sinusoidal"], long_tokens, long_labels, args.batch_size)
    results["long_accuracy_sinusoidal_seen_positions"] = overall_accuracy(long_per_position, slice(1, args.seq_len))
    results["long_accuracy_sinusoidal_new_positions"] = overall_accuracy(long_per_position, slice(args.seq_len, None))
    plot_long_accuracy(long_per_position, args.seq_len, args.run_dir / "sinusoidal_longer_sequences.png")
    try:
        correct_by_position(models["learned"], long_tokens, long_labels, args.batch_size)
        results["learned_rejects_long_input"] = False
    except ValueError as error:
        logger.info("可学习位置编码遇到长度 %d 的序列：%s", args.long_seq_len, error)
        results["learned_rejects_long_input"] = True

    plots.plot_curves({kind: losses for kind, losses in histories.items()}, args.run_dir / "training_loss.png",
                      xlabel="epoch", ylabel="cross-entropy", title="copy-previous-token: training loss")
    return results, models


def main(argv: list[str] | None = None) -> dict:
    parser = cli.build_parser(__doc__.splitlines()[0], epochs=6, batch_size=64, lr=2e-3, shared_loop=False)
    parser.epilog = "数据是脚本自己生成的随机 token 序列，--data-dir 不起作用；--max-train-samples 是训练序列条数。"
    parser.add_argument("--seq-len", type=cli.positive_int, default=24, help="训练和测试序列的长度（也是两种位置表的 max_len）")
    parser.add_argument("--long-seq-len", type=cli.positive_int, default=None,
                        help="外推测试的序列长度，须大于 --seq-len；默认是 --seq-len 的两倍")
    parser.add_argument("--vocab-size", type=cli.positive_int, default=16, help="随机 token 的词表大小")
    parser.add_argument("--d-model", type=cli.positive_int, default=64, help="模型宽度（位置向量的维数）")
    parser.add_argument("--num-heads", type=cli.positive_int, default=4, help="注意力头数，须整除 --d-model")
    parser.add_argument("--num-layers", type=cli.positive_int, default=2, help="TransformerEncoderLayer 层数")
    parser.add_argument("--test-samples", type=cli.positive_int, default=1000, help="测试序列条数")
    parser.add_argument("--table-positions", type=cli.positive_int, default=100, help="热力图和性质检查用的位置数")
    parser.add_argument("--max-offset", type=cli.positive_int, default=100, help="点积图里相对偏移 k 的最大值")
    args = parser.parse_args(argv)
    if args.precision != "fp32":
        parser.error("本脚本的模型很小，只支持 --precision fp32")
    if args.max_train_samples is None:
        args.max_train_samples = 4000
    if args.smoke:
        args.max_train_samples = min(args.max_train_samples, 2000)
        args.test_samples = min(args.test_samples, 200)
        args.epochs = min(args.epochs, 3)
        args.seq_len = min(args.seq_len, 12)
        args.long_seq_len = None
        args.num_layers = 1
        args.table_positions = min(args.table_positions, 50)
        args.max_offset = min(args.max_offset, 50)
    if args.long_seq_len is None:
        args.long_seq_len = 2 * args.seq_len
    if args.seq_len < 2:
        parser.error("--seq-len 至少为 2：位置 0 没有前一个 token，至少要有一个带标签的位置")
    if args.long_seq_len <= args.seq_len:
        parser.error(f"--long-seq-len（{args.long_seq_len}）必须大于 --seq-len（{args.seq_len}），才是外推测试")
    if args.d_model % args.num_heads:
        parser.error(f"--num-heads（{args.num_heads}）必须整除 --d-model（{args.d_model}）")
    if args.d_model % 2:
        parser.error(f"--d-model 须为偶数（旋转性质只对成对的 sin/cos 成立），收到 {args.d_model}")
    run_dir = cli.start_run(args, "positional_encoding")
    args.run_dir = run_dir
    started = time.perf_counter()
    device = training.select_device(args.device)

    with training.single_thread() if device.type == "cpu" else contextlib.nullcontext():
        properties = check_properties(args, device)
        shift_results, models = run_shift_experiment(args, device)

    # 正弦表相邻位置的向量很像（余弦相似度接近 1），训练出的表没有被要求这样，相邻位置并不更像。
    learned_table = models["learned"].position.position_embeddings.weight.detach().cpu()
    sinusoidal_rows = sinusoidal_table(args.table_positions, args.d_model)
    plot_tables(sinusoidal_rows, learned_table, run_dir / "positional_encoding_tables.png")
    for kind, table in (("sinusoidal", sinusoidal_rows[: args.seq_len]), ("learned", learned_table)):
        shift_results[f"adjacent_cosine_{kind}"] = float(position_cosine_similarity(table).diagonal(1).mean())

    # 先放准确率：roadmap tour 的汇总表只显示前几个指标。
    summary = {f"test_accuracy_{kind}": shift_results.pop(f"test_accuracy_{kind}") for kind in POSITION_KINDS}
    summary.update(shift_results)
    summary.update(properties)
    summary.update({"seq_len": args.seq_len, "long_seq_len": args.long_seq_len, "train_sequences": args.max_train_samples,
                    "d_model": args.d_model, "seconds": round(time.perf_counter() - started, 1)})
    runs.save_metrics(run_dir, summary)

    rows = [{"positional encoding": kind, f"accuracy (L={args.seq_len})": summary[f"test_accuracy_{kind}"]}
            for kind in POSITION_KINDS]
    print(runs.markdown_table(rows))
    print(f"没有位置信息时大约能达到的准确率（猜序列里出现最多的其他 token）：{summary['bag_of_tokens_accuracy']:.4f}")
    print(f"正弦编码在长度 {args.long_seq_len} 上：前 {args.seq_len} 个位置 "
          f"{summary['long_accuracy_sinusoidal_seen_positions']:.4f}，之后的新位置 "
          f"{summary['long_accuracy_sinusoidal_new_positions']:.4f}；可学习编码直接报错："
          f"{summary['learned_rejects_long_input']}")
    print(f"结果与图在 {run_dir}")
    return summary


if __name__ == "__main__":
    cli.run_script(main)
