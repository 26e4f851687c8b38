"""How the tracker turns what hand-written callers said into the state the labelling guide
expects (docs/nlu-labelling.md), told as caller stories.  The NLU results are written by hand,
with the spans and values an understander (rules or the joint model) reports, so each story
tests the tracker alone."""

from __future__ import annotations

import pytest

from agent.dialogue.evaluate import slot_matches
from tests.dialogue_helpers import Caller


@pytest.fixture
def caller() -> Caller:
    return Caller()


def test_a_server_spec_is_one_feature_not_cpu_and_memory(caller):
    caller.says("喂 我想要两台云服务器", ["product_inquiry"], ("product", "cloud_server", "云服务器"), ("quantity", 2, "两台"))
    caller.says("四核八G就得", ["feature_inquiry"], ("feature", "cpu", "四核八G"))
    assert caller.state.value("features") == ["4核8g"]
    caller.says("内存要16核32G的", ["feature_inquiry"], ("feature", "cpu", "16核"), ("feature", "memory", "32G"))
    assert caller.state.value("features") == ["4核8g", "16核32g"]


def test_their_systems_are_categories_whatever_the_vendor(caller):
    caller.says("我们有深信服嘅防火墙 想加个堡垒机", ["product_inquiry"], ("product", "bastion_host", "堡垒机"),
                ("system", "深信服", "深信服"))
    caller.says("工资是用金蝶发的", ["integration_inquiry"], ("system", "金蝶", "金蝶"))
    caller.says("收银那套也要打通，我们的收银软件", ["integration_inquiry"], ("system", "收银软件", "收银软件"))
    assert caller.state.value("systems") == ["OTHER", "ERP", "FINANCE"]


def test_a_requirement_dropped_in_dialect_is_gone(caller):
    caller.says("要跟总部视频会议，要能录下来，还要白板", ["product_inquiry", "feature_inquiry"],
                ("product", "video_conferencing", "视频会议"), ("feature", "recording", "录下来"), ("feature", "whiteboard", "白板"))
    caller.says("白板覅了，老师用不惯", ["feature_inquiry"], ("feature", "whiteboard", "白板"))
    assert caller.state.value("features") == ["recording"]
    caller.says("仲要日志审计同埋数据加密", ["feature_inquiry"], ("feature", "audit_log", "日志审计"), ("feature", "encryption", "数据加密"))
    caller.says("加密唔要啦 我们数据库自己有", ["feature_inquiry"], ("feature", "encryption", "加密"))
    assert caller.state.value("features") == ["recording", "audit_log"]


def test_the_nlu_saying_an_entity_is_negated_is_enough(caller):
    caller.says("要手机APP，还要监控报警", ["feature_inquiry"], ("feature", "mobile_app", "手机APP"), ("feature", "monitoring", "监控报警"))
    caller.says("那个APP嘛，企业微信就够", ["feature_inquiry"], ("feature", "mobile_app", "APP", True))
    assert caller.state.value("features") == ["monitoring"]


def test_other_words_tagged_as_a_product_do_not_replace_the_product(caller):
    caller.says("想问下云桌面", ["product_inquiry"], ("product", "cloud_desktop", "云桌面"))
    caller.says("打印机嗰个唔使啦 用网络打印", ["feature_inquiry"], ("product", "网络", "网络"))
    assert caller.state.value("product") == "cloud_desktop"


def test_a_real_switch_of_product_still_switches(caller):
    caller.says("想问下你们OA", ["product_inquiry"], ("product", "oa_suite", "OA"))
    caller.says("那就不要OA了，搞个人事系统嘛", ["product_inquiry"], ("product", "oa_suite", "OA", True),
                ("product", "hr_saas", "人事系统"))
    assert caller.state.value("product") == "hr_saas"


