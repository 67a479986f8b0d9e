"""gpt2_zhihu_generation: Q/A loaders, answer-only labels, perplexity, padded generation, controls, runs.

The loaders are checked on files written here and on the bundled samples. The labels are checked
on a vocabulary written here, with ids counted by hand. The answer loss is compared with
GPT2LMHeadModel's own loss, and batched generation with generating each question alone. The
models are roadmap.tiny's GPT-2 with the BERT-style Chinese vocabulary.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BertTokenizerFast

from roadmap import data, tiny
from stage2_huggingface import gpt2_zhihu_generation as gen
from stage2_transformer.pretraining_objectives import IGNORE_INDEX, split_sentences

QUESTIONS = ["天", "为什么秋天的树叶会变黄？", "怎样挑选一个好西瓜，有没有简单的办法？"]


@pytest.fixture(scope="module")
def tiny_gpt():
    folder = tiny.tiny_model_dir("gpt2-chinese")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    return model, AutoTokenizer.from_pretrained(folder)


# ---------------------------------------------------------------- 读数据


def test_load_jsonl_pairs_reads_bundled_sample():
    pairs = gen.load_jsonl_pairs(gen.SAMPLE_FILE)
    lines = gen.SAMPLE_FILE.read_text(encoding="utf-8").splitlines()
    assert len(pairs) == len(lines)
    assert pairs[0].question == json.loads(lines[0])["question"]
    assert pairs[-1].answer == json.loads(lines[-1])["answer"]
    assert len({pair.group for pair in pairs}) == len(pairs)


@pytest.mark.parametrize(("content", "expected"), [
    ('{"question": "a", "answer": "b"}\n{"question": "c"}\n', ["第 2 行", "缺少键", "answer"]),
    ('{"question": "a", "answer": "b"}\n\n{"question": "c", "answer": "d",}\n', ["第 3 行", "不是合法的 JSON"]),
    ('["a", "b"]\n', ["第 1 行", "JSON 对象"]),
    ('{"question": "  ", "answer": "b"}\n', ["第 1 行", "question", "非空字符串"]),
    ('{"question": "a", "answer": 3}\n', ["第 1 行", "answer", "非空字符串"]),
    ("\n  \n", ["是空的"]),
    ("", ["是空的"]),
])
def test_load_jsonl_pairs_reports_bad_lines(tmp_path, content, expected):
    path = tmp_path / "qa.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(data.DataFormatError) as caught:
        gen.load_jsonl_pairs(path)
    for fragment in expected:
        assert fragment in str(caught.value)


CONTEXT = "第一句在这里。答案在第二句里！第三句？\n第二行的句子。"


@pytest.mark.parametrize(("text", "start", "expected"), [
    ("答案", 7, "答案在第二句里！"),                      # answer_start 正确
    ("答案", 6, "答案在第二句里！"),                      # 偏了一个字：取最近的出现位置
    ("第二句里！第三", 10, "答案在第二句里！第三句？"),   # 跨过句末：两句都要
    ("第二行", 20, "第二行的句子。"),                     # 换行后的句子
    ("不存在", 0, None),
    ("", 0, None),
])
def test_answer_sentence_hand_cases(text, start, expected):
    assert gen.answer_sentence(CONTEXT, text, start) == expected


def test_locate_answer_prefers_nearest_occurrence():
    context = "甲乙甲乙甲乙"
    assert gen.locate_answer(context, "甲乙", 2) == 2
    assert gen.locate_answer(context, "甲乙", 3) == 2  # 2 和 4 一样近时取先出现的
    assert gen.locate_answer(context, "甲乙", 5) == 4


def write_squad(path: Path, paragraphs) -> Path:
    path.write_text(json.dumps({"version": "v1.0", "data": [{"title": "t", "paragraphs": paragraphs}]},
                               ensure_ascii=False), encoding="utf-8")
    return path


def test_load_squad_pairs_hand_made(tmp_path):
    path = write_squad(tmp_path / "squad.json", [
        {"context": "猫喜欢纸箱。狗喜欢骨头。", "qas": [
            {"question": "狗喜欢什么？", "answers": [{"text": "骨头", "answer_start": 9}]},
            {"question": "猫喜欢什么？", "answers": [{"text": "纸箱", "answer_start": 4}]},  # 偏了一个字
            {"question": "没有答案的问题？", "answers": []},
            {"question": "答案不在段落里？", "answers": [{"text": "鱼", "answer_start": 0}]},
        ]},
        {"context": "第二段只有一句", "qas": [{"question": "第二段？", "answers": [{"text": "一句", "answer_start": 5}]}]},
    ])
    pairs, skipped = gen.load_squad_pairs(path)
    assert [(pair.question, pair.answer) for pair in pairs] == [
        ("狗喜欢什么？", "狗喜欢骨头。"), ("猫喜欢什么？", "猫喜欢纸箱。"), ("第二段？", "第二段只有一句")]
    assert skipped == 2
    assert pairs[0].group == pairs[1].group != pairs[2].group


def test_load_squad_pairs_bundled_cmrc_sample():
    path = data.SAMPLES_DIR / "cmrc2018" / gen.CMRC_FILE
    content = json.loads(path.read_text(encoding="utf-8"))
    questions = [(paragraph["context"], qa) for article in content["data"] for paragraph in article["paragraphs"]
                 for qa in paragraph["qas"]]
    pairs, skipped = gen.load_squad_pairs(path)
    assert skipped == 0
    assert len(pairs) == len(questions)
    for pair, (context, qa) in zip(pairs, questions):
        assert pair.question == qa["question"]
        assert qa["answers"][0]["text"] in pair.answer
        assert pair.answer in split_sentences(context)


@pytest.mark.parametrize("content", ['{"data": 3}', '{"data": [{"paragraphs": [{"qas": []}]}]}', "[1, 2]", "{"])
def test_load_squad_pairs_rejects_bad_format(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(data.DataFormatError):
        gen.load_squad_pairs(path)


def test_split_pairs_keeps_paragraphs_together():
    pairs = [gen.QAPair(f"q{index}", "a", group=f"p{index // 3}") for index in range(60)]
    train, held_out = gen.split_pairs(pairs)
    assert len(train) + len(held_out) == len(pairs)
    assert not {pair.group for pair in train} & {pair.group for pair in held_out}
    assert len(held_out) == 2 * 3  # 20 个段落的 10%，每段 3 个问题
    assert gen.split_pairs(pairs) == (train, held_out)


def test_split_pairs_needs_four_groups():
    with pytest.raises(data.DataFormatError, match="至少要 4 个"):
        gen.split_pairs([gen.QAPair("q", "a", group=str(index)) for index in range(3)])


# ---------------------------------------------------------------- 编码与标签


@pytest.fixture
def hand_tokenizer(tmp_path):
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "问", "题", "回", "答", "：", "天", "蓝", "吗", "是", "的"]
    (tmp_path / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))


def test_encode_example_labels_answer_only(hand_tokenizer):
    input_ids, labels = gen.encode_example(hand_tokenizer, gen.QAPair("天蓝吗", "是的", "g"), 48, 96)
    # [CLS] 问 题 ： 天 蓝 吗 回 答 ： | 是 的 [SEP]（换行是空白，分词器丢掉）
    assert input_ids == [2, 5, 6, 9, 10, 11, 12, 7, 8, 9, 13, 14, 3]
    assert labels == [IGNORE_INDEX] * 10 + [13, 14, 3]


def test_encode_example_truncates_and_prompt_loss(hand_tokenizer):
    input_ids, labels = gen.encode_example(hand_tokenizer, gen.QAPair("天蓝吗", "是的", "g"), 1, 1, prompt_loss=True)
    assert input_ids == [2, 5, 6, 9, 10, 7, 8, 9, 13, 3]
    assert labels == input_ids


def test_collate_pads_on_the_requested_side():
    right = gen.collate([[5, 6, 7], [8]], pad_id=0, labels=[[-100, 6, 7], [8]])
    left = gen.collate([[5, 6, 7], [8]], pad_id=0, padding_side="left")
    assert right["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert right["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert right["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert left["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert left["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert gen.position_ids_from_attention_mask(left["attention_mask"]).tolist() == [[0, 1, 2], [0, 0, 0]]


# ---------------------------------------------------------------- loss 与困惑度


def encoded_batch(tokenizer, pairs):
    examples = [gen.encode_example(tokenizer, pair, 48, 96) for pair in pairs]
    return gen.collate([ids for ids, _ in examples], tokenizer.pad_token_id, [labels for _, labels in examples])


SAMPLE_PAIRS = [gen.QAPair("读书有什么用？", "让你见到更大的世界。", "a"), gen.QAPair("天", "天是蓝的", "b"),
                gen.QAPair("怎样挑选一个好西瓜？", "拍一拍，声音清脆的一般比较熟。", "c")]


def test_answer_nll_matches_gpt2_loss(tiny_gpt):
    model, tokenizer = tiny_gpt
    batch = encoded_batch(tokenizer, SAMPLE_PAIRS)
    with torch.no_grad():
        nll, count = gen.answer_nll(model, batch)
        reference = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    assert count == int((batch["labels"] != IGNORE_INDEX).sum())
    assert torch.allclose(nll / count, reference, atol=1e-5)


def test_perplexity_is_exp_of_token_weighted_reference_loss(tiny_gpt):
    model, tokenizer = tiny_gpt
    batches = [encoded_batch(tokenizer, SAMPLE_PAIRS[:2]), encoded_batch(tokenizer, SAMPLE_PAIRS[2:])]
    result = gen.evaluate_perplexity(model, batches, torch.device("cpu"))
    total = tokens = 0.0
    with torch.no_grad():
        for batch in batches:  # HF 的 loss 是一个 batch 内的平均：按 token 数加权再合起来
            count = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            total += model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           labels=batch["labels"]).loss.item() * count
            tokens += count
    assert result["answer_loss"] == pytest.approx(total / tokens, abs=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(total / tokens), rel=1e-5)


# ---------------------------------------------------------------- 补齐与生成


def test_left_padding_needs_position_ids_from_attention_mask(tiny_gpt):
    model, tokenizer = tiny_gpt
    prompts = [gen.encode_prompt(tokenizer, question, 48) for question in QUESTIONS[:2]]
    batch = gen.collate(prompts, tokenizer.pad_token_id, padding_side="left")
    with torch.no_grad():
        alone = model(input_ids=torch.tensor([prompts[0]])).logits[0, -1]
        with_positions = model(**batch, position_ids=gen.position_ids_from_attention_mask(batch["attention_mask"])).logits
        without_positions = model(**batch).logits
    assert torch.allclose(with_positions[0, -1], alone, atol=1e-5)
    assert not torch.allclose(without_positions[0, -1], alone, atol=1e-3)


def test_left_padded_batch_generates_same_as_alone(tiny_gpt):
    model, tokenizer = tiny_gpt
    alone = [gen.generate_answers(model, tokenizer, [question], max_new_tokens=12)[0] for question in QUESTIONS]
    batched = gen.generate_answers(model, tokenizer, QUESTIONS, max_new_tokens=12)
    assert all(alone)
    for single, in_batch in zip(alone, batched):
        assert in_batch == single


def test_right_padding_changes_the_short_prompt(tiny_gpt):
    """With right padding the short prompt continues from a [PAD] column instead of its last token "："."""
    model, tokenizer = tiny_gpt
    alone = gen.generate_ids(model, tokenizer, QUESTIONS[:1], max_new_tokens=12)[0]
    right = gen.generate_ids(model, tokenizer, QUESTIONS, max_new_tokens=12, padding_side="right")[0]
    left = gen.generate_ids(model, tokenizer, QUESTIONS, max_new_tokens=12)[0]
    assert left[:len(alone)] == alone
    assert right[:len(alone)] != alone


def test_max_new_tokens_is_respected(tiny_gpt):
    model, tokenizer = tiny_gpt
    for row in gen.generate_ids(model, tokenizer, QUESTIONS, max_new_tokens=5):
        assert len(row) <= 5
    assert len(gen.generate_ids(model, tokenizer, QUESTIONS[:1], max_new_tokens=20)[0]) > 5


def generated_bigram_repeats(prompt, generated):
    """Count generated tokens that complete a bigram already seen earlier in prompt + generated text."""
    sequence, repeats = list(prompt) + list(generated), 0
    for end in range(len(prompt), len(sequence)):
        earlier = set(zip(sequence[:end - 1], sequence[1:end]))
        repeats += (sequence[end - 1], sequence[end]) in earlier
    return repeats


def test_no_repeat_ngram_size_leaves_no_repeated_bigram(tiny_gpt):
    model, tokenizer = tiny_gpt
    question = QUESTIONS[1]
    prompt = gen.encode_prompt(tokenizer, question, 48)
    free = gen.generate_ids(model, tokenizer, [question], max_new_tokens=40)[0]
    blocked = gen.generate_ids(model, tokenizer, [question], max_new_tokens=40, no_repeat_ngram_size=2)[0]
    assert tokenizer.sep_token_id not in blocked  # 没有提前结束，40 个新 token 都要检查
    assert generated_bigram_repeats(prompt, free) > 0  # 不加限制时这个随机小模型会重复
    assert generated_bigram_repeats(prompt, blocked) == 0


def test_top_k_one_sampling_equals_greedy(tiny_gpt):
    model, tokenizer = tiny_gpt
    greedy = gen.generate_ids(model, tokenizer, QUESTIONS, max_new_tokens=10)
    assert gen.generate_ids(model, tokenizer, QUESTIONS, max_new_tokens=10, do_sample=True, top_k=1, seed=3) == greedy


def test_sampling_with_seed_repeats_and_skips_special_tokens(tiny_gpt):
    model, tokenizer = tiny_gpt
    options = {"max_new_tokens": 30, "do_sample": True, "temperature": 2.0, "top_k": 0, "seed": 7}
    first = gen.generate_ids(model, tokenizer, QUESTIONS, **options)
    assert gen.generate_ids(model, tokenizer, QUESTIONS, **options) == first
    never = {tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.unk_token_id, tokenizer.mask_token_id}
    for row in first:
        answer = row[:row.index(tokenizer.sep_token_id)] if tokenizer.sep_token_id in row else row
        assert not never & set(answer)


def test_controls_reach_model_generate(tiny_gpt, monkeypatch):
    model, tokenizer = tiny_gpt
    calls = []
    original = model.generate

    def recording_generate(**kwargs):
        calls.append(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(model, "generate", recording_generate)
    gen.generate_answers(model, tokenizer, QUESTIONS[:1], max_new_tokens=7, repetition_penalty=1.3, no_repeat_ngram_size=2)
    gen.generate_answers(model, tokenizer, QUESTIONS[:1], do_sample=True, temperature=0.7, top_k=20, top_p=0.8, seed=1)
    greedy, sampled = calls
    assert greedy["max_new_tokens"] == 7
    assert greedy["repetition_penalty"] == 1.3
    assert greedy["no_repeat_ngram_size"] == 2
    assert greedy["do_sample"] is False
    assert "temperature" not in greedy  # greedy 时不传采样参数，HF 就不会警告它们无效
    assert (sampled["temperature"], sampled["top_k"], sampled["top_p"]) == (0.7, 20, 0.8)
    assert greedy["pad_token_id"] == tokenizer.pad_token_id
    assert greedy["eos_token_id"] == tokenizer.sep_token_id
    assert greedy["attention_mask"].shape == greedy["input_ids"].shape


def test_generate_rejects_too_long_request(tiny_gpt):
    model, tokenizer = tiny_gpt
    with pytest.raises(ValueError, match="max_new_tokens"):
        gen.generate_ids(model, tokenizer, QUESTIONS, max_new_tokens=model.config.n_positions)


def test_decode_answer_joins_chinese_and_stops_at_sep(hand_tokenizer):
    ids = hand_tokenizer.convert_tokens_to_ids(["是", "的", "[PAD]", "天", "[SEP]", "蓝"])
    assert gen.decode_answer(hand_tokenizer, ids) == "是的天"


# ---------------------------------------------------------------- 整个脚本


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("zhihu") / "run"
    returned = gen.main(["--smoke", "--output-dir", str(run_dir), "--generate", "怎样学好数学？"])
    return run_dir, returned


def test_smoke_run_writes_metrics_model_and_samples(smoke_run):
    run_dir, returned = smoke_run
    assert json.loads((run_dir / "metrics.json").read_text(encoding="utf-8")) == json.loads(json.dumps(returned))
    assert json.loads((run_dir / "config.json").read_text(encoding="utf-8"))["smoke"] is True
    assert (run_dir / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert (run_dir / gen.MODEL_SUBDIR / "model.safetensors").is_file()
    samples = json.loads((run_dir / gen.SAMPLES_FILE).read_text(encoding="utf-8"))["samples"]
    assert len(samples) == returned["held_out_pairs"] + 1
    assert samples[-1] == {"question": "怎样学好数学？", "reference": None, "generated": returned["generated_answer"]}
    assert returned["pairs"] == returned["train_pairs"] + returned["held_out_pairs"]
    assert math.isfinite(returned["held_out_perplexity"])
    assert returned["held_out_perplexity_before"] > 1
    assert returned["padding_check_left_same_as_alone"] == returned["padding_check_questions"]


def test_smoke_run_counts_answer_tokens(smoke_run):
    run_dir, returned = smoke_run
    tokenizer = AutoTokenizer.from_pretrained(run_dir / gen.MODEL_SUBDIR)
    train, held_out = gen.split_pairs(gen.load_jsonl_pairs(gen.SAMPLE_FILE))
    for pairs, key in ((train, "train_answer_tokens"), (held_out, "held_out_answer_tokens")):
        # --smoke 把回答截到 48 个 token，再加结尾的 [SEP]
        expected = sum(min(len(tokenizer(pair.answer, add_special_tokens=False)["input_ids"]), 48) + 1 for pair in pairs)
        assert returned[key] == expected


def test_generate_entry_loads_checkpoint(smoke_run, capsys):
    run_dir, _ = smoke_run
    argv = ["--generate", "为什么猫喜欢钻纸箱？", "--checkpoint", str(run_dir), "--max-new-tokens", "8"]
    result = gen.main(argv)
    model, tokenizer = gen.load_checkpoint(run_dir)
    expected = gen.generate_answers(model, tokenizer, ["为什么猫喜欢钻纸箱？"], **gen.generation_options(gen.parse_args(argv)))
    assert result == {"question": "为什么猫喜欢钻纸箱？", "answer": expected[0]}
    assert f"回答：{expected[0]}" in capsys.readouterr().out


def test_generate_entry_rejects_folder_without_model(tmp_path):
    with pytest.raises(SystemExit, match="没有模型"):
        gen.main(["--generate", "问题", "--checkpoint", str(tmp_path)])


def test_checkpoint_needs_generate():
    with pytest.raises(SystemExit):
        gen.main(["--checkpoint", "somewhere"])


def test_smoke_scratch_on_cmrc_sample(tmp_path):
    sample = data.SAMPLES_DIR / "cmrc2018" / gen.CMRC_FILE
    result = gen.main(["--smoke", "--init", "scratch", "--train-file", str(sample), "--output-dir", str(tmp_path / "run"),
                       "--prompt-loss"])
    assert result["init"] == "scratch"
    assert result["prompt_loss"] is True
    assert result["pairs"] == len(gen.load_squad_pairs(sample)[0])
    assert result["held_out_perplexity"] < result["held_out_perplexity_before"]


# ---------------------------------------------------------------- 真实数据


@pytest.mark.real
def test_scratch_gpt_on_cmrc2018_lowers_perplexity(real_data_dir, tmp_path):
    # 2 层、128 宽的小 GPT-2 训练 120 步（约 2/3 个 epoch），2 核 CPU 上约 1 分钟；实测验证集困惑度 21,606 -> 911。
    result = gen.main(["--init", "scratch", "--data-dir", str(real_data_dir), "--output-dir", str(tmp_path / "run"),
                       "--num-layers", "2", "--hidden-size", "128", "--num-heads", "2", "--max-steps", "120",
                       "--eval-every", "120", "--num-samples", "2", "--max-new-tokens", "16"])
    assert result["pairs"] == 3219
    assert result["skipped_questions"] == 0
    assert result["held_out_pairs"] == 331
    assert result["held_out_perplexity_before"] > 10_000  # 随机初始化：约等于词表大小 21,128
    assert result["held_out_perplexity"] < 1_000
    assert result["held_out_perplexity"] < result["held_out_perplexity_before"] / 10
    assert result["held_out_perplexity"] < result["held_out_unigram_perplexity"]
    assert result["padding_check_left_same_as_alone"] == result["padding_check_questions"]


def test_checkpoint_of_other_model_type_rejected(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps({"model_type": "bert"}), encoding="utf-8")
    with pytest.raises(SystemExit) as raised:
        gen.load_checkpoint(tmp_path)
    assert "不是 GPT-2 模型" in str(raised.value)
    assert "'bert'" in str(raised.value)
