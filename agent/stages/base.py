"""What a stage is: the topics it reads, per-call state, and a pure-ish `handle`.

A stage never does I/O itself.  It receives one event and the call's state, and returns the
events to publish.  The runner (agent/runner.py) does the bus work: decoding, dead letters,
de-duplication, committing, and rebuilding state from the log after a restart by feeding the
already-committed inputs back through `handle` with the outputs thrown away.  That only works
if `handle` depends on nothing but (event, state, the stage's configuration): keep it so.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel

from agent import events as ev


@dataclass
class CallContext:
    """Per-call state a stage keeps between events; rebuilt from the log on restart."""

    call_id: str
    state: Any = None
    seq: int = 0
    turn: int = 0
    seen: set[str] = field(default_factory=set)
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

    def new_state(self, call_id: str) -> Any:
        return None

    @abstractmethod
    def handle(self, event: Any, ctx: CallContext) -> list[Emit]:
        """React to one event of this call.  May update ctx.state; returns events to publish."""

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
