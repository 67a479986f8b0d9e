"""超参数搜索：W&B Sweeps，离线时在本地跑同一个搜索（路线图：Kaggle → 用 Weights & Biases 跟踪实验、做超参数搜索）

学什么
- 实验跟踪：每个训练脚本都有 `--track wandb|tensorboard`。wandb 把配置（config）、每个 epoch 的指标和
  最终结果记成一个 run；没有网络时设 `WANDB_MODE=offline`，run 写在运行目录的 wandb/offline-run-*/ 里，
  以后联网了用 `wandb sync 那个文件夹` 补传。TensorBoard 的事件文件也写进运行目录，`tensorboard --logdir 运行目录` 查看。
- Sweep 是一份 YAML（见 sweep_commonlit.yaml）：program（要跑的脚本）、method（random / grid / bayes）、
  metric（要优化的指标名和方向）、parameters（每个超参数的取值或分布）、command（怎么启动一次试验）。
  W&B 服务器上的调度器按 method 出一组参数，`wandb agent` 在本机领取并运行 `python 脚本 --参数=值 ...`，
  脚本把指标记回 W&B，调度器据此决定下一组（bayes 用高斯过程，random / grid 不看结果）。
- 分布：`value`（固定）、`values`（枚举，可带 probabilities）、`uniform`、`int_uniform`、`q_uniform`、
  `log_uniform_values`（min/max 是取值本身，在 log 尺度上均匀）、`log_uniform`（min/max 是 ln 之后的指数）、
  `q_log_uniform_values`、`normal`。学习率、正则化强度这类跨数量级的参数用 log 尺度：在 [1e-5, 1e-3]
  上均匀抽样，90% 的点会落在 1e-4 以上。
- 离线时本脚本按同一个 YAML 在本地做随机 / 网格搜索：用 --seed 固定的随机数生成器抽样，每次试验直接调用
  目标脚本的 `main(["--alpha=0.73", ...])`（同一个进程，不起子进程），读它返回的指标。`--track wandb` 时每次试验
  记成一个离线 W&B run（同一个 group），`--track tensorboard` 时写 TensorBoard 的 HPARAMS 面板。
  bayes 需要 W&B 服务器，离线时改用随机抽样并给出提示。
- 搜索前先用目标脚本自己的 argparse 检查 YAML：每个参数都必须是它的选项，每个取值都要能被它接受。
  拼错一个参数名，W&B 要等到第一个 agent 跑起来才报错；这里在抽样之前就停下。
- 试验的结果表（results.csv / results.md）按指标排序；search.png 画每次试验的指标和"到目前为止最好"的曲线，
  以及每个数值参数与指标的散点图。NOTE: 搜索用的是 CV 分数，挑出来的最佳配置在同一个 CV 上的分数偏乐观
  （挑选本身就是在 CV 上拟合）；试验越多偏得越多，最终模型要在没参与挑选的数据上再确认一次。

怎么跑
    roadmap run hparam_search --smoke                         # 自带样本，3 次试验，几秒
    ROADMAP_DATA_DIR=/path/to/data roadmap run hparam_search --trials 20 --track wandb
    roadmap run hparam_search --sweep my_sweep.yaml --method grid
    roadmap run hparam_search --online --trials 20            # 联网：wandb sweep + wandb agent（需要 W&B 账号）

真实数据上的结果：见 stage2_kaggle/README.md。
"""

from __future__ import annotations

import argparse
import csv
import importlib
import itertools
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from roadmap import cli, data, runs

logger = logging.getLogger(__name__)

DEFAULT_SWEEP = Path(__file__).with_name("sweep_commonlit.yaml")
PROJECT = "nlp-roadmap"
METHODS = ("random", "grid", "bayes")
SMOKE_TRIALS = 3
# 本脚本把这些通用选项原样转给每次试验（目标脚本也有这个选项时）；其余的超参数来自 YAML。
FORWARDED_OPTIONS = ("smoke", "data_dir", "seed", "device", "precision", "max_train_samples", "epochs", "batch_size", "lr")


