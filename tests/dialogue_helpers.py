"""Helpers for the dialogue tests: NLU results written by hand, so that the tracker and policy
are tested on exactly the taxonomy (issue 8) whatever the NLU model of the day says."""

from __future__ import annotations

from typing import Any

from agent.dialogue import DialogueState, Playbook, load_playbook
from agent.dialogue.turn import step
from agent.events import Entity, Intent, NluResult


def nlu(text: str, intents: list[str], entities: list[tuple[str, Any]] = (), turn: int = 0) -> NluResult:
    ents = []
    for etype, value in entities:
        surface = {"concurrency": f"{value}并发"}.get(etype)
        ents.append(_entity(text, etype, value, surface))
    return NluResult(call_id="c1", turn=turn, text=text, intents=[Intent(name=i) for i in intents], entities=ents)


def _entity(text: str, etype: str, value: Any, surface: str | None) -> Entity:
    # find the entity's span the way the NLU reports it (first occurrence of its surface form)
    for s in (surface, str(value)):
        if s and s in text:
            i = text.index(s)
            return Entity(type=etype, value=value, text=s, start=i, end=i + len(s))
    return Entity(type=etype, value=value)


class Conversation:
    """Plays caller turns (as NLU results) through the dialogue core, keeping the replies."""

    def __init__(self, playbook: Playbook) -> None:
        self.playbook = playbook
        self.state = DialogueState()
        self.replies: list[Any] = []
        self.actions: list[Any] = []

    def say(self, text: str, intents: list[str], entities: list[tuple[str, Any]] = ()) -> str:
        result = nlu(text, intents, list(entities), turn=self.state.turn + 1)
        self.state, action, reply = step(self.state, result, self.playbook)
        self.actions.append(action)
        self.replies.append(reply)
        return reply.text


# --- a caller for the tracker stories (issue 15 item 5) ------------------------------------


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
