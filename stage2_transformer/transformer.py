"""Transformer 编码器-解码器从零实现，玩具任务与英译中（路线图：Transformer → Transformer 架构：编码器（多头注意力 → Add & Norm → 前馈网络）、解码器（掩码多头注意力 → 交叉注意力））

学什么
- 编码器层（EncoderLayer）：多头自注意力 → Add & Norm → 逐位置前馈网络 FFN(x) = W_2 ReLU(W_1 x + b_1) + b_2
  → Add & Norm。Add 是残差连接 x + Sublayer(x)，Norm 是 LayerNorm。多头注意力用本模块 attention.py
  手写的 MultiHeadAttention，位置编码用 positional_encoding.py 的正弦表或可学习的表（--positional）。
- 解码器层（DecoderLayer）：掩码多头自注意力（第 t 个位置只看 ≤ t 的目标字）→ Add & Norm →
  交叉注意力（query 来自解码器，key/value 是编码器的输出 memory，解码器在这里"读原文"）→ Add & Norm → FFN → Add & Norm。
- mask（True = 可以看）：编码器自注意力和交叉注意力用源句的 padding mask（作用在 key 轴上，形状 (B, 1, 1, S)）；
  解码器自注意力用 padding & causal（(B, 1, T, T)）。tests 里检查：改动第 5 个目标字，前 5 个位置的输出不变（误差 ≤ 1e-6）；
  去掉 causal mask 就会变。
- post-LN 与 pre-LN：原论文是 post-LN，x = LayerNorm(x + Sublayer(x))；--norm-first 换成 pre-LN，
  x = x + Sublayer(LayerNorm(x))，最后一层之后再加一个 LayerNorm。post-LN 的梯度要穿过每一层的 LayerNorm，
  初始化时靠近输出的参数梯度很大，一开始就用大学习率容易发散，所以需要 warm-up；pre-LN 的残差通路是恒等映射，
  梯度不经缩放直达每一层，不用 warm-up 也能稳定训练（Xiong et al. 2020）。详见 EncoderLayer 的文档。
- 两种层都能从 nn.TransformerEncoderLayer / nn.TransformerDecoderLayer（batch_first=True）原样复制权重
  （load_from_torch），post-LN 和 pre-LN、ReLU 和 GELU、带 padding 和 causal mask 时输出一致
  （tests 里检查最大绝对误差 ≤ 1e-5）。注意 nn 的 mask 约定相反：True = 不许看。
- 词向量乘以 √d_model 再加位置编码：词向量按标准差 d_model^-0.5 初始化，乘完正好与正弦表同一量级。
  输出层与目标语言词向量共用一个矩阵（weight tying，logits = h Eᵀ）；玩具任务源和目标是同一个词表，三者共用。
- 训练：Adam(β2 = 0.98)，学习率先线性 warm-up 到 --lr，再按步数的平方根倒数（noam，原论文）或余弦（cosine）下降；
  label smoothing（ε = --label-smoothing）：目标分布给正确的词 1 - ε，ε 均分给整个词表，模型不再被推着把一个 logit
  推到无穷大，不那么过度自信（原论文用 ε = 0.1：困惑度变差，准确率和 BLEU 变好）；梯度裁剪：所有梯度的 L2 范数超过 --clip-norm 时整体缩小。
  与 GRU 不同，训练时整句目标一次并行算完（teacher forcing + causal mask），不用逐步循环。
- 贪心解码（greedy_decode）：批量进行，遇到 <eos> 的句子就算完成，全部完成或到最大长度就停。
  每一步只算新位置：每层缓存它在之前各位置的输入（decode_step，incremental decoding），
  结果与每步把整个前缀重算一遍相同（tests 里检查），而计算量少得多。一个 batch 一起解码与逐句单独解码结果相同。
- 玩具任务（--task reverse / copy）：随机数字序列（3-10 位）倒过来或原样抄一遍，训练数据每步现抽，
  留出的 1,000 条序列训练时从不出现；指标是整句完全正确的比例（exact match）。它能在一分钟内说明模型学得会。

数据
- --task translate（默认）：Tatoeba 英中句对，划分和词表与 GRU Seq2Seq 练习（stage2_cnn_rnn/seq2seq_translation.py）
  完全相同：load_split() 得到训练 17,115 对、验证 1,000 对、测试 2,000 对（按英文原句分组，测试集的英文训练时没见过），
  Vocabularies.build(训练部分, min_freq=2) 得到英文 3,415 词、中文 2,623 字。BLEU 用 sacrebleu（tokenize="zh"，按字计），
  在整个测试集上算，所以可以和 GRU 的数字直接比较。每个 epoch 末在验证集上贪心解码算 BLEU，按它挑最佳 epoch。
- --task reverse / copy：不需要数据文件，由 --seed 决定。

怎么跑
    roadmap run transformer --smoke                                   # 自带样本，几秒
    roadmap run transformer --task reverse                            # 玩具任务，不需要数据
    ROADMAP_DATA_DIR=/path/to/data roadmap run transformer            # 英译中
    roadmap run transformer --predict "I like cats." --checkpoint runs/transformer/<时间戳>
    （--predict 不给 --checkpoint 时，先按当前选项训练，训练完再翻译这句话）
    几个程序同时抢 CPU 时，设 OMP_NUM_THREADS=1 往往快得多。
输出：transformer_curves.png（每个 epoch 的训练/验证 loss 和验证指标）、step_loss.png、learning_rate.png、
bleu_by_source_length.png、test_translations.tsv、metrics.json 和最佳权重 checkpoints/transformer/best/。

真实数据上的结果（默认选项：d_model 256、4 个头、编码器和解码器各 2 层、d_ff 512、dropout 0.1、正弦位置编码、post-LN，
4,181,504 个参数；batch 64（按长度分桶）、Adam(0.9, 0.98)、warm-up 400 步升到 1e-3 后按余弦降到 0、label smoothing 0.1、
梯度裁剪 1.0、6 个 epoch 共 1,608 步；2 核 CPU，与另外 3-5 个任务共用，OMP_NUM_THREADS=1）：
    测试集 2,000 对上的贪心 BLEU 21.6（验证集 BLEU 20.7，第 6 个 epoch 最好）。同一划分、同一词表上，
    GRU + Bahdanau 注意力（seq2seq_translation）是贪心 15.3、束搜索 16.3。
    按英文长度分桶的贪心 BLEU：1-4 词 30.8，5-7 词 25.9，8-10 词 18.8，11 词以上 10.5（GRU：18.8、18.9、13.1、6.9）。
    整个脚本占用 CPU 446-477 秒（user time，约 7.5-8 分钟，两次运行，结果完全相同），其中包括每个 epoch 末
    在验证集上的贪心解码；测试集贪心解码 8-14 秒。机器很忙，墙钟时间是 13 分钟（负载 2.5-5）和 34 分钟（负载 5-6）。
    同样的预算下试过 d_model 128、3+3 层、d_ff 512、8 个 epoch（2,161,408 个参数）：测试 BLEU 19.5，CPU 432 秒。
    d_model 256、3+3 层、d_ff 1024 的模型按前 30 个 batch 计时推算，每个 epoch 约要 110 秒 CPU，8 分钟只够 3-4 个 epoch。
玩具任务（默认选项：d_model 64、4 个头、2+2 层、d_ff 256、dropout 0、batch 128、4 个 epoch 共 400 步，234,368 个参数）：
    --task reverse：留出的 1,000 条序列整句全对 100%（第 3 个 epoch 已有 99.7%）；脚本用时 40 秒（CPU 29 秒，负载约 3.5）。
    --task copy：99.9%（第 3 个 epoch），42 秒（CPU 30 秒）。
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from roadmap import cli, metrics, plots, runs, text, training
from stage2_cnn_rnn.seq2seq_translation import (MAX_TARGET_TOKENS, VOCAB_FILES, Vocabularies, detokenize_chinese,
                                                 plot_source_length_bleu, prepare_data)
from stage2_transformer.attention import MultiHeadAttention, causal_mask, padding_mask
from stage2_transformer.positional_encoding import LearnedPositionalEncoding, SinusoidalPositionalEncoding

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------- 配置

MODEL_NAME = "transformer"
TOY_STEPS_PER_EPOCH = 100         # 玩具任务没有固定的数据集：一个 "epoch" 是这么多个新抽的 batch
SMOKE_TOY_STEPS_PER_EPOCH = 10
# 每个任务的默认选项；命令行给出的值优先。
TASK_DEFAULTS = {
    "translate": {"epochs": 6, "batch_size": 64, "lr": 1e-3, "d_model": 256, "num_heads": 4, "encoder_layers": 2,
                  "decoder_layers": 2, "d_ff": 512, "dropout": 0.1, "max_len": 64, "warmup_steps": 400,
                  "label_smoothing": 0.1},
    "reverse": {"epochs": 4, "batch_size": 128, "lr": 1e-3, "d_model": 64, "num_heads": 4, "encoder_layers": 2,
                "decoder_layers": 2, "d_ff": 256, "dropout": 0.0, "max_len": 32, "warmup_steps": 100,
                "label_smoothing": 0.0},
}
TASK_DEFAULTS["copy"] = TASK_DEFAULTS["reverse"]


# ---------------------------------------------------------------- 编码器层与解码器层

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}  # nn.GELU 默认是精确的 erf 形式，与 F.gelu 相同


def _make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation 只能是 {sorted(ACTIVATIONS)} 之一，收到 {name!r}")
    return ACTIVATIONS[name]()


def _check_torch_layer(layer: nn.Module, reference: nn.Module) -> None:
    """Raise ValueError unless `reference` (an nn.Transformer*Layer) has the same shape and options as `layer`."""
    reference_activation = reference.activation
    if isinstance(reference_activation, nn.Module):
        reference_activation = type(reference_activation)
    names = {F.relu: "relu", F.gelu: "gelu", nn.ReLU: "relu", nn.GELU: "gelu"}
    differences = []
    if not reference.self_attn.batch_first:
        differences.append("batch_first 必须是 True")
    if reference.self_attn.embed_dim != layer.d_model or reference.self_attn.num_heads != layer.self_attn.num_heads:
        differences.append("d_model / num_heads 不同")
    if reference.linear1.out_features != layer.linear1.out_features:
        differences.append("d_ff（linear1 的宽度）不同")
    if reference.norm1.eps != layer.norm1.eps:
        differences.append(f"LayerNorm 的 eps 不同（{reference.norm1.eps} vs {layer.norm1.eps}）")
    if reference.norm_first != layer.norm_first:
        differences.append(f"norm_first 不同（{reference.norm_first} vs {layer.norm_first}）")
    if names.get(reference_activation) != layer.activation_name:
        differences.append(f"激活函数不同（{reference.activation} vs {layer.activation_name}）")
    if differences:
        raise ValueError(f"无法从 {type(reference).__name__} 复制权重：" + "；".join(differences))


class EncoderLayer(nn.Module):
    """One encoder layer: self-attention, then a position-wise feed-forward network, each with Add & Norm.

    Post-LN (norm_first=False, Vaswani et al. 2017):  x = LayerNorm(x + Sublayer(x))
    Pre-LN  (norm_first=True):                        x = x + Sublayer(LayerNorm(x))

    Why pre-LN trains stably without warm-up: in post-LN every residual sum passes through a
    LayerNorm, so the gradient that reaches a lower layer is rescaled by each LayerNorm above it.
    Xiong et al. (2020, "On Layer Normalization in the Transformer Architecture", arXiv:2002.04745)
    prove that at initialisation the expected gradients of the parameters near the output are then
    large. A large learning rate in the first steps therefore makes training unstable, and warm-up
    keeps those first steps small. In pre-LN the residual path x -> x + Sublayer(...) is an identity
    with no normalisation on it, so the gradients are well-behaved at initialisation and training
    can start at the full learning rate. Pre-LN needs one final LayerNorm after the last layer,
    because the residual stream itself is never normalised.

    `mask` is bool and broadcastable to (B, H, L, L), True = may attend (a `padding_mask` here).
    The sublayers and dropouts are named as in nn.TransformerEncoderLayer, so `load_from_torch`
    can copy its weights one to one.
    """

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float = 0.1, activation: str = "relu",
                 norm_first: bool = False, layer_norm_eps: float = 1e-5):
        super().__init__()
        self.d_model = d_model
        self.norm_first = norm_first
        self.activation_name = activation
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout)
        # FFN(x) = W_2 · activation(W_1 x + b_1) + b_2，对每个位置各算一次（position-wise）
        self.linear1 = nn.Linear(d_model, d_ff)
        self.activation = _make_activation(activation)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def _self_attention(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.dropout1(self.self_attn(x, x, x, mask)[0])

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.norm_first:
            x = x + self._self_attention(self.norm1(x), mask)
            return x + self._feed_forward(self.norm2(x))
        x = self.norm1(x + self._self_attention(x, mask))
        return self.norm2(x + self._feed_forward(x))

    @torch.no_grad()
    def load_from_torch(self, reference: nn.TransformerEncoderLayer) -> "EncoderLayer":
        """Copy the weights of an nn.TransformerEncoderLayer (batch_first, same sizes, norm placement and activation)."""
        _check_torch_layer(self, reference)
        self.self_attn.load_from_torch(reference.self_attn)
        for name in ("linear1", "linear2", "norm1", "norm2"):
            getattr(self, name).load_state_dict(getattr(reference, name).state_dict())
        return self


class DecoderLayer(nn.Module):
    """One decoder layer: masked self-attention, cross-attention over the encoder output, feed-forward.

    Each sublayer has its own Add & Norm, post-LN or pre-LN as in `EncoderLayer` (see there why
    pre-LN needs no warm-up). In cross-attention the queries come from the decoder and the keys
    and values from `memory`, the encoder output: this is where each target position reads the
    source sentence.

    `self_mask` (broadcastable to (B, H, T, T)) must contain the causal mask, so position t
    attends only to targets 0..t. `memory_mask` (broadcastable to (B, H, T, S)) hides the source
    padding. Both are bool with True = may attend.
    """

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float = 0.1, activation: str = "relu",
                 norm_first: bool = False, layer_norm_eps: float = 1e-5):
        super().__init__()
        self.d_model = d_model
        self.norm_first = norm_first
        self.activation_name = activation
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.cross_attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.linear1 = nn.Linear(d_model, d_ff)
        self.activation = _make_activation(activation)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.norm3 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def _self_attention(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.dropout1(self.self_attn(x, context, context, mask)[0])

    def _cross_attention(self, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.dropout2(self.cross_attn(x, memory, memory, mask)[0])

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout3(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(self, x: torch.Tensor, memory: torch.Tensor, self_mask: torch.Tensor | None = None,
                memory_mask: torch.Tensor | None = None, past: torch.Tensor | None = None) -> torch.Tensor:
        """Run the layer on target positions `x` (B, T, d_model).

        For incremental decoding, `past` (B, P, d_model) contains this layer's inputs at the P
        positions before `x`. Self-attention then uses all P + T positions as keys and values, so
        `self_mask` must be broadcastable to (B, H, T, P + T). With causal masking the outputs at
        earlier positions never change when a token is appended, so only the new position has to
        be computed.
        """
        context = x if past is None else torch.cat([past, x], dim=1)
        if self.norm_first:
            normed_context = self.norm1(context)  # LayerNorm 按位置各算各的，所以 norm1(x) 就是它的最后 T 行
            x = x + self._self_attention(normed_context[:, -x.shape[1]:], normed_context, self_mask)
            x = x + self._cross_attention(self.norm2(x), memory, memory_mask)
            return x + self._feed_forward(self.norm3(x))
        x = self.norm1(x + self._self_attention(x, context, self_mask))
        x = self.norm2(x + self._cross_attention(x, memory, memory_mask))
        return self.norm3(x + self._feed_forward(x))

    @torch.no_grad()
    def load_from_torch(self, reference: nn.TransformerDecoderLayer) -> "DecoderLayer":
        """Copy the weights of an nn.TransformerDecoderLayer (its `multihead_attn` is our `cross_attn`)."""
        _check_torch_layer(self, reference)
        self.self_attn.load_from_torch(reference.self_attn)
        self.cross_attn.load_from_torch(reference.multihead_attn)
        for name in ("linear1", "linear2", "norm1", "norm2", "norm3"):
            getattr(self, name).load_state_dict(getattr(reference, name).state_dict())
        return self


# ---------------------------------------------------------------- 编码器-解码器


class Transformer(nn.Module):
    """Encoder-decoder Transformer (Vaswani et al. 2017) for sequence-to-sequence tasks, batch first.

    Token embeddings are multiplied by √d_model before the positional encoding is added: they are
    initialised with standard deviation d_model^-0.5, so after the scaling they have about unit
    variance, the same scale as the sinusoidal table. With `tie_output` the output projection
    reuses the target embedding matrix (logits = h Eᵀ), which saves |V| × d_model parameters.
    `share_source_target` also uses that matrix for the source, which only makes sense when
    source and target share one vocabulary (the toy tasks here; not English -> Chinese).
    """

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, d_model: int = 256, num_heads: int = 4,
                 num_encoder_layers: int = 3, num_decoder_layers: int = 3, d_ff: int = 1024, dropout: float = 0.1,
                 max_len: int = 64, positional: str = "sinusoidal", activation: str = "relu", norm_first: bool = False,
                 tie_output: bool = True, share_source_target: bool = False, pad_id: int = 0,
                 bos_id: int = 2, eos_id: int = 3):
        super().__init__()
        if positional not in ("sinusoidal", "learned"):
            raise ValueError(f"positional 只能是 'sinusoidal' 或 'learned'，收到 {positional!r}")
        if share_source_target and src_vocab_size != tgt_vocab_size:
            raise ValueError(f"源语言和目标语言词表大小不同（{src_vocab_size} vs {tgt_vocab_size}），不能共用词向量")
        self.d_model = d_model
        self.max_len = max_len
        self.positional = positional
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id

        self.target_embedding = self._make_embedding(tgt_vocab_size, d_model, pad_id)
        self.source_embedding = (self.target_embedding if share_source_target
                                 else self._make_embedding(src_vocab_size, d_model, pad_id))
        position_class = SinusoidalPositionalEncoding if positional == "sinusoidal" else LearnedPositionalEncoding
        self.source_position = position_class(d_model, max_len, dropout)
        self.target_position = position_class(d_model, max_len, dropout)
        layer_options = {"dropout": dropout, "activation": activation, "norm_first": norm_first}
        self.encoder_layers = nn.ModuleList(
            EncoderLayer(d_model, num_heads, d_ff, **layer_options) for _ in range(num_encoder_layers))
        self.decoder_layers = nn.ModuleList(
            DecoderLayer(d_model, num_heads, d_ff, **layer_options) for _ in range(num_decoder_layers))
        # pre-LN 的残差流从不经过 LayerNorm，所以在最后一层之后补一个；post-LN 每层已经以 LayerNorm 结尾。
        self.encoder_norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.decoder_norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.output_projection = nn.Linear(d_model, tgt_vocab_size, bias=False)
        if tie_output:
            self.output_projection.weight = self.target_embedding.weight

    @staticmethod
    def _make_embedding(vocab_size: int, d_model: int, pad_id: int) -> nn.Embedding:
        embedding = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        nn.init.normal_(embedding.weight, mean=0.0, std=d_model ** -0.5)
        with torch.no_grad():
            embedding.weight[pad_id].zero_()
        return embedding

    def source_mask(self, src_lengths: torch.Tensor, source_length: int) -> torch.Tensor:
        """Padding mask of the source on the key axis, (B, 1, 1, S): used by encoder self- and decoder cross-attention."""
        return padding_mask(src_lengths, source_length)

    def target_mask(self, tgt_in: torch.Tensor) -> torch.Tensor:
        """Decoder self-attention mask (B, 1, T, T) = padding (key axis) & causal, True = may attend.

        With right padding the causal part alone already hides the padding from every real
        position, so the padding part changes only the outputs at padding positions, which no
        loss reads. It is kept so the mask is right for any padding layout.
        """
        target_lengths = (tgt_in != self.pad_id).sum(dim=1)
        return padding_mask(target_lengths, tgt_in.shape[1]) & causal_mask(tgt_in.shape[1], device=tgt_in.device)

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> torch.Tensor:
        """Run the encoder over right-padded source ids (B, S); return the memory (B, S, d_model)."""
        mask = self.source_mask(src_lengths.to(src.device), src.shape[1])
        x = self.source_position(self.source_embedding(src) * math.sqrt(self.d_model))
        for layer in self.encoder_layers:
            x = layer(x, mask)
        return self.encoder_norm(x)

    def decoder_states(self, tgt_in: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """Run the decoder over the shifted target <bos> y_1 ... y_{n-1} (B, T); return its outputs (B, T, d_model)."""
        self_mask = self.target_mask(tgt_in)
        x = self.target_position(self.target_embedding(tgt_in) * math.sqrt(self.d_model))
        for layer in self.decoder_layers:
            x = layer(x, memory, self_mask, src_mask)
        return self.decoder_norm(x)

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V): position t predicts y_{t+1} from y_0..y_t and the whole source."""
        return self.output_projection(self.decoder_states(tgt_in, memory, src_mask))

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, T, V) for every position of `tgt_in`, padding included."""
        memory = self.encode(src, src_lengths)
        return self.decode(tgt_in, memory, self.source_mask(src_lengths.to(src.device), src.shape[1]))

    def decode_step(self, token: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor,
                    cache: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Feed one new target token per sentence (B,); return the next-token logits (B, V) and the new cache.

        `cache[i]` contains the inputs of decoder layer i at all earlier positions (B, P, d_model), so
        each step computes only the new position (incremental decoding). The result equals the
        last position of `decode` over the whole prefix (tests check this). No self-attention mask
        is needed: the new position may see every earlier one, and a prefix has no padding as
        long as its sentence has not ended.
        """
        position = 0 if cache is None else cache[0].shape[1]
        x = self.target_position(self.target_embedding(token[:, None]) * math.sqrt(self.d_model), offset=position)
        new_cache = []
        for index, layer in enumerate(self.decoder_layers):
            past = None if cache is None else cache[index]
            new_cache.append(x if past is None else torch.cat([past, x], dim=1))
            x = layer(x, memory, None, src_mask, past=past)  # x: (B, 1, d_model)
        return self.output_projection(self.decoder_norm(x[:, 0])), new_cache

    @torch.no_grad()
    def greedy_decode(self, src: torch.Tensor, src_lengths: torch.Tensor, max_length: int = MAX_TARGET_TOKENS + 1
                      ) -> list[list[int]]:
        """Translate a padded batch greedily; return each sentence's token ids, without <bos> and <eos>.

        Each step appends argmax p(y_t | y_<t, x) for every sentence, never <pad> or <bos>. A
        sentence is done at <eos>; decoding stops when all are done or after `max_length` tokens.
        The model is put in eval mode for the call and then back in its previous mode.
        Afterwards `self_attn.last_weights` of each decoder layer covers only the last step; run
        `forward` on the output to get the weights of every position.
        """
        if self.positional == "learned" and max_length > self.max_len:
            raise ValueError(f"max_length={max_length} 超过可学习位置编码的 max_len={self.max_len}")
        was_training = self.training
        self.eval()
        memory = self.encode(src, src_lengths)
        src_mask = self.source_mask(src_lengths.to(src.device), src.shape[1])
        batch_size = src.shape[0]
        token = torch.full((batch_size,), self.bos_id, dtype=torch.long, device=src.device)
        finished = torch.zeros(batch_size, dtype=torch.bool, device=src.device)
        cache = None
        generated = []
        for _ in range(max_length):
            logits, cache = self.decode_step(token, memory, src_mask, cache)  # (B, V)
            logits[:, [self.pad_id, self.bos_id]] = float("-inf")
            token = logits.argmax(dim=-1)
            generated.append(token)
            finished |= token == self.eos_id
            if bool(finished.all()):
                break
        self.train(was_training)
        outputs = []
        for row in torch.stack(generated, dim=1).tolist():
            outputs.append(row[: row.index(self.eos_id)] if self.eos_id in row else row)
        return outputs


