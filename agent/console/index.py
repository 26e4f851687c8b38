"""A summary table of every call, kept in the console store, so that the calls list can filter,
sort and page 10 000s of calls with one SQL query instead of decoding each call's events.

The index follows the log: it remembers the last offset it read on each topic partition, and
on every sync re-summarises only the calls that got new rows since (a live call is re-indexed
as its turns arrive)."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent import events as ev
from agent import topics
from agent.calllog import BadRow, CallLog, build_turns
from agent.console.latency import stage_times
from agent.console.store import transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS call_index (
    call_id TEXT PRIMARY KEY, started_at REAL, ended_at REAL, direction TEXT, mode TEXT,
    campaign TEXT, caller TEXT, outcome TEXT, end_reason TEXT, turns INTEGER NOT NULL,
    dialects TEXT NOT NULL, latency TEXT NOT NULL,
    dead_letters INTEGER NOT NULL, bad_rows INTEGER NOT NULL, completed INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS call_index_started ON call_index (started_at);
-- Transcripts apart from the summary rows, so that listing and sorting read narrow rows.
CREATE TABLE IF NOT EXISTS call_text (call_id TEXT PRIMARY KEY, transcript TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS call_intents (
    call_id TEXT NOT NULL, intent TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (call_id, intent)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS call_intents_by_intent ON call_intents (intent, call_id);
-- every stage's latency per turn (vad, asr, nlu, dst, policy, tts, ...); handle_ms only when the
-- event recorded the stage's own time (else ms includes bus wait, see latency.py)
CREATE TABLE IF NOT EXISTS turn_latency (
    call_id TEXT NOT NULL, started_at REAL, turn INTEGER NOT NULL, stage TEXT NOT NULL, ms REAL NOT NULL,
    handle_ms REAL
);
CREATE INDEX IF NOT EXISTS turn_latency_by_call ON turn_latency (call_id);
-- one row per caller turn, for the review queue
CREATE TABLE IF NOT EXISTS turn_index (
    call_id TEXT NOT NULL, turn INTEGER NOT NULL, started_at REAL, text TEXT, asr_confidence REAL,
    top_score REAL, decided_by TEXT, intents TEXT NOT NULL, action TEXT, has_speech INTEGER NOT NULL,
    max_ms REAL NOT NULL, priority INTEGER NOT NULL, reasons TEXT NOT NULL, PRIMARY KEY (call_id, turn)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS turn_index_queue ON turn_index (priority DESC, started_at DESC);
CREATE TABLE IF NOT EXISTS index_marks (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL, PRIMARY KEY (topic, partition)
) WITHOUT ROWID;
"""

#: bump when the index tables change shape: an older index is dropped and rebuilt from the log
INDEX_VERSION = "3"
_INDEX_TABLES = ("call_index", "call_text", "call_intents", "turn_latency", "turn_index", "index_marks")

#: end reasons that count as a call that ran to its natural end
COMPLETED_REASONS = ("hangup", "bot_ended", "completed")

# speech.segments and audio.out too: vad, asr and tts latency are measured on them (audio.in is
# not read: 50 frames a second, and no stage's latency ends on it)
_INDEX_TOPICS = (
    topics.CONTROL, topics.SPEECH, topics.TRANSCRIPTS, topics.NLU, topics.DIALOGUE, topics.REPLIES,
    topics.AUDIO_OUT, topics.DEAD_LETTERS,
)

# --- the review queue's order: what most needs a reviewer's ear comes first -------------------
#: a final transcript the recogniser was unsure of
LOW_ASR_CONFIDENCE = 0.8
#: a top intent score the understander was unsure of
LOW_INTENT_SCORE = 0.6
#: a stage that took this long on a turn (incl. bus wait) is worth a look
LONG_STAGE_MS = 1000.0
#: weight of each reason; a turn's priority is the sum (DNC is a compliance risk: first)
REASONS = {"dnc": 8, "low_confidence": 4, "long_latency": 2, "rule_decided": 1}

SORTS = {
    "started": "started_at",
    "turns": "turns",
    "duration": "(COALESCE(ended_at, started_at) - started_at)",
    "campaign": "campaign",
    "outcome": "outcome",
}


@dataclass
class IndexedCall:
    call_id: str
    started_at: float | None
    ended_at: float | None
    direction: str | None
    mode: str | None
    campaign: str | None
    caller: str | None
    outcome: str | None
    end_reason: str | None
    turns: int
    dialects: str
    transcript: str
    latency: dict[str, float]
    dead_letters: int
    bad_rows: int
    completed: bool
    intents: list[str] = field(default_factory=list)
    flagged: bool = False


