"""文本清洗：URL、HTML、特殊字符、重复字符、缩写展开，并且记住每个字符来自原文哪里（路线图：Kaggle → 文本清洗与预处理）

学什么
- 可组合的清洗步骤：每一步是一个函数 `Cleaned -> Cleaned`，`clean(text, steps)` 按顺序把它们串起来。
  步骤（STEPS）：strip_html（去标签、把 &amp; 这类实体还原成字符）、remove_urls、remove_special_characters
  （emoji 等既不是文字也不是常用标点的字符换成空格）、reduce_repeated_characters（"sooo" → "soo"，
  "!!!!" → "!!"：连续 3 个以上相同字符缩成 2 个，保留"强调"这个信号）、expand_contractions、
  normalize_whitespace（连续空白缩成一个空格，去掉首尾空白），另有 lowercase（不在默认步骤里）。
- 缩写展开只匹配完整的词：前后都不能紧挨字母、数字或撇号，所以 "were" 仍是 "were"（它不是 "we're"），
  "cant." → "cannot."，"don't" → "do not"；撇号可以是 '、’，也可以是这个数据集里常见的反引号 `（"don`t"）。
  没有撇号的写法只收不会和普通单词混淆的几个（cant、dont、im……；不收 were、ill、well、its）。
- 偏移映射（offset map）：做片段抽取（span extraction）时，模型在清洗后的文本里找到片段，答案却要从
  原文里切出来。所以清洗后的每个字符 i 都带着它在原文里的来源区间 [starts[i], ends[i])：原样保留的字符
  区间长 1；替换出来的字符（"don`t" 展开成 "do not" 的 6 个字符、"sooo" 缩成的 "soo"）全部指向被替换的
  整段原文。清洗后的片段 [a, b) 对应原文 [starts[a], ends[b-1])。两步串联时区间逐层往回查
  （第二步的 starts 指向第一步的输出，再经第一步的 starts 指回原文），所以任意多步之后映射仍然精确。
- 作为练习脚本：清洗训练文件，数每一步改动了多少行，画成柱状图；再用两个量检查映射：
  * word_roundtrip_rate：清洗后的每个词映射回原文的那一段，单独清洗后仍包含这个词的比例（应为 1）；
  * oracle_jaccard：把标注片段 selected_text 映射到清洗后的文本、再映射回原文，与原标注的词级 Jaccard
    （模型在清洗后的文本上找对了片段时，答案最好能有多好）。

怎么跑
    roadmap run text_cleaning --smoke                               # 自带的推文样本
    ROADMAP_DATA_DIR=/path/to/data roadmap run text_cleaning         # Kaggle 推文训练集
    在代码里：from stage2_kaggle.text_cleaning import clean
        cleaned = clean(" I don`t  like it!!! http://x.co")
        cleaned.text                              # "I do not like it!!"
        cleaned.original_span(2, 8)               # "don`t"（清洗后的 "do not" 在原文里的样子）

真实数据上的结果（Kaggle Tweet Sentiment Extraction 的 train.csv，23,999 条非空推文，2 核 CPU，整个脚本 9 秒）：
    步骤                          改动的行数
    strip_html                    6（0.03%，这份数据里的 HTML 实体很少）
    remove_urls                   1,130（4.7%）
    remove_special_characters     331（1.4%）
    reduce_repeated_characters    6,321（26.3%，被缩短的连续字符约一半是 "..."，其次是 "***"、"!!!"）
    expand_contractions           7,891（32.9%，"I`d" → "I would"、"couldn`t" → "could not"）
    normalize_whitespace          14,541（60.6%，大多是推文开头的空格和词之间的双空格）
    word_roundtrip_rate 1.0000：每个清洗后的词都能映射回一段原文，这段原文单独清洗后仍包含这个词。
    oracle_jaccard 0.9843：标注片段映射到清洗后的文本再映射回来，865 条（3.6%）不再完全一致。一类是标注切在
    被替换的一段中间（标注 "painful." 而原文是 "painful..."，标注 "s awesome" 而原文是 "He`s awesome"），
    映射回来的是整段；另一类是标注里含有被删掉的 URL。
"""

