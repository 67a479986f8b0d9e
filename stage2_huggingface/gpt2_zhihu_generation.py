"""GPT-2 生成知乎风格的回答（路线图：文本生成：GPT-2 生成知乎风格回答（中文问题 → 回答））

学什么
- 把问答对写成一段提示加续写："[CLS]问题：……\n回答：……[SEP]"，在它上面微调一个因果语言模型
  （GPT2LMHeadModel）。默认 --model 是 uer/gpt2-chinese-cluecorpussmall：GPT-2 的结构配 bert-base-chinese
  的词表，分词器是 BertTokenizer（按字切分，有 [CLS]/[SEP]/[PAD]），所以 [CLS] 当开头、[SEP] 当结尾。
  BertTokenizer 把 "\n" 当空白丢掉，提示里的换行只是给人看的。
- 只在回答的 token 上算 loss（提示位置的 labels 是 -100）：用的时候问题是给定的，要学、要评的都是 p(回答 | 问题)。
  问题也算 loss 的话，训练 loss 里混进了"模仿提问"，提示长、回答短时它占了大半梯度，训练 loss 也就不再是
  回答的 loss。这是微调预训练模型（SFT）的通常做法。只在回答位置上算输出层（hidden → 21,128 维的 logits）
  还省掉了提示位置上这一步最贵的计算。--prompt-loss 换成整段都算 loss（验证集困惑度仍只在回答上算），
  可以直接比。注意下面的实测：从零训练、数据又少时，问题里的字是额外的中文语料，整段算 loss 反而略好。
- 困惑度（perplexity）= exp(验证集上全部回答 token 的平均负对数似然)，训练前后各算一次；回答末尾的 [SEP]
  也算一个 token（模型要学会在哪里停）。对照：按训练集回答里的字频猜（unigram）的困惑度。
- 生成的常用控制：--do-sample（否则 greedy）、--temperature、--top-k、--top-p、--repetition-penalty、
  --no-repeat-ngram-size、--max-new-tokens。[PAD]/[CLS]/[UNK]/[MASK] 永远不该出现在回答里，生成时屏蔽。
- 一批长短不一的提示要补齐成矩形：因果模型补在左边（left padding）。右补齐时，短提示后面跟着 [PAD]，
  模型从最后一列（一个 [PAD]）接着往下写，看到的不是"回答："而是一串补齐符。左补齐时还要两样东西：
  attention_mask（补齐位置不被注意）和 position ids = cumsum(attention_mask) - 1（第一个真实 token 的位置是 0，
  而不是补齐的个数）；HF 的 generate 按 attention_mask 自动算后者。脚本训练完在验证集的问题上检查：
  greedy 下逐条生成与左补齐的一批生成逐字相同，右补齐则不同（结果写进 metrics.json）。

数据：--train-file 给 JSONL（每行 {"question": ..., "answer": ...}）或 SQuAD 格式的 JSON。不给时用
CMRC 2018 开发集（中文维基百科阅读理解，848 个段落、3,219 个问题）：问题 + 段落里含答案的那一句（按 answer_start
定位；三处 answer_start 偏了一两个字，取离它最近的答案原文）当回答。按段落固定划分（与 --seed 无关）：
10% 的段落的问题留作验证集，所以验证集的回答句从没在训练里出现过。
--smoke 用仓库自带的 22 个自写问答（data/samples/zhihu/zhihu_qa.jsonl）和 roadmap.tiny 的极小中文 GPT-2。

怎么跑
    roadmap run gpt2_zhihu_generation --smoke                       # 自带样本 + 极小模型，几秒
    roadmap run gpt2_zhihu_generation --train-file my_qa.jsonl       # 微调 uer/gpt2-chinese-cluecorpussmall（要联网下载）
    ROADMAP_DATA_DIR=/path/to/data roadmap run gpt2_zhihu_generation --init scratch   # 离线：从零训练小 GPT-2
    roadmap run gpt2_zhihu_generation --generate "为什么天空是蓝色的？" --checkpoint runs/gpt2_zhihu_generation/<时间戳> \\
        --do-sample --top-p 0.9 --temperature 0.8
    Python 里：generate_answers(model, tokenizer, ["问题一", "问题二"], max_new_tokens=60, do_sample=True, top_p=0.9)

真实数据上的结果（--init scratch 的默认选项：4 层、256 宽、4 个头、256 个位置、dropout 0.1，863 万参数，其中 541 万
在 21,128 x 256 的词向量上（输出层与它共享）；batch 16，AdamW 1e-3，前 10% 步数预热再线性衰减，3 个 epoch = 543 步）。
CMRC 2018 开发集 3,219 个问题全部可用：训练 763 个段落的 2,888 对（140,333 个回答 token），验证 85 个段落的 331 对
（16,744 个回答 token）：
                                   训练前    108 步   216 步   324 步   432 步   543 步
    验证集回答困惑度               22,892    806      458      343      292      271
    按训练集字频猜（unigram）      1,017
    --prompt-loss（问题也算 loss）  22,892    691      401      315      276      261
  - 随机初始化时困惑度约等于词表大小（21,128）；108 步（0.6 个 epoch）时已低于 unigram 基线，模型开始用问题。
  - --prompt-loss 在这里一直略好（差距从 108 步的 806 比 691 缩到最后的 271 比 261）：没有预训练的小模型缺的是
    中文本身，训练集的 2,888 个问题多给了它约 4.6 万个 token 的文字（不算"问题：""回答："模板）。
    预训练模型已见过大量中文，这份好处应小得多（没有实测），所以通常仍只按回答算 loss。
  - 补齐检查（8 个验证集问题，greedy）：左补齐 8/8 与逐条生成逐字相同，右补齐只有 1/8 相同。
  - 生成（默认：greedy + repetition_penalty 1.2 + no_repeat_ngram_size 3）：
      北京是哪个国家的首都？ -> 南部（），又称为中国际地区，是一种。
      长江发源于哪里？       -> 长（），是一个名：长于印度、马达加斯特兰州、东南部分布于印尼亚、西亚、印度的岛、印公里。
      《红楼梦》的作者是谁？ -> 《本名为《日本文版本），由于2008年代表作品。
    不加后两个控制的纯 greedy 会陷进循环（"北京（）是一个大学家，是一个大学家，是一个大学家，……"）。
    模型学到了维基百科句子的样子（"X（）是一个……"；CMRC 的 848 个段落里有 179 个含空括号"（）"），常照抄问题
    开头的一两个字，但说不出事实：它只见过 14 万个回答 token，没有预训练。要像样的回答需要 uer/gpt2-chinese-cluecorpussmall
    这样在大语料上预训练过的权重（默认的 --init pretrained，要联网下载）。
  - 用时：2 核 CPU、与其他任务共用（OMP_NUM_THREADS=1）：训练 738 秒（--prompt-loss 773 秒），整个脚本约 13 分钟。
NOTE: --init pretrained（真正的 uer/gpt2-chinese-cluecorpussmall 权重）离线只用 --smoke 的极小模型跑通过。
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from roadmap import cli, data, runs, tiny, training
from stage2_transformer.pretraining_objectives import (CMRC_FILE, CMRC_SHA256, CMRC_URL, IGNORE_INDEX, build_gpt,
                                                       find_vocab_file, moving_average, precision_context,
                                                       split_held_out, split_sentences, to_device, train_steps,
                                                       unigram_loss)

logger = logging.getLogger(__name__)

SAMPLE_FILE = data.SAMPLES_DIR / "zhihu" / "zhihu_qa.jsonl"
PROMPT_PREFIX, PROMPT_SUFFIX = "问题：", "\n回答："
MODEL_SUBDIR = "model"
SAMPLES_FILE = "samples.json"


# ---------------------------------------------------------------- 数据：JSONL 问答对、SQuAD 格式（CMRC 2018）


@dataclass(frozen=True)
class QAPair:
    """One question with its answer; `group` keeps pairs from the same paragraph on the same side of the split."""

    question: str
    answer: str
    group: str


def load_jsonl_pairs(path: str | Path) -> list[QAPair]:
    """Read one {"question": ..., "answer": ...} object per line; blank lines are skipped.

    Raises DataFormatError (naming the line) for bad JSON, a non-object line, a missing key, an
    empty or non-string value, and for a file with no pairs.
    """
    path, pairs = Path(path), []
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as error:
        raise data.DataFormatError(f"{path} 不是 UTF-8 编码的文本文件：{error}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise data.DataFormatError(f"{path} 第 {number} 行不是合法的 JSON：{error}") from None
        if not isinstance(record, dict):
            raise data.DataFormatError(f"{path} 第 {number} 行应是 JSON 对象，而是 {type(record).__name__}")
        for key in ("question", "answer"):
            if key not in record:
                raise data.DataFormatError(f"{path} 第 {number} 行缺少键 \"{key}\"；这一行的键：{', '.join(record) or '（无）'}")
            if not isinstance(record[key], str) or not record[key].strip():
                raise data.DataFormatError(f"{path} 第 {number} 行的 \"{key}\" 应是非空字符串，收到 {record[key]!r}")
        pairs.append(QAPair(record["question"].strip(), record["answer"].strip(), group=f"line-{number}"))
    if not pairs:
        raise data.DataFormatError(f"{path} 是空的：没有问答对（每行一个 {{\"question\": ..., \"answer\": ...}}）")
    return pairs


def locate_answer(context: str, text: str, answer_start: int) -> int | None:
    """Return where `text` starts in `context`: at answer_start when it matches, else its nearest occurrence."""
    if context[answer_start:answer_start + len(text)] == text:
        return answer_start
    starts = [match.start() for match in re.finditer(re.escape(text), context)]
    return min(starts, key=lambda start: abs(start - answer_start)) if starts else None


def answer_sentence(context: str, text: str, answer_start: int) -> str | None:
    """Return the sentence(s) of `context` that contain the answer span, or None when the span is not found.

    Sentences come from split_sentences (after 。！？!? and at line breaks); an answer that
    crosses a sentence end gets every sentence it overlaps, joined.
    """
    start = locate_answer(context, text, answer_start) if text else None
    if start is None:
        return None
    end, cursor, covering = start + len(text), 0, []
    for sentence in split_sentences(context):
        sentence_start = context.find(sentence, cursor)  # split_sentences 只去掉了首尾空白，句子仍是 context 的子串
        cursor = sentence_start + len(sentence)
        if sentence_start < end and cursor > start:
            covering.append(sentence)
    return "".join(covering) or None


def load_squad_pairs(path: str | Path) -> tuple[list[QAPair], int]:
    """Read a SQuAD-style JSON (data -> paragraphs -> qas): each question with its answer sentence.

    The first answer of each question is used. Returns (pairs, skipped), where skipped counts
    questions without a question text or answers, or whose answer text is not in the paragraph.
    """
    path = Path(path)
    try:
        content = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise data.DataFormatError(f"{path} 不是 UTF-8 编码的合法 JSON：{error}") from None
    if not isinstance(content, dict) or not isinstance(content.get("data"), list):
        raise data.DataFormatError(f"{path} 应是 SQuAD 格式：顶层是带 \"data\" 列表的 JSON 对象")
    pairs, skipped = [], 0
    for article_index, article in enumerate(content["data"]):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        for paragraph_index, paragraph in enumerate(paragraphs if isinstance(paragraphs, list) else [None]):
            where = f"data[{article_index}].paragraphs[{paragraph_index}]"
            if not (isinstance(paragraph, dict) and isinstance(paragraph.get("context"), str)
                    and isinstance(paragraph.get("qas"), list) and all(isinstance(qa, dict) for qa in paragraph["qas"])):
                raise data.DataFormatError(f"{path}：{where} 应是带字符串 \"context\" 和问题列表 \"qas\" 的对象")
            for qa in paragraph["qas"]:
                answers, question = qa.get("answers"), qa.get("question")
                first = answers[0] if isinstance(answers, list) and answers and isinstance(answers[0], dict) else {}
                text, start = first.get("text"), first.get("answer_start")  # 只用第一个参考答案
                sentence = (answer_sentence(paragraph["context"], text, start)
                            if isinstance(text, str) and isinstance(start, int) else None)
                if sentence is None or not isinstance(question, str) or not question.strip():
                    skipped += 1
                    continue
                pairs.append(QAPair(question.strip(), sentence, group=f"{article_index}-{paragraph_index}"))
    if not pairs:
        raise data.DataFormatError(f"{path} 里没有可用的问答对（问题 + 能在段落里找到的答案）")
    return pairs, skipped


def load_qa_pairs(args: argparse.Namespace) -> tuple[Path, list[QAPair], int]:
    """Return (file, pairs, skipped questions) for --train-file, the bundled sample (--smoke) or CMRC 2018."""
    if args.train_file is not None:
        path = args.train_file
        if not path.is_file():
            raise data.DataNotFoundError(f"找不到 --train-file 指定的文件：{path}")
    elif args.smoke:
        path = SAMPLE_FILE
    else:
        path = data.find_dataset("cmrc2018", (CMRC_FILE,), args.data_dir, urls={CMRC_FILE: CMRC_URL},
                                 checksums={CMRC_FILE: CMRC_SHA256}) / CMRC_FILE
    if path.suffix.lower() == ".jsonl":
        return path, load_jsonl_pairs(path), 0
    if path.suffix.lower() == ".json":
        return (path, *load_squad_pairs(path))
    raise data.DataFormatError(f"{path}：不支持的扩展名；问答对用 .jsonl，SQuAD 格式用 .json")


def split_pairs(pairs: Sequence[QAPair]) -> tuple[list[QAPair], list[QAPair]]:
    """Hold out ~10% of the groups (paragraphs, or single JSONL lines) with a fixed seed; return (train, held-out)."""
    groups = sorted({pair.group for pair in pairs})
    if len(groups) < 4:
        raise data.DataFormatError(f"数据太少：至少要 4 个问答对（SQuAD 文件：4 个段落）才能分出验证集，只有 {len(groups)} 个")
    held_out = set(split_held_out(groups)[1])
    return [pair for pair in pairs if pair.group not in held_out], [pair for pair in pairs if pair.group in held_out]


# ---------------------------------------------------------------- 编码：提示 + 回答，只给回答打标签


@dataclass(frozen=True)
class SpecialIds:
    start: int | None  # 序列开头（BERT 词表的 [CLS]；英文 GPT-2 没有就不加）
    end: int           # 回答结尾（[SEP]），生成到它就停
    pad: int
    never_generate: tuple[int, ...]  # 回答里不该出现的特殊 token


def special_ids(tokenizer) -> SpecialIds:
    end = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if end is None:
        raise SystemExit("分词器既没有 [SEP] 也没有 eos token，回答没法结尾；请换一个模型")
    start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end
    never = {tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.unk_token_id, tokenizer.mask_token_id} - {None, end}
    return SpecialIds(start, end, pad, tuple(sorted(never)))


def encode_prompt(tokenizer, question: str, max_question_tokens: int) -> list[int]:
    """Return the ids of "[CLS]问题：<question>\\n回答：", the question cut to max_question_tokens tokens."""
    ids = special_ids(tokenizer)
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    question_ids = encode(question)[:max_question_tokens]
    return ([] if ids.start is None else [ids.start]) + encode(PROMPT_PREFIX) + question_ids + encode(PROMPT_SUFFIX)


def encode_example(tokenizer, pair: QAPair, max_question_tokens: int, max_answer_tokens: int,
                   prompt_loss: bool = False) -> tuple[list[int], list[int]]:
    """Return (input_ids, labels) of prompt + answer + [SEP]; labels are -100 on the prompt unless prompt_loss.

    labels are not shifted: GPT2LMHeadModel (and answer_nll) score logits[t] against labels[t + 1],
    so the first answer token is predicted from the last prompt token "：".
    """
    prompt = encode_prompt(tokenizer, pair.question, max_question_tokens)
    answer = tokenizer(pair.answer, add_special_tokens=False)["input_ids"][:max_answer_tokens] + [special_ids(tokenizer).end]
    labels = (list(prompt) if prompt_loss else [IGNORE_INDEX] * len(prompt)) + answer
    return prompt + answer, labels


def collate(sequences: Sequence[Sequence[int]], pad_id: int, labels: Sequence[Sequence[int]] | None = None,
            padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Pad to one (B, T) batch: input_ids, attention_mask, and labels (-100 at padding) when given."""
    length = max(len(sequence) for sequence in sequences)
    batch = {"input_ids": torch.full((len(sequences), length), pad_id, dtype=torch.long),
             "attention_mask": torch.zeros((len(sequences), length), dtype=torch.long)}
    if labels is not None:
        batch["labels"] = torch.full((len(sequences), length), IGNORE_INDEX, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        columns = slice(length - len(sequence), length) if padding_side == "left" else slice(0, len(sequence))
        batch["input_ids"][row, columns] = torch.tensor(sequence)
        batch["attention_mask"][row, columns] = 1
        if labels is not None:
            batch["labels"][row, columns] = torch.tensor(labels[row])
    return batch


def position_ids_from_attention_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of each token among the real tokens of its row: cumsum(mask) - 1 (padding gets 0).

    Under right padding this is 0, 1, 2, ... as usual; under left padding the first real token
    gets 0 instead of the number of pads before it. generate() computes the same from attention_mask.
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


# ---------------------------------------------------------------- loss 与困惑度


def answer_nll(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Return (sum of -log p over labelled tokens, their count); position t predicts labels[t + 1].

    The LM head (hidden -> vocabulary logits) runs only where a label is, not on prompt or padding.
    The mean, sum / count, equals GPT2LMHeadModel(..., labels=labels).loss.
    """
    hidden = model.transformer(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               position_ids=position_ids_from_attention_mask(batch["attention_mask"])
                               ).last_hidden_state  # (B, T, H)
    targets = batch["labels"][:, 1:]                # (B, T-1)
    scored = targets != IGNORE_INDEX
    logits = model.lm_head(hidden[:, :-1][scored])  # (N, H) -> (N, V)
    return F.cross_entropy(logits.float(), targets[scored], reduction="sum"), int(scored.sum())


@torch.no_grad()
def evaluate_perplexity(model, batches: Sequence[dict[str, torch.Tensor]], device: torch.device,
                        precision: str = "fp32") -> dict[str, float]:
    """Return held-out answer loss (mean token NLL) and perplexity = exp(loss), over all batches' tokens."""
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        with precision_context(precision, device):
            nll, tokens = answer_nll(model, to_device(batch, device))
        total, count = total + nll.item(), count + tokens
    loss = total / count
    return {"answer_loss": loss, "perplexity": math.exp(loss)}


def make_batches(examples: Sequence[tuple[list[int], list[int]]], batch_size: int, pad_id: int,
                 shuffle_seed: str | None = None) -> list[dict[str, torch.Tensor]]:
    """Right-pad encoded (input_ids, labels) examples into batches, shuffled with `shuffle_seed` when given."""
    examples = list(examples)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(examples)
    chunks = [examples[start:start + batch_size] for start in range(0, len(examples), batch_size)]
    return [collate([ids for ids, _ in chunk], pad_id, [labels for _, labels in chunk]) for chunk in chunks]


# ---------------------------------------------------------------- 生成


def decode_answer(tokenizer, ids: Sequence[int]) -> str:
    """Turn generated ids into text: stop at [SEP], drop special tokens, join Chinese characters without spaces."""
    end = special_ids(tokenizer).end
    ids = list(ids)
    ids = ids[:ids.index(end)] if end in ids else ids
    text = ""
    for token in tokenizer.convert_ids_to_tokens(ids, skip_special_tokens=True):
        if token.startswith("##"):
            text += token[2:]
        elif text and text[-1].isascii() and text[-1].isalnum() and token[0].isascii() and token[0].isalnum():
            text += " " + token  # 两个英文词 / 数字之间留空格，中文字之间不留
        else:
            text += token
    return text


@torch.no_grad()
def generate_ids(model, tokenizer, questions: Sequence[str], *, max_new_tokens: int = 64, do_sample: bool = False,
                 temperature: float = 1.0, top_k: int = 50, top_p: float = 1.0, repetition_penalty: float = 1.0,
                 no_repeat_ngram_size: int = 0, max_question_tokens: int = 48, batch_size: int = 16,
                 padding_side: str = "left", seed: int | None = None) -> list[list[int]]:
    """Return the new token ids for each question (prompt removed; after the end token comes padding).

    Prompts are batched with `padding_side` padding and an attention_mask. Greedy unless do_sample;
    temperature, top_k and top_p apply only when sampling, and `seed` fixes the sampling.
    padding_side="right" exists only to show what goes wrong with it.
    """
    model.eval()
    device = next(model.parameters()).device
    ids = special_ids(tokenizer)
    controls: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": do_sample,
                                "repetition_penalty": repetition_penalty, "no_repeat_ngram_size": no_repeat_ngram_size}
    if do_sample:
        controls.update(temperature=temperature, top_k=top_k, top_p=top_p)
        if seed is not None:
            torch.manual_seed(seed)
    prompts = [encode_prompt(tokenizer, question, max_question_tokens) for question in questions]
    longest = max(len(prompt) for prompt in prompts)
    if longest + max_new_tokens > model.config.n_positions:
        raise ValueError(f"提示最长 {longest} 个 token，加上 max_new_tokens={max_new_tokens} 超过了模型的 "
                         f"{model.config.n_positions} 个位置；请减小 --max-new-tokens 或 --max-question-tokens")
    new_ids = []
    for start in range(0, len(prompts), batch_size):
        batch = to_device(collate(prompts[start:start + batch_size], ids.pad, padding_side=padding_side), device)
        # repetition_penalty 和 no_repeat_ngram_size 把左边的 [PAD] 也当作"出现过"，但 [PAD] 被屏蔽、本来就不会生成，
        # 所以左补齐的一批与逐条生成的结果仍然相同。
        output = model.generate(**batch, **controls, pad_token_id=ids.pad, eos_token_id=ids.end,
                                bos_token_id=ids.start, suppress_tokens=list(ids.never_generate) or None)
        width = batch["input_ids"].shape[1]  # output (B, width + 新 token)：每行的提示（连同补齐）占前 width 列
        new_ids.extend(row[width:].tolist() for row in output)
    return new_ids


def generate_answers(model, tokenizer, questions: Sequence[str], **controls) -> list[str]:
    """Generate one answer per question; `controls` are generate_ids' keyword arguments (max_new_tokens, do_sample, ...)."""
    return [decode_answer(tokenizer, ids) for ids in generate_ids(model, tokenizer, questions, **controls)]


def padding_check(model, tokenizer, questions: Sequence[str], args: argparse.Namespace) -> dict[str, int]:
    """Count the questions whose greedy answer in a padded batch equals the answer generated alone."""
    options = {"max_new_tokens": args.max_new_tokens, "no_repeat_ngram_size": args.no_repeat_ngram_size,
               "repetition_penalty": args.repetition_penalty, "max_question_tokens": args.max_question_tokens}
    alone = [generate_answers(model, tokenizer, [question], **options)[0] for question in questions]
    counts = {"padding_check_questions": len(questions)}
    logger.info("补齐检查：greedy 下逐条生成 vs 一批生成；右补齐是故意的，HF 会为它打一条 right-padding 警告")
    for side in ("left", "right"):
        batched = generate_answers(model, tokenizer, questions, padding_side=side, batch_size=len(questions), **options)
        counts[f"padding_check_{side}_same_as_alone"] = sum(a == b for a, b in zip(alone, batched))
    return counts


# ---------------------------------------------------------------- 模型


def load_model_and_tokenizer(args: argparse.Namespace):
    """Return (model, tokenizer): --model's weights (tiny under --smoke), or a small GPT-2 from scratch (--init scratch)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, BertTokenizerFast

    if args.init == "pretrained":
        name = tiny.resolve_model(args.model, args.smoke)
        return AutoModelForCausalLM.from_pretrained(name), AutoTokenizer.from_pretrained(name)
    if args.smoke:
        tokenizer = AutoTokenizer.from_pretrained(tiny.tiny_model_dir("gpt2-chinese"))
    else:
        tokenizer = BertTokenizerFast(vocab_file=str(find_vocab_file(args)))
    ids = special_ids(tokenizer)
    torch.manual_seed(args.seed)
    model_args = argparse.Namespace(**{**vars(args), "block_size": args.max_positions})
    model = build_gpt(model_args, len(tokenizer), ids.start, ids.end, ids.pad)
    return model, tokenizer


def save_model(model, tokenizer, folder: Path) -> Path:
    """Save model and tokenizer, with the generation settings of this script in generation_config.json."""
    ids = special_ids(tokenizer)
    model.generation_config.update(bos_token_id=ids.start, eos_token_id=ids.end, pad_token_id=ids.pad)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def load_checkpoint(path: Path):
    """Load (model, tokenizer) from a run folder (its model/ subfolder) or from a model folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = path / MODEL_SUBDIR if (path / MODEL_SUBDIR / "config.json").is_file() else path
    if not (folder / "config.json").is_file():
        raise SystemExit(f"{path} 里没有模型：需要 {path}/{MODEL_SUBDIR}/config.json，或直接给一个模型文件夹")
    model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    if model_type != "gpt2":
        raise SystemExit(f"{folder} 不是 GPT-2 模型（config.json 的 model_type 是 {model_type!r}）；"
                         "请给本脚本训练出的运行目录，或一个 GPT-2 模型文件夹")
    return AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


# ---------------------------------------------------------------- 主程序


def build_argument_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser(__doc__.splitlines()[0], epochs=3, batch_size=16, lr=5e-5, shared_loop=False)
    group = parser.add_argument_group("数据与模型")
    group.add_argument("--train-file", type=Path, default=None,
                       help="问答数据：.jsonl（每行 {\"question\", \"answer\"}）或 SQuAD 格式 .json；不给时用 CMRC 2018")
    group.add_argument("--model", default="uer/gpt2-chinese-cluecorpussmall", help="--init pretrained 时的 hub 名或本地文件夹")
    group.add_argument("--init", choices=("pretrained", "scratch"), default="pretrained",
                       help="pretrained：微调 --model 的权重；scratch：随机初始化的小 GPT-2，用 bert-base-chinese 的词表")
    group.add_argument("--vocab-file", type=Path, default=None,
                       help="scratch 用的 WordPiece 词表；不给时用数据目录里的 tokenizers/bert-base-chinese/vocab.txt")
    group.add_argument("--hidden-size", type=cli.positive_int, default=256, help="scratch 模型的 hidden size")
    group.add_argument("--num-layers", type=cli.positive_int, default=4, help="scratch 模型的层数")
    group.add_argument("--num-heads", type=cli.positive_int, default=4, help="scratch 模型的注意力头数，要整除 --hidden-size")
    group.add_argument("--max-positions", type=cli.positive_int, default=256, help="scratch 模型的位置数（最长序列）")
    group.add_argument("--dropout", type=float, default=0.1, help="scratch 模型的 dropout 概率")
    group.add_argument("--scratch-lr", type=cli.positive_float, default=1e-3,
                       help="scratch 模型的学习率（从零训练的小模型要比微调常用的 5e-5 大得多）")
    group.add_argument("--max-question-tokens", type=cli.positive_int, default=48, help="问题最多保留多少个 token")
    group.add_argument("--max-answer-tokens", type=cli.positive_int, default=96, help="训练时回答最多保留多少个 token")
    group.add_argument("--prompt-loss", action="store_true",
                       help="训练时提示部分也算 loss（对照实验）；验证集困惑度仍只在回答上算")

    group = parser.add_argument_group("训练")
    group.add_argument("--max-steps", type=cli.positive_int, default=None, help="最多训练多少步；不给时跑满 --epochs")
    group.add_argument("--eval-every", type=cli.positive_int, default=None, help="每多少步评估一次验证集困惑度；默认约 5 次")
    group.add_argument("--weight-decay", type=float, default=0.01, help="AdamW 的权重衰减")
    group.add_argument("--warmup-fraction", type=float, default=0.1, help="学习率线性预热占总步数的比例")

    group = parser.add_argument_group("生成")
    group.add_argument("--generate", default=None, metavar="QUESTION", help="对这个问题生成一个回答")
    group.add_argument("--checkpoint", type=Path, default=None, metavar="RUN_DIR",
                       help="和 --generate 一起用：从这个运行目录（或模型文件夹）加载，不再训练")
    group.add_argument("--max-new-tokens", type=cli.positive_int, default=64, help="最多生成多少个新 token")
    group.add_argument("--do-sample", action="store_true", help="按概率采样；不加则 greedy（每步取概率最大的 token）")
    group.add_argument("--temperature", type=cli.positive_float, default=0.8, help="采样温度：<1 更保守，>1 更随机")
    group.add_argument("--top-k", type=int, default=50, help="采样只在概率最高的 k 个 token 里进行；0 表示不限")
    group.add_argument("--top-p", type=float, default=0.9, help="nucleus 采样：只在累计概率达到 p 的最小集合里采样")
    group.add_argument("--repetition-penalty", type=cli.positive_float, default=1.2,
                       help="已出现过的 token 的 logit 除以（为负时乘以）这个数；1 表示不惩罚")
    group.add_argument("--no-repeat-ngram-size", type=int, default=3, help="禁止重复出现的 n-gram 长度；0 表示不限")
    group.add_argument("--num-samples", type=cli.positive_int, default=8, help="训练后为多少个验证集问题生成回答")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_argument_parser()
    args = parser.parse_args(argv)
    cli.check_predict_options(parser, args, option="generate", noun="问题")
    if args.hidden_size % args.num_heads:
        parser.error(f"--hidden-size {args.hidden_size} 必须能被 --num-heads {args.num_heads} 整除")
    if not 0.0 <= args.dropout < 1.0 or not 0.0 <= args.warmup_fraction < 1.0:
        parser.error("--dropout 和 --warmup-fraction 必须在 [0, 1) 之间")
    if not 0.0 < args.top_p <= 1.0 or args.top_k < 0 or args.no_repeat_ngram_size < 0:
        parser.error("--top-p 要在 (0, 1] 之间，--top-k 和 --no-repeat-ngram-size 不能是负数")
    return args


def apply_smoke_sizes(args: argparse.Namespace) -> None:
    cli.apply_smoke(args, epochs=2)
    if args.smoke:
        args.batch_size = min(args.batch_size, 8)
        args.hidden_size, args.num_layers, args.num_heads, args.max_positions = 32, 2, 2, 128
        args.max_new_tokens, args.num_samples = min(args.max_new_tokens, 16), min(args.num_samples, 4)
        args.max_question_tokens, args.max_answer_tokens = min(args.max_question_tokens, 32), min(args.max_answer_tokens, 48)


def generation_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"max_new_tokens": args.max_new_tokens, "do_sample": args.do_sample, "temperature": args.temperature,
            "top_k": args.top_k, "top_p": args.top_p, "repetition_penalty": args.repetition_penalty,
            "no_repeat_ngram_size": args.no_repeat_ngram_size, "max_question_tokens": args.max_question_tokens,
            "seed": args.seed}


