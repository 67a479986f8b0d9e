"""把微调好的模型整理好并分享到 Hugging Face Hub（路线图：Hugging Face → 在 Hugging Face Hub 上分享模型）

学什么
- 上传前要准备什么：`save_pretrained` 写出的模型（safetensors）和分词器，加上模型卡 README.md。
  模型卡开头是 YAML 元数据（language、license、tags、datasets、metrics、model-index 里的评估结果），
  Hub 用它做搜索和结果展示；正文写任务、数据、指标、预期用途、局限，以及用 `pipeline` 调用的示例。
- 指标从运行目录的 metrics.json 取，不手抄：卡片里的数字和训练脚本算出的数字必须一致（检查会核对）。
- 上传前先在本地验证（--dry-run，没有 token 时默认如此，不连网络）：
  1. 用 `from_pretrained` 从整理好的文件夹重新加载模型和分词器；
  2. 权重与源模型逐个张量完全相同；
  3. 在几条示例上重新预测，类别相同、分数差不超过 --tolerance（默认 1e-5）；
  4. 模型卡里的指标与 metrics.json 一致。
  都通过了才上传：有 token（环境变量 HF_TOKEN 或 `hf auth login` 保存的登录）且给了 --repo-id 时，
  用 `HfApi.create_repo` + `upload_folder` 一次提交整个文件夹。
- 不上传 training_args.bin：它是 pickle 文件，加载时可以执行任意代码，Hub 会把它标成风险文件，
  训练设置已经写进模型卡。
- 模型卡用英文写：这是 Hub 上的惯例，方便所有用户读；需要中文版可以直接改 README.md 再上传。

数据：一个 finetune_custom_dataset 的运行目录（用它的 model/、metrics.json、config.json 和
sample_predictions.json），或任何 `save_pretrained` 写出的模型文件夹（这时没有指标，示例预测由源文件夹现算）。

怎么跑
    roadmap run share_model --smoke                                   # 先训练一个极小模型，再整理并验证，几秒
    roadmap run share_model --source runs/finetune_custom_dataset/<时间戳> --dataset my-reviews --language en
    HF_TOKEN=hf_xxx roadmap run share_model --source runs/finetune_custom_dataset/<时间戳> --repo-id 用户名/模型名

真实数据上的结果：整理好的文件夹在 <运行目录>/hub_model/，metrics.json 记录各项检查的结果
（examples_checked、max_score_difference、card_metrics_checked、pushed）。这个脚本不训练（--smoke 除外），
所以没有准确率一类的指标。对 finetune_custom_dataset 在 Tweet Sentiment Extraction 上微调的 all-MiniLM-L6-v2
（1,800 条训练，测试 accuracy 75.7%）运行 --dry-run：权重逐个张量相同，8 条示例的类别全部相同、分数差 0.0，
模型卡的 6 个指标（验证集和测试集的 accuracy、F1、loss）与 metrics.json 一致；2 核 CPU（机器繁忙）上用时 22 秒。
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roadmap import cli, data, plots, runs
from stage2_huggingface import finetune_custom_dataset as finetune

logger = logging.getLogger(__name__)

HUB_SUBDIR = "hub_model"
CARD_FILE = "README.md"
# 普通模型文件夹没有 sample_predictions.json 时，用这几句检查重新加载后的预测。
DEFAULT_EXAMPLES = (
    "The battery lasts all day and the screen is sharp.",
    "It broke after two days and support never replied.",
    "The package arrived on Tuesday.",
    "这家酒店的早餐很丰富，服务也周到。",
)
# 写进模型卡的指标：metrics.json 里 <split>_<name> 形式的键。
CARD_METRICS = ("accuracy", "f1", "rmse", "pearson", "loss")
SPLITS = {"eval": "validation", "test": "test"}
METRIC_DESCRIPTIONS = {"accuracy": "Accuracy", "f1": "F1 (macro)", "rmse": "RMSE", "pearson": "Pearson r",
                       "loss": "Loss"}


# ---------------------------------------------------------------- 源模型


@dataclass
class Source:
    """Export input: the model folder, and the fine-tuning run around it when there is one."""

    model_dir: Path
    run_dir: Path | None
    metrics: dict[str, Any] | None  # 运行目录的 metrics.json
    config: dict[str, Any] | None  # 运行目录的 config.json（训练时的选项）
    examples: list[dict[str, Any]] | None  # sample_predictions.json：text / label / score


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise data.DataFormatError(f"{path} 不是可读的 JSON：{error}") from error
    if not isinstance(content, dict):
        raise data.DataFormatError(f"{path} 的内容不是 JSON 对象")
    return content


def find_source(path: str | Path) -> Source:
    """Read a fine-tuning run folder (with model/) or a bare model folder written by `save_pretrained`."""
    path = Path(path)
    if not path.is_dir():
        raise SystemExit(f"--source 不是文件夹：{path}")
    if (path / finetune.MODEL_SUBDIR / "config.json").is_file():
        run_dir: Path | None = path
        model_dir = path / finetune.MODEL_SUBDIR
    elif (path / "config.json").is_file():
        run_dir, model_dir = None, path
    else:
        raise SystemExit(f"{path} 里既没有 model/config.json（finetune_custom_dataset 的运行目录），"
                         f"也没有 config.json（save_pretrained 写出的模型文件夹）")
    if run_dir is None:
        return Source(model_dir, None, None, None, None)
    saved = _read_json(run_dir / finetune.SAMPLE_PREDICTIONS_FILE)
    return Source(model_dir=model_dir, run_dir=run_dir, metrics=_read_json(run_dir / runs.METRICS_FILE),
                  config=_read_json(run_dir / runs.CONFIG_FILE), examples=saved["examples"] if saved else None)


def load_model(model_dir: Path):
    """Load the model with the class named in config.json (architectures), and its tokenizer, from local files."""
    import transformers
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    architecture = (config.architectures or [None])[0]
    model_class = getattr(transformers, architecture, None) if architecture else None
    model = (model_class or AutoModel).from_pretrained(model_dir, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    return model.eval(), tokenizer


def export_model(source: Source, hub_dir: Path) -> None:
    """Write the model (safetensors) and tokenizer into `hub_dir` with `save_pretrained`, plus the training curves."""
    if hub_dir.exists():
        shutil.rmtree(hub_dir)  # 旧文件（比如上次的 pickle）不能混进这次的上传
    model, tokenizer = load_model(source.model_dir)
    model.save_pretrained(hub_dir, safe_serialization=True)
    tokenizer.save_pretrained(hub_dir)
    if source.run_dir is not None and (source.run_dir / "history.png").is_file():
        shutil.copy2(source.run_dir / "history.png", hub_dir / "history.png")


# ---------------------------------------------------------------- 模型卡


def card_metric_values(metrics: dict[str, Any] | None) -> dict[str, float]:
    """Pick the `<split>_<metric>` numbers of metrics.json that the card reports, e.g. {"test_accuracy": 0.81}."""
    chosen = {}
    for prefix in SPLITS:
        for name in CARD_METRICS:
            value = (metrics or {}).get(f"{prefix}_{name}")
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                chosen[f"{prefix}_{name}"] = float(value)
    return chosen


@dataclass
class CardOptions:
    """Metadata the user chooses for the card (the rest comes from the run)."""

    repo_id: str | None
    language: str
    license: str
    dataset: str | None
    tags: list[str]
    base_model: str | None = None  # 训练用的是本地文件夹时，由用户给出它在 Hub 上的名字


def _dataset_name(source: Source, options: CardOptions) -> str:
    if options.dataset:
        return options.dataset
    train_file = (source.config or {}).get("train_file")
    if train_file:
        return Path(train_file).stem
    if (source.config or {}).get("smoke"):
        return Path(finetune.SAMPLE_FILE).stem
    return "unknown"


def _base_model(source: Source, options: CardOptions) -> str | None:
    """Return the hub name of the pretrained model: --base-model, else the run's --model unless a local folder or --smoke."""
    if options.base_model:
        return options.base_model
    config = source.config or {}
    name = config.get("model")
    if not name or config.get("smoke") or Path(name).exists() or name.startswith(("/", ".")):
        return None
    return name


