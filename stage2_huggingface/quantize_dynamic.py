"""模型量化：用 optimum 对 BERT 做 int8 动态量化，对照 PyTorch 的动态量化（路线图：Hugging Face → 模型量化：BERT 动态量化（optimum 库））

学什么
- 线性量化：x ≈ scale · (q − zero_point)，q 是 int8/uint8。动态量化（dynamic quantization）把权重离线量化成 int8，
  激活在推理时按当前张量的 min/max 现算 scale 再量化，所以不需要校准数据（is_static=False）；
  静态量化要先在校准集上统计激活范围，省掉运行时的那一步，但多一个校准流程。
  矩阵乘法在 int8 上做、int32 累加，再乘回 scale 得到 fp32：算得更快，权重小约 4 倍。
- optimum 的流程：先导出 fp32 ONNX（export_onnx.export_with_optimum），再
  `ORTQuantizer.from_pretrained(onnx文件夹).quantize(save_dir, quantization_config)`，写出 model_quantized.onnx。
  onnxruntime 的动态量化（IntegerOps）量化 MatMul 的权重，也量化 Gather（词向量表），所以整个文件接近 1/4。
- `AutoQuantizationConfig.avx512_vnni / avx512 / avx2 / arm64` 怎么选：配置不挑 CPU 内核（onnxruntime 运行时按 CPUID
  自己挑），它决定的是权重的数据类型，让这台 CPU 的 int8 内核不溢出：
    * 有 VNNI（avx512_vnni 或 avx_vnni）：VPDPBUSD 直接把 u8×s8 累加到 int32，激活 u8、权重 s8 → avx512_vnni 配置；
    * 只有 AVX512/AVX2：VPMADDUBSW 先把两对 u8×s8 的乘积加成 int16，可能饱和。avx2 配置改用 u8 权重
      （onnxruntime 走 u8u8 内核）；avx512 配置保留 s8 权重，这里加 reduce_range=True（7 位权重）避开饱和；
    * ARM64（aarch64、Apple M 系列）：arm64 配置，u8 激活、s8 权重。
  本脚本读 /proc/cpuinfo 的 flags 和 platform.machine() 自动选择，--isa 可以手动指定。
- per_channel：每个输出通道（MatMul 权重 (K, N) 的每一列）各一个 scale，而不是整个矩阵一个。通道之间数值范围
  差别大时误差小得多；代价只是多存一组 scale（相对权重可以忽略）。这里默认 per_channel=True（也是 optimum 这几个
  配置的默认值），--no-per-channel 换成整个张量一个 scale。下面的真实数据上两者一样快（batch 1 都是 13.0 ms），
  per-channel 与 fp32 的预测一致率 98.9%、logits 最大差 0.29，per-tensor 只有 95.3%、0.66，准确率低 1.4 个百分点。
- PyTorch 对照：`torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)` 把每个 nn.Linear
  换成 DynamicQuantizedLinear，Embedding 保持 fp32，所以模型只小一部分（MiniLM 一半参数在词向量表里）。
  torch.ao.quantization 在 PyTorch 2.13 里还能用，但已弃用，官方的继任者是 torchao 的 `quantize_` API。
- 怎么测才公平：四个模型在同一个进程里、同样的线程数（--threads，默认 1）下测；延迟用 128 个 token 的真实影评，
  batch 1 和 batch 8，先热身（--warmup-runs）再计时（--latency-runs），报 p50 / p95；
  准确率在同一份 IMDB 测试子集上算；与 fp32 PyTorch 的一致性看预测标签相同的比例和 logits 的最大差，
  不比较浮点数是否完全相等。

输出（运行目录里）：
    onnx_fp32/   model.onnx + config.json + 分词器文件（ORTModelForSequenceClassification.from_pretrained 可直接加载）
    onnx_int8/   model_quantized.onnx + ort_config.json + config.json + 分词器文件
                 （加载：ORTModelForSequenceClassification.from_pretrained(文件夹, file_name="model_quantized.onnx")）
    pytorch_int8/pytorch_model_int8.pt（quantize_dynamic 后的 state_dict）
    metrics.json、results.md（结果表）、quantization_comparison.png（柱状图）
    classifier/  只在 --smoke 时出现：极小 BERT + 随机初始化的 2 类分类头

怎么跑
    roadmap run quantize_dynamic --smoke                      # 极小 BERT 分类器 + 自带 IMDB 样本，几秒
    ROADMAP_DATA_DIR=/path/to/data roadmap run quantize_dynamic --model runs/imdb_classification/<时间戳> \\
        --max-test-samples 1000 --threads 1
    （--model 是 imdb_classification 微调好的运行目录或模型文件夹）

真实数据上的结果：imdb_classification 微调的 all-MiniLM-L6-v2（训练文件里平衡地取 1,000 条，900 训练 / 100 验证，
2 个 epoch，128 个 token），IMDB 测试集平衡地取 1,000 条；2 核 CPU（AMD EPYC，有 avx512_vnni，自动选了 avx512_vnni 配置），
--threads 1，热身 10 次、计时 50 次，per_channel=True，整个脚本 163 秒：
    模型                        大小 MB   batch 1 p50/p95 ms   batch 8 p50/p95 ms   准确率   与 fp32 预测一致   logits 最大差
    fp32 PyTorch                 86.7      39.6 / 43.3          263.4 / 276.2       0.800    1.000              0
    fp32 ONNX（onnxruntime）     86.8      30.8 / 31.4          244.3 / 255.2       0.800    1.000              1.7e-06
    int8 ONNX（optimum）         22.1      13.0 / 13.7          101.1 / 103.5       0.805    0.989              0.29
    int8 PyTorch                 55.9      14.4 / 14.9           98.6 / 104.1       0.786    0.940              1.03
    int8 ONNX 在 batch 1 上比 fp32 PyTorch 快 3.04 倍（batch 8 上 2.6 倍），文件小到 1/4，准确率 +0.5 个百分点：
    “≥ 3 倍且最多掉 1 个百分点”的目标刚好达到。1,000 条上准确率的标准误约 1.3 个百分点，所以准确率的差别
    都在噪声以内，预测一致率更能说明量化误差。同样设置下 --no-per-channel：同样 13.0 ms，准确率 0.791，一致率 0.953。
    int8 PyTorch 只量化了 nn.Linear，词向量表（一半参数）仍是 fp32，所以只小了 35%。
    机器与其他任务共用：同一模型在两次运行之间的延迟最多差 11%（int8 PyTorch 的 batch 1：16.0 与 14.4 ms）。
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from roadmap import cli, metrics, runs
from stage2_huggingface import export_onnx
from stage2_huggingface import finetune_custom_dataset as recipe
from stage2_huggingface.imdb_classification import balanced_indices, load_imdb

logger = logging.getLogger(__name__)

FP32_ONNX_SUBDIR = "onnx_fp32"
INT8_ONNX_SUBDIR = "onnx_int8"
INT8_ONNX_FILE = "model_quantized.onnx"  # ORTQuantizer 的命名：<原文件名>_quantized.onnx
TORCH_INT8_FILE = Path("pytorch_int8") / "pytorch_model_int8.pt"
ISA_CHOICES = ("avx512_vnni", "avx512", "avx2", "arm64")
ARM_MACHINES = ("arm64", "aarch64", "armv8l", "armv8b")
LATENCY_BATCH_SIZES = (1, 8)
VARIANTS = ("fp32_pytorch", "fp32_onnx", "int8_onnx", "int8_pytorch")
VARIANT_TITLES = {"fp32_pytorch": "fp32 PyTorch", "fp32_onnx": "fp32 ONNX (onnxruntime)",
                  "int8_onnx": "int8 ONNX (optimum, dynamic)", "int8_pytorch": "int8 PyTorch (quantize_dynamic)"}
# 目标：int8 ONNX 在 batch 1 上比 fp32 PyTorch 快 3 倍以上，准确率最多掉 1 个百分点
GOAL_SPEEDUP = 3.0
GOAL_MAX_ACCURACY_DROP = 1.0


# ---------------------------------------------------------------- 选哪个 AutoQuantizationConfig


def read_cpu_flags(cpuinfo_path: str | Path = "/proc/cpuinfo") -> set[str]:
    """Return the CPU feature flags listed in a Linux cpuinfo file ("flags" on x86, "Features" on ARM); empty when unreadable."""
    try:
        text = Path(cpuinfo_path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def choose_isa(flags: set[str], machine: str) -> str:
    """Return the AutoQuantizationConfig name that fits a CPU with these cpuinfo `flags` and `platform.machine()`.

    ARM64 -> "arm64"; VNNI (AVX512-VNNI or AVX-VNNI) -> "avx512_vnni"; AVX512BW without VNNI ->
    "avx512"; any other x86 CPU -> "avx2", whose u8 weights cannot saturate the int16 sums.
    """
    if machine.lower() in ARM_MACHINES:
        return "arm64"
    if flags & {"avx512_vnni", "avx512vnni", "avx_vnni"}:
        return "avx512_vnni"
    if "avx512bw" in flags:
        return "avx512"
    return "avx2"


def detect_isa() -> str:
    """Choose the config for this machine from /proc/cpuinfo and platform.machine()."""
    flags = read_cpu_flags()
    isa = choose_isa(flags, platform.machine())
    if not flags and isa != "arm64":
        logger.warning("读不到 /proc/cpuinfo（不是 Linux？），按最保守的 avx2 配置量化；可以用 --isa 指定")
    return isa


def quantization_config(isa: str, *, per_channel: bool = True):
    """Return optimum's dynamic (is_static=False) QuantizationConfig for `isa` (one of ISA_CHOICES)."""
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    if isa not in ISA_CHOICES:
        raise ValueError(f"无效的指令集 {isa!r}，可选：{', '.join(ISA_CHOICES)}")
    if isa == "avx512":
        # 没有 VNNI 的 AVX512 上 u8×s8 的 int16 中间和可能饱和，7 位权重（reduce_range）留出余量
        return AutoQuantizationConfig.avx512(is_static=False, per_channel=per_channel, reduce_range=True)
    return getattr(AutoQuantizationConfig, isa)(is_static=False, per_channel=per_channel)


