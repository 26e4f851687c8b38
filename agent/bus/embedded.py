"""The embedded bus: in-process asyncio delivery over a durable append-only SQLite log.

SQLite in WAL mode gives us a crash-safe append-only log and committed offsets per consumer
group in one file, with no server to start; a restarted process reopens the file and each
group resumes from its committed offset.  Consumer groups are coordinated in-process: members
of one group split the partitions round-robin and a member that leaves hands its partitions
to the others, which resume from the group's committed offset (at-least-once).

Several processes may share one log file (a stage here, the caller or the console there), but
a consumer group lives in one process: each process holds a lease row per group it consumes
as (`group_leases`), and a second process that tries to join the same group is refused with a
one-line BusError, rather than both reading every partition and answering every call twice.
A lease of a process that died (its pid is gone, or its heartbeat is stale) is taken over.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from agent.bus.base import Bus, BusError, Consumer, Record, TopicPartition, partition_for

_SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
    key TEXT NOT NULL, value BLOB NOT NULL, ts REAL NOT NULL,
    PRIMARY KEY (topic, partition, offset)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS log_by_key ON log (key, ts);
CREATE TABLE IF NOT EXISTS commits (
    grp TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
    PRIMARY KEY (grp, topic, partition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS group_leases (
    grp TEXT NOT NULL, owner TEXT NOT NULL, pid INTEGER NOT NULL, host TEXT NOT NULL, beat REAL NOT NULL,
    PRIMARY KEY (grp, owner)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (
    grp TEXT NOT NULL, call_id TEXT NOT NULL, partition INTEGER NOT NULL, data BLOB NOT NULL, ts REAL NOT NULL,
    PRIMARY KEY (grp, call_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS snapshots_by_partition ON snapshots (grp, partition);
"""