def build_model_card(source: Source, options: CardOptions, label_names: list[str] | None):
    """Build the ModelCard: YAML metadata (with model-index results from metrics.json) and the English body."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    dataset = _dataset_name(source, options)
    values = card_metric_values(source.metrics)
    eval_results = []
    for key, value in values.items():
        prefix, name = key.split("_", 1)
        eval_results.append(EvalResult(task_type="text-classification", task_name="Text Classification",
                                       dataset_type=dataset, dataset_name=dataset, dataset_split=SPLITS[prefix],
                                       metric_type=name, metric_name=METRIC_DESCRIPTIONS[name], metric_value=value))
    model_name = (options.repo_id or "fine-tuned-classifier").split("/")[-1]
    card_data = ModelCardData(
        model_name=model_name,
        language=options.language,
        license=options.license,
        library_name="transformers",
        pipeline_tag="text-classification",
        tags=options.tags,
        datasets=[dataset],
        metrics=sorted({key.split("_", 1)[1] for key in values}),
        base_model=_base_model(source, options),
        eval_results=eval_results or None,
    )
    body = _card_body(source, options, label_names, values, dataset, model_name)
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}")


def _card_body(source: Source, options: CardOptions, label_names: list[str] | None, values: dict[str, float],
               dataset: str, model_name: str) -> str:
    config = source.config or {}
    metrics = source.metrics or {}
    if config.get("smoke"):
        base = f"a tiny randomly initialised stand-in for {config.get('model')}"
    elif _base_model(source, options):
        base = f"`{_base_model(source, options)}`"
    else:
        base = f"the local model folder `{Path(config['model']).name}`" if config.get("model") else "a local model"
    task = (f"single-label text classification into {len(label_names)} classes: {', '.join(label_names)}"
            if label_names else "text regression (one output per text)")
    pair = config.get("text_pair_column")
    origin = (f"Fine-tuned from {base} with the Hugging Face `Trainer` (nlp-roadmap exercise "
              f"`finetune_custom_dataset`)." if config else
              "Prepared for the Hub by the nlp-roadmap exercise `share_model`; the training run is not recorded.")
    lines = [f"# {model_name}", "", origin, "",
             "## Task", "", f"This model does {task}."
             + (f" Each input is a pair of texts (`{config.get('text_column')}`, `{pair}`)." if pair else ""), "",
             "## Training data", ""]
    if config:
        lines += [f"- Dataset: `{dataset}` (text column `{config.get('text_column')}`, label column "
                  f"`{config.get('label_column')}`)",
                  f"- Examples: {metrics.get('train_samples', '?')} train, {metrics.get('eval_samples', '?')} validation, "
                  f"{metrics.get('test_samples', 0)} test",
                  f"- Training: {config.get('epochs')} epochs at most, batch size {config.get('batch_size')}, "
                  f"learning rate {config.get('lr')}, max length {config.get('max_length')} tokens, "
                  f"early stopping patience {config.get('patience')}, seed {config.get('seed')}; "
                  f"best epoch {metrics.get('best_epoch')}"]
        if config.get("smoke"):
            lines.append("- This is a smoke-test model: a tiny randomly initialised network trained for seconds "
                         "on a few dozen bundled examples. Its predictions carry no meaning.")
    else:
        lines.append(f"- Dataset: `{dataset}`. The training run was not available, so its details are not recorded.")
    lines += ["", "## Evaluation results", ""]
    if values:
        lines += ["| split | metric | value |", "|---|---|---|"]
        for key, value in values.items():
            prefix, name = key.split("_", 1)
            lines.append(f"| {SPLITS[prefix]} | {METRIC_DESCRIPTIONS[name]} | {value:.4f} |")
        lines += ["", "The values come from the run's `metrics.json`, computed on the best epoch's model."]
    else:
        lines.append("No metrics.json came with this model, so no results are reported.")
    where = options.repo_id or "path/to/this/folder"
    call = ('{"text": "first text", "text_pair": "second text"}' if pair else '"Replace this with your text."')
    lines += ["", "## Intended use", "",
              f"Classifying texts like those in `{dataset}`"
              + (f", in language `{options.language}`" if options.language else "") + ". "
              "Check the results above on data of your own domain before relying on it.",
              "", "## Limitations", "",
              f"- Inputs longer than {config.get('max_length', 'the tokenizer maximum')} tokens are truncated; "
              "only the beginning of a long text is read.",
              "- The model learns the labels and biases of its training data, and it was evaluated only on the "
              "splits above.",
              "", "## How to use", "", "```python", "from transformers import pipeline", "",
              f'classifier = pipeline("text-classification", model="{where}")',
              f"print(classifier({call}, truncation=True))", "```", ""]
    if source.run_dir is not None and (source.run_dir / "history.png").is_file():
        lines += ["## Training curves", "", "![loss and metrics per epoch](history.png)", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- 验证


def _example_inputs(examples: list[dict[str, Any]]) -> list[str | tuple[str, str]]:
    return [tuple(item["text"]) if isinstance(item["text"], list) else item["text"] for item in examples]


def reference_examples(source: Source) -> list[dict[str, Any]]:
    """Return the predictions to reproduce: the run's sample_predictions.json, else the source folder's own."""
    if source.examples:
        return source.examples
    predictions = finetune.predict_texts(source.model_dir, list(DEFAULT_EXAMPLES))
    return [{"text": text, **prediction} for text, prediction in zip(DEFAULT_EXAMPLES, predictions)]


def validate_folder(hub_dir: Path, source: Source, *, tolerance: float = 1e-5) -> dict[str, Any]:
    """Check the prepared folder offline; return the check results or raise DataFormatError listing the failures.

    Reloads it with from_pretrained, compares every weight with the source model, reproduces the
    reference predictions (same label, score within `tolerance`) for a sequence classifier, and
    checks that the card's metrics equal metrics.json.
    """
    import torch
    from huggingface_hub import ModelCard

    problems = []
    required = ("config.json", "model.safetensors", "tokenizer_config.json", CARD_FILE)
    missing = [name for name in required if not (hub_dir / name).is_file()]
    if missing:
        raise data.DataFormatError(f"{hub_dir} 缺少文件：{', '.join(missing)}")
    if (hub_dir / "training_args.bin").exists():
        problems.append("文件夹里有 training_args.bin（pickle），不应上传")

    reloaded, _ = load_model(hub_dir)
    original, _ = load_model(source.model_dir)
    original_state = original.state_dict()
    reloaded_state = reloaded.state_dict()
    differing = [name for name, tensor in original_state.items()
                 if name not in reloaded_state or not torch.equal(tensor, reloaded_state[name])]
    if differing or set(reloaded_state) != set(original_state):
        problems.append(f"重新加载后有 {len(differing)} 个权重与源模型不同，例如 {differing[:3]}")

    report: dict[str, Any] = {"weights_identical": not differing, "examples_checked": 0}
    if reloaded.config.architectures and reloaded.config.architectures[0].endswith("ForSequenceClassification"):
        expected = reference_examples(source)
        actual = finetune.predict_texts(hub_dir, _example_inputs(expected), device="cpu")
        differences = [abs(mine["score"] - saved["score"]) for mine, saved in zip(actual, expected)]
        wrong_labels = [saved["label"] for mine, saved in zip(actual, expected) if mine["label"] != saved["label"]]
        report.update({"examples_checked": len(expected), "max_score_difference": max(differences),
                       "labels_match": not wrong_labels,
                       "saved_scores": [item["score"] for item in expected],
                       "reloaded_scores": [item["score"] for item in actual]})
        if wrong_labels:
            problems.append(f"{len(wrong_labels)} 条示例重新预测的类别不同")
        if max(differences) > tolerance:
            problems.append(f"示例分数最多相差 {max(differences):.2e}，超过容差 {tolerance:g}")
        id2label = reloaded.config.id2label
        if all(name == f"LABEL_{index}" for index, name in id2label.items()) and len(id2label) > 1:
            logger.warning("config.json 的 id2label 还是默认的 LABEL_0、LABEL_1……，pipeline 输出会没有类别名")

    card = ModelCard.load(hub_dir / CARD_FILE)
    in_card = {f"{'test' if result.dataset_split == 'test' else 'eval'}_{result.metric_type}": result.metric_value
               for result in (card.data.eval_results or [])}
    expected_metrics = card_metric_values(source.metrics)
    mismatched = [key for key in set(in_card) | set(expected_metrics)
                  if key not in in_card or key not in expected_metrics or in_card[key] != expected_metrics[key]]
    if mismatched:
        problems.append(f"模型卡里的指标与 metrics.json 不一致：{', '.join(sorted(mismatched))}")
    report["card_metrics_checked"] = len(expected_metrics)

    if problems:
        raise data.DataFormatError(f"{hub_dir} 没有通过上传前检查：\n  " + "\n  ".join(problems))
    return report


# ---------------------------------------------------------------- 上传


def hub_token() -> str | None:
    """Return the Hub token (HF_TOKEN or a saved login), or None when there is none or HF_HUB_OFFLINE=1."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return None
    from huggingface_hub import get_token

    return get_token()


