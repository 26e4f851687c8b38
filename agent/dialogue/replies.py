"""Replies: the playbook's spoken-style templates filled from the action, state and catalogue.

Every number a template reply states comes from the catalogue (prices, capacities, specs) or
from the caller's own words (their concurrency); `allowed_numbers` lists exactly those, and the
LLM phrasing is checked against it."""

from __future__ import annotations

import string
from typing import Any

from agent.dialogue.playbook import Playbook
from agent.dialogue.policy import Action, Reply
from agent.dialogue.state import NUMERIC_SLOTS, DialogueState

_OFFERS = {
    "demo": "要不要先给您安排个免费演示？",
    "quote": "要不要我给您报个详细价格？",
    "close": "您看要不要就定这个？",
    "callback": "",
    "human": "要不要我请人工顾问跟您联系？",
}


def render(action: Action, state: DialogueState, playbook: Playbook) -> Reply:
    """The template reply for an action (and its follow-up act, if any)."""
    text = _fill(action, state, playbook)
    if action.then is not None:
        text += _fill(action.then, state, playbook)
    name = action.name if action.then is None else f"{action.name}+{action.then.name}"
    return Reply(text=text, action=name, ends_call=action.ends_call, decided_by="template")


def _fill(action: Action, state: DialogueState, pb: Playbook) -> str:
    template = pb.templates.get(action.name) or pb.templates["fallback"]
    values = _SafeDict(_values(action, state, pb))
    return string.Formatter().vformat(template, (), values).strip()


class _SafeDict(dict):
    def __missing__(self, key: str) -> str:
        return ""


def _values(action: Action, state: DialogueState, pb: Playbook) -> dict[str, Any]:
    p = action.params
    v: dict[str, Any] = {"company": pb.company, "agent_name": pb.agent_name, "question": p.get("question", "")}
    v["offer"] = _OFFERS.get(p.get("offer") or "", "")
    v["answer"] = p.get("answer", "")
    product = pb.product(p.get("product"))
    found = pb.plan(p.get("plan")) if p.get("plan") else None
    if product is None and found is not None:
        product = found[0]
    if product is not None:
        v["product_name"] = product.name
        size = state.value(product.sizing_slot)
        v["need"] = f"{size}并发的需求" if size is not None and product.sizing_slot == "concurrency" else (
            f"{size}的规模" if size is not None else "的需求")
    if found is not None:
        plan = found[1]
        v.update(plan_name=plan.name, spec=plan.spec, price=plan.price_year, capacity=plan.capacity)
        unit = "并发" if product is not None and product.sizing_slot == "concurrency" else ""
        v["capacity_text"] = f"支持{plan.capacity}{unit}" if unit else (plan.spec or f"最多{plan.capacity}")
        if plan.per_seat and p.get("seats"):
            v["seats"] = f"，按{p['seats']}个算（每个一年{plan.price_year}元）"
        if product is not None:
            others = [f"{o.name}{o.capacity}并发" if product.sizing_slot == "concurrency" else f"{o.name}{o.capacity}"
                      for o in product.plans if o.id != plan.id]
            v["others"] = ("另外还有" + "、".join(others)) if others else ""
    if product is not None and "addons" in p:
        addons = [a for a in (product.addon(x) for x in p["addons"]) if a is not None]
        v["addons_text"] = ("加" + "、".join(a.name for a in addons)) if addons else ""
        v["breakdown"] = (
            f"，其中{found[1].name if found else ''}{p.get('plan_total') or (found[1].price_year if found else '')}元、"
            + "、".join(f"{a.name}{a.price_year}元" for a in addons)
            if addons
            else ""
        )
        v["total"] = p.get("total", "")
    if action.name == "recommend":
        v["prefix"] = "好的，" if state.corrected else ""
    if action.name == "quote" and p.get("changed"):
        v["product_name"] = "好的，改一下：" + v.get("product_name", "")
    if action.name == "price_objection":
        if found is not None and not p.get("same") and p.get("fits"):
            v["alternative"] = f"{v['product_name']}{found[1].name}一年{found[1].price_year}元，也能满足您的需求。"
        elif found is not None and not p.get("same"):
            v["alternative"] = f"要是预算紧，{v['product_name']}{found[1].name}一年{found[1].price_year}元。"
        elif found is not None:
            v["alternative"] = f"{found[1].name}已经是满足您需求最实惠的配置了。"
        else:
            v["alternative"] = ""
    if action.name == "book_demo":
        slot = state.slots.get("callback_time")
        v["when"] = (slot.text or _time_words(slot.value)) if slot is not None and slot.turn == state.turn else ""
    if action.name == "book_callback":
        slot = state.slots.get("callback_time")
        v["callback_time"] = slot.text if slot is not None and slot.text else _time_words(p.get("callback_time"))
    if action.name == "unknown_product":
        near = f"，跟它最接近的是我们的{p['nearest']}。{p.get('answer') or ''}" if p.get("nearest") else ""
        v["answer"] = f"{p.get('unknown') or '这个'}我们暂时不做{near}".rstrip("。") + "。"
    if action.name == "compare" and p.get("competitor_name"):
        v["answer"] = f"跟{p['competitor_name']}比，{p['answer']}"
    return v


def _time_words(value: Any) -> str:
    """An ISO time is read out as month/day/hour; relative words stay as the caller said them."""
    s = str(value or "")
    if len(s) >= 16 and s[4] == "-" and "T" in s:
        month, day, hour = int(s[5:7]), int(s[8:10]), int(s[11:13])
        minute = int(s[14:16])
        return f"{month}月{day}日{hour}点" + (f"{minute}分" if minute else "")
    if len(s) == 10 and s[4] == "-":
        return f"{int(s[5:7])}月{int(s[8:10])}日"
    return s or "改天"


def allowed_numbers(state: DialogueState, playbook: Playbook, action: Action | None = None) -> set[float]:
    """Numbers a reply may state: the catalogue's, the caller's own, the quoted total and the
    date/time read back for a callback."""
    from agent.dialogue.numbers import numbers_in

    out: set[float] = {float(n) for n in playbook.catalogue_numbers}
    for value in (state.value("product"), (action.all_params().get("product") if action is not None else None)):
        out |= {float(n) for n in playbook.product_numbers(value)}  # a pack product being discussed
    for slot in NUMERIC_SLOTS:
        if state.value(slot) is not None:
            out.add(float(state.value(slot)))
    for h in state.history:
        out |= {float(n) for n in numbers_in(h.text)}
    if action is not None:
        params = action.all_params()
        for key in ("total", "plan_total", "seats"):  # a seat price times the caller's seats
            if isinstance(params.get(key), (int, float)):
                out.add(float(params[key]))
        out |= {float(n) for n in numbers_in(_time_words(params.get("callback_time")))}
    return out


def unsupported_numbers(text: str, allowed: set[float], minimum: float = 10) -> list[float]:
    """Numbers in `text` (at least `minimum`: "一下/两周" are not claims) not in `allowed`."""
    from agent.dialogue.numbers import numbers_in

    return [n for n in numbers_in(text) if n >= minimum and float(n) not in allowed]
