"""模型融合：在 out-of-fold 预测上找加权平均的权重（路线图：Kaggle → 模型融合：BERT 与 RoBERTa 预测的加权平均）

学什么
- 融合（ensembling）读的是各个模型运行目录里的 out-of-fold（OOF）预测：K 折交叉验证里，每条训练行
  都由一个没见过它的模型预测过。只有这些预测能拿来挑权重；用训练集上的拟合值挑，会偏向过拟合最重的模型。
- 所有模型必须用同一套折（同样的 id、同样的 fold）：读文件时逐条核对（prediction_files.py），对不上就用中文报错停下。
- 权重约束在单纯形（simplex）上：w_i >= 0、Σ w_i = 1。
  CommonLit（回归、RMSE）：min_w mean((P w - y)^2) 是凸的二次规划，用 scipy 的 SLSQP 直接求解。
  Tweet（片段抽取、Jaccard）：融合的是逐词的 start/end 概率 Σ_i w_i p_i，再用 `decode_word_span` 解出片段，
  Jaccard 随权重是阶梯状的（不可导），所以在单纯形上网格搜索（2、3 个模型），更多模型时做坐标搜索。
  单个模型就是单纯形的顶点，两种搜索都把顶点算进去，所以融合在拟合它的数据上不会比最好的单模型差。
- 诚实的对照：在全部 OOF 上挑出的权重，再拿同样的 OOF 打分，是样本内（in-sample）的数字，偏乐观。
  嵌套检查（nested check）：对每一折 k，只用其余折的 OOF 挑权重，再在第 k 折上打分；
  把 K 折的留出分数合起来，才是融合真正能带来的提升。metrics.json 里两种数字和每折的权重都有。
- 输出：融合后的 submission.csv、oof（格式与单模型相同，可以接着融合）、test_predictions、metrics.json、
  两个模型时权重-分数曲线图，以及单模型 vs 融合的柱状图。

路线图写的是 BERT + RoBERTa。离线只有 all-MiniLM-L6-v2 一个真实的预训练编码器，所以这里融合的两个模型是
微调的 MiniLM 和 TF-IDF 模型；联网时给模型脚本加 `--model roberta-base`（或 bert-base-uncased）就换成路线图里的模型，
本脚本不用改，`--runs` 可以给任意多个运行目录。

怎么跑
    roadmap run ensemble --smoke          # 先用 --smoke 跑 CommonLit 的两个模型脚本（极小模型 + TF-IDF），再融合
    roadmap run commonlit_readability --model <MiniLM 文件夹> --output-dir runs/cl_minilm
    roadmap run commonlit_readability --model tfidf --output-dir runs/cl_tfidf
    roadmap run ensemble --competition commonlit --runs runs/cl_minilm runs/cl_tfidf
    roadmap run ensemble --competition tweet --runs runs/tw_minilm runs/tw_tfidf

真实数据上的结果（2 核 CPU，与其他任务共用；两个模型脚本都用 seed 42、同样的行和折；融合本身 3-4 秒）：
    CommonLit：train.csv 里随机 600 条、3 折。MiniLM：max_length 192、2 个 epoch、batch 16、lr 1e-4（584 秒）；
    TF-IDF + Ridge（2 秒）。
        模型                                 OOF RMSE    TF-IDF 的权重
        MiniLM                               0.6302
        TF-IDF + Ridge                       0.8613
        融合，全部 OOF 挑权重（样本内）      0.6298      0.038
        融合，嵌套（其余折挑权重）           0.6301      每折 0.025 / 0.056 / 0.032
    Tweet：train.csv 里 1,500 条、3 折。MiniLM：max_length 96、2 个 epoch、batch 16、lr 1e-4（424 秒）；
    TF-IDF 逐词逻辑回归（11 秒）；整条推文当预测 0.5797。
        模型                                 OOF Jaccard TF-IDF 的权重
        MiniLM                               0.6373
        TF-IDF                               0.6137
        融合，全部 OOF 挑权重（样本内）      0.6382      0.35
        融合，嵌套（其余折挑权重）           0.6303      每折 0.00 / 0.45 / 0.35
    两个都是诚实的坏消息：CommonLit 上 TF-IDF 差得太多，融合几乎只用 MiniLM，提升只有 0.0004（嵌套后 0.0001）；
    Tweet 上样本内看着提升了 0.0009，嵌套检查却比单独的 MiniLM 低 0.007：Jaccard 随权重的曲线锯齿很多
    （weight_curve.png），1,500 条上挑出的权重主要是在拟合噪声，每折挑出的权重也各不相同。
    融合要真有用，需要两个水平接近、错误不相关的模型（比如联网时的 BERT 和 RoBERTa）和更多的 OOF 行。
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize

from roadmap import cli, metrics, plots, runs
# 其他脚本和测试从本文件导入这些名字，所以没用到的也原样导出。
from stage2_kaggle.prediction_files import (  # noqa: F401
    COMPETITIONS, OOF_FILES, TEST_FILES, ModelRun, align_runs, read_commonlit_run, read_tweet_run)

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- 单纯形上的权重搜索


def fit_rmse_weights(predictions: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Return w >= 0 with Σw = 1 minimising mean((P w - y)^2); P is (n_rows, n_models).

    A convex quadratic program; SLSQP solves it from the uniform start. The vertices (single models)
    are checked too, so the result is never worse than the best single model on these rows.
    """
    predictions, targets = np.asarray(predictions, dtype=float), np.asarray(targets, dtype=float)
    n_models = predictions.shape[1]
    gram = predictions.T @ predictions / len(targets)  # (m, m)
    cross = predictions.T @ targets / len(targets)     # (m,)

    def loss(w: np.ndarray) -> float:  # mean((Pw - y)^2) 去掉常数 mean(y^2)
        return float(w @ gram @ w - 2 * w @ cross)

    def gradient(w: np.ndarray) -> np.ndarray:
        return 2 * gram @ w - 2 * cross

    result = minimize(loss, np.full(n_models, 1 / n_models), jac=gradient, method="SLSQP",
                      bounds=[(0.0, 1.0)] * n_models,
                      constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1, "jac": lambda w: np.ones_like(w)}],
                      options={"ftol": 1e-12, "maxiter": 500})
    weights = project_to_simplex(result.x)
    candidates = [weights, *np.eye(n_models)]
    return min(candidates, key=loss)


