"""Dialogue state and its pure update function `update(state, nlu_result) -> state`.

The state is what the bot knows about the call after each caller turn: the active intents (a
stack, so that "还有…" inherits the need being discussed and a digression such as "你是机器人吗"
returns to it), slots with value / source turn / confidence (newest wins, the old value goes to
`slot_history`), the caller's preferences and objections, the sale stage, the entities either
side mentioned (for "这个/那个/刚才那个"), and the turn history.

`note_action(state, action)` records what the bot decided to do on this turn (the system act),
so that the next turn can read a bare "两千吧" as the answer to the question just asked and
"这个版本" as the plan the bot just named.  Both functions are pure: state is rebuilt on restart
by replaying the log through them."""

from __future__ import annotations

import math
import re
from typing import Any

from pydantic import BaseModel, Field

from agent.dialogue.numbers import numbers_in, quantities_in
from agent.dialogue.values import canonical_entities
from agent.events import Entity, NluResult

# Intents that carry a task the caller wants done (they go on the stack);
# the others are reactions, digressions or call control.
TASK_INTENTS = (
    "product_inquiry",
    "price_inquiry",
    "feature_inquiry",
    "integration_inquiry",
    "purchase_intent",
    "demo_request",
    "callback_request",
)
#: task intents that are goals of the call (a feature question usually serves one of them)
GOAL_INTENTS = tuple(t for t in TASK_INTENTS if t != "feature_inquiry")
SINGLE_SLOTS = ("product", "concurrency", "quantity", "budget", "term", "callback_time", "competitor", "region", "phone")
LIST_SLOTS = {"feature": "features", "system": "systems"}
NUMERIC_SLOTS = ("concurrency", "quantity", "budget", "term")
SIZING_FEATURES = frozenset({"concurrency"})
STACK_LIMIT = 5
HISTORY_LIMIT = 40

# Mandarin and the dialect forms of the corpus (唔要/唔使 Cantonese, 覅/勿要 Wu, 不整/不弄 south-west)
_NEGATION_BEFORE = re.compile(
    r"(不要|不用|不需要|不想要|取消|去掉|去除|别要|不考虑|用不着|不必|删掉|拿掉|免了|算了|唔要|唔使|唔洗|唔需要|覅|勿要|"
    r"先不(要|整|弄|搞|上|买)|不整|不弄|不搞)[^，,。！!？?；;]{0,6}$"
)
_NEGATION_AFTER = re.compile(
    r"^[^，,。！!？?；;]{0,4}(不要了|就不要了|不需要了|算了|去掉|取消|就免了|不用了|先不要|不考虑了|用不着|用勿着|用唔着"
    r"|唔要|唔使|唔洗|覅|勿要|先不(要|整|弄|搞|上|买)|不整了|不弄了|不搞了|就算了"
    r"|不(用|要|需要|必)(对接|集成|接入|打通|加|买|备份|做)了?)"
)
_TIME_WORDS = re.compile(
    r"((今天|明天|后天|大后天|下周[一二三四五六日天]?|这周[一二三四五六日天]?|周[一二三四五六日天]|星期[一二三四五六日天]|礼拜[一二三四五六日天]"
    r"|月底|月初|过两天|改天|晚点|\d+月\d+[日号]|[一二三四五六七八九十]+月[一二三四五六七八九十]+[日号])"
    r"(早上|上午|中午|下午|晚上|傍晚)?([一二三四五六七八九十两\d]+点(半|[一二三四五六七八九十\d]+分?)?)?"
    r"|(早上|上午|中午|下午|晚上)[一二三四五六七八九十两\d]+点(半)?)"
)
_HYPOTHETICAL = re.compile(r"(如果|要是|假如|假设|万一).{0,12}(呢|的话|多少|怎么算)")
# "那专业版呢" / "换成企业版": the same question about another thing
_ELLIPSIS = re.compile(r"(呢[?？]?$|换成|改成|换个|换一个|那.{1,8}[?？]$)")
_CORRECTION = re.compile(r"(不是|不对|说错了|搞错了|改成|换成|改为|改一下|更正|唔系|唔啱|勿是|勿对|弗是|弗对)")
# "不是X" in the dialects of the corpus (Cantonese 唔系, Wu 勿是/弗是)
_NOT_CUES = ("不是", "唔系", "勿是", "弗是")
_DEMONSTRATIVE = re.compile(r"(刚才|刚刚|之前|前面|上一个|原来|最开始)?(那个|这个|这款|那款|这套|那套|这种|那种|该|它)")
_EARLIER = ("刚才", "刚刚", "之前", "前面", "上一个", "原来", "最开始")


