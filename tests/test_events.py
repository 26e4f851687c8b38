"""The event envelope and its wire codec: what a stage can trust about a message."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import events as ev


def test_a_phone_frame_is_twenty_ms_of_mulaw_in_a_compact_binary_envelope():
    frame = ev.AudioFrame(call_id="call-1", turn=2, seq=7, stage="sip", codec="pcmu8k", frame_index=42, payload=b"\x7f" * 160)
    data = ev.encode(frame)
    assert len(data) < 160 + 120  # the envelope costs far less than JSON would
    back = ev.decode(data)
    assert back == frame
    assert ev.FRAME_BYTES["pcmu8k"] == 160 and ev.FRAME_BYTES["pcm16k"] == 640


def test_text_events_are_readable_json_with_the_full_envelope():
    nlu = ev.NluResult(
        call_id="call-1", turn=1, stage="nlu", caused_by="ab" * 16, text="云服务器多少钱",
        intents=[ev.Intent(name="price_inquiry", score=0.9)], entities=[ev.Entity(type="product", value="cloud_server")],
    )
    obj = json.loads(ev.encode(nlu))
    for field in ("schema_version", "event_id", "call_id", "turn", "seq", "ts_wall", "ts_mono_ns", "stage", "caused_by", "type"):
        assert field in obj
    assert obj["text"] == "云服务器多少钱"  # UTF-8 text, not escapes of escapes
    assert ev.decode(ev.encode(nlu)) == nlu


def test_speech_segment_audio_survives_json():
    seg = ev.SpeechSegment(call_id="c", audio_pcm16=bytes(range(256)) * 3, start_ms=0, end_ms=24)
    assert ev.decode(ev.encode(seg)).audio_pcm16 == seg.audio_pcm16


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"", "not JSON"),
        (b"[1,2]", "JSON object"),
        (b'{"type": "nope", "call_id": "c"}', "unknown event type"),
        (b'{"type": "transcript.final", "call_id": "c"}', "text"),
        (b'{"type": "transcript.final", "call_id": "c", "text": "x", "extra": 1}', "extra"),
        (b'{"type": "transcript.final", "call_id": "c", "text": "x", "schema_version": 99}', "schema_version"),
        (b"DXA\x01" + b"\x00" * 20, "audio frame"),
    ],
)
def test_bad_messages_raise_a_clear_event_error(payload, reason):
    with pytest.raises(ev.EventError, match=reason):
        ev.decode(payload)


def test_output_ids_are_derived_from_the_cause_so_a_repeat_is_recognised():
    assert ev.derived_event_id("abc", "nlu", 0) == ev.derived_event_id("abc", "nlu", 0)
    assert ev.derived_event_id("abc", "nlu", 0) != ev.derived_event_id("abc", "nlu", 1)
    assert ev.derived_event_id("abc", "nlu", 0) != ev.derived_event_id("abc", "dst", 0)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_decoding_arbitrary_bytes_never_fails_with_anything_but_an_event_error(data):
    try:
        ev.decode(data)
    except ev.EventError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=200))
def test_decoding_a_corrupted_audio_frame_never_crashes(tail):
    frame = ev.encode(ev.AudioFrame(call_id="c", codec="pcmu8k", payload=b"\x00" * 160))
    try:
        ev.decode(frame[: len(tail) % len(frame)] + tail)
    except ev.EventError:
        pass
