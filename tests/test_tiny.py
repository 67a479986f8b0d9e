"""roadmap.tiny: tiny models load like hub names, tokenizers, truncation, pipelines, determinism, caching;
and the Hugging Face samples under data/samples/ parse in their official formats."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    BertForMaskedLM,
    BertTokenizerFast,
    GPT2LMHeadModel,
    GPT2TokenizerFast,
    RobertaForMaskedLM,
    RobertaTokenizerFast,
    pipeline,
)

from roadmap import tiny
from roadmap.data import SAMPLES_DIR

REPO_ROOT = Path(__file__).resolve().parents[1]
EXPECTED = {
    # kind: (model_type, LM class, tokenizer class, LM auto class)
    "bert": ("bert", BertForMaskedLM, BertTokenizerFast, AutoModelForMaskedLM),
    "bert-chinese": ("bert", BertForMaskedLM, BertTokenizerFast, AutoModelForMaskedLM),
    "gpt2": ("gpt2", GPT2LMHeadModel, GPT2TokenizerFast, AutoModelForCausalLM),
    "gpt2-chinese": ("gpt2", GPT2LMHeadModel, BertTokenizerFast, AutoModelForCausalLM),
    "roberta": ("roberta", RobertaForMaskedLM, RobertaTokenizerFast, AutoModelForMaskedLM),
}
LONG_TEXT = " ".join(f"word{i % 7} 字" for i in range(150))  # 300 个空格分隔的词


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    for kind in tiny.TINY_KINDS:
        tiny.tiny_model_dir(kind, root)
    return root


def folder_of(kind: str, root: Path) -> Path:
    return tiny.tiny_model_dir(kind, root)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- loading


@pytest.mark.parametrize("kind", tiny.TINY_KINDS)
def test_kind_loads_with_auto_classes(kind, tiny_root):
    model_type, lm_class, tokenizer_class, auto_lm = EXPECTED[kind]
    path = folder_of(kind, tiny_root)
    tokenizer = AutoTokenizer.from_pretrained(path)
    config = AutoConfig.from_pretrained(path)
    model = auto_lm.from_pretrained(path).eval()

    assert type(tokenizer) is tokenizer_class
    assert config.model_type == model_type
    assert type(model) is lm_class
    assert config.vocab_size == len(tokenizer)
    assert 300 <= len(tokenizer) <= 1200
    assert tokenizer.model_max_length == 128
    assert tokenizer.pad_token is not None

    encoded = tokenizer("I like tea. 我喜欢茶。", return_tensors="pt")
    with torch.no_grad():
        logits = model(**encoded).logits
    assert logits.shape == (1, encoded["input_ids"].shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("kind", tiny.TINY_KINDS)
def test_config_has_tiny_sizes(kind, tiny_root):
    config = AutoConfig.from_pretrained(folder_of(kind, tiny_root))
    assert config.hidden_size == 32
    assert config.num_hidden_layers == 2
    assert config.num_attention_heads == 2
    if config.model_type == "gpt2":
        assert config.n_inner == 64
        assert config.n_positions == 128
    else:
        assert config.intermediate_size == 64
        # RoBERTa numbers positions from padding_idx + 1 = 2, so 128 tokens need 130 positions.
        assert config.max_position_embeddings == (130 if kind == "roberta" else 128)


@pytest.mark.parametrize("kind", tiny.TINY_KINDS)
def test_task_heads_reuse_saved_encoder(kind, tiny_root):
    """The classification models must load the saved encoder weights, not fresh random ones."""
    path = folder_of(kind, tiny_root)
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoded = tokenizer(["a good film", "房间很干净，服务也好"], padding=True, return_tensors="pt")
    base = AutoModel.from_pretrained(path).eval()
    sequence_model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=3).eval()
    token_model = AutoModelForTokenClassification.from_pretrained(path, num_labels=9).eval()
    with torch.no_grad():
        reference = base(**encoded).last_hidden_state
        sequence_hidden = sequence_model.base_model(**encoded).last_hidden_state
        token_hidden = token_model.base_model(**encoded).last_hidden_state
        sequence_logits = sequence_model(**encoded).logits
        token_logits = token_model(**encoded).logits
    torch.testing.assert_close(sequence_hidden, reference)
    torch.testing.assert_close(token_hidden, reference)
    assert sequence_logits.shape == (2, 3)
    assert token_logits.shape == (2, encoded["input_ids"].shape[1], 9)


@pytest.mark.parametrize("kind", ["gpt2", "gpt2-chinese"])
def test_gpt2_padding_matches_unpadded(kind, tiny_root):
    """With the pad token set, a padded batch classifies each sentence as it would alone."""
    path = folder_of(kind, tiny_root)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    sentences = ["a good film", "the best comedy of the year , and great fun"]
    assert model.config.pad_token_id == tokenizer.pad_token_id
    if kind == "gpt2":
        assert tokenizer.pad_token == tokenizer.eos_token
    with torch.no_grad():
        batch = model(**tokenizer(sentences, padding=True, return_tensors="pt")).logits
        single = torch.cat([model(**tokenizer([sentence], return_tensors="pt")).logits for sentence in sentences])
    torch.testing.assert_close(batch, single, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- tokenizers


@pytest.mark.parametrize("kind", ["bert-chinese", "gpt2-chinese"])
def test_chinese_tokenizer_splits_characters(kind, tiny_root):
    tokenizer = AutoTokenizer.from_pretrained(folder_of(kind, tiny_root))
    text = "我喜欢猫。这是我的书。"
    ids = tokenizer(text)["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens[0] == "[CLS]"
    assert tokens[-1] == "[SEP]"
    assert tokens[1:-1] == list(text)
    assert tokenizer.decode(ids, skip_special_tokens=True) == " ".join(text)


@pytest.mark.parametrize("kind", ["bert", "bert-chinese", "gpt2-chinese"])
def test_wordpiece_round_trip_lowercases(kind, tiny_root):
    tokenizer = AutoTokenizer.from_pretrained(folder_of(kind, tiny_root))
    ids = tokenizer("Hello WORLD, the best comedy!")["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "hello world, the best comedy!"


@pytest.mark.parametrize("kind", ["gpt2", "roberta"])
def test_byte_level_round_trip_is_lossless(kind, tiny_root):
    tokenizer = AutoTokenizer.from_pretrained(folder_of(kind, tiny_root))
    text = "Hello WORLD, the best comedy! 我喜欢猫。"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_roberta_special_token_ids(tiny_root):
    tokenizer = AutoTokenizer.from_pretrained(folder_of("roberta", tiny_root))
    assert tokenizer.bos_token_id == 0
    assert tokenizer.pad_token_id == 1
    assert tokenizer.eos_token_id == 2
    assert tokenizer.unk_token_id == 3
    ids = tokenizer("I like tea.")["input_ids"]
    assert ids[0] == 0
    assert ids[-1] == 2


@pytest.mark.parametrize("kind", tiny.TINY_KINDS)
def test_long_input_truncates_to_128(kind, tiny_root):
    path = folder_of(kind, tiny_root)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = EXPECTED[kind][3].from_pretrained(path).eval()
    assert len(LONG_TEXT.split()) == 300
    assert len(tokenizer(LONG_TEXT)["input_ids"]) > 128
    encoded = tokenizer(LONG_TEXT, truncation=True, return_tensors="pt")
    assert encoded["input_ids"].shape == (1, 128)
    with torch.no_grad():
        logits = model(**encoded).logits
    assert logits.shape == (1, 128, len(tokenizer))


@pytest.mark.parametrize("kind", ["bert", "gpt2", "roberta"])
def test_129_tokens_exceed_positions(kind, tiny_root):
    """128 is the exact limit: one token more has no position embedding (RoBERTa included, with its offset)."""
    model = EXPECTED[kind][3].from_pretrained(folder_of(kind, tiny_root)).eval()
    input_ids = torch.full((1, 129), 10)
    with pytest.raises((IndexError, RuntimeError)):
        with torch.no_grad():
            model(input_ids=input_ids)


# ---------------------------------------------------------------- pipelines


def test_fill_mask_pipeline_matches_model(tiny_root):
    path = folder_of("bert", tiny_root)
    fill_mask = pipeline("fill-mask", model=str(path))
    results = fill_mask("i like [MASK] .", top_k=5)

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForMaskedLM.from_pretrained(path).eval()
    encoded = tokenizer("i like [MASK] .", return_tensors="pt")
    mask_index = encoded["input_ids"][0].tolist().index(tokenizer.mask_token_id)
    with torch.no_grad():
        probabilities = model(**encoded).logits[0, mask_index].softmax(-1)
    expected_scores, expected_ids = probabilities.topk(5)

    assert len(results) == 5
    assert [result["token"] for result in results] == expected_ids.tolist()
    for result, score in zip(results, expected_scores.tolist()):
        assert result["score"] == pytest.approx(score, rel=1e-4)


def test_text_generation_pipeline_matches_greedy_loop(tiny_root):
    path = folder_of("gpt2", tiny_root)
    generator = pipeline("text-generation", model=str(path))
    output = generator("I like", max_new_tokens=8, do_sample=False)[0]["generated_text"]

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    input_ids = tokenizer("I like", return_tensors="pt")["input_ids"]
    new_ids = []
    with torch.no_grad():
        for _ in range(8):
            next_id = int(model(input_ids=input_ids).logits[0, -1].argmax())
            if next_id == tokenizer.eos_token_id:
                break
            new_ids.append(next_id)
            input_ids = torch.cat([input_ids, torch.tensor([[next_id]])], dim=1)

    assert output.startswith("I like")
    assert output == "I like" + tokenizer.decode(new_ids)


def test_text_classification_pipeline_matches_model(tiny_root):
    classifier = pipeline("text-classification", model=str(folder_of("bert-chinese", tiny_root)))
    result = classifier("房间很干净")[0]
    encoded = classifier.tokenizer("房间很干净", return_tensors="pt")
    with torch.no_grad():
        probabilities = classifier.model(**encoded).logits[0].softmax(-1)
    assert result["label"] == f"LABEL_{int(probabilities.argmax())}"
    assert result["score"] == pytest.approx(float(probabilities.max()), rel=1e-4)


# The TorchScript exporter inside optimum warns about tracing and about its own deprecation.
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::UserWarning", "ignore::DeprecationWarning")
@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_onnx_export_matches_pytorch(kind, tiny_root):
    onnxruntime = pytest.importorskip("optimum.onnxruntime")
    path = folder_of(kind, tiny_root)
    ort_class = onnxruntime.ORTModelForMaskedLM if kind == "bert" else onnxruntime.ORTModelForCausalLM
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoded = tokenizer(["hello world", "a good film"], padding=True, return_tensors="pt")
    ort_model = ort_class.from_pretrained(path, export=True)
    model = EXPECTED[kind][3].from_pretrained(path).eval()
    with torch.no_grad():
        expected = model(**encoded).logits
    actual = torch.as_tensor(ort_model(**encoded).logits)
    torch.testing.assert_close(actual, expected, rtol=1e-3, atol=1e-4)


# ---------------------------------------------------------------- determinism and caching


def test_building_twice_gives_identical_files(tmp_path, tiny_root):
    for kind in tiny.TINY_KINDS:
        first = folder_of(kind, tiny_root)
        second = tiny.tiny_model_dir(kind, tmp_path)
        assert second.name == first.name
        for name in tiny.required_files(kind):
            assert sha256(second / name) == sha256(first / name), f"{kind}/{name}"


def test_other_process_builds_identical_files(tmp_path, tiny_root):
    """Check across processes: WordPieceTrainer once gave each process a different vocabulary."""
    code = ("import sys; from pathlib import Path; from roadmap import tiny\n"
            "for kind in tiny.TINY_KINDS: print(tiny.tiny_model_dir(kind, Path(sys.argv[1])))")
    completed = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO_ROOT, capture_output=True,
                               text=True, check=True)
    folders = [Path(line) for line in completed.stdout.split()]
    assert len(folders) == len(tiny.TINY_KINDS)
    for kind, folder in zip(tiny.TINY_KINDS, folders):
        for name in tiny.required_files(kind):
            assert sha256(folder / name) == sha256(folder_of(kind, tiny_root) / name), f"{kind}/{name}"


def test_build_leaves_caller_rng_untouched(tmp_path):
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    tiny.tiny_model_dir("bert", tmp_path)
    assert torch.equal(torch.rand(3), expected)


def test_complete_folder_is_reused(tmp_path, monkeypatch):
    first = tiny.tiny_model_dir("gpt2", tmp_path)

    def fail_build(kind, folder):
        raise AssertionError("a complete folder must not be rebuilt")

    monkeypatch.setattr(tiny, "build_tiny_model", fail_build)
    assert tiny.tiny_model_dir("gpt2", tmp_path) == first


def test_incomplete_folder_is_rebuilt(tmp_path):
    folder = tiny.tiny_model_dir("roberta", tmp_path)
    weights_hash = sha256(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    assert not tiny.is_complete(folder, "roberta")

    rebuilt = tiny.tiny_model_dir("roberta", tmp_path)
    assert rebuilt == folder
    assert tiny.is_complete(rebuilt, "roberta")
    assert sha256(rebuilt / "model.safetensors") == weights_hash
    assert [path.name for path in tmp_path.iterdir()] == [folder.name]  # 没有留下临时文件夹


def test_publish_keeps_finished_folder(tmp_path, tiny_root):
    finished = tmp_path / "bert-x"
    shutil.copytree(folder_of("bert", tiny_root), finished)
    building = tmp_path / ".building"
    building.mkdir()
    (building / "config.json").write_text("{}")

    tiny._publish(building, finished, "bert")
    assert tiny.is_complete(finished, "bert")
    assert sha256(finished / "config.json") == sha256(folder_of("bert", tiny_root) / "config.json")


def test_publish_replaces_incomplete_folder(tmp_path, tiny_root):
    target = tmp_path / "bert-x"
    target.mkdir()
    (target / "config.json").write_text("{}")
    building = tmp_path / ".building"
    shutil.copytree(folder_of("bert", tiny_root), building)

    tiny._publish(building, target, "bert")
    assert tiny.is_complete(target, "bert")
    assert not building.exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bert-x"]


def test_version_hash_follows_corpus(tmp_path, monkeypatch):
    before = tiny.version_hash("bert")
    copied = tmp_path / "samples"
    shutil.copytree(SAMPLES_DIR, copied, ignore=shutil.ignore_patterns("mnist", "cifar10"))
    monkeypatch.setattr(tiny, "SAMPLES_DIR", copied)
    assert tiny.version_hash("bert") == before
    with open(copied / "translation" / "cmn.txt", "a", encoding="utf-8") as stream:
        stream.write("A new line.\t新的一行。\n")
    assert tiny.version_hash("bert") != before


def test_unknown_kind_raises(tmp_path):
    with pytest.raises(ValueError, match="未知的极小模型种类"):
        tiny.tiny_model_dir("t5", tmp_path)


# ---------------------------------------------------------------- names


@pytest.mark.parametrize("name, kind", [
    ("bert-base-uncased", "bert"),
    ("bert-base-chinese", "bert-chinese"),
    ("gpt2", "gpt2"),
    ("uer/gpt2-chinese-cluecorpussmall", "gpt2-chinese"),
    ("roberta-base", "roberta"),
    ("google-bert/bert-base-uncased", "bert"),
    ("FacebookAI/roberta-base", "roberta"),
    ("bert-chinese", "bert-chinese"),
])
def test_tiny_for_maps_hub_names(name, kind):
    assert tiny.tiny_for(name) == kind


def test_tiny_for_unknown_name_raises():
    with pytest.raises(ValueError) as raised:
        tiny.tiny_for("t5-small")
    message = str(raised.value)
    assert "t5-small" in message
    assert "没有与模型" in message
    for kind in tiny.TINY_KINDS:
        assert kind in message


def test_resolve_model(tmp_path, monkeypatch):
    monkeypatch.setattr(tiny, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    assert tiny.resolve_model("bert-base-chinese", smoke=False) == "bert-base-chinese"
    resolved = Path(tiny.resolve_model("bert-base-chinese", smoke=True))
    assert resolved.parent == tmp_path / "cache"
    assert resolved.name.startswith("bert-chinese-")
    assert tiny.is_complete(resolved, "bert-chinese")
    local = tmp_path / "my-model"
    local.mkdir()
    assert tiny.resolve_model(str(local), smoke=True) == str(local)
    with pytest.raises(ValueError, match="没有与模型"):
        tiny.resolve_model("t5-small", smoke=True)


# ---------------------------------------------------------------- samples

IOB2_TAG = re.compile(r"^(O|[BI]-[A-Z]+)$")


def assert_valid_iob2(tags: list[str]) -> None:
    previous = "O"
    for tag in tags:
        assert IOB2_TAG.match(tag), tag
        if tag.startswith("I-"):
            assert previous != "O", f"{previous} -> {tag}"
            assert previous[2:] == tag[2:], f"{previous} -> {tag}"
        previous = tag


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_conll2003_sample_format(split):
    lines = (SAMPLES_DIR / "conll2003" / f"{split}.txt").read_text(encoding="utf-8").split("\n")
    assert lines[0] == "-DOCSTART- -X- -X- O"
    assert lines[-1] == ""  # 文件以换行结尾
    sentences: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in lines:
        if line == "":
            if current:
                sentences.append(current)
                current = []
            continue
        columns = line.split(" ")
        assert len(columns) == 4, line
        if columns[0] == "-DOCSTART-":
            assert columns == ["-DOCSTART-", "-X-", "-X-", "O"]
            assert current == []
            continue
        current.append(columns)
    assert current == []
    assert len(sentences) == 20
    entity_types = set()
    for sentence in sentences:
        assert_valid_iob2([columns[2] for columns in sentence])  # chunk
        assert_valid_iob2([columns[3] for columns in sentence])  # NER
        entity_types.update(columns[3][2:] for columns in sentence if columns[3] != "O")
    assert entity_types <= {"PER", "LOC", "ORG", "MISC"}
    assert len(entity_types) >= 3


GLUE_HEADERS = {
    "SST-2": ["sentence", "label"],
    "MRPC": ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
    "STS-B": ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
              "score"],
}


def read_tsv(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8-sig", newline="") as stream:
        return list(csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE))


@pytest.mark.parametrize("task", ["SST-2", "MRPC", "STS-B", "CoLA"])
@pytest.mark.parametrize("split", ["train", "dev"])
def test_glue_sample_layout(task, split):
    rows = read_tsv(SAMPLES_DIR / "glue" / task / f"{split}.tsv")
    if task == "CoLA":
        header, body = None, rows
    else:
        header, body = rows[0], rows[1:]
        assert header == GLUE_HEADERS[task]
    assert len(body) >= 6
    width = 4 if task == "CoLA" else len(header)
    for row in body:
        assert len(row) == width, row
    if task == "SST-2":
        assert {row[1] for row in body} == {"0", "1"}
    elif task == "CoLA":
        assert {row[1] for row in body} == {"0", "1"}
        assert all((row[2] == "*") == (row[1] == "0") for row in body)
    elif task == "MRPC":
        assert {row[0] for row in body} == {"0", "1"}
        assert (SAMPLES_DIR / "glue" / task / f"{split}.tsv").read_bytes().startswith(b"\xef\xbb\xbfQuality\t")
    else:
        scores = [float(row[9]) for row in body]
        assert all(0.0 <= score <= 5.0 for score in scores)
        assert [int(row[0]) for row in body] == list(range(len(body)))


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_glue_samples_match_transformers_processors():
    from transformers.data.processors import glue

    expected_texts = {"sst-2": (0, None, 1), "cola": (3, None, 1), "mrpc": (3, 4, 0), "sts-b": (7, 8, 9)}
    folders = {"sst-2": "SST-2", "cola": "CoLA", "mrpc": "MRPC", "sts-b": "STS-B"}
    for task, (first, second, label) in expected_texts.items():
        folder = SAMPLES_DIR / "glue" / folders[task]
        examples = glue.glue_processors[task]().get_dev_examples(str(folder))
        rows = read_tsv(folder / "dev.tsv")
        rows = rows if task == "cola" else rows[1:]
        assert [example.text_a for example in examples] == [row[first] for row in rows]
        assert [example.text_b for example in examples] == [row[second] if second is not None else None for row in rows]
        assert [example.label for example in examples] == [row[label] for row in rows]


@pytest.mark.parametrize("split, per_class", [("train", 12), ("test", 6)])
def test_imdb_sample_layout(split, per_class):
    root = SAMPLES_DIR / "imdb" / "aclImdb" / split
    for polarity, ratings in (("pos", range(7, 11)), ("neg", range(1, 5))):
        files = sorted((root / polarity).iterdir())
        assert len(files) == per_class
        ids = set()
        for path in files:
            match = re.fullmatch(r"(\d+)_(\d+)\.txt", path.name)
            assert match, path.name
            ids.add(int(match.group(1)))
            assert int(match.group(2)) in ratings
            text = path.read_text(encoding="utf-8")
            assert text.strip()
            assert "\n" not in text
        assert ids == set(range(per_class))


def test_chnsenticorp_sample_layout():
    with open(SAMPLES_DIR / "chnsenticorp" / "ChnSentiCorp_htl_all.csv", encoding="utf-8", newline="") as stream:
        rows = list(csv.reader(stream))
    assert rows[0] == ["label", "review"]
    labels = [row[0] for row in rows[1:]]
    assert all(len(row) == 2 for row in rows)
    assert set(labels) == {"0", "1"}
    assert labels == sorted(labels, reverse=True)  # 与官方文件一样先正后负
    assert 40 <= len(labels) <= 100
    assert all(re.search(r"[\u4e00-\u9fff]", row[1]) for row in rows[1:])
    assert any("," in row[1] for row in rows[1:])  # 有需要加引号的评论


def test_hf_sample_generator_reproduces_files(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("make_hf_samples", SAMPLES_DIR / "make_hf_samples.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    monkeypatch.setattr(generator, "SAMPLES_DIR", tmp_path)
    generator.main()
    generated = sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*") if path.is_file())
    assert len(generated) == 36 + 1 + 8 + 3
    for relative in generated:
        assert (tmp_path / relative).read_bytes() == (SAMPLES_DIR / relative).read_bytes(), relative
