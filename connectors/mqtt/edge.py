"""MQTT edge link: store devices (kiosks, desk phones, tablets) publish call events, and receive
the agent's commands, through an MQTT broker (aiomqtt, the maintained asyncio client).

Topics (PREFIX defaults to "dianxiao/edge"):
    PREFIX/{device}/events    device -> agent: one event per message, JSON in the agent's own
                              schema (call.started, transcript.final, call.ended, ...)
    PREFIX/{device}/commands  agent -> device: {"type": "say", "text": ...} for each bot reply,
                              {"type": "stop_audio"} on barge-in, {"type": "hangup"} when the
                              agent ends the call (after the goodbye's `say`: a text-mode
                              device speaks it, then hangs up; an audio-mode device reports
                              call.reply_played and the agent ends the call after that)
    PREFIX/{device}/errors    agent -> device: why a message was refused

A refused message is never lost: it goes to the dead-letter topic with the reason and the raw
text, and the device is told on its errors topic.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

import aiomqtt
import structlog

from agent import events as ev
from agent import topics
from agent.bus.base import Bus

log = structlog.get_logger("dianxiao.mqtt")
STAGE = "mqtt"

#: which bus topic each event type a device may send goes to
DEVICE_EVENT_TOPICS = {
    "call.started": topics.CONTROL,
    "call.ended": topics.CONTROL,
    "call.barge_in": topics.CONTROL,
    "call.dtmf": topics.CONTROL,  # a key pressed on the device's keypad
    "call.reply_played": topics.CONTROL,  # an audio-mode device finished playing a reply
    "audio.frame": topics.AUDIO_IN,
    "transcript.partial": topics.TRANSCRIPTS,
    "transcript.final": topics.TRANSCRIPTS,
}
_DEVICE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_PAYLOAD = 256 * 1024


@dataclass
class EdgeConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    prefix: str = "dianxiao/edge"
    username: str | None = None
    password: str | None = None
    client_id: str | None = None


class RefusedMessage(ValueError):
    pass


def device_event(topic: str, payload: bytes, prefix: str) -> tuple[str, Any]:
    """(device id, validated event) from one MQTT message, or RefusedMessage with the reason."""
    parts = topic[len(prefix) + 1 :].split("/") if topic.startswith(prefix + "/") else []
    if len(parts) != 2 or parts[1] != "events" or not _DEVICE_ID.match(parts[0]):
        raise RefusedMessage(f"not an events topic: {topic!r}")
    if len(payload) > MAX_PAYLOAD:
        raise RefusedMessage(f"message of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    try:
        obj = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RefusedMessage(f"not JSON: {exc}") from exc
    if isinstance(obj, dict):
        obj.setdefault("stage", f"{STAGE}:{parts[0]}")
    try:
        event = ev.from_dict(obj)
    except ev.EventError as exc:
        raise RefusedMessage(str(exc)) from exc
    if event.type not in DEVICE_EVENT_TOPICS:
        raise RefusedMessage(f"devices may not send {event.type!r} events")
    return parts[0], event


def command_for(event: Any) -> dict[str, Any] | None:
    """What a device is told when the agent produces `event` for one of its calls."""
    if isinstance(event, ev.BotReply):
        return {"type": "say", "call_id": event.call_id, "turn": event.turn, "text": event.text,
                "action": event.action, "ends_call": event.ends_call, "reply_event_id": event.event_id}
    if isinstance(event, ev.BargeIn):
        return {"type": "stop_audio", "call_id": event.call_id}
    if isinstance(event, ev.CallEnded):
        return {"type": "hangup", "call_id": event.call_id, "reason": event.reason,
                "reply_event_id": event.reply_event_id}
    return None


class EdgeLink:
    def __init__(self, bus: Bus, config: EdgeConfig | None = None) -> None:
        self.bus = bus
        self.config = config or EdgeConfig()
        self.devices: dict[str, str] = {}  # call id -> device id
        self.accepted = 0
        self.refused = 0
        self.commands_sent = 0
        self._client: aiomqtt.Client | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = asyncio.Event()
        self._group = f"{STAGE}-{uuid.uuid4().hex[:8]}"

    async def __aenter__(self) -> "EdgeLink":
        cfg = self.config
        self._client = aiomqtt.Client(cfg.host, cfg.port, username=cfg.username, password=cfg.password,
                                      identifier=cfg.client_id or f"dianxiao-{uuid.uuid4().hex[:8]}")
        await self._client.__aenter__()
        await self._client.subscribe(f"{cfg.prefix}/+/events", qos=1)
        consumer_ready = asyncio.Event()
        self._tasks = [asyncio.create_task(self._from_devices()),
                       asyncio.create_task(self._to_devices(consumer_ready))]
        await consumer_ready.wait()
        log.info("MQTT edge link up", broker=f"{cfg.host}:{cfg.port}", prefix=cfg.prefix)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.__aexit__(None, None, None)

    async def _from_devices(self) -> None:
        assert self._client is not None
        async for message in self._client.messages:
            topic = str(message.topic)
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            try:
                device, event = device_event(topic, payload, self.config.prefix)
            except RefusedMessage as exc:
                await self._refuse(topic, payload, str(exc))
                continue
            if isinstance(event, ev.CallStarted):
                self.devices[event.call_id] = device
            elif self.devices.get(event.call_id) not in (None, device):
                await self._refuse(topic, payload, f"call {event.call_id!r} belongs to another device")
                continue
            else:
                self.devices.setdefault(event.call_id, device)
            await self.bus.publish_event(DEVICE_EVENT_TOPICS[event.type], event)
            self.accepted += 1

    async def _refuse(self, topic: str, payload: bytes, reason: str) -> None:
        self.refused += 1
        log.warning("edge message refused", topic=topic, reason=reason[:300])
        dl = ev.DeadLetter(call_id="edge", stage=STAGE, source_topic=f"mqtt:{topic}", reason=reason,
                           consumer=self._group, raw=ev.raw_for_dead_letter(payload))
        await self.bus.publish_event(topics.DEAD_LETTERS, dl)
        parts = topic.split("/")
        if self._client is not None and len(parts) >= 2 and topic.startswith(self.config.prefix + "/"):
            device = topic[len(self.config.prefix) + 1 :].split("/")[0]
            if _DEVICE_ID.match(device):
                await self._client.publish(f"{self.config.prefix}/{device}/errors",
                                           json.dumps({"error": reason, "dead_letter": dl.event_id}), qos=1)

    async def _to_devices(self, ready: asyncio.Event) -> None:
        consumer = self.bus.consumer(self._group, [topics.REPLIES, topics.CONTROL], start="latest")
        await consumer.start()
        ready.set()
        try:
            while True:
                records = await consumer.getmany(timeout_ms=100)
                records.sort(key=lambda r: r.timestamp)
                for rec in records:
                    device = self.devices.get(rec.key)
                    if device is None:
                        continue
                    try:
                        event = ev.decode(rec.value)
                    except ev.EventError:
                        continue
                    if isinstance(event, ev.CallEnded) and event.stage.startswith(STAGE):
                        self.devices.pop(event.call_id, None)  # the device hung up itself
                        continue
                    command = command_for(event)
                    if command is None:
                        continue
                    assert self._client is not None
                    await self._client.publish(f"{self.config.prefix}/{device}/commands",
                                               json.dumps(command, ensure_ascii=False), qos=1)
                    self.commands_sent += 1
                    if command["type"] == "hangup":
                        self.devices.pop(event.call_id, None)
        finally:
            await consumer.stop()
