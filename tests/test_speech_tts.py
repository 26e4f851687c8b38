"""The bot's voice: sentence splitting, espeak-ng synthesis, 20 ms mu-law frames on audio.out,
and a reply that stops when the caller barges in."""

from __future__ import annotations

import numpy as np
import pytest

from agent import events as ev
from agent import topics
from agent.speech.tts import HttpTts, TtsError, make_tts, split_sentences, wav_bytes_to_pcm
from agent.stages.base import CallContext
from agent.stages.tts import TtsStage
from tests.speech_helpers import need_espeak

REPLY = "您好，我是云启的小王。请问您现在方便吗？我们的企业版支持一千并发，价格是每月九百九十九元，另外还有私有化部署的方案。"


def test_replies_split_on_cjk_punctuation_with_a_short_first_chunk():
    chunks = split_sentences(REPLY)
    assert "".join(chunks) == REPLY
    assert chunks[0] == "您好，我是云启的小王。" and chunks[1] == "请问您现在方便吗？"
    assert all(len(c) <= 24 for c in chunks[2:]) and len(chunks) >= 4
    assert split_sentences("  ") == []
    assert split_sentences("好的") == ["好的"]


def test_espeak_speaks_mandarin_and_cantonese():
    need_espeak()
    for voice in ("cmn", "yue"):
        pcm, rate = make_tts("espeak-ng", voice).synthesize("您好，请问您现在方便吗？")
        assert rate > 8000 and 1.0 < len(pcm) / rate < 6.0
        assert np.abs(pcm).max() > 1000  # not silence


def test_a_reply_becomes_20ms_mulaw_frames_tagged_with_the_reply():
    need_espeak()
    stage = TtsStage(make_tts())
    ctx = CallContext(call_id="c1", state=stage.new_state("c1"))
    reply = ev.BotReply(call_id="c1", turn=2, text=REPLY, action="pitch")
    out = stage.handle(reply, ctx)
    assert len(out) > 250  # > 5 s of speech
    assert {e.topic for e in out} == {topics.AUDIO_OUT}
    # the frames, then one marker saying where the reply ends (what the hang-up waits for)
    *frame_emits, end = out
    assert isinstance(end.event, ev.ReplyAudioEnd) and end.event.reply_event_id == reply.event_id
    frames = [e.event for e in frame_emits]
    assert end.event.frames == len(frames)
    assert all(f.codec == "pcmu8k" and len(f.payload) == 160 and f.reply_event_id == reply.event_id for f in frames)
    assert [f.frame_index for f in frames] == list(range(len(frames)))
    assert all(f.turn == 2 for f in frames)
    # frames survive the bus codec and are deterministic (a re-handled reply gives the same ids)
    assert ev.decode(ev.encode(frames[0])) == frames[0]
    again = stage.handle(reply, CallContext(call_id="c1", state=stage.new_state("c1")))
    assert [e.event.event_id for e in again[:-1]] == [f.event_id for f in frames]


def test_a_reply_that_was_barged_into_is_not_spoken_again():
    need_espeak()
    stage = TtsStage(make_tts())
    ctx = CallContext(call_id="c1", state=stage.new_state("c1"))
    reply = ev.BotReply(call_id="c1", turn=1, text=REPLY, action="pitch")
    stage.handle(ev.BargeIn(call_id="c1", reply_event_id=reply.event_id, heard_ms=400), ctx)
    # no audio: only the end marker, with no frames, so a goodbye that was barged into still ends
    (end,) = stage.handle(reply, ctx)
    assert isinstance(end.event, ev.ReplyAudioEnd) and end.event.frames == 0
    (end,) = stage.handle(ev.BotReply(call_id="c1", turn=1, text="   ", action="x"), ctx)
    assert isinstance(end.event, ev.ReplyAudioEnd) and end.event.frames == 0


def test_a_broken_tts_backend_gives_a_clear_error():
    with pytest.raises(TtsError, match="http://127.0.0.1:9/"):
        HttpTts("http://127.0.0.1:9/", timeout=0.5).synthesize("你好")
    with pytest.raises(TtsError, match="not a WAV"):
        wav_bytes_to_pcm(b"garbage")
    with pytest.raises(TtsError, match="unknown TTS engine"):
        make_tts("no_such_module_xyz:factory")


def test_a_reply_to_a_turn_the_caller_has_gone_on_from_is_not_spoken():
    need_espeak()
    stage = TtsStage(make_tts())
    ctx = CallContext(call_id="c1", state=stage.new_state("c1"))
    # the caller went on speaking (turn 3) before the reply to turn 2 was synthesised
    stage.handle(ev.BargeIn(call_id="c1", turn=3, reply_event_id=None), ctx)
    (end,) = stage.handle(ev.BotReply(call_id="c1", turn=2, text=REPLY, action="pitch"), ctx)
    assert isinstance(end.event, ev.ReplyAudioEnd) and end.event.frames == 0
    # their new turn is answered
    out = stage.handle(ev.BotReply(call_id="c1", turn=3, text=REPLY, action="pitch"), ctx)
    assert len(out) > 250 and out[-1].event.frames == len(out) - 1
