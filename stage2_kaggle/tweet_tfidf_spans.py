"""TF-IDF 特征 + 逐词逻辑回归：不用神经网络的片段抽取模型（tweet_sentiment_extraction --model tfidf）

思路
- 把"找片段"拆成每个词上的两个二分类：这个词是不是片段的第一个词（start），是不是最后一个词（end）。
  训练标签来自 `gold_word_range`：标注的 selected_text 碰到的第一个词和最后一个词。
- 特征（`word_features`）：归一化后的词（`normalize_word`：小写、连续重复的字母缩短、去掉两边的标点，
  链接换成 "<url>"）、前一个词、后面两个词、从头数和从尾数的位置（4 以上并为一档）、相对位置、
  推文长度（每 5 个词一档，30 个以上并为一档）、这个词和前一个词是否以 .,!?;: 结尾，以及词的 IDF
  （在训练折上用 TfidfVectorizer 算，除以最大值归一化到 (0, 1]："the"、"i" 这样的常见词小，少见的词大）。
- 特征几乎都和情感组合（`w=happy|positive`）：同一个词在 positive 推文里常是片段的开头，在 neutral
  推文里什么都不是。线性模型自己学不出词和情感的交互，只能把交互写进特征。
  DictVectorizer 把每个词的特征字典变成一行稀疏矩阵。
- 两个分类器对每个词各给一个 P(是开头)、P(是结尾)，在一条推文里加起来一般不等于 1。除以和，得到
  "片段从哪个词开始 / 在哪个词结束"的分布。这和 transformer 模型输出的格式相同：用同一个
  `decode_word_span` 解码，也能在 ensemble 里和 transformer 的概率加权平均。
- 每折一组 (idf, DictVectorizer, start 分类器, end 分类器)，全部折存进运行目录的 tfidf_models.pkl。

真实数据上的结果：train.csv 随机取 1,500 条、按 sentiment 分层 3 折、2 核 CPU，CV Jaccard 0.614
（整条推文基线 0.580），连同预测测试集共 14 秒。C=3 是按这 1,500 条的 CV 从 0.1、0.3、1、3、10、30
里挑的（CV 0.588、0.597、0.607、0.614、0.613、0.608），所以 0.614 略偏乐观。

本模块不是练习，没有 main。通过 tweet_sentiment_extraction 运行，也可以在代码里直接用：
    roadmap run tweet_sentiment_extraction --smoke --model tfidf
    from stage2_kaggle.tweet_sentiment_extraction import TfidfSpans    # 或 from stage2_kaggle.tweet_tfidf_spans
    spans = TfidfSpans(argparse.Namespace(tfidf_c=3.0))
    spans.fit(train_rows)
    start_probs, end_probs = spans.predict(rows)    # 每条推文一个数组：每个词一个概率，和为 1
"""

from __future__ import annotations

import argparse
import functools
import logging
import pickle
import string
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from stage2_kaggle import text_cleaning
from stage2_kaggle.tweet_data import decode_rows, gold_word_range, jaccard_score

logger = logging.getLogger(__name__)

TFIDF_FILE = "tfidf_models.pkl"
PUNCTUATION = ".,!?;:"


@functools.lru_cache(maxsize=200_000)
def normalize_word(word: str) -> str:
    """Lower-case, shorten repeated chars and strip surrounding punctuation. A link becomes "<url>"."""
    cleaned = text_cleaning.clean_text(word, ("remove_urls", "reduce_repeated_characters", "lowercase"))
    return cleaned.strip(string.punctuation + "`’") or cleaned or "<url>"


