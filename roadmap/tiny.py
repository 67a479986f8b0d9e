"""极小的随机初始化模型：BERT、GPT-2、RoBERTa，配上在仓库自带样本上训练出的分词器。

Hugging Face 脚本在 --smoke 下（以及所有离线测试里）用 `resolve_model(args.model, args.smoke)` 把
hub 名换成这里构建的本地文件夹。文件夹的用法和 hub 名一样：`AutoTokenizer.from_pretrained(path)`、
`AutoModelForMaskedLM` / `AutoModelForCausalLM`、`AutoModelForSequenceClassification.from_pretrained(path,
num_labels=...)`、`AutoModelForTokenClassification`、`pipeline(..., model=path)`、optimum 的 ONNX 导出。
与 hub 模型的一处不同：gpt2 种类设置了 pad token（等于 eos），hub 上的 gpt2 没有，脚本仍要自己处理。

规模：hidden 32、2 层、2 个头、FFN 64、最多 128 个位置，词表几百到一千多个 token，权重不到 1 MB，
几秒内建好，之后从缓存读。模型是随机初始化的，输出没有意义，只用来验证代码能从头跑到尾。

种类（TINY_KINDS）与它对应的 hub 模型：
- "bert"：bert-base-uncased，英文小写 WordPiece，BertForMaskedLM；
- "bert-chinese"：bert-base-chinese，中文按字切分的 WordPiece（BertTokenizerFast，tokenize_chinese_chars），
  同时含少量英文 wordpiece，BertForMaskedLM；
- "gpt2"：gpt2，英文 byte-level BPE，GPT2LMHeadModel；
- "gpt2-chinese"：uer/gpt2-chinese-cluecorpussmall，GPT2LMHeadModel 配 BERT 式的中文字词表和 BertTokenizerFast；
- "roberta"：roberta-base，byte-level BPE，RobertaForMaskedLM。

缓存：`data/cache/tiny/<kind>-<版本哈希>/`（git 忽略 data/ 下除 samples/ 以外的一切）。版本哈希由本文件源码、
训练分词器用的样本文件内容和 transformers / tokenizers / torch 的版本算出，其中任何一个变了就换一个新文件夹。
构建先写进同目录下的临时文件夹，写完再 rename 成正式名字，所以并发的进程不会看到写了一半的文件夹。
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import shutil
import string
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from roadmap.data import CACHE_DIR, SAMPLES_DIR

logger = logging.getLogger(__name__)

TINY_KINDS = ("bert", "bert-chinese", "gpt2", "gpt2-chinese", "roberta")
# hub 名（含带组织前缀的新名字，如 google-bert/bert-base-uncased）到种类。种类名本身也可以直接传。
HUB_NAME_TO_KIND = {
    "bert-base-uncased": "bert",
    "google-bert/bert-base-uncased": "bert",
    "bert-base-chinese": "bert-chinese",
    "google-bert/bert-base-chinese": "bert-chinese",
    "gpt2": "gpt2",
    "openai-community/gpt2": "gpt2",
    "uer/gpt2-chinese-cluecorpussmall": "gpt2-chinese",
    "roberta-base": "roberta",
    "FacebookAI/roberta-base": "roberta",
}
DEFAULT_CACHE_DIR = CACHE_DIR / "cache" / "tiny"

SEED = 1234
HIDDEN_SIZE = 32
NUM_LAYERS = 2
NUM_HEADS = 2
INTERMEDIATE_SIZE = 64
MAX_LENGTH = 128  # 模型的位置数，也是分词器的 model_max_length，truncation=True 时截到这个长度
VOCAB_SIZE = 1000  # 训练分词器时的目标词表大小；中文种类的单字全部保留，所以词表可能比它大

BERT_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
GPT2_SPECIAL_TOKENS = ["<|endoftext|>"]
# 样本里没出现的 ASCII 字符也要有 token（否则 "!" 之类变成 [UNK]，含生僻字母的整个词也变成 [UNK]），
# bert-base-uncased 的词表同样含全部小写 ASCII 字母、数字和标点，以及字母、数字的 ## 形式。中文种类再加上常用的全角标点。
WORDPIECE_EXTRA_CHARS = string.ascii_lowercase + string.digits + string.punctuation
WORDPIECE_EXTRA_CHINESE = "，。！？、；：“”‘’（）《》…—·"
# RoBERTa 的约定：<s>=0、<pad>=1、</s>=2、<unk>=3，与 roberta-base 相同。
ROBERTA_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


@dataclass(frozen=True)
class TinySpec:
    """Recipe of one kind: the model family, the tokenizer algorithm and the training texts."""

    architecture: str  # "bert" | "gpt2" | "roberta"
    tokenizer: str  # "wordpiece" | "byte-bpe"
    chinese: bool  # 训练语料是否包含中文（中文种类同时含英文，和 bert-base-chinese 的词表一样）


TINY_SPECS = {
    "bert": TinySpec("bert", "wordpiece", chinese=False),
    "bert-chinese": TinySpec("bert", "wordpiece", chinese=True),
    "gpt2": TinySpec("gpt2", "byte-bpe", chinese=False),
    "gpt2-chinese": TinySpec("gpt2", "wordpiece", chinese=True),
    "roberta": TinySpec("roberta", "byte-bpe", chinese=False),
}


# ---------------------------------------------------------------- 名字解析

def tiny_for(model_name: str) -> str:
    """Map a hub model name (or a kind itself) to the tiny kind that replaces it under --smoke."""
    if model_name in TINY_KINDS:
        return model_name
    kind = HUB_NAME_TO_KIND.get(model_name)
    if kind is None:
        known = "、".join(sorted(HUB_NAME_TO_KIND))
        raise ValueError(
            f"没有与模型 {model_name!r} 对应的极小模型。--smoke 下可用的 hub 名：{known}；"
            f"也可以直接写种类名：{'、'.join(TINY_KINDS)}，或给一个本地模型文件夹。"
            f"要用其他 hub 模型，请去掉 --smoke。"
        )
    return kind


def resolve_model(model: str, smoke: bool) -> str:
    """Return the tiny folder that replaces `model` under --smoke, else `model` unchanged.

    Under --smoke an existing local folder is also returned unchanged: the user chose a model that
    needs no download, and --smoke then only shrinks the data and the number of steps.
    """
    if not smoke:
        return model
    if Path(model).is_dir():
        logger.info("--smoke 下使用本地模型文件夹 %s（不换成极小模型）", model)
        return model
    return str(tiny_model_dir(tiny_for(model)))


# ---------------------------------------------------------------- 语料

def _read_csv_rows(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as stream:
        return list(csv.reader(stream))


def _read_tsv_rows(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8-sig", newline="") as stream:
        return list(csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE))


# GLUE 各任务 TSV 里句子所在的列（与 transformers 的 GLUE processors 相同）。
GLUE_TEXT_COLUMNS = {"SST-2": [0], "CoLA": [3], "MRPC": [3, 4], "STS-B": [7, 8]}


def _english_texts(path: Path) -> Iterator[str]:
    """Yield the English text fields of one sample file, chosen by the file's dataset format."""
    relative = path.relative_to(SAMPLES_DIR).as_posix()
    if relative.startswith("ag_news/"):
        for row in _read_csv_rows(path):
            yield from row[1:]  # 类别、标题、正文
    elif relative.startswith("translation/"):
        for line in path.read_text(encoding="utf-8").splitlines():
            yield line.split("\t")[0]
    elif relative.startswith("imdb/"):
        yield path.read_text(encoding="utf-8").replace("<br />", " ")
    elif relative.startswith("glue/"):
        text_columns = GLUE_TEXT_COLUMNS.get(path.parent.name)
        if text_columns is None:
            raise ValueError(f"GLUE 样本 {path} 属于未知的任务 {path.parent.name!r}；已知：{'、'.join(GLUE_TEXT_COLUMNS)}")
        rows = _read_tsv_rows(path)
        if path.parent.name != "CoLA":
            rows = rows[1:]  # 除 CoLA 外都有表头
        for row in rows:
            yield from (row[column] for column in text_columns)
    elif relative.startswith("conll2003/"):
        sentence: list[str] = []
        for line in path.read_text(encoding="utf-8").splitlines() + [""]:
            if line.strip() and not line.startswith("-DOCSTART-"):
                sentence.append(line.split()[0])
            elif sentence:
                yield " ".join(sentence)
                sentence = []
    else:
        raise ValueError(f"无法从 {path} 读取英文文本：不认识这个样本文件的格式")


