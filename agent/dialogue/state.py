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
from agent.dialogue.values import at_once, canonical_entities, clause_of, counts_things, product_ids, says_total
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
    r"^[^，,。！!？?；;]{0,4}(不要了|就不要了|不需要了|算[了啦咧哒喽嘞罗啰]|去掉|取消|就免了|不用了|先不要|不考虑了|用不着|用勿着|用唔着"
    r"|唔要|唔使|唔洗|覅|勿要|先不(要|整|弄|搞|上|买|装)|不整了|不弄了|不搞了|不装了|就算了"
    r"|不(用|要|需要|必)(对接|集成|接入|打通|加|买|备份|做)了?)"
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
_CORRECTION = re.compile(r"(不是|不对|说错了|搞错了|改成|换成|改为|改一下|更正|唔系|唔啱|勿是|勿对|弗是|弗对)")
# of several values of one slot in a line, those in a clause that adds a part ("还有两个夜班的",
# "每个厂三台") are not the value; one said as a total ("一共一百台") is
_PART = re.compile(r"还有|另外|仲有|其中|每个|每班|每间|每")
# "办公室再加十个", "再多五个号": a count added to the one held or said before it in the line
_INCREMENT = re.compile(r"(再加|再多|多加|另加|加上|外加|再添|(?<![差最顶至])多)[一二两三四五六七八九十百千万几俩0-9]")
_TOTAL = re.compile(r"一共|总共|总计|合计|加起来|全部")
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
    entities = canonical_entities(_clean(nlu.entities), text, s.value("product"), s.value("quantity") is not None)
    entities = _head_counts(s, text, entities)
    entities = _context_entities(s, text, entities, intents)
    if correction:
        entities = _bare_correction(s, text, entities)
    roles = read_roles(entities, text, intents, s.value("product"), list(s.value("systems", [])))
    entities = roles.entities
    if roles.only_added:
        # "再加个会议室设备 一间": the count is the add-on's, not the product's under discussion
        entities = [e for e in entities if e.type not in ("quantity", "concurrency")]
    for etype, group in _group(entities).items():
        conf = min((scores.get(i, 1.0) for i in intents), default=1.0)
        if etype in LIST_SLOTS:
            _update_list(s, etype, group, text, turn, conf, correction)
        elif etype == "product":
            _update_product(s, group, text, turn, conf, correction)
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


def _negated(e: Entity, text: str) -> bool:
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
    if kept:
        kept = [_pick(kept, text, etype)]
        value = kept[-1].value
        held_words = re.sub(r"\s+", "", str(s.value(etype, ""))).lower()
        if etype == "competitor" and len(str(value)) < len(held_words) and str(value).lower() in held_words:
            return  # "树根报的六万" after 树根互联: the same rival, said short
        if etype == "callback_time" and _vaguer(str(value), str(s.value(etype, ""))):
            return  # "下午四点以后" then "嗯 今天下午": the time said before, said less exactly
        if etype == "callback_time" and correction:
            value = _keep_clock(str(value), str(s.value(etype, "")))  # "唔系，改星期五啦": same hour
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
    if after:
        return min(after, key=lambda x: x[1])[0]
    placed = [x for x in spans if x[1] >= 0]
    return min(placed, key=lambda x: x[1])[0] if placed else spans[0][0]


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
    "thursday 10:00" is "friday 10:00"."""
    m_old = re.fullmatch(r"\S+ (\S+)", old)
    if m_old and re.fullmatch(r"[a-z_]+", new) and new not in ("later",) and not new.startswith("PT"):
        return f"{new} {m_old.group(1)}"
    return new


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


def _update_product(s: DialogueState, group: list[Entity], text: str, turn: int, conf: float, correction: bool) -> None:
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
    if product in FEATURE_OF_PRODUCT and FEATURE_OF_PRODUCT[product] in s.value("features", []):
        # the add-on 电子签章 became the product: it is no longer a feature of another one
        left = [f for f in s.value("features") if f != FEATURE_OF_PRODUCT[product]]
        if left:
            _set(s, "features", left, turn, conf, "caller", "overwrite")
        else:
            del s.slots["features"]


_SPEC_VALUE = re.compile(r"^\d+核\d+g$")
# "有一台要16核32G": a spec for some of the machines, beside the one held
_SOME_OF = re.compile(r"有一台|有几台|其中|另外|还有|再加|仲有|[那这]些?[0-9一二两三四五六七八九十几]+[台个套位]")


def _one_at_a_time(v: Any) -> str | None:
    """Features of which the caller wants one at a time: an edition, a server spec."""
    v = str(v)
    if v.endswith("_edition"):
        return "edition"
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
    specs = {v for v in wanted if _one_at_a_time(v) == "spec"}
    held_specs = [c for c in current if _one_at_a_time(c) == "spec" and c not in specs]
    if len(specs) == 1 and held_specs and correction and not _SOME_OF.search(text):
        current.remove(held_specs[-1])  # "老师的改成8核16G": the spec named last is the one corrected
    for e in group:
        v = e.value
        if v in SIZING_FEATURES:
            continue  # "并发" is its own slot; asking about it is not wanting a feature
        if _negated(e, text):
            said = re.sub(r"\s+", "", e.text or "").lower()
            if said and said != str(v).lower() and said in current:
                # "防录屏唔要啦" (read as recording) after 防录屏 was asked for: the words name the
                # item held, not the id the model gave them
                current.remove(said)
                v = said
            elif v in current:
                current.remove(v)
            elif etype == "feature":
                current = [c for c in current if not _covers(e.text, str(c))]
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
            return [Entity(type=last, value=e.value, text=e.text, start=e.start, end=e.end)
                    if e.type in ("quantity", "concurrency", "budget") and e.type != last and not counts_things(e, text)
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
