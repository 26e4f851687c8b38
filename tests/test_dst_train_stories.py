"""Caller stories for the tracker, each a behaviour the labelling guide fixes
(docs/nlu-labelling.md, the decided case is named in each story).  The NLU results are written
by hand, with the spans and values an understander reports, so each story tests the tracker
alone: what it does with usable NLU output."""

from __future__ import annotations

import pytest

from tests.dialogue_helpers import Caller


@pytest.fixture
def caller() -> Caller:
    return Caller()


# --- callback times (entity table, decisions 18 and 36) --------------------------------------


def test_a_span_of_days_is_later(caller):
    # decision 18: vague times (过两天) are `later`; the guide has no P2D form
    caller.says("我得跟理事长商量商量", ["callback_request"])
    caller.says("过两天回来再说", ["callback_request"], ("callback_time", "P2D", "过两天"))
    assert caller.slot("callback_time") == "later"


def test_a_part_of_the_day_said_in_dialect_is_kept(caller):
    # entity table: 明天下午 = tomorrow afternoon; 朝早 / 上昼 / 头晌 / 下半天 are the dialects' words
    caller.says("下个礼拜三朝早打嚟", ["callback_request"], ("callback_time", "next_wednesday", "下个礼拜三朝早"))
    assert caller.slot("callback_time") == "next_wednesday morning"
    other = Caller()
    other.says("礼拜四下半天我过来看看", ["demo_request", "callback_request"], ("callback_time", "thursday", "礼拜四下半天"))
    assert other.slot("callback_time") == "thursday afternoon"


def test_the_day_the_words_name_is_kept(caller):
    # 明个上午 is tomorrow morning, 下礼拜二 a Tuesday, whatever the value the words were given
    caller.says("让你们南京的经理打给我，明个上午", ["request_human"], ("callback_time", "today morning", "明个上午"))
    assert caller.slot("callback_time") == "tomorrow morning"
    other = Caller()
    other.says("你下礼拜二上午再打", ["callback_request"], ("callback_time", "next_monday morning", "下礼拜二上午"))
    assert other.slot("callback_time") == "next_tuesday morning"


def test_a_clock_time_completes_the_day_said_before(caller):
    # decision 36: a time that completes what was proposed takes its day from it
    caller.says("下个礼拜三，园里开放日", ["callback_request"], ("callback_time", "next_wednesday", "下个礼拜三"))
    caller.says("上昼十点钟，家长都在", ["callback_request"], ("callback_time", "today 10:00", "上昼十点钟"))
    assert caller.slot("callback_time") == "next_wednesday 10:00"
    other = Caller()
    other.says("恁明儿上午十点以后再打", ["callback_request"], ("callback_time", "tomorrow 10:00", "明儿上午十点以后"))
    other.says("打这个手机就中，记着啊，十点以后", ["callback_request"], ("callback_time", "today 10:00", "十点以后"))
    assert other.slot("callback_time") == "tomorrow 10:00"


def test_a_clock_time_after_an_evening_is_in_the_evening(caller):
    caller.says("你晚上八点以后打过来", ["callback_request"], ("callback_time", "today 20:00", "晚上八点以后"))
    caller.says("不行不行，八点店里还忙，九点吧", ["callback_request", "deny"], ("callback_time", "today 09:00", "九点"))
    assert caller.slot("callback_time") == "today 21:00"
    other = Caller()
    other.says("十一点以后", ["callback_request"], ("callback_time", "today 11:00", "十一点以后"))
    other.says("嗯 今天晚上", ["callback_request"], ("callback_time", "today evening", "晚上"))
    assert other.slot("callback_time") == "today 23:00"


def test_a_day_and_a_clock_said_apart_in_one_line_are_one_time(caller):
    caller.says("听日下昼啦，三点之后", ["callback_request"], ("callback_time", "tomorrow afternoon", "听日下昼"),
                ("callback_time", "today 15:00", "三点"))
    assert caller.slot("callback_time") == "tomorrow 15:00"


def test_a_weekday_corrected_keeps_the_week_said_before(caller):
    caller.says("下礼拜二上午打我", ["callback_request"], ("callback_time", "next_tuesday morning", "下礼拜二上午"))
    caller.says("哦不对，下礼拜二要开标，改成礼拜三下午", ["callback_request", "deny"],
                ("callback_time", "wednesday afternoon", "礼拜三下午"))
    assert caller.slot("callback_time") == "next_wednesday afternoon"


