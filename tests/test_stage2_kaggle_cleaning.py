"""Tests for stage2_kaggle/text_cleaning.py: each step on a table of cases, and the offset map back to the original."""

from __future__ import annotations

import json
import re

import pytest

from stage2_kaggle import text_cleaning as tc


@pytest.mark.parametrize(("step", "text", "expected"), [
    (tc.remove_urls, "look http://t.co/abc now", "look  now"),
    (tc.remove_urls, "see www.example.com/x?y=1!", "see "),
    (tc.remove_urls, "no link here", "no link here"),
    (tc.strip_html, "<b>bold</b> move", " bold  move"),
    (tc.strip_html, "fish &amp; chips &lt;3", "fish & chips <3"),
    (tc.strip_html, "5 < 6 and 7 > 2", "5 < 6 and 7 > 2"),
    (tc.remove_special_characters, "nice \u263a day", "nice   day"),
    (tc.remove_special_characters, "caf\u00e9 ok!", "caf\u00e9 ok!"),
    (tc.reduce_repeated_characters, "sooo good!!!!", "soo good!!"),
    (tc.reduce_repeated_characters, "good book", "good book"),
    (tc.normalize_whitespace, "  a \t b\n\nc  ", "a b c"),
    (tc.lowercase, "HeLLo", "hello"),
])
def test_step_output(step, text, expected):
    assert step(text).text == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("don't go", "do not go"),
    ("don`t go", "do not go"),
    ("don\u2019t go", "do not go"),
    ("were you there", "were you there"),
    ("we're here", "we are here"),
    ("I cant.", "I cannot."),
    ("cantina", "cantina"),
    ("Can't stop", "Cannot stop"),
    ("I WON'T", "I WILL NOT"),
    ("im tired", "i am tired"),
    ("well ill go", "well ill go"),
    ("mom's car", "mom's car"),
    ("it`s fine", "it is fine"),
])
def test_contractions_match_whole_words(text, expected):
    assert tc.expand_contractions(text).text == expected


@pytest.mark.parametrize(("text", "cleaned_word", "original_word"), [
    (" I don`t  like it!!! http://x.co", "do", "don`t"),
    (" I don`t  like it!!! http://x.co", "not", "don`t"),
    (" I don`t  like it!!! http://x.co", "it!!", "it!!!"),
    ("Sooo  happy &amp; free", "Soo", "Sooo"),
    ("Sooo  happy &amp; free", "&", "&amp;"),
    ("Sooo  happy &amp; free", "free", "free"),
    ("<i>cant.</i> stop", "cannot.", "cant."),
])
def test_offset_map_returns_original_word(text, cleaned_word, original_word):
    cleaned = tc.clean(text)
    start = cleaned.text.index(cleaned_word)
    assert cleaned.original_span(start, start + len(cleaned_word)) == original_word


@pytest.mark.parametrize(("text", "cleaned_span", "original_span"), [
    (" I don`t  like it!!! http://x.co", "do not like", "don`t  like"),
    ("my  phone died.  worst battery ever", "worst battery ever", "worst battery ever"),
    ("Sooo  happy &amp; free", "Soo happy", "Sooo  happy"),
    ("\u263a yay!!!! we`re   here", "yay!! we are", "yay!!!! we`re"),
])
def test_round_trip_keeps_original_spacing(text, cleaned_span, original_span):
    cleaned = tc.clean(text)
    start = cleaned.text.index(cleaned_span)
    assert cleaned.original_span(start, start + len(cleaned_span)) == original_span


def test_offset_map_identity_when_unchanged():
    cleaned = tc.clean("plain words only")
    assert cleaned.text == "plain words only"
    assert cleaned.starts == tuple(range(16))
    assert cleaned.ends == tuple(range(1, 17))


def test_offset_map_composes_over_steps():
    # 逐步调用与 clean() 一次完成的映射相同，也与"每步都从原文重新算"得到的片段一致。
    text = " <b>Sooo</b> can`t  wait http://x.co"
    stepwise = tc.Cleaned.of(text)
    for name in tc.DEFAULT_STEPS:
        stepwise = tc.STEPS[name](stepwise)
    assert stepwise == tc.clean(text)
    for match in re.finditer(r"\S+", stepwise.text):
        original = stepwise.original_span(*match.span())
        assert match.group(0) in tc.clean(original).text


def test_cleaned_chars_map_inside_original():
    text = "a &amp; b\u263a  c`s d!!! www.x.org e"
    cleaned = tc.clean(text)
    assert len(cleaned.starts) == len(cleaned.ends) == len(cleaned.text)
    for start, end in zip(cleaned.starts, cleaned.ends):
        assert 0 <= start
        assert start < end
        assert end <= len(text)
    assert list(cleaned.starts) == sorted(cleaned.starts)


def test_cleaned_span_maps_forward():
    text = "I don`t  like  it"
    cleaned = tc.clean(text)
    start = text.index("don`t  like")
    span = tc.cleaned_span(cleaned, start, start + len("don`t  like"))
    assert cleaned.text[span[0]:span[1]] == "do not like"


def test_cleaned_span_of_removed_url_is_none():
    text = "see http://x.co"
    cleaned = tc.clean(text)
    assert tc.cleaned_span(cleaned, 4, len(text)) is None


def test_to_original_rejects_empty_span():
    with pytest.raises(ValueError):
        tc.clean("abc").to_original(1, 1)


def test_unknown_step_is_rejected():
    with pytest.raises(ValueError, match="未知的清洗步骤"):
        tc.clean("abc", ["no_such_step"])


def test_step_change_counts_by_hand():
    counts = tc.step_change_counts(["sooo  good", "plain", "see http://x.co"])
    assert counts["reduce_repeated_characters"] == 1
    assert counts["remove_urls"] == 1
    assert counts["normalize_whitespace"] == 2
    assert counts["strip_html"] == 0


def test_smoke_run(tmp_path):
    returned = tc.main(["--smoke", "--output-dir", str(tmp_path)])
    assert returned["rows"] == 60
    assert returned["word_roundtrip_rate"] == 1.0
    assert returned["oracle_jaccard"] > 0.95
    assert returned["changed_expand_contractions"] > 0
    assert returned["changed_remove_urls"] > 0
    assert json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))["rows"] == 60
    assert (tmp_path / "rows_changed_per_step.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.real
def test_real_train_file(real_data_dir, tmp_path):
    returned = tc.main(["--data-dir", str(real_data_dir), "--output-dir", str(tmp_path)])
    assert returned["rows"] == 23999
    assert returned["word_roundtrip_rate"] > 0.999
    assert returned["oracle_jaccard"] > 0.98
    assert returned["changed_remove_urls"] > 500
