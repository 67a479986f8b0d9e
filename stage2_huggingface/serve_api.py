"""把微调好的分类模型部署成 FastAPI 服务（路线图：Hugging Face → 用 FastAPI 部署微调好的模型）

学什么
- 启动时只加载一次模型：FastAPI 的 lifespan 在接收第一个请求之前加载分词器和模型，停止时收尾。
  在请求处理函数里调用 `from_pretrained`，每个请求都要多付一次读文件、建模型的时间。
- 两种后端（--backend）：
    · torch：transformers 的 sequence-classification 文件夹，例如 finetune_custom_dataset.py /
      imdb_classification.py 运行目录里的 model/（config.json 里的 id2label 就是返回的类别名）；
    · onnx：optimum 导出的文件夹（一个 .onnx 文件，fp32 的 model.onnx 或 int8 的 model_quantized.onnx，
      加上 config.json 和分词器文件），用 onnxruntime 的 InferenceSession 直接跑，不需要 PyTorch 参与前向。
- 接口：POST /predict {"text": "..."} → 类别、分数、所有类别的分数；POST /predict/batch {"texts": [...]}；
  GET /health（后端、模型、max_length、运行时长、队列统计）；/docs 是自动生成的 OpenAPI 文档，可以直接在浏览器里试。
- 输入校验，错误都是中文的 {"detail": "..."}：JSON 写错 → 400；缺字段、类型不对、多余字段、空文本或只有空白 → 422；
  单条文本超过 --max-chars 个字符、一批超过 --max-batch 条、请求体超过这两者算出的字节上限 → 413；
  队列里排队的文本超过 --max-queue → 503。字符上限以内的长文本不报错，分词时截断到模型的最大 token 数，
  响应里 truncated 为 true。
- 并发：同一个 fast tokenizer（Rust 对象）不能一边被一个线程改设置、一边被另一个线程使用。
  调用参数（max_length、padding）与上一次不同时，transformers 会改写分词器内部的 truncation / padding 设置，
  这是对 Rust 对象的可变借用，另一个线程正在用它编码时就会报 "RuntimeError: Already borrowed"。所以这里分词和前向只在一个专用线程里做，
  请求处理协程从不碰分词器。
- micro-batching：同时到达的请求凑成一个 batch 做一次前向。每个请求把 (文本, future) 放进 asyncio.Queue，
  一个后台 worker 取出第一条后，最多再等 --batch-wait-ms 毫秒、最多凑 --max-batch-size 条，在那个专用线程里
  分词 + 前向，再把结果写回各自的 future。batch 内按最长的一条补齐，attention mask 让补齐的位置不影响结果，
  所以凑批前后每条文本的分数相同（fp32 误差以内；int8 动态量化按整个张量取量化范围，补齐会让分数有细微差别）。
  前向在线程里跑、事件循环不阻塞：模型算这一批时，新请求照常进队列，下一批自然就凑得更大。
- 日志：启动、停止各一行，每个失败的请求一行（路径、状态码、原因）；默认关掉 uvicorn 的逐请求访问日志
  （--access-log 打开），它在高并发时本身就是开销。

怎么跑
    roadmap run serve_api --smoke                          # 极小分类器 + 127.0.0.1 上的真实 uvicorn，发几十个请求，几秒
    roadmap run serve_api --model runs/imdb_classification/<时间戳>/model --port 8000
    roadmap run serve_api --model <onnx 文件夹> --backend onnx --threads 1
    curl -s 127.0.0.1:8000/predict -H 'Content-Type: application/json' -d '{"text": "A wonderful film."}'
    （浏览器打开 http://127.0.0.1:8000/docs 看文档；Ctrl-C 停止，停止时把请求统计写进运行目录的 metrics.json）
默认只监听 127.0.0.1；--host 0.0.0.0 会把没有鉴权的服务暴露给网络上的其他机器。
本脚本不训练：--epochs、--lr、--batch-size、--max-train-samples、--precision、--data-dir 不起作用，
前向的批大小由 --max-batch-size 决定。

其他脚本和测试复用的接口：
    create_app(model_dir, backend="torch", *, max_length=None, max_chars=..., max_batch=..., max_batch_size=...,
               batch_wait_ms=..., max_queue=..., threads=None, device="cpu", onnx_file=None) -> FastAPI
    load_classifier(model_dir, backend, ...) -> TextClassifier（.predict(texts) -> list[Prediction]）
    running_server(app, host="127.0.0.1") -> 上下文管理器，给出 base_url（在线程里跑真实的 uvicorn）
    export_onnx_folder(model_dir, output_dir, *, int8=False) -> ONNX 文件夹

真实模型上的结果（benchmarks/serve_load.py，完整的表在 docs/BENCHMARKS.md）：
    在 IMDB 上微调的 all-MiniLM-L6-v2（imdb_classification，900 条训练，测试 accuracy 0.80），16 句 13-17 个 token 的
    短影评，每个后端 2,000 个请求，16 个并发客户端，服务 --threads 1 --batch-wait-ms 2；2 核 CPU，压测客户端在同一台
    机器上，另有别的任务在跑（负载约 1.5）：
        int8 ONNX：464 请求/秒，p50 34 ms，p95 43 ms，平均每批 14 条；
        torch：    159 请求/秒，p50 84 ms，p95 221 ms，平均每批 13 条。
    目标（≥ 100 请求/秒且 p95 ≤ 100 ms）：int8 ONNX 达到；torch 在 16 并发下 p95 超标。另外几次各 1,200 个请求的
    运行里，torch 在并发降到 8（161 请求/秒，p95 63 ms）或 --threads 2（243 请求/秒，p95 94 ms）时达到。
    两个后端给出的类别 100% 相同。
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from roadmap import cli, runs, tiny

logger = logging.getLogger(__name__)

# 约 3,500 个英文词（估计值）。再长的文本截断后只剩开头一小段，直接拒绝比默默丢掉大半更清楚。
DEFAULT_MAX_CHARS = 20_000
DEFAULT_MAX_BATCH = 64
DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_BATCH_WAIT_MS = 2.0
DEFAULT_MAX_QUEUE = 1024
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
    for candidate in (path, path / "model"):
        if (candidate / "config.json").is_file():
            return candidate
    raise SystemExit(f"{path} 不是模型文件夹（没有 config.json），里面也没有 model/ 子文件夹；"
                     "请给微调脚本运行目录里的 model/，或 optimum 导出的 ONNX 文件夹")


def load_classifier(model_dir: str | Path, backend: str = "torch", *, max_length: int | None = None,
                    threads: int | None = None, device: str = "cpu", onnx_file: str | None = None) -> TextClassifier:
    model_dir = resolve_model_dir(model_dir)
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


# ---------------------------------------------------------------- 请求与响应的格式（也是 /docs 里的文档）


# 模块级定义：FastAPI 按注解找请求体的类型，`from __future__ import annotations` 下函数内的局部类它解析不到。
class PredictRequest(BaseModel):
    # strict：数字、布尔值不会被悄悄转成字符串；forbid：拼错的字段名（如 "txt"）直接报错。
    model_config = ConfigDict(strict=True, extra="forbid")
    text: str = Field(description="要分类的文本", examples=["A wonderful, moving film."])


class BatchRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    texts: list[str] = Field(description="要分类的文本列表", examples=[["A wonderful film.", "Utterly boring."]])


class PredictResponse(BaseModel):
    label: str = Field(description="分数最高的类别")
    score: float = Field(description="这个类别的 softmax 概率")
    scores: dict[str, float] = Field(description="每个类别的概率")
    truncated: bool = Field(description="文本是否超过模型的最大 token 数而被截断")


class BatchResponse(BaseModel):
    predictions: list[PredictResponse]


class ErrorResponse(BaseModel):
    detail: str = Field(description="中文的错误说明")


def _field_name(location: Sequence[Any]) -> str:
    parts = [part for part in location if part != "body"]
    name = ""
    for part in parts:
        if isinstance(part, int):
            name += f"[{part}]"  # 列表下标：texts[3]
        elif name:
            name += f".{part}"
        else:
            name = str(part)
    return name


def describe_validation_error(error: dict[str, Any]) -> tuple[int, str]:
    """Turn one pydantic/FastAPI validation error into (status code, Chinese message)."""
    kind = error.get("type", "")
    field = _field_name(error.get("loc", ()))
    received = json.dumps(error.get("input"), ensure_ascii=False, default=str)[:60]
    if kind == "json_invalid":
        reason = error.get("ctx", {}).get("error", "")
        return 400, f"请求体不是合法的 JSON（{reason}）；示例：{{\"text\": \"一段文本\"}}"
    if kind == "missing":
        return 422, f"缺少字段 {field}" if field else "请求体是空的；需要 JSON 对象，例如 {\"text\": \"一段文本\"}"
    if kind == "string_type":
        return 422, f"{field} 必须是字符串，收到的是 {received}"
    if kind == "list_type":
        return 422, f"{field} 必须是字符串列表（JSON 数组），收到的是 {received}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return 422, f"请求体必须是 JSON 对象，例如 {{\"text\": \"一段文本\"}}，收到的是 {received}"
    if kind == "extra_forbidden":
        return 422, f"不认识的字段 {field}；/predict 只接受 text，/predict/batch 只接受 texts"
    return 422, f"{field or '请求体'} 不合法：{error.get('msg', kind)}"


class BodySizeLimit:
    """Pure ASGI middleware that rejects with 413, before reading it, a body whose Content-Length exceeds `max_bytes`.

    NOTE: a chunked body has no Content-Length and passes; the per-text and per-batch limits still apply.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_bytes:
                from starlette.responses import JSONResponse

                message = f"请求体有 {int(length)} 字节，超过上限 {self.max_bytes} 字节"
                scope["app"].state.failed_requests += 1  # Starlette 在进入中间件之前就写好了 scope["app"]
                logger.warning("请求失败：%s %s 413 %s", scope["method"], scope["path"], message)
                await JSONResponse({"detail": message}, status_code=413)(scope, receive, send)
                return
        await self.app(scope, receive, send)