@dataclass
class CallFilter:
    since: float | None = None
    until: float | None = None
    campaign: str | None = None
    outcome: str | None = None
    intent: str | None = None
    dialect: str | None = None
    flagged: bool = False
    compliance: bool = False
    latency_stage: str | None = None
    latency_over_ms: float | None = None
    text: str | None = None
    sort: str = "started"
    descending: bool = True


@dataclass
class TurnRow:
    """One caller turn as the review queue sees it."""

    call_id: str
    turn: int
    started_at: float | None
    text: str | None
    asr_confidence: float | None
    top_score: float | None
    decided_by: str | None
    intents: list[str]
    action: str | None
    has_speech: bool
    max_ms: float
    reasons: list[str]
    reviewed: bool = False
    campaign: str | None = None

    @property
    def priority(self) -> int:
        return sum(REASONS[r] for r in self.reasons)


def turn_reasons(t: TurnRow) -> list[str]:
    """Pure: why a turn deserves review (keys of REASONS), most serious first."""
    out = []
    if "do_not_call" in t.intents or (t.action or "") == "exit_do_not_call":
        out.append("dnc")
    if (t.asr_confidence is not None and t.asr_confidence < LOW_ASR_CONFIDENCE) or (
        t.top_score is not None and t.top_score < LOW_INTENT_SCORE
    ):
        out.append("low_confidence")
    if t.max_ms > LONG_STAGE_MS:
        out.append("long_latency")
    if t.decided_by == "rule":
        out.append("rule_decided")
    return out


def summarise_call(
    call_id: str, events: list[Any]
) -> tuple[IndexedCall, Counter[str], list[tuple[int, str, float, float | None]], list[TurnRow]]:
    """Pure: one call's index row, intent counts, per-turn stage latencies and turn rows."""
    row = IndexedCall(call_id, None, None, None, None, None, None, None, None, 0, "", "", {}, 0, 0, False)
    texts: list[str] = []
    dialects: set[str] = set()
    intents: Counter[str] = Counter()
    for e in events:
        if isinstance(e, BadRow):
            row.bad_rows += 1
        elif isinstance(e, ev.CallStarted):
            row.started_at, row.direction, row.mode = e.ts_wall, e.direction, e.mode
            row.campaign, row.caller = e.campaign, e.caller
            if d := e.metadata.get("dialect"):
                dialects.add(str(d))
        elif isinstance(e, ev.CallEnded):
            row.ended_at, row.end_reason = e.ts_wall, e.reason
            row.outcome = e.outcome or row.outcome
        elif isinstance(e, ev.BotReply):
            row.turns = max(row.turns, e.turn)
            if row.ended_at is None or not row.outcome:
                row.outcome = e.action
        elif isinstance(e, ev.TranscriptFinal):
            texts.append(e.text)
            if e.language:
                dialects.add(e.language)
        elif isinstance(e, ev.NluResult):
            intents.update(i.name for i in e.intents)
        elif isinstance(e, ev.DeadLetter):
            row.dead_letters += 1
    latencies: list[tuple[int, str, float, float | None]] = []
    times = stage_times([e for e in events if not isinstance(e, BadRow)])
    for turn, stages in times.items():
        for st in stages.values():
            latencies.append((turn, st.stage, st.ms, st.handle_ms))
            row.latency[st.stage] = max(row.latency.get(st.stage, 0.0), st.ms)
    speech_turns = {e.turn for e in events if isinstance(e, ev.SpeechSegment)}
    turn_rows = []
    for t in build_turns(events):
        if t.turn <= 0:
            continue
        tr = TurnRow(
            call_id, t.turn, row.started_at, t.caller_text, t.asr_confidence,
            max((s for _, s in t.intents), default=None), t.nlu_decided_by, [n for n, _ in t.intents], t.action,
            t.turn in speech_turns, max((s.ms for s in times.get(t.turn, {}).values()), default=0.0), [],
        )
        tr.reasons = turn_reasons(tr)
        turn_rows.append(tr)
    row.transcript = "\n".join(texts)
    row.dialects = " ".join(sorted(dialects))
    row.completed = row.end_reason in COMPLETED_REASONS
    row.intents = sorted(intents)
    return row, intents, latencies, turn_rows


