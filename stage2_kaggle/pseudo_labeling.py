"""伪标签：用模型对无标签数据有把握的预测扩充训练集（路线图：Kaggle → 伪标签：用测试集的伪标签扩充训练数据）

学什么
- 伪标签（pseudo labelling）分两轮：第一轮模型（teacher）预测一批没有标签的数据，挑出它有把握的那些，
  把预测当标签加进训练集；第二轮模型（student）在"真标签 + 伪标签"上重新训练。
- 陷阱（数据泄漏）：Kaggle 上常见的做法是"先在全部训练数据上训练（或取 K 个折模型的平均）→ 给测试集打伪标签 →
  再用同样的 K 折训练、看 CV"。这样 CV 会变好看，但变好的一部分是假的：给伪标签的模型见过第 k 折的验证行，
  它把这些行的标签"记"进了对测试集的预测里；第二轮训练第 k 折的模型时，伪标签又把这份记忆带回来，
  第 k 折就不再是没见过的数据了。CV 高估了，换一批真正没见过的数据，提升就缩水或消失。
  正确的做法：第 k 折 student 用的伪标签只能来自从没见过第 k 折验证行的模型，也就是第一轮第 k 折的模型
  （只在其余折上训练）。本脚本把两种做法都跑一遍（honest 与 leaky），每个模型训练过哪些行都记下来，
  并且另外留出一份带标签、两轮都没用过的 holdout，用它检验谁的 CV 说了实话。
- "有把握"怎么定：
  · Tweet（片段抽取）：解码出的片段的概率 start_probs[s] * end_probs[e] 越高越有把握；保留最高的 --keep-fraction。
    neutral 的推文按规则直接返回全文，概率不说明什么，所以不做伪标签。
  · CommonLit（回归）：回归没有"概率"，用几个模型的分歧（预测的标准差）衡量，分歧越小越有把握。
    第 k 折的委员会（committee）同样不能见过第 k 折：它是第 k 折的 teacher 加上 K-1 个内层模型，
    内层模型 j 只在除第 k、第 j 折以外的折上训练。伪标签本身取第 k 折 teacher 的预测。
- 无标签数据池（pool）：Tweet 用真实的 test.csv（3,534 条，没有标签）。CommonLit 的公开 test.csv 只有 7 条，
  所以从 train.csv 里随机留出一部分（--pool-fraction）当作无标签数据池，藏起它的标签（只用来事后量伪标签的误差）；
  这是模拟，不是比赛的真实测试集。两个比赛都再从 train.csv 留出 --holdout-fraction 当 holdout。
- 模型：两个比赛都用模型脚本里的 TF-IDF 模型（每轮几秒）。NOTE: Transformer 也能套进同样的流程
  （换掉 `Task` 的 fit / predict），在 2 核 CPU 上要跑几个小时，本脚本没有接。

怎么跑
    roadmap run pseudo_labeling --smoke                                   # 自带的 CommonLit 样本，几秒
    ROADMAP_DATA_DIR=/path/to/data roadmap run pseudo_labeling --competition commonlit
    ROADMAP_DATA_DIR=/path/to/data roadmap run pseudo_labeling --competition tweet

真实数据上的结果（TF-IDF 模型，5 折，--keep-fraction 0.5，seed 42；2 核 CPU，与其他任务共用）：
    CommonLit：train.csv 的 2,400 条分成 1,200 有标签 / 720 模拟池 / 480 holdout；每折 360 条伪标签；20 秒。
                           CV RMSE    holdout RMSE
        不用伪标签         0.7972     0.7957
        honest 伪标签      0.8006     0.7999
        leaky 伪标签       0.7969     0.7988
        选中的伪标签与藏起来的真值相比 RMSE 0.806（honest）/ 0.806（leaky），和模型本身的误差差不多：
        委员会分歧小的行并没有更准，伪标签只是把模型自己的误差再教给它一遍，所以两种伪标签都没有帮助。
    Tweet：train.csv 的 23,999 条分成 19,199 有标签 / 4,800 holdout，池是 test.csv 的 3,534 条
    （2,104 条非 neutral，每折取最有把握的 1,052 条）；450 秒。
                           CV Jaccard holdout Jaccard
        不用伪标签         0.6565     0.6555
        honest 伪标签      0.6559     0.6550
        leaky 伪标签       0.6592     0.6560
    同样的设置只用 3,000 条 train（2,400 有标签 / 600 holdout，53 秒）时泄漏更明显：
        不用伪标签 0.6309 / 0.5980，honest 0.6221 / 0.6018，leaky 0.6508 / 0.5986（CV / holdout）。
    泄漏的伪标签让 CV 提升了 0.020（全量时 0.0027），holdout 却只变了 0.0006（全量时 0.0004）：
    看 CV 会以为伪标签有用，其实是 teacher 记住的验证折标签。诚实的伪标签 CV 与 holdout 的变化方向一致，
    在 TF-IDF 这样的弱模型上基本没有提升。
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from roadmap import cli, metrics, plots, runs

logger = logging.getLogger(__name__)

VARIANTS = ("honest", "leaky")


# ---------------------------------------------------------------- 一个比赛的模型：训练、预测、打分、伪标签


@dataclass
class Task:
    """Interface of one competition's model for the two-round loop: rows are dicts, predictions one per row."""

    metric: str
    higher_is_better: bool
    id_key: str
    fit: Callable[[list[dict]], Any]
    predict: Callable[[Any, list[dict]], list]
    average: Callable[[list[list]], list]                 # 几个模型的预测逐行平均
    score: Callable[[list, list[dict]], float]
    pseudo_row: Callable[[dict, Any], dict]               # 无标签行 + 预测 -> 一条训练行
    confidence: Callable[[list, list[list]], np.ndarray]  # 伪标签来源的预测、委员会的预测 -> 每行的把握
    committee: bool                                       # confidence 是否需要一个委员会