# ---------------------------------------------------------------- 读 sweep 配置


def load_sweep(path: str | Path) -> dict[str, Any]:
    """Read a W&B sweep YAML and check its top-level keys; raise DataFormatError (Chinese) when malformed."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise data.DataNotFoundError(f"找不到 sweep 配置文件：{path}")
    try:
        sweep = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise data.DataFormatError(f"{path} 不是合法的 YAML：{error}") from error
    if not isinstance(sweep, dict):
        raise data.DataFormatError(f"{path} 的顶层应当是键值对（program、method、metric、parameters）")
    for key in ("program", "method", "metric", "parameters"):
        if key not in sweep:
            raise data.DataFormatError(f"{path} 缺少 {key}")
    if sweep["method"] not in METHODS:
        raise data.DataFormatError(f"{path}：method 只能是 {', '.join(METHODS)}，收到 {sweep['method']!r}")
    metric = sweep["metric"]
    if not isinstance(metric, dict) or "name" not in metric or metric.get("goal", "minimize") not in ("minimize", "maximize"):
        raise data.DataFormatError(f"{path}：metric 需要 name 和 goal（minimize 或 maximize），收到 {metric!r}")
    if not isinstance(sweep["parameters"], dict) or not sweep["parameters"]:
        raise data.DataFormatError(f"{path}：parameters 是空的")
    for name, spec in sweep["parameters"].items():
        check_parameter_spec(name, spec)
    return sweep


def _distribution(spec: Mapping[str, Any]) -> str:
    """Return the spec's distribution, inferred as W&B does when it is not written out."""
    if "distribution" in spec:
        return spec["distribution"]
    if "value" in spec:
        return "constant"
    if "values" in spec:
        return "categorical"
    if "min" in spec and "max" in spec:
        return "int_uniform" if isinstance(spec["min"], int) and isinstance(spec["max"], int) else "uniform"
    return "unknown"


RANGE_DISTRIBUTIONS = ("uniform", "int_uniform", "q_uniform", "log_uniform", "log_uniform_values", "q_log_uniform_values")


def check_parameter_spec(name: str, spec: Any) -> None:
    if not isinstance(spec, dict):
        raise data.DataFormatError(f"参数 {name} 的写法应当是 {{value: ...}}、{{values: [...]}} 或 {{distribution: ..., min, max}}")
    kind = _distribution(spec)
    if kind in RANGE_DISTRIBUTIONS:
        if not ("min" in spec and "max" in spec and spec["min"] < spec["max"]):
            raise data.DataFormatError(f"参数 {name}（{kind}）需要 min < max，收到 {spec}")
        if kind in ("log_uniform_values", "q_log_uniform_values") and spec["min"] <= 0:
            raise data.DataFormatError(f"参数 {name}（{kind}）的 min 必须大于 0")
    elif kind == "categorical":
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise data.DataFormatError(f"参数 {name} 的 values 应当是非空列表")
        probabilities = spec.get("probabilities")
        if probabilities is not None and (len(probabilities) != len(values) or abs(sum(probabilities) - 1) > 1e-6):
            raise data.DataFormatError(f"参数 {name} 的 probabilities 要与 values 一样长、加起来等于 1")
    elif kind == "normal":
        if spec.get("sigma", 1.0) <= 0:
            raise data.DataFormatError(f"参数 {name} 的 sigma 必须大于 0")
    elif kind != "constant":
        raise data.DataFormatError(f"参数 {name}：不支持的分布 {kind!r}（支持 constant、categorical、normal、"
                                   f"{'、'.join(RANGE_DISTRIBUTIONS)}）")


# ---------------------------------------------------------------- 抽样