def build_model(args: argparse.Namespace, source_vocab_size: int, target_vocab_size: int,
                share_source_target: bool = False) -> Transformer:
    """Build the Transformer that the command-line options (or a saved config.json) describe."""
    return Transformer(source_vocab_size, target_vocab_size, d_model=args.d_model, num_heads=args.num_heads,
                       num_encoder_layers=args.encoder_layers, num_decoder_layers=args.decoder_layers, d_ff=args.d_ff,
                       dropout=args.dropout, max_len=args.max_len, positional=args.positional,
                       activation=args.activation, norm_first=args.norm_first, tie_output=True,
                       share_source_target=share_source_target)


# ---------------------------------------------------------------- 数据：批次与玩具任务

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # src, src_lengths, tgt_in, tgt_out


def make_batch(examples: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int = 0) -> Batch:
    """Pad (source ids, <bos> y_1 ... y_n <eos> ids) pairs into src (B, S), src_lengths (B,), tgt_in and tgt_out (B, T).

    tgt_in = <bos> y_1 ... y_n is what the decoder reads (the target shifted right), tgt_out =
    y_1 ... y_n <eos> is what it must predict at the same positions; both are padded with `pad_id`.
    """
    src, src_lengths = text.pad_sequences([source for source, _ in examples], pad_id=pad_id)
    tgt_in, _ = text.pad_sequences([target[:-1] for _, target in examples], pad_id=pad_id)
    tgt_out, _ = text.pad_sequences([target[1:] for _, target in examples], pad_id=pad_id)
    return src, src_lengths, tgt_in, tgt_out


