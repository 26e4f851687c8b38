"""The embedded bus keeps its promises across a process restart (durable log, committed offsets)."""

from __future__ import annotations

from agent.bus import EmbeddedBus
from agent.bus.base import partition_for
from tests.bus_helpers import drain as _drain


async def test_a_restarted_process_resumes_from_the_committed_offset(tmp_path):
    path = tmp_path / "bus.sqlite"
    bus = EmbeddedBus(path, partitions=2)
    await bus.start()
    for i in range(10):
        await bus.publish("t", "call-a", f"m{i}".encode())
    c = bus.consumer("g", ["t"])
    await c.start()
    first = await _drain(c, 4)
    # handle 4, commit them, and "crash" with the rest read but not committed
    tp = ("t", partition_for("call-a", 2))
    await c.commit({tp: first[3].offset + 1})
    await bus.close()

    bus2 = EmbeddedBus(path, partitions=8)  # the stored partition count wins
    await bus2.start()
    assert bus2.partitions == 2
    c2 = bus2.consumer("g", ["t"])
    await c2.start()
    rest = await _drain(c2, 6)
    assert [r.value for r in rest] == [f"m{i}".encode() for i in range(4, 10)]
    await bus2.publish("t", "call-a", b"m10")
    assert (await _drain(c2, 1))[0].offset == 10
    await bus2.close()


async def test_start_latest_skips_history(embedded_bus):
    await embedded_bus.publish("t", "k", b"old")
    c = embedded_bus.consumer("tail", ["t"], start="latest")
    await c.start()
    assert await c.getmany(timeout_ms=50) == []
    await embedded_bus.publish("t", "k", b"new")
    assert [r.value for r in await _drain(c, 1)] == [b"new"]


async def test_the_recorder_copies_every_topic_into_a_call_log_once(embedded_bus, tmp_path):
    """With Kafka the call log is a recorder's copy; a re-delivered record is not copied twice."""
    import asyncio

    from agent import events as ev
    from agent import topics
    from agent.calllog import CallLog
    from agent.recorder import Recorder

    await embedded_bus.publish_event(topics.CONTROL, ev.CallStarted(call_id="c1"))
    await embedded_bus.publish_event(topics.TRANSCRIPTS, ev.TranscriptFinal(call_id="c1", turn=1, text="你好"))
    rec = Recorder(embedded_bus, tmp_path / "calls.sqlite")
    task = asyncio.create_task(rec.run())
    await rec.ready.wait()
    for _ in range(40):
        if rec.copied >= 2:
            break
        await asyncio.sleep(0.05)
    rec.stop()
    await task
    # a second recorder in a fresh group re-reads everything: still one copy of each record
    rec2 = Recorder(embedded_bus, tmp_path / "calls.sqlite", group="other")
    task = asyncio.create_task(rec2.run())
    await rec2.ready.wait()
    await asyncio.sleep(0.3)
    rec2.stop()
    await task
    log = CallLog(tmp_path / "calls.sqlite")
    assert [type(e).__name__ for e in log.events("c1")] == ["CallStarted", "TranscriptFinal"]
    assert log.turns("c1")[0].caller_text == "你好"
    log.close()