def sample_value(spec: Mapping[str, Any], rng: np.random.Generator) -> Any:
    """Draw one value of a parameter from its W&B distribution."""
    kind = _distribution(spec)
    low, high = spec.get("min"), spec.get("max")
    if kind == "constant":
        return spec["value"]
    if kind == "categorical":
        index = rng.choice(len(spec["values"]), p=spec.get("probabilities"))
        return spec["values"][int(index)]
    if kind == "int_uniform":
        return int(rng.integers(low, high + 1))  # 两端都包含
    if kind == "uniform":
        return float(rng.uniform(low, high))
    if kind == "q_uniform":
        return float(round(rng.uniform(low, high) / spec.get("q", 1.0)) * spec.get("q", 1.0))
    if kind == "log_uniform":  # min/max 是指数：exp(U(min, max))
        return float(math.exp(rng.uniform(low, high)))
    if kind == "log_uniform_values":  # exp(U(ln min, ln max))
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))
    if kind == "q_log_uniform_values":
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
        return float(round(value / spec.get("q", 1.0)) * spec.get("q", 1.0))
    if kind == "normal":
        return float(rng.normal(spec.get("mu", 0.0), spec.get("sigma", 1.0)))
    raise data.DataFormatError(f"不支持的分布 {kind!r}")


def grid_values(name: str, spec: Mapping[str, Any]) -> list[Any]:
    kind = _distribution(spec)
    if kind == "constant":
        return [spec["value"]]
    if kind == "categorical":
        return list(spec["values"])
    if kind == "int_uniform":
        return list(range(spec["min"], spec["max"] + 1))
    raise data.DataFormatError(f"grid 搜索只能枚举离散参数；{name} 是连续分布 {kind}，请改成 values 列表或用 random")


def sample_configs(parameters: Mapping[str, Mapping[str, Any]], method: str, count: int, seed: int) -> list[dict[str, Any]]:
    """Return the trial configurations: `count` random draws, or the whole grid (capped at `count`)."""
    if method == "grid":
        names = list(parameters)
        grid = itertools.product(*(grid_values(name, parameters[name]) for name in names))
        return [dict(zip(names, values)) for values in itertools.islice(grid, count)]
    if method == "bayes":
        logger.warning("bayes 需要 W&B 服务器上的调度器；离线时改用随机抽样（random）")
    rng = np.random.default_rng(seed)
    return [{name: sample_value(spec, rng) for name, spec in parameters.items()} for _ in range(count)]


def to_cli_args(config: Mapping[str, Any]) -> list[str]:
    """Format a configuration as W&B's ${args} does: `--name=value` for each parameter."""
    return [f"--{name}={value}" for name, value in config.items()]


# ---------------------------------------------------------------- 目标脚本


def target_module(program: str):
    """Import the sweep's program (`stage2_kaggle/commonlit_readability.py`) as a module of this repository."""
    path = Path(program)
    if path.suffix != ".py" or not (cli.REPO_ROOT / path).is_file():
        raise data.DataFormatError(f"program 应当是仓库里的一个 .py 脚本（相对仓库根目录），收到 {program!r}")
    return importlib.import_module(".".join(path.with_suffix("").parts))


def target_parser(module) -> argparse.ArgumentParser:
    for name in ("build_argument_parser", "build_parser"):
        if callable(getattr(module, name, None)):
            return getattr(module, name)()
    raise data.DataFormatError(f"{module.__name__} 没有 build_argument_parser()，无法检查 sweep 的参数")


