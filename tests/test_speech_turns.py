"""Turn-taking: when a caller's turn starts and ends, pauses that are not ends, barge-in."""

from __future__ import annotations

import numpy as np
import pytest

from agent import events as ev
from agent import topics
from agent.speech.frames import pcm_to_ulaw_frames
from agent.speech.turns import TurnParams, TurnState, step
from agent.stages.base import CallContext
from tests.speech_helpers import load_clip, need_pipecat_models


def feed(probs, params=TurnParams()):
    state, events = TurnState(), []
    for i, p in enumerate(probs):
        events += [(e.kind, e.reason) for e in step(state, p, (i + 1) * params.window_ms, params)]
    return events


def test_speech_then_silence_is_one_turn_that_ends_at_the_max_silence_fallback():
    events = feed([0.0] * 5 + [0.9] * 30 + [0.0] * 60)
    assert events == [("started", ""), ("early", ""), ("pause", ""), ("end", "max_silence")]


def test_a_blip_shorter_than_the_start_time_is_not_speech():
    assert feed([0.0] * 5 + [0.9, 0.9] + [0.0] * 60) == []


def test_a_short_pause_then_more_speech_stays_in_the_same_turn():
    events = feed([0.9] * 20 + [0.0] * 10 + [0.9] * 20 + [0.0] * 60)
    assert events == [("started", ""), ("early", ""), ("pause", ""), ("resumed", ""), ("early", ""), ("pause", ""), ("end", "max_silence")]


def test_a_monologue_is_cut_at_max_turn_length():
    p = TurnParams(max_turn_ms=3200)
    assert ("end", "max_turn") in feed([0.9] * 200, p)


# --- the VAD stage on real speech ----------------------------------------------------------


@pytest.fixture(scope="module")
def vad_models():
    from agent.speech.models import load_silero, load_smart_turn

    silero, smart = need_pipecat_models()
    return load_silero(str(silero)), load_smart_turn(str(smart))


def run_stage(stage, pcm, ctx=None, first_index=0):
    ctx = ctx or CallContext(call_id="c1", state=stage.new_state("c1"))
    out = []
    for i, payload in enumerate(pcm_to_ulaw_frames(pcm, 16000)):
        out += stage.handle(ev.AudioFrame(call_id="c1", codec="pcmu8k", frame_index=first_index + i, payload=payload), ctx)
    return out, ctx


def finals(out):
    return [e.event for e in out if isinstance(e.event, ev.SpeechSegment) and e.event.final]


def with_pause(name: str, pause_s: float = 0.8) -> np.ndarray:
    a = load_clip(name)
    cut = len(a) // 2
    z = lambda s: np.zeros(int(s * 16000), dtype=np.int16)  # noqa: E731
    return np.concatenate([z(0.5), a[:cut], z(pause_s), a[cut:], z(2.0)])


@pytest.mark.parametrize("clip", ["BAC009S0764W0121.wav", "BAC009S0764W0122.wav"])
def test_a_mid_sentence_pause_does_not_cut_the_caller_off(vad_models, clip):
    from agent.stages.vad import VadStage

    silero, smart = vad_models
    audio = with_pause(clip)
    # Silence alone (500 ms) would end the turn in the pause ...
    silence_only, _ = run_stage(VadStage(silero, None, TurnParams(max_silence_ms=500)), audio)
    assert len(finals(silence_only)) == 2
    # ... and the log says why each turn ended, for the QA reviewer asking "why was I cut off?"
    assert [f.end_reason for f in finals(silence_only)] == ["max_silence", "max_silence"]
    # ... Smart Turn hears that the sentence is unfinished and waits: one turn, whole sentence.
    out, _ = run_stage(VadStage(silero, smart), audio)
    (final,) = finals(out)
    assert final.end_reason in ("smart_turn", "max_silence")
    assert final.turn == 1 and final.start_ms < 900 and final.end_ms > (len(audio) / 16 - 2000) - 400
    assert len(final.audio_pcm16) == (final.end_ms - final.start_ms) * 32
    # the pause still produced a partial segment for the ASR to decode early
    assert any(isinstance(e.event, ev.SpeechSegment) and not e.event.final for e in out)


class _Shifted:
    """A model whose output is moved by `delta`: what another CPU's kernels, another
    onnxruntime build or a 32 ms shift of the audio does to a probability, only larger."""

    def __init__(self, inner, delta):
        self.inner, self.delta = inner, delta

    def probability(self, state, window):
        return min(1.0, max(0.0, self.inner.probability(state, window) + self.delta))

    def complete_probability(self, pcm16):
        return min(1.0, max(0.0, self.inner.complete_probability(pcm16) + self.delta))


