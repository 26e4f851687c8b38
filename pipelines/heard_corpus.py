"""Heard versions of the caller corpus: the NLU trained also on what the ear makes of a line.

Two steps around the synthetic phone-line audio (pipelines/spoken_synth.py) and the ear
(`dianxiao eval spoken`):

    # 1. a seeded random sample of one corpus split, as corpus lines (ids, spans, bot_prev kept)
    python -m pipelines.heard_corpus sample --split train --writers w01-w68 -n 1200 --seed 2 --out build/spoken/src/train1200.jsonl
    python -m pipelines.spoken_synth --data build/spoken/src/train1200.jsonl --out build/spoken/train1200
    dianxiao eval spoken --data build/spoken/train1200/spoken.jsonl --no-prompt \\
        --asr-cache build/asr-cache.json --save-transcripts build/spoken/train1200/transcripts.jsonl
    # 2. transcripts -> corpus-format lines for JointConfig.extra_data (`read_file` reads them)
    python -m pipelines.heard_corpus convert --spoken build/spoken/train1200/spoken.jsonl \\
        --transcripts build/spoken/train1200/transcripts.jsonl --out build/spoken/train1200/heard.jsonl

`--save-transcripts` writes one line per clip of the spoken set, in its order, with the
transcript the NLU hears (after the domain correction unless --no-correction) and the labels as
(type, value) - no spans, no bot_prev.  `convert` joins it back to the spoken set line by line
(the reference texts must agree) and, through the line's corpus id, to the corpus line itself
(writer, domain, bot_prev, context, spans, negation).  Intents are kept as they are; an entity is
kept only when its labelled span occurs in the transcript (the tagger learns a span only where
the ear wrote it): verbatim, or - unless --exact-only - as a stretch of the transcript with the
same scoring form (agent.speech.textnorm.for_cer: numbers as digits, Latin lower-cased, no
punctuation), since the ear writes 三百个 as 300个 and IoT as IOT; the span then becomes the
transcript's own surface and the labelled value is kept.  Any other entity is dropped and
counted by type.  A clip the ear heard
nothing in is dropped.  The output ids are the corpus ids + "-heard"."""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.jsonl import read_jsonl
from agent.nlu.corpus import UTTERANCE_DIR, CorpusError, parse_line, read_objects, split_files
from agent.nlu.lexicon import load_taxonomy


def writer_set(spec: str | None) -> set[str] | None:
    """'w01-w68,w70' -> those writer ids (None: every writer)."""
    if not spec:
        return None
    out: set[str] = set()
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        if not hi:
            out.add(lo)
            continue
        prefix = lo.rstrip("0123456789")
        width = len(lo) - len(prefix)
        out.update(f"{prefix}{k:0{width}d}" for k in range(int(lo[len(prefix):]), int(hi[len(prefix):]) + 1))
    return out


def corpus_lines(split: str, directory: Path = UTTERANCE_DIR, writers_only: set[str] | None = None,
                 validate: bool = True) -> list[dict[str, Any]]:
    """Every line of the writers in `split` (or of those of them in `writers_only`) as its JSON
    object (validated unless `validate` is false; file order)."""
    tax = load_taxonomy()
    out = []
    for path in split_files(split, directory):
        if writers_only is not None and path.stem not in writers_only:
            continue
        for where, obj in read_objects(path):
            if validate:
                parse_line(obj, where, tax.intent_names, tax.entity_types)
            out.append(obj)
    return out


def sample(split: str, n: int, seed: int, directory: Path = UTTERANCE_DIR,
           writers: set[str] | None = None) -> list[dict[str, Any]]:
    """A seeded uniform sample of `n` lines of one split (all of them when it has fewer); with
    `writers`, of those writers only (the sample stays the same when writers are added later)."""
    if split == "test":
        raise ValueError("the test writers are frozen: no heard copies of them")
    lines = corpus_lines(split, directory, writers)
    picked = random.Random(seed).sample(range(len(lines)), min(n, len(lines)))
    return [lines[i] for i in sorted(picked)]


def _ascii_alnum(c: str) -> bool:
    return c.isascii() and c.isalnum()


def find_surface(transcript: str, span: str, exact_only: bool = False) -> str | None:
    """`span` as the transcript writes it: itself when it occurs verbatim, else (unless
    `exact_only`) the shortest, first stretch of the transcript with the same scoring form that
    does not cut a digit or Latin run (八百 is not the 800 of 1800), else None."""
    if not span:
        return None
    if span in transcript:
        return span
    if exact_only:
        return None
    from agent.speech.textnorm import for_cer

    target = for_cer(span)
    if not target or target not in for_cer(transcript):
        return None
    n = len(transcript)
    for length in range(1, n + 1):
        for i in range(0, n - length + 1):
            j = i + length
            if (i > 0 and _ascii_alnum(transcript[i - 1]) and _ascii_alnum(transcript[i])) or (
                    j < n and _ascii_alnum(transcript[j - 1]) and _ascii_alnum(transcript[j])):
                continue
            if for_cer(transcript[i:j]) == target:
                return transcript[i:j]
    return None


