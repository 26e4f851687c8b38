"""Entity values as the dialogue state keeps them (pure functions).

The NLU gives each entity a value: an id of the lexicon / domain packs, a parsed number, or,
for an open-vocabulary span, the caller's own words.  Before a value becomes a slot value the
tracker brings it to the form the labelling guide (docs/nlu-labelling.md) fixes:

* a system is one of the categories (ERP, CRM, OA, ... OTHER): a vendor or product name the
  lexicon knows becomes its category, words that suggest one (财务软件) that one, anything else
  OTHER (hard cases 1, 15);
* a spec string is one feature: 四核八G / 4核8G → ``4核8g`` (decided case 11), not cpu + memory;
* an open-vocabulary feature or product the lexicon knows under another surface becomes its id;
* an edition word: beside another product it is a feature (``pro_edition``: decided case 26),
  alone or with the SaaS platform it is the SaaS version (``saas_pro``);
* a product value that is no product of ours (the caller's words) never replaces a product id
  already held: it is some other thing the caller named, not a switch of product.
"""

from __future__ import annotations

import re
from functools import lru_cache

from agent.dialogue.numbers import chinese_to_int, numbers_in
from agent.events import Entity

SYSTEM_CATEGORIES = frozenset(
    {"ERP", "CRM", "OA", "HR", "API", "MES", "WMS", "PLM", "SCADA", "PLC", "DB", "FINANCE", "EMAIL", "IM", "LMS", "OTHER"}
)
#: SaaS versions (products) and the edition features they are beside another product
EDITION_FEATURES = {"saas_standard": "standard_edition", "saas_pro": "pro_edition", "saas_enterprise": "enterprise_edition"}
EDITION_PRODUCTS = {v: k for k, v in EDITION_FEATURES.items()} | {"basic_edition": "saas_standard"}
SAAS_FAMILY = frozenset({"saas", *EDITION_FEATURES})

_NUM = r"[0-9一二两三四五六七八九十]{1,3}"
# 4核8G, 四核八G, 8核16g内存, 16核32G: one spec string (the memory unit may be left out: 四核八)
_SPEC = re.compile(rf"({_NUM})\s*核\s*({_NUM})\s*(?:g|gb|个g|内存)?(?![0-9一二两三四五六七八九十])", re.IGNORECASE)


def _to_int(s: str) -> int | None:
    s = s.strip()
    return int(s) if s.isdigit() else chinese_to_int(s)


def spec_strings(text: str) -> list[tuple[int, int, str]]:
    """(start, end, value) of every cores+memory spec string in the text: 四核八G → 4核8g."""
    out = []
    for m in _SPEC.finditer(text):
        cores, mem = _to_int(m.group(1)), _to_int(m.group(2))
        if cores and mem and cores <= 256 and mem <= 4096:
            out.append((m.start(), m.end(), f"{cores}核{mem}g"))
    return out


# Guide case 84: a lone storage size (20T, 三四个T, 十几个T) is the feature `storage`; a traffic
# volume (50T流量) is an open value.  Cases 40 and 50: a retention period (录像存一个月, 留七年,
# 存多久) is `storage`, never a term.
_STORAGE_SIZE = re.compile(r"(?:[0-9.]+|[零一二两三四五六七八九十百千几多]+)个?(?:t|tb|p|pb)(?:左右|多|的)?")
_RETENTION = re.compile(r"(?:存|留|保存|保留|存放)(?:个|上|够)?(?:(?:[0-9.]+|[一二两三四五六七八九十半几多]+)个?(?:年|月|天|周|礼拜)|多久|多长时间)")
# A dialect or plain particle the span took with it (哩证件到期提醒 is 证件到期提醒's feature).
_LEAD_PARTICLE = re.compile(r"^(?:的|哩|嘅|滴)+")
_TRAIL_PARTICLE = re.compile(r"(?:的|哩|嘅|了|呢|吗|吧|啊|嘛|咯|噻|伐)+$")


def feature_by_guide(key: str) -> str | None:
    """The feature id the labelling guide gives a span no lexicon entry names, else None.
    `key`: the span lower-cased without spaces."""
    if _STORAGE_SIZE.fullmatch(key) or (_RETENTION.search(key) and "流量" not in key):
        return "storage"
    return None


def open_feature_value(key: str) -> str:
    """An open-vocabulary feature value: the caller's words without the particles around them."""
    return _TRAIL_PARTICLE.sub("", _LEAD_PARTICLE.sub("", key)) or key


