"""公榜高分、私榜崩盘：两个实验量出 Kaggle 排行榜上的两个陷阱（比赛总结 competition_report.py 的第 5 节）

- 公榜 / 私榜（public / private leaderboard）：Kaggle 把测试集分成两块，比赛期间排行榜只按公榜那一小块打分，
  结束后按私榜排最终名次。公榜只有几百行时，它的分数本身噪声很大；在很多次提交里挑公榜最好的那个，
  等于在这一小块数据上做超参数搜索，挑中的多半是"碰巧在公榜上好"的模型，到私榜上回落，这就是 shake-up。
  `shakeup_experiment`：在留出集上反复随机划分公榜 / 私榜，量出按公榜挑的乐观偏差，并与按 CV 挑的模型对照。
- 有泄漏的验证划分（leaky split）：训练数据里有近似副本（数据增强、同一来源的多个片段、重复抓取）时，
  随机 K 折把副本分进不同的折，模型"背下"副本就能猜对，CV 虚高；按来源分组的 GroupKFold 才与留出集一致。
  `leaky_split_experiment`：给每篇文章造一个近似副本，比较两种 CV 和留出集上的 RMSE。
- 两个实验都用 CommonLit 的 TF-IDF + Ridge（commonlit_readability 的同一个 TF-IDF 设置），
  `pitfall_section` 把结果写成报告的一节，`plot_pitfalls` 画图。
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from roadmap import metrics, runs

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- 两个实验

ALPHAS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)  # Ridge 的候选正则化强度（对数间隔）
NGRAMS = (1, 2)


def ridge_predictions(train_texts, train_targets, eval_texts, alphas: Sequence[float], ngram_max: int) -> dict[float, np.ndarray]:
    """Fit commonlit_readability's TF-IDF once, then one Ridge per alpha; return each alpha's predictions."""
    from sklearn.linear_model import Ridge

    from stage2_kaggle import commonlit_readability

    vectorizer = commonlit_readability.tfidf_pipeline(ngram_max=ngram_max)[0]  # 同一个 TF-IDF 设置
    features = vectorizer.fit_transform(list(train_texts))
    eval_features = vectorizer.transform(list(eval_texts))
    return {alpha: Ridge(alpha=alpha).fit(features, train_targets).predict(eval_features) for alpha in alphas}


def split_hidden(n_rows: int, hidden_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows for training and a hidden test set no choice ever looks at (the competition's test set)."""
    order = np.random.default_rng(seed).permutation(n_rows)
    n_hidden = max(2, int(round(hidden_fraction * n_rows)))
    return np.sort(order[n_hidden:]), np.sort(order[:n_hidden])


def near_duplicate(text: str, rng: np.random.Generator, drop: float = 0.1) -> str:
    """Return a copy of `text` with about `drop` of its words removed, like an augmented or re-scraped copy."""
    words = text.split()
    kept = [word for word, keep in zip(words, rng.random(len(words)) >= drop) if keep]
    return " ".join(kept or words)


def leaky_split_experiment(texts: np.ndarray, targets: np.ndarray, train_rows: np.ndarray, hidden_rows: np.ndarray,
                           *, seed: int, n_folds: int = 5, alphas: Sequence[float] = ALPHAS) -> dict[str, Any]:
    """Compare random K-fold with GroupKFold CV on training data with a near-duplicate of every excerpt.

    Random folds put the two copies of an excerpt in different folds, so every validation row has
    its twin in the training folds. GroupKFold keeps both copies in one fold. The hidden rows,
    never duplicated, show which CV estimate holds on new data.
    """
    from sklearn.model_selection import GroupKFold, KFold

    rng = np.random.default_rng(seed)
    doubled = np.concatenate([texts[train_rows], [near_duplicate(text, rng) for text in texts[train_rows]]])
    doubled_targets = np.concatenate([targets[train_rows], targets[train_rows]])
    groups = np.tile(np.arange(len(train_rows)), 2)  # 原文和副本属于同一个来源
    splitters = {"random": KFold(n_folds, shuffle=True, random_state=seed).split(doubled),
                 "grouped": GroupKFold(n_folds).split(doubled, groups=groups)}
    cv = {}
    for name, splits in splitters.items():
        oof = {alpha: np.zeros(len(doubled)) for alpha in alphas}
        for fit_rows, valid_rows in splits:
            predicted = ridge_predictions(doubled[fit_rows], doubled_targets[fit_rows], doubled[valid_rows], alphas, 1)
            for alpha in alphas:
                oof[alpha][valid_rows] = predicted[alpha]
        cv[name] = {alpha: metrics.rmse(oof[alpha], doubled_targets) for alpha in alphas}
    hidden_predictions = ridge_predictions(doubled, doubled_targets, texts[hidden_rows], alphas, 1)
    hidden = {alpha: metrics.rmse(hidden_predictions[alpha], targets[hidden_rows]) for alpha in alphas}
    result: dict[str, Any] = {"alphas": list(alphas), "random_cv": cv["random"], "grouped_cv": cv["grouped"], "hidden": hidden}
    for name in ("random", "grouped"):
        chosen = min(alphas, key=lambda alpha: cv[name][alpha])
        result[f"{name}_choice"] = {"alpha": chosen, "cv_rmse": cv[name][chosen], "hidden_rmse": hidden[chosen]}
    return result


