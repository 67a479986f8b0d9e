"""生成 Hugging Face 模块（stage2_huggingface/）冒烟运行用的自带样本：全部是本项目按模板自己写的句子，
不含任何真实数据集的内容，但文件布局与各数据集的官方格式相同，同一个加载函数既能读样本也能读真实数据。

- imdb/aclImdb/{train,test}/{pos,neg}/{id}_{rating}.txt：英文影评，一个文件一条，正面 7-10 分、负面 1-4 分；
- chnsenticorp/ChnSentiCorp_htl_all.csv：中文酒店评论，表头 label,review，1 正面 / 0 负面，先正后负；
- glue/{SST-2,MRPC,STS-B,CoLA}/{train,dev}.tsv：GLUE 官方 TSV 布局（各任务的列见 make_glue 上方的注释）；
- conll2003/{train,valid,test}.txt：4 列（token、POS、chunk、NER），IOB2 标签，句间空行，带 -DOCSTART- 行。

输出是确定的：固定随机种子，重跑得到逐字节相同的文件。

重新生成：python data/samples/make_hf_samples.py
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parent


def write_lines(path: Path, lines: list[str], *, bom: bool = False) -> None:
    """Write `lines` with "\\n" endings in UTF-8, optionally behind a byte order mark."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(line + "\n" for line in lines)
    path.write_text(("\ufeff" if bom else "") + text, encoding="utf-8", newline="\n")


# ---------------------------------------------------------------- IMDB

REVIEW_PARTS = {
    "pos": (
        ["I went in expecting little and left smiling.", "This is one of the best {genre} films I have seen in years.",
         "What a pleasant surprise this {genre} movie was.", "My whole family enjoyed this {genre} film."],
        ["The {role} gives a warm and funny performance, and the script never drags.",
         "The music and the camera work fit the story perfectly.",
         "Every scene with the {role} had the audience laughing.",
         "The story is simple, but the {role} makes you care about every choice."],
        ["Highly recommended.", "I would happily watch it again.", "A small gem worth your evening.",
         "Ten minutes after it ended I was still thinking about it."],
    ),
    "neg": (
        ["I wanted to like this {genre} film, but it was a chore.", "This movie wasted two hours of my life.",
         "What a mess of a {genre} picture.", "I have rarely been this bored in a cinema."],
        ["The {role} mumbles through every line and the plot makes no sense.",
         "The jokes fall flat and the ending is easy to guess after ten minutes.",
         "The editing is so choppy that I lost track of who was who.",
         "Even the {role} looks like he would rather be somewhere else."],
        ["Skip it.", "Not worth the ticket.", "I left before the credits.", "Save your money for something else."],
    ),
}
REVIEW_FILLERS = {
    "genre": ["comedy", "thriller", "western", "science fiction", "family", "horror"],
    "role": ["lead actress", "young detective", "old captain", "villain", "talking dog", "narrator"],
}


def make_review(polarity: str, rng: random.Random) -> str:
    """Join an opening, one or two body sentences and a closing; some reviews use IMDB's <br /> breaks."""
    openings, bodies, closings = REVIEW_PARTS[polarity]
    values = {key: rng.choice(options) for key, options in REVIEW_FILLERS.items()}
    sentences = [rng.choice(openings)] + rng.sample(bodies, rng.randint(1, 2)) + [rng.choice(closings)]
    separator = " <br /><br />" if rng.random() < 0.3 else " "
    return separator.join(sentence.format(**values) for sentence in sentences)


def make_imdb(train_per_class: int = 12, test_per_class: int = 6, seed: int = 11) -> None:
    rng = random.Random(seed)
    root = SAMPLES_DIR / "imdb" / "aclImdb"
    ratings = {"pos": [7, 8, 9, 10], "neg": [1, 2, 3, 4]}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        for polarity in ("pos", "neg"):
            folder = root / split / polarity
            folder.mkdir(parents=True, exist_ok=True)
            for old_file in folder.glob("*.txt"):
                old_file.unlink()
            for review_id in range(per_class):
                rating = rng.choice(ratings[polarity])
                # 官方文件一个文件一条评论，只有一行，末尾没有换行。
                (folder / f"{review_id}_{rating}.txt").write_text(make_review(polarity, rng), encoding="utf-8")
        print(f"imdb {split}: {2 * per_class} reviews -> {root / split}")


# ---------------------------------------------------------------- ChnSentiCorp

