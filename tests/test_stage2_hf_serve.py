"""FastAPI inference service: routes, validation, truncation, micro-batching, ONNX, real uvicorn."""

from __future__ import annotations

import json
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from starlette.exceptions import StarletteDeprecationWarning
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from stage2_huggingface import serve_api

with warnings.catch_warnings():
    # Starlette 1.x suggests the httpx2 package for its test client; the pinned httpx 0.29 works.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

MAX_CHARS = 5000
MAX_BATCH = 4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return serve_api.build_smoke_classifier(tmp_path_factory.mktemp("serve") / "model")


@pytest.fixture(scope="module")
def reviews() -> list[str]:
    return serve_api.smoke_reviews()[0]


@pytest.fixture(scope="module")
def reference(model_dir):
    """Return a function text -> softmax probabilities from a direct forward of the saved model."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()

    def probabilities(text: str, max_length: int = 128) -> np.ndarray:
        encoded = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            return model(**encoded).logits.softmax(dim=-1)[0].numpy()

    probabilities.labels = [model.config.id2label[index] for index in range(model.config.num_labels)]
    return probabilities


@pytest.fixture(scope="module")
def client(model_dir):
    app = serve_api.create_app(model_dir, max_chars=MAX_CHARS, max_batch=MAX_BATCH, batch_wait_ms=1)
    with TestClient(app) as test_client:  # `with` runs the lifespan: the model is loaded once here
        yield test_client


@pytest.fixture(scope="module")
def onnx_dirs(model_dir, tmp_path_factory) -> dict[str, Path]:
    from optimum.exporters.onnx import main_export
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    root = tmp_path_factory.mktemp("onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        main_export(str(model_dir), str(root / "fp32"), task="text-classification")
    ORTQuantizer.from_pretrained(root / "fp32").quantize(
        save_dir=root / "int8", quantization_config=AutoQuantizationConfig.avx2(is_static=False, per_channel=False))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if not (root / "int8" / name).exists():
            (root / "int8" / name).write_bytes((root / "fp32" / name).read_bytes())
    return {"fp32": root / "fp32", "int8": root / "int8"}


def assert_matches(answer: dict, expected: np.ndarray, labels: list[str], tolerance: float = 1e-5) -> None:
    assert answer["label"] == labels[int(expected.argmax())]
    assert abs(answer["score"] - float(expected.max())) <= tolerance
    for name, value in zip(labels, expected):
        assert abs(answer["scores"][name] - float(value)) <= tolerance


# ---------------------------------------------------------------- routes


def test_health_reports_model_and_queue(client, model_dir):
    answer = client.get("/health").json()
    assert answer["status"] == "ok"
    assert answer["backend"] == "torch"
    assert answer["model"] == str(model_dir)
    assert answer["max_length"] == 128
    assert answer["labels"] == ["negative", "neutral", "positive"]
    assert answer["uptime_seconds"] >= 0
    assert {"queued", "forward_calls", "mean_batch_size", "largest_batch"} <= set(answer["queue"])


def test_openapi_docs_are_served(client):
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/predict/batch", "/health"} <= set(schema["paths"])


def test_predict_matches_direct_model_forward(client, reference, reviews):
    for text in reviews[:8]:
        response = client.post("/predict", json={"text": text})
        assert response.status_code == 200
        assert_matches(response.json(), reference(text), reference.labels)
        assert response.json()["truncated"] is False


def test_predict_matches_transformers_pipeline(client, model_dir, reviews):
    classify = pipeline("text-classification", model=str(model_dir), top_k=None, device="cpu")
    for text in reviews[:4]:
        expected = {item["label"]: item["score"] for item in classify([text])[0]}
        answer = client.post("/predict", json={"text": text}).json()
        for label, score in expected.items():
            assert abs(answer["scores"][label] - score) <= 1e-5


def test_predictions_spread_over_labels(client, reviews):
    """The smoke classifier must not give every text the same label, or the comparisons prove little."""
    labels = {client.post("/predict", json={"text": text}).json()["label"] for text in reviews}
    assert len(labels) >= 2


def test_batch_equals_single_predictions(client, reviews):
    texts = [reviews[0], reviews[5] + " " + reviews[6], reviews[20], "ok"]  # different lengths: padding inside the batch
    batch = client.post("/predict/batch", json={"texts": texts})
    assert batch.status_code == 200
    predictions = batch.json()["predictions"]
    assert len(predictions) == len(texts)
    for text, item in zip(texts, predictions):
        single = client.post("/predict", json={"text": text}).json()
        assert item["label"] == single["label"]
        for label in single["scores"]:
            assert abs(item["scores"][label] - single["scores"][label]) <= 1e-5


def test_long_text_truncated_to_max_length(client, reference, model_dir):
    text = " ".join(["the battery lasts two full days and the screen is bright"] * 60)  # ~660 tokens, < MAX_CHARS
    assert len(text) <= MAX_CHARS
    assert len(AutoTokenizer.from_pretrained(model_dir)(text)["input_ids"]) > 128
    response = client.post("/predict", json={"text": text})
    assert response.status_code == 200
    assert response.json()["truncated"] is True
    assert_matches(response.json(), reference(text, max_length=128), reference.labels)


def test_max_length_option_truncates_earlier(model_dir, reference, reviews):
    with TestClient(serve_api.create_app(model_dir, max_length=8)) as short_client:
        assert short_client.get("/health").json()["max_length"] == 8
        answer = short_client.post("/predict", json={"text": reviews[0]}).json()
    assert answer["truncated"] is True
    assert_matches(answer, reference(reviews[0], max_length=8), reference.labels)


# ---------------------------------------------------------------- errors

ERROR_CASES = [
    # (id, path, JSON body or raw bytes, status, fragment of the Chinese message)
    ("empty-text", "/predict", {"text": ""}, 422, "text 是空的"),
    ("whitespace-text", "/predict", {"text": " \n\t "}, 422, "text 是空的"),
    ("text-too-long", "/predict", {"text": "a" * (MAX_CHARS + 1)}, 413, f"超过上限 {MAX_CHARS}"),
    ("text-not-string", "/predict", {"text": 42}, 422, "text 必须是字符串"),
    ("text-null", "/predict", {"text": None}, 422, "text 必须是字符串"),
    ("missing-field", "/predict", {}, 422, "缺少字段 text"),
    ("misspelled-field", "/predict", {"txt": "hello"}, 422, "不认识的字段 txt"),
    ("body-not-object", "/predict", ["hello"], 422, "请求体必须是 JSON 对象"),
    ("malformed-json", "/predict", b'{"text": "unterminated', 400, "不是合法的 JSON"),
    ("empty-body", "/predict", b"", 422, "请求体是空的"),
    ("batch-too-large", "/predict/batch", {"texts": ["fine"] * (MAX_BATCH + 1)}, 413, f"一次最多 {MAX_BATCH} 条"),
    ("batch-empty", "/predict/batch", {"texts": []}, 422, "texts 是空列表"),
    ("batch-item-empty", "/predict/batch", {"texts": ["fine", "  "]}, 422, "texts[1] 是空的"),
    ("batch-item-too-long", "/predict/batch", {"texts": ["a" * (MAX_CHARS + 1)]}, 413, "texts[0] 有 5001 个字符"),
    ("batch-item-not-string", "/predict/batch", {"texts": ["fine", 3]}, 422, "texts[1] 必须是字符串"),
    ("batch-not-list", "/predict/batch", {"texts": "fine"}, 422, "texts 必须是字符串列表"),
]


@pytest.mark.parametrize("path, body, status, message", [case[1:] for case in ERROR_CASES],
                         ids=[case[0] for case in ERROR_CASES])
def test_bad_request_status_and_message(client, path, body, status, message):
    if isinstance(body, bytes):
        response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    else:
        response = client.post(path, json=body)
    assert response.status_code == status
    assert message in response.json()["detail"]


def test_oversized_body_rejected_before_parsing(client):
    limit = MAX_BATCH * (12 * MAX_CHARS + 8) + 1024  # 12 bytes: "\ud83d\ude00" is one emoji in JSON
    response = client.post("/predict", content=b" " * (limit + 1), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert f"超过上限 {limit} 字节" in response.json()["detail"]


def test_unknown_route_and_wrong_method(client):
    missing = client.get("/classify")
    assert missing.status_code == 404
    assert "没有这个地址：/classify" in missing.json()["detail"]
    wrong = client.get("/predict")
    assert wrong.status_code == 405
    assert "不接受 GET 请求" in wrong.json()["detail"]


def test_failed_requests_counted_and_logged(client, caplog):
    before = client.get("/health").json()["failed_requests"]
    with caplog.at_level("WARNING", logger="stage2_huggingface.serve_api"):
        client.post("/predict", json={"text": ""})
    assert client.get("/health").json()["failed_requests"] == before + 1
    assert any("请求失败：POST /predict 422" in record.getMessage() for record in caplog.records)


def test_full_queue_answers_503(model_dir):
    with TestClient(serve_api.create_app(model_dir, max_queue=2)) as small_client:
        response = small_client.post("/predict/batch", json={"texts": ["a", "b", "c"]})
    assert response.status_code == 503
    assert "服务繁忙" in response.json()["detail"]


def test_inference_error_gives_500_then_recovers(model_dir, monkeypatch):
    app = serve_api.create_app(model_dir)
    with TestClient(app) as test_client:
        classifier = app.state.classifier
        real_predict = classifier.predict

        def broken_predict(texts):
            raise ValueError("boom")

        monkeypatch.setattr(classifier, "predict", broken_predict)
        broken = test_client.post("/predict", json={"text": "fine"})
        monkeypatch.setattr(classifier, "predict", real_predict)
        healed = test_client.post("/predict", json={"text": "fine"})
    assert broken.status_code == 500
    assert "推理失败：ValueError: boom" in broken.json()["detail"]
    assert healed.status_code == 200


def test_bad_model_folder_rejected(tmp_path, model_dir, onnx_dirs):
    with pytest.raises(SystemExit, match="没有 config.json"):
        serve_api.create_app(tmp_path)
    with pytest.raises(SystemExit, match=r"没有 \.onnx 文件"):
        serve_api.create_app(model_dir, backend="onnx")
    both = tmp_path / "both"
    both.mkdir()
    (both / "config.json").write_text("{}")
    (both / "model.onnx").write_bytes(b"")
    (both / "model_quantized.onnx").write_bytes(b"")
    with pytest.raises(SystemExit, match="多个 .onnx"):
        serve_api.create_app(both, backend="onnx")


# ---------------------------------------------------------------- ONNX


def test_onnx_fp32_matches_torch(onnx_dirs, reference, reviews):
    with TestClient(serve_api.create_app(onnx_dirs["fp32"], backend="onnx")) as onnx_client:
        assert onnx_client.get("/health").json()["backend"] == "onnx"
        for text in reviews[:12]:
            assert_matches(onnx_client.post("/predict", json={"text": text}).json(), reference(text),
                           reference.labels, tolerance=1e-4)


def test_onnx_int8_keeps_torch_labels(onnx_dirs, reference, reviews):
    with TestClient(serve_api.create_app(onnx_dirs["int8"], backend="onnx")) as onnx_client:
        assert onnx_client.get("/health").json()["onnx_file"] == "model_quantized.onnx"
        answers = onnx_client.post("/predict/batch", json={"texts": reviews[:MAX_BATCH]}).json()["predictions"]
        answers += [onnx_client.post("/predict", json={"text": text}).json() for text in reviews[MAX_BATCH:]]
    compared = 0
    for text, answer in zip(reviews, answers):
        expected = reference(text)
        top_two = np.sort(expected)[-2:]
        # int8 weights and activations move the scores a little (measured: at most 3.5e-4 here).
        assert abs(answer["score"] - float(expected.max())) <= 0.01
        if top_two[1] - top_two[0] > 0.02:  # a clear winner must stay the winner
            assert answer["label"] == reference.labels[int(expected.argmax())]
            compared += 1
    assert compared >= len(reviews) // 3


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript ONNX exporter's notices
def test_export_onnx_folder_int8_is_servable(model_dir, tmp_path, reference, reviews):
    folder = serve_api.export_onnx_folder(model_dir, tmp_path / "int8", int8=True)
    assert [path.name for path in folder.glob("*.onnx")] == ["model_quantized.onnx"]
    classifier = serve_api.load_classifier(folder, "onnx")
    prediction = classifier.predict([reviews[0]])[0]
    assert abs(prediction.score - float(reference(reviews[0]).max())) <= 0.01


# ---------------------------------------------------------------- concurrency on a real server


class ConcurrencyProbe:
    """Wrap a tokenizer and record how many threads are inside it at once."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0

    def __call__(self, *args, **kwargs):
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(0.002)  # widen the window in which a second thread could enter
            return self.tokenizer(*args, **kwargs)
        finally:
            with self.lock:
                self.active -= 1


