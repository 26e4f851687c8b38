"""The call log: every event of every call, read back for QA, export/import and replay.

On the embedded bus the bus's own SQLite file *is* the call log (every topic is kept).  With
Kafka, `dianxiao record` copies the topics into a file of the same shape.  Reading never
crashes on a bad row: it comes back as a `BadRow` with the reason, so a QA page can show it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from agent import events as ev
from agent import topics
from agent.bus.base import partition_for
from agent.bus.embedded import open_log_db


@dataclass(frozen=True)
class BadRow:
    topic: str
    offset: int
    error: str
    raw: str


@dataclass
class CallSummary:
    call_id: str
    started_at: float | None = None
    ended_at: float | None = None
    direction: str | None = None
    mode: str | None = None
    campaign: str | None = None
    caller: str | None = None
    outcome: str | None = None
    end_reason: str | None = None
    turns: int = 0


@dataclass
class Turn:
    turn: int
    caller_text: str | None = None
    asr_confidence: float | None = None
    intents: list[tuple[str, float]] = field(default_factory=list)
    entities: list[dict[str, Any]] = field(default_factory=list)
    nlu_decided_by: str | None = None
    state: dict[str, Any] | None = None
    reply: str | None = None
    action: str | None = None
    barge_in: bool = False
    latency_ms: dict[str, float] = field(default_factory=dict)
    dead_letters: list[str] = field(default_factory=list)


class CallLog:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.db: sqlite3.Connection = open_log_db(self.path)

    def close(self) -> None:
        self.db.close()

    # --- reading ---------------------------------------------------------------------

    def call_ids(self) -> list[str]:
        rows = self.db.execute("SELECT DISTINCT key FROM log WHERE topic=?", (topics.CONTROL,)).fetchall()
        return [r[0] for r in rows]

    def calls(self, limit: int = 50, offset: int = 0) -> list[CallSummary]:
        """Calls, newest first, summarised from their control events and replies."""
        rows = self.db.execute(
            "SELECT key, MIN(ts) AS first FROM log WHERE topic=? GROUP BY key ORDER BY first DESC LIMIT ? OFFSET ?",
            (topics.CONTROL, limit, offset),
        ).fetchall()
        return [self.summary(key) for key, _ in rows]

    def summary(self, call_id: str) -> CallSummary:
        s = CallSummary(call_id=call_id)
        for e in self.events(call_id, only=(topics.CONTROL, topics.REPLIES)):
            if isinstance(e, ev.CallStarted):
                s.started_at, s.direction, s.mode = e.ts_wall, e.direction, e.mode
                s.campaign, s.caller = e.campaign, e.caller
            elif isinstance(e, ev.CallEnded):
                s.ended_at, s.end_reason, s.outcome = e.ts_wall, e.reason, e.outcome or s.outcome
            elif isinstance(e, ev.BotReply):
                s.turns = max(s.turns, e.turn)
                s.outcome = s.outcome if s.ended_at else e.action
        return s

    def rows(self, call_id: str, only: Iterable[str] | None = None) -> Iterator[tuple[str, int, bytes, float]]:
        sql = "SELECT topic, offset, value, ts FROM log WHERE key=?"
        args: list[Any] = [call_id]
        if only:
            wanted = list(only)
            sql += f" AND topic IN ({','.join('?' * len(wanted))})"
            args += wanted
        yield from self.db.execute(sql + " ORDER BY ts, topic, offset", args)

    def events(
        self, call_id: str, only: Iterable[str] | None = None, *, with_bad: bool = False
    ) -> list[Any]:
        """Decoded events of one call in production order (bad rows as BadRow if asked)."""
        out: list[Any] = []
        for topic, offset, value, _ in self.rows(call_id, only):
            try:
                out.append(ev.decode(bytes(value)))
            except ev.EventError as exc:
                if with_bad:
                    out.append(BadRow(topic, offset, str(exc), ev.raw_for_dead_letter(bytes(value), 500)))
        return out

    def turns(self, call_id: str) -> list[Turn]:
        return build_turns(self.events(call_id, only=_TURN_TOPICS))

    # --- export / import ---------------------------------------------------------------

    def export_jsonl(self, call_ids: Iterable[str], out: TextIO) -> int:
        """One line per event: {"topic": ..., "event": {...}} (audio payloads base64)."""
        n = 0
        for call_id in call_ids:
            for topic, _, value, _ in self.rows(call_id):
                try:
                    event = ev.decode(bytes(value))
                except ev.EventError:
                    continue
                out.write(json.dumps({"topic": topic, "event": json.loads(event.model_dump_json())}, ensure_ascii=False))
                out.write("\n")
                n += 1
        return n

    def import_jsonl(self, lines: Iterable[str | bytes], partitions: int | None = None) -> "ImportReport":
        """Append exported events; each bad line (not UTF-8, not JSON, not an event) is reported
        by number and the rest imported.  Give it the file opened in binary: lines are decoded
        one by one, so a stray non-UTF-8 byte costs its own line only.  An event already in the
        log (same event id) is skipped, so importing twice is harmless."""
        from agent.jsonl import BadLine, decode_lines

        report = ImportReport()
        parts = partitions or self._partitions()
        known = self._event_ids()
        undecodable: list[BadLine] = []
        for number, line in decode_lines(lines, undecodable):
            if undecodable and undecodable[-1].number == number:
                report.lines += 1
                report.errors.append((number, undecodable[-1].reason))
                continue
            if not line.strip():
                continue
            report.lines += 1
            try:
                obj = json.loads(line)
                topic = obj["topic"]
                if topic not in topics.ALL:
                    raise ev.EventError(f"unknown topic {topic!r}")
                event = ev.from_dict(obj["event"])
            except (json.JSONDecodeError, KeyError, TypeError, ev.EventError) as exc:
                report.errors.append((number, f"{type(exc).__name__}: {exc}"))
                continue
            if event.event_id in known:
                report.skipped += 1
                continue
            known.add(event.event_id)
            self._append(topic, event, parts)
            report.imported += 1
        return report

    def _partitions(self) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE name='partitions'").fetchone()
        return int(row[0]) if row else 4

    def _event_ids(self) -> set[str]:
        ids: set[str] = set()
        for (value,) in self.db.execute("SELECT value FROM log"):
            try:
                ids.add(ev.decode(bytes(value)).event_id)
            except ev.EventError:
                pass
        return ids

    def _append(self, topic: str, event: Any, partitions: int) -> None:
        part = partition_for(event.call_id, partitions)
        with self.db:
            (top,) = self.db.execute(
                "SELECT COALESCE(MAX(offset), -1) FROM log WHERE topic=? AND partition=?", (topic, part)
            ).fetchone()
            self.db.execute(
                "INSERT INTO log VALUES (?,?,?,?,?,?)",
                (topic, part, top + 1, event.call_id, ev.encode(event), event.ts_wall),
            )


@dataclass
class ImportReport:
    lines: int = 0  # non-blank lines read
    imported: int = 0
    skipped: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)


_TURN_TOPICS = (
    topics.CONTROL,
    topics.SPEECH,
    topics.TRANSCRIPTS,
    topics.NLU,
    topics.DIALOGUE,
    topics.REPLIES,
    topics.DEAD_LETTERS,
)


def build_turns(events: list[Any]) -> list[Turn]:
    """Group one call's events into turns, with per-stage latency = time from the causing
    event's production to this event's production (the hop's queueing + handling)."""
    by_id = {e.event_id: e for e in events if hasattr(e, "event_id")}
    turns: dict[int, Turn] = {}

    def turn_of(n: int) -> Turn:
        return turns.setdefault(n, Turn(turn=n))

    for e in events:
        if isinstance(e, BadRow):
            continue
        cause = by_id.get(e.caused_by) if e.caused_by else None
        if cause is not None and e.stage not in ("caller",):
            turn_of(e.turn).latency_ms[e.stage] = round((e.ts_wall - cause.ts_wall) * 1000, 2)
        if isinstance(e, ev.TranscriptFinal):
            t = turn_of(e.turn)
            t.caller_text, t.asr_confidence = e.text, e.confidence
        elif isinstance(e, ev.NluResult):
            t = turn_of(e.turn)
            t.intents = [(i.name, i.score) for i in e.intents]
            t.entities = [x.model_dump(mode="json") for x in e.entities]
            t.nlu_decided_by = e.decided_by
        elif isinstance(e, ev.DialogueStateUpdated):
            turn_of(e.turn).state = e.state
        elif isinstance(e, ev.BotReply):
            t = turn_of(e.turn)
            t.reply, t.action = e.text, e.action
        elif isinstance(e, ev.BargeIn):
            turn_of(e.turn).barge_in = True
        elif isinstance(e, ev.DeadLetter):
            turn_of(e.turn).dead_letters.append(f"{e.source_topic}: {e.reason}")
    return [turns[k] for k in sorted(turns) if k > 0 or turns[k].dead_letters]
