"""BERT 与 GPT 的预训练目标：MLM + NSP 对比自回归语言模型（路线图：Transformer → BERT（双向，MLM + NSP 预训练）vs GPT（单向，自回归语言模型））

学什么
- BERT（Devlin et al. 2019）的编码器是双向的：每个位置都看得到整句，所以不能直接做"预测下一个字"，
  改做两个预训练任务：
  * MLM（masked language model）：从非特殊、非补齐的 token 里按 15% 的概率独立选出预测位置；
    选中的位置 80% 换成 [MASK]、10% 换成词表里随机的 token、10% 保持原样，模型要在这些位置还原原 token。
    只换 [MASK] 的话，微调时输入里从不出现 [MASK]，预训练和微调就对不上；随机替换和保持原样
    逼模型对每个位置都保留"这里原本是什么"的表示。labels 在没选中的位置是 -100（交叉熵忽略）。
    见 mask_tokens；训练时每个 batch 重新掩码（dynamic masking，RoBERTa 的做法），同一段文字每轮换一批位置。
  * NSP（next sentence prediction）：[CLS] A [SEP] B [SEP]，50% 的 B 是文档里紧接着 A 的下一段（IsNext，
    label 0），50% 是从另一篇文档随机取的一段（NotNext，label 1），与 HF BertForPreTraining 的
    next_sentence_label 约定相同；[CLS] 的向量经过 pooler 和一个二分类层做判断。见 build_nsp_examples。
- GPT 的解码器是单向的（causal mask：位置 t 只看得到 ≤ t），目标就是自回归语言模型：
  输入 x_1..x_{T-1}，标签 x_2..x_T，即 inputs[:, :-1] -> labels[:, 1:]，补齐位置的标签是 -100。
  见 shift_for_causal_lm 和 causal_lm_loss。
- 坑：HF 的 GPT2LMHeadModel(labels=...) 在内部自己右移一位（logits[:, :-1] 对 labels[:, 1:]），
  所以传给它的 labels 就是没移过的 input_ids（补齐处 -100，见 causal_lm_labels）。自己先移一次再交给它，
  就移了两次，模型学的是"预测后面第二个字"。脚本训练完在验证集上把两种写法都算一遍（gpt_val_double_shift_loss），
  tests 里用 HF 的 loss 核对 causal_lm_loss 的结果。
- 只在被选中的位置算 MLM 输出层：Google 原版 BERT 的预训练代码也是先按 masked_lm_positions 取出这些位置
  再算输出层。21,128 个 token 的输出层是这个小模型里最贵的一步，BertForPreTraining(labels=...) 却在所有
  B x T 个位置上都算一遍。bert_pretraining_losses 用 BertForPreTraining 自己的子模块只算约 15% 的位置，
  tests 核对两者的 loss 相差不到 1e-5；batch 32 x 128 时每步的 CPU 时间从 1.85 秒降到 0.46 秒。
- 两个模型都从随机初始化开始训练几分钟（HF 的 BertForPreTraining / GPT2LMHeadModel，用小的 BertConfig /
  GPT2Config 建），用同一份 bert-base-chinese 的真实词表（21,128 个 token，按字切分中文；
  uer/gpt2-chinese-cluecorpussmall 的 GPT-2 也用这份词表）。

数据：CMRC 2018 开发集（SQuAD 格式 JSON：data -> paragraphs -> context；中文维基百科段落），只用段落文本，
不用问答。真实文件 848 个段落（约 43 万字），按段落固定划分（与 --seed 无关）：90% 训练、10% 验证。
每个段落当一篇文档，按 。！？ 切成句子，供 NSP 取"下一段"。GPT 把每个段落写成 [CLS] 正文 [SEP]，
切成 --block-size 长的块，最后一块不足时补齐（补齐位置不算损失）。
--smoke 用仓库自带的 12 个自写短段落（data/samples/cmrc2018/），词表由样本里出现的字现建，写进运行目录。

怎么跑
    roadmap run pretraining_objectives --smoke                      # 自带样本，几秒
    ROADMAP_DATA_DIR=/path/to/data roadmap run pretraining_objectives
    roadmap run pretraining_objectives --max-steps 1000 --eval-every 250   # 下面"1,000 步"那组结果
    几个程序同时抢 CPU 时，设 OMP_NUM_THREADS=1 往往快得多。
    训练好的两个模型存在运行目录的 bert/ 和 gpt/ 里（连同词表），可以用 from_pretrained 加载。

真实数据上的结果（默认选项：两个模型都是 hidden 128、2 层、2 个头、不用 dropout，BERT 317 万、GPT 311 万参数，
其中 270 万在 21,128 x 128 的词向量上；BERT 每步 32 个句对（最长 128 个 token），GPT 每步 16 个 64-token 的块；
AdamW 1e-3，前 10% 的步数线性预热再线性衰减到 0，各训练 300 步。763 个训练段落（359,541 个 token）/ 85 个验证段落，
验证集上有 503 个句对、8,070 个被掩码的位置、43,489 个 GPT 目标 token）：
                                 训练前     100 步     300 步    只看字频（unigram 基线）
    BERT 验证集 MLM loss          9.99       6.93       6.78      6.86
    BERT 验证集 MLM 准确率        0.0%       4.2%       5.1%
    BERT 验证集 NSP 准确率        50.1%      49.9%      50.1%
    GPT 验证集 LM loss            9.98       6.92       6.75      6.89
    GPT 验证集困惑度              21,562     1,016      854
    GPT 验证集下一个字准确率      0.2%       3.9%       4.2%
    labels 先移一位再交给 GPT2LMHeadModel（移了两次）：验证集 loss 6.91，比正确写法高 0.16。
  - 随机初始化时 loss 约为 ln 21128 = 9.96。前 100 步两个模型都只学到了字频：loss 与 unigram 基线持平，
    GPT 的准确率约等于总猜最常见的"，"（它占验证集 token 的 3.9%）。之后 loss 才降到基线以下，开始用上下文，
    GPT 低 0.15，BERT 低 0.08：每步 GPT 在全部 1,024 个位置上都有目标，BERT 只在约 510 个被选中的位置上有。
  - NSP 在 300 步里一直停在 50%：负例来自另一篇文章，要靠 A、B 话题不同来识别，这么小、这么短的训练还学不到。
    RoBERTa（Liu et al. 2019）的实验里去掉 NSP 后下游任务持平或略好，所以 RoBERTa 不再用它，
    ALBERT 则换成了判断两段顺序的 SOP（sentence order prediction）。
  - 移两次的 loss 只比正确写法高 0.16，是因为模型还主要靠字频（对第 t+1 个和第 t+2 个字一样有效）；
    模型越会用上下文，两者差得越多（下面 1,000 步时高 1.36）。
  - 加 --max-steps 1000（其余选项不变，同一台机器上 27 分钟，进程 CPU 时间 957 秒）：BERT MLM loss 6.17、
    准确率 14.0%，NSP 第 750 步起才离开 50%（第 750 步 53%，第 1000 步 57%）；GPT loss 5.64、困惑度 281、
    下一个字准确率 14.6%；labels 移两次的 loss 6.99。
  - 用时：2 核 CPU，与其他任务共用（负载 3-6），OMP_NUM_THREADS=1：整个脚本 11 分 39 秒（BERT 5 分 12 秒，
    GPT 6 分钟，都含评估），进程 CPU 时间共 334 秒，所以空闲的 2 核 CPU 上估计每个模型 2.5-3 分钟。
    两次运行的结果完全相同。
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm
from transformers import (BertConfig, BertForPreTraining, BertTokenizerFast, GPT2Config, GPT2LMHeadModel,
                          get_linear_schedule_with_warmup)

from roadmap import cli, data, runs, training

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100          # torch 的 cross_entropy 和 HF 的模型都忽略这个标签
IS_NEXT, NOT_NEXT = 0, 1     # HF BertForPreTraining 的 next_sentence_label：0 = B 接着 A，1 = B 是随机的
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

CMRC_FILE = "cmrc2018_dev.json"
# 官方仓库固定提交里的开发集，SHA-256 与 848 段落的官方文件一致。
CMRC_URL = ("https://raw.githubusercontent.com/ymcui/cmrc2018/c0eb1b6ba219847457e6af3180da722bbeb656af/"
            "squad-style-data/cmrc2018_dev.json")
CMRC_SHA256 = "e9ff74231f05c230c6fa88b84441ee334d97234cbb610991cd94b82db00c7f1f"
VOCAB_URL = "https://huggingface.co/bert-base-chinese/resolve/main/vocab.txt"
SPLIT_SEED = 0               # 训练 / 验证段落的划分只取决于数据，换 --seed 也是同一个验证集
HELD_OUT_FRACTION = 0.1
SENTENCE_END = re.compile(r"([。！？!?]+[”’」』）)]*)")  # 句末标点连同紧跟的右引号、右括号


# ---------------------------------------------------------------- 数据：CMRC 2018 段落、句子、词表


def load_cmrc2018_paragraphs(data_dir: str | Path | None = None, *, smoke: bool = False) -> list[str]:
    """Read every non-empty `context` of a SQuAD-style CMRC 2018 file (data -> paragraphs -> context).

    Raises DataNotFoundError when the file is in no data root and cannot be downloaded, and
    DataFormatError when it is not UTF-8 JSON of that shape.
    """
    if smoke:
        folder = data.SAMPLES_DIR / "cmrc2018"
    else:
        folder = data.find_dataset("cmrc2018", (CMRC_FILE,), data_dir, urls={CMRC_FILE: CMRC_URL},
                                   checksums={CMRC_FILE: CMRC_SHA256})
    path = folder / CMRC_FILE
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise data.DataFormatError(f"{path} 不是 UTF-8 编码的合法 JSON：{error}") from None
    if not isinstance(content, dict) or not isinstance(content.get("data"), list):
        raise data.DataFormatError(f"{path} 应是 SQuAD 格式：顶层是带 \"data\" 列表的 JSON 对象")
    paragraphs = []
    for article_index, article in enumerate(content["data"]):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise data.DataFormatError(f"{path}：data[{article_index}] 应是带 \"paragraphs\" 列表的对象")
        for paragraph_index, paragraph in enumerate(article["paragraphs"]):
            context = paragraph.get("context") if isinstance(paragraph, dict) else None
            if not isinstance(context, str):
                raise data.DataFormatError(
                    f"{path}：data[{article_index}].paragraphs[{paragraph_index}] 应是带字符串 \"context\" 的对象")
            if context.strip():
                paragraphs.append(context.strip())
    if not paragraphs:
        raise data.DataFormatError(f"{path} 里没有非空的段落（context）")
    return paragraphs


def split_sentences(paragraph: str) -> list[str]:
    """Split Chinese text after 。！？!? (keeping closing quotes and brackets) and at line breaks."""
    sentences = []
    for line in paragraph.splitlines():
        pieces = SENTENCE_END.split(line)  # 正文, 句末标点, 正文, 句末标点, ..., 最后一段正文
        for index in range(0, len(pieces), 2):
            sentence = (pieces[index] + (pieces[index + 1] if index + 1 < len(pieces) else "")).strip()
            if sentence:
                sentences.append(sentence)
    return sentences


def split_held_out(paragraphs: Sequence[str], fraction: float = HELD_OUT_FRACTION,
                   seed: int = SPLIT_SEED) -> tuple[list[str], list[str]]:
    """Return (train, held-out) paragraphs; the held-out part has at least 2 paragraphs, as NSP needs."""
    if len(paragraphs) < 4:
        raise data.DataFormatError(f"至少需要 4 个段落才能分出训练和验证部分，只有 {len(paragraphs)} 个")
    order = list(range(len(paragraphs)))
    random.Random(seed).shuffle(order)
    held_out_count = max(2, round(fraction * len(paragraphs)))
    held_out = sorted(order[:held_out_count])
    train = sorted(order[held_out_count:])
    return [paragraphs[i] for i in train], [paragraphs[i] for i in held_out]


def write_character_vocab(texts: Sequence[str], path: Path) -> Path:
    """Write a WordPiece vocab.txt: the 5 special tokens, then every character of `texts`.

    BertTokenizerFast lower-cases, gives each CJK character and punctuation mark its own token,
    and splits other words into pieces ("ai" -> "a", "##i"), so non-CJK characters also get a
    "##" entry; with this vocabulary no character of `texts` becomes [UNK].
    """
    characters = sorted({char for text in texts for char in text.lower() if not char.isspace()})
    continuations = [f"##{char}" for char in characters if char.isascii() and char.isalnum()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([*SPECIAL_TOKENS, *characters, *continuations]) + "\n", encoding="utf-8")
    return path


def find_vocab_file(args: argparse.Namespace) -> Path:
    """Return --vocab-file, or bert-base-chinese's vocab.txt from the data roots (tokenizers/bert-base-chinese/)."""
    if args.vocab_file is not None:
        if not args.vocab_file.is_file():
            raise SystemExit(f"--vocab-file 指向的文件不存在：{args.vocab_file}；请给一个 WordPiece 的 vocab.txt"
                             "（例如 bert-base-chinese 的），或者去掉这个选项")
        return args.vocab_file
    folder = data.find_dataset("tokenizers", ("vocab.txt",), args.data_dir, subdir="bert-base-chinese",
                               urls={"vocab.txt": VOCAB_URL})
    return folder / "vocab.txt"


