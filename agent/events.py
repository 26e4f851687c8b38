"""Typed call events and their wire codec.

Every event carries the same envelope (schema version, ids, call/turn/seq, timestamps,
producing stage, causing event).  Audio frames are encoded in a compact binary layout because
50 of them flow per second per call; everything else is JSON so that a human can read the log.
"""

from __future__ import annotations

import json
import struct
import time
import uuid
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

SCHEMA_VERSION = 1

# One namespace for deterministic ids: an output event's id is derived from the id of the event
# that caused it, so a stage that re-handles an event after a crash emits the *same* ids and the
# next stage's de-duplication drops the repeat.
_ID_NAMESPACE = uuid.UUID("7b1f5b0e-3c55-4a8e-9b7e-2f6f0d1c9a10")


def new_event_id() -> str:
    return uuid.uuid4().hex


def derived_event_id(cause_id: str, stage: str, index: int) -> str:
    return uuid.uuid5(_ID_NAMESPACE, f"{cause_id}/{stage}/{index}").hex


class EventError(ValueError):
    """An event could not be decoded or validated; the message says why."""


class Envelope(BaseModel):
    """Fields every event carries.  Unknown fields are rejected so that a typo never
    silently drops data (the event goes to dead letters instead)."""

    # Binary fields (audio) travel as base64 inside JSON.
    model_config = ConfigDict(
        extra="forbid", frozen=True, ser_json_bytes="base64", val_json_bytes="base64"
    )

    schema_version: int = SCHEMA_VERSION
    event_id: str = Field(default_factory=new_event_id)
    call_id: str = Field(min_length=1, max_length=128)
    turn: int = Field(default=0, ge=0)
    seq: int = Field(default=0, ge=0)
    ts_wall: float = Field(default_factory=time.time)
    ts_mono_ns: int = Field(default_factory=time.monotonic_ns)
    stage: str = "unknown"
    caused_by: str | None = None


# --- call control -------------------------------------------------------------------------


class CallStarted(Envelope):
    type: Literal["call.started"] = "call.started"
    direction: Literal["inbound", "outbound", "simulated"] = "simulated"
    mode: Literal["text", "audio"] = "text"
    caller: str | None = None
    campaign: str | None = None
    playbook: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class CallEnded(Envelope):
    type: Literal["call.ended"] = "call.ended"
    reason: str = "hangup"
    outcome: str | None = None
    #: the bot reply the call ended on, when the agent ended it (reason "bot_ended")
    reply_event_id: str | None = None


class CallDtmf(Envelope):
    """The caller pressed a key (RFC 4733 telephone-event on RTP, or a provider's dtmf message)."""

    type: Literal["call.dtmf"] = "call.dtmf"
    digit: str = Field(pattern=r"^[0-9*#A-D]$")
    duration_ms: int = Field(default=0, ge=0)
    source: str = "rtp"  # rtp | twilio | telnyx | mqtt


class ReplyPlayed(Envelope):
    """A connector played a bot reply's last audio frame to the caller (or dropped the rest of
    it on barge-in): what the agent waits for before it hangs up after a goodbye."""

    type: Literal["call.reply_played"] = "call.reply_played"
    reply_event_id: str
    frames: int = Field(default=0, ge=0)
    interrupted: bool = False


class CallerSilent(Envelope):
    """No caller speech (nor key press) for `silent_ms` while the bot was not speaking."""

    type: Literal["call.silence"] = "call.silence"
    silent_ms: int = Field(ge=0)


class BargeIn(Envelope):
    """The caller spoke over the bot: audio out must stop."""

    type: Literal["call.barge_in"] = "call.barge_in"
    reply_event_id: str | None = None
    heard_ms: int = 0


# --- audio --------------------------------------------------------------------------------

Codec = Literal["pcmu8k", "pcm16k"]
FRAME_MS = 20
FRAME_BYTES = {"pcmu8k": 160, "pcm16k": 640}


class AudioFrame(Envelope):
    """20 ms of audio: 8 kHz mu-law (160 bytes, as on the phone network) or 16 kHz PCM16
    (640 bytes, inside the pipeline)."""

    type: Literal["audio.frame"] = "audio.frame"
    codec: Codec = "pcm16k"
    frame_index: int = Field(default=0, ge=0)
    reply_event_id: str | None = None
    payload: bytes = b""


