"""The semantic end-of-turn signal (issue 17): a completeness classifier over the partial
transcript, and the VAD stage holding a Smart Turn end while the words read unfinished."""

from __future__ import annotations

import numpy as np

from agent import events as ev
from agent.speech import completeness as cp
from agent.speech.frames import pcm_to_ulaw_frames
from agent.speech.turns import TurnParams, TurnState, step
from agent.stages.base import CallContext
from agent.stages.vad import VadStage

LINES = ["你们的云服务器多少钱一个月", "我想了解一下你们的企业邮箱", "可以给我发一份报价吗",
         "你们有没有试用版", "我们公司大概两百个人", "这个价格有点贵了", "不需要了谢谢",
         "能不能便宜一点", "我要先问一下老板", "你们支持私有化部署吗"]


def test_a_tiny_model_trained_on_whole_and_cut_lines_tells_them_apart():
    model = cp.train(cp.examples(LINES * 3, cuts_per_line=3), epochs=200)
    whole = [model.probability(t) for t in LINES]
    cut = [model.probability(t[: len(t) // 2]) for t in LINES]
    assert min(whole) > 0.5 > max(cut)
    assert cp.accuracy(model, cp.examples(LINES, 2, seed=3))["accuracy"] >= 0.8


def test_scoring_ignores_punctuation_spaces_and_digit_values(tmp_path):
    model = cp.train(cp.examples(LINES), epochs=50)
    assert model.probability("可以给我发一份报价吗？") == model.probability("可以 给我发一份报价吗")
    assert cp.normalise("两百个人，500并发") == "两百个人000并发"
    model.save(tmp_path / "m.npz")
    again = cp.CompletenessModel.load(tmp_path / "m.npz")
    assert abs(again.probability(LINES[0]) - model.probability(LINES[0])) < 1e-2  # float16 weights
    assert again.meta["examples"] == len(cp.examples(LINES))


def test_the_shipped_model_reads_requests_short_or_long_as_finished_and_cut_ones_as_not():
    model = cp.CompletenessModel.load(cp.default_path())
    assert model.probability("你们的云服务器多少钱一个月") > 0.7
    assert model.probability("多少钱") > 0.7  # a quick reply is not held for being short
    assert model.probability("我们公司想要") < 0.3
    assert model.probability("你们的价格是") < 0.3
    assert model.weights.shape == (cp.N_BUCKETS,)


# --- the turn state machine ------------------------------------------------------------------


def _run(state_setup, probs, p=TurnParams()):
    state, out = TurnState(), []
    for i, prob in enumerate(probs):
        for e in step(state, prob, (i + 1) * p.window_ms, p):
            out.append((e.kind, e.reason, (i + 1) * p.window_ms))
            if e.kind == "pause":
                state_setup(state)
    return out


def test_a_held_turn_ends_at_the_hold_and_an_awaited_one_at_the_wait():
    p = TurnParams(semantic_hold_ms=800, semantic_wait_ms=400)
    held = _run(lambda s: setattr(s, "hold_ms", p.semantic_hold_ms), [0.9] * 30 + [0.0] * 60, p)
    assert held[-1][:2] == ("end", "semantic_hold")
    waited = _run(lambda s: setattr(s, "awaiting_words", True), [0.9] * 30 + [0.0] * 60, p)
    assert waited[-1][:2] == ("end", "smart_turn_no_words")
    assert waited[-1][2] < held[-1][2] < 30 * 32 + p.max_silence_ms


def test_speech_after_a_hold_clears_it():
    state, p = TurnState(), TurnParams(semantic_hold_ms=800)
    kinds = []
    for i, prob in enumerate([0.9] * 30 + [0.0] * 10 + [0.9] * 10):
        for e in step(state, prob, (i + 1) * 32, p):
            kinds.append(e.kind)
            if e.kind == "pause":
                state.hold_ms = p.semantic_hold_ms
    assert kinds[-1] == "resumed" and state.hold_ms == 0


# --- the VAD stage with words ----------------------------------------------------------------


class _LoudVad:
    """Speech is where the window is loud: the stage's logic without the Silero model."""

    def probability(self, state, window):
        return 0.95 if float(np.sqrt(np.mean(np.square(window)))) > 0.02 else 0.0


class _SureSmartTurn:
    def complete_probability(self, pcm16):
        return 0.99  # Smart Turn calls every pause the end: the mid-sentence one too


class _Words:
    def probability(self, text):
        return 0.9 if text.endswith("吗") else 0.1


def _speech(seconds, rng):
    return (rng.standard_normal(int(seconds * 16000)) * 6000).astype(np.int16)


def _call(words, transcribe, delay_frames=5, audio=None):
    """Frames of `audio` into the stage; each partial segment is answered by a TranscriptPartial
    `delay_frames` later with transcribe(segment) as its text (None: never answered)."""
    rng = np.random.default_rng(1)
    z = lambda s: np.zeros(int(s * 16000), dtype=np.int16)  # noqa: E731
    audio = audio if audio is not None else np.concatenate([z(0.4), _speech(1.0, rng), z(0.6), _speech(0.8, rng), z(2.0)])
    stage = VadStage(_LoudVad(), _SureSmartTurn(), TurnParams(semantic_hold_ms=1000, semantic_wait_ms=600),
                     completeness=words)
    ctx = CallContext(call_id="c1", state=stage.new_state("c1"))
    out, due = [], []
    for i, payload in enumerate(pcm_to_ulaw_frames(audio, 16000)):
        for at, tp in [d for d in due if d[0] == i]:
            out += stage.handle(tp, ctx)
        got = stage.handle(ev.AudioFrame(call_id="c1", codec="pcmu8k", frame_index=i, payload=payload), ctx)
        for e in got:
            seg = e.event
            if isinstance(seg, ev.SpeechSegment) and not seg.final and transcribe(seg) is not None:
                due.append((i + delay_frames, ev.TranscriptPartial(call_id="c1", stage="asr", turn=seg.turn,
                                                                    caused_by=seg.event_id, text=transcribe(seg))))
        out += got
    return stage, [e.event for e in out if isinstance(e.event, ev.SpeechSegment) and e.event.final]


def _text(seg):  # the first half of the sentence, then all of it
    return "我想了解一下你们的" if seg.end_ms < 1600 else "我想了解一下你们的企业邮箱有试用吗"


def test_smart_turn_alone_cuts_the_caller_at_a_mid_sentence_pause():
    stage, finals = _call(None, _text)
    assert topics_read(stage) == ("audio.in", "audio.out", "call.control")
    assert len(finals) == 2
    # the caller went on before any reply: the second turn reaches back over the cut and takes
    # the first back, so the NLU and the DST read the sentence once, whole (tests/test_turn_retraction.py)
    first, second = finals
    assert first.retracts_turn is None and second.retracts_turn == first.turn
    assert second.start_ms == first.start_ms and second.end_ms > first.end_ms


def test_unfinished_words_hold_the_turn_through_the_pause():
    stage, finals = _call(_Words(), _text)
    assert "transcripts" in topics_read(stage)
    (final,) = finals
    assert final.start_ms < 400 and final.end_ms > 2700  # one turn, both halves


def test_finished_words_end_the_turn_at_the_pause_or_when_they_arrive():
    audio = np.concatenate([np.zeros(6400, dtype=np.int16), _speech(1.0, np.random.default_rng(2)),
                            np.zeros(32000, dtype=np.int16)])
    for delay in (1, 12):  # in before the pause / decoded after it: the end waits for the words
        _, (final,) = _call(_Words(), lambda seg: "有试用吗", delay, audio)
        assert final.end_ms < 1600


def test_words_that_never_come_leave_the_end_to_smart_turn_after_the_wait():
    audio = np.concatenate([np.zeros(6400, dtype=np.int16), _speech(1.0, np.random.default_rng(2)),
                            np.zeros(32000, dtype=np.int16)])
    _, (final,) = _call(_Words(), lambda seg: None, audio=audio)
    assert final.end_ms < 1600


def topics_read(stage):
    return tuple(stage.reads)
