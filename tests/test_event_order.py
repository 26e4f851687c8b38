"""A stage that reads two topics sees one call's events in the order they were produced.

Issue 16 (press-9 goodbye over a provider websocket, closed with 0 media messages): the hangup
stage reads call.control and bot.replies.  When its fetch held both the call's CallStarted and
the goodbye (a busy event loop let the dtmf -> dst -> policy hops run first), the embedded bus
handed them back grouped by topic-partition, in the order of a set of partitions, so the
goodbye could come first: the stage did not know yet that the call was an audio call, ended it
at once, and the connector closed the stream before the goodbye's first frame was queued.
"""

from __future__ import annotations

import asyncio

from agent import events as ev
from agent import topics
from agent.bus import EmbeddedBus
from agent.runner import StageRunner
from agent.stages.hangup import HangupStage
from tests.bus_helpers import drain as _drain


async def test_a_consumer_of_two_topics_gets_one_call_s_records_in_production_order(tmp_path):
    bus = EmbeddedBus(tmp_path / "bus.sqlite", partitions=4)
    await bus.start()
    # control, then replies, then replies, then control: neither topic-first order is right
    produced = [("call.control", b"started"), ("bot.replies", b"reply-1"), ("bot.replies", b"goodbye"),
                ("call.control", b"ended")]
    for topic, value in produced:
        await bus.publish(topic, "call-1", value)
    c = bus.consumer("g", ["call.control", "bot.replies"])
    await c.start()
    got = await _drain(c, 4)
    assert [(r.topic, r.value) for r in got] == produced
    await bus.close()


async def test_a_capped_fetch_returns_the_oldest_records_of_all_partitions(tmp_path):
    bus = EmbeddedBus(tmp_path / "bus.sqlite", partitions=4)
    await bus.start()
    produced = []
    for i in range(12):
        topic = "call.control" if i % 3 == 0 else "bot.replies"
        await bus.publish(topic, f"call-{i % 5}", f"m{i}".encode())
        produced.append(f"m{i}".encode())
    c = bus.consumer("g", ["call.control", "bot.replies"])
    await c.start()
    first = await c.getmany(timeout_ms=50, max_records=5)
    assert [r.value for r in first] == produced[:5]  # never a later record while an older one waits
    rest = await _drain(c, 7)
    assert [r.value for r in rest] == produced[5:]
    await bus.close()


async def test_a_goodbye_fetched_with_its_call_s_start_waits_for_the_audio_to_be_played(tmp_path):
    """The stage's first fetch holds each call's CallStarted(audio) and its goodbye together;
    with 16 partitions, whichever order a set puts them in, some calls' replies partition comes
    before their control partition.  No call may end before its ReplyPlayed."""
    bus = EmbeddedBus(tmp_path / "bus.sqlite", partitions=16)
    await bus.start()
    goodbyes = {}
    for n in range(48):
        call_id = f"call-{n}"
        await bus.publish_event(topics.CONTROL, ev.CallStarted(call_id=call_id, stage="sip", mode="audio"))
        reply = ev.BotReply(call_id=call_id, stage="policy", turn=1, text="再见", action="exit_do_not_call",
                            ends_call=True)
        await bus.publish_event(topics.REPLIES, reply)
        goodbyes[call_id] = reply.event_id
    runner = StageRunner(HangupStage(), bus)
    task = asyncio.create_task(runner.run())
    await runner.ready.wait()
    for _ in range(500):  # until the stage has handled all 96 records (a wait, not a time limit)
        if runner.handled >= 96:
            break
        await asyncio.sleep(0.02)
    assert runner.handled >= 96
    assert all(runner.contexts[c].state.mode == "audio" for c in goodbyes)
    early = [e.call_id for e in await _control(bus) if isinstance(e, ev.CallEnded)]
    assert early == []  # nobody's goodbye was cut off
    # the connector played one goodbye out: that call, and only that one, ends
    await bus.publish_event(topics.CONTROL, ev.ReplyPlayed(call_id="call-7", stage="sip", turn=1,
                                                          reply_event_id=goodbyes["call-7"], frames=50))
    for _ in range(500):
        ended = [e for e in await _control(bus) if isinstance(e, ev.CallEnded)]
        if ended:
            break
        await asyncio.sleep(0.02)
    assert [(e.call_id, e.reply_event_id) for e in ended] == [("call-7", goodbyes["call-7"])]
    runner.stop()
    await task
    await bus.close()


async def _control(bus: EmbeddedBus) -> list:
    out = []
    for p in range(bus.partitions):
        tp = (topics.CONTROL, p)
        out += [ev.decode(r.value) for r in await bus.read_range(tp, 0, await bus.end_offset(tp))]
    return out
