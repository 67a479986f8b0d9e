"""roadmap.data: IDX reading, checksummed atomic downloads, data-dir resolution, offline errors."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from roadmap import data


def write_raw(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


# ---------------------------------------------------------------- IDX


def test_read_idx_matches_hand_built_bytes(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_raw(tmp_path / "images-idx3-ubyte", idx_bytes(images))
    result = data.read_idx(path)
    assert result.shape == (2, 3, 4)
    assert result.dtype == np.uint8
    np.testing.assert_array_equal(result, images)


def test_read_idx_big_endian_int32(tmp_path):
    values = np.array([1, -2, 70000], dtype=np.int32)
    path = write_raw(tmp_path / "values-idx1", idx_bytes(values, type_code=0x0C))
    np.testing.assert_array_equal(data.read_idx(path), values)


def test_write_read_idx_roundtrip_gzip(tmp_path):
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    path = tmp_path / "labels-idx1-ubyte.gz"
    data.write_idx(path, labels)
    with gzip.open(path, "rb") as stream:
        assert stream.read(4) == bytes([0, 0, 0x08, 1])
    np.testing.assert_array_equal(data.read_idx(path), labels)


def test_read_idx_rejects_wrong_magic(tmp_path):
    path = write_raw(tmp_path / "bad", b"\x12\x34\x08\x01" + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(data.DataFormatError, match="magic number"):
        data.read_idx(path)


def test_read_idx_rejects_unknown_type(tmp_path):
    path = write_raw(tmp_path / "bad", b"\x00\x00\x07\x01" + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(data.DataFormatError, match="magic number"):
        data.read_idx(path)


def test_read_idx_rejects_truncated_body(tmp_path):
    full = idx_bytes(np.zeros((10, 28, 28), dtype=np.uint8))
    path = write_raw(tmp_path / "truncated", full[:-100])
    with pytest.raises(data.DataFormatError, match="被截断"):
        data.read_idx(path)


def test_read_idx_rejects_trailing_bytes(tmp_path):
    path = write_raw(tmp_path / "long", idx_bytes(np.zeros(5, dtype=np.uint8)) + b"\x00")
    with pytest.raises(data.DataFormatError, match="多余"):
        data.read_idx(path)


def test_read_idx_rejects_truncated_header(tmp_path):
    path = write_raw(tmp_path / "header", b"\x00\x00\x08\x03" + (10).to_bytes(4, "big"))
    with pytest.raises(data.DataFormatError, match="头部不完整"):
        data.read_idx(path)


def test_read_idx_rejects_truncated_gzip(tmp_path):
    compressed = gzip.compress(idx_bytes(np.arange(1000, dtype=np.uint8)))
    path = write_raw(tmp_path / "cut-idx1-ubyte.gz", compressed[: len(compressed) // 2])
    with pytest.raises(data.DataFormatError):
        data.read_idx(path)


def test_load_mnist_reads_bundled_samples():
    images, labels = data.load_mnist("train", smoke=True)
    assert images.shape[1:] == (28, 28)
    assert images.dtype == np.uint8
    assert len(images) == len(labels)
    assert set(np.unique(labels)) == set(range(10))


def test_load_mnist_rejects_unknown_split():
    with pytest.raises(ValueError, match="split"):
        data.load_mnist("validation", smoke=True)


def test_load_mnist_rejects_count_mismatch(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    data.write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((3, 28, 28), dtype=np.uint8))
    data.write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(2, dtype=np.uint8))
    with pytest.raises(data.DataFormatError, match="不一致"):
        data.load_mnist("test", tmp_path)


# ---------------------------------------------------------------- 数据目录


def test_find_dataset_order_prefers_data_dir(tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    for root in (first, second):
        (root / "toy").mkdir(parents=True)
        (root / "toy" / "a.txt").write_text("x")
    monkeypatch.setenv(data.ENV_VAR, str(second))
    assert data.find_dataset("toy", ["a.txt"], first) == first / "toy"
    assert data.find_dataset("toy", ["a.txt"]) == second / "toy"


def test_find_dataset_accepts_dataset_folder_itself(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    assert data.find_dataset("toy", ["a.txt"], tmp_path) == tmp_path


def test_find_dataset_missing_offline_names_path_and_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "env"))
    with pytest.raises(data.DataNotFoundError) as error:
        data.find_dataset("toy-missing", ["a.txt"], tmp_path / "given")
    message = str(error.value)
    assert str(tmp_path / "given" / "toy-missing") in message
    assert str(tmp_path / "env" / "toy-missing") in message
    assert "--smoke" in message


def test_find_dataset_download_failure_names_url(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "CACHE_DIR", tmp_path / "cache")
    # Port 9 on loopback (discard) has no listener here, so the connection is refused at once.
    url = "http://127.0.0.1:9/mnist/"
    with pytest.raises(data.DataNotFoundError) as error:
        data.find_dataset("toy-offline", ["a.gz"], tmp_path / "nothing", base_url=url)
    message = str(error.value)
    assert url in message
    assert "--smoke" in message
    assert str(tmp_path / "nothing" / "toy-offline") in message
    assert not (tmp_path / "cache" / "toy-offline" / "a.gz").exists()


# ---------------------------------------------------------------- 下载


@pytest.fixture
def http_server(tmp_path):
    """Serve tmp_path/served over HTTP on 127.0.0.1 for the duration of a test."""
    served = tmp_path / "served"
    served.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_download_verifies_sha256_and_md5(http_server, tmp_path):
    served, base_url = http_server
    payload = b"hello roadmap" * 1000
    (served / "file.bin").write_bytes(payload)
    destination = tmp_path / "out" / "file.bin"
    data.download(base_url + "file.bin", destination, sha256=hashlib.sha256(payload).hexdigest(),
                  md5=hashlib.md5(payload).hexdigest())
    assert destination.read_bytes() == payload


def test_download_checksum_mismatch_leaves_nothing(http_server, tmp_path):
    served, base_url = http_server
    (served / "file.bin").write_bytes(b"tampered content")
    out_dir = tmp_path / "out"
    with pytest.raises(data.ChecksumError, match="sha256"):
        data.download(base_url + "file.bin", out_dir / "file.bin", sha256="0" * 64)
    assert list(out_dir.iterdir()) == []


def test_download_keeps_existing_file_on_failure(http_server, tmp_path):
    served, base_url = http_server
    (served / "file.bin").write_bytes(b"new")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    destination = out_dir / "file.bin"
    destination.write_bytes(b"old and good")
    with pytest.raises(data.ChecksumError):
        data.download(base_url + "file.bin", destination, md5="0" * 32)
    assert destination.read_bytes() == b"old and good"
    assert [path.name for path in out_dir.iterdir()] == ["file.bin"]


def test_download_missing_url_leaves_nothing(http_server, tmp_path):
    _, base_url = http_server
    out_dir = tmp_path / "out"
    with pytest.raises(OSError):
        data.download(base_url + "missing.bin", out_dir / "missing.bin")
    assert list(out_dir.iterdir()) == []


def test_find_dataset_downloads_into_cache(http_server, tmp_path, monkeypatch):
    served, base_url = http_server
    payload = gzip.compress(idx_bytes(np.arange(4, dtype=np.uint8)))
    (served / "labels.gz").write_bytes(payload)
    monkeypatch.setattr(data, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    folder = data.find_dataset("toy", ["labels.gz"], base_url=base_url,
                               checksums={"labels.gz": hashlib.md5(payload).hexdigest()}, checksum_algorithm="md5")
    assert folder == tmp_path / "cache" / "toy"
    np.testing.assert_array_equal(data.read_idx(folder / "labels.gz"), np.arange(4))


def test_find_dataset_bad_checksum_raises_checksum_error(http_server, tmp_path, monkeypatch):
    served, base_url = http_server
    (served / "labels.gz").write_bytes(b"not what was expected")
    monkeypatch.setattr(data, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    with pytest.raises(data.ChecksumError):
        data.find_dataset("toy", ["labels.gz"], base_url=base_url, checksums={"labels.gz": "0" * 32},
                          checksum_algorithm="md5")
    assert not (tmp_path / "cache" / "toy" / "labels.gz").exists()


def test_download_short_body_leaves_nothing(tmp_path):
    """A server that promises 1000 bytes and closes after 10 is an interrupted download."""

    class ShortHandler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"0123456789")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ShortHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        out_dir = tmp_path / "out"
        with pytest.raises(OSError, match="不完整"):
            data.download(f"http://127.0.0.1:{server.server_address[1]}/f.bin", out_dir / "f.bin", timeout=5)
        assert list(out_dir.iterdir()) == []
    finally:
        server.shutdown()
        server.server_close()


def test_download_keyboard_interrupt_leaves_nothing(http_server, tmp_path, monkeypatch):
    served, base_url = http_server
    (served / "big.bin").write_bytes(b"x" * 300_000)

    def interrupt(self, count):
        raise KeyboardInterrupt

    monkeypatch.setattr(data.tqdm, "update", interrupt)
    out_dir = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        data.download(base_url + "big.bin", out_dir / "big.bin")
    assert list(out_dir.iterdir()) == []


# ---------------------------------------------------------------- 其他数据集与压缩包


def test_load_cifar10_samples_shapes():
    images, labels = data.load_cifar10("train", smoke=True)
    assert images.shape[1:] == (3, 32, 32)
    assert images.dtype == np.uint8
    assert len(images) == len(labels)
    assert set(np.unique(labels)) == set(range(10))


def test_load_cifar10_channel_layout(tmp_path):
    """Row layout is 1024 R, then 1024 G, then 1024 B bytes, each 32x32 row-major."""
    import pickle

    folder = tmp_path / "cifar10" / data.CIFAR10_SUBDIR
    folder.mkdir(parents=True)
    row = np.concatenate([np.full(1024, 10), np.full(1024, 20), np.full(1024, 30)]).astype(np.uint8)
    row[1] = 99  # red channel, pixel (0, 1)
    batch = {b"data": row[None, :], b"labels": [7]}
    for name in ("data_batch_1", "test_batch"):
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": []}))
    images, labels = data.load_cifar10("test", tmp_path)
    assert images.shape == (1, 3, 32, 32)
    assert images[0, :, 5, 5].tolist() == [10, 20, 30]
    assert images[0, 0, 0, 1] == 99
    assert labels.tolist() == [7]


def test_load_cifar10_rejects_non_pickle(tmp_path):
    folder = tmp_path / data.CIFAR10_SUBDIR
    folder.mkdir()
    for name in ("data_batch_1", "test_batch", "batches.meta"):
        (folder / name).write_bytes(b"this is not a pickle")
    with pytest.raises(data.DataFormatError, match="CIFAR-10"):
        data.load_cifar10("train", tmp_path)


def test_load_ag_news_samples():
    texts, labels, classes = data.load_ag_news("train", smoke=True)
    assert len(texts) == len(labels)
    assert set(labels.tolist()) == {0, 1, 2, 3}
    assert classes == ("World", "Sports", "Business", "Sci/Tech")


def test_load_ag_news_joins_title_and_description(tmp_path):
    (tmp_path / "test.csv").write_text('"2","Title here","Body text."\n"4","","Only body"\n', encoding="utf-8")
    texts, labels, _ = data.load_ag_news("test", tmp_path)
    assert texts == ["Title here Body text.", "Only body"]
    assert labels.tolist() == [1, 3]


def test_load_ag_news_rejects_bad_class(tmp_path):
    (tmp_path / "test.csv").write_text('"7","Title","Body"\n', encoding="utf-8")
    with pytest.raises(data.DataFormatError, match="第 1 行"):
        data.load_ag_news("test", tmp_path)


def test_load_airline_rejects_wrong_header(tmp_path):
    (tmp_path / "airline_passengers.csv").write_text("date,value\n2000-01,5\n", encoding="utf-8")
    with pytest.raises(data.DataFormatError, match="Month,Passengers"):
        data.load_airline_passengers(tmp_path)


def test_load_airline_accepts_quoted_header(tmp_path):
    (tmp_path / "airline_passengers.csv").write_text('"Month","Passengers"\n"1949-01",112\n', encoding="utf-8")
    months, values = data.load_airline_passengers(tmp_path)
    assert months == ["1949-01"]
    assert values.tolist() == [112.0]


def test_load_translation_pairs_takes_first_two_columns(tmp_path):
    (tmp_path / "cmn.txt").write_text("Hi.\t你好。\tCC-BY 2.0 (France) Attribution\n\nRun!\t跑！\n", encoding="utf-8")
    assert data.load_translation_pairs(tmp_path) == [("Hi.", "你好。"), ("Run!", "跑！")]


def test_load_translation_pairs_rejects_missing_tab(tmp_path):
    (tmp_path / "cmn.txt").write_text("no tab here\n", encoding="utf-8")
    with pytest.raises(data.DataFormatError, match="第 1 行"):
        data.load_translation_pairs(tmp_path)


def test_archive_download_extracts_tar(http_server, tmp_path, monkeypatch):
    import io
    import tarfile

    served, base_url = http_server
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        content = b"payload"
        info = tarfile.TarInfo("inner/file.txt")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    (served / "pack.tar.gz").write_bytes(buffer.getvalue())
    monkeypatch.setattr(data, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    archive = data.Archive(base_url + "pack.tar.gz", checksum=hashlib.md5(buffer.getvalue()).hexdigest())
    folder = data.find_dataset("packed", ["file.txt"], archive=archive, subdir="inner")
    assert folder == tmp_path / "cache" / "packed" / "inner"
    assert (folder / "file.txt").read_bytes() == b"payload"
    assert not (tmp_path / "cache" / "pack.tar.gz").exists()


def test_archive_rejects_path_traversal(http_server, tmp_path, monkeypatch):
    import io
    import zipfile

    served, base_url = http_server
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr("../escape.txt", "bad")
    (served / "evil.zip").write_bytes(buffer.getvalue())
    monkeypatch.setattr(data, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    with pytest.raises(data.DataFormatError, match="不安全"):
        data.find_dataset("evil", ["escape.txt"], archive=data.Archive(base_url + "evil.zip"))
    assert not (tmp_path / "escape.txt").exists()
    assert not (tmp_path / "cache" / "escape.txt").exists()
