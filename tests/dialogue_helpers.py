"""A caller whose NLU results are written by hand, for stories that test the tracker alone."""

from __future__ import annotations

from typing import Any

from agent.dialogue import DialogueState, load_playbook
from agent.dialogue.turn import step
from agent.events import Entity, Intent, NluResult


def entity(text: str, etype: str, value: Any, surface: str | None = None, negated: bool = False) -> Entity:
    """An entity as an understander reports it: positioned on `surface` (the value's text by default)."""
    surface = surface if surface is not None else str(value)
    i = text.find(surface)
    if i < 0:
        return Entity(type=etype, value=value, text=surface, negated=negated)
    return Entity(type=etype, value=value, text=surface, start=i, end=i + len(surface), negated=negated)


class Caller:
    def __init__(self, playbook: str = "cloud_saas") -> None:
        self.playbook = load_playbook(playbook)
        self.state = DialogueState()

    def says(self, text: str, intents: list[str], *entities: tuple[Any, ...]) -> DialogueState:
        ents = [entity(text, *e) for e in entities]
        result = NluResult(call_id="c", turn=self.state.turn + 1, text=text,
                           intents=[Intent(name=i) for i in intents], entities=ents)
        self.state, _, _ = step(self.state, result, self.playbook)
        return self.state

    def slot(self, name: str) -> Any:
        return self.state.value(name)