def project_to_simplex(weights: np.ndarray) -> np.ndarray:
    """Clip tiny negative solver noise and renormalise so the weights sum to exactly 1."""
    weights = np.clip(np.asarray(weights, dtype=float), 0.0, None)
    return weights / weights.sum()


def simplex_grid(n_models: int, step: float) -> np.ndarray:
    """Return every weight vector with entries in {0, step, 2*step, ..., 1} that sums to 1, shape (n_points, n_models)."""
    parts = round(1 / step)
    if not math.isclose(parts * step, 1.0):
        raise ValueError(f"网格步长 {step} 要能整除 1（例如 0.05、0.1）")
    points = [counts for counts in itertools.product(range(parts + 1), repeat=n_models - 1) if sum(counts) <= parts]
    return np.array([[*counts, parts - sum(counts)] for counts in points], dtype=float) / parts


def search_simplex(score: Callable[[np.ndarray], float], n_models: int, *, step: float = 0.05,
                   max_grid_models: int = 3) -> np.ndarray:
    """Maximise a (possibly non-smooth) `score(w)` over the simplex.

    Up to `max_grid_models` models: exhaustive grid with spacing `step` (3 models, step 0.05: 231 points).
    More models: coordinate search. It starts from the best of the uniform blend and the vertices, moves
    weight `delta` from one model to another while that helps, and halves `delta` down to `step / 4`.
    """
    if n_models == 1:
        return np.ones(1)
    if n_models <= max_grid_models:
        grid = simplex_grid(n_models, step)
        values = [score(w) for w in grid]
        return grid[int(np.argmax(values))]
    starts = [np.full(n_models, 1 / n_models), *np.eye(n_models)]
    best = max(starts, key=score)
    best_value, delta = score(best), 2 * step
    while delta >= step / 4 - 1e-12:
        improved = False
        for source, target in itertools.permutations(range(n_models), 2):
            moved = min(delta, best[source])
            if moved <= 0:
                continue
            candidate = best.copy()
            candidate[source] -= moved
            candidate[target] += moved
            value = score(candidate)
            if value > best_value + 1e-12:
                best, best_value, improved = candidate, value, True
        if not improved:
            delta /= 2
    return best


# ---------------------------------------------------------------- 两种比赛的融合


