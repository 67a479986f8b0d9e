"""roadmap.cli: common options, exercise discovery and the roadmap subcommands."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from roadmap import cli

from .conftest import REPO_ROOT


def make_stage(root: Path, stage: str, files: dict[str, str]) -> None:
    folder = root / stage
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")


EXERCISE = '"""路线图条目 {name}\n\n说明。\n"""\n\n\ndef main(argv=None):\n    return {{}}\n'


def test_discover_finds_scripts_with_docstring_and_main(tmp_path):
    make_stage(tmp_path, "stage1", {
        "alpha.py": EXERCISE.format(name="alpha"),
        "helper.py": '"""只是工具模块，没有 main。"""\n\nVALUE = 1\n',
        "_private.py": EXERCISE.format(name="private"),
        "no_doc.py": "def main(argv=None):\n    return {}\n",
    })
    make_stage(tmp_path, "stage2_transformer", {"beta.py": EXERCISE.format(name="beta")})
    make_stage(tmp_path, "stage2_cnn_rnn", {"gamma.py": EXERCISE.format(name="gamma")})
    (tmp_path / "stage9_not_a_package").mkdir()
    (tmp_path / "stage9_not_a_package" / "delta.py").write_text(EXERCISE.format(name="delta"))

    exercises = cli.discover_exercises(tmp_path)
    assert [exercise.name for exercise in exercises] == ["alpha", "gamma", "beta"]
    assert exercises[0].module == "stage1.alpha"
    assert exercises[0].roadmap_line == "路线图条目 alpha"


def test_discover_rejects_duplicate_names(tmp_path):
    make_stage(tmp_path, "stage1", {"same.py": EXERCISE.format(name="a")})
    make_stage(tmp_path, "stage2_cnn_rnn", {"same.py": EXERCISE.format(name="b")})
    with pytest.raises(ValueError, match="重复"):
        cli.discover_exercises(tmp_path)


def test_repository_exercises_include_stage1():
    names = [exercise.name for exercise in cli.discover_exercises()]
    assert "linear_regression" in names
    assert "mnist_classification" in names


def test_find_exercise_suggests_close_name():
    exercises = cli.discover_exercises()
    with pytest.raises(SystemExit, match="mnist_classification"):
        cli.find_exercise("mnist_classfication", exercises)


def test_build_parser_common_options_and_defaults():
    parser = cli.build_parser("demo", epochs=7, batch_size=16, lr=0.5, patience=3)
    args = parser.parse_args([])
    assert (args.epochs, args.batch_size, args.lr, args.patience) == (7, 16, 0.5, 3)
    assert (args.smoke, args.device, args.precision, args.seed) == (False, "auto", "fp32", 42)
    assert args.data_dir is None
    assert args.output_dir is None
    assert args.max_train_samples is None
    args = parser.parse_args(["--smoke", "--data-dir", "d", "--output-dir", "o", "--epochs", "2", "--batch-size", "4",
                              "--lr", "1e-3", "--seed", "1", "--device", "cpu", "--max-train-samples", "10",
                              "--precision", "bf16", "--grad-accum-steps", "2", "--track", "tensorboard"])
    assert args.smoke
    assert args.data_dir == Path("d")
    assert args.output_dir == Path("o")
    assert (args.epochs, args.batch_size, args.lr, args.seed) == (2, 4, 1e-3, 1)
    assert (args.device, args.max_train_samples, args.precision, args.grad_accum_steps) == ("cpu", 10, "bf16", 2)


@pytest.mark.parametrize("option, value", [("--epochs", "0"), ("--batch-size", "-1"), ("--lr", "0"),
                                           ("--lr", "abc"), ("--lr", "nan"), ("--device", "tpu")])
def test_build_parser_rejects_bad_values(option, value, capsys):
    parser = cli.build_parser("demo", epochs=1, batch_size=1, lr=0.1)
    with pytest.raises(SystemExit) as error:
        parser.parse_args([option, value])
    assert error.value.code == 2
    assert "参数错误" in capsys.readouterr().err


def test_apply_smoke_shrinks_only_in_smoke_mode():
    parser = cli.build_parser("demo", epochs=30, batch_size=1, lr=0.1)
    args = parser.parse_args(["--smoke"])
    cli.apply_smoke(args, epochs=2, max_train_samples=100)
    assert (args.epochs, args.max_train_samples) == (2, 100)
    args = parser.parse_args([])
    cli.apply_smoke(args, epochs=2, max_train_samples=100)
    assert (args.epochs, args.max_train_samples) == (30, None)


def test_roadmap_list_prints_every_exercise(capsys):
    assert cli.main(["list"]) == 0
    output = capsys.readouterr().out
    for exercise in cli.discover_exercises():
        assert exercise.name in output
        assert exercise.roadmap_line in output


def test_roadmap_run_passes_arguments(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "linear_regression", "--smoke", "--output-dir", str(tmp_path / "lr")]) == 0
    metrics = json.loads((tmp_path / "lr" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["test_samples"] == 89


def test_roadmap_run_unknown_name_exits():
    with pytest.raises(SystemExit, match="roadmap list"):
        cli.main(["run", "no_such_exercise"])


def test_roadmap_report_collects_tables(tmp_path, capsys):
    from roadmap import runs

    runs.save_metrics(tmp_path / "runs" / "script_a" / "t1", {"accuracy": 0.91})
    output_file = tmp_path / "report.md"
    assert cli.main(["report", "--runs-dir", str(tmp_path / "runs"), "--output", str(output_file)]) == 0
    assert "0.9100" in capsys.readouterr().out
    assert "script_a/t1" in output_file.read_text(encoding="utf-8")


def test_roadmap_report_without_runs_returns_1(tmp_path, capsys):
    assert cli.main(["report", "--runs-dir", str(tmp_path / "empty")]) == 1
    assert "metrics.json" in capsys.readouterr().out


def test_roadmap_tour_writes_summary(tmp_path):
    """The console script end to end: one exercise through `roadmap tour --only`."""
    command = [sys.executable, "-m", "roadmap.cli", "tour", "--only", "linear_regression",
               "--output-dir", str(tmp_path / "tour")]
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    summary = (tmp_path / "tour" / "summary.md").read_text(encoding="utf-8")
    assert "| linear_regression | 通过 |" in summary
    assert "1 个通过，0 个失败" in summary
    assert (tmp_path / "tour" / "linear_regression" / "metrics.json").is_file()


def test_tour_row_reports_failure_and_keeps_stderr(tmp_path):
    broken = cli.Exercise(name="broken", module="stage1.no_such_module", path=tmp_path / "broken.py",
                          roadmap_line="不存在")
    row = cli._tour_row(broken, tmp_path / "broken", timeout=60)
    assert row["状态"] == "失败"
    assert "No module named" in row["主要指标"]
    assert "No module named" in (tmp_path / "broken.stderr.txt").read_text(encoding="utf-8")


def test_help_is_chinese(capsys):
    parser = cli.build_parser("demo", epochs=3, batch_size=8, lr=0.1)
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    output = capsys.readouterr().out
    assert output.startswith("用法：")
    assert "（默认：3）" in output
    assert "显示帮助并退出" in output


@pytest.mark.parametrize("value", ["-1", "2147483648", "x"])
def test_seed_out_of_range_rejected(value, capsys):
    parser = cli.build_parser("demo", epochs=1, batch_size=1, lr=0.1)
    with pytest.raises(SystemExit):
        parser.parse_args(["--seed", value])
    assert "参数错误" in capsys.readouterr().err


def make_resumable_run(run_dir: Path, script: str, **options) -> None:
    from roadmap import runs

    parser = cli.build_parser("demo", epochs=3, batch_size=8, lr=0.1)
    args = parser.parse_args([])
    for key, value in options.items():
        setattr(args, key, value)
    runs.save_config(run_dir, {"script": script, **vars(args)})
    (run_dir / "checkpoints").mkdir(parents=True)


def resume_args(run_dir: Path, *extra: str):
    parser = cli.build_parser("demo", epochs=3, batch_size=8, lr=0.1)
    return parser.parse_args(["--resume", str(run_dir), *extra])


def test_resume_same_options_accepted(tmp_path):
    make_resumable_run(tmp_path / "run", "demo_script")
    cli._check_resume(resume_args(tmp_path / "run"), "demo_script")


def test_resume_other_script_rejected(tmp_path):
    make_resumable_run(tmp_path / "run", "linear_regression")
    with pytest.raises(SystemExit, match="linear_regression"):
        cli._check_resume(resume_args(tmp_path / "run"), "mnist_classification")


def test_resume_changed_options_rejected(tmp_path):
    make_resumable_run(tmp_path / "run", "demo_script")
    with pytest.raises(SystemExit, match="batch_size: 8 -> 64"):
        cli._check_resume(resume_args(tmp_path / "run", "--batch-size", "64"), "demo_script")


def test_resume_without_checkpoints_rejected(tmp_path):
    make_resumable_run(tmp_path / "run", "demo_script")
    (tmp_path / "run" / "checkpoints").rmdir()
    with pytest.raises(SystemExit, match="checkpoints"):
        cli._check_resume(resume_args(tmp_path / "run"), "demo_script")


def test_resume_folder_without_config_rejected(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(SystemExit, match="config.json"):
        cli._check_resume(resume_args(tmp_path / "plain"), "demo_script")


def test_resume_does_not_overwrite_config(tmp_path, monkeypatch):
    """A resumed run keeps the original config.json as the record of what ran."""
    make_resumable_run(tmp_path / "run", "demo_script")
    before = (tmp_path / "run" / "config.json").read_text(encoding="utf-8")
    cli.start_run(resume_args(tmp_path / "run", "--device", "cpu"), "demo_script")
    assert (tmp_path / "run" / "config.json").read_text(encoding="utf-8") == before


def test_run_script_prints_data_error_without_traceback(capsys):
    from roadmap import data

    def failing_main():
        raise data.DataNotFoundError("找不到数据集 mnist")

    with pytest.raises(SystemExit) as error:
        cli.run_script(failing_main)
    assert error.value.code == 1
    stderr = capsys.readouterr().err
    assert stderr.strip() == "错误：找不到数据集 mnist"


def test_run_script_keeps_other_errors():
    def broken_main():
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        cli.run_script(broken_main)


def test_script_missing_data_exits_with_message(tmp_path):
    """End to end: offline with no MNIST anywhere, the script ends with one Chinese message."""
    command = [sys.executable, "-m", "stage1.mnist_classification", "--data-dir", str(tmp_path / "none"),
               "--output-dir", str(tmp_path / "out")]
    environment = {**__import__("os").environ, "ROADMAP_DATA_DIR": str(tmp_path / "env"),
                   # A proxy on a closed loopback port makes the download fail at once, as offline.
                   "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, env=environment)
    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    assert "找不到数据集 mnist" in completed.stderr
    assert "--smoke" in completed.stderr
    assert str(tmp_path / "none" / "mnist") in completed.stderr


def test_roadmap_report_output_folder_rejected(tmp_path):
    from roadmap import runs

    runs.save_metrics(tmp_path / "runs" / "a" / "t", {"accuracy": 1.0})
    with pytest.raises(SystemExit, match="文件夹"):
        cli.main(["report", "--runs-dir", str(tmp_path / "runs"), "--output", str(tmp_path)])


def _predict_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--predict")
    parser.add_argument("--generate")
    parser.add_argument("--checkpoint")
    return parser


@pytest.mark.parametrize("argv, option, noun, message", [
    (["--checkpoint", "run"], "predict", None, "--checkpoint 只和 --predict 一起使用"),
    (["--checkpoint", "run"], "generate", "问题", "--checkpoint 只和 --generate 一起使用"),
    (["--predict", "   "], "predict", "影评", "--predict 的影评是空的"),
    (["--generate", "", "--checkpoint", "run"], "generate", "问题", "--generate 的问题是空的"),
])
def test_check_predict_options_rejects(argv, option, noun, message, capsys):
    parser = _predict_parser()
    args = parser.parse_args(argv)
    with pytest.raises(SystemExit) as raised:
        cli.check_predict_options(parser, args, option=option, noun=noun)
    assert raised.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv, option, noun", [
    ([], "predict", "影评"),
    (["--predict", "great film", "--checkpoint", "run"], "predict", "影评"),
    (["--predict", "   "], "predict", None),
    (["--generate", "长江发源于哪里？"], "generate", "问题"),
])
def test_check_predict_options_accepts(argv, option, noun):
    parser = _predict_parser()
    args = parser.parse_args(argv)
    assert cli.check_predict_options(parser, args, option=option, noun=noun) is None