def bucketed_batches(lengths: Sequence[tuple[int, int]], batch_size: int, generator: torch.Generator,
                     pool_batches: int = 50) -> list[list[int]]:
    """Return shuffled batches of example indices in which sentences have similar lengths.

    The indices are shuffled, each pool of `pool_batches` batches is sorted by (target, source)
    length and cut into batches, and the batches are shuffled. On the Tatoeba training part this
    cuts the padding from about 50% of the target positions (plain shuffling, batch 64) to about 3%.
    """
    order = torch.randperm(len(lengths), generator=generator).tolist()
    batches = []
    for start in range(0, len(order), batch_size * pool_batches):
        pool = sorted(order[start:start + batch_size * pool_batches], key=lambda index: lengths[index])
        batches += [pool[offset:offset + batch_size] for offset in range(0, len(pool), batch_size)]
    return [batches[index] for index in torch.randperm(len(batches), generator=generator).tolist()]


DIGITS = [str(digit) for digit in range(10)]


class DigitTask:
    """Copy or reverse random digit sequences: a toy task that shows whether the model can learn at all.

    Sequences have min_length..max_length digits, drawn uniformly. The held-out set is drawn
    first, and every training sequence that happens to equal a held-out one is drawn again, so
    exact match on the held-out set measures sequences the model never saw.
    """

    def __init__(self, kind: str, min_length: int, max_length: int, held_out_size: int, seed: int):
        if kind not in ("copy", "reverse"):
            raise ValueError(f"玩具任务只能是 copy 或 reverse，收到 {kind!r}")
        if not 1 <= min_length <= max_length:
            raise ValueError(f"需要 1 <= 最短长度 <= 最长长度，收到 {min_length} 和 {max_length}")
        self.kind = kind
        self.min_length, self.max_length = min_length, max_length
        self.vocab = text.Vocab([*text.SPECIALS, *DIGITS])
        self.rng = np.random.default_rng([seed, 0])
        self.held_out = [self._draw() for _ in range(held_out_size)]
        self._held_out_set = set(self.held_out)
        possible = sum(10 ** length for length in range(min_length, max_length + 1))
        if len(self._held_out_set) >= possible:
            raise ValueError(f"留出集已经包含全部 {possible} 种可能的序列，没有序列可以训练；"
                             "请加大 --toy-max-length 或减小 --toy-held-out")

    def _draw(self) -> tuple[int, ...]:
        length = int(self.rng.integers(self.min_length, self.max_length + 1))
        first_digit = self.vocab.stoi["0"]
        return tuple(int(digit) + first_digit for digit in self.rng.integers(0, 10, size=length))

    def target(self, sequence: Sequence[int]) -> list[int]:
        return list(sequence[::-1]) if self.kind == "reverse" else list(sequence)

    def example(self, sequence: Sequence[int]) -> tuple[list[int], list[int]]:
        return list(sequence), [self.vocab.bos_id, *self.target(sequence), self.vocab.eos_id]

    def training_batch(self, batch_size: int) -> Batch:
        sequences = []
        while len(sequences) < batch_size:
            sequence = self._draw()
            if sequence not in self._held_out_set:
                sequences.append(sequence)
        return make_batch([self.example(sequence) for sequence in sequences], self.vocab.pad_id)

    def held_out_batches(self, batch_size: int) -> list[Batch]:
        examples = [self.example(sequence) for sequence in self.held_out]
        return [make_batch(examples[start:start + batch_size], self.vocab.pad_id)
                for start in range(0, len(examples), batch_size)]


