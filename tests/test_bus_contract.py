"""The bus contract, run on both transports: the embedded SQLite log and Kafka (a real Tansu
broker on 127.0.0.1, started by tests/kafka_broker.py).

Every story here is what a stage relies on: one call's events arrive in order, a restarted
stage resumes where its group committed, members of a group share the partitions, a member
that dies loses nothing (at-least-once; repeats are dropped by event id), and a malformed
message ends in dead letters while the stage goes on.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent import events as ev
from agent import topics
from agent.bus import Bus, Consumer, EmbeddedBus, Record
from agent.runner import StageRunner
from agent.stages.base import CallContext, Emit, Stage
from kafka_broker import Broker, tansu_broker  # noqa: F401  (the fixture, used by `bus_env`)

PARTITIONS = 4
IN, OUT = "contract.in", "contract.out"

# Short group timings so a Kafka rebalance takes about a second instead of the default ~10 s.
KAFKA_TEST_CONSUMER = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 200, "rebalance_timeout_ms": 2000}


def kafka_test_bus(broker: Broker, prefix: str, **kw: Any) -> Bus:
    from agent.bus.kafka import KafkaBus

    # Tansu's memory engine rejects InitProducerId, so the idempotent producer is off here;
    # consumers de-duplicate by event id either way.
    return KafkaBus(
        broker.bootstrap,
        partitions=PARTITIONS,
        idempotent=False,
        topic_prefix=prefix,
        broker_timeout_s=kw.pop("broker_timeout_s", 10.0),
        consumer_options=KAFKA_TEST_CONSUMER,
        create_topics=(),
        **kw,
    )


@dataclass
class BusEnv:
    """Makes bus instances over one durable store, as successive processes would see it."""

    transport: str
    make: Callable[[], Bus]

    @asynccontextmanager
    async def bus(self) -> AsyncIterator[Bus]:
        bus = self.make()
        await bus.start()
        try:
            yield bus
        finally:
            await bus.close()


@pytest.fixture(params=["embedded", "kafka"])
def bus_env(request: pytest.FixtureRequest, tmp_path: Path) -> BusEnv:
    if request.param == "embedded":
        return BusEnv("embedded", lambda: EmbeddedBus(tmp_path / "bus.sqlite", partitions=PARTITIONS))
    broker: Broker = request.getfixturevalue("tansu_broker")
    prefix = f"t{uuid.uuid4().hex[:8]}."  # each test gets its own topics on the shared broker
    return BusEnv("kafka", lambda: kafka_test_bus(broker, prefix))


def group_name() -> str:
    return f"g-{uuid.uuid4().hex[:8]}"


class Pump:
    """A group member that reads, 'handles' (records what it saw) and commits each batch."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.seen: list[Record] = []
        self.die_holding_next_batch = False
        self.dropped: list[Record] = []
        self._stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        while not self._stop.is_set():
            records = await self.consumer.getmany(timeout_ms=100)
            if not records:
                continue
            if self.die_holding_next_batch:
                # Crash between fetching and handling: nothing handled, nothing committed.
                self.dropped = records
                return
            self.seen.extend(records)
            offsets = {}
            for r in records:
                offsets[(r.topic, r.partition)] = r.offset + 1
            await self.consumer.commit(offsets)

    def start(self) -> "Pump":
        self.task = asyncio.create_task(self.run())
        return self

    async def stop(self) -> None:
        self._stop.set()
        if self.task:
            await self.task
        await self.consumer.stop()


async def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def drain(consumer: Consumer, want: int, timeout: float = 15.0) -> list[Record]:
    out: list[Record] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(out) < want and asyncio.get_running_loop().time() < deadline:
        out.extend(await consumer.getmany(timeout_ms=100))
    return out


def values(records: list[Record]) -> list[str]:
    return [r.value.decode() for r in records]


# --- the stories ----------------------------------------------------------------------


async def test_one_calls_events_arrive_in_the_order_they_were_published(bus_env: BusEnv) -> None:
    async with bus_env.bus() as bus:
        calls = [f"call-{i}" for i in range(6)]
        sent = [(IN, calls[i % 6], f"{calls[i % 6]}:{i // 6}".encode()) for i in range(60)]
        await bus.publish_many(sent[:30])
        for item in sent[30:]:
            await bus.publish(*item)
        consumer = bus.consumer(group_name(), [IN])
        await consumer.start()
        got = await drain(consumer, 60)
        await consumer.stop()

    assert sorted(values(got)) == sorted(v.decode() for _, _, v in sent)
    for call in calls:
        mine = [r for r in got if r.key == call]
        assert [int(v.split(":")[1]) for v in values(mine)] == list(range(10)), call
        assert len({r.partition for r in mine}) == 1, "a call's events must share one partition"
    for p in range(PARTITIONS):
        offsets = [r.offset for r in got if r.partition == p]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)


