"""The hand-written caller corpus (docs/nlu-labelling.md): reading it by split, with strict checks.

    agent/data/nlu/corpus/utterances/<writer>.jsonl   one caller utterance a line
    agent/data/nlu/corpus/scripts/<writer>.jsonl      one multi-turn caller script a line (DST gold)
    agent/data/nlu/corpus/writers.yaml                (optional) writer id -> split

Splits are by writer: `writers.yaml` when present (`w07: train` or `w07: {split: train, ...}`),
otherwise the writer id's first letter: w = train, d = dev, t = test.  The test writers are
frozen: nothing may be trained or tuned on them (`load_split("test")` is for the one final run).

Checks (each a `CorpusError` naming the file and line): unknown intent or entity type (the
taxonomy in agent/data/taxonomy.yaml), `other` together with another intent, a span that is not
a substring of the text, a missing/ill-typed field; in a script, 2-6 turns, one bot line fewer,
an unknown slot or active intent, a number slot that is not a number.  A line that is not JSON at all is skipped
with a warning instead (writers append to these files while others read them; a half-written
last line is expected), unless `strict_json=True`.

    python -m agent.nlu.corpus stats                 # lines per writer and split
    python -m agent.nlu.corpus check                 # validate every file (exit 2 on an error)
    python -m agent.nlu.corpus eval --split dev [--model PATH|joint|rules] [--errors 20]
"""

from __future__ import annotations

import json
import re
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.nlu.evaluate import DataError, Example, _norm_value
from agent.resources import DATA_DIR

CORPUS_DIR = DATA_DIR / "nlu" / "corpus"
UTTERANCE_DIR = CORPUS_DIR / "utterances"
SCRIPT_DIR = CORPUS_DIR / "scripts"
WRITERS_FILE = CORPUS_DIR / "writers.yaml"
SPLITS = ("train", "dev", "test")
_PREFIX_SPLIT = {"w": "train", "d": "dev", "t": "test"}


class CorpusError(DataError):
    """A corpus line that breaks the labelling guide; the message names FILE:LINE."""


class CorpusWarning(UserWarning):
    """A line skipped because it is not JSON (a file still being written)."""


@dataclass(frozen=True)
class Span:
    type: str
    value: Any
    start: int  # character offsets into `text`
    end: int
    negated: bool = False


@dataclass(frozen=True)
class CorpusExample:
    id: str
    writer: str
    domain: str
    text: str
    intents: tuple[str, ...]
    entities: tuple[Span, ...] = ()
    context: tuple[str, ...] = ()
    bot_prev: str | None = None
    source: str = ""  # FILE:LINE

    def to_example(self) -> Example:
        """The evaluation form: entities as (type, normalised value); spans dropped."""
        return Example(self.text, self.intents, tuple((s.type, _norm_value(s.value)) for s in self.entities), self.context,
                       self.bot_prev)


def split_of(writer: str, writers: dict[str, str] | None = None) -> str:
    if writers and writer in writers:
        return writers[writer]
    split = _PREFIX_SPLIT.get(writer[:1].lower())
    if split is None:
        raise CorpusError(f"writer {writer!r}: no split (not in writers.yaml, and the id does not start with w/d/t)")
    return split


def load_writers(path: Path = WRITERS_FILE) -> dict[str, str]:
    """writer id -> split from writers.yaml, or {} when there is none."""
    if not path.exists():
        return {}
    import yaml

    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if isinstance(raw, dict) and isinstance(raw.get("writers"), (dict, list)):
        raw = raw["writers"]
    out: dict[str, str] = {}
    items = raw.items() if isinstance(raw, dict) else ((w.get("id"), w) for w in raw if isinstance(w, dict))
    for wid, spec in items:
        split = spec if isinstance(spec, str) else (spec or {}).get("split") if isinstance(spec, dict) else None
        if split is None:
            continue
        if split not in SPLITS:
            raise CorpusError(f"{path}: writer {wid!r} has unknown split {split!r} (expected one of {SPLITS})")
        out[str(wid)] = split
    return out


def _fail(where: str, msg: str) -> CorpusError:
    return CorpusError(f"{where}: {msg}")


def _locate(text: str, span: str, taken: list[tuple[int, int]]) -> tuple[int, int] | None:
    """The first occurrence of `span` in `text` that does not overlap a span placed before it
    (two entities with the same surface in one line take successive occurrences)."""
    start = text.find(span)
    first = None
    while start >= 0:
        end = start + len(span)
        if first is None:
            first = (start, end)
        if not any(start < e and s < end for s, e in taken):
            return start, end
        start = text.find(span, start + 1)
    return first


