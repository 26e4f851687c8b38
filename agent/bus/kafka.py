"""The Kafka bus: the same contract as the embedded bus, over a real Kafka-protocol broker.

Produce: keyed by call id (the broker's partitioner keeps one call on one partition, so its
events stay in order), acks=all, idempotent where the broker supports it (Apache Kafka,
Redpanda).  Tansu's memory engine rejects InitProducerId, so idempotence is a setting; the
consumers de-duplicate by event id either way.

Consume: one aiokafka consumer per group member, manual commits only (the StageRunner commits
after a batch's outputs were produced: at-least-once), the range assignor (a member gets the
same partition numbers of every topic it reads, so a call's control events and its
transcripts meet in one member), and rebalances reported through the Consumer's
`on_assign`/`on_revoke` so the runner rebuilds per-call state for the partitions it gained.

A broker that goes away for a while is ridden out: publishing, committing, saving snapshots and
fetching retry with backoff (the runner keeps its batch in hand meanwhile, and commits after
its outputs are published) for up to `outage_s`; repeats this causes carry the same event ids
and are dropped downstream.  Only a broker gone for longer is a `BusError`, never a hang: every
single call to the broker is bounded by `broker_timeout_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition as KTP
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError, RecordTooLargeError

#: errors that waiting will not fix
_NOT_TRANSIENT = (CommitFailedError, IllegalStateError, RecordTooLargeError)

from agent import topics as topic_names
from agent.bus.base import Bus, BusError, Consumer, Record, TopicPartition

log = structlog.get_logger("dianxiao.bus.kafka")

T = TypeVar("T")

_TOPIC_ALREADY_EXISTS = 36

BROKER_HINT = "check that the broker is running and that --bus / DIANXIAO_BUS (kafka://HOST:PORT) points at it"


class KafkaBus(Bus):
    def __init__(
        self,
        bootstrap: str,
        partitions: int = 4,
        idempotent: bool = True,
        topic_prefix: str = "",
        replication: int = 1,
        *,
        broker_timeout_s: float = 30.0,
        consumer_options: dict[str, Any] | None = None,
        create_topics: Iterable[str] = topic_names.ALL,
        outage_s: float = 120.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.partitions = partitions
        self.idempotent = idempotent
        self.topic_prefix = topic_prefix
        self.replication = replication
        self.broker_timeout_s = broker_timeout_s
        #: how long a running stage rides out an unreachable broker before giving up
        self.outage_s = max(outage_s, broker_timeout_s)
        # Group timing (session_timeout_ms, heartbeat_interval_ms, rebalance_timeout_ms, ...):
        # aiokafka's defaults suit production; tests shorten them so rebalances take ~1 s.
        # fetch_max_wait_ms: Apache Kafka answers a fetch as soon as data arrives, but Tansu
        # waits out the whole long-poll, which then is the latency of every hop (500 ms by
        # aiokafka's default).  50 ms keeps hops fast there and costs an idle fetch per 50 ms.
        self.consumer_options = {"fetch_max_wait_ms": 50, **(consumer_options or {})}
        self._initial_topics = tuple(create_topics)
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._reader: AIOKafkaConsumer | None = None  # group-less: offsets, metadata, read_range
        self._reader_lock = asyncio.Lock()
        self._offset_readers: dict[str, AIOKafkaConsumer] = {}  # per group, never joins it
        self._known_topics: set[str] = set()
        self._topics_lock = asyncio.Lock()
        self._consumers: list[KafkaConsumer] = []

    # --- naming ------------------------------------------------------------------------

    def physical(self, topic: str) -> str:
        return f"{self.topic_prefix}{topic}"

    def logical(self, topic: str) -> str:
        return topic[len(self.topic_prefix) :] if self.topic_prefix and topic.startswith(self.topic_prefix) else topic

    def _ktp(self, tp: TopicPartition) -> KTP:
        return KTP(self.physical(tp[0]), tp[1])

    # --- bounded broker calls ----------------------------------------------------------

    async def _bounded(self, what: str, aw: Awaitable[T], timeout: float | None = None) -> T:
        limit = self.broker_timeout_s if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                return await aw
        except TimeoutError:
            raise BusError(f"Kafka at {self.bootstrap}: {what} got no answer within {limit:.0f}s",
                           hint=BROKER_HINT) from None
        except KafkaError as exc:
            raise BusError(f"Kafka at {self.bootstrap}: {what} failed: {_describe(exc)}", hint=BROKER_HINT) from exc

    async def _riding_out(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run `attempt` (each try bounded) until it succeeds or the broker was unreachable for
        `outage_s`.  For idempotent-by-id work only: a retried publish may land twice."""
        started = time.monotonic()
        delay = 0.2
        while True:
            try:
                return await self._bounded(what, attempt(), min(self.broker_timeout_s, 10.0))
            except BusError as exc:
                if isinstance(exc.__cause__, _NOT_TRANSIENT):
                    raise
                down = time.monotonic() - started
                if down >= self.outage_s:
                    raise BusError(f"Kafka at {self.bootstrap}: {what}: broker unreachable for {down:.0f}s ({exc})",
                                   hint=BROKER_HINT) from exc
                log.warning("Kafka broker unreachable; retrying", what=what, for_s=round(down, 1), error=str(exc)[:200])
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._producer is not None:
            return
        try:
            with _aiokafka_quiet():
                await self._connect()
        except BusError:
            await self.close()  # whatever did start must not leak
            raise

    async def _connect(self) -> None:
        common = {"bootstrap_servers": self.bootstrap, "request_timeout_ms": int(self.broker_timeout_s * 1000)}
        self._admin = AIOKafkaAdminClient(**common)
        await self._bounded("connecting (admin)", self._admin.start())
        producer = AIOKafkaProducer(acks="all", enable_idempotence=self.idempotent, linger_ms=0, **common)
        try:
            await self._bounded("starting the producer", producer.start())
        except BusError as exc:
            await _quietly(producer.stop())
            if self.idempotent:
                raise BusError(
                    f"{exc}. If this broker does not support idempotent producers (Tansu's memory "
                    "engine does not), set kafka_idempotent=false (DIANXIAO_KAFKA_IDEMPOTENT=false).",
                    hint="",  # the message already says what to do
                ) from exc
            raise
        self._producer = producer
        self._reader = AIOKafkaConsumer(
            enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=50, **common
        )
        await self._bounded("starting the reader", self._reader.start())
        await self.ensure_topics(self._initial_topics)

    async def close(self) -> None:
        for consumer in list(self._consumers):
            await consumer.stop()
        clients: list[Any] = [self._producer, self._reader, *self._offset_readers.values()]
        for client in clients:
            if client is not None:
                await _quietly(client.stop())
        if self._admin is not None:
            await _quietly(self._admin.close())
        self._producer = self._reader = self._admin = None
        self._offset_readers.clear()

    def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise BusError("Kafka bus is not started")
        return self._producer

    async def ensure_topics(self, topics: Iterable[str], configs: dict[str, str] | None = None) -> None:
        """Create missing topics with `partitions` partitions (existing ones are left alone)."""
        wanted = [t for t in dict.fromkeys(topics) if t not in self._known_topics]
        if not wanted:
            return
        async with self._topics_lock:
            wanted = [t for t in wanted if t not in self._known_topics]
            if not wanted or self._admin is None:
                return
            new = [NewTopic(self.physical(t), self.partitions, self.replication, topic_configs=configs or {})
                   for t in wanted]
            resp = await self._bounded("creating topics", self._admin.create_topics(new))
            for name, code, message in _topic_errors(resp):
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    raise BusError(f"Kafka at {self.bootstrap}: cannot create topic {name}: {code} {message}")
            self._known_topics.update(wanted)

    # --- produce -----------------------------------------------------------------------

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        await self.publish_many([(topic, key, value)])

    async def publish_many(self, items: Iterable[tuple[str, str, bytes]]) -> None:
        producer = self._started()
        batch = list(items)
        if not batch:
            return
        await self.ensure_topics(t for t, _, _ in batch)

        async def send_all() -> None:
            # Queue everything first, then wait for all acks: one round trip per batch, and
            # aiokafka keeps per-partition order, so a call's events stay in order.
            futures = [await producer.send(self.physical(t), v, key=k.encode()) for t, k, v in batch]
            await asyncio.gather(*futures)

        await self._riding_out(f"publishing {len(batch)} record(s)", send_all)

    # --- consume -----------------------------------------------------------------------

    def consumer(
        self, group: str, topics: Iterable[str], *, member: str | None = None, start: str = "earliest"
    ) -> "KafkaConsumer":
        if start not in ("earliest", "latest"):
            raise ValueError(f"start must be 'earliest' or 'latest', not {start!r}")
        return KafkaConsumer(self, group, tuple(topics), member, start)

    async def committed(self, group: str, tp: TopicPartition) -> int:
        reader = self._offset_readers.get(group)
        if reader is None:
            # A consumer with the group's id that never subscribes: it only fetches offsets
            # (OffsetFetch), it never joins the group, so it cannot trigger a rebalance.
            reader = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                group_id=self.group_id(group),
                enable_auto_commit=False,
                request_timeout_ms=int(self.broker_timeout_s * 1000),
            )
            await self._bounded("starting an offset reader", reader.start())
            self._offset_readers[group] = reader
        found = await self._bounded(f"reading {group}'s committed offset", reader.committed(self._ktp(tp)))
        return 0 if found is None else int(found)

    async def end_offset(self, tp: TopicPartition) -> int:
        await self.ensure_topics([tp[0]])
        reader = self._reader_or_fail()
        ktp = self._ktp(tp)

        async def ask() -> int:
            listed = int((await reader.end_offsets([ktp]))[ktp])
            if listed == 0:
                return 0
            # Tansu 0.6 answers ListOffsets(latest) with the last batch's base offset + 1 when
            # that batch holds several records; the high watermark in a fetch response is right
            # on every broker, so read one record at the listed end and take it from there.
            reader.assign([ktp])
            reader.seek(ktp, listed - 1)
            while True:
                if (await reader.getmany(ktp, timeout_ms=200, max_records=1)).get(ktp):
                    return max(listed, int(reader.highwater(ktp) or 0))
                if await reader.position(ktp) >= listed:  # that record is gone (retention)
                    return listed

        async with self._reader_lock:
            return await self._bounded("reading end offsets", ask())

    async def read_range(self, tp: TopicPartition, start: int, end: int) -> list[Record]:
        if end <= start:
            return []
        end = min(end, await self.end_offset(tp))  # never wait for records that do not exist
        if end <= start:
            return []
        reader = self._reader_or_fail()
        ktp = self._ktp(tp)
        out: list[Record] = []

        async def read() -> None:
            reader.assign([ktp])
            reader.seek(ktp, start)
            while True:
                got = await reader.getmany(ktp, timeout_ms=200, max_records=1000)
                for msg in got.get(ktp, []):
                    if msg.offset >= end:
                        return
                    out.append(self._record(msg))
                # Offsets may have gaps (e.g. transaction markers): stop on the position.
                if await reader.position(ktp) >= end:
                    return

        async with self._reader_lock:
            await self._bounded(f"reading {tp[0]}[{tp[1]}] {start}..{end}", read())
        return out

    # --- snapshots: one compacted topic per group, keyed by call id -----------------------

    def group_id(self, group: str) -> str:
        """The consumer group id on the cluster: the deployment's topic prefix + the stage's
        group, so that two deployments sharing a cluster (staging/prod) never share a group
        (and never steal each other's partitions or offsets)."""
        return f"{self.topic_prefix}{group}"

    @staticmethod
    def snapshot_topic(group: str) -> str:
        return f"_snapshots.{group}"

    async def save_snapshots(self, group: str, items: Iterable[tuple[int, str, bytes | None]]) -> None:
        batch = list(items)
        if not batch:
            return
        producer = self._started()
        topic = self.snapshot_topic(group)
        # Compaction keeps the latest snapshot per call and drops deleted calls (None is a
        # tombstone).  A broker that does not compact (Tansu) keeps them all: load_snapshots
        # then starts at the idle horizon instead of the beginning.
        await self.ensure_topics([topic], configs={"cleanup.policy": "compact"})

        async def send_all() -> None:
            # The partition is the call's input partition, so whoever is assigned that partition
            # of the inputs reads this partition of the snapshots.
            futures = [await producer.send(self.physical(topic), d, key=c.encode(), partition=p) for p, c, d in batch]
            await asyncio.gather(*futures)

        await self._riding_out(f"saving {len(batch)} snapshot(s) of {group}", send_all)

    async def load_snapshots(
        self, group: str, partitions: Iterable[int], since: float = 0.0
    ) -> dict[str, tuple[int, bytes]]:
        topic = self.snapshot_topic(group)
        await self.ensure_topics([topic], configs={"cleanup.policy": "compact"})
        out: dict[str, tuple[int, bytes]] = {}
        for p in sorted(set(partitions)):
            tp = (topic, p)
            end = await self.end_offset(tp)
            start = await self._offset_at(tp, since) if since > 0 else 0
            for rec in await self.read_range(tp, start, end):
                if rec.value:
                    out[rec.key] = (p, rec.value)
                else:
                    out.pop(rec.key, None)
        return out

    async def _offset_at(self, tp: TopicPartition, when: float) -> int:
        """First offset written at or after `when` (ListOffsets by timestamp); 0 if the broker
        cannot tell, the end if nothing was written since."""
        reader = self._reader_or_fail()
        ktp = self._ktp(tp)
        try:
            async with self._reader_lock:
                found = await self._bounded("finding offsets by time", reader.offsets_for_times({ktp: int(when * 1000)}))
        except BusError as exc:
            log.debug("offsets by time unavailable; reading snapshots from the start", error=str(exc))
            return 0
        hit = found.get(ktp)
        return int(hit.offset) if hit is not None else await self.end_offset(tp)

    async def topic_partitions(self, topic: str) -> list[TopicPartition]:
        await self.ensure_topics([topic])
        reader = self._reader_or_fail()
        found = reader.partitions_for_topic(self.physical(topic))
        if not found:
            await self._bounded("fetching metadata", reader.topics())
            found = reader.partitions_for_topic(self.physical(topic))
        if not found:
            return [(topic, p) for p in range(self.partitions)]
        return [(topic, p) for p in sorted(found)]

    def _reader_or_fail(self) -> AIOKafkaConsumer:
        if self._reader is None:
            raise BusError("Kafka bus is not started")
        return self._reader

    def _record(self, msg: Any) -> Record:
        return Record(
            topic=self.logical(msg.topic),
            partition=msg.partition,
            offset=msg.offset,
            key=msg.key.decode("utf-8", "replace") if msg.key else "",
            value=msg.value if msg.value is not None else b"",
            timestamp=(msg.timestamp or 0) / 1000.0,
        )


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: "KafkaConsumer") -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.owner._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.owner._on_assigned(assigned)


