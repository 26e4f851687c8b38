"""NLU stage: transcripts (final) -> nlu.results."""

from __future__ import annotations

from typing import Any

from agent import events as ev
from agent import topics
from agent.nlu import Understander
from agent.stages.base import CallContext, Emit, Stage

CONTEXT_TURNS = 3


class NluStage(Stage):
    name = "nlu"
    reads = (topics.TRANSCRIPTS,)
    writes = (topics.NLU,)

    def __init__(self, understander: Understander) -> None:
        self.understander = understander
        self.version = understander.version

    def new_state(self, call_id: str) -> list[str]:
        return []  # the caller's previous final transcripts, newest last

    def handle(self, event: Any, ctx: CallContext) -> list[Emit]:
        if not isinstance(event, ev.TranscriptFinal):
            return []
        history: list[str] = ctx.state
        out = self.understander.understand(event.text, context=tuple(history[-CONTEXT_TURNS:]))
        history.append(event.text)
        result = self.make(
            ev.NluResult,
            event,
            ctx,
            0,
            text=event.text,
            intents=out.intents,
            entities=out.entities,
            decided_by=out.decided_by,
            model_version=out.version,
        )
        return [Emit(topics.NLU, result)]
