"""The embedded bus keeps its promises across a process restart (durable log, committed offsets)."""

from __future__ import annotations

from agent.bus import EmbeddedBus
from agent.bus.base import partition_for


async def _drain(consumer, want: int) -> list:
    got = []
    for _ in range(40):
        got += await consumer.getmany(timeout_ms=50)
        if len(got) >= want:
            break
    return got


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