@pytest.mark.parametrize("vad_shift,turn_shift", [(0.03, 0.1), (-0.03, -0.1), (0.03, -0.1), (-0.03, 0.1)])
def test_turn_decisions_hold_when_the_models_scores_move_a_little(vad_models, vad_shift, turn_shift):
    """The same caller on another machine: every Silero score moved by 0.03 and every Smart
    Turn score by 0.1 changes neither where the turn ends nor how many turns there are."""
    from agent.stages.vad import VadStage

    silero, smart = vad_models
    params = TurnParams()
    stage = VadStage(_Shifted(silero, vad_shift), _Shifted(smart, turn_shift))
    for clip in ("BAC009S0764W0121.wav", "BAC009S0764W0122.wav"):
        out, _ = run_stage(stage, with_pause(clip))
        assert len(finals(out)) == 1, clip
    # ... and a finished sentence still ends at the first pause, not at the silence fallback
    ctx = CallContext(call_id="c1", state=stage.new_state("c1"))
    audio = np.concatenate([np.zeros(8000, dtype=np.int16), load_clip("BAC009S0764W0121.wav"),
                            np.zeros(32000, dtype=np.int16)])
    for i, payload in enumerate(pcm_to_ulaw_frames(audio, 16000)):
        got = finals(stage.handle(ev.AudioFrame(call_id="c1", codec="pcmu8k", frame_index=i, payload=payload), ctx))
        if got:
            heard_ms = (i + 1) * ev.FRAME_MS
            assert heard_ms - got[0].end_ms < params.max_silence_ms - params.tail_ms - 200
            break
    else:
        raise AssertionError("the turn never ended")


def test_corrupt_and_truncated_frames_are_counted_and_skipped(vad_models):
    from agent.stages.vad import VadStage

    stage = VadStage(*vad_models)
    ctx = CallContext(call_id="c1", state=stage.new_state("c1"))
    good = b"\xff" * 160
    bad = [
        ev.AudioFrame(call_id="c1", codec="pcmu8k", frame_index=0, payload=b"\x00" * 37),  # truncated
        ev.AudioFrame(call_id="c1", codec="pcm16k", frame_index=1, payload=b"\x00" * 641),  # odd size
        ev.AudioFrame(call_id="c1", codec="pcmu8k", frame_index=2, payload=b""),
    ]
    for frame in bad:
        assert stage.handle(frame, ctx) == []
    assert ctx.state.bad_frames == 3
    stage.handle(ev.AudioFrame(call_id="c1", codec="pcmu8k", frame_index=3, payload=good), ctx)
    stage.handle(ev.AudioFrame(call_id="c1", codec="pcmu8k", frame_index=3, payload=good), ctx)  # repeat
    assert ctx.state.late_frames == 1 and ctx.state.next_frame == 4
    # and the stage still finds speech afterwards
    out, _ = run_stage(stage, with_pause("BAC009S0764W0121.wav"), ctx, first_index=4)
    assert len(finals(out)) == 1


def test_caller_speech_while_the_bot_talks_is_a_barge_in(vad_models):
    from agent.stages.vad import VadStage

    stage = VadStage(*vad_models)
    ctx = CallContext(call_id="c1", state=stage.new_state("c1"))
    # 1 s of line silence, then the bot's 5 s reply arrives on audio.out ...
    run_stage(stage, np.zeros(16000, dtype=np.int16), ctx)
    reply_id = ev.new_event_id()
    for i in range(250):
        stage.handle(ev.AudioFrame(call_id="c1", stage="tts", codec="pcmu8k", frame_index=i,
                                   reply_event_id=reply_id, payload=b"\xff" * 160), ctx)
    # ... and the caller starts talking at once (the clip has ~0.5 s of leading silence)
    out, _ = run_stage(stage, load_clip("BAC009S0764W0121.wav"), ctx, first_index=50)
    barge = [e for e in out if isinstance(e.event, ev.BargeIn)]
    assert len(barge) == 1 and barge[0].topic == topics.CONTROL
    assert barge[0].event.reply_event_id == reply_id
    assert 300 <= barge[0].event.heard_ms <= 1200
    # speaking again after the bot has finished is not a barge-in
    out, _ = run_stage(stage, np.concatenate([np.zeros(16000 * 6, dtype=np.int16), load_clip("BAC009S0764W0122.wav")]),
                       ctx, first_index=ctx.state.next_frame)
    assert not [e for e in out if isinstance(e.event, ev.BargeIn)]


