"""Copies every topic into a call-log file, for deployments where the bus is Kafka.

On the embedded bus the bus's own SQLite file is the call log, so this is only needed with
Kafka: run `dianxiao record --bus kafka://… --log calls.sqlite` as one more consumer group.
Rows keep the broker's (topic, partition, offset), so re-delivery after a crash is a no-op
(INSERT OR IGNORE) and the copy is exactly the broker's log."""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from agent import topics
from agent.bus.base import Bus
from agent.bus.embedded import open_log_db
from agent.health import Health

log = structlog.get_logger("dianxiao.recorder")


class Recorder:
    def __init__(self, bus: Bus, path: str | Path, group: str = "call-log-recorder",
                 health: Health | None = None) -> None:
        self.bus = bus
        # /livez and /readyz (agent/health.py) watch the copy loop, as they watch a stage's.
        self.health = (health or Health()).component("recorder")
        self.path = Path(path)
        self.group = group
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()
        self.copied = 0

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        db = open_log_db(self.path)
        db.execute("INSERT OR IGNORE INTO meta VALUES ('partitions', ?)", (str(self.bus.partitions),))
        consumer = self.bus.consumer(self.group, topics.ALL)
        await consumer.start()
        self.ready.set()
        self.health.started(consumer.assignment)
        try:
            while not self._stop.is_set():
                self.health.beat()
                records = await consumer.getmany(timeout_ms=200, max_records=1000)
                if not records:
                    continue
                with db:
                    db.executemany(
                        "INSERT OR IGNORE INTO log VALUES (?,?,?,?,?,?)",
                        [(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp) for r in records],
                    )
                self.copied += len(records)
                offsets: dict[tuple[str, int], int] = {}
                for r in records:
                    offsets[(r.topic, r.partition)] = max(offsets.get((r.topic, r.partition), 0), r.offset + 1)
                await consumer.commit(offsets)
        finally:
            self.health.stopped()
            await consumer.stop()
            db.close()
            log.info("recorder stopped", copied=self.copied)
