"""评估指标：分类准确率、F1、混淆矩阵、RMSE、词级 Jaccard、BLEU、实体级 F1。

张量和列表都能传入；每个函数都对空输入、长度不一致给出明确的错误。
BLEU 用 sacrebleu，实体 F1 用 seqeval，F1 用 scikit-learn，这些是领域里通用的参考实现。
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def _to_numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _check_pair(predictions: np.ndarray, targets: np.ndarray) -> None:
    if predictions.shape[0] != targets.shape[0]:
        raise ValueError(f"预测和标签的数量不一致：{predictions.shape[0]} vs {targets.shape[0]}")
    if predictions.shape[0] == 0:
        raise ValueError("预测为空，无法计算指标")


def predicted_classes(logits_or_classes: Any) -> np.ndarray:
    """Return class indices: argmax over the last axis of 2-D logits, or the 1-D input unchanged."""
    array = _to_numpy(logits_or_classes)
    return array.argmax(axis=-1) if array.ndim == 2 else array


def accuracy(logits_or_classes: Any, targets: Any) -> float:
    """Fraction of samples whose predicted class equals the target."""
    predictions = predicted_classes(logits_or_classes)
    targets = _to_numpy(targets)
    _check_pair(predictions, targets)
    return float((predictions == targets).mean())


def f1(logits_or_classes: Any, targets: Any, average: str = "macro") -> float:
    """F1 score (scikit-learn's `f1_score`); `average` is "macro", "micro", "weighted" or "binary"."""
    from sklearn.metrics import f1_score

    predictions = predicted_classes(logits_or_classes)
    targets = _to_numpy(targets)
    _check_pair(predictions, targets)
    return float(f1_score(targets, predictions, average=average, zero_division=0))


def confusion_matrix(logits_or_classes: Any, targets: Any, num_classes: int) -> np.ndarray:
    """Return a (num_classes, num_classes) count matrix: row = true class, column = predicted class."""
    predictions = predicted_classes(logits_or_classes).astype(np.int64)
    targets = _to_numpy(targets).astype(np.int64)
    _check_pair(predictions, targets)
    for name, values in (("预测", predictions), ("标签", targets)):
        if values.min() < 0 or values.max() >= num_classes:
            raise ValueError(f"{name}里有超出 [0, {num_classes}) 的类别：{values.min()}..{values.max()}")
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (targets, predictions), 1)
    return matrix


def mse(predictions: Any, targets: Any) -> float:
    predictions = _to_numpy(predictions).astype(np.float64).reshape(-1)
    targets = _to_numpy(targets).astype(np.float64).reshape(-1)
    _check_pair(predictions, targets)
    return float(np.mean((predictions - targets) ** 2))


def rmse(predictions: Any, targets: Any) -> float:
    return math.sqrt(mse(predictions, targets))


def word_jaccard(first: str, second: str) -> float:
    """Word-level Jaccard similarity of two strings (lower-cased, split on white space).

    Two empty strings count as identical (1.0) instead of dividing zero by zero.
    """
    first_words = set(first.lower().split())
    second_words = set(second.lower().split())
    if not first_words and not second_words:
        return 1.0
    return len(first_words & second_words) / len(first_words | second_words)


def bleu(hypotheses: Sequence[str], references: Sequence[str], tokenize: str = "13a") -> float:
    """Corpus BLEU (0-100) from sacrebleu with one reference per sentence.

    Use `tokenize="zh"` for Chinese output, so BLEU is counted over characters, not whole lines.
    """
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"译文和参考译文的数量不一致：{len(hypotheses)} vs {len(references)}")
    if not hypotheses:
        raise ValueError("没有句子，无法计算 BLEU")
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize=tokenize).score)


def entity_f1(predicted_tags: Sequence[Sequence[str]], gold_tags: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level precision/recall/F1 (seqeval, strict IOB2: an entity that starts with I- is wrong)."""
    from seqeval.metrics import f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    if len(predicted_tags) != len(gold_tags):
        raise ValueError(f"预测和标注的句子数不一致：{len(predicted_tags)} vs {len(gold_tags)}")
    for index, (predicted, gold) in enumerate(zip(predicted_tags, gold_tags)):
        if len(predicted) != len(gold):
            raise ValueError(f"第 {index} 句的预测和标注长度不一致：{len(predicted)} vs {len(gold)}")
    options = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
    return {
        "precision": float(precision_score(gold_tags, predicted_tags, **options)),
        "recall": float(recall_score(gold_tags, predicted_tags, **options)),
        "f1": float(f1_score(gold_tags, predicted_tags, **options)),
    }
