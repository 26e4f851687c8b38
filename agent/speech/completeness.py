"""Is this partial transcript a finished caller turn?  The semantic end-of-turn signal (issue 17).

Smart Turn hears prosody; on read Chinese it scores 60 % of mid-sentence cuts as finished
(docs/telephony.md), so a pause at a phrase boundary ends the caller's turn.  The words say
more: "我想了解一下你们的" is not a request yet, "你们的云服务器多少钱一个月" is.  This module
is that second signal: logistic regression over hashed character n-grams of the transcript,
weighted towards its last characters.  Pure numpy, microseconds per call, weights a few
hundred kB (agent/data/turn/completeness.npz, rebuilt by `python -m pipelines.turn_completeness`).

Training text is what the project ships: whole caller utterances of the hand-written corpus's
train writers are "complete"; the same lines cut at a character boundary (sometimes with a
filler the caller says while thinking) are "incomplete".
"""

from __future__ import annotations

import json
import math
import random
import re
import unicodedata
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

N_BUCKETS = 1 << 16  # hashed feature space: 64 k weights, 128 kB as float16
SUFFIX_MAX = 4  # the last 1..4 characters, anchored at the end: where "finished" shows
LENGTH_CAP = 16  # lengths from here on are balanced as one group
FILLERS = ("嗯", "呃", "啊", "那个", "就是", "然后")  # said while thinking, mid-sentence


def normalise(text: str) -> str:
    """The form both training text and ASR partials are scored in: no punctuation, spaces or
    symbols (the corpus has a final "？", Whisper often none), Latin lower-case, digits as 0
    (the ASR writes numbers as digits, the corpus as either)."""
    out = []
    for c in text.lower():
        if c.isspace() or unicodedata.category(c).startswith(("P", "Z", "S")):
            continue
        out.append("0" if c.isdigit() else c)
    return "".join(out)


def features(text: str) -> list[str]:
    t = normalise(text)
    feats = ["bias"]
    if not t:
        return feats + ["empty"]
    for k in range(1, SUFFIX_MAX + 1):
        if len(t) >= k:
            feats.append(f"end:{t[-k:]}")
    for k in (1, 2):
        if len(t) >= k:
            feats.append(f"start:{t[:k]}")
    for n in (1, 2):
        feats += [f"g{n}:{t[i:i + n]}" for i in range(len(t) - n + 1)]
    return feats


def hashed(feats: Iterable[str]) -> np.ndarray:
    return np.fromiter((zlib.crc32(f.encode()) & (N_BUCKETS - 1) for f in feats), dtype=np.int64)


@dataclass
class CompletenessModel:
    weights: np.ndarray  # (N_BUCKETS,) float32
    meta: dict = field(default_factory=dict)

    def probability(self, text: str) -> float:
        """P(the caller has finished the turn | the words so far)."""
        z = float(self.weights[hashed(features(text))].sum())
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            np.savez_compressed(f, weights=self.weights.astype(np.float16),
                                meta=np.frombuffer(json.dumps(self.meta, ensure_ascii=False).encode(), dtype=np.uint8))

    @classmethod
    def load(cls, path: Path) -> "CompletenessModel":
        with np.load(path) as z:
            meta = json.loads(bytes(z["meta"]).decode()) if "meta" in z else {}
            return cls(z["weights"].astype(np.float32), meta)


def default_path() -> Path:
    from agent.resources import DATA_DIR

    return DATA_DIR / "turn" / "completeness.npz"


# --- training (pipelines/turn_completeness.py; a tiny one in tests/test_turn_completeness.py) ---


_SENTENCE_END = re.compile(r"[。？！?!；;]+")
_CLAUSE_BREAK = re.compile(r"[，,、。？！?!；;…\s]+")


