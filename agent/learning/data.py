"""Reading calls for learning: the bot's calls from a call log, human sellers' calls from
transcripts, business outcomes from a CRM export — all as `CallRecord`s with the acts of both
sides, tagged with one act set (agent/learning/acts.py), and the decisions in them: the caller
raised an objection, the seller answered with a move.

Transcript formats (docs/learning.md):
- CSV: one row per turn, columns call_id, speaker, text; optional turn, segment, product,
  outcome (per call: the value on any of its rows).
- JSONL: one call per line: {"call_id", "segment"?, "product"?, "outcome"?, "turns": [{"speaker", "text"}]}.
Speakers: seller / sales / agent / 销售 / 坐席 and customer / caller / client / 客户."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import events as ev
from agent import topics
from agent.dialogue import Playbook
from agent.errors import OperatorError
from agent.learning.acts import bot_act, caller_acts, move_of, objection_of, seller_acts
from agent.outcomes import WINS, BusinessOutcome

SELLER = {"seller", "sales", "agent", "bot", "销售", "坐席", "客服"}
CUSTOMER = {"customer", "caller", "client", "user", "客户", "顾客"}


class LearnInputError(OperatorError, ValueError):
    hint = "see docs/learning.md for the call log, transcript and outcome formats"


@dataclass
class Decision:
    situation: str  # "objection.price", …
    move: str  # the seller's act answering it
    turn: int


@dataclass
class CallRecord:
    call_id: str
    source: str  # bot | human
    segment: str
    product: str | None
    size: int | None
    outcome: str  # the call's own outcome
    business: str | None = None  # deal_won / deal_lost, when the CRM said
    amount: float = 0.0
    seller_acts: list[str] = field(default_factory=list)
    caller_acts: list[list[str]] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    sale_stage: str | None = None
    playbook: str | None = None
    utterances: list[tuple[str, str]] = field(default_factory=list)  # (act, seller's words) of moves

    def win(self, on: str) -> bool:
        return self.business == "deal_won" if on == "deal" else self.outcome in WINS


def size_band(size: int | None) -> str:
    if size is None:
        return "unknown"
    return "small (<1000)" if size < 1000 else "medium (1000-4999)" if size < 5000 else "large (5000+)"


def _caller_side(pb: Playbook, intents: list[str], text: str, entity_types: list[str]) -> list[str]:
    cue = pb.objection_cue(text)
    if "price_objection" in intents:
        cue = "price"
    elif "competitor_comparison" in intents:
        cue = "competitor"
    return caller_acts(intents, cue, entity_types)


def read_call_log(path: Path, pb: Playbook) -> list[CallRecord]:
    """Every call in a call log with its acts and decisions (calls without a start are skipped)."""
    from agent.bus.embedded import open_log_db

    if not path.is_file():
        raise LearnInputError(f"no call log at {path}")
    db = open_log_db(path)
    per_call: dict[str, list[Any]] = {}
    try:
        for key, value in db.execute(
            "SELECT key, value FROM log WHERE topic IN (?,?,?) ORDER BY ts, topic, offset",
            (topics.CONTROL, topics.NLU, topics.REPLIES),
        ):
            try:
                per_call.setdefault(key, []).append(ev.decode(bytes(value)))
            except ev.EventError:
                continue
    finally:
        db.close()
    out = []
    for call_id, events in per_call.items():
        rec = _from_events(call_id, events, pb)
        if rec is not None:
            out.append(rec)
    return out


def _from_events(call_id: str, events: list[Any], pb: Playbook) -> CallRecord | None:
    started = next((e for e in events if isinstance(e, ev.CallStarted)), None)
    if started is None:
        return None
    meta = started.metadata or {}
    rec = CallRecord(call_id=call_id, source="bot", segment=str(meta.get("segment") or "unknown"),
                     product=meta.get("product_interest") or None, size=None, outcome="hung_up",
                     playbook=started.playbook)
    pending: tuple[str, int] | None = None
    actions = []
    for e in events:
        if isinstance(e, ev.NluResult):
            acts = _caller_side(pb, [i.name for i in e.intents], e.text, [x.type for x in e.entities])
            rec.caller_acts.append(acts)
            for x in e.entities:
                if x.type == "concurrency" and isinstance(x.value, (int, float)):
                    rec.size = int(x.value)
                if x.type == "product" and rec.product is None:
                    rec.product = str(x.value)
            obj = objection_of(acts)
            pending = (f"objection.{obj}", e.turn) if obj else None
        elif isinstance(e, ev.BotReply):
            act = bot_act(e.action, e.text)
            rec.seller_acts.append(act)
            actions.append(e.action)
            if pending is not None and pending[1] == e.turn:
                rec.decisions.append(Decision(pending[0], act, e.turn))
                rec.utterances.append((act, e.text))
            pending = None
        elif isinstance(e, ev.CallOutcome):
            if e.kind == "call":
                rec.outcome, rec.sale_stage = e.outcome, e.sale_stage
            else:
                rec.business, rec.amount = e.outcome, e.amount or 0.0
    if not any(isinstance(e, ev.CallOutcome) and e.kind == "call" for e in events):
        from agent.outcomes import call_outcome

        rec.outcome, rec.sale_stage = call_outcome(actions)  # a log from before call.outcome existed
    return rec


# --- transcripts --------------------------------------------------------------------------------


def _speaker(raw: str, where: str) -> str:
    s = raw.strip().lower()
    if s in SELLER:
        return "seller"
    if s in CUSTOMER:
        return "customer"
    raise LearnInputError(f"{where}: speaker {raw!r} is neither a seller ({', '.join(sorted(SELLER))}) "
                          f"nor a customer ({', '.join(sorted(CUSTOMER))})")


def _transcript_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise LearnInputError(f"no transcripts at {path}")
    files = sorted(p for p in path.iterdir() if p.suffix in (".csv", ".jsonl"))
    if not files:
        raise LearnInputError(f"{path} holds no .csv or .jsonl transcripts")
    return files


def _read_csv(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = [h.strip().lower() for h in reader.fieldnames or []]
        for need in ("call_id", "speaker", "text"):
            if need not in cols:
                raise LearnInputError(f"transcript {path} has no {need} column (columns: {', '.join(cols) or 'none'})",
                                      hint="a transcript CSV needs call_id, speaker, text (docs/learning.md)")
        calls: dict[str, dict[str, Any]] = {}
        for row in reader:
            row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            where = f"{path}:{reader.line_num}"
            call = calls.setdefault(row["call_id"], {"call_id": row["call_id"], "turns": []})
            for key in ("segment", "product", "outcome"):
                if row.get(key):
                    call[key] = row[key]
            call["turns"].append({"speaker": _speaker(row["speaker"], where), "text": row["text"]})
        yield from calls.values()


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                call = json.loads(line)
                turns = call["turns"]
                call_id = call["call_id"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise LearnInputError(f"{where}: not a transcript call ({type(exc).__name__}: {exc})") from None
            if any("speaker" not in t for t in turns):
                raise LearnInputError(f"{where}: call {call_id} has a turn with no speaker")
            call["turns"] = [{"speaker": _speaker(str(t["speaker"]), where), "text": str(t.get("text", ""))} for t in turns]
            yield call


def read_transcripts(path: Path, pb: Playbook, understander: Any) -> list[CallRecord]:
    """Human sellers' calls: the customer's turns through the NLU, the seller's by act cues."""
    out = []
    for file in _transcript_files(path):
        calls = _read_csv(file) if file.suffix == ".csv" else _read_jsonl(file)
        for call in calls:
            out.append(_from_transcript(call, pb, understander))
    return out


