"""The JSON dialects of cloud media streams: Twilio Media Streams and Telnyx media streaming.

Both carry 8 kHz mu-law as base64 in JSON text frames with the same life cycle (connected ->
start -> media... -> stop, plus mark/clear/dtmf); the field names differ.  Each provider is a
pure codec here (dict in -> `StreamEvent`, payload -> dict out) so the server stays one piece
and the protocols can be tested without sockets.  Hand-written because pipecat's serializers
drag in the whole pipecat framework for a few dozen lines of field mapping.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any, Literal

EventKind = Literal["connected", "start", "media", "stop", "mark", "dtmf", "ignored"]


class ProtocolError(ValueError):
    """A message that does not follow the provider's protocol; the message says what is wrong."""


@dataclass(frozen=True)
class StreamEvent:
    kind: EventKind
    stream_id: str | None = None
    call_ref: str | None = None  # the provider's call id (Twilio callSid, Telnyx call_control_id)
    payload: bytes = b""  # mu-law audio for "media"
    track: str = "inbound"
    name: str | None = None  # mark name / DTMF digit
    metadata: dict[str, Any] = field(default_factory=dict)


def _b64(payload: Any) -> bytes:
    if not isinstance(payload, str):
        raise ProtocolError("media.payload must be a base64 string")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f"media.payload is not base64: {exc}") from exc


def _obj(msg: dict[str, Any], key: str) -> dict[str, Any]:
    value = msg.get(key)
    if not isinstance(value, dict):
        raise ProtocolError(f"{msg.get('event')!r} message needs an object {key!r}")
    return value



def _after_start(event: Any, msg: dict[str, Any], sid: str | None) -> StreamEvent:
    """media / stop / mark / dtmf: Twilio and Telnyx shape these the same way (only the field
    that names the stream differs, and the caller has already read it)."""
    if event == "media":
        media = _obj(msg, "media")
        return StreamEvent("media", stream_id=sid, payload=_b64(media.get("payload")),
                           track=str(media.get("track", "inbound")))
    if event == "stop":
        return StreamEvent("stop", stream_id=sid)
    if event == "mark":
        return StreamEvent("mark", stream_id=sid, name=str(_obj(msg, "mark").get("name")))
    if event == "dtmf":
        return StreamEvent("dtmf", stream_id=sid, name=str(_obj(msg, "dtmf").get("digit")))
    if isinstance(event, str):
        return StreamEvent("ignored", stream_id=sid)
    raise ProtocolError("message has no 'event'")


class Twilio:
    """https://www.twilio.com/docs/voice/media-streams/websocket-messages"""

    name = "twilio"

    @staticmethod
    def parse(msg: dict[str, Any]) -> StreamEvent:
        event = msg.get("event")
        sid = msg.get("streamSid")
        if event == "connected":
            return StreamEvent("connected")
        if event == "start":
            start = _obj(msg, "start")
            fmt = start.get("mediaFormat") or {}
            if fmt and (fmt.get("encoding") != "audio/x-mulaw" or int(fmt.get("sampleRate", 8000)) != 8000):
                raise ProtocolError(f"unsupported media format {fmt}")
            return StreamEvent("start", stream_id=sid or start.get("streamSid"), call_ref=start.get("callSid"),
                               metadata={"account": start.get("accountSid"), "tracks": start.get("tracks"),
                                         "custom": start.get("customParameters") or {}})
        return _after_start(event, msg, sid)

    @staticmethod
    def media(stream_id: str, payload: bytes) -> dict[str, Any]:
        return {"event": "media", "streamSid": stream_id, "media": {"payload": base64.b64encode(payload).decode()}}

    @staticmethod
    def clear(stream_id: str) -> dict[str, Any]:
        return {"event": "clear", "streamSid": stream_id}

    @staticmethod
    def mark(stream_id: str, name: str) -> dict[str, Any]:
        return {"event": "mark", "streamSid": stream_id, "mark": {"name": name}}


class Telnyx:
    """https://developers.telnyx.com/docs/voice/programmable-voice/media-streaming"""

    name = "telnyx"

    @staticmethod
    def parse(msg: dict[str, Any]) -> StreamEvent:
        event = msg.get("event")
        sid = msg.get("stream_id")
        if event == "connected":
            return StreamEvent("connected")
        if event == "start":
            start = _obj(msg, "start")
            fmt = start.get("media_format") or {}
            if fmt and (str(fmt.get("encoding", "PCMU")).upper() != "PCMU" or int(fmt.get("sample_rate", 8000)) != 8000):
                raise ProtocolError(f"unsupported media format {fmt}")
            return StreamEvent("start", stream_id=sid, call_ref=start.get("call_control_id"),
                               metadata={"from": start.get("from"), "to": start.get("to"),
                                         "call_session_id": start.get("call_session_id")})
        return _after_start(event, msg, sid)

    @staticmethod
    def media(stream_id: str, payload: bytes) -> dict[str, Any]:
        return {"event": "media", "media": {"payload": base64.b64encode(payload).decode()}}

    @staticmethod
    def clear(stream_id: str) -> dict[str, Any]:
        return {"event": "clear"}

    @staticmethod
    def mark(stream_id: str, name: str) -> dict[str, Any]:
        return {"event": "mark", "mark": {"name": name}}


PROVIDERS: dict[str, type[Twilio] | type[Telnyx]] = {"twilio": Twilio, "telnyx": Telnyx}


def twilio_signature(auth_token: str, url: str, params: dict[str, str] | None = None) -> str:
    """Twilio's request signature: base64(HMAC-SHA1(auth token, URL + sorted POST params))."""
    data = url + "".join(f"{k}{v}" for k, v in sorted((params or {}).items()))
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()