@lru_cache(maxsize=1)
def _lexicon():
    from agent.nlu.lexicon import load_lexicon

    return load_lexicon()


@lru_cache(maxsize=1)
def product_ids() -> frozenset[str]:
    lex = _lexicon()
    return frozenset(lex.values("product")) | SAAS_FAMILY


@lru_cache(maxsize=1)
def feature_ids() -> frozenset[str]:
    return frozenset(_lexicon().values("feature")) | frozenset(EDITION_PRODUCTS)


def _reading(words: str | None, kind: str) -> str | None:
    """The id the lexicon gives these exact words as `kind` (None: not known as that)."""
    if not words:
        return None
    key = re.sub(r"\s+", "", str(words)).lower()
    key = re.sub(r"的$", "", key)
    for k in (key, str(words).strip().lower()):
        for term in _lexicon().by_surface.get(k, ()):
            if term.kind == kind:
                return term.value
    return None


def reading(words: str | None, kind: str) -> str | None:
    """The id the lexicon gives these words as `kind` (None: not known as that)."""
    return _reading(words, kind)


def system_category(e: Entity) -> str:
    """The category of a system entity: its value when it is one, else what the lexicon or
    the words say, else OTHER."""
    v = str(e.value)
    if v.upper() in SYSTEM_CATEGORIES:
        return v.upper()
    for words in (e.text, v):
        known = _reading(words, "system")
        if known and known.upper() in SYSTEM_CATEGORIES:
            return known.upper()
    from agent.nlu.openvocab import system_category as by_words

    for words in (e.text, v):
        if words:
            cat = by_words(str(words))
            if cat != "OTHER":
                return cat
    return "OTHER"


_ID = re.compile(r"^[a-z0-9_]+$")
# a hardware model code (A100, H100, L40S, T4), with the count of cards before it (八卡A100)
MODEL_CODE = re.compile(r"([0-9一二两三四五六七八九十]+卡)?[A-Za-z]{1,3}[0-9]{1,4}[A-Za-z]?")


def _spans_overlap(e: Entity, a: int, b: int) -> bool:
    return e.start is None or e.end is None or (e.start < b and a < e.end)


# edition words the NLU may leave out beside a product name ("CRM专业版"): the edition feature
_EDITION_WORDS = re.compile(r"(专业|标准|基础|入门|高级|企业)版|pro版", re.IGNORECASE)
_EDITION_VALUE = {"专业": "pro_edition", "高级": "pro_edition", "标准": "standard_edition", "基础": "basic_edition",
                  "入门": "basic_edition", "企业": "enterprise_edition"}


def _edition_stem(e: Entity, text: str) -> Entity:
    """"专业" / "标准" of 专业版 / 标准版 tagged as the caller's own words: the edition (decision 26)."""
    words = re.sub(r"\s+", "", e.text or "")
    if e.type not in ("feature", "product") or words not in _EDITION_VALUE or e.end is None or text[e.end : e.end + 1] != "版":
        return e
    feature = _EDITION_VALUE[words]
    value = feature if e.type == "feature" else EDITION_PRODUCTS.get(feature, "saas_pro")
    return e.model_copy(update={"value": value, "text": words + "版", "end": e.end + 1})


# a rival's name right before an edition word: the rival's edition ("比钉钉专业版便宜伐")
_RIVAL_BEFORE = re.compile(r"(钉钉|飞书|企业微信|腾讯会议|zoom|网易|腾讯|阿里|华为)$", re.IGNORECASE)


def _edition_entities(entities: list[Entity], text: str) -> list[Entity]:
    extra = []
    for m in _EDITION_WORDS.finditer(text):
        if any(x.type == "competitor" and x.end == m.start() for x in entities) or _RIVAL_BEFORE.search(text[: m.start()]):
            continue
        if any(x.start is not None and x.end is not None and x.start < m.end() and m.start() < x.end
               and x.type in ("feature", "product", "plan") for x in entities):
            continue
        if any(x.type in ("feature", "product", "plan") and x.start is None and x.text and m.group(0) in x.text for x in entities):
            continue
        value = _EDITION_VALUE.get(m.group(1) or "", "pro_edition")
        extra.append(Entity(type="feature", value=value, text=m.group(0), start=m.start(), end=m.end()))
    return extra


