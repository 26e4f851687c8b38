"""Pinyin of Chinese text and a sound similarity between two syllable sequences.

Similarity is tone-insensitive and forgives the confusions a phone line and a southern accent
make: zh/z, ch/c, sh/s, n/l, f/h, an/ang, en/eng, in/ing (and ian/iang, uan/uang).  A syllable
pair scores 1.0 when identical, 0.85 when equal after those merges, 0.4 when only the initial or
only the final agrees, else 0."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

_INITIAL_MERGE = {"zh": "z", "ch": "c", "sh": "s", "l": "n", "h": "f"}
# Longest first so that "iang" is tried before "ang".
_FINAL_MERGE = (("iang", "ian"), ("uang", "uan"), ("ang", "an"), ("eng", "en"), ("ing", "in"))
_INITIALS = ("zh", "ch", "sh", "b", "p", "m", "f", "d", "t", "n", "l", "g", "k", "h", "j", "q", "x",
             "r", "z", "c", "s", "y", "w")

EXACT = 1.0
FUZZY = 0.85
PARTIAL = 0.4


@dataclass(frozen=True)
class Syllable:
    initial: str
    final: str

    @property
    def text(self) -> str:
        return self.initial + self.final


def split_syllable(s: str) -> Syllable:
    """'zhuang' -> ('zh', 'uang'); no tone marks expected (Style.NORMAL)."""
    s = s.lower()
    for ini in _INITIALS:
        if s.startswith(ini) and len(s) > len(ini):
            return Syllable(ini, s[len(ini):])
    return Syllable("", s)


def _fuzzy_final(final: str) -> str:
    for long, short in _FINAL_MERGE:
        if final.endswith(long):
            return final[: -len(long)] + short
    return final


def _fuzzy(s: Syllable) -> tuple[str, str]:
    return _INITIAL_MERGE.get(s.initial, s.initial), _fuzzy_final(s.final)


def syllable_similarity(a: Syllable, b: Syllable) -> float:
    if a == b:
        return EXACT
    fa, fb = _fuzzy(a), _fuzzy(b)
    if fa == fb:
        return FUZZY
    if fa[0] == fb[0] or fa[1] == fb[1]:
        return PARTIAL
    return 0.0


def sequence_similarity(a: Sequence[Syllable], b: Sequence[Syllable]) -> float:
    """1 - (weighted edit distance / longer length): substitutions cost 1 - syllable similarity,
    insertions and deletions cost 1 (Whisper sometimes merges or drops a syllable)."""
    n, m = len(a), len(b)
    if not n or not m:
        return 0.0
    prev = [float(j) for j in range(m + 1)]
    for i in range(1, n + 1):
        cur = [float(i)] + [0.0] * m
        for j in range(1, m + 1):
            cur[j] = min(prev[j] + 1.0, cur[j - 1] + 1.0,
                         prev[j - 1] + 1.0 - syllable_similarity(a[i - 1], b[j - 1]))
        prev = cur
    return 1.0 - prev[m] / max(n, m)


@lru_cache(maxsize=65536)
def char_syllable(ch: str) -> Syllable | None:
    """The (most common) reading of one CJK character; None for anything else."""
    if not ("\u4e00" <= ch <= "\u9fff"):
        return None
    from pypinyin import Style, lazy_pinyin

    py = lazy_pinyin(ch, style=Style.NORMAL, errors="ignore")
    return split_syllable(py[0]) if py else None


def text_syllables(text: str) -> tuple[Syllable, ...] | None:
    """Syllables of an all-CJK string, read as a phrase (pypinyin's phrase dictionary picks the
    right reading of polyphones: 重庆 -> chong qing); None if any character is not CJK."""
    if not text or any(char_syllable(c) is None for c in text):
        return None
    from pypinyin import Style, lazy_pinyin

    return tuple(split_syllable(p) for p in lazy_pinyin(text, style=Style.NORMAL))


def spelled_syllables(spelling: str) -> tuple[Syllable, ...]:
    """'sa si' -> syllables (used for Latin terms as Chinese speakers say them)."""
    return tuple(split_syllable(p) for p in spelling.split())


# English letter names as Chinese speakers say them (the spellings of sales_terms.yaml use the
# same): lets a Latin token Whisper wrote (1RT, sat) be compared with a spelled term by sound.
LETTER_NAMES = {
    "a": "ei", "b": "bi", "c": "xi", "d": "di", "e": "yi", "f": "ai fu", "g": "ji", "h": "ai qi",
    "i": "ai", "j": "jie", "k": "kai", "l": "ai le", "m": "ai mu", "n": "en", "o": "ou", "p": "pi",
    "q": "kiu", "r": "a er", "s": "ai si", "t": "ti", "u": "you", "v": "wei", "w": "da bu liu",
    "x": "ai ke si", "y": "wai", "z": "zei", "1": "yi",
}


def letters_syllables(token: str) -> tuple[Syllable, ...] | None:
    """'1rt' -> yi a er ti: a token of Latin letters (and the digit 1, which Whisper writes for
    the letter E's yi) read out letter by letter; None if it holds anything else."""
    names = [LETTER_NAMES.get(c) for c in token.lower()]
    if not names or any(n is None for n in names):
        return None
    return spelled_syllables(" ".join(names))  # type: ignore[arg-type]
