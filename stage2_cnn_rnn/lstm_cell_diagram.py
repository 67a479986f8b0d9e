"""LSTM 单元结构图：输入门、遗忘门、输出门（路线图：CNN 与 RNN → 画出 LSTM 单元结构，标出输入门、遗忘门、输出门）

学什么
- 一个 LSTM 单元在一个时间步里做的事，画成一张图：
    · 顶部横穿的是细胞状态（cell state）c_{t-1} → c_t：只经过一次逐元素乘（遗忘）和一次逐元素加（写入），
      没有矩阵乘法和挤压函数，这就是梯度能沿它走很远的原因（rnn_basics 里的梯度消失实验）；
    · 底部是隐藏状态（hidden state）h_{t-1} 和当前输入 x_t，它们一起送进四个小网络：
      遗忘门 f_t（σ）、输入门 i_t（σ）、候选记忆 g_t（tanh，很多教材写作 c̃_t）、输出门 o_t（σ）；
    · σ 的输出在 0 到 1 之间，当作"阀门"乘在别的量上；tanh 的输出在 -1 到 1 之间，是要写进去的内容；
    · c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t，h_t = o_t ⊙ tanh(c_t)；图右边列出全部公式（与 lstm_gru_forecast 的手写 LSTM 一致）；
- 用 matplotlib 的基本元素画图：FancyBboxPatch（方框）、Circle（逐元素运算的圆圈）、annotate（箭头）、
  mathtext（$...$ 里的公式）；
- matplotlib 的默认字体 DejaVu Sans 没有中文字形，中文会画成方框并警告 "Glyph ... missing from font"。
  本脚本按顺序寻找中文字体：环境变量 ROADMAP_CJK_FONT 指向的字体文件 → pip 包 pylopdf-fonts-zh-cn 自带的
  Noto Sans SC → matplotlib 已知的常见中文字体 → `fc-list :lang=zh` 列出的系统字体；
  每个候选都检查是否真的包含图里要用的每个汉字。都找不到时只画英文标签，并给出中文警告。

怎么跑
    roadmap run lstm_cell_diagram --smoke      # 和完整运行一样，一张图，一两秒
    ROADMAP_CJK_FONT=/path/to/font.otf roadmap run lstm_cell_diagram   # 指定中文字体
    没有中文字体时：pip install pylopdf-fonts-zh-cn（Noto Sans SC，SIL OFL 1.1），
    或 Debian/Ubuntu 上 apt-get install fonts-noto-cjk

结果：lstm_cell.png（约 2000×850 像素），metrics.json 记录画了多少个标签、用了哪个字体、缺字个数（应为 0）。
本脚本不训练模型，也不读数据：--epochs、--lr、--batch-size、--data-dir 不起作用。
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from matplotlib import font_manager
from matplotlib.font_manager import FontProperties
from matplotlib.ft2font import FT2Font
from matplotlib.patches import Circle, FancyBboxPatch
from matplotlib.text import Text

from roadmap import cli, plots, runs  # noqa: F401  roadmap.plots 先选好 Agg 后端，再导入 pyplot

import matplotlib.pyplot as plt  # noqa: E402  isort: skip

logger = logging.getLogger(__name__)

FONT_ENV = "ROADMAP_CJK_FONT"
# matplotlib 能按名字找到的常见中文字体（Linux、macOS、Windows）。
KNOWN_CJK_FAMILIES = (
    "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "Source Han Sans CN", "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei", "Droid Sans Fallback", "AR PL UMing CN", "PingFang SC", "Heiti SC", "STHeiti",
    "Microsoft YaHei", "SimHei", "Arial Unicode MS",
)

# 图里的每个标签：(中文, 英文)。没有中文字体时只画英文部分。
LABELS = {
    "title": ("LSTM 单元结构", "LSTM cell"),
    "forget": ("遗忘门", "forget gate"),
    "input": ("输入门", "input gate"),
    "candidate": ("候选记忆", "candidate cell"),
    "output": ("输出门", "output gate"),
    "cell_in": ("细胞状态", "cell state"),
    "cell_out": ("新细胞状态", "new cell state"),
    "hidden_in": ("隐藏状态", "hidden state"),
    "hidden_out": ("新隐藏状态", "new hidden state"),
    "x": ("输入", "input"),
    "concat": ("拼接", "concatenate"),
    "legend_sigma": ("σ：sigmoid，输出 0~1，当作阀门", "σ: sigmoid, 0 to 1, acts as a valve"),
    "legend_tanh": ("tanh：输出 -1~1，是要写入的内容", "tanh: -1 to 1, the content"),
    "legend_ops": ("圆圈：逐元素乘（×）与加（+）", "circles: pointwise multiply (×) and add (+)"),
    "equations": ("公式（PyTorch 的门顺序 i, f, g, o）", "equations (PyTorch gate order i, f, g, o)"),
}

EQUATIONS = (
    r"$i_t = \sigma(W_{ii} x_t + b_{ii} + W_{hi} h_{t-1} + b_{hi})$",
    r"$f_t = \sigma(W_{if} x_t + b_{if} + W_{hf} h_{t-1} + b_{hf})$",
    r"$g_t = \tanh(W_{ig} x_t + b_{ig} + W_{hg} h_{t-1} + b_{hg})$",
    r"$o_t = \sigma(W_{io} x_t + b_{io} + W_{ho} h_{t-1} + b_{ho})$",
    r"$c_t = f_t \odot c_{t-1} + i_t \odot g_t$",
    r"$h_t = o_t \odot \tanh(c_t)$",
)


# ---------------------------------------------------------------- 中文字体


@dataclass(frozen=True)
class CjkFont:
    path: Path
    family: str
    source: str


def required_characters() -> str:
    """Every non-ASCII character the Chinese labels use, which a usable font must have."""
    return "".join(sorted({char for chinese, _ in LABELS.values() for char in chinese if ord(char) > 127}))


def covers(path: Path, characters: str) -> bool:
    """True when the font file has a glyph for every character (reads the font's character map)."""
    try:
        charmap = FT2Font(str(path)).get_charmap()
    except (OSError, RuntimeError, ValueError):
        return False
    return all(ord(char) in charmap for char in characters)


def _candidate_paths() -> list[tuple[Path, str]]:
    """Font files to try, best first, each with where it came from."""
    candidates: list[tuple[Path, str]] = []
    if os.environ.get(FONT_ENV):
        candidates.append((Path(os.environ[FONT_ENV]), f"环境变量 {FONT_ENV}"))
    if importlib.util.find_spec("pylopdf_fonts_zh_cn") is not None:
        import pylopdf_fonts_zh_cn

        candidates.append((Path(pylopdf_fonts_zh_cn.sans_path()), "pip 包 pylopdf-fonts-zh-cn"))
    for family in KNOWN_CJK_FAMILIES:
        try:
            path = font_manager.findfont(FontProperties(family=family), fallback_to_default=False)
        except ValueError:
            continue
        candidates.append((Path(path), f"matplotlib 字体 {family}"))
    if shutil.which("fc-list"):
        try:
            listing = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            listing = ""
        for line in sorted(listing.splitlines()):
            path = line.split(":")[0].strip()
            if path:
                candidates.append((Path(path), "fc-list :lang=zh"))
    return candidates


def find_cjk_font() -> CjkFont | None:
    """Return the first font file that exists and covers every Chinese character of the labels, or None."""
    characters = required_characters()
    for path, source in _candidate_paths():
        if path.is_file() and covers(path, characters):
            font_manager.fontManager.addfont(str(path))
            return CjkFont(path, FontProperties(fname=str(path)).get_name(), source)
        if source.startswith("环境变量"):
            logger.warning("%s=%s 不存在或缺少图里要用的汉字，继续寻找其他字体", FONT_ENV, path)
    return None


# ---------------------------------------------------------------- 画图


class Drawing:
    """Helpers that draw the diagram's pieces on one Axes with a fixed font and remember every label."""

    def __init__(self, axis, font: CjkFont | None):
        self.axis = axis
        # 中文字体在前，DejaVu Sans 兜底：字体里缺的个别符号（如果有）由 DejaVu Sans 补上。
        families = [font.family, "DejaVu Sans"] if font is not None else ["DejaVu Sans"]
        self.font = FontProperties(family=families, size=11)
        self.chinese = font is not None

    def label(self, key: str, suffix: str = "") -> str:
        chinese, english = LABELS[key]
        text = f"{chinese} {english}" if self.chinese else english
        return f"{text}{suffix}"

    def text(self, x: float, y: float, content: str, **kwargs) -> Text:
        size = kwargs.pop("size", 11)
        font = self.font.copy()
        font.set_size(size)
        return self.axis.text(x, y, content, fontproperties=font, **kwargs)

    def box(self, x: float, y: float, symbol: str, color: str, width: float = 1.2, height: float = 0.8) -> None:
        """Draw a layer with learned weights: a rounded box with its nonlinearity (σ or tanh) inside."""
        self.axis.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                                           boxstyle="round,pad=0.02,rounding_size=0.15", facecolor=color,
                                           edgecolor="black", linewidth=1.2, zorder=3))
        self.text(x, y, symbol, ha="center", va="center", size=14, zorder=4)

    def operation(self, x: float, y: float, symbol: str) -> None:
        """Draw a pointwise operation (no weights): a circle with × or +."""
        self.axis.add_patch(Circle((x, y), 0.3, facecolor="#fff2cc", edgecolor="black", linewidth=1.2, zorder=3))
        self.text(x, y, symbol, ha="center", va="center", size=14, zorder=4)

    def arrow(self, start: tuple[float, float], end: tuple[float, float], color: str = "black",
              width: float = 1.4) -> None:
        self.axis.annotate("", xy=end, xytext=start,
                           arrowprops={"arrowstyle": "-|>", "color": color, "linewidth": width,
                                       "shrinkA": 0, "shrinkB": 0, "mutation_scale": 14}, zorder=2)

    def line(self, points: list[tuple[float, float]], color: str = "black", width: float = 1.4) -> None:
        xs, ys = zip(*points)
        self.axis.plot(xs, ys, color=color, linewidth=width, zorder=1, solid_capstyle="round")


