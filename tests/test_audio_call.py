"""User stories on audio: a caller's recorded voice goes in, the bot's voice comes out.

The callers are real recordings (AISHELL-1 read news sentences from ../shared/data/speech):
not sales talk, so these tests assert that turns happen, transcripts are right-ish, replies
are spoken, and barge-in works - not what the bot says."""

from __future__ import annotations

import wave
from pathlib import Path

import pytest

from agent import events as ev
from agent import topics
from agent.calllog import CallLog
from agent.pipeline import AUDIO_STAGES
from agent.settings import Settings
from agent.speech.evaluate import edit_distance
from agent.speech.textnorm import for_cer
from agent.testing import running_pipeline
from tests.speech_helpers import MODELS, clip, manifest, need_espeak, need_pipecat_models


@pytest.fixture
def audio_settings(tmp_path):
    pytest.importorskip("faster_whisper", reason="the speech extra is not installed")
    need_espeak()
    need_pipecat_models()
    manifest()
    return Settings(data_dir=tmp_path, models_dir=MODELS)


async def test_a_caller_talks_then_speaks_over_the_bot_and_the_bot_stops_within_200ms(embedded_bus, audio_settings, tmp_path):
    from agent.audiocall import Utterance, run_audio_call

    first, second = clip("BAC009S0764W0121.wav"), clip("BAC009S0764W0122.wav")
    async with running_pipeline(embedded_bus, audio_settings, AUDIO_STAGES):
        call = await run_audio_call(
            embedded_bus, [first, Utterance(second, barge_in_after_ms=700)], speed=1.0, reply_timeout_s=25,
        )

    # both utterances became caller turns with transcripts close to what was said
    assert [t.turn for t in call.transcripts] == [1, 2]
    refs = {i["audio"].split("/")[-1]: for_cer(i["text"]) for i in manifest()}
    for t, wav in zip(call.transcripts, (first, second)):
        ref = refs[wav.name]
        assert edit_distance(ref, for_cer(t.text)) / len(ref) < 0.5, t.text
    # the bot answered each turn, out loud
    assert [r.turn for r in call.replies] == [1, 2]
    first_reply, second_reply = call.replies
    # the caller spoke over the first reply: one barge-in, for that reply ...
    (barge,) = call.barge_ins
    assert barge.reply_event_id == first_reply.event_id and barge.turn == 2
    # ... and the bot's audio for it stopped within 200 ms of the barge-in
    assert call.stop_latency_ms[first_reply.event_id] <= 200
    played_ms = call.bot_frames_played[first_reply.event_id] * ev.FRAME_MS
    assert abs(played_ms - barge.heard_ms) <= 200  # the VAD's media clock agrees with the playout
    # the second reply was heard in full and has a plausible length for its text
    second_ms = call.bot_frames_played[second_reply.event_id] * ev.FRAME_MS
    assert 80 * len(second_reply.text) < second_ms < 600 * len(second_reply.text)

    # the reply WAV holds what the caller heard
    out = call.write_wav(tmp_path / "reply.wav")
    with wave.open(str(out)) as w:
        assert w.getframerate() == 8000 and w.getnframes() / 8000 > (played_ms + second_ms) / 1000

    # and all of it is in the call log: audio in/out, segments, transcripts, barge-in, replies
    log = CallLog(audio_settings.log_path)
    try:
        events = log.events(call.call_id)
        by_type = {e.type for e in events}
        assert {"audio.frame", "speech.started", "speech.segment", "transcript.final", "call.barge_in",
                "bot.reply", "call.started", "call.ended"} <= by_type
        turns = log.turns(call.call_id)
        assert [t.caller_text for t in turns[:2]] == [t.text for t in call.transcripts]
        assert any(t.barge_in for t in turns)
        started = next(e for e in events if isinstance(e, ev.CallStarted))
        assert started.mode == "audio"
        out_frames = [e for e in log.events(call.call_id, only=[topics.AUDIO_OUT])]
        assert len(out_frames) >= call.bot_frames_played[second_reply.event_id]
    finally:
        log.close()


async def test_the_audio_demo_writes_a_reply_wav(audio_settings, tmp_path):
    from agent.audiocall import run_audio_demo

    settings = audio_settings.model_copy(update={"data_dir": tmp_path / "demo"})
    call_id = await run_audio_demo(settings, [clip("BAC009S0764W0121.wav")], out_wav=tmp_path / "r.wav", speed=3.0)
    with wave.open(str(tmp_path / "r.wav")) as w:
        assert w.getnframes() / w.getframerate() > 1.0
    log = CallLog(settings.log_path)
    try:
        assert log.turns(call_id)[0].reply
    finally:
        log.close()


def test_demo_clips_exist_in_the_shared_data():
    from agent.audiocall import DEMO_CLIPS

    manifest()
    for c in DEMO_CLIPS:
        assert (Path(clip(c.split("/")[-1]))).exists()