# ---------------------------------------------------------------- 量化


def quantize_with_optimum(onnx_dir: str | Path, output_dir: str | Path, isa: str | None = None, *,
                          per_channel: bool = True) -> Path:
    """Dynamically quantize the model.onnx of an optimum export folder to int8; return `output_dir`.

    `isa=None` chooses the config from this CPU. The folder then contains model_quantized.onnx,
    ort_config.json (the quantization settings), config.json and the tokenizer files.
    """
    from optimum.onnxruntime import ORTQuantizer

    isa = isa or detect_isa()
    config = quantization_config(isa, per_channel=per_channel)
    logger.info("动态量化：%s 配置，%s", isa, config)
    quantizer = ORTQuantizer.from_pretrained(str(onnx_dir), file_name=export_onnx.ONNX_FILE)
    output_dir = Path(output_dir)
    # onnxruntime 的量化工具用根 logger 为每个不量化的张量记一条 INFO，量化期间只留警告
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        quantizer.quantize(save_dir=output_dir, quantization_config=config)
    finally:
        root.setLevel(level)
    if not (output_dir / INT8_ONNX_FILE).is_file():
        raise RuntimeError(f"量化后 {output_dir} 里没有 {INT8_ONNX_FILE}")
    return output_dir


def quantize_with_torch(model):
    """Return a copy of `model` whose nn.Linear layers are int8 DynamicQuantizedLinear (embeddings stay fp32)."""
    import torch

    with warnings.catch_warnings():
        # torch.ao.quantization 在 2.13 已弃用（继任者是 torchao），每次调用都提醒一次
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*are deprecated.*")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


