"""The async shell around a Stage: consume, handle, produce, commit.

Delivery is at-least-once: a batch's offsets are committed only after every output of the
batch was published.  If the process dies in between, the batch is handled again after the
restart; outputs get deterministic ids (derived from the causing event), so the next stage
drops the repeats by event id.  Per-call state is rebuilt on (re)assignment of a partition by
feeding the already-committed input records back through `handle` and discarding outputs.
"""

from __future__ import annotations

import asyncio
import time


import structlog

from agent import events as ev
from agent import topics
from agent.bus.base import Bus, Consumer, Record, TopicPartition
from agent.observability import Metrics
from agent.stages.base import CallContext, Emit, Stage

log = structlog.get_logger("dianxiao.runner")

LAG_EVERY_S = 5.0

# The events that carry a caller turn from stage to stage.  Handling one (or emitting one, as
# the VAD emits the segment that ends a turn) is logged at INFO: one line per turn and stage
# for operators.  Everything else (audio frames, partial transcripts, call control) stays at
# DEBUG, or an audio call would log fifty lines a second.
TURN_EVENTS = frozenset({"speech.segment", "transcript.final", "nlu.result", "dialogue.state", "bot.reply"})


class StageRunner:
    def __init__(
        self,
        stage: Stage,
        bus: Bus,
        *,
        metrics: Metrics | None = None,
        member: str | None = None,
        group: str | None = None,
    ) -> None:
        self.stage = stage
        self.bus = bus
        self.metrics = metrics or Metrics()
        self.group = group or stage.name
        self.member = member
        self.contexts: dict[str, CallContext] = {}
        self._call_partition: dict[str, int] = {}
        self._stopping = asyncio.Event()
        self._consumer: Consumer | None = None
        self.ready = asyncio.Event()
        self.handled = 0

    # --- lifecycle ---------------------------------------------------------------------

    def stop(self) -> None:
        """Finish the batch in hand, commit it, and leave the group."""
        self._stopping.set()

    async def run(self) -> None:
        consumer = self.bus.consumer(self.group, self.stage.reads, member=self.member)
        consumer.on_assign = self._rebuild
        consumer.on_revoke = self._forget
        self._consumer = consumer
        await consumer.start()
        self.ready.set()
        log.info("stage started", stage=self.stage.name, group=self.group, reads=list(self.stage.reads))
        next_lag = 0.0
        try:
            while not self._stopping.is_set():
                records = await consumer.getmany(timeout_ms=200, max_records=200)
                if records:
                    await self._process_batch(consumer, records)
                if time.monotonic() >= next_lag:
                    next_lag = time.monotonic() + LAG_EVERY_S
                    await self._report_lag()
        finally:
            await consumer.stop()
            log.info("stage stopped", stage=self.stage.name, handled=self.handled)

    async def _report_lag(self) -> None:
        try:
            for (topic, partition), lag in (await self.bus.lag_by_partition(self.group, self.stage.reads)).items():
                self.metrics.lag.labels(self.stage.name, self.group, topic, str(partition)).set(lag)
        except Exception as exc:  # a metric must never take the stage down
            log.debug("lag unavailable", error=str(exc))

    # --- the work ----------------------------------------------------------------------

    async def _process_batch(self, consumer: Consumer, records: list[Record]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for rec in records:
            if self.stage.blocking:
                # CPU-heavy stages (VAD models, ASR decode) run off the event loop, so that the
                # other stages of a single-process pipeline keep going meanwhile (the ASR decode
                # overlaps the VAD's end-of-turn model) and the loop never stalls on them.
                outputs = await asyncio.to_thread(self._handle_record, rec)
            else:
                outputs = self._handle_record(rec)
            if outputs:
                await self.bus.publish_many(outputs)
                for topic, _, _ in outputs:
                    self.metrics.emitted.labels(self.stage.name, topic).inc()
            offsets[(rec.topic, rec.partition)] = rec.offset + 1
        await consumer.commit(offsets)

    def _handle_record(self, rec: Record, *, replay: bool = False) -> list[tuple[str, str, bytes]]:
        """Decode and handle one record; returns (topic, key, value) to publish."""
        try:
            event = ev.decode(rec.value)
        except ev.EventError as exc:
            return [] if replay else [self._dead_letter(rec, str(exc))]
        ctx = self._context(event.call_id, rec.partition)
        if event.event_id in ctx.seen:
            if not replay:
                self.metrics.duplicates.labels(self.stage.name).inc()
            return []
        ctx.seen.add(event.event_id)
        ctx.turn = max(ctx.turn, event.turn)
        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(call_id=event.call_id, turn=event.turn, stage=self.stage.name):
            try:
                emits: list[Emit] = self.stage.handle(event, ctx)
            except Exception as exc:  # a stage must never die on one bad event
                if replay:
                    return []
                log.exception("handler failed", event_type=event.type, event_id=event.event_id)
                return [self._dead_letter(rec, f"handler failed: {type(exc).__name__}: {exc}")]
        if isinstance(event, ev.CallEnded):
            ctx.ended = True
            self.contexts.pop(event.call_id, None)
            self._call_partition.pop(event.call_id, None)
        if replay:
            return []
        self.handled += 1
        took = time.perf_counter() - started
        self.metrics.handled.labels(self.stage.name, rec.topic).inc()
        self.metrics.handle_seconds.labels(self.stage.name).observe(took)
        if event.type in TURN_EVENTS or any(getattr(e.event, "type", None) in TURN_EVENTS for e in emits):
            log.info("turn handled", call_id=event.call_id, turn=event.turn, stage=self.stage.name,
                     event_type=event.type, emitted=len(emits), ms=round(took * 1000, 2))
        else:
            log.debug("event handled", call_id=event.call_id, turn=event.turn, stage=self.stage.name,
                      event_type=event.type, emitted=len(emits), ms=round(took * 1000, 2))
        return [(e.topic, e.event.call_id, ev.encode(e.event)) for e in emits]  # type: ignore[attr-defined]

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

    # --- rebuilding state (event sourcing) ---------------------------------------------

    async def _rebuild(self, tps: set[TopicPartition]) -> None:
        records: list[Record] = []
        for tp in tps:
            upto = await self.bus.committed(self.group, tp)
            if upto > 0:
                records.extend(await self.bus.read_range(tp, 0, upto))
        # Inputs from several topics interleave by production time, as they did live.
        records.sort(key=_production_order)
        for rec in records:
            self._handle_record(rec, replay=True)
        if records:
            log.info("state rebuilt from log", stage=self.stage.name, records=len(records), calls=len(self.contexts))

    async def _forget(self, tps: set[TopicPartition]) -> None:
        gone = {p for _, p in tps}
        for call_id, part in list(self._call_partition.items()):
            if part in gone:
                self.contexts.pop(call_id, None)
                del self._call_partition[call_id]


def _production_order(rec: Record) -> tuple[float, str, int]:
    return (rec.timestamp, rec.topic, rec.offset)


async def run_stages(runners: list[StageRunner]) -> None:
    """Run several stage runners until all stop (used by `dianxiao run` and the demo)."""
    await asyncio.gather(*(r.run() for r in runners))