def tokenize_documents(tokenizer: BertTokenizerFast, paragraphs: Sequence[str]) -> list[list[list[int]]]:
    """Tokenize each paragraph sentence by sentence (no special tokens); drop sentences that give no tokens."""
    documents = []
    for paragraph in paragraphs:
        sentences = split_sentences(paragraph)
        encoded = tokenizer(sentences, add_special_tokens=False)["input_ids"] if sentences else []
        documents.append([ids for ids in encoded if ids])
    return documents


# ---------------------------------------------------------------- 目标一：MLM（masked language model）


def mask_tokens(input_ids: torch.Tensor, special_tokens_mask: torch.Tensor, *, mask_token_id: int, vocab_size: int,
                probability: float = 0.15, generator: torch.Generator | None = None,
                attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt a batch for MLM as BERT does; return (masked_inputs, labels), both shaped like input_ids.

    Each position where `special_tokens_mask` is 0 (and `attention_mask`, when given, is 1) is
    selected independently with `probability`. A selected token becomes `mask_token_id` with
    probability 0.8, a token drawn uniformly from [0, vocab_size) with 0.1, and stays as it is
    with 0.1. `labels` is the original id at selected positions and -100 elsewhere.
    Pass HF's `special_tokens_mask` (1 at [CLS], [SEP] and padding) or build it yourself.
    Draws all randomness from `generator`, so a seeded generator gives the same masks again.
    The input tensors are not modified.
    """
    if input_ids.shape != special_tokens_mask.shape:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} 与 special_tokens_mask "
                         f"{tuple(special_tokens_mask.shape)} 形状不同")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask {tuple(attention_mask.shape)} 与 input_ids {tuple(input_ids.shape)} 形状不同")
    if not 0.0 < probability <= 1.0:
        raise ValueError(f"probability 必须在 (0, 1] 之间，收到 {probability}")
    device = input_ids.device

    def uniform() -> torch.Tensor:
        return torch.rand(input_ids.shape, generator=generator, device=device)

    eligible = ~special_tokens_mask.bool()
    if attention_mask is not None:
        eligible &= attention_mask.bool()
    selected = eligible & (uniform() < probability)
    # 选中的位置再抽一次 u ~ U(0, 1)：u < 0.8 换 [MASK]，0.8 <= u < 0.9 换随机 token，其余保持原样。
    choice = uniform()
    replace_with_mask = selected & (choice < 0.8)
    replace_with_random = selected & (choice >= 0.8) & (choice < 0.9)
    random_tokens = torch.randint(vocab_size, input_ids.shape, generator=generator, device=device, dtype=input_ids.dtype)

    masked_inputs = input_ids.clone()
    masked_inputs[replace_with_mask] = mask_token_id
    masked_inputs[replace_with_random] = random_tokens[replace_with_random]
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    return masked_inputs, labels


# ---------------------------------------------------------------- 目标二：NSP（next sentence prediction）


@dataclass(frozen=True)
class SegmentSource:
    """Origin of a segment: sentences [start, end) of document `document`."""

    document: int
    start: int
    end: int


@dataclass(frozen=True)
class NSPExample:
    """One `[CLS] A [SEP] B [SEP]` pair with its token type ids and label (0 = IsNext, 1 = NotNext)."""

    input_ids: list[int]
    token_type_ids: list[int]
    next_sentence_label: int
    first: SegmentSource
    second: SegmentSource


def _extend_segment(sentences: Sequence[Sequence[int]], start: int, stop: int, target_tokens: int) -> int:
    """Return `end` so that sentences[start:end] is at least one sentence and, beyond it, fits `target_tokens`."""
    end, length = start + 1, len(sentences[start])
    while end < stop and length + len(sentences[end]) <= target_tokens:
        length += len(sentences[end])
        end += 1
    return end


def _truncate_pair(first: list[int], second: list[int], budget: int) -> tuple[list[int], list[int]]:
    """Shorten the longer segment one token at a time until both fit `budget`.

    A loses tokens from its start and B from its end, so the A|B boundary that NSP judges stays intact.
    """
    first_length, second_length = len(first), len(second)
    while first_length + second_length > budget:
        if first_length > second_length:
            first_length -= 1
        else:
            second_length -= 1
    return first[len(first) - first_length:], second[:second_length]


def build_nsp_examples(documents: Sequence[Sequence[Sequence[int]]], *, max_length: int, cls_token_id: int,
                       sep_token_id: int, rng: random.Random, next_probability: float = 0.5) -> list[NSPExample]:
    """Build NSP pairs from documents given as lists of tokenized sentences (ids without special tokens).

    Walks each document: segment A is one or more consecutive sentences, filling up to half of the
    max_length - 3 token budget. With probability `next_probability` segment B is the sentences
    right after A in the same document (label 0, IsNext). Otherwise B starts at a random sentence
    of another random document (label 1, NotNext), and the sentences after A start the next pair
    instead. B fills the rest of the budget. A single sentence longer than the
    budget is cut (A from its start, B from its end). Every pair is at most `max_length` tokens.
    """
    if max_length < 5:
        raise ValueError(f"max_length 至少要 5（[CLS] A [SEP] B [SEP] 各占 1 个），收到 {max_length}")
    non_empty = [index for index, document in enumerate(documents) if document]
    if len(non_empty) < 2:
        raise ValueError("NSP 的负例要从另一篇文档里取，至少需要两篇非空文档")
    for index, document in enumerate(documents):
        if any(len(sentence) == 0 for sentence in document):
            raise ValueError(f"第 {index} 篇文档里有空句子（0 个 token）；请先去掉")
    budget = max_length - 3

    examples = []
    for document_index, sentences in enumerate(documents):
        start = 0
        while start < len(sentences) - 1:  # 剩最后一句时停：它当 A 就没有真实的下一段
            is_next = rng.random() < next_probability
            a_stop = len(sentences) - 1 if is_next else len(sentences)  # 正例给 B 至少留一句
            a_end = _extend_segment(sentences, start, a_stop, budget // 2)
            first = [token for sentence in sentences[start:a_end] for token in sentence]
            if is_next:
                b_document, b_start = document_index, a_end
            else:
                b_document = document_index
                while b_document == document_index:
                    b_document = non_empty[rng.randrange(len(non_empty))]
                b_start = rng.randrange(len(documents[b_document]))
            b_sentences = documents[b_document]
            b_end = _extend_segment(b_sentences, b_start, len(b_sentences), budget - len(first))
            second = [token for sentence in b_sentences[b_start:b_end] for token in sentence]
            first, second = _truncate_pair(first, second, budget)

            examples.append(NSPExample(
                input_ids=[cls_token_id, *first, sep_token_id, *second, sep_token_id],
                token_type_ids=[0] * (len(first) + 2) + [1] * (len(second) + 1),
                next_sentence_label=IS_NEXT if is_next else NOT_NEXT,
                first=SegmentSource(document_index, start, a_end),
                second=SegmentSource(b_document, b_start, b_end),
            ))
            start = b_end if is_next else a_end
    return examples


def collate_nsp(examples: Sequence[NSPExample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad NSP pairs into tensors: input_ids, token_type_ids, attention_mask and special_tokens_mask (B, T),
    next_sentence_label (B,). special_tokens_mask is 1 at [CLS], both [SEP] and padding, as HF's tokenizers set it.
    """
    length = max(len(example.input_ids) for example in examples)
    input_ids = torch.full((len(examples), length), pad_token_id, dtype=torch.long)
    token_type_ids = torch.zeros_like(input_ids)
    attention_mask = torch.zeros_like(input_ids)
    special_tokens_mask = torch.ones_like(input_ids)
    for row, example in enumerate(examples):
        size = len(example.input_ids)
        input_ids[row, :size] = torch.tensor(example.input_ids)
        token_type_ids[row, :size] = torch.tensor(example.token_type_ids)
        attention_mask[row, :size] = 1
        special_tokens_mask[row, 1:size - 1] = 0
        special_tokens_mask[row, example.token_type_ids.index(1) - 1] = 1  # A 后面的 [SEP]
    labels = torch.tensor([example.next_sentence_label for example in examples], dtype=torch.long)
    return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask,
            "special_tokens_mask": special_tokens_mask, "next_sentence_label": labels}


