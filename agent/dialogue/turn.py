"""One caller turn through the dialogue core: track, decide, record the act, render."""

from __future__ import annotations

from agent.dialogue.playbook import Playbook
from agent.dialogue.policy import Action, Reply, decide
from agent.dialogue.replies import render
from agent.dialogue.state import DialogueState, note_action, update
from agent.events import NluResult


def track(state: DialogueState, nlu: NluResult, playbook: Playbook) -> tuple[DialogueState, Action]:
    """The state after this turn, with the bot's action for it already recorded."""
    state = update(state, nlu, objection_cue=playbook.objection_cue(nlu.text))
    action = decide(state, playbook)
    state = note_action(state, action.name, action.all_params(), action.stage)
    return state, action


def step(state: DialogueState, nlu: NluResult, playbook: Playbook) -> tuple[DialogueState, Action, Reply]:
    state, action = track(state, nlu, playbook)
    return state, action, render(action, state, playbook)
