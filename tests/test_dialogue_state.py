"""Dialogue state tracking, told as caller stories (NLU results written by hand)."""

from __future__ import annotations

import pytest

from agent.dialogue import DialogueState, load_playbook, update
from tests.dialogue_helpers import Conversation, nlu


@pytest.fixture
def call():
    return Conversation(load_playbook("cloud_saas"))


def test_the_update_is_pure_and_the_state_round_trips_through_json(call):
    before = DialogueState()
    after = update(before, nlu("我要2000并发的SaaS", ["product_inquiry"], [("product", "saas"), ("concurrency", 2000)], 1))
    assert before.slots == {} and after.value("concurrency") == 2000
    again = DialogueState.model_validate(after.model_dump(mode="json"))
    assert again == after


def test_newest_value_wins_and_the_old_one_is_kept_in_history(call):
    call.say("我们大概1000并发", ["feature_inquiry"], [("concurrency", 1000)])
    call.say("哦可能要3000并发", ["feature_inquiry"], [("concurrency", 3000)])
    slot = call.state.slots["concurrency"]
    assert (slot.value, slot.turn) == (3000, 2)
    assert [(c.old, c.new) for c in call.state.slot_history] == [(1000, 3000)]


def test_a_correction_takes_the_value_after_bu_shi(call):
    call.say("SaaS要1000并发", ["product_inquiry"], [("product", "saas"), ("concurrency", 1000)])
    call.say("不是1000，是2000并发", ["feature_inquiry"], [("concurrency", 1000), ("concurrency", 2000)])
    assert call.state.value("concurrency") == 2000
    assert call.state.slot_history[-1].reason == "correction"
    assert "concurrency" in call.state.corrected


def test_a_negation_removes_the_feature_and_remembers_it_was_declined(call):
    call.say("SaaS要2000并发，还要异地备份", ["product_inquiry", "feature_inquiry"],
             [("product", "saas"), ("concurrency", 2000), ("feature", "offsite_backup")])
    assert call.state.value("features") == ["offsite_backup"]
    call.say("不要异地备份了", ["deny", "feature_inquiry"], [("feature", "offsite_backup")])
    assert call.state.value("features") is None
    assert call.state.rejected["features"] == ["offsite_backup"]
    # and the new quote leaves the backup out
    assert "异地备份" not in call.replies[-1].text
    assert "49800" in call.replies[-1].text


def test_a_supplement_inherits_the_core_intent(call):
    call.say("云服务器多少钱，要2000并发", ["price_inquiry"], [("product", "cloud_server"), ("concurrency", 2000)])
    call.say("另外还要异地备份", ["supplement_demand", "feature_inquiry"], [("feature", "offsite_backup")])
    call.say("还有那个也要", ["supplement_demand"], [])
    assert "price_inquiry" in call.state.active_intents
    assert call.state.intent_stack[-1] in ("price_inquiry", "feature_inquiry")


def test_a_digression_returns_to_the_task(call):
    call.say("云服务器2000并发多少钱", ["price_inquiry"], [("product", "cloud_server"), ("concurrency", 2000)])
    text = call.say("你是机器人吗", ["ask_if_robot"])
    assert "AI" in text
    assert call.state.intent_stack[-1] == "price_inquiry"
    assert "price_inquiry" in call.state.active_intents and "ask_if_robot" in call.state.active_intents
    # the caller's next turn is about the task again, and nothing was lost
    assert call.state.value("concurrency") == 2000


def test_this_version_resolves_to_the_plan_the_bot_just_named(call):
    call.say("你们的SaaS能支持多少并发？", ["feature_inquiry"], [("product", "saas"), ("feature", "concurrency")])
    named = call.actions[-1].all_params()["plan"]
    call.say("那这个版本的年费是多少？", ["price_inquiry"])
    assert call.state.resolved_ref is not None and call.state.resolved_ref.value == named


