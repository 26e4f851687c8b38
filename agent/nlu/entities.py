"""Entities with normalised values from normalised text: lexicon terms (product, feature,
competitor, system, region), numbers with their unit (concurrency, quantity, budget, term),
callback time and phone number."""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.nlu.lexicon import Hit, Lexicon
from agent.nlu.normalize import Normalized
from agent.nlu.numbers import NUMBER, parse_number
from agent.nlu.openvocab import find_open

# Integration context decides whether "金蝶"/"MES" is their existing system or a rival/product.
INTEGRATION_CUE = re.compile(r"对接|接入|集成|打通|连通|联通|连接|同步|接上|联动|兼容|导入|导出|互通|现有|已有|原有|现在用|在用|接口")
# a connecting verb: "我们在用用友 能对接吗" is their system even when they also compare
STRONG_INTEGRATION = re.compile(r"对接|接入|集成|打通|连通|联通|连接|同步|接上|联动|兼容|导入|导出|互通|接口")
OURS_BEFORE = re.compile(r"(你们|你家|贵公司)(的|那个|这个|家的?|那款|这款)?$")
# automation vendors whose hardware callers own; they are rivals only when the caller compares
HARDWARE_VENDORS = frozenset({"siemens", "rockwell", "supcon"})
COMPARISON_CUE = re.compile(r"比|相比|对比|比较|区别|优势|人家|别家|便宜|贵|报价|换|迁|为什么|为啥|凭什么|干嘛|强在|好在|没必要")
NEGATION_BEFORE = re.compile(r"(不要|不用|不需要|不想要|不必|去掉|取消|删掉|不考虑|没必要|用不着|用不上|暂时不要|先不要|不要了)(那个|这个|什么)?(的)?$")
NEGATION_AFTER = re.compile(r"^(就|也|先|暂时)?(不要|不用|不需要|算了|去掉|取消|不考虑|没必要|用不着)")

_N = rf"(?P<n>{NUMBER}|上[万千百])"
_APPROX = r"(?:来|多|余|左右|上下)?"

CONCURRENCY_RES = (
    re.compile(rf"{_N}{_APPROX}\s*(?:个)?(?:人|用户)(?:的)?同时(?:下单|访问|在线|使用|登录|用|操作|打开|抢购|上线)"),
    re.compile(rf"{_N}{_APPROX}[\s,]?(?:个|路)?(?:人|用户|用户量)?(?:的)?(?:同时)?(?:并发|并发量|并发数|qps|tps|同时在线|同时访问|同时使用|同时用|同时登录|在线)"),
    re.compile(rf"(?:并发|并发量|并发数|同时在线|同时访问|qps|tps)(?:量|数)?(?:要|需要|得|大概|大约|差不多|是|在|达到|能到|到|有|上|支持|能|要求|至少|最少|起码|最多|最高|峰值|高峰|也就)*(?:个)?{_N}(?!个?(?:年|月|天|季度|台|套))"),
    re.compile(rf"(?:支持|扛住|撑住|扛得住|抗住|顶住|承受)(?:住)?{_N}{_APPROX}(?:个)?(?:人|用户)?(?:同时|并发)"),
)
MONEY_UNIT = r"(?:块钱|块|元|圆|rmb|人民币|大洋|米)"
BUDGET_RES = (
    re.compile(rf"(?:预算|经费|budget|资金)(?:是|有|在|大概|大约|差不多|就|只有|也就|控制在|不超过|最多|顶多|能有|给|:|：)*{_N}{_APPROX}{MONEY_UNIT}?"),
    re.compile(rf"{_N}{_APPROX}{MONEY_UNIT}"),
    re.compile(rf"(?P<n>\d+(?:\.\d+)?\s*[w万]|[零〇一二两三四五六七八九十百千]+(?:点[一二三四五六七八九])?万(?:[一二两三四五六七八九][千百]?)?){_APPROX}(?!(?:个|台|人|用户|并发|条|次|套|行|字|家|元|块))"),
    re.compile(rf"{_N}{_APPROX}{MONEY_UNIT}?(?=(?:一|每|/)(?:个)?(?:月|年))"),
    re.compile(rf"(?:才|只要|只卖|就卖|只收|才卖|才收){_N}{_APPROX}{MONEY_UNIT}?"),
    re.compile(rf"(?:一|每)(?:个)?(?:月|年)(?:要|得|花|付|就|给|大概|差不多)*{_N}{_APPROX}{MONEY_UNIT}?(?!个|台|人|并发|套)"),
    re.compile(rf"(?:控制在|不超过|最多|顶多|不能超过|别超过){_N}{_APPROX}(?:以内|之内|以下)?"),
)
TERM_RES = (
    re.compile(rf"(?P<n>\d{{1,3}}|[一二两三四五六七八九十半]{{1,3}})(?:个)?(?P<u>年|月)(?!份|底|初|后|以后|之后|前|以前|号|日)"),
)
TERM_WORDS = {"包年": 12, "年付": 12, "按年": 12, "包月": 1, "月付": 1, "按月": 1, "包季": 3, "季付": 3, "按季": 3}
QUANTITY_UNITS = r"(?:台|套|个账号|个账户|个用户|个人用|个人使用|个坐席|个节点|个实例|个门店|个工厂|个车间|个站点|个设备|个license|个授权|个服务器|个子账号|个工位|个终端|个客户端|个分公司|个销售|个业务员|个老师|个学生|个学员|个司机|个店|家店|间会议室|个会议室|台电脑|个考生|个员工|条产线|条生产线|账号|账户|用户|坐席|节点|实例|门店|工厂|车间|站点|终端|license|授权|路摄像头|路视频|人用|人使用|个员工|员工|名员工|号人|人的团队|人团队|人的公司|人公司|个人)"
CPU_RE = re.compile(r"(?:\d{1,3}|[一二两四六八十]{1,2})核(?:心)?(?!酸|心价值)")
# 十六g after a core count (4核8G) or before 内存 is the memory size
MEMORY_RE = re.compile(r"(?<=核)(?:的)?(?:\d{1,3}|[一二两四六八十]{1,3})(?:个)?(?:g|gb|g内存)(?![a-z])|(?:\d{1,3}|[一二两四六八十]{1,3})(?:个)?(?:g|gb)(?:的)?(?=内存)")
QUANTITY_RE = re.compile(rf"{_N}{_APPROX}\s*{QUANTITY_UNITS}(?!同时|并发|在线)")