def parse_line(obj: Any, where: str, intents: Sequence[str], entity_types: Sequence[str]) -> CorpusExample:
    """One utterance line -> CorpusExample, or CorpusError naming `where` (FILE:LINE)."""
    if not isinstance(obj, dict):
        raise _fail(where, "expected a JSON object")
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        raise _fail(where, "'text' must be a non-empty string")
    raw_intents = obj.get("intents")
    if not isinstance(raw_intents, list) or not raw_intents or not all(isinstance(i, str) for i in raw_intents):
        raise _fail(where, "'intents' must be a non-empty list of intent ids")
    known = set(intents)
    for name in raw_intents:
        if name not in known:
            raise _fail(where, f"unknown intent {name!r} (taxonomy: agent/data/taxonomy.yaml)")
    if "other" in raw_intents and len(set(raw_intents)) > 1:
        raise _fail(where, f"'other' must stand alone, got {raw_intents}")
    ents = obj.get("entities", [])
    if not isinstance(ents, list):
        raise _fail(where, "'entities' must be a list")
    spans: list[Span] = []
    taken: list[tuple[int, int]] = []
    types = set(entity_types)
    for k, e in enumerate(ents):
        if not isinstance(e, dict):
            raise _fail(where, f"entity {k}: expected an object")
        typ, span, value = e.get("type"), e.get("span"), e.get("value")
        if typ not in types:
            raise _fail(where, f"entity {k}: unknown entity type {typ!r} (taxonomy: {', '.join(entity_types)})")
        if not isinstance(span, str) or not span:
            raise _fail(where, f"entity {k} ({typ}): 'span' must be a non-empty string")
        if value is None or value == "":
            raise _fail(where, f"entity {k} ({typ}): 'value' is missing")
        pos = _locate(text, span, taken)
        if pos is None:
            raise _fail(where, f"entity {k} ({typ}): span {span!r} is not a substring of the text {text!r}")
        taken.append(pos)
        spans.append(Span(typ, value, pos[0], pos[1], bool(e.get("negated", False))))
    ctx = obj.get("context") or []
    if isinstance(ctx, str):
        ctx = [ctx]
    if not isinstance(ctx, list) or not all(isinstance(c, str) for c in ctx):
        raise _fail(where, "'context' must be a list of strings")
    bot_prev = obj.get("bot_prev")
    if bot_prev is not None and not isinstance(bot_prev, str):
        raise _fail(where, "'bot_prev' must be a string")
    return CorpusExample(
        id=str(obj.get("id", where)), writer=str(obj.get("writer", "")), domain=str(obj.get("domain", "")),
        text=text, intents=tuple(dict.fromkeys(raw_intents)), entities=tuple(spans), context=tuple(ctx),
        bot_prev=bot_prev or None, source=where,
    )


def read_objects(path: Path, strict_json: bool = False) -> Iterator[tuple[str, Any]]:
    """("FILE:LINE", the line's JSON object) for every line of one writer file, unvalidated;
    non-JSON lines skipped with a warning (a CorpusError with `strict_json`)."""
    with Path(path).open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as exc:
                if strict_json:
                    raise CorpusError(f"{where}: not JSON ({exc})") from exc
                warnings.warn(f"{where}: skipped, not JSON ({exc})", CorpusWarning, stacklevel=2)


def read_file(path: Path, strict_json: bool = False) -> list[CorpusExample]:
    """Every utterance of one writer file, validated; non-JSON lines skipped with a warning."""
    from agent.nlu.lexicon import load_taxonomy

    tax = load_taxonomy()
    return [parse_line(obj, where, tax.intent_names, tax.entity_types) for where, obj in read_objects(path, strict_json)]


def check_script(obj: Any, where: str, intents: Sequence[str]) -> None:
    """One script line (docs/nlu-labelling.md, "Script line"), or CorpusError naming `where`."""
    from agent.dialogue.script_check import script_problem

    problem = script_problem(obj, intents, corpus=True)
    if problem:
        raise _fail(where, problem)


def check_scripts_file(path: Path) -> int:
    """Validate every script of one writer file; the number of scripts."""
    from agent.nlu.lexicon import load_taxonomy

    names = load_taxonomy().intent_names
    n = 0
    for where, obj in read_objects(path, strict_json=True):
        check_script(obj, where, names)
        n += 1
    return n


