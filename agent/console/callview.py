"""One call, shaped for the call page: turns with their transcript, partials, intents, slot
diff, reply, latencies, audio availability, dead letters and unreadable log rows in place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent import events as ev
from agent import topics
from agent.calllog import CallLog
from agent.console.latency import StageTime, stage_times
from agent.console.privacy import NAME_ENTITY_TYPES, mask_caller, mask_text
from agent.labels import TurnLabel
from agent.replay import dict_diff

_VIEW_TOPICS = (
    topics.CONTROL, topics.SPEECH, topics.TRANSCRIPTS, topics.NLU, topics.DIALOGUE, topics.REPLIES, topics.DEAD_LETTERS,
)
# audio.out is read apart, decoded only for tts's time to first frame (a frame's payload is
# never needed here)


@dataclass
class ErrorRow:
    topic: str
    offset: int
    error: str
    raw: str
    ts: float


@dataclass
class TurnView:
    turn: int
    started_at: float | None = None
    caller_text: str | None = None
    confidence: float | None = None
    language: str | None = None
    partials: list[str] = field(default_factory=list)
    intents: list[tuple[str, float]] = field(default_factory=list)
    entities: list[dict[str, Any]] = field(default_factory=list)
    decided_by: str | None = None
    nlu_version: str | None = None
    slot_changes: list[str] = field(default_factory=list)
    state: dict[str, Any] | None = None
    reply: str | None = None
    reply_id: str | None = None
    action: str | None = None
    barge_in: str | None = None
    taken_back_by: int | None = None  # a later turn that reached back over this one (TranscriptFinal.retracts_turn)
    latency_ms: dict[str, float] = field(default_factory=dict)
    times: dict[str, StageTime] = field(default_factory=dict)
    dead_letters: list[str] = field(default_factory=list)
    errors: list[ErrorRow] = field(default_factory=list)
    caller_audio: bool = False
    bot_audio: bool = False
    speech_ms: tuple[int, int] | None = None
    label: TurnLabel | None = None


@dataclass
class CallView:
    call_id: str
    started: ev.CallStarted | None
    ended: ev.CallEnded | None
    caller: str | None
    turns: list[TurnView]
    errors: list[ErrorRow]
    max_turn_latency: float
    has_audio: bool = False


def build_call_view(log: CallLog, call_id: str, labels: dict[int, TurnLabel], mask: bool) -> CallView | None:
    events: list[Any] = []
    errors: list[ErrorRow] = []
    for topic, offset, value, ts in log.rows(call_id, _VIEW_TOPICS):
        try:
            events.append(ev.decode(bytes(value)))
        except ev.EventError as exc:
            errors.append(ErrorRow(topic, offset, str(exc), ev.raw_for_dead_letter(bytes(value), 300), ts))
    has_out = log.db.execute(
        "SELECT 1 FROM log WHERE key=? AND topic=? LIMIT 1", (call_id, topics.AUDIO_OUT)
    ).fetchone() is not None
    has_in = log.db.execute(
        "SELECT 1 FROM log WHERE key=? AND topic=? LIMIT 1", (call_id, topics.AUDIO_IN)
    ).fetchone() is not None
    if not events and not errors:
        return None
    turns: dict[int, TurnView] = {}
    started = ended = None
    names: set[str] = set()

    def tv(n: int) -> TurnView:
        return turns.setdefault(n, TurnView(turn=n))

    for e in events:
        t = tv(e.turn)
        if t.started_at is None or e.ts_wall < t.started_at:
            t.started_at = e.ts_wall
        if isinstance(e, ev.CallStarted):
            started = e
        elif isinstance(e, ev.CallEnded):
            ended = e
        elif isinstance(e, ev.SpeechSegment):
            t.caller_audio = t.caller_audio or bool(e.audio_pcm16)
            t.speech_ms = (e.start_ms, e.end_ms)
        elif isinstance(e, ev.TranscriptPartial):
            t.partials.append(e.text)
        elif isinstance(e, ev.TranscriptFinal):
            t.caller_text, t.confidence, t.language = e.text, e.confidence, e.language
            if e.retracts_turn:
                tv(e.retracts_turn).taken_back_by = e.turn
        elif isinstance(e, ev.NluResult):
            t.intents = [(i.name, i.score) for i in e.intents]
            t.entities = [x.model_dump(mode="json") for x in e.entities]
            t.decided_by, t.nlu_version = e.decided_by, e.model_version
            names.update(str(x.value) for x in e.entities if x.type in NAME_ENTITY_TYPES)
        elif isinstance(e, ev.DialogueStateUpdated):
            t.state = e.state
        elif isinstance(e, ev.BotReply):
            t.reply, t.action, t.reply_id = e.text, e.action, e.event_id
            t.bot_audio = has_out
        elif isinstance(e, ev.BargeIn):
            t.barge_in = (f"caller spoke over the bot after {e.heard_ms} ms" if e.reply_event_id else
                          "caller went on before the reply to their last turn started: that reply was dropped")
        elif isinstance(e, ev.DeadLetter):
            t.dead_letters.append(f"{e.source_topic}: {e.reason}" + (f" — {e.raw[:200]}" if e.raw else ""))
    out_frames = _first_frames(log, call_id) if has_out else []
    for n, stages in stage_times(events + out_frames).items():
        t = tv(n)
        t.times = stages
        t.latency_ms = {s: st.ms for s, st in stages.items()}
    if has_in:
        for t in turns.values():
            t.caller_audio = t.caller_audio or (t.turn > 0 and t.caller_text is not None)
    ordered = [turns[k] for k in sorted(turns)]
    prev: dict[str, Any] = {}
    for t in ordered:
        if t.state is not None:
            t.slot_changes = dict_diff(_slots(prev), _slots(t.state))
            prev = t.state
        t.label = labels.get(t.turn)
    # An unreadable row goes to the turn that was under way when it was written.
    call_level: list[ErrorRow] = []
    for err in errors:
        home = [t for t in ordered if t.turn > 0 and t.started_at is not None and t.started_at <= err.ts]
        (home[-1].errors if home else call_level).append(err)
    visible = [t for t in ordered if t.turn > 0 or t.dead_letters or t.errors]
    if mask:
        for t in visible:
            t.caller_text = mask_text(t.caller_text, names)
            t.partials = [mask_text(p, names) or "" for p in t.partials]
            t.reply = mask_text(t.reply, names)
            for x in t.entities:
                if x.get("type") in NAME_ENTITY_TYPES:
                    x["value"] = "***"
            t.slot_changes = [mask_text(c, names) or "" for c in t.slot_changes]
    caller = started.caller if started else None
    longest = max((sum(t.latency_ms.values()) for t in visible), default=0.0)
    has_audio = has_in or has_out or any(t.caller_audio for t in visible)
    return CallView(call_id, started, ended, mask_caller(caller) if mask else caller, visible, call_level, longest, has_audio)


def _first_frames(log: CallLog, call_id: str) -> list[Any]:
    """The first audio.out frame of each reply (tts's time to first audio)."""
    seen: set[str | None] = set()
    out = []
    for _, _, value, _ in log.rows(call_id, (topics.AUDIO_OUT,)):
        try:
            e = ev.decode(bytes(value))
        except ev.EventError:
            continue
        if isinstance(e, ev.AudioFrame) and e.reply_event_id not in seen:
            seen.add(e.reply_event_id)
            out.append(e)
    return out


def _slots(state: dict[str, Any]) -> dict[str, Any]:
    slots = state.get("slots", state)
    out = {}
    for k, v in slots.items():
        out[k] = v.get("value", v) if isinstance(v, dict) and "value" in v else v
    return out
