"""Every discovered exercise runs with --smoke offline and writes what it returns.

A new script in a stage folder is covered here with no new test code.
"""

from __future__ import annotations

import importlib
import json
import math

import pytest

from roadmap import cli

EXERCISES = cli.discover_exercises()


@pytest.mark.parametrize("exercise", EXERCISES, ids=[exercise.name for exercise in EXERCISES])
def test_exercise_smoke_run(exercise, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(exercise.module)
    output_dir = tmp_path / "run"
    returned = module.main(["--smoke", "--output-dir", str(output_dir)])

    assert isinstance(returned, dict)
    assert returned, "main() returned no metrics"
    numbers = {key: value for key, value in returned.items() if isinstance(value, (int, float)) and not isinstance(value, bool)}
    assert numbers, "main() returned no numeric metric"
    for key, value in numbers.items():
        assert math.isfinite(value), f"{key} = {value}"

    written = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
    assert written == json.loads(json.dumps(returned))
    config = json.loads((output_dir / "config.json").read_text(encoding="utf-8"))
    assert config["smoke"] is True
    figures = list(output_dir.glob("*.png"))
    assert figures, "the exercise wrote no figure"
    for figure in figures:
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_stage_exercise_is_discovered():
    assert len(EXERCISES) >= 2
    for exercise in EXERCISES:
        assert exercise.roadmap_line, f"{exercise.name} has no roadmap line"


@pytest.mark.parametrize("exercise", EXERCISES, ids=[exercise.name for exercise in EXERCISES])
def test_exercise_entry_point_uses_run_script(exercise):
    """`python -m stage.script` must end missing-data errors with a message, not a traceback."""
    import ast

    tree = ast.parse(exercise.path.read_text(encoding="utf-8"))
    entry = [node for node in tree.body if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)]
    assert entry, f"{exercise.name} has no `if __name__ == \"__main__\"` block"
    assert "cli.run_script(main)" in ast.unparse(entry[0])