def check_against_parser(parameters: Mapping[str, Mapping[str, Any]], parser: argparse.ArgumentParser) -> None:
    """Raise DataFormatError unless every parameter is an option of `parser` that accepts each of its values."""
    options = parser._option_string_actions  # argparse 的选项表：'--alpha' -> Action
    for name, spec in parameters.items():
        action = options.get(f"--{name}")
        if action is None:
            known = sorted(option[2:] for option in options if option.startswith("--"))
            raise data.DataFormatError(f"sweep 参数 {name!r} 不是 {parser.prog} 的选项；可用的有：{', '.join(known)}")
        if action.nargs == 0:
            raise data.DataFormatError(f"sweep 参数 {name!r} 是开关选项（不带值），W&B 的 --{name}=值 传不进去")
        candidates = [spec[key] for key in ("value", "min", "max") if key in spec] + list(spec.get("values", []))
        for value in candidates:
            try:
                converted = action.type(str(value)) if callable(action.type) else str(value)
            except (argparse.ArgumentTypeError, TypeError, ValueError) as error:
                raise data.DataFormatError(f"sweep 参数 {name}={value!r} 不被 --{name} 接受：{error}") from None
            if action.choices is not None and converted not in action.choices:
                raise data.DataFormatError(f"sweep 参数 {name}={value!r} 不在 --{name} 的可选值 {list(action.choices)} 里")


def base_arguments(args: argparse.Namespace, parser: argparse.ArgumentParser, swept: Sequence[str]) -> list[str]:
    """Return the common options changed from their defaults here, for each trial (when the target has them)."""
    options = parser._option_string_actions
    defaults = build_argument_parser().parse_args([])
    argv: list[str] = []
    for dest in FORWARDED_OPTIONS:
        flag = "--" + dest.replace("_", "-")
        value = getattr(args, dest, None)
        if value == getattr(defaults, dest) or flag not in options or dest.replace("_", "-") in swept:
            continue
        argv += [flag] if value is True else [flag, str(value)]
    return argv


# ---------------------------------------------------------------- 试验


def run_trial(module, argv: list[str], metric_name: str) -> tuple[float, dict[str, Any]]:
    """Call the target's main(argv); return (its `metric_name`, the numeric metrics it returned)."""
    returned = module.main(argv)
    if metric_name not in returned:
        raise data.DataFormatError(f"{module.__name__}.main 返回的指标里没有 {metric_name!r}：{sorted(returned)}")
    numeric = {key: float(value) for key, value in returned.items()
               if isinstance(value, (int, float)) and not isinstance(value, bool)}
    return float(returned[metric_name]), numeric


def run_local_search(sweep: Mapping[str, Any], configs: Sequence[Mapping[str, Any]], base_argv: list[str],
                     run_dir: Path, track: str) -> list[dict[str, Any]]:
    """Run every configuration through the sweep's program; log each trial to W&B / TensorBoard when asked."""
    module = target_module(sweep["program"])
    metric_name = sweep["metric"]["name"]
    writer = None
    if track == "tensorboard":
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"))
    trials = []
    for number, config in enumerate(configs, start=1):
        argv = base_argv + to_cli_args(config) + ["--output-dir", str(run_dir / "trials" / f"trial-{number:02d}")]
        logger.info("试验 %d/%d：%s", number, len(configs), " ".join(to_cli_args(config)))
        started = time.perf_counter()
        value, numeric = run_trial(module, argv, metric_name)
        trial = {"trial": number, **config, metric_name: value, "seconds": round(time.perf_counter() - started, 2)}
        trials.append(trial)
        if track == "wandb":
            import wandb

            # 每次试验一个离线 run，同一个 group，W&B 界面里可以按参数对比（parallel coordinates）。
            run = wandb.init(project=PROJECT, dir=str(run_dir), group=sweep.get("name", run_dir.name),
                             job_type="local-sweep", name=f"trial-{number:02d}", config=dict(config))
            run.log(numeric)
            run.summary[metric_name] = value
            run.finish()
        elif writer is not None:
            writer.add_hparams({key: value if isinstance(value, (int, float, str, bool)) else str(value)
                                for key, value in config.items()}, {f"hparam/{metric_name}": value},
                               run_name=f"trial-{number:02d}")
    if writer is not None:
        writer.close()
    return trials


