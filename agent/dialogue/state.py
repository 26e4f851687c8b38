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
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, Field

from agent.dialogue.numbers import numbers_in, quantities_in
from agent.dialogue.roles import FEATURE_OF_PRODUCT, read_roles
from agent.dialogue.values import (
    EDITION_FEATURES,
    MODEL_CODE,
    WEEKDAY_IDS,
    at_once,
    canonical_entities,
    clause_of,
    counts_things,
    product_ids,
    reading,
    says_total,
)
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
#: intents that are never an open request of the caller (guide, "Script line", decision 19)
NEVER_ACTIVE = ("other", "affirm", "deny", "greeting", "supplement_demand")
SINGLE_SLOTS = ("product", "concurrency", "quantity", "budget", "term", "callback_time", "competitor", "region", "phone")
LIST_SLOTS = {"feature": "features", "system": "systems"}
NUMERIC_SLOTS = ("concurrency", "quantity", "budget", "term")
SIZING_FEATURES = frozenset({"concurrency"})
STACK_LIMIT = 5
HISTORY_LIMIT = 40

# Mandarin and the dialect forms of the corpus (唔要/唔使 Cantonese, 覅/勿要 Wu, 不整/不弄 south-west).
# A cue before the thing it drops, in the same clause; one followed by 了 ("不要了 上四核八G")
# closes its own clause and drops what came before it; 算了/免了 come after what they drop
# ("算了 先问云数据库" asks about the database).  A space is a pause, so a clause boundary.
_NEGATION_BEFORE = re.compile(
    r"(不要|不用|不需要|不想要|取消|去掉|去除|别要|不考虑|用不着|不必|删掉|拿掉|唔要|唔使|唔洗|唔需要|覅|勿要|"
    r"先不(要|整|弄|搞|上|买|装)|不整|不弄|不搞)(?![了啦喇咯])[^，,。！!？?；;\s]{0,6}$"
)
_NEGATION_AFTER = re.compile(
    r"^[^，,。！!？?；;]{0,4}(不要了|就不要了|我?不干|不接受|不需要了|算[了啦咧哒喽嘞罗啰]|去掉|取消|就免了|不用了|先不要|不考虑了|用不着|用勿着|用唔着"
    r"|唔要|唔使|唔洗|覅|勿要|先不(要|整|弄|搞|上|买|装)|不整了|不弄了|不搞了|不装了|就算了"
    r"|不(用|要|需要|必)(对接|集成|接入|打通|加|买|备份|做)了?|不(接|连|对接|打通)[了哒啦咯喇咧])"
)
# money words (一块 alone is "together": 三个年级一块开)
_MONEY = re.compile(r"(?<!一)块|一块钱|元|钱|预算")
_SETTLE = re.compile(r"(放|用|选|就|还是|干脆|直接|要)$")
_TIME_WORDS = re.compile(
    r"((今天|明天|后天|大后天|下周[一二三四五六日天]?|这周[一二三四五六日天]?|周[一二三四五六日天]|星期[一二三四五六日天]|礼拜[一二三四五六日天]"
    r"|月底|月初|过两天|改天|晚点|\d+月\d+[日号]|[一二三四五六七八九十]+月[一二三四五六七八九十]+[日号])"
    r"(早上|上午|中午|下午|晚上|傍晚)?([一二三四五六七八九十两\d]+点(半|[一二三四五六七八九十\d]+分?)?)?"
    r"|(早上|上午|中午|下午|晚上)[一二三四五六七八九十两\d]+点(半)?)"
)
_HYPOTHETICAL = re.compile(r"(如果|要是|假如|假设|万一).{0,12}(呢|的话|多少|怎么算)")
# "那专业版呢" / "换成企业版": the same question about another thing
_ELLIPSIS = re.compile(r"(呢[?？]?$|换成|改成|换个|换一个|那.{1,8}[?？]$)")
_CORRECTION = re.compile(r"(不是|不对|说错了|搞错了|改成|换成|改为|改一下|更正|唔系|唔係|唔啱|勿是|勿对|弗是|弗对|不對|說錯了|講錯)")
# of several values of one slot in a line, those in a clause that adds a part ("还有两个夜班的",
# "每个厂三台") are not the value; one said as a total ("一共一百台") is
_PART = re.compile(r"还有|另外|仲有|其中|每个|每班|每间|每")
# "办公室再加十个", "再多五个号": a count added to the one held or said before it in the line
_INCREMENT = re.compile(r"(再加|再多|多加|另加|加上|外加|再添|(?<![差最顶至])多)[一二两三四五六七八九十百千万几俩0-9]")
_TOTAL = re.compile(r"一共|总共|总计|合计|加起来|全部")
# "不是X" in the dialects of the corpus (Cantonese 唔系, Wu 勿是/弗是)
_NOT_CUES = ("不是", "唔系", "唔係", "勿是", "弗是")
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
    #: the caller's words behind each item of a list slot ({"systems": {"OTHER": ["美团外卖", "抖音团"]}}):
    #: one category or id may stand for several things, and dropping one keeps the others
    said: dict[str, dict[str, list[str]]] = Field(default_factory=dict)
    preferences: dict[str, Any] = Field(default_factory=dict)
    objections: list[str] = Field(default_factory=list)
    turn_objection: str | None = None
    mentions: list[Mention] = Field(default_factory=list)
    #: the caller's products still wanted, most recent last (the `product` slot is the one being
    #: discussed; an add-on or a product set aside comes back when that one is dropped)
    products: list[str] = Field(default_factory=list)
    resolved_ref: Mention | None = None
    #: editions the caller weighed against each other in one breath ("标准版跟专业版差在哪"), in
    #: the order said, for "第二个吧" to pick from
    options: list[str] = Field(default_factory=list)
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
    entities = canonical_entities(_refused_only_in_words(_clean(nlu.entities), text, intents), text, s.value("product"),
                                  s.value("quantity") is not None)
    entities = _head_counts(s, text, entities)
    entities = _context_entities(s, text, entities, intents)
    entities = _protected_property(s, text, entities)
    if correction:
        entities = _bare_correction(s, text, entities)
    held_features = list(s.value("features", []))
    roles = read_roles(entities, text, intents, s.value("product"), list(s.value("systems", [])))
    entities = roles.entities
    entities = _dropped_by_its_words(s, entities, text)
    if roles.only_added:
        # "再加个会议室设备 一间": the count is the add-on's, not the product's under discussion
        entities = [e for e in entities if e.type not in ("quantity", "concurrency")]
    for etype, group in _group(entities).items():
        conf = min((scores.get(i, 1.0) for i in intents), default=1.0)
        if etype in LIST_SLOTS:
            _update_list(s, etype, group, text, turn, conf, correction)
        elif etype == "product":
            _update_product(s, group, text, turn, conf, correction, held_features)
        elif etype in SINGLE_SLOTS or etype == "plan":
            _update_single(s, etype, group, text, turn, conf, correction)
    for p in roles.added:
        # "再加个会议室设备": wanted too, not the product under discussion
        if p in s.products:
            s.products.remove(p)
        s.products.append(p)
        if p in s.rejected.get("products", []):
            s.rejected["products"].remove(p)
    _pick_option(s, text, entities, turn)
    _resolve_reference(s, text, entities, intents, turn)

    # Intents: a supplement inherits the task under discussion; a digression leaves the stack;
    # answering the bot's question ("SaaS的", "两千吧") carries on the goal that asked for it.
    tasks = [i for i in intents if i in TASK_INTENTS]
    own_tasks = list(tasks)  # the turn's own requests, whatever it also carries on
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
    digression = [i for i in intents if i not in TASK_INTENTS and i not in NEVER_ACTIVE]
    # What the caller is after: this turn's intents (its own requests stay open also when it
    # answers the bot's question: "五十个人，多少钱" states a size and asks a price); a turn that
    # only answers, adds a detail or digresses keeps the goal it serves (the latest goal on the
    # stack) active.  Affirm/deny/greeting and supplement_demand are never active (guide,
    # "Script line" and decision 19).
    goal = next((t for t in reversed(s.intent_stack) if t in GOAL_INTENTS), None)
    active = tasks + [t for t in own_tasks if t not in tasks] + digression
    if goal is not None and not any(t in GOAL_INTENTS for t in tasks) and goal not in active:
        active = active + [goal]
    active += [i for i in _implied_intents(entities, text, intents) if i not in active]
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


