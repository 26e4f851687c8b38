"""Policy + reply stage: dialogue.state -> bot.replies (and call end when the policy ends it)."""

from __future__ import annotations

from typing import Any

from agent import events as ev
from agent import topics
from agent.dialogue import Action, DialogueState, Playbook, decide, render
from agent.dialogue.llm import LlmPhraser
from agent.stages.base import CallContext, Emit, Stage


class PolicyStage(Stage):
    name = "policy"
    reads = (topics.DIALOGUE,)
    writes = (topics.REPLIES,)

    def __init__(self, playbook: Playbook, phraser: LlmPhraser | None = None) -> None:
        self.playbook = playbook
        self.phraser = phraser
        self.version = f"{playbook.name}@{playbook.version}"

    def handle(self, event: Any, ctx: CallContext) -> list[Emit]:
        if not isinstance(event, ev.DialogueStateUpdated):
            return []
        raw = dict(event.state)
        planned = raw.pop("next_action", None)
        state = DialogueState.model_validate(raw)
        # The tracker already ran the policy core for this turn; decide again only for a state
        # written without it (an older producer).
        action = Action.model_validate(planned) if planned else decide(state, self.playbook)
        reply = render(action, state, self.playbook)
        if self.phraser is not None:
            reply = self.phraser.phrase(reply, action, state, self.playbook)
        out = self.make(
            ev.BotReply,
            event,
            ctx,
            0,
            text=reply.text,
            action=reply.action,
            ends_call=reply.ends_call,
            playbook_version=self.version,
            decided_by=reply.decided_by,
        )
        return [Emit(topics.REPLIES, out)]