def _chinese_texts(path: Path) -> Iterator[str]:
    """Yield the Chinese text fields of one sample file."""
    relative = path.relative_to(SAMPLES_DIR).as_posix()
    if relative.startswith("translation/"):
        for line in path.read_text(encoding="utf-8").splitlines():
            yield line.split("\t")[1]
    elif relative.startswith("chnsenticorp/"):
        for row in _read_csv_rows(path)[1:]:
            yield row[1]
    elif relative.startswith("cmrc2018/"):
        yield from _json_strings(json.loads(path.read_text(encoding="utf-8")))
    else:
        raise ValueError(f"无法从 {path} 读取中文文本：不认识这个样本文件的格式")


def _json_strings(value: object) -> Iterator[str]:
    """Yield every string value in a JSON document (CMRC 2018 stores contexts, questions, answers)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _json_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _json_strings(item)


def _sorted_files(patterns: Iterable[str]) -> list[Path]:
    files: set[Path] = set()
    for pattern in patterns:
        files.update(SAMPLES_DIR.glob(pattern))
    return sorted(files)


def english_corpus_files() -> list[Path]:
    """Return the bundled sample files whose English text trains the tokenizers."""
    files = _sorted_files(["ag_news/*.csv", "translation/cmn.txt", "imdb/aclImdb/*/*/*.txt", "glue/*/*.tsv",
                           "conll2003/*.txt"])
    if not files:
        raise FileNotFoundError(f"在 {SAMPLES_DIR} 下找不到自带的英文样本；请运行 python data/samples/make_samples.py")
    return files


def chinese_corpus_files() -> list[Path]:
    """Return the bundled sample files whose Chinese text trains the Chinese tokenizers.

    cmrc2018/ is read when it exists; it comes from another generator than the other samples.
    """
    files = _sorted_files(["translation/cmn.txt", "chnsenticorp/*.csv", "cmrc2018/*.json"])
    if not files:
        raise FileNotFoundError(f"在 {SAMPLES_DIR} 下找不到自带的中文样本；请运行 python data/samples/make_hf_samples.py")
    return files


def corpus_texts(spec: TinySpec) -> list[str]:
    """Return the texts the tokenizer of `spec` is trained on, in a fixed order."""
    texts = [text for path in english_corpus_files() for text in _english_texts(path)]
    if spec.chinese:
        texts += [text for path in chinese_corpus_files() for text in _chinese_texts(path)]
    return [text for text in texts if text.strip()]


# ---------------------------------------------------------------- 缓存与版本

def version_hash(kind: str) -> str:
    """Hash what decides the folder's content: this file, the corpus files and the library versions."""
    spec = TINY_SPECS[kind]
    digest = hashlib.sha256()
    digest.update(kind.encode())
    digest.update(Path(__file__).read_bytes())
    corpus = english_corpus_files() + (chinese_corpus_files() if spec.chinese else [])
    for path in corpus:
        digest.update(path.relative_to(SAMPLES_DIR).as_posix().encode())
        digest.update(path.read_bytes())
    for package in ("transformers", "tokenizers", "torch"):
        digest.update(f"{package}=={metadata.version(package)}".encode())
    return digest.hexdigest()[:12]