from __future__ import annotations

import html
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roadmap import cli, metrics, runs

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- 带偏移映射的文本


@dataclass(frozen=True)
class Cleaned:
    """A cleaned text and, for each of its chars, the char range [starts[i], ends[i]) of the original it came from."""

    text: str
    starts: tuple[int, ...]
    ends: tuple[int, ...]
    original: str

    @classmethod
    def of(cls, text: str) -> "Cleaned":
        """Wrap an uncleaned text: every char maps to itself."""
        return cls(text, tuple(range(len(text))), tuple(range(1, len(text) + 1)), text)

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        """Map the cleaned span [start, end) to the original char range it came from."""
        if not 0 <= start < end <= len(self.text):
            raise ValueError(f"片段 [{start}, {end}) 不在清洗后文本（长度 {len(self.text)}）之内，或为空")
        return self.starts[start], self.ends[end - 1]

    def original_span(self, start: int, end: int) -> str:
        """Return the original substring that the cleaned span [start, end) came from."""
        original_start, original_end = self.to_original(start, end)
        return self.original[original_start:original_end]


def substitute(cleaned: Cleaned | str, pattern: re.Pattern, replacement: str | Callable[[re.Match], str]) -> Cleaned:
    """Like `pattern.sub(replacement, text)`, and carry the offset map through.

    Unchanged chars keep their original range; every char of a replacement maps to the original
    range of the whole matched text. A match replaced by itself is left as it is.
    """
    if isinstance(cleaned, str):
        cleaned = Cleaned.of(cleaned)
    text = cleaned.text
    pieces: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    position = 0
    for match in pattern.finditer(text):
        new = replacement(match) if callable(replacement) else match.expand(replacement)
        if new == match.group(0) or match.start() == match.end():
            continue
        pieces.append(text[position:match.start()])
        starts.extend(cleaned.starts[position:match.start()])
        ends.extend(cleaned.ends[position:match.start()])
        # 替换文本的每个字符都指向被替换的整段：从第一个字符的起点到最后一个字符的终点。
        pieces.append(new)
        starts.extend([cleaned.starts[match.start()]] * len(new))
        ends.extend([cleaned.ends[match.end() - 1]] * len(new))
        position = match.end()
    if position == 0:
        return cleaned
    pieces.append(text[position:])
    starts.extend(cleaned.starts[position:])
    ends.extend(cleaned.ends[position:])
    return Cleaned("".join(pieces), tuple(starts), tuple(ends), cleaned.original)


# ---------------------------------------------------------------- 清洗步骤


HTML_TAG = re.compile(r"<[a-zA-Z/][^<>]*>")
HTML_ENTITY = re.compile(r"&(?:#\d+|#x[0-9a-fA-F]+|[a-zA-Z]+);")
URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
# 保留：文字和数字（\w，含带重音的字母）、空白、推文里常用的标点。其余（emoji、乱码、符号）换成空格。
SPECIAL_CHARACTER = re.compile(r"[^\w\s.,!?;:'`’\"()\-&%$#@/*+=<>]")
REPEATED_CHARACTER = re.compile(r"(\S)\1{2,}")
WHITESPACE_RUN = re.compile(r"\s{2,}|[^\S ]")
EDGE_WHITESPACE = re.compile(r"^\s+|\s+$")
APOSTROPHE = "['`’]"

