"""Tweet Sentiment Extraction 的数据、片段解码与评分：各个片段模型和 ensemble 等脚本共用的部分

这里放的是"比赛本身"，和用哪个模型无关：
- 数据：读 Kaggle 的 train.csv（textID,text,selected_text,sentiment）和 test.csv，检查表头和情感标签。
  `make_folds` 按 sentiment 分层切 K 折。每个模型都用同样的行和 seed 调它，OOF 预测才能逐行对齐、拿来混合。
- 词与片段：一条推文的"词"就是 `text.split()` 的词，`word_spans` 给出每个词在原文里的字符区间。
  `gold_word_range` 把标注的 selected_text 对到它碰到的第一个词和最后一个词（训练目标）。
  模型对每个词给一个 start 概率和一个 end 概率；`best_word_span` 在 s <= e 中找 P_start(s) · P_end(e)
  最大的 (s, e)：对每个 e，最好的 s 是 start 概率在 0..e 上的最大值，边扫描边维护，一共 O(n)。
  `decode_word_span` 从原文切出"第 s 个词的第一个字符"到"第 e 个词的最后一个字符"，连续空格、"!!!"
  都原样保留；neutral 推文和没有词的推文原样返回。
- 评分：逐条的词级 Jaccard 再取平均（`jaccard_score`）。`baseline_jaccard` 是"整条推文原样返回"的分数。
- 预测文件的格式：oof.jsonl、test_predictions.jsonl（每行的 start_probs / end_probs：每个词一个概率）和
  比赛的 submission.csv。ensemble、pseudo_labeling、competition_report 读写的都是这个格式。

本模块不是练习，没有 main。tweet_sentiment_extraction.py 和 tweet_tfidf_spans.py 从这里导入，
tweet_sentiment_extraction 把这里的公开名字原样导出，所以两种写法都行：
    from stage2_kaggle.tweet_sentiment_extraction import load_train, decode_word_span, write_oof
    from stage2_kaggle.tweet_data import load_train, decode_word_span, write_oof
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from roadmap import data, metrics

logger = logging.getLogger(__name__)

COMPETITION = "tweet-sentiment-extraction"
DATASET_NAME = "tweet_sentiment_extraction"
SENTIMENTS = ("negative", "neutral", "positive")
TRAIN_COLUMNS = ("textID", "text", "selected_text", "sentiment")
TEST_COLUMNS = ("textID", "text", "sentiment")
KAGGLE_HINT = (f"\nKaggle 比赛数据需要登录 Kaggle 账号下载：kaggle competitions download -c {COMPETITION}，"
               f"把 train.csv、test.csv 解压到上面列出的 {DATASET_NAME}/ 文件夹里。")


# ---------------------------------------------------------------- 数据与 K 折


def _read_rows(path: Path, columns: Sequence[str]) -> list[dict[str, str]]:
    """Read a Kaggle CSV with a header into dicts of `columns`, checking the sentiment labels."""
    with open(path, encoding="utf-8-sig", newline="") as stream:
        reader = csv.DictReader(stream)
        missing = [name for name in columns if name not in (reader.fieldnames or [])]
        if missing:
            raise data.DataFormatError(f"{path} 缺少列 {', '.join(missing)}；表头是 {reader.fieldnames}，"
                                       f"应当是 {','.join(columns)}")
        rows = []
        for line_number, record in enumerate(reader, start=2):
            row = {name: record[name] or "" for name in columns}
            if row["sentiment"] not in SENTIMENTS:
                raise data.DataFormatError(f"{path} 第 {line_number} 行的 sentiment 是 {row['sentiment']!r}，"
                                           f"只能是 {', '.join(SENTIMENTS)} 之一")
            rows.append(row)
    if not rows:
        raise data.DataFormatError(f"{path} 只有表头、没有数据行；请检查文件是否下载完整")
    return rows


def _data_folder(filename: str, data_dir: str | Path | None, smoke: bool) -> Path:
    if smoke:
        return data.SAMPLES_DIR / DATASET_NAME
    return data.find_dataset(DATASET_NAME, (filename,), data_dir, hint=KAGGLE_HINT)


def load_train(data_dir: str | Path | None = None, smoke: bool = False) -> list[dict[str, str]]:
    """Read train.csv: one dict per row with textID, text, selected_text, sentiment (strings as in the file).

    Rows with an empty text are dropped (the official file has one). Raises DataNotFoundError with
    the `kaggle` command when the file is missing, DataFormatError for a wrong header or label.
    """
    path = _data_folder("train.csv", data_dir, smoke) / "train.csv"
    rows = _read_rows(path, TRAIN_COLUMNS)
    kept = [row for row in rows if row["text"].strip()]
    if len(kept) < len(rows):
        logger.info("%s：丢掉 %d 条 text 为空的行", path, len(rows) - len(kept))
    return kept


def load_test(data_dir: str | Path | None = None, smoke: bool = False) -> list[dict[str, str]]:
    """Read test.csv: one dict per row with textID, text, sentiment (every row kept: each needs a prediction)."""
    return _read_rows(_data_folder("test.csv", data_dir, smoke) / "test.csv", TEST_COLUMNS)


def make_folds(rows_or_sentiments: Sequence[Mapping[str, str] | str], n_folds: int = 5, seed: int = 42) -> np.ndarray:
    """Return the fold id (0..n_folds-1) of every row: StratifiedKFold on sentiment, shuffled with `seed`.

    Every model of this competition calls it with the same rows and seed, so their out-of-fold
    predictions line up row by row and can be blended.
    """
    from sklearn.model_selection import StratifiedKFold

    labels = [item["sentiment"] if isinstance(item, Mapping) else item for item in rows_or_sentiments]
    if n_folds < 2:
        raise ValueError(f"n_folds 至少是 2，收到 {n_folds}")
    counts = {label: labels.count(label) for label in set(labels)}
    if min(counts.values(), default=0) < n_folds:
        raise data.DataFormatError(f"每种 sentiment 至少要有 {n_folds} 条才能分 {n_folds} 折，实际：{counts}")
    folds = np.full(len(labels), -1, dtype=np.int64)
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (_, valid_index) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        folds[valid_index] = fold
    return folds


# ---------------------------------------------------------------- 词、片段与 Jaccard


def word_spans(text: str) -> list[tuple[int, int]]:
    """Return the (start, end) char range of every word of `text.split()`, in order."""
    return [match.span() for match in re.finditer(r"\S+", text)]


def gold_word_range(text: str, selected_text: str) -> tuple[int, int]:
    """Return the (first, last) word of `text.split()` that the labelled span touches.

    Some labels cut a word ("onna" of "gonna"); the whole word counts. A label that is not a
    substring of the text (or is empty) falls back to the whole text.
    """
    spans = word_spans(text)
    start = text.find(selected_text) if selected_text.strip() else -1
    if start < 0:
        return 0, max(len(spans) - 1, 0)
    end = start + len(selected_text)
    touched = [index for index, (word_start, word_end) in enumerate(spans) if word_start < end and word_end > start]
    return (touched[0], touched[-1]) if touched else (0, max(len(spans) - 1, 0))


def best_word_span(start_probs: Sequence[float], end_probs: Sequence[float]) -> tuple[int, int]:
    """Return (s, e) with s <= e maximising start_probs[s] * end_probs[e], in O(n).

    For each end e the best start is the argmax of start_probs[0..e], kept as a running maximum.
    Ties keep the earliest s and e.
    """
    if len(start_probs) != len(end_probs) or not len(start_probs):
        raise ValueError(f"start_probs 和 end_probs 的长度必须相同且不为 0：{len(start_probs)} vs {len(end_probs)}")
    best = (-1.0, 0, 0)
    best_start = 0
    for end in range(len(end_probs)):
        if start_probs[end] > start_probs[best_start]:
            best_start = end
        score = float(start_probs[best_start]) * float(end_probs[end])
        if score > best[0]:
            best = (score, best_start, end)
    return best[1], best[2]


def decode_word_span(text: str, start_probs: Sequence[float], end_probs: Sequence[float], sentiment: str) -> str:
    """Return the predicted selected_text: a slice of the ORIGINAL text, so spacing and punctuation survive.

    Neutral tweets, and texts without words, return `text` unchanged (for neutral the whole tweet
    scores a Jaccard near 0.97). Otherwise the words s..e of `best_word_span`, cut from the first
    char of word s to the last char of word e. The probability lists hold one value per word of
    `text.split()`.
    """
    spans = word_spans(text)
    if sentiment == "neutral" or not spans:
        return text
    if len(start_probs) != len(spans) or len(end_probs) != len(spans):
        raise ValueError(f"概率的长度（{len(start_probs)}、{len(end_probs)}）必须等于词数 {len(spans)}：{text!r}")
    start, end = best_word_span(start_probs, end_probs)
    return text[spans[start][0]:spans[end][1]]


def decode_rows(rows: Sequence[Mapping[str, str]], starts, ends) -> list[str]:
    """Decode the span of every row from its own start and end probabilities (`decode_word_span`)."""
    return [decode_word_span(row["text"], start, end, row["sentiment"]) for row, start, end in zip(rows, starts, ends)]


def jaccard_score(predictions: Sequence[str], targets: Sequence[str]) -> float:
    """Mean word-level Jaccard, the competition metric (`roadmap.metrics.word_jaccard` per row)."""
    if len(predictions) != len(targets) or not targets:
        raise ValueError(f"预测和标注的条数必须相同且不为 0：{len(predictions)} vs {len(targets)}")
    return float(np.mean([metrics.word_jaccard(prediction, target) for prediction, target in zip(predictions, targets)]))


def baseline_jaccard(rows: Sequence[Mapping[str, str]]) -> float:
    """Jaccard of predicting the whole text for every row."""
    return jaccard_score([row["text"] for row in rows], [row["selected_text"] for row in rows])


# ---------------------------------------------------------------- 预测文件（各模型和 ensemble 共用的格式）


def _probability_lists(values: Sequence[float]) -> list[float]:
    return [round(float(value), 6) for value in values]


def write_oof(path: Path, rows: Sequence[Mapping[str, str]], folds: Sequence[int], start_probs: Sequence[Sequence[float]],
              end_probs: Sequence[Sequence[float]], predictions: Sequence[str]) -> None:
    """Write oof.jsonl: one JSON object per training row with its fold, word-level probabilities and span."""
    with open(path, "w", encoding="utf-8") as stream:
        for row, fold, starts, ends, prediction in zip(rows, folds, start_probs, end_probs, predictions, strict=True):
            record = {"textID": row["textID"], "fold": int(fold), "sentiment": row["sentiment"], "text": row["text"],
                      "selected_text": row["selected_text"], "start_probs": _probability_lists(starts),
                      "end_probs": _probability_lists(ends), "prediction": prediction}
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_test_predictions(path: Path, rows: Sequence[Mapping[str, str]], start_probs: Sequence[Sequence[float]],
                           end_probs: Sequence[Sequence[float]], predictions: Sequence[str]) -> None:
    """Write test_predictions.jsonl: like oof.jsonl without fold and selected_text (means over fold models)."""
    with open(path, "w", encoding="utf-8") as stream:
        for row, starts, ends, prediction in zip(rows, start_probs, end_probs, predictions, strict=True):
            record = {"textID": row["textID"], "sentiment": row["sentiment"], "text": row["text"],
                      "start_probs": _probability_lists(starts), "end_probs": _probability_lists(ends),
                      "prediction": prediction}
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_submission(path: Path, rows: Sequence[Mapping[str, str]], predictions: Sequence[str]) -> None:
    """Write submission.csv in the competition's format: header textID,selected_text, every field quoted by csv."""
    with open(path, "w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, quoting=csv.QUOTE_ALL)
        writer.writerow(["textID", "selected_text"])
        for row, prediction in zip(rows, predictions, strict=True):
            writer.writerow([row["textID"], prediction])


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read oof.jsonl / test_predictions.jsonl back into a list of dicts."""
    with open(path, encoding="utf-8") as stream:
        return [json.loads(line) for line in stream if line.strip()]