def draw_lstm_cell(path: Path, font: CjkFont | None) -> plt.Figure:
    """Draw the LSTM cell, save it to `path` as PNG, and return the (still open) Figure."""
    figure, axis = plt.subplots(figsize=(19.5, 9))
    axis.set(xlim=(0, 26), ylim=(0, 12), aspect="equal")
    axis.axis("off")
    draw = Drawing(axis, font)
    cell_color, hidden_color = "#c0392b", "#2471a3"
    gate_colors = {"forget": "#f5b7b1", "input": "#abebc6", "candidate": "#aed6f1", "output": "#f9e79f"}

    # 单元外框
    axis.add_patch(FancyBboxPatch((2.2, 1.6), 12.6, 8.0, boxstyle="round,pad=0.1,rounding_size=0.5",
                                  facecolor="#f4f6f7", edgecolor="0.4", linewidth=1.5, zorder=0))
    draw.text(8.5, 11.3, draw.label("title"), ha="center", va="center", size=20)

    # 顶部：细胞状态 c_{t-1} -> ⊗（遗忘）-> ⊕（写入）-> c_t
    cell_y = 8.4
    forget_x, write_x, out_x = 4.6, 8.2, 12.4
    draw.text(0.2, cell_y + 0.5, draw.label("cell_in"), size=11, color=cell_color)
    draw.text(0.2, cell_y - 0.6, r"$c_{t-1}$", size=15, color=cell_color)
    draw.arrow((0.2, cell_y), (forget_x - 0.3, cell_y), color=cell_color, width=2.5)
    draw.operation(forget_x, cell_y, "×")
    draw.arrow((forget_x + 0.3, cell_y), (write_x - 0.3, cell_y), color=cell_color, width=2.5)
    draw.operation(write_x, cell_y, "+")
    draw.arrow((write_x + 0.3, cell_y), (16.6, cell_y), color=cell_color, width=2.5)
    draw.text(15.0, cell_y + 0.5, draw.label("cell_out"), size=11, color=cell_color)
    draw.text(16.0, cell_y - 0.6, r"$c_t$", size=15, color=cell_color)

    # 底部：h_{t-1} 与 x_t 拼接成 [h_{t-1}, x_t]，沿一条总线送到四个门
    bus_y = 2.6
    draw.text(0.2, bus_y + 0.35, draw.label("hidden_in"), size=11, color=hidden_color)
    draw.text(0.2, bus_y - 0.75, r"$h_{t-1}$", size=15, color=hidden_color)
    draw.line([(0.2, bus_y), (3.0, bus_y)], color=hidden_color, width=2)
    draw.text(3.3, 0.15, draw.label("x", r" $x_t$"), size=12, ha="left")
    draw.arrow((3.0, 0.5), (3.0, bus_y - 0.05))
    draw.text(3.15, bus_y - 0.45, draw.label("concat", r" $[h_{t-1}, x_t]$"), size=9, color="0.3")
    gate_y = 5.0
    gates = {"forget": forget_x, "input": 6.6, "candidate": write_x, "output": 10.4}
    draw.line([(3.0, bus_y), (gates["output"], bus_y)], width=2)
    symbols = {"forget": r"$\sigma$", "input": r"$\sigma$", "candidate": r"$\tanh$", "output": r"$\sigma$"}
    names = {"forget": r" $f_t$", "input": r" $i_t$", "candidate": r" $g_t\ (\tilde{c}_t)$", "output": r" $o_t$"}
    for gate, x in gates.items():
        draw.arrow((x, bus_y), (x, gate_y - 0.4))
        draw.box(x, gate_y, symbols[gate], gate_colors[gate])
    # 门的名字写在方框下方，交错两行避免相邻标签重叠
    for index, (gate, x) in enumerate(gates.items()):
        label_y = 3.75 if index % 2 == 0 else 3.2
        draw.text(x + 0.1, label_y, draw.label(gate, names[gate]), size=10, ha="left", va="center",
                  bbox={"facecolor": "white", "edgecolor": gate_colors[gate], "boxstyle": "round,pad=0.2"}, zorder=5)

    # 遗忘门：f_t 向上乘到 c_{t-1} 上
    draw.arrow((forget_x, gate_y + 0.4), (forget_x, cell_y - 0.3))
    # 输入门 × 候选记忆：i_t ⊙ g_t，再加到细胞状态上
    product_y = 6.7
    draw.operation(write_x, product_y, "×")
    draw.line([(gates["input"], gate_y + 0.4), (gates["input"], product_y)])
    draw.arrow((gates["input"], product_y), (write_x - 0.3, product_y))
    draw.arrow((write_x, gate_y + 0.4), (write_x, product_y - 0.3))
    draw.arrow((write_x, product_y + 0.3), (write_x, cell_y - 0.3))

    # 输出：tanh(c_t) ⊙ o_t = h_t
    draw.line([(out_x, cell_y), (out_x, 7.45)], color=cell_color, width=2)
    axis.add_patch(FancyBboxPatch((out_x - 0.6, 6.65), 1.2, 0.7, boxstyle="round,pad=0.02,rounding_size=0.3",
                                  facecolor="#e8daef", edgecolor="black", linewidth=1.2, zorder=3))
    draw.text(out_x, 7.0, r"$\tanh$", ha="center", va="center", size=13, zorder=4)
    draw.operation(out_x, gate_y, "×")
    draw.arrow((out_x, 6.65), (out_x, gate_y + 0.3))
    draw.arrow((gates["output"] + 0.6, gate_y), (out_x - 0.3, gate_y))
    draw.line([(out_x, gate_y - 0.3), (out_x, 1.9), (13.8, 1.9)], color=hidden_color, width=2)
    draw.arrow((13.8, 1.9), (16.6, 1.9), color=hidden_color, width=2)
    # h_t 向上穿过细胞状态线：交叉处垫一小段底色，看起来是"跨过"而不是"接上"
    axis.plot([13.8, 13.8], [cell_y - 0.3, cell_y + 0.3], color="white", linewidth=8, zorder=2.5)
    axis.plot([13.8, 13.8], [1.9, 9.9], color=hidden_color, linewidth=2, zorder=3)
    draw.arrow((13.8, 9.9), (13.8, 10.7), color=hidden_color, width=2)
    draw.text(14.0, 10.4, r"$h_t$", size=15, color=hidden_color)
    draw.text(14.9, 2.15, draw.label("hidden_out"), size=11, color=hidden_color)
    draw.text(16.0, 1.1, r"$h_t$", size=15, color=hidden_color)

    # 右侧：公式和图例
    draw.text(18.6, 10.4, draw.label("equations"), size=13)
    for index, equation in enumerate(EQUATIONS):
        draw.text(18.6, 9.6 - index * 0.8, equation, size=12)
    for index, key in enumerate(("legend_sigma", "legend_tanh", "legend_ops")):
        draw.text(18.6, 4.0 - index * 0.7, draw.label(key), size=10, color="0.25")

    if runs.is_main_process():
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=120, bbox_inches="tight")
    return figure


