"""Stochastic customers that can tell playbooks apart (beside the personas in personas.py,
which always reach their goal).

Each customer has latent parameters drawn from the distributions in `DISTRIBUTIONS` — the same
numbers as the tables in docs/learning.md, written down before any learning ran — and reacts
to the *move* the seller makes (the act of the bot's reply, or of a human seller's turn):
whether an objection is overcome is a coin with the probability `SUCCESS[objection][act]`
(for price, by the customer's price sensitivity).  A better move in the customer's situation
therefore raises the chance of a demo, and of a deal later (`business_outcome`).

The customer speaks in phrases the rule NLU reads correctly (tests/test_learning.py checks
them), so the bot's dialogue state and policy are the real ones.  Randomness comes only from a
`random.Random` seeded by (seed, lead id): the same lead and seed replay the same customer.

`HumanSeller` plays a top human seller against the same customers and writes the call as a
transcript (speaker turns) — the stand-in for a manager's export of recorded calls."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any, Protocol

# --- the documented distributions (docs/learning.md, "The simulated customers") ----------------

DISTRIBUTIONS: dict[str, Any] = {
    "segment": {"smb": 0.50, "mid": 0.35, "enterprise": 0.15},
    "product": {"saas": 0.60, "cloud_server": 0.40},
    # the size the customer needs (concurrency), uniform over the segment's list
    "size": {"smb": [200, 500, 800, 1000, 1500], "mid": [2000, 3000, 5000], "enterprise": [8000, 10000, 20000]},
    "price_sensitivity": {"smb": {"high": 0.50, "medium": 0.40, "low": 0.10},
                          "mid": {"high": 0.30, "medium": 0.50, "low": 0.20},
                          "enterprise": {"high": 0.15, "medium": 0.45, "low": 0.40}},
    # P(the customer raises this objection); each drawn on its own, raised in a random order
    "objection": {"price": {"high": 0.85, "medium": 0.55, "low": 0.25},
                  "competitor": 0.35, "timing": 0.25,
                  "authority": {"smb": 0.15, "mid": 0.35, "enterprise": 0.55}},
    "rival": ["aliyun", "tencent_cloud", "huawei_cloud"],
    # interest: P(yes to a demo once every objection is overcome and none is left), Beta(a, b)
    "interest": {"smb": (4, 4), "mid": (5, 4), "enterprise": (6, 3)},
    "refuse_at_opening": 0.12,  # "不需要，谢谢" before anything is said
    "dnc_at_opening": 0.02,  # "别再给我打电话了"
    "patience_turns": (7, 12),  # uniform: hangs up after this many of its own turns
    "asks_price_first": 0.5,  # opens with "X多少钱" instead of "想了解一下X"
}

# P(an objection is overcome | the move that answers it).  Price depends on price sensitivity.
# An act not listed for an objection is not an answer to it: ANY_OTHER.
SUCCESS: dict[str, dict[str, Any]] = {
    "price": {"cheaper_plan": {"high": 0.50, "medium": 0.30, "low": 0.25},
              "offer_trial": {"high": 0.25, "medium": 0.55, "low": 0.60},
              "offer_discount": {"high": 0.40, "medium": 0.40, "low": 0.30},
              "reference_customer": {"high": 0.20, "medium": 0.35, "low": 0.45}},
    "competitor": {"compare_rival": 0.35, "offer_trial": 0.40, "reference_customer": 0.60},
    "timing": {"offer_callback": 0.70, "offer_trial": 0.30},
    "authority": {"offer_callback": 0.75, "invite_decider": 0.50, "offer_trial": 0.20},
}
ANY_OTHER = 0.10

# After a demo: P(deal won) by price sensitivity; after a callback: P(deal won) flat.
DEAL_AFTER_DEMO = {"high": 0.30, "medium": 0.45, "low": 0.55}
DEAL_AFTER_CALLBACK = 0.10
DISCOUNT_FACTOR = 0.9  # a deal after offer_discount is signed at 90 % of the list price

PRODUCT_WORDS = {"saas": ["SaaS平台", "你们的SaaS系统", "SaaS软件"], "cloud_server": ["云服务器", "云主机", "服务器"]}
RIVAL_WORDS = {"aliyun": "阿里云", "tencent_cloud": "腾讯云", "huawei_cloud": "华为云"}
OBJECTION_PHRASES = {
    "price": ["太贵了，预算不够", "价格太高了", "有点贵啊，便宜点吗", "这个价格超预算了"],
    "competitor": ["我们已经在用{rival}了", "我们用的{rival}，挺好的"],
    "timing": ["最近太忙，过段时间再说吧", "现在还没到时候，明年再说", "现在不需要，以后再说"],
    "authority": ["这个我做不了主，得问问老板", "领导决定的，我说了不算", "这事得跟领导商量"],
}
AGREE = ["好的", "好啊，可以", "那好吧", "行"]
YES_DEMO = ["行，那就安排个演示吧", "可以，安排个演示吧"]
REFUSE = ["算了，不需要了", "不用了，谢谢"]
CALLBACK_TIMES = ["明天下午三点吧", "下周一上午", "后天上午十点"]


def _pick(rng: random.Random, table: dict[str, float]) -> str:
    r, acc = rng.random(), 0.0
    for key, p in table.items():
        acc += p
        if r < acc:
            return key
    return list(table)[-1]


def rng_for(seed: int, lead_id: str, purpose: str = "customer") -> random.Random:
    """A generator of its own for one lead, seed and purpose (stable across processes)."""
    digest = hashlib.sha256(f"{seed}/{lead_id}/{purpose}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


@dataclass(frozen=True)
class Persona:
    lead_id: str
    segment: str
    product: str
    size: int
    sensitivity: str
    interest: float
    objections: tuple[str, ...]
    rival: str
    patience: int
    opening: str  # talk | refuse | dnc
    price_first: bool


def draw_persona(lead_id: str, seed: int, segment: str | None = None) -> Persona:
    """A customer's latent parameters from DISTRIBUTIONS (the segment can be fixed: it is what
    a lead list says about the company)."""
    d = DISTRIBUTIONS
    rng = rng_for(seed, lead_id, "persona")
    segment = segment or _pick(rng, d["segment"])
    sensitivity = _pick(rng, d["price_sensitivity"][segment])
    objections = []
    for name in ("price", "competitor", "timing", "authority"):
        p = d["objection"][name]
        p = p.get(sensitivity, p.get(segment)) if isinstance(p, dict) else p
        if rng.random() < p:
            objections.append(name)
    rng.shuffle(objections)
    a, b = d["interest"][segment]
    r = rng.random()
    opening = "dnc" if r < d["dnc_at_opening"] else "refuse" if r < d["dnc_at_opening"] + d["refuse_at_opening"] else "talk"
    return Persona(
        lead_id=lead_id, segment=segment, product=_pick(rng, d["product"]),
        size=rng.choice(d["size"][segment]), sensitivity=sensitivity, interest=rng.betavariate(a, b),
        objections=tuple(objections), rival=rng.choice(d["rival"]),
        patience=rng.randint(*d["patience_turns"]), opening=opening,
        price_first=rng.random() < d["asks_price_first"],
    )


def success_probability(objection: str, act: str, persona: Persona) -> float:
    p = SUCCESS[objection].get(act, ANY_OTHER)
    return p[persona.sensitivity] if isinstance(p, dict) else p


class ReplyLike(Protocol):
    text: str
    action: str
    ends_call: bool


def _act_of(reply: ReplyLike) -> str:
    from agent.learning.acts import bot_act

    return bot_act(reply.action, reply.text)


@dataclass
class Customer:
    """A caller `(turn, replies) -> text | None` for agent.simulator.driver / textcall."""

    persona: Persona
    seed: int
    said: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    objecting: str | None = None  # the objection the customer raised last and waits an answer to
    moves: list[tuple[str, str, bool]] = field(default_factory=list)  # (objection, act heard, overcome)
    hung_up: bool = False

    def __post_init__(self) -> None:
        self.rng = rng_for(self.seed, self.persona.lead_id, "talk")
        self.pending = list(self.persona.objections)

    def __call__(self, turn: int, replies: list[ReplyLike]) -> str | None:
        if replies and replies[-1].ends_call:
            return None
        if turn > self.persona.patience:
            self.hung_up = True
            return None
        text = self._next(turn, replies)
        if text is not None:
            self.said.append(text)
        return text

    def _say(self, options: list[str]) -> str:
        return self.rng.choice(options)

    def _objection(self) -> str:
        self.objecting = self.pending.pop(0)
        phrase = self._say(OBJECTION_PHRASES[self.objecting])
        return phrase.format(rival=RIVAL_WORDS[self.persona.rival])

    def _next(self, turn: int, replies: list[ReplyLike]) -> str | None:
        p = self.persona
        if turn == 1:
            if p.opening == "dnc":
                return "别再给我打电话了"
            return self._say(REFUSE[1:]) if p.opening == "refuse" else "喂，你好"
        last = replies[-1]
        act = _act_of(last)
        product = self._say(PRODUCT_WORDS[p.product])
        if self.objecting is not None and act not in ("fallback", "resume"):
            # the seller answered the objection: the move works or it does not
            objection, self.objecting = self.objecting, None
            won = self.rng.random() < success_probability(objection, act, p)
            self.moves.append((objection, act, won))
            if not won:
                return self._say(REFUSE)
            if self.pending:
                return self._objection()
            # won over: take what the move offered (a time for a callback, yes to a demo)
            return self._say(CALLBACK_TIMES) if _offer(act) == "callback" else self._say(AGREE)
        if act == "greet":
            return f"{product}多少钱" if p.price_first else f"想了解一下{product}"
        if act == "ask_need":
            return f"想了解一下{product}"
        if act == "ask_size":
            return f"大概{p.size}并发"
        if act == "offer_callback":
            return self._say(CALLBACK_TIMES)
        if act in ("recommend", "quote", "answer"):
            if self.pending:
                return self._objection()
            return self._say(YES_DEMO) if self.rng.random() < p.interest else self._say(REFUSE)
        # a reply the customer cannot use (fallback, a question again): say the last thing again
        return self.said[-1] if self.said else "喂，你好"


def business_outcome(persona: Persona, call_outcome: str, acts: list[str], seed: int,
                     list_price: int) -> tuple[str, float] | None:
    """What the CRM records weeks later: ("deal_won", amount) / ("deal_lost", 0), or None when
    the lead never became an opportunity (no demo, no callback)."""
    rng = rng_for(seed, persona.lead_id, "deal")
    if call_outcome == "demo_booked":
        p = DEAL_AFTER_DEMO[persona.sensitivity]
    elif call_outcome == "callback":
        p = DEAL_AFTER_CALLBACK
    else:
        return None
    if rng.random() >= p:
        return "deal_lost", 0.0
    return "deal_won", float(round(list_price * (DISCOUNT_FACTOR if "offer_discount" in acts else 1.0)))


# --- a top human seller, for transcripts -------------------------------------------------------

SELLER_PHRASES: dict[str, list[str]] = {
    "greet": ["您好，我是云启科技的客户经理小王，耽误您两分钟可以吗？", "你好，我是云启科技的顾问李娜，想跟您简单聊两句。"],
    "ask_need": ["您这边主要想了解哪方面？", "方便说下您主要想解决什么问题吗？"],
    "ask_size": ["您这边大概需要多少并发？", "高峰的时候大概多少人同时在线？"],
    "recommend": ["按您的量，我推荐{plan}，一年{price}元。", "那我推荐{plan}，一年{price}元，够您用的。"],
    "cheaper_plan": ["要是预算紧，我们有更实惠一点的配置，先从小的用起。", "预算紧的话，换个实惠些的版本也够用。"],
    "offer_discount": ["价格这块我帮您跟公司申请个优惠，您看怎么样？", "这样，我去给您争取一下价格，走个折扣。"],
    "offer_trial": ["要不您先免费试用一周，用着合适再说。", "我们可以先开个试用账号，您先用起来看看。"],
    "compare_rival": ["跟{rival}比，我们同配置价格更低，服务也更及时。", "相比{rival}，我们的异地备份和对接都是现成的。"],
    "reference_customer": ["您的不少同行也是从{rival}换过来的，用下来反馈都挺好，要不先约个演示看看？",
                           "我们有好几个同行客户之前也用{rival}，后来换到我们这边，我给您安排个演示，您看看他们怎么用的？"],
    "invite_decider": ["理解，那要不约个时间，请您老板一起参加十五分钟的线上演示？", "没问题，我们约个时间，把领导也叫上一起听个演示，您看行吗？"],
    "offer_callback": ["没问题，您看什么时间方便，我再打给您？", "好的，那我改天再跟您联系，您看什么时间方便？"],
    "book_demo": ["好的，我这就安排演示，时间确定了短信发给您，再见！", "太好了，演示我安排好了，详细信息稍后发给您，再见！"],
    "book_callback": ["好的，到时候打给您，再见！", "行，那就这么定，到时候打给您，再见！"],
    "exit": ["好的，不打扰您了，再见。", "明白，那不打扰了，再见。"],
}

#: how a top seller answers each objection (their habits, not the truth of SUCCESS)
SELLER_STYLE: dict[str, dict[str, float]] = {
    "price": {"offer_trial": 0.35, "offer_discount": 0.35, "cheaper_plan": 0.30},
    "competitor": {"reference_customer": 0.60, "compare_rival": 0.40},
    "timing": {"offer_callback": 0.60, "offer_trial": 0.40},
    "authority": {"invite_decider": 0.60, "offer_callback": 0.40},
}
#: the leads top sellers are given: more of the big accounts (the learner must control for it)
SELLER_SEGMENTS = {"smb": 0.30, "mid": 0.40, "enterprise": 0.30}


@dataclass
class _SellerReply:
    text: str
    action: str
    ends_call: bool = False


def human_seller_call(call_id: str, seed: int, prices: dict[str, tuple[str, int]]) -> dict[str, Any]:
    """One human seller's call against a simulated customer, as a transcript:
    {"call_id", "segment", "seller", "outcome", "turns": [{"speaker", "text"}]}.
    `prices`: product id -> (plan name, yearly price) of the plan the seller recommends."""
    rng = rng_for(seed, call_id, "seller")
    persona = draw_persona(call_id, seed, segment=_pick(rng, SELLER_SEGMENTS))
    customer = Customer(persona, seed)
    turns: list[dict[str, str]] = []
    replies: list[_SellerReply] = []
    objection: str | None = None
    outcome = "hung_up"

    def say(act: str, ends: bool = False, **kw: Any) -> None:
        text = rng.choice(SELLER_PHRASES[act]).format(**kw)
        turns.append({"speaker": "seller", "text": text})
        replies.append(_SellerReply(text, act, ends))

    say("greet")
    for turn in range(1, 30):
        text = customer(turn, replies)
        if text is None:
            break
        turns.append({"speaker": "customer", "text": text})
        from_customer = customer.objecting
        if text in ("别再给我打电话了",):
            say("exit", True)
            outcome = "dnc"
            break
        if text in REFUSE:
            say("exit", True)
            outcome = "not_interested"
            break
        if from_customer is not None:  # the customer just raised an objection
            objection = from_customer
            move = _pick(rng, SELLER_STYLE[objection])
            plan, price = prices[persona.product]
            say(move, rival=RIVAL_WORDS[persona.rival], plan=plan, price=price)
            continue
        last = replies[-1].action
        if text in YES_DEMO or (text in AGREE and last != "offer_callback" and objection is not None
                                and _offer(last) == "demo"):
            say("book_demo", True)
            outcome = "demo_booked"
            break
        if text in AGREE and _offer(last) == "callback":
            say("offer_callback")
            continue
        if text in CALLBACK_TIMES:
            say("book_callback", True)
            outcome = "callback"
            break
        if "多少钱" in text or "了解" in text:
            say("ask_size")
        elif "并发" in text:
            plan, price = prices[persona.product]
            say("recommend", plan=plan, price=price)
        else:
            say("ask_need")
    return {"call_id": call_id, "segment": persona.segment, "seller": "top_seller", "outcome": outcome,
            "turns": turns, "_persona": persona, "_acts": [r.action for r in replies]}


def _offer(act: str) -> str | None:
    from agent.learning.acts import ACTS

    a = ACTS.get(act)
    return a.offer if a is not None else None


__all__ = ["ANY_OTHER", "Customer", "DISTRIBUTIONS", "Persona", "SUCCESS", "business_outcome", "draw_persona",
           "human_seller_call", "rng_for", "success_probability"]