def open_log_db(path: str | Path) -> sqlite3.Connection:
    """Open (creating if needed) a log database; also used read-only by the call log."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode survives a process crash; only an OS crash can lose the last commits.
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=5000")
    db.executescript(_SCHEMA)
    return db


#: a lease whose heartbeat is older than this is stale (a process on another host, or a pid reused)
LEASE_S = 120.0
#: how often a consuming process renews its leases
BEAT_S = 10.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Group:
    def __init__(self, name: str) -> None:
        self.name = name
        self.members: list[EmbeddedConsumer] = []


class EmbeddedBus(Bus):
    def __init__(self, path: str | Path = ":memory:", partitions: int = 4) -> None:
        self.path = str(path)
        self._db: sqlite3.Connection | None = None
        self._groups: dict[str, _Group] = {}
        # One event per topic: a publish wakes only the consumers of what it wrote (one event
        # for all woke every stage on every 20 ms audio frame, and each then queried all of its
        # partitions: 29 % of the event loop at 10 calls, measured with py-spy).
        self._wakeups: dict[str, asyncio.Event] = {}
        # Next offset of each partition as far as this process knows (its own writes, and reads
        # that reached the end).  A partition not in here may hold anything: it is read.  Writes
        # by another process sharing the file are seen through SQLite's data_version, which then
        # forgets everything known (the other process may have written anywhere).
        self._ends: dict[TopicPartition, int] = {}
        self._data_version: int | None = None
        self._member_ids = itertools.count(1)
        self._lock = asyncio.Lock()
        self.partitions = partitions
        # This bus object is one "process" for the leases (a test may open two over one file).
        self._owner = uuid.uuid4().hex
        self._host = socket.gethostname()
        self._last_beat = 0.0

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._db is not None:
            return
        try:
            self._db = open_log_db(self.path)
        except sqlite3.Error as exc:
            raise BusError(f"cannot open the embedded log at {self.path}: {exc}",
                           hint="make --data-dir / DIANXIAO_DATA_DIR a writable directory") from exc
        row = self._db.execute("SELECT value FROM meta WHERE name='partitions'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('partitions', ?)", (str(self.partitions),))
        else:
            # The partition count is fixed once a log exists: changing it would move calls.
            self.partitions = int(row[0])

    async def close(self) -> None:
        for group in self._groups.values():
            for member in list(group.members):
                await member.stop()
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise BusError("embedded bus is not started")
        return self._db

    # --- produce -----------------------------------------------------------------------

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        await self.publish_many([(topic, key, value)])

    async def publish_many(self, items: Iterable[tuple[str, str, bytes]]) -> None:
        items = list(items)
        if not items:
            return
        db = self.db
        now = time.time()
        try:
            # One IMMEDIATE transaction: all of a handler's outputs land, or none; and offsets
            # are taken from the file itself, so another process appending to the same log
            # (a second `dianxiao` command) can never collide with ours.
            db.execute("BEGIN IMMEDIATE")
            try:
                written: dict[TopicPartition, int] = {}
                for topic, key, value in items:
                    part = partition_for(key, self.partitions)
                    (top,) = db.execute(
                        "SELECT COALESCE(MAX(offset), -1) FROM log WHERE topic=? AND partition=?", (topic, part)
                    ).fetchone()
                    db.execute("INSERT INTO log VALUES (?,?,?,?,?,?)", (topic, part, top + 1, key, value, now))
                    written[(topic, part)] = top + 2
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise BusError(f"embedded log write failed: {exc}") from exc
        self._ends.update(written)
        self._wake({t for t, _ in written})

    def _wake(self, topics: Iterable[str] | None = None) -> None:
        """Wake the consumers waiting on these topics (None: every consumer)."""
        for topic in list(self._wakeups) if topics is None else topics:
            event = self._wakeups.pop(topic, None)
            if event is not None:
                event.set()

    def _wakeup_for(self, topic: str) -> asyncio.Event:
        return self._wakeups.setdefault(topic, asyncio.Event())

    # --- consume -----------------------------------------------------------------------

    def consumer(
        self, group: str, topics: Iterable[str], *, member: str | None = None, start: str = "earliest"
    ) -> "EmbeddedConsumer":
        return EmbeddedConsumer(self, group, tuple(topics), member or f"m{next(self._member_ids)}", start)

    async def committed(self, group: str, tp: TopicPartition) -> int:
        found = self._committed_or_none(group, tp)
        return 0 if found is None else found

    def _committed_or_none(self, group: str, tp: TopicPartition) -> int | None:
        row = self.db.execute(
            "SELECT offset FROM commits WHERE grp=? AND topic=? AND partition=?", (group, *tp)
        ).fetchone()
        return None if row is None else int(row[0])

    async def end_offset(self, tp: TopicPartition) -> int:
        (top,) = self.db.execute(
            "SELECT COALESCE(MAX(offset), -1) FROM log WHERE topic=? AND partition=?", tp
        ).fetchone()
        return top + 1

    async def read_range(self, tp: TopicPartition, start: int, end: int) -> list[Record]:
        rows = self.db.execute(
            "SELECT offset, key, value, ts FROM log WHERE topic=? AND partition=? AND offset>=? AND offset<?"
            " ORDER BY offset",
            (*tp, start, end),
        ).fetchall()
        return [Record(tp[0], tp[1], o, k, bytes(v), ts) for o, k, v, ts in rows]

    async def _fetch(self, positions: dict[TopicPartition, int], max_records: int) -> list[Record]:
        """The oldest `max_records` unread records of these partitions, in the order they were
        written.  A stage that reads two topics (the hangup stage: call.control and bot.replies)
        must see a call's CallStarted before the goodbye that followed it; handing records back
        partition by partition (in the order of a set) could put the goodbye first.  Each
        partition's records stay in offset order; partitions are merged by write time (heapq.merge
        only ever takes the head of a partition's stream, so a partition's own order holds even
        if the wall clock stepped back between two writes)."""
        (version,) = self.db.execute("PRAGMA data_version").fetchone()
        if version != self._data_version:  # another connection wrote: what we knew may be stale
            self._data_version = version
            self._ends.clear()
        streams = [self._records_from(tp, pos, max_records) for tp, pos in positions.items()
                   if self._ends.get(tp, pos + 1) > pos]  # skip partitions known to hold nothing new
        return list(itertools.islice(heapq.merge(*streams, key=lambda r: r.timestamp), max_records))

    def _records_from(self, tp: TopicPartition, pos: int, limit: int) -> Iterator[Record]:
        """A partition's records from offset `pos` on, read a page at a time as the merge takes
        them (a backlog on every partition costs about max_records rows, not that many each)."""
        page = min(64, limit)
        while page > 0:
            rows = self.db.execute(
                "SELECT offset, key, value, ts FROM log WHERE topic=? AND partition=? AND offset>=?"
                " ORDER BY offset LIMIT ?",
                (*tp, pos, page),
            ).fetchall()
            if len(rows) < page:  # the end of the partition, as of this read
                self._ends[tp] = rows[-1][0] + 1 if rows else pos
            for o, k, v, ts in rows:
                yield Record(tp[0], tp[1], o, k, bytes(v), ts)
            if len(rows) < page:
                return
            pos = rows[-1][0] + 1
            limit -= len(rows)
            page = min(page * 2, limit)

    async def _commit(self, group: str, offsets: dict[TopicPartition, int]) -> None:
        # Rows may commit one by one; a partial commit only means some records are re-delivered.
        with self.db:
            self.db.executemany(
                "INSERT INTO commits VALUES (?,?,?,?) ON CONFLICT(grp, topic, partition)"
                " DO UPDATE SET offset=excluded.offset",
                [(group, t, p, o) for (t, p), o in offsets.items()],
            )

    # --- snapshots ---------------------------------------------------------------------

    async def save_snapshots(self, group: str, items: Iterable[tuple[int, str, bytes | None]]) -> None:
        items = list(items)
        if not items:
            return
        now = time.time()
        try:
            with self.db:
                self.db.executemany(
                    "INSERT INTO snapshots VALUES (?,?,?,?,?) ON CONFLICT(grp, call_id)"
                    " DO UPDATE SET partition=excluded.partition, data=excluded.data, ts=excluded.ts",
                    [(group, c, p, d, now) for p, c, d in items if d is not None],
                )
                self.db.executemany("DELETE FROM snapshots WHERE grp=? AND call_id=?",
                                    [(group, c) for _, c, d in items if d is None])
        except sqlite3.Error as exc:
            raise BusError(f"embedded log: saving state snapshots of {group} failed: {exc}") from exc

    async def load_snapshots(
        self, group: str, partitions: Iterable[int], since: float = 0.0
    ) -> dict[str, tuple[int, bytes]]:
        out: dict[str, tuple[int, bytes]] = {}
        for p in set(partitions):
            rows = self.db.execute(
                "SELECT call_id, data FROM snapshots WHERE grp=? AND partition=? AND ts>=?", (group, p, since)
            ).fetchall()
            out.update((c, (p, bytes(d))) for c, d in rows)
        return out

    # --- group membership --------------------------------------------------------------

    def _claim(self, group: str) -> None:
        """Take this process's lease on `group`, or refuse if another live process holds one."""
        db, now = self.db, time.time()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                for owner, pid, host, beat in db.execute(
                    "SELECT owner, pid, host, beat FROM group_leases WHERE grp=? AND owner<>?", (group, self._owner)
                ).fetchall():
                    alive = now - beat < LEASE_S and (host != self._host or _pid_alive(pid))
                    if alive:
                        raise BusError(
                            f"consumer group {group!r} already runs in another process (pid {pid} on {host}) "
                            f"on the embedded log {self.path}",
                            hint="the embedded bus keeps a group in one process: stop that one, or run the "
                            "stages on Kafka (--bus kafka://HOST:PORT) to scale a stage over processes",
                        )
                    db.execute("DELETE FROM group_leases WHERE grp=? AND owner=?", (group, owner))
                db.execute("INSERT OR REPLACE INTO group_leases VALUES (?,?,?,?,?)",
                           (group, self._owner, os.getpid(), self._host, now))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise BusError(f"embedded log: taking the lease of group {group!r} failed: {exc}") from exc

    def _release(self, group: str) -> None:
        if self._db is not None:
            with self._db:
                self._db.execute("DELETE FROM group_leases WHERE grp=? AND owner=?", (group, self._owner))

    def _beat(self) -> None:
        now = time.time()
        if now - self._last_beat >= BEAT_S and self._db is not None:
            self._last_beat = now
            with self._db:
                self._db.execute("UPDATE group_leases SET beat=? WHERE owner=?", (now, self._owner))

    async def _join(self, member: "EmbeddedConsumer") -> None:
        async with self._lock:
            if member.group not in self._groups or not self._groups[member.group].members:
                self._claim(member.group)
            group = self._groups.setdefault(member.group, _Group(member.group))
            group.members.append(member)
            await self._rebalance(group)

    async def _leave(self, member: "EmbeddedConsumer") -> None:
        async with self._lock:
            group = self._groups.get(member.group)
            if group is None or member not in group.members:
                return
            group.members.remove(member)
            if not group.members:
                self._release(member.group)
            await self._rebalance(group)

    async def _rebalance(self, group: _Group) -> None:
        topics = sorted({t for m in group.members for t in m.topics})
        tps = [(t, p) for t in topics for p in range(self.partitions)]
        # Round-robin by partition so that each member gets the same partitions of every topic
        # (a call's control events and its transcripts then land on the same member).
        new: dict[EmbeddedConsumer, set[TopicPartition]] = {m: set() for m in group.members}
        for t, p in tps:
            takers = [m for m in group.members if t in m.topics]
            if takers:
                new[takers[p % len(takers)]].add((t, p))
        for m in group.members:
            await m._set_assignment(new[m])
        self._wake()


