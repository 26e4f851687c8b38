"""ASR stage: speech.segments -> transcripts.

A partial segment (the VAD saw a pause that was not the end of the turn) is decoded into a
TranscriptPartial whose `stable_prefix` is the part two consecutive hypotheses agree on
(local agreement), so a UI or an eager NLU sees text that does not flicker.  The final segment
gives the TranscriptFinal; when no new audio arrived since the last partial (the pause became
the end) the partial's decode is reused instead of decoding the same audio twice.

Decoding happens at VAD pauses and turn ends only, never on a timer: on 2 CPU cores a Whisper
decode costs a few hundred ms, so a 0.5 s partial cadence would starve everything else.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import structlog

from agent import events as ev
from agent import topics
from agent.speech.asr import AsrEngine, AsrResult
from agent.stages.base import CallContext, Emit, Stage

log = structlog.get_logger("dianxiao.stages.asr")

MIN_PARTIAL_MS = 600


@dataclass
class CallTranscripts:
    turn: int = 0
    last_partial: str = ""
    cached: dict[tuple[int, int, int], AsrResult] = field(default_factory=dict)
    # The latest partial's decode already corrected / rescored: (text, raw_text, changes).  If
    # the final segment has the same audio, publishing it costs nothing more.
    finished: dict[tuple[int, int, int], tuple[str, str | None, list[dict]]] = field(default_factory=dict)


def stable_prefix(previous: str, current: str) -> str:
    """Longest common prefix of two consecutive hypotheses (local agreement, n=2)."""
    n = 0
    for a, b in zip(previous, current):
        if a != b:
            break
        n += 1
    return current[:n]


class AsrStage(Stage):
    name = "asr"
    blocking = True
    reads = (topics.SPEECH, topics.CONTROL)
    writes = (topics.TRANSCRIPTS,)

    def __init__(self, engine: AsrEngine, hotwords: Sequence[str] = (), corrector: Any = None,
                 rescorer: Any = None) -> None:
        self.engine = engine
        self.hotwords = list(hotwords)
        # Domain correction (agent/asrfix): pure text -> Correction(text, changes); None = off.
        self.corrector = corrector
        # Picks among the engine's n-best (agent/asrfix/rescore.py) when it returns several.
        self.rescorer = rescorer
        self.version = engine.name + ("+asrfix" if corrector is not None else "")

    # --- parallel decoding (agent/runner.py runs `workers` decodes of different calls at once) ---

    def priority(self, event: Any) -> int:
        # A final is a caller waiting for the bot; a partial is only a head start.
        return 1 if isinstance(event, ev.SpeechSegment) and not event.final else 0

    def supersedes(self, newer: Any, older: Any) -> bool:
        # A partial not yet decoded is worthless once newer audio of the same turn arrived: the
        # newer segment (partial or final) covers the same start and more (or the same) audio.
        return (isinstance(older, ev.SpeechSegment) and not older.final and isinstance(newer, ev.SpeechSegment)
                and newer.turn == older.turn and newer.start_ms == older.start_ms and newer.end_ms >= older.end_ms)

    def new_state(self, call_id: str) -> CallTranscripts:
        return CallTranscripts()

    # A snapshot keeps the turn and the last partial only: the decode caches are an optimisation,
    # and a final whose partial was decoded before a restart is simply decoded again.
    def dump_state(self, state: CallTranscripts) -> dict[str, Any]:
        return {"turn": state.turn, "last_partial": state.last_partial}

    def load_state(self, call_id: str, data: dict[str, Any]) -> CallTranscripts:
        return CallTranscripts(turn=int(data["turn"]), last_partial=str(data["last_partial"]))

    def handle(self, event: Any, ctx: CallContext) -> list[Emit]:
        if not isinstance(event, ev.SpeechSegment):
            return []
        st: CallTranscripts = ctx.state
        if event.turn != st.turn:
            st.turn, st.last_partial, st.cached, st.finished = event.turn, "", {}, {}
        if len(event.audio_pcm16) % 2:
            raise ValueError(f"speech segment has an odd number of bytes ({len(event.audio_pcm16)}): not PCM16")
        if not event.final and event.end_ms - event.start_ms < MIN_PARTIAL_MS:
            return []  # too little audio to say anything stable; Whisper invents text on it
        key = (event.turn, event.start_ms, event.end_ms)
        result = st.cached.get(key)
        if result is None:
            pcm = np.frombuffer(event.audio_pcm16, dtype="<i2")
            result = self.engine.transcribe(pcm, self.hotwords) if len(pcm) else None
        if not event.final:
            if result is None or not result.text:
                return []
            st.cached = {key: result}
            # Correct/rescore now, while the turn-taker is still waiting out the pause: the final
            # usually has exactly this audio (the VAD's early partial), so its publication skips it.
            st.finished = {key: self._finish(result)}
            prefix = stable_prefix(st.last_partial, result.text)
            st.last_partial = result.text
            return [Emit(topics.TRANSCRIPTS, self.make(ev.TranscriptPartial, event, ctx, 0, text=result.text,
                                                     stable_prefix=prefix))]
        finished = st.finished.get(key)
        st.cached, st.finished = {}, {}
        if result is None or not result.text:
            log.info("empty final transcript dropped", call_id=ctx.call_id, turn=event.turn)
            return []
        text, raw, changes = finished if finished is not None else self._finish(result)
        final = self.make(
            ev.TranscriptFinal, event, ctx, 0, text=text, language=result.language,
            confidence=None if result.avg_logprob is None else round(math.exp(result.avg_logprob), 4),
            asr_model=self.version, audio_ms=result.audio_ms, raw_text=raw, corrections=changes,
            retracts_turn=event.retracts_turn,
        )
        log.info("final transcript", call_id=ctx.call_id, turn=event.turn, text=text, corrected=len(changes),
                 decode_ms=round(result.decode_ms), audio_ms=result.audio_ms)
        return [Emit(topics.TRANSCRIPTS, final)]


    def _finish(self, result: AsrResult) -> tuple[str, str | None, list[dict]]:
        """(published text, what the recogniser wrote if that differs, the change report)."""
        if self.corrector is None and self.rescorer is None:
            return result.text, None, []
        from agent.asrfix.rescore import correct_transcript  # correction implies the spoken extra

        text, changes = correct_transcript(result.text, result.hypotheses, self.corrector, self.rescorer)
        return (text, result.text, changes) if changes else (result.text, None, [])


def terms_from_playbook(playbook: Any) -> list[str]:
    """Hot-words from a playbook: product names and aliases, plan names, competitors, add-ons.
    Duck-typed on purpose (the playbook schema belongs to the dialogue package)."""
    terms: list[str] = []
    for prod in getattr(playbook, "products", []) or []:
        terms += [getattr(prod, "name", "")] + list(getattr(prod, "aliases", []) or [])
        for plan in getattr(prod, "plans", []) or []:
            terms.append(getattr(plan, "name", ""))
        for addon in getattr(prod, "addons", getattr(prod, "add_ons", [])) or []:
            terms.append(getattr(addon, "name", ""))
    for comp in getattr(playbook, "competitors", []) or []:
        terms.append(getattr(comp, "name", ""))
    terms += list(getattr(playbook, "asr_terms", []) or [])
    out: list[str] = []
    for t in terms:
        if isinstance(t, str) and t.strip() and "_" not in t and t not in out:
            out.append(t.strip())
    return out
