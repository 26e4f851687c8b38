"""Keyword rules for sales intents (placeholder; the NLU issue replaces this)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from agent.events import Entity, Intent
from agent.nlu import NluOutput

_RULES = {
    "greeting": ["你好", "喂", "您好"],
    "price_inquiry": ["多少钱", "价格", "年费", "报价", "费用"],
    "product_inquiry": ["云服务器", "SaaS", "saas", "产品"],
    "feature_inquiry": ["并发", "备份"],
    "purchase_intent": ["买", "下单", "签"],
    "do_not_call": ["别再打", "不要再打"],
}
_NUM = {"一": 1, "两": 2, "二": 2, "三": 3, "五": 5, "十": 10}


def _concurrency(text: str) -> int | None:
    m = re.search(r"(\d+)\s*并发", text)
    if m:
        return int(m.group(1))
    m = re.search(r"([一两二三五])千", text)
    if m and "并发" in text:
        return _NUM[m.group(1)] * 1000
    return None


class RuleUnderstander:
    version = "rules-0"

    def understand(self, text: str, context: Sequence[str] = ()) -> NluOutput:
        intents = [Intent(name=n) for n, kws in _RULES.items() if any(k in text for k in kws)]
        entities: list[Entity] = []
        if "云服务器" in text:
            entities.append(Entity(type="product", value="cloud_server"))
        if (c := _concurrency(text)) is not None:
            entities.append(Entity(type="concurrency", value=c))
        return NluOutput(intents=intents or [Intent(name="other")], entities=entities, version=self.version)
