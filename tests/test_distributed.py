"""The MNIST exercise under `torchrun --nproc_per_node=2` on CPU (gloo): ranks agree, rank 0 writes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest



@pytest.mark.slow
def test_mnist_under_torchrun_two_processes(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        torchrun = Path(shutil.which("torchrun") or "torchrun")
    # No --output-dir: rank 0 names the new run folder and broadcasts it to rank 1.
    # --standalone: a rendezvous on localhost with a free port, so parallel test runs do not collide.
    command = [str(torchrun), "--standalone", "--nproc_per_node=2",
               "-m", "stage1.mnist_classification", "--smoke", "--device", "cpu"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    # A session of its own, so a timeout kills torchrun's worker processes too, not only torchrun.
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=environment, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"torchrun timed out after 300 s:\n{stderr[-3000:]}")
    assert process.returncode == 0, stderr[-3000:]

    run_dirs = list((tmp_path / "runs" / "mnist_classification").iterdir())
    assert len(run_dirs) == 1, run_dirs
    output_dir = run_dirs[0]
    metrics = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["world_size"] == 2
    assert metrics["ranks_agree"] is True
    assert metrics["test_samples"] == 200
    # Both ranks finished, but only rank 0 wrote: one metrics file, one table on stdout.
    assert stdout.count("| model | test accuracy |") == 1
    assert len(list(output_dir.rglob("metrics.json"))) == 1
    assert (output_dir / "checkpoints" / "mlp" / "best" / "model.safetensors").is_file()