def _from_transcript(call: dict[str, Any], pb: Playbook, understander: Any) -> CallRecord:
    rec = CallRecord(call_id=str(call["call_id"]), source="human", segment=str(call.get("segment") or "unknown"),
                     product=call.get("product"), size=None, outcome=str(call.get("outcome") or "hung_up"))
    said: list[str] = []
    pending: str | None = None
    for turn, t in enumerate(call["turns"], start=1):
        if t["speaker"] == "customer":
            nlu = understander.understand(t["text"], context=tuple(said[-3:]))
            said.append(t["text"])
            acts = _caller_side(pb, [i.name for i in nlu.intents], t["text"], [e.type for e in nlu.entities])
            rec.caller_acts.append(acts)
            for e in nlu.entities:
                if e.type == "concurrency" and isinstance(e.value, (int, float)):
                    rec.size = int(e.value)
                if e.type == "product" and rec.product is None:
                    rec.product = str(e.value)
            obj = objection_of(acts)
            pending = f"objection.{obj}" if obj else None
        else:
            acts = seller_acts(t["text"])
            rec.seller_acts.extend(acts or ["other"])
            if pending is not None:
                move = move_of(acts, pending) or "other"
                rec.decisions.append(Decision(pending, move, turn))
                rec.utterances.append((move, t["text"]))
            pending = None
    return rec


def join_outcomes(records: list[CallRecord], outcomes: list[BusinessOutcome], strict: bool = True) -> int:
    """Put each CRM outcome on its call; an outcome for a call in neither the log nor the
    transcripts is an error (strict) or skipped.  Returns how many were joined."""
    by_id = {r.call_id: r for r in records}
    unknown = [o.call_id for o in outcomes if o.call_id not in by_id]
    if unknown and strict:
        raise LearnInputError(
            f"outcome for unknown call {unknown[0]!r} ({len(unknown)} of {len(outcomes)} outcomes name calls in "
            f"neither the call log nor the transcripts)",
            hint="check the outcomes file is for these calls, or pass --skip-unknown-outcomes")
    n = 0
    for o in outcomes:
        rec = by_id.get(o.call_id)
        if rec is not None:
            rec.business, rec.amount = o.outcome, o.amount
            n += 1
    return n


__all__ = ["CallRecord", "Decision", "LearnInputError", "join_outcomes", "read_call_log", "read_transcripts",
           "size_band"]
