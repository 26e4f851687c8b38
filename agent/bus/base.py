"""The bus contract: keyed, partitioned, append-only topics with consumer groups.

It is Kafka's model on purpose, so that the embedded bus and the Kafka bus are interchangeable:
a record's key is the call id, the key picks the partition (one call's events stay in order),
and a consumer group's members split the partitions between them.  Committed offsets are the
*next* offset to read, as in Kafka.
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from pydantic import BaseModel

from agent import events as ev
from agent.errors import OperatorError

TopicPartition = tuple[str, int]
RebalanceCallback = Callable[[set[TopicPartition]], Awaitable[None]]


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: str
    value: bytes
    timestamp: float = 0.0


class BusError(OperatorError, RuntimeError):
    """The transport failed (broker gone, log unwritable); the message says how, `hint` what
    to do (the CLI shows both as one line)."""


def partition_for(key: str, partitions: int) -> int:
    """Stable key -> partition for the embedded bus (Kafka uses its own murmur2 partitioner)."""
    return zlib.crc32(key.encode()) % partitions


class Consumer(ABC):
    """A member of a consumer group.  `getmany` returns records of the partitions currently
    assigned to this member; `commit` records progress (next offset to read)."""

    group: str
    topics: tuple[str, ...]

    def __init__(self) -> None:
        self.on_assign: RebalanceCallback | None = None
        self.on_revoke: RebalanceCallback | None = None

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None:
        """Leave the group without committing anything further."""

    @abstractmethod
    async def getmany(self, timeout_ms: int = 500, max_records: int = 500) -> list[Record]: ...

    @abstractmethod
    async def commit(self, offsets: dict[TopicPartition, int]) -> None: ...

    @abstractmethod
    def assignment(self) -> set[TopicPartition]: ...


class Bus(ABC):
    """One interface, two transports (embedded SQLite log, Kafka)."""

    partitions: int

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def publish(self, topic: str, key: str, value: bytes) -> None:
        """Append one record; returns once it is durable (fsync'd / acked)."""

    async def publish_many(self, items: Iterable[tuple[str, str, bytes]]) -> None:
        for topic, key, value in items:
            await self.publish(topic, key, value)

    async def publish_event(self, topic: str, event: BaseModel) -> None:
        await self.publish(topic, event.call_id, ev.encode(event))  # type: ignore[attr-defined]

    @abstractmethod
    def consumer(
        self, group: str, topics: Iterable[str], *, member: str | None = None, start: str = "earliest"
    ) -> Consumer:
        """A new group member.  `start` applies where the group has committed nothing:
        "earliest" reads the partition from its beginning, "latest" only what comes next."""

    @abstractmethod
    async def committed(self, group: str, tp: TopicPartition) -> int:
        """Next offset the group will read on this partition (0 when nothing was committed)."""

    @abstractmethod
    async def end_offset(self, tp: TopicPartition) -> int:
        """Offset the next record appended to this partition will get."""

    @abstractmethod
    async def read_range(self, tp: TopicPartition, start: int, end: int) -> list[Record]:
        """Records with start <= offset < end, outside any group (used to rebuild state)."""

    # --- per-call state snapshots of a consumer group (agent/runner.py) --------------------

    @abstractmethod
    async def save_snapshots(self, group: str, items: Iterable[tuple[int, str, bytes | None]]) -> None:
        """Store (partition, call id, snapshot) for the group; None deletes the call's snapshot.
        The partition is the one the call's inputs are on, so a member that is assigned that
        partition finds the snapshot."""

    @abstractmethod
    async def load_snapshots(
        self, group: str, partitions: Iterable[int], since: float = 0.0
    ) -> dict[str, tuple[int, bytes]]:
        """The latest snapshot of every call on these partitions: call id -> (partition, data).  `since` (Unix seconds) lets
        a transport skip snapshots written before it: the runner passes the idle timeout's
        horizon, as an older snapshot belongs to a call it would expire anyway."""

    async def topic_partitions(self, topic: str) -> list[TopicPartition]:
        return [(topic, p) for p in range(self.partitions)]

    async def lag_by_partition(self, group: str, topics: Iterable[str]) -> dict[TopicPartition, int]:
        """Records per partition that the group has not committed yet."""
        out: dict[TopicPartition, int] = {}
        for topic in topics:
            for tp in await self.topic_partitions(topic):
                out[tp] = max(0, await self.end_offset(tp) - await self.committed(group, tp))
        return out

    async def lag(self, group: str, topics: Iterable[str]) -> int:
        return sum((await self.lag_by_partition(group, topics)).values())