class RegressionBlend:
    """CommonLit: blended prediction P w, scored by RMSE (lower is better)."""

    metric = "rmse"
    higher_is_better = False

    def __init__(self, predictions: np.ndarray, targets: np.ndarray):
        self.predictions, self.targets = predictions, targets  # (n, m), (n,)

    def row_values(self, weights: np.ndarray) -> np.ndarray:
        return (self.predictions @ weights - self.targets) ** 2

    @staticmethod
    def aggregate(values: np.ndarray) -> float:
        return float(np.sqrt(np.mean(values)))

    def fit(self, mask: np.ndarray) -> np.ndarray:
        return fit_rmse_weights(self.predictions[mask], self.targets[mask])


class SpanBlend:
    """Tweet: blended word probabilities Σ w_i p_i decoded by `decode`, scored by word Jaccard (higher is better)."""

    metric = "jaccard"
    higher_is_better = True

    def __init__(self, probs: list[list[tuple[np.ndarray, np.ndarray]]], rows: list[dict], decode: Callable,
                 step: float = 0.05):
        self.rows, self.decode, self.step = rows, decode, step
        self.n_models = len(probs)
        self.start, self.end, self.lengths = stack_word_probs(probs)
        self._cache: dict[tuple, np.ndarray] = {}

    def spans(self, weights: np.ndarray) -> list[str]:
        start = np.tensordot(weights, self.start, axes=1)  # (m,) · (m, n, L) -> (n, L)
        end = np.tensordot(weights, self.end, axes=1)
        return [self.decode(row["text"], start[index, :length], end[index, :length], row["sentiment"])
                for index, (row, length) in enumerate(zip(self.rows, self.lengths))]

    def row_values(self, weights: np.ndarray) -> np.ndarray:
        key = tuple(np.round(weights, 9))
        if key not in self._cache:  # 网格上的同一组权重在嵌套检查的每一折里都会再用到
            self._cache[key] = np.array([metrics.word_jaccard(span, row["selected_text"])
                                         for span, row in zip(self.spans(weights), self.rows)])
        return self._cache[key]

    @staticmethod
    def aggregate(values: np.ndarray) -> float:
        return float(np.mean(values))

    def fit(self, mask: np.ndarray) -> np.ndarray:
        return search_simplex(lambda w: self.aggregate(self.row_values(w)[mask]), self.n_models, step=self.step)