# ---------------------------------------------------------------- 目标三：自回归语言模型（causal LM）


def causal_lm_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Return the labels to pass to an HF causal LM (GPT2LMHeadModel): input_ids, not shifted, -100 at padding.

    The HF model shifts them itself (logits[:, :-1] against labels[:, 1:]); shifting here as well
    would train it to predict the token after next.
    """
    if attention_mask is None:
        return input_ids.clone()
    return input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)


def shift_for_causal_lm(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (inputs, labels) for next-token prediction: inputs = x[:, :-1], labels = x[:, 1:] with -100 at padding.

    Position t of `inputs` attends to x_1..x_t (under the causal mask) and is scored against x_{t+1}.
    """
    if input_ids.shape[-1] < 2:
        raise ValueError(f"序列至少要有 2 个 token 才能预测下一个，收到长度 {input_ids.shape[-1]}")
    return input_ids[:, :-1], causal_lm_labels(input_ids, attention_mask)[:, 1:]


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of logits (B, T, V) against already shifted labels (B, T), ignoring -100."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction=reduction)


def build_lm_blocks(documents: Sequence[Sequence[int]], block_size: int, bos_token_id: int,
                    eos_token_id: int) -> list[list[int]]:
    """Write each document as [bos] tokens [eos] and cut it into blocks of `block_size` (the last may be shorter).

    Blocks never cross documents; blocks of a single token are dropped, as they have nothing to predict.
    """
    if block_size < 2:
        raise ValueError(f"block_size 至少要 2，收到 {block_size}")
    blocks = []
    for tokens in documents:
        sequence = [bos_token_id, *tokens, eos_token_id]
        for start in range(0, len(sequence), block_size):
            block = sequence[start:start + block_size]
            if len(block) >= 2:
                blocks.append(block)
    return blocks


