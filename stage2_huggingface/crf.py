"""线性链 CRF：手写前向算法与 Viterbi，对照逐位置 softmax（路线图：Hugging Face → 序列标注：BERT-CRF 命名实体识别（CoNLL-2003））

学什么
- 逐位置 softmax 的问题：每个位置各自取 argmax，相邻标签之间没有任何约束，
  于是会出现 IOB2 里不合法的序列，比如 "O I-PER"、"B-LOC I-PER"。线性链 CRF
  （Lafferty et al. 2001，Conditional Random Fields）给整条标签序列 y 打分：
      score(x, y) = start[y_1] + Σ_i E[i, y_i] + Σ_{i>=2} A[y_{i-1}, y_i] + end[y_n]
  E 是编码器给出的发射分数（emission，(n, T)），A 是 T×T 的转移分数（transitions[i, j]：从标签 i 到标签 j），
  start / end 是序列开头和结尾的分数。p(y | x) = exp(score(x, y)) / Z(x)，Z(x) 对全部 T^n 条路径求和。
- 前向算法（forward algorithm）在 log 空间里用 O(n·T²) 算出 log Z，不用枚举 T^n 条路径：
      α_1(j) = start[j] + E[1, j]
      α_i(j) = logsumexp_k(α_{i-1}(k) + A[k, j]) + E[i, j]
      log Z  = logsumexp_j(α_n(j) + end[j])
  对 batch 向量化，只在时间维上循环；logsumexp 先减去最大值再取 exp，所以不会上溢。
  训练目标是金标路径的负对数似然：-(score(x, y) - log Z(x))。
- Viterbi 解码：把 logsumexp 换成 max，并记下每一步取到最大值的前一个标签（backpointer），最后倒着回溯出最佳路径。
- 不是前缀的 mask：BERT 的输入以 [CLS] 开头，一个词被切成几个 sub-word 时通常只给第一片打标签，
  所以 mask 在位置 0 和词中间都有空洞。CRF 的转移应该连接相邻的"带标签的词"，而不是相邻的 token。
  这里先把每条序列带标签的位置按原顺序挪到最前面（compact），再跑前向算法和 Viterbi；
  解码结果按压缩后的顺序返回，scatter_paths 再把它放回原来的位置。
  （pytorch-crf 0.7.2 要求每条序列的第一个位置必须在 mask 里，遇到 [CLS] 就得这样自己处理。）
  一个带标签的位置都没有的序列：对数似然为 0，解码结果为空列表，不会出现 NaN。
- IOB2 约束：I-X 只能跟在 B-X 或 I-X 后面，也不能出现在序列开头。iob2_transition_mask 给出允许的转移，
  CRF.set_constraints 把不允许的转移分数换成 -10000（一个很大的有限负数：用 -inf 时，
  一行全是 -inf 的 logsumexp 会得到 NaN 梯度）。

实验：实体类型只写在实体的第一个词上
  脚本自己生成 IOB2 序列（7 个标签：O 和 PER/LOC/ORG 的 B-、I-；类型比例 5:3:2，像 CoNLL-2003 一样不均衡）。
  实体的第一个词来自该类型专用的词表，后面的词来自三种类型共用的"内部词"。实体外的位置有 20% 也用内部词
  （像 "Bank of America" 里的 of），每个词还以 --noise 的概率被换成随机词。每条序列以 [CLS] 开头，
  有些词后面跟一个不带标签的 sub-word 片段，所以 mask 在位置 0 和序列中间都有空洞。
  两个模型的编码器完全一样：词向量 + 线性层，每个位置只看自己这个词。
  - 逐位置 softmax：对一个内部词，它只能学到 P(标签 | 这个词)。默认设置下 20 个内部词的平均概率是
    O 0.33、I-PER 0.31、I-LOC 0.20、I-ORG 0.14（metrics.json 的 inside_word_probability_*），
    argmax 在 O 和 I-PER 之间摇摆：LOC、ORG 实体要么被截断，要么出现 "B-LOC I-PER" 这样的矛盾；
  - softmax + IOB2 硬约束（log_softmax 当发射分数，转移只有 0 和 -10000）：矛盾没有了，
    但 B-LOC 后面只剩 O 和 I-LOC 可选，O 的概率更高，所以 LOC、ORG 实体还是被截断；
  - 同一个编码器加上 CRF，一起训练：转移矩阵学到 B-LOC → I-LOC 高、B-LOC → I-PER 和 O → I-X 很低，
    发射分数和前一个标签一起决定，类型沿着实体传下去（见 crf_transitions.png）；
  - 训练好的 CRF 在解码时再加 IOB2 约束（CRF.set_constraints），看它自己学到的转移还漏了多少。
  指标：严格 IOB2 的实体 F1（roadmap.metrics.entity_f1，seqeval）、预测里不合法的 IOB2 转移个数；
  另外在随机的小 CRF（4 个标签、长度 5、30 条序列）上与穷举全部路径的结果对比（带空洞和位置 0 不带标签的 mask）。

数据
  脚本自己生成序列，不需要下载，--data-dir 不起作用；--max-train-samples 是训练序列条数（默认 3000）。

怎么跑
    roadmap run crf --smoke          # 几秒
    roadmap run crf                  # 默认设置，约 20-30 秒
    python stage2_huggingface/crf.py --noise 0.3 --epochs 15
  以后的 BERT-CRF 脚本这样用它：
    from stage2_huggingface.crf import CRF
    crf = CRF(num_labels)
    loss = crf.neg_log_likelihood(logits, labels, labels != -100)   # [CLS]、后续 sub-word 的 -100 不参与
    paths = crf.decode(logits, labels != -100)                       # 每条序列只含带标签的位置

结果（默认设置：训练 3000 条、测试 1000 条（3055 个实体）、每条 6-16 个词、噪声 0.15、词向量 32 维、
Adam lr 1e-2、batch 32、10 个 epoch；2 核 CPU 与其他任务共用，OMP_NUM_THREADS=1，脚本内用时约 20 秒，
连同启动约 28 秒；同一 --seed 跑两次结果完全相同）：
    解码方式                     实体 F1   token 准确率   不合法的 IOB2 转移
    softmax（逐位置 argmax）      0.380     0.699          901
    softmax + IOB2 约束          0.402     0.734          0
    CRF                          0.675     0.846          0
    CRF + IOB2 约束              0.675     0.846          0
  CRF 没有被告知 IOB2 规则，却从数据里学到了它：不加约束也没有一个不合法的转移，加上约束结果不变。
  学到的转移分数：B-X → I-X 最低 2.49，不合法的转移最高 -2.04（transition_* 两项）。
  与穷举对照：对数似然最大误差 1.8e-15（float64），Viterbi 路径 30 条全部一致。
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from roadmap import cli, metrics, plots, runs, training

logger = logging.getLogger(__name__)

# 不允许的转移用的分数。只要发射和转移分数远小于 10000，经过它的路径就输给任何合法路径。
# 它又是有限值，所以 logsumexp 和梯度里不会出现 NaN。
IMPOSSIBLE_SCORE = -10000.0
REDUCTIONS = ("none", "sum", "mean", "token_mean")


# ---------------------------------------------------------------- 不是前缀的 mask


def compact(emissions: torch.Tensor, tags: torch.Tensor | None, mask: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Move each sequence's labelled positions to the front, keeping their order.

    Takes batch-first tensors: emissions (B, L, T), tags (B, L) or None, mask (B, L). Returns tensors of the
    same shapes whose mask is a prefix: sequence b has its mask.sum() labelled positions first, then padding.
    The unlabelled positions' emissions and tags are moved behind them and stay there unused.
    """
    mask = mask.bool()
    # 稳定排序：mask 为 True 的位置（键 0）排到前面，彼此之间保持原顺序。
    order = torch.sort((~mask).long(), dim=1, stable=True).indices  # (B, L)
    emissions = emissions.gather(1, order.unsqueeze(2).expand_as(emissions))
    if tags is not None:
        tags = tags.gather(1, order)
    lengths = mask.sum(dim=1)  # (B,)
    positions = torch.arange(mask.shape[1], device=mask.device)
    return emissions, tags, positions.unsqueeze(0) < lengths.unsqueeze(1)


