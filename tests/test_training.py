"""roadmap.training: the shared fit loop, checkpoints, resume, accumulation, early stopping."""

from __future__ import annotations

import argparse

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from roadmap import metrics, training


def make_args(**overrides) -> argparse.Namespace:
    values = {"device": "cpu", "precision": "fp32", "grad_accum_steps": 1, "seed": 0, "track": "none"}
    values.update(overrides)
    return argparse.Namespace(**values)


def toy_data(count: int = 128, seed: int = 0) -> TensorDataset:
    """Two Gaussian blobs in 4-D: linearly separable, so a small model must reach high accuracy."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 2
    features = torch.randn(count, 4, generator=generator) + (labels.float() * 3 - 1.5).unsqueeze(1)
    return TensorDataset(features, labels)


def toy_model(dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 2))


def accuracy_metric(logits, labels):
    return {"accuracy": metrics.accuracy(logits, labels)}


def run_fit(tmp_path=None, *, epochs=3, batch_size=16, accum=1, model=None, loss_fn=None, resume=False,
            patience=None, monitor="accuracy", mode="max", precision="fp32", restore_best=True,
            optimizer_name="adam", with_scheduler=False, name="toy"):
    args = make_args(grad_accum_steps=accum, precision=precision)
    accelerator = training.create_accelerator(args)
    model = model if model is not None else toy_model()
    if optimizer_name == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5) if with_scheduler else None
    result = training.fit(
        model, optimizer,
        DataLoader(toy_data(), batch_size=batch_size, shuffle=True),
        DataLoader(toy_data(64, seed=1), batch_size=32),
        accelerator=accelerator, loss_fn=loss_fn or nn.CrossEntropyLoss(), metric_fn=accuracy_metric,
        epochs=epochs, seed=0, monitor=monitor, mode=mode, patience=patience, scheduler=scheduler,
        checkpoint_dir=None if tmp_path is None else tmp_path / name, resume=resume, name=name,
        restore_best=restore_best,
    )
    return model, result


def test_fit_learns_separable_data():
    _, result = run_fit(epochs=5)
    assert len(result.history) == 5
    assert result.best_metrics["val_accuracy"] >= 0.95
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.world_size == 1
    assert result.ranks_agree is True


def test_fit_history_records_every_epoch():
    _, result = run_fit(epochs=3)
    assert [record["epoch"] for record in result.history] == [1, 2, 3]
    assert set(result.history[0]) == {"epoch", "train_loss", "val_loss", "val_accuracy"}


def test_evaluate_matches_direct_computation():
    model, _ = run_fit(epochs=2)
    accelerator = training.create_accelerator(make_args())
    loader = DataLoader(toy_data(64, seed=1), batch_size=7)
    result = training.evaluate(model, loader, accelerator, nn.CrossEntropyLoss(), accuracy_metric)
    features, labels = toy_data(64, seed=1).tensors
    with torch.no_grad():
        logits = model.eval()(features)
    assert result["loss"] == pytest.approx(nn.functional.cross_entropy(logits, labels).item(), rel=1e-5)
    assert result["accuracy"] == pytest.approx(metrics.accuracy(logits, labels))


def test_best_checkpoint_is_safetensors_of_best_epoch(tmp_path):
    model, result = run_fit(tmp_path, epochs=4)
    best_file = tmp_path / "toy" / "best" / training.MODEL_FILE
    assert best_file.is_file()
    saved = load_file(str(best_file))
    for key, value in model.state_dict().items():
        torch.testing.assert_close(saved[key], value, rtol=0, atol=0)
    assert result.best_metrics["val_accuracy"] == max(record["val_accuracy"] for record in result.history)


def test_early_stopping_after_patience():
    constant = nn.CrossEntropyLoss()

    def frozen_metric(logits, labels):
        return {"accuracy": 0.5}

    args = make_args()
    accelerator = training.create_accelerator(args)
    model = toy_model()
    result = training.fit(
        model, torch.optim.SGD(model.parameters(), lr=0.01),
        DataLoader(toy_data(), batch_size=16), DataLoader(toy_data(32), batch_size=16),
        accelerator=accelerator, loss_fn=constant, metric_fn=frozen_metric, epochs=10, seed=0,
        monitor="accuracy", mode="max", patience=2,
    )
    assert result.stopped_early is True
    assert len(result.history) == 3
    assert result.best_epoch == 1


def test_unknown_monitor_raises():
    with pytest.raises(KeyError, match="f1"):
        run_fit(epochs=1, monitor="f1")


def test_non_finite_loss_raises():
    def nan_loss(outputs, target):
        return outputs.sum() * float("nan")

    with pytest.raises(FloatingPointError, match="--lr"):
        run_fit(epochs=1, loss_fn=nan_loss)


def test_resume_after_interrupt_matches_uninterrupted(tmp_path):
    """Interrupt in epoch 3 of 5, resume from the epoch-2 checkpoint: the final weights are identical."""
    reference, reference_result = run_fit(tmp_path, epochs=5, model=toy_model(dropout=0.3), with_scheduler=True,
                                          restore_best=False, name="uninterrupted")

    calls = {"count": 0}
    batches_per_epoch = 128 // 16

    def interrupting_loss(outputs, target):
        calls["count"] += 1
        if calls["count"] == 2 * batches_per_epoch + 3:
            raise KeyboardInterrupt
        return nn.functional.cross_entropy(outputs, target)

    with pytest.raises(KeyboardInterrupt):
        run_fit(tmp_path, epochs=5, model=toy_model(dropout=0.3), with_scheduler=True, loss_fn=interrupting_loss,
                restore_best=False, name="interrupted")
    state_file = tmp_path / "interrupted" / "last" / training.STATE_FILE
    assert state_file.is_file()
    assert '"epoch": 2' in state_file.read_text()

    # A fresh model and optimizer, as in a new process started with --resume.
    resumed, resumed_result = run_fit(tmp_path, epochs=5, model=toy_model(dropout=0.3), with_scheduler=True,
                                      resume=True, restore_best=False, name="interrupted")
    for (name, expected), actual in zip(reference.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(actual, expected, rtol=0, atol=0, msg=f"parameter {name} differs")
    assert [record["epoch"] for record in resumed_result.history] == [1, 2, 3, 4, 5]
    for resumed_record, reference_record in zip(resumed_result.history, reference_result.history):
        assert resumed_record == pytest.approx(reference_record)


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    _, result = run_fit(tmp_path, epochs=2, resume=True)
    assert [record["epoch"] for record in result.history] == [1, 2]


def test_gradient_accumulation_equals_larger_batch():
    """Two accumulated batches of 8 give the same SGD update as one batch of 16 (same sample order)."""
    large, _ = run_fit(epochs=2, batch_size=16, optimizer_name="sgd", restore_best=False)
    accumulated, _ = run_fit(epochs=2, batch_size=8, accum=2, optimizer_name="sgd", restore_best=False)
    for expected, actual in zip(large.state_dict().values(), accumulated.state_dict().values()):
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


def test_bf16_precision_trains_on_cpu():
    _, result = run_fit(epochs=2, precision="bf16")
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_create_accelerator_rejects_fp16_on_cpu():
    with pytest.raises(SystemExit, match="fp16"):
        training.create_accelerator(make_args(precision="fp16"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_create_accelerator_rejects_missing_cuda():
    with pytest.raises(SystemExit, match="CUDA"):
        training.create_accelerator(make_args(device="cuda"))


def test_fit_rejects_bad_mode():
    with pytest.raises(ValueError, match="mode"):
        run_fit(epochs=1, mode="maximum")


def test_corrupt_checkpoint_gives_clear_error(tmp_path):
    run_fit(tmp_path, epochs=1)
    (tmp_path / "toy" / "last" / training.MODEL_FILE).write_bytes(b"truncated")
    with pytest.raises(SystemExit, match="损坏"):
        run_fit(tmp_path, epochs=2, resume=True)


def test_resume_falls_back_to_old_checkpoint(tmp_path):
    """A kill between the two renames of a checkpoint save leaves only last.old: resume uses it."""
    run_fit(tmp_path, epochs=1)
    (tmp_path / "toy" / "last").rename(tmp_path / "toy" / "last.old")
    _, result = run_fit(tmp_path, epochs=2, resume=True)
    assert [record["epoch"] for record in result.history] == [1, 2]
