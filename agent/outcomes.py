"""Outcomes on every call: the call's own (what the bot achieved, and the sale stage it reached)
and the business outcome joined to it later (deal won/lost, amount, date) from a CRM — a signed
webhook in, or a CSV import.  Both are `call.outcome` events in the call log (topic
call.control), beside the call's other events.

Pure parts (`call_outcome`, `business_event`, `parse_outcome_row`) decide; `OutcomeWriter`
and the webhook app are the only I/O.  An outcome for a call the log does not hold is refused
with a one-line error and nothing is written for it; a re-sent outcome (same CRM id) is kept
once."""

from __future__ import annotations

import csv
import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date as _date
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent import events as ev
from agent import topics
from agent.errors import OperatorError

#: the order a sale moves through (the playbooks' `stages`); the furthest reached is reported
STAGES = ("opening", "discovery", "recommendation", "objection_handling", "closing", "callback_booking", "exit")
WINS = frozenset({"demo_booked", "deal_closed"})  # a call's own win
CALL_OUTCOMES = ("demo_booked", "deal_closed", "quote_sent", "callback", "not_interested", "dnc", "handoff", "hung_up")
BUSINESS_OUTCOMES = ("deal_won", "deal_lost")

_DECISIVE = {
    "book_demo": "demo_booked", "close_sale": "deal_closed", "book_callback": "callback",
    "exit_do_not_call": "dnc", "exit_polite": "not_interested", "handoff_human": "handoff",
}
_NAMESPACE = uuid.UUID("0c7d6f43-3a0e-4c8c-9d61-5b1b6c0f2e11")


class OutcomeError(OperatorError, ValueError):
    hint = "fix the outcome (call id, outcome name, amount, date) and send it again"


def call_outcome(actions: list[str]) -> tuple[str, str | None]:
    """(outcome, furthest sale stage) of a call from its bot actions in order: the last
    decisive action wins; a call with a price stated but nothing decided is quote_sent; one
    that just stopped is hung_up."""
    from agent.dialogue.policy import STAGE_OF

    parts = [p for a in actions for p in a.split("+")]
    stage_rank = {s: i for i, s in enumerate(STAGES)}
    reached = [STAGE_OF[p] for p in parts if p in STAGE_OF and STAGE_OF[p] != "exit"]
    # a move the playbook learned answers an objection: that stage was reached too
    reached += ["objection_handling" for p in parts if p not in STAGE_OF]
    # a call the bot spoke in reached the opening at least
    stage = max(reached, key=lambda s: stage_rank.get(s, -1)) if reached else ("opening" if parts else None)
    for p in reversed(parts):
        if p in _DECISIVE:
            return _DECISIVE[p], stage
    if "quote" in parts or "recommend" in parts:
        return "quote_sent", stage
    return "hung_up", stage


def call_outcome_event(call_id: str, actions: list[str], *, cause: str | None = None, turn: int = 0,
                       source: str = "agent", ts_wall: float | None = None) -> ev.CallOutcome:
    """The call's own call.outcome; its id is derived from the causing event (the call.ended),
    so re-handling the end gives the same event and the log keeps one."""
    outcome, stage = call_outcome(actions)
    eid = ev.derived_event_id(cause, "outcome", 0) if cause else uuid.uuid5(_NAMESPACE, f"{call_id}/call").hex
    kw: dict[str, Any] = {"ts_wall": ts_wall} if ts_wall is not None else {}
    return ev.CallOutcome(event_id=eid, call_id=call_id, turn=turn, stage="outcome", caused_by=cause, kind="call",
                          outcome=outcome, sale_stage=stage, source=source, **kw)


