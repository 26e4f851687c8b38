"""The async shell around a Stage: consume, handle, produce, snapshot, commit.

Delivery is at-least-once: a batch's offsets are committed only after every output of the
batch was published.  If the process dies in between, the batch is handled again after the
restart; outputs get deterministic ids (derived from the causing event), so the next stage
drops the repeats by event id.

State is bounded and cheap to restore.  Every stage's group also reads call.control, so the
runner sees each call's `call.ended` (whether or not the stage itself cares) and frees the
call's state a short grace after it (`end_grace_s`: the VAD's last segment of a hang-up is
still on its way through the ASR then), or once the call was idle for `idle_timeout_s`.  After
every batch, before its offsets are committed, the runner stores a snapshot of each call the
batch touched (`Bus.save_snapshots`: a table on the embedded bus, a compacted topic on Kafka);
a restarted or newly assigned member loads the snapshots of the open calls on its partitions
and carries on.  Nothing is re-handled on a restart, so no model runs twice; a snapshot taken
after the last commit is harmless, since the re-delivered events are in its `seen` ids.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


import structlog

from agent import events as ev
from agent import topics
from agent.bus.base import Bus, Consumer, Record, TopicPartition
from agent.observability import Metrics
from agent.stages.base import CallContext, Emit, RecentIds, Stage
from pydantic import BaseModel, ConfigDict

log = structlog.get_logger("dianxiao.runner")

LAG_EVERY_S = 5.0

# The events that carry a caller turn from stage to stage.  Handling one (or emitting one, as
# the VAD emits the segment that ends a turn) is logged at INFO: one line per turn and stage
# for operators.  Everything else (audio frames, partial transcripts, call control) stays at
# DEBUG, or an audio call would log fifty lines a second.
TURN_EVENTS = frozenset({"speech.segment", "transcript.final", "nlu.result", "dialogue.state", "bot.reply_draft",
                         "bot.reply"})


class CallSnapshot(BaseModel):
    """What a stage's group keeps of one open call: the runner's bookkeeping and the stage's
    own state (`Stage.dump_state`).  Written after every batch that touched the call."""

    model_config = ConfigDict(extra="forbid")

    version: int = 1
    stage: str
    call_id: str
    seq: int
    turn: int
    seen: list[str]
    touched: float  # wall clock of the call's last event
    ended_at: float | None = None  # wall clock of its call.ended, if seen
    state: Any = None


@dataclass
class _Work:
    """An admitted record waiting for (or running on) one of a parallel stage's workers."""

    rec: Record
    event: Any
    ctx: CallContext
    track: list  # [offset, done] in its partition's in-flight list
    priority: int
    order: int
    skipped: bool = False


@dataclass
class _Inflight:
    """Records of one partition taken but not all finished: what may be committed is the offset
    after the longest finished prefix (a parallel stage finishes records out of order)."""

    tracks: deque = field(default_factory=deque)

    def committable(self) -> int | None:
        last = None
        while self.tracks and self.tracks[0][1]:
            last = self.tracks.popleft()[0]
        return None if last is None else last + 1