def test_a_vague_time_after_an_agreed_time_keeps_it(caller):
    caller.says("明天下午三点你们派人来装咯", ["callback_request"], ("callback_time", "tomorrow 15:00", "明天下午三点"))
    caller.says("要得，到了打我电话，18673120945", ["callback_request", "affirm"], ("callback_time", "later", "到了"),
                ("phone", "18673120945"))
    assert caller.slot("callback_time") == "tomorrow 15:00"


# --- numbers (hard cases 4, 10, 11; decision 18) ---------------------------------------------


def test_a_budget_is_worth_what_its_words_say(caller):
    # hard case 10: numbers in words are the same value (一万五 = 15000, not 10000)
    caller.says("视频会议五十个账号一年多少钱", ["price_inquiry"], ("product", "video_conferencing", "视频会议"))
    caller.says("一万五行不行，行的话我就定了", ["price_objection"], ("budget", 10000, "一万五"))
    assert caller.slot("budget") == 15000
    other = Caller()
    other.says("预算就一万出头", ["price_inquiry"], ("budget", 10000, "一万出头"))
    assert other.slot("budget") == 10000  # 出头: the lower bound (entity table)


def test_machines_counted_before_a_spec_are_the_quantity(caller):
    # hard cases 4 and 11: 4核8G is one feature; 两台 is how many
    caller.says("云服务器一年多少钱", ["price_inquiry"], ("product", "cloud_server", "云服务器"))
    caller.says("两台4核8G，签三年", ["feature_inquiry"], ("feature", "cpu", "两台4核8G"), ("term", 36, "三年"))
    assert (caller.slot("quantity"), caller.slot("features")) == (2, ["4核8g"])


def test_a_range_with_liang_takes_the_lower_bound(caller):
    # entity table (三四千 = 3000) and decision 18: 一两百 is 100
    caller.says("一两百个人看", ["feature_inquiry"], ("quantity", 200, "一两百个人"))
    assert caller.slot("quantity") == 100


def test_the_number_after_a_wrong_one_is_the_correction(caller):
    # hard case 5: 不是X是Y → Y; the NLU read only the wrong value
    caller.says("双十一要扛住，同时在线三万", ["feature_inquiry"], ("concurrency", 30000, "同时在线三万"))
    caller.says("不对，三万是去年的，今年按五万算", ["deny", "price_inquiry"], ("budget", 30000, "三万"))
    assert caller.slot("concurrency") == 50000
    other = Caller()
    other.says("会议室设备两套", ["feature_inquiry"], ("product", "meeting_room_device", "会议室设备"), ("quantity", 2, "两套"))
    other.says("不对四套，库尔勒也要两套", ["feature_inquiry", "deny"], ("quantity", 2, "两套"))
    assert other.slot("quantity") == 4
    third = Caller()
    third.says("同时在线三百人", ["feature_inquiry"], ("concurrency", 300, "同时在线三百人"))
    third.says("不是三十，是三百", ["feature_inquiry", "deny"], ("quantity", 300, "三百"))
    assert third.slot("concurrency") == 300  # the bot misheard: the value said again stands


def test_a_correction_counting_in_the_same_unit_corrects_that_count(caller):
    caller.says("同时在线一百五十台", ["feature_inquiry"], ("concurrency", 150, "同时在线一百五十台"))
    caller.says("不对，你听错了，是两百五十台", ["feature_inquiry", "deny"], ("quantity", 250, "两百五十台"))
    assert caller.slot("concurrency") == 250
    other = Caller()
    other.says("大概五百個客同時睇", ["feature_inquiry"], ("concurrency", 500, "五百個客同時"))
    other.says("唔係，應該有一千個", ["feature_inquiry", "deny"], ("quantity", 1000, "一千個"))
    assert other.slot("concurrency") == 1000


def test_the_value_said_with_shi_after_a_correction_is_the_one_meant(caller):
    # hard case 5 / decision 20: 我说的是 / 我们要的是 Y
    caller.says("云桌面的报价单我收到了", ["price_inquiry"], ("product", "cloud_desktop", "云桌面"))
    caller.says("不对啊，报价单上写的三百台，我们要的是三百八十台", ["feature_inquiry", "deny"],
                ("quantity", 300, "三百台"), ("quantity", 380, "三百八十台"))
    assert caller.slot("quantity") == 380


