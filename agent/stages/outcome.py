"""Outcome stage: every call that ends gets its own `call.outcome`, live calls included.

    bot.replies  BotReply(action)  ------------->  (remembered: the action's parts)
    call.control CallEnded         ------------->  call.control CallOutcome(kind "call", outcome, sale_stage)

The outcome is decided by the pure `agent.outcomes.call_outcome` from the bot's actions (the last
decisive one wins: book_demo → demo_booked, exit_do_not_call → dnc, …; a price stated and nothing
decided → quote_sent; otherwise hung_up), the same rule simulated campaigns use, so `dianxiao
learn` and the A/B report read live and simulated calls alike.  No model runs here.

Per-call state is only the distinct action names seen, each kept at its last use: that is all
`call_outcome` needs (the last decisive action is the one used last; the sale stage is the
furthest of the set), and it is bounded by the playbook's actions however long the call.  The
runner frees it a short grace after call.ended, as for every stage.

One outcome per call: the event id is derived from the CallEnded that caused it (a re-handled
end gives the same id and the recorder keeps one), and a second CallEnded of the same call (the
caller's BYE after the agent's own hang-up) writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent import events as ev
from agent import topics
from agent.outcomes import call_outcome_event
from agent.stages.base import CallContext, Emit, Stage


@dataclass
class CallSoFar:
    #: distinct action parts ("quote+book_demo" is two), oldest use first, each at its last use
    actions: list[str] = field(default_factory=list)
    done: bool = False  # this call's outcome was written


class OutcomeStage(Stage):
    name = "outcome"
    reads = (topics.CONTROL, topics.REPLIES)
    writes = (topics.CONTROL,)

    def new_state(self, call_id: str) -> CallSoFar:
        return CallSoFar()

    def handle(self, event: Any, ctx: CallContext) -> list[Emit]:
        st: CallSoFar = ctx.state
        if st.done:
            return []
        if isinstance(event, ev.BotReply):
            _note(st, event.action)
        elif isinstance(event, ev.CallEnded):
            st.done = True
            if event.reason == "bot_ended" and event.outcome:
                # the goodbye the agent hung up on: its reply and this end are on different
                # topics, so the end may be fetched first; the CallEnded names the action itself
                _note(st, event.outcome)
            out = call_outcome_event(ctx.call_id, st.actions, cause=event.event_id,
                                     turn=max(ctx.turn, event.turn), source="agent")
            ctx.seq += 1
            return [Emit(topics.CONTROL, out.model_copy(update={"seq": ctx.seq}))]
        return []


def _note(st: CallSoFar, action: str) -> None:
    for part in action.split("+"):
        if part in st.actions:
            st.actions.remove(part)
        st.actions.append(part)
