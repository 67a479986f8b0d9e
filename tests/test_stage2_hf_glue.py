"""glue_benchmark: the GLUE metrics, the TSV and hub readers, the task table and multi-task runs.

Metrics are checked against scikit-learn / SciPy and against hand-computed values. The TSV
reader is checked against transformers' own GLUE processors on the bundled samples, and the
runs use the tiny BERT.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from transformers import EvalPrediction

from roadmap import data, tiny
from stage2_huggingface import glue_benchmark as glue

SAMPLES = data.SAMPLES_DIR / "glue"
SST2, MRPC, STSB, COLA = (glue.GLUE_TASKS[name] for name in ("sst2", "mrpc", "stsb", "cola"))

# 二分类的一个手算例子：TP=3、FN=1、FP=1、TN=2。
LABELS = [1, 1, 1, 1, 0, 0, 0]
PREDICTIONS = [1, 1, 1, 0, 1, 0, 0]


# ---------------------------------------------------------------- 指标


def test_accuracy_matches_sklearn_and_hand():
    assert glue.accuracy(PREDICTIONS, LABELS) == pytest.approx(5 / 7)
    assert glue.accuracy(PREDICTIONS, LABELS) == pytest.approx(accuracy_score(LABELS, PREDICTIONS))


def test_f1_is_binary_f1_of_positive_class():
    # F1 = 2TP / (2TP + FP + FN) = 6 / 8
    assert glue.f1_positive(PREDICTIONS, LABELS) == pytest.approx(0.75)
    assert glue.f1_positive(PREDICTIONS, LABELS) == pytest.approx(f1_score(LABELS, PREDICTIONS))
    # macro F1 would average in the negative class (F1 = 4/6 there) and give another number
    assert glue.f1_positive(PREDICTIONS, LABELS) != pytest.approx(f1_score(LABELS, PREDICTIONS, average="macro"))


def test_f1_is_zero_without_positive_predictions():
    assert glue.f1_positive([0, 0, 0], [1, 0, 1]) == 0.0


def test_matthews_matches_sklearn_and_hand():
    # MCC = (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (6 − 1) / sqrt(4·4·3·3) = 5/12
    assert glue.matthews_correlation(PREDICTIONS, LABELS) == pytest.approx(5 / 12)
    assert glue.matthews_correlation(PREDICTIONS, LABELS) == pytest.approx(matthews_corrcoef(LABELS, PREDICTIONS))


def test_matthews_of_inverted_predictions_is_minus_one():
    labels = [0, 1, 1, 0, 1]
    assert glue.matthews_correlation([1 - label for label in labels], labels) == pytest.approx(-1.0)


def test_pearson_matches_scipy_and_hand():
    predictions, labels = [1.0, 2.0, 3.0], [1.0, 2.0, 4.0]
    # deviations (-1, 0, 1) and (-4/3, -1/3, 5/3): r = 3 / sqrt(2 · 14/3)
    assert glue.pearson(predictions, labels) == pytest.approx(3 / math.sqrt(2 * 14 / 3))
    assert glue.pearson(predictions, labels) == pytest.approx(pearsonr(predictions, labels)[0])


def test_spearman_matches_scipy_and_hand():
    # ranks differ by d = (0, 1, −1, 0): rho = 1 − 6·Σd² / (n(n²−1)) = 1 − 12/60
    assert glue.spearman([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0]) == pytest.approx(0.8)
    rng = np.random.default_rng(0)
    predictions = rng.normal(size=50)
    labels = np.round(predictions + rng.normal(size=50), 1)  # 带并列值
    assert glue.spearman(predictions, labels) == pytest.approx(spearmanr(predictions, labels)[0])
    assert glue.pearson(predictions, labels) == pytest.approx(pearsonr(predictions, labels)[0])


def test_spearman_ignores_monotonic_transform():
    predictions = np.array([0.1, 0.5, 0.2, 0.9, 0.7])
    labels = np.array([1.0, 3.0, 2.0, 5.0, 4.0])
    assert glue.spearman(np.exp(5 * predictions), labels) == pytest.approx(1.0)
    assert glue.pearson(np.exp(5 * predictions), labels) < 0.99


def test_constant_prediction_cola_gives_mcc_zero():
    labels = [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]
    constant = [1] * len(labels)
    assert glue.accuracy(constant, labels) == pytest.approx(0.7)
    assert glue.matthews_correlation(constant, labels) == 0.0
    assert matthews_corrcoef(labels, constant) == 0.0
    assert glue.glue_metrics(COLA, constant, labels) == {"matthews_correlation": 0.0, "score": 0.0}


def test_constant_regression_prediction_gives_zero_correlation():
    labels = [0.5, 2.0, 4.5, 3.0]
    assert glue.pearson([2.5] * 4, labels) == 0.0
    assert glue.spearman([2.5] * 4, labels) == 0.0


def test_metric_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="数量不一致"):
        glue.accuracy([1, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="为空"):
        glue.pearson([], [])


def test_glue_metrics_keys_and_task_score():
    mrpc = glue.glue_metrics(MRPC, PREDICTIONS, LABELS)
    assert set(mrpc) == {"f1", "accuracy", "score"}
    assert mrpc["score"] == pytest.approx((0.75 + 5 / 7) / 2)
    stsb = glue.glue_metrics(STSB, [1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0])
    assert set(stsb) == {"pearson", "spearman", "score"}
    assert stsb["score"] == pytest.approx((0.8 + 0.8) / 2)
    assert set(glue.glue_metrics(SST2, PREDICTIONS, LABELS)) == {"accuracy", "score"}


def test_predictions_from_logits():
    logits = np.array([[0.1, 2.0], [3.0, -1.0], [0.0, 0.5]])
    assert glue.predictions_from_logits(SST2, logits).tolist() == [1, 0, 1]
    assert glue.predictions_from_logits(SST2, (logits, np.zeros(3))).tolist() == [1, 0, 1]
    regression = glue.predictions_from_logits(STSB, np.array([[4.2], [0.3]]))
    assert regression.tolist() == pytest.approx([4.2, 0.3])


def test_compute_metrics_on_eval_prediction():
    classification = glue.make_compute_metrics(MRPC)(
        EvalPrediction(predictions=np.eye(2)[PREDICTIONS] * 3.0, label_ids=np.array(LABELS)))
    assert classification["f1"] == pytest.approx(0.75)
    assert classification["accuracy"] == pytest.approx(5 / 7)
    regression = glue.make_compute_metrics(STSB)(
        EvalPrediction(predictions=np.array([[1.0], [2.0], [3.0]]), label_ids=np.array([1.0, 2.0, 4.0])))
    assert regression["pearson"] == pytest.approx(pearsonr([1, 2, 3], [1, 2, 4])[0])
    assert regression["spearman"] == pytest.approx(1.0)


def test_majority_baseline():
    sst2 = glue.majority_baseline(SST2, train_labels=[1, 1, 0], dev_labels=[1, 0, 0, 0])
    assert sst2["accuracy"] == pytest.approx(0.25)  # 全猜训练集的多数类 1
    cola = glue.majority_baseline(COLA, train_labels=[1, 1, 0], dev_labels=[1, 1, 1, 0])
    assert cola["matthews_correlation"] == 0.0
    stsb = glue.majority_baseline(STSB, train_labels=[1.0, 3.0], dev_labels=[0.0, 5.0, 2.0])
    assert stsb["score"] == 0.0


# ---------------------------------------------------------------- 任务表


def test_task_table_is_consistent():
    assert list(glue.GLUE_TASKS) == ["sst2", "mrpc", "stsb", "cola"]
    for name, task in glue.GLUE_TASKS.items():
        assert task.name == name
        assert task.is_regression == (task.label_names is None)
        assert task.num_labels == (1 if task.is_regression else len(task.label_names))
        assert (task.label_range is not None) == task.is_regression
        assert len(task.text_columns) == len(task.text_indices)
        assert set(task.metrics) <= set(glue.METRIC_FUNCTIONS)
        assert glue.PUBLISHED_BERT_BASE_TEST[name][0] in task.metrics
        assert max(task.text_indices) < task.num_fields
        assert -task.num_fields <= task.label_index < task.num_fields
        if task.header is not None:
            assert len(task.header) == task.num_fields


def test_task_table_matches_glue_definitions():
    assert {name for name, task in glue.GLUE_TASKS.items() if task.text_pair_column} == {"mrpc", "stsb"}
    assert {name for name, task in glue.GLUE_TASKS.items() if task.is_regression} == {"stsb"}
    assert STSB.num_labels == 1
    assert STSB.label_range == (0.0, 5.0)
    # 列名和类别名与 hub 上 nyu-mll/glue 的 features 相同
    assert SST2.text_columns == COLA.text_columns == ("sentence",)
    assert MRPC.text_columns == STSB.text_columns == ("sentence1", "sentence2")
    assert SST2.label_names == ("negative", "positive")
    assert COLA.label_names == ("unacceptable", "acceptable")
    assert MRPC.label_names == ("not_equivalent", "equivalent")
    assert SST2.metrics == ("accuracy",)
    assert MRPC.metrics == ("f1", "accuracy")
    assert STSB.metrics == ("pearson", "spearman")
    assert COLA.metrics == ("matthews_correlation",)
    assert COLA.header is None
    assert [task.folder for task in glue.GLUE_TASKS.values()] == ["SST-2", "MRPC", "STS-B", "CoLA"]


def test_parse_tasks_accepts_folder_names():
    assert glue.parse_tasks("sst2, MRPC,STS-B,CoLA,sst2") == [SST2, MRPC, STSB, COLA]


def test_parse_tasks_rejects_unknown_task():
    with pytest.raises(SystemExit, match="qnli.*sst2, mrpc, stsb, cola"):
        glue.parse_tasks("sst2,qnli")
    with pytest.raises(SystemExit, match="空"):
        glue.parse_tasks(" , ")


# ---------------------------------------------------------------- 读 TSV


@pytest.mark.parametrize("task, train_rows, dev_rows", [(SST2, 30, 12), (MRPC, 14, 6), (STSB, 12, 8), (COLA, 30, 10)])
def test_read_samples_columns_and_label_types(task, train_rows, dev_rows):
    for split, count in (("train", train_rows), ("dev", dev_rows)):
        dataset = glue.read_glue_tsv(SAMPLES / task.folder / f"{split}.tsv", task)
        assert dataset.column_names == [*task.text_columns, "labels"]
        assert len(dataset) == count
        labels = dataset["labels"]
        if task.is_regression:
            assert all(isinstance(label, float) for label in labels)
            assert all(0.0 <= label <= 5.0 for label in labels)
            assert len(set(labels)) > 2
        else:
            assert all(isinstance(label, int) for label in labels)
            assert set(labels) == {0, 1}


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("task, processor_name", [(SST2, "sst-2"), (MRPC, "mrpc"), (STSB, "sts-b"), (COLA, "cola")])
def test_read_samples_match_transformers_processors(task, processor_name):
    from transformers.data.processors import glue as processors

    processor = processors.glue_processors[processor_name]()
    for split, examples in (("train", processor.get_train_examples(str(SAMPLES / task.folder))),
                            ("dev", processor.get_dev_examples(str(SAMPLES / task.folder)))):
        dataset = glue.read_glue_tsv(SAMPLES / task.folder / f"{split}.tsv", task)
        assert dataset[task.text_columns[0]] == [example.text_a for example in examples]
        if task.text_pair_column:
            assert dataset[task.text_pair_column] == [example.text_b for example in examples]
        expected = [float(example.label) if task.is_regression else int(example.label) for example in examples]
        assert dataset["labels"] == expected


def test_mrpc_header_has_byte_order_mark():
    assert (SAMPLES / "MRPC" / "train.tsv").read_bytes().startswith(b"\xef\xbb\xbf")
    assert glue.read_glue_tsv(SAMPLES / "MRPC" / "train.tsv", MRPC)["sentence1"][0].startswith("The company")


QUOTED_SST2 = ('sentence\tlabel\n'
               '" the twist " is silly , and the ending drags \t0\n'
               '" wow \t1\n'
               'a "quiet" gem \t1\n')


def test_sentence_with_double_quote_is_read_verbatim(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text(QUOTED_SST2, encoding="utf-8")
    dataset = glue.read_glue_tsv(path, SST2)
    assert dataset["sentence"] == ['" the twist " is silly , and the ending drags ', '" wow ', 'a "quiet" gem ']
    assert dataset["labels"] == [0, 1, 1]


def test_default_csv_quoting_breaks_glue_rows():
    # 按默认的 CSV 规则读，以 " 开头的字段会丢掉引号，落单的 " 会把后面的 tab 和换行都吞进同一个字段。
    rows = list(csv.reader(io.StringIO(QUOTED_SST2), delimiter="\t"))
    assert len(rows) < 4
    assert rows[1][0] != '" the twist " is silly , and the ending drags '


def test_read_rejects_wrong_header(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text("text\tlabel\ngood\t1\n", encoding="utf-8")
    with pytest.raises(data.DataFormatError, match="表头第 1 列应为 'sentence'"):
        glue.read_glue_tsv(path, SST2)


def test_read_rejects_short_row(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("src\t1\t\tFine sentence.\nsrc\t0\tBroken row\n", encoding="utf-8")
    with pytest.raises(data.DataFormatError, match="第 2 行只有 3 个"):
        glue.read_glue_tsv(path, COLA)


@pytest.mark.parametrize("task, body, message", [
    (SST2, "sentence\tlabel\nfine \t2\n", "0=negative、1=positive"),
    (SST2, "sentence\tlabel\nfine \tpositive\n", "'positive'"),
    (STSB, None, "0-5"),
])
def test_read_rejects_bad_labels(tmp_path, task, body, message):
    if body is None:  # STS-B：分数超出 0-5
        header = "\t".join(STSB.header)
        body = f"{header}\n0\tmain-news\tx\t2024\t0001\tnone\tnone\tA man.\tA person.\t7.500\n"
    path = tmp_path / "dev.tsv"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(data.DataFormatError, match=message):
        glue.read_glue_tsv(path, task)


def test_read_rejects_empty_file(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text("sentence\tlabel\n\n", encoding="utf-8")
    with pytest.raises(data.DataFormatError, match="没有数据行"):
        glue.read_glue_tsv(path, SST2)


@pytest.fixture
def offline_data(tmp_path, monkeypatch):
    """No $ROADMAP_DATA_DIR and an empty data cache."""
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setattr(data, "CACHE_DIR", tmp_path / "cache")


def test_find_glue_folder_in_glue_layout(tmp_path, offline_data):
    folder = tmp_path / "root" / "glue" / "CoLA"
    folder.mkdir(parents=True)
    for split in ("train", "dev"):
        (folder / f"{split}.tsv").write_bytes((SAMPLES / "CoLA" / f"{split}.tsv").read_bytes())
    assert glue.find_glue_folder(COLA, tmp_path / "root") == folder


def test_find_glue_folder_missing(tmp_path, offline_data):
    with pytest.raises(data.DataNotFoundError) as error:
        glue.find_glue_folder(STSB, tmp_path / "empty")
    message = str(error.value)
    assert str(tmp_path / "empty" / "glue" / "STS-B") in message
    assert glue.GLUE_URL in message
    assert "--source hub" in message
    assert "--smoke" in message


# ---------------------------------------------------------------- hub


def test_load_glue_hub_renames_and_uses_validation(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name, split):
        calls.append((path, name, split))
        return datasets.Dataset.from_dict({"sentence1": ["A man.", "A dog."], "sentence2": ["A person.", "A cat."],
                                           "label": [4.2, 1.0], "idx": [0, 1]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    dataset = glue.load_glue_hub(STSB, "dev")
    assert calls == [("nyu-mll/glue", "stsb", "validation")]
    assert dataset.column_names == ["sentence1", "sentence2", "labels"]
    assert dataset["labels"] == pytest.approx([4.2, 1.0])


def test_load_glue_hub_rejects_unlabelled_test_rows(monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda path, name, split: datasets.Dataset.from_dict(
        {"sentence": ["fine", "bad"], "label": [-1, -1], "idx": [0, 1]}))
    with pytest.raises(data.DataFormatError, match="-1"):
        glue.load_glue_hub(SST2, "dev")


def test_load_glue_hub_offline_message(monkeypatch):
    import datasets

    def no_network(path, name, split):
        raise ConnectionError("no network in tests")

    monkeypatch.setattr(datasets, "load_dataset", no_network)
    with pytest.raises(data.DataNotFoundError, match="--smoke"):
        glue.load_glue_hub(COLA, "train")


# ---------------------------------------------------------------- 结果表和图


def fake_outcomes():
    return {
        "mrpc": {"metrics": {"f1": 0.75, "accuracy": 0.5, "score": 0.625}, "baseline": {"score": 0.4},
                 "train_samples": 14, "dev_samples": 6},
        "cola": {"metrics": {"matthews_correlation": -0.1, "score": -0.1}, "baseline": {"score": 0.0},
                 "train_samples": 30, "dev_samples": 10},
    }


def test_results_table_rows():
    table = glue.results_table([MRPC, COLA], fake_outcomes(), average=0.2625, baseline_average=0.2)
    lines = table.splitlines()
    assert len(lines) == 2 + 3
    assert "| MRPC | f1 75.0 / accuracy 50.0 | 62.5 | 40.0 | 14 / 6 | f1 88.9 |" in lines
    assert "| CoLA | matthews_correlation -10.0 | -10.0 | 0.0 | 30 / 10 | matthews_correlation 52.1 |" in lines
    assert lines[-1].startswith("| GLUE average |  | 26.2 | 20.0 |")


def test_plot_glue_scores_writes_png(tmp_path):
    path = glue.plot_glue_scores([MRPC, COLA], fake_outcomes(), 0.2625, 0.2, tmp_path / "scores.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- 整个脚本


def test_smoke_two_tasks_return_every_metric(tmp_path):
    output_dir = tmp_path / "run"
    summary = glue.main(["--smoke", "--tasks", "mrpc,stsb", "--output-dir", str(output_dir)])

    for key in ("mrpc_f1", "mrpc_accuracy", "mrpc_score", "stsb_pearson", "stsb_spearman", "stsb_score"):
        assert math.isfinite(summary[key]), key
    assert "sst2_accuracy" not in summary
    assert summary["mrpc_score"] == pytest.approx((summary["mrpc_f1"] + summary["mrpc_accuracy"]) / 2)
    assert summary["stsb_score"] == pytest.approx((summary["stsb_pearson"] + summary["stsb_spearman"]) / 2)
    assert summary["glue_average"] == pytest.approx((summary["mrpc_score"] + summary["stsb_score"]) / 2)
    assert summary["mrpc_train_samples"] == 14
    assert summary["stsb_dev_samples"] == 8
    assert summary["tasks"] == "mrpc,stsb"
    assert summary["source"] == "samples"

    assert json.loads((output_dir / "metrics.json").read_text(encoding="utf-8")) == json.loads(json.dumps(summary))
    results = (output_dir / "results.md").read_text(encoding="utf-8")
    assert "| MRPC |" in results
    assert "| STS-B |" in results
    assert "| GLUE average |" in results
    assert (output_dir / "glue_scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    stsb_config = json.loads((output_dir / "stsb" / "model" / "config.json").read_text(encoding="utf-8"))
    assert stsb_config["problem_type"] == "regression"
    assert len(stsb_config["id2label"]) == 1
    mrpc_config = json.loads((output_dir / "mrpc" / "model" / "config.json").read_text(encoding="utf-8"))
    assert mrpc_config["id2label"] == {"0": "not_equivalent", "1": "equivalent"}
    assert mrpc_config["problem_type"] == "single_label_classification"


def test_run_from_data_dir_with_local_model(tmp_path, offline_data):
    model_dir = tiny.tiny_model_dir("bert")
    output_dir = tmp_path / "run"
    summary = glue.main(["--model", str(model_dir), "--data-dir", str(data.SAMPLES_DIR), "--tasks", "cola",
                         "--epochs", "1", "--max-train-samples", "20", "--max-eval-samples", "6",
                         "--output-dir", str(output_dir)])
    assert summary["source"] == "files"
    assert summary["cola_train_samples"] == 20
    assert summary["cola_dev_samples"] == 6
    assert -1.0 <= summary["cola_matthews_correlation"] <= 1.0
    assert summary["glue_average"] == pytest.approx(summary["cola_score"])
    config = json.loads((output_dir / "config.json").read_text(encoding="utf-8"))
    assert config["smoke"] is False


def test_resume_is_rejected(tmp_path):
    with pytest.raises(SystemExit) as error:
        glue.main(["--smoke", "--resume", str(tmp_path)])
    assert error.value.code == 2
