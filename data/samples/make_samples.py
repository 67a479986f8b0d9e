"""生成 data/samples/ 下的自带样本（本项目自己画的、自己写的，不含任何真实数据集的内容）。

- mnist/：用 matplotlib 自带的几种字体把数字 0-9 画成 28x28 灰度图，随机旋转、缩放、加粗，
  再像 MNIST 那样缩进 20x20 的框并按质心居中，存成与官方相同的 IDX gzip 文件。
- cifar10/：10 类彩色几何图案（每类一种形状和主色，位置、大小、亮度随机），存成官方的 python pickle 批次。
- ag_news/：按模板拼出的四类英文新闻标题，官方 CSV 格式（无表头，类别 1-4、标题、正文）。
- timeseries/：趋势 × 季节性 + 噪声合成的月度序列，表头 Month,Passengers。
- translation/：按模板拼出的简单英中句对，格式 英文<TAB>中文。

它们只用于 --smoke 和测试：能学，但比真实数据简单得多。

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


def draw_pattern(label: int, rng: np.random.Generator) -> np.ndarray:
    """Draw a 32x32 RGB image for class `label`: one shape and one dominant colour per class."""
    hues = [(230, 60, 60), (60, 200, 60), (60, 90, 230), (230, 200, 40), (200, 60, 200),
            (40, 200, 210), (240, 140, 40), (150, 150, 150), (120, 70, 30), (250, 250, 250)]
    canvas = Image.new("RGB", (32, 32), tuple(int(v) for v in rng.integers(0, 70, 3)))
    draw = ImageDraw.Draw(canvas)
    size = int(rng.integers(10, 20))
    left, top = (int(v) for v in rng.integers(0, 32 - size, 2))
    box = (left, top, left + size, top + size)
    colour = tuple(int(np.clip(c * rng.uniform(0.7, 1.1), 0, 255)) for c in hues[label])
    shape = label % 5
    if shape == 0:
        draw.ellipse(box, fill=colour)
    elif shape == 1:
        draw.rectangle(box, fill=colour)
    elif shape == 2:
        draw.polygon([(left + size // 2, top), (left, top + size), (left + size, top + size)], fill=colour)
    elif shape == 3:
        for x in range(left, left + size, 4):
            draw.line([(x, top), (x, top + size)], fill=colour, width=2)
    else:
        draw.line([(left, top), (left + size, top + size)], fill=colour, width=3)
        draw.line([(left + size, top), (left, top + size)], fill=colour, width=3)
    pixels = np.asarray(canvas, dtype=np.float64) + rng.normal(0, 8, (32, 32, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8).transpose(2, 0, 1)  # (3, 32, 32)


def make_cifar10() -> None:
    import pickle

    folder = SAMPLES_DIR / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(folder / "batches.meta", "wb") as stream:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": 300, b"num_vis": 3072}, stream, protocol=2)
    for filename, per_class, seed in (("data_batch_1", 30, 2), ("test_batch", 10, 3)):
        rng = np.random.default_rng(seed)
        labels = rng.permutation(np.repeat(np.arange(10), per_class))
        images = np.stack([draw_pattern(int(label), rng) for label in labels])
        batch = {b"batch_label": filename.encode(), b"labels": labels.tolist(),
                 b"data": images.reshape(len(labels), -1), b"filenames": [f"sample_{i}.png".encode() for i in range(len(labels))]}
        with open(folder / filename, "wb") as stream:
            pickle.dump(batch, stream, protocol=2)
        print(f"cifar10 {filename}: {images.shape} -> {folder}")


NEWS_TEMPLATES = {
    1: (["{place} leaders meet to discuss {issue}", "Election in {place} ends with {issue} dispute",
         "UN envoy arrives in {place} amid {issue} talks"],
        ["Officials from {place} said talks on {issue} would continue next week.",
         "Diplomats in {place} called for calm as the {issue} crisis deepened."]),
    2: (["{team} beat rivals in {sport} final", "{team} coach praises defence after {sport} win",
         "Star player returns as {team} open {sport} season"],
        ["The {team} side scored late to win the {sport} match at home.",
         "Fans cheered as {team} took the {sport} title after extra time."]),
    3: (["{company} shares rise after {product} sales jump", "{company} to cut costs as {product} demand slows",
         "Investors cheer {company} profit on {product}"],
        ["{company} reported quarterly earnings above forecasts thanks to {product}.",
         "Analysts said {company} would raise prices of {product} next year."]),
    4: (["{company} unveils new {gadget} chip", "Scientists test {gadget} on the space station",
         "Open source {gadget} software gains users"],
        ["Researchers said the {gadget} could make computers faster and cheaper.",
         "The {gadget} prototype uses less power than earlier designs."]),
}
NEWS_FILLERS = {
    "place": ["Norland", "Eastmark", "Valdoria", "the capital", "Southport"],
    "issue": ["trade", "border", "refugee", "water", "security"],
    "team": ["Riverside", "Old Harbour", "North City", "Blue Lions", "Red Hawks"],
    "sport": ["football", "rugby", "tennis", "hockey", "cricket"],
    "company": ["Acme Corp", "Globex", "Initech", "Umbrella Foods", "Stark Motors"],
    "product": ["phone", "truck", "coffee", "insurance", "steel"],
    "gadget": ["quantum", "robot", "laser", "battery", "satellite"],
}


def make_ag_news() -> None:
    import csv

    folder = SAMPLES_DIR / "ag_news"
    folder.mkdir(exist_ok=True)
    (folder / "classes.txt").write_text("World\nSports\nBusiness\nSci/Tech\n", encoding="utf-8")
    for filename, per_class, seed in (("train.csv", 40, 4), ("test.csv", 10, 5)):
        rng = np.random.default_rng(seed)
        rows = []
        for label, (titles, bodies) in NEWS_TEMPLATES.items():
            for _ in range(per_class):
                values = {key: str(rng.choice(options)) for key, options in NEWS_FILLERS.items()}
                rows.append([str(label), str(rng.choice(titles)).format(**values), str(rng.choice(bodies)).format(**values)])
        rows = [rows[i] for i in rng.permutation(len(rows))]
        with open(folder / filename, "w", encoding="utf-8", newline="") as stream:
            csv.writer(stream, quoting=csv.QUOTE_ALL).writerows(rows)
        print(f"ag_news {filename}: {len(rows)} rows -> {folder}")


def make_timeseries() -> None:
    folder = SAMPLES_DIR / "timeseries"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(6)
    months = [f"{2001 + index // 12}-{index % 12 + 1:02d}" for index in range(144)]
    trend = 200 * np.exp(0.008 * np.arange(144))
    season = 1 + 0.2 * np.sin(2 * np.pi * (np.arange(144) % 12) / 12 - 1.2)
    values = np.round(trend * season + rng.normal(0, 4, 144)).astype(int)
    lines = ["Month,Passengers"] + [f"{month},{value}" for month, value in zip(months, values)]
    (folder / "airline_passengers.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"timeseries: {len(values)} months -> {folder}")


TRANSLATION_TEMPLATES = [
    ("I like {en}.", "我喜欢{zh}。"), ("I do not like {en}.", "我不喜欢{zh}。"),
    ("This is my {en}.", "这是我的{zh}。"), ("Where is the {en}?", "{zh}在哪里？"),
    ("She has a {en}.", "她有一个{zh}。"), ("We need a new {en}.", "我们需要一个新的{zh}。"),
]
TRANSLATION_NOUNS = [("book", "书"), ("cat", "猫"), ("dog", "狗"), ("car", "车"), ("teacher", "老师"),
                     ("house", "房子"), ("phone", "手机"), ("friend", "朋友"), ("computer", "电脑"), ("tea", "茶")]


def make_translation() -> None:
    folder = SAMPLES_DIR / "translation"
    folder.mkdir(exist_ok=True)
    lines = [f"{english.format(en=en)}\t{chinese.format(zh=zh)}"
             for english, chinese in TRANSLATION_TEMPLATES for en, zh in TRANSLATION_NOUNS]
    (folder / "cmn.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"translation: {len(lines)} pairs -> {folder}")


def main() -> None:
    folder = SAMPLES_DIR / "mnist"
    folder.mkdir(exist_ok=True)
    for split, per_class, seed, prefix in (("train", 60, 0, "train"), ("test", 20, 1, "t10k")):
        images, labels = make_mnist(per_class, seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
        print(f"mnist {split}: {images.shape} -> {folder}")
    make_cifar10()
    make_ag_news()
    make_timeseries()
    make_translation()


if __name__ == "__main__":
    main()
