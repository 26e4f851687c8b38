"""Dialogue-state-tracking stage: nlu.results -> dialogue.state (the full state each turn).

The state carries the action the policy core chose for this turn (`next_action`), because the
next turn's tracking needs to know what the bot asked and named ("两千吧", "这个版本")."""

from __future__ import annotations

from typing import Any

from agent import events as ev
from agent import topics
from agent.dialogue import DialogueState, Playbook, load_playbook
from agent.dialogue.turn import track
from agent.stages.base import CallContext, Emit, Stage


class DstStage(Stage):
    name = "dst"
    reads = (topics.NLU,)
    writes = (topics.DIALOGUE,)

    def __init__(self, playbook: Playbook | None = None, playbook_version: str | None = None) -> None:
        self.playbook = playbook or load_playbook()
        self.playbook_version = playbook_version or f"{self.playbook.name}@{self.playbook.version}"
        self.version = self.playbook_version

    def new_state(self, call_id: str) -> DialogueState:
        return DialogueState()

    def handle(self, event: Any, ctx: CallContext) -> list[Emit]:
        if not isinstance(event, ev.NluResult):
            return []
        state, action = track(ctx.state, event, self.playbook)
        ctx.state = state
        out = self.make(
            ev.DialogueStateUpdated,
            event,
            ctx,
            0,
            state={**state.model_dump(mode="json"), "next_action": action.model_dump(mode="json")},
            playbook_version=self.playbook_version,
        )
        return [Emit(topics.DIALOGUE, out)]
