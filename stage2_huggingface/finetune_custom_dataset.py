"""在自己的数据集上微调文本分类模型（路线图：Hugging Face → 用 Trainer API 和 Dataset 在自定义数据集上微调）

学什么
- 通用流程：一个 CSV / TSV / JSONL 文件（列名可配置：文本列、标签列、可选的第二段文本列）
  → `datasets.Dataset` → 用 `Dataset.map(batched=True)` 批量分词 → `Trainer` 训练。
- 标签编码：标签集合可以用 --labels 明确给出（顺序就是类别编号），不给就从训练文件里收集；
  类别名写进 config.json 的 id2label / label2id，之后 `pipeline()` 直接输出类别名。
- `Trainer` 的几件事：`compute_metrics`（分类：accuracy + macro F1；回归：RMSE + Pearson），
  每个 epoch 评估一次并保存检查点，`EarlyStoppingCallback` 早停，`load_best_model_at_end` 训练结束后
  载回验证集上最好的那个 epoch，再连同分词器（`processing_class=tokenizer`）保存到运行目录的 model/。
  动态 padding（`DataCollatorWithPadding`）：分词时不补齐，每个 batch 只补到这个 batch 里最长的那条。
- 单条预测：`--predict "一段文本"`，从 `--checkpoint 运行目录` 加载，或训练完直接预测。
  保存的 model/ 文件夹可以直接交给 `pipeline("text-classification", model=文件夹)`，结果与本脚本的
  `predict_texts` 相同（tests 里逐条对比类别和分数）。

数据：任何有表头的 CSV（逗号）、TSV（制表符）或 JSONL（每行一个 JSON 对象）文件。
--smoke 且没给 --train-file 时用仓库自带的 data/samples/custom/reviews.csv（36 条自写的英文商品评价，
positive / negative / neutral 三类）；同目录的 reviews.jsonl 是同样内容的 JSONL 版本。

怎么跑
    roadmap run finetune_custom_dataset --smoke                       # 自带样本 + 极小模型，几秒
    roadmap run finetune_custom_dataset --train-file my.csv --text-column review --label-column label \\
        --valid-ratio 0.1 --model /path/to/local/model
    roadmap run finetune_custom_dataset --predict "great phone" --checkpoint runs/finetune_custom_dataset/<时间戳>
    （--predict 不给 --checkpoint 时，先按当前选项训练，训练完再预测这句话）

其他脚本复用的接口（imdb_classification、chinese_sentiment、glue_benchmark 都从这里导入）：
    load_table(path, *, text_column="text", label_column="label", text_pair_column=None) -> Dataset
    encode_labels(dataset, label_column="label", label_names=None, *, regression=False)
        -> (带整数 "labels" 列的 Dataset, 类别名列表；回归时为 None)
    split_train_validation(dataset, ratio, seed, *, stratify=True) -> (train, validation)
    limit_samples(dataset, max_samples, seed) -> Dataset
    add_finetune_options(parser, *, default_model="bert-base-uncased", max_length=128) -> 参数组
    classification_metrics(eval_prediction) / regression_metrics(eval_prediction) -> dict
    fine_tune_classifier(model_name_or_path, train_dataset, eval_dataset, *, label_names, args, run_dir,
        text_column="text", text_pair_column=None, max_length=None, compute_metrics=None, test_dataset=None,
        metric_for_best_model=None) -> FineTuneResult
    predict_texts(model_dir_or_name, texts, *, batch_size=32, max_length=None, device=None)
        -> list[{"label": str, "score": float}]

真实数据上的结果（Kaggle Tweet Sentiment Extraction 的 train.csv / test.csv 直接当作"自己的 CSV"：
文本列 text、标签列 sentiment，negative / neutral / positive 三类）：
    ROADMAP_DATA_DIR=/path/to/data; D=$ROADMAP_DATA_DIR/tweet_sentiment_extraction
    roadmap run finetune_custom_dataset --model <all-MiniLM-L6-v2 的本地文件夹> --train-file $D/train.csv \
        --test-file $D/test.csv --label-column sentiment --max-train-samples 2000 --max-length 64 \
        --batch-size 32 --lr 1e-4 --epochs 3 --device cpu
    随机抽 2,000 条训练数据，分层划出 200 条验证、1,800 条训练；官方测试文件全部 3,534 条。
    all-MiniLM-L6-v2（6 层、384 维、22.7M 参数）微调 3 个 epoch（第 3 个最好）：
        验证集 accuracy 74.5%、macro F1 0.752；测试集 accuracy 75.7%、macro F1 0.762
    同样 1,800 条上的 TF-IDF（1-2 gram）+ 逻辑回归（C 由验证集选）：测试集 accuracy 61.3%、macro F1 0.612。
    2 核 CPU、与另外几个训练任务同时运行（OMP_NUM_THREADS=1）：训练 698 秒，整个脚本 14 分钟
    （测试集 3,534 条的评估约 2 分钟）；机器空闲时会快不少。
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from roadmap import cli, data, metrics, plots, runs, tiny, training

logger = logging.getLogger(__name__)

SAMPLE_FILE = data.SAMPLES_DIR / "custom" / "reviews.csv"
MODEL_SUBDIR = "model"
CHECKPOINT_SUBDIR = "checkpoints"
SAMPLE_PREDICTIONS_FILE = "sample_predictions.json"
LABELS_COLUMN = "labels"  # Trainer 和 AutoModelForSequenceClassification 认的标签列名
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")
# 分词器没有可信的 model_max_length 时（有的 hub 模型写的是 1e30 这样的占位值），用模型的位置数。
UNSET_MAX_LENGTH = 100_000


# ---------------------------------------------------------------- 读表格


def _read_delimited(path: Path, delimiter: str) -> tuple[list[str], list[dict[str, Any]]]:
    """Read a CSV/TSV file with a header row into (columns, rows); every cell is a string."""
    # TSV 按 GLUE 的习惯不处理引号（文本里的 " 是普通字符）；CSV 用标准的双引号转义。
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    with open(path, encoding="utf-8-sig", newline="") as stream:
        reader = csv.reader(stream, delimiter=delimiter, quoting=quoting)
        header = next(reader, None)
        if header is None:
            return [], []
        columns = [name.strip() for name in header]
        rows = []
        for line_number, cells in enumerate(reader, start=2):
            if not cells or all(not cell.strip() for cell in cells):
                continue  # 空行
            if len(cells) != len(columns):
                raise data.DataFormatError(
                    f"{path} 第 {line_number} 行有 {len(cells)} 个字段，表头有 {len(columns)} 列"
                    f"（{', '.join(columns)}）；请检查分隔符和引号")
            rows.append(dict(zip(columns, cells)))
    return columns, rows


def _read_json_records(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Read JSON Lines (one object per line), or a .json file holding one array of objects."""
    content = path.read_text(encoding="utf-8-sig")
    if path.suffix == ".json" and content.lstrip().startswith("["):
        try:
            records = json.loads(content)
        except json.JSONDecodeError as error:
            raise data.DataFormatError(f"{path} 不是合法的 JSON：{error}") from error
        numbered = list(enumerate(records, start=1))
        where = "第 {} 个元素"
    else:
        numbered = []
        for line_number, line in enumerate(content.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                numbered.append((line_number, json.loads(line)))
            except json.JSONDecodeError as error:
                raise data.DataFormatError(f"{path} 第 {line_number} 行不是合法的 JSON：{error}") from error
        where = "第 {} 行"
    columns: list[str] = []
    rows = []
    for number, record in numbered:
        if not isinstance(record, dict):
            raise data.DataFormatError(f"{path} {where.format(number)} 不是 JSON 对象（{{\"列名\": 值}}），"
                                       f"而是 {type(record).__name__}")
        for key in record:
            if key not in columns:
                columns.append(key)
        rows.append(record)
    return columns, rows


def _cell_to_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def load_table(path: str | Path, *, text_column: str = "text", label_column: str | None = "label",
               text_pair_column: str | None = None):
    """Read a CSV / TSV / JSONL file into a `datasets.Dataset` with the named columns as strings.

    The format follows the extension (.csv, .tsv, .jsonl, or .json with JSON Lines or one array).
    `label_column=None` reads a file without labels. Raises DataNotFoundError for a missing file
    and DataFormatError (Chinese message) for an unreadable or empty file, a missing column (the
    message lists the columns that exist) or an empty label cell.
    """
    from datasets import Dataset

    path = Path(path)
    if not path.is_file():
        raise data.DataNotFoundError(f"找不到数据文件：{path}")
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise data.DataFormatError(f"{path}：不支持的扩展名 {suffix or '（无）'}；支持 {', '.join(TABLE_SUFFIXES)}")
    try:
        if suffix in (".csv", ".tsv"):
            columns, rows = _read_delimited(path, "," if suffix == ".csv" else "\t")
        else:
            columns, rows = _read_json_records(path)
    except UnicodeDecodeError as error:
        raise data.DataFormatError(f"{path} 不是 UTF-8 编码的文本文件（{error}）；请先转成 UTF-8") from error
    except csv.Error as error:
        raise data.DataFormatError(f"{path} 不是合法的 CSV/TSV：{error}") from error
    except OSError as error:
        raise data.DataFormatError(f"{path} 读取失败：{error}") from error
    if not rows:
        raise data.DataFormatError(f"{path} 是空的：没有数据行" + ("" if columns else "，也没有表头"))

    required_columns = [name for name in (text_column, text_pair_column, label_column) if name is not None]
    missing = [name for name in required_columns if name not in columns]
    if missing:
        raise data.DataFormatError(
            f"{path} 里没有列 {', '.join(missing)}；文件里的列是：{', '.join(columns)}。"
            f"请用 --text-column / --label-column / --text-pair-column 指定列名")

    table: dict[str, list[str]] = {name: [] for name in required_columns}
    for row_number, row in enumerate(rows, start=1):
        for name in required_columns:
            value = _cell_to_text(row.get(name))
            if value is None or (name == label_column and not value.strip()):
                raise data.DataFormatError(f"{path} 第 {row_number} 条数据的 {name} 列是空的")
            table[name].append(value.strip() if name == label_column else value)
    return Dataset.from_dict(table)


# ---------------------------------------------------------------- 标签


def _is_integer(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _sorted_label_values(values: set[str]) -> list[str]:
    """Sort labels numerically when every one is an integer ("2" before "10"), else as strings."""
    if all(_is_integer(value) for value in values):
        return sorted(values, key=int)
    return sorted(values)


def encode_labels(dataset, label_column: str = "label", label_names: Sequence[str] | None = None, *,
                  regression: bool = False):
    """Add an int "labels" column (class ids) to `dataset`; return (dataset, label names).

    `label_names` fixes the classes and their ids; without it the classes are the sorted distinct
    values. A value that is no label name but an integer id in range counts as that id only when
    no value of the column matches a name (a GLUE file with 0/1 and names negative/positive).
    With `regression=True` "labels" contains floats and the returned names are None.
    Raises DataFormatError listing the values outside `label_names`, or the non-numeric values
    of a regression target.
    """
    values = [str(value).strip() for value in dataset[label_column]]
    if regression:
        targets = []
        bad = []
        for value in values:
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                bad.append(value)
            targets.append(number)
        if bad:
            listed = ", ".join(repr(value) for value in sorted(set(bad))[:10])
            raise data.DataFormatError(f"回归任务的 {label_column} 列必须是有限的数字，这些值不是：{listed}")
        return _replace_column(dataset, LABELS_COLUMN, targets), None

    if label_names is None:
        names = _sorted_label_values(set(values))
    else:
        names = [str(name).strip() for name in label_names]
        if len(set(names)) != len(names) or not all(names):
            raise data.DataFormatError(f"标签集合里有重复或空的名字：{names}")
    if len(names) < 2:
        raise data.DataFormatError(f"{label_column} 列只有一种标签 {names}；分类至少需要两类")
    index = {name: position for position, name in enumerate(names)}
    unknown = sorted({value for value in values if value not in index})
    if unknown and label_names is not None:
        matched_any = any(value in index for value in values)
        if not matched_any and all(_is_integer(value) and 0 <= int(value) < len(names) for value in values):
            logger.info("%s 列的值是 0..%d 的类别编号，按 --labels 的顺序对应到类别名", label_column, len(names) - 1)
            return _replace_column(dataset, LABELS_COLUMN, [int(value) for value in values]), names
        listed = ", ".join(repr(value) for value in unknown[:20]) + ("……" if len(unknown) > 20 else "")
        raise data.DataFormatError(
            f"{label_column} 列有 {len(unknown)} 种值不在标签集合 {names} 里：{listed}。"
            f"请检查 --labels，或去掉 --labels 让脚本从训练文件收集标签")
    return _replace_column(dataset, LABELS_COLUMN, [index[value] for value in values]), names


def _replace_column(dataset, name: str, values: list):
    if name in dataset.column_names:
        dataset = dataset.remove_columns(name)
    return dataset.add_column(name, values)


def split_train_validation(dataset, ratio: float, seed: int, *, stratify: bool = True):
    """Split off `ratio` of `dataset` for validation, stratified by "labels" when possible.

    Stratifying needs at least two rows of every class; otherwise the split is a plain random
    one and a warning is logged. Returns (train, validation), each in the original row order.
    """
    from sklearn.model_selection import train_test_split

    if not 0 < ratio < 1:
        raise SystemExit(f"--valid-ratio 要在 0 和 1 之间，收到 {ratio}")
    indices = np.arange(len(dataset))
    labels = np.asarray(dataset[LABELS_COLUMN]) if stratify else None
    if labels is not None:
        counts = np.unique(labels, return_counts=True)[1]
        validation_size = math.ceil(ratio * len(dataset))
        if counts.min() < 2 or validation_size < len(counts) or len(dataset) - validation_size < len(counts):
            logger.warning("有的类别样本太少，无法分层划分验证集；改用普通随机划分")
            labels = None
    try:
        train_index, validation_index = train_test_split(indices, test_size=ratio, random_state=seed, stratify=labels)
    except ValueError as error:
        raise data.DataFormatError(f"无法按 --valid-ratio {ratio} 划分 {len(dataset)} 条数据：{error}") from error
    return dataset.select(sorted(train_index.tolist())), dataset.select(sorted(validation_index.tolist()))


def limit_samples(dataset, max_samples: int | None, seed: int):
    """Return a random subset of `max_samples` rows (chosen with `seed`), or `dataset` when it is smaller."""
    if max_samples is None or max_samples >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(max_samples))


# ---------------------------------------------------------------- 选项


def add_finetune_options(parser: argparse.ArgumentParser, *, default_model: str = "bert-base-uncased",
                         max_length: int = 128) -> argparse._ArgumentGroup:
    """Add the Trainer options of a fine-tuning script: --model, --max-length, --weight-decay, --warmup-ratio.

    The common options (--epochs, --batch-size, --lr, --seed, --device, --precision, --patience,
    --track, --grad-accum-steps, --resume) come from `cli.build_parser` with `shared_loop=True`.
    """
    group = parser.add_argument_group("微调选项（Trainer）")
    group.add_argument("--model", default=default_model,
                       help="预训练模型：hub 名或本地文件夹（--smoke 时 hub 名换成 roadmap.tiny 的极小模型）")
    group.add_argument("--max-length", type=cli.positive_int, default=max_length,
                       help="每条文本分词后最多保留多少个 token（超出的截断）")
    group.add_argument("--weight-decay", type=float, default=0.01, help="AdamW 的权重衰减")
    group.add_argument("--warmup-ratio", type=float, default=0.1,
                       help="学习率预热（warmup）占全部训练步数的比例，之后线性衰减到 0")
    return group


# ---------------------------------------------------------------- 指标


def classification_metrics(eval_prediction) -> dict[str, float]:
    """Compute accuracy and macro F1 from a Trainer `EvalPrediction` (logits, label ids)."""
    from sklearn.metrics import accuracy_score, f1_score

    logits, label_ids = eval_prediction.predictions, eval_prediction.label_ids
    if isinstance(logits, tuple):
        logits = logits[0]
    predicted = np.asarray(logits).argmax(axis=-1)
    return {"accuracy": float(accuracy_score(label_ids, predicted)),
            "f1": float(f1_score(label_ids, predicted, average="macro", zero_division=0))}


def regression_metrics(eval_prediction) -> dict[str, float]:
    """Compute RMSE and the Pearson correlation from a Trainer `EvalPrediction` (one output per row)."""
    predictions = eval_prediction.predictions
    if isinstance(predictions, tuple):
        predictions = predictions[0]
    predicted = np.asarray(predictions, dtype=np.float64).reshape(-1)
    targets = np.asarray(eval_prediction.label_ids, dtype=np.float64).reshape(-1)
    rmse = float(np.sqrt(np.mean((predicted - targets) ** 2)))
    # 预测或标签是常数时相关系数没有定义（分母为 0），记成 0 而不是 NaN，免得早停比较出错。
    if predicted.std() == 0 or targets.std() == 0:
        pearson = 0.0
    else:
        pearson = float(np.corrcoef(predicted, targets)[0, 1])
    return {"rmse": rmse, "pearson": pearson}


# ---------------------------------------------------------------- 微调


@dataclass
class FineTuneResult:
    """Result of `fine_tune_classifier`: the best model's metrics, the per-epoch history and where it is saved."""

    eval_metrics: dict[str, float]  # 最佳模型在验证集上的指标，键不带 "eval_" 前缀
    test_metrics: dict[str, float] | None  # 同上，测试集；没给测试集时为 None
    history: list[dict[str, float]]  # 每个 epoch 一条：epoch、train_loss、eval_loss、eval_<指标>
    model_dir: Path  # 最佳模型 + 分词器，from_pretrained / pipeline 可直接读
    trainer: Any  # transformers.Trainer，已载入最佳模型
    seconds: float  # trainer.train() 的用时
    best_epoch: int | None = None
    stopped_early: bool = False
    eval_predictions: np.ndarray | None = field(default=None, repr=False)  # 最佳模型在验证集上的 logits（回归为 (N, 1)）
    test_predictions: np.ndarray | None = field(default=None, repr=False)  # 同上，测试集


def effective_max_length(tokenizer, config, requested: int | None) -> int:
    """Return `requested` capped by what the model can take (tokenizer limit, else position count)."""
    limit = tokenizer.model_max_length
    if not limit or limit >= UNSET_MAX_LENGTH:
        limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 512
    return limit if requested is None else min(requested, limit)


def tokenize_dataset(dataset, tokenizer, *, text_column: str, text_pair_column: str | None, max_length: int):
    """Tokenize with `Dataset.map(batched=True)`, keeping only the model inputs and "labels".

    No padding here: DataCollatorWithPadding pads each batch to its own longest row.
    """
    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        pairs = batch[text_pair_column] if text_pair_column else None
        return tokenizer(batch[text_column], pairs, truncation=True, max_length=max_length)

    keep = {LABELS_COLUMN}
    remove = [name for name in dataset.column_names if name not in keep]
    return dataset.map(tokenize, batched=True, remove_columns=remove, desc="分词")


def _device_flags(args: argparse.Namespace) -> dict[str, bool]:
    device = training.check_device_options(args)
    precision = getattr(args, "precision", "fp32")
    return {"use_cpu": device.type == "cpu", "bf16": precision == "bf16", "fp16": precision == "fp16"}


def epoch_history(log_history: Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
    """Turn `trainer.state.log_history` into one record per epoch: train_loss and the eval_* metrics.

    Needs `logging_strategy="epoch"`, so each epoch has one train log (its mean loss) and one eval log.
    """
    skipped = ("runtime", "samples_per_second", "steps_per_second")
    train_loss: dict[int, float] = {}
    history = []
    for record in log_history:
        if "epoch" not in record:
            continue
        epoch = int(round(record["epoch"]))
        if "loss" in record:
            train_loss[epoch] = float(record["loss"])
        elif "eval_loss" in record:
            row = {"epoch": epoch}
            row.update({key: float(value) for key, value in record.items()
                        if key.startswith("eval_") and not key.endswith(skipped)})
            history.append(row)
    for row in history:
        row["train_loss"] = train_loss.get(row["epoch"], math.nan)
    return history


def _strip_prefix(values: Mapping[str, Any], prefix: str) -> dict[str, float]:
    skipped = ("runtime", "samples_per_second", "steps_per_second")
    return {key[len(prefix):]: float(value) for key, value in values.items()
            if key.startswith(prefix) and not key.endswith(skipped)}


def _last_checkpoint(checkpoint_dir: Path) -> str:
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(checkpoint_dir)) if checkpoint_dir.is_dir() else None
    if last is None:
        raise SystemExit(f"--resume：{checkpoint_dir} 里没有 Trainer 的 checkpoint-* 文件夹，无法续训")
    return last


def _start_wandb(args: argparse.Namespace, run_dir: Path):
    """Start the W&B run in run_dir/wandb (rank 0 only); Trainer's WandbCallback then logs into it.

    Left to itself the callback would create the run in ./wandb of the current directory.
    """
    if not runs.is_main_process():
        return None
    import wandb

    config = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    return wandb.init(project="nlp-roadmap", dir=str(run_dir), config=config)


def fine_tune_classifier(
    model_name_or_path: str,
    train_dataset,
    eval_dataset,
    *,
    label_names: Sequence[str] | None,
    args: argparse.Namespace,
    run_dir: Path,
    text_column: str = "text",
    text_pair_column: str | None = None,
    max_length: int | None = None,
    compute_metrics: Callable | None = None,
    test_dataset=None,
    metric_for_best_model: str | None = None,
) -> FineTuneResult:
    """Fine-tune a sequence classifier with `Trainer` and save the best epoch's model into run_dir/model.

    The datasets hold the text column(s) and an int "labels" column (float for regression) as
    `encode_labels` makes them. `label_names=None` trains a regression head with one output.
    Reads from `args`: epochs, batch_size, lr, seed, device, precision, patience (early stopping
    when set), track, grad_accum_steps, resume, and weight_decay / warmup_ratio / max_length when
    present. The model keeps id2label/label2id in config.json and is saved with its tokenizer,
    whose model_max_length is set to the training max_length so `pipeline()` truncates the same way.
    """
    from accelerate.state import AcceleratorState
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              EarlyStoppingCallback, Trainer, TrainingArguments)

    regression = label_names is None
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
    except OSError as error:
        raise data.DataNotFoundError(
            f"无法加载模型 {model_name_or_path!r}：{error}\n离线时请用 --model 指向本地模型文件夹"
            f"（含 config.json 和权重），只想先跑通流程请加 --smoke") from error
    model_options: dict[str, Any] = {"num_labels": 1, "problem_type": "regression"} if regression else {
        "num_labels": len(label_names),
        "id2label": dict(enumerate(label_names)),
        "label2id": {name: index for index, name in enumerate(label_names)},
        "problem_type": "single_label_classification",
    }
    # ignore_mismatched_sizes：从一个已经微调过、类别数不同的分类模型继续微调时，换一个新的分类头。
    model = AutoModelForSequenceClassification.from_pretrained(model_name_or_path, ignore_mismatched_sizes=True,
                                                               **model_options)
    if tokenizer.pad_token is None:
        # GPT-2 一类模型没有 pad token；动态 padding 需要一个，沿用常见做法让它等于 eos。
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id

    max_length = effective_max_length(tokenizer, model.config,
                                      max_length if max_length is not None else getattr(args, "max_length", 128))
    tokenizer.model_max_length = max_length
    tokenize_options = {"text_column": text_column, "text_pair_column": text_pair_column, "max_length": max_length}
    train_tokens = tokenize_dataset(train_dataset, tokenizer, **tokenize_options)
    eval_tokens = tokenize_dataset(eval_dataset, tokenizer, **tokenize_options)

    if metric_for_best_model is None:
        metric_for_best_model = "rmse" if regression else "accuracy"
    greater_is_better = metric_for_best_model not in ("rmse", "loss", "mse")
    track = getattr(args, "track", "none")
    checkpoint_dir = Path(run_dir) / CHECKPOINT_SUBDIR
    training_args = TrainingArguments(
        output_dir=str(checkpoint_dir),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size * 2,
        gradient_accumulation_steps=getattr(args, "grad_accum_steps", 1),
        learning_rate=args.lr,
        weight_decay=getattr(args, "weight_decay", 0.0),
        warmup_ratio=getattr(args, "warmup_ratio", 0.0),
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model=metric_for_best_model,
        greater_is_better=greater_is_better,
        save_total_limit=1,  # 加上 load_best_model_at_end，Trainer 保留最佳和最近的各一个检查点
        seed=args.seed,
        data_seed=args.seed,
        report_to=[] if track == "none" else [track],
        logging_dir=str(Path(run_dir) / "logs"),
        **_device_flags(args),
    )
    callbacks = []
    if getattr(args, "patience", None):
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=args.patience))

    # Accelerate 的 AcceleratorState 是进程级单例，同一进程先后跑几个脚本（测试、notebook）时，
    # 不同的混合精度设置会冲突；这里清掉精度部分，保留分布式设置（与 roadmap.training 的做法相同）。
    # NOTE: _reset_state 是 accelerate 的私有接口（在 1.16.0 上核对过）。
    AcceleratorState._reset_state(reset_partial_state=False)
    wandb_run = _start_wandb(args, run_dir) if track == "wandb" else None
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_tokens,
        eval_dataset=eval_tokens,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics or (regression_metrics if regression else classification_metrics),
        callbacks=callbacks,
    )
    resume = _last_checkpoint(checkpoint_dir) if getattr(args, "resume", None) is not None else None
    logger.info("开始微调：%d 条训练，%d 条验证，max_length=%d，%s", len(train_tokens), len(eval_tokens), max_length,
                "回归" if regression else f"{len(label_names)} 类")
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - started

    history = epoch_history(trainer.state.log_history)
    # trainer.predict 与 trainer.evaluate 算出同样的指标，另外还返回 logits（画混淆矩阵用）。
    eval_output = trainer.predict(eval_tokens, metric_key_prefix="eval")
    eval_metrics = _strip_prefix(eval_output.metrics, "eval_")
    test_metrics = None
    test_predictions = None
    if test_dataset is not None:
        output = trainer.predict(tokenize_dataset(test_dataset, tokenizer, **tokenize_options), metric_key_prefix="test")
        test_metrics = _strip_prefix(output.metrics, "test_")
        test_predictions = _logits(output.predictions)
    if wandb_run is not None:
        wandb_run.finish()  # WandbCallback 不会结束运行；不结束的话，同一进程里下一次微调会写进这个运行

    model_dir = Path(run_dir) / MODEL_SUBDIR
    trainer.save_model(str(model_dir))  # 模型（最佳 epoch）+ 分词器
    best_epoch = _best_epoch(trainer.state.log_history, trainer.state.best_model_checkpoint)
    stopped_early = bool(history) and history[-1]["epoch"] < args.epochs
    # 训练完成后 Trainer 的检查点（含优化器状态，约为模型的 3 倍大）只对续训有用，删掉省磁盘。
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    if history:
        plots.plot_history(history, Path(run_dir) / "history.png", title="fine-tune")
    logger.info("最佳 epoch %s，验证集 %s；模型已保存到 %s", best_epoch, eval_metrics, model_dir)
    return FineTuneResult(eval_metrics=eval_metrics, test_metrics=test_metrics, history=history, model_dir=model_dir,
                          trainer=trainer, seconds=seconds, best_epoch=best_epoch, stopped_early=stopped_early,
                          eval_predictions=_logits(eval_output.predictions), test_predictions=test_predictions)