def test_how_long_is_no_count(caller):
    # "唔系" meaning "otherwise" and 两秒 (a duration) correct no count
    caller.says("观众主要喺美国，高峰同时两万人睇", ["feature_inquiry"], ("concurrency", 20000, "同时两万人"))
    caller.says("delay一定要压到两秒内，唔系啲观众走晒", ["feature_inquiry"], ("feature", "latency", "delay"))
    assert caller.slot("concurrency") == 20000


# --- places, rivals (decisions 119, 25) ------------------------------------------------------


def test_a_caller_names_two_regions_the_last_one_holds(caller):
    # decision 119: when two regions are stated, the last one fills the slot
    caller.says("我们现在用阿里云日本区，想看看你们东京节点的云服务器", ["competitor_comparison"],
                ("competitor", "aliyun", "阿里云"), ("region", "日本", "日本"), ("region", "东京", "东京"),
                ("product", "cloud_server", "云服务器"))
    assert caller.slot("region") == "东京"
    other = Caller()
    other.says("放北京算了 上海太远", ["feature_inquiry"], ("region", "北京", "北京"), ("region", "上海", "上海"))
    assert other.slot("region") == "北京"  # 上海 is named with what is wrong with it


def test_a_rival_said_short_is_the_one_named_before(caller):
    caller.says("嫩们企业邮箱跟腾讯企业邮比咋样", ["competitor_comparison"], ("product", "enterprise_email", "企业邮箱"),
                ("competitor", "qq_mail", "腾讯企业邮"))
    caller.says("那俺们还是用腾讯的吧，不换了", ["competitor_comparison", "not_interested"],
                ("competitor", "tencent_cloud", "腾讯"))
    assert caller.slot("competitor") == "qq_mail"


def test_keeping_a_rival_is_no_refusal_of_it(caller):
    # decision 25: refusing because they already use a rival keeps the competitor
    caller.says("你们服务器跟阿里云比怎么样", ["competitor_comparison"], ("product", "cloud_server", "服务器"),
                ("competitor", "aliyun", "阿里云"))
    caller.says("算咯，阿里云用惯了，不换了", ["competitor_comparison", "not_interested"],
                ("competitor", "aliyun", "阿里云", True))
    assert caller.slot("competitor") == "aliyun"


# --- lists: several things behind one item, blocks, model names ------------------------------


def test_dropping_one_of_two_systems_of_a_category_keeps_the_category(caller):
    # decision 104: systems lists each category once; 29: judged empty only when all are dropped
    caller.says("你们会员系统能不能接美团外卖", ["integration_inquiry"], ("product", "crm", "会员系统"),
                ("system", "OTHER", "美团外卖"))
    caller.says("还有抖音团购的核销", ["integration_inquiry", "supplement_demand"], ("system", "OTHER", "抖音团"))
    caller.says("算了抖音那个不要了，就美团", ["product_inquiry"], ("system", "OTHER", "抖音", True))
    assert caller.slot("systems") == ["OTHER"]
    other = Caller()
    other.says("门禁那套也要接", ["integration_inquiry"], ("system", "OTHER", "门禁"))
    other.says("算哒门禁不接哒，太麻烦", ["integration_inquiry"], ("system", "OTHER", "门禁"))
    assert other.slot("systems") is None


def test_dropping_one_of_two_requirements_of_one_id_keeps_the_id(caller):
    caller.says("冷库温度超了得报警", ["feature_inquiry"], ("feature", "monitoring", "温度超了得报警"))
    caller.says("再加上停电报警", ["feature_inquiry", "supplement_demand"], ("feature", "monitoring", "停电报警"))
    caller.says("停电报警算了哇，有发电机", ["feature_inquiry"], ("feature", "monitoring", "停电报警", True))
    assert caller.slot("features") == ["monitoring"]


def test_dropped_words_name_the_requirement_held_in_other_words(caller):
    caller.says("要兼容S3 还有跨区域复制", ["feature_inquiry"], ("feature", "offsite_backup", "跨区域复制"))
    caller.says("算了 复制先不要了 就存深圳", ["feature_inquiry"], ("feature", "复制", "复制", True))
    assert caller.slot("features") is None
    other = Caller()
    other.says("云桌面得能接U盘，还得带杀毒", ["feature_inquiry"], ("product", "cloud_desktop", "云桌面"),
               ("feature", "virus_protection", "杀毒"))
    other.says("杀毒就算了，学校有统一的", ["feature_inquiry"], ("product", "endpoint_security", "杀毒", True))
    assert other.slot("features") is None and other.slot("product") == "cloud_desktop"