def collate_lm(blocks: Sequence[Sequence[int]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad token blocks into input_ids and attention_mask (B, T)."""
    length = max(len(block) for block in blocks)
    input_ids = torch.full((len(blocks), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, block in enumerate(blocks):
        input_ids[row, :len(block)] = torch.tensor(block)
        attention_mask[row, :len(block)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


# ---------------------------------------------------------------- 模型：小 BERT 与小 GPT，随机初始化


def build_bert(args: argparse.Namespace, vocab_size: int, pad_token_id: int) -> BertForPreTraining:
    config = BertConfig(vocab_size=vocab_size, hidden_size=args.hidden_size, num_hidden_layers=args.num_layers,
                        num_attention_heads=args.num_heads, intermediate_size=4 * args.hidden_size,
                        max_position_embeddings=args.max_length, type_vocab_size=2,
                        hidden_dropout_prob=args.dropout, attention_probs_dropout_prob=args.dropout,
                        pad_token_id=pad_token_id)
    return BertForPreTraining(config)


def build_gpt(args: argparse.Namespace, vocab_size: int, bos_token_id: int, eos_token_id: int,
              pad_token_id: int) -> GPT2LMHeadModel:
    config = GPT2Config(vocab_size=vocab_size, n_positions=args.block_size, n_embd=args.hidden_size,
                        n_layer=args.num_layers, n_head=args.num_heads, resid_pdrop=args.dropout,
                        embd_pdrop=args.dropout, attn_pdrop=args.dropout, bos_token_id=bos_token_id,
                        eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    model = GPT2LMHeadModel(config)
    # transformers 4.57 按类名找 loss，"GPT2LMHeadModel" 里没有 "ForCausalLM"，于是警告一句再退回 ForCausalLMLoss。
    # 直接指定同一个 loss，省掉这条让人误会的警告。
    model.loss_type = "ForCausalLM"
    return model


@dataclass
class PretrainingLosses:
    """BERT's two losses, with the MLM logits of the selected positions only."""

    mlm_loss: torch.Tensor
    nsp_loss: torch.Tensor
    mlm_logits: torch.Tensor    # (N, V)：N 个被选中的位置
    mlm_labels: torch.Tensor    # (N,)
    nsp_logits: torch.Tensor    # (B, 2)

    @property
    def loss(self) -> torch.Tensor:
        """MLM + NSP, the sum that BertForPreTraining(labels=..., next_sentence_label=...) returns."""
        return self.mlm_loss + self.nsp_loss


def bert_pretraining_losses(model: BertForPreTraining, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                            token_type_ids: torch.Tensor, labels: torch.Tensor,
                            next_sentence_label: torch.Tensor) -> PretrainingLosses:
    """Compute BertForPreTraining's MLM and NSP losses, running the MLM head only where labels != -100.

    model(..., labels=...) scores all B x T positions against the whole vocabulary and then ignores
    85% of them; gathering the selected positions first gives the same loss for a fraction of the work.
    """
    outputs = model.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    sequence_output, pooled_output = outputs[0], outputs[1]  # (B, T, H), (B, H)：pooled 是 [CLS] 经过 pooler
    selected = labels != IGNORE_INDEX
    mlm_logits = model.cls.predictions(sequence_output[selected])  # (N, H) -> (N, V)
    mlm_labels = labels[selected]
    # 一个位置都没选中时交叉熵是 0/0；返回 0 并保留计算图，这一步只训练 NSP。
    mlm_loss = F.cross_entropy(mlm_logits.float(), mlm_labels) if len(mlm_labels) else mlm_logits.sum()
    nsp_logits = model.cls.seq_relationship(pooled_output)
    nsp_loss = F.cross_entropy(nsp_logits.float(), next_sentence_label)
    return PretrainingLosses(mlm_loss, nsp_loss, mlm_logits, mlm_labels, nsp_logits)


# ---------------------------------------------------------------- 训练与评估


def precision_context(precision: str, device: torch.device):
    """Return a fresh autocast context for --precision bf16/fp16, or a no-op one for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}


@dataclass
class TrainingRun:
    """Record of train_steps: one dict of training values per step, and the held-out metrics at each evaluation."""

    history: list[dict[str, float]]
    evaluations: list[dict[str, float]]
    seconds: float


def train_steps(name: str, model: torch.nn.Module, batches: Callable[[int], Iterator[dict[str, torch.Tensor]]],
                step_loss: Callable[[torch.nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]],
                evaluate: Callable[[torch.nn.Module], dict[str, float]], args: argparse.Namespace,
                device: torch.device) -> TrainingRun:
    """Train with AdamW, linear warmup and decay, and gradient clipping for --max-steps steps or --epochs passes.

    `batches(epoch)` yields that epoch's batches; `step_loss` returns (loss, values to log);
    `evaluate` runs on the held-out data before training, every --eval-every steps and at the end.
    """
    started = time.perf_counter()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    warmup = max(1, round(args.warmup_fraction * args.max_steps))
    scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=warmup, num_training_steps=args.max_steps)
    # fp16 的梯度可能下溢成 0，GradScaler 先把 loss 放大再反传；bf16 和 fp32 不需要（enabled=False 时什么也不做）。
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    evaluations = [{"step": 0, **evaluate(model)}]
    logger.info("%s 训练前（验证集）：%s", name, format_metrics(evaluations[0]))
    history: list[dict[str, float]] = []
    step = 0
    with tqdm(total=args.max_steps, desc=f"{name} 训练", unit="步") as progress:
        for epoch in range(args.epochs):
            epoch_start = step
            for batch in batches(epoch):
                model.train()
                with precision_context(args.precision, device):
                    loss, values = step_loss(model, to_device(batch, device))
                if not math.isfinite(loss.item()):
                    raise FloatingPointError(f"{name} 第 {step + 1} 步的 loss 是 {loss.item()}；试试更小的 --lr")
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                step += 1
                history.append({"step": step, **values})
                progress.update(1)
                progress.set_postfix({key: f"{value:.3f}" for key, value in values.items()})
                if step % args.eval_every == 0 or step == args.max_steps:
                    evaluations.append({"step": step, **evaluate(model)})
                    logger.info("%s 第 %d 步（验证集）：%s", name, step, format_metrics(evaluations[-1]))
                if step == args.max_steps:
                    break
            if step == epoch_start:
                raise SystemExit(f"{name}：训练数据连一个 batch 都凑不出来；请加大 --max-train-samples，"
                                 "或减小 --max-length / --block-size")
            if step == args.max_steps:
                break
    if evaluations[-1]["step"] != step:  # --epochs 先用完：在最后一步补一次评估
        evaluations.append({"step": step, **evaluate(model)})
    return TrainingRun(history, evaluations, time.perf_counter() - started)


def format_metrics(values: dict[str, float]) -> str:
    return "，".join(f"{key}={value:.4g}" for key, value in values.items() if key != "step")


@torch.no_grad()
def evaluate_bert(model: BertForPreTraining, batches: Sequence[dict[str, torch.Tensor]], device: torch.device,
                  precision: str) -> dict[str, float]:
    """Return held-out MLM loss and accuracy (over all masked positions) and NSP loss and accuracy (over all pairs)."""
    model.eval()
    mlm_loss = mlm_correct = mlm_count = nsp_loss = nsp_correct = nsp_count = 0.0
    for batch in batches:
        batch = to_device(batch, device)
        with precision_context(precision, device):
            losses = bert_pretraining_losses(model, batch["masked_input_ids"], batch["attention_mask"],
                                             batch["token_type_ids"], batch["labels"], batch["next_sentence_label"])
        mlm_loss += F.cross_entropy(losses.mlm_logits.float(), losses.mlm_labels, reduction="sum").item()
        mlm_correct += (losses.mlm_logits.argmax(-1) == losses.mlm_labels).sum().item()
        mlm_count += len(losses.mlm_labels)
        nsp_loss += F.cross_entropy(losses.nsp_logits.float(), batch["next_sentence_label"], reduction="sum").item()
        nsp_correct += (losses.nsp_logits.argmax(-1) == batch["next_sentence_label"]).sum().item()
        nsp_count += len(batch["next_sentence_label"])
    return {"mlm_loss": mlm_loss / mlm_count, "mlm_accuracy": mlm_correct / mlm_count,
            "nsp_loss": nsp_loss / nsp_count, "nsp_accuracy": nsp_correct / nsp_count}


@torch.no_grad()
def evaluate_gpt(model: GPT2LMHeadModel, batches: Sequence[dict[str, torch.Tensor]], device: torch.device,
                 precision: str) -> dict[str, float]:
    """Return held-out per-token LM loss, perplexity = exp(loss) and next-token accuracy, with our own shift."""
    model.eval()
    total_loss = correct = count = 0.0
    for batch in batches:
        batch = to_device(batch, device)
        inputs, labels = shift_for_causal_lm(batch["input_ids"], batch["attention_mask"])
        with precision_context(precision, device):
            logits = model(input_ids=inputs, attention_mask=batch["attention_mask"][:, :-1]).logits  # (B, T-1, V)
        total_loss += causal_lm_loss(logits, labels, reduction="sum").item()
        scored = labels != IGNORE_INDEX
        correct += (logits.argmax(-1)[scored] == labels[scored]).sum().item()
        count += scored.sum().item()
    loss = total_loss / count
    return {"lm_loss": loss, "perplexity": math.exp(loss), "next_token_accuracy": correct / count}


@torch.no_grad()
def double_shift_loss(model: GPT2LMHeadModel, batches: Sequence[dict[str, torch.Tensor]], device: torch.device,
                      precision: str) -> float:
    """Return the held-out loss of the classic mistake: shifting the labels before GPT2LMHeadModel shifts them again.

    The model then scores position t against x_{t+2}; the loss is per scored token, like evaluate_gpt's.
    """
    model.eval()
    total_loss = count = 0.0
    for batch in batches:
        batch = to_device(batch, device)
        inputs, shifted_labels = shift_for_causal_lm(batch["input_ids"], batch["attention_mask"])
        with precision_context(precision, device):
            loss = model(input_ids=inputs, attention_mask=batch["attention_mask"][:, :-1], labels=shifted_labels).loss
        scored = (shifted_labels[:, 1:] != IGNORE_INDEX).sum().item()  # HF 在内部又丢掉了第一个标签
        total_loss += loss.item() * scored
        count += scored
    return total_loss / count


def unigram_loss(train_tokens: Sequence[int], targets: Sequence[int], vocab_size: int) -> float:
    """Return the mean cross-entropy of `targets` under the add-one smoothed token frequencies of `train_tokens`.

    This is the loss of a model that ignores the context and always predicts the training frequencies,
    so a model's gap below it is what it gained from the context.
    """
    counts = torch.bincount(torch.tensor(train_tokens, dtype=torch.long), minlength=vocab_size).double() + 1.0
    log_probabilities = (counts / counts.sum()).log()
    return float(-log_probabilities[torch.tensor(targets, dtype=torch.long)].mean())


# ---------------------------------------------------------------- 画图


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Return the mean of the last `window` values at each step (fewer at the start)."""
    averaged, total = [], 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        averaged.append(total / min(index + 1, window))
    return averaged


def plot_pretraining_curves(bert_run: TrainingRun, gpt_run: TrainingRun, path: Path,
                            baselines: dict[str, float]) -> Path:
    """Draw MLM loss, NSP accuracy and LM loss by step: training (moving average) as lines, held-out as points.

    `baselines` maps "mlm_loss", "nsp_accuracy" and "lm_loss" to a dashed reference line (unigram loss, chance).
    """
    import matplotlib.pyplot as plt

    from roadmap import plots  # noqa: F401  导入 roadmap.plots 时选好 Agg 后端，没有显示器也能画

    window = max(1, len(bert_run.history) // 20)
    panels = [
        (bert_run, "mlm_loss", "BERT masked LM loss", "loss"),
        (bert_run, "nsp_accuracy", "BERT next sentence prediction", "accuracy"),
        (gpt_run, "lm_loss", "GPT causal LM loss", "loss"),
    ]
    figure, axes = plt.subplots(1, 3, figsize=(16, 4))
    held_out_keys = {"mlm_loss": "mlm_loss", "nsp_accuracy": "nsp_accuracy", "lm_loss": "lm_loss"}
    for axis, (run, key, title, ylabel) in zip(axes, panels):
        steps = [record["step"] for record in run.history]
        axis.plot(steps, moving_average([record[key] for record in run.history], window),
                  label=f"train (moving average of {window})")
        axis.plot([record["step"] for record in run.evaluations], [record[held_out_keys[key]] for record in run.evaluations],
                  marker="o", label="held-out")
        if key in baselines:
            label = "chance" if key == "nsp_accuracy" else "unigram (no context), held-out"
            axis.axhline(baselines[key], color="gray", linestyle="--", linewidth=1, label=label)
        axis.set(xlabel="step", ylabel=ylabel, title=title)
        axis.grid(alpha=0.3)
        axis.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    if runs.is_main_process():
        figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


# ---------------------------------------------------------------- 主程序


def build_argument_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser(__doc__.splitlines()[0], epochs=20, batch_size=32, lr=1e-3, shared_loop=False)
    group = parser.add_argument_group("预训练选项")
    group.add_argument("--max-steps", type=cli.positive_int, default=300,
                       help="每个模型训练多少步（优化器更新次数）；与 --epochs 先到者为准，学习率调度按这个步数安排")
    group.add_argument("--eval-every", type=cli.positive_int, default=100, help="每训练多少步在验证集上评估一次")
    group.add_argument("--max-length", type=cli.positive_int, default=128,
                       help="BERT 的一条输入 [CLS] A [SEP] B [SEP] 最多多少个 token")
    group.add_argument("--block-size", type=cli.positive_int, default=64, help="GPT 每个训练块多少个 token")
    group.add_argument("--gpt-batch-size", type=cli.positive_int, default=16,
                       help="GPT 每步多少个块；--batch-size 是 BERT 每步多少个句对。GPT 在每个位置都要算整个词表的输出层，"
                            "BERT 只在约 15%% 的位置上算，所以 GPT 的 batch 小一半，两个模型每步用时相近")
    group.add_argument("--hidden-size", type=cli.positive_int, default=128, help="两个模型的 hidden size（d_model）")
    group.add_argument("--num-layers", type=cli.positive_int, default=2, help="两个模型各有几层 Transformer")
    group.add_argument("--num-heads", type=cli.positive_int, default=2, help="注意力头数；要整除 --hidden-size")
    group.add_argument("--dropout", type=float, default=0.0,
                       help="dropout 概率；默认的训练很短（BERT 约两遍训练数据，GPT 不到一遍），不会过拟合，所以不用 dropout")
    group.add_argument("--weight-decay", type=float, default=0.01, help="AdamW 的权重衰减")
    group.add_argument("--warmup-fraction", type=float, default=0.1, help="学习率线性预热占 --max-steps 的比例")
    group.add_argument("--mask-probability", type=float, default=0.15, help="MLM 选中一个普通 token 做预测的概率")
    group.add_argument("--vocab-file", type=Path, default=None,
                       help="WordPiece 词表 vocab.txt；不给时在数据目录的 tokenizers/bert-base-chinese/ 下找")
    return parser


def check_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.hidden_size % args.num_heads:
        parser.error(f"--hidden-size {args.hidden_size} 必须能被 --num-heads {args.num_heads} 整除")
    if not 0.0 <= args.dropout < 1.0:
        parser.error(f"--dropout 必须在 [0, 1) 之间，收到 {args.dropout}")
    if not 0.0 < args.mask_probability <= 1.0:
        parser.error(f"--mask-probability 必须在 (0, 1] 之间，收到 {args.mask_probability}")
    if not 0.0 <= args.warmup_fraction < 1.0:
        parser.error(f"--warmup-fraction 必须在 [0, 1) 之间，收到 {args.warmup_fraction}")
    if args.weight_decay < 0:
        parser.error(f"--weight-decay 不能是负数，收到 {args.weight_decay}")
    if args.max_length < 8:
        parser.error(f"--max-length 至少要 8，收到 {args.max_length}")
    if args.block_size < 2:
        parser.error(f"--block-size 至少要 2，收到 {args.block_size}")


def apply_smoke_sizes(args: argparse.Namespace) -> None:
    """Shrink a --smoke run to a few steps of two tiny models."""
    cli.apply_smoke(args, epochs=2)
    if args.smoke:
        args.max_steps, args.eval_every = min(args.max_steps, 6), min(args.eval_every, 3)
        args.hidden_size, args.num_layers, args.num_heads = min(args.hidden_size, 32), 1, 2
        args.max_length, args.block_size = min(args.max_length, 48), min(args.block_size, 32)
        args.batch_size, args.gpt_batch_size = 8, 8


@dataclass
class Corpus:
    """The tokenizer and the tokenized train and held-out paragraphs (documents of sentences of token ids)."""

    tokenizer: BertTokenizerFast
    vocab_file: Path
    train_documents: list[list[list[int]]]
    held_out_documents: list[list[list[int]]]

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)


def load_corpus(args: argparse.Namespace, run_dir: Path) -> Corpus:
    """Load the CMRC paragraphs, split off the held-out part (fixed seed) and tokenize both parts by sentence."""
    paragraphs = load_cmrc2018_paragraphs(args.data_dir, smoke=args.smoke)
    train_paragraphs, held_out_paragraphs = split_held_out(paragraphs)
    if args.max_train_samples is not None:
        train_paragraphs = train_paragraphs[:args.max_train_samples]
    if len(train_paragraphs) < 2:
        raise SystemExit("--max-train-samples 太小：NSP 的负例要从另一篇文档取，训练段落至少要 2 个")
    # --smoke 的词表由样本里出现的字现建，真实运行用 bert-base-chinese 的词表。
    vocab_file = write_character_vocab(paragraphs, run_dir / "vocab.txt") if args.smoke else find_vocab_file(args)
    tokenizer = BertTokenizerFast(vocab_file=str(vocab_file))
    corpus = Corpus(tokenizer, vocab_file, tokenize_documents(tokenizer, train_paragraphs),
                    tokenize_documents(tokenizer, held_out_paragraphs))
    logger.info("训练 %d 个段落（%d 个 token）、验证 %d 个段落；词表 %s，%d 个 token", len(train_paragraphs),
                count_tokens(corpus.train_documents), len(held_out_paragraphs), vocab_file, corpus.vocab_size)
    return corpus


def count_tokens(documents: Sequence[Sequence[Sequence[int]]]) -> int:
    return sum(len(sentence) for document in documents for sentence in document)


def nsp_batches(documents: Sequence[Sequence[Sequence[int]]], tokenizer: BertTokenizerFast, args: argparse.Namespace,
                rng: random.Random, generator: torch.Generator, shuffle: bool) -> Iterator[dict[str, torch.Tensor]]:
    """Yield padded NSP batches with MLM masks drawn from `generator`: masked_input_ids and labels are added."""
    examples = build_nsp_examples(documents, max_length=args.max_length, cls_token_id=tokenizer.cls_token_id,
                                  sep_token_id=tokenizer.sep_token_id, rng=rng)
    if shuffle:
        rng.shuffle(examples)
    for start in range(0, len(examples), args.batch_size):
        batch = collate_nsp(examples[start:start + args.batch_size], tokenizer.pad_token_id)
        # 每个 batch 现掩码（dynamic masking）：同一对句子在不同轮里预测不同的位置。
        batch["masked_input_ids"], batch["labels"] = mask_tokens(
            batch["input_ids"], batch["special_tokens_mask"], mask_token_id=tokenizer.mask_token_id,
            vocab_size=len(tokenizer), probability=args.mask_probability, generator=generator)
        yield batch


def pretrain_bert(args: argparse.Namespace, corpus: Corpus, device: torch.device
                  ) -> tuple[BertForPreTraining, TrainingRun, list[dict[str, torch.Tensor]]]:
    """Train a small BertForPreTraining on MLM + NSP; return it, its training record and the held-out batches."""
    # 验证集的句对和掩码只生成一次（固定种子），训练前后在完全相同的输入上比较。
    held_out = list(nsp_batches(corpus.held_out_documents, corpus.tokenizer, args, random.Random(SPLIT_SEED),
                                torch.Generator().manual_seed(SPLIT_SEED), shuffle=False))
    if not held_out:
        raise SystemExit("验证段落凑不出一个 NSP 句对（每个段落至少要两句话）；请换一份数据")
    generator = torch.Generator().manual_seed(args.seed)

    def epoch_batches(epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        # 每轮重新配句对：负例换一批随机段落。
        return nsp_batches(corpus.train_documents, corpus.tokenizer, args, random.Random(f"{args.seed}-{epoch}"),
                           generator, shuffle=True)

    def step_loss(model, batch):
        losses = bert_pretraining_losses(model, batch["masked_input_ids"], batch["attention_mask"],
                                         batch["token_type_ids"], batch["labels"], batch["next_sentence_label"])
        nsp_accuracy = (losses.nsp_logits.argmax(-1) == batch["next_sentence_label"]).float().mean().item()
        return losses.loss, {"mlm_loss": losses.mlm_loss.item(), "nsp_loss": losses.nsp_loss.item(),
                             "nsp_accuracy": nsp_accuracy}

    torch.manual_seed(args.seed)
    model = build_bert(args, corpus.vocab_size, corpus.tokenizer.pad_token_id).to(device)
    run = train_steps("BERT", model, epoch_batches, step_loss,
                      lambda trained: evaluate_bert(trained, held_out, device, args.precision), args, device)
    return model, run, held_out


def pretrain_gpt(args: argparse.Namespace, corpus: Corpus, device: torch.device
                 ) -> tuple[GPT2LMHeadModel, TrainingRun, list[dict[str, torch.Tensor]], list[list[int]]]:
    """Train a small GPT2LMHeadModel as a causal LM; return it, its record, the held-out batches and the train blocks."""
    tokenizer = corpus.tokenizer

    def blocks_of(documents):
        paragraphs = [[token for sentence in document for token in sentence] for document in documents]
        return build_lm_blocks(paragraphs, args.block_size, tokenizer.cls_token_id, tokenizer.sep_token_id)

    train_blocks, held_out_blocks = blocks_of(corpus.train_documents), blocks_of(corpus.held_out_documents)
    held_out = [collate_lm(held_out_blocks[start:start + args.gpt_batch_size], tokenizer.pad_token_id)
                for start in range(0, len(held_out_blocks), args.gpt_batch_size)]

    def epoch_batches(epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        order = list(range(len(train_blocks)))
        random.Random(f"{args.seed}-{epoch}").shuffle(order)
        for start in range(0, len(order), args.gpt_batch_size):
            chosen = [train_blocks[index] for index in order[start:start + args.gpt_batch_size]]
            yield collate_lm(chosen, tokenizer.pad_token_id)

    def step_loss(model, batch):
        # labels 不移位：GPT2LMHeadModel 在内部把 logits[:, :-1] 对上 labels[:, 1:]。
        labels = causal_lm_labels(batch["input_ids"], batch["attention_mask"])
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
        return loss, {"lm_loss": loss.item()}

    torch.manual_seed(args.seed)
    model = build_gpt(args, corpus.vocab_size, tokenizer.cls_token_id, tokenizer.sep_token_id,
                      tokenizer.pad_token_id).to(device)
    run = train_steps("GPT", model, epoch_batches, step_loss,
                      lambda trained: evaluate_gpt(trained, held_out, device, args.precision), args, device)
    return model, run, held_out, train_blocks


def baseline_values(corpus: Corpus, bert_held_out: Sequence[dict[str, torch.Tensor]], train_blocks: Sequence[list[int]],
                    gpt_held_out: Sequence[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Return the context-free references: unigram loss at BERT's held-out masked positions and at GPT's
    held-out targets (frequencies from the matching training tokens), and chance NSP accuracy."""
    train_tokens = [token for document in corpus.train_documents for sentence in document for token in sentence]
    masked_targets = [label for batch in bert_held_out for label in batch["labels"][batch["labels"] != IGNORE_INDEX].tolist()]
    lm_train_targets = [token for block in train_blocks for token in block[1:]]
    lm_targets = []
    for batch in gpt_held_out:
        _, labels = shift_for_causal_lm(batch["input_ids"], batch["attention_mask"])
        lm_targets.extend(labels[labels != IGNORE_INDEX].tolist())
    return {"mlm_loss": unigram_loss(train_tokens, masked_targets, corpus.vocab_size),
            "lm_loss": unigram_loss(lm_train_targets, lm_targets, corpus.vocab_size),
            "nsp_accuracy": 0.5}


def print_results(bert_run: TrainingRun, gpt_run: TrainingRun, mistake_loss: float,
                  baselines: dict[str, float]) -> None:
    bert_before, bert_after = bert_run.evaluations[0], bert_run.evaluations[-1]
    gpt_before, gpt_after = gpt_run.evaluations[0], gpt_run.evaluations[-1]
    rows = [("BERT MLM loss", bert_before["mlm_loss"], bert_after["mlm_loss"]),
            ("BERT MLM accuracy", bert_before["mlm_accuracy"], bert_after["mlm_accuracy"]),
            ("BERT NSP accuracy", bert_before["nsp_accuracy"], bert_after["nsp_accuracy"]),
            ("GPT LM loss", gpt_before["lm_loss"], gpt_after["lm_loss"]),
            ("GPT perplexity", gpt_before["perplexity"], gpt_after["perplexity"]),
            ("GPT next-token accuracy", gpt_before["next_token_accuracy"], gpt_after["next_token_accuracy"]),
            ("GPT loss, labels shifted twice", "", mistake_loss),
            ("unigram loss at BERT's masked positions", "", baselines["mlm_loss"]),
            ("unigram loss at GPT's targets", "", baselines["lm_loss"])]
    print(runs.markdown_table([{"held-out metric": name, "before": before, "after": after}
                               for name, before, after in rows]))


def main(argv: list[str] | None = None) -> dict:
    parser = build_argument_parser()
    args = parser.parse_args(argv)
    apply_smoke_sizes(args)
    check_options(args, parser)
    run_dir = cli.start_run(args, "pretraining_objectives")
    device = training.select_device(args.device)
    started = time.perf_counter()

    corpus = load_corpus(args, run_dir)
    bert, bert_run, bert_held_out = pretrain_bert(args, corpus, device)
    gpt, gpt_run, gpt_held_out, train_blocks = pretrain_gpt(args, corpus, device)
    mistake_loss = double_shift_loss(gpt, gpt_held_out, device, args.precision)
    logger.info("GPT 验证集：正确移位的 loss %.3f；labels 先移一位再交给 GPT2LMHeadModel（移了两次）的 loss %.3f",
                gpt_run.evaluations[-1]["lm_loss"], mistake_loss)

    if runs.is_main_process():
        for name, model in (("bert", bert), ("gpt", gpt)):
            model.save_pretrained(run_dir / name)
            corpus.tokenizer.save_pretrained(run_dir / name)
        runs.write_json(run_dir / "history.json", {"bert": {"train": bert_run.history, "held_out": bert_run.evaluations},
                                                   "gpt": {"train": gpt_run.history, "held_out": gpt_run.evaluations}})
    baselines = baseline_values(corpus, bert_held_out, train_blocks, gpt_held_out)
    plot_pretraining_curves(bert_run, gpt_run, run_dir / "pretraining_curves.png", baselines)

    bert_before, bert_after = bert_run.evaluations[0], bert_run.evaluations[-1]
    gpt_before, gpt_after = gpt_run.evaluations[0], gpt_run.evaluations[-1]
    last_steps = bert_run.history[-max(1, len(bert_run.history) // 10):]
    summary = {
        "bert_val_mlm_accuracy": bert_after["mlm_accuracy"],
        "bert_val_nsp_accuracy": bert_after["nsp_accuracy"],
        "gpt_val_perplexity": gpt_after["perplexity"],
        "bert_val_mlm_loss": bert_after["mlm_loss"],
        "bert_val_mlm_loss_before": bert_before["mlm_loss"],
        "bert_val_mlm_accuracy_before": bert_before["mlm_accuracy"],
        "bert_val_nsp_loss": bert_after["nsp_loss"],
        "bert_val_nsp_accuracy_before": bert_before["nsp_accuracy"],
        "bert_train_nsp_accuracy_last_10pct": sum(record["nsp_accuracy"] for record in last_steps) / len(last_steps),
        "gpt_val_loss": gpt_after["lm_loss"],
        "gpt_val_loss_before": gpt_before["lm_loss"],
        "gpt_val_perplexity_before": gpt_before["perplexity"],
        "gpt_val_next_token_accuracy": gpt_after["next_token_accuracy"],
        "gpt_val_double_shift_loss": mistake_loss,
        "bert_val_unigram_loss": baselines["mlm_loss"],
        "gpt_val_unigram_loss": baselines["lm_loss"],
        "train_paragraphs": len(corpus.train_documents),
        "held_out_paragraphs": len(corpus.held_out_documents),
        "train_tokens": count_tokens(corpus.train_documents),
        "vocab_size": corpus.vocab_size,
        "held_out_nsp_pairs": sum(len(batch["next_sentence_label"]) for batch in bert_held_out),
        "held_out_masked_tokens": sum(int((batch["labels"] != IGNORE_INDEX).sum()) for batch in bert_held_out),
        "held_out_lm_tokens": sum(int(batch["attention_mask"][:, 1:].sum()) for batch in gpt_held_out),
        "train_lm_blocks": len(train_blocks),
        "bert_parameters": sum(parameter.numel() for parameter in bert.parameters()),
        "gpt_parameters": sum(parameter.numel() for parameter in gpt.parameters()),
        "bert_steps": bert_run.history[-1]["step"],
        "gpt_steps": gpt_run.history[-1]["step"],
        "bert_seconds": round(bert_run.seconds, 1),
        "gpt_seconds": round(gpt_run.seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }
    runs.save_metrics(run_dir, summary)
    if runs.is_main_process():
        print_results(bert_run, gpt_run, mistake_loss, baselines)
        print(f"图、指标和两个模型（bert/、gpt/，可用 from_pretrained 加载）在 {run_dir}")
    return summary


if __name__ == "__main__":
    cli.run_script(main)
