"""Domain packs (agent/data/packs/*.yaml) and open-vocabulary entities, told as callers' stories:
the real rule NLU, the tracker and the policy, one caller turn after another."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.dialogue.playbook import load_playbook
from agent.dialogue.state import DialogueState
from agent.dialogue.turn import step
from agent.events import NluResult
from agent.nlu.lexicon import load_lexicon
from agent.nlu.rules import RuleUnderstander
from agent.packs import load_packs

DOMAINS = {"cloud", "saas", "crm", "email", "video", "education", "desktop", "oa", "industrial", "security"}


class Call:
    """A caller talking to the bot through the rule NLU and the dialogue core."""

    def __init__(self, understander: RuleUnderstander, playbook) -> None:
        self.nlu, self.pb = understander, playbook
        self.state, self.said, self.replies, self.outputs = DialogueState(), [], [], []

    def say(self, text: str) -> str:
        out = self.nlu.understand(text, tuple(self.said[-2:]))
        self.said.append(text)
        self.outputs.append(out)
        result = NluResult(call_id="c", turn=self.state.turn + 1, text=text, intents=out.intents, entities=out.entities)
        self.state, action, reply = step(self.state, result, self.pb)
        self.replies.append((action.name, reply.text))
        return reply.text


@pytest.fixture(scope="module")
def call():
    nlu, pb = RuleUnderstander(), load_playbook()
    return lambda: Call(nlu, pb)


def test_every_domain_of_the_guide_has_a_pack_with_products_plans_and_rivals():
    packs = {p.domain: p for p in load_packs()}
    assert DOMAINS <= set(packs)
    for p in packs.values():
        assert p.products and all(prod.plans and prod.answer for prod in p.products), p.domain
    ids = {prod.id for p in packs.values() for prod in p.products}
    assert {"enterprise_email", "video_conferencing", "live_classroom", "cloud_desktop", "oa_suite",
            "e_signature", "hr_saas", "crm", "call_center", "waf", "bastion_host", "mes", "wms"} <= ids


def test_enterprise_email_for_80_then_not_right_120_then_the_price_is_for_120(call):
    c = call()
    c.say("喂你好，我们想上企业邮箱，大概80个人用")
    assert c.state.value("product") == "enterprise_email" and c.state.value("quantity") == 80
    c.say("不对，120个")
    assert c.state.value("quantity") == 120
    reply = c.say("那一年多少钱")
    assert c.replies[-1][0] == "quote"
    assert "企业邮箱" in reply and "120个" in reply and "14400元" in reply  # 120 accounts x 120 元


def test_switching_product_mid_call_keeps_the_new_product_and_its_size(call):
    c = call()
    c.say("我们想了解下云桌面，大概五十台")
    c.say("算了，还是先看看企业邮箱吧，八十个人用")
    assert c.state.value("product") == "enterprise_email" and c.state.value("quantity") == 80
    assert c.replies[-1][0] != "exit_polite"  # a switch is not a goodbye


def test_dropping_a_feature_takes_it_out_of_the_quote(call):
    c = call()
    c.say("云服务器要两千并发，还要异地备份")
    assert "offsite_backup" in c.state.value("features")
    c.say("异地备份就算了")
    assert "features" not in c.state.slots and "offsite_backup" in c.state.rejected["features"]
    assert c.outputs[-1].entities[0].negated and "feature_inquiry" in {i.name for i in c.outputs[-1].intents}
    reply = c.say("多少钱")
    assert "异地备份" not in reply and "9800元" in reply


def test_their_erp_is_a_system_and_the_crm_they_want_is_the_product(call):
    c = call()
    c.say("我们用的金蝶，想上个CRM，三十个销售用")
    assert c.state.value("product") == "crm" and c.state.value("systems") == ["ERP"]
    assert c.state.value("competitor") is None and c.state.value("quantity") == 30


def test_people_using_it_is_quantity_and_people_online_at_once_is_concurrency(call):
    c = call()
    c.say("视频会议两百人用")
    assert c.state.value("quantity") == 200 and c.state.value("concurrency") is None
    c.say("同时在线最多一百个")
    assert c.state.value("concurrency") == 100 and c.state.value("quantity") == 200


def test_a_product_we_do_not_sell_is_said_so_with_the_nearest_one_and_a_human(call):
    c = call()
    reply = c.say("想上个冷库管理系统")
    assert c.outputs[-1].entities[0].type == "product" and c.state.value("product") == "冷库管理系统"
    assert "冷库管理系统我们暂时不做" in reply and "WMS" in reply and "人工" in reply
    c.say("好的")
    assert c.replies[-1][0] == "handoff_human"


def test_an_unknown_rival_is_extracted_and_compared(call):
    c = call()
    c.say("我们之前用的是小满，你们的CRM跟它比怎么样")
    assert c.state.value("competitor") == "小满" and c.state.value("product") == "crm"
    assert c.replies[-1][0] == "compare"


@pytest.mark.parametrize("text, kind, value", [
    ("你们做不做渗透测试", "product", "渗透测试"),
    ("有没有那种排课的系统", "product", "排课系统"),
    ("你们跟那个乐学宝比有什么区别", "competitor", "乐学宝"),
    ("能不能对接我们的TMS系统", "system", "OTHER"),
    ("能跟我们的报销系统打通吗", "system", "FINANCE"),
])
def test_open_vocabulary_spans_where_the_phrasing_marks_a_name(text, kind, value):
    out = RuleUnderstander().understand(text)
    assert (kind, value) in {(e.type, e.value) for e in out.entities}


@pytest.mark.parametrize("text", ["有没有优惠", "你们有没有案例", "这个系统多少钱", "跟你们比怎么样"])
def test_function_words_are_not_open_vocabulary_names(text):
    out = RuleUnderstander().understand(text)
    assert not [e for e in out.entities if e.type in ("product", "competitor") and not e.value.isascii()]


PACK = """
domain: pets
name: 宠物门店
products:
  - id: pet_clinic_saas
    name: 宠物医院管家
    names: [宠物医院管家, 宠物医院系统, 宠物店系统]
    answer: 宠物医院管家管挂号、病历和会员，按门店收费。
    sizing_slot: quantity
    required_slots: [quantity]
    questions: {quantity: 您有几家门店？}
    default_plan: pet_basic
    plans:
      - {id: pet_basic, name: 单店版, price: 1000, per: seat_year, capacity: 100}
features:
  vaccine_reminder: {names: [疫苗提醒], answer: 到期自动短信提醒主人打疫苗}
competitors:
  petsoft: {name: 宠物通, names: [宠物通], comparison: 我们病历和会员是一体的}
"""


def test_a_new_domain_is_a_new_pack_file_and_no_code(tmp_path: Path):
    (tmp_path / "pets.yaml").write_text(PACK, encoding="utf-8")
    nlu = RuleUnderstander(lexicon=load_lexicon(packs_dir=tmp_path))
    c = Call(nlu, load_playbook("cloud_saas", packs_dir=tmp_path))
    reply = c.say("我想了解下宠物医院管家")
    assert c.state.value("product") == "pet_clinic_saas"
    assert "挂号" in reply and "几家门店" in reply  # answered from the pack
    reply = c.say("三家店，多少钱")
    assert c.state.value("quantity") == 3 and "3000元" in reply
    c.say("疫苗提醒有吗")
    assert "vaccine_reminder" in c.state.value("features")
    c.say("你们跟宠物通比呢")
    assert c.state.value("competitor") == "petsoft" and "病历和会员是一体的" in c.replies[-1][1]
