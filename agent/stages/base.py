"""What a stage is: the topics it reads, per-call state, and a pure-ish `handle`.

A stage never does I/O itself.  It receives one event and the call's state, and returns the
events to publish.  The runner (agent/runner.py) does the bus work: decoding, dead letters,
de-duplication, committing, and keeping each open call's state as a snapshot (after every batch,
before its offsets are committed), so that a restarted stage carries on from the snapshot and
never re-handles old inputs.  `dump_state` / `load_state` turn a call's state into JSON and
back; the defaults cover None, pydantic models, lists/dicts and dataclasses of those (sets
become sorted lists), using `new_state` as the template.  A stage whose state holds things that
should not be stored (audio buffers, model caches) overrides them and keeps what it needs.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel

from agent import events as ev


#: event ids a call remembers for de-duplication.  Repeats come from an upstream stage that
#: re-handled its last uncommitted batch (at most a few hundred records across all calls), so
#: the most recent ids of one call are enough, and a long call's memory stays bounded.
SEEN_PER_CALL = 256


class RecentIds:
    """A set of the most recent `limit` ids (oldest forgotten first)."""

    __slots__ = ("_ids", "limit")

    def __init__(self, ids: Iterable[str] = (), limit: int = SEEN_PER_CALL) -> None:
        self.limit = limit
        self._ids: dict[str, None] = {}
        for i in ids:
            self.add(i)

    def __contains__(self, item: object) -> bool:
        return item in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._ids)

    def add(self, item: str) -> None:
        self._ids[item] = None
        if len(self._ids) > self.limit:
            del self._ids[next(iter(self._ids))]


@dataclass
class CallContext:
    """Per-call state a stage keeps between events; kept as a snapshot by the runner."""

    call_id: str
    state: Any = None
    seq: int = 0
    turn: int = 0
    seen: RecentIds = field(default_factory=RecentIds)
    ended: bool = False


@dataclass
class Emit:
    topic: str
    event: BaseModel


class Stage(ABC):
    name: ClassVar[str]
    reads: ClassVar[tuple[str, ...]]
    writes: ClassVar[tuple[str, ...]] = ()
    #: version of the model/rules/playbook this stage applies; recorded on every output event
    version: str = "1"
    #: True for stages whose handle() does heavy native work (model inference): the runner then
    #: calls it in a worker thread, one event at a time, instead of on the event loop
    blocking: ClassVar[bool] = False
    #: > 1: the runner keeps this many events of *different* calls in flight at once, each in a
    #: worker thread (the ASR: one Whisper decode per core instead of one at a time).  A call's
    #: own events still run one at a time and in order.  Set per instance from settings.
    workers: int = 1
    #: True for stages that do better with a batch's events at once (`handle_batch`): the VAD
    #: runs Silero once per round over every call in the batch instead of once per window
    batched: ClassVar[bool] = False
    #: True for stages whose `handle_stream` yields outputs in parts that should leave as soon
    #: as each is ready (TTS: the first clause's audio goes out while the rest is synthesised)
    streams: ClassVar[bool] = False
    #: True for effect stages (the LLM phrasing) whose `handle_async` awaits network I/O: the
    #: runner awaits it as a task on the event loop, up to `workers` calls at once
    asynchronous: ClassVar[bool] = False

    def new_state(self, call_id: str) -> Any:
        return None

    def dump_state(self, state: Any) -> Any:
        """The call's state as JSON-able data for its snapshot (see the module docstring)."""
        return to_jsonable(state)

    def load_state(self, call_id: str, data: Any) -> Any:
        """The inverse of `dump_state`."""
        return from_jsonable(self.new_state(call_id), data)

    @abstractmethod
    def handle(self, event: Any, ctx: CallContext) -> list[Emit]:
        """React to one event of this call.  May update ctx.state; returns events to publish."""

    def handle_batch(self, items: list[tuple[Any, CallContext]]) -> list[list[Emit]]:
        """Handle several events (of one or more calls, each call's in order); one list of
        outputs per item.  The default is `handle` one by one."""
        return [self.handle(event, ctx) for event, ctx in items]

    def handle_stream(self, event: Any, ctx: CallContext) -> Iterator[list[Emit]]:
        """`handle` in parts: the runner publishes each part as soon as it is yielded."""
        yield self.handle(event, ctx)

    async def handle_async(self, event: Any, ctx: CallContext) -> list[Emit]:
        """`handle` with an awaited effect (only for `asynchronous` stages)."""
        return self.handle(event, ctx)

    def priority(self, event: Any) -> int:
        """For parallel stages: lower runs first when workers are scarce (finals before partials)."""
        return 0

    def supersedes(self, newer: Any, older: Any) -> bool:
        """For parallel stages: True when `older` (same call, not started yet) need not be
        handled at all because `newer` arrived (a partial whose audio a newer segment extends)."""
        return False

    # --- helpers for building outputs with a consistent envelope -------------------------

    def make(self, cls: type[BaseModel], cause: Any, ctx: CallContext, index: int, **fields: Any) -> Any:
        """Build an output event caused by `cause`: deterministic id (so a re-handled event
        produces the same ids), per-call sequence number, turn inherited unless given."""
        ctx.seq += 1
        fields.setdefault("turn", getattr(cause, "turn", ctx.turn))
        return cls(
            event_id=ev.derived_event_id(cause.event_id, self.name, index),
            call_id=ctx.call_id,
            seq=ctx.seq,
            stage=self.name,
            caused_by=cause.event_id,
            **fields,
        )


# --- default state <-> JSON, typed by the stage's own fresh state ---------------------------


def to_jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (set, frozenset)):
        return sorted(to_jsonable(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: to_jsonable(v) for k, v in value.items()}
    # Say which stage state cannot be stored, rather than storing something that cannot come back.
    raise TypeError(f"cannot snapshot a {type(value).__name__}: override Stage.dump_state/load_state")


def from_jsonable(template: Any, data: Any) -> Any:
    """Rebuild a value shaped like `template` (a fresh state) from `to_jsonable` output."""
    if data is None:
        return None
    if isinstance(template, BaseModel):
        return type(template).model_validate(data)
    if dataclasses.is_dataclass(template) and not isinstance(template, type):
        for f in dataclasses.fields(template):
            if f.name in data:
                setattr(template, f.name, from_jsonable(getattr(template, f.name), data[f.name]))
        return template
    if isinstance(template, (set, frozenset)):
        return type(template)(data)
    if isinstance(template, tuple):
        return tuple(data)
    if isinstance(template, bool) or template is None:
        return data
    if isinstance(template, (int, float, str)):
        return type(template)(data)
    if isinstance(template, (list, dict)):
        return data
    return data