def required_files(kind: str) -> tuple[str, ...]:
    """Return the files a complete folder of `kind` contains."""
    common = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
    spec = TINY_SPECS[kind]
    vocabulary = ("vocab.txt",) if spec.tokenizer == "wordpiece" else ("vocab.json", "merges.txt")
    generation = ("generation_config.json",) if spec.architecture == "gpt2" else ()
    return common + vocabulary + generation


def is_complete(folder: Path, kind: str) -> bool:
    return folder.is_dir() and all((folder / name).is_file() for name in required_files(kind))


def tiny_model_dir(kind: str, cache_dir: Path | None = None) -> Path:
    """Return the folder of the tiny model `kind`, building it on the first call.

    The folder is `<cache_dir>/<kind>-<version hash>/`, with `cache_dir` defaulting to
    data/cache/tiny under the repository root. A folder with missing files is rebuilt.
    """
    if kind not in TINY_SPECS:
        raise ValueError(f"未知的极小模型种类 {kind!r}；可选：{'、'.join(TINY_KINDS)}")
    cache_root = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    folder = cache_root / f"{kind}-{version_hash(kind)}"
    if is_complete(folder, kind):
        return folder

    cache_root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    building = Path(tempfile.mkdtemp(prefix=f".{folder.name}.building-", dir=cache_root))
    building.chmod(0o755)  # mkdtemp 建的是 0700；发布后的文件夹应和普通文件夹一样可读
    try:
        build_tiny_model(kind, building)
        _publish(building, folder, kind)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    logger.info("极小模型 %s 已就绪：%s（%.1f 秒）", kind, folder, time.perf_counter() - started)
    return folder