def writer_files(directory: Path = UTTERANCE_DIR) -> dict[str, Path]:
    return {p.stem: p for p in sorted(Path(directory).glob("*.jsonl"))}


def load_split(split: str, directory: Path = UTTERANCE_DIR, writers_file: Path | None = None,
               strict_json: bool = False) -> list[CorpusExample]:
    """All utterances of the writers in `split` (train | dev | test), file order."""
    out: list[CorpusExample] = []
    for path in split_files(split, directory, writers_file):
        out += read_file(path, strict_json=strict_json)
    return out


def split_files(split: str, directory: Path = UTTERANCE_DIR, writers_file: Path | None = None) -> list[Path]:
    """The writer files of one split (train | dev | test), in writer order."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (expected one of {SPLITS})")
    wf = writers_file if writers_file is not None else Path(directory).parent / "writers.yaml"
    writers = load_writers(wf)
    return [path for wid, path in writer_files(directory).items() if split_of(wid, writers) == split]


def split_counts(directory: Path = UTTERANCE_DIR) -> dict[str, dict[str, int]]:
    writers = load_writers(Path(directory).parent / "writers.yaml")
    counts: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    for wid, path in writer_files(directory).items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CorpusWarning)
            counts[split_of(wid, writers)][wid] = len(read_file(path))
    return counts


def template_examples(path: Path) -> list[CorpusExample]:
    """The old template split (agent/data/nlu/train.jsonl: values, no spans) as corpus examples,
    with spans derived where the value's surface can be found: the rules' own entity finder on
    the normalised text (its character map points back into the original), kept only when it
    finds the labelled (type, value).  Entities whose surface cannot be found are dropped from
    the tag targets (the intents are kept)."""
    from agent.nlu.entities import extract
    from agent.nlu.lexicon import load_lexicon, load_taxonomy
    from agent.nlu.normalize import Rewriter
    from agent.jsonl import read_jsonl

    lex = load_lexicon()
    rw = Rewriter(lex.rewrites, lex.pinyin_targets)
    names = set(load_taxonomy().intent_names)
    out = []
    for number, obj in read_jsonl(path, DataError):
        text = obj["text"]
        gold = {(e["type"], _norm_value(e["value"])): e for e in obj.get("entities") or []}
        intents = tuple(i for i in obj.get("intents") or [] if i in names) or ("other",)
        norm = rw(text)
        spans: list[Span] = []
        for f in extract(norm, lex, want_later=True, want_time=True):
            key = (f.type, _norm_value(f.value))
            if key in gold:
                a, b = norm.orig_span(f.start, f.end)
                if b > a and not any(a < s.end and s.start < b for s in spans):
                    spans.append(Span(f.type, gold.pop(key)["value"], a, b))
        out.append(CorpusExample(id=f"{path.stem}-{number}", writer="template", domain=str(obj.get("pack", "")),
                                 text=text, intents=intents, entities=tuple(spans),
                                 context=tuple(obj.get("context") or ()), source=f"{path}:{number}"))
    return out


# --- command line -------------------------------------------------------------------------

def _eval(split: str, model: str | None, errors: int) -> dict:
    from agent.nlu import load_understander
    from agent.nlu.evaluate import evaluate, report_lines

    if split == "test":
        print("note: the test split is frozen; run it once, for the final figure, and fix nothing from it", file=sys.stderr)
    examples = [c.to_example() for c in load_split(split)]
    und = load_understander(model)
    result = evaluate(und, examples)
    for line in report_lines(result, show_errors=errors):
        print(line)
    return result


def main(argv: Iterable[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("stats")
    sub.add_parser("check")
    ev = sub.add_parser("eval")
    ev.add_argument("--split", choices=SPLITS, default="dev")
    ev.add_argument("--model", default="rules", help="rules (default) | joint | a model file/dir")
    ev.add_argument("--errors", type=int, default=0)
    a = ap.parse_args(list(argv) if argv is not None else None)
    try:
        if a.cmd == "stats":
            c = split_counts()
            print(json.dumps({s: {"lines": sum(v.values()), "writers": v} for s, v in c.items()}, ensure_ascii=False))
        elif a.cmd == "check":
            for path in writer_files().values():
                n = len(read_file(path))
                print(f"{path.name}: {n} lines ok")
            for path in writer_files(SCRIPT_DIR).values():
                print(f"scripts/{path.name}: {check_scripts_file(path)} scripts ok")
        else:
            _eval(a.split, a.model, a.errors)
    except CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
