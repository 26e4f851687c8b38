"""Dialogue-state-tracking stage: nlu.results -> dialogue.state (the full state each turn).

The state carries the action the policy core chose for this turn (`next_action`), because the
next turn's tracking needs to know what the bot asked and named ("两千吧", "这个版本").

A turn that takes back the one before (`NluResult.retracts_turn`: the caller paused mid-sentence,
the agent ended the turn there, and the caller went on before the reply to the fragment played)
is tracked from the state *before* the fragment: the fragment's intents and values, and the
action chosen for it, were never heard by the caller and its words are inside this turn."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent import events as ev
from agent import topics
from agent.dialogue import DialogueState, Playbook, load_playbook
from agent.dialogue.turn import track
from agent.stages.base import CallContext, Emit, Stage


@dataclass
class DstCallState:
    state: DialogueState = field(default_factory=DialogueState)
    # the state before the last tracked turn, and that turn: one step of undo for a retraction
    before_last: DialogueState | None = None
    last_turn: int = 0


class DstStage(Stage):
    name = "dst"
    reads = (topics.NLU,)
    writes = (topics.DIALOGUE,)

    def __init__(self, playbook: Playbook | None = None, playbook_version: str | None = None) -> None:
        self.playbook = playbook or load_playbook()
        self.playbook_version = playbook_version or f"{self.playbook.name}@{self.playbook.version}"
        self.version = self.playbook_version

    def new_state(self, call_id: str) -> DstCallState:
        return DstCallState()

    def dump_state(self, state: DstCallState) -> dict[str, Any]:
        return {"state": state.state.model_dump(mode="json"), "last_turn": state.last_turn,
                "before_last": state.before_last.model_dump(mode="json") if state.before_last else None}

    def load_state(self, call_id: str, data: Any) -> DstCallState:
        if "last_turn" not in data:  # a snapshot from before retractions: the DialogueState itself
            return DstCallState(state=DialogueState.model_validate(data))
        before = data.get("before_last")
        return DstCallState(state=DialogueState.model_validate(data["state"]), last_turn=int(data["last_turn"]),
                            before_last=DialogueState.model_validate(before) if before else None)

    def handle(self, event: Any, ctx: CallContext) -> list[Emit]:
        if not isinstance(event, ev.NluResult):
            return []
        call: DstCallState = ctx.state
        start = call.state
        if event.retracts_turn and event.retracts_turn == call.last_turn and call.before_last is not None:
            start = call.before_last
        state, action = track(start, event, self.playbook)
        call.before_last, call.state, call.last_turn = start, state, event.turn
        out = self.make(
            ev.DialogueStateUpdated,
            event,
            ctx,
            0,
            state={**state.model_dump(mode="json"), "next_action": action.model_dump(mode="json")},
            playbook_version=self.playbook_version,
        )
        return [Emit(topics.DIALOGUE, out)]
