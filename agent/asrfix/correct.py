"""Post-correction of ASR output with the domain lexicon: a window of the transcript that sounds
like a lexicon term (pinyin similarity, tone-insensitive, common confusions forgiven) but is
written differently is replaced by the term - 一地被分 -> 异地备份, 云服物器 -> 云服务器.

The guard against over-correction, in order:
- digits, numerals with units (一千, 两万), and exact lexicon terms already in the text are never
  touched; nor are the taxonomy's cue words (不需要, 多少钱...);
- a window that an ordinary word straddles (前|一天 for 迁移) is left alone;
- a window that is itself an ordinary word (jieba's dictionary) is only rewritten when it sounds
  exactly like the term (every syllable equal, tones aside) AND the utterance supports the domain
  reading (another domain term or a number next to it);
- two-syllable terms need every syllable to match (up to the listed confusions); longer terms
  need a similarity >= `threshold` and may differ by one syllable in length.
Every change is reported (`Change`) so a call log shows what the ear heard and what we read."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache

from agent.asrfix.lexicon import DomainLexicon, DomainTerm
from agent.asrfix.pinyin import (
    FUZZY,
    Syllable,
    _fuzzy,
    char_syllable,
    letters_syllables,
    sequence_similarity,
    syllable_similarity,
    text_syllables,
)
from agent.asrfix.wordlist import common_words

# Numbers are the NLU's business (一千并发 -> 1000) and a corrected digit is a wrong quote.
_NUMBER = re.compile(r"[0-9０-９][0-9０-９.,%％]*|[零一二两三四五六七八九十百千万亿]*[十百千万亿][零一二两三四五六七八九十百千万亿]*"
                     r"|[零一二两三四五六七八九]{3,}")
_CJK = re.compile(r"[\u4e00-\u9fff]+")
# A quantity as the normaliser writes it (800, 1.5万, 2千), for the terms that sit beside one.
_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]+)?)([百千万]?)")
_UNIT = {"": 1, "百": 100, "千": 1000, "万": 10000}
# A measure word after the number says what is counted (三万块, 800台): not a term's place.
_MEASURE = set("块元台个套人次倍位家条张份件户年月天周")
# A Latin token Whisper wrote, with the one CJK character it may have heard for a first letter
# (雷pi for API: lei pi ai).
_LATIN_TOKEN = re.compile(r"([\u4e00-\u9fff]?)([A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*)")
STRADDLE_MIN_FREQ = 100  # an ordinary word this common straddling the window vetoes a change
WORD_MIN_FREQ = 20  # rarer dictionary entries (萨斯) are more likely a mis-hearing than a word
# Two-syllable terms that are everyday words (价格, 安全, 试用) have everyday homophones (使用);
# they are kept as exact terms but never written by the corrector.
GENERIC_FREQ = 500
# Function characters: a short window holding one is usually grammar, not a mis-heard term
# (是用 is 是+用, not 试用).
_FUNCTION_CHARS = set("的是了在有我你他她它们这那就也都和与吗呢吧啊嘛么个不没要")


@dataclass(frozen=True)
class Change:
    start: int  # in the input text
    end: int
    before: str
    after: str
    kind: str
    term_id: str
    score: float
    note: str = ""  # why the guard let it through when the window was an ordinary word

    def as_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "before": self.before, "after": self.after,
                "kind": self.kind, "id": self.term_id, "score": round(self.score, 3), "note": self.note}


@dataclass(frozen=True)
class Correction:
    text: str
    original: str
    changes: tuple[Change, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class _Candidate:
    start: int
    end: int
    term: DomainTerm
    score: float
    note: str


def _key(s: Syllable) -> tuple[str, str]:
    return _fuzzy(s)


@lru_cache(maxsize=8192)
def _window_sounds(window: str) -> tuple[Syllable, ...] | None:
    return text_syllables(window)


def _all_but_one(heard: tuple[Syllable, ...], sound: tuple[Syllable, ...]) -> float | None:
    """Mean syllable similarity when every syllable but at most one matches, else None."""
    if len(heard) != len(sound):
        return None
    sims = [syllable_similarity(x, y) for x, y in zip(heard, sound)]
    return sum(sims) / len(sims) if sum(x >= FUZZY for x in sims) >= len(sound) - 1 else None


class Corrector:
    """Pinyin-similarity post-correction against one domain lexicon (pure; thread-safe)."""

    def __init__(self, lexicon: DomainLexicon, *, threshold: float = 0.8, use_wordlist: bool = True,
                 learned: dict[str, tuple[str, str, str]] | None = None) -> None:
        self.lexicon = lexicon
        # Spellings Whisper was seen to write for a term (agent/asrfix/confusions.py), longest first.
        self.learned = sorted((learned or {}).items(), key=lambda kv: -len(kv[0]))
        self.threshold = threshold
        self.words = common_words() if use_wordlist else {}
        self._surfaces = sorted({t.text.lower() for t in lexicon.terms}, key=len, reverse=True)
        self._protect_words = sorted(lexicon.known_words, key=len, reverse=True)
        # Index: fuzzy key of a syllable -> terms containing it (cheap pre-filter).
        self._by_key: dict[tuple[str, str], set[int]] = defaultdict(set)
        self._targets = [t for t in lexicon.targets() if t.sounds
                         and not (len(t.text) == 2 and self.words.get(t.text, 0) >= GENERIC_FREQ)]
        # Terms beside a number (800并发) - everyday ones (预算) too: the number is the context.
        self._beside_numbers = [t for t in lexicon.targets() if t.number_side and t.sounds]
        self._spelled = [t for t in lexicon.targets() if t.kind == "spelled" and t.sounds]
        for i, t in enumerate(self._targets):
            for sound in t.sounds:
                for s in sound:
                    self._by_key[_key(s)].add(i)

    # --- public ---------------------------------------------------------------------------

    def correct(self, text: str) -> Correction:
        if not text or not _CJK.search(text):
            return Correction(text, text)
        protected = self._protected(text)
        exact_terms = self._exact_term_spans(text)
        self_known = self._known_spans(text)
        candidates: list[_Candidate] = self._learned_candidates(text, protected, exact_terms + self._known_spans(text))
        for run in _CJK.finditer(text):
            candidates.extend(self._candidates(text, run.start(), run.end(), protected, exact_terms, self_known))
        candidates.extend(self._beside_number_candidates(text, protected, exact_terms + self_known))
        candidates.extend(self._letter_candidates(text, exact_terms))
        chosen: list[_Candidate] = []
        taken = [False] * len(text)
        for c in sorted(candidates, key=lambda c: (c.note != "learned confusion", -c.score, -len(c.term.text), c.start)):
            if any(taken[c.start:c.end]):
                continue
            chosen.append(c)
            for i in range(c.start, c.end):
                taken[i] = True
        out = text
        changes = []
        for c in sorted(chosen, key=lambda c: c.start, reverse=True):
            out = out[: c.start] + c.term.text + out[c.end:]
            changes.append(Change(c.start, c.end, text[c.start:c.end], c.term.text, c.term.kind, c.term.id,
                                  c.score, c.note))
        return Correction(out, text, tuple(sorted(changes, key=lambda ch: ch.start)))

    # --- guard ----------------------------------------------------------------------------

    def _exact_term_spans(self, text: str) -> list[tuple[int, int]]:
        low = text.lower()
        spans: list[tuple[int, int]] = []
        taken = [False] * len(text)
        for s in self._surfaces:
            start = low.find(s)
            while start >= 0:
                if not any(taken[start:start + len(s)]):
                    spans.append((start, start + len(s)))
                    for i in range(start, start + len(s)):
                        taken[i] = True
                start = low.find(s, start + 1)
        return spans

    def _protected(self, text: str) -> list[bool]:
        prot = [False] * len(text)
        for m in _NUMBER.finditer(text):
            for i in range(m.start(), m.end()):
                prot[i] = True
        return prot

    def _known_spans(self, text: str) -> list[tuple[int, int]]:
        """The taxonomy's cue words in the text: kept, though a longer term may contain one
        (考情系统 -> 考勤系统 keeps 系统)."""
        spans = []
        for w in self._protect_words:
            start = text.find(w)
            while start >= 0:
                spans.append((start, start + len(w)))
                start = text.find(w, start + 1)
        return spans

    def _is_word(self, w: str) -> bool:
        return self.words.get(w, 0) >= WORD_MIN_FREQ or w in self.lexicon.known_words

    def _inside_word(self, text: str, a: int, b: int) -> bool:
        """Is text[a:b] part of a longer ordinary word here (服务期|限)?"""
        for i in range(max(0, a - 2), a + 1):
            for j in range(b, min(len(text), b + 2) + 1):
                if (i, j) != (a, b) and self._is_word(text[i:j]):
                    return True
        return False

    def _straddled(self, text: str, a: int, b: int) -> bool:
        """Does a common word cross the window's edge (前|一天 when the window is 前一)?"""
        for edge in (a, b):
            for i in range(max(0, edge - 3), edge):
                for j in range(edge + 1, min(len(text), edge + 3) + 1):
                    if (i < a or j > b) and not (i <= a and j >= b) and self.words.get(text[i:j], 0) >= STRADDLE_MIN_FREQ:
                        return True
        return False

    def _context_supports(self, text: str, a: int, b: int, exact_terms: list[tuple[int, int]]) -> str:
        if any((e <= a or s >= b) for s, e in exact_terms):
            return "domain term in utterance"
        near = text[max(0, a - 4):a] + text[b:b + 4]
        if _NUMBER.search(near) and re.search(r"[0-9十百千万]", near):
            return "number next to it"
        return ""

    # --- search ---------------------------------------------------------------------------

    def _learned_candidates(self, text: str, protected: list[bool],
                            exact_terms: list[tuple[int, int]]) -> list[_Candidate]:
        out = []
        for heard, (meant, kind, id_) in self.learned:
            start = text.find(heard)
            while start >= 0:
                end = start + len(heard)
                overlaps_term = any(not (e <= start or s >= end) for s, e in exact_terms)
                if not any(protected[start:end]) and not overlaps_term and not self._straddled(text, start, end):
                    term = DomainTerm(meant, kind, id_, ())
                    out.append(_Candidate(start, end, term, 1.0, "learned confusion"))
                start = text.find(heard, start + 1)
        return out

    def _candidates(self, text: str, lo: int, hi: int, protected: list[bool],
                    exact_terms: list[tuple[int, int]], known: list[tuple[int, int]]) -> list[_Candidate]:
        keys = [(_key(s) if (s := char_syllable(c)) else None) for c in text[lo:hi]]
        present = {k for k in keys if k}
        hits: dict[int, int] = defaultdict(int)
        for k in present:
            for ti in self._by_key.get(k, ()):
                hits[ti] += 1
        out: list[_Candidate] = []
        for ti, n in hits.items():
            term = self._targets[ti]
            for sound in term.sounds:
                L = len(sound)
                if n < max(1, min(L, len(set(map(_key, sound)))) - 1):
                    continue
                lengths = (L,) if L <= 2 else (L - 1, L, L + 1)
                for wl in lengths:
                    for a in range(lo, hi - wl + 1):
                        b = a + wl
                        cand = self._judge(text, a, b, term, sound, protected, exact_terms, known)
                        if cand:
                            out.append(cand)
        return out

    def _beside_number_candidates(self, text: str, protected: list[bool],
                                  kept: list[tuple[int, int]]) -> list[_Candidate]:
        """800电发 -> 800并发, 续算10万 -> 预算10万: next to a number of at least the term's
        `number_min`, on the term's side, a window that matches all syllables of the term but
        one is the term - unless it is an ordinary word, holds a function character, starts
        with a measure word (三万块哈 is money), or an ordinary word crosses its edge
        (3000元发|票, 我打算|3000)."""
        out: list[_Candidate] = []
        for m in _QUANTITY.finditer(text):
            value = float(m.group(1)) * _UNIT[m.group(2)]
            for term in self._beside_numbers:
                if value < term.number_min:
                    continue
                n = len(term.text)
                a, b = (m.end(), m.end() + n) if term.number_side == "before" else (m.start() - n, m.start())
                window = text[max(a, 0):b]
                if a < 0 or len(window) != n or window == term.text or not _CJK.fullmatch(window) or any(protected[a:b]):
                    continue
                if any(not (e <= a or s >= b) for s, e in kept) or any(c in _FUNCTION_CHARS for c in window):
                    continue
                if term.number_side == "before" and window[0] in _MEASURE:
                    continue
                if self._is_word(window) or self._straddled(text, a, b):
                    continue
                heard = _window_sounds(window)
                score = max((_all_but_one(heard, sound) or 0.0 for sound in term.sounds), default=0.0) if heard else 0.0
                if score:
                    out.append(_Candidate(a, b, term, score, "beside a number"))
        return out

    def _letter_candidates(self, text: str, exact_terms: list[tuple[int, int]]) -> list[_Candidate]:
        """1RT -> ERP, sat -> SAP, 雷pi -> API: a Latin token read out letter by letter sounds
        like a spelled term but one syllable.  Only tokens of four or more syllables when they are
        all letters (KPI, ROI and other real acronyms are three), three when Whisper wrote a
        character for the first letter; never a term already in the lexicon (CDN, GPU)."""
        out: list[_Candidate] = []
        for m in _LATIN_TOKEN.finditer(text):
            head, token = m.group(1), m.group(2)
            end = m.end()
            if end < len(text) and text[end].isascii() and text[end].isalnum():
                continue  # part of a longer token the regex stopped short of
            letters = letters_syllables(token)
            if letters is None or token.lower() in self._surfaces:
                continue
            for a, char in [(m.start(2), "")] + ([(m.start(1), head)] if head else []):
                first = char_syllable(char) if char else None
                heard = ((first,) if first else ()) + letters
                if (char and first is None) or len(heard) < (3 if char else 4):
                    continue
                if any(not (e <= a or s >= end) for s, e in exact_terms):
                    continue
                found: dict[str, _Candidate] = {}
                for term in self._spelled:
                    score = max((_all_but_one(heard, sound) or 0.0 for sound in term.sounds), default=0.0)
                    if score:
                        found[term.id] = _Candidate(a, end, term, score, "spelled letters")
                if not char:  # cdm is one letter from CRM and from CDN (and sounds near both): left alone
                    word = token.lower().replace("1", "e")
                    rivals = {t.id for t in self._spelled if len(t.text) == len(word)
                              and sum(x != y for x, y in zip(word, t.text.lower())) <= 1
                              and min(abs(len(sd) - len(heard)) for sd in t.sounds) <= 1}
                    if rivals - found.keys():
                        continue
                if len(found) == 1:
                    out += found.values()
        return out

    def _judge(self, text: str, a: int, b: int, term: DomainTerm, sound: tuple[Syllable, ...],
               protected: list[bool], exact_terms: list[tuple[int, int]],
               known: list[tuple[int, int]] = ()) -> _Candidate | None:
        window = text[a:b]
        if window == term.text or any(protected[a:b]):
            return None
        # A term already written right is kept; a window may only grow it into a longer term
        # that contains it (以地容灾 -> 异地容灾), and then only on a near-exact sound.
        extends = False
        for s, e in exact_terms:
            if e <= a or s >= b:
                continue
            if s < a or e > b or text[s:e].lower() not in term.text.lower():
                return None
            extends = True
        for s, e in known:  # a cue word is kept, inside a longer term that contains it
            if not (e <= a or s >= b) and (s < a or e > b or text[s:e] not in term.text):
                return None
        heard = _window_sounds(window)
        if heard is None:
            return None
        if len(sound) <= 2 or term.kind == "spelled":
            if len(heard) != len(sound) or any(syllable_similarity(x, y) < FUZZY for x, y in zip(heard, sound)):
                return None
            score = sum(syllable_similarity(x, y) for x, y in zip(heard, sound)) / len(sound)
        else:
            # The ends anchor a long term: a window whose first and last syllables both miss is
            # a different phrase that happens to share a middle.
            if syllable_similarity(heard[0], sound[0]) < FUZZY and syllable_similarity(heard[-1], sound[-1]) < FUZZY:
                return None
            score = sequence_similarity(heard, sound)
            if score < (0.95 if extends else self.threshold):
                return None
        if self._straddled(text, a, b):
            return None
        note = ""
        short_grammar = len(window) <= 2 and any(c in _FUNCTION_CHARS for c in window)
        if short_grammar or self._is_word(window) or self._inside_word(text, a, b):
            exact = len(heard) == len(sound) and all(x.text == y.text for x, y in zip(heard, sound))
            if term.kind == "spelled" or not exact:
                return None
            note = self._context_supports(text, a, b, exact_terms)
            if not note:
                return None
        return _Candidate(a, b, term, score, note)