class StageRunner:
    #: seconds a call's state is kept after its call.ended, for events still in flight
    end_grace_s: float = 5.0
    #: seconds without any event after which a call is considered abandoned and its state freed
    #: (a connector that died without writing call.ended)
    idle_timeout_s: float = 900.0
    #: ended calls remembered, so that a late repeat of one of their events (an upstream stage
    #: re-handling its last batch after a restart) is dropped instead of starting a fresh state
    remember_ended: int = 20_000
    sweep_every_s: float = 1.0

    def __init__(
        self,
        stage: Stage,
        bus: Bus,
        *,
        metrics: Metrics | None = None,
        member: str | None = None,
        group: str | None = None,
        end_grace_s: float | None = None,
        idle_timeout_s: float | None = None,
    ) -> None:
        self.stage = stage
        self.bus = bus
        self.metrics = metrics or Metrics()
        self.group = group or stage.name
        self.member = member
        if end_grace_s is not None:
            self.end_grace_s = end_grace_s
        if idle_timeout_s is not None:
            self.idle_timeout_s = idle_timeout_s
        # call.control is read by every stage: its call.ended is when the call's state goes.
        self.reads: tuple[str, ...] = tuple(dict.fromkeys((*stage.reads, topics.CONTROL)))
        self.contexts: dict[str, CallContext] = {}
        self._call_partition: dict[str, int] = {}
        self._touched: dict[str, float] = {}
        self._ended_at: dict[str, float] = {}
        self._dirty: set[str] = set()
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._next_sweep = 0.0
        self._stopping = asyncio.Event()
        self._consumer: Consumer | None = None
        self.ready = asyncio.Event()
        self.handled = 0
        # /livez and /readyz (agent/health.py): the stage is built, so its models are loaded.
        self.health = self.metrics.health.component(stage.name)
        self.late_dropped = 0
        self.restored = 0

    # --- lifecycle ---------------------------------------------------------------------

    def stop(self) -> None:
        """Finish the batch in hand, commit it, and leave the group."""
        self._stopping.set()

    async def run(self) -> None:
        consumer = self.bus.consumer(self.group, self.reads, member=self.member)
        consumer.on_assign = self._rebuild
        consumer.on_revoke = self._forget
        self._consumer = consumer
        await consumer.start()
        self.ready.set()
        self.health.started(consumer.assignment)
        log.info("stage started", stage=self.stage.name, group=self.group, reads=list(self.reads))
        next_lag = 0.0
        if self.stage.workers > 1 or self.stage.asynchronous:
            try:
                await self._run_parallel(consumer)
            finally:
                self.health.stopped()
                await consumer.stop()
                log.info("stage stopped", stage=self.stage.name, handled=self.handled)
            return
        try:
            while not self._stopping.is_set():
                self.health.beat()
                records = await consumer.getmany(timeout_ms=200, max_records=200)
                if records:
                    await self._process_batch(consumer, records)
                next_lag = await self._housekeeping(next_lag)
        finally:
            self.health.stopped()
            await consumer.stop()
            log.info("stage stopped", stage=self.stage.name, handled=self.handled)

    async def _report_lag(self) -> None:
        try:
            for (topic, partition), lag in (await self.bus.lag_by_partition(self.group, self.reads)).items():
                self.metrics.lag.labels(self.stage.name, self.group, topic, str(partition)).set(lag)
        except Exception as exc:  # a metric must never take the stage down
            log.debug("lag unavailable", error=str(exc))

    # --- the work ----------------------------------------------------------------------

    async def _housekeeping(self, next_lag: float) -> float:
        """Between batches: free ended and idle calls, report the lag, each on its own period.
        Returns when the lag is next due."""
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + self.sweep_every_s
            await self._sweep()
        if time.monotonic() >= next_lag:
            next_lag = time.monotonic() + LAG_EVERY_S
            await self._report_lag()
        return next_lag

    async def _process_batch(self, consumer: Consumer, records: list[Record]) -> None:
        offsets: dict[TopicPartition, int] = {}
        if self.stage.batched:
            # One hop to a worker thread for the whole batch, and the stage sees every call's
            # events at once (the VAD batches Silero across calls): keeps real time at 10 calls.
            await self._publish(await asyncio.to_thread(self._handle_records, records))
            for rec in records:
                offsets[(rec.topic, rec.partition)] = rec.offset + 1
        for rec in records if not self.stage.batched else ():
            if self.stage.streams:
                await self._handle_streamed(rec)
            elif self.stage.blocking:
                # CPU-heavy stages (VAD models, ASR decode) run off the event loop, so that the
                # other stages of a single-process pipeline keep going meanwhile (the ASR decode
                # overlaps the VAD's end-of-turn model) and the loop never stalls on them.
                await self._publish(await asyncio.to_thread(self._handle_record, rec))
            else:
                await self._publish(self._handle_record(rec))
            offsets[(rec.topic, rec.partition)] = rec.offset + 1
            self.health.beat()  # a long batch of slow records is progress, not a stuck loop
        # Snapshots before the commit: a restarted member then never has a state older than
        # its committed offsets (a newer one is fine: its `seen` ids drop the re-delivery).
        await self._save_dirty()
        await consumer.commit(offsets)

    async def _publish(self, outputs: list[tuple[str, str, bytes]]) -> None:
        if outputs:
            await self.bus.publish_many(outputs)
            for topic, _, _ in outputs:
                self.metrics.emitted.labels(self.stage.name, topic).inc()

    async def _handle_streamed(self, rec: Record) -> None:
        """A streaming stage's record: each part it yields is published before the next part is
        computed (TTS: the first clause plays while the rest is synthesised)."""
        admitted = self._admit(rec)
        if isinstance(admitted, list):
            await self._publish(admitted)
            return
        event, ctx = admitted
        parts = self.stage.handle_stream(event, ctx)
        done = object()
        index = 0
        while True:
            def step() -> Any:
                return self._call_handler(rec, event, ctx, lambda e, c: next(parts, done), last_part=index > 0)

            out = await asyncio.to_thread(step) if self.stage.blocking else step()
            if out is done:
                return
            await self._publish(out)
            if out and out[0][0] == topics.DEAD_LETTERS:
                return
            index += 1
            self.health.beat()

    def _handle_record(self, rec: Record) -> list[tuple[str, str, bytes]]:
        """Decode and handle one record; returns (topic, key, value) to publish."""
        admitted = self._admit(rec)
        if isinstance(admitted, list):
            return admitted
        return self._call_handler(rec, *admitted, self.stage.handle)

    def _handle_records(self, records: list[Record]) -> list[tuple[str, str, bytes]]:
        """A batched stage's records: admitted one by one (order, ids, bookkeeping), handled
        together; if the batch handler fails, each record is handled alone so that only the
        bad one goes to dead letters."""
        out: list[tuple[str, str, bytes]] = []
        items: list[tuple[Record, Any, CallContext]] = []
        for rec in records:
            admitted = self._admit(rec)
            if isinstance(admitted, list):
                out += admitted
            else:
                items.append((rec, *admitted))
        if not items:
            return out
        started = time.perf_counter()
        try:
            with structlog.contextvars.bound_contextvars(stage=self.stage.name):
                results = self.stage.handle_batch([(e, c) for _, e, c in items])
        except Exception:
            log.warning("batch handler failed; handling its events one by one", stage=self.stage.name,
                        events=len(items))
            for rec, event, ctx in items:
                out += self._call_handler(rec, event, ctx, self.stage.handle)
            return out
        each = (time.perf_counter() - started) / len(items)
        for (rec, event, ctx), emits in zip(items, results):
            if isinstance(emits, Exception):  # this event's handling failed, the others' did not
                log.error("handler failed", event_type=event.type, event_id=event.event_id, call_id=event.call_id,
                          error=f"{type(emits).__name__}: {emits}")
                out.append(self._dead_letter(rec, f"handler failed: {type(emits).__name__}: {emits}"))
                continue
            self._account(rec, event, emits, each)
            out += [(e.topic, e.event.call_id, ev.encode(e.event)) for e in emits]  # type: ignore[attr-defined]
        return out

    def _admit(self, rec: Record) -> tuple[Any, CallContext] | list[tuple[str, str, bytes]]:
        """Decode a record and do the runner's bookkeeping; returns (event, call context) when
        the stage should handle it, else what to publish instead (a dead letter, or nothing)."""
        try:
            event = ev.decode(rec.value)
        except ev.EventError as exc:
            return [self._dead_letter(rec, str(exc))]
        if event.call_id in self._finished:
            # The call ended and its state is gone: handling this with a fresh state would
            # produce answers out of context (and ids the next stage no longer remembers).
            self.late_dropped += 1
            log.debug("event for a finished call dropped", call_id=event.call_id, stage=self.stage.name,
                      event_type=event.type)
            return []
        ctx = self._context(event.call_id, rec.partition)
        if event.event_id in ctx.seen:
            self.metrics.duplicates.labels(self.stage.name).inc()
            return []
        ctx.seen.add(event.event_id)
        ctx.turn = max(ctx.turn, event.turn)
        now = time.time()
        self._touched[event.call_id] = now
        self._dirty.add(event.call_id)
        if isinstance(event, ev.CallEnded) and event.call_id not in self._ended_at:
            ctx.ended = True
            self._ended_at[event.call_id] = now
        if rec.topic not in self.stage.reads:
            return []  # call.control read for the call's lifecycle only
        self.metrics.event_age.labels(self.stage.name).set(max(0.0, now - event.ts_wall))
        return event, ctx

    def _call_handler(self, rec: Record, event: Any, ctx: CallContext, fn: Any, last_part: bool = False) -> Any:
        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(call_id=event.call_id, turn=event.turn, stage=self.stage.name):
            try:
                emits = fn(event, ctx)
            except Exception as exc:  # a stage must never die on one bad event
                log.exception("handler failed", event_type=event.type, event_id=event.event_id)
                return [self._dead_letter(rec, f"handler failed: {type(exc).__name__}: {exc}")]
        if not isinstance(emits, list):  # the end of a stream
            return emits
        self._account(rec, event, emits, time.perf_counter() - started, count=not last_part)
        return [(e.topic, e.event.call_id, ev.encode(e.event)) for e in emits]  # type: ignore[attr-defined]

    async def _call_handler_async(self, rec: Record, event: Any, ctx: CallContext) -> Any:
        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(call_id=event.call_id, turn=event.turn, stage=self.stage.name):
            try:
                emits = await self.stage.handle_async(event, ctx)
            except Exception as exc:  # a stage must never die on one bad event
                log.exception("handler failed", event_type=event.type, event_id=event.event_id)
                return [self._dead_letter(rec, f"handler failed: {type(exc).__name__}: {exc}")]
        self._account(rec, event, emits, time.perf_counter() - started)
        return [(e.topic, e.event.call_id, ev.encode(e.event)) for e in emits]  # type: ignore[attr-defined]

    def _account(self, rec: Record, event: Any, emits: list[Emit], took: float, count: bool = True) -> None:
        if count:
            self.handled += 1
            self.metrics.handled.labels(self.stage.name, rec.topic).inc()
        self.metrics.handle_seconds.labels(self.stage.name).observe(took)
        if event.type in TURN_EVENTS or any(getattr(e.event, "type", None) in TURN_EVENTS for e in emits):
            log.info("turn handled", call_id=event.call_id, turn=event.turn, stage=self.stage.name,
                     event_type=event.type, emitted=len(emits), ms=round(took * 1000, 2))
        else:
            log.debug("event handled", call_id=event.call_id, turn=event.turn, stage=self.stage.name,
                      event_type=event.type, emitted=len(emits), ms=round(took * 1000, 2))

    # --- parallel stages (the ASR): N workers, finals first, superseded work dropped ----------

    async def _run_parallel(self, consumer: Consumer) -> None:
        """Keep up to `stage.workers` events of different calls in flight, each in a worker
        thread.  Records keep being fetched while workers run, so a final that arrives during a
        decode is queued at once; among queued work the stage's `priority` decides (finals
        before partials) and a queued event that a newer one `supersedes` is dropped undone.
        Offsets are committed up to the longest finished prefix of each partition, after the
        snapshots, so at-least-once holds as in the sequential loop."""
        n = self.stage.workers
        pool = ThreadPoolExecutor(n, thread_name_prefix=f"{self.stage.name}-worker")
        loop = asyncio.get_running_loop()
        pending: list[_Work] = []
        busy: set[str] = set()
        running: set[asyncio.Task[None]] = set()
        inflight: dict[TopicPartition, _Inflight] = {}
        order = 0
        next_lag = 0.0
        depth = self.metrics.queue_depth.labels(self.stage.name)

        async def work(w: _Work) -> None:
            try:
                if self.stage.asynchronous:
                    # An effect stage (the LLM phrasing): its await is network I/O, so it runs
                    # as a task on the loop; other calls' requests and every other stage go on.
                    out = await self._call_handler_async(w.rec, w.event, w.ctx)
                else:
                    out = await loop.run_in_executor(pool, self._call_handler, w.rec, w.event, w.ctx,
                                                     self.stage.handle)
                await self._publish(out)
            finally:
                w.track[1] = True
                busy.discard(w.ctx.call_id)

        def dispatch() -> None:
            while len(running) < n:
                # A call's own events run in order: only its oldest queued one is eligible.
                heads: dict[str, _Work] = {}
                for w in pending:
                    if w.ctx.call_id not in busy and w.ctx.call_id not in heads:
                        heads[w.ctx.call_id] = w
                if not heads:
                    return
                w = min(heads.values(), key=lambda x: (x.priority, x.order))
                pending.remove(w)
                busy.add(w.ctx.call_id)
                task = asyncio.create_task(work(w))
                running.add(task)
                task.add_done_callback(running.discard)

        try:
            while not self._stopping.is_set() or running:
                self.health.beat()
                if not self._stopping.is_set():
                    records = await consumer.getmany(timeout_ms=10 if (running or pending) else 200, max_records=200)
                else:
                    records = []
                    await asyncio.wait(running, timeout=0.05)
                for rec in records:
                    track = [rec.offset, False]
                    inflight.setdefault((rec.topic, rec.partition), _Inflight()).tracks.append(track)
                    admitted = self._admit(rec)
                    if isinstance(admitted, list):
                        await self._publish(admitted)
                        track[1] = True
                        continue
                    event, ctx = admitted
                    for w in [w for w in pending if w.ctx.call_id == ctx.call_id]:
                        if self.stage.supersedes(event, w.event):
                            pending.remove(w)
                            w.track[1] = True
                            self.metrics.skipped.labels(self.stage.name).inc()
                            log.debug("superseded event dropped", call_id=ctx.call_id, stage=self.stage.name,
                                      event_type=w.event.type)
                    order += 1
                    pending.append(_Work(rec, event, ctx, track, self.stage.priority(event), order))
                dispatch()
                depth.set(len(pending))
                if not records and running:
                    await asyncio.wait(running, timeout=0.05, return_when=asyncio.FIRST_COMPLETED)
                    dispatch()
                await self._commit_finished(consumer, inflight)
                next_lag = await self._housekeeping(next_lag)
        finally:
            if running:
                await asyncio.gather(*running, return_exceptions=True)
            # queued work that never started is not committed: it is re-delivered on restart
            await self._commit_finished(consumer, inflight)
            pool.shutdown(wait=False)

    async def _commit_finished(self, consumer: Consumer, inflight: dict[TopicPartition, _Inflight]) -> None:
        offsets = {tp: off for tp, fl in inflight.items() if (off := fl.committable()) is not None}
        if offsets:
            await self._save_dirty()
            await consumer.commit(offsets)

    def _context(self, call_id: str, partition: int) -> CallContext:
        ctx = self.contexts.get(call_id)
        if ctx is None:
            ctx = CallContext(call_id=call_id, state=self.stage.new_state(call_id))
            self.contexts[call_id] = ctx
            self._call_partition[call_id] = partition
        return ctx

    def _dead_letter(self, rec: Record, reason: str) -> tuple[str, str, bytes]:
        self.metrics.dead_letters.labels(self.stage.name).inc()
        log.warning("dead letter", call_id=rec.key, stage=self.stage.name, source_topic=rec.topic,
                    offset=rec.offset, reason=reason[:300])
        dl = ev.DeadLetter(
            # Same record -> same id, so a re-handled bad record is not reported twice.
            event_id=ev.derived_event_id(f"{rec.topic}/{rec.partition}/{rec.offset}", self.stage.name, 0),
            call_id=rec.key or "unknown",
            stage=self.stage.name,
            source_topic=rec.topic,
            reason=reason,
            consumer=self.group,
            raw=ev.raw_for_dead_letter(rec.value),
        )
        return (topics.DEAD_LETTERS, dl.call_id, ev.encode(dl))

    # --- bounded state: snapshots, end of call, idle calls -----------------------------

    def _snapshot(self, call_id: str) -> bytes:
        ctx = self.contexts[call_id]
        snap = CallSnapshot(
            stage=self.stage.name, call_id=call_id, seq=ctx.seq, turn=ctx.turn, seen=list(ctx.seen),
            touched=self._touched.get(call_id, time.time()), ended_at=self._ended_at.get(call_id),
            state=self.stage.dump_state(ctx.state),
        )
        return snap.model_dump_json().encode()

    async def _save_dirty(self) -> None:
        if not self._dirty:
            return
        items: list[tuple[int, str, bytes | None]] = []
        for call_id in self._dirty:
            if call_id in self.contexts:
                items.append((self._call_partition[call_id], call_id, self._snapshot(call_id)))
        self._dirty.clear()
        await self.bus.save_snapshots(self.group, items)

    async def _sweep(self) -> None:
        """Free the state of calls that ended more than `end_grace_s` ago or were idle for
        `idle_timeout_s`, and delete their snapshots."""
        now = time.time()
        gone: list[tuple[int, str, bytes | None]] = []
        for call_id, at in list(self._ended_at.items()):
            if now - at >= self.end_grace_s:
                gone.append((self._call_partition.get(call_id, 0), call_id, None))
        for call_id, at in list(self._touched.items()):
            if call_id not in self._ended_at and now - at >= self.idle_timeout_s:
                log.info("call state expired: no event for a while and no call.ended",
                         call_id=call_id, stage=self.stage.name, idle_s=round(now - at))
                gone.append((self._call_partition.get(call_id, 0), call_id, None))
        if not gone:
            return
        # Any snapshot of these calls still to be written would be deleted right after.
        await self._save_dirty()
        for _, call_id, _ in gone:
            self._drop(call_id)
            self._finished[call_id] = None
        while len(self._finished) > self.remember_ended:
            self._finished.popitem(last=False)
        await self.bus.save_snapshots(self.group, gone)

    def _drop(self, call_id: str) -> None:
        self.contexts.pop(call_id, None)
        self._call_partition.pop(call_id, None)
        self._touched.pop(call_id, None)
        self._ended_at.pop(call_id, None)
        self._dirty.discard(call_id)

    # --- restoring state on (re)assignment ---------------------------------------------

    async def _rebuild(self, tps: set[TopicPartition]) -> None:
        """Load the snapshots of the open calls on the partitions just assigned.  No input is
        re-handled: the cost is one read of a few rows per open call, whatever the history."""
        now = time.time()
        parts = {p for _, p in tps}
        found = await self.bus.load_snapshots(self.group, parts, since=now - self.idle_timeout_s)
        stale: list[tuple[int, str, bytes | None]] = []
        restored = 0
        for call_id, (part, raw) in found.items():
            if call_id in self.contexts:
                continue
            try:
                snap = CallSnapshot.model_validate_json(raw)
                state = self.stage.load_state(call_id, snap.state)
            except Exception as exc:  # a bad snapshot costs that call its context, not the stage
                log.warning("snapshot unreadable; the call starts with a fresh state", call_id=call_id,
                            stage=self.stage.name, error=str(exc)[:300])
                continue
            if snap.ended_at is not None and now - snap.ended_at >= self.end_grace_s:
                self._finished[call_id] = None
                stale.append((part, call_id, None))
                continue
            if now - snap.touched >= self.idle_timeout_s:
                stale.append((part, call_id, None))
                continue
            self.contexts[call_id] = CallContext(call_id=call_id, state=state, seq=snap.seq, turn=snap.turn,
                                                 seen=RecentIds(snap.seen), ended=snap.ended_at is not None)
            self._call_partition[call_id] = part
            self._touched[call_id] = snap.touched
            if snap.ended_at is not None:
                self._ended_at[call_id] = snap.ended_at
            restored += 1
        if stale:
            await self.bus.save_snapshots(self.group, stale)
        self.restored += restored
        if found:
            log.info("state restored from snapshots", stage=self.stage.name, calls=restored, dropped=len(stale),
                     partitions=sorted(parts))

    async def _forget(self, tps: set[TopicPartition]) -> None:
        gone = {p for _, p in tps}
        for call_id, part in list(self._call_partition.items()):
            if part in gone:
                self._drop(call_id)


async def run_stages(runners: list[StageRunner]) -> None:
    """Run several stage runners until all stop (used by `dianxiao run` and the demo)."""
    await asyncio.gather(*(r.run() for r in runners))


