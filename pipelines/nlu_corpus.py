"""Generate the labelled NLU corpus (agent/data/nlu/{train,dev,test}.jsonl).

Each utterance is built from one to three *clauses* (a need with its intent labels and entity
slots), joined like a caller would, then optionally turned into dialect words, colloquial fillers
and simulated ASR noise (homophones, lost punctuation).  Two template banks: bank A writes train
and dev, bank B — different templates, phrasings and number styles — writes test, so the test F1
is not a memory of the training templates.  Two domain packs: cloud (cloud/SaaS) and industrial.

    python -m pipelines.nlu_corpus            # rewrites agent/data/nlu/*.jsonl (seeded, reproducible)
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from agent.resources import DATA_DIR

OUT = DATA_DIR / "nlu"

PRODUCTS = {
    "cloud": {"cloud_server": ["云服务器", "云主机", "ECS"], "cloud_database": ["云数据库", "RDS"],
              "object_storage": ["对象存储", "云存储"], "saas": ["SaaS", "SaaS系统", "saas软件"],
              "saas_standard": ["标准版"], "saas_pro": ["专业版", "高级版"], "saas_enterprise": ["企业版", "旗舰版"],
              "gpu_server": ["GPU服务器"], "cdn": ["CDN"]},
    "industrial": {"mes": ["MES系统", "制造执行系统"], "scada": ["SCADA", "组态软件"],
                   "iot_platform": ["工业物联网平台", "物联网平台"], "plm": ["PLM"], "wms": ["仓储管理系统"],
                   "predictive_maintenance": ["预测性维护"]},
}
FEATURES = {"cloud": {"offsite_backup": ["异地备份", "异地容灾"], "data_backup": ["自动备份", "数据备份"],
                      "high_availability": ["高可用", "双机热备"], "security": ["安全防护", "防火墙"],
                      "ddos_protection": ["防DDoS", "高防"], "elastic_scaling": ["弹性扩容", "自动伸缩"],
                      "load_balancing": ["负载均衡"], "private_deployment": ["私有化部署", "本地部署"],
                      "compliance": ["等保"], "encryption": ["数据加密"], "sso": ["单点登录"],
                      "mobile_app": ["手机端", "小程序"], "data_migration": ["数据迁移"]},
            "industrial": {"device_access": ["设备接入", "PLC数据采集"], "monitoring": ["实时监控", "告警"],
                           "reporting": ["报表", "数据大屏"], "edge_computing": ["边缘计算"],
                           "private_deployment": ["本地部署", "私有化部署"], "permissions": ["权限管理"],
                           "customization": ["二次开发", "定制开发"]}}
SYSTEMS = {"ERP": ["ERP", "ERP系统", "金蝶", "用友", "SAP"], "CRM": ["CRM", "客户管理系统"],
           "OA": ["OA", "钉钉", "企业微信", "飞书"], "API": ["API", "接口"], "HR": ["HR系统", "考勤系统"]}
COMPETITORS = {"aliyun": ["阿里云"], "tencent_cloud": ["腾讯云"], "huawei_cloud": ["华为云"], "aws": ["AWS", "亚马逊"],
               "siemens": ["西门子"], "baidu_cloud": ["百度云"], "jd_cloud": ["京东云"]}
REGIONS = {"北京": ["北京"], "上海": ["上海"], "广州": ["广州"], "深圳": ["深圳"], "杭州": ["杭州"],
           "成都": ["成都"], "华东": ["华东"], "香港": ["香港"]}

CN_DIGIT = "零一二三四五六七八九"


def cn_number(n: int, rng: random.Random, colloquial: bool = True) -> str:
    """Spoken form of n: 1000 -> 一千, 3500 -> 三千五, 20000 -> 两万, 15000 -> 一万五."""
    if n >= 10000 and n % 10000 == 0:
        w = n // 10000
        return (cn_number(w, rng, colloquial) if w > 10 else ("两" if w == 2 else CN_DIGIT[w] if w < 10 else "十")) + "万"
    if n >= 10000 and n % 1000 == 0 and n < 100000 and colloquial:
        return ("两" if n // 10000 == 2 else CN_DIGIT[n // 10000]) + "万" + CN_DIGIT[(n % 10000) // 1000]
    if n >= 1000 and n < 10000:
        q, r = divmod(n, 1000)
        head = ("两" if q == 2 else CN_DIGIT[q]) + "千"
        if r == 0:
            return head
        if r % 100 == 0 and colloquial:
            return head + CN_DIGIT[r // 100]
        return head + (CN_DIGIT[r // 100] + "百" if r >= 100 else "零" + cn_number(r, rng))
    if n >= 100 and n < 1000:
        q, r = divmod(n, 100)
        return ("两" if q == 2 else CN_DIGIT[q]) + "百" + (CN_DIGIT[r // 10] + "十" if r else "")
    if n >= 10 and n < 100:
        q, r = divmod(n, 10)
        return ("" if q == 1 else CN_DIGIT[q]) + "十" + (CN_DIGIT[r] if r else "")
    if n < 10:
        return CN_DIGIT[n] if n != 2 else rng.choice(["两", "二"])
    return str(n)


def render_number(n: int, rng: random.Random, style: str) -> str:
    if style == "digits":
        return str(n)
    if style == "wan" and n >= 10000:
        return (f"{n / 10000:g}") + rng.choice(["万", "w"])
    if style == "k" and n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return cn_number(n, rng)


@dataclass
class Clause:
    text: str
    intents: set[str]
    entities: list[dict] = field(default_factory=list)


class Slots:
    def __init__(self, rng: random.Random, pack: str, bank: str) -> None:
        self.rng, self.pack, self.bank = rng, pack, bank
        self.num_styles = ["cn", "digits"] if bank == "A" else ["cn", "digits", "wan", "k"]

    def pick(self, table: dict[str, list[str]]) -> tuple[str, str]:
        value = self.rng.choice(sorted(table))
        forms = table[value]
        # bank B prefers the alternative surface forms (first form in A, any in B)
        surface = forms[0] if (self.bank == "A" and self.rng.random() < 0.6) else self.rng.choice(forms)
        return value, surface

    def product(self):
        v, s = self.pick(PRODUCTS[self.pack])
        return s, {"type": "product", "value": v}

    def feature(self):
        v, s = self.pick(FEATURES[self.pack])
        return s, {"type": "feature", "value": v}

    def system(self):
        v, s = self.pick(SYSTEMS)
        return s, {"type": "system", "value": v}

    def competitor(self):
        v, s = self.pick(COMPETITORS)
        return s, {"type": "competitor", "value": v}

    def region(self):
        v, s = self.pick(REGIONS)
        return s, {"type": "region", "value": v}

    def number(self, kind: str):
        r = self.rng
        if kind == "concurrency":
            n = r.choice([100, 200, 500, 1000, 2000, 3000, 5000, 10000, 20000, 800, 1500])
        elif kind == "budget":
            n = r.choice([3000, 3500, 5000, 8000, 10000, 15000, 20000, 30000, 50000, 100000, 200000])
        elif kind == "quantity":
            n = r.choice([2, 3, 5, 8, 10, 20, 30, 50, 100, 200])
        else:
            n = r.choice([1, 2, 3])
        style = r.choice(self.num_styles)
        if kind == "budget" and style == "k":
            style = "digits"
        return n, render_number(n, r, style)


def _c(text: str, intents: set[str], *ents: dict) -> Clause:
    return Clause(text, set(intents), list(ents))


# --- clause templates.  Each returns a Clause; bank A and bank B use different wordings. ---

def product_clause(s: Slots, bank: str) -> Clause:
    p, e = s.product()
    A = ["我想了解一下你们的{p}", "你们{p}有哪些版本", "给我介绍一下{p}", "我需要一个{p}", "我要{p}", "{p}是什么样的", "有没有适合我们的{p}"]
    B = ["咨询下{p}这块", "想看看{p}", "你们家{p}怎么样", "我们在找{p}，你们有吗", "听说你们有{p}？", "{p}能讲讲吗", "帮我推荐个{p}呗"]
    return _c(s.rng.choice(A if bank == "A" else B).format(p=p), {"product_inquiry"}, e)


def generic_product_clause(s: Slots, bank: str) -> Clause:
    A = ["你们是做什么的", "你们有什么产品", "有哪些套餐", "哪个版本适合我们"]
    B = ["你们公司卖啥的", "都有些什么方案啊", "几个版本有什么区别", "我们这种情况选哪个套餐合适"]
    return _c(s.rng.choice(A if bank == "A" else B), {"product_inquiry"})


def price_clause(s: Slots, bank: str, with_product: bool) -> Clause:
    A = ["{p}多少钱", "{p}价格是多少", "{p}怎么收费", "报个价吧", "一年多少钱", "费用大概多少"]
    B = ["{p}啥价位", "{p}贵不贵", "{p}一个月要多少", "给我个报价单", "年费怎么算", "大概得花多少"]
    t = s.rng.choice(A if bank == "A" else B)
    ents = []
    if "{p}" in t:
        if with_product:
            p, e = s.product()
            t = t.format(p=p)
            ents.append(e)
        else:
            t = t.replace("{p}", s.rng.choice(["这个", "你们这个", ""]))
    if "一年" in t:
        ents.append({"type": "term", "value": 12})
    if "一个月" in t:
        ents.append({"type": "term", "value": 1})
    return Clause(t, {"price_inquiry"}, ents)


def feature_clause(s: Slots, bank: str) -> Clause:
    r = s.rng
    if r.random() < 0.35:
        n, txt = s.number("concurrency")
        A = ["要支持{n}并发", "并发要到{n}", "我们大概{n}并发", "能扛住{n}并发吗"]
        B = ["高峰的时候{n}个人同时在线", "得撑得住{n}的并发量", "并发数{n}左右能行吗", "同时在线{n}个用户没问题吧"]
        return _c(r.choice(A if bank == "A" else B).format(n=txt), {"feature_inquiry"}, {"type": "concurrency", "value": n})
    f, e = s.feature()
    A = ["还要支持{f}", "需要{f}功能", "有{f}吗", "支持{f}吗", "能做{f}吗"]
    B = ["{f}这块你们做得怎么样", "最好带{f}", "我们对{f}要求挺高的", "{f}能不能搞", "得有{f}才行"]
    return _c(r.choice(A if bank == "A" else B).format(f=f), {"feature_inquiry"}, e)


def integration_clause(s: Slots, bank: str) -> Clause:
    sy, e = s.system()
    A = ["能对接我们的{s}吗", "要和现有的{s}打通", "最好能对接我现有的{s}系统", "能不能接入{s}"]
    B = ["跟我们在用的{s}能连起来不", "数据要同步到{s}里", "{s}那边能集成进来吗", "我们有{s}，要打通的"]
    t = s.rng.choice(A if bank == "A" else B).format(s=sy)
    return _c(t.replace("系统系统", "系统"), {"integration_inquiry"}, e)


def purchase_clause(s: Slots, bank: str) -> Clause:
    r = s.rng
    if r.random() < 0.4:
        q, qt = s.number("quantity")
        p, e = s.product()
        A = ["我要买{q}台{p}", "先买{q}套{p}", "下单{q}个账号"]
        B = ["给我开{q}个账号吧", "{p}来{q}台", "{q}套{p}怎么下单"]
        t = r.choice(A if bank == "A" else B)
        ents = [{"type": "quantity", "value": q}]
        if "{p}" in t:
            ents.append(e)
        return Clause(t.format(q=qt, p=p), {"purchase_intent"}, ents)
    A = ["那就买这个吧", "我们想签合同", "怎么付款", "可以下单了", "就要这个了"]
    B = ["定了就它了", "合同发过来吧", "走流程吧我们签", "怎么买啊", "行那给我开通吧"]
    t = r.choice(A if bank == "A" else B)
    return _c(t, {"purchase_intent", "affirm"} if t.startswith("行") else {"purchase_intent"})


def budget_clause(s: Slots, bank: str) -> Clause:
    n, txt = s.number("budget")
    A = ["预算{n}", "我们预算大概{n}块", "预算就{n}元", "控制在{n}块以内"]
    B = ["手上就{n}块钱", "最多能出{n}块", "{n}块钱能搞定不", "预算差不多{n}"]
    t = s.rng.choice(A if bank == "A" else B)
    txt2 = txt
    return _c(t.format(n=txt2), set(), {"type": "budget", "value": n})


def term_clause(s: Slots, bank: str) -> Clause:
    k = s.rng.choice([(12, ["一年", "包年"]), (24, ["两年"]), (36, ["三年"]), (6, ["半年"]), (3, ["三个月"])])
    A = ["打算用{t}", "用{t}", "周期是{t}"]
    B = ["我们打算{t}起步", "时间上{t}吧", "先用{t}看看"]
    return _c(s.rng.choice(A if bank == "A" else B).format(t=s.rng.choice(k[1])), set(), {"type": "term", "value": k[0]})


def objection_clause(s: Slots, bank: str) -> Clause:
    A = ["太贵了", "能便宜点吗", "有没有折扣", "价格有点高", "再优惠一点吧"]
    B = ["这价格吃不消啊，超预算了", "打个折呗", "贵了点能让点不", "有啥优惠活动没", "能不能再降降"]
    return _c(s.rng.choice(A if bank == "A" else B), {"price_objection"})


def competitor_clause(s: Slots, bank: str) -> Clause:
    c, e = s.competitor()
    A = ["{c}比你们便宜", "你们跟{c}比有什么优势", "我们现在用的是{c}", "{c}报价更低"]
    B = ["{c}那边给的价比你们低", "凭啥不选{c}", "和{c}相比你们强在哪", "之前一直用{c}的"]
    t = s.rng.choice(A if bank == "A" else B).format(c=c)
    intents = {"competitor_comparison"}
    if "便宜" in t or "价" in t:
        intents.add("price_objection")
    return Clause(t, intents, [e])


def demo_clause(s: Slots, bank: str) -> Clause:
    A = ["能不能先试用一下", "有演示吗", "给我开个测试账号", "我想先试试"]
    B = ["可以免费体验几天不", "能来给我们演示下吗", "先弄个demo看看效果", "有没有试用版"]
    return _c(s.rng.choice(A if bank == "A" else B), {"demo_request"})


def callback_clause(s: Slots, bank: str) -> Clause:
    r = s.rng
    opts_A = [("我现在在开会，晚点再打吧", "later"), ("明天下午再联系我", "tomorrow afternoon"),
              ("现在不方便，改天聊", "later"), ("下周一打给我", "next_monday"), ("明天上午十点打给我", "tomorrow 10:00")]
    opts_B = [("正开车呢回头再说", "later"), ("后天下午三点给我回个电话", "day_after_tomorrow 15:00"),
              ("你过半小时再打过来", "PT30M"), ("这会儿忙，周五再约个时间", "friday"), ("今晚八点打来吧", "today 20:00")]
    t, v = r.choice(opts_A if bank == "A" else opts_B)
    return _c(t, {"callback_request"}, {"type": "callback_time", "value": v})


def simple_clause(intent: str, s: Slots, bank: str) -> Clause:
    bank_a = {
        "greeting": ["你好", "喂，你好", "您好", "喂"],
        "not_interested": ["不需要，谢谢", "我们没兴趣", "不考虑了", "用不上"],
        "do_not_call": ["别再给我打电话了", "把我号码删了", "不要再打了", "再打我就投诉了"],
        "request_human": ["转人工", "我要找人工客服", "让你们经理跟我说", "给我转个真人"],
        "ask_if_robot": ["你是机器人吗", "你是真人吗", "这是录音吧", "是不是机器人在说话"],
        "affirm": ["好的", "对", "可以", "没问题", "是的"],
        "deny": ["不是", "不对", "没有", "不是的"],
        "other": ["今天天气不错", "我在吃饭", "你说什么", "嗯那个", "我想想"],
    }
    bank_b = {
        "greeting": ["哈喽", "喂喂，在吗", "诶你好啊", "下午好"],
        "not_interested": ["不用了不用了", "暂时不考虑这个", "我们已经有了", "没需求啊"],
        "do_not_call": ["以后别打了行不行", "你们天天打烦不烦", "把我的手机号移除", "拉黑了啊别打了"],
        "request_human": ["能不能换个人工来", "叫你们负责人来", "找个真人跟我聊", "人工客服在哪"],
        "ask_if_robot": ["你到底是人还是机器", "是AI吧你", "是不是人工智能啊", "你是真人吗还是录音"],
        "affirm": ["嗯嗯行", "可以的", "对对对", "好嘞", "没毛病"],
        "deny": ["不对不对", "错了", "不是这个", "没有没有"],
        "other": ["等一下我这边有人", "听不太清", "哦这样啊", "你刚说的啥没听清", "那个什么来着"],
    }
    return _c(s.rng.choice((bank_a if bank == "A" else bank_b)[intent]), {intent} - {"other"})


def supplement_clause(s: Slots, bank: str) -> Clause:
    base = s.rng.choice([feature_clause, integration_clause])(s, bank)
    A = ["还有，", "另外", "再加上"]
    B = ["对了还得", "然后还有个", "除此之外"]
    lead = s.rng.choice(A if bank == "A" else B)
    text = lead + base.text.removeprefix("还要")
    return Clause(text, base.intents | {"supplement_demand"}, base.entities)


CONTENT = [product_clause, feature_clause, integration_clause]

DIALECT_A = {"多少钱": ["几多钱"], "看看": ["睇睇"], "我们": ["阿拉"], "没有": ["冇"], "什么": ["啥"], "不要": ["覅"]}
DIALECT_B = {"多少钱": ["多少钞票", "几钿"], "看": ["睇"], "谢谢": ["唔该"], "不是": ["唔系"], "怎么": ["咋"], "没有": ["莫得"],
             "我们": ["俺们"], "不用": ["唔使"], "你": ["侬"]}
ASR_A = {"并发": ["病发"], "报价": ["包价"], "备份": ["被份"], "云服务器": ["运服务器"], "演示": ["眼示"]}
ASR_B = {"并发": ["并法", "冰发"], "异地备份": ["一地备份", "意地备份"], "对接": ["队接"], "转人工": ["赚人工"],
         "机器人": ["机器任"], "多少钱": ["多少前"], "优惠": ["优会"], "SaaS": ["萨斯"], "ERP": ["一RP"], "云服务器": ["员服务器"]}
FILLERS_A = ["嗯，", "那个，", "就是"]
FILLERS_B = ["呃", "这个这个", "我跟你说啊", "唉"]


def noisy(text: str, rng: random.Random, bank: str) -> str:
    dialect = DIALECT_A if bank == "A" else DIALECT_B
    asr = ASR_A if bank == "A" else ASR_B
    r = rng.random()
    if r < 0.15:
        for k, v in dialect.items():
            if k in text and rng.random() < 0.7:
                text = text.replace(k, rng.choice(v), 1)
    elif r < 0.3:
        for k, v in asr.items():
            if k in text and rng.random() < 0.7:
                text = text.replace(k, rng.choice(v), 1)
    if rng.random() < 0.3:  # ASR output: no punctuation
        text = "".join(ch for ch in text if ch not in "，。？！,.?! ")
    if rng.random() < 0.15:
        text = rng.choice(FILLERS_A if bank == "A" else FILLERS_B) + text
    return text


def make_example(rng: random.Random, bank: str) -> dict:
    pack = rng.choice(["cloud", "cloud", "industrial"])
    s = Slots(rng, pack, bank)
    kind = rng.random()
    clauses: list[Clause] = []
    context: list[str] = []
    if kind < 0.3:  # composite request: two or three needs
        k = rng.choice([2, 2, 3])
        picks = rng.sample(CONTENT + [lambda s, b: price_clause(s, b, False), budget_clause, term_clause], k)
        clauses = [p(s, bank) for p in picks]
    elif kind < 0.4:  # supplement with context
        first = rng.choice(CONTENT)(s, bank)
        context = [first.text]
        clauses = [supplement_clause(s, bank)]
    elif kind < 0.55:
        clauses = [rng.choice(CONTENT + [generic_product_clause])(s, bank)]
        if rng.random() < 0.3:
            clauses.append(rng.choice([budget_clause, term_clause, lambda s, b: price_clause(s, b, False)])(s, bank))
    else:
        which = rng.choice(["price", "purchase", "objection", "competitor", "demo", "callback", "greeting",
                            "not_interested", "do_not_call", "request_human", "ask_if_robot", "affirm", "deny", "other",
                            "greet_plus"])
        if which == "price":
            clauses = [price_clause(s, bank, rng.random() < 0.6)]
        elif which == "purchase":
            clauses = [purchase_clause(s, bank)]
        elif which == "objection":
            clauses = [objection_clause(s, bank)]
        elif which == "competitor":
            clauses = [competitor_clause(s, bank)]
        elif which == "demo":
            clauses = [demo_clause(s, bank)]
        elif which == "callback":
            clauses = [callback_clause(s, bank)]
        elif which == "greet_plus":
            clauses = [simple_clause("greeting", s, bank), rng.choice(CONTENT)(s, bank)]
        else:
            clauses = [simple_clause(which, s, bank)]
    sep = rng.choice(["，", "，", "。", " ", ""]) if bank == "A" else rng.choice(["，", "…", "？", " ", ""])
    text = sep.join(c.text for c in clauses)
    if clauses and clauses[-1].text and rng.random() < 0.5 and text[-1] not in "吗吧呢？?":
        text += rng.choice(["", "。", "？"] if bank == "A" else ["啊", "呢", "哈"])
    text = noisy(text, rng, bank)
    intents = set().union(*(c.intents for c in clauses)) or {"other"}
    ents: list[dict] = []
    for c in clauses:
        for e in c.entities:
            if e not in ents:
                ents.append(e)
    return {"text": text, "intents": sorted(intents), "entities": ents, "context": context, "pack": pack}


def generate(n_train: int = 3000, n_dev: int = 400, n_test: int = 600, seed: int = 7) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    out: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
    seen: set[str] = set()
    for split, n, bank in (("train", n_train, "A"), ("dev", n_dev, "A"), ("test", n_test, "B")):
        tries = 0
        while len(out[split]) < n and tries < n * 50:
            tries += 1
            ex = make_example(rng, bank)
            key = ex["text"] + "|" + "|".join(ex["context"])
            if key in seen:
                continue
            seen.add(key)
            out[split].append(ex)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--train", type=int, default=3000)
    ap.add_argument("--dev", type=int, default=400)
    ap.add_argument("--test", type=int, default=600)
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    for split, rows in generate(a.train, a.dev, a.test, a.seed).items():
        with (a.out / f"{split}.jsonl").open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{split}: {len(rows)} -> {a.out / (split + '.jsonl')}")


if __name__ == "__main__":
    main()