def stack_word_probs(probs: list[list[tuple[np.ndarray, np.ndarray]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pad per-row word probabilities of m models into (m, n, L) start/end arrays and the word counts (n,)."""
    lengths = np.array([len(start) for start, _ in probs[0]])
    width = max(1, int(lengths.max()))
    start = np.zeros((len(probs), len(lengths), width))
    end = np.zeros_like(start)
    for model, pairs in enumerate(probs):
        for row, (row_start, row_end) in enumerate(pairs):
            start[model, row, :len(row_start)] = row_start
            end[model, row, :len(row_end)] = row_end
    return start, end, lengths


def evaluate_blend(blend, folds: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """Fit weights on all OOF rows (in-sample) and per fold on the other folds (nested); score both honestly."""
    everything = np.ones(len(folds), dtype=bool)
    weights = blend.fit(everything)
    vertices = np.eye(len(names))
    result: dict[str, Any] = {
        "weights": dict(zip(names, weights.tolist())),
        "single": {name: blend.aggregate(blend.row_values(vertex)) for name, vertex in zip(names, vertices)},
        "blend_in_sample": blend.aggregate(blend.row_values(weights)),
        "fold_weights": [], "fold_blend": [], "fold_single": {name: [] for name in names},
    }
    held_out = np.empty(len(folds))
    for fold in sorted(set(folds.tolist())):
        rows = folds == fold
        fold_weights = blend.fit(~rows)  # 只用其余折挑权重：第 fold 折对权重一无所知
        held_out[rows] = blend.row_values(fold_weights)[rows]
        result["fold_weights"].append(dict(zip(names, fold_weights.tolist())))
        result["fold_blend"].append(blend.aggregate(held_out[rows]))
        for name, vertex in zip(names, vertices):
            result["fold_single"][name].append(blend.aggregate(blend.row_values(vertex)[rows]))
    result["blend_nested"] = blend.aggregate(held_out)
    pick = max if blend.higher_is_better else min
    result["best_single"] = pick(result["single"], key=result["single"].get)
    sign = 1 if blend.higher_is_better else -1
    best = result["single"][result["best_single"]]
    result["gain_in_sample"] = sign * (result["blend_in_sample"] - best)
    result["gain_nested"] = sign * (result["blend_nested"] - best)
    return result


# ---------------------------------------------------------------- 写结果


def write_commonlit_outputs(run_dir: Path, model_runs: list[ModelRun], weights: np.ndarray) -> None:
    """Write oof.csv, test_predictions.csv and submission.csv with the model script's writers (same format)."""
    commonlit = competition_module("commonlit")
    first = model_runs[0]
    test = np.column_stack([run.test for run in model_runs]) @ weights
    commonlit.write_oof(run_dir, first.ids, first.folds, [row["target"] for row in first.rows],
                        np.column_stack([run.oof for run in model_runs]) @ weights)
    commonlit.write_test_predictions(run_dir, first.test_ids, test)
    commonlit.write_submission(run_dir, first.test_ids, test)


def _blend_pairs(model_runs: list[ModelRun], weights: np.ndarray, attribute: str) -> list[tuple[np.ndarray, np.ndarray]]:
    per_model = [getattr(run, attribute) for run in model_runs]
    return [(sum(w * pairs[0] for w, pairs in zip(weights, row)), sum(w * pairs[1] for w, pairs in zip(weights, row)))
            for row in zip(*per_model)]


def write_tweet_outputs(run_dir: Path, model_runs: list[ModelRun], weights: np.ndarray, decode: Callable) -> None:
    """Write oof.jsonl, test_predictions.jsonl and submission.csv with the model script's writers (same format)."""
    tweet = competition_module("tweet")
    first = model_runs[0]
    for attribute, rows, ids in (("oof", first.rows, first.ids), ("test", first.test_rows, first.test_ids)):
        pairs = _blend_pairs(model_runs, weights, attribute)
        rows = [{"textID": row_id, **row} for row_id, row in zip(ids, rows)]
        starts, ends = [start for start, _ in pairs], [end for _, end in pairs]
        spans = [decode(row["text"], start, end, row["sentiment"]) for row, start, end in zip(rows, starts, ends)]
        if attribute == "oof":
            tweet.write_oof(run_dir / "oof.jsonl", rows, first.folds, starts, ends, spans)
        else:
            tweet.write_test_predictions(run_dir / "test_predictions.jsonl", rows, starts, ends, spans)
            tweet.write_submission(run_dir / "submission.csv", rows, spans)


def plot_blend(run_dir: Path, blend, names: Sequence[str], result: dict[str, Any], step: float) -> list[Path]:
    """Bar chart of single models vs the blend; for two models also the OOF score against the weight."""
    import matplotlib.pyplot as plt

    figures = []
    labels = [*names, "blend (in-sample)", "blend (nested)"]
    values = [*result["single"].values(), result["blend_in_sample"], result["blend_nested"]]
    figure, axis = plt.subplots(figsize=(1.4 * len(labels) + 2, 4))
    axis.bar(range(len(labels)), values, color=["tab:gray"] * len(names) + ["tab:blue", "tab:green"])
    axis.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    spread = max(values) - min(values)
    axis.set_ylim(min(values) - max(spread, 1e-3), max(values) + max(spread, 1e-3))
    axis.set(ylabel=f"OOF {blend.metric}", title=f"single models vs blend (OOF {blend.metric})")
    figures.append(plots.save_figure(figure, run_dir / "blend_vs_single.png"))
    if len(names) == 2:
        grid = simplex_grid(2, step)
        curve = [blend.aggregate(blend.row_values(w)) for w in grid]
        figure, axis = plt.subplots(figsize=(6, 4))
        axis.plot(grid[:, 1], curve, marker="o", label="all OOF rows")
        chosen = result["weights"][names[1]]
        axis.axvline(chosen, color="tab:blue", linestyle="--", label=f"chosen w = {chosen:.2f}")
        for fold_weights in result["fold_weights"]:
            axis.axvline(fold_weights[names[1]], color="tab:green", alpha=0.4, linewidth=1)
        axis.plot([], [], color="tab:green", alpha=0.4, label="weights fit per fold (nested)")
        axis.set(xlabel=f"weight of {names[1]} (1 - weight of {names[0]})", ylabel=f"OOF {blend.metric}",
                 title="blend score vs weight")
        axis.grid(alpha=0.3)
        axis.legend()
        figures.append(plots.save_figure(figure, run_dir / "weight_curve.png"))
    return figures


# ---------------------------------------------------------------- 主流程


def competition_module(competition: str):
    """Import the model script of a competition (it exports the loaders, folds and, for tweets, the decoder)."""
    if competition == "tweet":
        from stage2_kaggle import tweet_sentiment_extraction as module
    else:
        from stage2_kaggle import commonlit_readability as module
    return module


def run_smoke_models(run_dir: Path, competition: str, seed: int) -> list[Path]:
    """--smoke: run the competition's model script twice (tiny transformer, TF-IDF) into run_dir/models/."""
    module = competition_module(competition)
    folders = []
    for name, extra in (("transformer", []), ("tfidf", ["--model", "tfidf"])):
        folder = run_dir / "models" / name
        logger.info("--smoke：运行 %s（%s）-> %s", module.__name__, name, folder)
        module.main(["--smoke", "--seed", str(seed), "--output-dir", str(folder), *extra])
        folders.append(folder)
    return folders


def build_argument_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser("模型融合：在 OOF 预测上找和为 1 的非负权重，写出融合后的提交文件"
                              "（融合本身不训练，--epochs、--lr 等选项不起作用）",
                              epochs=1, batch_size=32, lr=1e-3, shared_loop=False)
    parser.add_argument("--competition", choices=COMPETITIONS, default="commonlit",
                        help="比赛：commonlit（回归，RMSE）或 tweet（片段抽取，Jaccard）")
    parser.add_argument("--runs", type=Path, nargs="+", default=None, metavar="RUN_DIR",
                        help="模型运行目录（至少两个），每个里有 oof 和 test_predictions 文件")
    parser.add_argument("--grid-step", type=cli.positive_float, default=0.05,
                        help="tweet：单纯形网格的步长（两个模型时也是曲线图的分辨率）")
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_argument_parser()
    args = parser.parse_args(argv)
    if not args.smoke and (args.runs is None or len(args.runs) < 2):
        parser.error("需要用 --runs 给出至少两个模型运行目录（或者加 --smoke 先跑两个极小的模型）")
    if args.smoke and args.runs is not None:
        parser.error("--smoke 自己先训练两个极小的模型再融合，会忽略 --runs；融合自己的运行目录时去掉 --smoke")
    run_dir = cli.start_run(args, "ensemble")
    run_dirs = run_smoke_models(run_dir, args.competition, args.seed) if args.smoke else list(args.runs)

    reader = read_tweet_run if args.competition == "tweet" else read_commonlit_run
    model_runs = align_runs([reader(Path(folder)) for folder in run_dirs], run_dirs)
    names = [run.name for run in model_runs]
    folds = model_runs[0].folds
    logger.info("%d 个模型：%s；%d 条 OOF、%d 折、%d 条测试", len(names), names, len(folds),
                len(set(folds.tolist())), len(model_runs[0].test_ids))

    if args.competition == "tweet":
        decode = competition_module("tweet").decode_word_span
        blend = SpanBlend([run.oof for run in model_runs], model_runs[0].rows, decode, step=args.grid_step)
    else:
        blend = RegressionBlend(np.column_stack([run.oof for run in model_runs]),
                                np.array([row["target"] for row in model_runs[0].rows]))
    result = evaluate_blend(blend, folds, names)
    weights = np.array([result["weights"][name] for name in names])
    if args.competition == "tweet":
        write_tweet_outputs(run_dir, model_runs, weights, decode)
    else:
        write_commonlit_outputs(run_dir, model_runs, weights)
    plot_blend(run_dir, blend, names, result, args.grid_step)

    table = [{"model": name, f"OOF {blend.metric}": score} for name, score in result["single"].items()]
    table += [{"model": "blend（全部 OOF 挑权重，样本内）", f"OOF {blend.metric}": result["blend_in_sample"]},
              {"model": "blend（嵌套：其余折挑权重）", f"OOF {blend.metric}": result["blend_nested"]}]
    print(runs.markdown_table(table))
    print(runs.markdown_table([{"fold": fold, **{name: round(w, 3) for name, w in weights_k.items()}}
                               for fold, weights_k in enumerate(result["fold_weights"])]))
    summary = {"competition": args.competition, "model": "blend", "models": names, "metric": blend.metric,
               "runs": [str(folder) for folder in run_dirs], "n_train": len(folds),
               "n_folds": len(set(folds.tolist())), "n_test": len(model_runs[0].test_ids), **result}
    summary[f"cv_{blend.metric}"] = result["blend_in_sample"]
    summary[f"nested_cv_{blend.metric}"] = result["blend_nested"]
    runs.save_metrics(run_dir, summary)
    return summary


if __name__ == "__main__":
    cli.run_script(main)