# ---------------------------------------------------------------- FastAPI 应用


def create_app(model_dir: str | Path, backend: str = "torch", *, max_length: int | None = None,
               max_chars: int = DEFAULT_MAX_CHARS, max_batch: int = DEFAULT_MAX_BATCH,
               max_batch_size: int = DEFAULT_MAX_BATCH_SIZE, batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS,
               max_queue: int = DEFAULT_MAX_QUEUE, threads: int | None = None, device: str = "cpu",
               onnx_file: str | None = None):
    """Return the FastAPI app; the model is loaded when the app starts (lifespan), not here."""
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    model_dir = resolve_model_dir(model_dir)  # 路径写错时在启动前就报错，而不是在 lifespan 里
    if backend == "onnx":
        find_onnx_file(model_dir, onnx_file)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        started = time.perf_counter()
        classifier = load_classifier(model_dir, backend, max_length=max_length, threads=threads, device=device,
                                     onnx_file=onnx_file)
        batcher = MicroBatcher(classifier, max_batch_size=max_batch_size, wait_ms=batch_wait_ms, max_queue=max_queue)
        batcher.start()
        app.state.classifier, app.state.batcher, app.state.started = classifier, batcher, time.time()
        logger.info("服务启动：后端 %s，模型 %s，max_length %d，类别 %s，加载 %.1f 秒", backend, model_dir,
                    classifier.max_length, classifier.labels, time.perf_counter() - started)
        try:
            yield
        finally:
            await batcher.stop()
            app.state.final_stats = health_payload(app)
            logger.info("服务停止：%d 个请求成功，%d 个失败，%d 次前向（平均每批 %.1f 条）", app.state.succeeded,
                        app.state.failed_requests, batcher.batches, batcher.stats()["mean_batch_size"])

    app = FastAPI(title="文本分类服务", description=f"后端 {backend}，模型 {model_dir}", lifespan=lifespan)
    app.state.succeeded = 0
    app.state.failed_requests = 0
    # 按字符计的上限换成字节：JSON 里一个字符最多 12 字节（BMP 以外的字符，如 emoji，写成两个 \uXXXX），
    # 再给引号、逗号和括号留余量。
    app.add_middleware(BodySizeLimit, max_bytes=max_batch * (12 * max_chars + 8) + 1024)
    errors = {status: {"model": ErrorResponse} for status in (400, 413, 422, 500, 503)}

    def fail(request: Request, status: int, message: str) -> JSONResponse:
        app.state.failed_requests += 1
        logger.warning("请求失败：%s %s %d %s", request.method, request.url.path, status, message)
        return JSONResponse({"detail": message}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        described = [describe_validation_error(item) for item in error.errors()]
        status = 400 if any(code == 400 for code, _ in described) else 422
        return fail(request, status, "；".join(dict.fromkeys(message for _, message in described)))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        message = error.detail
        if error.status_code == 404:
            message = f"没有这个地址：{request.url.path}；可用：POST /predict、POST /predict/batch、GET /health、GET /docs"
        elif error.status_code == 405:
            message = f"{request.url.path} 不接受 {request.method} 请求"
        return fail(request, error.status_code, str(message))

    def check_text(text: str, field: str) -> None:
        if not text.strip():
            raise HTTPException(422, f"{field} 是空的（或只有空白字符）")
        if len(text) > max_chars:
            raise HTTPException(413, f"{field} 有 {len(text)} 个字符，超过上限 {max_chars}（--max-chars）")

    async def classify(texts: list[str]) -> list[Prediction]:
        batcher: MicroBatcher = app.state.batcher
        if batcher.is_full(len(texts)):
            raise HTTPException(503, f"服务繁忙：已有 {batcher.queue.qsize()} 条文本在排队（--max-queue {max_queue}），请稍后重试")
        try:
            return await batcher.submit(texts)
        except Exception as error:
            raise HTTPException(500, f"推理失败：{type(error).__name__}: {error}") from error

    @app.post("/predict", response_model=PredictResponse, responses=errors, summary="对一段文本分类")
    async def predict(body: PredictRequest):
        check_text(body.text, "text")
        prediction = (await classify([body.text]))[0]
        app.state.succeeded += 1
        return prediction.__dict__

    @app.post("/predict/batch", response_model=BatchResponse, responses=errors, summary="对多段文本分类")
    async def predict_batch(body: BatchRequest):
        if not body.texts:
            raise HTTPException(422, "texts 是空列表；至少给一条文本")
        if len(body.texts) > max_batch:
            raise HTTPException(413, f"一次最多 {max_batch} 条文本（--max-batch），收到 {len(body.texts)} 条")
        for index, text in enumerate(body.texts):
            check_text(text, f"texts[{index}]")
        predictions = await classify(body.texts)
        app.state.succeeded += 1
        return {"predictions": [prediction.__dict__ for prediction in predictions]}

    @app.get("/health", summary="服务状态")
    async def health() -> dict[str, Any]:
        return health_payload(app)

    return app


def health_payload(app) -> dict[str, Any]:
    classifier: TextClassifier = app.state.classifier
    onnx_path = getattr(classifier, "onnx_path", None)
    return {"status": "ok", "backend": classifier.backend, "model": classifier.model_dir,
            "onnx_file": onnx_path.name if onnx_path else None,
            "labels": classifier.labels, "max_length": classifier.max_length,
            "uptime_seconds": round(time.time() - app.state.started, 3),
            "succeeded_requests": app.state.succeeded, "failed_requests": app.state.failed_requests,
            "queue": app.state.batcher.stats()}


# ---------------------------------------------------------------- 运行服务


@contextlib.contextmanager
def running_server(app, host: str = "127.0.0.1", *, log_level: str = "warning") -> Iterator[str]:
    """Run `app` under a real uvicorn server in a background thread; yield its base URL, then stop it.

    The socket is bound here (port 0: the system picks a free port), so the port is known
    before the server starts and no other process can take it in between.
    """
    import uvicorn

    # proto 写明 IPPROTO_TCP：asyncio 只对 proto 是 TCP 的连接打开 TCP_NODELAY。proto 为 0 时 Nagle 算法生效，
    # uvicorn 分两次写出的响应头和响应体要等客户端的延迟 ACK，每个请求平白多出约 40 毫秒（实测）。
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level=log_level, access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn 没有启动起来（模型加载失败？看上面的日志）")
            time.sleep(0.02)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()


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


def percentile_ms(seconds: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1000, q)) if len(seconds) else float("nan")


