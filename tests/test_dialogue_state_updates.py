"""How the state moves over a multi-turn call, told as caller stories (issue 15, item 5):
corrections, a product switched or set aside, a dropped feature, a product bought vs a system
to connect, head counts vs concurrency.  The NLU results are written by hand with the spans and
values the joint model reports (including the mistakes it makes), so each story tests the
tracker alone; the wording is new, not lines of the corpus."""

from __future__ import annotations

import pytest

from tests.dialogue_helpers import Caller


@pytest.fixture
def caller() -> Caller:
    return Caller()


# --- head counts vs concurrency -----------------------------------------------------------


def test_a_head_count_stays_a_quantity_when_the_bot_asked_for_concurrency(caller):
    caller.says("你们有没有直播课平台", ["product_inquiry"], ("product", "live_classroom", "直播课平台"))
    assert caller.state.expecting == "concurrency"  # the bot asks how many at once
    caller.says("老师有四十个", ["feature_inquiry"], ("quantity", 40, "四十个"))
    assert (caller.slot("quantity"), caller.slot("concurrency")) == (40, None)
    other = Caller()
    other.says("你们有没有直播课平台", ["product_inquiry"], ("product", "live_classroom", "直播课平台"))
    other.says("两千吧", ["feature_inquiry"], ("quantity", 2000, "两千"))
    assert (other.slot("quantity"), other.slot("concurrency")) == (None, 2000)  # a bare number answers


def test_a_total_beside_an_at_once_count_is_the_head_count(caller):
    caller.says("视频会议了解一下", ["product_inquiry"], ("product", "video_conferencing", "视频会议"))
    caller.says("报名的有三千人，同时在线大概一千", ["feature_inquiry"],
                ("concurrency", 3000, "三千人"), ("concurrency", 1000, "同时在线大概一千"))
    assert (caller.slot("quantity"), caller.slot("concurrency")) == (3000, 1000)
    caller.says("我们公司一共两百五十个员工", ["feature_inquiry"], ("concurrency", 250, "两百五十个员工"))
    assert (caller.slot("quantity"), caller.slot("concurrency")) == (250, 1000)


def test_a_total_restated_after_the_question_keeps_its_type(caller):
    caller.says("你们SaaS企业版", ["product_inquiry"], ("product", "saas_enterprise", "企业版"))
    caller.says("我们三百个账号", ["feature_inquiry"], ("quantity", 300, "三百个账号"))
    caller.says("算上兼职是三百五", ["feature_inquiry"], ("quantity", 350, "三百五"))
    assert (caller.slot("quantity"), caller.slot("concurrency")) == (350, None)


def test_a_price_said_with_a_period_is_not_the_count_the_bot_asked_for(caller):
    caller.says("视频会议", ["product_inquiry"], ("product", "video_conferencing", "视频会议"))
    caller.says("一年三千我就定", ["purchase_intent"], ("budget", 3000, "三千"), ("term", 12, "一年"))
    assert (caller.slot("budget"), caller.slot("concurrency")) == (3000, None)


# --- several values, corrections, parts and increments ------------------------------------


def test_a_correction_takes_the_count_right_after_it_not_the_explanation(caller):
    caller.says("CRM四个人用", ["product_inquiry"], ("product", "crm", "CRM"), ("quantity", 4, "四个人"))
    caller.says("不对，是六个人，还有两个是兼职的", ["deny", "feature_inquiry"],
                ("quantity", 6, "六个人"), ("quantity", 2, "两个"))
    assert caller.slot("quantity") == 6


def test_a_per_unit_or_partial_count_is_not_the_total(caller):
    caller.says("门店要上云桌面", ["product_inquiry"], ("product", "cloud_desktop", "云桌面"))
    caller.says("要十五台，三个门店每店五台", ["feature_inquiry"], ("quantity", 15, "十五台"), ("quantity", 5, "五台"))
    assert caller.slot("quantity") == 15
    caller.says("不对，有一台要给店长用高配的", ["deny", "feature_inquiry"], ("quantity", 1, "一台"))
    assert caller.slot("quantity") == 15