# a count of things at the same time is concurrency, not a head count (guide, hard case 4)
_AT_ONCE = re.compile(r"同时|并发|(一起|一块儿?)(考|上课|开会|开|进来|进|看|听|在线|打|连)|高峰|峰值|qps|在线", re.IGNORECASE)
# a total of people or things (一共一百二十个人, 注册用户五万): a head count, not concurrency
_TOTAL = re.compile(r"一共|总共|总计|合计|加起来|算上|全部|全公司|注册|报名|在册")
# a count for a trial ("给两个测试账号", "先寄一台过来测") is not the count to buy
_TRIAL = re.compile(r"测试|试用|试一下|试试|样品|样机|过来测|测一[下哈]|来.{0,4}测|demo|poc", re.IGNORECASE)
# a period given free on top ("送三个月") is no contract term (decision 13)
_BONUS = re.compile(r"(送|赠|白送|免费|多给|再给)\s*$")
# the things a count can count (people, seats, machines, rooms): a count that names one is a
# quantity whatever the bot asked (两百人用, 四十个老师, 来两台; guide, hard case 4)
_COUNTED = re.compile(r"人|台|套|间|位|名|账号|帐号|户|坐席|席|老师|学生|学员|员工|用户|终端|设备|电脑|班|家长|工人|会议室|教室|考场"
                      r"|门店|域名|摄像头|传感器|司机|客服|license|seat", re.IGNORECASE)
_CLAUSE = re.compile(r"[，,。；;！!？?\s…]+")
_LINES = re.compile(r"([0-9]+|[一二两三四五六七八九十百千万]+)\s*路")
# a budget the caller states ("预算只有十二万", "预算就两万五") that the NLU left without a value
_BUDGET = re.compile(r"预算[^，,。？?！!0-9一二两三四五六七八九十]{0,4}([0-9.]+\s*[万千kw]?|[一二两三四五六七八九十百千万]+)\s*(块|元|蚊|千)?")
# an in-line self-correction: "四百个……勿对，五百个" (decided case 20)
_SELF_CORRECTION = re.compile(r"不对|勿对|唔啱|唔系|不是|说错了|错了")


def clause_of(text: str, start: int | None, end: int | None) -> str:
    """The clause (between commas, stops, pauses) holding text[start:end]; "" without a position."""
    if start is None or end is None:
        return ""
    a = max((m.end() for m in _CLAUSE.finditer(text, 0, start)), default=0)
    m = _CLAUSE.search(text, end)
    return text[a : m.start() if m else len(text)]


_RANGE_DIGITS = "一二三四五六七八九"
# 二三十 / 七八个 / 三四千: a range of two neighbouring digits (guide, hard case 10 and decision 18)
_RANGE = re.compile(r"([一二三四五六七八九])([二三四五六七八九])([十百千万]?)")
_COUNT = re.compile(r"[0-9][0-9,.]*\s*[万千kw]?|[零一二两俩三四五六七八九十百千万]+", re.IGNORECASE)


def reread_count(e: Entity, others: list[Entity], text: str) -> int | None:
    """The value of a count read again from its own words when the model's reading cannot be
    right: its words hold another entity's ("一年两百份" read as 1: the 一 of 一年), or a range
    of neighbouring digits (七八个 read as 78, 二三十 as 30: the lower bound is meant).  None:
    keep the model's value."""
    words = e.text or ""
    if e.start is None or e.end is None or not words:
        return None
    cut = words
    for o in others:
        if o is not e and o.type == "term" and o.start is not None and o.end is not None and o.text \
                and o.start < e.end and e.start < o.end and o.text in cut:
            cut = cut.replace(o.text, " ")
    m = _RANGE.search(cut.replace("两", "二"))  # 一两百 / 两三个: 两 is the digit 2
    if m and _RANGE_DIGITS.index(m.group(2)) == _RANGE_DIGITS.index(m.group(1)) + 1:
        unit = {"十": 10, "百": 100, "千": 1000, "万": 10000}.get(m.group(3), 1)
        return (_RANGE_DIGITS.index(m.group(1)) + 1) * unit
    if cut == words:
        return None
    nums = [n for n in (numbers_in(x.group(0)) for x in _COUNT.finditer(cut)) if n]
    return int(nums[0][0]) if nums and nums[0][0] >= 1 else None