def run_agent_trial(program: str, argv: list[str]) -> dict[str, Any]:
    """`--trial PROGRAM ARGS...`: what each `wandb agent` launch runs (see the YAML's command)."""
    import wandb

    cli.setup_logging()
    module = target_module(program)
    run = wandb.init()  # wandb agent 通过环境变量告诉它属于哪个 sweep、用哪个 run id
    try:
        returned = module.main(argv)
        run.log({key: value for key, value in returned.items()
                 if isinstance(value, (int, float)) and not isinstance(value, bool)})
    finally:
        run.finish()
    return returned


# ---------------------------------------------------------------- 联网：wandb sweep + wandb agent


def online_commands(sweep_path: Path, project: str, count: int) -> list[str]:
    return [f"wandb sweep --project {project} {sweep_path}",
            f"wandb agent --count {count} <entity>/{project}/<sweep ID>"]


def run_online(sweep: Mapping[str, Any], sweep_path: Path, project: str, count: int) -> dict[str, Any]:
    """Create the sweep on the W&B server and run one agent here for `count` trials."""
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        raise SystemExit(f"--online 需要联网的 W&B，但 WANDB_MODE={os.environ['WANDB_MODE']}。"
                         "离线时去掉 --online，在本地跑同样的搜索。")
    import wandb

    sweep_id = wandb.sweep(sweep=dict(sweep), project=project)
    command = [sys.executable, "-m", "wandb", "agent", "--project", project, "--count", str(count), sweep_id]
    logger.info("启动 agent：%s", " ".join(command))
    completed = subprocess.run(command, cwd=cli.REPO_ROOT, check=False)
    return {"sweep_id": sweep_id, "agent_returncode": completed.returncode, "trials": count}


# ---------------------------------------------------------------- 报告


