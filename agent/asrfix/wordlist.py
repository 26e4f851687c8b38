"""A dictionary of ordinary Chinese words (jieba's 349k-word dict.txt with frequencies), used
by the corrector's guard: a window of ASR output that is already an ordinary word, or that an
ordinary word straddles, is left alone unless the evidence is overwhelming."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def common_words() -> dict[str, int]:
    """word -> corpus frequency.  Loaded once per process (~0.5 s); empty without jieba, in
    which case the guard falls back to the lexicon alone (more cautious thresholds apply)."""
    try:
        path = resources.files("jieba") / "dict.txt"
        text = path.read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        return {}
    words: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split(" ")
        if len(parts) >= 2 and len(parts[0]) >= 2:
            try:
                words[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return words