def test_a_requirement_that_is_a_block_is_a_feature(caller):
    # decisions 69 and 104: 禁U盘 is peripheral_support (negated in the line), listed in the script
    caller.says("那就终端安全，U盘能禁掉就行", ["feature_inquiry"], ("product", "endpoint_security", "终端安全"),
                ("feature", "peripheral_support", "U盘", True))
    assert caller.slot("features") == ["peripheral_support"]


def test_a_block_asked_for_then_not_wanted_is_dropped(caller):
    # the block itself is taken back (29): 禁U盘 stops being a requirement
    caller.says("终端安全，要杀毒同禁U盘", ["feature_inquiry"], ("product", "endpoint_security", "终端安全"),
                ("feature", "virus_protection", "杀毒"), ("feature", "peripheral_support", "U盘", True))
    assert caller.slot("features") == ["virus_protection", "peripheral_support"]
    caller.says("禁U盘唔要住，啲师傅要用U盘拷程序", ["feature_inquiry"], ("feature", "peripheral_support", "禁U盘", True))
    assert caller.slot("features") == ["virus_protection"]


def test_a_card_model_is_the_callers_words(caller):
    # feature ids: "anything else: the caller's words" (decisions 42, 49): A100 is no `gpu`
    caller.says("GPU服务器有吗，A100的", ["product_inquiry"], ("product", "gpu_server", "GPU服务器"), ("feature", "gpu", "A100"))
    assert caller.slot("features") == ["a100"]
    caller.says("H100太贵了 换成A100 还是两台", ["feature_inquiry"], ("feature", "a100", "A100"), ("quantity", 2, "两台"))
    other = Caller()
    other.says("要H100的GPU服务器 两台", ["feature_inquiry"], ("feature", "h100", "H100"), ("product", "gpu_server", "GPU服务器"),
               ("quantity", 2, "两台"))
    other.says("H100太贵了 换成A100 还是两台", ["feature_inquiry"], ("feature", "gpu", "A100"), ("quantity", 2, "两台"))
    assert other.slot("features") == ["a100"]  # one card model at a time, like a spec


def test_a_spec_said_not_enough_is_replaced(caller):
    caller.says("要两台，4核8G的", ["feature_inquiry"], ("product", "cloud_server", "云服务器"), ("quantity", 2, "两台"),
                ("feature", "cpu", "4核8G"))
    caller.says("算了4核8G不够，改成8核16G", ["feature_inquiry"], ("feature", "8核16g", "8核16G"))
    assert caller.slot("features") == ["8核16g"]
    other = Caller()
    other.says("2核4G的吧", ["feature_inquiry"], ("feature", "cpu", "2核4G"))
    other.says("算了还是4核8G保险", ["feature_inquiry"], ("feature", "cpu", "4核8G"))
    assert other.slot("features") == ["4核8g"]


def test_edition_words_cut_short_are_the_edition(caller):
    # decision 26: an edition beside another product is a feature, one at a time; 第二个 picks one (19)
    caller.says("CRM有几个版本", ["product_inquiry"], ("product", "crm", "CRM"))
    caller.says("标准版跟专业版差在哪儿", ["product_inquiry"], ("product", "saas_standard", "标准版"), ("product", "专业", "专业"))
    caller.says("第二个吧", ["feature_inquiry"])
    assert (caller.slot("product"), caller.slot("features")) == ("crm", ["pro_edition"])


def test_the_saas_version_bought_replaces_an_edition_named_before(caller):
    caller.says("你们SaaS专业版怎么收费", ["price_inquiry"], ("product", "saas", "SaaS"), ("feature", "专业", "专业"))
    caller.says("专业版阿有电子签", ["product_inquiry"], ("feature", "pro_edition", "专业版"), ("product", "e_signature", "电子签"))
    caller.says("算了，领导说直接上企业版", ["product_inquiry"], ("product", "saas_enterprise", "企业版"))
    assert (caller.slot("product"), caller.slot("features")) == ("saas_enterprise", ["e_signature_feature"])