# an amount said as a number alone (一万五, 三万五块, 两千以内): its words say what it is worth
_AMOUNT = re.compile(r"[0-9.,零一二两三四五六七八九十百千万亿kKwW]+\s*(块钱|块|元|蚊|左右|以内|以下|上下|出头)?")


def reread_amount(e: Entity) -> int | None:
    """A budget whose words are one amount and nothing else, read from those words when the
    model read them otherwise (一万五 read as 10000: the guide's value is 15000, hard case 10;
    a range or 出头 keeps its lower bound, decision 18).  None: keep the model's value."""
    words = re.sub(r"\s+", "", e.text or "")
    if not words or not _AMOUNT.fullmatch(words) or _RANGE.search(words):
        return None
    nums = numbers_in(words)
    return int(nums[0]) if len(nums) == 1 and nums[0] >= 1 and float(nums[0]).is_integer() else None


def at_once(e: Entity, text: str) -> bool:
    """Do the count's words say it happens at once (同时在线五十个, 两百路并发)?"""
    return bool(_AT_ONCE.search(clause_of(text, e.start, e.end) or (e.text or "")))


def says_total(text: str) -> bool:
    """"算上外包是三百五", "一共一百台": the line states a total count."""
    return bool(_TOTAL.search(text))


def counts_things(e: Entity, text: str) -> bool:
    """Does the count name what it counts (四十个老师, 两台, 老师大概三十个), rather than being a
    bare number (两千吧, 八百)?"""
    return bool(_COUNTED.search(clause_of(text, e.start, e.end) or (e.text or "")))


def _numbers(entities: list[Entity], text: str, count_held: bool = True) -> list[Entity]:
    """Counts the caller says happen at once become concurrency, totals (一共, 注册) and counts
    set against an at-once count in the same line (报名的两千人 同时在线八百) a quantity; a value
    corrected inside the line keeps the type of the value it corrects; a stated budget the NLU
    missed is added.  A count for a trial is not the count to buy, unless no count is held yet
    (then it is the only size the caller gave); an ordinal (第二种) is no count, nor a lone 一
    beside another count (一个班百把人); a period given free (送三个月) is no term."""
    out = []
    counts = [x for x in entities if x.type in ("quantity", "concurrency")]
    for e in entities:
        if e.type in ("quantity", "concurrency", "budget", "term") and e.start is not None and text[:e.start].endswith("第"):
            continue
        if e.type in ("quantity", "concurrency") and (e.text or "").strip() == "一" and len(counts) > 1:
            continue
        if e.type == "term" and e.start is not None and _BONUS.search(text[: e.start]):
            continue
        if e.type in ("quantity", "concurrency", "budget"):
            v = reread_count(e, entities, text)
            if v is None and e.type == "budget":
                v = reread_amount(e)
            if v is not None and v != e.value:
                e = e.model_copy(update={"value": v})
        if e.type == "quantity" and count_held and _TRIAL.search(clause_of(text, e.start, e.end) or (e.text or "")):
            continue
        if e.type == "quantity" and _AT_ONCE.search(clause_of(text, e.start, e.end) or (e.text or "")):
            e = e.model_copy(update={"type": "concurrency"})
        out.append(e)
    at_once = [x for x in out if x.type == "concurrency" and x.start is not None and _AT_ONCE.search(clause_of(text, x.start, x.end))]
    for x in [x for x in out if x.type == "concurrency" and x.start is not None and x not in at_once]:
        clause = clause_of(text, x.start, x.end)
        if _TOTAL.search(clause) or at_once:
            out = [y.model_copy(update={"type": "quantity"}) if y is x else y for y in out]
    # "…最多五路": lines at once, which the NLU may not read as a number at all
    for m in _LINES.finditer(text):
        if not any(x.start is not None and x.end is not None and x.start < m.end() and m.start() < x.end for x in out):
            nums = numbers_in(m.group(1))
            if nums and int(nums[0]) >= 1 and not any(x.type == "concurrency" for x in out):
                out.append(Entity(type="concurrency", value=int(nums[0]), text=m.group(0), start=m.start(), end=m.end()))
    numeric = sorted((x for x in out if x.type in ("quantity", "concurrency") and x.start is not None), key=lambda x: x.start)
    for first, second in zip(numeric, numeric[1:]):
        between = text[first.end : second.start]
        if first.type != second.type and _SELF_CORRECTION.search(between) and len(between) <= 12:
            out = [x for x in out if x is not first]
            out = [x.model_copy(update={"type": first.type}) if x is second else x for x in out]
    if not any(x.type == "budget" for x in out):
        m = _BUDGET.search(text)
        if m:
            nums = numbers_in(m.group(1) + ("千" if m.group(2) == "千" else ""))
            if nums and nums[0] >= 10:
                a, b = m.span(1)
                out = [x for x in out if not (x.type in ("quantity", "concurrency") and x.start is not None
                                              and x.end is not None and x.start < b and a < x.end)]
                out.append(Entity(type="budget", value=int(nums[0]), text=m.group(1), start=a, end=b))
    return out


