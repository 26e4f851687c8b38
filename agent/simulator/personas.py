"""Simulated callers.  Each persona has a goal drawn from the playbook's catalogue (a product, a
size, maybe an add-on) and plays it out turn by turn, reacting to what the bot did (the reply's
action name and words), in the phrasing real callers use: colloquial, elliptical, Cantonese/Wu
words for the dialect speaker, corrections and withdrawals for the one who changes mind.

A caller is a callable `(turn, replies) -> text | None`, which is exactly what
`agent.textcall.run_text_call` takes, so the same persona talks to the pure core and to the
pipeline over the bus."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.dialogue.playbook import Playbook, Plan, Product

PERSONAS = ("price_sensitive", "wants_integration", "competitor_customer", "busy_hostile", "dialect_speaker", "changes_mind")


class ReplyLike(Protocol):
    text: str
    action: str
    ends_call: bool


@dataclass
class Goal:
    """What the caller wants out of the call, and the slots the bot should hold at its end."""

    kind: str  # quote | demo | callback | exit
    product: Product | None = None
    size: int | None = None
    addons: list[str] = field(default_factory=list)  # feature ids
    expected_slots: dict[str, Any] = field(default_factory=dict)

    def plan(self) -> Plan | None:
        return self.product.fit(self.size) if self.product is not None else None

    def total(self, playbook: Playbook) -> int | None:
        plan = self.plan()
        if plan is None or self.product is None:
            return None
        return plan.price_year + sum(a.price_year for a in self.product.addons if a.id in self.addons)


def _names(product: Product) -> list[str]:
    """How callers name a product: its aliases that are words, not ids."""
    words = [a for a in product.aliases if not a.isascii() or a.lower() in ("saas", "ecs", "mes", "erp")]
    return words or [product.name]


def _size_phrase(rng: random.Random, product: Product, n: int) -> str:
    if product.sizing_slot == "concurrency":
        return rng.choice([f"{n}并发", f"大概{n}并发", f"{_cn(n)}并发左右", f"同时在线{n}人左右，就是{n}并发",
                           f"高峰期大概{n}个人同时用", f"{spoken_number(n)}左右吧", f"差不多{n}个并发用户"])
    return rng.choice([f"{n}条产线", f"大概{n}台设备", f"{n}套"]) if n < 100 else rng.choice([f"{n}台设备", f"大概{n}台设备"])


def spoken_number(n: int) -> str:
    """2000 -> 两千, 18000 -> 一万八千, 1500 -> 一千五百: how ASR often writes a spoken number."""
    digits = "零一二三四五六七八九"
    if n <= 0 or n >= 100_000_000:
        return str(n)
    out, zero = "", False
    for unit, name in ((10000_0000, "亿"), (10000, "万")):
        if n >= unit:
            head = n // unit
            out += ("两" if head == 2 else spoken_number(head)) + name
            n %= unit
            zero = 0 < n < unit // 10
    for unit, name in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        d = n // unit
        if d:
            if zero and out:
                out += "零"
            out += ("两" if d == 2 and unit >= 1000 else digits[d]) + name
            zero = False
        elif out:
            zero = True
        n %= unit
    return out[1:] if out.startswith("一十") else out


def asr_noise(text: str, rng: random.Random) -> str:
    """What a recogniser hands over: no punctuation, numbers as words, a filler now and then."""
    import re

    text = re.sub(r"\d+", lambda m: spoken_number(int(m.group(0))), text)
    text = re.sub(r"[，,。？?！!、]", " " if rng.random() < 0.5 else "", text).strip()
    return text


def _cn(n: int) -> str:
    digits = "零一二三四五六七八九"
    if n % 1000 == 0 and n < 10000:
        return ("两" if n // 1000 == 2 else digits[n // 1000]) + "千"
    if n % 10000 == 0:
        return ("两" if n // 10000 == 2 else digits[n // 10000]) + "万"
    return str(n)


class Caller:
    """A persona's side of one call."""

    def __init__(self, persona: str, playbook: Playbook, rng: random.Random, noise: float = 0.0) -> None:
        self.persona = persona
        self.noise = noise  # share of turns passed through `asr_noise`
        self.pb = playbook
        self.rng = rng
        self.goal = Goal(kind="quote")
        self.said: list[str] = []
        self.said_dnc_on: int | None = None  # the turn the caller asked not to be called again
        self.asked_robot_on: list[int] = []
        self.achieved: set[str] = set()
        self.needs: set[str] = set()  # achievements the goal needs
        self.moves: list[str] = []  # what the caller still means to say, in order
        self.max_turns = 12
        self.wrong: int | None = None
        self._setup()

    # --- goal -----------------------------------------------------------------------------

    def _pick_config(self) -> tuple[Product, int, list[str]]:
        product = self.rng.choice(self.pb.products)
        plan = self.rng.choice(product.plans)
        lower = max([p.capacity for p in product.plans if p.capacity < plan.capacity], default=0)
        step = 1000 if plan.capacity >= 2000 else (100 if plan.capacity >= 200 else 1)
        choices = [v for v in range(lower + step, plan.capacity + 1, step)] or [plan.capacity]
        size = self.rng.choice(choices[-5:])
        addons = [self.rng.choice(product.addons).id] if product.addons and self.rng.random() < 0.4 else []
        return product, size, addons

    def _expect(self, product: Product | None, size: int | None, addons: list[str], **extra: Any) -> None:
        exp: dict[str, Any] = {}
        if product is not None:
            exp["product"] = product.id
        if size is not None and product is not None:
            exp[product.sizing_slot] = size
        if addons:
            exp["features"] = sorted(addons)
        exp.update(extra)
        self.goal.expected_slots = exp

    def _setup(self) -> None:
        p = self.persona
        r = self.rng
        product, size, addons = self._pick_config()
        self.goal = Goal(kind="quote", product=product, size=size, addons=addons)
        name = r.choice(_names(product))
        extra_need = ""
        if addons:
            addon = next(a for a in product.addons if a.id in addons)
            extra_need = r.choice([f"，要带{addon.name}的", f"，还要{addon.name}", f"，加上{addon.name}"])
        if p == "price_sensitive":
            self.needs = {"right_quote", "objection_answered"}
            self.moves = [
                r.choice([f"{name}多少钱一年", f"你们{name}怎么收费", f"{name}什么价位", f"想问下{name}的价格",
                          f"你们那个{name}贵不贵", f"{name}一年要多少钱啊", f"喂，{name}怎么卖的"]) + extra_need,
                "@price_objection",
                "@accept",
            ]
        elif p == "wants_integration":
            words = {"ERP": ["ERP", "用友ERP", "金蝶的ERP"], "CRM": ["CRM", "客户管理系统"], "OA": ["OA", "钉钉"],
                     "PLC": ["PLC"], "WMS": ["WMS", "WMS系统"], "SCADA": ["SCADA"], "MES": ["MES"]}
            offered = sorted({k.upper() for x in self.pb.products for k in x.integrations} & set(words))
            system = r.choice(offered)
            product = next((x for x in self.pb.products if any(k.upper() == system for k in x.integrations)), product)
            self.goal = Goal(kind="demo", product=product, size=None, addons=[])
            sys_word = r.choice(words[system])
            self.needs = {"integration_answered", "demo_booked"}
            self.moves = [
                r.choice([f"你们的系统能对接我们现有的{sys_word}吗", f"能不能跟我们的{sys_word}打通", f"我们用的{sys_word}，你们能集成吗"]),
                "@accept_demo",
            ]
            self._expect(None, None, [], systems=[system])
            return
        elif p == "competitor_customer":
            comp = r.choice(self.pb.competitors)
            cname = r.choice([comp.name, *[a for a in comp.aliases if not a.isascii()]])
            self.goal = Goal(kind="callback", product=product, size=None, addons=[])
            self.needs = {"compared", "callback_booked"}
            self.moves = [
                r.choice([f"我们现在用的是{cname}，你们比{cname}好在哪", f"我们在用{cname}的，你们跟{cname}比怎么样", f"{cname}也找过我们，你们有啥优势"]),
                "@later",
                "@time",
            ]
            self._expect(None, None, [], competitor=comp.id)
            return
        elif p == "busy_hostile":
            if r.random() < 0.5:
                self.goal = Goal(kind="exit")
                self.needs = {"dnc_honoured"}
                self.moves = [r.choice(["别再给我打电话了", "烦不烦啊，以后别打了", "把我号码删了，不要再打了", "你们天天打，再打我投诉了"])]
            else:
                self.goal = Goal(kind="callback")
                self.needs = {"callback_booked"}
                self.moves = [r.choice(["我现在在开会，没空", "正忙着呢，回头再说", "现在不方便，晚点打给我"]), "@time"]
            self._expect(None, None, [])
            return
        elif p == "dialect_speaker":
            self.needs = {"right_quote"}
            self.moves = [r.choice([f"{name}几多钱一年啊", f"我想睇下{name}，几多钱", f"阿拉想问问{name}多少钞票"]) + extra_need, "@close"]
        elif p == "changes_mind":
            wrong = self.wrong = size // 2 if size >= 2 else size + 1
            self.needs = {"right_quote"}
            extra = [a.id for a in product.addons if a.id not in addons][:1]
            self.moves = [
                r.choice([f"{name}多少钱", f"我想了解下{name}的价格"]) + extra_need,
                f"@size:{wrong}",
                "@correct",
            ]
            if extra:
                feat = next(a for a in product.addons if a.id == extra[0])
                self.moves += [f"另外还要{feat.name}", f"算了，{feat.name}不要了"]
            self.moves.append("@close")
        self._expect(self.goal.product, self.goal.size, self.goal.addons)
        self._vary()

    def _vary(self) -> None:
        """Real callers wander: some ask what the product can carry before the price and then
        say "这个版本" (the bot must know which), some ask mid-call whether it is a robot."""
        r = self.rng
        if self.persona in ("price_sensitive", "dialect_speaker") and not self.goal.addons and r.random() < 0.3:
            name = r.choice(_names(self.goal.product)) if self.goal.product else ""
            unit = "并发" if self.goal.product and self.goal.product.sizing_slot == "concurrency" else "规模"
            self.moves[0] = r.choice([f"你们的{name}能支持多少{unit}？", f"{name}最多能扛多少{unit}"])
            self.moves.insert(1, "@this_version")
        if r.random() < 0.2 and self.moves:
            self.moves.insert(r.randint(1, len(self.moves)), r.choice(["你是机器人吗", "你是真人还是机器啊", "等下，你是AI吗？"]))

    # --- talking --------------------------------------------------------------------------

    def __call__(self, turn: int, replies: list[Any]) -> str | None:
        if turn > self.max_turns:
            return None
        last = replies[-1] if replies else None
        if last is not None:
            self._observe(turn - 1, last)
            if last.ends_call:
                return None
        if self.needs <= self.achieved and self.goal.kind in ("quote",) and "@close" not in self.moves:
            return None  # got what it wanted: hangs up
        text = self._next(last)
        if text is None:
            return None
        if self.rng.random() < 0.15 and not text.startswith(("喂", "嗯", "那个")):
            text = self.rng.choice(["嗯，", "那个，", "呃，"]) + text
        if self.noise and self.rng.random() < self.noise:
            text = asr_noise(text, self.rng) or text
        if self.goal.kind == "exit" and self.said_dnc_on is None:
            self.said_dnc_on = turn
        self.said.append(text)
        return text

    def _observe(self, turn: int, reply: Any) -> None:
        action = reply.action
        if self.said_dnc_on == turn and action.startswith("exit_do_not_call") and reply.ends_call:
            self.achieved.add("dnc_honoured")
        if self._right_quote(reply):
            self.achieved.add("right_quote")
        if "price_objection" in action:
            self.achieved.add("objection_answered")
        if "answer_integration" in action:
            self.achieved.add("integration_answered")
        if action.startswith("compare"):
            self.achieved.add("compared")
        if "book_demo" in action:
            self.achieved.add("demo_booked")
        if "book_callback" in action:
            self.achieved.add("callback_booked")
        if "close_sale" in action and self._right_quote(reply):
            self.achieved.add("closed")

    def _right_quote(self, reply: Any) -> bool:
        if not any(a in reply.action for a in ("quote", "close_sale")):
            return False
        plan, total = self.goal.plan(), self.goal.total(self.pb)
        return plan is not None and plan.name in reply.text and f"{total}元" in reply.text

    def _size_answer(self, n: int | None = None) -> str:
        product = self.goal.product
        assert product is not None
        return _size_phrase(self.rng, product, n if n is not None else self.goal.size or 1)

    def _next(self, last: Any) -> str | None:
        r = self.rng
        action = last.action if last is not None else ""
        text = last.text if last is not None else ""
        # answer the bot's question first
        if "ask_slot" in action or "answer_capacity" in action or ("resume" in action and ("多少" in text or "几" in text)):
            if "回电" in text or "时间" in text:
                return self._say_time()
            if self.goal.product is not None and self.goal.size is not None:
                pending = next((m for m in self.moves if m.startswith("@size:")), None)
                if pending:
                    self.moves.remove(pending)
                    return self._size_answer(int(pending.split(":")[1]))
                return self._size_answer()
        if "ask_product" in action or "introduce_products" in action:
            if self.goal.product is not None:
                return r.choice(_names(self.goal.product)) + r.choice(["", "吧", "那个"])
        if "fallback" in action and self.said:
            return self.said[-1]
        if "offer_callback" in action:
            return r.choice(["行", "可以", "好的"]) if self.goal.kind == "callback" else r.choice(["不用了", "不需要"])
        while self.moves:
            move = self.moves.pop(0)
            if not move.startswith("@"):
                return move
            said = self._move(move, action, text)
            if said is not None:
                return said
        if self.goal.kind == "quote" and "right_quote" not in self.achieved and self.goal.product is not None:
            return r.choice(["那一共多少钱？", "报个价吧", "总共多少钱"])
        return None

    def _move(self, move: str, action: str, text: str) -> str | None:
        r = self.rng
        if move == "@this_version":
            return r.choice(["那这个版本的年费是多少？", "这个版本多少钱", "那这个一年多少钱"])
        if move == "@price_objection":
            return r.choice(["太贵了，能便宜点吗", "这个价格有点贵啊", "能不能打个折", "超预算了，有没有优惠"])
        if move == "@accept":
            return r.choice(["那先试用一下吧", "行，先安排个演示看看", "可以，先给我开个试用"])
        if move == "@accept_demo":
            return r.choice(["好的，安排个演示吧", "可以，演示一下", "行啊，先试用看看"])
        if move == "@later":
            return r.choice(["我考虑一下，下周再打给我吧", "过两天再联系我吧", "改天再聊吧，下周打给我"])
        if move == "@time":
            return self._say_time()
        if move == "@correct":
            unit = "并发" if self.goal.product is not None and self.goal.product.sizing_slot == "concurrency" else ""
            n = self.goal.size
            return r.choice([f"不对，不是{self.wrong}，是{n}{unit}", f"说错了，是{n}{unit}不是{self.wrong}", f"不好意思，改成{n}{unit}"])
        if move == "@close":
            if "right_quote" in self.achieved:
                return r.choice(["行，就这个吧，怎么签合同", "可以，那就定了", "好，我们就买这个"])
            self.moves.insert(0, "@close")
            return r.choice(["那一共多少钱？", "报个价吧", "总共多少钱"])
        return None

    def _say_time(self) -> str:
        return self.rng.choice(["明天下午三点吧", "下周一上午", "后天上午十点", "周五下午吧"])

    # --- judging --------------------------------------------------------------------------

    def completed(self) -> bool:
        needs = set(self.needs)
        if self.persona in ("dialect_speaker", "changes_mind"):
            needs |= {"closed"}
        return needs <= self.achieved

    def missing(self) -> list[str]:
        needs = set(self.needs) | ({"closed"} if self.persona in ("dialect_speaker", "changes_mind") else set())
        return sorted(needs - self.achieved)


def make_caller(persona: str, playbook: Playbook, seed: int, noise: float = 0.0) -> Caller:
    if persona not in PERSONAS:
        raise ValueError(f"unknown persona {persona!r}; known: {', '.join(PERSONAS)}")
    return Caller(persona, playbook, random.Random(seed), noise=noise)
