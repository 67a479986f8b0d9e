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
- 模型一侧在 serve_classifier.py：分词和前向只在一个专用线程里做（fast tokenizer 不能被两个线程同时用），
  同时到达的请求由 MicroBatcher 凑成一个 batch 做一次前向（最多等 --batch-wait-ms 毫秒、凑 --max-batch-size 条），
  用几毫秒的等待换吞吐量。这个文件只管 HTTP：请求格式、校验、错误码、应用的启动和停止。
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
    running_server(app, host="127.0.0.1") -> 上下文管理器，给出 base_url（在线程里跑真实的 uvicorn）
    以及 serve_classifier 的全部公开名字（load_classifier、MicroBatcher、export_onnx_folder、build_smoke_classifier 等），
    原样导出，`from stage2_huggingface.serve_api import load_classifier` 照样能用。

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
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from roadmap import cli, runs
# 其他脚本和测试从本文件导入这些名字，所以没用到的也原样导出。
from stage2_huggingface.serve_classifier import (  # noqa: F401
    SMOKE_TRAIN_STEPS, MicroBatcher, OnnxClassifier, Prediction, TextClassifier, TorchClassifier, build_smoke_classifier,
    export_onnx_folder, find_onnx_file, load_classifier, resolve_model_dir, smoke_reviews, softmax)

logger = logging.getLogger(__name__)

# 约 3,500 个英文词（估计值）。再长的文本截断后只剩开头一小段，直接拒绝比默默丢掉大半更清楚。
DEFAULT_MAX_CHARS = 20_000
DEFAULT_MAX_BATCH = 64
DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_BATCH_WAIT_MS = 2.0
DEFAULT_MAX_QUEUE = 1024


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
    return plots.save_figure(figure, path)


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
