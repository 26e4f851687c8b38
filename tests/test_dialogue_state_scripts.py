"""Tracker stories from the independently written caller scripts (session 6): what stays an
open request at the end of a script, system names the model cut in pieces, counts that are not
the count (an ordinal, a trial, a part), editions weighed then picked by ordinal.  The NLU
results are written by hand with the spans and values the joint model reports, mistakes
included; the wording is new, not lines of the corpus."""

from __future__ import annotations

import pytest

from tests.dialogue_helpers import Caller


@pytest.fixture
def caller() -> Caller:
    return Caller()


# --- active intents (guide, "Script line"; decision 19) -----------------------------------


def test_a_size_given_as_an_answer_keeps_its_own_request_open(caller):
    caller.says("你们的OA怎么收费", ["price_inquiry"], ("product", "oa_suite", "OA"))
    caller.says("其实要管排班的，九十个人用", ["feature_inquiry"], ("quantity", 90, "九十个人"))
    # the size answers the bot's question and carries on the price goal, and is a requirement
    assert {"feature_inquiry", "price_inquiry"} <= set(caller.state.active_intents)


def test_yes_no_greeting_and_supplement_are_never_open_requests(caller):
    caller.says("喂你好，云服务器有吗", ["greeting", "product_inquiry"], ("product", "cloud_server", "云服务器"))
    assert "greeting" not in caller.state.active_intents
    caller.says("对，另外还要异地备份", ["affirm", "supplement_demand", "feature_inquiry"],
                ("feature", "offsite_backup", "异地备份"))
    assert not {"affirm", "supplement_demand"} & set(caller.state.active_intents)
    caller.says("不是，我说的是两台", ["deny", "feature_inquiry"], ("quantity", 2, "两台"))
    assert "deny" not in caller.state.active_intents
    assert "feature_inquiry" in caller.state.active_intents


def test_what_the_entities_of_the_last_turn_ask_is_open_when_the_model_left_it_out(caller):
    caller.says("CRM了解一下", ["product_inquiry"], ("product", "crm", "CRM"))
    # the model kept the previous turn's intent; the rival named makes it a comparison
    caller.says("那你们比销售易便宜多少", ["product_inquiry"], ("competitor", "xiaoshouyi", "销售易"))
    assert "competitor_comparison" in caller.state.active_intents
    caller.says("下礼拜一上午再聊", ["other"], ("callback_time", "next_monday morning", "下礼拜一上午"))
    assert "callback_request" in caller.state.active_intents
    caller.says("按季度付几多", ["integration_inquiry"], ("term", 3, "按季度"))
    assert "price_inquiry" in caller.state.active_intents
    caller.says("跟我们的用友要通", ["feature_inquiry"], ("system", "ERP", "用友"))
    assert "integration_inquiry" in caller.state.active_intents


def test_a_price_the_deal_depends_on_is_a_price_objection(caller):
    caller.says("MES报价收到了", ["price_inquiry"], ("product", "mes", "MES"))
    caller.says("能降到七十万的话下个月就签", ["purchase_intent"], ("budget", 700000, "七十万"))
    assert "price_objection" in caller.state.active_intents


# --- systems the model cut in pieces -------------------------------------------------------


def test_one_character_and_half_a_rivals_name_are_no_system(caller):
    caller.says("你们OA能接我们的金蝶吗", ["integration_inquiry"], ("product", "oa_suite", "OA"), ("system", "ERP", "金蝶"))
    caller.says("金蝶自己也推OA，你们比它强在哪", ["competitor_comparison"], ("system", "OTHER", "蝶"))
    assert caller.slot("systems") == ["ERP"]
    caller.says("泛微也报过价，一年两万", ["competitor_comparison"], ("system", "OTHER", "泛"), ("competitor", "微", "微"))
    assert caller.slot("systems") == ["ERP"]
    # a one-character span whose category the line names stays (机器PLC是三菱的)
    other = Caller()
    other.says("MES能采设备数据吗", ["feature_inquiry"], ("product", "mes", "MES"))
    other.says("设备PLC是欧姆龙的", ["feature_inquiry"], ("system", "PLC", "姆"))
    assert other.slot("systems") == ["PLC"]