PHONE_RUN = re.compile(r"(?<![\d.])\d[\d -]{9,16}\d(?![\d.])")
PHONE_RE = re.compile(r"(?<!\d)(1[3-9]\d{9}|0\d{2,3}-?\d{7,8})(?!\d)")
CN_DIGIT = {"零": "0", "〇": "0", "幺": "1", "一": "1", "二": "2", "两": "2", "三": "3", "四": "4", "五": "5",
            "六": "6", "七": "7", "八": "8", "九": "9"}
CN_PHONE_RE = re.compile(r"[零〇幺一二两三四五六七八九0-9]{11,12}")

DAY_WORDS = {"今天": "today", "今晚": "today", "明天": "tomorrow", "明早": "tomorrow", "明晚": "tomorrow",
             "后天": "day_after_tomorrow", "大后天": "in_3_days", "下周": "next_week", "下礼拜": "next_week",
             "下星期": "next_week", "周末": "this_weekend", "下个月": "next_month", "月底": "end_of_month",
             "月初": "next_month", "这周": "this_week", "本周": "this_week"}
WEEKDAYS = {"一": "monday", "二": "tuesday", "三": "wednesday", "四": "thursday", "五": "friday",
            "六": "saturday", "日": "sunday", "天": "sunday", "末": "weekend"}
PARTS = {"早上": "morning", "上午": "morning", "早晨": "morning", "明早": "morning", "中午": "noon",
         "下午": "afternoon", "傍晚": "evening", "晚上": "evening", "今晚": "evening", "明晚": "evening", "晚点": None}
DAY_RE = re.compile(r"大后天|今天|今晚|明天|明早|明晚|后天|(?:下个?|这个?|本)?(?:周|星期|礼拜)[一二三四五六日天末]|下周|下礼拜|下星期|周末|下个月|月底|月初|这周|本周")
PART_RE = re.compile(r"(?:早上|上午|早晨|中午|下午|傍晚|晚上)(?!好)")
HOUR_RE = re.compile(r"(?P<h>[0-9]{1,2}|[一二两三四五六七八九十]{1,3})(?:点|:|：)(?P<m>半|一刻|[0-9]{1,2}|[一二三四五六七八九十]{1,3}(?:分)?)?")
DURATION_RE = re.compile(rf"(?:过)?(?P<n>{NUMBER}|半|一两|两三)(?:个)?(?P<u>分钟|小时|钟头|天)(?:后|以后|之后)?")
LATER_RE = re.compile(r"晚点|晚些|等会|等一会|等下|等一下|待会|迟点|一阵|一会儿|回头|改天|下次|过会|过一会|稍后|有空|有时间|抽空")


@dataclass(frozen=True)
class Found:
    type: str
    value: object
    start: int  # in normalised text
    end: int


def _n(m: re.Match[str]) -> int | None:
    s = m.group("n")
    if s.startswith("上") and len(s) == 2:
        return {"万": 10_000, "千": 1000, "百": 100}[s[1]]
    return parse_number(s)