class Slot(BaseModel):
    value: Any
    turn: int
    confidence: float = 1.0
    source: str = "caller"  # caller | coref | context (a bare answer to the bot's question) | bot
    text: str | None = None  # the caller's words for it ("下周三下午"), for reading it back


class SlotChange(BaseModel):
    slot: str
    old: Any
    new: Any
    turn: int
    reason: str  # overwrite | correction | negation


class Mention(BaseModel):
    """An entity that was talked about, for resolving "这个/那个/刚才那个"."""

    kind: str  # product | plan
    value: str
    turn: int
    by: str  # caller | bot


class TurnRecord(BaseModel):
    turn: int
    text: str
    intents: list[str]
    entities: list[dict[str, Any]] = Field(default_factory=list)
    action: str | None = None


class DialogueState(BaseModel):
    turn: int = 0
    #: task intents, most recent last; the top is what the caller is working on now
    intent_stack: list[str] = Field(default_factory=list)
    #: every intent of this turn (after a supplement inherited its core intent)
    turn_intents: list[str] = Field(default_factory=list)
    #: what the caller wants now: this turn's intents, or on a digression the task it returns to
    active_intents: list[str] = Field(default_factory=list)
    slots: dict[str, Slot] = Field(default_factory=dict)
    slot_history: list[SlotChange] = Field(default_factory=list)
    rejected: dict[str, list[str]] = Field(default_factory=dict)  # features/systems the caller declined
    preferences: dict[str, Any] = Field(default_factory=dict)
    objections: list[str] = Field(default_factory=list)
    turn_objection: str | None = None
    mentions: list[Mention] = Field(default_factory=list)
    resolved_ref: Mention | None = None
    stage: str = "opening"
    do_not_call: bool = False
    fallbacks: int = 0
    corrected: list[str] = Field(default_factory=list)  # slots corrected or negated on this turn
    expecting: str | None = None  # the slot the bot asked for on its last turn
    offer: str | None = None  # what the bot offered on its last turn (demo, callback, quote)
    last_action: str | None = None
    actions_done: list[str] = Field(default_factory=list)
    history: list[TurnRecord] = Field(default_factory=list)
    last_text: str = ""

    # --- reading helpers ------------------------------------------------------------------

    def value(self, slot: str, default: Any = None) -> Any:
        s = self.slots.get(slot)
        return s.value if s is not None else default

    def goal(self) -> dict[str, Any]:
        """The slots as plain values (what joint goal accuracy compares)."""
        return {k: v.value for k, v in self.slots.items()}

    def has(self, intent: str) -> bool:
        return intent in self.turn_intents


# --- update -------------------------------------------------------------------------------