class ReplyAudioEnd(Envelope):
    """TTS wrote the last frame of a reply (`frames` in all; 0 for a reply with nothing to say).
    Travels on audio.out after the frames, so a connector knows where the reply ends."""

    type: Literal["audio.reply_end"] = "audio.reply_end"
    reply_event_id: str
    frames: int = Field(default=0, ge=0)


class SpeechStarted(Envelope):
    type: Literal["speech.started"] = "speech.started"
    start_ms: int = 0


#: on a caller turn: the earlier turn this one takes back — the caller went on before the reply to
#: it started, so this turn's audio reaches back over it and what was understood from it no longer
#: counts (VAD -> ASR -> NLU -> DST).  Left out of the JSON when None, so a stage of an older build
#: still reads every event that does not use it.
RetractsTurn = Annotated[int | None, Field(ge=1, exclude_if=lambda v: v is None)]

#: Why the VAD ended a caller's turn (a final segment): "smart_turn" (Smart Turn alone),
#: "smart_turn+words" (Smart Turn and the words of the partial agreed), "smart_turn_no_words"
#: (the words were late, Smart Turn decided), "semantic_hold" (the words read unfinished and the
#: hold ran out), "max_silence", "max_turn", "hangup".  For QA ("why did the bot cut me off?")
#: and the endpointing benches; left out of the JSON when None, like `retracts_turn`.
EndReason = Annotated[str | None, Field(max_length=32, exclude_if=lambda v: v is None)]


class SpeechSegment(Envelope):
    """One caller utterance as detected by VAD/endpointing (PCM16 16 kHz)."""

    type: Literal["speech.segment"] = "speech.segment"
    start_ms: int = 0
    end_ms: int = 0
    final: bool = True
    audio_pcm16: bytes = b""
    retracts_turn: RetractsTurn = None
    end_reason: EndReason = None


# --- understanding ------------------------------------------------------------------------


class TranscriptPartial(Envelope):
    type: Literal["transcript.partial"] = "transcript.partial"
    text: str
    stable_prefix: str = ""


class TranscriptFinal(Envelope):
    type: Literal["transcript.final"] = "transcript.final"
    text: str
    confidence: float | None = None
    language: str | None = None
    asr_model: str | None = None
    audio_ms: int | None = None
    #: what the recogniser wrote before domain correction (None when nothing was corrected)
    raw_text: str | None = None
    #: each correction: {"start", "end", "before", "after", "kind", "id", "score", "note"}
    corrections: list[dict[str, Any]] = Field(default_factory=list)
    retracts_turn: RetractsTurn = None


class Intent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    score: float = 1.0


class Entity(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str
    value: Any
    text: str | None = None
    start: int | None = None
    end: int | None = None
    negated: bool = False  # the caller removes or refuses it (不要异地备份了)


class NluResult(Envelope):
    type: Literal["nlu.result"] = "nlu.result"
    text: str
    intents: list[Intent] = Field(default_factory=list)
    entities: list[Entity] = Field(default_factory=list)
    decided_by: Literal["rule", "model"] = "rule"
    model_version: str = "rules-1"
    retracts_turn: RetractsTurn = None


class DialogueStateUpdated(Envelope):
    type: Literal["dialogue.state"] = "dialogue.state"
    state: dict[str, Any]
    playbook_version: str | None = None


class PolicyReply(Envelope):
    """What the policy decided to say: the fields a draft and the final reply share."""

    text: str
    action: str
    ends_call: bool = False
    playbook_version: str | None = None
    decided_by: Literal["rule", "template", "llm"] = "template"

    def policy_fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in PolicyReply.model_fields if name not in Envelope.model_fields}


class BotReply(PolicyReply):
    type: Literal["bot.reply"] = "bot.reply"
    # With LLM phrasing on (docs/dialogue.md), the phrasing stage records what the LLM produced,
    # so that a replay re-uses it and never calls the LLM again.  None: phrasing was off.
    phrased_by: Literal["llm", "template"] | None = None
    prompt_hash: str | None = None  # sha256 of the prompt sent (the key a replay looks up)
    llm_text: str | None = None  # what the LLM answered, even when it was rejected
    llm_model: str | None = None
    template_text: str | None = None  # the policy's own wording
    phrasing_note: str | None = None  # why the template was kept (timeout, error, check failed)


