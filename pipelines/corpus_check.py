"""The hand-written corpus's bookkeeping: blind copies for the second labelling pass, agreement
between the two passes, and counts per split, writer, domain and intent.

    python -m pipelines.corpus_check stats                 # lines per split/writer/domain/intent
    python -m pipelines.corpus_check blind --out DIR       # text without labels, one file per writer
    python -m pipelines.corpus_check agree [--show 20]     # first vs second pass, per split

The second pass (agent/data/nlu/corpus/second_pass/<writer>.jsonl) is labelled by someone who did
not write the line and did not see its labels. Agreement is reported; where the passes differ the
labelling guide (docs/nlu-labelling.md) decides. The test split's labels stay as written (frozen),
so its disagreements are listed, never applied."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import yaml

from agent.resources import DATA_DIR

CORPUS = DATA_DIR / "nlu" / "corpus"
BLIND_FIELDS = ("id", "writer", "domain", "bot_prev", "context", "text", "turns", "bot")


def writers(corpus: Path = CORPUS) -> dict[str, str]:
    """writer id -> split, from writers.yaml."""
    data = yaml.safe_load((corpus / "writers.yaml").read_text(encoding="utf-8"))
    return {w: info["split"] for w, info in data["writers"].items()}


def read_lines(path: Path) -> list[dict]:
    out = []
    for i, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if raw.strip():
            try:
                out.append(json.loads(raw))
            except json.JSONDecodeError as exc:
                raise SystemExit(f"{path}:{i}: not JSON ({exc.msg})") from exc
    return out


def corpus_files(kind: str, corpus: Path = CORPUS) -> dict[str, Path]:
    return {p.stem: p for p in sorted((corpus / kind).glob("*.jsonl"))}


def blind(out: Path, corpus: Path = CORPUS) -> dict[str, int]:
    """Copies of every utterance and script with the labels taken out."""
    counts = {}
    for kind in ("utterances", "scripts"):
        (out / kind).mkdir(parents=True, exist_ok=True)
        for writer, path in corpus_files(kind, corpus).items():
            rows = [{k: r[k] for k in BLIND_FIELDS if k in r} for r in read_lines(path)]
            (out / kind / path.name).write_text(
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
            counts[f"{kind}/{writer}"] = len(rows)
    return counts


def _ents(row: dict) -> set[tuple[str, str, bool]]:
    return {(e["type"], str(e.get("value")).strip().lower().replace(" ", ""), bool(e.get("negated")))
            for e in row.get("entities", [])}


def _slots(row: dict) -> dict[str, str]:
    out = {}
    for k, v in (row.get("expected_slots") or {}).items():
        if isinstance(v, list):
            v = sorted(str(x).strip().lower() for x in v)
        out[k] = json.dumps(v, ensure_ascii=False).lower().replace(" ", "")
    return out


def _kappa(a: list[bool], b: list[bool]) -> float:
    n = len(a)
    if not n:
        return float("nan")
    po = sum(x == y for x, y in zip(a, b)) / n
    pa, pb = sum(a) / n, sum(b) / n
    pe = pa * pb + (1 - pa) * (1 - pb)
    return 1.0 if pe == 1 else (po - pe) / (1 - pe)


def agreement(first: Iterable[dict], second: dict[str, dict]) -> dict:
    """Utterances: exact intent-set agreement, per-intent Cohen's kappa (macro), entity F1 of
    pass 2 against pass 1. Scripts: slot-by-slot and whole-state agreement."""
    pairs = [(r, second[r["id"]]) for r in first if r["id"] in second]
    utt = [(a, b) for a, b in pairs if "turns" not in a]
    scr = [(a, b) for a, b in pairs if "turns" in a]
    out: dict = {"utterances": len(utt), "scripts": len(scr)}
    if utt:
        names = sorted({i for a, b in utt for i in a["intents"] + b.get("intents", [])})
        kappas = {n: _kappa([n in a["intents"] for a, _ in utt], [n in b.get("intents", []) for _, b in utt]) for n in names}
        tp = sum(len(_ents(a) & _ents(b)) for a, b in utt)
        n1, n2 = sum(len(_ents(a)) for a, _ in utt), sum(len(_ents(b)) for _, b in utt)
        out.update({
            "intent_set_agreement": round(sum(set(a["intents"]) == set(b.get("intents", [])) for a, b in utt) / len(utt), 3),
            "intent_kappa_macro": round(sum(kappas.values()) / len(kappas), 3),
            "intent_kappa": {n: round(k, 3) for n, k in kappas.items()},
            "entity_f1": round(2 * tp / (n1 + n2), 3) if n1 + n2 else 1.0,
        })
    if scr:
        slot_ok = [(k, _slots(a).get(k) == _slots(b).get(k)) for a, b in scr for k in set(_slots(a)) | set(_slots(b))]
        out.update({
            "slot_agreement": round(sum(ok for _, ok in slot_ok) / max(1, len(slot_ok)), 3),
            "state_agreement": round(sum(_slots(a) == _slots(b) for a, b in scr) / len(scr), 3),
        })
    return out


def disagreements(first: Iterable[dict], second: dict[str, dict]) -> list[dict]:
    out = []
    for a in first:
        b = second.get(a["id"])
        if b is None:
            continue
        if "turns" in a:
            if _slots(a) != _slots(b):
                out.append({"id": a["id"], "turns": a["turns"], "first": a.get("expected_slots"), "second": b.get("expected_slots")})
        elif set(a["intents"]) != set(b.get("intents", [])) or _ents(a) != _ents(b):
            out.append({"id": a["id"], "text": a["text"], "first": [a["intents"], a["entities"]],
                        "second": [b.get("intents"), b.get("entities")]})
    return out


def stats(corpus: Path = CORPUS) -> dict:
    split_of = writers(corpus)
    out: dict = {}
    for kind in ("utterances", "scripts"):
        per_split: Counter = Counter()
        for writer, path in corpus_files(kind, corpus).items():
            per_split[split_of.get(writer, "unknown")] += len(read_lines(path))
        out[kind] = dict(per_split)
    rows = [r for p in corpus_files("utterances", corpus).values() for r in read_lines(p)]
    out["domains"] = dict(Counter(r.get("domain", "?") for r in rows).most_common())
    out["intents"] = dict(Counter(i for r in rows for i in r["intents"]).most_common())
    out["multi_intent_share"] = round(sum(len(r["intents"]) > 1 for r in rows) / max(1, len(rows)), 3)
    out["entity_types"] = dict(Counter(e["type"] for r in rows for e in r["entities"]).most_common())
    out["writers"] = len(corpus_files("utterances", corpus))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("stats", help="lines per split, domain, intent and entity type")
    b = sub.add_parser("blind", help="unlabelled copies for the second pass")
    b.add_argument("--out", type=Path, required=True)
    g = sub.add_parser("agree", help="first vs second pass agreement per split")
    g.add_argument("--show", type=int, default=0, help="print N disagreements")
    g.add_argument("--disagreements-out", type=Path, help="write every disagreement as JSONL here")
    args = ap.parse_args(argv)
    if args.cmd == "stats":
        print(json.dumps(stats(), ensure_ascii=False))
    elif args.cmd == "blind":
        print(json.dumps(blind(args.out), ensure_ascii=False))
    else:
        split_of = writers()
        second_files = corpus_files("second_pass")
        if not second_files:
            sys.exit(f"no second-pass files in {CORPUS / 'second_pass'}")
        second = {r["id"]: r for p in second_files.values() for r in read_lines(p)}
        result, every = {}, []
        for split in ("train", "dev", "test"):
            first = [r for kind in ("utterances", "scripts") for w, p in corpus_files(kind).items()
                     if split_of.get(w) == split for r in read_lines(p)]
            result[split] = agreement(first, second)
            every += [{**d, "split": split} for d in disagreements(first, second)]
        for d in every[: args.show]:
            print(json.dumps(d, ensure_ascii=False), file=sys.stderr)
        if args.disagreements_out:
            args.disagreements_out.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in every), encoding="utf-8")
        print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