def _overlaps(spans: list[tuple[int, int]], a: int, b: int) -> bool:
    return any(a < e and s < b for s, e in spans)


def resolve_terms(text: str, hits: list[Hit]) -> list[Found]:
    integration = bool(INTEGRATION_CUE.search(text))
    comparison = bool(COMPARISON_CUE.search(text))
    if integration and comparison and not STRONG_INTEGRATION.search(text):
        integration = False  # 我们现在用的用友 为什么要换: a rival they would leave, not a system to connect
    out: list[Found] = []
    plain_products = [h for h in hits if {t.kind for t in h.terms} == {"product"}]
    for h in hits:
        kinds = {t.kind: t for t in h.terms}
        if "product" in kinds and "feature" in kinds and (
            any(p is not h and not kinds["product"].value.startswith(p.terms[0].value + "_") for p in plain_products)
            or negated(text, Found("feature", "", h.start, h.end))
            or re.search(r"(加|加上|再加|还要|带|配|含|要有|支持)$", text[max(0, h.start - 3) : h.start])
        ):
            # 云服务加上高防 / 企业邮箱的专业版 / 高防不要了: beside another product (not its own
            # version: SaaS专业版 is saas_pro), added to or dropped from the one under way, a word
            # that is both a product and a feature (高防, 专业版) is the feature
            out.append(Found("feature", kinds["feature"].value, h.start, h.end))
            continue
        if "product" in kinds and OURS_BEFORE.search(text[max(0, h.start - 6) : h.start]):
            out.append(Found("product", kinds["product"].value, h.start, h.end))  # 你们那个MES: ours
            continue
        if (
            "competitor" in kinds
            and kinds["competitor"].value in HARDWARE_VENDORS
            and not comparison
            and re.search(r"plc|dcs|设备|控制器|变频器|仪表|硬件|机器", text)
        ):
            continue  # PLC都是西门子的: the brand of their equipment, not a rival being compared
        # 能接CRM吗 / 连我们的OA: a connecting verb right before the name makes it their system
        local = bool(re.search(r"(接|连|对接|接入|打通|同步到|导到)(我们|我们的|我们现有的|现有的|到)?$", text[max(0, h.start - 6) : h.start]))
        if (integration or local) and "system" in kinds and not (comparison and "competitor" in kinds and not integration):
            order = ("system", "product", "competitor", "feature", "region")
        elif ("system" in kinds and "competitor" in kinds and "product" not in kinds and not comparison
              and kinds["system"].value != "CRM"):  # a CRM vendor they use is the rival of ours
            # 金蝶/用友/钉钉/飞书 named with no comparison: the caller's own system (guide, hard
            # cases 1-2); they are a rival only when compared
            order = ("system", "competitor", "feature", "region")
        else:
            order = ("product", "competitor", "feature", "region", "system")
        for k in order:
            if k in kinds:
                out.append(Found(k, kinds[k].value, h.start, h.end))
                break
    return out


def _callback_time(text: str, want_later: bool) -> Found | None:
    day = part = hm = None
    span: list[int] = []
    m = DAY_RE.search(text)
    if m:
        s = m.group(0)
        if s in DAY_WORDS:
            day = DAY_WORDS[s]
        else:
            wd = WEEKDAYS[s[-1]]
            day = ("next_" + wd) if s.startswith("下") else wd
        if s in ("今晚", "明晚", "明早"):
            part = PARTS[s]
        span += [m.start(), m.end()]
    p = PART_RE.search(text)
    if p:
        part = PARTS[p.group(0)]
        span += [p.start(), p.end()]
    h = HOUR_RE.search(text)
    if h and not re.match(r"[一]点$", h.group(0)):  # 一点 is usually "a little"
        hour = parse_number(h.group("h"))
        minute = 0
        mm = h.group("m")
        if mm:
            minute = 30 if mm == "半" else 15 if mm == "一刻" else (parse_number(mm.rstrip("分")) or 0)
        if hour is not None and 0 <= hour <= 24 and 0 <= minute < 60:
            if part in ("afternoon", "evening") and hour < 12:
                hour += 12
            elif part is None and 1 <= hour <= 7:
                hour += 12  # 三点 in a sales call is the afternoon
            hm = f"{hour:02d}:{minute:02d}"
            span += [h.start(), h.end()]
    if day or hm or part:
        value = " ".join(x for x in (day or ("today" if (hm or part) else None), hm or part) if x)
        return Found("callback_time", value, min(span), max(span))
    d = DURATION_RE.search(text)
    if d and re.search(r"后|以后|之后|过", d.group(0)):
        n = 0.5 if d.group("n") == "半" else 1 if d.group("n") == "一两" else 2 if d.group("n") == "两三" else parse_number(d.group("n"))
        if n:
            u = d.group("u")
            if u == "天":
                value = f"P{int(n)}D"
            elif u == "分钟":
                value = f"PT{int(n)}M"
            else:
                value = f"PT{int(n * 60)}M" if n < 1 else f"PT{int(n)}H"
            return Found("callback_time", value, d.start(), d.end())
    if want_later:
        lm = LATER_RE.search(text)
        if lm:
            return Found("callback_time", "later", lm.start(), lm.end())
    return None