def heard_line(src: dict[str, Any], transcript: str, asr: str | None = None,
               exact_only: bool = False) -> tuple[dict[str, Any], list[dict], list[dict]]:
    """One corpus line as heard: (new line, kept entities, dropped entities); a kept entity's
    span is the transcript's surface of it."""
    kept, dropped = [], []
    for e in src.get("entities") or []:
        span = e.get("span")
        surface = find_surface(transcript, span, exact_only) if isinstance(span, str) else None
        if surface is None:
            dropped.append(e)
        else:
            kept.append(e if surface == span else {**e, "span": surface})
    out: dict[str, Any] = {}
    if src.get("id") is not None:
        out["id"] = f"{src['id']}-heard"
    for k in ("writer", "domain", "bot_prev"):
        if src.get(k):
            out[k] = src[k]
    out.update(text=transcript, intents=list(src["intents"]), entities=kept)
    if src.get("context"):
        out["context"] = src["context"]
    out.update(reference=src["text"], source="asr")
    if asr is not None and asr != transcript:
        out["asr"] = asr
    return out, kept, dropped


def convert(spoken: Path, transcripts: Path, directory: Path | None = UTTERANCE_DIR,
            exact_only: bool = False) -> tuple[list[dict], dict[str, Any]]:
    """Join `--save-transcripts` output with its spoken set (and the corpus, by id) -> heard lines + counts."""
    sp = [obj for _, obj in read_jsonl(spoken)]
    tr = [obj for _, obj in read_jsonl(transcripts)]
    if len(sp) != len(tr):
        raise ValueError(f"{transcripts}: {len(tr)} lines, but {spoken} has {len(sp)} (not its transcripts?)")
    by_id: dict[str, dict] = {}
    if directory is not None:
        for split in ("train", "dev"):
            by_id.update({str(o["id"]): o for o in corpus_lines(split, directory, validate=False)
                          if isinstance(o, dict) and o.get("id") is not None})
    tax = load_taxonomy()
    out: list[dict] = []
    stats: Counter = Counter()
    kept_by: Counter = Counter()
    dropped_by: Counter = Counter()
    for i, (s, t) in enumerate(zip(sp, tr), start=1):
        if s.get("text") != t.get("reference"):
            raise ValueError(f"line {i}: transcript of {t.get('reference')!r}, spoken line is {s.get('text')!r}")
        src = by_id.get(str(s.get("id"))) if s.get("id") is not None else None
        if src is None:  # not a corpus line (or no corpus given): the spoken line's own labels
            src = s
            stats["not_in_corpus"] += 1
        elif src["text"] != s["text"]:
            raise ValueError(f"line {i}: corpus line {s['id']} now reads {src['text']!r}, spoken {s['text']!r}")
        transcript = (t.get("text") or "").strip()
        stats["lines"] += 1
        if not transcript:
            stats["empty_transcript"] += 1
            continue
        line, kept, dropped = heard_line(src, transcript, t.get("asr"), exact_only)
        parse_line(line, f"{transcripts}:{i}", tax.intent_names, tax.entity_types)  # what read_file will demand
        out.append(line)
        stats["written"] += 1
        stats["identical_to_reference"] += transcript == src["text"]
        kept_by.update(e["type"] for e in kept)
        stats["entities_kept_normalised"] += sum(1 for e in kept if e["span"] not in src["text"])  # respelt by the ear
        dropped_by.update(e["type"] for e in dropped)
    counts = dict(stats)
    counts.update(entities=sum(kept_by.values()) + sum(dropped_by.values()), entities_kept=sum(kept_by.values()),
                  entities_dropped=sum(dropped_by.values()), kept_by_type=dict(kept_by.most_common()),
                  dropped_by_type=dict(dropped_by.most_common()))
    return out, counts


def write_jsonl(lines: Sequence[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample", help="a seeded random sample of one corpus split (train | dev), corpus format")
    s.add_argument("--split", required=True, choices=("train", "dev"))
    s.add_argument("-n", type=int, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--writers", help="only these writers, e.g. w01-w68 (default: every writer of the split)")
    s.add_argument("--corpus", type=Path, default=UTTERANCE_DIR)
    s.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("convert", help="--save-transcripts output + its spoken set -> corpus-format heard lines")
    c.add_argument("--spoken", type=Path, required=True, help="the spoken.jsonl the transcripts were decoded from")
    c.add_argument("--transcripts", type=Path, required=True, help="`dianxiao eval spoken --save-transcripts` output")
    c.add_argument("--corpus", type=Path, default=UTTERANCE_DIR, help="utterance folder the ids point into")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--exact-only", action="store_true",
                   help="keep an entity only when its span is verbatim in the transcript (no digits-for-numerals match)")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "sample":
            lines = sample(args.split, args.n, args.seed, args.corpus, writer_set(args.writers))
            write_jsonl(lines, args.out)
            print(json.dumps({"split": args.split, "seed": args.seed, "lines": len(lines), "out": str(args.out)}))
        else:
            lines, counts = convert(args.spoken, args.transcripts, args.corpus, args.exact_only)
            write_jsonl(lines, args.out)
            print(json.dumps({"out": str(args.out), **counts}, ensure_ascii=False))
    except (ValueError, CorpusError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