def test_an_increment_adds_to_the_count_unless_a_total_is_said(caller):
    caller.says("企业邮箱二十个号", ["product_inquiry"], ("product", "enterprise_email", "企业邮箱"),
                ("quantity", 20, "二十个号"))
    caller.says("再多三个号", ["feature_inquiry"], ("quantity", 3, "三个号"))
    assert caller.slot("quantity") == 23
    caller.says("一楼四十个人用，二楼再加十五个", ["feature_inquiry"], ("quantity", 40, "四十个人"), ("quantity", 15, "十五个"))
    assert caller.slot("quantity") == 55
    caller.says("再加五个，一共六十个", ["feature_inquiry"], ("quantity", 5, "五个"), ("quantity", 60, "六十个"))
    assert caller.slot("quantity") == 60


def test_count_words_are_read_as_the_guide_reads_them(caller):
    caller.says("电子签章", ["product_inquiry"], ("product", "e_signature", "电子签章"))
    # the model read the 一 of 一年 as the count
    caller.says("一年三百份合同左右", ["feature_inquiry"], ("quantity", 1, "一年三百份"), ("term", 12, "一年"))
    assert (caller.slot("quantity"), caller.slot("term")) == (300, 12)
    other = Caller()
    other.says("呼叫中心", ["product_inquiry"], ("product", "call_center", "呼叫中心"))
    other.says("坐席二三十个，同时打的也就五六个", ["feature_inquiry"],
               ("quantity", 30, "二三十个"), ("concurrency", 56, "同时打的也就五六个"))
    assert (other.slot("quantity"), other.slot("concurrency")) == (20, 5)  # a range: its lower bound


def test_a_count_for_a_trial_is_not_the_count_to_buy(caller):
    caller.says("云桌面五十个用户", ["product_inquiry"], ("product", "cloud_desktop", "云桌面"), ("quantity", 50, "五十个用户"))
    caller.says("先开三个测试账号看看", ["demo_request"], ("quantity", 3, "三个"))
    assert caller.slot("quantity") == 50


def test_a_bare_number_correcting_a_count_keeps_that_counts_type(caller):
    caller.says("视频会议，同时在线九百个", ["feature_inquiry"], ("product", "video_conferencing", "视频会议"),
                ("concurrency", 900, "同时在线九百个"))
    # 一块 is "together" here, not money
    caller.says("不对 一千五 三个校区一块开", ["deny", "feature_inquiry"], ("quantity", 1500, "一千五"))
    assert (caller.slot("concurrency"), caller.slot("quantity")) == (1500, None)


def test_two_places_in_a_line_keep_the_last_and_a_correction_the_one_after_it(caller):
    caller.says("CDN有海外节点吗", ["feature_inquiry"], ("product", "cdn", "CDN"), ("region", "海外", "海外"))
    caller.says("不是美国，我说的是中东，迪拜那边", ["deny", "feature_inquiry"], ("region", "中东", "中东"), ("region", "迪拜", "迪拜"))
    assert caller.slot("region") == "中东"
    # guide, decision 119 (scripts): when two regions are stated, the last one fills the slot
    caller.says("中东到香港延迟多少", ["feature_inquiry"], ("region", "中东", "中东"), ("region", "香港", "香港"),
                ("feature", "latency", "延迟"))
    assert caller.slot("region") == "香港"


# --- negation scope -----------------------------------------------------------------------


def test_suan_le_before_a_product_moves_on_to_it(caller):
    caller.says("我想问下云服务器", ["product_inquiry"], ("product", "cloud_server", "云服务器"))
    caller.says("算了 先问问云数据库", ["product_inquiry"], ("product", "cloud_database", "云数据库"))
    assert caller.slot("product") == "cloud_database"