def update(state: DialogueState, nlu: NluResult, objection_cue: str | None = None) -> DialogueState:
    """Fold one caller turn into the state (pure: the input state is not modified).

    `objection_cue` is the objection the playbook's cue words found in the text, if any (the
    stage passes `playbook.objection_cue(text)`; the NLU has no intent for timing/authority)."""
    s = state.model_copy(deep=True)
    turn = nlu.turn if nlu.turn > s.turn else s.turn + 1
    text = nlu.text or ""
    s.turn, s.last_text, s.corrected, s.resolved_ref = turn, text, [], None
    scores = {i.name: i.score for i in nlu.intents}
    intents = [n for n in scores if n != "other"] or ["other"]
    if "purchase_intent" in intents and _HYPOTHETICAL.search(text):
        # "如果买三年呢" asks what it would cost; it is not an order
        intents = [i for i in intents if i != "purchase_intent"] + (["price_inquiry"] if "price_inquiry" not in intents else [])

    correction = bool(_CORRECTION.search(text))
    entities = canonical_entities(_clean(nlu.entities), text, s.value("product"))
    entities = _context_entities(s, text, entities, intents)
    if correction:
        entities = _bare_correction(s, text, entities)
    for etype, group in _group(entities).items():
        conf = min((scores.get(i, 1.0) for i in intents), default=1.0)
        if etype in LIST_SLOTS:
            _update_list(s, etype, group, text, turn, conf)
        elif etype in SINGLE_SLOTS or etype == "plan":
            _update_single(s, etype, group, text, turn, conf, correction)
    _resolve_reference(s, text, entities, intents, turn)

    # Intents: a supplement inherits the task under discussion; a digression leaves the stack;
    # answering the bot's question ("SaaS的", "两千吧") carries on the goal that asked for it.
    tasks = [i for i in intents if i in TASK_INTENTS]
    prior_goal = next((t for t in reversed(s.intent_stack) if t in GOAL_INTENTS), None)
    answered = s.expecting is not None and any(e.type == s.expecting for e in entities)
    if answered and prior_goal is not None and prior_goal not in tasks:
        tasks = [t for t in tasks if t not in ("product_inquiry", "feature_inquiry")] + [prior_goal]
        intents = intents + [prior_goal]
    elif (prior_goal is not None and prior_goal not in tasks and set(tasks) <= {"product_inquiry", "feature_inquiry"}
          and entities and _ELLIPSIS.search(text)):
        tasks = tasks + [prior_goal]
        intents = intents + [prior_goal]
    if "supplement_demand" in intents and s.intent_stack:
        # "另外还要异地备份": the need is added to the task under way, which stays on top
        core = s.intent_stack[-1]
        tasks = [t for t in tasks if t != core] + [core]
        if core not in intents:
            intents = intents + [core]
    if not tasks and entities and s.intent_stack and not (set(intents) & {"deny", "do_not_call", "not_interested"}):
        # a bare slot value ("两千吧", "要异地备份") continues the current task
        tasks = [s.intent_stack[-1]]
    for t in tasks:
        if t in s.intent_stack:
            s.intent_stack.remove(t)
        s.intent_stack.append(t)
    s.intent_stack = s.intent_stack[-STACK_LIMIT:]
    s.turn_intents = intents
    digression = [i for i in intents if i not in TASK_INTENTS and i != "other"]
    # What the caller is after: this turn's intents; a turn that only answers, adds a detail or
    # digresses keeps the goal it serves (the latest goal on the stack) active.
    goal = next((t for t in reversed(s.intent_stack) if t in GOAL_INTENTS), None)
    active = tasks + digression
    if goal is not None and not any(t in GOAL_INTENTS for t in tasks) and goal not in active:
        active = active + [goal]
    # a refusal stays the caller's answer to the call (guide, decision 19): not_interested /
    # do_not_call said earlier remain active after later turns
    for refusal in ("not_interested", "do_not_call"):
        if refusal not in active and any(refusal in h.intents for h in s.history):
            active.append(refusal)
    s.active_intents = list(dict.fromkeys(active))

    # Signals about the caller.
    if "do_not_call" in intents:
        s.do_not_call = True
    raised = []
    if "price_objection" in intents:
        raised.append("price")
    if "competitor_comparison" in intents or any(e.type == "competitor" for e in entities):
        raised.append("competitor")
    if objection_cue and objection_cue not in raised:
        raised.append(objection_cue)
    # one answer per turn: a named rival's comparison also answers "too expensive"
    objection = "competitor" if "competitor" in raised else (raised[0] if raised else None)
    s.turn_objection = objection
    for o in raised:
        if o not in s.objections:
            s.objections.append(o)
    if objection == "price" or "budget" in s.slots or re.search(r"性价比|便宜|实惠|划算|省钱", text):
        s.preferences["price_sensitive"] = True
    if s.value("features"):
        s.preferences["features"] = list(s.value("features"))
    if "other" in intents and not entities:
        s.fallbacks += 1
    else:
        s.fallbacks = 0
    if tasks and s.stage == "opening":
        s.stage = "discovery"

    s.history.append(
        TurnRecord(
            turn=turn,
            text=text,
            intents=intents,
            entities=[{"type": e.type, "value": e.value} for e in entities],
        )
    )
    s.history = s.history[-HISTORY_LIMIT:]
    return s


