"""Policy and replies (placeholder; the dialogue issue replaces this)."""

from __future__ import annotations

from pydantic import BaseModel

from agent.dialogue.playbook import Playbook
from agent.dialogue.state import DialogueState


class Action(BaseModel):
    name: str
    params: dict = {}


class Reply(BaseModel):
    text: str
    action: str
    ends_call: bool = False


def decide(state: DialogueState, playbook: Playbook) -> Action:
    if "do_not_call" in state.intents:
        return Action(name="exit_do_not_call")
    if "price_inquiry" in state.intents and "product" in state.slots:
        return Action(name="quote", params={"product": state.slots["product"]})
    return Action(name="ask_needs")


def render(action: Action, state: DialogueState, playbook: Playbook) -> Reply:
    if action.name == "exit_do_not_call":
        return Reply(text="好的，不再打扰您，再见。", action=action.name, ends_call=True)
    if action.name == "quote":
        price = playbook.prices.get(action.params["product"])
        return Reply(text=f"云服务器年费是{price}元。", action=action.name)
    return Reply(text="请问您需要什么产品？", action=action.name)