def plot_latency(latencies: dict[str, Sequence[float]], path: Path, title: str) -> Path:
    from roadmap import plots  # 导入时选好 Agg 后端

    figure, axis = plots.plt.subplots(figsize=(6, 4))
    for name, seconds in latencies.items():
        axis.hist(np.asarray(seconds) * 1000, bins=30, alpha=0.6, label=name)
    axis.set(xlabel="latency (ms)", ylabel="requests", title=title)
    axis.legend()
    axis.grid(alpha=0.3)
    return plots._save(figure, path)


def run_smoke(args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    """Serve a model on 127.0.0.1, send concurrent, batch and bad requests, and measure them."""
    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # 否则 httpx 每个请求记一行
    model_dir = Path(args.model) if args.model else build_smoke_classifier(run_dir / "model")
    if args.backend == "onnx" and not list(resolve_model_dir(model_dir).glob("*.onnx")):
        model_dir = export_onnx_folder(model_dir, run_dir / "onnx")
    app = create_app(model_dir, args.backend, max_length=args.max_length, max_chars=args.max_chars,
                     max_batch=args.max_batch, max_batch_size=args.max_batch_size, batch_wait_ms=args.batch_wait_ms,
                     max_queue=args.max_queue, threads=args.threads, device=args.device, onnx_file=args.onnx_file)
    reviews = smoke_reviews()[0][:12]
    texts = reviews * 2
    started = time.perf_counter()
    with running_server(app) as base_url, httpx.Client(base_url=base_url, timeout=60) as client:
        def post_one(text: str) -> tuple[float, dict[str, Any]]:
            sent = time.perf_counter()
            response = client.post("/predict", json={"text": text})
            response.raise_for_status()
            return time.perf_counter() - sent, response.json()

        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(post_one, texts))
        batch = client.post("/predict/batch", json={"texts": reviews}).json()["predictions"]
        bad = client.post("/predict", json={"text": "   "})
        health = client.get("/health").json()
    seconds = time.perf_counter() - started

    latencies = [latency for latency, _ in answers]
    singles = {text: answer for text, (_, answer) in zip(texts, answers)}
    difference = max(abs(singles[text]["scores"][label] - item["scores"][label])
                     for text, item in zip(reviews, batch) for label in item["scores"])
    summary = {
        "backend": args.backend,
        "model": str(model_dir),
        "requests": len(texts),
        "latency_p50_ms": percentile_ms(latencies, 50),
        "latency_p95_ms": percentile_ms(latencies, 95),
        "latency_mean_ms": float(np.mean(latencies) * 1000),
        "forward_calls": health["queue"]["forward_calls"],
        "mean_batch_size": health["queue"]["mean_batch_size"],
        "batch_vs_single_max_difference": difference,
        "bad_request_status": bad.status_code,
        "bad_request_detail": bad.json()["detail"],
        "failed_requests": health["failed_requests"],
        "seconds": round(seconds, 2),
    }
    plot_latency({args.backend: latencies}, run_dir / "latency_histogram.png",
                 f"/predict latency, {len(texts)} requests, 8 concurrent clients")
    return summary


