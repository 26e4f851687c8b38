"""Evaluate an understander on labelled lines {"text", "intents", "entities", "context"}."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.jsonl import read_jsonl
from agent.nlu import Understander, understand_turn
from agent.percentiles import percentile


@dataclass(frozen=True)
class Example:
    text: str
    intents: tuple[str, ...]
    entities: tuple[tuple[str, str], ...]
    context: tuple[str, ...] = ()
    bot_prev: str | None = None  # what the agent said just before (corpus lines that answer it)


class DataError(ValueError):
    """A line of an evaluation/training file that cannot be read."""


def _norm_value(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v).strip().lower()


def parse_example(obj: Any, where: str = "") -> Example:
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        raise DataError(f"{where}: expected an object with a string 'text'")
    intents = obj.get("intents") or []
    if isinstance(intents, str):
        intents = [i for i in intents.replace(",", "|").split("|") if i.strip()]
    ents = []
    for e in obj.get("entities") or []:
        if not isinstance(e, dict) or "type" not in e or "value" not in e:
            raise DataError(f"{where}: each entity needs 'type' and 'value'")
        ents.append((str(e["type"]), _norm_value(e["value"])))
    ctx = obj.get("context") or []
    if isinstance(ctx, str):
        ctx = [ctx]
    bot_prev = obj.get("bot_prev")
    return Example(obj["text"], tuple(str(i).strip() for i in intents), tuple(ents), tuple(str(c) for c in ctx),
                   bot_prev if isinstance(bot_prev, str) and bot_prev.strip() else None)


def load_examples(path: Path, bad: list[Any] | None = None) -> list[Example]:
    """JSONL (one object a line) or CSV with columns text,intents(|-separated),entities(JSON),context(JSON).
    A bad line (not UTF-8, not JSON, not an example) is reported on stderr by number, added to
    `bad` and skipped; a file with no usable line is a DataError."""
    from agent.jsonl import BadLine, decode_lines, finish

    out: list[Example] = []
    bad = [] if bad is None else bad
    if path.suffix.lower() == ".csv":
        import csv

        with path.open("rb") as f:
            reader = csv.DictReader(line for _, line in decode_lines(f, bad, str(path)))
            for row in reader:
                i = reader.line_num
                obj: dict[str, Any] = {"text": row.get("text", ""), "intents": row.get("intents", "")}
                try:
                    for key in ("entities", "context"):
                        if row.get(key):
                            try:
                                obj[key] = json.loads(row[key])
                            except json.JSONDecodeError as exc:
                                raise DataError(f"{path}:{i}: column {key} is not JSON: {exc}") from exc
                    out.append(parse_example(obj, f"{path}:{i}"))
                except DataError as exc:
                    bad.append(BadLine(i, str(exc).removeprefix(f"{path}:{i}: ")))
        return finish(path, out, bad, "examples", DataError)
    for i, obj in read_jsonl(path, DataError, bad=bad):
        try:
            out.append(parse_example(obj, f"{path}:{i}"))
        except DataError as exc:
            bad.append(BadLine(i, str(exc).removeprefix(f"{path}:{i}: ")))
    return finish(path, out, bad, "examples", DataError)


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def evaluate(understander: Understander, examples: Sequence[Example]) -> dict[str, Any]:
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    confusion: Counter[tuple[str, str]] = Counter()
    ent_tp = ent_fp = ent_fn = 0
    ent_by_type: dict[str, Counter[str]] = {}
    exact = 0
    lat: list[float] = []
    decided: Counter[str] = Counter()
    errors: list[dict[str, Any]] = []
    for ex in examples:
        t0 = time.perf_counter()
        out = understand_turn(understander, ex.text, ex.context, ex.bot_prev)
        lat.append((time.perf_counter() - t0) * 1000)
        decided[out.decided_by] += 1
        pred = {i.name for i in out.intents}
        gold = set(ex.intents) or {"other"}
        for n in pred & gold:
            tp[n] += 1
        for n in pred - gold:
            fp[n] += 1
        for n in gold - pred:
            fn[n] += 1
        for g in gold - pred:
            for p in pred - gold:
                confusion[(g, p)] += 1
            if not pred - gold:
                confusion[(g, "-")] += 1
        if pred == gold:
            exact += 1
        pe = Counter((e.type, _norm_value(e.value)) for e in out.entities)
        ge = Counter(ex.entities)
        t = sum((pe & ge).values())
        ent_tp += t
        ent_fp += sum(pe.values()) - t
        ent_fn += sum(ge.values()) - t
        for typ in {k[0] for k in pe} | {k[0] for k in ge}:
            c = ent_by_type.setdefault(typ, Counter())
            pt = Counter({k: v for k, v in pe.items() if k[0] == typ})
            gt = Counter({k: v for k, v in ge.items() if k[0] == typ})
            hit = sum((pt & gt).values())
            c["tp"] += hit
            c["fp"] += sum(pt.values()) - hit
            c["fn"] += sum(gt.values()) - hit
        if pred != gold or pe != ge:
            errors.append({"text": ex.text, "gold": sorted(gold), "pred": sorted(pred),
                           "gold_entities": sorted(ge.elements()), "pred_entities": sorted(pe.elements())})
    labels = sorted(set(tp) | set(fp) | set(fn))
    per_intent = {}
    for n in labels:
        p, r, f = _prf(tp[n], fp[n], fn[n])
        per_intent[n] = {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4), "support": tp[n] + fn[n]}
    _, _, micro = _prf(sum(tp.values()), sum(fp.values()), sum(fn.values()))
    supported = [v["f1"] for v in per_intent.values() if v["support"] > 0]
    macro = sum(supported) / len(supported) if supported else 0.0
    _, _, ent_f1 = _prf(ent_tp, ent_fp, ent_fn)

    def pct(q: float) -> float:
        return percentile(lat, q) or 0.0

    return {
        "n": len(examples),
        "per_intent": per_intent,
        "entity_per_type": {k: {"f1": round(_prf(c["tp"], c["fp"], c["fn"])[2], 4), "support": c["tp"] + c["fn"]}
                            for k, c in sorted(ent_by_type.items())},
        "confusion": [{"gold": g, "pred": p, "count": c} for (g, p), c in confusion.most_common(15)],
        "errors": errors,
        "decided_by": dict(decided),
        "summary": {
            "n": len(examples),
            "micro_f1": round(micro, 4),
            "macro_f1": round(macro, 4),
            "exact_match": round(exact / len(examples), 4) if examples else 0.0,
            "entity_f1": round(ent_f1, 4),
            "p50_ms": round(pct(0.5), 3),
            "p95_ms": round(pct(0.95), 3),
        },
    }


def report_lines(result: dict[str, Any], show_errors: int = 0) -> Iterable[str]:
    yield f"{'intent':24s} {'P':>7s} {'R':>7s} {'F1':>7s} {'support':>8s}"
    for n, m in result["per_intent"].items():
        yield f"{n:24s} {m['precision']:7.3f} {m['recall']:7.3f} {m['f1']:7.3f} {m['support']:8d}"
    yield ""
    yield "entity F1 per type: " + ", ".join(f"{k}={v['f1']:.3f}({v['support']})" for k, v in result["entity_per_type"].items())
    if result["confusion"]:
        yield "confusion pairs (gold -> predicted instead, '-' = missed):"
        for c in result["confusion"]:
            yield f"  {c['gold']} -> {c['pred']}: {c['count']}"
    yield f"decided by: {result['decided_by']}"
    for e in result["errors"][:show_errors]:
        yield "  ERR " + json.dumps(e, ensure_ascii=False)
    s = result["summary"]
    yield (f"n={s['n']} micro_f1={s['micro_f1']:.4f} macro_f1={s['macro_f1']:.4f} exact_match={s['exact_match']:.4f} "
           f"entity_f1={s['entity_f1']:.4f} latency p50={s['p50_ms']:.2f}ms p95={s['p95_ms']:.2f}ms")
    yield json.dumps(s, ensure_ascii=False)