def extract(norm: Normalized, lexicon: Lexicon, want_later: bool = False, want_time: bool = True) -> list[Found]:
    text = norm.text
    found: list[Found] = []
    taken: list[tuple[int, int]] = []

    def add(f: Found) -> None:
        found.append(f)
        taken.append((f.start, f.end))

    # phone first: its digits must not become quantities
    for m in PHONE_RUN.finditer(text):  # 138 0013 8000 / 021-1234 5678
        digits = re.sub(r"[ -]", "", m.group(0))
        if PHONE_RE.fullmatch(digits):
            add(Found("phone", digits.replace("-", ""), m.start(), m.end()))
    for m in CN_PHONE_RE.finditer(text):
        if not _overlaps(taken, m.start(), m.end()):
            digits = "".join(CN_DIGIT.get(c, c) for c in m.group(0))
            if re.fullmatch(r"1[3-9]\d{9}|0\d{10,11}", digits):
                add(Found("phone", digits, m.start(), m.end()))
    for rx in CONCURRENCY_RES:
        for m in rx.finditer(text):
            v = _n(m)
            if v and not _overlaps(taken, m.start("n"), m.end("n")):
                add(Found("concurrency", v, m.start(), m.end()))
    for word, months in TERM_WORDS.items():
        for m in re.finditer(word, text):
            if not _overlaps(taken, m.start(), m.end()):
                add(Found("term", months, m.start(), m.end()))
    for m in TERM_RES[0].finditer(text):
        if _overlaps(taken, m.start("n"), m.end()):
            continue
        raw = m.group("n")
        if len(raw) > 1 and all(c in "一二两三四五六七八九" for c in raw):
            raw = raw[-1]  # 三千五一个月: the term is 一个月, not 五一个月
        n = 0.5 if raw == "半" else parse_number(raw)
        if n is None or n <= 0 or n >= 100:
            continue  # 2024年 is a date, not a term
        months = int(round(n * 12)) if m.group("u") == "年" else int(n)
        if m.group("u") == "月" and not re.search(r"个月$", m.group(0)) and m.group("n") != "半":
            continue  # 三月 is March
        add(Found("term", months, m.start(), m.end()))
    for m in CPU_RE.finditer(text):
        if not _overlaps(taken, m.start(), m.end()):
            add(Found("feature", "cpu", m.start(), m.end()))
    for m in MEMORY_RE.finditer(text):
        if not _overlaps(taken, m.start(), m.end()):
            add(Found("feature", "memory", m.start(), m.end()))
    for m in QUANTITY_RE.finditer(text):
        v = _n(m)
        if m.group("n") == "一" and v == 1:
            continue  # 搞一套MES / 来一台: an article, not a count the caller is giving
        if v and not _overlaps(taken, m.start(), m.end()):
            add(Found("quantity", v, m.start(), m.end()))
    for rx in BUDGET_RES:
        for m in rx.finditer(text):
            v = _n(m)
            if v and v >= 10 and not _overlaps(taken, m.start("n"), m.end("n")):
                add(Found("budget", v, m.start(), m.end()))
    cb = _callback_time(text, want_later) if want_time else None
    if cb and not _overlaps(taken, cb.start, cb.end):
        add(cb)
    hits = lexicon.find(text)
    for f in resolve_terms(text, hits):
        if not _overlaps(taken, f.start, f.end):
            add(f)
    # what the lexicon does not know, where the phrasing marks a name (想上个X系统, 跟X比); a
    # known word (西门子 as the brand of their PLC, left out above) is never an unknown name
    for kind, value, a, b in find_open(text, taken + [(h.start, h.end) for h in hits]):
        found.append(Found(kind, value, a, b))
    return sorted(found, key=lambda f: (f.start, f.end))


def negated(text: str, f: Found) -> bool:
    """Is this entity asked away (不要异地备份了 / 异地备份就不需要了)?"""
    return bool(NEGATION_BEFORE.search(text[max(0, f.start - 8) : f.start]) or NEGATION_AFTER.search(text[f.end : f.end + 8]))
