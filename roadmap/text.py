"""文本工具：以前 torchtext 提供的那部分——分词、词表（vocabulary）、补齐（padding）。

- `tokenize_english`：小写后切成单词和标点（"don't" 保持为一个词）；
- `tokenize_chinese`：按字切分，连续的英文字母/数字保留为一个词（"iPhone12" 不会被拆成字母）；
- `Vocab`：词 <-> id，特殊符号 <pad>=0、<unk>=1、<bos>=2、<eos>=3，按词频排序，可存成 JSON；
- `pad_sequences`：把长短不一的 id 序列补齐成一个 (B, T) 张量，并返回每条的真实长度。
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)

_ENGLISH_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")
_CHINESE_TOKEN = re.compile(r"[A-Za-z0-9]+|\S")


def tokenize_english(text: str) -> list[str]:
    """Lower-case `text` and split it into words and single punctuation marks."""
    return _ENGLISH_TOKEN.findall(text.lower())


def tokenize_chinese(text: str) -> list[str]:
    """Split Chinese text into characters, keeping runs of ASCII letters and digits as one token."""
    return _CHINESE_TOKEN.findall(text)


class Vocab:
    """A token <-> id mapping whose first ids are the special tokens (<pad> is always 0)."""

    def __init__(self, tokens: Sequence[str]):
        if len(set(tokens)) != len(tokens):
            raise ValueError("词表里有重复的词")
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"词表必须以特殊符号 {SPECIALS} 开头")
        self.itos = list(tokens)
        self.stoi = {token: index for index, token in enumerate(self.itos)}

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], *, min_freq: int = 1, max_size: int | None = None) -> "Vocab":
        """Build a vocabulary from tokenized texts: most frequent first, ties broken alphabetically.

        Tokens seen fewer than `min_freq` times map to <unk>; `max_size` caps the size including
        the special tokens.
        """
        if min_freq < 1:
            raise ValueError(f"min_freq 必须 >= 1，收到 {min_freq}")
        counts = Counter(token for tokens in token_lists for token in tokens)
        ranked = sorted((token for token, count in counts.items() if count >= min_freq and token not in SPECIALS),
                        key=lambda token: (-counts[token], token))
        if max_size is not None:
            if max_size < len(SPECIALS):
                raise ValueError(f"max_size 至少要 {len(SPECIALS)}（特殊符号的个数），收到 {max_size}")
            ranked = ranked[: max_size - len(SPECIALS)]
        return cls([*SPECIALS, *ranked])

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    @property
    def pad_id(self) -> int:
        return self.stoi[PAD]

    @property
    def unk_id(self) -> int:
        return self.stoi[UNK]

    @property
    def bos_id(self) -> int:
        return self.stoi[BOS]

    @property
    def eos_id(self) -> int:
        return self.stoi[EOS]

    def encode(self, tokens: Sequence[str], *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Map tokens to ids (unknown tokens to <unk>), optionally wrapped in <bos> ... <eos>."""
        ids = [self.stoi.get(token, self.unk_id) for token in tokens]
        if add_bos:
            ids.insert(0, self.bos_id)
        if add_eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Iterable[int], *, skip_special: bool = True, stop_at_eos: bool = True) -> list[str]:
        """Map ids back to tokens; by default stop at the first <eos> and drop special tokens."""
        tokens = []
        for index in ids:
            index = int(index)
            if stop_at_eos and index == self.eos_id:
                break
            if not 0 <= index < len(self.itos):
                raise IndexError(f"id {index} 超出词表范围 [0, {len(self.itos)})")
            if skip_special and index < len(SPECIALS):
                continue
            tokens.append(self.itos[index])
        return tokens

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.itos, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocab":
        return cls(json.loads(Path(path).read_text(encoding="utf-8")))


def pad_sequences(sequences: Sequence[Sequence[int]], pad_id: int = 0, max_length: int | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id sequences into a LongTensor (B, T) and return it with the true lengths (B,).

    Sequences longer than `max_length` are cut to it. An empty sequence keeps length 0, so the
    caller decides how to treat it (a classifier usually keeps at least one token).
    """
    if not sequences:
        raise ValueError("没有序列可以补齐")
    if max_length is not None:
        sequences = [sequence[:max_length] for sequence in sequences]
    lengths = torch.tensor([len(sequence) for sequence in sequences], dtype=torch.long)
    width = max(int(lengths.max()), 1)
    batch = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        batch[row, : len(sequence)] = torch.as_tensor(sequence, dtype=torch.long)
    return batch, lengths