HOTEL_ASPECTS = {
    1: ["房间干净整洁", "前台服务热情周到", "早餐品种丰富，味道也不错", "位置方便,离地铁站很近", "床很舒服，晚上很安静",
        "性价比很高", "卫生间很大，热水充足", "窗外能看到江景", "办理入住很快", "服务员主动帮忙提行李"],
    0: ["房间有一股霉味", "隔音太差，一晚上没睡好", "前台态度冷淡", "早餐种类很少,味道一般", "空调坏了也没人来修",
        "价格偏贵，设施陈旧", "卫生间漏水", "离市中心太远，打车不方便", "床单上有污渍", "退房时多收了钱"],
}
HOTEL_CLOSINGS = {
    1: ["下次来{city}还会住这里。", "推荐给大家。", "总体很满意！", "值得入住。", "出差来{city}首选这家。"],
    0: ["不会再来了。", "很失望。", "不推荐。", "和网上的图片差别太大。", "来{city}出差的朋友慎选。"],
}
CITIES = ["北京", "上海", "杭州", "成都", "西安", "厦门"]


def make_chnsenticorp(positive: int = 36, negative: int = 24, seed: int = 12) -> None:
    """Write hotel reviews as header `label,review`, positives first, like the official file."""
    rng = random.Random(seed)
    rows = []
    for label, count in ((1, positive), (0, negative)):
        for _ in range(count):
            aspects = rng.sample(HOTEL_ASPECTS[label], rng.randint(1, 3))
            closing = rng.choice(HOTEL_CLOSINGS[label]).format(city=rng.choice(CITIES))
            rows.append([str(label), "，".join(aspects) + "。" + closing])
    path = SAMPLES_DIR / "chnsenticorp" / "ChnSentiCorp_htl_all.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(["label", "review"])
        writer.writerows(rows)
    print(f"chnsenticorp: {len(rows)} reviews ({positive} positive, {negative} negative) -> {path}")


# ---------------------------------------------------------------- GLUE
#
# GLUE 各任务 TSV 的官方布局。读法是以 tab 分隔、不做引号处理（csv.QUOTE_NONE），与 tensorflow/datasets 的
# tensorflow_datasets/text/glue.py 相同：
# - SST-2 train/dev：表头 `sentence<TAB>label`。句子小写、标点两侧有空格，句末带一个空格。
# - CoLA train/dev：GLUE 里唯一没有表头的文件。4 列：来源代号、标签（1 合乎语法，0 不合）、原作者的标记
#   （`*` 或空）、句子。
# - MRPC train/dev：表头 `Quality<TAB>#1 ID<TAB>#2 ID<TAB>#1 String<TAB>#2 String`，标签在第一列。
#   huggingface/transformers 的 utils/download_glue_data.py 从 SentEval 的 msr_paraphrase_train.txt 原样抄这一行
#   表头，而那个文件以 UTF-8 BOM 开头（tensorflow_datasets 的读取代码里有注释说明），所以样本也带 BOM。
# - STS-B train/dev：表头 `index genre filename year old_index source1 source2 sentence1 sentence2 score`
#   （以 tab 分隔），score 是 [0, 5] 内保留三位小数的浮点数。
# 列的位置与 transformers 4.57 的 GLUE processors（transformers/data/processors/glue.py）一致：SST-2 文本第 0 列、
# 标签第 1 列；CoLA 文本第 3 列、标签第 1 列；MRPC 文本第 3、4 列、标签第 0 列；STS-B 文本第 7、8 列、分数在最后一列。

SST2_PHRASES = {
    1: ["a warm , funny film", "the best {thing} of the year", "a clever and moving story", "it 's a joy to watch",
        "beautifully shot and well acted", "the {thing} is charming", "an honest , touching drama", "great fun"],
    0: ["a dull , lifeless film", "the worst {thing} in years", "it 's a long , tired mess", "flat and forgettable",
        "the {thing} never makes sense", "badly written and badly acted", "a boring waste of time", "too slow"],
}
SST2_THINGS = ["script", "cast", "ending", "soundtrack", "comedy", "sequel"]