def _publish(building: Path, folder: Path, kind: str) -> None:
    """Rename the finished build to `folder`; a complete folder written by another process wins."""
    try:
        os.rename(building, folder)
        return
    except OSError:
        if is_complete(folder, kind):
            return  # 另一个进程先建好了，用它的（内容相同）
    # 名字被一个不完整的文件夹占着：先把它原子地改名挪开，再换上新建的。
    broken = folder.with_name(f".{folder.name}.broken-{os.getpid()}-{time.time_ns()}")
    with contextlib.suppress(FileNotFoundError):
        os.rename(folder, broken)  # 另一个进程可能已经挪走了
    try:
        os.rename(building, folder)
    except OSError:
        if not is_complete(folder, kind):
            raise
    finally:
        shutil.rmtree(broken, ignore_errors=True)


# ---------------------------------------------------------------- 构建

@contextlib.contextmanager
def _serial_tokenizers() -> Iterator[None]:
    """Train tokenizers on one thread, unless the user set TOKENIZERS_PARALLELISM.

    After the Rust tokenizers library has used its thread pool, a later fork (DataLoader workers)
    prints a warning and disables it. Training on a few hundred lines gains nothing from threads.
    """
    if "TOKENIZERS_PARALLELISM" in os.environ:
        yield
        return
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        os.environ.pop("TOKENIZERS_PARALLELISM", None)


# 续接字符（词内第 2 个及以后的字符）在训练时换成补充私用区 A 里的码位，"##e" 就成了一个普通字符。
CONTINUATION_OFFSET = 0xF0000


def _mark_continuation(word: str) -> str:
    """Keep the first character and shift the rest into the private use area (BMP characters only)."""
    if any(ord(char) > 0xFFFF for char in word):
        raise ValueError(f"样本里的词 {word!r} 含有 BMP 以外的字符，训练 WordPiece 词表时无法标记")
    return word[0] + "".join(chr(CONTINUATION_OFFSET + ord(char)) for char in word[1:])


def _unmark_continuation(token: str) -> str:
    """Turn a trained token back into WordPiece form: a shifted first character means a "##" piece."""
    plain = "".join(chr(ord(char) - CONTINUATION_OFFSET) if ord(char) >= CONTINUATION_OFFSET else char
                    for char in token)
    return "##" + plain if ord(token[0]) >= CONTINUATION_OFFSET else plain


