"""Policy + reply stage: dialogue.state -> bot.replies (and call end when the policy ends it)."""

from __future__ import annotations

from typing import Any

from agent import events as ev
from agent import topics
from agent.dialogue import DialogueState, Playbook, decide, render
from agent.stages.base import CallContext, Emit, Stage


class PolicyStage(Stage):
    name = "policy"
    reads = (topics.DIALOGUE,)
    writes = (topics.REPLIES,)

    def __init__(self, playbook: Playbook) -> None:
        self.playbook = playbook
        self.version = f"{playbook.name}@{playbook.version}"

    def handle(self, event: Any, ctx: CallContext) -> list[Emit]:
        if not isinstance(event, ev.DialogueStateUpdated):
            return []
        state = DialogueState.model_validate(event.state)
        action = decide(state, self.playbook)
        reply = render(action, state, self.playbook)
        out = self.make(
            ev.BotReply,
            event,
            ctx,
            0,
            text=reply.text,
            action=reply.action,
            ends_call=reply.ends_call,
            playbook_version=self.version,
        )
        return [Emit(topics.REPLIES, out)]
