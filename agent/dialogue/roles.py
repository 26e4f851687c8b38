"""The role a named thing plays in a caller turn (pure functions).

The NLU tags the words; whether a product the caller names is the thing to buy, an add-on to
it, or the caller's own system (and whether a vendor is a rival or a system to connect to)
depends on how it is said and on what the call already holds (docs/nlu-labelling.md, hard
cases 1-3 and 15, decided case 27):

* **the caller's own system**: a product word after a possessive (我们的MES, 阿拉人事, 我们厂里有SCADA,
  我们现在用的是自己写的MES) or, in a turn that only asks about connecting, one naming a system
  the caller already said they run ("CRM系纷享销客嘅" after "我们个CRM") is a `system`, not a
  switch of product;
* **their own equipment**: a bare generic word (服务器, 主机, 邮箱, 电脑) while another product is
  held is what that product serves or protects ("二十台服务器" for a 堡垒机), not a switch;
* **an add-on**: a product named with an additive cue (再加个X, X也要, 还有X, 另外X) while another
  is held, or the second of several named in one breath (WAF跟anti-DDoS都要), is wanted too but
  is not the product under discussion; a product that is also a capability of another
  (电子签章 → ``e_signature_feature``, 防DDoS → ``ddos_protection``) is then that feature;
* **a rival or a system**: a vendor named in a turn that asks to connect to it, without
  comparing (设备能跟Zoom一道用伐), is a system; a vendor the model took for a system, compared
  with and not connected to (金蝶也在推他们的CRM 你们比它好在哪), is a rival.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agent.dialogue.values import SAAS_FAMILY, _reading, clause_of, product_ids, system_category
from agent.events import Entity

#: the category a product of ours has when the caller already runs one (hard case 3)
SYSTEM_OF_PRODUCT = {
    "crm": "CRM",
    "oa_suite": "OA",
    "hr_saas": "HR",
    "mes": "MES",
    "wms": "WMS",
    "plm": "PLM",
    "scada": "SCADA",
    "enterprise_email": "EMAIL",
    "cloud_database": "DB",
}
#: products that are also a capability of another product (the guide's feature ids)
FEATURE_OF_PRODUCT = {"e_signature": "e_signature_feature", "anti_ddos": "ddos_protection",
                      "security_compliance": "compliance"}

_OWNER = r"(我们|我哋|阿拉|俺们|俺|咱们|额们|我司|我地)"
# 我们的MES / 阿拉人事 / 我们厂里有SCADA / 我们现在用的是自己写的MES
_OWN_BEFORE = re.compile(
    _OWNER + r"(?:用的是|用紧嘅|用着的|在用的|开发的|用的|用紧|用着|在用|有的|写的|这边|厂里|公司|现在|而家|原来|自己"
    r"|那个|那套|的|嘅|个|有)*$"
)
# SCADA俺们有了 / CRM我们已经有了
_OWN_AFTER = re.compile(r"^" + _OWNER + r"(已经|早就|自己|其实|本来|都|也)*(有了|有嘅|有的|自己有)")
# a bare word for a kind of thing, which names the caller's own equipment when a product is held
# (an operating system before it is no product name: "一百台Linux服务器")
_GENERIC = re.compile(r"^(linux|windows|win|centos|ubuntu)?(服务器|主机|机器|电脑|邮箱|虚拟机|虚机)$", re.IGNORECASE)
# asking whether the product held has a capability that is also sold alone ("专业版阿有电子签")
_HAS = re.compile(r"有|支持|带|能|可以|含")
_ADDITIVE = re.compile(r"再加|加上|加个|加一|再来|再配|再要|也要|也加|还有|还要|还得|另外|再上|顺便|同埋|仲有|仲要|外加")
# the caller moves away from what was held: the newly named product is the one now
_SWITCH = re.compile(r"算了|算啦|算哒|不要了|不弄|不整|先不|换成|换个|改成|改为|就要|只要|净系|淨系|光要|还是|不是|唔系|勿是|说错")
_CLAUSE = re.compile(r"[，,。；;！!？?\s…]+")
# the caller wants to replace what they run ("我们企业邮箱想换一家"): the new one is bought from us
_REPLACE = re.compile(r"想换|要换|换一家|换家|换个|换掉|替换|换成你们|到期")
_INTEGRATION_ONLY_BLOCKERS = {"product_inquiry", "purchase_intent", "price_inquiry", "demo_request"}
# connecting to a vendor's thing vs comparing with it (cue words anywhere in the line)
_CONNECT = re.compile(r"打通|对接|接入|接口|集成|同步|导入|导到|推到|连上|连接|接到|能接|一道用|一起用|兼容|登录|登陆|对得上|对上")
_CONNECT_TO = re.compile(r"[跟和同与].{1,10}连")
_COMPARE = re.compile(r"比|对比|优势|好在|差在|区别|换掉|替换|在看|考虑")


@dataclass
class Roles:
    """The turn's entities after the roles are read, and the products added on the side."""

    entities: list[Entity]
    added: list[str] = field(default_factory=list)  # products wanted too, not under discussion

    @property
    def only_added(self) -> bool:
        """The turn names a product only as an add-on: its sizes are the add-on's."""
        return bool(self.added) and not any(e.type == "product" and not e.negated for e in self.entities)