def commonlit_task(alpha: float = 1.0, ngram_max: int = 2) -> Task:
    """CommonLit with TF-IDF + Ridge; confidence = minus the committee's standard deviation."""
    from stage2_kaggle import commonlit_readability as commonlit

    def fit(rows: list[dict]):
        return commonlit.tfidf_pipeline(alpha, ngram_max).fit([row["excerpt"] for row in rows],
                                                               [row["target"] for row in rows])

    def predict(model, rows: list[dict]) -> list[float]:
        return list(model.predict([row["excerpt"] for row in rows]))

    def confidence(_label_predictions: list, committee: list[list]) -> np.ndarray:
        return -np.std(np.array(committee, dtype=float), axis=0)  # (n_models, n_rows) -> (n_rows,)

    return Task(metric="rmse", higher_is_better=False, id_key="id", fit=fit, predict=predict,
                average=lambda predictions: list(np.mean(np.array(predictions, dtype=float), axis=0)),
                score=lambda predictions, rows: metrics.rmse(predictions, [row["target"] for row in rows]),
                pseudo_row=lambda row, prediction: {**row, "target": float(prediction), "pseudo": True},
                confidence=confidence, committee=True)


def tweet_task(tfidf_c: float = 3.0) -> Task:
    """Tweet spans with the TF-IDF span model; confidence = probability of the decoded span."""
    from stage2_kaggle import tweet_sentiment_extraction as tweet

    def fit(rows: list[dict]):
        spans = tweet.TfidfSpans(argparse.Namespace(tfidf_c=tfidf_c))
        spans.fit(rows)
        return spans

    def decode(row: dict, pair) -> str:
        return tweet.decode_word_span(row["text"], pair[0], pair[1], row["sentiment"])

    def average(predictions: list[list]) -> list:
        return [(np.mean([pairs[0] for pairs in row], axis=0), np.mean([pairs[1] for pairs in row], axis=0))
                for row in zip(*predictions)]

    def score(predictions: list, rows: list[dict]) -> float:
        return tweet.jaccard_score([decode(row, pair) for row, pair in zip(rows, predictions)],
                                   [row["selected_text"] for row in rows])

    def confidence(label_predictions: list, _committee: list[list]) -> np.ndarray:
        values = []
        for start, end in label_predictions:
            if not len(start):
                values.append(-math.inf)
                continue
            s, e = tweet.best_word_span(start, end)
            values.append(float(start[s] * end[e]))
        return np.array(values)

    def pseudo_row(row: dict, pair) -> dict:
        return {**row, "selected_text": decode(row, pair), "pseudo": True}

    return Task(metric="jaccard", higher_is_better=True, id_key="textID",
                fit=fit, predict=lambda model, rows: list(zip(*model.predict(rows))),
                average=average, score=score, pseudo_row=pseudo_row, confidence=confidence, committee=False)


# ---------------------------------------------------------------- 两轮训练


def select_confident(confidence: np.ndarray, keep_fraction: float, eligible: np.ndarray | None = None) -> np.ndarray:
    """Return the indices of the `keep_fraction` most confident eligible rows (most confident first)."""
    eligible = np.isfinite(confidence) if eligible is None else eligible & np.isfinite(confidence)
    candidates = np.flatnonzero(eligible)
    keep = int(math.ceil(keep_fraction * len(candidates)))
    order = candidates[np.argsort(-confidence[candidates], kind="stable")]
    return order[:keep]