# 小写的缩写 → 展开。键里的 ' 匹配任意一种撇号。
CONTRACTIONS = {
    "can't": "cannot", "won't": "will not", "shan't": "shall not", "ain't": "is not", "let's": "let us",
    "y'all": "you all", "i'm": "i am",
    **{f"{verb}n't": f"{verb} not" for verb in ("do", "does", "did", "is", "are", "was", "were", "has", "have", "had",
                                                "could", "would", "should", "must", "need")},
    **{f"{subject}'re": f"{subject} are" for subject in ("you", "we", "they", "who")},
    **{f"{subject}'ve": f"{subject} have" for subject in ("i", "you", "we", "they", "could", "would", "should")},
    **{f"{subject}'ll": f"{subject} will" for subject in ("i", "you", "he", "she", "we", "they", "it", "that")},
    **{f"{subject}'d": f"{subject} would" for subject in ("i", "you", "he", "she", "we", "they")},
    # 's 只展开代词和疑问词后面的（it's = it is）。名词后面的 's 多半是所有格（mom's car），所以不动。
    **{f"{subject}'s": f"{subject} is" for subject in ("it", "that", "there", "what", "he", "she", "here", "who")},
}
# 不带撇号的写法：只收不是普通英文单词的那些（"were"、"ill"、"well"、"its"、"hell" 都是词，不收）。
CONTRACTIONS_WITHOUT_APOSTROPHE = {
    "cant": "cannot", "dont": "do not", "doesnt": "does not", "didnt": "did not", "isnt": "is not",
    "wasnt": "was not", "arent": "are not", "havent": "have not", "couldnt": "could not", "wouldnt": "would not",
    "shouldnt": "should not", "im": "i am", "ive": "i have", "youre": "you are", "theyre": "they are",
    "thats": "that is", "whats": "what is",
}


def _contraction_pattern() -> re.Pattern:
    keys = sorted([*CONTRACTIONS, *CONTRACTIONS_WITHOUT_APOSTROPHE], key=len, reverse=True)
    alternatives = "|".join(re.escape(key).replace("'", APOSTROPHE) for key in keys)
    # 前后不能紧挨字母、数字或撇号：只匹配完整的词（"cant." 里的 "." 可以，"cantina" 的 "i" 不行）。
    return re.compile(rf"(?<![\w'`’])(?:{alternatives})(?![\w'`’])", re.IGNORECASE)


CONTRACTION = _contraction_pattern()


def _expand(match: re.Match) -> str:
    word = match.group(0)
    key = re.sub(APOSTROPHE, "'", word.lower())
    expansion = CONTRACTIONS.get(key) or CONTRACTIONS_WITHOUT_APOSTROPHE[key]
    if len(word) > 1 and word.isupper():
        return expansion.upper()
    if word[0].isupper():
        return expansion[0].upper() + expansion[1:]
    return expansion


def strip_html(cleaned: Cleaned | str) -> Cleaned:
    """Remove HTML tags (replaced by a space) and unescape entities (&amp; -> &, &lt;3 -> <3)."""
    without_tags = substitute(cleaned, HTML_TAG, " ")
    return substitute(without_tags, HTML_ENTITY, lambda match: html.unescape(match.group(0)))


def remove_urls(cleaned: Cleaned | str) -> Cleaned:
    """Delete http(s):// and www. links."""
    return substitute(cleaned, URL, "")


def remove_special_characters(cleaned: Cleaned | str) -> Cleaned:
    """Replace chars that are neither letters, digits, white space nor common punctuation (emoji, symbols) by a space."""
    return substitute(cleaned, SPECIAL_CHARACTER, " ")


def reduce_repeated_characters(cleaned: Cleaned | str) -> Cleaned:
    """Shorten a run of 3 or more equal chars to 2: "sooo" -> "soo", "!!!!" -> "!!"."""
    return substitute(cleaned, REPEATED_CHARACTER, r"\1\1")


def expand_contractions(cleaned: Cleaned | str) -> Cleaned:
    """Expand whole-word contractions ("don`t" -> "do not", "cant." -> "cannot."), keeping the first letter's case."""
    return substitute(cleaned, CONTRACTION, _expand)


