"""Stage 1 lessons against references: least squares from scikit-learn, hand-checked augmentation."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.linear_model import LinearRegression

from stage1 import linear_regression, mnist_classification


def test_closed_form_matches_sklearn():
    tensors = linear_regression.load_data(seed=42)
    weight, bias = linear_regression.closed_form(tensors["train_x"], tensors["train_y"])
    reference = LinearRegression().fit(tensors["train_x"].numpy(), tensors["train_y"].numpy())
    np.testing.assert_allclose(weight.numpy(), reference.coef_, rtol=1e-3, atol=1e-2)
    assert bias.item() == pytest.approx(reference.intercept_, rel=1e-5)


def test_standardization_uses_train_statistics_only():
    tensors = linear_regression.load_data(seed=42)
    torch.testing.assert_close(tensors["train_x"].mean(0), torch.zeros(10), atol=1e-5, rtol=0)
    torch.testing.assert_close(tensors["train_x"].std(0, unbiased=False), torch.ones(10), atol=1e-5, rtol=0)
    assert tensors["test_x"].mean(0).abs().max() > 1e-3


def test_scratch_gradient_descent_reaches_least_squares():
    tensors = linear_regression.load_data(seed=42)
    exact_weight, exact_bias = linear_regression.closed_form(tensors["train_x"], tensors["train_y"])
    weight, bias, losses = linear_regression.train_from_scratch(tensors["train_x"], tensors["train_y"], 3000, 0.1)
    torch.testing.assert_close(weight, exact_weight, atol=1.0, rtol=0)
    assert bias.item() == pytest.approx(exact_bias.item(), rel=1e-4)
    assert losses[-1] < losses[0]


def test_scratch_divergence_raises():
    tensors = linear_regression.load_data(seed=42)
    with pytest.raises(FloatingPointError, match="--scratch-lr"):
        linear_regression.train_from_scratch(tensors["train_x"], tensors["train_y"], 500, 5.0)


def test_linear_regression_rejects_mixed_precision(capsys):
    with pytest.raises(SystemExit):
        linear_regression.main(["--smoke", "--precision", "bf16"])
    assert "fp32" in capsys.readouterr().err


def test_random_shift_moves_pixels_within_bounds():
    torch.manual_seed(0)
    image = torch.zeros(1, 28, 28)
    image[0, 14, 14] = 1.0
    shifted = mnist_classification.random_shift(image.repeat(50, 1, 1), max_shift=2)
    assert shifted.shape == (50, 28, 28)
    positions = shifted.flatten(1).argmax(1)
    rows, columns = positions // 28, positions % 28
    assert (rows - 14).abs().max() <= 2
    assert (columns - 14).abs().max() <= 2
    assert len(set(positions.tolist())) > 5
    torch.testing.assert_close(shifted.sum(dim=(1, 2)), torch.ones(50))


def test_random_shift_zero_is_identity():
    images = torch.rand(3, 28, 28)
    assert mnist_classification.random_shift(images, 0) is images


def test_mnist_split_is_stratified_and_disjoint():
    args = SimpleNamespace(data_dir=None, smoke=True, seed=0, max_train_samples=None)
    tensors = mnist_classification.prepare_data(args)
    assert len(tensors["train_y"]) + len(tensors["val_y"]) == 600
    assert torch.bincount(tensors["val_y"], minlength=10).tolist() == [6] * 10
    # Standardized with the training part's statistics: mean 0, std 1 there.
    assert tensors["train_x"].mean().item() == pytest.approx(0.0, abs=1e-5)
    assert tensors["train_x"].std().item() == pytest.approx(1.0, abs=1e-4)
    train_rows = {row.numpy().tobytes() for row in tensors["train_x"]}
    assert not any(row.numpy().tobytes() in train_rows for row in tensors["val_x"])


def test_softmax_regression_is_one_linear_layer():
    model = mnist_classification.SoftmaxRegression()
    images = torch.randn(4, 28, 28)
    expected = images.flatten(1) @ model.linear.weight.T + model.linear.bias
    torch.testing.assert_close(model(images), expected)