def test_an_edition_of_a_rival_is_not_ours(caller):
    caller.says("你们OA比钉钉专业版便宜伐", ["price_inquiry", "competitor_comparison"], ("product", "oa_suite", "OA"),
                ("competitor", "dingtalk", "钉钉"))
    assert caller.slot("features") is None


def test_a_capability_asked_for_stays_when_its_product_is_bought(caller):
    # decision 129: a capability described with no product named takes the feature id
    caller.says("加盟商签合同老往兰州跑，能不能网上签", ["feature_inquiry"], ("region", "兰州", "兰州"),
                ("feature", "e_signature_feature", "网上签"))
    caller.says("那就先买电子签章，OA以后再说", ["product_inquiry", "purchase_intent"], ("product", "e_signature", "电子签章"),
                ("product", "oa_suite", "OA", True))
    assert (caller.slot("product"), caller.slot("features")) == ("e_signature", ["e_signature_feature"])


# --- products (hard cases 3 and 9, decisions 14, 32) -----------------------------------------


def test_their_product_they_want_to_replace_is_the_product(caller):
    # hard case 3: one they want to buy is the product, also when they run one now
    caller.says("俺们企业邮箱想换一家", ["product_inquiry"], ("product", "enterprise_email", "企业邮箱"))
    assert (caller.slot("product"), caller.slot("systems")) == ("enterprise_email", None)


def test_busy_is_no_refusal_of_the_product(caller):
    # decisions 7, 14, 32: only a refusal drops the product; busy / the boss decides is not one
    caller.says("CRM啊 我们老板不在 我做不了主", ["product_inquiry"], ("product", "crm", "CRM", True))
    assert caller.slot("product") == "crm"
    other = Caller()
    other.says("CRM嘛，我们不需要", ["not_interested"], ("product", "crm", "CRM", True))
    assert other.slot("product") is None


def test_a_yes_no_question_is_no_correction(caller):
    caller.says("我想了解下你们CRM", ["product_inquiry"], ("product", "crm", "CRM"))
    caller.says("那是不是呼叫中心更合适？那就看呼叫中心吧", ["product_inquiry"], ("product", "call_center", "呼叫中心"))
    assert caller.slot("product") == "call_center"


def test_the_thing_the_words_end_on_is_bought(caller):
    caller.says("学院会议室要装视频会议的终端", ["product_inquiry"], ("product", "video_conferencing", "视频会议"),
                ("product", "meeting_room_device", "终端"))
    assert caller.slot("product") == "meeting_room_device"


def test_that_thing_after_a_noun_is_no_reference_back(caller):
    # hard case 9 is about references back (这个/那个/刚才那个): 考勤机那个数据 is the data of it
    caller.says("咱们教务系统是正方的，你们考试系统能对上不", ["integration_inquiry"], ("system", "LMS", "教务系统"),
                ("product", "online_exam", "考试系统"))
    caller.state.mentions.append(caller.state.mentions[-1].model_copy(update={"value": "saas", "by": "bot"}))
    caller.says("还有门口考勤机那个数据能进来不", ["integration_inquiry", "supplement_demand"], ("system", "OTHER", "考勤机"))
    assert caller.slot("product") == "online_exam"


def test_a_term_the_caller_will_not_take_is_dropped(caller):
    # decision 83: a term is a period the caller picks
    caller.says("能按月交不，一次交一年的我不干", ["price_inquiry"], ("term", 1, "按月"), ("term", 12, "一年"))
    assert caller.slot("term") == 1


def test_the_saas_version_in_the_words_of_the_platform_is_the_product(caller):
    # decision 26: an edition word alone in a SaaS context is the SaaS version
    caller.says("SaaS标准版多少钱一个账号", ["price_inquiry"], ("product", "saas", "SaaS标准版"))
    assert caller.slot("product") == "saas_standard"


def test_a_reference_back_is_not_the_product_just_refused(caller):
    # hard case 9 / decision 14: "那个" after "服务器不要了" is not the server refused
    caller.says("你们云服务器几多钱", ["price_inquiry"], ("product", "cloud_server", "云服务器"))
    caller.says("哦那服务器不要了，就要那个存东西的", ["product_inquiry"], ("product", "cloud_server", "服务器", True))
    caller.says("那个一个月几多钱", ["price_inquiry"], ("term", 1, "一个月"))
    assert caller.slot("product") is None
