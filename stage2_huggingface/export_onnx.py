"""ONNX 导出：把微调好的分类模型导出成 ONNX，用 onnxruntime 跨平台推理（路线图：Hugging Face → ONNX 导出，跨平台推理）

学什么
- ONNX 是与框架无关的计算图格式：导出一次，就能在 onnxruntime（C++/C#/Java/JS/Python，CPU/GPU/移动端）里推理，
  部署端不需要装 PyTorch。
- 两条受支持的导出路线（旧的 `transformers.onnx` 包已经弃用，transformers 不再维护它，不要再用）：
  (a) optimum：`optimum.exporters.onnx.main_export(模型文件夹, 输出文件夹, task="text-classification")`
      （命令行等价于 `optimum-cli export onnx --model 模型文件夹 --task text-classification 输出文件夹`）。
      它知道每种架构有哪些输入、哪些轴是动态的，写出 model.onnx + config.json + 分词器文件，
      `ORTModelForSequenceClassification.from_pretrained(输出文件夹)` 直接加载，用法和 transformers 的模型一样。
      也可以一步到位：`ORTModelForSequenceClassification.from_pretrained(模型文件夹, export=True)`。
      optimum 2.1（optimum-onnx 0.1）内部调用的是 `torch.onnx.export(..., dynamo=False)`，即旧的 TorchScript 导出器。
  (b) PyTorch 自带的 `torch.onnx.export`：自己决定输入名、输出名和动态轴，适合任何 nn.Module。
- `torch.onnx.export` 的两个导出器：PyTorch 2.9 起默认 `dynamo=True`（先用 `torch.export` 抓出 ExportedProgram，
  再翻译成 ONNX），动态轴用 `dynamic_shapes` + `torch.export.Dim` 声明；旧的 TorchScript 导出器要显式写
  `dynamo=False`，动态轴用 `dynamic_axes`，调用时会发 DeprecationWarning。这里显式传 `dynamo`（--exporter 选择），
  不依赖随版本变化的默认值。dynamo 导出器默认把权重写进单独的 .data 文件（external_data=True），
  小于 2 GB 的模型这里传 external_data=False，权重和图在同一个 .onnx 文件里。
- 导出前必须 `model.eval()`：导出抓下的是那一刻的计算图。训练模式下 dynamo 导出器把 Dropout 以 training_mode=True
  写进图里，在关掉图优化的 onnxruntime 或别的推理引擎里，同一输入每次结果都不同；onnxruntime 默认的图优化
  恰好会删掉 Dropout 节点，把这个错误藏了起来。新导出器不再替你切换模式（`training=` 参数已弃用，
  旧导出器的 training=EVAL 默认会临时切到 eval）。eval 模式下 Dropout 是恒等映射，不进图
  （测试检查图里没有 Dropout 节点，也演示了训练模式导出的图给出随机结果）。
- 动态轴：batch 和 sequence 两个维度声明为动态，图的输入形状是 ['batch', 'sequence']，
  导出时的示例输入（2 条 × 16 个 token）不会被固化进图。
- 验证：在与导出示例不同的形状 (1, 7)、(3, 19)、(5, 64) 上（行里含 padding），onnxruntime 的 logits 与 PyTorch 的
  最大绝对误差要小于 1e-4。只在导出用的形状上比对，查不出被固化的形状。
- 从 ONNX 导出的文件夹用 `ORTModelForSequenceClassification` 重新加载，在真实文本上得到与 PyTorch 相同的 logits。

输出（运行目录里）：
    onnx_optimum/   model.onnx、config.json、分词器文件（tokenizer.json、vocab.txt 等）——optimum 导出
    onnx_torch/model.onnx                                                   ——torch.onnx.export 导出
    classifier/     只在 --smoke 时出现：极小 BERT + 随机初始化的 2 类分类头
    onnx_max_abs_difference.png、metrics.json

怎么跑
    roadmap run export_onnx --smoke                                    # 极小 BERT 分类器，几秒
    roadmap run export_onnx --model runs/imdb_classification/<时间戳>   # 微调好的运行目录或模型文件夹
    roadmap run export_onnx --model <模型文件夹> --exporter legacy      # 改用旧的 TorchScript 导出器

真实模型上的结果：imdb_classification 在 1,000 条 IMDB 影评上微调的 all-MiniLM-L6-v2（22.7M 参数），2 核 CPU：
    路线                    文件大小   max|Δlogits| (1,7) / (3,19) / (5,64)
    optimum                 86.8 MB    1.6e-07 / 2.1e-07 / 4.0e-07
    torch.onnx（dynamo）    87.4 MB    1.5e-07 / 2.6e-07 / 2.1e-07
    torch.onnx（legacy）    86.8 MB    1.6e-07 / 2.1e-07 / 4.0e-07
    ORTModelForSequenceClassification 重新加载 optimum 文件夹，3 条影评上与 PyTorch 的 logits 最大差 2.4e-07。
    都远小于 1e-4。整个脚本（两次导出 + 验证）dynamo 17 秒、legacy 13 秒。
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from roadmap import cli, runs, tiny
from stage2_huggingface import finetune_custom_dataset as recipe

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"  # optimum 和 ORTModel 认的标准文件名
OPTIMUM_SUBDIR = "onnx_optimum"
TORCH_SUBDIR = "onnx_torch"
SMOKE_MODEL_SUBDIR = "classifier"
LABEL_NAMES = ("neg", "pos")  # --smoke 分类头的类别，与 IMDB 的 0=neg、1=pos 一致
# 导出时的示例输入 (batch, sequence)。torch.export 会把示例里大小为 0 或 1 的维度固化成常数，所以两维都大于 1。
EXPORT_EXAMPLE_SHAPE = (2, 16)
VALIDATION_SHAPES = ((1, 7), (3, 19), (5, 64))  # 每个都不同于导出示例
TOLERANCE = 1e-4
OPSET = 18  # dynamo 导出器的算子库按 opset 18 实现（更低的版本要再做一次版本转换）。三条路线用同一个 opset，便于比较
SAMPLE_TEXTS = (
    "A wonderful, moving film with a superb cast.",
    "Two hours of my life I will never get back.",
    "The plot was thin, but the music carried it.",
)


# ---------------------------------------------------------------- 模型的输入


def model_input_names(tokenizer) -> list[str]:
    """Return the inputs the exported graph takes, in the tokenizer's order (BERT: input_ids, token_type_ids, attention_mask)."""
    allowed = ("input_ids", "attention_mask", "token_type_ids")
    names = [name for name in tokenizer.model_input_names if name in allowed]
    if "input_ids" not in names:
        raise ValueError(f"分词器的 model_input_names {tokenizer.model_input_names} 里没有 input_ids，不是文本分类模型的分词器")
    return names


