"""画图：训练曲线、混淆矩阵、热力图、图片网格、预测值 vs 真实值。

用 matplotlib 的 Agg 后端直接写 PNG，所以没有显示器的服务器和 CI 上也能画。
图里的标题和坐标轴用英文术语：matplotlib 默认字体没有中文字形，中文会显示成方框。
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

if os.environ.get("MPLBACKEND") is None:
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  后端必须在导入 pyplot 之前选好
import numpy as np  # noqa: E402

from roadmap.runs import is_main_process  # noqa: E402


def save_figure(figure: plt.Figure, path: Path, dpi: int = 120) -> Path:
    """Save `figure` as a PNG (main process only, parent folders created), close it, and return `path`."""
    path = Path(path)
    if is_main_process():
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    return path


def plot_history(history: Sequence[Mapping[str, float]], path: Path, title: str = "") -> Path:
    """Plot every loss key on one axis and every other metric on a second axis, by epoch."""
    if not history:
        raise ValueError("history 为空：没有可画的 epoch")
    epochs = [record["epoch"] for record in history]
    keys = [key for key in history[0] if key != "epoch"]
    loss_keys = [key for key in keys if "loss" in key]
    metric_keys = [key for key in keys if "loss" not in key]
    columns = 2 if metric_keys else 1
    figure, axes = plt.subplots(1, columns, figsize=(5.5 * columns, 4), squeeze=False)
    for key in loss_keys:
        axes[0, 0].plot(epochs, [record[key] for record in history], marker="o", label=key)
    axes[0, 0].set(xlabel="epoch", ylabel="loss", title=f"{title} loss".strip())
    axes[0, 0].legend()
    if metric_keys:
        for key in metric_keys:
            axes[0, 1].plot(epochs, [record[key] for record in history], marker="o", label=key)
        axes[0, 1].set(xlabel="epoch", ylabel="metric", title=f"{title} metrics".strip())
        axes[0, 1].legend()
    for axis in axes.flat:
        axis.grid(alpha=0.3)
    return save_figure(figure, path)


def plot_curves(curves: Mapping[str, Sequence[float]], path: Path, xlabel: str = "step", ylabel: str = "loss",
                title: str = "", log_y: bool = False) -> Path:
    """Plot named 1-D curves against their index on one axis."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for name, values in curves.items():
        axis.plot(np.arange(1, len(values) + 1), values, label=name)
    if log_y:
        axis.set_yscale("log")
    axis.set(xlabel=xlabel, ylabel=ylabel, title=title)
    axis.grid(alpha=0.3)
    axis.legend()
    return save_figure(figure, path)


def plot_confusion_matrix(matrix: np.ndarray, labels: Sequence[str], path: Path, title: str = "confusion matrix") -> Path:
    """Draw a count matrix (row = true, column = predicted) with each cell's count written in it."""
    matrix = np.asarray(matrix)
    size = max(4.0, 0.6 * len(labels) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    image = axis.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axis, fraction=0.046)
    axis.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=labels, yticklabels=labels,
             xlabel="predicted", ylabel="true", title=title)
    if max(len(str(label)) for label in labels) > 3:
        axis.tick_params(axis="x", labelrotation=45)  # 长类名（airplane、automobile）横排会互相压住
        for tick in axis.get_xticklabels():
            tick.set_horizontalalignment("right")
    threshold = matrix.max() / 2 if matrix.size else 0
    for row in range(matrix.shape[0]):
        for column in range(matrix.shape[1]):
            axis.text(column, row, str(matrix[row, column]), ha="center", va="center", fontsize=8,
                      color="white" if matrix[row, column] > threshold else "black")
    return save_figure(figure, path)


def plot_heatmap(values: np.ndarray, path: Path, *, x_labels: Sequence[str] | None = None,
                 y_labels: Sequence[str] | None = None, title: str = "", cmap: str = "viridis",
                 xlabel: str = "", ylabel: str = "") -> Path:
    values = np.asarray(values)
    figure, axis = plt.subplots(figsize=(max(4.0, 0.35 * values.shape[1] + 2), max(3.0, 0.35 * values.shape[0] + 1.5)))
    image = axis.imshow(values, cmap=cmap, aspect="auto")
    figure.colorbar(image, ax=axis, fraction=0.046)
    if x_labels is not None:
        axis.set_xticks(range(len(x_labels)), labels=x_labels, rotation=90)
    if y_labels is not None:
        axis.set_yticks(range(len(y_labels)), labels=y_labels)
    axis.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return save_figure(figure, path)


def plot_image_grid(images: Any, titles: Sequence[str], path: Path, columns: int = 8, cmap: str = "gray",
                    title: str = "", symmetric: bool = False) -> Path:
    """Show images (N, H, W) or (N, H, W, C) in a grid, each with its own title.

    With `symmetric=True` the colour scale is centred on 0 (for weights, with a diverging `cmap`).
    """
    images = np.asarray(images)
    limit = float(np.abs(images).max()) if symmetric and images.size else None
    count = len(images)
    if count == 0:
        figure, axis = plt.subplots(figsize=(4, 1))
        axis.text(0.5, 0.5, "(no images)", ha="center", va="center")
        axis.axis("off")
        return save_figure(figure, path)
    columns = min(columns, count)
    rows = (count + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(1.4 * columns, 1.6 * rows), squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index < count:
            axis.imshow(images[index], cmap=cmap, vmin=-limit if limit else None, vmax=limit)
            axis.set_title(titles[index], fontsize=8)
    if title:
        figure.suptitle(title)
    return save_figure(figure, path)


def plot_predictions(predictions: Any, targets: Any, path: Path, title: str = "predicted vs true") -> Path:
    """Scatter predicted against true values, with the y = x line a perfect model would sit on."""
    predictions = np.asarray(predictions).reshape(-1)
    targets = np.asarray(targets).reshape(-1)
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    axis.scatter(targets, predictions, s=12, alpha=0.6)
    low = float(min(targets.min(), predictions.min()))
    high = float(max(targets.max(), predictions.max()))
    axis.plot([low, high], [low, high], color="red", linewidth=1, label="y = x")
    axis.set(xlabel="true", ylabel="predicted", title=title)
    axis.legend()
    axis.grid(alpha=0.3)
    return save_figure(figure, path)
