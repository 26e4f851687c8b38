"""Per-turn, per-stage latency of a call, for every stage that wrote something (vad, asr, nlu,
dst, policy, tts, …).

What the log can tell: an output event's production time minus its cause's production time.
That is the stage's handling *plus* the time the cause waited on the bus (and in the stage's
batch), so on a busy bus nlu shows 100–200 ms where /metrics shows ~5 ms of handling.  A
stage's own handling time is used when the event records one (a `handle_ms` field); no event
type records it today, so every figure is marked "incl. bus wait" — the console says which.

Each stage is measured on the output that ends its part of the turn: vad on the speech segment
(not speech.started or a barge-in), asr on the final transcript (not a partial), tts on the
first audio frame of the reply (time to first audio, not the whole synthesis)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent import events as ev

#: the output that counts for a stage; other outputs of that stage only fill an empty slot
_MAIN = {
    "vad": (ev.SpeechSegment,),
    "asr": (ev.TranscriptFinal,),
    "nlu": (ev.NluResult,),
    "dst": (ev.DialogueStateUpdated,),
    "policy": (ev.BotReply,),
    "tts": (ev.AudioFrame,),
}
#: outputs that are never a stage's latency (the partial comes before the work is done)
_SKIP = (ev.TranscriptPartial, ev.SpeechStarted, ev.ReplyAudioEnd)
#: stages in pipeline order, for display
ORDER = ("vad", "asr", "nlu", "dst", "policy", "tts")


@dataclass(frozen=True)
class StageTime:
    stage: str
    ms: float  # cause produced -> output produced
    handle_ms: float | None = None  # the stage's own time, when the event records it

    @property
    def includes_bus_wait(self) -> bool:
        return self.handle_ms is None


def stage_times(events: list[Any]) -> dict[int, dict[str, StageTime]]:
    """turn -> stage -> StageTime, from one call's decoded events (any order of topics)."""
    by_id = {e.event_id: e for e in events if hasattr(e, "event_id")}
    out: dict[int, dict[str, StageTime]] = {}
    main_seen: set[tuple[int, str]] = set()
    for e in events:
        if not hasattr(e, "caused_by") or not e.caused_by or e.stage in ("caller",) or isinstance(e, _SKIP):
            continue
        cause = by_id.get(e.caused_by)
        if cause is None:
            continue
        key = (e.turn, e.stage)
        is_main = isinstance(e, _MAIN.get(e.stage, ()))
        slot = out.setdefault(e.turn, {})
        if is_main:
            if e.stage == "tts" and key in main_seen:
                continue  # time to the *first* frame
            main_seen.add(key)
        elif key in main_seen or e.stage in slot:
            continue
        ms = round((e.ts_wall - cause.ts_wall) * 1000, 2)
        handle = getattr(e, "handle_ms", None)
        slot[e.stage] = StageTime(e.stage, ms, float(handle) if handle is not None else None)
    for turn, stages in out.items():
        out[turn] = dict(sorted(stages.items(), key=lambda kv: _rank(kv[0])))
    return out


def _rank(stage: str) -> tuple[int, str]:
    return (ORDER.index(stage) if stage in ORDER else len(ORDER), stage)