def note_action(state: DialogueState, name: str, params: dict[str, Any], stage: str | None = None) -> DialogueState:
    """Record the bot's action for this turn (pure): what it asked, offered and named."""
    s = state.model_copy(deep=True)
    s.last_action = name
    s.actions_done.append(name)
    s.expecting = params.get("slot") or None  # the slot the bot's question asks for
    s.offer = params.get("offer")
    for kind in ("product", "plan"):
        value = params.get(kind)
        if value and not (s.mentions and s.mentions[-1].kind == kind and s.mentions[-1].value == value
                          and s.mentions[-1].turn == s.turn):
            s.mentions.append(Mention(kind=kind, value=str(value), turn=s.turn, by="bot"))
    s.mentions = s.mentions[-12:]
    if stage:
        s.stage = stage
    if s.history and s.history[-1].turn == s.turn:
        s.history[-1].action = name
    return s


# --- helpers ------------------------------------------------------------------------------


def _clean(entities: list[Entity]) -> list[Entity]:
    """Entities the tracker can use: numbers as positive ints (a count, not 1e300 or NaN), other
    values as non-empty strings; anything else from a confused model is dropped, not fatal."""
    out = []
    for e in entities:
        v = e.value
        if e.type in NUMERIC_SLOTS:
            v = _as_int(v)
            if v is None or not 0 < v < 10**10:
                continue
        elif isinstance(v, bool) or not isinstance(v, (str, int, float)) or (isinstance(v, float) and not math.isfinite(v)):
            continue
        elif not isinstance(v, str):
            v = str(v)
        if isinstance(v, str) and not v.strip():
            continue
        out.append(e if v is e.value else e.model_copy(update={"value": v}))
    return out


def _group(entities: list[Entity]) -> dict[str, list[Entity]]:
    """Entities by type; of two overlapping spans of one type ("三千并发" and "并发一" in
    "三千并发一年") the first is kept."""
    out: dict[str, list[Entity]] = {}
    for e in entities:
        kept = out.setdefault(e.type, [])
        if e.start is not None and e.end is not None and any(
            k.start is not None and k.end is not None and k.start < e.end and e.start < k.end for k in kept
        ):
            continue
        kept.append(e)
    return out


def _span(e: Entity, text: str) -> tuple[int, int]:
    if e.start is not None and e.end is not None and 0 <= e.start <= e.end <= len(text):
        return e.start, e.end
    if e.text and e.text in text:
        i = text.index(e.text)
        return i, i + len(e.text)
    v = str(e.value)
    if v and v in text:
        i = text.index(v)
        return i, i + len(v)
    return -1, -1


def _negated(e: Entity, text: str) -> bool:
    if e.negated:
        return True  # the NLU read it as dropped or refused (不要异地备份了)
    start, end = _span(e, text)
    if start < 0:
        # no position: the whole utterance must be a negation about this value
        return bool(re.search(r"(不要|不用|不需要|取消|去掉).{0,8}$|(不要了|不需要了|算了)$", text)) and len(text) <= 14
    return bool(_NEGATION_BEFORE.search(text[:start]) or _NEGATION_AFTER.search(text[end:]))


def _set(
    s: DialogueState, slot: str, value: Any, turn: int, conf: float, source: str, reason: str, text: str | None = None
) -> None:
    old = s.slots.get(slot)
    if old is not None and old.value == value:
        s.slots[slot] = old.model_copy(update={"confidence": max(old.confidence, conf)})
        return
    if old is not None:
        s.slot_history.append(SlotChange(slot=slot, old=old.value, new=value, turn=turn, reason=reason))
        if reason != "overwrite":
            s.corrected.append(slot)
    s.slots[slot] = Slot(value=value, turn=turn, confidence=conf, source=source, text=text)


