"""Hang-up stage: the agent ends the call itself, once its goodbye has been delivered.

    bot.replies  BotReply(ends_call)  --text call-->   call.control CallEnded(bot_ended, reply_event_id)
    call.control ReplyPlayed(goodbye) --audio call-->  call.control CallEnded(bot_ended, reply_event_id)
    call.control CallerSilent         ------------->   bot.replies  BotReply(exit_silence, ends_call) -> as above

"Delivered" depends on the call's mode (from its CallStarted): a text call's reply is delivered
when it is on bot.replies; an audio call's only when a connector played its last frame (the
bridge writes ReplyPlayed), so the goodbye is never cut off by the BYE; a goodbye the caller
talked over (ReplyPlayed interrupted) does not end the call: the caller's turn is answered.
Connectors act on the CallEnded (SIP BYE, provider stream closed, MQTT `hangup` command); they
never decide the end.

Pure like every stage: the silence itself is measured by a clock worker (agent/silence.py) that
writes CallerSilent; this stage only decides what to say about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog

from agent import events as ev
from agent import topics
from agent.stages.base import CallContext, Emit, Stage

log = structlog.get_logger("dianxiao.stages.hangup")

SILENCE_ACTION = "exit_silence"
#: said when the playbook has no `exit_silence` template
SILENCE_GOODBYE = "您好，好像听不到您的声音，我先不打扰了，有需要随时联系我们，再见。"


@dataclass
class CallLife:
    mode: str | None = None  # "text" | "audio" from CallStarted; None when the start was not seen
    goodbye: str | None = None  # the ends_call reply waiting to be played out (audio calls)
    goodbye_action: str | None = None
    silence_goodbye: bool = False  # a closing reply for silence was already said
    ended: bool = False


class HangupStage(Stage):
    name = "hangup"
    reads = (topics.CONTROL, topics.REPLIES)
    writes = (topics.CONTROL, topics.REPLIES)

    def __init__(self, silence_goodbye: str = SILENCE_GOODBYE, playbook_version: str | None = None) -> None:
        self.silence_goodbye = silence_goodbye
        self.playbook_version = playbook_version

    def new_state(self, call_id: str) -> CallLife:
        return CallLife()

    def handle(self, event: Any, ctx: CallContext) -> list[Emit]:
        st: CallLife = ctx.state
        if isinstance(event, ev.CallStarted):
            st.mode = event.mode
        elif isinstance(event, ev.CallEnded):
            st.ended = True
        elif st.ended:
            return []
        elif isinstance(event, ev.BotReply) and event.ends_call:
            if st.mode == "audio":
                # wait for the connector to play it out (ReplyPlayed), or the BYE cuts it off
                st.goodbye, st.goodbye_action = event.event_id, event.action
                return []
            return self._end(event, event.event_id, event.action, ctx)
        elif isinstance(event, ev.ReplyPlayed) and event.reply_event_id == st.goodbye:
            if event.interrupted:
                # The caller talked over the goodbye (a barge-in flushed the rest of it): they
                # have something to say, and hanging up now cuts them off mid-sentence with
                # their turn unanswered (bench_voice at 10 calls: a goodbye to a cut-off half
                # sentence, barged into by its second half).  Their turn goes to the policy;
                # the next ends_call reply that is played out ends the call.
                log.info("goodbye interrupted; call goes on", call_id=ctx.call_id, reply=event.reply_event_id)
                st.goodbye, st.goodbye_action = None, None
                st.silence_goodbye = False  # they are there: a later silence may be closed again
                return []
            return self._end(event, event.reply_event_id, st.goodbye_action, ctx)
        elif isinstance(event, ev.CallerSilent) and st.goodbye is None and not st.silence_goodbye:
            st.silence_goodbye = True
            reply = self.make(ev.BotReply, event, ctx, 0, text=self.silence_goodbye, action=SILENCE_ACTION,
                              ends_call=True, playbook_version=self.playbook_version, decided_by="template")
            return [Emit(topics.REPLIES, reply)]
        return []

    def _end(self, cause: Any, reply_id: str, action: str | None, ctx: CallContext) -> list[Emit]:
        ctx.state.ended = True
        ended = self.make(ev.CallEnded, cause, ctx, 1, reason="bot_ended", outcome=action, reply_event_id=reply_id)
        return [Emit(topics.CONTROL, ended)]


def silence_goodbye(playbook: Any) -> str:
    """The playbook's `exit_silence` template (company and agent name filled in), else the default."""
    template = (getattr(playbook, "templates", None) or {}).get(SILENCE_ACTION)
    if not template:
        return SILENCE_GOODBYE
    try:
        return template.format(company=playbook.company, agent_name=playbook.agent_name)
    except (KeyError, IndexError, ValueError):
        return SILENCE_GOODBYE
