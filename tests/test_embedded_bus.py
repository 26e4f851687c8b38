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


async def test_records_another_process_appends_to_the_shared_file_are_delivered(tmp_path):
    """This process skips partitions it knows hold nothing new; a write by another connection
    (the caller or the console in another process) must still be seen, without a publish here."""
    path = tmp_path / "bus.sqlite"
    here, there = EmbeddedBus(path, partitions=4), EmbeddedBus(path, partitions=4)
    await here.start()
    await there.start()
    await here.publish("t", "call-a", b"ours")
    c = here.consumer("g", ["t"])
    await c.start()
    assert [r.value for r in await _drain(c, 1)] == [b"ours"]
    assert await c.getmany(timeout_ms=50) == []  # every partition now known to be read to its end
    await there.publish("t", "call-a", b"theirs")  # same partition as ours ...
    await there.publish("t", "call-b", b"theirs too")  # ... and maybe another
    got = await _drain(c, 2)
    assert sorted(r.value for r in got) == [b"theirs", b"theirs too"]
    await here.close()
    await there.close()


async def test_a_backlog_larger_than_one_fetch_is_delivered_to_the_last_record(tmp_path):
    path = tmp_path / "bus.sqlite"
    bus = EmbeddedBus(path, partitions=2)
    await bus.start()
    for i in range(300):
        await bus.publish("t", f"call-{i % 7}", str(i).encode())
    await bus.close()
    bus = EmbeddedBus(path)  # a restart: nothing is known about the partitions' ends
    await bus.start()
    c = bus.consumer("g", ["t"])
    await c.start()
    seen = []
    while len(seen) < 300:
        batch = await c.getmany(timeout_ms=200, max_records=37)
        assert batch, f"stalled after {len(seen)} of 300 records"
        seen += batch
    assert sorted(int(r.value) for r in seen) == list(range(300))
    await bus.close()


async def test_a_publish_wakes_only_the_consumers_of_its_topic(embedded_bus):
    """Audio frames are published 50 times a second per call; the NLU must not wake for each."""
    import asyncio

    audio = embedded_bus.consumer("vad", ["audio"])
    words = embedded_bus.consumer("nlu", ["words"])
    await audio.start()
    await words.start()
    waiting = asyncio.create_task(words.getmany(timeout_ms=5000))
    await asyncio.sleep(0.05)
    fetched = []
    real_fetch = embedded_bus._fetch

    async def counting(positions, max_records):
        fetched.append(set(positions))
        return await real_fetch(positions, max_records)

    embedded_bus._fetch = counting
    for _ in range(20):
        await embedded_bus.publish("audio", "call-a", b"frame")
        await asyncio.sleep(0)
    await asyncio.sleep(0.02)
    assert not any(tp[0] == "words" for ps in fetched for tp in ps)  # the NLU slept through them
    await embedded_bus.publish("words", "call-a", b"hello")
    assert [r.value for r in await waiting] == [b"hello"]