def test_bu_yao_le_drops_what_came_before_it_not_what_follows(caller):
    caller.says("云服务器 八核十六G", ["feature_inquiry"], ("product", "cloud_server", "云服务器"), ("feature", "8核16g", "八核十六G"))
    caller.says("八核十六G不要了 上十六核三十二G", ["feature_inquiry"], ("feature", "8核16g", "八核十六G", True),
                ("feature", "16核32g", "十六核三十二G"))
    assert caller.slot("features") == ["16核32g"]


def test_a_refusal_with_a_pause_keeps_the_rival_named_after_it(caller):
    caller.says("不需要 我们已经在用销售易了", ["not_interested", "competitor_comparison"],
                ("competitor", "xiaoshouyi", "销售易"))
    assert caller.slot("competitor") == "xiaoshouyi"


def test_settling_for_a_place_is_not_dropping_it(caller):
    caller.says("云服务器放上海", ["product_inquiry"], ("product", "cloud_server", "云服务器"), ("region", "上海", "上海"))
    caller.says("放北京算了 上海太远", ["feature_inquiry"], ("region", "北京", "北京"), ("region", "上海", "上海"))
    assert caller.slot("region") == "北京"


def test_a_dialect_suan_or_a_span_that_took_the_cue_still_drops(caller):
    caller.says("视频会议要录屏，还要白板", ["feature_inquiry"], ("product", "video_conferencing", "视频会议"),
                ("feature", "recording", "录屏"), ("feature", "whiteboard", "白板"))
    caller.says("录屏算咧，用不上", ["feature_inquiry"], ("feature", "recording", "录屏"))
    caller.says("白板算了", ["feature_inquiry"], ("feature", "whiteboard", "白板算"))  # the span ate 算
    assert caller.slot("features") is None


def test_a_dropped_thing_named_in_other_words_drops_the_feature_held(caller):
    caller.says("云服务器要异地备份，还要手机APP", ["feature_inquiry"], ("product", "cloud_server", "云服务器"),
                ("feature", "offsite_backup", "异地备份"), ("feature", "mobile_app", "手机APP"))
    caller.says("备份就算了，太贵", ["feature_inquiry"], ("feature", "data_backup", "备份", True))
    assert caller.slot("features") == ["mobile_app"]
    caller.says("APP也不要了", ["feature_inquiry"], ("product", "app", "APP", True))  # tagged as a product
    assert caller.slot("features") is None


# --- the product bought, an add-on, their own system ---------------------------------------


def test_a_product_word_for_the_callers_own_system_is_a_system(caller):
    caller.says("企业邮箱想了解下", ["product_inquiry"], ("product", "enterprise_email", "企业邮箱"))
    caller.says("要跟我们的CRM打通", ["integration_inquiry"], ("product", "crm", "CRM"))
    assert (caller.slot("product"), caller.slot("systems")) == ("enterprise_email", ["CRM"])
    caller.says("CRM是销售易的", ["integration_inquiry"], ("product", "crm", "CRM"), ("system", "CRM", "销售易"))
    assert (caller.slot("product"), caller.slot("systems")) == ("enterprise_email", ["CRM"])


def test_a_product_to_buy_that_connects_to_their_system_is_the_product(caller):
    caller.says("你们有SCADA也有MES吧", ["product_inquiry"], ("product", "scada", "SCADA"), ("product", "mes", "MES"))
    caller.says("SCADA我们早就有了，MES能接吗", ["integration_inquiry"], ("product", "scada", "SCADA"), ("product", "mes", "MES"))
    assert (caller.slot("product"), caller.slot("systems")) == ("mes", ["SCADA"])


