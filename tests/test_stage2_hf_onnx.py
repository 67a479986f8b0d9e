"""export_onnx: both export routes against the PyTorch model they came from, at shapes the export never saw.

The tiny classifier (roadmap.tiny BERT with a random 2-label head) is exported once per module by
optimum, by torch.onnx.export with the dynamo exporter and with the legacy TorchScript exporter.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from stage2_huggingface import export_onnx

SHAPES = [(1, 7), (3, 19), (5, 64)]


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    return export_onnx.build_tiny_classifier(tmp_path_factory.mktemp("onnx") / "classifier", seed=0)


@pytest.fixture(scope="module")
def classifier(classifier_dir):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(str(classifier_dir)).eval()


@pytest.fixture(scope="module")
def exported(classifier_dir, tmp_path_factory):
    """{"optimum": model.onnx of the optimum folder, "dynamo": ..., "legacy": ...}."""
    folder = tmp_path_factory.mktemp("exports")
    optimum_dir = export_onnx.export_with_optimum(classifier_dir, folder / "optimum")
    return {
        "optimum": optimum_dir / export_onnx.ONNX_FILE,
        "dynamo": export_onnx.export_with_torch(classifier_dir, folder / "dynamo" / "model.onnx", exporter="dynamo"),
        "legacy": export_onnx.export_with_torch(classifier_dir, folder / "legacy" / "model.onnx", exporter="legacy"),
    }


ROUTES = ["optimum", "dynamo", "legacy"]


def test_validation_shapes_differ_from_the_export_example():
    for shape in export_onnx.VALIDATION_SHAPES:
        assert shape != export_onnx.EXPORT_EXAMPLE_SHAPE
    assert set(SHAPES) == set(export_onnx.VALIDATION_SHAPES)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: f"{shape[0]}x{shape[1]}")
def test_onnxruntime_logits_match_pytorch_at_unseen_shapes(exported, classifier, route, shape):
    differences = export_onnx.max_abs_difference(classifier, exported[route], [shape])
    assert differences[f"{shape[0]}x{shape[1]}"] <= 1e-4


@pytest.mark.parametrize("route", ROUTES)
def test_onnxruntime_output_has_the_batch_shape(exported, classifier, route):
    session = export_onnx.onnx_session(exported[route])
    batch = export_onnx.random_batch(3, 19, vocab_size=classifier.config.vocab_size, pad_token_id=0,
                                     input_names=[node.name for node in session.get_inputs()])
    assert export_onnx.onnx_logits(session, batch).shape == (3, 2)


def test_check_detects_a_different_model(exported, classifier_dir):
    """The 1e-4 check is not vacuous: another random head gives logits far outside it."""
    other = export_onnx.build_tiny_classifier(classifier_dir.parent / "other", seed=1)
    from transformers import AutoModelForSequenceClassification

    other_model = AutoModelForSequenceClassification.from_pretrained(str(other)).eval()
    differences = export_onnx.max_abs_difference(other_model, exported["optimum"], [(3, 19)])
    assert differences["3x19"] > 1e-3


@pytest.mark.parametrize("route", ROUTES)
def test_graph_inputs_have_dynamic_batch_and_sequence_axes(exported, route):
    shapes = export_onnx.graph_input_shapes(exported[route])
    assert set(shapes) == {"input_ids", "attention_mask", "token_type_ids"}
    for name, dims in shapes.items():
        assert len(dims) == 2, name
        assert isinstance(dims[0], str) and dims[0], f"{name}: batch axis is fixed to {dims[0]}"
        assert isinstance(dims[1], str) and dims[1], f"{name}: sequence axis is fixed to {dims[1]}"


@pytest.mark.parametrize("route", ["dynamo", "legacy"])
def test_torch_export_names_inputs_and_logits(exported, route):
    import onnx

    graph = onnx.load(str(exported[route])).graph
    assert [node.name for node in graph.input] == ["input_ids", "token_type_ids", "attention_mask"]
    assert [node.name for node in graph.output] == ["logits"]


@pytest.mark.parametrize("route", ROUTES)
def test_exported_graph_has_no_dropout(exported, route):
    assert "Dropout" not in export_onnx.operator_types(exported[route])


def test_train_mode_export_keeps_random_dropout(classifier_dir, tmp_path):
    """Without model.eval() the dynamo graph keeps Dropout(training_mode=True): outputs vary once graph optimization is off."""
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForSequenceClassification

    names = ["input_ids", "token_type_ids", "attention_mask"]
    model = AutoModelForSequenceClassification.from_pretrained(str(classifier_dir)).train()
    batch = export_onnx.random_batch(2, 16, vocab_size=model.config.vocab_size, pad_token_id=0, input_names=names)
    path = tmp_path / "train_mode.onnx"
    with pytest.warns(UserWarning, match="training mode"):
        torch.onnx.export(export_onnx._logits_module(model, names).train(), tuple(torch.from_numpy(batch[name]) for name in names),
                          str(path), input_names=names, output_names=["logits"], opset_version=export_onnx.OPSET,
                          dynamo=True, external_data=False, verbose=False)
    assert "Dropout" in export_onnx.operator_types(path)

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    first, second = export_onnx.onnx_logits(session, batch), export_onnx.onnx_logits(session, batch)
    assert np.abs(first - second).max() > 1e-4


def test_dynamo_export_keeps_weights_in_one_file(exported):
    assert list(exported["dynamo"].parent.iterdir()) == [exported["dynamo"]]


def test_optimum_folder_has_model_config_and_tokenizer(exported):
    folder = exported["optimum"].parent
    for name in ("model.onnx", "config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        assert (folder / name).is_file(), name
    assert json.loads((folder / "config.json").read_text(encoding="utf-8"))["id2label"] == {"0": "neg", "1": "pos"}


def test_optimum_folder_reloads_same_logits(exported, classifier, classifier_dir):
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer

    folder = exported["optimum"].parent
    ort_model = ORTModelForSequenceClassification.from_pretrained(str(folder))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    texts = ["A wonderful, moving film.", "Two hours of my life I will never get back, and the plot was thin."]
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    expected = export_onnx.torch_logits(classifier, {name: value.numpy() for name, value in encoded.items()})
    np.testing.assert_allclose(ort_model(**encoded).logits.detach().numpy(), expected, atol=1e-4, rtol=0)
    assert export_onnx.ort_model_difference(classifier, tokenizer, folder) <= 1e-4


def test_random_batch_pads_each_row_after_its_length():
    batch = export_onnx.random_batch(6, 10, vocab_size=500, pad_token_id=0,
                                     input_names=["input_ids", "token_type_ids", "attention_mask"], seed=3)
    mask = batch["attention_mask"]
    assert mask[0].all()
    for row in mask:
        length = int(row.sum())
        assert row[:length].all()
        assert not row[length:].any()
    assert (batch["input_ids"][mask == 0] == 0).all()
    assert (batch["input_ids"][mask == 1] >= 100).all()
    assert not batch["token_type_ids"].any()
    assert all(value.dtype == np.int64 for value in batch.values())


def test_model_input_names_follow_the_tokenizer(classifier_dir):
    from transformers import AutoTokenizer

    names = export_onnx.model_input_names(AutoTokenizer.from_pretrained(str(classifier_dir)))
    assert names == ["input_ids", "token_type_ids", "attention_mask"]


def test_export_with_torch_rejects_an_unknown_exporter(classifier_dir, tmp_path):
    with pytest.raises(ValueError, match="exporter"):
        export_onnx.export_with_torch(classifier_dir, tmp_path / "model.onnx", exporter="jit")


def test_main_without_model_or_smoke_names_the_option(tmp_path):
    with pytest.raises(SystemExit, match="--model"):
        export_onnx.main(["--output-dir", str(tmp_path)])


def test_main_smoke_writes_both_exports_and_metrics(tmp_path):
    returned = export_onnx.main(["--smoke", "--exporter", "legacy", "--output-dir", str(tmp_path)])

    assert returned["within_tolerance"] is True
    assert returned["max_abs_difference"] <= 1e-4
    assert returned["ort_model_reload_max_abs_difference"] <= 1e-4
    assert set(returned["optimum_max_abs_difference"]) == {"1x7", "3x19", "5x64"}
    assert returned["torch_graph_inputs"]["input_ids"] == ["batch", "sequence"]
    assert (tmp_path / "onnx_optimum" / "model.onnx").is_file()
    assert (tmp_path / "onnx_torch" / "model.onnx").is_file()
    assert (tmp_path / "onnx_max_abs_difference.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))["exporter"] == "legacy"