def random_batch(batch_size: int, sequence_length: int, *, vocab_size: int, pad_token_id: int,
                 input_names: Sequence[str], seed: int = 0) -> dict[str, np.ndarray]:
    """Return int64 model inputs of shape (batch_size, sequence_length) with random token ids.

    Row 0 fills the whole length; every other row has a random length and is padded after it
    (attention_mask 0, input_ids = pad_token_id), so the comparison also covers the masking path.
    """
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(low=min(100, vocab_size - 1), high=vocab_size, size=(batch_size, sequence_length))
    lengths = rng.integers(low=1, high=sequence_length + 1, size=batch_size)
    lengths[0] = sequence_length
    attention_mask = (np.arange(sequence_length)[None, :] < lengths[:, None]).astype(np.int64)
    input_ids = np.where(attention_mask == 1, input_ids, pad_token_id).astype(np.int64)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask,
             "token_type_ids": np.zeros_like(input_ids)}
    return {name: batch[name] for name in input_names}


def torch_logits(model, batch: Mapping[str, np.ndarray]) -> np.ndarray:
    """Run the PyTorch model in eval mode on numpy inputs and return logits (batch, num_labels) as numpy."""
    import torch

    model.eval()
    with torch.no_grad():
        return model(**{name: torch.from_numpy(np.asarray(value)) for name, value in batch.items()}).logits.numpy()