COLA_PAIRS = [
    ("The cat slept on the mat.", "The cat slept the mat on."),
    ("She gave the book to her brother.", "She gave to her brother."),
    ("We watched the rain from the window.", "We watched from the window the rain the."),
    ("The children seem happy.", "The children seem."),
    ("Tom wrote a letter to Mary.", "Tom wrote Mary to a letter."),
    ("The door was opened by the guard.", "The door was opened the guard."),
    ("I wonder who left early.", "I wonder who did left early."),
    ("The soup is too hot to eat.", "The soup is too hot to eat it the."),
    ("Anna likes reading poems.", "Anna likes reading poems she."),
    ("They made the wall blue.", "They made blue the wall the."),
    ("The dog chased the ball across the yard.", "The dog chased across."),
    ("He has never been to the coast.", "He has never being to the coast."),
    ("Which train did you take?", "Which train did you took?"),
    ("The teacher asked us to sit down.", "The teacher asked us sit down to."),
    ("My sister can swim faster than me.", "My sister can swims faster than me."),
    ("The river froze during the night.", "The river froze the night during the."),
    ("Sam put the keys on the table.", "Sam put the keys."),
    ("It is likely that the bus is late.", "The bus is likely that is late."),
    ("Lisa baked bread for the neighbours.", "Lisa baked for."),
    ("The old man laughed at the joke.", "The old man laughed the joke at."),
]

MRPC_PAIRS = [
    ("The company said profits rose 8 percent in the third quarter .",
     "Third-quarter profits climbed 8 percent , the company said .", 1),
    ("The mayor opened the new bridge on Monday .", "On Monday the new bridge was opened by the mayor .", 1),
    ("Heavy rain forced the organisers to cancel the match .", "The match was called off because of heavy rain .", 1),
    ("The bank cut its interest rate to 2 percent .", "The bank raised its fees for small businesses .", 0),
    ("Police arrested two men after the robbery .", "Two men were arrested by police following the robbery .", 1),
    ("The museum will close for repairs in May .", "The museum bought three paintings at an auction .", 0),
    ("Shares of the carmaker fell 3 percent on Friday .", "The carmaker 's stock dropped 3 percent on Friday .", 1),
    ("The minister said talks would resume next week .", "The minister resigned after the talks failed .", 0),
    ("The team signed a new coach for two years .", "A new coach joined the team on a two-year deal .", 1),
    ("Sales of electric bicycles doubled last year .", "The city built new bicycle lanes last year .", 0),
    ("The airline added ten flights to the capital .",
     "Ten more flights to the capital were added by the airline .", 1),
    ("The storm knocked out power to 5,000 homes .", "The storm is expected to reach the coast tonight .", 0),
    ("Scientists found water ice near the crater .", "Water ice was discovered by scientists close to the crater .", 1),
    ("The school will hire twelve new teachers .", "The school closed early because of snow .", 0),
    ("The factory will employ 300 workers when it opens .",
     "When it opens , the plant will have 300 employees .", 1),
    ("Fuel prices rose for the fourth week in a row .", "The government plans to tax fuel next year .", 0),
    ("The singer cancelled her tour because of illness .", "Illness forced the singer to call off her tour .", 1),
    ("The library extended its opening hours .", "The library lost part of its roof in the storm .", 0),
    ("Exports to the region grew 12 percent in June .", "In June , exports to the region were up 12 percent .", 1),
    ("The court delayed the trial until October .", "The judge praised the jury for its patience .", 0),
]

STSB_PAIRS = [
    ("A man is playing a guitar.", "A man plays the guitar.", 4.8),
    ("A woman is slicing a tomato.", "A woman cuts a tomato into pieces.", 4.2),
    ("A dog is running on the beach.", "A dog runs along the sand.", 4.0),
    ("Two children are reading a book.", "Two kids are looking at a book.", 3.6),
    ("A cat is sleeping on a chair.", "A man is driving a truck.", 0.0),
    ("A boy is riding a bicycle.", "A girl is riding a horse.", 1.4),
    ("The train arrived late this morning.", "This morning the train was late.", 4.6),
    ("A chef is frying onions.", "Someone is cooking onions in a pan.", 3.8),
    ("Prices rose sharply in March.", "Prices fell slightly in March.", 1.8),
    ("A bird is sitting on a fence.", "A bird sits on the fence.", 5.0),
    ("A woman is singing on stage.", "A man is painting a wall.", 0.2),
    ("The river flooded the village.", "The village was flooded by the river.", 4.9),
    ("A man is climbing a rock wall.", "A person climbs up a rock face.", 3.9),
    ("Two men are playing chess.", "Two men are playing cards.", 2.4),
    ("A baby is laughing.", "A baby is crying.", 1.6),
    ("The council approved the new park.", "The new park was approved by the council.", 4.7),
    ("A girl is feeding the ducks.", "A child gives bread to some ducks.", 3.4),
    ("A man is cutting wood with a saw.", "A woman is cutting paper with scissors.", 1.2),
    ("The shop sells fresh fish.", "Fresh fish is sold at the shop.", 4.8),
    ("A plane is landing at night.", "A helicopter takes off in the morning.", 1.0),
]


