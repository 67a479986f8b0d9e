"""生成 data/samples/ 下的自带样本（本项目自己画的，不含任何真实数据集的内容）。

mnist/：用 matplotlib 自带的几种字体把数字 0-9 画成 28x28 灰度图，随机旋转、缩放、加粗，
再像 MNIST 那样缩进 20x20 的框并按质心居中，存成与官方相同的 IDX gzip 文件。
它只用于 --smoke 和测试：能学，但比真实手写数字简单得多。

重新生成：python data/samples/make_samples.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from matplotlib import font_manager
from PIL import Image, ImageDraw, ImageFilter, ImageFont

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from roadmap.data import write_idx  # noqa: E402

SAMPLES_DIR = Path(__file__).resolve().parent
FONT_FAMILIES = ["DejaVu Sans", "DejaVu Serif", "DejaVu Sans Mono", "STIXGeneral"]


def render_digit(digit: int, font_path: str, rng: np.random.Generator) -> np.ndarray:
    """Draw one digit and normalise it the way MNIST did: fit into 20x20, centre of mass at the centre."""
    canvas = Image.new("L", (96, 96), 0)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.truetype(font_path, size=int(rng.integers(52, 72)))
    stroke = int(rng.integers(0, 4))
    draw.text((48, 48), str(digit), fill=255, font=font, anchor="mm", stroke_width=stroke, stroke_fill=255)
    canvas = canvas.rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR)
    canvas = canvas.transform(canvas.size, Image.AFFINE, (1, float(rng.uniform(-0.25, 0.25)), 0, 0, 1, 0),
                              resample=Image.BILINEAR)

    pixels = np.asarray(canvas)
    rows, columns = np.nonzero(pixels > 30)
    cropped = canvas.crop((columns.min(), rows.min(), columns.max() + 1, rows.max() + 1))
    scale = 20 / max(cropped.size)
    size = (max(1, round(cropped.width * scale)), max(1, round(cropped.height * scale)))
    digit_box = cropped.resize(size, Image.LANCZOS).filter(ImageFilter.GaussianBlur(0.4))

    box = np.asarray(digit_box, dtype=np.float64)
    ys, xs = np.indices(box.shape)
    centre_y = (ys * box).sum() / box.sum()
    centre_x = (xs * box).sum() / box.sum()
    top = int(round(14 - centre_y))
    left = int(round(14 - centre_x))
    top = min(max(top, 0), 28 - box.shape[0])
    left = min(max(left, 0), 28 - box.shape[1])
    image = np.zeros((28, 28), dtype=np.float64)
    image[top:top + box.shape[0], left:left + box.shape[1]] = box
    return np.clip(image, 0, 255).astype(np.uint8)


def make_mnist(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    font_paths = [font_manager.findfont(family, fallback_to_default=False) for family in FONT_FAMILIES]
    images, labels = [], []
    for index in range(per_class * 10):
        digit = index % 10
        images.append(render_digit(digit, font_paths[int(rng.integers(len(font_paths)))], rng))
        labels.append(digit)
    order = rng.permutation(len(labels))
    return np.stack(images)[order], np.asarray(labels, dtype=np.uint8)[order]


def main() -> None:
    folder = SAMPLES_DIR / "mnist"
    folder.mkdir(exist_ok=True)
    for split, per_class, seed, prefix in (("train", 60, 0, "train"), ("test", 20, 1, "t10k")):
        images, labels = make_mnist(per_class, seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
        print(f"mnist {split}: {images.shape} -> {folder}")


if __name__ == "__main__":
    main()
