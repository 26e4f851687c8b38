"""Dialogue: state tracking (pure update), playbook (data), policy (decide) and replies (render).

Interface used by the stages:
    state = update(state, nlu_result)            # DialogueState, NluResult -> DialogueState
    action = decide(state, playbook)             # -> Action
    reply = render(action, state, playbook)      # -> Reply
"""

from agent.dialogue.playbook import Playbook, load_playbook
from agent.dialogue.policy import Action, Reply, decide, render
from agent.dialogue.state import DialogueState, update

__all__ = ["Action", "DialogueState", "Playbook", "Reply", "decide", "load_playbook", "render", "update"]