def normalize_whitespace(cleaned: Cleaned | str) -> Cleaned:
    """Turn every run of white space into one space and strip both ends."""
    return substitute(substitute(cleaned, WHITESPACE_RUN, " "), EDGE_WHITESPACE, "")


def lowercase(cleaned: Cleaned | str) -> Cleaned:
    """Lower-case the text. The change is char for char, so the offset map stays as it is."""
    if isinstance(cleaned, str):
        cleaned = Cleaned.of(cleaned)
    lowered = cleaned.text.lower()
    if len(lowered) != len(cleaned.text):  # 个别字符（如 "İ"）小写后变长：逐字符处理，保持一一对应
        return substitute(cleaned, re.compile(r"[^\W\d_]"), lambda match: match.group(0).lower())
    return Cleaned(lowered, cleaned.starts, cleaned.ends, cleaned.original)


STEPS: dict[str, Callable[[Cleaned | str], Cleaned]] = {
    "strip_html": strip_html,
    "remove_urls": remove_urls,
    "remove_special_characters": remove_special_characters,
    "reduce_repeated_characters": reduce_repeated_characters,
    "expand_contractions": expand_contractions,
    "normalize_whitespace": normalize_whitespace,
    "lowercase": lowercase,
}
# 顺序有讲究：先还原 HTML 实体再删特殊字符（否则 &amp; 的 & 和 ; 各自留下），先删 URL 再删特殊字符
# （否则 URL 里的 ~ 之类被换成空格，URL 断成几段就认不出了），最后才整理空白。
DEFAULT_STEPS = ("strip_html", "remove_urls", "remove_special_characters", "reduce_repeated_characters",
                 "expand_contractions", "normalize_whitespace")


def clean(text: str, steps: Sequence[str] = DEFAULT_STEPS) -> Cleaned:
    """Apply the named steps of STEPS in order. The result maps every char back to `text`."""
    unknown = [name for name in steps if name not in STEPS]
    if unknown:
        raise ValueError(f"未知的清洗步骤 {unknown}；可用：{', '.join(STEPS)}")
    cleaned = Cleaned.of(text)
    for name in steps:
        cleaned = STEPS[name](cleaned)
    return cleaned


def clean_text(text: str, steps: Sequence[str] = DEFAULT_STEPS) -> str:
    """Return only the cleaned string of `clean(text, steps)`."""
    return clean(text, steps).text


def cleaned_span(cleaned: Cleaned, start: int, end: int) -> tuple[int, int] | None:
    """Map the original span [start, end) forward: the cleaned chars whose source range overlaps it.

    Returns the smallest cleaned span [a, b) that covers them, or None when cleaning removed the
    whole span (a URL, an emoji).
    """
    inside = [index for index, (source_start, source_end) in enumerate(zip(cleaned.starts, cleaned.ends))
              if source_start < end and source_end > start]
    return (inside[0], inside[-1] + 1) if inside else None


# ---------------------------------------------------------------- 脚本：在推文训练集上统计


def step_change_counts(texts: Sequence[str], steps: Sequence[str] = DEFAULT_STEPS) -> dict[str, int]:
    """Run the steps in order over each text; count, per step, the texts that step changed."""
    counts = {name: 0 for name in steps}
    for text in texts:
        cleaned = Cleaned.of(text)
        for name in steps:
            after = STEPS[name](cleaned)
            counts[name] += after.text != cleaned.text
            cleaned = after
    return counts


def word_roundtrip_rate(cleaned_texts: Sequence[Cleaned], steps: Sequence[str] = DEFAULT_STEPS) -> float:
    """Fraction of cleaned words whose mapped-back original slice, cleaned on its own, still contains the word."""
    good = total = 0
    for cleaned in cleaned_texts:
        for match in re.finditer(r"\S+", cleaned.text):
            total += 1
            good += match.group(0) in clean(cleaned.original_span(*match.span()), steps).text
    return good / total if total else 1.0


