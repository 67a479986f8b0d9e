"""`--track wandb|tensorboard` really records the run: offline, inside the run folder, readable back.

Two paths are checked: the shared Accelerate loop (`roadmap.training`, through stage1's
mnist_classification) and the Hugging Face Trainer (`report_to`, through finetune_custom_dataset).
W&B runs offline with no account; a guard fails the test if anything opens a non-loopback socket.
The .wandb file is read back with a small reader of its record format and wandb's own protobuf.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from pathlib import Path

import pytest

WANDB_HEADER = b":W&B"
WANDB_HEADER_SIZE = 7  # ":W&B" + magic (2 bytes) + version (1 byte)
LOG_BLOCK_SIZE = 32 * 1024  # LevelDB log format: records never straddle a 7-byte block trailer
RECORD_HEADER_SIZE = 7  # crc32 (4) + length (2, little endian) + type (1)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_wandb_records(path: Path) -> list:
    """Return the protobuf `Record`s of an offline .wandb file (LevelDB log blocks of serialized records)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == WANDB_HEADER, f"{path} is not a .wandb transaction log"
    position, pieces, records = WANDB_HEADER_SIZE, [], []
    while position + RECORD_HEADER_SIZE <= len(data):
        left_in_block = LOG_BLOCK_SIZE - position % LOG_BLOCK_SIZE
        if left_in_block < RECORD_HEADER_SIZE:
            position += left_in_block
            continue
        length = int.from_bytes(data[position + 4:position + 6], "little")
        kind = data[position + 6]
        payload = data[position + RECORD_HEADER_SIZE:position + RECORD_HEADER_SIZE + length]
        position += RECORD_HEADER_SIZE + length
        if kind not in (FULL, FIRST, MIDDLE, LAST):
            continue  # zero padding at the end of a block
        pieces.append(payload)
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(pieces))
            records.append(record)
            pieces = []
    return records


def _items(items) -> dict:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


def wandb_history(records: list) -> list[dict[str, float]]:
    """Return one dict per logged step: metric name -> value (JSON-decoded)."""
    return [_items(record.history.item) for record in records if record.WhichOneof("record_type") == "history"]


def wandb_config(records: list) -> dict:
    """Return the run's config: what wandb.init got (the run record) plus later config updates."""
    config = {}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            config.update(_items(record.run.config.update))
        elif kind == "config":
            config.update(_items(record.config.update))
    return config


def wandb_summary(records: list) -> dict:
    summary = {}
    for record in records:
        if record.WhichOneof("record_type") == "summary":
            summary.update(_items(record.summary.update))
    return summary


def tensorboard_scalars(log_dir: Path) -> dict[str, list[float]]:
    """Read every scalar tag below `log_dir` with TensorBoard's own EventAccumulator."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[float]] = {}
    for event_file in sorted(log_dir.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(event.value for event in accumulator.Scalars(tag))
    return scalars


@pytest.fixture
def offline_tracking(tmp_path, monkeypatch):
    """W&B offline with its config, cache and data folders in tmp_path, the cwd elsewhere, no outside sockets."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb_home" / name.lower()))
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)

    original_connect = socket.socket.connect

    def loopback_only(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
                raise AssertionError(f"tracking tried to reach {address} during an offline test")
        return original_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)
    return cwd


def _only_offline_run(run_dir: Path) -> Path:
    wandb_files = list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(wandb_files) == 1, f"expected one offline run in {run_dir / 'wandb'}, found {wandb_files}"
    return wandb_files[0]


def read_finished_run(path: Path, timeout: float = 30.0) -> list:
    """Read the records once the run's exit record is on disk.

    wandb's background service writes the file, so on a busy machine the records can land a moment
    after finish() returns (seen once here as an empty file). A run that never finishes still fails.
    """
    deadline = time.monotonic() + timeout
    while True:
        records = read_wandb_records(path)
        if records and records[-1].WhichOneof("record_type") == "exit" or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


# ---------------------------------------------------------------- roadmap.training (Accelerate trackers)


def test_shared_loop_wandb_offline_run(offline_tracking, tmp_path):
    from stage1 import mnist_classification

    run_dir = tmp_path / "run"
    summary = mnist_classification.main(["--smoke", "--output-dir", str(run_dir), "--track", "wandb"])

    records = read_finished_run(_only_offline_run(run_dir))
    kinds = [record.WhichOneof("record_type") for record in records]
    assert "run" in kinds
    assert kinds[-1] == "exit", "the W&B run was not finished (no exit record)"
    assert not (offline_tracking / "wandb").exists(), "W&B wrote into the current directory"

    history = wandb_history(records)
    logged = set().union(*history)
    for model in ("softmax", "mlp"):
        for key in ("train_loss", "val_loss", "val_accuracy", "epoch"):
            assert f"{model}/{key}" in logged
    mlp_val_accuracy = [step["mlp/val_accuracy"] for step in history if "mlp/val_accuracy" in step]
    assert len(mlp_val_accuracy) == 2  # --smoke trains 2 epochs
    assert max(mlp_val_accuracy) == pytest.approx(summary["mlp_val_accuracy"])