def test_their_own_servers_do_not_switch_a_security_product(caller):
    caller.says("堡垒机怎么卖", ["price_inquiry"], ("product", "bastion_host", "堡垒机"))
    caller.says("服务器大概三十台要管", ["feature_inquiry"], ("product", "cloud_server", "服务器"), ("quantity", 30, "三十台"))
    assert (caller.slot("product"), caller.slot("quantity")) == ("bastion_host", 30)
    caller.says("算了 换成普通的云服务器", ["product_inquiry"], ("product", "cloud_server", "云服务器"))
    assert caller.slot("product") == "cloud_server"  # said as our product, it is a switch


def test_an_add_on_keeps_the_product_and_comes_back_when_the_main_one_is_dropped(caller):
    caller.says("视频会议 十个人", ["product_inquiry"], ("product", "video_conferencing", "视频会议"), ("quantity", 10, "十个人"))
    caller.says("再加个会议室设备 一套", ["product_inquiry", "supplement_demand"],
                ("product", "meeting_room_device", "会议室设备"), ("quantity", 1, "一套"))
    assert (caller.slot("product"), caller.slot("quantity")) == ("video_conferencing", 10)
    caller.says("视频会议先不要了", ["product_inquiry"], ("product", "video_conferencing", "视频会议", True))
    assert caller.slot("product") == "meeting_room_device"


def test_a_capability_also_sold_alone_is_a_feature_beside_another_product(caller):
    caller.says("OA要审批流", ["feature_inquiry"], ("product", "oa_suite", "OA"), ("feature", "approval_flow", "审批流"))
    caller.says("还要电子签章", ["feature_inquiry", "supplement_demand"], ("product", "e_signature", "电子签章"))
    assert (caller.slot("product"), caller.slot("features")) == ("oa_suite", ["approval_flow", "e_signature_feature"])
    caller.says("签章也不要了", ["feature_inquiry"], ("feature", "e_signature_feature", "签章", True))
    assert (caller.slot("product"), caller.slot("features")) == ("oa_suite", ["approval_flow"])
    other = Caller()
    other.says("等保要求得上个WAF", ["product_inquiry"], ("product", "security_compliance", "等保要求"),
               ("product", "waf", "WAF"))
    assert (other.slot("product"), other.slot("features")) == ("waf", ["compliance"])
    third = Caller()
    third.says("想要OA加电子签章", ["product_inquiry"], ("product", "oa_suite", "OA"), ("product", "e_signature", "电子签章"))
    assert (third.slot("product"), third.slot("features")) == ("oa_suite", ["e_signature_feature"])
    third.says("OA就不要了，钉钉凑合用", ["product_inquiry"], ("product", "oa_suite", "OA", True), ("system", "OA", "钉钉"))
    assert (third.slot("product"), third.slot("features")) == ("e_signature", None)  # the add-on is the product now


def test_several_products_in_one_breath_keep_the_first_and_fall_back_when_it_is_dropped(caller):
    caller.says("CRM和呼叫中心都想了解", ["product_inquiry"], ("product", "crm", "CRM"), ("product", "call_center", "呼叫中心"))
    assert caller.slot("product") == "crm"
    caller.says("CRM先不要了", ["product_inquiry"], ("product", "crm", "CRM", True))
    assert caller.slot("product") == "call_center"


def test_a_product_named_by_mistake_is_set_aside_for_good(caller):
    caller.says("问问直播课", ["product_inquiry"], ("product", "live_classroom", "直播课"))
    caller.says("哦不是，我说的是考试那个", ["deny", "product_inquiry"], ("product", "online_exam", "考试"))
    assert caller.slot("product") == "online_exam"
    caller.says("考试也不要了", ["product_inquiry"], ("product", "online_exam", "考试", True))
    assert caller.slot("product") is None