class ReplyDraft(PolicyReply):
    """The policy's template reply when LLM phrasing is on (bot.drafts -> phrasing stage).
    Carries everything the phrasing needs, so that stage holds no playbook or dialogue state:
    the prompt to send and the numbers an LLM wording may state."""

    type: Literal["bot.reply_draft"] = "bot.reply_draft"
    #: compliance wording (do-not-call, hand-off, AI disclosure): sent as it is, never phrased
    keep_template: bool = False
    prompt: list[dict[str, str]] = Field(default_factory=list)
    allowed_numbers: list[float] = Field(default_factory=list)


# --- errors -------------------------------------------------------------------------------


class DeadLetter(Envelope):
    type: Literal["dead.letter"] = "dead.letter"
    source_topic: str
    reason: str
    consumer: str | None = None
    raw: str = ""  # the undecodable message, as text (binary payloads hex-encoded, truncated)


class CallOutcome(Envelope):
    """How a call went, kept in the call log beside its events (on call.control).

    kind "call": the call's own outcome, from what the bot did (demo_booked, deal_closed,
    quote_sent, callback, not_interested, dnc, handoff, hung_up) with the sale stage reached.
    kind "business": what happened later, joined to the call from the CRM (webhook or CSV):
    deal_won / deal_lost with the amount and date."""

    type: Literal["call.outcome"] = "call.outcome"
    kind: Literal["call", "business"] = "call"
    outcome: str = Field(min_length=1, max_length=64)
    sale_stage: str | None = None  # the furthest sale stage the call reached (kind "call")
    amount: float | None = Field(default=None, ge=0)  # deal value in yuan (kind "business")
    date: str | None = None  # ISO date of the business outcome
    source: str = "agent"  # agent | simulator | crm_webhook | csv
    external_id: str | None = None  # the CRM's id for the deal, so a re-sent webhook is recognised