def shakeup_experiment(texts: np.ndarray, targets: np.ndarray, train_rows: np.ndarray, hidden_rows: np.ndarray,
                       *, seed: int, public_fraction: float = 0.2, repeats: int = 500, n_folds: int = 5,
                       alphas: Sequence[float] = ALPHAS, ngrams: Sequence[int] = NGRAMS) -> dict[str, Any]:
    """Pick the candidate with the best public-leaderboard RMSE, over many random public/private splits.

    Every (alpha, n-gram) candidate is trained on the training rows and predicts the hidden rows
    once. Each repeat only re-splits the hidden rows into public and private. The CV choice (K-fold
    on the training rows) never uses the hidden rows.
    """
    from stage2_kaggle import commonlit_readability

    folds = commonlit_readability.make_folds(targets[train_rows], min(n_folds, len(train_rows)), seed)
    candidates = []
    for ngram in ngrams:
        oof = {alpha: np.zeros(len(train_rows)) for alpha in alphas}
        for fold in np.unique(folds):
            fit, valid = train_rows[folds != fold], train_rows[folds == fold]
            predicted = ridge_predictions(texts[fit], targets[fit], texts[valid], alphas, ngram)
            for alpha in alphas:
                oof[alpha][folds == fold] = predicted[alpha]
        hidden = ridge_predictions(texts[train_rows], targets[train_rows], texts[hidden_rows], alphas, ngram)
        candidates += [{"alpha": alpha, "ngram_max": ngram, "cv_rmse": metrics.rmse(oof[alpha], targets[train_rows]),
                        "predictions": hidden[alpha]} for alpha in alphas]
    truth = targets[hidden_rows]
    squared = np.array([(candidate["predictions"] - truth) ** 2 for candidate in candidates])  # (候选, 留出行)
    cv_choice = int(np.argmin([candidate["cv_rmse"] for candidate in candidates]))
    n_public = max(1, int(round(public_fraction * len(truth))))
    rng = np.random.default_rng(seed)
    public_best, private_of_public_best, private_of_cv_choice, same_model_gap, best_is_best = [], [], [], [], []
    example = None
    for repeat in range(repeats):
        order = rng.permutation(len(truth))
        public = np.sqrt(squared[:, order[:n_public]].mean(axis=1))
        private = np.sqrt(squared[:, order[n_public:]].mean(axis=1))
        chosen = int(np.argmin(public))
        public_best.append(public[chosen])
        private_of_public_best.append(private[chosen])
        private_of_cv_choice.append(private[cv_choice])
        same_model_gap.append(private[cv_choice] - public[cv_choice])
        best_is_best.append(chosen == int(np.argmin(private)))
        if repeat == 0:
            example = {"public": public.tolist(), "private": private.tolist(), "public_choice": chosen}
    optimism = np.array(private_of_public_best) - np.array(public_best)
    for candidate in candidates:
        candidate["hidden_rmse"] = metrics.rmse(candidate.pop("predictions"), truth)
    return {
        "n_train": len(train_rows), "n_hidden": len(truth), "n_public": n_public, "n_private": len(truth) - n_public,
        "repeats": repeats, "candidates": candidates, "cv_choice": cv_choice, "example": example,
        "public_choice_public_rmse": float(np.mean(public_best)),
        "public_choice_private_rmse": float(np.mean(private_of_public_best)),
        "public_choice_optimism": float(optimism.mean()), "public_choice_optimism_p95": float(np.quantile(optimism, 0.95)),
        "public_choice_is_private_best": float(np.mean(best_is_best)),
        "cv_choice_cv_rmse": candidates[cv_choice]["cv_rmse"], "cv_choice_private_rmse": float(np.mean(private_of_cv_choice)),
        "same_model_gap_std": float(np.std(same_model_gap)), "same_model_gap_max": float(np.max(np.abs(same_model_gap))),
        "optimism_values": optimism.tolist(),
    }