def scatter_paths(paths: Sequence[Sequence[int]], mask: torch.Tensor, fill_value: int = -100) -> torch.Tensor:
    """Put compacted paths back at their original positions: (B, L) long, `fill_value` where mask is False.

    `mask` is the batch-first mask that the paths were decoded with. Path b must have mask[b].sum() tags.
    """
    mask = mask.bool()
    result = torch.full(mask.shape, fill_value, dtype=torch.long, device=mask.device)
    if len(paths) != mask.shape[0]:
        raise ValueError(f"路径条数 {len(paths)} 与 mask 的 batch 大小 {mask.shape[0]} 不一致")
    for index, path in enumerate(paths):
        positions = mask[index].nonzero().squeeze(1)
        if len(path) != len(positions):
            raise ValueError(f"第 {index} 条路径有 {len(path)} 个标签，但 mask 里有 {len(positions)} 个带标签的位置")
        result[index, positions] = torch.tensor(list(path), dtype=torch.long, device=mask.device)
    return result


# ---------------------------------------------------------------- CRF 层


class CRF(nn.Module):
    """Linear-chain CRF over `num_tags` tags: log-likelihood by the forward algorithm, Viterbi decoding.

    emissions are (B, L, T) with `batch_first=True` and (L, B, T) otherwise. tags and mask follow the same layout.
    The mask may have holes anywhere (a [CLS] at position 0, sub-word pieces): see `compact`.
    """

    def __init__(self, num_tags: int, batch_first: bool = True):
        super().__init__()
        if num_tags < 1:
            raise ValueError(f"num_tags 必须是正整数，收到 {num_tags}")
        self.num_tags = num_tags
        self.batch_first = batch_first
        self.start_transitions = nn.Parameter(torch.empty(num_tags))
        self.end_transitions = nn.Parameter(torch.empty(num_tags))
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))  # [i, j]：从标签 i 到标签 j
        for parameter in (self.start_transitions, self.end_transitions, self.transitions):
            nn.init.uniform_(parameter, -0.1, 0.1)
        # 允许的开头 / 转移 / 结尾，默认全部允许。它们是 buffer：随模型移动设备，也存进 state_dict。
        self.register_buffer("start_allowed", torch.ones(num_tags, dtype=torch.bool))
        self.register_buffer("transitions_allowed", torch.ones(num_tags, num_tags, dtype=torch.bool))
        self.register_buffer("end_allowed", torch.ones(num_tags, dtype=torch.bool))

    def extra_repr(self) -> str:
        return f"num_tags={self.num_tags}, batch_first={self.batch_first}"

    def set_constraints(self, start_allowed: torch.Tensor | None = None,
                        transitions_allowed: torch.Tensor | None = None,
                        end_allowed: torch.Tensor | None = None) -> None:
        """Forbid the starts, transitions and ends marked False. None allows all, so no argument clears every constraint.

        Forbidden scores become IMPOSSIBLE_SCORE in both the log-likelihood and `decode`, so a model can be
        trained without constraints and decoded with them.
        """
        for name, value, shape in (("start_allowed", start_allowed, (self.num_tags,)),
                                   ("transitions_allowed", transitions_allowed, (self.num_tags, self.num_tags)),
                                   ("end_allowed", end_allowed, (self.num_tags,))):
            if value is None:
                value = torch.ones(shape, dtype=torch.bool)
            if tuple(value.shape) != shape:
                raise ValueError(f"{name} 的形状应为 {shape}，收到 {tuple(value.shape)}")
            getattr(self, name).copy_(value.bool())

    def scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (start (T,), transitions (T, T), end (T,)) with the forbidden entries set to IMPOSSIBLE_SCORE."""
        # masked_fill 而不是相加：被禁止的项不再收到梯度，也不会因为学到的值而"变得允许"。
        return (self.start_transitions.masked_fill(~self.start_allowed, IMPOSSIBLE_SCORE),
                self.transitions.masked_fill(~self.transitions_allowed, IMPOSSIBLE_SCORE),
                self.end_transitions.masked_fill(~self.end_allowed, IMPOSSIBLE_SCORE))

    # ---- 输入检查与压缩

    def _prepare(self, emissions: torch.Tensor, tags: torch.Tensor | None, mask: torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Check shapes, switch to batch-first, compact the mask and cut the padding that no sequence uses."""
        if emissions.dim() != 3 or emissions.shape[2] != self.num_tags:
            layout = "(B, L, num_tags)" if self.batch_first else "(L, B, num_tags)"
            raise ValueError(f"emissions 的形状应为 {layout}，num_tags={self.num_tags}，收到 {tuple(emissions.shape)}")
        if mask is None:
            mask = torch.ones(emissions.shape[:2], dtype=torch.bool, device=emissions.device)
        for name, value in (("tags", tags), ("mask", mask)):
            if value is not None and value.shape != emissions.shape[:2]:
                raise ValueError(f"{name} 的形状应为 {tuple(emissions.shape[:2])}，与 emissions 的前两维一致，"
                                 f"收到 {tuple(value.shape)}")
        if not self.batch_first:
            emissions = emissions.transpose(0, 1)
            mask = mask.transpose(0, 1)
            tags = None if tags is None else tags.transpose(0, 1)
        mask = mask.bool()
        if emissions.shape[1] == 0:  # 长度为 0 的 batch：补一个不带标签的位置，后面就不用另外处理
            emissions = F.pad(emissions, (0, 0, 0, 1))
            mask = F.pad(mask, (0, 1), value=False)
            tags = None if tags is None else F.pad(tags, (0, 1), value=0)
        if tags is not None:
            tags = tags.long()
            labelled = tags[mask]
            if labelled.numel() and (labelled.min() < 0 or labelled.max() >= self.num_tags):
                raise ValueError(f"带标签的位置上 tags 必须在 [0, {self.num_tags}) 之内，"
                                 f"收到最小 {int(labelled.min())}、最大 {int(labelled.max())}；"
                                 "不带标签的位置（如 -100）要在 mask 里设为 False")
        emissions, tags, mask = compact(emissions, tags, mask)
        # 至少保留 1 步：全部不带标签的 batch 也走一遍同样的计算，结果仍与 emissions 连在计算图上。
        steps = max(int(mask.sum(dim=1).max()), 1)
        emissions, mask = emissions[:, :steps], mask[:, :steps]
        if tags is not None:
            tags = tags[:, :steps].masked_fill(~mask, 0)  # -100 之类的填充值不能拿去做下标
        return emissions, tags, mask

    # ---- 对数似然

    def _gold_score(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Compute score(x, y) of the given paths, (B,), with 0 for a sequence without labelled positions."""
        start, transitions, end = self.scores()
        lengths = mask.sum(dim=1)
        emission_scores = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (B, n)：E[i, y_i]
        transition_scores = transitions[tags[:, :-1], tags[:, 1:]]  # (B, n - 1)：A[y_{i-1}, y_i]
        score = torch.where(mask, emission_scores, 0.0).sum(dim=1)
        score = score + torch.where(mask[:, 1:], transition_scores, 0.0).sum(dim=1)
        last_tags = tags.gather(1, (lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
        return score + torch.where(lengths > 0, start[tags[:, 0]] + end[last_tags], 0.0)

    def _log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Compute log Z(x) by the forward algorithm, (B,), with 0 for a sequence without labelled positions."""
        start, transitions, end = self.scores()
        alpha = start + emissions[:, 0]  # (B, T)：α_1(j)
        for step in range(1, emissions.shape[1]):
            # (B, T, 1) + (T, T) -> (B, T_prev, T_next)，对前一个标签做 logsumexp。
            next_alpha = torch.logsumexp(alpha.unsqueeze(2) + transitions, dim=1) + emissions[:, step]
            alpha = torch.where(mask[:, step].unsqueeze(1), next_alpha, alpha)  # 已结束的序列保持不变
        log_z = torch.logsumexp(alpha + end, dim=1)
        return torch.where(mask.any(dim=1), log_z, 0.0)

    def forward(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor | None = None,
                reduction: str = "mean") -> torch.Tensor:
        """Compute the log-likelihood log p(tags | emissions) = score - log Z. Higher is better, and the loss is its negative.

        reduction: "none" (B,), "sum", "mean" over sequences, "token_mean" (sum over labelled positions).
        Tags at positions where mask is False are ignored and may be any value, such as -100.
        """
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction 只能是 {', '.join(REDUCTIONS)} 之一，收到 {reduction!r}")
        emissions, tags, mask = self._prepare(emissions, tags, mask)
        log_likelihood = self._gold_score(emissions, tags, mask) - self._log_partition(emissions, mask)
        if reduction == "none":
            return log_likelihood
        if reduction == "sum":
            return log_likelihood.sum()
        if reduction == "mean":
            return log_likelihood.mean()
        return log_likelihood.sum() / mask.sum().clamp(min=1)  # token_mean：没有带标签的位置时为 0

    def neg_log_likelihood(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor | None = None,
                           reduction: str = "mean") -> torch.Tensor:
        """Return -forward(...): the training loss."""
        return -self.forward(emissions, tags, mask, reduction)

    # ---- Viterbi 解码

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, mask: torch.Tensor | None = None) -> list[list[int]]:
        """Return the highest-scoring path of each sequence, one tag per labelled position in order (`compact`'s order).

        A sequence with no labelled position gets []. Use `scatter_paths` to put a path back on the token positions.
        """
        emissions, _, mask = self._prepare(emissions, None, mask)
        start, transitions, end = self.scores()
        score = start + emissions[:, 0]  # (B, T)：以标签 j 结尾的最佳前缀分数
        backpointers = []
        for step in range(1, emissions.shape[1]):
            candidates = score.unsqueeze(2) + transitions  # (B, T_prev, T_next)
            best_score, best_previous = candidates.max(dim=1)  # (B, T_next)
            backpointers.append(best_previous)
            score = torch.where(mask[:, step].unsqueeze(1), best_score + emissions[:, step], score)
        last_tags = (score + end).argmax(dim=1).tolist()
        lengths = mask.sum(dim=1).tolist()
        history = torch.stack(backpointers).tolist() if backpointers else []  # (n - 1, B, T)

        paths = []
        for index, (length, tag) in enumerate(zip(lengths, last_tags)):
            if length == 0:
                paths.append([])
                continue
            path = [tag]
            for step in range(length - 1, 0, -1):  # 从最后一个位置往回走：history[step - 1] 是第 step 步的 backpointer
                tag = history[step - 1][index][tag]
                path.append(tag)
            paths.append(path[::-1])
        return paths