class EmbeddedConsumer(Consumer):
    def __init__(self, bus: EmbeddedBus, group: str, topics: tuple[str, ...], member: str, start: str) -> None:
        super().__init__()
        if start not in ("earliest", "latest"):
            raise ValueError(f"start must be 'earliest' or 'latest', not {start!r}")
        self.bus, self.group, self.topics, self.member, self.start_at = bus, group, topics, member, start
        self._positions: dict[TopicPartition, int] = {}
        self._joined = False

    async def start(self) -> None:
        if not self._joined:
            self._joined = True
            await self.bus._join(self)

    async def stop(self) -> None:
        if self._joined:
            self._joined = False
            await self.bus._leave(self)
            await self._set_assignment(set())

    def assignment(self) -> set[TopicPartition]:
        return set(self._positions)

    async def _set_assignment(self, tps: set[TopicPartition]) -> None:
        revoked = set(self._positions) - tps
        added = tps - set(self._positions)
        if revoked and self.on_revoke:
            await self.on_revoke(revoked)
        for tp in revoked:
            del self._positions[tp]
        for tp in added:
            found = self.bus._committed_or_none(self.group, tp)
            if found is None:
                found = await self.bus.end_offset(tp) if self.start_at == "latest" else 0
            self._positions[tp] = found
        if added and self.on_assign:
            await self.on_assign(added)

    async def getmany(self, timeout_ms: int = 500, max_records: int = 500) -> list[Record]:
        if not self._joined:
            raise BusError("consumer is not started")
        deadline = time.monotonic() + timeout_ms / 1000
        self.bus._beat()
        while True:
            wakes = [self.bus._wakeup_for(t) for t in self.topics]
            records = await self.bus._fetch(dict(self._positions), max_records)
            if records:
                for r in records:
                    tp = (r.topic, r.partition)
                    if tp in self._positions:
                        self._positions[tp] = max(self._positions[tp], r.offset + 1)
                return records
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            # Poll as a fallback too: another process may append to the same file.  (asyncio.wait,
            # not wait_for: on 3.11 wait_for can swallow a cancellation that races its timeout.)
            waiters = {asyncio.ensure_future(w.wait()) for w in wakes}
            try:
                await asyncio.wait(waiters, timeout=min(remaining, 0.25), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        mine = {tp: o for tp, o in offsets.items() if tp in self._positions}
        if mine:
            await self.bus._commit(self.group, mine)