def serve(args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    """Serve until Ctrl-C; return the request statistics of the session."""
    import uvicorn

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("监听 %s：网络上的其他机器也能访问这个没有鉴权的服务", args.host)
    app = create_app(args.model, args.backend, max_length=args.max_length, max_chars=args.max_chars,
                     max_batch=args.max_batch, max_batch_size=args.max_batch_size, batch_wait_ms=args.batch_wait_ms,
                     max_queue=args.max_queue, threads=args.threads, device=args.device, onnx_file=args.onnx_file)
    logger.info("在 http://%s:%d 上服务，文档在 /docs；Ctrl-C 停止", args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=args.access_log)
    if not hasattr(app.state, "final_stats"):
        raise SystemExit("服务没有正常启动（端口被占用或模型加载失败？看上面的日志）")
    return app.state.final_stats


# ---------------------------------------------------------------- 脚本


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"需要非负数，收到 {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"需要有限的非负数，收到 {text}")
    return value


def build_argument_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser(__doc__.splitlines()[0], epochs=1, batch_size=DEFAULT_MAX_BATCH_SIZE, lr=1e-5,
                              shared_loop=False)
    group = parser.add_argument_group("模型")
    group.add_argument("--model", "--model-dir", dest="model", default=None,
                       help="模型文件夹（或含 model/ 的运行目录）；--smoke 下不给则现建一个在自带样本上训练几步的极小分类器")
    group.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                       help="torch：transformers 文件夹；onnx：optimum 导出的文件夹，用 onnxruntime 推理")
    group.add_argument("--onnx-file", default=None, help="文件夹里有多个 .onnx 时用哪一个，例如 model_quantized.onnx")
    group.add_argument("--max-length", type=cli.positive_int, default=None,
                       help="分词后最多多少个 token（超过的截断）；不给则用模型的上限")
    group.add_argument("--threads", type=cli.positive_int, default=None,
                       help="前向用的线程数（torch.set_num_threads / onnxruntime intra_op）；不给则用库的默认值")
    group = parser.add_argument_group("服务")
    group.add_argument("--host", default="127.0.0.1", help="监听地址；0.0.0.0 会对网络上的其他机器开放")
    group.add_argument("--port", type=int, default=8000, help="监听端口")
    group.add_argument("--max-chars", type=cli.positive_int, default=DEFAULT_MAX_CHARS, help="单条文本最多多少个字符（超过返回 413）")
    group.add_argument("--max-batch", type=cli.positive_int, default=DEFAULT_MAX_BATCH, help="/predict/batch 一次最多多少条（超过返回 413）")
    group.add_argument("--max-batch-size", type=cli.positive_int, default=DEFAULT_MAX_BATCH_SIZE,
                       help="micro-batching：一次前向最多凑多少条文本")
    group.add_argument("--batch-wait-ms", type=non_negative_float, default=DEFAULT_BATCH_WAIT_MS,
                       help="micro-batching：拿到第一条后最多再等多少毫秒凑批（0：只取已经在排队的）")
    group.add_argument("--max-queue", type=cli.positive_int, default=DEFAULT_MAX_QUEUE, help="最多多少条文本排队（超过返回 503）")
    group.add_argument("--access-log", action="store_true", help="打开 uvicorn 的逐请求访问日志")
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_argument_parser()
    args = parser.parse_args(argv)
    if not args.smoke and args.model is None:
        parser.error("需要 --model 模型文件夹（或用 --smoke 试跑一个极小模型）")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port 要在 0 到 65535 之间，收到 {args.port}")
    if args.device == "auto":
        from roadmap import training

        args.device = training.select_device("auto").type
    run_dir = cli.start_run(args, "serve_api")
    summary = run_smoke(args, run_dir) if args.smoke else serve(args, run_dir)
    runs.save_metrics(run_dir, summary)
    if args.smoke:
        print(runs.markdown_table([{key: summary[key] for key in (
            "backend", "requests", "latency_p50_ms", "latency_p95_ms", "forward_calls", "mean_batch_size",
            "bad_request_status")}]))
        print(f"错误请求的回答：{summary['bad_request_detail']}")
        print(f"指标和延迟直方图在 {run_dir}")
    return summary


if __name__ == "__main__":
    cli.run_script(main)