# ---------------------------------------------------------------- IOB2


def parse_iob2(label: str) -> tuple[str, str | None]:
    """Split an IOB2 label into (prefix, entity type): "B-PER" -> ("B", "PER"), "O" -> ("O", None)."""
    if label == "O":
        return "O", None
    prefix, _, entity_type = label.partition("-")
    if prefix not in ("B", "I") or not entity_type:
        raise ValueError(f"不是 IOB2 标签：{label!r}（应为 O、B-类型 或 I-类型）")
    return prefix, entity_type


def iob2_transition_allowed(previous: str | None, current: str) -> bool:
    """Return whether `current` may follow `previous` in IOB2 (previous=None: the first position)."""
    prefix, entity_type = parse_iob2(current)
    if prefix != "I":
        return True
    if previous is None:
        return False
    previous_prefix, previous_type = parse_iob2(previous)
    return previous_prefix in ("B", "I") and previous_type == entity_type


def iob2_transition_mask(label_names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (start_allowed (T,), transitions_allowed (T, T)) for IOB2: I-X only after B-X or I-X, never first."""
    start_allowed = torch.tensor([iob2_transition_allowed(None, label) for label in label_names])
    transitions_allowed = torch.tensor([[iob2_transition_allowed(previous, current) for current in label_names]
                                        for previous in label_names])
    return start_allowed, transitions_allowed


def count_iob2_violations(sequences: Sequence[Sequence[str]]) -> int:
    """Count the positions whose label may not follow the previous one (or start a sequence) in IOB2."""
    count = 0
    for labels in sequences:
        for previous, current in zip([None, *labels[:-1]], labels):
            count += not iob2_transition_allowed(previous, current)
    return count


# ---------------------------------------------------------------- 穷举对照


def brute_force_check(num_tags: int, length: int, num_sequences: int, generator: torch.Generator) -> dict:
    """Compare CRF.forward and CRF.decode with enumerating all num_tags^n paths on random masks with holes.

    Returns the largest log-likelihood difference and the number of sequences whose Viterbi path differs.
    """
    crf = CRF(num_tags).double()
    with torch.no_grad():
        for parameter in crf.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64))
    emissions = torch.randn(num_sequences, length, num_tags, generator=generator, dtype=torch.float64)
    tags = torch.randint(num_tags, (num_sequences, length), generator=generator)
    mask = torch.rand(num_sequences, length, generator=generator) < 0.7
    mask[0, 0] = False  # 至少一条序列的第一个位置不带标签，像 [CLS]
    log_likelihood = crf(emissions, tags, mask, reduction="none").detach()
    paths = crf.decode(emissions, mask)

    start, transitions, end = (value.detach() for value in crf.scores())
    max_error, mismatches = 0.0, 0
    for index in range(num_sequences):
        positions = mask[index].nonzero().squeeze(1).tolist()
        if not positions:
            max_error = max(max_error, abs(float(log_likelihood[index])))
            mismatches += paths[index] != []
            continue

        def path_score(path: Sequence[int]) -> float:
            total = float(start[path[0]] + end[path[-1]])
            total += sum(float(emissions[index, position, tag]) for position, tag in zip(positions, path))
            return total + sum(float(transitions[a, b]) for a, b in zip(path, path[1:]))

        all_paths = list(itertools.product(range(num_tags), repeat=len(positions)))
        all_scores = [path_score(path) for path in all_paths]
        log_z = float(torch.logsumexp(torch.tensor(all_scores, dtype=torch.float64), dim=0))
        gold = path_score(tags[index, positions].tolist())
        max_error = max(max_error, abs(float(log_likelihood[index]) - (gold - log_z)))
        mismatches += paths[index] != list(all_paths[int(np.argmax(all_scores))])
    return {"brute_force_sequences": num_sequences, "brute_force_max_log_likelihood_error": max_error,
            "brute_force_viterbi_mismatches": mismatches}


# ---------------------------------------------------------------- 合成的 IOB2 数据


LABEL_NAMES = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
ENTITY_TYPES = ["PER", "LOC", "ORG"]
ENTITY_TYPE_WEIGHTS = [0.5, 0.3, 0.2]  # 类型不均衡，像 CoNLL-2003 一样
# 实体外的位置以这个概率用"内部词"：像 "Bank of America" 里的 of，同一个词在实体里外都常见。
INSIDE_WORD_AS_O_RATE = 0.2
IGNORE_INDEX = -100  # 不带标签的位置（[CLS]、sub-word 片段）的标签，与 Hugging Face 的约定相同


class SyntheticVocab:
    """Word ids of the synthetic task: [PAD], [CLS], sub-word pieces, B-words per type, shared I-words, O-words."""

    def __init__(self, pieces: int = 8, begin_words: int = 15, inside_words: int = 20, outside_words: int = 40):
        self.pad_id, self.cls_id = 0, 1
        self.piece_ids = list(range(2, 2 + pieces))
        next_id = 2 + pieces
        self.begin_ids = {}
        for entity_type in ENTITY_TYPES:
            self.begin_ids[entity_type] = list(range(next_id, next_id + begin_words))
            next_id += begin_words
        self.inside_ids = list(range(next_id, next_id + inside_words))  # 三种类型共用：只看这个词猜不出类型
        next_id += inside_words
        self.outside_ids = list(range(next_id, next_id + outside_words))
        self.word_ids = list(range(2 + pieces, next_id + outside_words))  # 噪声从所有"词"里均匀抽
        self.size = next_id + outside_words


def make_sequence(vocab: SyntheticVocab, rng: random.Random, num_words: int, noise: float,
                  subword_rate: float) -> tuple[list[int], list[int]]:
    """Generate one tokenised sequence: ([CLS] + words and pieces, labels with IGNORE_INDEX on [CLS] and pieces)."""
    label_ids = {label: index for index, label in enumerate(LABEL_NAMES)}
    words: list[tuple[int, str]] = []
    while len(words) < num_words:
        if rng.random() < 0.35:
            entity_type = rng.choices(ENTITY_TYPES, ENTITY_TYPE_WEIGHTS)[0]
            length = min(rng.randint(1, 3), num_words - len(words))
            words.append((rng.choice(vocab.begin_ids[entity_type]), f"B-{entity_type}"))
            words.extend((rng.choice(vocab.inside_ids), f"I-{entity_type}") for _ in range(length - 1))
        elif rng.random() < INSIDE_WORD_AS_O_RATE:
            words.append((rng.choice(vocab.inside_ids), "O"))
        else:
            words.append((rng.choice(vocab.outside_ids), "O"))

    tokens, labels = [vocab.cls_id], [IGNORE_INDEX]
    for word_id, label in words:
        if rng.random() < noise:
            word_id = rng.choice(vocab.word_ids)  # 标签不变，词换成随机词：发射分数有噪声
        tokens.append(word_id)
        labels.append(label_ids[label])
        if rng.random() < subword_rate:
            tokens.append(rng.choice(vocab.piece_ids))
            labels.append(IGNORE_INDEX)
    return tokens, labels


def make_dataset(vocab: SyntheticVocab, num_sequences: int, rng: random.Random, args) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate padded (tokens (N, L), labels (N, L)). Padding has token [PAD] and label IGNORE_INDEX."""
    sequences = [make_sequence(vocab, rng, rng.randint(args.min_words, args.max_words), args.noise, args.subword_rate)
                 for _ in range(num_sequences)]
    width = max(len(tokens) for tokens, _ in sequences)
    token_tensor = torch.full((num_sequences, width), vocab.pad_id, dtype=torch.long)
    label_tensor = torch.full((num_sequences, width), IGNORE_INDEX, dtype=torch.long)
    for index, (tokens, labels) in enumerate(sequences):
        token_tensor[index, : len(tokens)] = torch.tensor(tokens)
        label_tensor[index, : len(labels)] = torch.tensor(labels)
    return token_tensor, label_tensor


# ---------------------------------------------------------------- 模型与训练


class UnigramTagger(nn.Module):
    """Emission network that reads one token per position (embedding + linear -> (B, L, T)), optionally with a CRF."""

    def __init__(self, vocab_size: int, num_tags: int, hidden_size: int, use_crf: bool):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, hidden_size)
        self.classifier = nn.Linear(hidden_size, num_tags)
        self.crf = CRF(num_tags) if use_crf else None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embedding(tokens))

    def loss(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy per labelled token (softmax) or the CRF's negative log-likelihood per labelled token."""
        emissions = self(tokens)
        if self.crf is None:
            return F.cross_entropy(emissions.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
        return self.crf.neg_log_likelihood(emissions, labels, labels != IGNORE_INDEX, reduction="token_mean")


def train_tagger(model: UnigramTagger, tokens: torch.Tensor, labels: torch.Tensor, args, device: torch.device,
                 name: str) -> list[float]:
    """Train with Adam and return the mean training loss of each epoch."""
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    history = []
    model.to(device).train()
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(len(tokens), generator=generator)
        total, batches = 0.0, 0
        for start in tqdm(range(0, len(tokens), args.batch_size), desc=f"{name} epoch {epoch}", leave=False):
            index = order[start: start + args.batch_size]
            loss = model.loss(tokens[index].to(device), labels[index].to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
        history.append(total / batches)
        logger.info("%s 第 %d 个 epoch：训练 loss %.4f", name, epoch, history[-1])
    return history


@torch.no_grad()
def predict_paths(model: UnigramTagger, tokens: torch.Tensor, labels: torch.Tensor, device: torch.device,
                  decoder: CRF | None = None, log_softmax: bool = False) -> list[list[int]]:
    """Decode every sequence (compacted order): argmax per position, or Viterbi with `decoder`."""
    model.eval()
    emissions = model(tokens.to(device))
    mask = (labels != IGNORE_INDEX).to(device)
    if log_softmax:
        emissions = emissions.log_softmax(dim=-1)
    if decoder is not None:
        return decoder.to(device).decode(emissions, mask)
    return [emissions[index][mask[index]].argmax(dim=-1).tolist() for index in range(len(tokens))]


def gold_paths(labels: torch.Tensor) -> list[list[int]]:
    return [row[row != IGNORE_INDEX].tolist() for row in labels]


def to_names(paths: Sequence[Sequence[int]]) -> list[list[str]]:
    return [[LABEL_NAMES[tag] for tag in path] for path in paths]


def plot_transitions(crf: CRF, path, label_names: Sequence[str] = LABEL_NAMES) -> None:
    """Draw the learned scores as a heatmap: rows START + previous tag, columns next tag + END."""
    size = crf.num_tags
    table = np.full((size + 1, size + 1), np.nan)
    table[0, :size] = crf.start_transitions.detach().cpu().numpy()
    table[1:, :size] = crf.transitions.detach().cpu().numpy()
    table[1:, size] = crf.end_transitions.detach().cpu().numpy()
    plots.plot_heatmap(table, path, x_labels=[*label_names, "END"], y_labels=["START", *label_names],
                       title="learned CRF transition scores", cmap="coolwarm",
                       xlabel="to (current tag)", ylabel="from (previous tag)")


def example_table(vocab: SyntheticVocab, tokens: torch.Tensor, labels: torch.Tensor,
                  predictions: dict[str, list[int]]) -> str:
    """Show one sequence on its token positions: predictions go back to the tokens with scatter_paths."""
    mask = labels != IGNORE_INDEX
    rows = []
    columns = {name: scatter_paths([path], mask.unsqueeze(0))[0].tolist() for name, path in predictions.items()}
    for position, token in enumerate(tokens.tolist()):
        if token == vocab.pad_id:
            break
        if token == vocab.cls_id:
            kind = "[CLS]"
        elif token in vocab.piece_ids:
            kind = "piece"
        else:
            kind = f"w{token}"
        row = {"token": kind, "gold": LABEL_NAMES[labels[position]] if mask[position] else "-"}
        for name, column in columns.items():
            row[name] = LABEL_NAMES[column[position]] if mask[position] else "-"
        rows.append(row)
    return runs.markdown_table(rows)


# ---------------------------------------------------------------- main


@torch.no_grad()
def inside_word_probabilities(model: UnigramTagger, vocab: SyntheticVocab, device: torch.device) -> dict:
    """Return the softmax model's mean probability of O and of each I- tag over the shared inside words."""
    probabilities = model(torch.tensor(vocab.inside_ids, device=device)).softmax(dim=-1).mean(dim=0)
    names = ["O", *(f"I-{entity_type}" for entity_type in ENTITY_TYPES)]
    return {f"inside_word_probability_{name}": float(probabilities[LABEL_NAMES.index(name)]) for name in names}


def evaluate_decoders(models: dict[str, UnigramTagger], tokens, labels, device) -> tuple[dict, dict]:
    """Measure entity F1 and illegal IOB2 transitions of four decoders. Returns (metrics, paths by decoder)."""
    start_allowed, transitions_allowed = iob2_transition_mask(LABEL_NAMES)
    # softmax + IOB2：参数全为 0 的 CRF 加上约束，发射分数用 log_softmax，路径分数就是各位置 log 概率之和。
    rules_only = CRF(len(LABEL_NAMES))
    nn.init.zeros_(rules_only.start_transitions), nn.init.zeros_(rules_only.end_transitions)
    nn.init.zeros_(rules_only.transitions)
    rules_only.set_constraints(start_allowed, transitions_allowed)
    constrained_crf = CRF(len(LABEL_NAMES))
    constrained_crf.load_state_dict(models["crf"].crf.state_dict())
    constrained_crf.set_constraints(start_allowed, transitions_allowed)  # 同一组学到的参数，只在解码时加约束

    paths = {
        "softmax": predict_paths(models["softmax"], tokens, labels, device),
        "softmax_iob2": predict_paths(models["softmax"], tokens, labels, device, rules_only, log_softmax=True),
        "crf": predict_paths(models["crf"], tokens, labels, device, models["crf"].crf),
        "crf_iob2": predict_paths(models["crf"], tokens, labels, device, constrained_crf),
    }
    gold = to_names(gold_paths(labels))
    results = {}
    for name, decoded in paths.items():
        names = to_names(decoded)
        results[f"entity_f1_{name}"] = metrics.entity_f1(names, gold)["f1"]
        results[f"illegal_transitions_{name}"] = count_iob2_violations(names)
        correct = sum(p == g for path, reference in zip(names, gold) for p, g in zip(path, reference))
        results[f"token_accuracy_{name}"] = correct / sum(len(reference) for reference in gold)
    results["illegal_transitions_gold"] = count_iob2_violations(gold)
    return results, paths


def learned_rule_scores(crf: CRF) -> dict:
    """Return the lowest learned B-X -> I-X score and the highest learned score of an IOB2-illegal transition."""
    _, transitions_allowed = iob2_transition_mask(LABEL_NAMES)
    transitions = crf.transitions.detach().cpu()
    continue_scores = [transitions[LABEL_NAMES.index(f"B-{entity_type}"), LABEL_NAMES.index(f"I-{entity_type}")]
                       for entity_type in ENTITY_TYPES]
    return {"transition_min_begin_to_inside": float(min(continue_scores)),
            "transition_max_illegal": float(transitions[~transitions_allowed].max())}


def main(argv: list[str] | None = None) -> dict:
    parser = cli.build_parser(__doc__.splitlines()[0], epochs=10, batch_size=32, lr=1e-2, shared_loop=False)
    parser.epilog = "数据是脚本自己生成的 IOB2 序列，--data-dir 不起作用；--max-train-samples 是训练序列条数。"
    parser.add_argument("--test-samples", type=cli.positive_int, default=1000, help="测试序列条数")
    parser.add_argument("--min-words", type=cli.positive_int, default=6, help="每条序列最少几个带标签的词")
    parser.add_argument("--max-words", type=cli.positive_int, default=16, help="每条序列最多几个带标签的词")
    parser.add_argument("--noise", type=float, default=0.15, help="每个词被换成随机词的概率（0 到 1 之间）")
    parser.add_argument("--subword-rate", type=float, default=0.2,
                        help="每个词后面跟一个不带标签的 sub-word 片段的概率（0 到 1 之间）")
    parser.add_argument("--hidden-size", type=cli.positive_int, default=32, help="词向量维数")
    args = parser.parse_args(argv)
    if args.precision != "fp32":
        parser.error("本脚本的模型很小，只支持 --precision fp32")
    for name in ("noise", "subword_rate"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            parser.error(f"--{name.replace('_', '-')} 必须在 0 到 1 之间，收到 {getattr(args, name)}")
    if args.min_words > args.max_words:
        parser.error(f"--min-words（{args.min_words}）不能大于 --max-words（{args.max_words}）")
    if args.max_train_samples is None:
        args.max_train_samples = 3000
    if args.smoke:
        args.max_train_samples = min(args.max_train_samples, 300)
        args.test_samples = min(args.test_samples, 100)
        args.epochs = min(args.epochs, 2)
    run_dir = cli.start_run(args, "crf")
    started = time.perf_counter()
    device = training.select_device(args.device)

    rng = random.Random(args.seed)
    vocab = SyntheticVocab()
    train_tokens, train_labels = make_dataset(vocab, args.max_train_samples, rng, args)
    test_tokens, test_labels = make_dataset(vocab, args.test_samples, rng, args)
    logger.info("合成数据：训练 %d 条、测试 %d 条，每条 %d-%d 个词，噪声 %.2f，词表 %d",
                len(train_tokens), len(test_tokens), args.min_words, args.max_words, args.noise, vocab.size)

    summary: dict = {}
    with training.single_thread() if device.type == "cpu" else contextlib.nullcontext():
        summary.update(brute_force_check(num_tags=4, length=5, num_sequences=30,
                                         generator=torch.Generator().manual_seed(args.seed)))
        logger.info("与穷举对照：%d 条序列，对数似然最大误差 %.2e，Viterbi 不一致 %d 条",
                    summary["brute_force_sequences"], summary["brute_force_max_log_likelihood_error"],
                    summary["brute_force_viterbi_mismatches"])
        models, histories = {}, {}
        for name in ("softmax", "crf"):
            torch.manual_seed(args.seed)  # 两个模型的编码器从同样的初始值开始
            models[name] = UnigramTagger(vocab.size, len(LABEL_NAMES), args.hidden_size, use_crf=name == "crf")
            histories[name] = train_tagger(models[name], train_tokens, train_labels, args, device, name)
        results, paths = evaluate_decoders(models, test_tokens, test_labels, device)
        results.update(inside_word_probabilities(models["softmax"], vocab, device))
        results.update(learned_rule_scores(models["crf"].crf))

    plot_transitions(models["crf"].crf, run_dir / "crf_transitions.png")
    plots.plot_curves({"softmax (cross-entropy per token)": histories["softmax"],
                       "CRF (negative log-likelihood per token)": histories["crf"]},
                      run_dir / "training_loss.png", xlabel="epoch", ylabel="loss", title="training loss")

    # 先放实体 F1：roadmap tour 的汇总表只显示前几个指标。
    summary = {**{key: value for key, value in results.items() if key.startswith("entity_f1")},
               **{key: value for key, value in results.items() if not key.startswith("entity_f1")}, **summary}
    summary.update({"train_sequences": len(train_tokens), "test_sequences": len(test_tokens),
                    "test_entities": sum(label.startswith("B-") for path in to_names(gold_paths(test_labels))
                                         for label in path),
                    "train_loss_final_softmax": histories["softmax"][-1], "train_loss_final_crf": histories["crf"][-1],
                    "seconds": round(time.perf_counter() - started, 1)})
    runs.save_metrics(run_dir, summary)

    print(example_table(vocab, test_tokens[0], test_labels[0], {name: decoded[0] for name, decoded in paths.items()}))
    print()
    rows = [{"decoder": name, "entity F1": summary[f"entity_f1_{name}"],
             "token accuracy": summary[f"token_accuracy_{name}"],
             "illegal IOB2 transitions": summary[f"illegal_transitions_{name}"]}
            for name in ("softmax", "softmax_iob2", "crf", "crf_iob2")]
    print(runs.markdown_table(rows))
    print(f"与穷举全部路径对照（{summary['brute_force_sequences']} 条序列）：对数似然最大误差 "
          f"{summary['brute_force_max_log_likelihood_error']:.2e}，Viterbi 不一致 {summary['brute_force_viterbi_mismatches']} 条")
    print(f"结果与图在 {run_dir}")
    return summary


if __name__ == "__main__":
    cli.run_script(main)