class CallIndex:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = db.execute("SELECT value FROM meta WHERE name='index_version'").fetchone()
        if row is None or row[0] != INDEX_VERSION:
            with transaction(db):
                for table in _INDEX_TABLES:
                    db.execute(f"DROP TABLE IF EXISTS {table}")
                db.execute("INSERT OR REPLACE INTO meta VALUES ('index_version', ?)", (INDEX_VERSION,))
        db.executescript(_SCHEMA)
        self._choices: dict[str, list[str]] | None = None

    # --- following the log -------------------------------------------------------------

    def sync(self, log: CallLog) -> int:
        """Index what the log got since the last sync; returns how many calls were (re)indexed."""
        marks = {(t, p): o for t, p, o in self.db.execute("SELECT topic, partition, offset FROM index_marks")}
        parts_row = log.db.execute("SELECT value FROM meta WHERE name='partitions'").fetchone()
        partitions = int(parts_row[0]) if parts_row else 4
        changed: set[str] = set()
        new_marks: dict[tuple[str, int], int] = {}
        for topic in topics.ALL:
            for part in range(partitions):
                (top,) = log.db.execute(
                    "SELECT MAX(offset) FROM log WHERE topic=? AND partition=?", (topic, part)
                ).fetchone()
                seen = marks.get((topic, part), -1)
                if top is None or top <= seen:
                    continue
                changed.update(
                    k
                    for (k,) in log.db.execute(
                        "SELECT DISTINCT key FROM log WHERE topic=? AND partition=? AND offset>? AND offset<=?",
                        (topic, part, seen, top),
                    )
                )
                new_marks[(topic, part)] = top
        if not changed:
            return 0
        self._choices = None
        with transaction(self.db):
            for call_id in changed:
                self._reindex(log, call_id)
            self.db.executemany(
                "INSERT OR REPLACE INTO index_marks VALUES (?,?,?)", [(t, p, o) for (t, p), o in new_marks.items()]
            )
        return len(changed)

    def _reindex(self, log: CallLog, call_id: str) -> None:
        row, intents, latencies, turn_rows = summarise_call(call_id, log.events(call_id, only=_INDEX_TOPICS, with_bad=True))
        self.db.execute("DELETE FROM call_intents WHERE call_id=?", (call_id,))
        self.db.execute("DELETE FROM turn_latency WHERE call_id=?", (call_id,))
        self.db.execute("DELETE FROM turn_index WHERE call_id=?", (call_id,))
        self.db.execute("DELETE FROM call_text WHERE call_id=?", (call_id,))
        if row.started_at is None and not row.turns and not row.transcript and not row.dead_letters:
            # Audio frames of a call whose control events have not arrived yet: nothing to list.
            self.db.execute("DELETE FROM call_index WHERE call_id=?", (call_id,))
            return
        self.db.execute(
            "INSERT OR REPLACE INTO call_index VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                row.call_id, row.started_at, row.ended_at, row.direction, row.mode, row.campaign, row.caller,
                row.outcome, row.end_reason, row.turns, row.dialects, json.dumps(row.latency),
                row.dead_letters, row.bad_rows, int(row.completed),
            ),
        )
        self.db.execute("INSERT INTO call_text VALUES (?,?)", (call_id, row.transcript))
        self.db.executemany("INSERT INTO call_intents VALUES (?,?,?)", [(call_id, k, v) for k, v in intents.items()])
        self.db.executemany(
            "INSERT INTO turn_latency VALUES (?,?,?,?,?,?)",
            [(call_id, row.started_at, t, s, ms, h) for t, s, ms, h in latencies],
        )
        self.db.executemany(
            "INSERT INTO turn_index VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (t.call_id, t.turn, t.started_at, t.text, t.asr_confidence, t.top_score, t.decided_by,
                 json.dumps(t.intents), t.action, int(t.has_speech), t.max_ms, t.priority, json.dumps(t.reasons))
                for t in turn_rows
            ],
        )

    # --- reading -----------------------------------------------------------------------

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM call_index").fetchone()[0])

    def page(self, f: CallFilter, limit: int, offset: int) -> tuple[list[IndexedCall], int]:
        where, args = _where(f)
        (total,) = self.db.execute(f"SELECT COUNT(*) FROM call_index c {where}", args).fetchone()
        order = SORTS.get(f.sort, "started_at")
        direction = "DESC" if f.descending else "ASC"
        rows = self.db.execute(
            f"SELECT c.*, EXISTS(SELECT 1 FROM labels l WHERE l.call_id=c.call_id AND l.flagged=1)"
            f" FROM call_index c {where} ORDER BY {order} {direction} NULLS LAST, call_id LIMIT ? OFFSET ?",
            [*args, limit, offset],
        ).fetchall()
        out = [_row(r) for r in rows]
        if out:
            marks = ",".join("?" * len(out))
            intents: dict[str, list[str]] = {}
            for cid, name in self.db.execute(
                f"SELECT call_id, intent FROM call_intents WHERE call_id IN ({marks}) ORDER BY n DESC, intent",
                [c.call_id for c in out],
            ):
                intents.setdefault(cid, []).append(name)
            for c in out:
                c.intents = intents.get(c.call_id, [])
        return out, int(total)

    def get(self, call_id: str) -> IndexedCall | None:
        r = self.db.execute(
            "SELECT c.*, EXISTS(SELECT 1 FROM labels l WHERE l.call_id=c.call_id AND l.flagged=1)"
            " FROM call_index c WHERE call_id=?",
            (call_id,),
        ).fetchone()
        return _row(r) if r else None

    def choices(self) -> dict[str, list[str]]:
        """Values seen in the log, for the filter drop-downs (recomputed after a sync changed calls)."""
        if self._choices is None:
            self._choices = self._compute_choices()
        return self._choices

    def _compute_choices(self) -> dict[str, list[str]]:
        def col(sql: str) -> list[str]:
            return [r[0] for r in self.db.execute(sql) if r[0]]

        dialects: set[str] = set()
        for (d,) in self.db.execute("SELECT DISTINCT dialects FROM call_index"):
            dialects.update(d.split())
        return {
            "campaign": col("SELECT DISTINCT campaign FROM call_index ORDER BY campaign"),
            "outcome": col("SELECT DISTINCT outcome FROM call_index ORDER BY outcome"),
            "intent": col("SELECT DISTINCT intent FROM call_intents ORDER BY intent"),
            "dialect": sorted(dialects),
            "stage": col("SELECT DISTINCT j.key FROM call_index, json_each(call_index.latency) j ORDER BY 1"),
        }

    # --- review queue ------------------------------------------------------------------

    def queue(self, limit: int, offset: int, include_reviewed: bool = False) -> tuple[list[TurnRow], int]:
        """Caller turns, unreviewed first, then by priority (sum of REASONS), newest first."""
        reviewed = "EXISTS(SELECT 1 FROM labels l WHERE l.call_id=t.call_id AND l.turn=t.turn)"
        where = "" if include_reviewed else f"WHERE NOT {reviewed}"
        (total,) = self.db.execute(f"SELECT COUNT(*) FROM turn_index t {where}").fetchone()
        rows = self.db.execute(
            f"SELECT t.call_id, t.turn, t.started_at, t.text, t.asr_confidence, t.top_score, t.decided_by,"
            f" t.intents, t.action, t.has_speech, t.max_ms, t.reasons, {reviewed}, c.campaign"
            f" FROM turn_index t JOIN call_index c ON c.call_id=t.call_id {where}"
            # (unreviewed only: no need to sort by it, and the queue index then serves the order)
            f" ORDER BY {reviewed + ', ' if include_reviewed else ''}t.priority DESC, t.started_at DESC LIMIT ? OFFSET ?",
            (limit, offset),
        ).fetchall()
        out = [
            TurnRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7]), r[8], bool(r[9]), r[10],
                    json.loads(r[11]), bool(r[12]), r[13])
            for r in rows
        ]
        return out, int(total)

    def speech_turns(self) -> set[tuple[str, int]]:
        """(call, turn) pairs whose caller spoke audio (a speech segment): where ASR CER means something."""
        return {(c, t) for c, t in self.db.execute("SELECT call_id, turn FROM turn_index WHERE has_speech=1")}

    def handle_known(self) -> bool:
        """Whether any indexed latency is a stage's own handling time (else all include bus wait)."""
        return self.db.execute("SELECT 1 FROM turn_latency WHERE handle_ms IS NOT NULL LIMIT 1").fetchone() is not None

    # --- dashboard ---------------------------------------------------------------------

    def stats(self, f: CallFilter) -> dict[str, Any]:
        where, args = _where(f)
        (total, completed, dead) = self.db.execute(
            f"SELECT COUNT(*), COALESCE(SUM(completed),0), COALESCE(SUM(dead_letters),0) FROM call_index c {where}", args
        ).fetchone()
        outcomes = self.db.execute(
            f"SELECT COALESCE(outcome,'(none)'), COUNT(*) FROM call_index c {where} GROUP BY 1 ORDER BY 2 DESC", args
        ).fetchall()
        intents = self.db.execute(
            f"SELECT i.intent, SUM(i.n) FROM call_intents i JOIN call_index c ON c.call_id=i.call_id {where}"
            " GROUP BY 1 ORDER BY 2 DESC LIMIT 15",
            args,
        ).fetchall()
        span = self.db.execute(f"SELECT MIN(started_at), MAX(started_at) FROM call_index c {where}", args).fetchone()
        bucket = 86400.0 if span[0] is not None and span[1] - span[0] > 3 * 86400 else 3600.0
        latency = _latency_percentiles(
            self.db.execute(
                f"SELECT CAST(t.started_at / ? AS INTEGER), t.stage, t.ms FROM turn_latency t"
                f" JOIN call_index c ON c.call_id=t.call_id {where} {'AND' if where else 'WHERE'} t.started_at IS NOT NULL",
                [bucket, *args],
            ).fetchall(),
            bucket,
        )
        dead_over_time = self.db.execute(
            f"SELECT CAST(started_at / ? AS INTEGER) * ?, SUM(dead_letters) FROM call_index c {where}"
            " GROUP BY 1 ORDER BY 1",
            [bucket, bucket, *args],
        ).fetchall()
        return {
            "total": int(total),
            "completed": int(completed),
            "completion_rate": (completed / total) if total else None,
            "dead_letters": int(dead),
            "outcomes": outcomes,
            "intents": intents,
            "latency": latency,
            "bucket_s": bucket,
            "dead_over_time": [(b, n) for b, n in dead_over_time if b is not None],
        }