# asking for a lower price ("便宜点", "降到", "打八折", "优惠")
_BARGAIN = re.compile(r"便宜|降到|降价|降一|打折|打[一二三四五六七八九]折|优惠|少点|少一点|让点|再低")
# a price question in the words of a clause ("一年多少钱", "几多钞票", "报个价")
_PRICE_WORDS = re.compile(r"多少|几多|几钱|好多|多钱|几钿|价|收费|怎么卖|点收")


def _implied_intents(entities: list[Entity], text: str, intents: list[str]) -> list[str]:
    """The requests the turn's entities make open, as the labelling guide pairs them, when the
    NLU's intents left them out: a rival named → `competitor_comparison` (hard case 1, 25, 47); a
    time proposed → `callback_request` (90); a budget stated or a billing period named →
    `price_inquiry` (13, 17, 28, 89) unless the line objects to the price or buys; their system
    → `integration_inquiry` (hard case 1, 15) unless it is only the source of an import (86); a
    size or requirement stated in its own clause, not only qualifying a price question and not
    confirming the bot's number → `feature_inquiry` (21, 30, 54)."""
    out = []
    said = [e for e in entities if e.text != "__context__"]
    types = {e.type for e in said if not e.negated}
    priced = set(intents) & {"price_inquiry", "price_objection", "purchase_intent"}
    if "competitor" in types:
        out.append("competitor_comparison")
    if "callback_time" in types and not set(intents) & {"do_not_call", "not_interested"}:
        out.append("callback_request")
    if "budget" in types and ("purchase_intent" in intents or _BARGAIN.search(text)) and "price_objection" not in intents:
        # "降到一百六十万我们就签", "签两年能便宜到这个数吗": a price the deal is made to depend on
        # is a price objection (decisions 23, 38, 45)
        out.append("price_objection")
    elif ("budget" in types or "term" in types) and not priced:
        out.append("price_inquiry")
    if "system" in types and not any(e.type == "feature" and e.value == "data_migration" for e in said):
        out.append("integration_inquiry")
    for e in said:
        if e.type not in ("feature", "quantity", "concurrency") or e.value in SIZING_FEATURES:
            continue
        if e.type != "feature" and "affirm" in intents:
            continue  # "对，三十个": confirms the size, asks nothing (54)
        start, end = _span(e, text)
        if start >= 0 and not _PRICE_WORDS.search(clause_of(text, start, end)):
            out.append("feature_inquiry")
            break
    return out


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


# words that drop, refuse or put off a product (decisions 14, 31, 32); "我在开会", "老板不在",
# "忙得很" are none of them
_REFUSAL = re.compile(
    r"(不|唔|否|弗|勿|冇|没|莫)(要|用|使|洗|需要|弄|整|搞|做|上|买|装|接|换|考虑|感兴趣|必)|没兴趣|冇兴趣|用不着|用唔着|用勿着"
    r"|算[了啦咯哒咧喇罗啰嘞罢]|免了|别|甭|嫑|覅|拉倒|省了|先放|放一放|放放|再说|再讲|再谈|以后|明年|慢慢来|缓缓|暂时|暂缓|不急"
    r"|有了|已经有|在用|用着|用紧|用開|用开|取消|去掉|删|拿掉|不行|不得|不划算|太贵")


def _refused_only_in_words(entities: list[Entity], text: str, intents: list[str]) -> list[Entity]:
    """A product the NLU marked as refused in a line that refuses nothing ("CRM嗦，我在炒料，忙得
    很", "CRM啊 我们老板不在 我做不了主": busy, not declining) is the product the call is about: the
    refusal needs a refusal in the words or a refusing intent (guide, decisions 7, 14, 32)."""
    if set(intents) & {"not_interested", "do_not_call"} or _REFUSAL.search(text):
        return entities
    return [e.model_copy(update={"negated": False}) if e.type == "product" and e.negated else e for e in entities]