def test_probe_detects_concurrent_calls(model_dir):
    probe = ConcurrencyProbe(AutoTokenizer.from_pretrained(model_dir))
    barrier = threading.Barrier(4)

    def call(_):
        barrier.wait()
        return probe(["some text"] * 8, truncation=True, padding=True)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(call, range(4)))
    assert probe.max_active > 1


def test_uvicorn_under_concurrent_clients(model_dir, reference, reviews, caplog):
    app = serve_api.create_app(model_dir, batch_wait_ms=20, max_batch_size=16)
    texts = reviews * 3  # 108 requests
    with serve_api.running_server(app) as base_url:
        probe = ConcurrencyProbe(app.state.classifier.tokenizer)
        app.state.classifier.tokenizer = probe

        def post(text: str) -> httpx.Response:
            with httpx.Client(base_url=base_url, timeout=30) as http:
                return http.post("/predict", json={"text": text})

        with ThreadPoolExecutor(max_workers=16) as pool:
            responses = list(pool.map(post, texts))
        stats = httpx.get(f"{base_url}/health").json()["queue"]
    assert base_url.startswith("http://127.0.0.1:")
    assert all(response.status_code == 200 for response in responses)
    for text, response in zip(texts, responses):
        assert_matches(response.json(), reference(text), reference.labels)
    assert probe.max_active == 1
    assert "Already borrowed" not in caplog.text
    assert stats["texts"] == len(texts)
    assert stats["forward_calls"] < len(texts)  # micro-batching grouped the concurrent requests
    assert stats["largest_batch"] > 1
    assert stats["largest_batch"] <= 16


