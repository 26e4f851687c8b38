"""Phrasing stage: bot.drafts -> bot.replies, the LLM's wording of a template reply or the
template itself (docs/dialogue.md, "LLM phrasing").

The endpoint call is this stage's effect and the only await in it: `handle_async` asks the
phraser (httpx, with a timeout) and hands the answer to the pure `reply_for`, which checks it and
builds the final reply, recording the prompt hash and what the LLM said.  The runner keeps up to
`workers` calls' requests in flight at once on the event loop (each call's replies in order), so
a slow endpoint delays only its own call's turn.  The plain `handle` never touches the network:
it answers from recorded results (`RecordedPhraser`), which is what a replay uses."""

from __future__ import annotations

from typing import Any

import structlog

from agent import events as ev
from agent import topics
from agent.dialogue.llm import LlmAnswer, LlmPhraser, RecordedPhraser, check_phrasing, prompt_hash
from agent.stages.base import CallContext, Emit, Stage

log = structlog.get_logger(__name__)


class PhrasingStage(Stage):
    name = "phrasing"
    reads = (topics.DRAFTS,)
    writes = (topics.REPLIES,)
    #: the runner awaits `handle_async` for up to this many calls at once
    asynchronous = True
    #: a replay compares this stage's replies with the recorded ones under the policy's name
    replay_as = "policy"

    def __init__(self, phraser: LlmPhraser | RecordedPhraser | None, workers: int = 32) -> None:
        self.phraser = phraser
        self.workers = workers
        self.version = getattr(phraser, "model", None) or "recorded"

    def handle(self, event: Any, ctx: CallContext) -> list[Emit]:
        if not isinstance(event, ev.ReplyDraft):
            return []
        key = prompt_hash(event.prompt) if not event.keep_template else ""
        answer = self.phraser.lookup(key) if isinstance(self.phraser, RecordedPhraser) else None
        return self.reply_for(event, ctx, key, answer)

    async def handle_async(self, event: Any, ctx: CallContext) -> list[Emit]:
        if not isinstance(event, ev.ReplyDraft):
            return []
        if event.keep_template:
            return self.reply_for(event, ctx, "", None)
        key = prompt_hash(event.prompt)
        answer = (await self.phraser.answer(event.prompt, key) if self.phraser is not None
                  else LlmAnswer(None, "no LLM endpoint configured (DIANXIAO_LLM_BASE_URL)"))
        out = self.reply_for(event, ctx, key, answer)
        reply = out[0].event
        if reply.phrased_by == "template":
            log.warning("llm phrasing not used, template kept", reason=reply.phrasing_note, action=reply.action)
        return out

    def reply_for(self, draft: ev.ReplyDraft, ctx: CallContext, key: str, answer: LlmAnswer | None) -> list[Emit]:
        """The final reply for `draft` given the LLM's answer (pure)."""
        fields: dict[str, Any] = {**draft.policy_fields(), "phrased_by": "template", "template_text": draft.text}
        if draft.keep_template:
            fields["phrasing_note"] = "compliance wording: never phrased"
        else:
            answer = answer or LlmAnswer(None, "no answer")
            fields.update(prompt_hash=key, llm_text=answer.text, llm_model=getattr(self.phraser, "model", None))
            problem = answer.note if answer.text is None else check_phrasing(
                answer.text, draft.text, set(draft.allowed_numbers))
            if problem is None:
                fields.update(text=answer.text, decided_by="llm", phrased_by="llm")
            else:
                fields["phrasing_note"] = problem
        return [Emit(topics.REPLIES, self.make(ev.BotReply, draft, ctx, 0, **fields))]