def test_shared_loop_wandb_config(offline_tracking, tmp_path):
    from stage1 import mnist_classification

    run_dir = tmp_path / "run"
    mnist_classification.main(["--smoke", "--output-dir", str(run_dir), "--track", "wandb", "--seed", "7"])

    config = wandb_config(read_finished_run(_only_offline_run(run_dir)))
    assert config["seed"] == 7
    assert config["track"] == "wandb"
    assert config["output_dir"] == str(run_dir)


def test_shared_loop_tensorboard_scalars(offline_tracking, tmp_path):
    from stage1 import mnist_classification

    run_dir = tmp_path / "run"
    summary = mnist_classification.main(["--smoke", "--output-dir", str(run_dir), "--track", "tensorboard"])

    assert list(run_dir.rglob("events.out.tfevents.*"))
    scalars = tensorboard_scalars(run_dir)
    for model in ("softmax", "mlp"):
        for key in ("train_loss", "val_loss", "val_accuracy"):
            assert len(scalars[f"{model}/{key}"]) == 2
    # TensorBoard stores float32
    assert max(scalars["mlp/val_accuracy"]) == pytest.approx(summary["mlp_val_accuracy"], abs=1e-6)
    assert not (offline_tracking / "runs").exists()


def test_shared_loop_untracked_writes_nothing(offline_tracking, tmp_path):
    from stage1 import mnist_classification

    run_dir = tmp_path / "run"
    mnist_classification.main(["--smoke", "--output-dir", str(run_dir)])

    assert not (run_dir / "wandb").exists()
    assert not list(run_dir.rglob("events.out.tfevents.*"))


# ---------------------------------------------------------------- Trainer (report_to)


def test_trainer_wandb_offline_run(offline_tracking, tmp_path):
    from stage2_huggingface import finetune_custom_dataset

    run_dir = tmp_path / "run"
    summary = finetune_custom_dataset.main(["--smoke", "--output-dir", str(run_dir), "--track", "wandb"])

    assert not (offline_tracking / "wandb").exists(), "the Trainer's W&B run landed in the current directory"
    records = read_finished_run(_only_offline_run(run_dir))
    kinds = [record.WhichOneof("record_type") for record in records]
    assert kinds[-1] == "exit", "the W&B run was not finished (no exit record)"

    history = wandb_history(records)
    logged = set().union(*history)
    for key in ("train/loss", "eval/loss", "eval/accuracy", "eval/f1"):
        assert key in logged
    # the last eval/* step is trainer.predict on the best model, the numbers of metrics.json
    last_eval = [step for step in history if "eval/accuracy" in step][-1]
    assert last_eval["eval/accuracy"] == pytest.approx(summary["eval_accuracy"])
    assert last_eval["eval/f1"] == pytest.approx(summary["eval_f1"])


def test_trainer_wandb_two_runs(offline_tracking, tmp_path):
    """Each fine-tuning gets its own W&B run: the first one is finished before the second starts."""
    from stage2_huggingface import finetune_custom_dataset

    for name in ("first", "second"):
        finetune_custom_dataset.main(["--smoke", "--epochs", "1", "--output-dir", str(tmp_path / name),
                                      "--track", "wandb"])
    first = _only_offline_run(tmp_path / "first")
    second = _only_offline_run(tmp_path / "second")
    assert first.name != second.name
    for path in (first, second):
        kinds = [record.WhichOneof("record_type") for record in read_finished_run(path)]
        assert kinds[-1] == "exit"
        assert kinds.count("run") == 1


def test_trainer_tensorboard_scalars(offline_tracking, tmp_path):
    from stage2_huggingface import finetune_custom_dataset

    run_dir = tmp_path / "run"
    summary = finetune_custom_dataset.main(["--smoke", "--output-dir", str(run_dir), "--track", "tensorboard"])

    scalars = tensorboard_scalars(run_dir / "logs")
    assert len(scalars["train/loss"]) == summary["epochs_run"]
    assert len(scalars["eval/accuracy"]) >= summary["epochs_run"]
    assert "eval/f1" in scalars
    assert not (offline_tracking / "runs").exists()