# callback times (guide, entity table and decisions 18, 36): the part of the day or the day the
# words say, in the dialects of the corpus, when the value left it out or read it otherwise
_PART_WORDS = (("afternoon", re.compile(r"下午|下昼|下晝|下半天|后晌|过晌")),
               ("morning", re.compile(r"早上|上午|早晨|朝早|朝头早|上昼|上晝|上半天|头晌|前晌|清早|一早")),
               ("noon", re.compile(r"中午|晏昼|晌午")),
               ("evening", re.compile(r"晚上|傍晚|夜晚|夜里|夜头|晚头|今晚|明晚")))
_TOMORROW_WORDS = re.compile(r"明天|明日|明个|明儿|明朝|听日|听朝|明早|明晚")
_AFTER_TOMORROW_WORDS = re.compile(r"后天|后日|后个|后儿")
_WEEKDAY_WORDS = re.compile(r"(下[个個]?)?(?:周|星期|礼拜|禮拜)([一二三四五六日天])")
WEEKDAY_IDS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEKDAYS = {"一": "monday", "二": "tuesday", "三": "wednesday", "四": "thursday", "五": "friday", "六": "saturday",
             "日": "sunday", "天": "sunday"}


def callback_value(value: str, words: str | None) -> str:
    """A callback time in the guide's form: a span of days (过两天, P2D) is `later` (decision 18);
    the day and the part of the day its words name are kept when the value lost them (下个礼拜三朝早
    = next_wednesday morning, 明个上午 = tomorrow morning, 下礼拜二 = next_tuesday)."""
    value = str(value).strip()
    if re.fullmatch(r"P\d+D", value):
        return "later"
    m = re.fullmatch(r"([a-z_]+)(?: (\S+))?", value)
    if not m or not words or value == "later":
        return value
    day, rest = m.group(1), m.group(2)
    w = _WEEKDAY_WORDS.search(words)
    if w and day.removeprefix("next_") in WEEKDAY_IDS:
        day = ("next_" if w.group(1) or day.startswith("next_") else "") + _WEEKDAYS[w.group(2)]
    elif day == "today" and _AFTER_TOMORROW_WORDS.search(words):
        day = "day_after_tomorrow"
    elif day == "today" and _TOMORROW_WORDS.search(words):
        day = "tomorrow"
    if rest is None:
        rest = next((part for part, cue in _PART_WORDS if cue.search(words)), None)
    return f"{day} {rest}" if rest else day


# a spec string said with what is wrong with it ("4核8G不够，改成8核16G"): not the one wanted
_SHORT_OF = re.compile(r"\s*的?(不够|唔够|不行|唔得|太小|太低|小了|太贵|带不动|跑不动)")
# "两台4核8G", "三台8核32G": how many machines, said right before the spec string
_MACHINES = re.compile(r"([0-9]{1,4}|[一二两三四五六七八九十百千]{1,4})\s*(台|套)\s*$")


def _spec_counts(entities: list[Entity], text: str, specs: list[tuple[int, int, str]]) -> list[Entity]:
    """The count of machines said in front of a spec string, which the NLU may have read as part of
    the spec ("两台2核4G" as one feature): a quantity of its own (hard cases 4 and 11: the spec is
    one feature, the machines are counted)."""
    out = []
    for a, _, _ in specs:
        m = _MACHINES.search(text[:a])
        if not m or any(x.type in ("quantity", "concurrency") and _spans_overlap(x, m.start(), m.end())
                        and x.start is not None for x in entities):
            continue
        n = numbers_in(m.group(1))
        if n and n[0] >= 1:
            out.append(Entity(type="quantity", value=int(n[0]), text=m.group(0), start=m.start(), end=m.end()))
    return out


