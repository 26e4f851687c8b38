"""One set of dialogue acts for both sides of a sales call, so that the bot's calls and a top
human seller's calls can be compared move by move.

- the bot's side: each reply's policy action names its act (`bot_act`); a move the playbook
  learned (`moves:` in the playbook) is an act by name (offer_trial, reference_customer, …).
- the caller's side: the NLU's intents, plus the playbook's objection cues (`caller_acts`).
- a human seller's side: cue patterns over the seller's words (`seller_acts`), the only thing an
  imported transcript has; the caller's side of a transcript goes through the NLU like a call.

Every act that answers an objection says which situations it answers and what it offers, so a
learned move can be written into a playbook (`Move(act, offer)`) and exploration knows the
candidates for a situation."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: objection types (the playbook's `objections:` keys); a situation is "objection.<type>"
OBJECTIONS = ("price", "competitor", "timing", "authority")


@dataclass(frozen=True)
class Act:
    name: str
    meaning: str
    answers: tuple[str, ...] = ()  # situations this act can answer ("objection.price", …)
    offer: str | None = None  # what a caller's "好的" to it accepts
    cues: tuple[str, ...] = field(default=())  # regexes over a human seller's words


SELLER_ACTS: tuple[Act, ...] = (
    # answers to objections first: when a seller's turn matches several acts, the first listed
    # is the move (a trial offered at the end of a price answer does not hide the cheaper plan)
    Act("reference_customer", "a peer customer who switched or bought (social proof)",
        ("objection.competitor", "objection.price"), "demo",
        (r"同行", r"客户.{0,12}(换过来|换到|选了|在用我们|用我们)", r"案例", r"口碑")),
    Act("invite_decider", "bring the decision maker into a demo",
        ("objection.authority",), "demo",
        (r"(老板|领导|负责人|决策人|拍板的).{0,10}(一起|也来|参加|拉上|叫上|约上)",
         r"(一起|拉上|叫上|约上).{0,6}(老板|领导|负责人)")),
    Act("cheaper_plan", "a smaller / cheaper plan that still fits",
        ("objection.price",), "demo",
        (r"(更|比较)?(实惠|便宜)(一点|一些|些)?的(配置|版本|方案|套餐)", r"(入门型|标准型|标准版|基础版).{0,8}(也能|够用|就够|满足)",
         r"最实惠的配置", r"预算紧")),
    Act("offer_discount", "a discount or better price to be requested",
        ("objection.price",), "demo",
        (r"优惠", r"折扣", r"打折", r"(申请|争取).{0,6}(价格|价)")),
    Act("compare_rival", "how we stand against the rival the caller uses",
        ("objection.competitor",), "demo",
        (r"跟.{1,6}比", r"相比", r"比(他们|它们|阿里|腾讯|华为|百度).{0,4}(更|还)", r"我们的.{0,12}(更低|更快|现成)")),
    Act("offer_trial", "a free trial before any commitment",
        ("objection.price", "objection.competitor", "objection.timing", "objection.authority"), "demo",
        (r"试用", r"先用起来", r"试一试", r"体验(一下|版)")),
    Act("offer_callback", "call back at a better time / after they asked their boss",
        ("objection.timing", "objection.authority"), "callback",
        (r"回电", r"再(跟您)?联系", r"再打给您", r"什么时间方便", r"改天")),
    Act("book_demo", "a demo is booked (the call's win)", (), None,
        (r"(安排|约).{0,10}演示.{0,20}(再见|短信|发给您)", r"演示.{0,6}(约好|定好|安排好)")),
    Act("book_callback", "a callback is booked", (), None, (r"(再给您回电|到时候打给您).{0,10}再见",)),
    Act("close", "the deal is closed on the call", (), None, (r"合同",)),
    Act("recommend", "a plan recommended for the need", (), None, (r"推荐",)),
    Act("quote", "a price stated", (), None, (r"\d+元", r"一年.{0,4}[万千]")),
    Act("ask_size", "how big (concurrency, seats)", (), None, (r"多少(并发|人|个人|台|套)", r"(多大|什么)规模")),
    Act("ask_need", "what they need", (), None, (r"想(解决|了解)", r"主要.{0,4}(需求|用来|想)", r"哪方面")),
    Act("greet", "opening", (), None, (r"^(您好|你好)", r"我是.{0,12}(的|顾问|经理)")),
    Act("exit", "ends the call without a sale", (), None, (r"不打扰", r"再见")),
)
ACTS = {a.name: a for a in SELLER_ACTS}

#: the bot's policy actions (agent/dialogue/policy.py) as acts
_BOT = {
    "opening": "greet",
    "ask_needs": "ask_need", "introduce_products": "ask_need", "ask_product": "ask_need", "unknown_product": "ask_need",
    "ask_slot": "ask_size",
    "recommend": "recommend", "quote": "quote",
    "answer_capacity": "answer", "answer_feature": "answer", "answer_integration": "answer",
    "integration_unknown": "answer", "identify_ai": "answer", "confirm_change": "answer",
    "price_objection": "cheaper_plan",
    "compare": "compare_rival",
    "objection": "offer_callback", "offer_callback": "offer_callback",
    "book_demo": "book_demo", "book_callback": "book_callback", "close_sale": "close",
    "handoff_human": "exit", "exit_polite": "exit", "exit_do_not_call": "exit", "wrap_up": "exit",
    "fallback": "fallback", "resume": "resume",
}


def bot_act(action: str, text: str = "") -> str:
    """The act of one bot reply.  `action` may be compound ("identify_ai+resume"): the last
    part is the move.  A question for the callback time is the callback offer."""
    last = action.split("+")[-1]
    if last == "ask_slot" and ("回电" in text or "什么时间方便" in text):
        return "offer_callback"
    return _BOT.get(last, last)  # a playbook move (offer_trial, …) is its own act


#: the NLU's intents as the caller's acts
_CALLER = {
    "greeting": "greet", "product_inquiry": "ask_product", "price_inquiry": "ask_price",
    "feature_inquiry": "ask_feature", "integration_inquiry": "ask_feature", "supplement_demand": "ask_feature",
    "purchase_intent": "buy", "demo_request": "request_demo", "callback_request": "ask_callback",
    "not_interested": "refuse", "do_not_call": "dnc", "request_human": "ask_human", "ask_if_robot": "ask_robot",
    "affirm": "agree", "deny": "disagree", "other": "other",
    "price_objection": "object_price", "competitor_comparison": "object_competitor",
}


def caller_acts(intents: list[str], objection: str | None = None, entities: list[str] = ()) -> list[str]:
    """The caller's acts of one turn from its NLU intents; `objection` is the playbook's cue
    reading (timing / authority have no intent of their own); a size stated is give_size."""
    acts = [_CALLER.get(i, i) for i in intents]
    if objection is not None and f"object_{objection}" not in acts:
        acts.insert(0, f"object_{objection}")
        if objection in ("timing", "authority") and "ask_callback" in acts:
            acts.remove("ask_callback")  # "问问老板" is the objection, not a request to be called
    if any(e in ("concurrency", "quantity") for e in entities):
        acts.append("give_size")
    return list(dict.fromkeys(acts))


def objection_of(acts: list[str]) -> str | None:
    """The objection a caller's turn raises (the first), or None."""
    for a in acts:
        if a.startswith("object_") and a[7:] in OBJECTIONS:
            return a[7:]
    return None


_COMPILED = [(a.name, [re.compile(c) for c in a.cues]) for a in SELLER_ACTS]


def seller_acts(text: str) -> list[str]:
    """A human seller's acts in one turn, from cue patterns over the words, in priority order
    (the first is the move when the turn answers an objection); [] when nothing matches."""
    return [name for name, cues in _COMPILED if any(c.search(text) for c in cues)]


def move_of(acts: list[str], situation: str) -> str | None:
    """The act among `acts` that answers `situation` (the first in priority order)."""
    for a in acts:
        act = ACTS.get(a)
        if act is not None and situation in act.answers:
            return a
    return acts[0] if acts else None


def candidates(situation: str) -> list[str]:
    """Every act that can answer a situation."""
    return [a.name for a in SELLER_ACTS if situation in a.answers]


__all__ = ["ACTS", "Act", "OBJECTIONS", "SELLER_ACTS", "bot_act", "caller_acts", "candidates", "move_of",
           "objection_of", "seller_acts"]
