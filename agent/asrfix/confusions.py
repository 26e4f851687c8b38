"""Confusions learned from what the ear really hears: align Whisper's transcripts of synthetic
TRAIN-split audio with their references, and keep, for each lexicon term, the spellings Whisper
wrote instead (并发 -> 病发, 试用 -> 使用...).  The corrector applies them as exact rewrites, under
the same guard as the sound-based ones.  Mined from the train split only, so the spoken test
set measures them honestly.

    python -m agent.asrfix.confusions --transcripts asr_train.jsonl --out agent/data/spoken/confusions.yaml
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import yaml

from agent.asrfix.lexicon import DATA_DIR, DomainLexicon, DomainTerm, build_lexicon
from agent.asrfix.pinyin import sequence_similarity, text_syllables
from agent.asrfix.wordlist import common_words

DEFAULT_PATH = DATA_DIR / "spoken" / "confusions.yaml"
MIN_SOUND = 0.75  # a learned spelling must still sound like the term (else it is a different word)
MIN_SOUND_SHORT = 0.85  # two characters: every syllable must match (下个 is not 价格)


def _clean(text: str) -> str:
    """Both sides in the scoring form (numbers as digits, no punctuation), so that 一千 in the
    reference and 1000 in the transcript align as equal and only the term's own characters differ."""
    import unicodedata

    from agent.speech.textnorm import normalise_transcript

    text = normalise_transcript(text).lower()
    return "".join(c for c in text if not unicodedata.category(c).startswith(("P", "Z", "S")) and not c.isspace())


def _aligned_span(ops: list[tuple[str, int, int, int, int]], r0: int, r1: int) -> tuple[int, int] | None:
    """The hypothesis span that reference span [r0, r1) was aligned to."""

    def map_pos(r: int, end: bool) -> int | None:
        for tag, i1, i2, j1, j2 in ops:
            if i1 <= r < i2 or (end and r == i2 and i2 > i1):
                if tag == "equal" or (i2 - i1) == (j2 - j1):
                    return j1 + (r - i1)
                # uneven replace: the term's ends go to the block's ends
                return j2 if end else j1
        return None

    a = map_pos(r0, False)
    b = map_pos(r1, True) if r1 > r0 else a
    if a is None or b is None or b <= a:
        return None
    return a, b


def said_texts() -> str:
    """What callers say in the NLU corpus's train and dev splits (never the test split): a
    spelling found there is a real phrase, not a mis-hearing."""
    out = []
    for split in ("train", "dev"):
        path = DATA_DIR / "nlu" / f"{split}.jsonl"
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    out.append(_clean(json.loads(line).get("text", "")))
    return "\n".join(out)


def mine(pairs: Iterable[tuple[str, str]], lexicon: DomainLexicon, corpus: str = "") -> list[dict]:
    terms = sorted((t for t in lexicon.targets() if t.sounds and len(t.text) >= 2), key=lambda t: -len(t.text))
    refs_seen: list[str] = []
    found: Counter[tuple[str, str]] = Counter()
    by_text: dict[str, DomainTerm] = {}
    for ref, hyp in pairs:
        r, h = _clean(ref), _clean(hyp)
        refs_seen.append(r)
        if not r or not h:
            continue
        ops = difflib.SequenceMatcher(None, r, h, autojunk=False).get_opcodes()
        taken = [False] * len(r)
        for t in terms:
            start = r.lower().find(t.text.lower())
            while start >= 0:
                end = start + len(t.text)
                if not any(taken[start:end]):
                    for k in range(start, end):
                        taken[k] = True
                    span = _aligned_span(ops, start, end)
                    if span:
                        heard = h[span[0]:span[1]]
                        if heard.lower() != t.text.lower():
                            found[(heard, t.text)] += 1
                            by_text[t.text] = t
                start = r.lower().find(t.text.lower(), start + 1)
    words = common_words()
    all_refs = "\n".join(refs_seen) + "\n" + corpus
    out = []
    for (heard, meant), n in found.most_common():
        term = by_text[meant]
        sounds = text_syllables(heard)
        if len(heard) < 2 or re.search(r"[0-9A-Za-z]", heard) or sounds is None:
            continue
        if heard in all_refs or words.get(heard, 0) >= 20 or heard in lexicon.known_words:
            continue  # something callers really say, or an ordinary word: never rewrite it
        sim = max(sequence_similarity(sounds, s) for s in term.sounds)
        if sim < (MIN_SOUND_SHORT if len(heard) <= 2 else MIN_SOUND):
            continue
        out.append({"heard": heard, "meant": meant, "kind": term.kind, "id": term.id, "count": n,
                    "sound": round(sim, 2)})
    return out


def load_confusions(path: Path = DEFAULT_PATH) -> dict[str, tuple[str, str, str]]:
    """heard -> (meant, kind, id); empty when the file is absent."""
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {c["heard"]: (c["meant"], c.get("kind", ""), c.get("id", "")) for c in data.get("confusions") or []}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="mine ASR confusions of lexicon terms from train-split transcripts")
    ap.add_argument("--transcripts", type=Path, required=True, action="append",
                    help='JSONL from `dianxiao eval spoken --save-transcripts` (fields "reference" and "asr")')
    ap.add_argument("--out", type=Path, default=DEFAULT_PATH)
    ap.add_argument("--playbook", default="cloud_saas")
    a = ap.parse_args(argv)
    pairs = []
    for p in a.transcripts:
        for line in p.read_text(encoding="utf-8").splitlines():
            if line.strip():
                obj = json.loads(line)
                pairs.append((obj["reference"], obj.get("asr", obj["text"])))
    mined = mine(pairs, build_lexicon(a.playbook), said_texts())
    a.out.parent.mkdir(parents=True, exist_ok=True)
    header = ("# Confusions mined from Whisper base transcripts of synthetic TRAIN-split phone audio\n"
              "# (agent/asrfix/confusions.py; regenerate with the command in docs/spoken.md).\n")
    a.out.write_text(header + yaml.safe_dump({"confusions": mined}, allow_unicode=True, sort_keys=False),
                     encoding="utf-8")
    print(json.dumps({"pairs": len(pairs), "confusions": len(mined), "out": str(a.out)}, ensure_ascii=False))


if __name__ == "__main__":
    main()
