"""Transcript normalisation: simplified characters, spoken numbers as digits, and the
punctuation-free form that CER is computed on.

cn2an converts greedily ("统一一下" -> "统11下", "一些" -> "1些", a phone number read digit by
digit becomes a quantity), so we find numeral spans ourselves and only hand cn2an the spans
that are numbers: spans with a unit character (十百千万亿), decimals, percentages; runs of three
or more bare digits (phone numbers, years, codes) are mapped digit by digit; single characters
and two-digit approximations ("三四个人") stay as written.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import cn2an

_DIGIT = {"零": "0", "〇": "0", "洞": "0", "一": "1", "幺": "1", "二": "2", "两": "2", "三": "3", "四": "4",
          "五": "5", "六": "6", "七": "7", "八": "8", "九": "9"}
_UNITS = "十百千万亿"
_NUM_CHARS = "".join(_DIGIT) + _UNITS
_SPAN = re.compile(rf"(百分之)?([{_NUM_CHARS}]+(?:点[{''.join(_DIGIT)}]+)?)")


@lru_cache(maxsize=1)
def _t2s():  # OpenCC loads its dictionaries once per process (~30 ms)
    import opencc

    return opencc.OpenCC("t2s")


def to_simplified(text: str) -> str:
    return _t2s().convert(text)


def _span_to_digits(percent: str | None, span: str, aggressive: bool = False) -> str | None:
    has_unit = any(c in _UNITS for c in span)
    decimal = "点" in span
    if not has_unit and not decimal:
        if len(span) >= 3 or percent or aggressive:
            digits = "".join(_DIGIT[c] for c in span)
            return digits + "%" if percent else digits
        return None
    if len(span) == 1 and not percent and not aggressive:  # a lone 十/百/万 is a word, not a number
        return None
    try:
        value = cn2an.cn2an(span.replace("幺", "一").replace("洞", "零"), "smart")
    except (ValueError, KeyError):
        return None
    out = str(value)
    if isinstance(value, float) and value.is_integer() and not decimal:
        out = str(int(value))
    return out + "%" if percent else out


def numbers_to_digits(text: str, aggressive: bool = False) -> str:
    """Spoken numbers -> digits.  `aggressive` converts every numeral (also "一些" -> "1些"):
    wrong for the NLU, right for scoring, where both sides go through the same function."""

    def repl(m: re.Match[str]) -> str:
        converted = _span_to_digits(m.group(1), m.group(2), aggressive)
        return m.group(0) if converted is None else converted

    return _SPAN.sub(repl, text)


def normalise_transcript(text: str, aggressive: bool = False) -> str:
    """What the ASR stage publishes: simplified, numbers as digits, whitespace tidied."""
    text = to_simplified(text.strip())
    text = re.sub(r"(?<=[\u4e00-\u9fff])\s+|\s+(?=[\u4e00-\u9fff])", "", text)
    return numbers_to_digits(text, aggressive)


def for_cer(text: str) -> str:
    """The form CER is computed on: normalised, no punctuation or spaces, Latin lower-cased."""
    text = normalise_transcript(text, aggressive=True).lower()
    return "".join(c for c in text if not unicodedata.category(c).startswith(("P", "Z", "S")) and not c.isspace())


_CANTONESE_MARKERS = set("嘅咗唔係喺佢哋冇啲嚟噉乜嘢睇咁嗰揾俾畀")


def looks_cantonese(text: str) -> bool:
    """Written-Cantonese particles in a transcript (only models that write Cantonese as
    spoken produce them; Whisper base writes standard Chinese, see docs/speech.md)."""
    return sum(c in _CANTONESE_MARKERS for c in text) >= 2