async def test_a_restarted_member_resumes_from_its_groups_committed_offsets(bus_env: BusEnv) -> None:
    group = group_name()
    async with bus_env.bus() as bus:
        await bus.publish_many([(IN, f"c{i}", f"old-{i}".encode()) for i in range(12)])
        first = bus.consumer(group, [IN])
        await first.start()
        got = await drain(first, 12)
        await first.commit({(r.topic, r.partition): r.offset + 1 for r in got})
        await first.stop()
        assert sorted(values(got)) == sorted(f"old-{i}" for i in range(12))
        ends = {p: await bus.end_offset((IN, p)) for p in range(PARTITIONS)}

    # A new process (a new bus object over the same log / broker) with the same group.
    async with bus_env.bus() as bus:
        for p in range(PARTITIONS):
            assert await bus.committed(group, (IN, p)) == ends[p]
        await bus.publish_many([(IN, f"c{i}", f"new-{i}".encode()) for i in range(8)])
        second = bus.consumer(group, [IN])
        await second.start()
        again = await drain(second, 8)
        again += await second.getmany(timeout_ms=300)  # nothing old may trail in
        await second.stop()
    assert sorted(values(again)) == sorted(f"new-{i}" for i in range(8))


async def test_an_uncommitted_batch_is_delivered_again_after_a_restart(bus_env: BusEnv) -> None:
    group = group_name()
    async with bus_env.bus() as bus:
        await bus.publish_many([(IN, "one-call", f"e{i}".encode()) for i in range(6)])
        member = bus.consumer(group, [IN])
        await member.start()
        got = await drain(member, 6)
        # Handled the first four only, then died before committing the rest.
        await member.commit({(got[3].topic, got[3].partition): got[3].offset + 1})
        await member.stop()
        member = bus.consumer(group, [IN])
        await member.start()
        again = await drain(member, 2)
        await member.stop()
    assert values(again) == ["e4", "e5"]


async def test_two_members_of_one_group_split_the_partitions(bus_env: BusEnv) -> None:
    group = group_name()
    async with bus_env.bus() as bus:
        a = Pump(bus.consumer(group, [IN, OUT], member="a"))
        b = Pump(bus.consumer(group, [IN, OUT], member="b"))
        await a.consumer.start()
        await b.consumer.start()
        a.start(), b.start()
        await wait_until(
            lambda: len(a.consumer.assignment()) + len(b.consumer.assignment()) == 2 * PARTITIONS
            and bool(a.consumer.assignment())
            and bool(b.consumer.assignment()),
            15,
            "both members to hold partitions",
        )
        sa, sb = a.consumer.assignment(), b.consumer.assignment()
        assert not sa & sb
        assert sa | sb == {(t, p) for t in (IN, OUT) for p in range(PARTITIONS)}
        # Co-partitioned: a member holds the same partition numbers of every topic it reads,
        # so one call's control events and its transcripts reach the same member.
        assert {p for t, p in sa if t == IN} == {p for t, p in sa if t == OUT}

        await bus.publish_many([(IN, f"call-{i}", f"v{i}".encode()) for i in range(40)])
        await wait_until(lambda: len(a.seen) + len(b.seen) >= 40, 15, "all records")
        await a.stop()
        await b.stop()
    assert a.seen and b.seen, "both members must have done some of the work"
    assert all((r.topic, r.partition) in sa for r in a.seen)
    assert all((r.topic, r.partition) in sb for r in b.seen)
    assert sorted(values(a.seen + b.seen)) == sorted(f"v{i}" for i in range(40))


async def test_a_member_that_dies_mid_stream_loses_nothing(bus_env: BusEnv) -> None:
    group = group_name()
    async with bus_env.bus() as bus:
        a = Pump(bus.consumer(group, [IN], member="a"))
        b = Pump(bus.consumer(group, [IN], member="b"))
        await a.consumer.start()
        await b.consumer.start()
        a.start(), b.start()
        await wait_until(lambda: a.consumer.assignment() and b.consumer.assignment(), 15, "a split group")

        counter = itertools.count()

        async def produce(n: int) -> None:
            for _ in range(n):
                i = next(counter)
                await bus.publish(IN, f"call-{i % 16}", f"ev-{i}".encode())
                await asyncio.sleep(0.002)

        await produce(60)
        await wait_until(lambda: b.seen, 10, "b to handle something")
        b.die_holding_next_batch = True
        await produce(60)  # b dies holding one of these batches
        await b.task
        assert b.dropped, "b must die holding an unhandled, uncommitted batch"
        await b.consumer.stop()
        await wait_until(lambda: len(a.consumer.assignment()) == PARTITIONS, 15, "a to take over b's partitions")
        await produce(30)
        everything = {f"ev-{i}" for i in range(150)}
        await wait_until(lambda: set(values(a.seen + b.seen)) >= everything, 20, "every event to be handled")
        await a.stop()

    handled = values(a.seen + b.seen)
    assert set(handled) == everything  # at least once ...
    assert set(values(b.dropped)) <= set(values(a.seen)), "the dead member's batch went to the survivor"


async def test_a_new_group_starting_at_latest_sees_only_what_comes_next(bus_env: BusEnv) -> None:
    async with bus_env.bus() as bus:
        await bus.publish_many([(IN, f"c{i}", b"before") for i in range(8)])
        tail = bus.consumer(group_name(), [IN], start="latest")
        await tail.start()
        await bus.publish_many([(IN, f"c{i}", b"after") for i in range(8)])
        got = await drain(tail, 8)
        got += await tail.getmany(timeout_ms=300)
        await tail.stop()
        # "latest" only applies where the group has committed nothing: a group with commits
        # resumes from them.
        group = group_name()
        first = bus.consumer(group, [IN])
        await first.start()
        early = await drain(first, 16)
        # It handled (and committed) only the first record of each partition.
        firsts = {}
        for r in early:
            firsts.setdefault((r.topic, r.partition), r)
        await first.commit({tp: r.offset + 1 for tp, r in firsts.items()})
        await first.stop()
        resumed = bus.consumer(group, [IN], start="latest")
        await resumed.start()
        rest = await drain(resumed, 16 - len(firsts))
        rest += await resumed.getmany(timeout_ms=300)
        await resumed.stop()
    assert values(got) == ["after"] * 8
    assert len(early) == 16
    assert sorted(r.offset for r in rest) == sorted(r.offset for r in early if r not in firsts.values())


async def test_read_range_returns_exactly_the_requested_offsets(bus_env: BusEnv) -> None:
    async with bus_env.bus() as bus:
        await bus.publish_many([(IN, "the-call", f"r{i}".encode()) for i in range(10)])
        parts = await bus.topic_partitions(IN)
        assert parts == [(IN, p) for p in range(PARTITIONS)]
        (tp,) = [tp for tp in parts if await bus.end_offset(tp) > 0]
        assert await bus.end_offset(tp) == 10
        middle = await bus.read_range(tp, 3, 7)
        assert [r.offset for r in middle] == [3, 4, 5, 6]
        assert values(middle) == ["r3", "r4", "r5", "r6"]
        assert all(r.key == "the-call" and r.topic == IN and r.timestamp > 0 for r in middle)
        assert await bus.read_range(tp, 5, 5) == []
        assert values(await bus.read_range(tp, 8, 100)) == ["r8", "r9"]
        empty = next(p for p in parts if p != tp)
        assert await bus.end_offset(empty) == 0 and await bus.read_range(empty, 0, 5) == []


class Echo(Stage):
    """Repeats each caller transcript; blows up on the text 'boom' (a buggy handler)."""

    name = "echo"
    reads = (IN,)
    writes = (OUT,)

    def handle(self, event: Any, ctx: CallContext) -> list[Emit]:
        if event.text == "boom":
            raise ValueError("cannot echo a bang")
        return [Emit(OUT, self.make(ev.TranscriptFinal, event, ctx, 0, text=f"echo: {event.text}"))]


async def test_a_malformed_message_goes_to_dead_letters_and_the_stage_goes_on(bus_env: BusEnv) -> None:
    async with bus_env.bus() as bus:
        runner = StageRunner(Echo(), bus, group=group_name())
        task = asyncio.create_task(runner.run())
        await runner.ready.wait()
        said = ev.TranscriptFinal(call_id="call-dl", turn=1, text="你好")
        await bus.publish(IN, "call-dl", b"\x00not an event{")
        await bus.publish_event(IN, ev.TranscriptFinal(call_id="call-dl", turn=2, text="boom"))
        await bus.publish_event(IN, said)
        watch = bus.consumer(group_name(), [OUT, topics.DEAD_LETTERS])
        await watch.start()
        got = [ev.decode(r.value) for r in await drain(watch, 3)]
        await watch.stop()
        runner.stop()
        await task
    echoes = [e for e in got if isinstance(e, ev.TranscriptFinal)]
    dead = [e for e in got if isinstance(e, ev.DeadLetter)]
    assert [e.text for e in echoes] == ["echo: 你好"] and echoes[0].caused_by == said.event_id
    assert len(dead) == 2
    assert {d.source_topic for d in dead} == {IN} and all(d.call_id == "call-dl" for d in dead)
    assert any("not an event" in d.raw for d in dead)
    assert any("cannot echo a bang" in d.reason for d in dead)