def plot_losses(run, path: Path, unigram: float) -> Path:
    """Plot the training answer loss (moving average) and the held-out answer loss by step, with the unigram reference."""
    from roadmap.plots import plt, save_figure  # roadmap.plots 导入时选好 Agg 后端

    window = max(1, len(run.history) // 20)
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot([r["step"] for r in run.history], moving_average([r["loss"] for r in run.history], window),
              label=f"train (moving average of {window})")
    axis.plot([r["step"] for r in run.evaluations], [r["answer_loss"] for r in run.evaluations], marker="o",
              label="held-out answer tokens")
    axis.axhline(unigram, color="gray", linestyle="--", linewidth=1, label="unigram (no context), held-out")
    axis.set(xlabel="step", ylabel="loss (mean token NLL)", title="answer loss")
    axis.grid(alpha=0.3)
    axis.legend()
    return save_figure(figure, path)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.checkpoint is not None:
        cli.setup_logging()
        model, tokenizer = load_checkpoint(args.checkpoint)
        try:
            answer = generate_answers(model, tokenizer, [args.generate], **generation_options(args))[0]
        except ValueError as error:  # 例如提示加 --max-new-tokens 超过模型的位置数：给一行说明，不给 traceback
            raise SystemExit(str(error)) from error
        print(f"问题：{args.generate}\n回答：{answer}")
        return {"question": args.generate, "answer": answer}

    apply_smoke_sizes(args)
    run_dir = cli.start_run(args, "gpt2_zhihu_generation")
    device = training.select_device(args.device)
    started = time.perf_counter()

    path, pairs, skipped = load_qa_pairs(args)
    train_pairs, held_out_pairs = split_pairs(pairs)
    train_pairs = train_pairs[:args.max_train_samples]
    model, tokenizer = load_model_and_tokenizer(args)
    model.to(device)
    args.lr = args.scratch_lr if args.init == "scratch" else args.lr
    parameters = sum(p.numel() for p in model.parameters())
    logger.info("%s：%d 个问答对（跳过 %d 个），训练 %d、验证 %d；模型 %s，%d 个参数，词表 %d", path, len(pairs), skipped,
                len(train_pairs), len(held_out_pairs), args.init, parameters, len(tokenizer))

    def encode(chosen, prompt_loss=False):
        return [encode_example(tokenizer, pair, args.max_question_tokens, args.max_answer_tokens, prompt_loss)
                for pair in chosen]

    pad_id = special_ids(tokenizer).pad
    train_examples, held_out_examples = encode(train_pairs, args.prompt_loss), encode(held_out_pairs)
    held_out = make_batches(held_out_examples, args.batch_size, pad_id)
    args.max_steps = min(args.max_steps or math.inf, args.epochs * math.ceil(len(train_pairs) / args.batch_size))
    args.eval_every = args.eval_every or max(1, args.max_steps // 5)

    def step_loss(model, batch):
        nll, count = answer_nll(model, batch)
        return nll / count, {"loss": nll.item() / count}

    def epoch_batches(epoch):
        return make_batches(train_examples, args.batch_size, pad_id, shuffle_seed=f"{args.seed}-{epoch}")

    run = train_steps("GPT-2", model, epoch_batches, step_loss,
                      lambda trained: evaluate_perplexity(trained, held_out, device, args.precision), args, device)
    before, after = run.evaluations[0], run.evaluations[-1]
    # 对照：不看上下文、总按训练集回答里的字频猜（所有非 -100 的标签就是回答 token 和结尾的 [SEP]）。
    answer_tokens = [[token for _, labels in examples for token in labels if token != IGNORE_INDEX]
                     for examples in (encode(train_pairs), held_out_examples)]
    unigram = unigram_loss(*answer_tokens, len(tokenizer))

    questions = [pair.question for pair in held_out_pairs[:args.num_samples]]
    questions += [args.generate] if args.generate is not None else []
    generated = generate_answers(model, tokenizer, questions, **generation_options(args))
    references = [pair.answer for pair in held_out_pairs[:args.num_samples]] + [None]
    samples = [{"question": question, "reference": reference, "generated": text}
               for question, reference, text in zip(questions, references, generated)]
    padding = padding_check(model, tokenizer, questions[:args.num_samples], args)

    if runs.is_main_process():
        save_model(model, tokenizer, run_dir / MODEL_SUBDIR)
        runs.write_json(run_dir / SAMPLES_FILE, {"controls": generation_options(args), "samples": samples})
        runs.write_json(run_dir / "history.json", {"train": run.history, "held_out": run.evaluations})
    plot_losses(run, run_dir / "loss_curve.png", unigram)
    summary = {
        "held_out_perplexity": after["perplexity"], "held_out_perplexity_before": before["perplexity"],
        "held_out_answer_loss": after["answer_loss"], "held_out_answer_loss_before": before["answer_loss"],
        "held_out_unigram_perplexity": math.exp(unigram), "init": args.init, "prompt_loss": args.prompt_loss,
        "pairs": len(pairs), "skipped_questions": skipped, "train_pairs": len(train_pairs),
        "held_out_pairs": len(held_out_pairs), "train_answer_tokens": len(answer_tokens[0]),
        "held_out_answer_tokens": len(answer_tokens[1]), "parameters": parameters, "vocab_size": len(tokenizer),
        "steps": run.history[-1]["step"], **padding,
        **({"generated_answer": generated[-1]} if args.generate is not None else {}),
        "train_seconds": round(run.seconds, 1), "seconds": round(time.perf_counter() - started, 1),
    }
    runs.save_metrics(run_dir, summary)
    if runs.is_main_process():
        print(runs.markdown_table([{"held-out (answer tokens)": name, "before": before[key], "after": after[key]}
                                   for name, key in (("loss", "answer_loss"), ("perplexity", "perplexity"))]))
        for sample in samples:
            print(f"\n问题：{sample['question']}\n参考：{sample['reference']}\n生成：{sample['generated']}")
        print(f"\n模型（{MODEL_SUBDIR}/）、{SAMPLES_FILE}、loss_curve.png 和指标在 {run_dir}")
    return summary


if __name__ == "__main__":
    cli.run_script(main)
