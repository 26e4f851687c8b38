"""Policy and replies, told as caller stories through the real NLU and the dialogue core."""

from __future__ import annotations

import pytest

from agent.dialogue import DialogueState, PlaybookError, load_playbook
from agent.dialogue.replies import allowed_numbers, unsupported_numbers
from agent.dialogue.turn import step
from agent.events import NluResult
from agent.nlu import load_understander
from agent.simulator import PERSONAS, make_caller, simulate_call
from agent.simulator.driver import valid_amounts
from tests.dialogue_helpers import Conversation


@pytest.fixture(scope="module")
def understander():
    # The persona callers speak phrases written together with the rules: these tests are about
    # the policy, so they pin the rule understander (the joint model's figures: docs/nlu.md).
    return load_understander("rules")


@pytest.fixture(scope="module")
def saas():
    return load_playbook("cloud_saas")


def talk(understander, playbook, turns):
    state, replies = DialogueState(), []
    for i, text in enumerate(turns, start=1):
        out = understander.understand(text, context=tuple(turns[max(0, i - 4) : i - 1]))
        nlu = NluResult(call_id="t", turn=i, text=text, intents=out.intents, entities=out.entities)
        state, action, reply = step(state, nlu, playbook)
        replies.append(reply)
    return state, replies


def test_saas_concurrency_then_this_versions_fee_is_the_right_versions_fee(understander, saas):
    state, replies = talk(understander, saas, ["你们的SaaS能支持多少并发？", "那这个版本的年费是多少？"])
    named = [p for p in saas.product("saas").plans if p.name in replies[0].text and f"{p.capacity}并发" in replies[0].text]
    focus = next(p for p in saas.product("saas").plans if replies[0].text.startswith(f"我们云启SaaS平台{p.name}"))
    assert focus in named
    fee = replies[1].text
    assert focus.name in fee and f"{focus.price_year}元" in fee
    others = [p for p in saas.product("saas").plans if p is not focus]
    assert not any(f"{p.price_year}元" in fee for p in others)


def test_with_a_stated_need_this_version_is_the_plan_that_carries_it(understander, saas):
    _, replies = talk(understander, saas, ["我们要3000并发，你们SaaS行吗", "那这个版本一年多少钱"])
    assert "专业版" in replies[0].text
    assert "专业版" in replies[1].text and "49800元" in replies[1].text


def test_a_quote_waits_for_the_required_slot(understander, saas):
    _, replies = talk(understander, saas, ["云服务器多少钱"])
    assert replies[0].action == "ask_slot" and "并发" in replies[0].text
    assert "元" not in replies[0].text


def test_correction_and_withdrawal_change_the_quote(understander, saas):
    _, replies = talk(understander, saas, ["云服务器1000并发，还要异地备份，多少钱", "不是1000，是3000并发", "不要异地备份了"])
    assert "11000元" not in replies[1].text  # no stale plan
    assert "标准型" not in replies[1].text and "企业型" in replies[1].text and "38400元" in replies[1].text
    assert "异地备份" not in replies[2].text and "36000元" in replies[2].text


@pytest.mark.parametrize("text", ["别再给我打电话了", "把我号码删了，不要再打了", "以后别打了", "你们天天打，再打我投诉了"])
def test_do_not_call_ends_the_call_on_the_turn_it_is_said(understander, saas, text):
    _, replies = talk(understander, saas, ["云服务器多少钱", text])
    assert replies[-1].action == "exit_do_not_call" and replies[-1].ends_call


@pytest.mark.parametrize("text", ["你是机器人吗", "你是真人还是机器啊", "等下，你是AI吗？"])
def test_asked_if_it_is_a_robot_it_says_it_is_an_ai_and_goes_back_to_the_question(understander, saas, text):
    _, replies = talk(understander, saas, ["我想了解下云服务器", text])
    assert "AI" in replies[-1].text
    assert "并发" in replies[-1].text  # the pending question again


def test_asking_for_a_human_hands_off(understander, saas):
    _, replies = talk(understander, saas, ["转人工"])
    assert replies[0].action == "handoff_human" and replies[0].ends_call


def test_the_safety_net_never_quotes_a_plan_outside_the_catalogue(saas):
    call = Conversation(saas)
    call.say("我要SaaS", ["product_inquiry"], [("product", "saas")])
    call.state = call.state.model_copy(update={"slots": {**call.state.slots}})
    call.state.slots["plan"] = call.state.slots["product"].model_copy(update={"value": "saas_ultra"})
    call.say("多少钱", ["price_inquiry"])
    assert call.actions[-1].name == "ask_slot"  # not a quote for a plan that does not exist


def test_no_reply_over_many_simulated_calls_states_a_price_outside_the_catalogue(understander, saas):
    amounts = valid_amounts(saas)
    for i in range(60):
        caller = make_caller(PERSONAS[i % len(PERSONAS)], saas, 1000 + i)
        result = simulate_call(caller, saas, understander)
        assert not result.violations, result.violations
        for t in result.turns:
            assert all(n in amounts for n in _yuan(t.bot)), t.bot


def _yuan(text):
    import re

    return [int(m) for m in re.findall(r"(\d+)元", text)]


def test_the_second_playbook_sells_industrial_software(understander):
    pb = load_playbook("industrial_software")
    _, replies = talk(understander, pb, ["你们MES系统多少钱", "我们有5条产线"])
    assert "工厂版" in replies[-1].text and "188000元" in replies[-1].text


def test_allowed_numbers_cover_the_catalogue_and_the_caller_but_not_invented_ones(saas):
    call = Conversation(saas)
    call.say("SaaS要3000并发", ["product_inquiry"], [("product", "saas"), ("concurrency", 3000)])
    allowed = allowed_numbers(call.state, saas, call.actions[-1])
    assert not unsupported_numbers("专业版一年49800元，3000并发没问题", allowed)
    assert unsupported_numbers("给您打个折，一年39800元", allowed) == [39800]


def test_a_missing_or_broken_playbook_is_a_clear_error(tmp_path):
    with pytest.raises(PlaybookError, match="not found"):
        load_playbook("no_such_playbook")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nversion: '1'\nproducts: []\n", encoding="utf-8")
    with pytest.raises(PlaybookError, match="malformed"):
        load_playbook(bad)


def test_a_busy_caller_gets_a_callback_at_the_time_they_name(understander, saas):
    _, replies = talk(understander, saas, ["我现在在开会，没空", "明天下午三点吧"])
    assert "回电" in replies[0].text and not replies[0].ends_call
    assert replies[1].action == "book_callback" and replies[1].ends_call
    assert "明天下午三点" in replies[1].text


def test_a_demo_booked_with_a_time_repeats_the_time(understander, saas):
    _, replies = talk(understander, saas, ["云服务器2000并发多少钱", "行吧，那先帮我约个演示，明天下午三点"])
    assert replies[-1].action == "book_demo" and "明天下午三点" in replies[-1].text