def push_to_hub(hub_dir: Path, repo_id: str, *, token: str, private: bool = False) -> str:
    """Create the model repo when it does not exist and upload the whole folder in one commit; return its URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    repo = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    api.upload_folder(folder_path=str(hub_dir), repo_id=repo_id, repo_type="model",
                      commit_message="Upload fine-tuned text classifier")
    logger.info("已上传到 %s", repo)
    return str(repo)


# ---------------------------------------------------------------- 脚本


def build_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser(__doc__.splitlines()[0], epochs=2, batch_size=16, lr=1e-3, shared_loop=False)
    group = parser.add_argument_group("分享选项")
    group.add_argument("--source", type=Path, default=None, metavar="RUN_DIR",
                       help="finetune_custom_dataset 的运行目录，或 save_pretrained 写出的模型文件夹"
                            "（--smoke 且不给时先训练一个极小模型，--epochs/--batch-size/--lr 用于这次训练）")
    group.add_argument("--repo-id", default=None, metavar="USER/NAME", help="Hub 上的模型仓库名；上传时必须给")
    group.add_argument("--language", default="en", help="模型卡元数据 language（ISO 639-1，如 en、zh）")
    group.add_argument("--license", default="apache-2.0", help="模型卡元数据 license（Hub 的许可证标识）")
    group.add_argument("--dataset", default=None,
                       help="模型卡元数据 datasets 的名字（最好是 Hub 上的数据集 id）；默认用训练文件名")
    group.add_argument("--base-model", default=None, metavar="HUB_ID",
                       help="模型卡元数据 base_model：预训练模型在 Hub 上的名字（训练时用的是本地文件夹时请给出）")
    group.add_argument("--tags", default="text-classification,nlp-roadmap", help="模型卡元数据 tags，逗号分隔")
    group.add_argument("--tolerance", type=cli.positive_float, default=1e-5,
                       help="重新加载后示例预测分数允许的最大差值")
    group.add_argument("--dry-run", action="store_true",
                       help="只在本地整理和验证，不上传（没有 token、HF_HUB_OFFLINE=1 或 --smoke 时总是如此）")
    group.add_argument("--private", action="store_true", help="上传时把仓库设为私有")
    return parser


def train_smoke_model(args: argparse.Namespace, run_dir: Path) -> Path:
    """Fine-tune a tiny model on the bundled sample with finetune_custom_dataset and return its run folder."""
    finetune_dir = run_dir / "finetune"
    finetune.main(["--smoke", "--output-dir", str(finetune_dir), "--seed", str(args.seed), "--epochs", str(args.epochs),
                   "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--device", args.device])
    return finetune_dir


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.source is None and not args.smoke:
        raise SystemExit("需要 --source（finetune_custom_dataset 的运行目录或模型文件夹）；只想先跑通流程请加 --smoke")
    cli.apply_smoke(args, epochs=2)
    run_dir = cli.start_run(args, "share_model")
    source = find_source(args.source if args.source is not None else train_smoke_model(args, run_dir))

    hub_dir = run_dir / HUB_SUBDIR
    export_model(source, hub_dir)
    label_names = (source.metrics or {}).get("label_names")
    if label_names is None:
        model_config = json.loads((hub_dir / "config.json").read_text(encoding="utf-8"))
        if model_config.get("problem_type") != "regression" and model_config.get("id2label"):
            label_names = [model_config["id2label"][key] for key in sorted(model_config["id2label"], key=int)]
    options = CardOptions(repo_id=args.repo_id, language=args.language, license=args.license, dataset=args.dataset,
                          tags=[tag.strip() for tag in args.tags.split(",") if tag.strip()], base_model=args.base_model)
    build_model_card(source, options, label_names).save(hub_dir / CARD_FILE)
    logger.info("模型、分词器和模型卡已写入 %s", hub_dir)

    report = validate_folder(hub_dir, source, tolerance=args.tolerance)
    if "saved_scores" in report:
        # 点都落在对角线上，说明上传的文件夹与训练时的模型给出同样的分数。
        plots.plot_predictions(report.pop("reloaded_scores"), report.pop("saved_scores"),
                               run_dir / "reloaded_vs_saved.png", title="reloaded vs saved scores")
    logger.info("上传前检查通过：%s", report)

    token = None if (args.dry_run or args.smoke) else hub_token()
    pushed = False
    if token is None:
        reason = ("用了 --dry-run" if args.dry_run else "--smoke 的模型不上传" if args.smoke
                  else "没有 Hub token（设置 HF_TOKEN 或运行 hf auth login），或设置了 HF_HUB_OFFLINE=1")
        print(f"只做了本地检查（dry run），没有上传：{reason}。")
    elif args.repo_id is None:
        raise SystemExit("检测到 Hub token，但没有给 --repo-id（形如 用户名/模型名）；不想上传请加 --dry-run")
    else:
        print(f"已上传：{push_to_hub(hub_dir, args.repo_id, token=token, private=args.private)}")
        pushed = True

    summary = {**report, "dry_run": not pushed, "pushed": pushed,
               "card_metrics": card_metric_values(source.metrics)}
    runs.save_metrics(run_dir, summary)
    print(runs.markdown_table([{"检查": key, "结果": value} for key, value in runs.scalar_metrics(summary).items()]))
    print(f"可上传的文件夹：{hub_dir}\n结果目录：{run_dir}")
    return summary


if __name__ == "__main__":
    cli.run_script(main)