def canonical_entities(entities: list[Entity], text: str, product: str | None, count_held: bool = True) -> list[Entity]:
    """The turn's entities with the values the state keeps (see the module text).  `product`
    is the product the state holds before this turn; `count_held`: whether it holds a head
    count already (a count for a trial does not replace it)."""
    out: list[Entity] = []
    specs = spec_strings(text)
    entities = _numbers(list(entities) + _edition_entities(entities, text) + _spec_counts(entities, text, specs),
                        text, count_held)
    # the product this turn talks about: one it names itself, else the one held
    named = [str(e.value) for e in entities if e.type == "product" and not e.negated and str(e.value) in product_ids()]
    other_product = next((p for p in reversed(named) if p not in SAAS_FAMILY), None)
    dropping_held = product is not None and any(e.type == "product" and e.negated and str(e.value) == product for e in entities)
    saas_named = "saas" in named or any(e.type in ("product", "feature") and "saas" in (e.text or "").lower() for e in entities)
    if other_product is None and not saas_named and product in product_ids() and product not in SAAS_FAMILY:
        # "标准版跟专业版有么子区别" about the video conferencing held: editions of it, not SaaS
        other_product = product
    for e in entities:
        e = _edition_stem(e, text)
        v = e.value
        if e.type == "system":
            v = system_category(e)
        elif e.type == "callback_time" and isinstance(v, str):
            v = callback_value(v, e.text)
        elif e.type == "feature" and isinstance(v, str):
            if specs and v in ("cpu", "memory") and any(_spans_overlap(e, a, b) for a, b, _ in specs):
                continue  # the spec string below stands for it
            if e.text and MODEL_CODE.fullmatch(re.sub(r"\s+", "", e.text)):
                # "A100", "八卡A100": a model the caller names is their words, not the generic id
                # (gpu) the model or a pack's alias gives it (guide, feature ids: "anything else:
                # the caller's words"; decisions 42, 49)
                v = re.sub(r"\s+", "", e.text).lower()
            elif v not in feature_ids():
                v = _reading(e.text, "feature") or _reading(v, "feature") or v
            if not _ID.match(v) and e.text and _reading(e.text, "feature") == v:
                # no feature id of the guide (those are ids), only a pack's name for the words:
                # the guide keeps the caller's words ("算薪", not the pack's "薪资计算")
                v = re.sub(r"\s+", "", e.text).lower()
            if v in EDITION_PRODUCTS and other_product is None:
                e = e.model_copy(update={"type": "product"})
                v = EDITION_PRODUCTS[v]
        elif e.type == "product" and isinstance(v, str):
            if v not in product_ids():
                v = _reading(e.text, "product") or _reading(v, "product") or v
            edition = _EDITION_WORDS.search(e.text or "")
            if v == "saas" and edition:
                # "SaaS标准版多少钱": the version of the platform named in the words (decision 26)
                v = EDITION_PRODUCTS.get(_EDITION_VALUE.get(edition.group(1) or "", "pro_edition"), v)
            if v not in product_ids() and e.negated and _reading(e.text, "feature"):
                # "APP不要了": what is dropped is the capability the words name
                e = e.model_copy(update={"type": "feature"})
                v = _reading(e.text, "feature")
            elif v in EDITION_FEATURES and other_product is not None:
                e = e.model_copy(update={"type": "feature"})
                v = EDITION_FEATURES[v]
            elif v not in product_ids() and (product in product_ids() or named) and not dropping_held:
                # not a product of ours: not a switch away from the one held or named (unless the
                # caller drops that one for it: "CRM先不要了，就智能客服多少钱")
                continue
        if v != e.value:
            e = e.model_copy(update={"value": v})
        out.append(e)
    for a, b, value in specs:
        if not any(x.type == "feature" and x.value == value for x in out):
            negated = any(x.type == "feature" and x.negated and x.value in ("cpu", "memory") and _spans_overlap(x, a, b)
                          for x in entities) or bool(_SHORT_OF.match(text, b))
            out.append(Entity(type="feature", value=value, text=text[a:b], start=a, end=b, negated=negated))
    # in the order said (a spec string stands where its cpu/memory words stood)
    out.sort(key=lambda e: e.start if e.start is not None else len(text) + 1)
    # one entity per (type, value, negated): the same thing said twice is one mention
    seen: set[tuple[str, str, bool]] = set()
    deduped = []
    for e in out:
        key = (e.type, str(e.value), e.negated)
        if e.type in ("feature", "system") and key in seen:
            continue
        seen.add(key)
        deduped.append(e)
    return deduped
