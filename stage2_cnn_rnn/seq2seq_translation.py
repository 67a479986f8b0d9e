"""Seq2Seq 英译中：GRU 编码器-解码器 + Bahdanau 加性注意力，贪心与束搜索解码、BLEU（路线图：CNN 与 RNN → 变体 LSTM、GRU；应用：机器翻译（Seq2Seq））

学什么
- 编码器：双向 GRU 读英文句子。batch 里句子长短不一，用 pack_padded_sequence 打包，
  RNN 只走每句的真实长度，反向 GRU 从每句真正的最后一个词开始，不会先读一串 <pad>。
- 解码器：单层 GRUCell 逐字生成中文。每一步 t 用 Bahdanau（2015）的加性注意力：
      e_tj = v^T tanh(W s_{t-1} + U h_j)，α_tj = softmax_j(e_tj)，c_t = Σ_j α_tj h_j
  s_{t-1} 是解码器上一步的 hidden state，h_j 是编码器第 j 个位置的输出（正反两个方向拼接），
  补齐位置的 e_tj 置为 -inf，所以 α 只分给真实的词。
  为什么选 Bahdanau 而不是 Luong：Bahdanau 用上一步的 s_{t-1} 去查注意力，c_t 作为 GRU 的输入；
  Luong（2015）先走 GRU 得到 s_t，再用 s_t 点积打分、把 c_t 拼在输出层。两者效果接近，
  Bahdanau 的形式正好说明"注意力决定这一步读原文的哪里，再决定写什么"。
- 训练：解码器输入是目标序列右移一位（<bos> y_1 … y_{n-1} y_n → 预测 y_1 … y_n <eos>），
  <eos> 只出现在目标里，从不喂给解码器。Teacher forcing：默认每一步都喂正确答案（--teacher-forcing 1.0）；
  比例小于 1 时，每个样本每一步以 1 - 比例的概率改喂模型自己上一步的贪心预测（scheduled sampling 的简单版）。
- 解码：贪心（每步取概率最大的字）和束搜索（--beam-size 条候选，按累计 log 概率保留，
  --length-penalty 可以按长度归一化）。束宽 1 的束搜索和贪心完全相同（tests 里检查）。束搜索通常找到
  log p 更高的译文，但不保证每句都比贪心高：贪心那条路径的前缀可能在中途被挤出束外（tests 里有反例）。
- 评估：sacrebleu 的 BLEU（tokenize="zh"，按字计；译文的字直接连起来，不加空格），在固定的测试集上算；
  再画一句话的注意力热力图（横轴英文词，纵轴生成的中文字）。matplotlib 自带字体没有中文字形，
  中文字体按 lstm_cell_diagram 的顺序寻找（项目安装的 pylopdf-fonts-zh-cn 提供 Noto Sans SC）；
  找不到中文字体时纵轴写成 y0、y1 …，
  对应的字打印在日志里，也写进 attention_heatmap_labels.txt。

数据：Tatoeba 英中句对（cmn.txt，真实文件 20,133 对，简体和繁体都有）。先用 filter_pairs 去掉英文超过
20 个词或中文超过 30 个字的句对（剩 20,115 对），再用 split_pairs(seed=0) 按英文原句分组划分：同一句英文的
几种中文译法总在同一个划分里，测试集里的英文句子训练时一句也没见过。真实数据上的划分：训练 17,115 对、
验证 1,000 对、测试 2,000 对。划分只取决于数据和 seed=0，与 --seed 无关；后面的 Transformer 练习用
load_split() 拿到同一个划分，BLEU 可以直接比较。BLEU 在整个测试集（2,000 对）上算。
词表只用训练部分建：英文按词（tokenize_english），中文按字（tokenize_chinese），出现少于 --min-freq 次的记为 <unk>
（真实数据：英文 3,415 词，中文 2,623 字，都含 4 个特殊符号）。

怎么跑
    roadmap run seq2seq_translation --smoke                     # 自带样本，几秒
    ROADMAP_DATA_DIR=/path/to/data roadmap run seq2seq_translation
    roadmap run seq2seq_translation --predict "I like cats." --checkpoint runs/seq2seq_translation/<时间戳>
    （--predict 不给 --checkpoint 时，先按当前选项训练，训练完再翻译这句话）
    几个程序同时抢 CPU 时，设 OMP_NUM_THREADS=1 往往快得多：两个线程抢不到核时互相等待，实测慢好几倍。

真实数据上的结果（默认选项：词向量 128、hidden 256、1 层，batch 64，Adam + OneCycle 最大学习率 3e-3，
梯度裁剪 1.0，8 个 epoch；2 核 CPU，与另外两个任务共用，OMP_NUM_THREADS=1）：
    验证集每字交叉熵 2.587（第 8 个 epoch 最好），测试集 2,000 对上的 BLEU：贪心 15.3，束搜索（束宽 5）16.3。
    束搜索的平均句子 log p 是 -7.57（贪心 -9.63），但逐句看只有 91.75% 的句子不比贪心差。
    按英文长度分桶的贪心 BLEU：1-4 词 18.8，5-7 词 18.9，8-10 词 13.1，11 词以上 6.9。
    整个脚本用时 6 分 17 秒到 7 分 49 秒（两次运行，机器负载不同；训练 357-428 秒，贪心解码 3.4-5.5 秒，
    束搜索 16-30 秒）。两次的结果完全相同。
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from roadmap import cli, data, metrics, plots, runs, text, training

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------- 配置

MAX_SOURCE_TOKENS = 20   # filter_pairs：英文最多 20 个词
MAX_TARGET_TOKENS = 30   # filter_pairs：中文最多 30 个字（解码时最多生成 30 个字 + <eos>）
SPLIT_SEED = 0           # split_pairs 的固定种子：与 --seed 无关，换模型也是同一个划分
TEST_SIZE = 2000         # 测试集至少这么多句对（按英文原句整组划入，所以可能多出几对）
VALID_SIZE = 1000        # 验证集至少这么多句对
SMOKE_TEST_SIZE = 8      # --smoke 的自带样本只有 60 对
SMOKE_VALID_SIZE = 8
MODEL_NAME = "seq2seq"
VOCAB_FILES = {"english": "vocab_english.json", "chinese": "vocab_chinese.json"}


# ---------------------------------------------------------------- 数据


def filter_pairs(pairs: Sequence[tuple[str, str]], max_source_tokens: int = MAX_SOURCE_TOKENS,
                 max_target_tokens: int = MAX_TARGET_TOKENS) -> list[tuple[str, str]]:
    """Keep the pairs with 1..max_source_tokens English words and 1..max_target_tokens Chinese tokens.

    Call this before `split_pairs`, so the split is the same whichever model reads it.
    """
    filtered = []
    for english, chinese in pairs:
        source_length = len(text.tokenize_english(english))
        target_length = len(text.tokenize_chinese(chinese))
        if 1 <= source_length <= max_source_tokens and 1 <= target_length <= max_target_tokens:
            filtered.append((english, chinese))
    return filtered


def split_pairs(pairs: Sequence[tuple[str, str]], seed: int = SPLIT_SEED, test_size: int = TEST_SIZE,
                valid_size: int = VALID_SIZE) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[tuple[str, str]]]:
    """Split pairs into (train, valid, test), deterministically, grouping the pairs by English sentence.

    Tatoeba often has several Chinese translations of one English sentence. All of them go into the
    same part, so no test sentence is seen in training. The English sentences are shuffled with
    `seed`. Whole groups fill the test part until it contains at least `test_size` pairs, then the
    validation part until it contains at least `valid_size`. The remaining groups are training data.
    The result depends only on the set of pairs and `seed`, not on their order in the file.
    """
    groups: dict[str, list[tuple[str, str]]] = {}
    for english, chinese in pairs:
        groups.setdefault(english, []).append((english, chinese))
    if test_size + valid_size >= len(pairs):
        raise ValueError(f"句对只有 {len(pairs)} 个，不够分出测试集 {test_size} 个和验证集 {valid_size} 个，还要留下训练集")
    sources = sorted(groups)
    order = np.random.default_rng(seed).permutation(len(sources))
    test: list[tuple[str, str]] = []
    valid: list[tuple[str, str]] = []
    train: list[tuple[str, str]] = []
    for index in order:
        group = sorted(groups[sources[index]])
        if len(test) < test_size:
            test.extend(group)
        elif len(valid) < valid_size:
            valid.extend(group)
        else:
            train.extend(group)
    return train, valid, test


def load_split(data_dir: str | Path | None = None, *, smoke: bool = False
               ) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[tuple[str, str]]]:
    """Load the Tatoeba pairs, filter them and return the fixed (train, valid, test) split.

    A later exercise (a Transformer translator, say) calls this to report BLEU on the same test set.
    """
    pairs = filter_pairs(data.load_translation_pairs(data_dir, smoke=smoke))
    if smoke:
        return split_pairs(pairs, test_size=SMOKE_TEST_SIZE, valid_size=SMOKE_VALID_SIZE)
    return split_pairs(pairs)


def prepare_data(args: argparse.Namespace, run_dir: Path
                 ) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[tuple[str, str]], "Vocabularies"]:
    """Load the fixed split, keep at most --max-train-samples training pairs and build the vocabularies on them.

    The vocabularies are saved into `run_dir` (by rank 0), so a later `--predict --checkpoint` finds them.
    """
    train_pairs, valid_pairs, test_pairs = load_split(args.data_dir, smoke=args.smoke)
    if args.max_train_samples is not None:
        train_pairs = train_pairs[: args.max_train_samples]
    vocabularies = Vocabularies.build(train_pairs, args.min_freq)
    if runs.is_main_process():
        vocabularies.save(run_dir)
    logger.info("句对：训练 %d、验证 %d、测试 %d；词表：英文 %d 词，中文 %d 字（min_freq=%d）", len(train_pairs),
                len(valid_pairs), len(test_pairs), len(vocabularies.english), len(vocabularies.chinese), args.min_freq)
    return train_pairs, valid_pairs, test_pairs, vocabularies


def detokenize_chinese(tokens: Sequence[str]) -> str:
    """Join Chinese tokens without spaces, keeping one space between two ASCII words ("Tom Jackson")."""
    pieces: list[str] = []
    for token in tokens:
        if pieces and re.fullmatch(r"[A-Za-z0-9]+", token) and re.fullmatch(r"[A-Za-z0-9]+", pieces[-1]):
            pieces.append(" ")
        pieces.append(token)
    return "".join(pieces)


@dataclass
class Vocabularies:
    english: text.Vocab
    chinese: text.Vocab

    @classmethod
    def build(cls, train_pairs: Sequence[tuple[str, str]], min_freq: int) -> "Vocabularies":
        return cls(english=text.Vocab.build((text.tokenize_english(en) for en, _ in train_pairs), min_freq=min_freq),
                   chinese=text.Vocab.build((text.tokenize_chinese(zh) for _, zh in train_pairs), min_freq=min_freq))

    def save(self, run_dir: Path) -> None:
        self.english.save(run_dir / VOCAB_FILES["english"])
        self.chinese.save(run_dir / VOCAB_FILES["chinese"])

    @classmethod
    def load(cls, run_dir: Path) -> "Vocabularies":
        return cls(english=text.Vocab.load(run_dir / VOCAB_FILES["english"]),
                   chinese=text.Vocab.load(run_dir / VOCAB_FILES["chinese"]))

    def encode_source(self, english: str) -> list[int]:
        return self.english.encode(text.tokenize_english(english))

    def encode_target(self, chinese: str) -> list[int]:
        """Return <bos> y_1 ... y_n <eos>: the batch function cuts it into decoder input and target."""
        return self.chinese.encode(text.tokenize_chinese(chinese), add_bos=True, add_eos=True)

    def encode_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """Encode (English, Chinese) pairs into (source ids, target ids with <bos>/<eos>)."""
        return [(self.encode_source(english), self.encode_target(chinese)) for english, chinese in pairs]


def make_batch(examples: Sequence[tuple[list[int], list[int]]], pad_id: int = 0
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad a list of (source ids, <bos> target <eos> ids) into one training batch.

    Returns (source (B, S), source lengths (B,), decoder input (B, T), target tokens (N,)).
    The decoder input is the target shifted right: <bos> y_1 ... y_n, never <eos>; the target is
    y_1 ... y_n <eos>. The targets of all sentences are flattened into one vector of the N
    non-padding positions, in the order of `decoder_input != pad` (row by row). The shared training
    loop concatenates outputs of batches along dim 0, so batches with different T still fit together,
    and padding never enters the loss.
    """
    source, source_lengths = text.pad_sequences([source_ids for source_ids, _ in examples], pad_id=pad_id)
    decoder_input, _ = text.pad_sequences([target_ids[:-1] for _, target_ids in examples], pad_id=pad_id)
    target, _ = text.pad_sequences([target_ids[1:] for _, target_ids in examples], pad_id=pad_id)
    return source, source_lengths, decoder_input, target[decoder_input != pad_id]