def _latency_percentiles(rows: list[tuple[int, str, float]], bucket: float) -> list[dict[str, Any]]:
    """p50/p95 per (time bucket, stage), vectorised: the dashboard reads every turn's latency."""
    if not rows:
        return []
    buckets, stage_names, ms = zip(*rows)
    names = sorted(set(stage_names))
    code = {n: i for i, n in enumerate(names)}
    key = np.asarray(buckets, dtype=np.int64) * len(names) + np.asarray([code[n] for n in stage_names])
    values = np.asarray(ms, dtype=np.float64)
    order = np.argsort(key, kind="stable")
    key, values = key[order], values[order]
    uniq, starts = np.unique(key, return_index=True)
    out = []
    for k, chunk in zip(uniq.tolist(), np.split(values, starts[1:])):
        p50, p95 = np.percentile(chunk, [50, 95])
        out.append({"bucket": (k // len(names)) * bucket, "stage": names[k % len(names)],
                    "p50": float(p50), "p95": float(p95), "n": int(chunk.size)})
    return out


def _row(r: tuple[Any, ...]) -> IndexedCall:
    return IndexedCall(
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], "", json.loads(r[11]),
        r[12], r[13], bool(r[14]), flagged=bool(r[15]),
    )


def _where(f: CallFilter) -> tuple[str, list[Any]]:
    parts: list[str] = []
    args: list[Any] = []
    if f.since is not None:
        parts.append("c.started_at >= ?")
        args.append(f.since)
    if f.until is not None:
        parts.append("c.started_at < ?")
        args.append(f.until)
    for col in ("campaign", "outcome"):
        value = getattr(f, col)
        if value:
            parts.append(f"c.{col} = ?")
            args.append(value)
    if f.intent:
        # Correlated, so that a common intent is checked along the started_at order (LIMIT stops
        # early) instead of materialising thousands of matches and sorting them.
        parts.append("EXISTS (SELECT 1 FROM call_intents i WHERE i.call_id = c.call_id AND i.intent = ?)")
        args.append(f.intent)
    if f.dialect:
        parts.append("(' ' || c.dialects || ' ') LIKE ?")
        args.append(f"% {f.dialect} %")
    if f.flagged:
        parts.append("c.call_id IN (SELECT call_id FROM labels WHERE flagged = 1)")
    if f.compliance:
        parts.append("c.call_id IN (SELECT call_id FROM labels WHERE compliance = 1)")
    if f.latency_stage and f.latency_over_ms is not None:
        parts.append("CAST(json_extract(c.latency, ?) AS REAL) > ?")
        args += [f"$.{f.latency_stage}", f.latency_over_ms]
    if f.text:
        parts.append("c.call_id IN (SELECT call_id FROM call_text WHERE instr(transcript, ?) > 0)")
        args.append(f.text)
    return ("WHERE " + " AND ".join(parts)) if parts else "", args