# ---------------------------------------------------------------- 训练：学习率调度、label smoothing、梯度裁剪


def learning_rate_factor(step: int, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Multiplier of the peak learning rate at optimizer step `step` (counted from 1).

    noam (Vaswani et al. 2017): lr ∝ min(step / warmup, sqrt(warmup / step)), a linear warm-up to
    the peak at step = warmup, then decay with the inverse square root of the step. The paper
    writes it as d_model^-0.5 · min(step^-0.5, step · warmup^-1.5); here the peak itself is --lr.
    cosine: the same linear warm-up, then half a cosine from the peak down to 0 at `total_steps`.
    """
    warmup_steps = max(warmup_steps, 1)
    if step <= warmup_steps:
        return step / warmup_steps
    if schedule == "noam":
        return math.sqrt(warmup_steps / step)
    progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def target_token_logits(model: Transformer, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced logits (N, V) and labels (N,) of the N non-padding target positions.

    Projecting only the real positions onto the vocabulary spares the largest matrix product
    the padding, and the mean loss over the N labels is the loss per target token.
    """
    src, src_lengths, tgt_in, tgt_out = batch
    memory = model.encode(src, src_lengths)
    states = model.decoder_states(tgt_in, memory, model.source_mask(src_lengths.to(src.device), src.shape[1]))
    real = tgt_in != model.pad_id
    return model.output_projection(states[real]), tgt_out[real]


@torch.no_grad()
def evaluate_loss(model: Transformer, batches: Sequence[Batch], device: torch.device) -> float:
    """Mean cross-entropy per target token, without label smoothing, in eval mode."""
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        logits, labels = target_token_logits(model, tuple(tensor.to(device) for tensor in batch))
        total += float(F.cross_entropy(logits.float(), labels, reduction="sum"))
        count += labels.numel()
    return total / max(count, 1)


def train(model: Transformer, args: argparse.Namespace, epoch_batches, steps_per_epoch: int,
          valid_batches: Sequence[Batch], score_fn, score_name: str, best_path: Path, device: torch.device) -> dict:
    """Train with Adam, warm-up + noam/cosine schedule, label smoothing and gradient clipping.

    `epoch_batches(epoch)` yields the training batches of one epoch. After each epoch the history
    records `val_loss` (plain cross-entropy on `valid_batches`) and `score_fn(model)` (higher is
    better). The weights of the best epoch by that score are written to `best_path` and loaded
    back at the end. Returns the history, the loss and learning rate of every step, and the best
    epoch with its score.

    Label smoothing with ε (--label-smoothing): the target distribution is 1 - ε on the right
    token plus ε spread evenly over all V tokens (PyTorch's definition), instead of a one-hot.
    The model is no longer pushed to make one logit infinitely larger than the others, so it does
    not become over-confident. Vaswani et al. (2017) report for ε = 0.1 that perplexity gets worse
    while accuracy and BLEU get better.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.98), eps=1e-9)
    total_steps = args.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda index: learning_rate_factor(index + 1, args.warmup_steps, total_steps, args.schedule))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    history, step_losses, learning_rates = [], [], []
    # 带 label smoothing 的训练 loss 有一个约 ε·log V 的下限，不能和验证 loss（不带）直接比，所以换个名字。
    train_key = "train_loss_label_smoothed" if args.label_smoothing > 0 else "train_loss"
    best_score, best_epoch = -math.inf, 0
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    for epoch in range(args.epochs):
        torch.manual_seed(args.seed + epoch)  # dropout 的随机数：每个 epoch 从固定的种子开始
        model.train()
        epoch_loss, epoch_steps = 0.0, 0
        progress = tqdm(epoch_batches(epoch), total=steps_per_epoch, desc=f"epoch {epoch + 1}/{args.epochs}",
                        leave=False)
        for batch in progress:
            with autocast:
                logits, labels = target_token_logits(model, tuple(tensor.to(device) for tensor in batch))
                loss = loss_fn(logits.float(), labels)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"epoch {epoch + 1} 的 loss 变成了 {loss.item()}；试试更小的 --lr 或更长的 --warmup-steps")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # 梯度裁剪：全部梯度拼成一个向量，L2 范数超过 --clip-norm 就整体缩小到这个长度，方向不变。
            nn.utils.clip_grad_norm_(model.parameters(), args.clip_norm)
            learning_rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
            step_losses.append(loss.item())
            epoch_loss += step_losses[-1]
            epoch_steps += 1
            progress.set_postfix(loss=f"{step_losses[-1]:.3f}", refresh=False)
        record = {"epoch": epoch + 1, train_key: epoch_loss / max(epoch_steps, 1),
                  "val_loss": evaluate_loss(model, valid_batches, device)}
        record[score_name] = score_fn(model)
        history.append(record)
        logger.info("epoch %d/%d：训练 loss（ε = %g）%.4f，验证 loss %.4f，%s %.4f", epoch + 1, args.epochs,
                    args.label_smoothing, record[train_key], record["val_loss"], score_name, record[score_name])
        if record[score_name] > best_score:
            best_score, best_epoch = record[score_name], epoch + 1
            if runs.is_main_process():
                best_path.parent.mkdir(parents=True, exist_ok=True)
                save_model(model, str(best_path))
    load_model(model, str(best_path), device=str(device))
    model.eval()
    return {"history": history, "step_losses": step_losses, "learning_rates": learning_rates,
            "best_epoch": best_epoch, "best_score": best_score}


def plot_training(result: dict, run_dir: Path, title: str) -> None:
    plots.plot_history(result["history"], run_dir / "transformer_curves.png", title=title)
    losses = np.asarray(result["step_losses"])
    window = max(1, min(50, len(losses) // 20))
    smoothed = np.convolve(losses, np.ones(window) / window, mode="valid") if len(losses) >= window else losses
    plots.plot_curves({f"train loss (moving mean of {window} steps)": smoothed}, run_dir / "step_loss.png",
                      xlabel="optimizer step", ylabel="loss (label smoothed)", title=title)
    plots.plot_curves({"learning rate": result["learning_rates"]}, run_dir / "learning_rate.png",
                      xlabel="optimizer step", ylabel="learning rate", title="warm-up then decay")


# ---------------------------------------------------------------- 翻译与评估


def translate(model: Transformer, sentences: Sequence[str], vocabularies: Vocabularies, batch_size: int = 250,
              device: torch.device | None = None, progress: str | None = None) -> list[str]:
    """Translate English sentences into Chinese with greedy decoding; the outputs keep the input order.

    Sentences are decoded in batches sorted by length, so a batch stops early when all of its
    sentences are short. With a learned positional encoding a sentence longer than `max_len`
    tokens is cut to `max_len` (the table has no row for later positions), with a warning.
    """
    device = device or next(model.parameters()).device
    encoded = [vocabularies.encode_source(sentence) or [vocabularies.english.unk_id] for sentence in sentences]
    if model.positional == "learned" and any(len(ids) > model.max_len for ids in encoded):
        logger.warning("有句子超过 max_len=%d 个词，超出部分被截掉（可学习位置编码没有更后面的位置）", model.max_len)
        encoded = [ids[: model.max_len] for ids in encoded]
    max_length = min(MAX_TARGET_TOKENS + 1, model.max_len) if model.positional == "learned" else MAX_TARGET_TOKENS + 1
    order = sorted(range(len(encoded)), key=lambda index: len(encoded[index]))
    outputs: list[str] = [""] * len(encoded)
    for start in tqdm(range(0, len(order), batch_size), desc=progress, leave=False, disable=progress is None):
        rows = order[start:start + batch_size]
        src, src_lengths = text.pad_sequences([encoded[row] for row in rows], pad_id=vocabularies.english.pad_id)
        for row, tokens in zip(rows, model.greedy_decode(src.to(device), src_lengths, max_length)):
            outputs[row] = detokenize_chinese(vocabularies.chinese.decode(tokens))
    return outputs


def corpus_bleu(model: Transformer, pairs: Sequence[tuple[str, str]], vocabularies: Vocabularies,
                device: torch.device, progress: str | None = None) -> tuple[float, list[str]]:
    """Greedy translations of `pairs` and their corpus BLEU (sacrebleu, tokenize="zh": counted per character)."""
    outputs = translate(model, [english for english, _ in pairs], vocabularies, device=device, progress=progress)
    return metrics.bleu(outputs, [chinese for _, chinese in pairs], tokenize="zh"), outputs


def exact_match(model: Transformer, task: DigitTask, device: torch.device) -> float:
    """Fraction of held-out sequences whose greedy output equals the whole target sequence."""
    correct = 0
    for src, src_lengths, _, _ in task.held_out_batches(500):
        outputs = model.greedy_decode(src.to(device), src_lengths, task.max_length + 1)
        for row, output in enumerate(outputs):
            source = src[row, : int(src_lengths[row])].tolist()
            correct += output == task.target(source)
    return correct / len(task.held_out)


def load_trained(run_dir: Path) -> tuple[Transformer, Vocabularies, argparse.Namespace]:
    """Load the vocabularies, the options and the best weights of a finished translation run."""
    run_dir = Path(run_dir)
    config_path = run_dir / runs.CONFIG_FILE
    weights = run_dir / "checkpoints" / MODEL_NAME / "best" / training.MODEL_FILE
    for path in (config_path, run_dir / VOCAB_FILES["english"], run_dir / VOCAB_FILES["chinese"], weights):
        if not path.is_file():
            raise SystemExit(f"--checkpoint {run_dir}：没有找到 {path}；请给一个 transformer --task translate 训练完成的运行目录")
    saved = argparse.Namespace(**json.loads(config_path.read_text(encoding="utf-8")))
    if getattr(saved, "script", None) != "transformer" or getattr(saved, "task", None) != "translate":
        raise SystemExit(f"--checkpoint {run_dir}：这不是 transformer --task translate 的运行目录")
    vocabularies = Vocabularies.load(run_dir)
    model = build_model(saved, len(vocabularies.english), len(vocabularies.chinese))
    load_model(model, str(weights), device="cpu")
    return model.eval(), vocabularies, saved


def print_translation(english: str, model: Transformer, vocabularies: Vocabularies) -> dict:
    if not text.tokenize_english(english):
        raise SystemExit("--predict 的句子是空的；请给一句英文，例如 --predict \"I like cats.\"")
    translation = translate(model.cpu(), [english], vocabularies, device=torch.device("cpu"))[0]
    unknown = [token for token in text.tokenize_english(english) if token not in vocabularies.english]
    print(f"英文：{english}")
    if unknown:
        print(f"（不在训练词表里、按 <unk> 处理的词：{' '.join(unknown)}）")
    print(f"译文（贪心）：{translation}")
    return {"source": english, "translation": translation}


# ---------------------------------------------------------------- 主程序


def run_translation(args: argparse.Namespace, run_dir: Path, device: torch.device) -> dict:
    train_pairs, valid_pairs, test_pairs, vocabularies = prepare_data(args, run_dir)
    train_examples = vocabularies.encode_pairs(train_pairs)
    lengths = [(len(target), len(source)) for source, target in train_examples]
    batch_generator = torch.Generator().manual_seed(args.seed)

    def epoch_batches(epoch: int):
        batch_generator.manual_seed(args.seed + epoch)
        for indices in bucketed_batches(lengths, args.batch_size, batch_generator):
            yield make_batch([train_examples[index] for index in indices])

    valid_examples = vocabularies.encode_pairs(valid_pairs)
    valid_batches = [make_batch(valid_examples[start:start + 250]) for start in range(0, len(valid_examples), 250)]
    torch.manual_seed(args.seed)
    model = build_model(args, len(vocabularies.english), len(vocabularies.chinese)).to(device)
    logger.info("模型参数 %d 个", sum(parameter.numel() for parameter in model.parameters()))
    started = time.perf_counter()
    result = train(model, args, epoch_batches, math.ceil(len(train_examples) / args.batch_size), valid_batches,
                   lambda trained: corpus_bleu(trained, valid_pairs, vocabularies, device)[0], "val_bleu",
                   run_dir / "checkpoints" / MODEL_NAME / "best" / training.MODEL_FILE, device)
    train_seconds = time.perf_counter() - started
    plot_training(result, run_dir, "Transformer en->zh")

    started = time.perf_counter()
    test_bleu, outputs = corpus_bleu(model, test_pairs, vocabularies, device, progress="BLEU（测试集，贪心）")
    greedy_seconds = time.perf_counter() - started
    by_length = plot_source_length_bleu(test_pairs, outputs, run_dir / "bleu_by_source_length.png")
    if runs.is_main_process():
        lines = ["english\treference\tgreedy"] + [f"{english}\t{chinese}\t{output}"
                                                   for (english, chinese), output in zip(test_pairs, outputs)]
        (run_dir / "test_translations.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = {
        "task": "translate",
        "train_pairs": len(train_pairs),
        "valid_pairs": len(valid_pairs),
        "test_pairs": len(test_pairs),
        "english_vocab": len(vocabularies.english),
        "chinese_vocab": len(vocabularies.chinese),
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        "best_epoch": result["best_epoch"],
        "val_bleu": result["best_score"],
        "val_loss": result["history"][result["best_epoch"] - 1]["val_loss"],
        "test_bleu_greedy": test_bleu,
        "bleu_by_source_length": by_length,
        "train_seconds": round(train_seconds, 1),
        "greedy_seconds": round(greedy_seconds, 1),
    }
    if runs.is_main_process():
        print(runs.markdown_table([{"english": english, "reference": chinese, "greedy": output}
                                   for (english, chinese), output in list(zip(test_pairs, outputs))[:8]]))
    if args.predict is not None and runs.is_main_process():
        summary["prediction"] = print_translation(args.predict, model, vocabularies)
    return summary


def run_digit_task(args: argparse.Namespace, run_dir: Path, device: torch.device) -> dict:
    task = DigitTask(args.task, args.toy_min_length, args.toy_max_length, args.toy_held_out, args.seed)
    steps_per_epoch = SMOKE_TOY_STEPS_PER_EPOCH if args.smoke else TOY_STEPS_PER_EPOCH

    def epoch_batches(epoch: int):
        for _ in range(steps_per_epoch):
            yield task.training_batch(args.batch_size)

    torch.manual_seed(args.seed)
    vocab_size = len(task.vocab)
    model = build_model(args, vocab_size, vocab_size, share_source_target=True).to(device)
    started = time.perf_counter()
    result = train(model, args, epoch_batches, steps_per_epoch, task.held_out_batches(500),
                   lambda trained: exact_match(trained, task, device), "val_exact_match",
                   run_dir / "checkpoints" / MODEL_NAME / "best" / training.MODEL_FILE, device)
    train_seconds = time.perf_counter() - started
    plot_training(result, run_dir, f"Transformer, {args.task} task")
    first_epoch_reaching = next((record["epoch"] for record in result["history"]
                                 if record["val_exact_match"] >= 0.99), None)
    return {
        "task": args.task,
        "held_out_sequences": len(task.held_out),
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        "best_epoch": result["best_epoch"],
        "exact_match": result["best_score"],
        "first_epoch_reaching_99": first_epoch_reaching,
        "train_steps": len(result["step_losses"]),
        "train_seconds": round(train_seconds, 1),
    }


def build_argument_parser() -> argparse.ArgumentParser:
    defaults = TASK_DEFAULTS["translate"]
    parser = cli.build_parser(__doc__.splitlines()[0], epochs=defaults["epochs"], batch_size=defaults["batch_size"],
                              lr=defaults["lr"], shared_loop=False)
    group = parser.add_argument_group("Transformer 选项（默认值随 --task 变，括号里是 translate / reverse、copy 的默认）")
    toy = TASK_DEFAULTS["reverse"]

    def both(name: str) -> str:
        return f"（默认 {defaults[name]} / {toy[name]}）"

    group.add_argument("--task", choices=("translate", "reverse", "copy"), default="translate",
                       help="translate：Tatoeba 英译中；reverse / copy：把随机数字序列倒过来 / 原样抄一遍（玩具任务）")
    group.add_argument("--d-model", type=cli.positive_int, help="词向量和每层输出的维度 d_model" + both("d_model"))
    group.add_argument("--num-heads", type=cli.positive_int, help="注意力头数，必须整除 d_model" + both("num_heads"))
    group.add_argument("--encoder-layers", type=cli.positive_int, help="编码器层数" + both("encoder_layers"))
    group.add_argument("--decoder-layers", type=cli.positive_int, help="解码器层数" + both("decoder_layers"))
    group.add_argument("--d-ff", type=cli.positive_int, help="前馈网络中间层的宽度" + both("d_ff"))
    group.add_argument("--dropout", type=float, help="dropout 概率（注意力权重、子层输出、位置编码之后）" + both("dropout"))
    group.add_argument("--max-len", type=cli.positive_int,
                       help="位置编码的表长；可学习位置编码最多只能处理这么多个位置" + both("max_len"))
    group.add_argument("--positional", choices=("sinusoidal", "learned"), default="sinusoidal",
                       help="位置编码：正弦公式（sinusoidal）或可学习的表（learned）")
    group.add_argument("--activation", choices=sorted(ACTIVATIONS), default="relu", help="前馈网络的激活函数")
    group.add_argument("--norm-first", action="store_true",
                       help="pre-LN：LayerNorm 放在每个子层之前；默认 post-LN（原论文：残差相加之后再 LayerNorm）")
    group.add_argument("--schedule", choices=("noam", "cosine"), default="cosine",
                       help="学习率调度：warm-up 之后按步数的平方根倒数衰减（noam），或按余弦降到 0（cosine）")
    group.add_argument("--warmup-steps", type=cli.positive_int,
                       help="学习率从 0 线性升到 --lr 用的步数" + both("warmup_steps"))
    group.add_argument("--label-smoothing", type=float,
                       help="label smoothing 的 ε：目标分布给正确的词 1-ε，ε 均分给整个词表" + both("label_smoothing"))
    group.add_argument("--clip-norm", type=cli.positive_float, default=1.0, help="梯度裁剪：全部梯度的 L2 范数上限")
    group.add_argument("--min-freq", type=cli.positive_int, default=2,
                       help="translate：词或字在训练部分至少出现几次才进词表（与 GRU Seq2Seq 练习相同）")
    group.add_argument("--toy-min-length", type=cli.positive_int, default=3, help="玩具任务：数字序列的最短长度")
    group.add_argument("--toy-max-length", type=cli.positive_int, default=10, help="玩具任务：数字序列的最长长度")
    group.add_argument("--toy-held-out", type=cli.positive_int, default=1000,
                       help="玩具任务：留出多少条训练时从不出现的序列，用来算整句完全正确的比例")
    group.add_argument("--predict", type=str, default=None, metavar="ENGLISH", help="translate：翻译一句英文并打印")
    group.add_argument("--checkpoint", type=Path, default=None, metavar="RUN_DIR",
                       help="和 --predict 一起用：从这个训练完成的运行目录加载词表和最佳权重，不再训练")
    return parser


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    """Parse the options with the defaults of the chosen --task, then check them."""
    parser = build_argument_parser()
    task = parser.parse_known_args(argv)[0].task
    parser.set_defaults(**TASK_DEFAULTS[task])
    args = parser.parse_args(argv)
    if not 0.0 <= args.dropout < 1.0:
        parser.error(f"--dropout 必须在 [0, 1) 之间，收到 {args.dropout}")
    if not 0.0 <= args.label_smoothing < 1.0:
        parser.error(f"--label-smoothing 必须在 [0, 1) 之间，收到 {args.label_smoothing}")
    if args.d_model % args.num_heads:
        parser.error(f"--d-model {args.d_model} 必须能被 --num-heads {args.num_heads} 整除")
    cli.check_predict_options(parser, args)
    if args.task != "translate" and args.predict is not None:
        parser.error("--predict 只用于 --task translate")
    if args.toy_min_length > args.toy_max_length:
        parser.error(f"--toy-min-length {args.toy_min_length} 不能大于 --toy-max-length {args.toy_max_length}")
    if args.task != "translate" and args.positional == "learned" and args.toy_max_length + 1 > args.max_len:
        parser.error(f"可学习位置编码的 --max-len {args.max_len} 放不下 --toy-max-length {args.toy_max_length} 加 <bos>")
    if args.precision == "fp16":
        parser.error("本脚本的训练循环只支持 --precision fp32 或 bf16（fp16 还需要 GradScaler）")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_arguments(argv)
    if args.checkpoint is not None:
        cli.setup_logging()
        model, vocabularies, _ = load_trained(args.checkpoint)
        return print_translation(args.predict, model, vocabularies)
    cli.apply_smoke(args, epochs=2)
    if args.smoke:
        args.d_model, args.num_heads, args.d_ff = min(args.d_model, 32), min(args.num_heads, 2), min(args.d_ff, 64)
        args.encoder_layers, args.decoder_layers = 1, 1
        args.warmup_steps = min(args.warmup_steps, 5)
        args.toy_held_out = min(args.toy_held_out, 100)
    run_dir = cli.start_run(args, MODEL_NAME)
    device = training.check_device_options(args)
    started = time.perf_counter()
    summary = run_translation(args, run_dir, device) if args.task == "translate" else run_digit_task(args, run_dir, device)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    runs.save_metrics(run_dir, summary)
    if runs.is_main_process():
        headline = {key: value for key, value in summary.items() if not isinstance(value, dict)}
        print(runs.markdown_table([headline]))
        print(f"图和指标在 {run_dir}")
    return summary


if __name__ == "__main__":
    cli.run_script(main)