def test_the_partial_leaves_before_the_pause_with_the_same_audio_as_the_final():
    """The caller stops: after ~100 ms of silence the audio goes to the ASR (early), the pause
    follows later, and the turn's final covers exactly the same span, so its decode is reused."""
    p = TurnParams()
    state, seen = TurnState(), []
    for i, prob in enumerate([0.9] * 30 + [0.0] * 60):
        seen += [(e, (i + 1) * p.window_ms) for e in step(state, prob, (i + 1) * p.window_ms, p)]
    early = next((e, t) for e, t in seen if e.kind == "early")
    pause = next((e, t) for e, t in seen if e.kind == "pause")
    end = next(e for e, _ in seen if e.kind == "end")
    assert early[1] < pause[1]
    assert (early[0].start_ms, early[0].end_ms) == (end.start_ms, end.end_ms)


class _SureSmartTurn:
    """A Smart Turn that always gives the same score and counts its calls."""

    def __init__(self, p: float) -> None:
        self.p, self.calls = p, 0

    def complete_probability(self, pcm16):
        self.calls += 1
        return self.p


def _end_delay_ms(vad_models, smart, params):
    """Media time from the end of the clip's speech to the frame that carried the final segment."""
    from agent.stages.vad import VadStage

    silero, _ = vad_models
    audio = np.concatenate([np.zeros(8000, dtype=np.int16), load_clip("BAC009S0764W0122.wav"), np.zeros(32000, dtype=np.int16)])
    stage = VadStage(silero, smart, params)
    ctx = CallContext(call_id="c1", state=stage.new_state("c1"))
    for i, payload in enumerate(pcm_to_ulaw_frames(audio, 16000)):
        for e in stage.handle(ev.AudioFrame(call_id="c1", codec="pcmu8k", frame_index=i, payload=payload), ctx):
            if isinstance(e.event, ev.SpeechSegment) and e.event.final:
                return (i + 1) * 20 - e.event.end_ms
    raise AssertionError("the turn never ended")


def test_asked_early_a_sure_smart_turn_ends_the_turn_about_a_pause_sooner(vad_models):
    at_pause = _end_delay_ms(vad_models, _SureSmartTurn(0.99), TurnParams())
    early = _end_delay_ms(vad_models, _SureSmartTurn(0.99), TurnParams(smart_turn_early=True))
    assert early <= at_pause - 64  # the pause is 96 ms after the early point (to a window)


def test_asked_early_an_unsure_smart_turn_is_not_asked_again_at_the_pause(vad_models):
    unsure = _SureSmartTurn(0.8)  # above the pause's bar, below the early one
    early = _end_delay_ms(vad_models, unsure, TurnParams(smart_turn_early=True))
    at_pause = _end_delay_ms(vad_models, _SureSmartTurn(0.8), TurnParams())
    assert early == at_pause  # the turn ends at the pause, as without early asking
    assert unsure.calls == 1  # the same audio scored once


def test_a_caller_who_goes_on_before_the_reply_starts_cancels_the_reply_to_half_a_sentence(vad_models):
    """The turn ended at a long pause; the caller goes on before any of the bot's answer has
    reached audio out: that answer (to half a sentence) must not start over them later."""
    from agent.stages.vad import VadStage

    params = TurnParams(max_silence_ms=600)  # the pause surely ends the turn, whatever Smart Turn says
    stage = VadStage(*vad_models, params=params)
    a = load_clip("BAC009S0764W0121.wav")
    z = lambda s: np.zeros(int(s * 16000), dtype=np.int16)  # noqa: E731
    first_out, ctx = run_stage(stage, np.concatenate([z(0.3), a[: len(a) // 2], z(0.75)]))
    assert len(finals(first_out)) == 1 and finals(first_out)[0].turn == 1
    out, _ = run_stage(stage, np.concatenate([a[len(a) // 2 :], z(1.0)]), ctx, first_index=ctx.state.next_frame)
    (barge,) = [e.event for e in out if isinstance(e.event, ev.BargeIn)]
    assert barge.reply_event_id is None and barge.turn == 2  # every reply to turn 1 goes
    (whole,) = finals(out)
    assert whole.turn == 2
    # the new turn's audio reaches back over the cut: the ASR hears the whole sentence
    first = finals(first_out)[0]
    assert whole.start_ms == first.start_ms and whole.end_ms > first.end_ms + 1000


def test_speaking_again_long_after_a_turn_that_got_no_reply_cancels_nothing(vad_models):
    from agent.stages.vad import VadStage

    stage = VadStage(*vad_models, params=TurnParams(max_silence_ms=600))
    z = lambda s: np.zeros(int(s * 16000), dtype=np.int16)  # noqa: E731
    out, ctx = run_stage(stage, np.concatenate([z(0.3), load_clip("BAC009S0764W0121.wav"), z(3.0)]))
    assert len(finals(out)) == 1
    out, _ = run_stage(stage, np.concatenate([load_clip("BAC009S0764W0122.wav"), z(1.0)]), ctx,
                       first_index=ctx.state.next_frame)
    assert not [e for e in out if isinstance(e.event, ev.BargeIn)] and len(finals(out)) == 1
