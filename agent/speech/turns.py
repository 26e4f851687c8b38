"""Turn-taking as a pure state machine over VAD windows.

Input: one speech probability per 32 ms window (Silero) and, when asked, whether the audio so
far sounds finished (Smart Turn).  Output: what happened - speech started, a pause (decode a
partial; ask Smart Turn), end of turn.  A short pause in "我要…嗯…一千并发的" is a pause,
not an end: the turn ends when Smart Turn says the turn is complete, or after `max_silence_ms`
of silence whatever it says (the fallback), or at `max_turn_ms`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Phase(str, Enum):
    QUIET = "quiet"
    SPEAKING = "speaking"
    PAUSED = "paused"


@dataclass(frozen=True)
class TurnParams:
    speech_threshold: float = 0.5
    silence_threshold: float = 0.35
    start_ms: int = 96  # speech needed before a turn starts (3 windows): also the barge-in delay
    # silence after which the audio so far is sent for a partial decode: shorter than the pause,
    # so that the decode runs while the turn-taker is still waiting for the pause (media time
    # the CPU would otherwise spend idle) and the final reuses it when the pause ends the turn
    early_ms: int = 96
    pause_ms: int = 192  # silence that makes a pause
    # True: Smart Turn is first asked at the early point (~96 ms of silence), not at the pause.
    # The audio it hears ends tail_ms after the last speech window either way, so a turn that
    # ends at the pause would end ~96 ms sooner with the same score.  But the early point also
    # falls in 100-190 ms gaps between words, which the pause never asks about, and Smart Turn
    # scores Chinese mid-sentence cuts >= 0.7 on 60 % of the shared clips: measured with
    # bench/bench_endpointing.py, early asking cut 80 ms off the p50 and raised premature
    # endpoints (0.41 -> 0.47 of turns at the 0.95 bar below), so it is off by default.
    smart_turn_early: bool = False
    early_turn_complete: float = 0.95  # the bar at the early point (at the pause: turn_complete)
    max_silence_ms: int = 1200  # end the turn after this much silence even if Smart Turn says no
    max_turn_ms: int = 20000  # a monologue is cut into turns this long
    preroll_ms: int = 160  # audio kept before the detected start (Silero reacts late)
    tail_ms: int = 96  # audio kept after the last speech window
    # Smart Turn probability at or above which the pause ends the turn. Not the model's 0.5:
    # a mid-sentence pause can score right at the middle (0.45 on two shared clips), where a
    # different CPU, onnxruntime build or a 32 ms shift of Silero's last speech window moves it
    # to either side and the caller is cut off on one machine but not another. Below the bar the
    # turn ends only at max_silence_ms, so an unsure score costs latency, never a cut-off;
    # finished sentences score 0.85-0.99 (docs/speech.md), well clear of it.
    turn_complete: float = 0.7
    # Caller speech that starts within this long after the end of their last turn, before any of
    # the bot's reply to it has reached audio out, cancels that reply: the end was premature (the
    # caller paused and goes on), and a reply played now would talk over them and then answer
    # half a sentence.  Their new turn gets the reply instead.
    pending_reply_cancel_ms: int = 1500
    window_ms: int = 32
    # The semantic signal (agent/speech/completeness.py, issue 17): when Smart Turn says the
    # turn is over, the words of the partial transcript must agree.  Below `semantic_complete`
    # the turn is held until `semantic_hold_ms` of silence (or the caller goes on); while the
    # partial's transcript is still being decoded the end waits for it, up to
    # `semantic_wait_ms` of silence, then Smart Turn alone decides (as without the signal).
    # 0.5 / 800 ms chosen on the even-numbered shared clips (bench/bench_endpointing.py --words):
    # 1000 ms held two more cut-offs of 60 there but put 200 ms on the endpoint p95.
    semantic_complete: float = 0.5
    semantic_hold_ms: int = 800
    semantic_wait_ms: int = 600


@dataclass
class TurnState:
    phase: Phase = Phase.QUIET
    speech_run_ms: int = 0
    silence_ms: int = 0
    start_ms: int = 0  # media time of the turn's start (incl. preroll)
    last_speech_ms: int = 0  # media time at the end of the last speech window
    asked_end_ms: int = -1  # end of the audio Smart Turn last scored in this turn (not asked twice on the same audio)
    asked_p: float | None = None  # and what it said
    early_sent: bool = False  # an "early" event was sent for the current run of silence
    # set by the stage at a pause (the semantic signal): end at this much silence; 0 = not held
    hold_ms: int = 0
    # set by the stage when Smart Turn said "finished" and the transcript is not in yet:
    # end at semantic_wait_ms of silence unless the transcript decides first
    awaiting_words: bool = False


@dataclass(frozen=True)
class TurnEvent:
    kind: str  # "started" | "early" | "pause" | "resumed" | "end"
    start_ms: int
    end_ms: int
    reason: str = ""


def step(state: TurnState, prob: float, now_ms: int, p: TurnParams) -> list[TurnEvent]:
    """Advance by one window ending at media time `now_ms` with speech probability `prob`."""
    out: list[TurnEvent] = []
    speech = prob >= p.speech_threshold
    silence = prob < p.silence_threshold
    if state.phase is Phase.QUIET:
        state.speech_run_ms = state.speech_run_ms + p.window_ms if speech else 0
        if state.speech_run_ms >= p.start_ms:
            state.phase = Phase.SPEAKING
            state.start_ms = max(0, now_ms - state.speech_run_ms - p.preroll_ms)
            state.last_speech_ms = now_ms
            state.silence_ms = 0
            out.append(TurnEvent("started", state.start_ms, now_ms))
        return out
    if not silence:
        if speech:
            state.last_speech_ms = now_ms
        if state.phase is Phase.PAUSED and speech:
            state.phase = Phase.SPEAKING
            out.append(TurnEvent("resumed", state.start_ms, now_ms))
        if speech:
            state.silence_ms = 0
            state.early_sent = False
            state.hold_ms, state.awaiting_words = 0, False  # the caller went on: the next pause decides afresh
    else:
        state.silence_ms += p.window_ms
    # Early needs early_ms of silence (>= tail_ms, so that the partial's audio is the final's).
    # Tried: counting from the last confident speech window instead (fires ~90 ms sooner, but
    # also between words of fluent speech): p50 560 ms instead of 524 ms.
    if (state.phase is Phase.SPEAKING and not state.early_sent
            and max(p.early_ms, p.tail_ms) <= state.silence_ms < p.pause_ms):
        state.early_sent = True
        out.append(TurnEvent("early", state.start_ms, min(now_ms, state.last_speech_ms + p.tail_ms)))
    if state.phase is Phase.SPEAKING and state.silence_ms >= p.pause_ms:
        state.phase = Phase.PAUSED
        out.append(TurnEvent("pause", state.start_ms, min(now_ms, state.last_speech_ms + p.tail_ms)))
    elif state.phase is Phase.PAUSED and state.awaiting_words and state.silence_ms >= p.semantic_wait_ms:
        out.append(end_turn(state, p, "smart_turn_no_words"))  # the decode is late: Smart Turn decides
    elif state.phase is Phase.PAUSED and 0 < state.hold_ms <= state.silence_ms:
        out.append(end_turn(state, p, "semantic_hold"))
    elif state.phase is Phase.PAUSED and state.silence_ms >= p.max_silence_ms:
        out.append(end_turn(state, p, "max_silence"))
    elif now_ms - state.start_ms >= p.max_turn_ms:
        out.append(end_turn(state, p, "max_turn"))
    return out


def end_turn(state: TurnState, p: TurnParams, reason: str) -> TurnEvent:
    ev = TurnEvent("end", state.start_ms, state.last_speech_ms + p.tail_ms, reason)
    state.phase = Phase.QUIET
    state.speech_run_ms = 0
    state.silence_ms = 0
    state.early_sent = False
    state.hold_ms, state.awaiting_words = 0, False
    return ev