class BusinessOutcome(BaseModel):
    """One row of a CRM's report on a lead we called (CSV or webhook JSON)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    call_id: str = Field(min_length=1, max_length=128)
    outcome: str
    amount: float = Field(default=0.0, ge=0)
    date: str | None = None
    external_id: str | None = None

    @field_validator("outcome")
    @classmethod
    def _outcome(cls, v: str) -> str:
        v = v.strip().lower().replace(" ", "_")
        aliases = {"won": "deal_won", "win": "deal_won", "lost": "deal_lost", "lose": "deal_lost",
                   "赢单": "deal_won", "成交": "deal_won", "输单": "deal_lost", "丢单": "deal_lost"}
        v = aliases.get(v, v)
        if v not in BUSINESS_OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(BUSINESS_OUTCOMES)} (or won/lost), not {v!r}")
        return v

    @field_validator("date")
    @classmethod
    def _date(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        try:
            return _date.fromisoformat(str(v).strip()[:10]).isoformat()
        except ValueError as exc:
            raise ValueError(f"date must be YYYY-MM-DD, not {v!r}") from exc


def parse_outcome_row(row: dict[str, Any]) -> BusinessOutcome:
    """A CRM row as a BusinessOutcome, or OutcomeError with the reason in one line."""
    cleaned = {k.strip().lower(): (v.strip() if isinstance(v, str) else v) for k, v in row.items() if k}
    if cleaned.get("amount") in ("", None):
        cleaned.pop("amount", None)
    try:
        return BusinessOutcome.model_validate(cleaned)
    except ValidationError as exc:
        why = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        raise OutcomeError(f"bad outcome {json.dumps(row, ensure_ascii=False)[:120]}: {why}") from None


def business_event(o: BusinessOutcome, source: str) -> ev.CallOutcome:
    """The call.outcome event for a CRM outcome; its id comes from the CRM's deal id (or the
    row itself), so the same outcome sent twice is one event."""
    key = o.external_id or f"{o.outcome}/{o.amount}/{o.date}"
    return ev.CallOutcome(event_id=uuid.uuid5(_NAMESPACE, f"{o.call_id}/business/{key}").hex, call_id=o.call_id,
                          stage="outcome", kind="business", outcome=o.outcome, amount=o.amount, date=o.date,
                          source=source, external_id=o.external_id)


@dataclass
class WriteReport:
    written: int = 0
    duplicates: int = 0
    errors: list[str] = field(default_factory=list)


class OutcomeWriter:
    """Appends call.outcome events to a call log (the embedded bus file), one transaction for a
    batch; checks that each call is in the log first."""

    def __init__(self, log_path: str | Path) -> None:
        from agent.bus.embedded import open_log_db

        self.path = Path(log_path)
        if not self.path.is_file():
            raise OutcomeError(f"no call log at {self.path}", hint="pass the call log file (.dianxiao/bus.sqlite or one from `dianxiao record`)")
        self.db = open_log_db(self.path)

    def close(self) -> None:
        self.db.close()

    def known_call(self, call_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM log WHERE key=? AND topic=? LIMIT 1",
                               (call_id, topics.CONTROL)).fetchone() is not None

    def _exists(self, event_id: str, call_id: str) -> bool:
        for (value,) in self.db.execute("SELECT value FROM log WHERE key=? AND topic=?", (call_id, topics.CONTROL)):
            try:
                if ev.decode(bytes(value)).event_id == event_id:
                    return True
            except ev.EventError:
                continue
        return False

    def write(self, outcomes: Iterable[BusinessOutcome], source: str) -> WriteReport:
        report = WriteReport()
        events = []
        for o in outcomes:
            if not self.known_call(o.call_id):
                report.errors.append(f"outcome for unknown call {o.call_id!r}: no such call in {self.path}")
                continue
            event = business_event(o, source)
            if self._exists(event.event_id, o.call_id):
                report.duplicates += 1
                continue
            events.append(event)
        append_events(self.db, [(topics.CONTROL, e) for e in events])
        report.written = len(events)
        return report

    def write_one(self, o: BusinessOutcome, source: str) -> WriteReport:
        report = self.write([o], source)
        if report.errors:
            raise OutcomeError(report.errors[0], hint="send outcomes only for calls the agent made (the call id from the campaign's outcome CSV)")
        return report


def append_events(db: Any, items: list[tuple[str, Any]], partitions: int | None = None) -> None:
    """Append events to a log database in one transaction (offsets per topic and partition)."""
    from agent.bus.base import partition_for

    if not items:
        return
    if partitions is None:
        row = db.execute("SELECT value FROM meta WHERE name='partitions'").fetchone()
        partitions = int(row[0]) if row else 4
    tops: dict[tuple[str, int], int] = {}
    rows = []
    with db:
        for topic, event in items:
            part = partition_for(event.call_id, partitions)
            if (topic, part) not in tops:
                (top,) = db.execute("SELECT COALESCE(MAX(offset), -1) FROM log WHERE topic=? AND partition=?",
                                    (topic, part)).fetchone()
                tops[(topic, part)] = top
            tops[(topic, part)] += 1
            rows.append((topic, part, tops[(topic, part)], event.call_id, ev.encode(event), event.ts_wall))
        db.executemany("INSERT INTO log VALUES (?,?,?,?,?,?)", rows)


def read_outcomes_csv(path: Path) -> tuple[list[BusinessOutcome], list[str]]:
    """A CRM export (call_id, outcome, amount, date, external_id): the good rows, and one line
    per bad row with its line number."""
    if not path.is_file():
        raise OutcomeError(f"no outcomes file at {path}")
    good: list[BusinessOutcome] = []
    bad: list[str] = []
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = [h.strip().lower() for h in reader.fieldnames or []]
        if "call_id" not in fields or "outcome" not in fields:
            raise OutcomeError(f"{path}: needs columns call_id and outcome (has: {', '.join(fields) or 'none'})",
                               hint="export call_id,outcome,amount,date[,external_id] from the CRM")
        for row in reader:
            try:
                good.append(parse_outcome_row(row))
            except OutcomeError as exc:
                bad.append(f"{path}:{reader.line_num}: {exc}")
    return good, bad


# --- the CRM webhook in ----------------------------------------------------------------------


def webhook_app(log_path: str | Path, secret: str, max_age_s: float = 300) -> Any:
    """An ASGI app: POST /outcomes with a JSON outcome (or a list), signed like our own webhook
    out (X-Dianxiao-Timestamp, X-Dianxiao-Signature: sha256=HMAC(secret, "ts.body")).
    401 on a bad or old signature, 422 on a bad body or unknown call (nothing written), 200 with
    what was written."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from connectors.campaign.crm import verify

    if not secret:
        raise OutcomeError("the outcomes webhook needs a secret", hint="set DIANXIAO_CRM_WEBHOOK_SECRET or --secret")

    async def receive(request: Request) -> JSONResponse:
        body = await request.body()
        ts = request.headers.get("x-dianxiao-timestamp", "")
        sig = request.headers.get("x-dianxiao-signature", "")
        if not verify(secret, ts, body, sig, max_age_s=max_age_s):
            return JSONResponse({"error": "bad or expired signature"}, status_code=401)
        try:
            obj = json.loads(body)
            rows = obj if isinstance(obj, list) else [obj]
            outcomes = [parse_outcome_row(r) for r in rows]
        except (json.JSONDecodeError, AttributeError, TypeError) as exc:
            return JSONResponse({"error": f"body is not a JSON outcome: {exc}"}, status_code=422)
        except OutcomeError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        writer = OutcomeWriter(log_path)
        try:
            unknown = [o.call_id for o in outcomes if not writer.known_call(o.call_id)]
            if unknown:  # all or nothing: a CRM re-sends the batch after fixing it
                return JSONResponse({"error": f"outcome for unknown call {unknown[0]!r}"}, status_code=422)
            report = writer.write(outcomes, "crm_webhook")
        finally:
            writer.close()
        return JSONResponse({"written": report.written, "duplicates": report.duplicates, "at": time.time()})

    return Starlette(routes=[Route("/outcomes", receive, methods=["POST"])])


def outcomes_of(events: Iterable[Any]) -> list[ev.CallOutcome]:
    return [e for e in events if isinstance(e, ev.CallOutcome)]


__all__ = ["BUSINESS_OUTCOMES", "BusinessOutcome", "CALL_OUTCOMES", "OutcomeError", "OutcomeWriter", "STAGES", "WINS",
           "append_events", "business_event", "call_outcome", "call_outcome_event", "outcomes_of",
           "parse_outcome_row", "read_outcomes_csv", "webhook_app"]