def _logits(predictions) -> np.ndarray:
    return np.asarray(predictions[0] if isinstance(predictions, tuple) else predictions)


def _best_epoch(log_history: Sequence[Mapping[str, Any]], best_checkpoint: str | None) -> int | None:
    """Return the epoch of the checkpoint that load_best_model_at_end restored (from its step number)."""
    if best_checkpoint is None:
        return None
    step = int(Path(best_checkpoint).name.rsplit("-", 1)[-1])
    for record in log_history:
        if "eval_loss" in record and record.get("step") == step:
            return int(round(record["epoch"]))
    return None


# ---------------------------------------------------------------- 预测


def predict_texts(model_dir_or_name: str | Path, texts: Sequence[str | tuple[str, str]], *, batch_size: int = 32,
                  max_length: int | None = None, device: str | None = None) -> list[dict[str, Any]]:
    """Classify each text (or (text, text_pair) tuple); return [{"label": name, "score": probability}].

    Long texts are truncated to `max_length`, by default the tokenizer's model_max_length (the
    training max_length for a folder written by `fine_tune_classifier`). Scores follow
    `pipeline("text-classification")`: softmax probability of the top class, or the raw output of
    a regression model (problem_type "regression") with its only label.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir_or_name))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir_or_name))
    target = training.select_device(device or "auto")
    model.to(target).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    length = effective_max_length(tokenizer, model.config, max_length)
    regression = model.config.problem_type == "regression"

    results = []
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start:start + batch_size])
        if any(isinstance(item, (tuple, list)) for item in batch):
            first = [item[0] for item in batch]
            second = [item[1] for item in batch]
        else:
            first, second = batch, None
        encoded = tokenizer(first, second, truncation=True, max_length=length, padding=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(**encoded.to(target)).logits.float().cpu()
        if regression:
            for value in logits[:, 0].tolist():
                results.append({"label": model.config.id2label[0], "score": float(value)})
            continue
        probabilities = logits.softmax(dim=-1)
        scores, classes = probabilities.max(dim=-1)
        for score, class_id in zip(scores.tolist(), classes.tolist()):
            results.append({"label": model.config.id2label[class_id], "score": float(score)})
    return results


def resolve_model_dir(path: Path) -> Path:
    """Return the model folder of a run folder (RUN_DIR/model) or `path` itself when it contains config.json."""
    path = Path(path)
    for candidate in (path / MODEL_SUBDIR, path):
        if (candidate / "config.json").is_file() and (candidate / "model.safetensors").is_file():
            return candidate
    raise SystemExit(f"{path} 里没有微调好的模型（需要 {path / MODEL_SUBDIR}/config.json 和 model.safetensors）；"
                     f"请给一个微调完成的运行目录（里面有 model/），或一个模型文件夹")


# ---------------------------------------------------------------- 脚本


def build_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser(__doc__.splitlines()[0], epochs=3, batch_size=16, lr=5e-5, patience=2)
    add_finetune_options(parser)
    group = parser.add_argument_group("数据文件")
    group.add_argument("--train-file", type=Path, default=None, help="训练数据：CSV / TSV / JSONL 文件，第一行是表头")
    group.add_argument("--valid-file", type=Path, default=None, help="验证数据；不给时按 --valid-ratio 从训练数据分层划出")
    group.add_argument("--valid-ratio", type=float, default=0.1, help="没有 --valid-file 时划给验证集的比例（按 --seed 分层抽样）")
    group.add_argument("--test-file", type=Path, default=None, help="测试数据（可选），训练结束后用最佳模型评估一次")
    group.add_argument("--text-column", default="text", help="文本所在的列名")
    group.add_argument("--label-column", default="label", help="标签所在的列名")
    group.add_argument("--text-pair-column", default=None, help="第二段文本的列名（句对任务，如复述、蕴含）")
    group.add_argument("--labels", default=None, metavar="A,B,C",
                       help="用逗号分隔的标签集合，顺序即类别编号；不给时从训练文件收集（按字典序，全是整数时按数值大小）")
    group.add_argument("--task", choices=("classification", "regression"), default="classification",
                       help="分类（交叉熵，accuracy/F1）或回归（一个输出，MSE，RMSE/Pearson）")
    group = parser.add_argument_group("预测")
    group.add_argument("--predict", default=None, metavar="TEXT", help="对这段文本做一次预测并打印类别和分数")
    group.add_argument("--predict-pair", default=None, metavar="TEXT", help="句对模型的第二段文本（和 --predict 一起用）")
    group.add_argument("--checkpoint", type=Path, default=None, metavar="RUN_DIR",
                       help="和 --predict 一起用：从这个运行目录（或模型文件夹）加载模型，不再训练")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    cli.check_predict_options(parser, args)
    if args.predict_pair is not None and args.predict is None:
        parser.error("--predict-pair 只和 --predict 一起使用")
    if args.predict is not None and not args.predict.strip():
        parser.error("--predict 的文本是空的")
    if args.labels is not None and args.task == "regression":
        parser.error("--labels 只用于分类任务；回归任务的标签是数字")
    return args


def predict_one(model_dir: Path, text: str, pair: str | None) -> dict[str, Any]:
    """Predict one text with `predict_texts` and print the result."""
    prediction = predict_texts(model_dir, [(text, pair)] if pair is not None else [text])[0]
    print(f"文本：{text}" + (f"\n第二段：{pair}" if pair is not None else ""))
    print(f"预测：{prediction['label']}（分数 {prediction['score']:.4f}）")
    return {"text": text, **prediction}


def load_splits(args: argparse.Namespace) -> tuple[Any, Any, Any, list[str] | None]:
    """Read the files named by the options and return (train, validation, test or None, label names)."""
    train_file = args.train_file
    if train_file is None:
        if not args.smoke:
            raise SystemExit("需要 --train-file（CSV / TSV / JSONL）；只想先跑通流程请加 --smoke（使用自带样本）")
        train_file = SAMPLE_FILE
    columns = {"text_column": args.text_column, "label_column": args.label_column,
               "text_pair_column": args.text_pair_column}
    regression = args.task == "regression"
    explicit = [name.strip() for name in args.labels.split(",")] if args.labels else None

    train, label_names = encode_labels(load_table(train_file, **columns), args.label_column, explicit,
                                       regression=regression)
    logger.info("训练文件 %s：%d 条，标签 %s", train_file, len(train), label_names or "（回归）")
    train = limit_samples(train, args.max_train_samples, args.seed)
    if args.valid_file is not None:
        validation = encode_labels(load_table(args.valid_file, **columns), args.label_column, label_names,
                                   regression=regression)[0]
    else:
        train, validation = split_train_validation(train, args.valid_ratio, args.seed, stratify=not regression)
    test = None
    if args.test_file is not None:
        test = encode_labels(load_table(args.test_file, **columns), args.label_column, label_names,
                             regression=regression)[0]
    return train, validation, test, label_names


def save_sample_predictions(run_dir: Path, model_dir: Path, dataset, args: argparse.Namespace, count: int = 8) -> None:
    """Write a few validation texts with their predictions, which share_model checks after reloading."""
    rows = dataset.select(range(min(count, len(dataset))))
    if args.text_pair_column:
        inputs = list(zip(rows[args.text_column], rows[args.text_pair_column]))
    else:
        inputs = list(rows[args.text_column])
    predictions = predict_texts(model_dir, inputs)
    records = [{"text": item if isinstance(item, str) else list(item), **prediction}
               for item, prediction in zip(inputs, predictions)]
    runs.write_json(run_dir / SAMPLE_PREDICTIONS_FILE, {"examples": records})


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.predict is not None and args.checkpoint is not None:
        cli.setup_logging()
        return predict_one(resolve_model_dir(args.checkpoint), args.predict, args.predict_pair)

    cli.apply_smoke(args, epochs=2, max_train_samples=200)
    model_name = tiny.resolve_model(args.model, args.smoke)
    run_dir = cli.start_run(args, "finetune_custom_dataset")

    train, validation, test, label_names = load_splits(args)
    result = fine_tune_classifier(model_name, train, validation, label_names=label_names, args=args, run_dir=run_dir,
                                  text_column=args.text_column, text_pair_column=args.text_pair_column,
                                  max_length=args.max_length, test_dataset=test)
    save_sample_predictions(run_dir, result.model_dir, validation, args)

    if label_names is not None:
        evaluated = test if test is not None else validation
        logits = result.test_predictions if test is not None else result.eval_predictions
        matrix = metrics.confusion_matrix(logits, evaluated[LABELS_COLUMN], len(label_names))
        plots.plot_confusion_matrix(matrix, label_names, run_dir / "confusion_matrix.png",
                                    title="test" if test is not None else "validation")

    summary: dict[str, Any] = {f"eval_{key}": value for key, value in result.eval_metrics.items()}
    if result.test_metrics is not None:
        summary.update({f"test_{key}": value for key, value in result.test_metrics.items()})
    summary.update({
        "train_samples": len(train),
        "eval_samples": len(validation),
        "test_samples": len(test) if test is not None else 0,
        "num_labels": len(label_names) if label_names is not None else 1,
        "label_names": label_names,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "train_seconds": result.seconds,
    })
    if args.predict is not None:
        prediction = predict_one(result.model_dir, args.predict, args.predict_pair)
        summary.update({"predict_label": prediction["label"], "predict_score": prediction["score"]})
    runs.save_metrics(run_dir, summary)
    rows = [{"指标": key, "值": value} for key, value in runs.scalar_metrics(summary).items()]
    print(runs.markdown_table(rows))
    print(f"模型（含分词器和类别名）：{result.model_dir}\n结果目录：{run_dir}")
    return summary


if __name__ == "__main__":
    cli.run_script(main)