def make_glue(seed: int = 13) -> None:
    rng = random.Random(seed)
    root = SAMPLES_DIR / "glue"

    # 一个句子是一个短语，或两个同标签的短语用 " , and " 连起来。
    train_rows, dev_rows = [], []
    for label, phrases in SST2_PHRASES.items():
        pairs = [f"{first} , and {second}" for first in phrases for second in phrases if first != second]
        chosen = rng.sample(list(phrases) + pairs, 21)
        rows = [f"{phrase.format(thing=rng.choice(SST2_THINGS))} \t{label}" for phrase in chosen]
        train_rows += rows[:15]
        dev_rows += rows[15:]
    rng.shuffle(train_rows)
    rng.shuffle(dev_rows)
    write_lines(root / "SST-2" / "train.tsv", ["sentence\tlabel"] + train_rows)
    write_lines(root / "SST-2" / "dev.tsv", ["sentence\tlabel"] + dev_rows)

    cola_rows = []
    for index, (good, bad) in enumerate(COLA_PAIRS):
        source = f"rm{index % 4 + 1:02d}"
        cola_rows.append(f"{source}\t1\t\t{good}")
        cola_rows.append(f"{source}\t0\t*\t{bad}")
    write_lines(root / "CoLA" / "train.tsv", cola_rows[:30])
    write_lines(root / "CoLA" / "dev.tsv", cola_rows[30:])

    mrpc_rows = []
    for index, (first, second, label) in enumerate(MRPC_PAIRS):
        first_id, second_id = 100200 + 7 * index, 100203 + 7 * index
        mrpc_rows.append(f"{label}\t{first_id}\t{second_id}\t{first}\t{second}")
    mrpc_header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
    write_lines(root / "MRPC" / "train.tsv", [mrpc_header] + mrpc_rows[:14], bom=True)
    write_lines(root / "MRPC" / "dev.tsv", [mrpc_header] + mrpc_rows[14:], bom=True)

    stsb_header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    stsb_rows = []
    for index, (first, second, score) in enumerate(STSB_PAIRS):
        genre = "main-captions" if index % 3 else "main-news"
        split_index = index if index < 12 else index - 12
        fields = [str(split_index), genre, "samples", "2024", f"{index + 1:04d}", "none", "none", first, second,
                  f"{score:.3f}"]
        stsb_rows.append("\t".join(fields))
    write_lines(root / "STS-B" / "train.tsv", [stsb_header] + stsb_rows[:12])
    write_lines(root / "STS-B" / "dev.tsv", [stsb_header] + stsb_rows[12:])
    print(f"glue: SST-2 {len(train_rows)}/{len(dev_rows)}, CoLA 30/{len(cola_rows) - 30}, "
          f"MRPC 14/{len(mrpc_rows) - 14}, STS-B 12/{len(stsb_rows) - 12} rows (train/dev) -> {root}")


# ---------------------------------------------------------------- CoNLL-2003
#
# 模板是 (token, POS, chunk) 三元组的列表。"{PER}" 这样的槽位随机填入一个该类型的实体：实体的词用实体的 POS，
# 第一个词用槽位的 chunk 标签、其余词用 I-NP，NER 标签是 B-PER、I-PER……；其他词的 NER 标签都是 O。