def train_wordpiece_vocabulary(texts: list[str], *, chinese: bool) -> list[str]:
    """Learn a lowercase BERT WordPiece vocabulary from `texts`; return it in id order.

    The words come from BERT's own normaliser and pre-tokenizer, which puts spaces around every
    CJK character (tokenize_chinese_chars), so each Chinese character is a word of its own and enters
    the vocabulary whole, the way bert-base-chinese's vocabulary contains single characters.
    NOTE: with tokenizers 0.22, WordPieceTrainer learned different vocabularies from the same texts
    in different processes (measured). So the merges are learned by BpeTrainer, which sorts its
    alphabet by code point, on words whose continuation characters `_mark_continuation` shifted.
    tests/test_tiny.py checks that two processes build identical files.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                            lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    marked_texts = []
    for text in texts:
        words = pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
        marked_texts.append(" ".join(_mark_continuation(word) for word, _ in words))

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, min_frequency=2, special_tokens=BERT_SPECIAL_TOKENS,
                                  show_progress=False)
    with _serial_tokenizers():
        bpe.train_from_iterator(marked_texts, trainer)
    trained = sorted(bpe.get_vocab().items(), key=lambda item: item[1])
    vocabulary = [token if token in BERT_SPECIAL_TOKENS else _unmark_continuation(token) for token, _ in trained]

    extra = list(WORDPIECE_EXTRA_CHARS) + ["##" + char for char in string.ascii_lowercase + string.digits]
    if chinese:
        extra += list(WORDPIECE_EXTRA_CHINESE)
    known = set(vocabulary)
    return vocabulary + [token for token in extra if token not in known]


def train_wordpiece_tokenizer(texts: list[str], folder: Path, *, chinese: bool):
    """Write vocab.txt learned from `texts` into `folder` and return a BertTokenizerFast reading it."""
    from transformers import BertTokenizerFast

    vocab_path = folder / "vocab.txt"
    vocab_path.write_text("\n".join(train_wordpiece_vocabulary(texts, chinese=chinese)) + "\n", encoding="utf-8")
    return BertTokenizerFast(vocab_file=str(vocab_path), do_lower_case=True, tokenize_chinese_chars=True,
                             model_max_length=MAX_LENGTH)


def train_byte_bpe_tokenizer(texts: list[str], folder: Path, architecture: str):
    """Train a byte-level BPE (vocab.json + merges.txt) on `texts`; return a GPT-2 or RoBERTa fast tokenizer."""
    from tokenizers.implementations import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast, RobertaTokenizerFast

    special_tokens = GPT2_SPECIAL_TOKENS if architecture == "gpt2" else ROBERTA_SPECIAL_TOKENS
    trainer_tokenizer = ByteLevelBPETokenizer(add_prefix_space=False)
    with _serial_tokenizers():
        trainer_tokenizer.train_from_iterator(texts, vocab_size=VOCAB_SIZE, min_frequency=2,
                                              special_tokens=special_tokens, show_progress=False)
    trainer_tokenizer.save_model(str(folder))
    files = {"vocab_file": str(folder / "vocab.json"), "merges_file": str(folder / "merges.txt")}
    if architecture == "gpt2":
        tokenizer = GPT2TokenizerFast(**files, model_max_length=MAX_LENGTH)
        # GPT-2 没有 pad token；批量 padding 需要一个，这里沿用常见做法让 pad 等于 eos（<|endoftext|>）。
        # 真正的 hub 模型 gpt2 没有设置它，脚本仍要写 `if tokenizer.pad_token is None: ...`，
        # padding_side（生成时常用 left）也由脚本决定。
        tokenizer.pad_token = tokenizer.eos_token
        return tokenizer
    return RobertaTokenizerFast(**files, model_max_length=MAX_LENGTH)


def build_config(kind: str, tokenizer):
    """Return the transformers config of the tiny model, sized to the tokenizer's vocabulary."""
    from transformers import BertConfig, GPT2Config, RobertaConfig

    spec = TINY_SPECS[kind]
    vocab_size = len(tokenizer)
    if spec.architecture == "bert":
        return BertConfig(vocab_size=vocab_size, hidden_size=HIDDEN_SIZE, num_hidden_layers=NUM_LAYERS,
                          num_attention_heads=NUM_HEADS, intermediate_size=INTERMEDIATE_SIZE,
                          max_position_embeddings=MAX_LENGTH, pad_token_id=tokenizer.pad_token_id)
    if spec.architecture == "roberta":
        # RoBERTa 的位置编号从 padding_idx + 1 = 2 开始，长 128 的序列用到第 129 号，所以要 128 + 2 个位置
        # （roberta-base 同理：512 个 token，514 个位置）。
        return RobertaConfig(vocab_size=vocab_size, hidden_size=HIDDEN_SIZE, num_hidden_layers=NUM_LAYERS,
                             num_attention_heads=NUM_HEADS, intermediate_size=INTERMEDIATE_SIZE,
                             max_position_embeddings=MAX_LENGTH + 2, type_vocab_size=1,
                             pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id)
    if kind == "gpt2-chinese":
        # 与 uer/gpt2-chinese-cluecorpussmall 一样（它的模型卡片用 BertTokenizer 配 GPT2LMHeadModel）：GPT-2 结构，
        # BERT 的中文字词表，编码时自带 [CLS] ... [SEP]。tokenizer_class 在 tokenizer_config.json 里已有，
        # config 里也写一份，AutoTokenizer 由此用 BertTokenizerFast，而不是 GPT-2 的 BPE 分词器。
        special_ids = {"bos_token_id": tokenizer.cls_token_id, "eos_token_id": tokenizer.sep_token_id,
                       "pad_token_id": tokenizer.pad_token_id, "tokenizer_class": "BertTokenizer"}
    else:
        special_ids = {"bos_token_id": tokenizer.eos_token_id, "eos_token_id": tokenizer.eos_token_id,
                       "pad_token_id": tokenizer.pad_token_id}
    return GPT2Config(vocab_size=vocab_size, n_positions=MAX_LENGTH, n_embd=HIDDEN_SIZE, n_layer=NUM_LAYERS,
                      n_head=NUM_HEADS, n_inner=INTERMEDIATE_SIZE, **special_ids)


