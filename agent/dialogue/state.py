"""Dialogue state and its pure update function (placeholder; the dialogue issue extends it)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from agent.events import NluResult


class DialogueState(BaseModel):
    turn: int = 0
    intents: list[str] = Field(default_factory=list)
    slots: dict[str, Any] = Field(default_factory=dict)
    stage: str = "opening"
    last_text: str = ""


def update(state: DialogueState, nlu: NluResult) -> DialogueState:
    slots = dict(state.slots)
    for e in nlu.entities:
        slots[e.type] = e.value
    return state.model_copy(
        update={
            "turn": nlu.turn,
            "intents": [i.name for i in nlu.intents],
            "slots": slots,
            "last_text": nlu.text,
            "stage": "discovery",
        }
    )