# ---------------------------------------------------------------- 测量：大小、延迟、准确率


def percentile(values: Sequence[float], q: float) -> float:
    """Return the q-th percentile (0-100) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        raise ValueError("values 为空，无法计算分位数")
    if not 0 <= q <= 100:
        raise ValueError(f"分位数要在 0 到 100 之间，收到 {q}")
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)  # 第 rank 个（从 0 数）顺序统计量，可能落在两个之间
    lower = int(np.floor(rank))
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (rank - lower)


def latency_percentiles(times_ms: Sequence[float]) -> dict[str, float]:
    """Return {"p50": ..., "p95": ...} of per-call latencies in milliseconds."""
    return {"p50": percentile(times_ms, 50), "p95": percentile(times_ms, 95)}


def measure_latency(run: Callable[[], Any], *, warmup_runs: int, runs_timed: int) -> list[float]:
    """Call `run` warmup_runs times untimed (first-call allocations, caches), then return runs_timed wall times in ms."""
    for _ in range(warmup_runs):
        run()
    times = []
    for _ in range(runs_timed):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return times


def file_megabytes(path: str | Path) -> float:
    return Path(path).stat().st_size / 2**20


def torch_runner(model) -> Callable[[Mapping[str, np.ndarray]], np.ndarray]:
    """Return a function: numpy inputs -> numpy logits, running `model` under inference_mode."""
    import torch

    model.eval()

    def run(batch: Mapping[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            return model(**{name: torch.from_numpy(value) for name, value in batch.items()}).logits.numpy()

    return run


def onnx_runner(session) -> Callable[[Mapping[str, np.ndarray]], np.ndarray]:
    return lambda batch: export_onnx.onnx_logits(session, batch)


def predict_logits(run: Callable[[Mapping[str, np.ndarray]], np.ndarray], tokenizer, texts: Sequence[str], *,
                   max_length: int, batch_size: int, input_names: Sequence[str], description: str) -> np.ndarray:
    """Return logits (len(texts), num_labels) for `texts`, tokenized in batches padded to each batch's longest row."""
    outputs = []
    for start in tqdm(range(0, len(texts), batch_size), desc=description, leave=False):
        encoded = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                            max_length=max_length, return_tensors="np")
        outputs.append(run({name: encoded[name].astype(np.int64) for name in input_names}))
    return np.concatenate(outputs)