def _dropped_by_its_words(s: DialogueState, entities: list[Entity], text: str) -> list[Entity]:
    """"杀毒就算了" with 杀毒 read as a product not under discussion, after the caller asked for
    杀毒 as a feature (virus_protection): what is dropped is that feature (guide, hard case 5)."""
    out = []
    for e in entities:
        words = re.sub(r"\s+", "", e.text or "").lower()
        if e.type == "product" and str(e.value) != s.value("product") and len(words) >= 2 and _negated(e, text):
            held = [f for f, said in s.said.get("features", {}).items()
                    if f in s.value("features", []) and any(words == w or words in w for w in said)]
            if held:
                out += [Entity(type="feature", value=f, text=e.text, start=e.start, end=e.end, negated=True) for f in held]
                continue
        out.append(e)
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


# "卡不卡", "要不要", "能唔能": a yes-no question, no refusal
_A_NOT_A = re.compile(r"(.)[不唔勿没]\1")
_NEGATION_WORD = re.compile(r"不|没|冇|唔|勿|覅|弗|嫑|否|别|甭|莫|休|算|免|取消|去掉|删|拿掉")


# "阿里云用惯了，不换了", "网易那个我们不换": the caller keeps what they have - no refusal of it
_KEEP = re.compile(r"(不|唔|勿|弗|没|冇|莫|嫑)(想|打算|准备|会|用)?(换|換)")


def _negated(e: Entity, text: str) -> bool:
    if e.negated and e.type in ("competitor", "system") and _KEEP.search(text):
        start, end = _span(e, text)
        return start >= 0 and (bool(_NEGATION_BEFORE.search(text[:start])) or bool(_NEGATION_AFTER.search(text[end:])))
    if e.negated:
        # the NLU read it as dropped or refused (不要异地备份了) - unless the only 不 in the line
        # is that of a yes-no question ("卡不卡 乡下个学员")
        return not _A_NOT_A.search(text) or bool(_NEGATION_WORD.search(_A_NOT_A.sub("", text)))
    start, end = _span(e, text)
    if start < 0:
        # no position: the whole utterance must be a negation about this value
        return bool(re.search(r"(不要|不用|不需要|取消|去掉).{0,8}$|(不要了|不需要了|算了)$", text)) and len(text) <= 14
    if _NEGATION_BEFORE.search(text[:start]):
        return True
    after = _NEGATION_AFTER.search(text[end:])
    if after:
        # "放广州算了": settling for it (a verb of choosing before it), not dropping it
        settle = re.search(r"算[了啦咧哒喽嘞罗啰]", after.group(1)) and _SETTLE.search(_clause_before(text, start))
        return not settle
    # the span took the first character of the cue after it ("自动外呼算" + "了")
    return end - start > 1 and text[end - 1] in "算不就免取去" and bool(_NEGATION_AFTER.search(text[end - 1 :]))


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
    # "不是1000，是2000并发": the value that is not itself negated wins; with several, see _pick.
    kept = [e for e in group if not _denied(text, e, group) and not _negated(e, text)]
    source = "context" if any(getattr(e, "text", None) == "__context__" for e in group) else "caller"
    if kept and etype == "quantity":
        kept = _add_increments(kept, text, s.value("quantity"))
    if kept and etype in ("quantity", "concurrency") and etype in s.slots:
        kept = [e for e in kept if not _part_of(e, text, s.value(etype))]
        if not kept:
            return  # "有一台要16核32G", "还有两个夜班的", "那四台改成8核16G": some of them, not how many
    held = _as_int(s.value(etype)) if etype == "quantity" else None
    dropped_part = [e for e in group if held and _negated(e, text) and _part_of(e, text, held)]
    if not kept and len(dropped_part) == 1 and (_as_int(dropped_part[0].value) or held) < held:
        # "办公室那四十台不弄了" after 一共一百台: the rest is the count
        _set(s, etype, held - _as_int(dropped_part[0].value), turn, conf, "caller", "negation", dropped_part[0].text)
        return
    if kept and etype == "callback_time" and len(kept) > 1:
        kept = [_joined_time(kept)]  # "下礼拜三下午嘛，两点": one time, said in two pieces
    if kept:
        kept = [_pick(kept, text, etype)]
        value = kept[-1].value
        held_words = re.sub(r"\s+", "", str(s.value(etype, ""))).lower()
        if etype == "competitor" and len(str(value)) < len(held_words) and str(value).lower() in held_words:
            return  # "树根报的六万" after 树根互联: the same rival, said short
        said = re.sub(r"\s+", "", kept[-1].text or "").lower()
        held_said = re.sub(r"\s+", "", (s.slots[etype].text or "") if etype in s.slots else "").lower()
        if etype == "competitor" and len(said) >= 2 and len(said) < len(held_said) and held_said.startswith(said):
            return  # "还是用腾讯的吧" after 腾讯企业邮: the rival named before, said short
        if etype == "callback_time":
            held_time = str(s.value(etype, ""))
            if held_time and value == "later" and not correction:
                return  # "到了打我电话" after 明天下午三点: the time agreed stands
            if _vaguer(str(value), held_time):
                return  # "下午四点以后" then "嗯 今天下午": the time said before, said less exactly
            value = _complete_time(str(value), held_time, kept[-1].text or "")
            if correction:
                value = _keep_clock(str(value), held_time)  # "唔系，改星期五啦": same hour
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


