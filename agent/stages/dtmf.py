"""DTMF stage: call.control CallDtmf -> nlu.results, through the playbook's key map (agent/dtmf.py).

A key press is understood like a spoken request: "0" becomes request_human, "*13800138000#"
a callback_request with the `phone` entity, and DST and policy answer it as they would the
words.  The result belongs to the caller's latest turn (the DST numbers turns itself), so a
key never shifts the turn numbers the speech stages write."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent import events as ev
from agent import topics
from agent.dtmf import DtmfMap, KeyBuffer, press
from agent.stages.base import CallContext, Emit, Stage

VERSION = "dtmf-1"


@dataclass
class CallKeys:
    buffer: KeyBuffer = field(default_factory=KeyBuffer)
    turn: int = 0


class DtmfStage(Stage):
    name = "dtmf"
    # nlu.results (not transcripts) for the caller's latest turn: transcripts may carry raw
    # device input, which the nlu stage already dead-letters once
    reads = (topics.CONTROL, topics.NLU)
    writes = (topics.NLU,)

    def __init__(self, keymap: DtmfMap) -> None:
        self.keymap = keymap
        self.version = VERSION

    def new_state(self, call_id: str) -> CallKeys:
        return CallKeys()

    def handle(self, event: Any, ctx: CallContext) -> list[Emit]:
        st: CallKeys = ctx.state
        if isinstance(event, ev.NluResult):
            st.turn = max(st.turn, event.turn)
            return []
        if not isinstance(event, ev.CallDtmf):
            return []
        meant = press(st.buffer, event.digit, self.keymap)
        if meant is None:
            return []
        entities = [ev.Entity(type="phone", value=meant.phone, text=meant.keys)] if meant.phone else []
        result = self.make(
            ev.NluResult, event, ctx, 0, turn=max(st.turn, event.turn), text=f"[按键] {meant.keys}",
            intents=[ev.Intent(name=meant.intent)] if meant.intent else [],
            entities=entities, decided_by="rule", model_version=VERSION,
        )
        return [Emit(topics.NLU, result)]
