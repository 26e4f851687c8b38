"""Dialogue-state-tracking stage: nlu.results -> dialogue.state (the full state each turn)."""

from __future__ import annotations

from typing import Any

from agent import events as ev
from agent import topics
from agent.dialogue import DialogueState, update
from agent.stages.base import CallContext, Emit, Stage


class DstStage(Stage):
    name = "dst"
    reads = (topics.NLU,)
    writes = (topics.DIALOGUE,)

    def __init__(self, playbook_version: str | None = None) -> None:
        self.playbook_version = playbook_version

    def new_state(self, call_id: str) -> DialogueState:
        return DialogueState()

    def handle(self, event: Any, ctx: CallContext) -> list[Emit]:
        if not isinstance(event, ev.NluResult):
            return []
        ctx.state = update(ctx.state, event)
        out = self.make(
            ev.DialogueStateUpdated,
            event,
            ctx,
            0,
            state=ctx.state.model_dump(mode="json"),
            playbook_version=self.playbook_version,
        )
        return [Emit(topics.DIALOGUE, out)]