def test_an_edition_beside_another_product_is_a_feature_alone_it_is_the_saas_version(caller):
    caller.says("CRM专业版", ["product_inquiry"], ("product", "crm", "CRM"))
    assert (caller.state.value("product"), caller.state.value("features")) == ("crm", ["pro_edition"])
    other = Caller()
    other.says("OK，决定了，Pro版", ["purchase_intent"], ("feature", "pro_edition", "Pro版"))
    assert other.state.value("product") == "saas_pro" and other.state.value("features") is None


def test_a_count_at_the_same_time_is_concurrency_not_head_count(caller):
    caller.says("想搞个呼叫中心", ["product_inquiry"], ("product", "call_center", "呼叫中心"))
    caller.says("我们调度八个人，就是八个坐席", ["feature_inquiry"], ("quantity", 8, "八个坐席"))
    caller.says("高峰同时打进来得有十五个", ["feature_inquiry"], ("quantity", 15, "十五个"))
    assert (caller.state.value("quantity"), caller.state.value("concurrency")) == (8, 15)


def test_lines_at_once_are_concurrency_even_when_the_nlu_missed_the_number(caller):
    caller.says("呼叫中心 五个人用 同时打 最多五路", ["feature_inquiry"], ("product", "call_center", "呼叫中心"),
                ("quantity", 5, "五个人"))
    assert (caller.state.value("quantity"), caller.state.value("concurrency")) == (5, 5)


def test_a_correction_inside_the_line_keeps_the_type_of_what_it_corrects(caller):
    caller.says("老师大概三十个", ["feature_inquiry"], ("quantity", 30, "三十个"))
    caller.says("学生同时上课最多四百个……勿对，五百个", ["feature_inquiry"],
                ("concurrency", 400, "同时上课最多四百个"), ("quantity", 500, "五百个"))
    assert (caller.state.value("quantity"), caller.state.value("concurrency")) == (30, 500)


def test_correcting_oneself_with_bu_shi_keeps_the_value_after_it(caller):
    caller.says("云桌面有冇得试", ["demo_request"], ("product", "cloud_desktop", "云桌面"))
    caller.says("我要四十个 唔系 四十五个", ["feature_inquiry"], ("quantity", 45, "四十五个"))
    assert caller.state.value("quantity") == 45


def test_a_cantonese_correction_of_an_earlier_turn_takes_the_new_number(caller):
    caller.says("喂 我想要两台云服务器", ["product_inquiry"], ("product", "cloud_server", "云服务器"), ("quantity", 2, "两台"))
    caller.says("唔系两台 系三台 仲有一台做测试", ["deny"])
    assert caller.state.value("quantity") == 3


def test_a_stated_budget_is_kept_even_when_the_nlu_gave_no_value(caller):
    caller.says("MES那个报价我们收到了 十八万太贵了啦", ["price_objection"], ("product", "mes", "MES"))
    caller.says("我们老板的预算只有十二万", ["price_objection"])
    assert caller.state.value("budget") == 120000


def test_a_refusal_stays_active_after_the_caller_hangs_up_on_us(caller):
    caller.says("CRM嗦，我们用的销售易，用得好好的", ["not_interested", "competitor_comparison"],
                ("competitor", "xiaoshouyi", "销售易"))
    caller.says("莫打了", ["do_not_call"])
    assert {"not_interested", "do_not_call"} <= set(caller.state.active_intents)


def test_the_scorer_compares_values_as_the_guide_writes_them(caller):
    caller.says("云服务器四核八G", ["product_inquiry"], ("product", "cloud_server", "云服务器"), ("feature", "cpu", "四核八G"))
    caller.says("对接我们的小程序，还有抖店", ["integration_inquiry"], ("system", "小程序", "小程序"), ("system", "抖店", "抖店"))
    assert slot_matches("features", ["4核8G"], caller.state)  # 4核8G = 4核8g
    assert slot_matches("systems", ["OTHER", "OTHER"], caller.state)  # two unnamed systems: one category
    assert not slot_matches("features", ["4核16g"], caller.state)