def write_results(trials: Sequence[Mapping[str, Any]], metric_name: str, goal: str, run_dir: Path) -> list[dict[str, Any]]:
    """Write results.csv (in trial order) and results.md (best first); return the ranked trials."""
    columns = list(trials[0])
    with open(run_dir / "results.csv", "w", encoding="utf-8", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        writer.writerows(trials)
    ranked = sorted(trials, key=lambda trial: trial[metric_name], reverse=goal == "maximize")
    (run_dir / "results.md").write_text(runs.markdown_table(ranked, columns=columns) + "\n", encoding="utf-8")
    return ranked


def plot_search(trials: Sequence[Mapping[str, Any]], parameters: Mapping[str, Mapping[str, Any]], metric_name: str,
                goal: str, path: Path) -> Path:
    """Metric per trial with the running best, and metric against each swept numeric parameter."""
    from roadmap.plots import plt, save_figure

    values = np.array([trial[metric_name] for trial in trials])
    running_best = np.minimum.accumulate(values) if goal == "minimize" else np.maximum.accumulate(values)
    swept = [name for name, spec in parameters.items() if _distribution(spec) != "constant"
             and all(isinstance(trial[name], (int, float)) and not isinstance(trial[name], bool) for trial in trials)]
    figure, axes = plt.subplots(1, 1 + len(swept), figsize=(4.5 * (1 + len(swept)), 3.6), squeeze=False)
    numbers = np.arange(1, len(values) + 1)
    axes[0, 0].plot(numbers, values, "o", label="trial")
    axes[0, 0].step(numbers, running_best, where="post", color="tab:red", label="best so far")
    axes[0, 0].set(xlabel="trial", ylabel=metric_name, title=f"search ({goal})")
    axes[0, 0].legend()
    for axis, name in zip(axes[0, 1:], swept):
        axis.scatter([trial[name] for trial in trials], values)
        if _distribution(parameters[name]).startswith(("log_", "q_log")):
            axis.set_xscale("log")
        axis.set(xlabel=name, ylabel=metric_name, title=f"{metric_name} vs {name}")
    for axis in axes.flat:
        axis.grid(alpha=0.3)
    figure.tight_layout()
    return save_figure(figure, path)


# ---------------------------------------------------------------- 主程序


def build_argument_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser(__doc__.splitlines()[0], epochs=1, batch_size=1, lr=1.0, shared_loop=False)
    # --epochs / --batch-size / --lr 只在明确给出时转给每次试验，否则用目标脚本自己的默认值。
    parser.set_defaults(epochs=None, batch_size=None, lr=None)
    group = parser.add_argument_group("超参数搜索选项")
    group.add_argument("--sweep", type=Path, default=DEFAULT_SWEEP, help="W&B sweep 的 YAML 配置文件")
    group.add_argument("--trials", type=cli.positive_int, default=None,
                       help="试验次数；默认取 YAML 的 run_cap（没有则 10，--smoke 时 3）；grid 时最多跑完整个网格")
    group.add_argument("--method", choices=METHODS, default=None, help="覆盖 YAML 里的 method")
    group.add_argument("--track", choices=("none", "wandb", "tensorboard"), default="none",
                       help="每次试验记成一个 W&B run（无网络时设 WANDB_MODE=offline），或写 TensorBoard 的 HPARAMS")
    group.add_argument("--online", action="store_true",
                       help="联网：在 W&B 服务器上建 sweep（wandb sweep），在本机跑一个 agent（wandb agent）")
    group.add_argument("--project", default=PROJECT, help="--online 时的 W&B 项目名")
    return parser


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--trial"]:
        if len(argv) < 2:
            raise SystemExit("--trial 后面要跟目标脚本的路径，例如 --trial stage2_kaggle/commonlit_readability.py --alpha=1")
        return run_agent_trial(argv[1], argv[2:])

    args = build_argument_parser().parse_args(argv)
    sweep = load_sweep(args.sweep)
    method = args.method or sweep["method"]
    metric_name, goal = sweep["metric"]["name"], sweep["metric"].get("goal", "minimize")
    count = args.trials or sweep.get("run_cap", 10)
    parser = target_parser(target_module(sweep["program"]))
    check_against_parser(sweep["parameters"], parser)
    if args.online:
        if args.smoke:
            raise SystemExit("--online 与 --smoke 不能一起用：--smoke 是离线的本地演示")
        cli.setup_logging()
        return run_online(sweep, args.sweep, args.project, count)

    if args.smoke and args.trials is None:
        count = min(count, SMOKE_TRIALS)
    run_dir = cli.start_run(args, "hparam_search")
    started = time.perf_counter()
    configs = sample_configs(sweep["parameters"], method, count, args.seed)
    base_argv = base_arguments(args, parser, list(sweep["parameters"]))
    trials = run_local_search(sweep, configs, base_argv, run_dir, args.track)

    ranked = write_results(trials, metric_name, goal, run_dir)
    plot_search(trials, sweep["parameters"], metric_name, goal, run_dir / "search.png")
    best = ranked[0]
    best_params = {name: best[name] for name in sweep["parameters"]}
    command = " ".join(["python", sweep["program"], *base_argv, *to_cli_args(best_params)])
    (run_dir / "best_command.txt").write_text(command + "\n", encoding="utf-8")
    summary: dict[str, Any] = {
        "program": sweep["program"], "method": method, "metric": metric_name, "goal": goal,
        "n_trials": len(trials), f"best_{metric_name}": best[metric_name],
        f"worst_{metric_name}": ranked[-1][metric_name], "best_trial": best["trial"], "best_params": best_params,
        "seconds": round(time.perf_counter() - started, 1),
    }
    runs.save_metrics(run_dir, summary)
    print(runs.markdown_table(ranked[:10], columns=list(trials[0])))
    print(f"最好的配置（试验 {best['trial']}，{metric_name}={best[metric_name]:.4f}）：\n  {command}")
    print("联网时用 W&B 跑同一个搜索：\n  " + "\n  ".join(online_commands(args.sweep, args.project, count)))
    print(f"结果表、图和每次试验的运行目录在 {run_dir}")
    return summary


if __name__ == "__main__":
    cli.run_script(main)