def _generic(words: str | None) -> bool:
    return bool(_GENERIC.match(re.sub(r"[\s的]+", "", words or "")))


def own_system(e: Entity, text: str) -> bool:
    """Is this product word the caller's own (我们的X, 我们厂里有X, X俺们有了)?"""
    if e.start is None or e.end is None:
        return False
    before = _CLAUSE.split(text[: e.start])[-1]
    after = text[e.end :].lstrip()
    return bool(_OWN_BEFORE.search(before) or _OWN_AFTER.search(after))


# "我们的金蝶是云星空", "俺们的MES，宝信的", "SAP是ECC的版本": the vendor or version of the system
# just named, not a second system
_SAME_SYSTEM = re.compile(r"^\s*(是|系|就是|用的是|嘅系|的是)\s*$")
_SAME_SYSTEM_VENDOR = re.compile(r"^\s*[，,]\s*$")


def _real_systems(entities: list[Entity], text: str, held: str | None) -> list[Entity]:
    """The caller's systems without what the model tagged as one by mistake: a piece of a word
    (金 of 金蝶, the 口 of 接口: one character, unless the line names the category), a piece of a rival's name ("纷享" beside "销客",
    "法" beside "大大": the spans touch), the product held named again (地磅的数据也要进WMS while
    we sell them the WMS; 我们的WMS stays theirs), or the vendor or version of the system named
    just before it (我们的金蝶是云星空, 俺们的MES，宝信的)."""
    out: list[Entity] = []
    connect = bool(_CONNECT.search(text) or _CONNECT_TO.search(text)) and not _COMPARE.search(text)

    def touching(a: Entity, b: Entity) -> bool:
        return None not in (a.start, a.end, b.start, b.end) and (a.start == b.end or a.end == b.start)

    for e in entities:
        if e.type == "competitor" and connect and any(x.type == "system" and touching(e, x) for x in entities):
            continue  # "跟网易|邮箱连": one name cut in two, their system
        if e.type != "system" or e.negated:
            out.append(e)
            continue
        words = re.sub(r"\s+", "", e.text or "")
        value = str(e.value).upper()
        if e.text is not None and len(words) <= 1 and (value == "OTHER" or value.lower() not in text.lower()):
            continue  # a piece of a word; the category stays when the line says it (机器PLC是三菱的)
        if not connect and any(x.type == "competitor" and touching(e, x) for x in entities):
            continue  # "纷享|销客", "法|大大": one rival's name cut in two
        if held is not None and SYSTEM_OF_PRODUCT.get(held) == str(e.value).upper() and _reading(e.text, "product") == held \
                and not own_system(e, text):
            continue
        before = next((x for x in reversed(out) if x.type == "system" and x.end is not None and e.start is not None
                       and x.end <= e.start and str(x.value).upper() != "OTHER"), None)
        if before is not None and str(e.value).upper() == "OTHER":
            between = text[before.end : e.start]
            after = text[e.end :][:2] if e.end is not None else ""
            if _SAME_SYSTEM.match(between) or (_SAME_SYSTEM_VENDOR.match(between) and after[:1] in ("的", "嘅")):
                continue
        out.append(e)
    return out


