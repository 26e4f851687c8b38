"""Policy + reply stage: dialogue.state -> bot.replies (and call end when the policy ends it).

With LLM phrasing on (`phrase=True`), the template reply goes to bot.drafts instead, with the
prompt and the numbers a rewording may state; the phrasing stage (agent/stages/phrasing.py) makes
the network call and publishes the final bot.reply.  This stage stays pure either way."""

from __future__ import annotations

from typing import Any

from agent import events as ev
from agent import topics
from agent.dialogue import Action, DialogueState, Playbook, decide, render
from agent.dialogue.llm import build_prompt, keeps_template
from agent.dialogue.replies import allowed_numbers
from agent.stages.base import CallContext, Emit, Stage


class PolicyStage(Stage):
    name = "policy"
    reads = (topics.DIALOGUE,)
    writes = (topics.REPLIES, topics.DRAFTS)

    def __init__(self, playbook: Playbook, phrase: bool = False) -> None:
        self.playbook = playbook
        self.phrase = phrase
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
        fields = dict(text=reply.text, action=reply.action, ends_call=reply.ends_call,
                      playbook_version=self.version, decided_by=reply.decided_by)
        if not self.phrase:
            return [Emit(topics.REPLIES, self.make(ev.BotReply, event, ctx, 0, **fields))]
        keep = keeps_template(action)
        draft = self.make(
            ev.ReplyDraft, event, ctx, 0, **fields, keep_template=keep,
            prompt=[] if keep else build_prompt(reply.text, state, self.playbook),
            allowed_numbers=[] if keep else sorted(allowed_numbers(state, self.playbook, action)),
        )
        return [Emit(topics.DRAFTS, draft)]
