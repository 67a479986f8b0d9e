"""Hand-written linear-chain CRF: brute-force enumeration, pytorch-crf, masks with holes, IOB2 constraints,
and the lesson script's metrics."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from stage2_huggingface import crf as crf_module
from stage2_huggingface.crf import CRF, compact, count_iob2_violations, iob2_transition_mask, scatter_paths

IOB2_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def random_crf(num_tags: int, generator: torch.Generator, dtype=torch.float64) -> CRF:
    crf = CRF(num_tags).to(dtype)
    with torch.no_grad():
        for parameter in crf.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=dtype))
    return crf


def brute_force(crf: CRF, emissions: torch.Tensor, tags: list[int], mask: list[bool]) -> tuple[float, list[int]]:
    """Enumerate every tag path over the labelled positions of one sequence: (log-likelihood, best path).

    Uses the constrained scores, so forbidden paths get IMPOSSIBLE_SCORE like in the CRF.
    """
    start, transitions, end = (value.detach().double() for value in crf.scores())
    positions = [index for index, keep in enumerate(mask) if keep]
    if not positions:
        return 0.0, []

    def path_score(path):
        total = start[path[0]].item() + end[path[-1]].item()
        for position, tag in zip(positions, path):
            total += emissions[position, tag].item()
        for previous, current in zip(path, path[1:]):
            total += transitions[previous, current].item()
        return total

    paths = list(itertools.product(range(crf.num_tags), repeat=len(positions)))
    scores = [path_score(path) for path in paths]
    top = max(scores)
    log_z = top + math.log(sum(math.exp(score - top) for score in scores))
    gold = path_score([tags[position] for position in positions])
    return gold - log_z, list(paths[scores.index(top)])


def random_masks(batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """Random masks with holes, plus fixed rows: first position masked, all masked, all labelled."""
    mask = torch.rand(batch, length, generator=generator) < 0.6
    mask[0] = True
    mask[1] = False
    mask[2, 0] = False
    mask[2, 1:] = True
    return mask


# ---------------------------------------------------------------- brute force


@pytest.mark.parametrize("num_tags,length", [(1, 4), (2, 5), (3, 5), (4, 5), (4, 1)])
def test_log_likelihood_matches_brute_force(num_tags, length):
    generator = torch.Generator().manual_seed(num_tags * 10 + length)
    crf = random_crf(num_tags, generator)
    batch = 12
    emissions = torch.randn(batch, length, num_tags, generator=generator, dtype=torch.float64)
    tags = torch.randint(num_tags, (batch, length), generator=generator)
    mask = random_masks(batch, length, generator)

    log_likelihood = crf(emissions, tags, mask, reduction="none")

    for index in range(batch):
        expected, _ = brute_force(crf, emissions[index], tags[index].tolist(), mask[index].tolist())
        assert log_likelihood[index].item() == pytest.approx(expected, abs=1e-9), f"sequence {index}"


@pytest.mark.parametrize("num_tags,length", [(1, 4), (2, 5), (3, 5), (4, 5), (4, 1)])
def test_viterbi_matches_brute_force(num_tags, length):
    generator = torch.Generator().manual_seed(100 + num_tags * 10 + length)
    crf = random_crf(num_tags, generator)
    batch = 12
    emissions = torch.randn(batch, length, num_tags, generator=generator, dtype=torch.float64)
    mask = random_masks(batch, length, generator)

    paths = crf.decode(emissions, mask)

    assert len(paths) == batch
    for index in range(batch):
        _, expected = brute_force(crf, emissions[index], [0] * length, mask[index].tolist())
        assert paths[index] == expected, f"sequence {index}"


def test_brute_force_check_helper_agrees():
    result = crf_module.brute_force_check(num_tags=3, length=4, num_sequences=10,
                                          generator=torch.Generator().manual_seed(0))
    assert result["brute_force_sequences"] == 10
    assert result["brute_force_max_log_likelihood_error"] < 1e-9
    assert result["brute_force_viterbi_mismatches"] == 0


def test_probabilities_of_all_paths_sum_to_one():
    generator = torch.Generator().manual_seed(3)
    crf = random_crf(3, generator)
    emissions = torch.randn(1, 4, 3, generator=generator, dtype=torch.float64)
    mask = torch.tensor([[False, True, True, False]])
    total = 0.0
    for pair in itertools.product(range(3), repeat=2):
        tags = torch.tensor([[-100, pair[0], pair[1], -100]])
        total += crf(emissions, tags, mask, reduction="sum").exp().item()
    assert total == pytest.approx(1.0, abs=1e-12)


# ---------------------------------------------------------------- pytorch-crf


# float32 sums of 8 sequences reach about -200, where one float32 step is 1.5e-5, so float32 also gets a relative tolerance.
TOLERANCES = {torch.float32: {"atol": 1e-5, "rtol": 1e-6}, torch.float64: {"atol": 1e-10, "rtol": 0.0}}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "token_mean"])
def test_matches_pytorch_crf(batch_first, reduction, dtype):
    torchcrf = pytest.importorskip("torchcrf")
    generator = torch.Generator().manual_seed(7)
    num_tags, batch, length = 5, 8, 9
    ours = CRF(num_tags, batch_first=batch_first).to(dtype)
    reference = torchcrf.CRF(num_tags, batch_first=batch_first).to(dtype)
    with torch.no_grad():
        for name in ("start_transitions", "end_transitions", "transitions"):
            value = torch.randn(getattr(ours, name).shape, generator=generator, dtype=dtype)
            getattr(ours, name).copy_(value)
            getattr(reference, name).copy_(value)
    emissions = torch.randn(batch, length, num_tags, generator=generator, dtype=dtype) * 3
    tags = torch.randint(num_tags, (batch, length), generator=generator)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    lengths[0] = length
    mask = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)  # 前缀 mask：pytorch-crf 要求第一个位置带标签
    if not batch_first:
        emissions, tags, mask = emissions.transpose(0, 1), tags.transpose(0, 1), mask.transpose(0, 1)

    ours_value = ours(emissions, tags, mask, reduction=reduction)
    reference_value = reference(emissions, tags, mask, reduction=reduction)

    assert ours_value.shape == reference_value.shape
    torch.testing.assert_close(ours_value, reference_value, **TOLERANCES[dtype])
    assert ours.decode(emissions, mask) == reference.decode(emissions, mask)


def test_gradients_match_pytorch_crf():
    torchcrf = pytest.importorskip("torchcrf")
    generator = torch.Generator().manual_seed(11)
    num_tags, batch, length = 4, 6, 7
    ours = CRF(num_tags).double()
    reference = torchcrf.CRF(num_tags, batch_first=True).double()
    reference.load_state_dict({name: getattr(ours, name).detach().clone()
                               for name in ("start_transitions", "end_transitions", "transitions")})
    emissions = torch.randn(batch, length, num_tags, generator=generator, dtype=torch.float64)
    tags = torch.randint(num_tags, (batch, length), generator=generator)
    mask = torch.arange(length).unsqueeze(0) < torch.tensor([7, 3, 1, 5, 7, 2]).unsqueeze(1)
    ours_emissions = emissions.clone().requires_grad_()
    reference_emissions = emissions.clone().requires_grad_()

    ours(ours_emissions, tags, mask, reduction="mean").backward()
    reference(reference_emissions, tags, mask, reduction="mean").backward()

    torch.testing.assert_close(ours_emissions.grad, reference_emissions.grad, atol=1e-10, rtol=0)
    for name in ("start_transitions", "end_transitions", "transitions"):
        torch.testing.assert_close(getattr(ours, name).grad, getattr(reference, name).grad, atol=1e-10, rtol=0)


# ---------------------------------------------------------------- masks with holes


def test_compact_moves_labelled_positions_to_front():
    emissions = torch.arange(2 * 4, dtype=torch.float32).reshape(2, 4, 1)
    tags = torch.tensor([[-100, 5, -100, 6], [7, -100, -100, -100]])
    mask = tags != -100

    compact_emissions, compact_tags, compact_mask = compact(emissions, tags, mask)

    assert compact_emissions[:, :, 0].tolist() == [[1.0, 3.0, 0.0, 2.0], [4.0, 5.0, 6.0, 7.0]]
    assert compact_tags.tolist() == [[5, 6, -100, -100], [7, -100, -100, -100]]
    assert compact_mask.tolist() == [[True, True, False, False], [True, False, False, False]]


def test_holes_equal_the_compacted_sequence():
    generator = torch.Generator().manual_seed(5)
    crf = random_crf(3, generator)
    emissions = torch.randn(1, 6, 3, generator=generator, dtype=torch.float64)
    tags = torch.tensor([[-100, 2, -100, 0, 1, -100]])
    holes = tags != -100
    labelled = holes[0].nonzero().squeeze(1)
    prefix_emissions = emissions[:, labelled]
    prefix_tags = tags[:, labelled]

    assert crf(emissions, tags, holes).item() == pytest.approx(crf(prefix_emissions, prefix_tags).item(), abs=1e-12)
    assert crf.decode(emissions, holes) == crf.decode(prefix_emissions)


def test_unlabelled_positions_do_not_change_results():
    generator = torch.Generator().manual_seed(6)
    crf = random_crf(4, generator)
    emissions = torch.randn(3, 6, 4, generator=generator, dtype=torch.float64)
    tags = torch.randint(4, (3, 6), generator=generator)
    mask = random_masks(3, 6, generator)
    changed = emissions.masked_fill(~mask.unsqueeze(2), 1e3)
    changed_tags = tags.masked_fill(~mask, -100)

    torch.testing.assert_close(crf(changed, changed_tags, mask, reduction="none"),
                               crf(emissions, tags, mask, reduction="none"), atol=1e-12, rtol=0)
    assert crf.decode(changed, mask) == crf.decode(emissions, mask)


def test_scatter_paths_restores_positions():
    mask = torch.tensor([[False, True, True, False, True], [False, False, False, False, False]])
    scattered = scatter_paths([[3, 1, 2], []], mask)
    assert scattered.tolist() == [[-100, 3, 1, -100, 2], [-100] * 5]
    assert scatter_paths([[3, 1, 2], []], mask, fill_value=0).tolist() == [[0, 3, 1, 0, 2], [0] * 5]


def test_scatter_paths_rejects_wrong_length():
    mask = torch.tensor([[True, False, True]])
    with pytest.raises(ValueError, match="2 个带标签的位置"):
        scatter_paths([[1]], mask)


def test_decode_then_scatter_matches_gold_positions():
    generator = torch.Generator().manual_seed(8)
    crf = random_crf(3, generator)
    emissions = torch.randn(4, 7, 3, generator=generator, dtype=torch.float64)
    mask = random_masks(4, 7, generator)
    paths = crf.decode(emissions, mask)
    scattered = scatter_paths(paths, mask)
    for index, path in enumerate(paths):
        assert scattered[index][mask[index]].tolist() == path
        assert (scattered[index][~mask[index]] == -100).all()


# ---------------------------------------------------------------- empty sequences, reductions, gradients


def test_all_masked_sequence_gives_zero_and_empty_path():
    generator = torch.Generator().manual_seed(9)
    crf = random_crf(3, generator)
    emissions = torch.randn(2, 4, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    tags = torch.tensor([[0, 1, 2, 1], [-100, -100, -100, -100]])
    mask = torch.tensor([[True, True, True, True], [False, False, False, False]])

    log_likelihood = crf(emissions, tags, mask, reduction="none")
    log_likelihood.sum().backward()

    assert log_likelihood[1].item() == 0.0
    assert torch.isfinite(log_likelihood).all()
    assert crf.decode(emissions, mask)[1] == []
    assert torch.isfinite(emissions.grad).all()
    assert (emissions.grad[1] == 0).all()


def test_all_masked_batch_has_finite_zero_loss():
    crf = CRF(3)
    emissions = torch.randn(2, 3, 3, requires_grad=True)
    mask = torch.zeros(2, 3, dtype=torch.bool)
    tags = torch.full((2, 3), -100)

    for reduction in ("none", "sum", "mean", "token_mean"):
        value = crf(emissions, tags, mask, reduction=reduction)
        assert (value == 0).all(), reduction
    loss = crf.neg_log_likelihood(emissions, tags, mask, reduction="token_mean")
    loss.backward()
    assert torch.isfinite(emissions.grad).all()
    assert crf.decode(emissions, mask) == [[], []]


def test_zero_length_batch_gives_zero():
    crf = CRF(3)
    emissions = torch.zeros(2, 0, 3, requires_grad=True)
    tags = torch.zeros(2, 0, dtype=torch.long)

    assert crf(emissions, tags, reduction="none").tolist() == [0.0, 0.0]
    assert crf.decode(emissions) == [[], []]
    crf.neg_log_likelihood(emissions, tags).backward()
    assert emissions.grad.shape == (2, 0, 3)


def test_reductions_agree_with_none():
    generator = torch.Generator().manual_seed(10)
    crf = random_crf(4, generator)
    emissions = torch.randn(5, 6, 4, generator=generator, dtype=torch.float64)
    tags = torch.randint(4, (5, 6), generator=generator)
    mask = random_masks(5, 6, generator)
    per_sequence = crf(emissions, tags, mask, reduction="none")

    assert per_sequence.shape == (5,)
    assert crf(emissions, tags, mask, reduction="sum").item() == pytest.approx(per_sequence.sum().item())
    assert crf(emissions, tags, mask, reduction="mean").item() == pytest.approx(per_sequence.mean().item())
    assert crf(emissions, tags, mask, reduction="token_mean").item() == pytest.approx(
        per_sequence.sum().item() / mask.sum().item())
    assert crf.neg_log_likelihood(emissions, tags, mask, reduction="sum").item() == pytest.approx(
        -per_sequence.sum().item())


def test_log_likelihood_is_never_positive():
    generator = torch.Generator().manual_seed(12)
    crf = random_crf(4, generator)
    emissions = torch.randn(20, 5, 4, generator=generator, dtype=torch.float64) * 5
    tags = torch.randint(4, (20, 5), generator=generator)
    assert (crf(emissions, tags, random_masks(20, 5, generator), reduction="none") <= 1e-12).all()


def test_gradients_are_finite_and_nonzero():
    generator = torch.Generator().manual_seed(13)
    crf = CRF(4)
    emissions = torch.randn(4, 6, 4, generator=generator, requires_grad=True)
    tags = torch.randint(4, (4, 6), generator=generator)
    mask = random_masks(4, 6, generator)

    crf.neg_log_likelihood(emissions, tags.masked_fill(~mask, -100), mask).backward()

    for name, parameter in crf.named_parameters():
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name
    assert torch.isfinite(emissions.grad).all()
    assert (emissions.grad[~mask] == 0).all()


def test_batch_first_false_matches_batch_first():
    generator = torch.Generator().manual_seed(14)
    first = random_crf(3, generator)
    second = CRF(3, batch_first=False).double()
    second.load_state_dict(first.state_dict())
    emissions = torch.randn(4, 5, 3, generator=generator, dtype=torch.float64)
    tags = torch.randint(3, (4, 5), generator=generator)
    mask = random_masks(4, 5, generator)

    torch.testing.assert_close(second(emissions.transpose(0, 1), tags.T, mask.T, reduction="none"),
                               first(emissions, tags, mask, reduction="none"))
    assert second.decode(emissions.transpose(0, 1), mask.T) == first.decode(emissions, mask)


def test_mask_defaults_to_all_labelled():
    generator = torch.Generator().manual_seed(15)
    crf = random_crf(3, generator)
    emissions = torch.randn(2, 4, 3, generator=generator, dtype=torch.float64)
    tags = torch.randint(3, (2, 4), generator=generator)
    full = torch.ones(2, 4, dtype=torch.bool)
    torch.testing.assert_close(crf(emissions, tags), crf(emissions, tags, full))
    assert crf.decode(emissions) == crf.decode(emissions, full)


# ---------------------------------------------------------------- input errors


def test_rejects_wrong_emission_width():
    with pytest.raises(ValueError, match="num_tags=3"):
        CRF(3)(torch.zeros(1, 2, 4), torch.zeros(1, 2, dtype=torch.long))


def test_rejects_mismatched_tags_shape():
    with pytest.raises(ValueError, match="tags 的形状"):
        CRF(3)(torch.zeros(1, 2, 3), torch.zeros(1, 3, dtype=torch.long))


def test_rejects_labelled_tag_out_of_range():
    mask = torch.tensor([[True, True]])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        CRF(3)(torch.zeros(1, 2, 3), torch.tensor([[0, -100]]), mask)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        CRF(3)(torch.zeros(1, 2, 3), torch.tensor([[0, 3]]), mask)


def test_rejects_unknown_reduction():
    with pytest.raises(ValueError, match="reduction"):
        CRF(2)(torch.zeros(1, 2, 2), torch.zeros(1, 2, dtype=torch.long), reduction="average")


# ---------------------------------------------------------------- IOB2


def test_iob2_transition_mask_by_hand():
    start_allowed, transitions_allowed = iob2_transition_mask(IOB2_LABELS)
    assert start_allowed.tolist() == [True, True, False, True, False]
    assert transitions_allowed.tolist() == [
        # 到：O      B-PER  I-PER  B-LOC  I-LOC
        [True, True, False, True, False],  # 从 O
        [True, True, True, True, False],  # 从 B-PER
        [True, True, True, True, False],  # 从 I-PER
        [True, True, False, True, True],  # 从 B-LOC
        [True, True, False, True, True],  # 从 I-LOC
    ]


def test_iob2_rejects_non_iob2_label():
    with pytest.raises(ValueError, match="X-PER"):
        iob2_transition_mask(["O", "X-PER"])
    with pytest.raises(ValueError, match="'B-'"):
        iob2_transition_mask(["O", "B-"])


def test_count_iob2_violations_by_hand():
    assert count_iob2_violations([["O", "B-PER", "I-PER", "O"]]) == 0
    assert count_iob2_violations([["I-PER", "O"]]) == 1
    assert count_iob2_violations([["O", "I-PER", "B-LOC", "I-PER", "I-PER"]]) == 2
    assert count_iob2_violations([["B-PER", "I-LOC"], [], ["B-LOC", "I-LOC", "I-LOC"]]) == 1


def test_constrained_decode_has_no_illegal_transition():
    generator = torch.Generator().manual_seed(16)
    num_tags = len(IOB2_LABELS)
    crf = random_crf(num_tags, generator, dtype=torch.float32)
    crf.set_constraints(*iob2_transition_mask(IOB2_LABELS))
    emissions = torch.randn(200, 8, num_tags, generator=generator) * 4
    emissions[:, :, [2, 4]] += 3.0  # I- 标签的发射分数特别高：不加约束时会出现很多 O → I-
    mask = random_masks(200, 8, generator)

    names = [[IOB2_LABELS[tag] for tag in path] for path in crf.decode(emissions, mask)]
    crf.set_constraints()
    unconstrained = [[IOB2_LABELS[tag] for tag in path] for path in crf.decode(emissions, mask)]

    assert count_iob2_violations(names) == 0
    assert count_iob2_violations(unconstrained) > 0


def test_constrained_decode_matches_brute_force():
    generator = torch.Generator().manual_seed(17)
    labels = ["O", "B-PER", "I-PER"]
    crf = random_crf(3, generator)
    start_allowed, transitions_allowed = iob2_transition_mask(labels)
    crf.set_constraints(start_allowed, transitions_allowed)
    emissions = torch.randn(10, 5, 3, generator=generator, dtype=torch.float64)
    mask = random_masks(10, 5, generator)
    start, transitions, end = (value.detach() for value in (crf.start_transitions, crf.transitions,
                                                             crf.end_transitions))
    paths = crf.decode(emissions, mask)

    for index in range(10):
        positions = mask[index].nonzero().squeeze(1).tolist()
        best, best_path = -math.inf, []
        for path in itertools.product(range(3), repeat=len(positions)):
            if not path:
                break
            names = [labels[tag] for tag in path]
            if count_iob2_violations([names]):
                continue
            score = start[path[0]] + end[path[-1]] + sum(emissions[index, p, t] for p, t in zip(positions, path))
            score = score + sum(transitions[a, b] for a, b in zip(path, path[1:]))
            if score > best:
                best, best_path = float(score), list(path)
        assert paths[index] == best_path, f"sequence {index}"


def test_forbidden_transitions_get_no_gradient():
    crf = CRF(len(IOB2_LABELS))
    crf.set_constraints(*iob2_transition_mask(IOB2_LABELS))
    emissions = torch.randn(3, 5, len(IOB2_LABELS))
    tags = torch.tensor([[0, 1, 2, 0, 3], [3, 4, 4, 0, 0], [1, 0, 0, 3, 4]])
    crf.neg_log_likelihood(emissions, tags).backward()
    _, transitions_allowed = iob2_transition_mask(IOB2_LABELS)
    assert (crf.transitions.grad[~transitions_allowed] == 0).all()
    assert crf.transitions.grad[transitions_allowed].abs().sum() > 0


def test_set_constraints_rejects_wrong_shape():
    with pytest.raises(ValueError, match="transitions_allowed"):
        CRF(3).set_constraints(transitions_allowed=torch.ones(2, 2, dtype=torch.bool))


# ---------------------------------------------------------------- the lesson script


def test_synthetic_data_leaves_cls_unlabelled():
    import random as random_module

    vocab = crf_module.SyntheticVocab()
    rng = random_module.Random(0)
    for _ in range(50):
        tokens, labels = crf_module.make_sequence(vocab, rng, num_words=8, noise=0.0, subword_rate=0.5)
        assert tokens[0] == vocab.cls_id
        assert labels[0] == crf_module.IGNORE_INDEX
        for token, label in zip(tokens, labels):
            assert (token in vocab.piece_ids or token == vocab.cls_id) == (label == crf_module.IGNORE_INDEX)
        names = [crf_module.LABEL_NAMES[label] for label in labels if label != crf_module.IGNORE_INDEX]
        assert len(names) == 8
        assert count_iob2_violations([names]) == 0


def test_crf_script_beats_softmax(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    output_dir = tmp_path / "run"
    result = crf_module.main(["--max-train-samples", "1000", "--test-samples", "300", "--epochs", "5",
                              "--output-dir", str(output_dir)])

    assert result["brute_force_max_log_likelihood_error"] < 1e-9
    assert result["brute_force_viterbi_mismatches"] == 0
    assert result["illegal_transitions_gold"] == 0
    assert result["illegal_transitions_softmax_iob2"] == 0
    assert result["illegal_transitions_crf_iob2"] == 0
    assert result["illegal_transitions_softmax"] > 100
    assert result["illegal_transitions_crf"] < 10
    assert result["entity_f1_crf"] > 0.6
    assert result["entity_f1_crf"] > result["entity_f1_softmax"] + 0.15
    assert result["entity_f1_crf"] > result["entity_f1_softmax_iob2"] + 0.15
    assert result["transition_min_begin_to_inside"] > result["transition_max_illegal"] + 1.0
    assert result["inside_word_probability_I-PER"] > result["inside_word_probability_I-LOC"]
    assert result["inside_word_probability_I-LOC"] > result["inside_word_probability_I-ORG"]
    assert json.loads((output_dir / "metrics.json").read_text(encoding="utf-8")) == json.loads(json.dumps(result))
    assert (output_dir / "crf_transitions.png").read_bytes()[:4] == b"\x89PNG"