def onnx_session(onnx_path: str | Path, *, threads: int | None = None):
    """Open an onnxruntime InferenceSession on the CPU, with `threads` intra-op threads (None = onnxruntime's default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])


def onnx_logits(session, batch: Mapping[str, np.ndarray]) -> np.ndarray:
    """Run an onnxruntime session on the inputs its graph declares and return the first output (the logits)."""
    feed = {node.name: np.asarray(batch[node.name], dtype=np.int64) for node in session.get_inputs()}
    return session.run(None, feed)[0]


# ---------------------------------------------------------------- (a) optimum 导出


def export_with_optimum(model_dir: str | Path, output_dir: str | Path) -> Path:
    """Export a sequence-classification folder with optimum; return `output_dir`.

    The folder then contains model.onnx (dynamic batch and sequence axes), config.json and the
    tokenizer files, and loads with `ORTModelForSequenceClassification.from_pretrained(output_dir)`.
    """
    from optimum.exporters.onnx import main_export

    import torch

    output_dir = Path(output_dir)
    # do_validation=False：optimum 自己的验证只用它的示例形状；这里的 max_abs_difference 在别的形状上比对。
    with warnings.catch_warnings():
        # optimum 用旧的 TorchScript 导出器；transformers 掩码代码里的 torch.tensor(1.0) 被记成常量，这正是想要的
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*legacy TorchScript-based ONNX export.*")
        main_export(str(model_dir), output=output_dir, task="text-classification", opset=OPSET, device="cpu",
                    do_validation=False)
    if not (output_dir / ONNX_FILE).is_file():
        raise RuntimeError(f"optimum 导出后 {output_dir} 里没有 {ONNX_FILE}")
    return output_dir


# ---------------------------------------------------------------- (b) torch.onnx.export


def _logits_module(model, input_names: Sequence[str]):
    """Wrap a Hugging Face classifier so forward takes plain tensors in `input_names` order and returns logits.

    ONNX graphs take and return tensors; the model's own forward takes keyword arguments and
    returns a ModelOutput dataclass.
    """
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return self.model(**dict(zip(input_names, inputs))).logits

    return LogitsOnly()


def export_with_torch(model_dir: str | Path, output_path: str | Path, *, exporter: str = "dynamo") -> Path:
    """Export a sequence-classification folder with `torch.onnx.export`; return `output_path`.

    `exporter="dynamo"` (the default of torch >= 2.9) traces with torch.export and declares the
    batch and sequence axes with `torch.export.Dim`; `exporter="legacy"` is the TorchScript
    exporter with `dynamic_axes`. Either way the graph inputs are named as the tokenizer's
    model inputs, the output is "logits", and the weights are stored inside the one .onnx file.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if exporter not in ("dynamo", "legacy"):
        raise ValueError(f"exporter 只能是 'dynamo' 或 'legacy'，收到 {exporter!r}")
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir))
    model.eval()  # Dropout 变成恒等映射，导出的图是确定的推理图
    input_names = model_input_names(tokenizer)
    example = random_batch(*EXPORT_EXAMPLE_SHAPE, vocab_size=model.config.vocab_size,
                           pad_token_id=model.config.pad_token_id or 0, input_names=input_names)
    example_args = tuple(torch.from_numpy(example[name]) for name in input_names)
    wrapper = _logits_module(model, input_names).eval()

    # onnx_ir / onnxscript 的图优化把每次合并常量都记一条 INFO；没装 torchvision 时注册表为它的算子各记一条 WARNING。
    for name in ("onnx_ir", "onnxscript", "torch.onnx._internal.exporter._registration"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if exporter == "dynamo":
        batch = torch.export.Dim("batch")
        sequence = torch.export.Dim("sequence", max=model.config.max_position_embeddings)
        # forward(*inputs)：dynamic_shapes 的结构要与参数一致，即一个元组，每个输入一个 {轴: Dim}
        dynamic_shapes = (tuple({0: batch, 1: sequence} for _ in input_names),)
        with warnings.catch_warnings():
            # 两个输入共用同一个 Dim 时，导出器提示“轴名不会被使用”，导出的图里名字仍是 batch / sequence
            warnings.filterwarnings("ignore", message=".*will not be used, since it shares the same shape constraints.*")
            torch.onnx.export(wrapper, example_args, str(output_path), input_names=list(input_names),
                              output_names=["logits"], dynamic_shapes=dynamic_shapes, opset_version=OPSET,
                              dynamo=True, external_data=False)
    else:
        dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
        dynamic_axes["logits"] = {0: "batch"}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*legacy TorchScript-based ONNX export.*")
            # transformers 的掩码代码里 torch.tensor(1.0) 被记成常量，这正是想要的，TracerWarning 可以忽略
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(wrapper, example_args, str(output_path), input_names=list(input_names),
                              output_names=["logits"], dynamic_axes=dynamic_axes, opset_version=OPSET, dynamo=False)
    return output_path


# ---------------------------------------------------------------- 验证


def max_abs_difference(model, onnx_path: str | Path, shapes: Sequence[tuple[int, int]] = VALIDATION_SHAPES, *,
                       input_names: Sequence[str] | None = None, seed: int = 0) -> dict[str, float]:
    """Return {"BxT": max |logits_onnx - logits_torch|} for random padded batches of each (B, T) in `shapes`.

    `model` is the PyTorch classifier the file was exported from; `input_names` default to the
    graph's own inputs.
    """
    session = onnx_session(onnx_path)
    names = list(input_names or [node.name for node in session.get_inputs()])
    differences = {}
    for index, (batch_size, sequence_length) in enumerate(shapes):
        batch = random_batch(batch_size, sequence_length, vocab_size=model.config.vocab_size,
                             pad_token_id=model.config.pad_token_id or 0, input_names=names, seed=seed + index)
        difference = np.abs(onnx_logits(session, batch) - torch_logits(model, batch))
        differences[f"{batch_size}x{sequence_length}"] = float(difference.max())
    return differences


def graph_input_shapes(onnx_path: str | Path) -> dict[str, list[int | str]]:
    """Return each graph input's shape as written in the file: a name (dim_param) for a dynamic axis, a number otherwise."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return {node.name: [dim.dim_param or dim.dim_value for dim in node.type.tensor_type.shape.dim] for node in graph.input}


def operator_types(onnx_path: str | Path) -> set[str]:
    """Return the operator types (op_type) used anywhere in the graph, including inside local functions."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    types = {node.op_type for node in model.graph.node}
    for function in model.functions:
        types.update(node.op_type for node in function.node)
    return types


def ort_model_difference(model, tokenizer, onnx_dir: str | Path, texts: Sequence[str] = SAMPLE_TEXTS) -> float:
    """Reload an optimum folder with ORTModelForSequenceClassification; return max |logits - PyTorch logits| on `texts`."""
    from optimum.onnxruntime import ORTModelForSequenceClassification

    ort_model = ORTModelForSequenceClassification.from_pretrained(str(onnx_dir))
    encoded = tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
    ort_logits = ort_model(**encoded).logits.detach().numpy()
    return float(np.abs(ort_logits - torch_logits(model, {name: value.numpy() for name, value in encoded.items()})).max())


# ---------------------------------------------------------------- --smoke 用的分类器


def build_tiny_classifier(output_dir: str | Path, *, seed: int = 0) -> Path:
    """Save a tiny BERT (roadmap.tiny) with a randomly initialised 2-label head (neg/pos) and its tokenizer to `output_dir`."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    output_dir = Path(output_dir)
    source = tiny.tiny_model_dir("bert")
    torch.manual_seed(seed)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # “分类头是新初始化的”这条提示在这里是预期的
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(source), num_labels=len(LABEL_NAMES), id2label=dict(enumerate(LABEL_NAMES)),
            label2id={name: index for index, name in enumerate(LABEL_NAMES)})
    finally:
        hf_logging.set_verbosity(verbosity)
    model.save_pretrained(output_dir)
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(output_dir)
    return output_dir


def resolve_classifier(args: argparse.Namespace, run_dir: Path) -> Path:
    """Return the classifier folder to export: --model (a run folder or a model folder), or a tiny one under --smoke."""
    if args.model is not None:
        return recipe.resolve_model_dir(Path(args.model))
    if args.smoke:
        return build_tiny_classifier(run_dir / SMOKE_MODEL_SUBDIR, seed=args.seed)
    raise SystemExit("请用 --model 指向一个微调好的文本分类模型：运行目录（例如 runs/imdb_classification/<时间戳>，"
                     "里面有 model/）或 save_pretrained 写出的文件夹；只想先跑通流程请加 --smoke。")


# ---------------------------------------------------------------- 主程序


def plot_differences(results: Mapping[str, Mapping[str, float]], path: Path) -> Path:
    """Bar chart of max |Δlogits| per validation shape and export route, log scale, with the tolerance line."""
    from roadmap.plots import plt, save_figure  # roadmap.plots 选好了 Agg 后端

    shapes = list(next(iter(results.values())))
    figure, axis = plt.subplots(figsize=(6.5, 4))
    width = 0.8 / len(results)
    for index, (route, differences) in enumerate(results.items()):
        # 误差可能恰好是 0，对数坐标画不出 0，下限取 1e-12
        values = [max(differences[shape], 1e-12) for shape in shapes]
        axis.bar(np.arange(len(shapes)) + index * width, values, width=width, label=route)
    axis.axhline(TOLERANCE, color="red", linestyle="--", label=f"tolerance {TOLERANCE:g}")
    axis.set_yscale("log")
    axis.set_xticks(np.arange(len(shapes)) + width * (len(results) - 1) / 2, [f"batch x seq = {shape}" for shape in shapes])
    axis.set(ylabel="max |logits ONNX - logits PyTorch|", title="onnxruntime vs PyTorch at unseen shapes")
    axis.grid(alpha=0.3, axis="y")
    axis.legend()
    figure.tight_layout()
    return save_figure(figure, path)


def build_argument_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser(__doc__.splitlines()[0], epochs=1, batch_size=8, lr=5e-5, shared_loop=False)
    group = parser.add_argument_group("导出选项")
    group.add_argument("--model", default=None,
                       help="微调好的文本分类模型：运行目录（里面有 model/）或模型文件夹；--smoke 且不给时用极小 BERT 分类器")
    group.add_argument("--exporter", choices=("dynamo", "legacy"), default="dynamo",
                       help="torch.onnx.export 用哪个导出器：dynamo（torch.export，PyTorch 2.9 起的默认）或 legacy（TorchScript，已弃用）")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_argument_parser().parse_args(argv)
    run_dir = cli.start_run(args, "export_onnx")
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_dir = resolve_classifier(args, run_dir)
    logger.info("导出 %s", model_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    input_names = model_input_names(tokenizer)

    started = time.perf_counter()
    optimum_dir = run_dir / OPTIMUM_SUBDIR
    if optimum_dir.exists():
        shutil.rmtree(optimum_dir)  # 同一个 --output-dir 再跑一次时，不留上一次的文件
    export_with_optimum(model_dir, optimum_dir)
    optimum_seconds = time.perf_counter() - started
    started = time.perf_counter()
    torch_path = export_with_torch(model_dir, run_dir / TORCH_SUBDIR / ONNX_FILE, exporter=args.exporter)
    torch_seconds = time.perf_counter() - started

    optimum_path = optimum_dir / ONNX_FILE
    routes = {"optimum": optimum_path, f"torch.onnx ({args.exporter})": torch_path}
    differences = {route: max_abs_difference(model, path, seed=args.seed) for route, path in routes.items()}
    reload_difference = ort_model_difference(model, tokenizer, optimum_dir)
    worst = max(max(values.values()) for values in differences.values())
    plot_differences(differences, run_dir / "onnx_max_abs_difference.png")

    summary: dict[str, Any] = {
        "model": str(model_dir),
        "torch_version": torch.__version__,
        "exporter": args.exporter,
        "opset": OPSET,
        "input_names": input_names,
        "export_example_shape": list(EXPORT_EXAMPLE_SHAPE),
        "validation_shapes": [list(shape) for shape in VALIDATION_SHAPES],
        "tolerance": TOLERANCE,
        "optimum_max_abs_difference": differences["optimum"],
        "torch_max_abs_difference": differences[f"torch.onnx ({args.exporter})"],
        "max_abs_difference": worst,
        "ort_model_reload_max_abs_difference": reload_difference,
        "within_tolerance": bool(worst <= TOLERANCE and reload_difference <= TOLERANCE),
        "optimum_graph_inputs": graph_input_shapes(optimum_path),
        "torch_graph_inputs": graph_input_shapes(torch_path),
        "optimum_onnx_mb": optimum_path.stat().st_size / 2**20,
        "torch_onnx_mb": torch_path.stat().st_size / 2**20,
        "optimum_export_seconds": round(optimum_seconds, 1),
        "torch_export_seconds": round(torch_seconds, 1),
        "optimum_dir": str(optimum_dir),
        "torch_onnx_path": str(torch_path),
    }
    runs.save_metrics(run_dir, summary)
    rows = [{"route": route, "file": str(path), "MB": path.stat().st_size / 2**20,
             **{f"max|Δ| {shape}": f"{value:.1e}" for shape, value in differences[route].items()}}
            for route, path in routes.items()]
    print(runs.markdown_table(rows))
    print(f"ORTModelForSequenceClassification 重新加载 {optimum_dir}：与 PyTorch 的 logits 最大差 {reload_difference:.2e}")
    if not summary["within_tolerance"]:
        logger.warning("有误差超过了容差 %g，见 metrics.json", TOLERANCE)
    print(f"ONNX 文件和指标在 {run_dir}")
    return summary


if __name__ == "__main__":
    cli.run_script(main)