class ModelLog:
    """Fits models through `task.fit` and records which labelled ids each one was trained on."""

    def __init__(self, task: Task):
        self.task = task
        self.trained_on: dict[str, set[str]] = {}

    def fit(self, name: str, rows: list[dict]):
        self.trained_on[name] = {row[self.task.id_key] for row in rows if not row.get("pseudo")}
        return self.task.fit(rows)


def pseudo_label_experiment(task: Task, labelled: list[dict], folds: np.ndarray, pool: list[dict],
                            holdout: list[dict], *, keep_fraction: float = 0.5,
                            variants: Sequence[str] = VARIANTS, eligible: np.ndarray | None = None) -> dict[str, Any]:
    """Run round one (teachers) and, per variant, round two (students); score CV and holdout.

    honest: fold k's pseudo labels (and its committee) come only from models trained without fold k.
    leaky:  the pseudo labels come from one model trained on every labelled row, and the committee
            is the K fold teachers. Every one of these models saw fold k.
    Returns the scores, the pseudo labels per fold, and `sources`: the models behind each fold's pseudo
    labels with the labelled ids each was trained on (`trained_on`).
    """
    log = ModelLog(task)
    n_folds = int(folds.max()) + 1
    fold_rows = [[row for row, fold in zip(labelled, folds) if fold == k] for k in range(n_folds)]
    train_rows = [[row for row, fold in zip(labelled, folds) if fold != k] for k in range(n_folds)]

    # 第一轮：第 k 折的 teacher 只在其余折上训练
    teachers = [log.fit(f"teacher_{k}", train_rows[k]) for k in range(n_folds)]
    pool_by_teacher = [task.predict(teacher, pool) for teacher in teachers]
    result: dict[str, Any] = {"baseline": _score_round(task, teachers, fold_rows, folds, labelled, holdout)}

    sources: dict[str, list[tuple[list, list[list], list[str]]]] = {}  # 变体 -> 每折（伪标签、委员会、来源模型名）
    if "honest" in variants:
        sources["honest"] = []
        for k in range(n_folds):
            committee, names = [pool_by_teacher[k]], [f"teacher_{k}"]
            if task.committee:
                for j in range(n_folds):
                    if j == k:
                        continue
                    name = f"inner_{k}_{j}"
                    rows = [row for row, fold in zip(labelled, folds) if fold not in (k, j)]
                    committee.append(task.predict(log.fit(name, rows), pool))
                    names.append(name)
            sources["honest"].append((pool_by_teacher[k], committee, names))
    if "leaky" in variants:
        everything = task.predict(log.fit("teacher_all", labelled), pool)
        names = ["teacher_all"] + [f"teacher_{k}" for k in range(n_folds)]
        sources["leaky"] = [(everything, [everything, *pool_by_teacher], names)] * n_folds

    for variant, per_fold in sources.items():
        students, chosen, provenance = [], [], []
        for k, (label_predictions, committee, names) in enumerate(per_fold):
            confidence = task.confidence(label_predictions, committee)
            picked = select_confident(confidence, keep_fraction, eligible)
            pseudo = [task.pseudo_row(pool[index], label_predictions[index]) for index in picked]
            students.append(log.fit(f"student_{variant}_{k}", train_rows[k] + pseudo))
            chosen.append(picked)
            validation_ids = {row[task.id_key] for row in fold_rows[k]}
            provenance.append({"fold": k, "n_pseudo": len(pseudo), "models": names,
                               "models_saw_fold": any(log.trained_on[name] & validation_ids for name in names)})
        result[variant] = _score_round(task, students, fold_rows, folds, labelled, holdout)
        result[variant].update(pseudo_rows=[[int(index) for index in picked] for picked in chosen],
                               sources=provenance,
                               pseudo_labels=[[label_predictions[index] for index in picked]
                                              for (label_predictions, _, _), picked in zip(per_fold, chosen)])
    result["trained_on"] = log.trained_on
    return result


