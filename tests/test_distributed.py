"""The MNIST exercise under `torchrun --nproc_per_node=2` on CPU (gloo): ranks agree, rank 0 writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO_ROOT


@pytest.mark.slow
def test_mnist_under_torchrun_two_processes(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        torchrun = Path(shutil.which("torchrun") or "torchrun")
    output_dir = tmp_path / "ddp"
    # --standalone: a rendezvous on localhost with a free port, so parallel test runs do not collide.
    command = [str(torchrun), "--standalone", "--nproc_per_node=2",
               "-m", "stage1.mnist_classification", "--smoke", "--device", "cpu", "--output-dir", str(output_dir)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=environment)
    assert completed.returncode == 0, completed.stderr[-3000:]

    metrics = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["world_size"] == 2
    assert metrics["ranks_agree"] is True
    assert metrics["test_samples"] == 200
    # Both ranks finished, but only rank 0 wrote: one metrics file, one table on stdout.
    assert completed.stdout.count("| model | test accuracy |") == 1
    assert len(list(output_dir.rglob("metrics.json"))) == 1
    assert (output_dir / "checkpoints" / "mlp" / "best" / "model.safetensors").is_file()