def _pick(kept: list[Entity], text: str, etype: str) -> Entity:
    """The value of a slot the caller gave several values for in one line.

    A count of people or things, or a place: a part ("还有两个夜班的", "每个厂三台") is not the
    value, a total ("一共一百台") is; after a correction cue ("不对，五个人", "不是欧洲，我说的是东南亚，印尼泰国那边") the first
    value after it; else the first ("三个会议室，大的那个要能坐二十个人", "贵阳到广州延迟好多" - what
    follows qualifies it).  Other slots: an id we know over the caller's own words
    ("西门子自己那个MindSphere"), else the last named ("两万八太高了 两万能做我就签")."""
    if len(kept) == 1:
        return kept[0]
    if etype not in ("quantity", "concurrency", "region"):
        known = [e for e in kept if _known_id(etype, e.value)]
        return (known or kept)[-1]
    spans = [(e, *_span(e, text)) for e in kept]
    whole = [(e, a, b) for e, a, b in spans if a < 0 or not _PART.search(_clause_before(text, a))]
    spans = whole or spans
    totals = [(e, a, b) for e, a, b in spans if a >= 0 and _TOTAL.search(_clause_before(text, a))]
    if totals:
        return totals[-1][0]
    cue = max((m.end() for m in _CORRECTION.finditer(text)), default=-1)
    after = [(e, a, b) for e, a, b in spans if a >= cue >= 0]
    # "不对啊，报价单上写的三百台，我们要的是三百八十台": the value said with 是 is the one meant
    meant = [x for x in after if re.search(r"(是|系|係)$", _clause_before(text, x[1]))]
    if meant:
        return min(meant, key=lambda x: x[1])[0]
    if after:
        return min(after, key=lambda x: x[1])[0]
    placed = [x for x in spans if x[1] >= 0]
    if etype == "region":
        # two places in a line, none corrected: the last one fills the slot (guide, decision 119:
        # "贵阳到广州延迟", "阿里云日本区，想看看你们东京节点") - not one named with what is wrong
        # with it ("放北京算了 上海太远": the reason for the other)
        wanted = [x for x in placed if not _FAULT.match(text[x[2] :])] or placed
        return max(wanted, key=lambda x: x[1])[0] if wanted else spans[-1][0]
    return min(placed, key=lambda x: x[1])[0] if placed else spans[0][0]


# what is wrong with a place, said right after it ("上海太远", "香港贵", "那边不行")
_FAULT = re.compile(r"(那边|那里|嘅|的)?(太|忒|好|蛮|比较)?(贵|远|慢|卡|不行|唔得|不方便|不稳)")


def _add_increments(kept: list[Entity], text: str, held: Any) -> list[Entity]:
    """"车间六十个工人用，办公室再加十个" = 70; "再多五个号" after 三十个号 = 35 (a total said in
    the line, "再加十个，一共四十个", is the value)."""
    spans = {id(e): _span(e, text) for e in kept}
    inc = [e for e in kept if spans[id(e)][0] >= 0 and _INCREMENT.search(text[max(0, spans[id(e)][0] - 2) : spans[id(e)][1]])]
    if not inc or any(_TOTAL.search(_clause_before(text, a)) for a, _ in spans.values() if a >= 0):
        return kept
    base = [e for e in kept if e not in inc]
    start = _as_int(_pick(base, text, "quantity").value) if base else _as_int(held)
    if start is None:
        return kept
    total = start + sum(_as_int(e.value) or 0 for e in inc)
    last = inc[-1]
    return [Entity(type="quantity", value=total, text=last.text, start=last.start, end=last.end)]


def _part_of(e: Entity, text: str, held: Any = None) -> bool:
    """Is this count a part of the whole ("还有两个", "每个厂三台", "有一台要…"; "那四台", "办公室那四十台"
    pointing at fewer than the count held)?"""
    start, _ = _span(e, text)
    if start < 0:
        return False
    before = _clause_before(text, start)
    if re.search(r"[那这](些)?$", before):
        v, whole = _as_int(e.value), _as_int(held)
        if v is not None and whole is not None and v < whole:
            return True
    return bool(_PART.search(before)) or before.strip() == "有"


_PARTS_OF_DAY = {"morning": (0, 12), "noon": (11, 14), "afternoon": (12, 19), "evening": (17, 24)}


def _vaguer(new: str, old: str) -> bool:
    """Is the callback time `new` ("today afternoon") the time `old` ("today 16:00") said less
    exactly?"""
    m_old = re.fullmatch(r"(\S+) (\d\d):\d\d", old)
    m_new = re.fullmatch(r"(\S+)(?: (morning|noon|afternoon|evening))?", new)
    if not m_old or not m_new or m_old.group(1) != m_new.group(1):
        return False
    if m_new.group(2) is None:
        return True
    lo, hi = _PARTS_OF_DAY[m_new.group(2)]
    return lo <= int(m_old.group(2)) < hi


def _keep_clock(new: str, old: str) -> str:
    """A callback day corrected without a time keeps the time said before: "friday" after
    "thursday 10:00" is "friday 10:00"; a weekday corrected without its week keeps the week
    ("改成礼拜三下午" after 下礼拜二上午 is next_wednesday afternoon)."""
    m_old = re.fullmatch(r"(\S+) (\S+)", old)
    if m_old and re.fullmatch(r"[a-z_]+", new) and new not in ("later",) and not new.startswith("PT"):
        new = f"{new} {m_old.group(2)}"
    day, _, rest = new.partition(" ")
    if old.startswith("next_") and old.split(" ")[0][5:] in WEEKDAY_IDS and day in WEEKDAY_IDS:
        new = " ".join(x for x in ("next_" + day, rest) if x)
    return new


# the words of a callback time that name its day (今天, 明儿, 下礼拜三, 三号 ...)
_DAY_NAMED = re.compile(r"今|明|后天|后日|听日|周|星期|礼拜|禮拜|[号號]|月|大后|过两天")
_TIME = re.compile(r"(\S+) (\d\d):(\d\d)")
_MORNING = re.compile(r"早上|上午|早晨|朝早|上昼|上晝|上半天|头晌|清早")


def _pm(part: str | None) -> bool:
    return part in ("afternoon", "evening")


