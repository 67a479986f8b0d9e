"""命令行：每个练习脚本共用的选项，以及 `roadmap` 命令（list / run / tour / report）。

练习是自动发现的：`stage*/` 包里每个带模块 docstring 和顶层 `main` 函数的 .py 文件就是一个练习，
docstring 的第一行就是它对应的路线图条目。新增脚本不需要在任何地方登记。
"""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from roadmap import runs

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
# 路线图的学习顺序；不在这里的 stage 文件夹排在最后（按名字排序）。
STAGE_ORDER = ("stage1", "stage2_cnn_rnn", "stage2_transformer", "stage2_huggingface", "stage2_kaggle")


class ChineseHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help formatter with Chinese headings and default values shown as （默认：...）."""

    def add_usage(self, usage, actions, groups, prefix=None):
        super().add_usage(usage, actions, groups, prefix="用法：" if prefix is None else prefix)

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if action.default is not argparse.SUPPRESS and action.default is not None and action.option_strings \
                and not isinstance(action.default, bool):
            help_text += "（默认：%(default)s）"
        return help_text


class ChineseArgumentParser(argparse.ArgumentParser):
    """ArgumentParser with Chinese help headings and error line (argparse's own messages stay English)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", ChineseHelpFormatter)
        kwargs.setdefault("add_help", False)
        super().__init__(*args, **kwargs)
        self._positionals.title = "位置参数"
        self._optionals.title = "选项"
        self.add_argument("-h", "--help", action="help", default=argparse.SUPPRESS, help="显示帮助并退出")

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: 参数错误：{message}\n（用 --help 查看所有选项）\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"需要正整数，收到 {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"需要正整数（>= 1），收到 {value}")
    return value


MAX_SEED = 2**31 - 1


def seed_int(text: str) -> int:
    """Parse a seed in [0, 2**31 - 1]; the loop adds the epoch number, which must stay a valid seed."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"需要整数，收到 {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"种子要在 0 到 {MAX_SEED} 之间，收到 {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"需要正数，收到 {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"需要有限的正数，收到 {text}")
    return value


def build_parser(
    description: str,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    patience: int | None = None,
    shared_loop: bool = True,
) -> argparse.ArgumentParser:
    """Return a parser with the options every exercise takes; a script adds its own after.

    `epochs`, `batch_size`, `lr` and `patience` are the script's defaults for a real run.
    `shared_loop=False` leaves out the options that only `roadmap.training.fit` implements
    (--grad-accum-steps, --patience, --resume, --track), for a script that writes its own loop.
    """
    parser = ChineseArgumentParser(description=description)
    group = parser.add_argument_group("通用选项（每个练习都有）")
    group.add_argument("--smoke", action="store_true", help="冒烟运行：用仓库自带的小样本和极小的规模，离线几秒内跑完")
    group.add_argument("--data-dir", type=Path, default=None,
                       help="数据根目录；不给时依次查找 $ROADMAP_DATA_DIR 和仓库下的 data/ 缓存")
    group.add_argument("--output-dir", type=Path, default=None,
                       help="运行目录（metrics.json、图、检查点）；默认 runs/<脚本名>/<时间戳>/")
    group.add_argument("--epochs", type=positive_int, default=epochs, help="训练轮数（epoch）")
    group.add_argument("--batch-size", type=positive_int, default=batch_size, help="每个进程每步的样本数")
    group.add_argument("--lr", type=positive_float, default=lr, help="学习率")
    group.add_argument("--seed", type=seed_int, default=42, help="随机种子（数据划分、初始化、打乱顺序）")
    group.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto",
                       help="运行设备；auto 依次选 cuda、mps、cpu")
    group.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                       help="训练精度；bf16/fp16 用 autocast 混合精度（fp16 需要 CUDA）")
    group.add_argument("--max-train-samples", type=positive_int, default=None,
                       help="最多使用训练集里的多少条样本（验证集也从这些样本中划出）")
    if not shared_loop:
        parser.set_defaults(grad_accum_steps=1, patience=None, resume=None, track="none")
        return parser
    group.add_argument("--grad-accum-steps", type=positive_int, default=1, help="梯度累积步数：每多少个 batch 更新一次参数")
    group.add_argument("--patience", type=positive_int, default=patience,
                       help="早停（early stopping）：验证指标连续多少个 epoch 没有变好就停止；不给则不早停")
    group.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                       help="从这个运行目录里最后一个 epoch 的检查点继续训练（结果写回同一目录）")
    group.add_argument("--track", choices=("none", "wandb", "tensorboard"), default="none",
                       help="实验跟踪：wandb（无网络时设 WANDB_MODE=offline）或 tensorboard（写进运行目录）")
    return parser


def check_predict_options(parser: argparse.ArgumentParser, args: argparse.Namespace, *, option: str = "predict",
                          noun: str | None = None) -> None:
    """Reject `--checkpoint` without the single-input option, and (when `noun` is given) an empty input.

    `option` is the attribute name (`predict`, `generate`); `noun` names the input in the message ("影评").
    """
    value = getattr(args, option)
    flag = "--" + option.replace("_", "-")
    if getattr(args, "checkpoint", None) is not None and value is None:
        parser.error(f"--checkpoint 只和 {flag} 一起使用")
    if noun is not None and value is not None and not value.strip():
        parser.error(f"{flag} 的{noun}是空的")


def apply_smoke(args: argparse.Namespace, *, epochs: int = 2, max_train_samples: int | None = None) -> None:
    """Shrink a `--smoke` run: at most `epochs` epochs and `max_train_samples` training samples."""
    if not args.smoke:
        return
    args.epochs = min(args.epochs, epochs)
    if max_train_samples is not None:
        args.max_train_samples = min(args.max_train_samples or max_train_samples, max_train_samples)


def setup_logging(level: int = logging.INFO) -> None:
    """Log `time level name: message` to stderr; ranks other than 0 log warnings only."""
    if not runs.is_main_process():
        level = logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


# 续训时允许与原运行不同的选项；其余选项（数据、批大小、学习率、种子……）一变，续训就不再是同一次训练。
RESUME_MAY_CHANGE = {"resume", "output_dir", "track", "device", "data_dir"}


def _check_resume(args: argparse.Namespace, script_name: str) -> None:
    """Reject `--resume RUN_DIR` unless RUN_DIR is a run of this script with the same options and a checkpoint."""
    run_dir = args.resume
    if not run_dir.is_dir():
        raise SystemExit(f"--resume 指定的运行目录不存在：{run_dir}")
    config_path = run_dir / runs.CONFIG_FILE
    try:
        saved = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise SystemExit(f"--resume {run_dir}：这里没有可读的 {runs.CONFIG_FILE}，不是一个运行目录") from None
    if saved.get("script") != script_name:
        raise SystemExit(f"--resume {run_dir}：这是 {saved.get('script')!r} 的运行目录，不是 {script_name} 的")
    if not (run_dir / "checkpoints").is_dir():
        raise SystemExit(f"--resume {run_dir}：目录里没有 checkpoints/，没有可以继续的训练")
    current = json.loads(json.dumps({"script": script_name, **vars(args)}, default=str))
    changed = [f"{key}: {saved.get(key)!r} -> {value!r}" for key, value in current.items()
               if key not in RESUME_MAY_CHANGE and saved.get(key) != value]
    if changed:
        raise SystemExit("续训必须使用与原运行相同的选项，否则数据划分或学习率调度会对不上。不同之处：\n  "
                         + "\n  ".join(changed) + "\n想换选项请开一个新的运行（不加 --resume）。")


def start_run(args: argparse.Namespace, script_name: str) -> Path:
    """Check the device options, set up logging and the seed, create the run folder and write config.json.

    With `--resume RUN_DIR` the run continues in RUN_DIR, so its checkpoints and metrics stay
    together; RUN_DIR must be a run of the same script with the same options. Returns the folder.
    """
    from accelerate.utils import set_seed

    from roadmap import training

    setup_logging()
    device = training.check_device_options(args)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        # 先按将要使用的设备建立进程组，Accelerator 之后会复用它；create_run_dir 要用它广播运行目录名。
        PartialState(cpu=device.type == "cpu")
    set_seed(args.seed)
    if getattr(args, "resume", None) is not None:
        _check_resume(args, script_name)
        run_dir = runs.create_run_dir(script_name, args.resume)
    else:
        run_dir = runs.create_run_dir(script_name, args.output_dir)
        runs.save_config(run_dir, {"script": script_name, **vars(args)})
    if runs.is_main_process():
        logger.info("运行目录：%s", run_dir)
    return run_dir


def run_script(main_function) -> None:
    """Call a script's `main()` and turn the errors a learner can fix into a short Chinese message.

    Missing or malformed data, a diverging loss and Ctrl-C end with one message and exit status 1
    (130 for Ctrl-C) instead of a traceback; every other error keeps its traceback.
    """
    from roadmap import data

    try:
        main_function()
    except (data.DataNotFoundError, data.DataFormatError, data.ChecksumError, FloatingPointError) as error:
        print(f"错误：{error}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("\n已中断。", file=sys.stderr)
        raise SystemExit(130) from None


# ---------------------------------------------------------------- 发现练习


@dataclass(frozen=True)
class Exercise:
    name: str
    module: str
    path: Path
    roadmap_line: str


def _stage_dirs(root: Path) -> list[Path]:
    stages = [path for path in root.glob("stage*") if (path / "__init__.py").is_file()]
    order = {name: index for index, name in enumerate(STAGE_ORDER)}
    return sorted(stages, key=lambda path: (order.get(path.name, len(order)), path.name))


def _read_exercise(path: Path, stage: str) -> Exercise | None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    docstring = ast.get_docstring(tree)
    has_main = any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body)
    if not docstring or not has_main:
        return None
    return Exercise(name=path.stem, module=f"{stage}.{path.stem}", path=path,
                    roadmap_line=docstring.strip().splitlines()[0].strip())


def discover_exercises(root: Path = REPO_ROOT) -> list[Exercise]:
    """Find every exercise: a `stage*/NAME.py` with a module docstring and a top-level `main`.

    Raises ValueError when two stages have a script of the same name, since `roadmap run NAME`
    would be ambiguous.
    """
    exercises: list[Exercise] = []
    seen: dict[str, Path] = {}
    for stage_dir in _stage_dirs(root):
        for path in sorted(stage_dir.glob("*.py")):
            if path.name.startswith("_"):
                continue
            exercise = _read_exercise(path, stage_dir.name)
            if exercise is None:
                continue
            if exercise.name in seen:
                raise ValueError(f"练习名重复：{seen[exercise.name]} 和 {path}；请给其中一个改名")
            seen[exercise.name] = path
            exercises.append(exercise)
    return exercises


def find_exercise(name: str, exercises: Sequence[Exercise]) -> Exercise:
    for exercise in exercises:
        if name in (exercise.name, exercise.module):
            return exercise
    names = [exercise.name for exercise in exercises]
    close = [candidate for candidate in names if name.lower() in candidate.lower()]
    close += [candidate for candidate in difflib.get_close_matches(name, names, n=3) if candidate not in close]
    hint = f"；你是不是想找：{', '.join(close)}" if close else ""
    raise SystemExit(f"没有名为 {name!r} 的练习{hint}。用 `roadmap list` 查看全部练习。")


# ---------------------------------------------------------------- roadmap 子命令


def command_list(_: argparse.Namespace) -> int:
    exercises = discover_exercises()
    rows = [{"练习": exercise.name, "文件": str(exercise.path.relative_to(REPO_ROOT)), "路线图": exercise.roadmap_line}
            for exercise in exercises]
    print(runs.markdown_table(rows))
    return 0


def command_run(args: argparse.Namespace) -> int:
    exercise = find_exercise(args.name, discover_exercises())
    module = importlib.import_module(exercise.module)
    sys.argv[0] = f"roadmap run {exercise.name}"  # argparse 用它做 --help 和报错里的程序名
    run_script(lambda: module.main(list(args.script_args)))
    return 0


def _tour_row(exercise: Exercise, output_dir: Path, timeout: float) -> dict[str, Any]:
    command = [sys.executable, "-m", exercise.module, "--smoke", "--output-dir", str(output_dir)]
    started = time.perf_counter()
    try:
        completed = subprocess.run(command, cwd=Path.cwd(), capture_output=True, text=True, timeout=timeout)
        returncode, stderr = completed.returncode, completed.stderr
    except subprocess.TimeoutExpired as error:
        partial = error.stderr.decode("utf-8", "replace") if isinstance(error.stderr, bytes) else (error.stderr or "")
        returncode, stderr = -1, f"{partial}\n超时（{timeout:g} 秒）"
    seconds = time.perf_counter() - started
    row: dict[str, Any] = {"练习": exercise.name, "状态": "通过" if returncode == 0 else "失败", "用时(秒)": f"{seconds:.1f}"}
    metrics_path = output_dir / runs.METRICS_FILE
    if returncode == 0 and metrics_path.is_file():
        shown = runs.headline_metrics(runs.scalar_metrics(json.loads(metrics_path.read_text(encoding="utf-8"))))
        row["主要指标"] = ", ".join(f"{key}={runs.format_value(value)}" for key, value in shown.items())
    elif returncode == 0:
        row["状态"] = "失败"
        row["主要指标"] = "没有写出 metrics.json"
    else:
        last_line = stderr.strip().splitlines()[-1] if stderr.strip() else f"退出码 {returncode}"
        row["主要指标"] = last_line[:120]
        (output_dir.parent / f"{exercise.name}.stderr.txt").write_text(stderr, encoding="utf-8")
    return row


def command_tour(args: argparse.Namespace) -> int:
    exercises = discover_exercises()
    if args.only:
        exercises = [find_exercise(name, exercises) for name in args.only]
    tour_dir: Path = args.output_dir
    if tour_dir.exists() and not tour_dir.is_dir():
        raise SystemExit(f"--output-dir 指向的是一个文件而不是文件夹：{tour_dir}")
    tour_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, exercise in enumerate(exercises, start=1):
        print(f"[{index}/{len(exercises)}] {exercise.name} --smoke ...", flush=True)
        rows.append(_tour_row(exercise, tour_dir / exercise.name, args.timeout))
    table = runs.markdown_table(rows, columns=["练习", "状态", "用时(秒)", "主要指标"])
    failed = sum(row["状态"] != "通过" for row in rows)
    summary = f"# roadmap tour（--smoke）\n\n{table}\n\n{len(rows) - failed} 个通过，{failed} 个失败。\n"
    (tour_dir / "summary.md").write_text(summary, encoding="utf-8")
    print()
    print(summary)
    print(f"汇总表已写入 {tour_dir / 'summary.md'}")
    return 1 if failed else 0


def command_report(args: argparse.Namespace) -> int:
    rows = runs.collect_report(args.runs_dir)
    if not rows:
        print(f"{args.runs_dir} 下没有找到 metrics.json；先运行一个练习，例如 `roadmap run linear_regression`。")
        return 1
    table = runs.report_table(rows)
    print(table)
    if args.output is not None:
        if args.output.is_dir():
            raise SystemExit(f"--output 应该是一个文件路径，而 {args.output} 是文件夹")
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(table + "\n", encoding="utf-8")
        print(f"\n已写入 {args.output}")
    return 0


def build_roadmap_parser() -> argparse.ArgumentParser:
    parser = ChineseArgumentParser(prog="roadmap", description="NLP 深度学习路线图练习：列出、运行、巡检练习并汇总结果。")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{list,run,tour,report}",
                                     parser_class=ChineseArgumentParser)

    list_parser = commands.add_parser("list", help="列出全部练习及其路线图条目")
    list_parser.set_defaults(handler=command_list)

    run_parser = commands.add_parser("run", help="运行一个练习：roadmap run NAME [脚本参数...]")
    run_parser.add_argument("name", help="练习名（见 roadmap list），例如 mnist_classification")
    run_parser.add_argument("script_args", nargs=argparse.REMAINDER, help="原样传给脚本的参数，例如 --epochs 3")
    run_parser.set_defaults(handler=command_run)

    tour_parser = commands.add_parser("tour", help="用 --smoke 依次运行每个练习，汇总成表")
    tour_parser.add_argument("--output-dir", type=Path, default=runs.RUNS_ROOT / "tour", help="巡检输出目录")
    tour_parser.add_argument("--only", nargs="+", metavar="NAME", help="只运行这些练习")
    tour_parser.add_argument("--timeout", type=positive_float, default=600.0, help="单个练习的超时（秒）")
    tour_parser.set_defaults(handler=command_tour)

    report_parser = commands.add_parser("report", help="收集每次运行的 metrics.json，汇总成表")
    report_parser.add_argument("--runs-dir", type=Path, default=runs.RUNS_ROOT, help="要搜索的运行根目录")
    report_parser.add_argument("--output", type=Path, default=None, help="把表格另存为这个 Markdown 文件")
    report_parser.set_defaults(handler=command_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_roadmap_parser().parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
