"""VAD + turn-taking stage: audio.in -> speech.segments (and barge-in on call.control).

Caller frames (8 kHz mu-law or 16 kHz PCM16) become 16 kHz PCM16 in a per-call ring buffer;
Silero scores each 32 ms window; agent/speech/turns.py decides starts, pauses and ends; at a
pause Smart Turn says whether the turn sounds finished.  A short silence (before the pause)
produces a partial segment (final=False) so the ASR can decode while the caller thinks and
while the pause and Smart Turn are still pending; the end produces the final segment.

The stage also reads the bot's frames on audio.out to know, on the call's media clock, when the
bot is talking: caller speech that starts then is a barge-in.

With a completeness model (agent/speech/completeness.py) it also reads the ASR's partial
transcripts: Smart Turn hears "finished" at half of the mid-sentence pauses of read Chinese, so
an end it calls is kept only when the words of the partial (decoded from the early point, so
usually in by the pause) read as a finished turn; otherwise the turn is held for up to
`semantic_hold_ms` of silence, and ends sooner only if the caller goes on speaking.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import structlog

from agent import events as ev
from agent import topics
from agent.speech.codec import PHONE_RATE, PIPELINE_RATE, StreamResampler, ulaw_decode
from agent.speech.frames import SampleRing
from agent.speech.models import WINDOW, SileroState, SileroVad, SmartTurn
from agent.speech.turns import Phase, TurnEvent, TurnParams, TurnState, end_turn, step
from agent.stages.asr import MIN_PARTIAL_MS
from agent.stages.base import CallContext, Emit, Stage

log = structlog.get_logger("dianxiao.stages.vad")

MAX_GAP_FRAMES = 50  # a gap in frame indexes up to 1 s is filled with silence (lost packets)
SILERO_RESET_MS = 2000  # reset Silero's recurrent state after this much quiet (it drifts)


@dataclass
class CallAudio:
    ring: SampleRing
    resampler: StreamResampler | None = None
    pending: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int16))
    silero: SileroState = field(default_factory=SileroState)
    turn: TurnState = field(default_factory=TurnState)
    samples_scored: int = 0
    next_frame: int = 0
    caller_turns: int = 0
    bad_frames: int = 0
    late_frames: int = 0
    quiet_since_reset_ms: int = 0
    # the bot's playback on the media clock (ms since call start)
    bot_reply: str | None = None
    bot_start_ms: int = 0
    bot_until_ms: int = 0
    barged: set[str] = field(default_factory=set)
    last_partial: tuple[int, int, int] | None = None  # (turn, start_ms, end_ms) of the last partial sent
    partial_id: str | None = None  # its event id: the ASR's TranscriptPartial names it as caused_by
    # (turn, end_ms, P(complete)) of the words of the latest partial the ASR transcribed
    heard: tuple[int, int, float] | None = None
    last_end_ms: int | None = None  # where the caller's last finished turn ended (media ms)
    last_start_ms: int = 0  # and where it started
    retracts_turn: int = 0  # the cut turn the current one reaches back over (0: none)

    @property
    def media_ms(self) -> int:
        return self.next_frame * ev.FRAME_MS


class VadStage(Stage):
    name = "vad"
    blocking = True
    # The runner hands a whole batch over (one thread hop), and Silero scores one window of
    # every call per model run: at 10 calls that keeps the VAD in real time while the ASR
    # workers hold both cores (issue 17: at 8 calls the VAD fell behind).
    batched = True
    reads = (topics.AUDIO_IN, topics.AUDIO_OUT, topics.CONTROL)
    writes = (topics.SPEECH, topics.CONTROL)

    def __init__(
        self, vad: SileroVad, smart_turn: SmartTurn | None, params: TurnParams | None = None,
        ring_seconds: int = 60, completeness: Any = None,
    ) -> None:
        self.vad = vad
        self.smart_turn = smart_turn
        self.params = params or TurnParams()
        self.ring_samples = ring_seconds * PIPELINE_RATE
        self.version = "silero+smart-turn-v3.2" if smart_turn else "silero"
        # .probability(text) -> P(the caller has finished); None = Smart Turn alone decides
        self.completeness = completeness if smart_turn is not None else None
        if self.completeness is not None:
            self.version += "+words"
            self.reads = (*type(self).reads, topics.TRANSCRIPTS)

    def new_state(self, call_id: str) -> CallAudio:
        return CallAudio(ring=SampleRing(self.ring_samples))

    # A snapshot keeps the call's clocks, counters and turn-taking state, not its audio: storing
    # up to a minute of PCM per batch would cost more than it saves.  After a restart the ring
    # holds silence where the lost audio was, Silero and the resampler start fresh (Silero is
    # reset after every 2 s of quiet anyway), and no model runs on old audio.
    _SNAPSHOT_FIELDS = ("next_frame", "caller_turns", "samples_scored", "bad_frames", "late_frames",
                        "bot_reply", "bot_start_ms", "bot_until_ms")

    def dump_state(self, state: CallAudio) -> dict[str, Any]:
        turn = {f.name: getattr(state.turn, f.name) for f in dataclasses.fields(state.turn)}
        turn["phase"] = state.turn.phase.value
        return {**{k: getattr(state, k) for k in self._SNAPSHOT_FIELDS}, "turn": turn,
                "barged": sorted(state.barged), "last_partial": state.last_partial,
                "partial_id": state.partial_id, "heard": state.heard, "last_end_ms": state.last_end_ms,
                "last_start_ms": state.last_start_ms, "retracts_turn": state.retracts_turn}

    def load_state(self, call_id: str, data: dict[str, Any]) -> CallAudio:
        st = self.new_state(call_id)
        for k in self._SNAPSHOT_FIELDS:
            setattr(st, k, data[k])
        known = {f.name for f in dataclasses.fields(TurnState)}
        turn = {k: v for k, v in data["turn"].items() if k in known}  # a field of an older version is dropped
        turn["phase"] = type(st.turn.phase)(turn["phase"])
        st.turn = TurnState(**turn)
        st.barged = set(data["barged"])
        st.last_partial = tuple(data["last_partial"]) if data["last_partial"] else None  # type: ignore[assignment]
        st.partial_id = data.get("partial_id")  # absent from a snapshot of an older version
        st.heard = tuple(data["heard"]) if data.get("heard") else None  # type: ignore[assignment]
        st.last_end_ms = data.get("last_end_ms")
        st.last_start_ms = data.get("last_start_ms", 0)
        st.retracts_turn = data.get("retracts_turn", 0)
        # The next audio lands right after what was scored: the ring's sample clock goes on.
        st.ring.total = st.samples_scored
        return st

    def handle(self, event: Any, ctx: CallContext) -> list[Emit]:
        st: CallAudio = ctx.state
        if isinstance(event, ev.AudioFrame) and event.reply_event_id is None:
            steps = self._caller_frame(st, event, ctx)
            try:
                request = next(steps)
                while True:
                    request = steps.send(self.vad.probability(*request))
            except StopIteration as done:
                return done.value
        return self._other(st, event, ctx)

    def handle_batch(self, items: list[tuple[Any, CallContext]]) -> list[Any]:
        """Each call's events in order, all calls in lock-step: every round, one Silero run
        scores the next window of each call that has one.  An event whose handling fails gets
        its exception as its result (the runner dead-letters it) and the rest go on."""
        results: list[Any] = [[] for _ in items]
        by_call: dict[str, list[int]] = {}
        for i, (_, ctx) in enumerate(items):
            by_call.setdefault(ctx.call_id, []).append(i)

        def call_steps(indices: list[int]) -> Any:
            for i in indices:
                event, ctx = items[i]
                try:
                    if isinstance(event, ev.AudioFrame) and event.reply_event_id is None:
                        results[i] = yield from self._caller_frame(ctx.state, event, ctx)
                    else:
                        results[i] = self._other(ctx.state, event, ctx)
                except Exception as exc:  # noqa: BLE001 - reported per event by the runner
                    results[i] = exc

        waiting = []
        for steps in (call_steps(ix) for ix in by_call.values()):
            try:
                waiting.append((steps, next(steps)))
            except StopIteration:
                pass
        while waiting:
            requests = [request for _, request in waiting]
            many = getattr(self.vad, "probabilities", None)  # a plugin VAD may score one at a time
            probs = many(requests) if many else [self.vad.probability(*r) for r in requests]
            still = []
            for (steps, _), prob in zip(waiting, probs):
                try:
                    still.append((steps, steps.send(prob)))
                except StopIteration:
                    pass
            waiting = still
        return results

    def _other(self, st: CallAudio, event: Any, ctx: CallContext) -> list[Emit]:
        if isinstance(event, ev.AudioFrame):  # the bot's own audio on audio.out
            self._track_bot(st, event)
            return []
        if isinstance(event, ev.CallEnded) and st.turn.phase.value != "quiet":
            return self._emit_turn(st, end_turn(st.turn, self.params, "hangup"), event, ctx, [0])
        if isinstance(event, ev.TranscriptPartial) and self.completeness is not None:
            return self._heard(st, event, ctx)
        return []

    # --- the words of the partial transcript (the semantic signal) --------------------------

    def _heard(self, st: CallAudio, event: ev.TranscriptPartial, ctx: CallContext) -> list[Emit]:
        """The ASR transcribed a partial: score its words; if an end is waiting on them, decide."""
        if st.partial_id is None or event.caused_by != st.partial_id or st.last_partial is None:
            return []  # an older partial's words: newer audio has arrived since
        turn, _, end_ms = st.last_partial
        p = self.completeness.probability(event.text)
        st.heard = (turn, end_ms, p)
        if not (st.turn.awaiting_words and st.turn.phase is Phase.PAUSED):
            return []
        st.turn.awaiting_words = False
        log.info("turn words", call_id=ctx.call_id, text=event.text, p_complete=round(p, 3), waited=True)
        if p >= self.params.semantic_complete:
            return self._emit_turn(st, end_turn(st.turn, self.params, "smart_turn+words"), event, ctx, [0])
        st.turn.hold_ms = self.params.semantic_hold_ms
        return []

    def _words_agree(self, st: CallAudio, tev: TurnEvent, turn: int, ctx: CallContext) -> bool:
        """Smart Turn said the turn is over: may it end now?  False holds the turn (the words read
        unfinished) or leaves it waiting for the transcript that is being decoded."""
        if self.completeness is None:
            return True
        if st.heard is not None and st.heard[:2] == (turn, tev.end_ms):
            p = st.heard[2]
            if p >= self.params.semantic_complete:
                return True
            if tev.kind == "early":
                return False  # the pause asks again
            st.turn.hold_ms = self.params.semantic_hold_ms
            log.info("turn held: words unfinished", call_id=ctx.call_id, turn=turn, p_complete=round(p, 3))
            return False
        decoding = (st.last_partial == (turn, tev.start_ms, tev.end_ms)
                    and tev.end_ms - tev.start_ms >= MIN_PARTIAL_MS)  # shorter partials are not decoded
        if decoding:
            # at the early point the pause asks again; at the pause, the words decide when they come
            st.turn.awaiting_words = tev.kind == "pause"
            return False
        return True

    # --- caller audio ---------------------------------------------------------------------

    def _caller_frame(self, st: CallAudio, frame: ev.AudioFrame, ctx: CallContext) -> Any:
        """A generator: yields (Silero state, window) for each 32 ms window the frame completes,
        is sent that window's speech probability, and returns the frame's outputs."""
        if len(frame.payload) != ev.FRAME_BYTES[frame.codec]:
            st.bad_frames += 1
            log.warning("bad audio frame skipped", call_id=ctx.call_id, frame_index=frame.frame_index,
                        payload_bytes=len(frame.payload), codec=frame.codec, bad_frames=st.bad_frames)
            return []
        if frame.frame_index < st.next_frame:
            st.late_frames += 1  # a duplicate or re-ordered frame: its time has passed
            return []
        gap = frame.frame_index - st.next_frame
        if gap > MAX_GAP_FRAMES:
            st.bad_frames += 1
            log.warning("audio frame index jumped; realigning", call_id=ctx.call_id, gap=gap)
            gap = MAX_GAP_FRAMES
        pcm = self._to_pcm16k(st, frame)
        if gap:
            pcm = np.concatenate([np.zeros(gap * PIPELINE_RATE * ev.FRAME_MS // 1000, dtype=np.int16), pcm])
        st.next_frame = frame.frame_index + 1
        st.ring.append(pcm)
        st.pending = np.concatenate([st.pending, pcm])
        out: list[Emit] = []
        index = [0]
        while len(st.pending) >= WINDOW:
            window, st.pending = st.pending[:WINDOW], st.pending[WINDOW:]
            prob = yield (st.silero, window.astype(np.float32) / 32768.0)
            st.samples_scored += WINDOW
            now_ms = st.samples_scored * 1000 // PIPELINE_RATE
            self._maybe_reset_silero(st, prob)
            for tev in step(st.turn, prob, now_ms, self.params):
                out += self._emit_turn(st, tev, frame, ctx, index)
        return out

    def _to_pcm16k(self, st: CallAudio, frame: ev.AudioFrame) -> np.ndarray:
        if frame.codec == "pcm16k":
            return np.frombuffer(frame.payload, dtype="<i2").astype(np.int16)
        if st.resampler is None:
            st.resampler = StreamResampler(PHONE_RATE, PIPELINE_RATE)
        return st.resampler.push(ulaw_decode(frame.payload))

    def _maybe_reset_silero(self, st: CallAudio, prob: float) -> None:
        if st.turn.phase.value == "quiet" and prob < self.params.silence_threshold:
            st.quiet_since_reset_ms += self.params.window_ms
            if st.quiet_since_reset_ms >= SILERO_RESET_MS:
                st.silero.reset()
                st.quiet_since_reset_ms = 0
        else:
            st.quiet_since_reset_ms = 0

    # --- turn events -> bus events --------------------------------------------------------

    def _emit_turn(self, st: CallAudio, tev: TurnEvent, cause: Any, ctx: CallContext, index: list[int]) -> list[Emit]:
        turn = st.caller_turns + 1

        def make(cls: type, **fields: Any) -> Any:
            index[0] += 1
            return self.make(cls, cause, ctx, index[0], turn=turn, **fields)

        if tev.kind == "started":
            out = [Emit(topics.SPEECH, make(ev.SpeechStarted, start_ms=tev.start_ms))]
            if st.bot_reply and st.bot_reply not in st.barged and st.media_ms < st.bot_until_ms:
                heard = max(0, st.media_ms - st.bot_start_ms)
                st.barged.add(st.bot_reply)
                st.bot_until_ms = st.media_ms
                out.append(Emit(topics.CONTROL, make(ev.BargeIn, reply_event_id=st.bot_reply, heard_ms=heard)))
                log.info("barge-in", call_id=ctx.call_id, reply=st.bot_reply, heard_ms=heard)
            elif self._reply_pending(st, tev.start_ms):
                # no reply_event_id: every reply to an earlier turn that has not started playing
                out.append(Emit(topics.CONTROL, make(ev.BargeIn, reply_event_id=None, heard_ms=0)))
                log.info("caller went on before the reply: pending reply cancelled", call_id=ctx.call_id,
                         after_ms=tev.start_ms - (st.last_end_ms or 0))
                # ... and this turn's audio reaches back over the cut, so the ASR and the NLU get
                # the whole sentence, not its second half alone
                st.turn.start_ms = st.last_start_ms
                st.retracts_turn = st.caller_turns  # ... and takes that turn back (NLU, DST)
            return out
        if tev.kind in ("early", "pause"):
            # The partial leaves at the early point (~100 ms of silence), before the pause
            # that asks Smart Turn: an ASR in another thread or process decodes it while the
            # turn-taker waits out the rest of the pause and runs Smart Turn; if the turn is
            # over, the final segment has the same audio and the ASR reuses that decode.
            out = []
            if st.last_partial != (turn, tev.start_ms, tev.end_ms):
                st.last_partial = (turn, tev.start_ms, tev.end_ms)
                partial = self._segment(st, tev, make, final=False)
                st.partial_id = partial.event_id
                out.append(Emit(topics.SPEECH, partial))
            if self.smart_turn is not None and (tev.kind == "pause" or self.params.smart_turn_early):
                bar = self.params.turn_complete if tev.kind == "pause" else self.params.early_turn_complete
                if st.turn.asked_end_ms == tev.end_ms and st.turn.asked_p is not None:
                    p = st.turn.asked_p  # the same audio was scored at the early point: same answer
                else:
                    audio = st.ring.slice(_sample(tev.start_ms), _sample(tev.end_ms))
                    p = self.smart_turn.complete_probability(audio)
                    st.turn.asked_end_ms, st.turn.asked_p = tev.end_ms, p
                if p >= bar and self._words_agree(st, tev, turn, ctx):
                    out += self._emit_turn(st, end_turn(st.turn, self.params, "smart_turn"), cause, ctx, index)
            return out
        if tev.kind == "end":
            seg = self._segment(st, tev, make, final=True, end_reason=tev.reason or None)
            if st.retracts_turn:
                seg = seg.model_copy(update={"retracts_turn": st.retracts_turn})
                st.retracts_turn = 0
            st.caller_turns += 1
            st.last_start_ms, st.last_end_ms = tev.start_ms, tev.end_ms
            return [Emit(topics.SPEECH, seg)]
        return []

    def _reply_pending(self, st: CallAudio, start_ms: int) -> bool:
        """The caller starts again soon after their last turn, and no reply to it has reached
        audio out since it ended (frames already there are a barge-in on that reply instead)."""
        if st.last_end_ms is None or start_ms - st.last_end_ms > self.params.pending_reply_cancel_ms:
            return False
        return st.bot_reply is None or st.bot_start_ms < st.last_end_ms

    def _segment(self, st: CallAudio, tev: TurnEvent, make: Any, final: bool,
                 end_reason: str | None = None) -> ev.SpeechSegment:
        audio = st.ring.slice(_sample(tev.start_ms), _sample(tev.end_ms))
        return make(ev.SpeechSegment, start_ms=tev.start_ms, end_ms=tev.end_ms, final=final,
                    audio_pcm16=audio.astype("<i2").tobytes(), end_reason=end_reason)

    # --- the bot's audio ------------------------------------------------------------------

    def _track_bot(self, st: CallAudio, frame: ev.AudioFrame) -> None:
        if frame.reply_event_id in st.barged:
            return
        if frame.reply_event_id != st.bot_reply:
            st.bot_reply = frame.reply_event_id
            st.bot_start_ms = max(st.media_ms, st.bot_until_ms)
            st.bot_until_ms = st.bot_start_ms
        st.bot_until_ms += ev.FRAME_MS


def _sample(ms: int) -> int:
    return ms * PIPELINE_RATE // 1000