def oracle_jaccard(rows: Sequence[dict[str, str]], cleaned_texts: Sequence[Cleaned]) -> float:
    """Mean Jaccard between selected_text and its round trip: original -> cleaned span -> original."""
    scores = []
    for row, cleaned in zip(rows, cleaned_texts, strict=True):
        start = row["text"].find(row["selected_text"])
        span = cleaned_span(cleaned, start, start + len(row["selected_text"])) if start >= 0 else None
        recovered = cleaned.original_span(*span) if span else ""
        scores.append(metrics.word_jaccard(recovered, row["selected_text"]))
    return sum(scores) / len(scores)


def plot_step_counts(counts: dict[str, int], total: int, path: Path) -> None:
    from roadmap.plots import plt, save_figure

    figure, axis = plt.subplots(figsize=(7, 3.5))
    names = list(counts)
    bars = axis.barh(names[::-1], [counts[name] for name in names[::-1]], color="tab:blue")
    axis.bar_label(bars, labels=[f"{counts[name]} ({counts[name] / total:.1%})" for name in names[::-1]], padding=3)
    axis.set(xlabel=f"rows changed (of {total})", title="rows changed by each cleaning step")
    axis.set_xlim(0, max(max(counts.values(), default=0) * 1.3, 1))
    figure.tight_layout()
    save_figure(figure, path)


def build_parser():
    parser = cli.build_parser(__doc__.splitlines()[0], epochs=1, batch_size=1, lr=1.0, shared_loop=False)
    parser.add_argument("--steps", nargs="+", choices=tuple(STEPS), default=list(DEFAULT_STEPS),
                        help="按顺序执行的清洗步骤")
    parser.add_argument("--examples", type=cli.positive_int, default=5, help="打印并保存多少条清洗前后的例子")
    return parser


def main(argv: list[str] | None = None) -> dict:
    from stage2_kaggle.tweet_sentiment_extraction import load_train

    args = build_parser().parse_args(argv)
    run_dir = cli.start_run(args, "text_cleaning")
    started = time.perf_counter()
    rows = load_train(args.data_dir, args.smoke)
    if args.max_train_samples is not None:
        rows = rows[:args.max_train_samples]
    texts = [row["text"] for row in rows]

    counts = step_change_counts(texts, args.steps)
    cleaned_texts = [clean(text, args.steps) for text in texts]
    changed = [index for index, cleaned in enumerate(cleaned_texts) if cleaned.text != texts[index]]
    examples = [{"original": texts[index], "cleaned": cleaned_texts[index].text} for index in changed[:args.examples]]
    summary: dict[str, Any] = {
        "rows": len(rows),
        "rows_changed": len(changed),
        **{f"changed_{name}": count for name, count in counts.items()},
        "word_roundtrip_rate": word_roundtrip_rate(cleaned_texts, args.steps),
        "oracle_jaccard": oracle_jaccard(rows, cleaned_texts),
        "mean_chars_before": sum(map(len, texts)) / len(texts),
        "mean_chars_after": sum(len(cleaned.text) for cleaned in cleaned_texts) / len(texts),
        "seconds": round(time.perf_counter() - started, 2),
        "examples": examples,
    }
    plot_step_counts(counts, len(rows), run_dir / "rows_changed_per_step.png")
    runs.save_metrics(run_dir, summary)

    print(runs.markdown_table([{"步骤": name, "改动的行数": count, "比例": count / len(rows)} for name, count in counts.items()]))
    print(runs.markdown_table(examples, columns=["original", "cleaned"]))
    print(f"词的往返映射正确率 {summary['word_roundtrip_rate']:.4f}，标注片段往返后的 Jaccard {summary['oracle_jaccard']:.4f}；"
          f"结果目录：{run_dir}")
    return summary


if __name__ == "__main__":
    cli.run_script(main)