def examples(lines: Sequence[str], cuts_per_line: int = 2, seed: int = 17,
             clauses: bool = True) -> list[tuple[str, int]]:
    """Labelled text from whole caller lines.

    Complete (1): each whole line; each of its sentences up to a full stop / question mark
    inside it ("好的。|那…" - a finished sentence is a fine place to answer); its last clause
    alone ("…，|你们有试用吗"), which ends where a real turn ends but is as short as a quick reply
    (without those, the corpus's long written requests teach "short = unfinished").
    Incomplete (0): `cuts_per_line` cuts at a character boundary from a fifth of the line to one
    character before its end, one in five with a thinking filler ("我想要那个"); a cut at a
    comma counts as incomplete (the caller did go on).  A cut that is itself a complete example
    anywhere in the data ("你好", "多少钱") is dropped, not labelled twice.  `clauses=False`: whole
    lines and cuts only (what the held-out report scores: finished turns vs. cut ones)."""
    rng = random.Random(seed)
    complete: list[str] = []
    for line in lines:
        whole = normalise(line)
        if not whole:
            continue
        complete.append(whole)
        if not clauses:
            continue
        parts = [m.end() for m in _SENTENCE_END.finditer(line) if m.end() < len(line.rstrip())]
        complete += [normalise(line[:end]) for end in parts]
        pieces = [c for c in _CLAUSE_BREAK.split(line.strip()) if c]
        if len(pieces) > 1:
            complete.append(normalise(pieces[-1]))
    complete = [c for c in complete if c]
    known = set(complete)
    out = [(c, 1) for c in complete]
    for line in lines:
        t = normalise(line)
        if len(t) < 2:
            continue
        for _ in range(cuts_per_line):
            cut = rng.randint(max(1, len(t) // 5), len(t) - 1)
            prefix = t[:cut]
            if rng.random() < 0.2:
                prefix += rng.choice(FILLERS)
            if prefix not in known:
                out.append((prefix, 0))
    return out


def word_cut_examples(sentences: Sequence[Sequence[str]], cuts_per_sentence: int = 1, seed: int = 19,
                      min_chars: int = 6) -> list[tuple[str, int]]:
    """Labelled text from general written Chinese split into words (a sentence = its words).

    Complete (1): each sentence that ends in a full stop, question or exclamation mark.
    Incomplete (0): the same sentence cut at a *word* boundary from a fifth of it to before its
    last word: a speaker pauses between words, so that is where a pause cuts a sentence.  The
    callers' own corpus teaches what a finished request reads like; this teaches what an
    unfinished clause of any subject reads like ("零零后会成为", "民警及时到场进行")."""
    rng = random.Random(seed)
    out: list[tuple[str, int]] = []
    for words in sentences:
        text = "".join(words)
        if len(normalise(text)) < min_chars or not _SENTENCE_END.search(words[-1]):
            continue
        out.append((normalise(text), 1))
        bounds = [len("".join(words[:k])) for k in range(1, len(words) - 1)]
        bounds = [b for b in bounds if b >= len(text) // 5]
        for b in rng.sample(bounds, min(cuts_per_sentence, len(bounds))):
            prefix = normalise(text[:b])
            if prefix:
                out.append((prefix, 0))
    return out


def train(data: Sequence[tuple[str, int]], epochs: int = 300, lr: float = 0.05, l2: float = 1e-6,
          meta: dict | None = None) -> CompletenessModel:
    """Full-batch logistic regression (Adam) on hashed features, classes weighted to balance."""
    rows = [hashed(features(text)) for text, _ in data]
    flat = np.concatenate(rows)
    lens = np.array([len(r) for r in rows])
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    y = np.array([label for _, label in data], dtype=np.float64)
    # Balanced per length as well as per class: cut lines are short and whole lines long, so
    # unweighted the model learns "short = unfinished" and holds every "你们在哪里".  With equal
    # weight for both classes at each length it has to read the words.
    length = np.array([min(len(text), LENGTH_CAP) for text, _ in data])
    sample_w = np.zeros(len(y))
    for n in np.unique(length):
        for label in (0, 1):
            sel = (length == n) & (y == label)
            if sel.any():
                sample_w[sel] = 1.0 / sel.sum()
    sample_w /= sample_w.sum()
    w = np.zeros(N_BUCKETS)
    m, v = np.zeros_like(w), np.zeros_like(w)
    b1, b2, eps = 0.9, 0.999, 1e-8
    for step in range(1, epochs + 1):
        z = np.add.reduceat(w[flat], starts)
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))
        err = (p - y) * sample_w
        g = np.bincount(flat, weights=np.repeat(err, lens), minlength=N_BUCKETS) + l2 * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w -= lr * (m / (1 - b1**step)) / (np.sqrt(v / (1 - b2**step)) + eps)
    return CompletenessModel(w.astype(np.float32), dict(meta or {}, examples=len(data), epochs=epochs, l2=l2))


def accuracy(model: CompletenessModel, data: Sequence[tuple[str, int]], threshold: float = 0.5) -> dict:
    probs = np.array([model.probability(t) for t, _ in data])
    y = np.array([label for _, label in data])
    pred = probs >= threshold
    return {"n": len(data), "accuracy": round(float((pred == y).mean()), 4),
            "complete_recall": round(float(pred[y == 1].mean()), 4) if (y == 1).any() else None,
            "incomplete_recall": round(float((~pred)[y == 0].mean()), 4) if (y == 0).any() else None}
