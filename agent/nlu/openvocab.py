"""Open-vocabulary entities: a product, rival or system the lexicon does not know is still a
span when the caller's phrasing marks it (docs/nlu-labelling.md: "otherwise the caller's words,
normalised").

* product: 想买个/想上个/想了解下/搞个 X系统|X平台|X软件…, 有没有(那种)X / X你们做不做;
* competitor: 用的是X, 跟X比, 签了X, X比你们…;
* system: 对接我们的X系统 / 跟我们的X打通 (value: the category the words suggest, else OTHER).

Only spans that no lexicon term, number or time already covers are taken, and a span made of
function words (这个, 什么, 优惠…) is not a name.  Values: lower-case, no spaces, no 的."""

from __future__ import annotations

import re

# the thing-words that end a product or system name
_KIND = r"(?:系统|平台|软件|小程序|商城|app|盒子|看板|大屏|工具)"
_NAME = r"[\u4e00-\u9fffa-z0-9+._-]"
_WANT = r"(?:想买个|想买一套|想上个|想上一套|想了解下|想了解一下|了解一下|了解下|想搞个|想搞一套|想要个|想要一套|想找个|想做个|想弄个|要个|搞个|弄个|整个|整一套|上个|买个|需要个|需要一套|推荐个|有没有|有冇得?|有无)"
# "X有没有" usually asks about a feature of something named before; "X做不做" asks whether we sell X
_ASK_AFTER = r"(?:你们|你哋|侬)?(?:做不做|搞不搞|卖不卖|给做不|做伐|能做吗|能做不|做吗|有得卖吗|有卖吗)"

PRODUCT_RES = (
    # 想上个冷库管理系统 / 有没有排课的系统
    re.compile(rf"{_WANT}(?:那种|那个|一个|一套|个|套|款)?(?P<x>{_NAME}{{1,8}}?{_KIND})"),
    # 渗透测试做不做 / 电子发票系统你们搞不搞
    re.compile(rf"(?:^|[,.!? ]|问下|问一下|问一哈)(?:那个|那种)?(?P<x>{_NAME}{{2,8}}?)[, ]?{_ASK_AFTER}"),
    # 你们做不做电子发票系统 / 有没有那种智能外呼
    re.compile(rf"(?:做不做|搞不搞|卖不卖|有没有那种|有冇那种|有没有那个)(?P<x>{_NAME}{{2,8}})"),
)
COMPETITOR_RES = (
    re.compile(rf"(?:跟|和|同|与)(?:那个)?(?P<x>{_NAME}{{2,6}}?)(?:的)?(?:比|相比|对比|比较|哪个好|有什么(?:区别|不同|差别))"),
    re.compile(rf"(?:(?:之前|以前|现在|一直|目前|还)?(?:用的是|用的|在用|用着)|签了|上了|买了|换了)(?:那个)?(?P<x>(?![的是]){_NAME}{{2,6}}?)(?=的|[,.!? ]|$|了|呢|啊|吧)"),
    re.compile(rf"(?:^|[,.!? ])(?P<x>{_NAME}{{2,6}}?)(?:的)?(?:比你们|比你家|报的|给我报)"),
)
SYSTEM_RES = (
    re.compile(rf"(?:对接|接入|打通|集成|连)(?:我们|我哋|阿拉|俺们)?(?:的|现在的|现有的|自己的)?(?P<x>{_NAME}{{1,8}}?(?:系统|软件|平台))"),
    re.compile(rf"(?:我们|我哋|阿拉|俺们)(?:的|现在的|现有的|自己的)(?P<x>{_NAME}{{1,8}}?(?:系统|软件|平台))(?:能|可以|要|得|需要)?(?:对接|接入|打通|集成|同步|连)"),
)
# words that are not names of things (the caller points, asks, hesitates)
_NOT_A_NAME = re.compile(
    r"^(?:这|那|什么|啥|哪|我|你|他|她|它|咱|人家|别人|别家|大家|优惠|活动|折扣|案例|时间|空|需求|问题|办法|必要|钱|预算|"
    r"便宜|贵|试用|演示|合同|发票|资料|方案|价格|价钱|报价|区别|不同|好|多少|一样|差不多|现在|以前|之前|东西|这种|那种|"
    r"系统|平台|软件|一下|一点|点|下|个|吗|呢|的|了)"
)
_FUNCTION_TAIL = re.compile(r"(?:的|吗|呢|啊|吧|嘛|伐|不|咯|哈|呀|了)+$")
_FUNCTION_HEAD = re.compile(r"^(?:那个|那种|这个|这种|一个|一套|个|套|款|你们|你们的|我们的|我们)+")
# the category a system's words suggest (docs/nlu-labelling.md, system values)
_SYSTEM_CATEGORY = (
    (re.compile(r"财务|账|发票|收银|支付|报销"), "FINANCE"),
    (re.compile(r"人事|工资|薪|考勤|hr"), "HR"),
    (re.compile(r"仓|库存|wms"), "WMS"),
    (re.compile(r"生产|mes|车间"), "MES"),
    (re.compile(r"客户|crm|会员"), "CRM"),
    (re.compile(r"审批|办公|oa"), "OA"),
    (re.compile(r"教务|排课|学籍|学员"), "LMS"),
    (re.compile(r"邮件|邮箱"), "EMAIL"),
    (re.compile(r"进销存|erp"), "ERP"),
)


def normalise(words: str) -> str:
    """The value of an open-vocabulary entity: lower-case, no spaces, no 的 (排课的系统 → 排课系统)."""
    return re.sub(r"\s+|的", "", words.lower())


# the `system` values of the labelling guide: the category of the caller's own system
SYSTEM_CATEGORIES = frozenset(
    {"ERP", "CRM", "OA", "HR", "API", "MES", "WMS", "PLM", "SCADA", "PLC", "DB", "FINANCE", "EMAIL", "IM", "LMS", "OTHER"}
)


def system_category(words: str) -> str:
    return next((cat for rx, cat in _SYSTEM_CATEGORY if rx.search(words.lower())), "OTHER")


def _name(m: re.Match[str]) -> tuple[int, int, str] | None:
    a, b = m.start("x"), m.end("x")
    x = m.group("x")
    head = _FUNCTION_HEAD.match(x)
    if head:
        a, x = a + head.end(), x[head.end():]
    tail = _FUNCTION_TAIL.search(x)
    if tail and tail.start() > 0:
        b, x = b - (len(x) - tail.start()), x[: tail.start()]
    if len(x) < 2 or _NOT_A_NAME.match(x) or re.fullmatch(r"[0-9.]+", x):
        return None
    return a, b, x


def find_open(text: str, taken: list[tuple[int, int]]) -> list[tuple[str, object, int, int]]:
    """(type, value, start, end) of the open-vocabulary entities in normalised `text` that no
    span in `taken` (lexicon terms, numbers, times) overlaps."""
    out: list[tuple[str, object, int, int]] = []
    spans = list(taken)

    def free(a: int, b: int) -> bool:
        return not any(a < e and s < b for s, e in spans)

    for kind, patterns in (("system", SYSTEM_RES), ("product", PRODUCT_RES), ("competitor", COMPETITOR_RES)):
        for rx in patterns:
            for m in rx.finditer(text):
                got = _name(m)
                if got is None or not free(got[0], got[1]):
                    continue
                a, b, x = got
                value: object = system_category(x) if kind == "system" else normalise(x)
                out.append((kind, value, a, b))
                spans.append((a, b))
    return out