def _update_single(
    s: DialogueState, etype: str, group: list[Entity], text: str, turn: int, conf: float, correction: bool
) -> None:
    # "不是1000，是2000并发": the value that is not itself negated wins; with several, the last.
    kept = [e for e in group if not _denied(text, e, group) and not _negated(e, text)]
    source = "context" if any(getattr(e, "text", None) == "__context__" for e in group) else "caller"
    if kept:
        value = kept[-1].value
        if etype in NUMERIC_SLOTS:
            value = _as_int(value)
            if value is None:
                return
        reason = "correction" if (correction or len(group) > 1) and etype in s.slots else "overwrite"
        surface = kept[-1].text if kept[-1].text != "__context__" else None
        _set(s, etype, value, turn, conf, source, reason, surface)
        if etype in ("product", "plan"):
            s.mentions.append(Mention(kind=etype, value=str(value), turn=turn, by="caller"))
    elif etype in s.slots and any(str(e.value) == str(s.value(etype)) for e in group):
        # "不要云服务器了": the value on record is withdrawn
        s.slot_history.append(SlotChange(slot=etype, old=s.value(etype), new=None, turn=turn, reason="negation"))
        s.corrected.append(etype)
        del s.slots[etype]


def _update_list(s: DialogueState, etype: str, group: list[Entity], text: str, turn: int, conf: float) -> None:
    key = LIST_SLOTS[etype]
    current = list(s.value(key, []))
    rejected = list(s.rejected.get(key, []))
    for e in group:
        v = e.value
        if v in SIZING_FEATURES:
            continue  # "并发" is its own slot; asking about it is not wanting a feature
        if _negated(e, text):
            if v in current:
                current.remove(v)
            if v not in rejected:
                rejected.append(v)
        else:
            if v not in current:
                current.append(v)
            if v in rejected:
                rejected.remove(v)
    if rejected:
        s.rejected[key] = rejected
    if current:
        _set(s, key, current, turn, conf, "caller", "negation" if len(current) < len(s.value(key, [])) else "overwrite")
    elif key in s.slots:
        s.slot_history.append(SlotChange(slot=key, old=s.value(key), new=[], turn=turn, reason="negation"))
        s.corrected.append(key)
        del s.slots[key]


def _denied(text: str, e: Entity, group: list[Entity]) -> bool:
    """"不是1000，是2000" / "不是两千": the value after 不是 is the wrong one - unless the caller
    corrects themself, "我要四十个 唔系 四十五个": a number before the 不是 and none after it."""
    if not any(_after(text, e, cue) for cue in _NOT_CUES):
        return False
    start, _ = _span(e, text)
    later = [x for x in group if x is not e and _span(x, text)[0] > start]
    if later:
        return True
    cue_at = max(text.rfind(cue, 0, start) for cue in _NOT_CUES)
    return not numbers_in(text[:cue_at]) if cue_at >= 0 else True


def _after(text: str, e: Entity, cue: str) -> bool:
    """Is the entity inside a "不是X" phrase (cue right before it, same clause)?"""
    start, _ = _span(e, text)
    if start < 0:
        return False
    before = text[max(0, start - 4) : start]
    return cue in before and not re.search(r"[，,。；;]", before[before.rfind(cue):])


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else None
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        return None
    nums = numbers_in(str(value))
    return int(nums[0]) if nums else None


