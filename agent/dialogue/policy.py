"""Policy: the next action from the dialogue state and the playbook.

Rules decide where a rule applies (do-not-call, hand-off to a human, a missing required slot,
compliance) and run last again as a safety net over whatever was chosen: a quote is only ever
for a plan in the catalogue with its required slots filled, and a do-not-call always wins."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from agent.dialogue.playbook import Playbook, Plan, Product
from agent.dialogue.state import DialogueState

#: actions after which the call is over
ENDING = frozenset({"exit_do_not_call", "exit_polite", "handoff_human", "book_demo", "book_callback", "close_sale", "wrap_up"})
#: the sale stage each action moves the call to
STAGE_OF = {
    "opening": "opening",
    "ask_slot": "discovery",
    "ask_product": "discovery",
    "ask_needs": "discovery",
    "introduce_products": "discovery",
    "unknown_product": "discovery",
    "answer_capacity": "discovery",
    "answer_feature": "recommendation",
    "answer_integration": "recommendation",
    "integration_unknown": "recommendation",
    "recommend": "recommendation",
    "quote": "recommendation",
    "compare": "objection_handling",
    "price_objection": "objection_handling",
    "objection": "objection_handling",
    "close_sale": "closing",
    "book_demo": "closing",
    "book_callback": "callback_booking",
    "offer_callback": "callback_booking",
    "exit_do_not_call": "exit",
    "exit_polite": "exit",
    "handoff_human": "exit",
    "wrap_up": "exit",
}


class Action(BaseModel):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    then: "Action | None" = None  # a second act in the same reply (answer, then return to the task)
    decided_by: str = "rule"

    @property
    def ends_call(self) -> bool:
        return self.name in ENDING or (self.then is not None and self.then.ends_call)

    @property
    def stage(self) -> str | None:
        """The sale stage this action moves to (None: a digression answer leaves it as it was)."""
        last = self.then or self
        return STAGE_OF.get(last.name) or last.params.get("stage")  # a playbook move names its stage

    def all_params(self) -> dict[str, Any]:
        return {**self.params, **(self.then.all_params() if self.then else {})}


class Reply(BaseModel):
    text: str
    action: str
    ends_call: bool = False
    decided_by: str = "template"


# --- deciding -----------------------------------------------------------------------------


def decide(state: DialogueState, playbook: Playbook) -> Action:
    """The bot's next action.  Hard rules first, then the task on top of the intent stack,
    then the safety net."""
    hard = _hard_rules(state, playbook)
    if hard is not None:
        return hard
    if state.has("ask_if_robot") and playbook.compliance.identify_as_ai:
        rest = _task_action(state, playbook, allow_fallback=False)
        return Action(name="identify_ai", then=_safety_net(rest, state, playbook) if rest else _resume(state, playbook))
    move = playbook_move(state, playbook)
    if move is not None:
        return move
    return _safety_net(_task_action(state, playbook), state, playbook)


def playbook_move(state: DialogueState, pb: Playbook) -> Action | None:
    """The move the playbook names for the objection the caller raised this turn (`moves`,
    learned from calls and accepted by a manager), or None: the built-in answer.  A move whose
    act is a built-in action name is the built-in answer itself."""
    if state.turn_objection is None or not pb.moves:
        return None
    product = _product(state, pb)
    key = f"objection.{state.turn_objection}"
    move = (pb.moves.get(f"{key}/{product.id}") if product is not None else None) or pb.moves.get(key)
    if move is None or move.act in STAGE_OF:
        return None
    params: dict[str, Any] = {"objection": state.turn_objection, "stage": "objection_handling", "offer": move.offer}
    if product is not None:
        params["product"] = product.id
    return Action(name=move.act, params=params)


def _hard_rules(state: DialogueState, pb: Playbook) -> Action | None:
    if state.do_not_call and pb.compliance.honour_do_not_call:
        return Action(name="exit_do_not_call")
    if state.has("request_human"):
        return Action(name="handoff_human")
    if state.has("not_interested") and not any(state.has(i) for i in ("callback_request", "demo_request", "purchase_intent")):
        # one objection is worth answering once ("超预算了，算了吧"); a plain no ends the call
        handled = {"price": "price_objection", "competitor": "compare"}.get(state.turn_objection or "", "objection")
        moved = [m.act for k, m in pb.moves.items() if k.split("/")[0] == f"objection.{state.turn_objection}"]
        if state.turn_objection is None or handled in state.actions_done or any(a in state.actions_done for a in moved):
            return Action(name="exit_polite")
    if state.turn >= pb.max_turns:
        return Action(name="wrap_up")
    if state.fallbacks > pb.compliance.max_fallbacks:
        return Action(name="handoff_human")
    return None


def _task_action(state: DialogueState, pb: Playbook, allow_fallback: bool = True) -> Action | None:
    product = _product(state, pb)
    turn = set(state.turn_intents)

    if "callback_request" in turn or (state.expecting == "callback_time" and state.value("callback_time")):
        if state.value("callback_time"):
            return Action(name="book_callback", params={"callback_time": state.value("callback_time")})
        return _ask(pb, "callback_time")
    # A caller who asks for a demo in the same breath as a complaint (行吧，那先约个演示) has moved
    # past the objection: book it rather than argue the price again.
    if "demo_request" in turn:
        if product is None:
            return _ask(pb, "product")
        return Action(name="book_demo", params={"product": product.id})
    if state.turn_objection == "price":
        return _price_objection(state, pb, product)
    if state.turn_objection == "competitor":
        return _compare(state, pb)
    if state.turn_objection in ("timing", "authority"):
        answer = pb.objections[state.turn_objection].answer
        return Action(name="objection", params={"answer": answer, "offer": "callback", "objection": state.turn_objection,
                                                "slot": "callback_time"})
    if "purchase_intent" in turn:
        return _quote_or_ask(state, pb, product, close=True)
    if "affirm" in turn and state.offer and not (turn & set(("price_inquiry", "feature_inquiry", "integration_inquiry"))):
        return _accept_offer(state, pb, product)
    if "deny" in turn and state.offer and not state.corrected and not _has_task(turn):
        if state.offer == "callback":
            return Action(name="exit_polite")
        return Action(name="offer_callback", params={"offer": "callback"})
    if state.corrected and not (turn & {"price_inquiry", "integration_inquiry", "product_inquiry"}):
        return _after_change(state, pb, product)

    top = state.intent_stack[-1] if state.intent_stack else None
    current = [i for i in ("price_inquiry", "integration_inquiry", "feature_inquiry", "product_inquiry") if i in turn]
    task = current[0] if current else None
    if state.expecting and state.slots.get(state.expecting) and state.slots[state.expecting].turn == state.turn:
        # the caller answered our question: carry on with the most important task still open
        task = next((t for t in ("price_inquiry", "integration_inquiry", "product_inquiry", "feature_inquiry")
                     if t in state.intent_stack), task)
    if task is None and any(h.turn == state.turn and h.entities for h in state.history[-1:]):
        task = top  # a bare answer continues the task on the stack
    if task == "price_inquiry":
        return _quote_or_ask(state, pb, product)
    if task == "integration_inquiry":
        return _integration(state, pb, product)
    if task == "feature_inquiry":
        return _feature(state, pb, product)
    unknown = state.value("product") is not None and pb.product(state.value("product")) is None
    if unknown and state.slots["product"].turn == state.turn:
        return _unknown_product(state, pb)
    if task == "product_inquiry":
        if product is None:
            return Action(name="introduce_products", params={"slot": "product", "question": pb.slot_questions.get("product", "")})
        missing = _missing(state, product, pb)
        if missing:
            ask = _ask(pb, missing, product)
            if product.answer and state.slots.get("product") and state.slots["product"].turn == state.turn:
                ask.params["answer"] = product.answer  # first word about a pack product: say what it is
            return ask
        return _recommend(state, pb, product)
    if "greeting" in turn and state.turn <= 2:
        return Action(name="opening")
    if not allow_fallback:
        return None
    if "affirm" in turn:
        return Action(name="ask_needs") if product is None else _continue(state, pb, product)
    if "deny" in turn:
        return Action(name="offer_callback", params={"offer": "callback"})
    if state.expecting:
        return Action(name="fallback", params={"question": pb.slot_questions.get(state.expecting, ""), "slot": state.expecting})
    return Action(name="fallback", params={"question": "您主要想了解哪方面呢？"}) if "other" in turn else Action(name="ask_needs")


def _resume(state: DialogueState, pb: Playbook) -> Action | None:
    """After answering a digression, go back to what was pending: the question or the offer."""
    if state.expecting:
        return Action(name="resume", params={"slot": state.expecting, "question": pb.slot_questions.get(state.expecting, "")})
    if state.offer:
        return Action(name="resume", params={"offer": state.offer})
    return Action(name="ask_needs")


def _safety_net(action: Action | None, state: DialogueState, pb: Playbook) -> Action:
    """Whatever was chosen, never quote without a catalogue plan and the required slots."""
    if action is None:
        return Action(name="ask_needs")
    if action.name in ("quote", "close_sale", "recommend"):
        found = pb.plan(action.params.get("plan"))
        product = pb.product(action.params.get("product"))
        if found is None or product is None or found[0].id != product.id:
            return _ask(pb, "product")
        missing = _missing(state, product, pb)
        if missing:
            return _ask(pb, missing, product)
    return action


# --- task actions -------------------------------------------------------------------------


def _chosen_plan(state: DialogueState, pb: Playbook) -> tuple[Product, Plan, int] | None:
    """The plan the caller chose or pointed at (a version named as the product counts), newest first."""
    best: tuple[Product, Plan, int] | None = None
    for slot in ("plan", "product"):
        s = state.slots.get(slot)
        found = pb.plan(s.value) if s is not None else None
        if found is not None and (best is None or s.turn >= best[2]):
            best = (found[0], found[1], s.turn)
    return best


def _product(state: DialogueState, pb: Playbook) -> Product | None:
    product = pb.product(state.value("product"))
    chosen = _chosen_plan(state, pb)
    if chosen is not None and (product is None or chosen[2] >= state.slots["product"].turn):
        return chosen[0]
    if product is None and len(pb.products) == 1:
        return pb.products[0]
    if product is None:
        # the caller did not name one, but is going along with the one the bot talked about
        named = next((m for m in reversed(state.mentions) if m.by == "bot"), None)
        product = pb.product(named.value) if named else None
    return product


def choose_plan(state: DialogueState, pb: Playbook, product: Product) -> Plan:
    """The plan to talk about: the one the caller chose, unless a later need outgrows it."""
    size = state.value(product.sizing_slot)
    chosen = _chosen_plan(state, pb)
    if chosen is not None and chosen[0].id == product.id:
        plan = chosen[1]
        size_slot = state.slots.get(product.sizing_slot)
        if size is None or plan.capacity >= size or size_slot.turn < chosen[2]:
            return plan
    return product.fit(size)


def _missing(state: DialogueState, product: Product, pb: Playbook | None = None) -> str | None:
    if pb is not None:
        chosen = _chosen_plan(state, pb)
        if chosen is not None and chosen[0].id == product.id:
            return None  # a chosen plan fixes the size
    return next((s for s in product.required_slots if state.value(s) is None), None)


def _ask(pb: Playbook, slot: str, product: Product | None = None) -> Action:
    name = "ask_product" if slot == "product" else "ask_slot"
    question = (product.questions.get(slot) if product is not None else None) or pb.slot_questions.get(slot, f"请问{slot}是多少？")
    params: dict[str, Any] = {"slot": slot, "question": question}
    if product is not None:
        params["product"] = product.id
    return Action(name=name, params=params)


def _quote_params(state: DialogueState, pb: Playbook, product: Product) -> dict[str, Any]:
    plan = choose_plan(state, pb, product)
    addons = [a for a in (product.addon(f) for f in state.value("features", [])) if a is not None]
    addons = list({a.id: a for a in addons}.values())
    seats = state.value("quantity") if plan.per_seat else None
    plan_total = plan.total_year(seats)
    out = {
        "product": product.id,
        "plan": plan.id,
        "addons": [a.id for a in addons],
        "plan_total": plan_total,
        "total": plan_total + sum(a.price_year for a in addons),
    }
    if plan.per_seat:
        out["seats"] = max(int(seats or 1), 1)  # a seat price is quoted for the caller's head count
    return out


def _quote_or_ask(state: DialogueState, pb: Playbook, product: Product | None, close: bool = False) -> Action:
    if product is None:
        return _ask(pb, "product")
    missing = _missing(state, product, pb)
    if missing:
        return _ask(pb, missing, product)
    params = _quote_params(state, pb, product)
    if close:
        return Action(name="close_sale", params=params)
    params["offer"] = "close" if state.offer == "close" or "quote" in state.actions_done else "demo"
    return Action(name="quote", params=params)


def _recommend(state: DialogueState, pb: Playbook, product: Product) -> Action:
    params = _quote_params(state, pb, product)
    params["offer"] = "quote"
    return Action(name="recommend", params=params)


def _continue(state: DialogueState, pb: Playbook, product: Product) -> Action:
    missing = _missing(state, product, pb)
    if missing:
        return _ask(pb, missing, product)
    return _recommend(state, pb, product)


def _after_change(state: DialogueState, pb: Playbook, product: Product | None) -> Action:
    """The caller corrected or withdrew something: confirm and re-quote on the new basis."""
    if product is None:
        return _ask(pb, "product")
    missing = _missing(state, product, pb)
    if missing:
        return _ask(pb, missing, product)
    params = _quote_params(state, pb, product)
    params["offer"] = "close"
    params["changed"] = list(state.corrected)
    return Action(name="quote", params=params)


def _accept_offer(state: DialogueState, pb: Playbook, product: Product | None) -> Action:
    offer = state.offer
    if product is None:
        # "好啊" to an offer about a product the bot named: that product
        named = next((m for m in reversed(state.mentions) if m.by == "bot"), None)
        product = pb.product(named.value) if named else None
    if offer == "demo":
        if product is None:
            return _ask(pb, "product")
        return Action(name="book_demo", params={"product": product.id})
    if offer == "callback":
        return _ask(pb, "callback_time")
    if offer == "human":
        return Action(name="handoff_human")
    if offer == "close":
        return _quote_or_ask(state, pb, product, close=True)
    return _quote_or_ask(state, pb, product)  # "quote"


def _price_objection(state: DialogueState, pb: Playbook, product: Product | None) -> Action:
    params: dict[str, Any] = {"offer": "demo"}
    if product is not None and not _missing(state, product, pb):
        plan = choose_plan(state, pb, product)
        cheaper = [p for p in product.plans if p.price_year < plan.price_year]
        size = state.value(product.sizing_slot)
        fitting = [p for p in cheaper if size is None or p.capacity >= size]
        if fitting:
            alt = max(fitting, key=lambda p: p.price_year)
            params.update(product=product.id, plan=alt.id, fits=size is not None)
        else:
            params.update(product=product.id, plan=plan.id, same=True)
    return Action(name="price_objection", params=params)


def _compare(state: DialogueState, pb: Playbook) -> Action:
    comp = pb.competitor(state.value("competitor"))
    answer = comp.comparison if comp else pb.competitor_default
    name = comp.name if comp else ""
    return Action(name="compare", params={"competitor": comp.id if comp else None, "competitor_name": name,
                                          "answer": answer, "offer": "demo"})


def _integration(state: DialogueState, pb: Playbook, product: Product | None) -> Action:
    systems = [str(s).lower() for s in state.value("systems", [])]
    # Integration is a SaaS matter even if the caller named no product.
    candidates = [product] if product is not None and product.integrations else [p for p in pb.products if p.integrations]
    for prod in candidates:
        for sys_id in reversed(systems):
            for key, answer in prod.integrations.items():
                if key in sys_id or sys_id in key:
                    return Action(name="answer_integration", params={"product": prod.id, "system": key,
                                                                     "answer": answer, "offer": "demo"})
    if candidates and not systems and "api" in candidates[0].integrations:
        return Action(name="answer_integration", params={"product": candidates[0].id, "system": "api",
                                                         "answer": candidates[0].integrations["api"], "offer": "demo"})
    return Action(name="integration_unknown", params={"product": candidates[0].id if candidates else None, "offer": "demo"})


def _feature(state: DialogueState, pb: Playbook, product: Product | None) -> Action:
    if product is None:
        if len(pb.products) > 1 and not state.value("features"):
            return _ask(pb, "product")
        product = next((p for p in pb.products if any(p.addon(f) for f in state.value("features", []))), None)
        if product is None:
            return _ask(pb, "product")
    size = state.value(product.sizing_slot)
    if size is not None:
        if "price_inquiry" in state.intent_stack or "quote" in state.actions_done:
            return _quote_or_ask(state, pb, product)  # a changed need on a priced offer: re-quote
        return _recommend(state, pb, product)
    asked = [f for f in state.value("features", []) if product.addon(f) or str(f) in product.features]
    if asked:
        f = asked[-1]
        addon = product.addon(f)
        answer = (f"{addon.name}可以加，一年{addon.price_year}元。" if addon else f"{product.features[str(f)]}。")
        missing = _missing(state, product, pb)
        return Action(name="answer_feature", params={"product": product.id, "feature": str(f), "answer": answer,
                                                     "slot": missing, "question": pb.slot_questions.get(missing or "", "")})
    plan = choose_plan(state, pb, product)
    return Action(name="answer_capacity", params={"product": product.id, "plan": plan.id, "slot": product.sizing_slot})


def _has_task(turn: set[str]) -> bool:
    return bool(turn & {"price_inquiry", "feature_inquiry", "integration_inquiry", "product_inquiry", "purchase_intent", "demo_request"})


# Words every product name has; sharing them says nothing about being the same kind of thing.
_GENERIC = frozenset({"系统", "平台", "软件", "管理", "理系", "服务", "云启", "在线", "智能", "一体", "企业", "方案"})


def _bigrams(text: str) -> set[str]:
    t = str(text).lower().replace(" ", "")
    return {t[i : i + 2] for i in range(len(t) - 1)} - _GENERIC


def nearest_product(pb: Playbook, words: str) -> Product | None:
    """The catalogue product whose names share the most two-character pieces with what the
    caller asked for (冷库管理系统 ~ 仓库管理系统: WMS), or None when nothing is shared."""
    want = _bigrams(words)
    best, best_score = None, 0
    for prod in pb.catalogue:
        score = max((len(want & _bigrams(n)) for n in [prod.name, *prod.aliases]), default=0)
        if score > best_score:
            best, best_score = prod, score
    return best


def _unknown_product(state: DialogueState, pb: Playbook) -> Action:
    """A product we do not offer (an open-vocabulary value): say so, then the nearest thing we
    do sell, or a human who can say more."""
    slot = state.slots["product"]
    words = slot.text or str(slot.value)
    near = nearest_product(pb, str(slot.value))
    params: dict[str, Any] = {"unknown": words, "offer": "human"}
    if near is not None:
        params.update(product=near.id, nearest=near.name, answer=near.answer)
    return Action(name="unknown_product", params=params)