CONLL_TEMPLATES = [
    [("{PER}", "", "B-NP"), ("visited", "VBD", "B-VP"), ("{LOC}", "", "B-NP"), ("on", "IN", "B-PP"),
     ("Monday", "NNP", "B-NP"), (".", ".", "O")],
    [("{ORG}", "", "B-NP"), ("said", "VBD", "B-VP"), ("profits", "NNS", "B-NP"), ("rose", "VBD", "B-VP"),
     ("5", "CD", "B-NP"), ("percent", "NN", "I-NP"), ("in", "IN", "B-PP"), ("{LOC}", "", "B-NP"), (".", ".", "O")],
    [("The", "DT", "B-NP"), ("{MISC}", "", "I-NP"), ("team", "NN", "I-NP"), ("beat", "VBD", "B-VP"),
     ("{ORG}", "", "B-NP"), ("2-1", "CD", "B-NP"), (".", ".", "O")],
    [("{PER}", "", "B-NP"), (",", ",", "O"), ("a", "DT", "B-NP"), ("spokesman", "NN", "I-NP"), ("for", "IN", "B-PP"),
     ("{ORG}", "", "B-NP"), (",", ",", "O"), ("declined", "VBD", "B-VP"), ("to", "TO", "I-VP"),
     ("comment", "VB", "I-VP"), (".", ".", "O")],
    [("Shares", "NNS", "B-NP"), ("in", "IN", "B-PP"), ("{ORG}", "", "B-NP"), ("fell", "VBD", "B-VP"),
     ("in", "IN", "B-PP"), ("{LOC}", "", "B-NP"), ("on", "IN", "B-PP"), ("Friday", "NNP", "B-NP"), (".", ".", "O")],
    [("{PER}", "", "B-NP"), ("will", "MD", "B-VP"), ("meet", "VB", "I-VP"), ("{PER}", "", "B-NP"),
     ("in", "IN", "B-PP"), ("{LOC}", "", "B-NP"), ("next", "JJ", "B-NP"), ("week", "NN", "I-NP"), (".", ".", "O")],
    [("Police", "NNS", "B-NP"), ("in", "IN", "B-PP"), ("{LOC}", "", "B-NP"), ("arrested", "VBD", "B-VP"),
     ("two", "CD", "B-NP"), ("{MISC}", "", "I-NP"), ("men", "NNS", "I-NP"), ("on", "IN", "B-PP"),
     ("Tuesday", "NNP", "B-NP"), (".", ".", "O")],
    [("{LOC}", "", "B-NP"), ("and", "CC", "O"), ("{LOC}", "", "B-NP"), ("signed", "VBD", "B-VP"),
     ("a", "DT", "B-NP"), ("{MISC}", "", "I-NP"), ("trade", "NN", "I-NP"), ("deal", "NN", "I-NP"), (".", ".", "O")],
    [("{PER}", "", "B-NP"), ("scored", "VBD", "B-VP"), ("twice", "RB", "B-ADVP"), ("for", "IN", "B-PP"),
     ("{ORG}", "", "B-NP"), ("on", "IN", "B-PP"), ("Sunday", "NNP", "B-NP"), (".", ".", "O")],
    [("Officials", "NNS", "B-NP"), ("at", "IN", "B-PP"), ("{ORG}", "", "B-NP"), ("expect", "VBP", "B-VP"),
     ("rain", "NN", "B-NP"), ("in", "IN", "B-PP"), ("{LOC}", "", "B-NP"), (".", ".", "O")],
]
CONLL_ENTITIES = {
    "PER": [["Anna", "Berg"], ["Tomas", "Reyes"], ["Li", "Wei"], ["Marta", "Kowal"], ["Omar", "Haddad"], ["Lund"]],
    "LOC": [["Norland"], ["Eastmark"], ["Valdoria"], ["Southport"], ["New", "Harbor"], ["Port", "Avel"]],
    "ORG": [["Acme", "Corp"], ["Globex"], ["Riverside", "United"], ["Northwind", "Bank"], ["Initech"]],
    "MISC": [["Norlandic"], ["European"], ["Valdorian"], ["Olympic"]],
}
ENTITY_POS = {"PER": "NNP", "LOC": "NNP", "ORG": "NNP", "MISC": "JJ"}
DOCSTART_LINE = "-DOCSTART- -X- -X- O"


def make_conll_sentence(rng: random.Random) -> list[str]:
    lines = []
    for token, pos, chunk in rng.choice(CONLL_TEMPLATES):
        if token.startswith("{"):
            entity_type = token.strip("{}")
            words = rng.choice(CONLL_ENTITIES[entity_type])
            for position, word in enumerate(words):
                word_chunk = chunk if position == 0 else "I-NP"
                prefix = "B" if position == 0 else "I"
                lines.append(f"{word} {ENTITY_POS[entity_type]} {word_chunk} {prefix}-{entity_type}")
        else:
            lines.append(f"{token} {pos} {chunk} O")
    return lines


def make_conll2003(sentences_per_split: int = 20, sentences_per_document: int = 5, seed: int = 14) -> None:
    """Write documents that each start with a -DOCSTART- line; a blank line ends every sentence."""
    rng = random.Random(seed)
    folder = SAMPLES_DIR / "conll2003"
    for split in ("train", "valid", "test"):
        lines: list[str] = []
        for index in range(sentences_per_split):
            if index % sentences_per_document == 0:
                lines += [DOCSTART_LINE, ""]
            lines += make_conll_sentence(rng) + [""]
        write_lines(folder / f"{split}.txt", lines)
        print(f"conll2003 {split}: {sentences_per_split} sentences -> {folder}")


def main() -> None:
    make_imdb()
    make_chnsenticorp()
    make_glue()
    make_conll2003()


if __name__ == "__main__":
    main()
