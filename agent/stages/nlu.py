"""NLU stage: transcripts (final) -> nlu.results.

It also reads the bot's replies, so that a caller's answer is understood as an answer to what the
agent just said (是的 after "need an on-site demo?" is a yes to the demo)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent import events as ev
from agent import topics
from agent.nlu import Understander, understand_turn
from agent.stages.base import CallContext, Emit, Stage

CONTEXT_TURNS = 3


@dataclass
class NluCallState:
    said: list[str] = field(default_factory=list)  # the caller's previous final transcripts, newest last
    bot_prev: str = ""  # the agent's last reply ("" before it has said anything)
    # what a retracted turn takes back (TranscriptFinal.retracts_turn): the caller's turn that
    # said[-1] is, and the reply before the one to `bot_prev_turn` (the cut turn's reply was
    # cancelled unheard, so the caller is still answering the one before it)
    said_turn: int = 0
    bot_prev_turn: int = 0
    bot_before: str = ""


class NluStage(Stage):
    name = "nlu"
    reads = (topics.TRANSCRIPTS, topics.REPLIES)
    writes = (topics.NLU,)
    # read for context only (they produce nothing); a replay feeds the recorded replies in log
    # order, so a replay with a changed policy still shows the NLU what the caller really heard
    context_topics = (topics.REPLIES,)

    def __init__(self, understander: Understander) -> None:
        self.understander = understander
        self.version = understander.version

    def new_state(self, call_id: str) -> NluCallState:
        return NluCallState()

    def load_state(self, call_id: str, data: Any) -> NluCallState:
        if isinstance(data, list):  # a snapshot from before the state held the bot's reply
            return NluCallState(said=[str(t) for t in data])
        return super().load_state(call_id, data)

    def handle(self, event: Any, ctx: CallContext) -> list[Emit]:
        state: NluCallState = ctx.state
        if isinstance(event, ev.BotReply):
            if event.turn != state.bot_prev_turn:
                state.bot_before = state.bot_prev
            state.bot_prev, state.bot_prev_turn = event.text, event.turn
            return []
        if not isinstance(event, ev.TranscriptFinal):
            return []
        if event.retracts_turn:
            # this turn's words include the cut turn's: it is not context for itself
            if state.said and state.said_turn == event.retracts_turn:
                state.said.pop()
            if state.bot_prev_turn == event.retracts_turn:
                state.bot_prev, state.bot_prev_turn = state.bot_before, 0
        out = understand_turn(self.understander, event.text, tuple(state.said[-CONTEXT_TURNS:]), state.bot_prev)
        state.said.append(event.text)
        state.said_turn = event.turn
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
            retracts_turn=event.retracts_turn,
        )
        return [Emit(topics.NLU, result)]
