"""Calls that arrive as cloud media streams: a websocket client speaks Twilio's (and Telnyx's)
documented JSON protocol to the agent, with the echo stage standing in for the speech stages."""

from __future__ import annotations

import asyncio
import base64
import json
import wave
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from agent import events as ev
from agent import topics
from agent.testing import running_pipeline
from connectors.echo import EchoStage
from connectors.sip.peers import have, to_headerless_ulaw
from connectors.websocket.protocols import Telnyx, Twilio, twilio_signature
from connectors.websocket.server import MediaStreamConfig, MediaStreamServer
from tests.test_sip_calls import CLIP, log_events

TOKEN = "t0ken-for-tests"


@pytest.fixture
def caller_ulaw(tmp_path) -> bytes:
    if have("sox"):
        return to_headerless_ulaw(CLIP, tmp_path / "caller.ulaw").read_bytes()[: 160 * 100]
    with wave.open(str(CLIP)) as w:  # fall back to a tone-like pattern of the right size
        return bytes((b % 200) + 20 for b in w.readframes(16000))[: 160 * 100]


def twilio_messages(stream: str, audio: bytes) -> list[dict]:
    msgs = [{"event": "connected", "protocol": "Call", "version": "1.0.0"},
            {"event": "start", "sequenceNumber": "1", "streamSid": stream,
             "start": {"accountSid": "AC1", "streamSid": stream, "callSid": "CA1", "tracks": ["inbound"],
                       "customParameters": {"lead": "42"},
                       "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}]
    for i in range(0, len(audio), 160):
        msgs.append({"event": "media", "sequenceNumber": str(i // 160 + 2), "streamSid": stream,
                     "media": {"track": "inbound", "chunk": str(i // 160 + 1), "timestamp": str(i // 8),
                               "payload": base64.b64encode(audio[i : i + 160]).decode()}})
    return msgs


async def collect(ws, seconds: float) -> list[dict]:
    got = []
    try:
        async with asyncio.timeout(seconds):
            async for raw in ws:
                got.append(json.loads(raw))
    except TimeoutError:
        pass
    return got


async def test_a_twilio_call_streams_in_and_hears_the_agent_back(embedded_bus, caller_ulaw):
    async with running_pipeline(embedded_bus, stages=[EchoStage()]):
        async with MediaStreamServer(embedded_bus, MediaStreamConfig(port=0, token=TOKEN)) as server:
            host, port = server.address
            async with connect(f"ws://{host}:{port}/media?token={TOKEN}") as ws:
                for m in twilio_messages("MZ1", caller_ulaw):
                    await ws.send(json.dumps(m))
                    if m["event"] == "media":
                        await asyncio.sleep(0.005)
                got = await collect(ws, 2.5)
                await ws.send(json.dumps({"event": "stop", "sequenceNumber": "999", "streamSid": "MZ1",
                                          "stop": {"accountSid": "AC1", "callSid": "CA1"}}))
            await asyncio.sleep(0.3)
    media = [m for m in got if m["event"] == "media"]
    assert all(m["streamSid"] == "MZ1" for m in media)
    heard = b"".join(base64.b64decode(m["media"]["payload"]) for m in media)
    assert heard == caller_ulaw  # every frame came back, in order, as the protocol's media messages
    control = log_events(embedded_bus, topics.CONTROL)
    started = [e for e in control if isinstance(e, ev.CallStarted)][0]
    assert started.mode == "audio" and started.metadata["provider"] == "twilio"
    assert started.metadata["custom"] == {"lead": "42"}
    assert [e.reason for e in control if isinstance(e, ev.CallEnded)] == ["caller_hangup"]
    assert len(log_events(embedded_bus, topics.AUDIO_IN)) == len(caller_ulaw) // 160


async def test_a_barge_in_clears_what_twilio_would_still_play(embedded_bus):
    async with MediaStreamServer(embedded_bus, MediaStreamConfig(port=0, token=TOKEN)) as server:
        host, port = server.address
        async with connect(f"ws://{host}:{port}/media", additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
            for m in twilio_messages("MZ2", b""):
                await ws.send(json.dumps(m))
            await asyncio.sleep(0.2)
            call_id = "twilio-MZ2"
            reply = ev.new_event_id()
            for i in range(100):  # a 2 s reply
                await embedded_bus.publish_event(topics.AUDIO_OUT, ev.AudioFrame(
                    call_id=call_id, stage="tts", codec="pcmu8k", frame_index=i, reply_event_id=reply, payload=b"\x55" * 160))
            await asyncio.sleep(0.4)
            await embedded_bus.publish_event(topics.CONTROL, ev.BargeIn(call_id=call_id, stage="vad", reply_event_id=reply))
            got = await collect(ws, 1.0)
    kinds = [m["event"] for m in got]
    assert "clear" in kinds
    after_clear = kinds[kinds.index("clear") + 1 :]
    assert "media" not in after_clear
    assert 5 < kinds.count("media") < 60


@pytest.mark.parametrize("how", ["none", "wrong-token", "bad-signature"])
async def test_unauthenticated_streams_are_refused(embedded_bus, how):
    cfg = MediaStreamConfig(port=0, token=TOKEN, twilio_auth_token="twilio-secret", public_url="wss://agent.example")
    async with MediaStreamServer(embedded_bus, cfg) as server:
        host, port = server.address
        url = f"ws://{host}:{port}/media" + ("?token=nope" if how == "wrong-token" else "")
        headers = {"X-Twilio-Signature": "AAAA"} if how == "bad-signature" else {}
        with pytest.raises(InvalidStatus) as err:
            async with connect(url, additional_headers=headers):
                pass
        assert err.value.response.status_code == 401
        assert server.rejected == 1


async def test_a_correct_twilio_signature_is_accepted(embedded_bus):
    cfg = MediaStreamConfig(port=0, twilio_auth_token="twilio-secret", public_url="wss://agent.example")
    async with MediaStreamServer(embedded_bus, cfg) as server:
        host, port = server.address
        sig = twilio_signature("twilio-secret", "wss://agent.example/media?call=1")
        async with connect(f"ws://{host}:{port}/media?call=1", additional_headers={"X-Twilio-Signature": sig}) as ws:
            await ws.send(json.dumps({"event": "connected"}))
        assert server.rejected == 0


async def test_an_oversized_message_closes_the_stream_and_ends_the_call(embedded_bus):
    async with MediaStreamServer(embedded_bus, MediaStreamConfig(port=0, token=TOKEN, max_message_bytes=4096)) as server:
        host, port = server.address
        async with connect(f"ws://{host}:{port}/?token={TOKEN}", max_size=None) as ws:
            for m in twilio_messages("MZ3", b"\xff" * 320):
                await ws.send(json.dumps(m))
            await ws.send(json.dumps({"event": "media", "streamSid": "MZ3",
                                      "media": {"payload": base64.b64encode(b"\xff" * 8000).decode()}}))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 3)
            assert closed.value.rcvd.code == 1009
        await asyncio.sleep(0.2)
    ended = [e for e in log_events(embedded_bus, topics.CONTROL) if isinstance(e, ev.CallEnded)]
    assert [e.reason for e in ended] == ["message_too_big"]
    assert len(log_events(embedded_bus, topics.AUDIO_IN)) == 2  # what came before is kept


async def test_a_message_that_breaks_the_protocol_closes_the_stream_with_a_reason(embedded_bus):
    async with MediaStreamServer(embedded_bus, MediaStreamConfig(port=0, token=TOKEN)) as server:
        host, port = server.address
        async with connect(f"ws://{host}:{port}/?token={TOKEN}") as ws:
            await ws.send(json.dumps(twilio_messages("MZ4", b"")[1]))
            await ws.send(json.dumps({"event": "media", "streamSid": "MZ4", "media": {"payload": "%%%not-base64"}}))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 3)
            assert closed.value.rcvd.code == 1002 and "base64" in closed.value.rcvd.reason
        assert server.protocol_errors == 1


async def test_a_telnyx_call_uses_telnyx_field_names_both_ways(embedded_bus, caller_ulaw):
    audio = caller_ulaw[: 160 * 25]
    async with running_pipeline(embedded_bus, stages=[EchoStage()]):
        cfg = MediaStreamConfig(provider="telnyx", port=0, token=TOKEN)
        async with MediaStreamServer(embedded_bus, cfg) as server:
            host, port = server.address
            async with connect(f"ws://{host}:{port}/telnyx?token={TOKEN}") as ws:
                await ws.send(json.dumps({"event": "connected", "version": "1.0.0"}))
                await ws.send(json.dumps({"event": "start", "sequence_number": "1", "stream_id": "st-9",
                                          "start": {"user_id": "u", "call_control_id": "v3:abc", "call_session_id": "s",
                                                    "from": "+8613800000000", "to": "+8610000000",
                                                    "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}}}))
                for i in range(0, len(audio), 160):
                    await ws.send(json.dumps({"event": "media", "sequence_number": str(i), "stream_id": "st-9",
                                              "media": {"track": "inbound", "chunk": str(i), "timestamp": str(i),
                                                        "payload": base64.b64encode(audio[i : i + 160]).decode()}}))
                await ws.send(json.dumps({"event": "dtmf", "stream_id": "st-9", "dtmf": {"digit": "5"}}))
                got = await collect(ws, 1.5)
                await ws.send(json.dumps({"event": "stop", "stream_id": "st-9", "stop": {"call_control_id": "v3:abc"}}))
            await asyncio.sleep(0.2)
    media = [m for m in got if m["event"] == "media"]
    assert b"".join(base64.b64decode(m["media"]["payload"]) for m in media) == audio
    assert all("streamSid" not in m for m in media)
    started = [e for e in log_events(embedded_bus, topics.CONTROL) if isinstance(e, ev.CallStarted)][0]
    assert started.caller == "+8613800000000" and started.metadata["provider_call_id"] == "v3:abc"


def test_the_protocol_codecs_round_trip():
    assert Twilio.parse(Twilio.media("MZ", b"\x01\x02") | {"event": "media"}).payload == b"\x01\x02"
    assert Telnyx.parse({"event": "dtmf", "dtmf": {"digit": "#"}}).name == "#"
    assert Twilio.parse({"event": "something-new"}).kind == "ignored"


def _start(provider: str, stream: str) -> list[dict]:
    if provider == "twilio":
        return twilio_messages(stream, b"")
    return [{"event": "connected", "version": "1.0.0"},
            {"event": "start", "sequence_number": "1", "stream_id": stream,
             "start": {"call_control_id": "v3:key", "from": "+8613800000000", "to": "+8610000000",
                       "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}}}]


def _dtmf(provider: str, stream: str, digit: str) -> dict:
    if provider == "twilio":
        return {"event": "dtmf", "streamSid": stream, "sequenceNumber": "5",
                "dtmf": {"track": "inbound_track", "digit": digit}}
    return {"event": "dtmf", "stream_id": stream, "dtmf": {"digit": digit}}


@pytest.mark.skipif(not have("espeak-ng"), reason="espeak-ng not installed")
@pytest.mark.parametrize("provider", ["twilio", "telnyx"])
async def test_a_caller_who_presses_9_hears_the_goodbye_and_the_agent_closes_the_stream(embedded_bus, provider):
    """The key press goes through the real stages (dtmf map: 9 = do_not_call -> policy goodbye ->
    espeak-ng), the goodbye streams back, and only after its last frame does the agent hang up:
    the stream closes with 1000 and the reason (neither protocol has an in-band hang-up message)."""
    from agent.pipeline import build_stage
    from agent.settings import Settings

    settings = Settings(silence_hangup_s=0)
    stages = [build_stage(n, settings) for n in ("dtmf", "dst", "policy", "tts", "hangup")]
    got: list[dict] = []
    async with running_pipeline(embedded_bus, settings, stages):
        cfg = MediaStreamConfig(provider=provider, port=0, token=TOKEN)
        async with MediaStreamServer(embedded_bus, cfg) as server:
            host, port = server.address
            async with connect(f"ws://{host}:{port}/media?token={TOKEN}") as ws:
                for m in _start(provider, "MZ9"):
                    await ws.send(json.dumps(m))
                await ws.send(json.dumps(_dtmf(provider, "MZ9", "9")))
                async with asyncio.timeout(30):
                    async for raw in ws:  # ends when the agent closes the stream
                        got.append(json.loads(raw))
                code, reason = ws.close_code, ws.close_reason
    assert (code, reason) == (1000, "call ended by agent: bot_ended")
    control = log_events(embedded_bus, topics.CONTROL)
    keys = [e for e in control if isinstance(e, ev.CallDtmf)]
    assert [(k.digit, k.source) for k in keys] == [("9", provider)]
    goodbye = [e for e in log_events(embedded_bus, topics.REPLIES) if e.call_id == keys[0].call_id][-1]
    assert goodbye.ends_call and goodbye.action == "exit_do_not_call"
    frames = [e for e in log_events(embedded_bus, topics.AUDIO_OUT)
              if isinstance(e, ev.AudioFrame) and e.reply_event_id == goodbye.event_id]
    media = [m for m in got if m["event"] == "media"]
    assert len(media) == len(frames) > 50  # the whole goodbye was streamed before the close
    ended = [e for e in control if isinstance(e, ev.CallEnded)]
    assert [(e.stage, e.reply_event_id) for e in ended] == [("hangup", goodbye.event_id)]