def _complete_time(new: str, old: str, words: str) -> str:
    """A time the caller gives to complete the one said before takes its day and its half of the
    day from it (decision 36: the day comes from what was proposed): "十点以后" after 明儿上午十点
    is tomorrow 10:00, "九点吧" after 晚上八点 is 21:00, "上昼十点钟" after 下个礼拜三 is
    next_wednesday 10:00, "今天晚上" after 十一点以后 is 23:00."""
    if not old or old == "later" or old.startswith("P"):
        return new
    o_day, _, o_rest = old.partition(" ")
    n_day, _, n_rest = new.partition(" ")
    if n_day == "today" and o_day != "today" and not _DAY_NAMED.search(words):
        n_day = o_day
    clock = re.fullmatch(r"(\d\d):(\d\d)", n_rest)
    o_clock = re.fullmatch(r"(\d\d):(\d\d)", o_rest)
    if clock and n_day == o_day and int(clock.group(1)) < 12 and not _MORNING.search(words):
        if (o_clock and int(o_clock.group(1)) >= 12) or _pm(o_rest):
            n_rest = f"{int(clock.group(1)) + 12:02d}:{clock.group(2)}"
    elif _pm(n_rest) and n_day == o_day and o_clock and int(o_clock.group(1)) < 12:
        lo, hi = _PARTS_OF_DAY[n_rest]
        if lo <= int(o_clock.group(1)) + 12 < hi:
            n_rest = f"{int(o_clock.group(1)) + 12:02d}:{o_clock.group(2)}"
    return " ".join(x for x in (n_day, n_rest) if x)


def _joined_time(kept: list[Entity]) -> Entity:
    """Two callback times in one line that are pieces of one ("听日下昼啦，三点之后": a day and
    a clock): the day of the one that names it with the clock of the other (in the afternoon when
    the day's part says so)."""
    days = [e for e in kept if not str(e.value).startswith("today") and not _TIME.fullmatch(str(e.value))
            and re.fullmatch(r"[a-z_]+( (morning|noon|afternoon|evening))?", str(e.value))]
    clocks = [e for e in kept if (m := _TIME.fullmatch(str(e.value))) and m.group(1) == "today"
              and not _DAY_NAMED.search(e.text or "")]
    if len(days) != 1 or len(clocks) != 1:
        return kept[-1]
    day, _, part = str(days[0].value).partition(" ")
    m = _TIME.fullmatch(str(clocks[0].value))
    hour = int(m.group(2))
    if _pm(part) and hour < 12:
        hour += 12
    first, last = sorted((days[0], clocks[0]), key=lambda e: e.start if e.start is not None else 0)
    return clocks[0].model_copy(update={"value": f"{day} {hour:02d}:{m.group(3)}",
                                        "text": (first.text or "") + (last.text or ""), "start": first.start})


def _clause_before(text: str, start: int) -> str:
    """The words of the clause up to a position ("老师办公室还有" before 四十台)."""
    head = text[:start]
    cut = max((head.rfind(c) for c in "，,。；;！!？? "), default=-1)
    return head[cut + 1 :]


def _known_id(etype: str, value: Any) -> bool:
    """Is the value an id of the lexicon (siemens), not the caller's own words (mindsphere)?"""
    if etype == "product":
        return str(value) in product_ids()
    return (etype, str(value)) in _lexicon_ids()


@lru_cache(maxsize=1)
def _lexicon_ids() -> frozenset[tuple[str, str]]:
    from agent.dialogue.values import _lexicon

    return frozenset((t.kind, t.value) for terms in _lexicon().by_surface.values() for t in terms)


def _update_product(s: DialogueState, group: list[Entity], text: str, turn: int, conf: float, correction: bool,
                    held_features: tuple[str, ...] | list[str] = ()) -> None:
    """The product under discussion: a newly named one replaces it (a correction "不是X是Y"
    sets X aside for good); a dropped one ("OA先不要了", "WAF就算了") leaves the call's products,
    and if it was the one held, the product still wanted that was named last takes its place
    (the add-on, or the one set aside), else the slot is emptied."""
    held = s.value("product")
    kept = [e for e in group if not _denied(text, e, group) and not _negated(e, text)]
    dropped = [str(e.value) for e in group if e not in kept and str(e.value) not in {str(k.value) for k in kept}]
    rejected = s.rejected.setdefault("products", [])
    for v in dropped:
        if v in s.products:
            s.products.remove(v)
        if v not in rejected:
            rejected.append(v)
        feature = FEATURE_OF_PRODUCT.get(v)
        if feature and feature in s.value("features", []):
            left = [f for f in s.value("features") if f != feature]
            if left:
                _set(s, "features", left, turn, conf, "caller", "negation")
            else:
                del s.slots["features"]
    if not rejected:
        del s.rejected["products"]
    if kept:
        value = str(_pick(kept, text, "product").value)
        if correction and held and held != value and held in s.products and held in product_ids():
            s.products.remove(held)  # "哦不是，俺说错了，是考试那个": the first one was a mistake
        _update_single(s, "product", [e for e in kept if str(e.value) == value][:1], text, turn, conf, correction)
        if value in s.products:
            s.products.remove(value)
        s.products.append(value)
        if value in s.rejected.get("products", []):
            s.rejected["products"].remove(value)
    elif held is not None and held in dropped:
        back = next((p for p in reversed(s.products) if p != held), None)
        if back is not None:
            _set(s, "product", back, turn, conf, "caller", "negation")
            s.mentions.append(Mention(kind="product", value=back, turn=turn, by="caller"))
        else:
            s.slot_history.append(SlotChange(slot="product", old=held, new=None, turn=turn, reason="negation"))
            s.corrected.append("product")
            del s.slots["product"]
    product = s.value("product")
    if product in EDITION_FEATURES and product != held:
        # "算了，直接上企业版": the version bought is the edition; one named before is gone
        editions = [f for f in s.value("features", []) if _one_at_a_time(f) == "edition"]
        if editions:
            left = [f for f in s.value("features") if f not in editions]
            if left:
                _set(s, "features", left, turn, conf, "caller", "overwrite")
            else:
                del s.slots["features"]
    feature = FEATURE_OF_PRODUCT.get(product)
    asked = [w for w in s.said.get("features", {}).get(feature or "", []) if reading(w, "product") != product]
    if feature and feature in s.value("features", []) and (feature not in held_features or not asked):
        # the add-on 电子签章 became the product: it is no longer a feature of another one (a
        # capability asked for before in words of its own, "能不能网上签", stays: decision 129)
        left = [f for f in s.value("features") if f != FEATURE_OF_PRODUCT[product]]
        if left:
            _set(s, "features", left, turn, conf, "caller", "overwrite")
        else:
            del s.slots["features"]


