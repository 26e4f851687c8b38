"""Reviewer labels on call turns, and their export as training data.

A label says, for one turn of one call, what the caller really said, which intents and slots
were really meant, and what went wrong (flags).  Labels are kept with who made them and when;
the newest label of a turn is the one that counts, older ones stay as history.

Exports are written in exactly the formats the training pipelines read:
- NLU (`dianxiao eval nlu --data` / fine-tuning): JSONL lines
  `{"text", "intents": [...], "entities": [{"type", "value"}], "context": [previous caller turns]}`
- ASR adaptation (`dianxiao eval asr --manifest`): a manifest of lines
  `{"audio": path relative to the manifest, "text"}` with the WAVs written beside it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from agent.calllog import CallLog, Turn

FLAGS = ("wrong_answer", "compliance", "bad_audio")


class EntityLabel(BaseModel):
    type: str = Field(min_length=1)
    value: Any


class TurnLabel(BaseModel):
    """What a reviewer said about one turn.  None = "not corrected" (the recorded value stands
    if the turn is confirmed)."""

    call_id: str
    turn: int = Field(ge=0)
    transcript: str | None = None
    intents: list[str] | None = None
    entities: list[EntityLabel] | None = None
    flags: list[str] = Field(default_factory=list)
    confirmed: bool = False
    note: str = ""
    author: str
    created_at: float = Field(default_factory=time.time)

    @field_validator("flags")
    @classmethod
    def _known_flags(cls, v: list[str]) -> list[str]:
        bad = [f for f in v if f not in FLAGS]
        if bad:
            raise ValueError(f"unknown flag(s) {bad}; known: {', '.join(FLAGS)}")
        return sorted(set(v))


_SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id TEXT NOT NULL, turn INTEGER NOT NULL, body TEXT NOT NULL,
    author TEXT NOT NULL, created_at REAL NOT NULL, flagged INTEGER NOT NULL DEFAULT 0,
    compliance INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS labels_by_turn ON labels (call_id, turn, id);
"""


class LabelStore:
    """Labels in the console's own SQLite file (never in the bus log)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.executescript(_SCHEMA)

    @classmethod
    def open(cls, path: str | Path) -> "LabelStore":
        db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout=5000")
        return cls(db)

    def add(self, label: TurnLabel) -> None:
        with self.db:  # one statement: autocommit makes it atomic
            self.db.execute(
                "INSERT INTO labels (call_id, turn, body, author, created_at, flagged, compliance)"
                " VALUES (?,?,?,?,?,?,?)",
                (
                    label.call_id,
                    label.turn,
                    label.model_dump_json(),
                    label.author,
                    label.created_at,
                    int(bool(label.flags)),
                    int("compliance" in label.flags),
                ),
            )

    def history(self, call_id: str, turn: int) -> list[TurnLabel]:
        rows = self.db.execute(
            "SELECT body FROM labels WHERE call_id=? AND turn=? ORDER BY id", (call_id, turn)
        ).fetchall()
        return [TurnLabel.model_validate_json(r[0]) for r in rows]

    def latest_for_call(self, call_id: str) -> dict[int, TurnLabel]:
        out: dict[int, TurnLabel] = {}
        for (body,) in self.db.execute("SELECT body FROM labels WHERE call_id=? ORDER BY id", (call_id,)):
            label = TurnLabel.model_validate_json(body)
            out[label.turn] = label
        return out

    def latest(self) -> dict[tuple[str, int], TurnLabel]:
        """The label in force for every labelled turn."""
        out: dict[tuple[str, int], TurnLabel] = {}
        for (body,) in self.db.execute("SELECT body FROM labels ORDER BY id"):
            label = TurnLabel.model_validate_json(body)
            out[(label.call_id, label.turn)] = label
        return out


# --- export ---------------------------------------------------------------------------------


@dataclass
class LabelledTurn:
    label: TurnLabel
    recorded: Turn | None
    context: list[str]


def labelled_turns(store: LabelStore, log: CallLog) -> Iterator[LabelledTurn]:
    """Each labelled turn with what was recorded and the caller's previous turns (corrected
    where a reviewer corrected them), in call and turn order."""
    by_call: dict[str, dict[int, TurnLabel]] = {}
    for (call_id, turn), label in store.latest().items():
        by_call.setdefault(call_id, {})[turn] = label
    for call_id in sorted(by_call):
        labels = by_call[call_id]
        turns = {t.turn: t for t in log.turns(call_id)}
        said: list[str] = []
        for n in sorted(set(turns) | set(labels)):
            rec = turns.get(n)
            label = labels.get(n)
            text = label.transcript if label and label.transcript else (rec.caller_text if rec else None)
            if label is not None:
                yield LabelledTurn(label, rec, list(said[-3:]))
            if text:
                said.append(text)


def nlu_example(item: LabelledTurn) -> dict[str, Any] | None:
    """One NLU training line, or None when the label does not settle what the caller meant."""
    label, rec = item.label, item.recorded
    text = label.transcript or (rec.caller_text if rec else None)
    if not text:
        return None
    if label.intents is None and label.entities is None and not label.confirmed:
        return None
    if label.intents is not None:
        intents = list(label.intents)
    else:
        intents = [name for name, _ in rec.intents] if rec else []
    if label.entities is not None:
        entities = [{"type": e.type, "value": e.value} for e in label.entities]
    else:
        entities = [{"type": e["type"], "value": e["value"]} for e in (rec.entities if rec else [])]
    return {"text": text, "intents": intents, "entities": entities, "context": item.context}


def export_nlu(store: LabelStore, log: CallLog, out: Path) -> int:
    n = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for item in labelled_turns(store, log):
            line = nlu_example(item)
            if line is not None:
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")
                n += 1
    return n


def nlu_lines(store: LabelStore, log: CallLog) -> Iterable[str]:
    for item in labelled_turns(store, log):
        line = nlu_example(item)
        if line is not None:
            yield json.dumps(line, ensure_ascii=False) + "\n"


def export_asr(store: LabelStore, log: CallLog, out_dir: Path) -> int:
    """Write `manifest.jsonl` and one WAV per labelled turn that has caller audio and a
    settled transcript (corrected, or confirmed as recorded)."""
    from agent.console.audio import caller_wav

    out_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    with (out_dir / "manifest.jsonl").open("w", encoding="utf-8") as fh:
        for item in labelled_turns(store, log):
            label, rec = item.label, item.recorded
            text = label.transcript or (rec.caller_text if rec and label.confirmed else None)
            if not text or "bad_audio" in label.flags:
                continue
            wav = caller_wav(log, label.call_id, label.turn)
            if wav is None:
                continue
            name = f"{_safe(label.call_id)}_t{label.turn}.wav"
            (out_dir / name).write_bytes(wav)
            language = rec_language(log, label.call_id, label.turn)
            line: dict[str, Any] = {"audio": name, "text": text}
            if language:
                line["language"] = language
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
            n += 1
    return n


def rec_language(log: CallLog, call_id: str, turn: int) -> str | None:
    from agent import events as ev
    from agent import topics

    for e in log.events(call_id, only=(topics.TRANSCRIPTS,)):
        if isinstance(e, ev.TranscriptFinal) and e.turn == turn:
            return e.language
    return None


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


ExportKind = Literal["nlu", "asr"]