def test_half_a_system_name_beside_a_rival_piece_is_the_system_when_connecting(caller):
    caller.says("CRM有吗", ["product_inquiry"], ("product", "crm", "CRM"))
    caller.says("要跟网易邮箱连", ["integration_inquiry"], ("system", "EMAIL", "网易"), ("competitor", "netease_mail", "邮箱"))
    assert caller.slot("systems") == ["EMAIL"] and caller.slot("competitor") is None


def test_the_vendor_of_a_system_just_named_is_not_a_second_system(caller):
    caller.says("人事系统能推工资到ERP吗", ["integration_inquiry"], ("product", "hr_saas", "人事系统"), ("system", "ERP", "ERP"))
    caller.says("我们的ERP是浪潮的", ["integration_inquiry"], ("system", "ERP", "ERP"), ("system", "OTHER", "浪潮"))
    assert caller.slot("systems") == ["ERP"]
    caller.says("还要接我们的MES，鼎捷的", ["integration_inquiry"], ("system", "MES", "MES"), ("system", "OTHER", "鼎捷"))
    assert caller.slot("systems") == ["ERP", "MES"]


def test_the_product_we_sell_named_again_is_not_their_system(caller):
    caller.says("WMS能对接用友吗", ["integration_inquiry"], ("product", "wms", "WMS"), ("system", "ERP", "用友"))
    caller.says("叉车扫的数据也要进WMS", ["integration_inquiry"], ("system", "WMS", "WMS"))
    assert caller.slot("systems") == ["ERP"] and caller.slot("product") == "wms"


def test_a_product_they_say_they_already_have_is_their_system(caller):
    caller.says("CRM多少钱", ["price_inquiry"], ("product", "crm", "CRM"))
    caller.says("CRM我们其实有了，呼叫中心有吗", ["product_inquiry"], ("product", "crm", "CRM"),
                ("product", "call_center", "呼叫中心"))
    assert caller.slot("product") == "call_center" and caller.slot("systems") == ["CRM"]


# --- counts that are not the count ---------------------------------------------------------


def test_an_ordinal_and_a_lone_one_are_no_count(caller):
    caller.says("云桌面有哪几种", ["product_inquiry"], ("product", "cloud_desktop", "云桌面"))
    caller.says("第三种，三十台什么价", ["price_inquiry"], ("quantity", 3, "三种"), ("quantity", 30, "三十台"))
    assert caller.slot("quantity") == 30
    other = Caller()
    other.says("直播课有吗", ["product_inquiry"], ("product", "live_classroom", "直播课"))
    other.says("一个年级两百来人 同时上", ["feature_inquiry"], ("concurrency", 1, "一"), ("concurrency", 200, "两百来人"))
    assert other.slot("concurrency") == 200


def test_a_trial_count_is_the_size_only_when_no_size_was_given(caller):
    caller.says("杀毒软件有吗", ["product_inquiry"], ("feature", "virus_protection", "杀毒"))
    caller.says("先装三台试试", ["demo_request"], ("quantity", 3, "三台"))
    assert caller.slot("quantity") == 3
    other = Caller()
    other.says("云桌面要八十台", ["feature_inquiry"], ("product", "cloud_desktop", "云桌面"), ("quantity", 80, "八十台"))
    other.says("先拿两台来测一下", ["demo_request"], ("quantity", 2, "两台"))
    assert other.slot("quantity") == 80


def test_months_given_free_are_no_term(caller):
    caller.says("企业邮箱一年多少", ["price_inquiry"], ("product", "enterprise_email", "企业邮箱"), ("term", 12, "一年"))
    caller.says("太贵了，再送两个月行不行", ["price_objection"], ("term", 2, "两个月"))
    assert caller.slot("term") == 12


def test_a_count_of_people_after_the_at_once_count_is_the_head_count(caller):
    caller.says("视频会议有吗", ["product_inquiry"], ("product", "video_conferencing", "视频会议"))
    caller.says("开大会同时在线三百人", ["feature_inquiry"], ("concurrency", 300, "同时在线三百人"))
    caller.says("平常就四十个人用账号", ["feature_inquiry"], ("concurrency", 40, "四十个人"))
    assert (caller.slot("concurrency"), caller.slot("quantity")) == (300, 40)


