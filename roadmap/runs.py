"""运行目录（run folder）：每次运行把 config.json、metrics.json、图和检查点写进同一个文件夹。

默认位置是 `runs/<脚本名>/<时间戳>/`；`--output-dir` 可以指定别的位置。
多进程运行（torchrun）时只有 rank 0 写文件，其余进程只拿到同一个路径。
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RUNS_ROOT = Path("runs")
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.json"


def is_main_process() -> bool:
    """Return True on rank 0, or in a single-process run.

    torchrun and `accelerate launch` set RANK before the script starts, so this works before an
    Accelerator exists.
    """
    return int(os.environ.get("RANK", "0")) == 0


def _new_run_name(script_name: str) -> Path:
    """Create `runs/<script>/<time>/`, adding `-2`, `-3`, ... when a run started in the same second."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(1, 1000):
        run_dir = RUNS_ROOT / script_name / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            run_dir.mkdir(parents=True, exist_ok=False)
            return run_dir
        except FileExistsError:
            continue
    raise RuntimeError(f"无法在 {RUNS_ROOT / script_name} 下创建新的运行目录")


def create_run_dir(script_name: str, output_dir: str | os.PathLike | None = None) -> Path:
    """Create (on rank 0) and return the run folder: `output_dir` or a new `runs/<script>/<time>/`.

    In a multi-process run (WORLD_SIZE > 1) rank 0 picks the new folder's name and broadcasts it,
    so every rank writes checkpoints to, and reads them from, the same place.
    """
    if output_dir is not None:
        run_dir = Path(output_dir)
        if run_dir.exists() and not run_dir.is_dir():
            raise SystemExit(f"--output-dir 指向的是一个文件而不是文件夹：{run_dir}")
        if is_main_process():
            run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState
        from accelerate.utils import broadcast_object_list

        # PartialState 必须已经按正确的设备初始化过（cli.start_run 会做），否则这里的广播不会发生。
        PartialState()
        names = [str(_new_run_name(script_name)) if is_main_process() else None]
        broadcast_object_list(names, from_process=0)
        if names[0] is None:
            raise RuntimeError("多进程运行时没能从 rank 0 拿到运行目录名；请先调用 cli.start_run，或给出 --output-dir")
        return Path(names[0])
    return _new_run_name(script_name)


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(key): _to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(item) for item in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch 标量
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON 没有 NaN/Infinity；写成 null，读的一方能看出这个值无效
    return value


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write `data` as indented UTF-8 JSON through a temp file, so a crash never leaves half a file."""
    if not is_main_process():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temp_path = path.with_name(path.name + ".tmp")
    temp_path.write_text(json.dumps(_to_jsonable(data), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    temp_path.replace(path)


def save_config(run_dir: Path, config: Mapping[str, Any]) -> None:
    write_json(run_dir / CONFIG_FILE, config)


def save_metrics(run_dir: Path, metrics: Mapping[str, Any]) -> None:
    write_json(run_dir / METRICS_FILE, metrics)
    if is_main_process():
        logger.info("指标已写入 %s", run_dir / METRICS_FILE)


def find_metrics(root: str | os.PathLike = RUNS_ROOT) -> list[Path]:
    """Return every metrics.json below `root`, sorted by path."""
    root = Path(root)
    if not root.exists():
        return []
    return sorted(root.rglob(METRICS_FILE))


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Format rows as a Markdown table; columns default to the union of keys in first-seen order."""
    if columns is None:
        columns = []
        for row in rows:
            for key in row:
                if key not in columns:
                    columns.append(key)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        cells = [format_value(row.get(column, "")).replace("|", "\\|") for column in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scalar_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts to `a.b` keys and keep only numbers, booleans and short strings."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(scalar_metrics(value, prefix=name + "."))
        elif isinstance(value, (int, float, bool)) or (isinstance(value, str) and len(value) <= 40):
            flat[name] = value
    return flat


HEADLINE_WORDS = ("accuracy", "f1", "bleu", "mse", "rmse", "jaccard", "perplexity", "loss")


def headline_metrics(metrics: Mapping[str, Any], limit: int = 4) -> dict[str, Any]:
    """Pick up to `limit` metrics that measure how well a run did (accuracy, F1, BLEU, MSE, ...).

    Falls back to the first keys when no key names a known metric.
    """
    chosen = {key: value for key, value in metrics.items()
              if any(word in key.lower() for word in HEADLINE_WORDS) and not isinstance(value, (bool, str))}
    if not chosen:
        chosen = dict(metrics)
    return dict(list(chosen.items())[:limit])


def collect_report(root: str | os.PathLike = RUNS_ROOT) -> list[dict[str, Any]]:
    """Read every metrics.json below `root` into one row each: the run folder and its scalar metrics."""
    rows = []
    root = Path(root)
    for path in find_metrics(root):
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            logger.warning("跳过无法读取的 %s：%s", path, error)
            continue
        if not isinstance(metrics, Mapping):
            logger.warning("跳过 %s：内容不是 JSON 对象", path)
            continue
        row: dict[str, Any] = {"script": _script_name(path.parent, root), "run": str(path.parent.relative_to(root))}
        row.update(scalar_metrics(metrics))
        rows.append(row)
    return rows


def _script_name(run_dir: Path, root: Path) -> str:
    """Return the script recorded in the run's config.json, or the first folder below `root`."""
    config_path = run_dir / CONFIG_FILE
    if config_path.is_file():
        try:
            script = json.loads(config_path.read_text(encoding="utf-8")).get("script")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            script = None
        if isinstance(script, str) and script:
            return script
    parts = run_dir.relative_to(root).parts
    return parts[0] if parts else root.name


def report_table(rows: Iterable[Mapping[str, Any]]) -> str:
    """Format report rows as one Markdown table per script, since scripts report different metrics."""
    by_script: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_script.setdefault(row["script"], []).append({key: value for key, value in row.items() if key != "script"})
    sections = []
    for script, script_rows in by_script.items():
        sections.append(f"### {script}\n\n{markdown_table(script_rows)}")
    return "\n\n".join(sections)