def test_words_that_are_no_product_of_ours_win_only_when_ours_is_dropped(caller):
    caller.says("预测性维护先上注塑机", ["product_inquiry"], ("product", "predictive_maintenance", "预测性维护"),
                ("product", "注塑机", "注塑机"))
    assert caller.slot("product") == "predictive_maintenance"
    other = Caller()
    other.says("CRM多少钱", ["price_inquiry"], ("product", "crm", "CRM"))
    other.says("CRM先不要了，就要智能客服", ["product_inquiry"], ("product", "crm", "CRM", True), ("product", "智能客服", "智能客服"))
    assert other.slot("product") == "智能客服"


# --- rival or system ----------------------------------------------------------------------


def test_a_vendor_to_connect_to_is_a_system_one_compared_with_is_a_rival(caller):
    caller.says("会议室设备两套", ["product_inquiry"], ("product", "meeting_room_device", "会议室设备"), ("quantity", 2, "两套"))
    caller.says("设备能跟Zoom一起用吗", ["integration_inquiry"], ("competitor", "zoom", "Zoom"))
    assert (caller.slot("systems"), caller.slot("competitor")) == (["OTHER"], None)
    other = Caller()
    other.says("CRM了解一下", ["product_inquiry"], ("product", "crm", "CRM"))
    other.says("用友也在推他们的CRM，你们比他们好在哪", ["integration_inquiry"], ("system", "ERP", "用友"))
    assert (other.slot("competitor"), other.slot("systems")) == ("yonyou", None)


# --- editions and specs -------------------------------------------------------------------


def test_editions_compared_for_a_product_held_are_its_editions_and_one_is_chosen(caller):
    caller.says("视频会议有几个版本", ["product_inquiry"], ("product", "video_conferencing", "视频会议"))
    caller.says("标准版跟专业版差在哪", ["product_inquiry"], ("product", "saas_standard", "标准版"), ("product", "saas_pro", "专业版"))
    assert caller.slot("product") == "video_conferencing"
    caller.says("那就专业版吧", ["feature_inquiry"], ("feature", "pro_edition", "专业版"))
    assert (caller.slot("product"), caller.slot("features")) == ("video_conferencing", ["pro_edition"])


def test_a_spec_corrected_replaces_the_one_named_last_and_its_numbers_are_no_counts(caller):
    caller.says("云服务器三台", ["product_inquiry"], ("product", "cloud_server", "云服务器"), ("quantity", 3, "三台"))
    caller.says("8核32G", ["feature_inquiry"], ("feature", "cpu", "8核32G"))
    assert (caller.slot("features"), caller.slot("concurrency"), caller.slot("quantity")) == (["8核32g"], None, 3)
    caller.says("不对 要16核64G", ["deny", "feature_inquiry"], ("feature", "cpu", "16核64G"))
    assert (caller.slot("features"), caller.slot("quantity")) == (["16核64g"], 3)
    caller.says("内存改成128G，64不够", ["feature_inquiry"], ("feature", "memory", "128G"))
    assert caller.slot("quantity") == 3
    caller.says("不对，有一台要4核8G做测试", ["deny", "feature_inquiry"], ("feature", "cpu", "4核8G"))
    assert caller.slot("features") == ["16核64g", "memory", "4核8g"]  # for one machine: beside it


# --- callback times and the caller's words -------------------------------------------------


def test_a_callback_time_said_again_less_exactly_or_moved_to_another_day(caller):
    caller.says("在开会 你下午三点以后打", ["callback_request"], ("callback_time", "today 15:00", "下午三点以后"))
    caller.says("嗯 今天下午", ["callback_request"], ("callback_time", "today afternoon", "下午"))
    assert caller.slot("callback_time") == "today 15:00"
    caller.says("不对，改周五吧", ["deny", "callback_request"], ("callback_time", "friday", "周五"))
    assert caller.slot("callback_time") == "friday 15:00"


def test_a_packs_name_for_the_callers_words_keeps_the_callers_words(caller):
    caller.says("人事系统要能算薪", ["feature_inquiry"], ("product", "hr_saas", "人事系统"), ("feature", "薪资计算", "算薪"))
    assert caller.slot("features") == ["算薪"]
