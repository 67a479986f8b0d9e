"""roadmap.metrics against scikit-learn, sacrebleu, seqeval and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as sk

from roadmap import metrics


def test_accuracy_from_logits_and_classes():
    logits = torch.tensor([[2.0, 1.0], [0.1, 0.9], [3.0, -1.0], [0.0, 5.0]])
    labels = torch.tensor([0, 1, 1, 1])
    assert metrics.accuracy(logits, labels) == pytest.approx(0.75)
    assert metrics.accuracy([0, 1, 0, 1], [0, 1, 1, 1]) == pytest.approx(0.75)


def test_accuracy_rejects_length_mismatch():
    with pytest.raises(ValueError, match="不一致"):
        metrics.accuracy([0, 1], [0])


def test_accuracy_rejects_empty():
    with pytest.raises(ValueError, match="为空"):
        metrics.accuracy([], [])


def test_f1_matches_sklearn():
    rng = np.random.default_rng(0)
    predictions, targets = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    for average in ("macro", "micro", "weighted"):
        assert metrics.f1(predictions, targets, average) == pytest.approx(
            sk.f1_score(targets, predictions, average=average))


def test_confusion_matrix_matches_sklearn():
    rng = np.random.default_rng(1)
    predictions, targets = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    np.testing.assert_array_equal(metrics.confusion_matrix(predictions, targets, 4),
                                  sk.confusion_matrix(targets, predictions, labels=range(4)))


def test_confusion_matrix_rejects_out_of_range_class():
    with pytest.raises(ValueError, match="超出"):
        metrics.confusion_matrix([0, 5], [0, 1], 3)


def test_rmse_hand_computed():
    assert metrics.rmse([1.0, 2.0, 3.0], [1.0, 2.0, 5.0]) == pytest.approx(math.sqrt(4 / 3))
    assert metrics.mse(torch.tensor([0.0, 0.0]), torch.tensor([3.0, 4.0])) == pytest.approx(12.5)


@pytest.mark.parametrize("first, second, expected", [
    ("the cat sat", "the cat", 2 / 3),
    ("The Cat", "the cat", 1.0),
    ("", "", 1.0),
    ("", "word", 0.0),
    ("a b", "c d", 0.0),
])
def test_word_jaccard_table(first, second, expected):
    assert metrics.word_jaccard(first, second) == pytest.approx(expected)


def test_bleu_matches_sacrebleu_and_extremes():
    import sacrebleu

    hypotheses = ["the cat is on the mat", "there is a dog here"]
    references = ["the cat is on the mat", "a dog is here"]
    expected = sacrebleu.corpus_bleu(hypotheses, [references]).score
    assert metrics.bleu(hypotheses, references) == pytest.approx(expected)
    assert metrics.bleu(["same sentence here ok"], ["same sentence here ok"]) == pytest.approx(100.0)


def test_bleu_rejects_count_mismatch():
    with pytest.raises(ValueError, match="数量"):
        metrics.bleu(["a"], ["a", "b"])


def test_entity_f1_strict_iob2():
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    perfect = metrics.entity_f1(gold, gold)
    assert perfect["f1"] == pytest.approx(1.0)
    # A span that starts with I- is not an entity under strict IOB2: 1 of 2 gold entities found.
    starts_with_inside = metrics.entity_f1([["I-PER", "I-PER", "O", "B-LOC"]], gold)
    assert starts_with_inside["precision"] == pytest.approx(1.0)
    assert starts_with_inside["recall"] == pytest.approx(0.5)
    assert starts_with_inside["f1"] == pytest.approx(2 / 3)


def test_entity_f1_rejects_length_mismatch():
    with pytest.raises(ValueError, match="长度"):
        metrics.entity_f1([["O"]], [["O", "O"]])
