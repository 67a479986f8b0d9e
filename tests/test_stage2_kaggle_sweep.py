"""The W&B sweep file and the local search of stage2_kaggle/hparam_search.py."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import yaml
from scipy import stats

from roadmap.data import DataFormatError
from stage2_kaggle import commonlit_readability, hparam_search
from tests.test_tracking import read_wandb_records, tensorboard_scalars, wandb_config, wandb_history, wandb_summary


@pytest.fixture
def sweep():
    return hparam_search.load_sweep(hparam_search.DEFAULT_SWEEP)


def write_sweep(path, **changes):
    config = yaml.safe_load(hparam_search.DEFAULT_SWEEP.read_text(encoding="utf-8"))
    config.update(changes)
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


# ---------------------------------------------------------------- the YAML


def test_sweep_yaml_targets_commonlit_cv_rmse(sweep):
    assert sweep["program"] == "stage2_kaggle/commonlit_readability.py"
    assert sweep["method"] in ("random", "bayes")
    assert sweep["metric"] == {"name": "cv_rmse", "goal": "minimize"}


def test_sweep_command_uses_the_wandb_macros(sweep):
    command = sweep["command"]
    for macro in ("${env}", "${interpreter}", "${program}", "${args}"):
        assert macro in command
    assert command.index("${program}") < command.index("${args}")


def test_sweep_parameters_are_target_options(sweep):
    parser = commonlit_readability.build_argument_parser()
    option_strings = {option for action in parser._actions for option in action.option_strings}
    for name in sweep["parameters"]:
        assert f"--{name}" in option_strings, name
    hparam_search.check_against_parser(sweep["parameters"], parser)


def test_sampled_config_parses_in_target(sweep):
    parser = commonlit_readability.build_argument_parser()
    for config in hparam_search.sample_configs(sweep["parameters"], "random", 5, seed=0):
        args = parser.parse_args(hparam_search.to_cli_args(config))
        assert args.model == config["model"]
        assert args.alpha == pytest.approx(config["alpha"])
        assert args.ngram_max == config["ngram-max"]


def test_metric_is_returned_by_the_target(sweep, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    returned = commonlit_readability.main(["--smoke", "--model", "tfidf", "--output-dir", str(tmp_path / "run")])
    assert sweep["metric"]["name"] in returned


# ---------------------------------------------------------------- checks


def test_unknown_parameter_is_rejected():
    parser = commonlit_readability.build_argument_parser()
    with pytest.raises(DataFormatError, match="alpah"):
        hparam_search.check_against_parser({"alpah": {"value": 1.0}}, parser)


def test_value_the_target_rejects_is_rejected():
    parser = commonlit_readability.build_argument_parser()
    with pytest.raises(DataFormatError, match="alpha"):
        hparam_search.check_against_parser({"alpha": {"distribution": "uniform", "min": -1.0, "max": 1.0}}, parser)


def test_choice_outside_the_target_choices_is_rejected():
    parser = commonlit_readability.build_argument_parser()
    with pytest.raises(DataFormatError, match="loss"):
        hparam_search.check_against_parser({"loss": {"values": ["mse", "huber"]}}, parser)


def test_switch_option_is_rejected():
    parser = commonlit_readability.build_argument_parser()
    with pytest.raises(DataFormatError, match="smoke"):
        hparam_search.check_against_parser({"smoke": {"value": True}}, parser)


@pytest.mark.parametrize("changes, message", [
    ({"method": "hyperband"}, "method"),
    ({"metric": {"goal": "minimize"}}, "metric"),
    ({"parameters": {}}, "parameters"),
    ({"parameters": {"alpha": {"distribution": "beta", "min": 0, "max": 1}}}, "beta"),
    ({"parameters": {"alpha": {"distribution": "log_uniform_values", "min": 0.0, "max": 1.0}}}, "min"),
    ({"parameters": {"alpha": {"distribution": "uniform", "min": 2.0, "max": 1.0}}}, "min < max"),
    ({"parameters": {"ngram-max": {"values": [1, 2], "probabilities": [0.5, 0.6]}}}, "probabilities"),
])
def test_malformed_sweep_is_rejected(tmp_path, changes, message):
    path = write_sweep(tmp_path / "sweep.yaml", **changes)
    with pytest.raises(DataFormatError, match=message):
        hparam_search.load_sweep(path)


def test_program_outside_the_repository_is_rejected():
    with pytest.raises(DataFormatError, match="program"):
        hparam_search.target_module("/tmp/elsewhere.py")


# ---------------------------------------------------------------- sampling


def draws(spec, count=4000, seed=0):
    rng = np.random.default_rng(seed)
    return np.array([hparam_search.sample_value(spec, rng) for _ in range(count)])


def test_log_uniform_values_is_uniform_in_log_space():
    values = draws({"distribution": "log_uniform_values", "min": 0.1, "max": 30.0})
    assert values.min() >= 0.1
    assert values.max() <= 30.0
    # Kolmogorov-Smirnov against SciPy's log-uniform distribution
    assert stats.kstest(values, stats.loguniform(0.1, 30.0).cdf).pvalue > 0.01
    # half the draws below the geometric mean, not below the arithmetic one
    assert np.mean(values < math.sqrt(0.1 * 30.0)) == pytest.approx(0.5, abs=0.03)


def test_log_uniform_uses_exponents():
    values = draws({"distribution": "log_uniform", "min": 0.0, "max": 2.0})
    assert values.min() >= 1.0
    assert values.max() <= math.exp(2.0)
    assert stats.kstest(np.log(values), stats.uniform(0.0, 2.0).cdf).pvalue > 0.01


def test_uniform_matches_scipy():
    values = draws({"min": 0.5, "max": 1.5})
    assert stats.kstest(values, stats.uniform(0.5, 1.0).cdf).pvalue > 0.01


def test_int_uniform_includes_both_ends_equally():
    values = draws({"min": 1, "max": 3})
    counts = np.array([np.sum(values == value) for value in (1, 2, 3)])
    assert counts.sum() == len(values)
    assert stats.chisquare(counts).pvalue > 0.01


def test_categorical_follows_probabilities():
    values = draws({"values": [1, 2, 3], "probabilities": [0.6, 0.3, 0.1]})
    counts = np.array([np.sum(values == value) for value in (1, 2, 3)])
    assert stats.chisquare(counts, len(values) * np.array([0.6, 0.3, 0.1])).pvalue > 0.01


def test_q_uniform_rounds_to_multiples_of_q():
    values = draws({"distribution": "q_uniform", "min": 0.0, "max": 1.0, "q": 0.25}, count=500)
    assert set(np.round(values, 10)) <= {0.0, 0.25, 0.5, 0.75, 1.0}


def test_constant_is_constant():
    assert set(draws({"value": "tfidf"}, count=20)) == {"tfidf"}


def test_same_seed_same_configurations(sweep):
    first = hparam_search.sample_configs(sweep["parameters"], "random", 6, seed=3)
    second = hparam_search.sample_configs(sweep["parameters"], "random", 6, seed=3)
    other = hparam_search.sample_configs(sweep["parameters"], "random", 6, seed=4)
    assert first == second
    assert first != other


def test_grid_enumerates_every_combination():
    parameters = {"model": {"value": "tfidf"}, "alpha": {"values": [0.5, 2.0]}, "ngram-max": {"min": 1, "max": 3}}
    configs = hparam_search.sample_configs(parameters, "grid", 100, seed=0)
    pairs = {(config["alpha"], config["ngram-max"]) for config in configs}
    assert len(configs) == 6
    assert pairs == {(alpha, ngram) for alpha in (0.5, 2.0) for ngram in (1, 2, 3)}


def test_grid_rejects_a_continuous_parameter(sweep):
    with pytest.raises(DataFormatError, match="alpha"):
        hparam_search.sample_configs(sweep["parameters"], "grid", 10, seed=0)


def test_cli_args_are_formatted_like_wandb():
    assert hparam_search.to_cli_args({"alpha": 0.5, "ngram-max": 2}) == ["--alpha=0.5", "--ngram-max=2"]


# ---------------------------------------------------------------- local search


def read_results(run_dir):
    with open(run_dir / "results.csv", encoding="utf-8", newline="") as stream:
        return list(csv.DictReader(stream))


def test_local_search_finds_best_trial(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    summary = hparam_search.main(["--smoke", "--output-dir", str(run_dir), "--trials", "3"])

    rows = read_results(run_dir)
    assert len(rows) == 3
    assert summary["n_trials"] == 3
    scores = [float(row["cv_rmse"]) for row in rows]
    assert summary["best_cv_rmse"] == pytest.approx(min(scores))
    assert summary["worst_cv_rmse"] == pytest.approx(max(scores))
    best_row = rows[int(np.argmin(scores))]
    assert summary["best_params"]["alpha"] == pytest.approx(float(best_row["alpha"]))
    for number, row in enumerate(rows, start=1):
        trial_metrics = json.loads((run_dir / "trials" / f"trial-{number:02d}" / "metrics.json").read_text())
        assert trial_metrics["cv_rmse"] == pytest.approx(float(row["cv_rmse"]))
        assert trial_metrics["alpha"] == pytest.approx(float(row["alpha"]))
    assert (run_dir / "search.png").read_bytes()[:4] == b"\x89PNG"
    assert "--alpha=" in (run_dir / "best_command.txt").read_text()


def test_local_search_follows_seeded_sampler(tmp_path, monkeypatch, sweep):
    monkeypatch.chdir(tmp_path)
    hparam_search.main(["--smoke", "--output-dir", str(tmp_path / "run"), "--trials", "2", "--seed", "5"])
    expected = hparam_search.sample_configs(sweep["parameters"], sweep["method"], 2, seed=5)
    rows = read_results(tmp_path / "run")
    assert [float(row["alpha"]) for row in rows] == pytest.approx([config["alpha"] for config in expected])
    assert [int(row["ngram-max"]) for row in rows] == [config["ngram-max"] for config in expected]


def test_grid_search_runs_the_whole_grid(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_sweep(tmp_path / "grid.yaml", method="grid", parameters={
        "model": {"value": "tfidf"}, "alpha": {"values": [0.3, 3.0]}, "ngram-max": {"values": [1, 2]}})
    summary = hparam_search.main(["--smoke", "--sweep", str(path), "--trials", "10", "--output-dir", str(tmp_path / "run")])
    rows = read_results(tmp_path / "run")
    assert summary["n_trials"] == 4
    assert {(float(row["alpha"]), int(row["ngram-max"])) for row in rows} == {(0.3, 1), (0.3, 2), (3.0, 1), (3.0, 2)}


def test_local_search_wandb_offline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"
    hparam_search.main(["--smoke", "--output-dir", str(run_dir), "--trials", "2", "--track", "wandb"])

    files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 2
    logged = []
    for path in files:
        records = read_wandb_records(path)
        assert records[-1].WhichOneof("record_type") == "exit"
        logged.append((wandb_config(records)["alpha"], wandb_summary(records)["cv_rmse"]))
    logged.sort()
    expected = sorted((float(row["alpha"]), float(row["cv_rmse"])) for row in read_results(run_dir))
    assert [alpha for alpha, _ in logged] == pytest.approx([alpha for alpha, _ in expected])
    assert [score for _, score in logged] == pytest.approx([score for _, score in expected])


def test_local_search_tensorboard_hparams(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    hparam_search.main(["--smoke", "--output-dir", str(run_dir), "--trials", "2", "--track", "tensorboard"])
    scalars = tensorboard_scalars(run_dir / "tensorboard")
    rows = read_results(run_dir)
    assert sorted(scalars["hparam/cv_rmse"]) == pytest.approx(sorted(float(row["cv_rmse"]) for row in rows), abs=1e-6)


def test_agent_trial_logs_metric(tmp_path, monkeypatch):
    """What `wandb agent` runs for each trial (the YAML's command), here offline."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    import wandb

    wandb.teardown()  # an earlier test's wandb.setup() keeps its settings; an agent starts a fresh process
    returned = hparam_search.main(["--trial", "stage2_kaggle/commonlit_readability.py", "--smoke", "--model=tfidf",
                                   "--alpha=2.0", "--output-dir", str(tmp_path / "trial")])
    files = list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1
    history = [step["cv_rmse"] for step in wandb_history(read_wandb_records(files[0])) if "cv_rmse" in step]
    assert history == [pytest.approx(returned["cv_rmse"])]


def test_online_refuses_offline_mode(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    with pytest.raises(SystemExit, match="WANDB_MODE"):
        hparam_search.main(["--online"])


def test_online_refuses_smoke(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="--smoke"):
        hparam_search.main(["--online", "--smoke"])