def build_tiny_model(kind: str, folder: Path) -> None:
    """Train the tokenizer, initialise the model with a fixed seed, and save both into `folder`."""
    import torch
    from transformers import BertForMaskedLM, GPT2LMHeadModel, RobertaForMaskedLM

    spec = TINY_SPECS[kind]
    texts = corpus_texts(spec)
    with tempfile.TemporaryDirectory(prefix="tiny-tokenizer-") as scratch:
        if spec.tokenizer == "wordpiece":
            tokenizer = train_wordpiece_tokenizer(texts, Path(scratch), chinese=spec.chinese)
        else:
            tokenizer = train_byte_bpe_tokenizer(texts, Path(scratch), spec.architecture)
        tokenizer.save_pretrained(folder)
    config = build_config(kind, tokenizer)
    model_class = {"bert": BertForMaskedLM, "gpt2": GPT2LMHeadModel, "roberta": RobertaForMaskedLM}[spec.architecture]

    # 在独立的随机数状态里初始化：权重每次相同，调用方（已经按 --seed 设好种子的脚本）的随机数序列也不受影响，
    # 否则第一次运行（要构建）和之后（读缓存）会得到不同的训练结果。
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = model_class(config)
    model.eval()
    model.save_pretrained(folder, safe_serialization=True)
    logger.info("极小模型 %s：词表 %d，参数 %d", kind, config.vocab_size, sum(p.numel() for p in model.parameters()))