def latency_batch(tokenizer, texts: Sequence[str], batch_size: int, length: int,
                  input_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Return `batch_size` real reviews padded or truncated to exactly `length` tokens."""
    chosen = [texts[index % len(texts)] for index in range(batch_size)]
    encoded = tokenizer(chosen, padding="max_length", truncation=True, max_length=length, return_tensors="np")
    return {name: encoded[name].astype(np.int64) for name in input_names}


def cpu_description() -> str:
    """Return the CPU model name from /proc/cpuinfo (or platform.processor()) and the number of logical CPUs."""
    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                name = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    return f"{name or platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs"


def compare_with_reference(results: dict[str, dict[str, Any]], logits: Mapping[str, np.ndarray],
                           reference: str = "fp32_pytorch") -> None:
    """Add label agreement, max |Δlogit| and batch-1 speedup against the `reference` variant to each result."""
    reference_labels = logits[reference].argmax(axis=-1)
    reference_p50 = results[reference]["latency_ms"]["1"]["p50"]
    for variant, result in results.items():
        result["label_agreement"] = float(np.mean(logits[variant].argmax(axis=-1) == reference_labels))
        result["max_abs_logit_difference"] = float(np.abs(logits[variant] - logits[reference]).max())
        result["speedup_batch1"] = reference_p50 / result["latency_ms"]["1"]["p50"]


# ---------------------------------------------------------------- 报告


def results_rows(results: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for variant in VARIANTS:
        result = results[variant]
        rows.append({
            "model": VARIANT_TITLES[variant],
            "size (MB)": f"{result['size_mb']:.2f}",
            "batch 1 p50 / p95 (ms)": f"{result['latency_ms']['1']['p50']:.1f} / {result['latency_ms']['1']['p95']:.1f}",
            "batch 8 p50 / p95 (ms)": f"{result['latency_ms']['8']['p50']:.1f} / {result['latency_ms']['8']['p95']:.1f}",
            "speedup b1 vs fp32 PyTorch": f"{result['speedup_batch1']:.2f}x",
            "accuracy": f"{result['accuracy']:.4f}",
            "label agreement with fp32 PyTorch": f"{result['label_agreement']:.4f}",
            "max |Δlogit|": f"{result['max_abs_logit_difference']:.2e}",
        })
    return rows


def plot_comparison(results: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """Four bar panels: size on disk, p50 latency at batch 1 and 8, test accuracy."""
    from roadmap.plots import plt, save_figure  # roadmap.plots 选好了 Agg 后端

    names = [VARIANT_TITLES[variant].split(" (")[0] for variant in VARIANTS]
    panels = [("size on disk (MB)", [results[v]["size_mb"] for v in VARIANTS]),
              ("p50 latency, batch 1 (ms)", [results[v]["latency_ms"]["1"]["p50"] for v in VARIANTS]),
              ("p50 latency, batch 8 (ms)", [results[v]["latency_ms"]["8"]["p50"] for v in VARIANTS]),
              ("test accuracy", [results[v]["accuracy"] for v in VARIANTS])]
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.8))
    colors = ["tab:blue", "tab:cyan", "tab:orange", "tab:red"]
    for axis, (title, values) in zip(axes, panels):
        bars = axis.bar(names, values, color=colors)
        axis.bar_label(bars, fmt="%.3g", fontsize=8)
        axis.set_title(title)
        axis.tick_params(axis="x", rotation=30, labelsize=8)
        axis.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    return save_figure(figure, path)


def write_results_markdown(path: Path, summary: Mapping[str, Any], rows: list[dict[str, Any]]) -> Path:
    lines = [
        "# int8 dynamic quantization: fp32 vs int8, PyTorch vs ONNX Runtime",
        "",
        f"- model: `{summary['model']}`",
        f"- data: {summary['test_samples']} IMDB test reviews (balanced), max {summary['max_length']} tokens",
        f"- CPU: {summary['cpu']}; threads: {summary['threads']} (torch.set_num_threads, onnxruntime intra_op_num_threads)",
        f"- optimum config: {summary['isa']} (is_static=False, per_channel={summary['per_channel']}); "
        f"PyTorch quantized engine: {summary['torch_quantized_engine']}",
        f"- latency: {summary['max_length']} tokens, {summary['warmup_runs']} warm-up runs, {summary['latency_runs']} timed runs",
        "",
        runs.markdown_table(rows),
        "",
        f"Goal: int8 ONNX >= {GOAL_SPEEDUP:g}x faster than fp32 PyTorch at batch 1 with at most "
        f"{GOAL_MAX_ACCURACY_DROP:g} accuracy point lost. Measured: {summary['int8_onnx_speedup_batch1']:.2f}x, "
        f"accuracy {0.0 - summary['int8_onnx_accuracy_drop_points']:+.1f} points -> {'met' if summary['goal_met'] else 'not met'}.",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


# ---------------------------------------------------------------- 主程序


def build_argument_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser(__doc__.splitlines()[0], epochs=1, batch_size=32, lr=5e-5, shared_loop=False)
    group = parser.add_argument_group("量化与测量选项")
    group.add_argument("--model", default=None,
                       help="微调好的文本分类模型：运行目录（里面有 model/）或模型文件夹；--smoke 且不给时用极小 BERT 分类器")
    group.add_argument("--isa", choices=ISA_CHOICES, default=None,
                       help="按哪种 CPU 指令集选 AutoQuantizationConfig；不给时从 /proc/cpuinfo 和 platform.machine() 判断")
    group.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=True,
                       help="权重每个输出通道各一个 scale；--no-per-channel 则整个张量一个 scale")
    group.add_argument("--max-test-samples", type=cli.positive_int, default=1000,
                       help="IMDB 测试集取多少条算准确率（正负各一半）")
    group.add_argument("--max-length", type=cli.positive_int, default=128,
                       help="每条影评最多多少个 token；延迟也在这个长度上测")
    group.add_argument("--threads", type=cli.positive_int, default=1,
                       help="PyTorch 和 onnxruntime 的计算线程数（四个模型相同）")
    group.add_argument("--warmup-runs", type=cli.positive_int, default=10, help="计时前的热身次数")
    group.add_argument("--latency-runs", type=cli.positive_int, default=50, help="每个模型、每个 batch 大小计时多少次")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_argument_parser().parse_args(argv)
    if args.smoke:
        args.max_test_samples = min(args.max_test_samples, 12)
        args.warmup_runs, args.latency_runs = min(args.warmup_runs, 1), min(args.latency_runs, 5)
    run_dir = cli.start_run(args, "quantize_dynamic")
    started = time.perf_counter()
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(args.threads)
    model_dir = export_onnx.resolve_classifier(args, run_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    input_names = export_onnx.model_input_names(tokenizer)
    max_length = recipe.effective_max_length(tokenizer, model.config, args.max_length)

    texts, labels, _ = load_imdb("test", args.data_dir, smoke=args.smoke)
    rows = balanced_indices(labels, args.max_test_samples, args.seed)
    texts, labels = [texts[row] for row in rows], labels[rows]
    logger.info("IMDB 测试子集 %d 条（正负各半），最多 %d 个 token，%d 个线程", len(texts), max_length, args.threads)

    # 1. fp32 ONNX（optimum 导出）→ 2. int8 ONNX（optimum 动态量化）→ 3. int8 PyTorch（quantize_dynamic）
    isa = args.isa or detect_isa()
    fp32_dir, int8_dir = run_dir / FP32_ONNX_SUBDIR, run_dir / INT8_ONNX_SUBDIR
    for folder in (fp32_dir, int8_dir):
        if folder.exists():
            shutil.rmtree(folder)  # 同一个 --output-dir 再跑一次时，不留上一次的文件
    export_onnx.export_with_optimum(model_dir, fp32_dir)
    quantize_with_optimum(fp32_dir, int8_dir, isa, per_channel=args.per_channel)
    torch_int8 = quantize_with_torch(model)
    torch_int8_path = run_dir / TORCH_INT8_FILE
    torch_int8_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torch_int8.state_dict(), torch_int8_path)  # safetensors 存不了打包的量化权重，这里用 torch.save

    runners = {
        "fp32_pytorch": torch_runner(model),
        "fp32_onnx": onnx_runner(export_onnx.onnx_session(fp32_dir / export_onnx.ONNX_FILE, threads=args.threads)),
        "int8_onnx": onnx_runner(export_onnx.onnx_session(int8_dir / INT8_ONNX_FILE, threads=args.threads)),
        "int8_pytorch": torch_runner(torch_int8),
    }
    # 大小：fp32 PyTorch 取 save_pretrained 写的 model.safetensors
    sizes = {"fp32_pytorch": file_megabytes(model_dir / "model.safetensors"),
             "fp32_onnx": file_megabytes(fp32_dir / export_onnx.ONNX_FILE),
             "int8_onnx": file_megabytes(int8_dir / INT8_ONNX_FILE),
             "int8_pytorch": file_megabytes(torch_int8_path)}

    results: dict[str, dict[str, Any]] = {}
    logits: dict[str, np.ndarray] = {}
    for variant in VARIANTS:
        run = runners[variant]
        latency = {}
        for batch_size in LATENCY_BATCH_SIZES:
            batch = latency_batch(tokenizer, texts, batch_size, max_length, input_names)
            times = measure_latency(lambda: run(batch), warmup_runs=args.warmup_runs, runs_timed=args.latency_runs)
            latency[str(batch_size)] = latency_percentiles(times)
        logits[variant] = predict_logits(run, tokenizer, texts, max_length=max_length, batch_size=args.batch_size,
                                         input_names=input_names, description=VARIANT_TITLES[variant])
        results[variant] = {"size_mb": sizes[variant], "latency_ms": latency,
                            "accuracy": metrics.accuracy(logits[variant].argmax(axis=-1), labels)}
        logger.info("%s：%.1f MB，batch 1 p50 %.1f ms，batch 8 p50 %.1f ms，准确率 %.4f", VARIANT_TITLES[variant],
                    sizes[variant], latency["1"]["p50"], latency["8"]["p50"], results[variant]["accuracy"])
    compare_with_reference(results, logits)

    summary: dict[str, Any] = {
        "model": str(model_dir),
        "test_samples": len(texts),
        "max_length": max_length,
        "threads": args.threads,
        "cpu": cpu_description(),
        "isa": isa,
        "per_channel": args.per_channel,
        "torch_quantized_engine": torch.backends.quantized.engine,
        "warmup_runs": args.warmup_runs,
        "latency_runs": args.latency_runs,
        "fp32_onnx_dir": str(fp32_dir),
        "int8_onnx_dir": str(int8_dir),
    }
    for variant, result in results.items():
        summary[f"{variant}_accuracy"] = result["accuracy"]
        summary[f"{variant}_size_mb"] = result["size_mb"]
        summary[f"{variant}_p50_ms_batch1"] = result["latency_ms"]["1"]["p50"]
        summary[f"{variant}_p50_ms_batch8"] = result["latency_ms"]["8"]["p50"]
        summary[f"{variant}_label_agreement"] = result["label_agreement"]
    summary["int8_onnx_speedup_batch1"] = results["int8_onnx"]["speedup_batch1"]
    summary["int8_onnx_accuracy_drop_points"] = 100 * (results["fp32_pytorch"]["accuracy"] - results["int8_onnx"]["accuracy"])
    summary["goal_met"] = bool(summary["int8_onnx_speedup_batch1"] >= GOAL_SPEEDUP
                               and summary["int8_onnx_accuracy_drop_points"] <= GOAL_MAX_ACCURACY_DROP)
    summary["results"] = results
    summary["seconds"] = round(time.perf_counter() - started, 1)

    table = results_rows(results)
    plot_comparison(results, run_dir / "quantization_comparison.png")
    write_results_markdown(run_dir / "results.md", summary, table)
    runs.save_metrics(run_dir, summary)
    print(runs.markdown_table(table))
    print(f"int8 ONNX 比 fp32 PyTorch（batch 1）快 {summary['int8_onnx_speedup_batch1']:.2f} 倍，"
          f"准确率变化 {0.0 - summary['int8_onnx_accuracy_drop_points']:+.1f} 个百分点；"
          f"目标（≥ {GOAL_SPEEDUP:g} 倍且最多掉 {GOAL_MAX_ACCURACY_DROP:g} 个百分点）{'达到' if summary['goal_met'] else '没有达到'}")
    print(f"模型、结果表和图在 {run_dir}")
    return summary


if __name__ == "__main__":
    cli.run_script(main)