AnyEvent = Annotated[
    Union[
        CallStarted,
        CallEnded,
        CallDtmf,
        ReplyPlayed,
        CallerSilent,
        BargeIn,
        AudioFrame,
        ReplyAudioEnd,
        SpeechStarted,
        SpeechSegment,
        TranscriptPartial,
        TranscriptFinal,
        NluResult,
        DialogueStateUpdated,
        BotReply,
        ReplyDraft,
        DeadLetter,
        CallOutcome,
    ],
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(AnyEvent)
EVENT_TYPES = {
    cls.model_fields["type"].default: cls
    for cls in (
        CallStarted,
        CallEnded,
        CallDtmf,
        ReplyPlayed,
        CallerSilent,
        BargeIn,
        AudioFrame,
        ReplyAudioEnd,
        SpeechStarted,
        SpeechSegment,
        TranscriptPartial,
        TranscriptFinal,
        NluResult,
        DialogueStateUpdated,
        BotReply,
        ReplyDraft,
        DeadLetter,
        CallOutcome,
    )
}


# --- codec --------------------------------------------------------------------------------
#
# Binary audio layout (little-endian), written by hand because no library has this exact
# envelope; 90-ish bytes of header for 160 bytes of mu-law instead of ~400 bytes of JSON:
#   magic b"DXA" | version u8 | event_id 16B | caused_by 16B (zeros = none) | turn u32 | seq u64
#   | ts_wall f64 | ts_mono_ns i64 | frame_index u32 | codec u8 | call_id len u8 + utf8
#   | stage len u8 + utf8 | reply_event_id 16B (zeros = none) | payload
_AUDIO_MAGIC = b"DXA"
_AUDIO_HEAD = struct.Struct("<3sB16s16sIQdqIB")
_CODECS: tuple[Codec, ...] = ("pcmu8k", "pcm16k")
_ZERO_ID = b"\x00" * 16


def _id_bytes(hex_id: str | None) -> bytes:
    if hex_id is None:
        return _ZERO_ID
    try:
        return uuid.UUID(hex=hex_id).bytes
    except ValueError as exc:  # ids on audio frames must be uuid hex to fit the layout
        raise EventError(f"audio frame id {hex_id!r} is not a 32-digit hex uuid") from exc


def _id_hex(raw: bytes) -> str | None:
    return None if raw == _ZERO_ID else uuid.UUID(bytes=raw).hex


def _encode_audio(ev: AudioFrame) -> bytes:
    call = ev.call_id.encode()
    stage = ev.stage.encode()[:255]
    if len(call) > 255:
        raise EventError("call_id longer than 255 bytes cannot be framed")
    head = _AUDIO_HEAD.pack(
        _AUDIO_MAGIC,
        ev.schema_version,
        _id_bytes(ev.event_id),
        _id_bytes(ev.caused_by),
        ev.turn,
        ev.seq,
        ev.ts_wall,
        ev.ts_mono_ns,
        ev.frame_index,
        _CODECS.index(ev.codec),
    )
    return b"".join(
        [
            head,
            bytes([len(call)]),
            call,
            bytes([len(stage)]),
            stage,
            _id_bytes(ev.reply_event_id),
            ev.payload,
        ]
    )


def _decode_audio(data: bytes) -> AudioFrame:
    try:
        (_, version, eid, cause, turn, seq, wall, mono, index, codec) = _AUDIO_HEAD.unpack_from(data)
        pos = _AUDIO_HEAD.size
        n = data[pos]
        call_id = data[pos + 1 : pos + 1 + n].decode()
        pos += 1 + n
        n = data[pos]
        stage = data[pos + 1 : pos + 1 + n].decode()
        pos += 1 + n
        reply = data[pos : pos + 16]
        if len(reply) != 16:
            raise EventError("audio frame truncated before its payload")
        payload = data[pos + 16 :]
        return AudioFrame(
            schema_version=version,
            event_id=_id_hex(eid) or "",
            caused_by=_id_hex(cause),
            call_id=call_id,
            turn=turn,
            seq=seq,
            ts_wall=wall,
            ts_mono_ns=mono,
            stage=stage,
            frame_index=index,
            codec=_CODECS[codec],
            reply_event_id=_id_hex(reply),
            payload=payload,
        )
    except EventError:
        raise
    except (struct.error, IndexError, UnicodeDecodeError, ValidationError) as exc:
        raise EventError(f"corrupt audio frame: {exc}") from exc


def encode(event: BaseModel) -> bytes:
    """Serialise an event for the bus (binary for audio frames, JSON for the rest)."""
    if isinstance(event, AudioFrame):
        return _encode_audio(event)
    return event.model_dump_json().encode()


def decode(data: bytes) -> Any:
    """Parse bytes from the bus into a typed event, or raise EventError with the reason."""
    if data[:3] == _AUDIO_MAGIC:
        return _decode_audio(data)
    # Fast path: one pydantic pass over the bytes (about 4x faster than parse + re-dump +
    # validate).  Anything it rejects, or another schema version, takes the slow path below,
    # which gives the same result or raises the detailed EventError.
    try:
        event = _ADAPTER.validate_json(data)
        if event.schema_version == SCHEMA_VERSION:
            return event
    except (ValidationError, ValueError):
        pass
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventError(f"not JSON and not an audio frame: {exc}") from exc
    return from_dict(obj)


def from_dict(obj: Any) -> Any:
    if not isinstance(obj, dict):
        raise EventError(f"event must be a JSON object, got {type(obj).__name__}")
    version = obj.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise EventError(f"unsupported schema_version {version!r} (this build reads {SCHEMA_VERSION})")
    if obj.get("type") not in EVENT_TYPES:
        raise EventError(f"unknown event type {obj.get('type')!r}")
    try:
        # JSON mode, so that base64 audio inside JSON decodes to bytes.
        return _ADAPTER.validate_json(json.dumps(obj))
    except ValidationError as exc:
        raise EventError(f"invalid {obj.get('type')}: {exc.errors(include_url=False)}") from exc


def to_dict(event: BaseModel) -> dict[str, Any]:
    """JSON-able dict of any event (audio payloads as hex) for logs, exports and tables."""
    return json.loads(event.model_dump_json())


def raw_for_dead_letter(data: bytes, limit: int = 4096) -> str:
    try:
        return data[:limit].decode()
    except UnicodeDecodeError:
        return "hex:" + data[:limit].hex()