def read_roles(
    entities: list[Entity], text: str, intents: list[str], held: str | None, systems: list[str]
) -> Roles:
    """The role of every product and rival the turn names (see the module text).  `held` is
    the product the state holds before this turn, `systems` the caller's systems so far."""
    entities = _real_systems(entities, text, held)
    ours = [e for e in entities if e.type == "product" and not e.negated and str(e.value) in product_ids()]
    switching = bool(_SWITCH.search(text))
    integration_only = "integration_inquiry" in intents and not set(intents) & _INTEGRATION_ONLY_BLOCKERS
    out: list[Entity] = []
    added: list[str] = []
    kept_products: list[Entity] = []
    for e in entities:
        if e.type == "competitor" and "integration_inquiry" in intents and _CONNECT.search(text) and not _COMPARE.search(text):
            # "设备能跟Zoom一道用伐": a vendor they want to connect to, not compared with, is their system
            out.append(Entity(type="system", value=system_category(e), text=e.text, start=e.start, end=e.end))
            continue
        if e.type == "system" and _COMPARE.search(text) and not _CONNECT.search(text):
            rival = _reading(e.text, "competitor")
            if rival:
                # "金蝶那边也有推他们的CRM 你们的比较好在哪": the vendor compared with is a rival
                out.append(Entity(type="competitor", value=rival, text=e.text, start=e.start, end=e.end))
                continue
        if e not in ours:
            out.append(e)
            continue
        v = str(e.value)
        category = SYSTEM_OF_PRODUCT.get(v)
        replacing = bool(_REPLACE.search(text[e.start or 0 :]))  # 俺们企业邮箱想换一家: bought anew
        if category and ((own_system(e, text) and not replacing)
                         or (integration_only and category in systems and held and v != held)):
            out.append(Entity(type="system", value=category, text=e.text, start=e.start, end=e.end))
            continue
        held_ours = held is not None and held in product_ids() and held != v
        if held_ours and _generic(e.text):
            continue  # their own servers / mailbox, which the product held is for
        if held_ours and not switching and e.start is not None and e.end is not None:
            clause = clause_of(text, e.start, e.end)
            if _ADDITIVE.search(clause) or (v in FEATURE_OF_PRODUCT and _HAS.search(clause)):
                added.append(v)
                if v in FEATURE_OF_PRODUCT:
                    out.append(Entity(type="feature", value=FEATURE_OF_PRODUCT[v], text=e.text, start=e.start, end=e.end))
                continue
        kept_products.append(e)
        out.append(e)
    named = {str(e.value) for e in kept_products}
    if len(named) > 1 and not switching and not named <= SAAS_FAMILY:
        # "WAF跟anti-DDoS都要": the first named is the product, the others are wanted too; one
        # that is also a capability is that of the other ("等保要求上堡垒机": compliance)
        main = next((e for e in kept_products if str(e.value) not in FEATURE_OF_PRODUCT), kept_products[0])
        for a, b in zip(kept_products, kept_products[1:]):
            if None not in (a.end, b.start) and text[a.end : b.start] in ("的", "嘅"):
                main = b  # "视频会议的终端": what is bought is the thing the words end on
        for e in kept_products:
            v = str(e.value)
            if v == str(main.value):
                continue
            added.append(v)
            i = out.index(e)
            if v in FEATURE_OF_PRODUCT:
                out[i] = Entity(type="feature", value=FEATURE_OF_PRODUCT[v], text=e.text, start=e.start, end=e.end)
            else:
                out.pop(i)
    return Roles(out, list(dict.fromkeys(added)))