def word_features(text: str, sentiment: str, idf: Mapping[str, float]) -> list[dict[str, float]]:
    """Features of every word of `text.split()`, each joined with the sentiment (the same word means a
    start in a positive tweet and nothing in a neutral one)."""
    words = text.split()
    norm = [normalize_word(word) for word in words]
    n, s = len(words), sentiment
    max_idf = max(idf.values(), default=1.0)
    rows = []
    for i, word in enumerate(norm):
        rows.append({
            f"s={s}": 1.0, f"w={word}|{s}": 1.0, f"w={word}": 1.0,
            f"prev={norm[i - 1] if i else '<s>'}|{s}": 1.0, f"next={norm[i + 1] if i + 1 < n else '</s>'}|{s}": 1.0,
            f"next2={norm[i + 2] if i + 2 < n else '</s>'}|{s}": 1.0,
            f"pos={min(i, 4)}|{s}": 1.0, f"pos_from_end={min(n - 1 - i, 4)}|{s}": 1.0,
            f"rel_pos|{s}": i / max(n - 1, 1), f"n_words={min(n, 30) // 5}|{s}": 1.0,
            f"idf|{s}": idf.get(word, max_idf) / max_idf,  # 归一化到 (0, 1]：区分常见词（the、i）和少见的词
            f"ends_punct={words[i][-1] in PUNCTUATION}|{s}": 1.0,
            f"after_punct={i > 0 and words[i - 1][-1] in PUNCTUATION}|{s}": 1.0,
        })
    return rows


class TfidfSpans:
    """Two logistic regressions per fold over word features: P(span starts here), P(span ends here)."""

    kind = "tfidf"

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.models: list[tuple] = []  # 每折一个 (idf, DictVectorizer, start 分类器, end 分类器)

    def fit(self, train_rows) -> None:
        """Train the start and end classifiers on `train_rows` and append them as the next fold model."""
        from sklearn.feature_extraction import DictVectorizer
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        tfidf = TfidfVectorizer(tokenizer=lambda text: [normalize_word(word) for word in text.split()],
                                lowercase=False, token_pattern=None).fit([row["text"] for row in train_rows])
        idf = dict(zip(tfidf.get_feature_names_out(), tfidf.idf_))
        features, start_labels, end_labels = [], [], []
        for row in train_rows:
            first, last = gold_word_range(row["text"], row["selected_text"])
            rows = word_features(row["text"], row["sentiment"], idf)
            features += rows
            start_labels += [int(i == first) for i in range(len(rows))]
            end_labels += [int(i == last) for i in range(len(rows))]
        vectorizer = DictVectorizer()
        matrix = vectorizer.fit_transform(features)
        classifiers = [LogisticRegression(C=self.args.tfidf_c, max_iter=2000).fit(matrix, labels)
                       for labels in (start_labels, end_labels)]
        self.models.append((idf, vectorizer, *classifiers))
        logger.info("TF-IDF 逻辑回归：%d 个词、%d 个特征", matrix.shape[0], matrix.shape[1])

    def train_fold(self, fold: int, train_rows, valid_rows):
        """Fit on train_rows and return (valid start probs, valid end probs, a one-record history)."""
        self.fit(train_rows)
        starts, ends = self.predict(valid_rows)
        score = jaccard_score(decode_rows(valid_rows, starts, ends), [row["selected_text"] for row in valid_rows])
        logger.info("[fold%d] 验证 Jaccard %.4f", fold, score)
        return starts, ends, [{"epoch": 1, "val_jaccard": score}]

    @staticmethod
    def _predict_with(model, rows):
        idf, vectorizer, start_classifier, end_classifier = model
        starts, ends = [], []
        for row in rows:
            features = word_features(row["text"], row["sentiment"], idf)
            if not features:
                starts.append(np.zeros(0))
                ends.append(np.zeros(0))
                continue
            matrix = vectorizer.transform(features)
            for classifier, output in ((start_classifier, starts), (end_classifier, ends)):
                scores = classifier.predict_proba(matrix)[:, 1]
                output.append(scores / scores.sum())  # 每个词各自的二分类概率，归一化成"在哪个词"的分布
        return starts, ends

    def predict(self, rows, fold: int = -1):
        """Word-level (start, end) probabilities of fold model `fold` (default: the last one trained)."""
        return self._predict_with(self.models[fold], rows)

    def save(self, run_dir: Path, fold: int) -> None:
        """Rewrite run_dir/tfidf_models.pkl with the models of folds 0..fold."""
        with open(run_dir / TFIDF_FILE, "wb") as stream:
            pickle.dump(self.models, stream)

    def finish(self) -> None:
        pass