def test_correcting_the_head_count_keeps_the_at_once_count_said_beside_it(caller):
    caller.says("直播课三千人用", ["feature_inquiry"], ("product", "live_classroom", "直播课"), ("quantity", 3000, "三千人"))
    caller.says("不是同时，一共三千，同时大概六百", ["feature_inquiry", "deny"],
                ("concurrency", 3000, "三千"), ("concurrency", 600, "同时大概六百"))
    assert (caller.slot("quantity"), caller.slot("concurrency")) == (3000, 600)
    other = Caller()
    other.says("云服务器，全公司三百人用", ["feature_inquiry"], ("product", "cloud_server", "云服务器"), ("quantity", 300, "三百人"))
    other.says("不是同时，同时在线也就六十个", ["feature_inquiry", "deny"], ("concurrency", 60, "同时在线也就六十个"))
    assert (other.slot("quantity"), other.slot("concurrency")) == (300, 60)


def test_those_machines_are_some_of_them_and_dropping_them_leaves_the_rest(caller):
    caller.says("云桌面要五十台", ["feature_inquiry"], ("product", "cloud_desktop", "云桌面"), ("quantity", 50, "五十台"))
    caller.says("配置4核8G", ["feature_inquiry"], ("feature", "cpu", "4核8G"))
    caller.says("设计部那六台改成8核32G", ["feature_inquiry"], ("quantity", 6, "六台"), ("feature", "cpu", "8核32G"))
    assert caller.slot("quantity") == 50
    assert set(caller.slot("features")) == {"4核8g", "8核32g"}
    caller.says("仓库那十台先不弄了", ["feature_inquiry"], ("quantity", 10, "十台"))
    assert caller.slot("quantity") == 40


# --- values said again, dropped, or picked -------------------------------------------------


def test_a_rival_named_short_is_the_one_held(caller):
    caller.says("你们跟用友畅捷通比呢", ["competitor_comparison"], ("competitor", "用友畅捷通", "用友畅捷通"))
    caller.says("畅捷通报的八千", ["competitor_comparison"], ("competitor", "畅捷通", "畅捷通"))
    assert caller.slot("competitor") == "用友畅捷通"


def test_a_place_not_installed_yet_is_dropped(caller):
    caller.says("会议室大屏要两套，杭州一套宁波一套", ["feature_inquiry"],
                ("product", "meeting_room_device", "会议室大屏"), ("region", "杭州", "杭州"), ("region", "宁波", "宁波"))
    caller.says("不对，宁波那边先不装，就杭州", ["feature_inquiry", "deny"], ("region", "宁波", "宁波"), ("region", "杭州", "杭州"))
    assert caller.slot("region") == "杭州"


def test_a_yes_no_question_is_no_refusal(caller):
    caller.says("直播课要签到", ["feature_inquiry"], ("product", "live_classroom", "直播课"), ("feature", "attendance", "签到"))
    caller.says("山区的学生卡不卡", ["feature_inquiry"], ("feature", "latency", "卡不卡", True))
    assert set(caller.slot("features")) == {"attendance", "latency"}
    caller.says("签到算了", ["feature_inquiry"], ("feature", "attendance", "签到", True))
    assert caller.slot("features") == ["latency"]


def test_dropping_the_words_held_drops_them_whatever_id_the_model_gave(caller):
    caller.says("网课要回放，还要防截屏", ["feature_inquiry"], ("product", "live_classroom", "网课"),
                ("feature", "recording", "回放"), ("feature", "防截屏", "防截屏"))
    caller.says("防截屏不要了", ["feature_inquiry"], ("feature", "recording", "防截屏", True))
    assert caller.slot("features") == ["recording"]


def test_editions_weighed_then_picked_by_ordinal(caller):
    caller.says("CRM有几个版本", ["product_inquiry"], ("product", "crm", "CRM"))
    caller.says("基础版和专业版有什么区别", ["feature_inquiry"],
                ("feature", "basic_edition", "基础版"), ("feature", "pro_edition", "专业版"))
    assert caller.slot("features") is None  # weighed, not chosen
    caller.says("那就第二个吧，三十个账号", ["feature_inquiry"], ("quantity", 30, "三十个账号"))
    assert caller.slot("features") == ["pro_edition"] and caller.slot("quantity") == 30