def drawn_texts(figure: plt.Figure) -> list[str]:
    """Return every non-empty string drawn on the figure (labels, symbols, equations)."""
    return [artist.get_text() for artist in figure.findobj(Text) if artist.get_text().strip()]


# ---------------------------------------------------------------- 主程序


def main(argv: list[str] | None = None) -> dict:
    parser = cli.build_parser(__doc__.splitlines()[0], epochs=1, batch_size=1, lr=1e-3, shared_loop=False)
    parser.epilog = "本脚本只画图：--epochs、--lr、--batch-size、--data-dir 不起作用。"
    parser.add_argument("--require-chinese", action="store_true",
                        help="找不到中文字体时报错退出，而不是只画英文标签")
    args = parser.parse_args(argv)
    run_dir = cli.start_run(args, "lstm_cell_diagram")
    started = time.perf_counter()

    font = find_cjk_font()
    if font is None:
        message = (f"没有找到包含所需汉字的中文字体，图里只画英文标签。可以 pip install pylopdf-fonts-zh-cn，"
                   f"或安装系统中文字体（例如 apt-get install fonts-noto-cjk），或设置 {FONT_ENV}=/path/to/font.otf")
        if args.require_chinese:
            raise SystemExit(message)
        logger.warning(message)
    else:
        logger.info("中文字体：%s（%s，来自%s）", font.family, font.path, font.source)

    path = run_dir / "lstm_cell.png"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        figure = draw_lstm_cell(path, font)
    missing = [str(warning.message) for warning in caught if "missing from font" in str(warning.message)]
    for message in missing:
        logger.warning("缺字：%s", message)
    texts = drawn_texts(figure)
    plt.close(figure)

    summary = {
        "labels_drawn": len(texts),
        "missing_glyphs": len(missing),
        "chinese_labels": font is not None,
        "equations_drawn": sum(equation in texts for equation in EQUATIONS),
        "font_family": font.family if font is not None else "DejaVu Sans",
        "png_bytes": path.stat().st_size if path.is_file() else 0,
        "seconds": round(time.perf_counter() - started, 1),
    }
    runs.save_metrics(run_dir, summary)
    print(runs.markdown_table([{key: value for key, value in summary.items()}]))
    print(f"图在 {path}")
    return summary


if __name__ == "__main__":
    cli.run_script(main)
