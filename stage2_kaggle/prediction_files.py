"""预测文件的读取与对齐：模型融合读的是各个运行目录里的 out-of-fold（OOF）预测和测试集预测。

- CommonLit：oof.csv（id,fold,target,prediction）和 test_predictions.csv（id,prediction）。
- Tweet：oof.jsonl 和 test_predictions.jsonl，每行带逐词的 start/end 概率（加起来为 1）。
- `align_runs` 把所有运行排成第一个运行的行序，并逐条核对 id、折（fold）和标签：只有所有模型
  在同样的行、同样的折上做的 OOF 预测，融合时挑权重才公平。对不上就抛出中文的 DataFormatError。
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from roadmap import runs
from roadmap.data import DataFormatError

COMPETITIONS = ("commonlit", "tweet")
OOF_FILES = {"commonlit": "oof.csv", "tweet": "oof.jsonl"}
TEST_FILES = {"commonlit": "test_predictions.csv", "tweet": "test_predictions.jsonl"}


@dataclass
class ModelRun:
    """One model's predictions, rows in the order of the first run read (see `align_runs`).

    CommonLit: `oof` and `test` are float arrays. Tweet: lists of (start_probs, end_probs) pairs.
    `rows` / `test_rows` keep the other columns (target; text, sentiment, selected_text).
    """

    name: str
    ids: list[str]
    folds: np.ndarray
    oof: Any
    rows: list[dict]
    test_ids: list[str]
    test: Any
    test_rows: list[dict] = field(default_factory=list)


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise DataFormatError(f"{path} 第 {number} 行不是合法的 JSON：{error}") from None
    return rows


def _require(path: Path) -> Path:
    if not path.is_file():
        raise DataFormatError(f"运行目录里缺少 {path.name}：{path}。请先用模型脚本跑完 K 折再来融合；"
                              f"如果这是另一个比赛的运行目录，请检查 --competition。")
    return path


def _check_columns(path: Path, present: Sequence[str], needed: Sequence[str]) -> None:
    missing = [column for column in needed if column not in present]
    if missing:
        raise DataFormatError(f"{path} 缺少列 {missing}（需要 {list(needed)}）")


def _check_unique(path: Path, ids: Sequence[str]) -> None:
    if len(set(ids)) != len(ids):
        duplicated = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]
        raise DataFormatError(f"{path} 里 id {duplicated!r} 出现了不止一次")


def _run_name(run_dir: Path) -> str:
    metrics_path = run_dir / runs.METRICS_FILE
    if metrics_path.is_file():
        model = json.loads(metrics_path.read_text(encoding="utf-8")).get("model")
        if isinstance(model, str) and model:
            return "/".join(Path(model).parts[-2:]) if Path(model).is_absolute() else model  # 本地文件夹只留最后两级
    return run_dir.name


def read_commonlit_run(run_dir: Path) -> ModelRun:
    """Read `oof.csv` (id,fold,target,prediction) and `test_predictions.csv` (id,prediction)."""
    oof_path, test_path = _require(run_dir / OOF_FILES["commonlit"]), _require(run_dir / TEST_FILES["commonlit"])
    oof = pd.read_csv(oof_path, dtype={"id": str})
    test = pd.read_csv(test_path, dtype={"id": str})
    _check_columns(oof_path, list(oof.columns), ["id", "fold", "target", "prediction"])
    _check_columns(test_path, list(test.columns), ["id", "prediction"])
    for path, frame in ((oof_path, oof), (test_path, test)):
        _check_unique(path, list(frame["id"]))
        if not np.isfinite(frame["prediction"].to_numpy(dtype=float)).all():
            raise DataFormatError(f"{path} 的 prediction 列里有 NaN 或无穷大")
    return ModelRun(name=_run_name(run_dir), ids=list(oof["id"]), folds=oof["fold"].to_numpy(dtype=int),
                    oof=oof["prediction"].to_numpy(dtype=float),
                    rows=[{"target": float(value)} for value in oof["target"]],
                    test_ids=list(test["id"]), test=test["prediction"].to_numpy(dtype=float),
                    test_rows=[{} for _ in range(len(test))])


def _read_probs(path: Path, row: dict, number: int) -> tuple[np.ndarray, np.ndarray]:
    words = len(str(row["text"]).split())
    pair = []
    for key in ("start_probs", "end_probs"):
        probs = np.asarray(row[key], dtype=float)
        if probs.shape != (words,):
            raise DataFormatError(f"{path} 第 {number} 条（{row.get('textID')}）的 {key} 有 {probs.size} 个值，"
                                  f"但 text.split() 有 {words} 个词")
        if words and (not np.isfinite(probs).all() or abs(probs.sum() - 1) > 1e-3):
            raise DataFormatError(f"{path} 第 {number} 条（{row.get('textID')}）的 {key} 加起来不是 1")
        pair.append(probs)
    return pair[0], pair[1]


def read_tweet_run(run_dir: Path) -> ModelRun:
    """Read `oof.jsonl` and `test_predictions.jsonl` (word-level start/end probabilities)."""
    oof_path, test_path = _require(run_dir / OOF_FILES["tweet"]), _require(run_dir / TEST_FILES["tweet"])
    oof_rows, test_rows = _read_jsonl(oof_path), _read_jsonl(test_path)
    needed = ["textID", "fold", "sentiment", "text", "selected_text", "start_probs", "end_probs"]
    for path, rows, columns in ((oof_path, oof_rows, needed),
                                (test_path, test_rows, ["textID", "sentiment", "text", "start_probs", "end_probs"])):
        if not rows:
            raise DataFormatError(f"{path} 是空的")
        for row in rows:
            _check_columns(path, list(row), columns)
        _check_unique(path, [str(row["textID"]) for row in rows])
    keep = ("text", "sentiment", "selected_text")
    return ModelRun(
        name=_run_name(run_dir), ids=[str(row["textID"]) for row in oof_rows],
        folds=np.array([int(row["fold"]) for row in oof_rows]),
        oof=[_read_probs(oof_path, row, number) for number, row in enumerate(oof_rows, start=1)],
        rows=[{key: row[key] for key in keep} for row in oof_rows],
        test_ids=[str(row["textID"]) for row in test_rows],
        test=[_read_probs(test_path, row, number) for number, row in enumerate(test_rows, start=1)],
        test_rows=[{key: row[key] for key in keep[:2]} for row in test_rows])


def _reorder(values: Any, order: list[int]) -> Any:
    return values[order] if isinstance(values, np.ndarray) else [values[index] for index in order]


def align_runs(model_runs: list[ModelRun], run_dirs: Sequence[Path]) -> list[ModelRun]:
    """Put every run in the first run's row order; raise DataFormatError unless ids, folds and labels agree.

    Blending OOF predictions is only fair when every model predicted every row out of fold with
    the SAME folds: otherwise one model's "out-of-fold" rows were another's training rows.
    """
    first = model_runs[0]
    aligned = [first]
    for run, run_dir in zip(model_runs[1:], run_dirs[1:]):
        for label, mine, theirs in (("训练集（oof）", first.ids, run.ids), ("测试集", first.test_ids, run.test_ids)):
            if set(mine) != set(theirs):
                only_first = sorted(set(mine) - set(theirs))[:3]
                only_other = sorted(set(theirs) - set(mine))[:3]
                raise DataFormatError(
                    f"{run_dir} 与 {run_dirs[0]} 的{label} id 不一致（{len(theirs)} vs {len(mine)} 条；"
                    f"只在前者里的例子 {only_other}，只在后者里的例子 {only_first}）。"
                    f"融合要求所有模型在同样的行上预测：请用同样的数据、--max-train-samples 和 --seed 重跑。")
        position = {row_id: index for index, row_id in enumerate(run.ids)}
        order = [position[row_id] for row_id in first.ids]
        folds = run.folds[order]
        differ = np.flatnonzero(folds != first.folds)
        if differ.size:
            row = differ[0]
            raise DataFormatError(
                f"{run_dir} 与 {run_dirs[0]} 的折（fold）划分不同：{differ.size} 条不一致，例如 id {first.ids[row]!r} "
                f"在前者是第 {folds[row]} 折、在后者是第 {first.folds[row]} 折。不同的折下 OOF 预测不可比，"
                f"请用同一个 make_folds、同样的 --seed 重跑。")
        rows = _reorder(run.rows, order)
        for key in first.rows[0]:
            bad = [index for index, (a, b) in enumerate(zip(rows, first.rows)) if a[key] != b[key]]
            if bad:
                raise DataFormatError(f"{run_dir} 与 {run_dirs[0]} 在 id {first.ids[bad[0]]!r} 上的 {key} 不同："
                                      f"{rows[bad[0]][key]!r} vs {first.rows[bad[0]][key]!r}")
        test_position = {row_id: index for index, row_id in enumerate(run.test_ids)}
        test_order = [test_position[row_id] for row_id in first.test_ids]
        aligned.append(ModelRun(name=run.name, ids=list(first.ids), folds=folds, oof=_reorder(run.oof, order),
                                rows=rows, test_ids=list(first.test_ids), test=_reorder(run.test, test_order),
                                test_rows=_reorder(run.test_rows, test_order)))
    names = [run.name for run in aligned]
    for run, run_dir in zip(aligned, run_dirs):
        if names.count(run.name) > 1:  # 两个运行用了同一个模型名：加上文件夹名区分
            run.name = f"{run.name}@{Path(run_dir).name}"
    return aligned