def test_earlier_one_resolves_to_the_product_named_before_the_current_one(call):
    call.say("云服务器怎么卖", ["price_inquiry"], [("product", "cloud_server")])
    call.say("那SaaS呢", ["product_inquiry"], [("product", "saas")])
    call.say("刚才那个要2000并发多少钱", ["price_inquiry"], [("concurrency", 2000)])
    assert call.state.value("product") == "cloud_server"
    assert "9800" in call.replies[-1].text  # 标准型 carries 2000


def test_a_bare_number_answers_the_question_just_asked(call):
    call.say("我想了解下云服务器", ["product_inquiry"], [("product", "cloud_server")])
    assert call.actions[-1].name == "ask_slot" and call.actions[-1].params["slot"] == "concurrency"
    call.say("两千左右吧", ["other"])
    assert call.state.value("concurrency") == 2000
    assert call.state.slots["concurrency"].source == "context"


def test_preferences_and_objections_are_recorded(call):
    call.say("有没有性价比高的云服务器", ["product_inquiry"], [("product", "cloud_server")])
    call.say("太贵了，阿里云便宜多了", ["price_objection", "competitor_comparison"], [("competitor", "aliyun")])
    assert call.state.preferences["price_sensitive"] is True
    assert call.state.objections == ["price"] or "price" in call.state.objections
    assert call.state.value("competitor") == "aliyun"


def test_do_not_call_is_sticky(call):
    call.say("别再给我打电话了", ["do_not_call"])
    assert call.state.do_not_call and call.state.stage == "exit"


def test_a_correction_without_units_fixes_the_number_it_names(call):
    call.say("云服务器3000并发", ["product_inquiry"], [("product", "cloud_server"), ("concurrency", 3000)])
    call.say("说错了，是六千不是三千", ["deny"])
    assert call.state.value("concurrency") == 6000
    assert call.state.slot_history[-1].old == 3000


def test_the_one_of_yigong_is_not_an_answer_to_how_many(call):
    call.say("我想了解下云服务器", ["product_inquiry"], [("product", "cloud_server")])
    call.say("那一共多少钱", ["price_inquiry"])
    assert call.state.value("concurrency") is None
    assert call.actions[-1].name == "ask_slot"


def test_a_term_is_not_taken_for_the_size_the_bot_asked_for(call):
    call.say("SaaS多少钱", ["price_inquiry"], [("product", "saas")])
    call.say("要两年的话呢", ["price_inquiry"], [("term", 24)])
    assert call.state.value("term") == 24 and call.state.value("concurrency") is None


def test_a_filler_nage_is_not_a_reference(call):
    call.say("你们的SaaS能支持多少并发？", ["feature_inquiry"], [("product", "saas")])
    call.say("那个，大概1000并发", ["feature_inquiry"], [("concurrency", 1000)])
    assert call.state.value("plan") is None
    assert "标准版" in call.replies[-1].text  # the plan that carries 1000, not the one named before


def test_the_website_a_waf_would_protect_is_a_system_the_caller_runs(call):
    """Guide 102/127: 预约网站 under our WAF is the caller's own system (OTHER), even though the
    model tagged only the product; a later turn about price keeps it."""
    call.say("我们网上预约的网站上个月被人黑了，想看下你们的WAF", ["product_inquiry"], [("product", "waf")])
    call.say("一个月多少钱", ["price_inquiry"])
    assert call.state.value("product") == "waf" and call.state.value("systems") == ["OTHER"]


def test_a_server_word_inside_the_product_name_is_not_the_caller_s_system():
    from agent.events import Entity, Intent, NluResult

    text = "高防服务器多少钱一个月"
    product = Entity(type="product", value="anti_ddos", text="高防服务器", start=0, end=5)
    state = update(DialogueState(), NluResult(call_id="c1", turn=1, text=text, intents=[Intent(name="price_inquiry")],
                                              entities=[product]))
    assert state.value("product") == "anti_ddos" and not state.value("systems")


def test_a_website_mentioned_about_a_product_that_protects_nothing_is_no_system(call):
    call.say("我们官网想做个在线客服，你们CRM能嵌进去吗", ["product_inquiry"], [("product", "crm")])
    assert not call.state.value("systems")