class KafkaConsumer(Consumer):
    #: how long a rebalance waits for the batch in hand to be committed before giving it up
    revoke_wait_s = 5.0

    def __init__(self, bus: KafkaBus, group: str, topics: tuple[str, ...], member: str | None, start: str) -> None:
        super().__init__()
        self.bus, self.group, self.topics, self.member, self.start_at = bus, group, topics, member, start
        self._consumer: AIOKafkaConsumer | None = None
        self._assigned: set[TopicPartition] = set()
        # Set while no batch is in hand (between commit and the next non-empty getmany).
        self._batch_done = asyncio.Event()
        self._batch_done.set()
        self._last_probe = time.monotonic()
        self._down_since: float | None = None
        self._first_assignment = asyncio.Event()

    async def start(self) -> None:
        if self._consumer is not None:
            return
        bus = self.bus
        await bus.ensure_topics(self.topics)
        # A JoinGroup is answered only when the group's rebalance completes, which may take the
        # whole rebalance timeout: requests and the join itself get that much on top.
        rebalance_ms = int(
            bus.consumer_options.get("rebalance_timeout_ms", bus.consumer_options.get("session_timeout_ms", 10000))
        )
        join_s = bus.broker_timeout_s + rebalance_ms / 1000
        options: dict[str, Any] = {
            "request_timeout_ms": int(max(bus.broker_timeout_s * 1000, rebalance_ms + 5000)),
            "partition_assignment_strategy": (RangePartitionAssignor,),
            **bus.consumer_options,
        }
        if self.member:
            options["client_id"] = self.member
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bus.bootstrap,
            group_id=bus.group_id(self.group),
            enable_auto_commit=False,
            auto_offset_reset=self.start_at,
            **options,
        )
        consumer.subscribe([bus.physical(t) for t in self.topics], listener=_Listener(self))
        self._consumer = consumer
        bus._consumers.append(self)
        try:
            # aiokafka's start returns once the group gave this member its first assignment.
            await bus._bounded(f"joining group {self.group}", consumer.start(), join_s)
            # aiokafka's start returns when the assignment is known, before the rebalance
            # listener ran; wait for it, so on_assign (the runner's state rebuild) is done.
            await bus._bounded("the first assignment", self._first_assignment.wait(), join_s)
            # Pin the starting positions now, so "latest" means "from when start() returned"
            # (as on the embedded bus), not "from whenever the first fetch happens".
            for ktp in consumer.assignment():
                await bus._bounded("resolving positions", consumer.position(ktp))
        except BusError:
            await self.stop()
            raise

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        if self in self.bus._consumers:
            self.bus._consumers.remove(self)
        self._batch_done.set()
        await _quietly(consumer.stop(), timeout=max(5.0, self.bus.broker_timeout_s / 2))
        self._assigned = set()

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    # --- rebalance callbacks (run inside aiokafka's coordinator task) --------------------

    async def _on_revoked(self, revoked: Any) -> None:
        # Let the runner finish and commit the batch in hand, so the next owner does not
        # redo it (it would only be de-duplicated, but a clean hand-over is cheaper).
        try:
            async with asyncio.timeout(self.revoke_wait_s):
                await self._batch_done.wait()
        except TimeoutError:
            log.warning("rebalance did not wait for the batch in hand", group=self.group)
        gone = {(self.bus.logical(t.topic), t.partition) for t in revoked}
        self._assigned -= gone
        if gone and self.on_revoke:
            await self.on_revoke(gone)

    async def _on_assigned(self, assigned: Any) -> None:
        now = {(self.bus.logical(t.topic), t.partition) for t in assigned}
        self._assigned = now
        log.info("partitions assigned", group=self.group, member=self.member, partitions=sorted(now))
        consumer = self._consumer
        try:
            if self.start_at == "latest" and consumer is not None:
                # Where the group committed nothing, start at the true end.  (aiokafka's own
                # reset asks ListOffsets, which Tansu 0.6 answers wrongly after a batch.)
                for ktp in assigned:
                    if await consumer.committed(ktp) is None:
                        consumer.seek(ktp, await self.bus.end_offset((self.bus.logical(ktp.topic), ktp.partition)))
            if now and self.on_assign:
                await self.on_assign(now)
        finally:
            self._first_assignment.set()

    # --- the loop's calls --------------------------------------------------------------

    async def getmany(self, timeout_ms: int = 500, max_records: int = 500) -> list[Record]:
        consumer = self._consumer
        if consumer is None:
            raise BusError("consumer is not started")
        self._batch_done.set()
        try:
            got = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        except KafkaError as exc:
            # aiokafka reconnects by itself; the outage clock below decides when to give up.
            log.warning("Kafka fetch failed", bootstrap=self.bus.bootstrap, error=_describe(exc))
            got = {}
            self._down_since = self._down_since or time.monotonic()
            self._last_probe = 0.0
        # Partition by partition as fetched would hand a stage that reads two topics a call's
        # later event first (a goodbye before its CallStarted): merge them by their timestamps,
        # each partition's own order kept.  (Best effort: Kafka orders nothing across partitions.)
        records = list(heapq.merge(*([self.bus._record(m) for m in msgs] for msgs in got.values()),
                                   key=lambda r: r.timestamp))
        if records:
            self._down_since = None
            self._last_probe = time.monotonic()
            self._batch_done.clear()
        else:
            await self._check_broker(consumer)
        return records

    async def _check_broker(self, consumer: AIOKafkaConsumer) -> None:
        """aiokafka retries forever on its own; we ask for metadata now and then while idle
        and give up with a BusError once the broker was unreachable for `outage_s`."""
        limit = self.bus.outage_s
        now = time.monotonic()
        if now - self._last_probe < min(5.0, self.bus.broker_timeout_s / 3):
            return
        self._last_probe = now
        try:
            async with asyncio.timeout(min(5.0, self.bus.broker_timeout_s)):
                await consumer.topics()
            self._down_since = None
        except (KafkaError, TimeoutError) as exc:
            self._down_since = self._down_since or now
            down = now - self._down_since
            log.warning("Kafka broker unreachable", bootstrap=self.bus.bootstrap, for_s=round(down, 1), error=str(exc))
            if down >= limit:
                raise BusError(f"Kafka at {self.bus.bootstrap} unreachable for {down:.0f}s: {exc}",
                               hint=BROKER_HINT) from exc

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        consumer = self._consumer
        if consumer is None:
            raise BusError("consumer is not started")
        mine = {self.bus._ktp(tp): o for tp, o in offsets.items() if tp in self._assigned}
        try:
            if mine:
                await self.bus._riding_out(f"committing offsets of {self.group}", lambda: consumer.commit(mine))
        except BusError as exc:
            if isinstance(exc.__cause__, (CommitFailedError, IllegalStateError)):
                # The partitions moved to another member meanwhile: it re-reads from the last
                # commit, and the repeats are dropped by event id (at-least-once).
                log.warning("commit lost to a rebalance", group=self.group, error=str(exc.__cause__))
            else:
                raise
        finally:
            self._batch_done.set()


def _topic_errors(resp: Any) -> list[tuple[str, int, str | None]]:
    out = []
    for entry in getattr(resp, "topic_errors", []):
        name, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 else None
        out.append((name, int(code), message))
    return out


def _describe(exc: BaseException) -> str:
    # aiokafka's messages often start with the class name already ("KafkaConnectionError: …").
    text, name = str(exc), type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}"


@contextlib.contextmanager
def _aiokafka_quiet() -> Any:
    """While connecting, aiokafka logs its own "Unable connect to …" errors through stdlib
    logging (stderr, unformatted); the BusError we raise says the same, in one line."""
    logger = logging.getLogger("aiokafka")
    before = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(before)


async def _quietly(aw: Awaitable[Any], timeout: float = 5.0) -> None:
    """Close a client without letting a dead broker hang shutdown."""
    task = asyncio.ensure_future(aw)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.cancel()
        return
    if not task.cancelled() and task.exception() is not None:
        log.debug("close failed", error=str(task.exception()))