def _score_round(task: Task, models: list, fold_rows: list[list[dict]], folds: np.ndarray, labelled: list[dict],
                 holdout: list[dict]) -> dict[str, Any]:
    """CV over the out-of-fold predictions of the K models, and the holdout score of their average."""
    oof: list = [None] * len(labelled)
    fold_scores = []
    for k, model in enumerate(models):
        predictions = task.predict(model, fold_rows[k])
        fold_scores.append(task.score(predictions, fold_rows[k]))
        for index, prediction in zip(np.flatnonzero(folds == k), predictions):
            oof[index] = prediction
    holdout_predictions = task.average([task.predict(model, holdout) for model in models])
    return {"cv": task.score(oof, labelled), "fold_scores": fold_scores,
            "holdout": task.score(holdout_predictions, holdout)}


# ---------------------------------------------------------------- 数据：有标签 / 无标签池 / holdout


def split_rows(n_rows: int, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Shuffle row indices with `seed` and cut off parts of the given fractions; the rest comes last."""
    order = np.random.default_rng(seed).permutation(n_rows)
    parts, start = [], 0
    for fraction in fractions:
        size = int(round(fraction * n_rows))
        parts.append(np.sort(order[start:start + size]))
        start += size
    parts.append(np.sort(order[start:]))
    return parts


def load_commonlit(args: argparse.Namespace) -> tuple[list[dict], list[dict], list[dict], np.ndarray]:
    """Labelled rows, a simulated pool (train rows with labels hidden) and a holdout, from train.csv."""
    from stage2_kaggle import commonlit_readability as commonlit

    frame = commonlit.select_rows(commonlit.load_train(args.data_dir, args.smoke), args.max_train_samples, args.seed)
    rows = [{"id": row.id, "excerpt": row.excerpt, "target": float(row.target)} for row in frame.itertuples()]
    pool_index, holdout_index, labelled_index = split_rows(len(rows), (args.pool_fraction, args.holdout_fraction), args.seed)
    labelled = [rows[index] for index in labelled_index]
    # 池里的行藏起标签：真实值另存，只用来事后量伪标签的误差
    pool = [{"id": rows[index]["id"], "excerpt": rows[index]["excerpt"], "hidden_target": rows[index]["target"]}
            for index in pool_index]
    holdout = [rows[index] for index in holdout_index]
    folds = commonlit.make_folds([row["target"] for row in labelled], args.n_folds, args.seed)
    return labelled, pool, holdout, folds


def load_tweet(args: argparse.Namespace) -> tuple[list[dict], list[dict], list[dict], np.ndarray]:
    """Labelled rows and a holdout from train.csv; the pool is the real test.csv (no labels)."""
    from stage2_kaggle import tweet_sentiment_extraction as tweet

    train = tweet.load_train(args.data_dir, args.smoke)
    if args.max_train_samples is not None and args.max_train_samples < len(train):
        chosen = np.sort(np.random.default_rng(args.seed).choice(len(train), args.max_train_samples, replace=False))
        train = [train[index] for index in chosen]
    holdout_index, labelled_index = split_rows(len(train), (args.holdout_fraction,), args.seed)
    labelled = [train[index] for index in labelled_index]
    pool = tweet.load_test(args.data_dir, args.smoke)
    if args.max_pool_samples is not None:
        pool = pool[:args.max_pool_samples]
    return labelled, pool, [train[index] for index in holdout_index], tweet.make_folds(labelled, args.n_folds, args.seed)


# ---------------------------------------------------------------- 图与主流程


def plot_cv_vs_holdout(result: dict[str, Any], metric: str, path: Path) -> Path:
    """Grouped bars: CV and holdout score of the baseline and each pseudo-label variant."""
    import matplotlib.pyplot as plt

    names = [name for name in ("baseline", *VARIANTS) if name in result]
    positions = np.arange(len(names))
    figure, axis = plt.subplots(figsize=(6, 4))
    cv = [result[name]["cv"] for name in names]
    holdout = [result[name]["holdout"] for name in names]
    axis.bar(positions - 0.2, cv, width=0.4, label="CV (out-of-fold)")
    axis.bar(positions + 0.2, holdout, width=0.4, label="holdout (never used)")
    values = cv + holdout
    spread = max(max(values) - min(values), 1e-3)
    axis.set_ylim(min(values) - spread, max(values) + spread)
    axis.set_xticks(positions, ["no pseudo labels" if name == "baseline" else f"{name} pseudo labels" for name in names])
    axis.set(ylabel=metric, title=f"pseudo labelling: CV vs holdout {metric}")
    axis.grid(alpha=0.3, axis="y")
    axis.legend()
    return plots.save_figure(figure, path)


def build_argument_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser("伪标签：两轮训练，比较不用伪标签、诚实的伪标签和泄漏的伪标签的 CV 与 holdout"
                              "（TF-IDF 模型；--epochs、--lr 等选项不起作用）",
                              epochs=1, batch_size=32, lr=1e-3, shared_loop=False)
    parser.add_argument("--competition", choices=("commonlit", "tweet"), default="commonlit", help="比赛")
    parser.add_argument("--n-folds", type=cli.positive_int, default=5, help="交叉验证的折数 K")
    parser.add_argument("--keep-fraction", type=float, default=0.5, help="无标签池里最有把握的多少比例做伪标签")
    parser.add_argument("--holdout-fraction", type=float, default=0.2, help="train.csv 里留作 holdout 的比例")
    parser.add_argument("--pool-fraction", type=float, default=0.3,
                        help="commonlit：train.csv 里藏起标签、当作无标签池的比例")
    parser.add_argument("--max-pool-samples", type=cli.positive_int, default=None,
                        help="tweet：最多用 test.csv 的前多少条当无标签池")
    parser.add_argument("--alpha", type=cli.positive_float, default=1.0, help="commonlit：Ridge 的 L2 正则化强度")
    parser.add_argument("--tfidf-c", type=cli.positive_float, default=3.0, help="tweet：逐词逻辑回归的正则化倒数 C")
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_argument_parser()
    args = parser.parse_args(argv)
    for name in ("keep_fraction", "holdout_fraction", "pool_fraction"):
        if not 0 < getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} 要在 0 和 1 之间")
    if args.smoke:
        args.n_folds = min(args.n_folds, 3)
    run_dir = cli.start_run(args, "pseudo_labeling")
    started = time.perf_counter()

    if args.competition == "tweet":
        task = tweet_task(args.tfidf_c)
        labelled, pool, holdout, folds = load_tweet(args)
        eligible = np.array([row["sentiment"] != "neutral" for row in pool])
    else:
        task = commonlit_task(args.alpha)
        labelled, pool, holdout, folds = load_commonlit(args)
        eligible = None
    logger.info("有标签 %d 条（%d 折）、无标签池 %d 条、holdout %d 条", len(labelled), args.n_folds, len(pool), len(holdout))

    result = pseudo_label_experiment(task, labelled, folds, pool, holdout, keep_fraction=args.keep_fraction,
                                     eligible=eligible)
    plot_cv_vs_holdout(result, task.metric, run_dir / "cv_vs_holdout.png")

    sign = 1 if task.higher_is_better else -1
    summary: dict[str, Any] = {"competition": args.competition, "model": "tfidf", "metric": task.metric,
                               "n_labelled": len(labelled), "n_pool": len(pool), "n_holdout": len(holdout),
                               "n_folds": args.n_folds, "keep_fraction": args.keep_fraction,
                               "pool_is_simulated": args.competition == "commonlit"}
    table = []
    for name in ("baseline", *VARIANTS):
        part = result[name]
        summary[f"{name}_cv_{task.metric}"] = part["cv"]
        summary[f"{name}_holdout_{task.metric}"] = part["holdout"]
        summary[f"{name}_fold_{task.metric}"] = part["fold_scores"]
        row = {"variant": name, f"CV {task.metric}": part["cv"], f"holdout {task.metric}": part["holdout"]}
        if name != "baseline":
            summary[f"{name}_n_pseudo"] = [source["n_pseudo"] for source in part["sources"]]
            summary[f"{name}_sources_saw_validation_fold"] = [source["models_saw_fold"] for source in part["sources"]]
            summary[f"{name}_cv_gain"] = sign * (part["cv"] - result["baseline"]["cv"])
            summary[f"{name}_holdout_gain"] = sign * (part["holdout"] - result["baseline"]["holdout"])
            row["CV 提升"] = summary[f"{name}_cv_gain"]
            row["holdout 提升"] = summary[f"{name}_holdout_gain"]
            row["伪标签来源见过验证折"] = any(summary[f"{name}_sources_saw_validation_fold"])
        table.append(row)
    if args.competition == "commonlit":
        # 模拟的池有藏起来的真标签：量一下被选中的伪标签离真值多远
        for name in VARIANTS:
            errors = [label - pool[index]["hidden_target"] for picked, labels in
                      zip(result[name]["pseudo_rows"], result[name]["pseudo_labels"]) for index, label in zip(picked, labels)]
            summary[f"{name}_pseudo_label_rmse"] = float(np.sqrt(np.mean(np.square(errors)))) if errors else math.nan
    summary["seconds"] = round(time.perf_counter() - started, 1)
    print(runs.markdown_table(table))
    runs.save_metrics(run_dir, summary)
    return summary


if __name__ == "__main__":
    cli.run_script(main)
