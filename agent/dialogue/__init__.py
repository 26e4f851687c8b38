"""Dialogue: state tracking (pure update), playbook (data), policy (decide) and replies (render).

Interface used by the stages:
    state = update(state, nlu_result)            # DialogueState, NluResult -> DialogueState
    action = decide(state, playbook)             # -> Action
    state = note_action(state, action.name, action.all_params(), action.stage)
    reply = render(action, state, playbook)      # -> Reply
`step` does the four for one caller turn.
"""

from agent.dialogue.playbook import Playbook, PlaybookError, load_playbook
from agent.dialogue.policy import Action, Reply, decide
from agent.dialogue.replies import render
from agent.dialogue.state import DialogueState, note_action, update
from agent.dialogue.turn import step

__all__ = [
    "Action",
    "DialogueState",
    "Playbook",
    "PlaybookError",
    "Reply",
    "decide",
    "load_playbook",
    "note_action",
    "render",
    "step",
    "update",
]
