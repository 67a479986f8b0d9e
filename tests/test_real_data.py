"""Exercises on real data (`pytest -m real`, needs ROADMAP_DATA_DIR), with floors under the measured results.

Measured values are in docs/RESULTS.md; each floor sits a little under them.
"""

from __future__ import annotations

import pytest

from stage1 import linear_regression, mnist_classification

pytestmark = pytest.mark.real


def test_linear_regression_within_2_percent_of_closed_form(tmp_path):
    # The diabetes data ships with scikit-learn, so this test needs no data folder.
    result = linear_regression.main(["--output-dir", str(tmp_path)])
    assert result["train_samples"] == 353
    assert result["test_samples"] == 89
    assert abs(result["scratch_vs_closed_form"]) <= 0.02
    assert abs(result["nn_linear_vs_closed_form"]) <= 0.02
    for figure in ("scratch_loss.png", "nn_linear_loss.png", "predicted_vs_true.png"):
        assert (tmp_path / figure).is_file()


def test_mnist_reaches_floors(real_data_dir, tmp_path):
    result = mnist_classification.main(["--data-dir", str(real_data_dir), "--max-train-samples", "5000",
                                        "--output-dir", str(tmp_path)])
    assert result["test_samples"] == 10_000
    assert result["train_samples"] + result["val_samples"] == 5_000
    assert result["softmax_test_accuracy"] >= 0.88
    assert result["mlp_test_accuracy"] >= 0.94
    for figure in ("softmax_curves.png", "mlp_curves.png", "mlp_confusion_matrix.png", "mlp_misclassified.png",
                   "softmax_weights.png"):
        assert (tmp_path / figure).is_file()
