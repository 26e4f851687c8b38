"""A store device talks to the agent through a real mosquitto broker: it reports a call and what
the customer said, and receives the bot's replies as commands; bad messages are refused with a
reason and kept as dead letters."""

from __future__ import annotations

import asyncio
import json

import aiomqtt
import pytest

from agent import events as ev
from agent import topics
from connectors.mqtt.broker import local_mosquitto
from connectors.mqtt.edge import EdgeConfig, EdgeLink
from connectors.sip.peers import have
from tests.test_sip_calls import log_events

pytestmark = pytest.mark.skipif(not have("mosquitto"), reason="mosquitto not installed")


@pytest.fixture
def broker(tmp_path):
    with local_mosquitto(tmp_path / "mosquitto", limit_s=120) as port:
        yield port


async def next_message(client: aiomqtt.Client, timeout: float = 10.0) -> dict:
    async with asyncio.timeout(timeout):
        async for message in client.messages:
            return json.loads(message.payload)
    raise AssertionError("no message")


async def test_a_store_kiosk_reports_a_call_and_hears_the_bots_reply(text_pipeline, broker):
    bus = text_pipeline.bus
    async with EdgeLink(bus, EdgeConfig(port=broker)) as link:
        async with aiomqtt.Client("127.0.0.1", broker, identifier="kiosk-7") as kiosk:
            await kiosk.subscribe("dianxiao/edge/kiosk-7/commands", qos=1)
            started = ev.CallStarted(call_id="store-call-1", stage="kiosk", mode="text", direction="inbound")
            await kiosk.publish("dianxiao/edge/kiosk-7/events", started.model_dump_json(), qos=1)
            said = ev.TranscriptFinal(call_id="store-call-1", turn=1, seq=1, stage="kiosk", text="你好，你们的产品多少钱？",
                                      caused_by=started.event_id)
            await kiosk.publish("dianxiao/edge/kiosk-7/events", said.model_dump_json(), qos=1)
            command = await next_message(kiosk)
            assert command["type"] == "say" and command["call_id"] == "store-call-1" and command["turn"] == 1
            assert command["text"]
            await kiosk.publish("dianxiao/edge/kiosk-7/events",
                                ev.CallEnded(call_id="store-call-1", turn=1, stage="kiosk").model_dump_json(), qos=1)
            await asyncio.sleep(0.3)
        assert link.accepted == 3 and link.refused == 0
    replies = [e for e in log_events(bus, topics.REPLIES) if e.call_id == "store-call-1"]
    assert replies and replies[0].text == command["text"]  # the command is the bot's logged reply
    control = [e.type for e in log_events(bus, topics.CONTROL) if e.call_id == "store-call-1" and e.type != "call.outcome"]
    assert control[0] == "call.started" and control[-1] == "call.ended"


@pytest.mark.parametrize("payload,why", [
    (b"{not json", "not JSON"),
    (json.dumps({"type": "bot.reply", "call_id": "x", "text": "hi", "action": "a"}).encode(), "may not send"),
    (json.dumps({"type": "transcript.final", "call_id": "x"}).encode(), "invalid transcript.final"),
])
async def test_a_bad_device_message_is_refused_with_a_reason_and_kept(embedded_bus, broker, payload, why):
    async with EdgeLink(embedded_bus, EdgeConfig(port=broker)) as link:
        async with aiomqtt.Client("127.0.0.1", broker, identifier="till-2") as till:
            await till.subscribe("dianxiao/edge/till-2/errors", qos=1)
            await till.publish("dianxiao/edge/till-2/events", payload, qos=1)
            error = await next_message(till)
        assert why in error["error"]
        assert link.refused == 1 and link.accepted == 0
    dead = log_events(embedded_bus, topics.DEAD_LETTERS)
    assert len(dead) == 1 and dead[0].event_id == error["dead_letter"]
    assert dead[0].raw == payload.decode()  # the original message is kept, byte for byte


async def test_a_kiosk_customer_who_says_never_call_again_gets_the_goodbye_then_a_hangup_command(text_pipeline, broker):
    bus = text_pipeline.bus
    async with EdgeLink(bus, EdgeConfig(port=broker)):
        async with aiomqtt.Client("127.0.0.1", broker, identifier="kiosk-8") as kiosk:
            await kiosk.subscribe("dianxiao/edge/kiosk-8/commands", qos=1)
            started = ev.CallStarted(call_id="store-call-2", stage="kiosk", mode="text", direction="inbound")
            await kiosk.publish("dianxiao/edge/kiosk-8/events", started.model_dump_json(), qos=1)
            said = ev.TranscriptFinal(call_id="store-call-2", turn=1, seq=1, stage="kiosk", text="别再给我打电话了")
            await kiosk.publish("dianxiao/edge/kiosk-8/events", said.model_dump_json(), qos=1)
            say = await next_message(kiosk)
            hangup = await next_message(kiosk)
    assert say["type"] == "say" and say["ends_call"] is True
    # the device is told to hang up by the agent, on the goodbye it was just told to say
    assert hangup == {"type": "hangup", "call_id": "store-call-2", "reason": "bot_ended",
                      "reply_event_id": say["reply_event_id"]}
    ended = [e for e in log_events(bus, topics.CONTROL) if isinstance(e, ev.CallEnded)]
    assert [e.stage for e in ended] == ["hangup"]


async def test_a_key_pressed_on_a_kiosk_reaches_the_agent_as_dtmf(text_pipeline, broker):
    bus = text_pipeline.bus
    async with EdgeLink(bus, EdgeConfig(port=broker)) as link:
        async with aiomqtt.Client("127.0.0.1", broker, identifier="kiosk-9") as kiosk:
            await kiosk.subscribe("dianxiao/edge/kiosk-9/commands", qos=1)
            started = ev.CallStarted(call_id="store-call-3", stage="kiosk", mode="text", direction="inbound")
            await kiosk.publish("dianxiao/edge/kiosk-9/events", started.model_dump_json(), qos=1)
            key = ev.CallDtmf(call_id="store-call-3", stage="kiosk", digit="0", source="mqtt")
            await kiosk.publish("dianxiao/edge/kiosk-9/events", key.model_dump_json(), qos=1)
            say = await next_message(kiosk)
            if say["ends_call"]:  # a hand-over to a person ends this call: the hangup follows
                assert (await next_message(kiosk))["type"] == "hangup"
        assert link.refused == 0
    assert say["type"] == "say"
    understood = [e for e in log_events(bus, topics.NLU) if e.call_id == "store-call-3"]
    assert [[i.name for i in u.intents] for u in understood] == [["request_human"]]
    assert say["action"] == [e for e in log_events(bus, topics.REPLIES) if e.call_id == "store-call-3"][0].action
