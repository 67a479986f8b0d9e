"""Shared test setup: offline switches, the Agg backend, and the real-data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Nothing in the tests may reach a model hub or a tracking server.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def real_data_dir() -> Path:
    """Return $ROADMAP_DATA_DIR; skip without it, or fail when ROADMAP_REQUIRE_DATA=1 (as in CI)."""
    value = os.environ.get("ROADMAP_DATA_DIR")
    if not value or not Path(value).is_dir():
        message = f"real data not found: ROADMAP_DATA_DIR={value!r}"
        if os.environ.get("ROADMAP_REQUIRE_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return Path(value)