def plot_pitfalls(shakeup: dict[str, Any], leak: dict[str, Any], path: Path) -> Path:
    from roadmap.plots import plt, save_figure

    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    alphas = leak["alphas"]
    for key, label in (("random_cv", "random K-fold CV"), ("grouped_cv", "GroupKFold CV"), ("hidden", "hidden test")):
        axes[0].plot(alphas, [leak[key][alpha] for alpha in alphas], marker="o", label=label)
    axes[0].set(xscale="log", xlabel="Ridge alpha", ylabel="RMSE", title="near-duplicates: random vs grouped folds")
    axes[0].legend()
    example = shakeup["example"]
    axes[1].scatter(example["public"], example["private"], label="candidates")
    chosen = example["public_choice"]
    axes[1].scatter([example["public"][chosen]], [example["private"][chosen]], color="red", label="best public")
    low = min(example["public"] + example["private"])
    high = max(example["public"] + example["private"])
    axes[1].plot([low, high], [low, high], color="gray", linewidth=1, label="y = x")
    axes[1].set(xlabel=f"public RMSE ({shakeup['n_public']} rows)", ylabel=f"private RMSE ({shakeup['n_private']} rows)",
                title="one public/private split")
    axes[1].legend()
    axes[2].hist(shakeup["optimism_values"], bins=30, color="tab:orange")
    axes[2].axvline(shakeup["public_choice_optimism"], color="red", label="mean")
    axes[2].set(xlabel="private - public RMSE of the best-public pick", ylabel="splits",
                title=f"{shakeup['repeats']} random public/private splits")
    axes[2].legend()
    for axis in axes:
        axis.grid(alpha=0.3)
    figure.tight_layout()
    return save_figure(figure, path, dpi=110)