_SPEC_VALUE = re.compile(r"^\d+核\d+g$")
# "有一台要16核32G": a spec for some of the machines, beside the one held
_SOME_OF = re.compile(r"有一台|有几台|其中|另外|还有|再加|仲有|[那这]些?[0-9一二两三四五六七八九十几]+[台个套位]")


# "算了还是4核8G保险": the caller settles on another one instead
_SETTLE_ON = re.compile(r"(算了|算啦|算咯|算哒)[，,\s]*(还是|就)")


def _one_at_a_time(v: Any) -> str | None:
    """Features of which the caller wants one at a time: an edition, a server spec."""
    v = str(v)
    if v.endswith("_edition"):
        return "edition"
    if MODEL_CODE.fullmatch(v):
        return "model"  # "H100太贵了 换成A100": one card model at a time
    return "spec" if _SPEC_VALUE.match(v) else None


def _covers(words: str | None, held: str) -> bool:
    """Do the caller's words for a dropped thing ("备份") name a feature held under another id
    ("offsite_backup", said 异地备份) or other words ("客户生日提醒")?"""
    words = re.sub(r"\s+", "", words or "").lower()
    if len(words) < 2:
        return False
    if words in held.lower():
        return True
    from agent.dialogue.values import _lexicon

    return any(words in surface for surface, terms in _lexicon().by_surface.items()
               if any(t.kind == "feature" and t.value == held for t in terms))


def _update_list(s: DialogueState, etype: str, group: list[Entity], text: str, turn: int, conf: float,
                 correction: bool = False) -> None:
    """Add what the caller wants, drop what they refuse.  A dropped thing not held by its id
    drops the feature its words name ("备份算了" after 异地备份); an edition replaces the edition
    held ("那就第二个吧 标准版"), and a spec said as a correction replaces the spec named last ("不对
    要八核十六G的"; not "有一台要16核32G", which is for some of the machines)."""
    key = LIST_SLOTS[etype]
    current = list(s.value(key, []))
    rejected = list(s.rejected.get(key, []))
    wanted = [e.value for e in group if e.value not in SIZING_FEATURES and not _negated(e, text)]
    editions = {v for v in wanted if _one_at_a_time(v) == "edition"}
    if len(editions) == 1:
        current = [c for c in current if _one_at_a_time(c) != "edition" or c in editions]
    elif len(editions) > 1:
        # "标准版跟专业版差在哪儿": editions weighed against each other, none chosen yet (one is
        # bought at a time); "第二个吧" picks one later
        s.options = list(dict.fromkeys(str(e.value) for e in group if e.value in editions))
        group = [e for e in group if e.value not in editions]
    for kind in ("spec", "model"):
        specs = {v for v in wanted if _one_at_a_time(v) == kind}
        held_specs = [c for c in current if _one_at_a_time(c) == kind and c not in specs]
        if len(specs) == 1 and held_specs and (correction or _SETTLE_ON.search(text)) and not _SOME_OF.search(text):
            current.remove(held_specs[-1])  # "老师的改成8核16G": the spec named last is the one corrected
    words = s.said.setdefault(key, {})
    for e in group:
        v = e.value
        if v in SIZING_FEATURES:
            continue  # "并发" is its own slot; asking about it is not wanting a feature
        said = re.sub(r"\s+", "", e.text or "").lower()
        if _negated(e, text) and not (etype == "feature" and _blocks(e, text)):
            behind = words.get(str(v), [])
            left = [w for w in behind if not said or not (said == w or said in w)]
            if said and said != str(v).lower() and said in current:
                # "防录屏唔要啦" (read as recording) after 防录屏 was asked for: the words name the
                # item held, not the id the model gave them
                current.remove(said)
                v = said
            elif v in current and left and (len(left) < len(behind) or (
                    etype == "system" and said and any(said in h.text for h in s.history))):
                # "抖音那个不要了，就美团" with both under OTHER, "停电报警算了" with 温度报警 kept:
                # the words dropped are one of the things the item stands for; the others stay
                # (also a system named before beside the one recorded: "跟1688店铺和抖音小店连")
                words[str(v)] = left
                continue
            elif v in current:
                current.remove(v)
                words.pop(str(v), None)
            elif etype == "feature":
                # "复制先不要了" after 跨区域复制 (held as offsite_backup): the words name it
                current = [c for c in current if not _covers(e.text, str(c))
                           and not (len(said) >= 2 and any(said in w for w in words.get(str(c), [])))]
            if v not in rejected:
                rejected.append(v)
        else:
            if v not in current:
                current.append(v)
                words[str(v)] = []
            if said and said not in words.setdefault(str(v), []):
                words[str(v)].append(said)
            if v in rejected:
                rejected.remove(v)
    if not words:
        s.said.pop(key, None)
    if rejected:
        s.rejected[key] = rejected
    if current:
        _set(s, key, current, turn, conf, "caller", "negation" if len(current) < len(s.value(key, [])) else "overwrite")
    elif key in s.slots:
        s.slot_history.append(SlotChange(slot=key, old=s.value(key), new=[], turn=turn, reason="negation"))
        s.corrected.append(key)
        del s.slots[key]


# "U盘能禁掉", "U盘一律禁掉": a requirement that is itself a block (guide, decisions 69 and 104)
_BLOCK = re.compile(r"禁|封掉|封住|屏蔽|管住|管控|锁住|锁死|不能用|不让用|不准用|唔俾用|不要开|别开|不开放|关掉|关闭")


