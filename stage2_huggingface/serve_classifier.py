"""服务的模型一侧：分类器（torch / ONNX 后端）与 micro-batching（路线图：Hugging Face → 用 FastAPI 部署微调好的模型）

serve_api.py 管 HTTP（请求格式、校验、错误码、FastAPI 应用、main）；这个模块只管"拿到一批文本，返回一批预测"。
它是库模块，没有 main；要起服务用 `roadmap run serve_api`。

学什么
- 分类器 = 分词器 + 模型 + softmax：TextClassifier.predict(texts) 把一批文本分词（补齐到这一批里最长的一条，
  截断到模型的最大 token 数），前向得到 logits，再 softmax 成每个类别的概率。两个后端只在前向这一步不同：
    · TorchClassifier：transformers 的 AutoModelForSequenceClassification；
    · OnnxClassifier：optimum 导出的 .onnx 文件（fp32 或 int8），用 onnxruntime 的 InferenceSession 跑，不需要 PyTorch。
- 为什么分词和前向只在一个专用线程里做：fast tokenizer 是 Rust 对象。调用参数（max_length、padding）与上一次不同时，
  transformers 会改写它内部的 truncation / padding 设置，这是对 Rust 对象的可变借用；另一个线程正在用它编码时就会报
  "RuntimeError: Already borrowed"。MicroBatcher 里只有一个 worker 的 ThreadPoolExecutor 独占分词器和模型，
  请求处理协程从不碰它们，也就不需要锁。前向放进这个线程而不是直接在事件循环里跑：一次前向要几毫秒到几十毫秒，
  在事件循环里跑会让所有连接都停下；放在线程里时，PyTorch 和 onnxruntime 在算子内部释放 GIL，事件循环照常接收新请求。
- micro-batching 用几毫秒的等待换吞吐量：每次前向都有一份与批大小无关的固定开销（Python 调用、算子调度、
  把权重读一遍），一批 16 条只付一次，逐条算要付 16 次。每个请求把 (文本, future) 放进 asyncio.Queue，
  worker 取出第一条后，最多再等 wait_ms 毫秒、最多凑 max_batch_size 条，在那个线程里 predict，再把结果写回各自的 future。
  代价：空闲时单独到达的请求要多等至多 wait_ms（服务默认 2 ms，0 表示只取已经在排队的）。收益：负载高时，
  模型算这一批的同时新请求照常进队列，下一批自然就凑得更大，凑满 max_batch_size 条时也不再等。
- 凑批不改变结果：batch 内按最长的一条补齐，attention mask 让补齐的位置不影响结果，所以凑批前后每条文本的分数相同
  （fp32 误差以内；int8 动态量化按整个张量取量化范围，补齐会让分数有细微差别）。
- 一批失败不能让 worker 停下：异常写进这一批的每个 future，之后的请求照常处理；停止时还在排队的文本得到"服务正在停止"。

其他脚本和测试复用的接口（serve_api 原样导出这些名字）：
    load_classifier(model_dir, backend="torch", *, max_length=None, threads=None, device="cpu", onnx_file=None)
        -> TextClassifier（.predict(texts) -> list[Prediction]；Prediction 有 label、score、scores、truncated）
    MicroBatcher(classifier, *, max_batch_size, wait_ms, max_queue)：start()、await submit(texts)、await stop()、stats()
    export_onnx_folder(model_dir, output_dir, *, int8=False) -> ONNX 文件夹
    build_smoke_classifier(output_dir) -> 在自带评价上训练几步的极小分类器（--smoke 和测试用）

实测（benchmarks/serve_load.py，2 核 CPU，16 个并发客户端，--batch-wait-ms 2）：int8 ONNX 平均每批 14 条、464 请求/秒，
torch 平均每批 13 条、159 请求/秒；条件和延迟见 serve_api.py 的说明与 docs/BENCHMARKS.md。
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from roadmap import tiny

logger = logging.getLogger(__name__)

SMOKE_TRAIN_STEPS = 40


# ---------------------------------------------------------------- 分类器：分词 + 前向，只在一个线程里调用


@dataclass
class Prediction:
    label: str
    score: float
    scores: dict[str, float]
    truncated: bool


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32, the same arithmetic as `pipeline("text-classification")`."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


class TextClassifier:
    """A tokenizer and a sequence-classification model behind `predict(texts)`.

    Not thread-safe on purpose: the fast tokenizer must not be called from two threads at once,
    so the server calls `predict` from its single inference thread only.
    """

    backend = ""

    def __init__(self, model_dir: str | Path, max_length: int | None = None):
        from transformers import AutoConfig, AutoTokenizer

        from stage2_huggingface.finetune_custom_dataset import effective_max_length

        self.model_dir = str(model_dir)
        self.config = AutoConfig.from_pretrained(self.model_dir)
        if self.config.problem_type in ("regression", "multi_label_classification"):
            raise SystemExit(f"{model_dir} 是 {self.config.problem_type} 模型；这个服务只支持单标签分类（softmax）")
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        if not self.tokenizer.is_fast:  # 判断是否截断要用 fast tokenizer 的 encodings
            raise SystemExit(f"{model_dir} 的分词器不是 fast tokenizer；请在文件夹里放 tokenizer.json"
                             "（`AutoTokenizer.from_pretrained(...).save_pretrained(...)` 会写出它）")
        self.labels = [self.config.id2label[index] for index in range(self.config.num_labels)]
        self.max_length = effective_max_length(self.tokenizer, self.config, max_length)

    def logits(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        # padding=True：补齐到这一批里最长的一条，而不是 max_length，短文本的 batch 就很便宜。
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding=True,
                                 return_tensors="np")
        truncated = [bool(encoding.overflowing) for encoding in encoded.encodings]
        probabilities = softmax(self.logits(dict(encoded)).astype(np.float32))
        predictions = []
        for row, was_truncated in zip(probabilities, truncated):
            best = int(row.argmax())
            predictions.append(Prediction(label=self.labels[best], score=float(row[best]),
                                          scores={name: float(value) for name, value in zip(self.labels, row)},
                                          truncated=was_truncated))
        return predictions


class TorchClassifier(TextClassifier):
    backend = "torch"

    def __init__(self, model_dir: str | Path, max_length: int | None = None, device: str = "cpu"):
        import torch
        from transformers import AutoModelForSequenceClassification

        super().__init__(model_dir, max_length)
        self.torch = torch
        self.device = torch.device(device)
        self.model = AutoModelForSequenceClassification.from_pretrained(self.model_dir).to(self.device).eval()

    def logits(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        inputs = {name: self.torch.from_numpy(value).to(self.device) for name, value in encoded.items()}
        with self.torch.inference_mode():
            return self.model(**inputs).logits.float().cpu().numpy()


class OnnxClassifier(TextClassifier):
    backend = "onnx"

    def __init__(self, model_dir: str | Path, max_length: int | None = None, threads: int | None = None,
                 onnx_file: str | None = None):
        import onnxruntime

        super().__init__(model_dir, max_length)
        self.onnx_path = find_onnx_file(Path(model_dir), onnx_file)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0：onnxruntime 自己按物理核数决定
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(self.onnx_path), options, providers=["CPUExecutionProvider"])
        self.input_names = [item.name for item in self.session.get_inputs()]

    def logits(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        # 导出的图按名字要输入；分词器没给 token_type_ids 而图要时，补全 0（单句输入时它本来就全是 0）。
        shape = encoded["input_ids"].shape
        feed = {name: encoded[name].astype(np.int64) if name in encoded else np.zeros(shape, dtype=np.int64)
                for name in self.input_names}
        return self.session.run(["logits"], feed)[0]


def find_onnx_file(folder: Path, name: str | None = None) -> Path:
    """Return the one .onnx file in `folder` (or the one named `name`); exit with a Chinese message otherwise."""
    if name is not None:
        path = folder / name
        if not path.is_file():
            raise SystemExit(f"{folder} 里没有 {name}")
        return path
    candidates = sorted(folder.glob("*.onnx"))
    if not candidates:
        raise SystemExit(f"{folder} 里没有 .onnx 文件；先用 optimum 导出（或 export_onnx_folder），或改用 --backend torch")
    if len(candidates) > 1:
        names = "、".join(path.name for path in candidates)
        raise SystemExit(f"{folder} 里有多个 .onnx 文件（{names}）；用 --onnx-file 指定其中一个")
    return candidates[0]


def resolve_model_dir(path: str | Path) -> Path:
    """Return the model folder: `path` itself, or `path`/model for a run folder; exit with a Chinese message otherwise."""
    path = Path(path)
    # model/ first: a run folder has a config.json of its own (the run's options), not a model config.
    for candidate in (path / "model", path):
        if (candidate / "config.json").is_file():
            return candidate
    raise SystemExit(f"{path} 不是模型文件夹（没有 config.json），里面也没有 model/ 子文件夹；"
                     "请给微调脚本运行目录里的 model/，或 optimum 导出的 ONNX 文件夹")


def load_classifier(model_dir: str | Path, backend: str = "torch", *, max_length: int | None = None,
                    threads: int | None = None, device: str = "cpu", onnx_file: str | None = None) -> TextClassifier:
    model_dir = resolve_model_dir(model_dir)
    if backend == "torch" and not any(model_dir.glob("*.safetensors")) and not any(model_dir.glob("*.bin")):
        hint = "；这个文件夹里有 .onnx 文件，请加 --backend onnx" if any(model_dir.glob("*.onnx")) else ""
        raise SystemExit(f"{model_dir} 里没有 PyTorch 权重（*.safetensors 或 *.bin）{hint}")
    if backend == "torch":
        if threads:
            import torch

            torch.set_num_threads(threads)
        return TorchClassifier(model_dir, max_length, device)
    if backend == "onnx":
        return OnnxClassifier(model_dir, max_length, threads, onnx_file)
    raise SystemExit(f"未知的后端 {backend!r}；可选 torch、onnx")


# ---------------------------------------------------------------- micro-batching


class MicroBatcher:
    """Collect queued texts into batches and run each batch on one inference thread.

    One worker task takes the first waiting text, then waits at most `wait_ms` (or until
    `max_batch_size` texts) for more, runs `classifier.predict` in the thread and resolves the futures.
    """

    def __init__(self, classifier: TextClassifier, *, max_batch_size: int, wait_ms: float, max_queue: int):
        self.classifier = classifier
        self.max_batch_size = max_batch_size
        self.wait_seconds = wait_ms / 1000
        self.max_queue = max_queue
        # 一个线程：所有分词和前向都串行地在这里做，分词器从不被并发调用。
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.queue: asyncio.Queue = asyncio.Queue()
        self.worker: asyncio.Task | None = None
        self.texts = 0
        self.batches = 0
        self.largest_batch = 0
        self.failed_batches = 0

    def start(self) -> None:
        self.worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.worker
        while not self.queue.empty():
            _, future = self.queue.get_nowait()
            if not future.done():
                future.set_exception(RuntimeError("服务正在停止"))
        self.executor.shutdown(wait=True)

    def is_full(self, extra: int) -> bool:
        return self.queue.qsize() + extra > self.max_queue

    async def submit(self, texts: Sequence[str]) -> list[Prediction]:
        loop = asyncio.get_running_loop()
        futures = []
        for text in texts:
            future = loop.create_future()
            self.queue.put_nowait((text, future))
            futures.append(future)
        return list(await asyncio.gather(*futures))

    async def _collect(self) -> list[tuple[str, asyncio.Future]]:
        batch = [await self.queue.get()]
        deadline = asyncio.get_running_loop().time() + self.wait_seconds
        while len(batch) < self.max_batch_size:
            if not self.queue.empty():
                batch.append(self.queue.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # 请求协程被取消时（例如服务停止），gather 会连带取消它的 future，这些文本不用再算。
            batch = [(text, future) for text, future in await self._collect() if not future.done()]
            if not batch:
                continue
            texts = [text for text, _ in batch]
            try:
                predictions = await loop.run_in_executor(self.executor, self.classifier.predict, texts)
            except asyncio.CancelledError:
                for _, future in batch:
                    future.cancel()
                raise
            except Exception as error:  # 一批失败不能让 worker 停下，否则之后的请求永远等不到结果
                self.failed_batches += 1
                logger.exception("一批 %d 条文本推理失败", len(texts))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            self.texts += len(texts)
            self.batches += 1
            self.largest_batch = max(self.largest_batch, len(texts))
            for (_, future), prediction in zip(batch, predictions):
                if not future.done():
                    future.set_result(prediction)

    def stats(self) -> dict[str, Any]:
        return {"queued": self.queue.qsize(), "texts": self.texts, "forward_calls": self.batches,
                "mean_batch_size": self.texts / self.batches if self.batches else 0.0,
                "largest_batch": self.largest_batch, "failed_batches": self.failed_batches,
                "max_batch_size": self.max_batch_size, "batch_wait_ms": self.wait_seconds * 1000}


# ---------------------------------------------------------------- 可以部署的模型：ONNX 导出与试跑用的极小分类器


def export_onnx_folder(model_dir: str | Path, output_dir: str | Path, *, int8: bool = False) -> Path:
    """Export a classifier folder to ONNX with optimum (export_onnx.py); `int8`: then quantize it (quantize_dynamic.py).

    `output_dir` then contains model.onnx (or model_quantized.onnx), config.json and the tokenizer.
    """
    import tempfile

    from stage2_huggingface import export_onnx, quantize_dynamic

    if not int8:
        return export_onnx.export_with_optimum(model_dir, output_dir)
    with tempfile.TemporaryDirectory(prefix="onnx-fp32-") as fp32_dir:
        export_onnx.export_with_optimum(model_dir, fp32_dir)
        return quantize_dynamic.quantize_with_optimum(fp32_dir, output_dir)


def smoke_reviews() -> tuple[list[str], list[str]]:
    """Return (texts, labels) of the bundled product reviews (negative / neutral / positive)."""
    from stage2_huggingface.finetune_custom_dataset import SAMPLE_FILE, load_table

    table = load_table(SAMPLE_FILE)
    return list(table["text"]), list(table["label"])


def build_smoke_classifier(output_dir: Path, steps: int = SMOKE_TRAIN_STEPS) -> Path:
    """Fit the tiny random BERT on the bundled reviews for a few full-batch steps and save it.

    Untrained, the tiny model gives every text nearly the same scores. A comparison of backends,
    or of batched and single calls, would then show little, so a few training steps spread the scores.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    texts, labels = smoke_reviews()
    label_names = sorted(set(labels))
    source = tiny.tiny_model_dir("bert")
    tokenizer = AutoTokenizer.from_pretrained(source)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # 分类头本来就是新建的，"newly initialized" 警告在这里没有信息
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = AutoModelForSequenceClassification.from_pretrained(
                source, num_labels=len(label_names), id2label=dict(enumerate(label_names)),
                label2id={name: index for index, name in enumerate(label_names)})
    finally:
        hf_logging.set_verbosity(verbosity)
    encoded = tokenizer(texts, truncation=True, padding=True, return_tensors="pt")
    targets = torch.tensor([label_names.index(label) for label in labels])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(**encoded, labels=targets).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    logger.info("极小分类器在 %d 条自带评价上训练 %d 步，loss %.3f", len(texts), steps, loss.item())
    model.eval().save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir
