"""The text pipeline on Kafka (a real Tansu broker on 127.0.0.1): in one process, and as separate
OS processes (`dianxiao stage NAME --bus kafka://…`) that scale out as consumer-group members,
survive one member being SIGKILLed mid-stream, and stop cleanly on SIGTERM.  Also: a broker that
goes away is a clear BusError, not a hang."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from agent import events as ev
from agent import topics
from agent.bus import BusError
from agent.bus.kafka import KafkaBus
from agent.settings import Settings
from agent.testing import running_pipeline
from agent.textcall import ReplyWaiter, run_text_call, say
from kafka_broker import Broker, free_port, start_tansu, tansu_broker  # noqa: F401  (fixture)

pytestmark = pytest.mark.kafka

BIN = Path(sys.executable).with_name("dianxiao")
FOUR_TURNS = ["你好", "我想要一个云服务器，要支持1000并发", "那个的年费是多少？", "好的，谢谢，先这样吧"]
FAST_GROUP = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 200, "rebalance_timeout_ms": 2000}


def kafka_bus_for(broker: Broker, prefix: str, **kw: Any) -> KafkaBus:
    # idempotent=False: Tansu's memory engine rejects InitProducerId (see docs/kafka.md).
    return KafkaBus(broker.bootstrap, partitions=4, idempotent=False, topic_prefix=prefix,
                    broker_timeout_s=kw.pop("broker_timeout_s", 10.0), consumer_options=FAST_GROUP, **kw)


async def all_events(bus: KafkaBus, topic: str) -> list[Any]:
    out = []
    for tp in await bus.topic_partitions(topic):
        for rec in await bus.read_range(tp, 0, await bus.end_offset(tp)):
            out.append(ev.decode(rec.value))
    return out


async def test_a_four_turn_text_call_runs_through_the_stages_over_kafka(tansu_broker: Broker) -> None:
    bus = kafka_bus_for(tansu_broker, f"p{uuid.uuid4().hex[:8]}.")
    await bus.start()
    try:
        async with running_pipeline(bus, Settings()):
            call = await run_text_call(bus, FOUR_TURNS, timeout=15)
        assert [r.turn for r in call.replies] == [1, 2, 3, 4]
        fee_reply = call.replies[2]
        assert "云服务器" in fee_reply.text, fee_reply.text  # "that one" = the product of turn 2
        nlu = [e for e in await all_events(bus, topics.NLU) if e.call_id == call.call_id]
        assert [e.turn for e in nlu] == [1, 2, 3, 4] and all(e.intents for e in nlu)
        states = [e for e in await all_events(bus, topics.DIALOGUE) if e.call_id == call.call_id]
        assert len(states) == 4
        assert await all_events(bus, topics.DEAD_LETTERS) == []
    finally:
        await bus.close()


# --- stages as separate OS processes ----------------------------------------------------


class StageProcess:
    def __init__(self, name: str, member: str, broker: Broker, prefix: str, tmp: Path) -> None:
        self.name, self.member = name, member
        env = {
            **os.environ,
            "DIANXIAO_KAFKA_IDEMPOTENT": "false",
            "DIANXIAO_KAFKA_TOPIC_PREFIX": prefix,
            "DIANXIAO_KAFKA_SESSION_TIMEOUT_MS": "2000",
            "DIANXIAO_KAFKA_HEARTBEAT_INTERVAL_MS": "200",
            "DIANXIAO_LOG_FORMAT": "json",
            "DIANXIAO_LOG_LEVEL": "INFO",
            "DIANXIAO_DATA_DIR": str(tmp / "data"),
        }
        self.log_path = tmp / f"{member}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(BIN), "stage", name, "--bus", broker.url, "--member", member],
            env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def assignment(self, topic: str = topics.TRANSCRIPTS) -> set[tuple[str, int]] | None:
        """The latest assignment of `topic` this member logged (None before its first).  (Every
        stage's group also reads call.control, for the calls' ends: the same partition numbers.)"""
        found = [l for l in self.lines() if l.get("event") == "partitions assigned"]
        return {tuple(p) for p in found[-1]["partitions"] if p[0] == topic} if found else None

    def started(self) -> bool:
        return any(l.get("event") == "stage started" for l in self.lines())

    def finish(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()


async def until(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


async def test_stages_as_processes_scale_out_and_survive_a_killed_member(tansu_broker: Broker, tmp_path: Path) -> None:
    prefix = f"x{uuid.uuid4().hex[:8]}."
    procs = [
        StageProcess("nlu", "nlu-1", tansu_broker, prefix, tmp_path),
        StageProcess("nlu", "nlu-2", tansu_broker, prefix, tmp_path),
        StageProcess("dst", "dst-1", tansu_broker, prefix, tmp_path),
        StageProcess("policy", "policy-1", tansu_broker, prefix, tmp_path),
    ]
    nlu1, nlu2 = procs[0], procs[1]
    bus = kafka_bus_for(tansu_broker, prefix)
    await bus.start()
    try:
        await until(lambda: all(p.started() for p in procs), 40, "all stage processes to join their groups")
        every = {(topics.TRANSCRIPTS, p) for p in range(4)}

        def split() -> bool:
            a, b = nlu1.assignment(), nlu2.assignment()
            return bool(a) and bool(b) and not (a & b) and (a | b) == every  # type: ignore[operator]

        await until(split, 20, "the two nlu members to split the transcript partitions")
        victim_partitions = nlu2.assignment()

        # Twelve concurrent callers (their call ids spread over all partitions).
        async with ReplyWaiter(bus) as waiter:

            async def caller(i: int, turns: list[str]) -> Any:
                return await run_text_call(bus, turns, call_id=f"proc-call-{i}", waiter=waiter, timeout=30)

            first = await asyncio.gather(*(caller(i, FOUR_TURNS[:2]) for i in range(12)))
            assert all([r.turn for r in c.replies] == [1, 2] for c in first)
            assert {c.call_id for c in first} and all(c.replies[1].text for c in first)

            # nlu-2 dies without a goodbye (no commit, no LeaveGroup) while calls are going on.
            second = asyncio.gather(*(caller(100 + i, FOUR_TURNS) for i in range(12)))
            await asyncio.sleep(0.3)
            assert nlu2.finish(signal.SIGKILL) == -signal.SIGKILL
            calls = await second

        # Every turn of every call was answered: nothing the dead member held was lost.
        assert all([r.turn for r in c.replies] == [1, 2, 3, 4] for c in calls)
        assert all("云服务器" in c.replies[2].text for c in calls)
        await until(lambda: nlu1.assignment() == every, 10, "nlu-1 to own every transcript partition")
        assert victim_partitions and victim_partitions <= (nlu1.assignment() or set())
        # The survivor may see some transcripts twice (at-least-once), but each turn was
        # understood once as far as the next stage is concerned: one reply per turn.
        replies = [e for e in await all_events(bus, topics.REPLIES) if e.call_id.startswith("proc-call-1")]
        per_turn: dict[tuple[str, int], set[str]] = {}
        for r in replies:
            per_turn.setdefault((r.call_id, r.turn), set()).add(r.event_id)
        assert all(len(ids) == 1 for ids in per_turn.values()), "a re-handled input must give the same event id"
    finally:
        await bus.close()
        codes = {p.member: p.finish() for p in procs}
    # SIGTERM: finish the batch in hand, commit, leave the group, exit 0.
    assert all(code == 0 for m, code in codes.items() if m != "nlu-2"), codes
    assert all(any(l.get("event") == "stage stopped" for l in p.lines()) for p in procs if p is not nlu2)


# --- a broker that goes away ------------------------------------------------------------


async def test_a_broker_gone_for_longer_than_a_stage_rides_out_is_a_clear_error_not_a_hang() -> None:
    with start_tansu() as broker:
        bus = kafka_bus_for(broker, "gone.", broker_timeout_s=1.0, outage_s=3.0)
        await bus.start()
        consumer = bus.consumer("g-gone", ["gone.topic"])
        await consumer.start()
        await bus.publish("gone.topic", "k", b"v")
        broker.process.kill()
        broker.process.wait()
    started = time.monotonic()
    with pytest.raises(BusError, match="127.0.0.1"):
        await bus.publish("gone.topic", "k", b"after")
    with pytest.raises(BusError):
        for _ in range(200):
            await consumer.getmany(timeout_ms=100)
    assert time.monotonic() - started < 15
    await asyncio.wait_for(bus.close(), 20)


async def test_an_idempotent_producer_on_tansu_fails_with_advice() -> None:
    with start_tansu() as broker:
        bus = KafkaBus(broker.bootstrap, idempotent=True, create_topics=(), broker_timeout_s=3.0)
        with pytest.raises(BusError, match="kafka_idempotent=false"):
            await bus.start()


async def test_no_broker_at_the_address_is_a_clear_error_at_start() -> None:
    bus = KafkaBus(f"127.0.0.1:{free_port()}", idempotent=False, create_topics=(), broker_timeout_s=3.0)
    started = time.monotonic()
    with pytest.raises(BusError, match="127.0.0.1"):
        await bus.start()
    assert time.monotonic() - started < 10


async def test_a_dst_process_killed_after_turn_two_is_replaced_and_the_call_ends_in_the_same_state(
    tansu_broker: Broker, tmp_path: Path
) -> None:
    prefix = f"k{uuid.uuid4().hex[:8]}."
    bus = kafka_bus_for(tansu_broker, prefix)
    await bus.start()
    dst = StageProcess("dst", "dst-a", tansu_broker, prefix, tmp_path)
    replacement: StageProcess | None = None
    try:
        async with running_pipeline(bus, Settings(), stages=["nlu", "policy"]):
            await until(dst.started, 40, "the dst process to join its group")
            async with ReplyWaiter(bus) as waiter:
                reference = await run_text_call(bus, FOUR_TURNS, call_id="ref-call", waiter=waiter, timeout=30)
                assert len(reference.replies) == 4

                def two_turns(turn: int, _: list[ev.BotReply]) -> str | None:
                    return FOUR_TURNS[turn - 1] if turn <= 2 else None

                first = await run_text_call(bus, two_turns, call_id="kill-call", waiter=waiter, hang_up=False, timeout=30)
                assert len(first.replies) == 2
                assert dst.finish(signal.SIGKILL) == -signal.SIGKILL  # no commit, no goodbye
                # A brand-new process: its only way to know turns 1-2 is the log on Kafka.
                replacement = StageProcess("dst", "dst-b", tansu_broker, prefix, tmp_path)
                await until(replacement.started, 40, "the replacement dst to join")
                for n in (3, 4):
                    await say(bus, "kill-call", n, FOUR_TURNS[n - 1])
                    await waiter.wait("kill-call", n, timeout=30)
        states = {c: [e for e in await all_events(bus, topics.DIALOGUE) if e.call_id == c] for c in ("ref-call", "kill-call")}
    finally:
        await bus.close()
        dst.finish()
        if replacement:
            assert replacement.finish() == 0
    assert [s.turn for s in states["kill-call"]][-2:] == [3, 4]
    assert states["kill-call"][-1].state == states["ref-call"][-1].state
    assert "cloud_server" in json.dumps(states["kill-call"][-1].state)  # turn 2's product survived