def test_micro_batching_groups_simultaneous_requests(model_dir):
    """With a long wait, requests sent together end up in one or two forward calls."""
    app = serve_api.create_app(model_dir, batch_wait_ms=300, max_batch_size=64)
    with serve_api.running_server(app) as base_url:
        barrier = threading.Barrier(12)

        def post(index: int) -> int:
            with httpx.Client(base_url=base_url, timeout=30) as http:
                http.get("/health")  # connect first, so the barrier releases 12 ready clients
                barrier.wait()
                return http.post("/predict", json={"text": f"review number {index}"}).status_code

        with ThreadPoolExecutor(max_workers=12) as pool:
            statuses = list(pool.map(post, range(12)))
        stats = httpx.get(f"{base_url}/health").json()["queue"]
    assert statuses == [200] * 12
    assert stats["forward_calls"] <= 2
    assert stats["largest_batch"] >= 6


# ---------------------------------------------------------------- script


def test_main_smoke_serves_and_reports(tmp_path):
    returned = serve_api.main(["--smoke", "--output-dir", str(tmp_path)])
    assert returned["bad_request_status"] == 422
    assert returned["failed_requests"] == 1
    assert returned["batch_vs_single_max_difference"] <= 1e-5
    assert returned["forward_calls"] <= returned["requests"] + 1
    assert returned["latency_p95_ms"] >= returned["latency_p50_ms"] > 0
    assert json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8")) == returned
    assert (tmp_path / "latency_histogram.png").read_bytes()[:4] == b"\x89PNG"


def test_main_requires_model_without_smoke(capsys):
    with pytest.raises(SystemExit) as error:
        serve_api.main([])
    assert error.value.code == 2
    assert "需要 --model" in capsys.readouterr().err


def test_run_folder_resolves_to_its_model(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "model").mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"smoke": True}), encoding="utf-8")  # the run's options
    (run_dir / "model" / "config.json").write_text(json.dumps({"model_type": "bert"}), encoding="utf-8")
    assert serve_api.resolve_model_dir(run_dir) == run_dir / "model"
    assert serve_api.resolve_model_dir(run_dir / "model") == run_dir / "model"


def test_torch_backend_on_onnx_folder_suggests_onnx(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}), encoding="utf-8")
    (tmp_path / "model_quantized.onnx").write_bytes(b"")
    with pytest.raises(SystemExit) as raised:
        serve_api.load_classifier(tmp_path, "torch")
    assert "--backend onnx" in str(raised.value)