def _context_entities(s: DialogueState, text: str, entities: list[Entity], intents: list[str]) -> list[Entity]:
    """A bare answer to the bot's question: "两千左右" after "需要多少并发?" fills concurrency."""
    want = s.expecting
    if want == "callback_time" and not any(e.type == want for e in entities):
        # "明天下午三点吧" right after "什么时间方便?": the time as the caller said it
        m = _TIME_WORDS.search(text)
        if m and not set(intents) & {"do_not_call", "not_interested", "request_human"}:
            return entities + [Entity(type=want, value=m.group(0), text=m.group(0), start=m.start(), end=m.end())]
        return entities
    if want not in NUMERIC_SLOTS or any(e.type == want for e in entities):
        return entities
    if set(intents) & {"do_not_call", "not_interested", "request_human"}:
        return entities
    money = re.search(r"块|元|钱|预算", text)
    # only a unitless count or an amount without money words can be the answer; 两年 stays a term
    others = [e for e in entities if (e.type == "quantity" or (e.type == "budget" and not money)) and e.type != want]
    nums = quantities_in(text)
    if others:
        # the NLU could only tell "a number" (or took it for money); the question says which
        e = others[0]
        value = nums[0] if len(nums) == 1 else e.value
        return [x for x in entities if x is not e] + [Entity(type=want, value=value, text=e.text, start=e.start, end=e.end)]
    if not any(e.type in NUMERIC_SLOTS for e in entities) and nums:
        return entities + [Entity(type=want, value=int(nums[-1]), text="__context__")]
    return entities


def _bare_correction(s: DialogueState, text: str, entities: list[Entity]) -> list[Entity]:
    """"不是4000，是8000" / "改成9000" with no unit: the number replaces the numeric slot it
    corrects (the one holding the 不是 value, else the one set most recently)."""
    nums = quantities_in(text, single_digits=True)
    held = {slot: s.value(slot) for slot in NUMERIC_SLOTS if s.value(slot) is not None}
    if not nums or not held:
        return entities
    wrong = next((slot for slot, v in held.items() if v in nums), None)
    typed = [e for e in entities if e.type in NUMERIC_SLOTS]
    if typed:
        # "不是两千，是两万" after 两千并发: the NLU may read 两万 as money; the 不是 value says
        # which slot is being corrected (unless money words make it a budget)
        if wrong is None or re.search(r"块|元|预算|钱", text):
            return entities
        return [Entity(type=wrong, value=e.value, text=e.text, start=e.start, end=e.end)
                if e.type in NUMERIC_SLOTS and e.type != wrong and e.value != held[wrong] else e for e in entities]
    new = [n for n in nums if wrong is None or n != held[wrong]]
    if not new:
        return entities
    slot = wrong or max(held, key=lambda k: s.slots[k].turn)
    # "唔系两台 系三台 仲有一台做测试": the value right after the wrong one is the correction
    return entities + [Entity(type=slot, value=new[0] if wrong is not None else new[-1])]


def _is_filler(text: str, m: re.Match[str]) -> bool:
    """"那个，…" / "这个嘛" at the start is a hesitation, not a reference."""
    after = text[m.end() : m.end() + 1]
    return after in ("，", ",", "…", "。", " ", "嘛", "啊", "呃") or (m.start() == 0 and after == "")


def _resolve_reference(s: DialogueState, text: str, entities: list[Entity], intents: list[str], turn: int) -> None:
    """"这个/那个/这个版本/刚才那个": the product or plan most recently named (by either side);
    with 刚才/之前, the one named before the current one."""
    if any(e.type in ("product", "plan") for e in entities):
        return
    # a size stated in the same turn chooses the plan by itself: only a product can be meant
    sized = any(e.type in NUMERIC_SLOTS for e in entities)
    m = next((m for m in _DEMONSTRATIVE.finditer(text) if not _is_filler(text, m)), None)
    if not m or not s.mentions:
        return
    earlier = m.group(1) in _EARLIER if m.group(1) else False
    wants_plan = bool(re.search(r"版本|版|套餐|配置|型号|方案", text))
    candidates = [x for x in reversed(s.mentions) if (x.turn < turn or x.by == "bot") and not (sized and x.kind == "plan")]
    if wants_plan and any(x.kind == "plan" for x in candidates):
        candidates = [x for x in candidates if x.kind == "plan"]
    if not candidates:
        return
    target = candidates[0]
    if earlier:
        current = s.value(target.kind) or target.value
        older = [x for x in candidates if x.kind == target.kind and x.value != current]
        if older:
            target = older[0]
    s.resolved_ref = target
    _set(s, target.kind, target.value, turn, 0.8, "coref", "overwrite")
    s.mentions.append(Mention(kind=target.kind, value=target.value, turn=turn, by="caller"))