# "禁U盘唔要住", "封U盘就算了": the block itself is what is dropped
_DROP_BLOCK = re.compile(r"(不要|唔要|不用|唔使|覅|算了|取消|去掉|免了|用不着|不需要)(?![开用])")


def _blocks(e: Entity, text: str) -> bool:
    """Is the feature refused because the caller wants it blocked - a requirement, not a drop?"""
    start, end = _span(e, text)
    if start < 0:
        return False
    clause = clause_of(text, start, end)[:40]
    return bool(_BLOCK.search(clause)) and not _DROP_BLOCK.search(clause)


# "第二个吧", "那就你说的第一个", "后面那个": a pick among the options weighed
_ORDINAL = re.compile(r"第([一二三四1-4])(个|种|款|档|套)?|(头一|前一)(个|种|款)|前者|(后一|最后一|后面那|后边那)(个|种|款)|后者")


def _pick_option(s: DialogueState, text: str, entities: list[Entity], turn: int) -> None:
    """"第二个吧" after "标准版跟专业版差在哪儿": the edition picked replaces any held."""
    if not s.options or any(_one_at_a_time(e.value) == "edition" for e in entities if e.type == "feature"):
        return
    m = _ORDINAL.search(text)
    if not m:
        return
    if m.group(1):
        i = "一二三四".find(m.group(1)) if m.group(1) in "一二三四" else int(m.group(1)) - 1
    else:
        i = 0 if (m.group(3) or m.group(0) == "前者") else len(s.options) - 1
    if not 0 <= i < len(s.options):
        return
    picked = s.options[i]
    held = [f for f in s.value("features", []) if _one_at_a_time(f) != "edition"]
    _set(s, "features", held + [picked], turn, 0.8, "coref", "overwrite")
    s.options = []


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
    if cue not in before or re.search(r"[，,。；;]", before[before.rfind(cue):]):
        return False
    at = max(0, start - 4) + before.rfind(cue)
    # "是不是呼叫中心更合适", "系唔系CRM": a yes-no question, not "不是X"
    return not (at > 0 and text[at - 1] == cue[-1])


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
    if set(intents) & {"do_not_call", "not_interested", "request_human", "competitor_comparison", "price_objection"} \
            or says_total(text):
        # "算上外包是三百五": a total restates the head count; "一百二？网易才九十": a price, not
        # an answer to the question
        return entities
    # 一年三千 / 三千我就买: a price, whatever was asked
    money = _MONEY.search(text) or any(e.type == "term" for e in entities) or "purchase_intent" in intents
    # only a count that names nothing it counts ("两千吧"; "四十个老师" stays a head count) or an
    # amount without money words can be the answer; 两年 stays a term
    others = [e for e in entities if ((e.type == "quantity" and not counts_things(e, text)) or (e.type == "budget" and not money))
              and e.type != want]
    nums = quantities_in(_masked(text, entities))
    if others:
        # the NLU could only tell "a number" (or took it for money); the question says which
        e = others[0]
        value = nums[0] if len(nums) == 1 else e.value
        return [x for x in entities if x is not e] + [Entity(type=want, value=value, text=e.text, start=e.start, end=e.end)]
    if not any(e.type in NUMERIC_SLOTS for e in entities) and nums:
        return entities + [Entity(type=want, value=int(nums[-1]), text="__context__")]
    return entities


# Guide cases 102 and 127: a web property the caller runs, which our protection product (or CDN)
# only sits in front of, is a system (OTHER) — the model seldom tags 官网 / 预约网站 / 小程序 as one.
_PROTECTING = frozenset({"waf", "anti_ddos", "cdn", "security_compliance"})
_WEB_PROPERTY = re.compile(r"网站|官网|小程序|商城|门户|网页|页面|服务器|app", re.IGNORECASE)


def _protected_property(s: DialogueState, text: str, entities: list[Entity]) -> list[Entity]:
    product = next((e.value for e in entities if e.type == "product"), None) or s.value("product")
    if product not in _PROTECTING or any(e.type == "system" for e in entities) or "OTHER" in s.value("systems", []):
        return entities
    taken = [(e.start, e.end) for e in entities if e.start is not None and e.end is not None and e.end > e.start]
    for m in _WEB_PROPERTY.finditer(text):
        if not any(a < m.end() and m.start() < b for a, b in taken):  # 高防服务器 is the product itself
            return entities + [Entity(type="system", value="OTHER", text=m.group(0), start=m.start(), end=m.end())]
    return entities


def _head_counts(s: DialogueState, text: str, entities: list[Entity]) -> list[Entity]:
    """A count the model took for concurrency that names what it counts and says nothing of
    "at once" ("医生端那边两百个人用", "员工后台账号十个") is a head count when the caller has
    already said how many are on at once (guide, hard case 4): it does not replace that."""
    if s.value("concurrency") is None or any(e.type == "quantity" for e in entities):
        return entities
    return [e.model_copy(update={"type": "quantity"})
            if e.type == "concurrency" and e.text != "__context__" and counts_things(e, text) and not at_once(e, text) else e
            for e in entities]


def _masked(text: str, entities: list[Entity]) -> str:
    """The text with the words of every non-numeric entity blanked: the 8 and 16 of a spec
    string "8核16G" are no count."""
    chars = list(text)
    for e in entities:
        a, b = _span(e, text)
        if e.type not in NUMERIC_SLOTS and a >= 0:
            chars[a:b] = "，" * (b - a)
    return "".join(chars)