# ---------------------------------------------------------------- 模型


class Encoder(nn.Module):
    """Bidirectional GRU over the English words; also returns the decoder's initial hidden state.

    Each direction has `hidden_size // 2` units, so an encoder output h_j (both directions
    concatenated) is `2 * (hidden_size // 2)` wide, which equals `hidden_size` when it is even.
    """

    def __init__(self, vocab_size: int, embedding_dim: int, hidden_size: int, dropout: float, pad_id: int = 0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id)
        self.dropout = nn.Dropout(dropout)
        self.rnn = nn.GRU(embedding_dim, hidden_size // 2, batch_first=True, bidirectional=True)
        self.output_size = 2 * (hidden_size // 2)
        self.bridge = nn.Linear(self.output_size, hidden_size)

    def forward(self, source: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedded = self.dropout(self.embedding(source))  # (B, S, E)
        # pack：GRU 只走每句的真实长度；enforce_sorted=False 让 PyTorch 自己按长度排序再还原顺序。
        packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        packed_outputs, last_hidden = self.rnn(packed)  # last_hidden: (2, B, H)，正向最后一步、反向第一步
        outputs, _ = pad_packed_sequence(packed_outputs, batch_first=True, total_length=source.shape[1])  # (B, S, H)
        # s_0 = tanh(W [→h_n ; ←h_1])：解码器从整句的摘要出发
        initial = torch.tanh(self.bridge(torch.cat([last_hidden[0], last_hidden[1]], dim=-1)))  # (B, H)
        return outputs, initial


class AdditiveAttention(nn.Module):
    """Bahdanau attention: e_tj = v^T tanh(W s_{t-1} + U h_j), softmax over the real source positions."""

    def __init__(self, query_size: int, key_size: int, attention_size: int):
        super().__init__()
        self.query_projection = nn.Linear(query_size, attention_size, bias=False)  # W
        self.key_projection = nn.Linear(key_size, attention_size)                   # U（偏置并进这里）
        self.score = nn.Linear(attention_size, 1, bias=False)                       # v

    def project_keys(self, memory: torch.Tensor) -> torch.Tensor:
        """U h_j for every source position, (B, S, A): it does not change during decoding, so compute it once."""
        return self.key_projection(memory)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.score(torch.tanh(keys + self.query_projection(query).unsqueeze(1))).squeeze(-1)  # (B, S)
        scores = scores.masked_fill(~mask, float("-inf"))  # 补齐位置不参与 softmax
        weights = scores.softmax(dim=-1)  # α_t: (B, S)
        context = torch.bmm(weights.unsqueeze(1), memory).squeeze(1)  # c_t = Σ_j α_tj h_j: (B, H)
        return context, weights


@dataclass
class EncodedSource:
    """Encoder results that the decoder reads at every step: outputs h_j, projections U h_j, padding mask, s_0."""

    memory: torch.Tensor  # (B, S, H)：编码器输出 h_j
    keys: torch.Tensor    # (B, S, A)
    mask: torch.Tensor    # (B, S)，True = 真实的词
    initial: torch.Tensor  # (B, H)

    def select(self, rows: torch.Tensor) -> "EncodedSource":
        return EncodedSource(self.memory[rows], self.keys[rows], self.mask[rows], self.initial[rows])


class Decoder(nn.Module):
    """One GRUCell step: attend with s_{t-1}, feed [embedding(y_{t-1}); c_t] to the GRU, then a deep output layer."""

    def __init__(self, vocab_size: int, embedding_dim: int, hidden_size: int, memory_size: int, dropout: float,
                 pad_id: int = 0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id)
        self.dropout = nn.Dropout(dropout)
        self.attention = AdditiveAttention(hidden_size, memory_size, hidden_size)
        self.cell = nn.GRUCell(embedding_dim + memory_size, hidden_size)
        # 输出层（Bahdanau 的 deep output）：o_t = tanh(W_o [s_t; c_t; E y_{t-1}])，logits = W_v o_t。
        # o_t 取词向量那么宽（D = embedding_dim）：W_v 是最大的一层（D × 字表大小），窄一些省计算。
        self.pre_output = nn.Linear(hidden_size + memory_size + embedding_dim, embedding_dim)
        self.output = nn.Linear(embedding_dim, vocab_size)

    def step(self, token: torch.Tensor, state: torch.Tensor, source: EncodedSource
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (s_t (B, H), o_t (B, D), α_t (B, S)) for input tokens y_{t-1} (B,) and state s_{t-1}."""
        embedded = self.dropout(self.embedding(token))  # (B, E)
        context, weights = self.attention(state, source.keys, source.memory, source.mask)
        state = self.cell(torch.cat([embedded, context], dim=-1), state)
        features = self.dropout(torch.tanh(self.pre_output(torch.cat([state, context, embedded], dim=-1))))
        return state, features, weights


class Seq2Seq(nn.Module):
    """Encoder-decoder with attention; `forward` runs the decoder over a whole shifted target."""

    def __init__(self, source_vocab_size: int, target_vocab_size: int, embedding_dim: int = 128, hidden_size: int = 256,
                 dropout: float = 0.2, teacher_forcing: float = 1.0, pad_id: int = 0):
        super().__init__()
        self.pad_id = pad_id
        self.teacher_forcing = teacher_forcing
        self.encoder = Encoder(source_vocab_size, embedding_dim, hidden_size, dropout, pad_id)
        self.decoder = Decoder(target_vocab_size, embedding_dim, hidden_size, self.encoder.output_size, dropout, pad_id)

    def encode(self, source: torch.Tensor, lengths: torch.Tensor) -> EncodedSource:
        memory, initial = self.encoder(source, lengths)
        mask = torch.arange(source.shape[1], device=source.device).unsqueeze(0) < lengths.to(source.device).unsqueeze(1)
        return EncodedSource(memory, self.decoder.attention.project_keys(memory), mask, initial)

    def decoder_features(self, source: torch.Tensor, lengths: torch.Tensor, decoder_input: torch.Tensor) -> torch.Tensor:
        """Run the decoder over `decoder_input` (B, T) = <bos> y_1 ... y_{n-1}; return o_1..o_T as (B, T, D).

        In training with teacher forcing below 1, each sentence at each step t >= 1 gets, with
        probability 1 - teacher_forcing, the model's own greedy prediction from step t - 1 instead of y_{t-1}.
        Positions after a sentence's end get o_t = 0.
        """
        source_state = self.encode(source, lengths)
        batch_size, steps = decoder_input.shape
        state = source_state.initial
        sample_own = self.training and self.teacher_forcing < 1.0
        features_per_step = []
        for step in range(steps):
            token = decoder_input[:, step]
            if sample_own and step > 0:
                own = torch.rand(token.shape, device=token.device) >= self.teacher_forcing
                token = torch.where(own & (token != self.pad_id), predicted, token)
            # 解码器版的 packing：只算这一步还没结束的句子。一个 batch 里目标长短不一，
            # 按最长的句子一律算到底，会有大量计算花在 <pad> 上（Tatoeba 训练集、batch 64 时约一半）。
            rows = (decoder_input[:, step] != self.pad_id).nonzero().squeeze(1)
            if len(rows) == batch_size:
                state, features, _ = self.decoder.step(token, state, source_state)
            else:
                row_state, row_features, _ = self.decoder.step(token[rows], state[rows], source_state.select(rows))
                state = state.index_copy(0, rows, row_state)
                features = row_features.new_zeros(batch_size, row_features.shape[1]).index_copy(0, rows, row_features)
            features_per_step.append(features)
            if sample_own:
                predicted = self.decoder.output(features).argmax(dim=-1).detach()
        return torch.stack(features_per_step, dim=1)  # (B, T, D)

    def forward(self, source: torch.Tensor, lengths: torch.Tensor, decoder_input: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, T, V) for every position of `decoder_input`, padding included."""
        return self.decoder.output(self.decoder_features(source, lengths, decoder_input))

    def step_log_probs(self, token: torch.Tensor, state: torch.Tensor, source: EncodedSource
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run one decoding step and return (log p(y_t | y_<t, x) (B, V), s_t, α_t)."""
        state, features, weights = self.decoder.step(token, state, source)
        return self.decoder.output(features).log_softmax(dim=-1), state, weights


class TokenLogits(nn.Module):
    """Training view of a Seq2Seq: logits of the non-padding decoder positions only, (N, V).

    The shared loop calls `model(*inputs)` and `loss(outputs, target)`; with the flattened target
    of `make_batch`, plain nn.CrossEntropyLoss is the mean loss per real target token. The
    vocabulary projection, the most expensive layer, is also spared on padding positions.

    NOTE: with several processes (torchrun), `gather_for_metrics` trims the repeated samples of the
    last validation batch by sample count, while dim 0 here counts tokens, so the validation loss
    can be slightly off there. Training itself is unaffected.
    """

    def __init__(self, seq2seq: Seq2Seq):
        super().__init__()
        self.seq2seq = seq2seq

    def forward(self, source: torch.Tensor, lengths: torch.Tensor, decoder_input: torch.Tensor) -> torch.Tensor:
        features = self.seq2seq.decoder_features(source, lengths, decoder_input)  # (B, T, D)
        return self.seq2seq.decoder.output(features[decoder_input != self.seq2seq.pad_id])  # (N, V)


def build_model(args: argparse.Namespace, vocabularies: Vocabularies) -> Seq2Seq:
    return Seq2Seq(len(vocabularies.english), len(vocabularies.chinese), embedding_dim=args.embedding_dim,
                   hidden_size=args.hidden_size, dropout=args.dropout, teacher_forcing=args.teacher_forcing,
                   pad_id=vocabularies.chinese.pad_id)


# ---------------------------------------------------------------- 解码：贪心与束搜索


@dataclass
class Hypothesis:
    tokens: list[int]  # 生成的字 id，不含 <bos>，也不含结尾的 <eos>
    log_prob: float    # Σ_t log p(y_t | y_<t, x)，生成了 <eos> 时包括 <eos> 的那一项
    attention: torch.Tensor | None = None  # (len(tokens) + 1 或 len(tokens), S)：每个输出位置的 α_t


@torch.no_grad()
def greedy_decode(model: Seq2Seq, source: torch.Tensor, lengths: torch.Tensor, bos_id: int, eos_id: int,
                  max_length: int = MAX_TARGET_TOKENS + 1) -> list[Hypothesis]:
    """Decode a padded batch greedily: at each step take argmax_y p(y | y_<t, x), up to `max_length` tokens."""
    model.eval()
    source_state = model.encode(source, lengths)
    batch_size = source.shape[0]
    state = source_state.initial
    token = torch.full((batch_size,), bos_id, dtype=torch.long, device=source.device)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=source.device)
    scores = torch.zeros(batch_size, dtype=torch.float64, device=source.device)
    steps, attention = [], []
    for _ in range(max_length):
        log_probs, state, weights = model.step_log_probs(token, state, source_state)
        best, token = log_probs.max(dim=-1)
        scores += torch.where(finished, torch.zeros_like(best), best).double()  # 已结束的句子不再累加
        steps.append(token)
        attention.append(weights)
        finished |= token == eos_id
        if bool(finished.all()):
            break
    tokens = torch.stack(steps, dim=1).tolist()  # (B, L)
    weights = torch.stack(attention, dim=1).cpu()  # (B, L, S)
    hypotheses = []
    for row in range(batch_size):
        length = tokens[row].index(eos_id) if eos_id in tokens[row] else len(tokens[row])
        steps_taken = min(length + 1, len(tokens[row]))
        hypotheses.append(Hypothesis(tokens[row][:length], float(scores[row]),
                                     weights[row, :steps_taken, : int(lengths[row])]))
    return hypotheses


StepFunction = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def beam_search(step: StepFunction, initial_state: torch.Tensor, bos_id: int, eos_id: int, beam_size: int,
                max_length: int = MAX_TARGET_TOKENS + 1, length_penalty: float = 0.0) -> Hypothesis:
    """Beam search for one sentence over any step function.

    `step(tokens (K,), state (K, ...))` returns (log-probabilities (K, V), new state (K, ...)), where
    row k continues hypothesis k. Each step keeps the `beam_size` best unfinished prefixes by total
    log-probability. A candidate that ends in <eos> among the top `beam_size` is finished. The search
    stops when `beam_size` hypotheses are finished, when no unfinished prefix can still beat the best
    finished one (log-probabilities only fall, so with `length_penalty=0` this is exact), or after
    `max_length` tokens, where unfinished prefixes count as they are. The winner has the highest
    log_prob / length ** length_penalty (length counts <eos>).
    With beam_size=1 this is exactly greedy decoding.
    """
    if beam_size < 1:
        raise ValueError(f"束宽必须 >= 1，收到 {beam_size}")
    device = initial_state.device
    prefixes: list[list[int]] = [[]]
    scores = torch.zeros(1, dtype=torch.float64, device=device)
    state = initial_state
    last = torch.full((1,), bos_id, dtype=torch.long, device=device)
    finished: list[tuple[list[int], float, int]] = []  # (tokens, log_prob, 计分长度)

    def normalized(log_prob: float, length: int) -> float:
        return log_prob / max(length, 1) ** length_penalty

    for position in range(max_length):
        log_probs, state = step(last, state)
        vocab_size = log_probs.shape[-1]
        candidates = (scores.unsqueeze(1) + log_probs.double()).flatten()  # (K * V,)
        top_scores, top_index = candidates.topk(min(2 * beam_size, candidates.numel()))
        rows, tokens, kept_scores = [], [], []
        for rank, (score, index) in enumerate(zip(top_scores.tolist(), top_index.tolist())):
            row, token = divmod(index, vocab_size)
            if token == eos_id:
                if rank < beam_size:
                    finished.append((prefixes[row], score, position + 1))
            elif len(rows) < beam_size:
                rows.append(row)
                tokens.append(token)
                kept_scores.append(score)
        prefixes = [prefixes[row] + [token] for row, token in zip(rows, tokens)]
        if position == max_length - 1:  # 到了长度上限：没结束的也作为候选
            finished.extend((prefix, score, len(prefix)) for prefix, score in zip(prefixes, kept_scores))
            break
        best_finished = max((normalized(score, length) for _, score, length in finished), default=-math.inf)
        if len(finished) >= beam_size or not prefixes:
            break
        if length_penalty == 0.0 and best_finished >= max(kept_scores):
            break
        index = torch.tensor(rows, dtype=torch.long, device=device)
        state = state[index]
        scores = torch.tensor(kept_scores, dtype=torch.float64, device=device)
        last = torch.tensor(tokens, dtype=torch.long, device=device)
    best = max(finished, key=lambda item: normalized(item[1], item[2]))
    return Hypothesis(best[0], best[1])


@torch.no_grad()
def beam_decode(model: Seq2Seq, source: torch.Tensor, lengths: torch.Tensor, bos_id: int, eos_id: int,
                beam_size: int, max_length: int = MAX_TARGET_TOKENS + 1, length_penalty: float = 0.0
                ) -> list[Hypothesis]:
    """Beam-search each sentence of a padded batch on its own (the beams form the batch of the decoder)."""
    model.eval()
    encoded = model.encode(source, lengths)
    hypotheses = []
    for row in range(source.shape[0]):
        sentence = encoded.select(torch.tensor([row], device=source.device))

        def step(tokens: torch.Tensor, state: torch.Tensor, sentence=sentence) -> tuple[torch.Tensor, torch.Tensor]:
            beams = sentence.select(torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device))
            log_probs, state, _ = model.step_log_probs(tokens, state, beams)
            return log_probs, state

        hypotheses.append(beam_search(step, sentence.initial, bos_id, eos_id, beam_size, max_length, length_penalty))
    return hypotheses


# ---------------------------------------------------------------- 训练与评估


def translate(model: Seq2Seq, sentences: Sequence[str], vocabularies: Vocabularies, beam_size: int = 1,
              length_penalty: float = 0.0, batch_size: int = 256, device: torch.device | None = None,
              progress: str | None = None) -> list[Hypothesis]:
    """Translate English sentences: greedy for beam_size=1, else beam search; returns one hypothesis each."""
    device = device or next(model.parameters()).device
    encoded = [vocabularies.encode_source(sentence) or [vocabularies.english.unk_id] for sentence in sentences]
    chinese = vocabularies.chinese
    hypotheses: list[Hypothesis] = []
    starts = range(0, len(encoded), batch_size)
    for start in tqdm(starts, desc=progress, leave=False, disable=progress is None):
        source, lengths = text.pad_sequences(encoded[start:start + batch_size], pad_id=vocabularies.english.pad_id)
        source = source.to(device)
        if beam_size == 1:
            hypotheses += greedy_decode(model, source, lengths, chinese.bos_id, chinese.eos_id)
        else:
            hypotheses += beam_decode(model, source, lengths, chinese.bos_id, chinese.eos_id, beam_size,
                                      length_penalty=length_penalty)
    return hypotheses


def to_chinese(hypothesis: Hypothesis, vocabularies: Vocabularies) -> str:
    return detokenize_chinese(vocabularies.chinese.decode(hypothesis.tokens))


def evaluate_bleu(model: Seq2Seq, pairs: Sequence[tuple[str, str]], vocabularies: Vocabularies, beam_size: int,
                  length_penalty: float, device: torch.device) -> tuple[float, list[Hypothesis], list[str], float]:
    """Corpus BLEU (sacrebleu, tokenize="zh") of the model's translations against the reference Chinese.

    Returns (BLEU, hypotheses, translated sentences, seconds).
    """
    started = time.perf_counter()
    name = "greedy" if beam_size == 1 else f"beam {beam_size}"
    hypotheses = translate(model, [english for english, _ in pairs], vocabularies, beam_size, length_penalty,
                           batch_size=256 if beam_size == 1 else 32, device=device, progress=f"BLEU ({name})")
    outputs = [to_chinese(hypothesis, vocabularies) for hypothesis in hypotheses]
    score = metrics.bleu(outputs, [chinese for _, chinese in pairs], tokenize="zh")
    return score, hypotheses, outputs, time.perf_counter() - started


def save_figure(figure, path: Path) -> None:
    import matplotlib.pyplot as plt

    if runs.is_main_process():
        figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


def find_cjk_font() -> str | None:
    """Return the family name of a font with Chinese glyphs, or None.

    Uses the font search of the LSTM diagram lesson: $ROADMAP_CJK_FONT, the Noto Sans SC font that
    the project installs (pylopdf-fonts-zh-cn), fonts registered in matplotlib, then `fc-list :lang=zh`.
    """
    from stage2_cnn_rnn.lstm_cell_diagram import find_cjk_font as find_font_file

    font = find_font_file()
    return font.family if font is not None else None


def plot_attention(english: str, hypothesis: Hypothesis, vocabularies: Vocabularies, path: Path) -> list[str]:
    """Draw α (output characters × English words); return the lines that map y-axis ids to characters.

    Without a CJK font the Chinese tick labels would be empty boxes, so the y axis then shows ids
    (y0, y1, ...) and the returned lines map each id to its character.
    """
    import matplotlib.pyplot as plt

    source_tokens = text.tokenize_english(english)
    output_tokens = vocabularies.chinese.decode(hypothesis.tokens) + ["<eos>"]
    weights = hypothesis.attention.numpy()[: len(output_tokens), : len(source_tokens)]
    output_tokens = output_tokens[: weights.shape[0]]
    font = find_cjk_font()
    mapping = [f"y{index} = {token}" for index, token in enumerate(output_tokens)]
    y_labels = output_tokens if font else [f"y{index}" for index in range(len(output_tokens))]
    figure, axis = plt.subplots(figsize=(max(4.0, 0.45 * len(source_tokens) + 2), max(3.0, 0.35 * len(output_tokens) + 1.5)))
    image = axis.imshow(weights, cmap="viridis", aspect="auto", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axis, fraction=0.046)
    axis.set_xticks(range(len(source_tokens)), labels=source_tokens, rotation=60, ha="right")
    axis.set_yticks(range(len(output_tokens)), labels=y_labels, fontfamily=font or "sans-serif")
    axis.set(xlabel="English source token", ylabel="Chinese output character" + ("" if font else " (id, see log)"),
             title="Bahdanau attention weights")
    save_figure(figure, path)
    return [] if font else mapping


def plot_source_length_bleu(pairs: Sequence[tuple[str, str]], greedy_outputs: Sequence[str], path: Path) -> dict[str, float]:
    """BLEU by English length bucket: attention models should degrade slowly with length."""
    buckets = {"1-4": (1, 4), "5-7": (5, 7), "8-10": (8, 10), "11+": (11, MAX_SOURCE_TOKENS)}
    scores = {}
    for name, (low, high) in buckets.items():
        rows = [i for i, (english, _) in enumerate(pairs) if low <= len(text.tokenize_english(english)) <= high]
        if rows:
            scores[name] = metrics.bleu([greedy_outputs[i] for i in rows], [pairs[i][1] for i in rows], tokenize="zh")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.5))
    axis.bar(range(len(scores)), list(scores.values()))
    axis.set_xticks(range(len(scores)), labels=list(scores))
    axis.set(xlabel="English source length (tokens)", ylabel="BLEU (greedy)", title="test BLEU by source length")
    save_figure(figure, path)
    return scores


def load_trained(run_dir: Path) -> tuple[Seq2Seq, Vocabularies, argparse.Namespace]:
    """Load the vocabularies, the options and the best checkpoint of a finished run."""
    config_path = run_dir / runs.CONFIG_FILE
    weights = run_dir / "checkpoints" / MODEL_NAME / "best" / training.MODEL_FILE
    for path in (config_path, run_dir / VOCAB_FILES["english"], run_dir / VOCAB_FILES["chinese"], weights):
        if not path.is_file():
            raise SystemExit(f"--checkpoint {run_dir}：没有找到 {path}；请给一个 seq2seq_translation 训练完成的运行目录")
    saved = argparse.Namespace(**json.loads(config_path.read_text(encoding="utf-8")))
    vocabularies = Vocabularies.load(run_dir)
    model = build_model(saved, vocabularies)
    load_model(TokenLogits(model), str(weights), device="cpu")
    return model.eval(), vocabularies, saved


def print_translation(english: str, model: Seq2Seq, vocabularies: Vocabularies, beam_size: int,
                      length_penalty: float) -> dict:
    if not text.tokenize_english(english):
        raise SystemExit("--predict 的句子是空的；请给一句英文，例如 --predict \"I like cats.\"")
    greedy = translate(model, [english], vocabularies, beam_size=1, device=torch.device("cpu"))[0]
    beam = translate(model, [english], vocabularies, beam_size, length_penalty, device=torch.device("cpu"))[0]
    unknown = [token for token in text.tokenize_english(english) if token not in vocabularies.english]
    print(f"英文：{english}")
    if unknown:
        print(f"（不在训练词表里、按 <unk> 处理的词：{' '.join(unknown)}）")
    print(f"贪心：{to_chinese(greedy, vocabularies)}（log p = {greedy.log_prob:.3f}）")
    print(f"束搜索（束宽 {beam_size}）：{to_chinese(beam, vocabularies)}（log p = {beam.log_prob:.3f}）")
    return {"source": english, "greedy": to_chinese(greedy, vocabularies), "greedy_log_prob": greedy.log_prob,
            "beam": to_chinese(beam, vocabularies), "beam_log_prob": beam.log_prob}


# ---------------------------------------------------------------- 主程序


def build_argument_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser(__doc__.splitlines()[0], epochs=8, batch_size=64, lr=3e-3)
    group = parser.add_argument_group("Seq2Seq 选项")
    group.add_argument("--embedding-dim", type=cli.positive_int, default=128, help="英文词向量和中文字向量的维度")
    group.add_argument("--hidden-size", type=cli.positive_int, default=256,
                       help="解码器 GRU 的 hidden state 维度；双向编码器每个方向一半宽，拼起来也是这么宽")
    group.add_argument("--dropout", type=float, default=0.2, help="词向量和输出层前的 dropout 概率")
    group.add_argument("--teacher-forcing", type=float, default=1.0,
                       help="训练时喂正确答案的概率；小于 1 时其余情况喂模型自己上一步的贪心预测")
    group.add_argument("--min-freq", type=cli.positive_int, default=2, help="词或字在训练部分至少出现几次才进词表")
    group.add_argument("--clip-norm", type=cli.positive_float, default=1.0, help="梯度裁剪：全部梯度的 L2 范数上限")
    group.add_argument("--beam-size", type=cli.positive_int, default=5, help="束搜索的束宽；1 就是贪心")
    group.add_argument("--length-penalty", type=float, default=0.0,
                       help="束搜索按 log p / 长度^α 选最终译文，这里是 α；0 表示直接比 log p")
    group.add_argument("--bleu-samples", type=cli.positive_int, default=None,
                       help="只在测试集的前 N 对上算 BLEU（默认整个测试集）")
    group.add_argument("--predict", type=str, default=None, metavar="ENGLISH", help="翻译一句英文并打印")
    group.add_argument("--checkpoint", type=Path, default=None, metavar="RUN_DIR",
                       help="和 --predict 一起用：从这个训练完成的运行目录加载词表和最佳权重，不再训练")
    return parser


def check_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if not 0.0 <= args.dropout < 1.0:
        parser.error(f"--dropout 必须在 [0, 1) 之间，收到 {args.dropout}")
    if not 0.0 <= args.teacher_forcing <= 1.0:
        parser.error(f"--teacher-forcing 必须在 [0, 1] 之间，收到 {args.teacher_forcing}")
    if args.length_penalty < 0:
        parser.error(f"--length-penalty 不能是负数，收到 {args.length_penalty}")
    cli.check_predict_options(parser, args)


def pick_heatmap_sentence(test_pairs: Sequence[tuple[str, str]]) -> str:
    """Return the first test sentence with 6 to 10 English tokens (a readable heatmap), else the first one."""
    for english, _ in test_pairs:
        if 6 <= len(text.tokenize_english(english)) <= 10:
            return english
    return test_pairs[0][0]


def main(argv: list[str] | None = None) -> dict:
    parser = build_argument_parser()
    args = parser.parse_args(argv)
    check_options(args, parser)
    if args.checkpoint is not None:
        cli.setup_logging()
        model, vocabularies, _ = load_trained(args.checkpoint)
        return print_translation(args.predict, model, vocabularies, args.beam_size, args.length_penalty)
    cli.apply_smoke(args, epochs=2)
    if args.smoke:
        args.embedding_dim, args.hidden_size = min(args.embedding_dim, 32), min(args.hidden_size, 32)
    run_dir = cli.start_run(args, "seq2seq_translation")
    started = time.perf_counter()

    # 数据：固定划分；词表只看训练部分。
    train_pairs, valid_pairs, test_pairs, vocabularies = prepare_data(args, run_dir)
    train_loader = DataLoader(vocabularies.encode_pairs(train_pairs), batch_size=args.batch_size, shuffle=True,
                              collate_fn=make_batch)
    valid_loader = DataLoader(vocabularies.encode_pairs(valid_pairs), batch_size=256, collate_fn=make_batch)

    # 模型与训练：共享循环，按验证集每个字的交叉熵挑最佳 epoch。
    torch.manual_seed(args.seed)
    model = build_model(args, vocabularies)
    trainable = TokenLogits(model)
    accelerator = training.create_accelerator(args, run_dir)
    optimizer = torch.optim.Adam(trainable.parameters(), lr=args.lr)
    # OneCycle：前 30% 的步数学习率从 lr/25 升到 lr，之后余弦降到接近 0；训练轮数少时比固定学习率收敛得快。
    steps_per_epoch = math.ceil(len(train_loader) / args.grad_accum_steps)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch)
    result = training.fit(
        trainable, optimizer, train_loader, valid_loader,
        accelerator=accelerator, loss_fn=nn.CrossEntropyLoss(),
        metric_fn=lambda logits, target: {"token_accuracy": metrics.accuracy(logits, target)},
        epochs=args.epochs, seed=args.seed, monitor="loss", mode="min", patience=args.patience, scheduler=scheduler,
        max_grad_norm=args.clip_norm, checkpoint_dir=run_dir / "checkpoints" / MODEL_NAME,
        resume=args.resume is not None, name=MODEL_NAME,
    )
    train_seconds = time.perf_counter() - started
    plots.plot_history(result.history, run_dir / "seq2seq_curves.png", title="Seq2Seq GRU + attention")

    # 评估：测试集（或它的前 --bleu-samples 对）上的 BLEU，贪心和束搜索。
    model = accelerator.unwrap_model(trainable).seq2seq.eval()
    bleu_pairs = test_pairs[: args.bleu_samples] if args.bleu_samples else test_pairs
    greedy_bleu, greedy_hypotheses, greedy_outputs, greedy_seconds = evaluate_bleu(
        model, bleu_pairs, vocabularies, 1, 0.0, accelerator.device)
    beam_bleu, beam_hypotheses, beam_outputs, beam_seconds = evaluate_bleu(
        model, bleu_pairs, vocabularies, args.beam_size, args.length_penalty, accelerator.device)
    # 束搜索找的是 log p 更高的译文，但不保证逐句都比贪心高（贪心的前缀可能在中途被剪掉），这里数一数。
    greedy_log_probs = np.array([hypothesis.log_prob for hypothesis in greedy_hypotheses])
    beam_log_probs = np.array([hypothesis.log_prob for hypothesis in beam_hypotheses])
    by_length = plot_source_length_bleu(bleu_pairs, greedy_outputs, run_dir / "bleu_by_source_length.png")
    if runs.is_main_process():
        lines = ["english\treference\tgreedy\tbeam"] + [
            f"{english}\t{chinese}\t{greedy}\t{beam}"
            for (english, chinese), greedy, beam in zip(bleu_pairs, greedy_outputs, beam_outputs)]
        (run_dir / "test_translations.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")

    heatmap_sentence = args.predict or pick_heatmap_sentence(test_pairs)
    heatmap_hypothesis = translate(model, [heatmap_sentence], vocabularies, device=accelerator.device)[0]
    mapping = plot_attention(heatmap_sentence, heatmap_hypothesis, vocabularies, run_dir / "attention_heatmap.png")
    if mapping and runs.is_main_process():
        logger.info("没有找到含中文字形的字体，注意力图的纵轴用编号，对应关系：%s", "，".join(mapping))
        (run_dir / "attention_heatmap_labels.txt").write_text("\n".join(mapping) + "\n", encoding="utf-8")

    summary = {
        "train_pairs": len(train_pairs),
        "valid_pairs": len(valid_pairs),
        "test_pairs": len(test_pairs),
        "bleu_pairs": len(bleu_pairs),
        "english_vocab": len(vocabularies.english),
        "chinese_vocab": len(vocabularies.chinese),
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        "best_epoch": result.best_epoch,
        "val_loss": result.best_metrics["val_loss"],
        "val_token_accuracy": result.best_metrics["val_token_accuracy"],
        "test_bleu_greedy": greedy_bleu,
        "test_bleu_beam": beam_bleu,
        "beam_size": args.beam_size,
        "test_mean_log_prob_greedy": float(greedy_log_probs.mean()),
        "test_mean_log_prob_beam": float(beam_log_probs.mean()),
        "beam_not_worse_fraction": float((beam_log_probs >= greedy_log_probs - 1e-6).mean()),
        "bleu_by_source_length": by_length,
        "world_size": result.world_size,
        "train_seconds": round(train_seconds, 1),
        "greedy_seconds": round(greedy_seconds, 1),
        "beam_seconds": round(beam_seconds, 1),
    }
    if args.predict is not None and runs.is_main_process():
        summary["prediction"] = print_translation(args.predict, model.cpu(), vocabularies, args.beam_size,
                                                  args.length_penalty)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    runs.save_metrics(run_dir, summary)
    if runs.is_main_process():
        print(runs.markdown_table([
            {"decoding": "greedy", "test BLEU": greedy_bleu, "pairs": len(bleu_pairs), "seconds": summary["greedy_seconds"]},
            {"decoding": f"beam {args.beam_size}", "test BLEU": beam_bleu, "pairs": len(bleu_pairs),
             "seconds": summary["beam_seconds"]},
        ]))
        print(runs.markdown_table([{"english": english, "reference": chinese, "greedy": greedy, "beam": beam}
                                   for (english, chinese), greedy, beam
                                   in list(zip(bleu_pairs, greedy_outputs, beam_outputs))[:8]]))
        print(f"图和指标在 {run_dir}")
    accelerator.end_training()
    return summary


if __name__ == "__main__":
    cli.run_script(main)
