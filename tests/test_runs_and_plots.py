"""roadmap.runs (run folders, metrics.json, report tables) and roadmap.plots (PNG files)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from roadmap import plots, runs

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert path.stat().st_size > 1000


def test_create_run_dir_default_layout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = runs.create_run_dir("demo")
    assert run_dir.parent == runs.RUNS_ROOT / "demo"
    assert run_dir.is_dir()


def test_create_run_dir_on_other_rank_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    run_dir = runs.create_run_dir("demo", tmp_path / "rank1")
    assert run_dir == tmp_path / "rank1"
    assert not run_dir.exists()
    runs.save_metrics(run_dir, {"accuracy": 1.0})
    assert not (run_dir / runs.METRICS_FILE).exists()


def test_save_metrics_roundtrip_and_numpy_scalars(tmp_path):
    runs.save_metrics(tmp_path, {"accuracy": np.float32(0.5), "path": tmp_path, "nested": {"n": np.int64(3)}})
    saved = json.loads((tmp_path / runs.METRICS_FILE).read_text(encoding="utf-8"))
    assert saved == {"accuracy": 0.5, "path": str(tmp_path), "nested": {"n": 3}}
    assert not list(tmp_path.glob("*.tmp"))


def test_markdown_table_escapes_pipes_and_formats_floats():
    table = runs.markdown_table([{"name": "a|b", "value": 0.123456}, {"name": "c", "extra": 1}])
    lines = table.splitlines()
    assert lines[0] == "| name | value | extra |"
    assert lines[2] == "| a\\|b | 0.1235 |  |"
    assert lines[3] == "| c |  | 1 |"


def test_collect_report_reads_every_run(tmp_path):
    runs.save_metrics(tmp_path / "script_a" / "run1", {"accuracy": 0.9, "nested": {"f1": 0.8}, "history": [1, 2]})
    runs.save_metrics(tmp_path / "script_b" / "run2", {"rmse": 1.5})
    (tmp_path / "script_c" / "broken").mkdir(parents=True)
    (tmp_path / "script_c" / "broken" / runs.METRICS_FILE).write_text("{not json")
    rows = runs.collect_report(tmp_path)
    assert rows == [
        {"script": "script_a", "run": "script_a/run1", "accuracy": 0.9, "nested.f1": 0.8},
        {"script": "script_b", "run": "script_b/run2", "rmse": 1.5},
    ]
    table = runs.report_table(rows)
    assert "### script_a" in table
    assert "### script_b" in table


def test_report_groups_by_script_in_config(tmp_path):
    """Tour runs sit under tour/<script>/: config.json, not the folder, names the script."""
    for script in ("linear_regression", "mnist_classification"):
        runs.save_config(tmp_path / "tour" / script, {"script": script})
        runs.save_metrics(tmp_path / "tour" / script, {"value": 1})
    table = runs.report_table(runs.collect_report(tmp_path))
    assert "### linear_regression" in table
    assert "### mnist_classification" in table
    assert "### tour" not in table


def test_headline_metrics_prefers_quality_metrics():
    metrics = {"train_samples": 10, "test_samples": 5, "mlp_test_accuracy": 0.9, "ranks_agree": True,
               "closed_form_test_mse": 2.0}
    assert runs.headline_metrics(metrics) == {"mlp_test_accuracy": 0.9, "closed_form_test_mse": 2.0}
    assert runs.headline_metrics({"a": 1, "b": 2}) == {"a": 1, "b": 2}


def test_plot_history_writes_png(tmp_path):
    history = [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.1, "val_accuracy": 0.5},
               {"epoch": 2, "train_loss": 0.5, "val_loss": 0.7, "val_accuracy": 0.8}]
    assert_png(plots.plot_history(history, tmp_path / "curves.png"))


def test_plot_history_rejects_empty(tmp_path):
    with pytest.raises(ValueError, match="history"):
        plots.plot_history([], tmp_path / "empty.png")


def test_other_plots_write_png(tmp_path):
    assert_png(plots.plot_confusion_matrix(np.array([[5, 1], [2, 7]]), ["a", "b"], tmp_path / "cm.png"))
    assert_png(plots.plot_heatmap(np.random.default_rng(0).random((4, 6)), tmp_path / "heat.png",
                                  x_labels=list("abcdef"), y_labels=list("wxyz")))
    assert_png(plots.plot_image_grid(np.random.default_rng(0).random((5, 8, 8)), list("abcde"), tmp_path / "grid.png"))
    assert_png(plots.plot_image_grid(np.zeros((0, 8, 8)), [], tmp_path / "none.png"))
    assert_png(plots.plot_predictions([1, 2, 3], [1.5, 2, 2.5], tmp_path / "pred.png"))
    assert_png(plots.plot_curves({"rnn": [1, 0.1, 0.01]}, tmp_path / "log.png", log_y=True))


def test_runs_in_same_second_get_distinct_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runs.time, "strftime", lambda fmt: "20260101-000000")
    first = runs.create_run_dir("demo")
    second = runs.create_run_dir("demo")
    assert first != second
    assert second.name == "20260101-000000-2"
    assert first.is_dir()
    assert second.is_dir()


def test_output_dir_that_is_a_file_rejected(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit, match="文件"):
        runs.create_run_dir("demo", tmp_path / "file")


def test_save_metrics_writes_null_for_nan(tmp_path):
    runs.save_metrics(tmp_path, {"loss": float("nan"), "ok": 1.0})
    assert json.loads((tmp_path / runs.METRICS_FILE).read_text(encoding="utf-8")) == {"loss": None, "ok": 1.0}


def test_collect_report_skips_non_utf8_and_root_file(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / runs.METRICS_FILE).write_bytes(b'\xff\xfe{"x": 1}')
    (tmp_path / runs.METRICS_FILE).write_text('{"k": 1}', encoding="utf-8")
    rows = runs.collect_report(tmp_path)
    assert rows == [{"script": tmp_path.name, "run": ".", "k": 1}]