def _bare_correction(s: DialogueState, text: str, entities: list[Entity]) -> list[Entity]:
    """"不是4000，是8000" / "改成9000" with no unit: the number replaces the numeric slot it
    corrects (the one holding the 不是 value, else the one set most recently).  Numbers inside
    another entity ("不对 要八核十六G的", "内存改成64G，32不够": a spec) are not a correction of a
    count, and when what follows the cue is such an entity, the line corrects that, not a count."""
    masked = _masked(text, entities)
    nums = quantities_in(masked, single_digits=True)
    held = {slot: s.value(slot) for slot in NUMERIC_SLOTS if s.value(slot) is not None}
    if not nums or not held:
        return entities
    cue = _CORRECTION.search(text)
    if cue and not [e for e in entities if e.type in NUMERIC_SLOTS and e.text != "__context__"]:
        rest = text[cue.end() :]
        first = re.search(r"[0-9一二两三四五六七八九十百千万]", rest)
        if first and masked[cue.end() + first.start()] != rest[first.start()]:
            return [e for e in entities if e.text != "__context__"]
    wrong = next((slot for slot, v in held.items() if v in nums), None)
    typed = [e for e in entities if e.type in NUMERIC_SLOTS]
    if typed and wrong is not None and cue and cue.group(0) not in ("改成", "换成", "改为", "改一下") \
            and all(_as_int(e.value) == held[wrong] for e in typed):
        # "不对，三万是去年的，今年按五万算" with only 三万 read: the value tagged is the wrong
        # one; the new number after the cue is the correction
        said = re.sub("(" + "|".join(_NOT_CUES) + r")[^，,。；;\s]*|[A-Za-z]+[0-9]+", "，", masked)
        rest = [n for n in quantities_in(said, single_digits=True) if n != held[wrong]]  # not "不是三十"
        if rest:
            return [e for e in entities if e not in typed] + [Entity(type=wrong, value=rest[0])]
    if typed:
        # "不是两千，是两万" after 两千并发: the NLU may read 两万 as money; the 不是 value says
        # which slot is being corrected (unless money words make it a budget)
        if _MONEY.search(text):
            return entities
        if wrong is None:
            # "不对 一千八" after 同时在线八百: a bare number the NLU typed as a head count
            # corrects the count set last (not so "四百个……勿对，五百个", corrected in the line)
            last = max(held, key=lambda k: s.slots[k].turn)
            cue = _CORRECTION.search(text)
            if last not in ("quantity", "concurrency") or (cue and numbers_in(text[: cue.start()])):
                return entities
            unit = _unit_of(s.slots[last].text)
            return [Entity(type=last, value=e.value, text=e.text, start=e.start, end=e.end)
                    if e.type in ("quantity", "concurrency", "budget") and e.type != last
                    and (not counts_things(e, text) or (unit is not None and _unit_of(e.text) == unit))
                    and not at_once(e, text) else e
                    for e in entities]
        return [Entity(type=wrong, value=e.value, text=e.text, start=e.start, end=e.end)
                if e.type in NUMERIC_SLOTS and e.type != wrong and e.value != held[wrong]
                and not (e.type == "concurrency" and at_once(e, text)) else e for e in entities]
    new = [n for n in nums if wrong is None or n != held[wrong]]
    if not new:
        return entities
    slot = wrong or max(held, key=lambda k: s.slots[k].turn)
    # "唔系两台 系三台 仲有一台做测试": the value right after the wrong one is the correction
    return entities + [Entity(type=slot, value=new[0] if wrong is not None else new[-1])]


_UNIT = re.compile(r"[0-9零一二两三四五六七八九十百千万]+\s*(个|個|台|套|位|路|单|單|间|間|份|条|條|名|人)")


def _unit_of(words: str | None) -> str | None:
    """The measure word of a count ("同时在线一百五十台" → 台): a correction that counts in the same
    unit ("不对，是两百五十台") corrects that count, whatever type the NLU gave it."""
    m = _UNIT.search(words or "")
    return {"個": "个", "單": "单", "間": "间", "條": "条"}.get(m.group(1), m.group(1)) if m else None


def _is_filler(text: str, m: re.Match[str]) -> bool:
    """"那个，…" / "这个嘛" at the start is a hesitation, not a reference."""
    after = text[m.end() : m.end() + 1]
    return after in ("，", ",", "…", "。", " ", "嘛", "啊", "呃") or (m.start() == 0 and after == "")


# what may stand right before a reference back ("就这个吧", "要那个", "刚才讲的那个", "我要的是那个")
_BEFORE_REFERENCE = re.compile(r"[的就要是选买用看问讲说了呢吧啊嘛哦喔呀咯还对定订上开签试个那这把给拿换改到在于即系哩噻]$")


def _names_its_noun(text: str, m: re.Match[str]) -> bool:
    """"考勤机那个数据", "拍照那种", "中控那个": a demonstrative right after a noun points at that
    noun, not back at a product or plan (guide, hard case 9 is about references back); "跟它比"
    is the rival just named."""
    if m.group(1):
        return False  # 刚才那个 / 之前那个: a reference back
    before = text[: m.start()]
    if m.group(2) == "它" and re.search(r"[跟和同与比]$", before):
        return True
    return bool(before) and bool(re.search(r"[\u4e00-\u9fffA-Za-z0-9]$", before)) and not _BEFORE_REFERENCE.search(before)


def _resolve_reference(s: DialogueState, text: str, entities: list[Entity], intents: list[str], turn: int) -> None:
    """"这个/那个/这个版本/刚才那个": the product or plan most recently named (by either side);
    with 刚才/之前, the one named before the current one."""
    if any(e.type in ("product", "plan") for e in entities):
        return
    # a size stated in the same turn chooses the plan by itself: only a product can be meant
    sized = any(e.type in NUMERIC_SLOTS for e in entities)
    m = next((m for m in _DEMONSTRATIVE.finditer(text) if not _is_filler(text, m) and not _names_its_noun(text, m)), None)
    if not m or not s.mentions:
        return
    earlier = m.group(1) in _EARLIER if m.group(1) else False
    wants_plan = bool(re.search(r"版本|版|套餐|配置|型号|方案", text))
    refused = set(s.rejected.get("products", []))  # "服务器不要了" … "那个多少钱": not the one refused
    candidates = [x for x in reversed(s.mentions) if (x.turn < turn or x.by == "bot") and not (sized and x.kind == "plan")
                  and not (x.kind == "product" and x.value in refused)]
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