def run_pitfall_experiments(train, *, hidden_fraction: float, public_fraction: float, repeats: int, seed: int,
                            path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Hold out part of CommonLit's train.csv, run both experiments on it and plot them; return (shakeup, leak)."""
    texts = train["excerpt"].to_numpy(dtype=object)
    targets = train["target"].to_numpy(dtype=float)
    train_rows, hidden_rows = split_hidden(len(texts), hidden_fraction, seed)
    logger.info("陷阱实验：%d 篇训练、%d 篇留出", len(train_rows), len(hidden_rows))
    leak = leaky_split_experiment(texts, targets, train_rows, hidden_rows, seed=seed)
    shakeup = shakeup_experiment(texts, targets, train_rows, hidden_rows, seed=seed,
                                 public_fraction=public_fraction, repeats=repeats)
    plot_pitfalls(shakeup, leak, path)
    return shakeup, leak


def pitfall_metrics(shakeup: dict[str, Any], leak: dict[str, Any]) -> dict[str, Any]:
    """Return the experiments' headline numbers as flat keys for metrics.json."""
    return {
        "leak_random_cv_rmse": leak["random_choice"]["cv_rmse"], "leak_random_hidden_rmse": leak["random_choice"]["hidden_rmse"],
        "leak_grouped_cv_rmse": leak["grouped_choice"]["cv_rmse"], "leak_grouped_hidden_rmse": leak["grouped_choice"]["hidden_rmse"],
        **{f"shakeup_{key}": shakeup[key] for key in (
            "n_public", "n_private", "public_choice_public_rmse", "public_choice_private_rmse", "public_choice_optimism",
            "public_choice_is_private_best", "cv_choice_private_rmse", "same_model_gap_std", "same_model_gap_max")},
    }


# ---------------------------------------------------------------- 报告里的一节


def pitfall_section(shakeup: dict[str, Any], leak: dict[str, Any]) -> str:
    random_choice, grouped_choice = leak["random_choice"], leak["grouped_choice"]
    leak_rows = [{"alpha": alpha, "随机 K 折 CV": leak["random_cv"][alpha], "GroupKFold CV": leak["grouped_cv"][alpha],
                  "留出集": leak["hidden"][alpha]} for alpha in leak["alphas"]]
    candidates = shakeup["candidates"]
    cv_choice = candidates[shakeup["cv_choice"]]
    return f"""## 5. 陷阱：公榜高分、私榜崩盘

Kaggle 的测试集分成两半：比赛期间排行榜只按公榜那部分打分，结束后按私榜那部分排最终名次。
两件事会让公榜分数骗人：验证方式有泄漏（CV 和公榜都好看，新数据上不行），以及照着公榜挑提交（在一小块数据上过拟合）。
下面两个实验都在 CommonLit 的 train.csv 上做：随机留出 {shakeup['n_hidden']:,} 篇当"比赛的测试集"，只在其余
{shakeup['n_train']:,} 篇上训练和挑模型；模型是 commonlit_readability 的 TF-IDF + Ridge。

### a) 有泄漏的验证划分

模拟训练数据里每篇文章都有一个近似副本（随机删掉约 10% 的词；数据增强、同一来源的多个片段、重复抓取都会这样）。
随机 K 折把原文和副本分进不同的折，验证时"见过"几乎同样的文章；GroupKFold 按来源分组，两份总在同一折。

{runs.markdown_table(leak_rows)}

随机 K 折挑 alpha={random_choice['alpha']:g}，CV RMSE {random_choice['cv_rmse']:.3f}，留出集上是 {random_choice['hidden_rmse']:.3f}
（差 {random_choice['hidden_rmse'] - random_choice['cv_rmse']:+.3f}）；GroupKFold 挑 alpha={grouped_choice['alpha']:g}，
CV RMSE {grouped_choice['cv_rmse']:.3f}，留出集 {grouped_choice['hidden_rmse']:.3f}（差 {grouped_choice['hidden_rmse'] - grouped_choice['cv_rmse']:+.3f}）。
{_alpha_sentence(leak)}随机划分的 CV 随 alpha 变小一路变好，因为正则化越弱，模型越能"背下"验证行的副本；这样的 CV 下看到的"提升"不能信。

### b) 照着公榜挑提交

{len(candidates)} 个候选（alpha × n-gram），都在同样的 {shakeup['n_train']:,} 篇上训练、预测留出集一次；把留出集随机分成公榜
{shakeup['n_public']} 篇、私榜 {shakeup['n_private']} 篇，重复 {shakeup['repeats']} 次，每次挑公榜最好的候选：

| | 公榜 RMSE | 私榜 RMSE |
|---|---|---|
| 公榜最好的候选（每次划分重新挑） | {shakeup['public_choice_public_rmse']:.3f} | {shakeup['public_choice_private_rmse']:.3f} |
| CV 最好的候选（alpha={cv_choice['alpha']:g}，{cv_choice['ngram_max']}-gram，CV {cv_choice['cv_rmse']:.3f}，固定不变） | | {shakeup['cv_choice_private_rmse']:.3f} |

- 按公榜挑出的候选，私榜减公榜平均是 {shakeup['public_choice_optimism']:+.3f}（95% 的划分在 {shakeup['public_choice_optimism_p95']:+.3f} 以内）；
  在 {100 * shakeup['public_choice_is_private_best']:.0f}% 的划分里它恰好也是私榜最好的。{_choice_sentence(shakeup)}
- 同一个模型（CV 挑的那个）的私榜减公榜，在不同划分间的标准差是 {shakeup['same_model_gap_std']:.3f}，最大 {shakeup['same_model_gap_max']:.3f}：
  {shakeup['n_public']} 篇的公榜本身就有这么大的噪声，候选之间小于这个量级的差距在公榜上分不出来。
- 这里的候选只差一个正则化强度和 n-gram，彼此高度相关。候选越多、公榜越小、候选之间的差别越偶然，按公榜挑的乐观偏差就越大：
  几百次提交、每次换一点东西、再按公榜挑，就是在公榜那一小块数据上做超参数搜索。
- 做法：用与测试集同分布、没有泄漏的 K 折 CV 挑模型；最终提交选"CV 最好"和"公榜最好"各一个（Kaggle 允许选两个）；
  CV 与公榜的走向不一致时，先怀疑公榜太小，再怀疑 CV 的划分。伪标签带来的泄漏见 pseudo_labeling.py。

![leaky split and public/private shake-up](pitfalls.png)
"""


def _alpha_sentence(leak: dict[str, Any]) -> str:
    random_alpha, grouped_alpha = leak["random_choice"]["alpha"], leak["grouped_choice"]["alpha"]
    if random_alpha == grouped_alpha:
        return f"两种 CV 挑出了同一个 alpha（{random_alpha:g}），这次泄漏没有改变选择，只让分数虚高。"
    return (f"两种 CV 挑的 alpha 不同（{random_alpha:g} 与 {grouped_alpha:g}），"
            f"在留出集上分别是 {leak['random_choice']['hidden_rmse']:.3f} 与 {leak['grouped_choice']['hidden_rmse']:.3f}。")


def _choice_sentence(shakeup: dict[str, Any]) -> str:
    difference = shakeup["cv_choice_private_rmse"] - shakeup["public_choice_private_rmse"]
    better = "CV 挑的候选" if difference < 0 else "公榜挑的候选"
    return f"在私榜上，{better}平均好 {abs(difference):.3f}。"
