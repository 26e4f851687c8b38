"""Rule + lexicon understander: taxonomy cues (agent/data/taxonomy.yaml) over normalised text, plus
entity-driven decisions (a feature named -> feature_inquiry, a system -> integration_inquiry…),
negation, corrections and supplements that inherit the previous need.  The always-available
fallback behind the trained model."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.events import Entity, Intent
from agent.nlu import NluOutput
from agent.nlu.entities import INTEGRATION_CUE, Found, extract, negated
from agent.nlu.lexicon import Lexicon, Taxonomy, load_lexicon, load_taxonomy
from agent.nlu.normalize import Normalized, Rewriter
from agent.nlu.openvocab import normalise

VERSION = "rules-3"

# A product named after one of these (or followed by the second) is a product enquiry.
NEED_BEFORE = re.compile(r"(要|想要|需要|想了解|了解|介绍|看看|看下|看一下|考虑|找|有没有|有|问问|问一下|咨询|推荐|来个|搞个|弄个|整个|配个|上个|用|关于|想问|选|换|上)[一个台套款些点下的你们贵公司]*\S{0,6}$")
NEED_AFTER = re.compile(r"^(?:这块|这边|的话|方面|[,. ])?(有吗|有没有|有么|怎么样|咋样|好不好|是什么|是啥|介绍|了解|吗|呢|么|适合|合适|哪个好|能做|可以做|靠谱|能讲讲|讲讲|说说)")
SYSTEM_WANT = re.compile(r"(想搞|想要|想上|想买|想找|找个|找一个|找一套|要个|要一个|要一套|搞个|搞一套|搞一个|上个|上一套|需要个|需要一套|换个|换一套|推荐个|推荐一套|做不做|搞不搞|卖不卖|有冇|有没有那种)(能打通的|好用的|靠谱的|新的|简单的)?\S{0,2}$")
LATE_SUPPLEMENT = re.compile(r"^(还要|还需要|还得|也要|也需要|也得|再来|再加)")
CONTENT_INTENTS = ("product_inquiry", "feature_inquiry", "integration_inquiry", "price_inquiry", "demo_request")
FEATURE_CUE = re.compile(r"节点|机房|地域|可用区|配(个|一台|台)|\d+g|并发|配置|性能|功能|参数|规格|内存|硬盘|带宽|cpu|gpu|几核|安全|备份|稳定|扩容|部署|容灾|响应|速度|延迟|存储|兼容")
CORRECTION = re.compile(r"不是(?P<old>.{1,12}?)[,，]?(?:而是|是|要的是|应该是)")
# the same correction said the other way round: 我要的是企业版不是专业版
LATE_CORRECTION = re.compile(r"(?:是|要|要的是)[^,，]{1,12}?[,，]?(?:不是|而不是)(?P<old>[^,，]{1,12})$")
LEADING_FILLER = re.compile(r"^(?:(?:呃+|嗯+|唉|哎|诶|额|啊|哦|噢|那个|这个这个|这个,|就是说?|我跟你说啊?|我说|你听我说|是这样的?|是这样啊)[,.!?~ ]*)+")
STRONG_PRICE = re.compile(r"按月|按年|分期|月付|年付|多少|报价|报个价|怎么(收|卖|算)|什么价|啥价|价位|贵不贵|收费|计费|年费|月费|花")
# an answer that is only a time ("明天下午三点吧", "周五上午") books the call-back
_DAY = r"(?:大后天|今天|今晚|明天|明早|明晚|后天|(?:下个?|这个?|本)?(?:周|星期|礼拜)[一二三四五六日天末]|下周|下礼拜|下星期|周末|下个月|月底|月初)"
_HOUR = r"(?:[0-9]{1,2}|[一二两三四五六七八九十]{1,3})(?:点|:|：)(?:半|一刻|[0-9]{1,2}|[一二三四五六七八九十]{1,3}分?)?(?:钟)?"
TIME_ONLY = re.compile(
    rf"^(?:那就?|就|那|要不|要不然|嗯|好)?[,. ]*(?:{_DAY}[,. ]*(?:的)?(?:早上|上午|中午|下午|傍晚|晚上)?[,. ]*(?:{_HOUR})?|(?:早上|上午|中午|下午|傍晚|晚上)?[,. ]*{_HOUR})"
    r"(?:左右|前后|以后|之后|过后|吧|呗|行吗|可以吗|行不行|好吧|好了|的样子|再说|再聊|[,.!?~ ])*$"
)
# an elliptical follow-up ("那两年呢", "如果买三年呢") asks the previous question again with a new value
FOLLOW_UP = re.compile(r"^(?:那|那么|那要是|要是|如果|假如|换成|改成|那如果|那换成)?.{0,10}(?:呢|的话)[?!. ]*$")
WRONG_PREFIX = re.compile(r"^[^\w]*(?:不是|不对|错了|说错了|搞错了|刚才说错了)?[^,. ]{0,8}?(?:不对|错了|说错了|搞错了)[,. ]*(?:是|应该是|改成)?")
BARE_NUMBER = re.compile(r"^[^\w]*(?:大概|大约|差不多|就|要|得|是|有|估计|至少)*(?P<n>[0-9.]+[kw万千]?|[零一二两三四五六七八九十百千万]+)(?:个|左右|吧|的样子|以上)?[^\w]*$")


@dataclass
class Decision:
    intents: dict[str, float] = field(default_factory=dict)
    entities: list[Found] = field(default_factory=list)


class RuleUnderstander:
    version = VERSION

    def __init__(self, taxonomy: Taxonomy | None = None, lexicon: Lexicon | None = None) -> None:
        self.taxonomy = taxonomy or load_taxonomy()
        self.lexicon = lexicon or load_lexicon()
        self.rewriter = Rewriter(self.lexicon.rewrites, self.lexicon.pinyin_targets)
        self.rewriter("预热拼音表")  # first-call imports (pypinyin, opencc) at start-up, not in a call

    # --- public ---
    def understand(self, text: str, context: Sequence[str] = (), bot_prev: str | None = None) -> NluOutput:
        # bot_prev is not used: the rules' cues read the caller's words only
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        norm = self.rewriter(text)
        d = self.decide(norm, context)
        intents = [Intent(name=n, score=round(s, 3)) for n, s in d.intents.items()] or [Intent(name="other")]
        # concurrency as a feature only drives the intent; its number is the `concurrency` entity
        kept = [f for f in d.entities if not (f.type == "feature" and f.value == "concurrency")]
        entities = [_entity(norm, f, f.type in ("feature", "product", "system") and negated(norm.text, f)) for f in kept]
        return NluOutput(intents=intents, entities=entities, decided_by="rule", version=self.version)

    def intent_names(self, text: str, context: Sequence[str] = ()) -> set[str]:
        return {i.name for i in self.understand(text, context).intents}

    # --- decision ---
    def decide(self, norm: Normalized, context: Sequence[str] = ()) -> Decision:
        text = norm.text
        core_text = LEADING_FILLER.sub("", text) or text  # anchored cues see past 呃/我跟你说啊
        intents: dict[str, float] = {}
        for spec in self.taxonomy.intents:
            if any(c.search(core_text) for c in spec.cues) and not any(u.search(core_text) for u in spec.unless):
                intents[spec.name] = 1.0
        if context and (LATE_SUPPLEMENT.search(core_text) or re.search(r"也(要|得|需要|想要)", core_text)):
            intents["supplement_demand"] = 1.0  # 还要… only adds to something said before
        if "price_objection" in intents and re.search(r"(报价|价格|价钱|价)(更|还|都)?(低|便宜)", text):
            intents.pop("price_inquiry", None)
        found = extract(norm, self.lexicon, want_later="callback_request" in intents,
                        want_time=bool({"callback_request", "demo_request"} & set(intents)))

        # "那CRM呢" / "还有OA也要" right after asking to connect the ERP: another system to connect
        if context and INTEGRATION_CUE.search(self.rewriter(context[-1]).text) and not SYSTEM_WANT.search(text):
            found = [Found("system", sys_t.value, f.start, f.end)
                     if f.type == "product" and (sys_t := next((t for t in self.lexicon.by_surface.get(text[f.start:f.end], ())
                                                              if t.kind == "system"), None)) else f for f in found]

        # corrections: "不是1000，是2000并发" keeps only the new value
        for m in list(CORRECTION.finditer(text)) + list(LATE_CORRECTION.finditer(text)):
            found = [f for f in found if not (m.start("old") <= f.start and f.end <= m.end("old"))]

        if any(f.type == "feature" and f.value == "offsite_backup" for f in found):
            found = [f for f in found if not (f.type == "feature" and f.value == "data_backup")]
        if "price_inquiry" in intents and len(intents) > 1 and not STRONG_PRICE.search(text) and not re.search(r"[吗呢?]|如何|怎么样", text):
            intents.pop("price_inquiry")  # 这个价格我得跟老板商量: mentions the price, asks nothing
        neg = [f for f in found if f.type in ("feature", "product", "system") and negated(text, f)]
        pos = [f for f in found if f not in neg]
        if neg:
            # 不要异地备份了 / X就算了 changes a requirement: feature_inquiry with X negated; only
            # an explicit "no / wrong" (不是, 不对) is also a deny (guide, hard case 5)
            if re.search(r"不是|不对|错了|说错", text):
                intents["deny"] = 1.0
            intents["feature_inquiry"] = 1.0
            intents.pop("not_interested", None)  # 不需要异地备份 declines a feature, not the call
            intents.pop("purchase_intent", None)

        kinds = {f.type for f in pos}
        if "not_interested" in intents and "product" in kinds and re.search(r"还是|换成|改成|先看看|看看", text):
            intents.pop("not_interested")  # 算了，还是先看看企业邮箱吧: a switch of product, not a no
        named = [f for f in found if f.type in ("product", "system", "competitor")]
        if kinds & {"feature", "concurrency"} or FEATURE_CUE.search(_without(text, neg + named)):
            intents["feature_inquiry"] = 1.0
        systems = [f for f in pos if f.type == "system"]
        if systems:
            wanted = [f for f in systems if SYSTEM_WANT.search(text[max(0, f.start - 10) : f.start])]
            if not INTEGRATION_CUE.search(text):  # 你们有没有CRM: do we sell one (nothing to connect)
                wanted += [f for f in systems if f not in wanted and f.value != "API"
                           and re.search(r"(你们|你家)(这边|那边)?(有没有|有)$", text[max(0, f.start - 8) : f.start])]
            if wanted:  # 想搞个CRM: they want one, from us
                intents["product_inquiry"] = 1.0
                # a system they want to buy is a product (guide, hard case 3): its words, normalised
                found = [Found("product", normalise(text[f.start : f.end]), f.start, f.end) if f in wanted else f
                         for f in found]
            if INTEGRATION_CUE.search(text) or len(wanted) < len(systems):
                intents["integration_inquiry"] = 1.0
        if "competitor" in kinds:
            intents["competitor_comparison"] = 1.0
        products = [f for f in pos if f.type == "product"]
        if products and "product_inquiry" not in intents and "purchase_intent" not in intents:
            for f in products:
                if NEED_BEFORE.search(text[max(0, f.start - 10) : f.start]) or NEED_AFTER.search(text[f.end : f.end + 6]):
                    intents["product_inquiry"] = 1.0
                    break
            else:
                core = set(intents) - {"greeting", "affirm", "supplement_demand"}
                if not core:
                    intents["product_inquiry"] = 0.8  # a product named on its own asks about it
        feats = [f for f in found if f.type in ("feature", "product")]
        if "integration_inquiry" in intents and "system" not in kinds and not re.search(r"api|接口|sdk|系统|软件|平台|对接|接入|集成|打通", _without(text, feats)):
            intents.pop("integration_inquiry")  # 兼容/同步 alone, with nothing to connect to
        if "price_objection" in intents and "price_inquiry" in intents and (
            re.search(r"便宜多少|优惠多少|打几折|折扣多少", text) or not STRONG_PRICE.search(text)
        ):
            intents.pop("price_inquiry")
        if "ask_if_robot" in intents and "request_human" in intents and not re.search(r"(转|找|换|叫|要|让|请)(个|一个)?(人工|真人|活人|经理|客服)", text):
            intents.pop("request_human")
        if "do_not_call" in intents:
            intents.pop("callback_request", None)
        if "callback_request" not in intents:
            found = [f for f in found if f.type != "callback_time" or f.value != "later"]
        if {"affirm", "deny"} <= set(intents):
            intents.pop("affirm")
        if {"deny", "not_interested"} <= set(intents) and not neg and not CORRECTION.search(text):
            intents.pop("deny")  # 不用了 declines the offer; it corrects nothing
        if set(intents) <= {"other"} and TIME_ONLY.match(core_text):
            intents = {"callback_request": 1.0}
            found += [f for f in extract(norm, self.lexicon, want_later=False, want_time=True) if f.type == "callback_time"]
        # 数据库 with nothing to connect it to is our cloud database, not their system
        if not INTEGRATION_CUE.search(text):
            found = [Found("product", "cloud_database", f.start, f.end) if f.type == "system" and f.value == "DB" and text[f.start : f.end] == "数据库" else f for f in found]
            if any(f.type == "product" for f in found) and not any(f.type == "system" for f in found):
                if "integration_inquiry" in intents and not re.search(r"api|接口|sdk|对接|接入|集成|打通", text):
                    intents.pop("integration_inquiry")
                    intents.setdefault("product_inquiry", 1.0)

        # a bare number answers the previous turn's question (also after 三百不对 / 说错了: a correction)
        wrong = WRONG_PREFIX.match(text)
        off = wrong.end() if wrong and wrong.end() > 0 else 0
        if context and not [f for f in found if f.start >= off]:
            m = BARE_NUMBER.match(text[off:])
            if m and off:
                found = []  # 三百不对 三千: the old value goes
                intents.pop("other", None)
                intents["deny"] = 1.0
            prev = self.rewriter(context[-1]).text
            if m:
                from agent.nlu.numbers import parse_number

                v = parse_number(m.group("n"))
                if v:
                    a, b = off + m.start("n"), off + m.end("n")
                    if re.search(r"并发|同时在线|qps", prev):
                        found.append(Found("concurrency", v, a, b))
                        intents["feature_inquiry"] = 1.0
                    elif re.search(r"预算|多少钱|价格|报价", prev) and v >= 100:
                        found.append(Found("budget", v, a, b))

        # an elliptical follow-up (那两年呢 / 如果买三年呢) re-asks the previous turn's question
        if context and FOLLOW_UP.match(core_text) and not set(intents) - {"other", "supplement_demand"}:
            prev_d = self.decide(self.rewriter(context[-1]), context[:-1])
            inherited = {n: 0.9 for n in CONTENT_INTENTS if n in prev_d.intents}
            if inherited:
                intents = {k: v for k, v in intents.items() if k != "other"} | inherited

        # a supplement inherits the previous turn's need when it names none itself
        if "supplement_demand" in intents and context and not set(intents) & set(CONTENT_INTENTS):
            prev_d = self.decide(self.rewriter(context[-1]), context[:-1])
            for name in CONTENT_INTENTS:
                if name in prev_d.intents:
                    intents[name] = 0.9

        if "other" in intents or not intents:
            intents = {k: v for k, v in intents.items() if k != "other"} or {"other": 1.0}
        order = {name: i for i, name in enumerate(self.taxonomy.intent_names)}
        return Decision(
            intents=dict(sorted(intents.items(), key=lambda kv: order.get(kv[0], 99))),
            entities=_dedupe(found),
        )


def _without(text: str, spans: list[Found]) -> str:
    for f in sorted(spans, key=lambda f: -f.start):
        text = text[: f.start] + " " * (f.end - f.start) + text[f.end :]
    return text


def _dedupe(found: list[Found]) -> list[Found]:
    seen: set[tuple[str, str]] = set()
    out = []
    for f in found:
        key = (f.type, str(f.value))
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def _entity(norm: Normalized, f: Found, is_negated: bool = False) -> Entity:
    start, end = norm.orig_span(f.start, f.end)
    return Entity(type=f.type, value=f.value, text=norm.orig[start:end], start=start, end=end, negated=is_negated)
