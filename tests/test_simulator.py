"""The caller simulator: personas talk to the agent over the real topics, and the evaluation
commands report completion, JGA and failures."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from agent.dialogue import load_playbook
from agent.simulator import PERSONAS, make_caller, simulate_call_on_bus
from agent.simulator.driver import judge_final_states
from agent.textcall import ReplyWaiter
from agent.resources import DATA_DIR


async def test_every_persona_reaches_its_goal_over_the_real_topics(embedded_bus):
    # the personas' phrases were written with the rules: this is about the dialogue over the bus
    from agent.settings import Settings
    from agent.testing import running_pipeline

    pb = load_playbook("cloud_saas")
    async with running_pipeline(embedded_bus, Settings(nlu_model="rules")) as pipe:
        await _every_persona(pb, pipe.bus)


async def _every_persona(pb, bus):
    results = []
    async with ReplyWaiter(bus) as waiter:
        for i, persona in enumerate(PERSONAS):
            caller = make_caller(persona, pb, seed=7 + i, noise=0.3)
            result = await simulate_call_on_bus(caller, pb, bus, waiter=waiter)
            assert result.turns, persona
            assert not result.violations, (persona, result.violations)
            assert result.completed, (persona, result.failure, [(t.caller, t.bot) for t in result.turns])
            results.append(result)
    # the state each call ended with, read back from dialogue.state, holds the caller's goal
    await judge_final_states(bus, results)
    assert all(r.joint_goal for r in results), [(r.persona, r.slot_errors) for r in results]


async def test_do_not_call_over_the_bus_ends_the_call_on_that_turn(text_pipeline):
    from agent.textcall import run_text_call

    call = await run_text_call(text_pipeline.bus, ["你好", "云服务器多少钱", "别再打了，把我号码删掉"])
    assert call.ended_by_bot and len(call.replies) == 3
    assert call.replies[-1].action == "exit_do_not_call"
    assert call.replies[-1].playbook_version == "cloud_saas@1.0"


def _cli(*args):
    import agent.cli.dialogue_cmds  # noqa: F401  (registers the eval commands)
    from agent.cli.app import app

    return CliRunner().invoke(app, list(args))


def test_eval_dialogue_prints_completion_turns_jga_and_failures_with_a_json_last_line():
    res = _cli("eval", "dialogue", "--calls", "60", "--seed", "11", "--nlu-model", "rules")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert summary["calls"] == 60 and set(summary["by_persona"]) == set(PERSONAS)
    assert summary["completion_rate"] >= 0.95 and summary["jga"] >= 0.9
    assert summary["compliance_violations"] == 0
    assert "completion" in res.output and "avg turns" in res.output


def test_eval_dst_on_the_shipped_scripts(tmp_path):
    res = _cli("eval", "dst", "--data", str(DATA_DIR / "dialogue" / "dst_scripts.jsonl"), "--nlu-model", "rules")
    assert res.exit_code == 0, res.output
    last = json.loads(res.output.strip().splitlines()[-1])
    assert last["jga"] >= 0.9 and "product" in last["slot_accuracy"]


def test_eval_dst_names_the_failing_script_and_slot(tmp_path):
    data = tmp_path / "s.jsonl"
    data.write_text(
        json.dumps({"turns": ["云服务器要2000并发"], "expected_slots": {"product": "cloud_server", "concurrency": 3000}},
                   ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    res = _cli("eval", "dst", "--data", str(data))
    assert res.exit_code == 0, res.output
    assert "line 1" in res.output and "concurrency" in res.output
    last = json.loads(res.output.strip().splitlines()[-1])
    assert last["jga"] == 0.0 and last["slot_accuracy"] == {"concurrency": 0.0, "product": 1.0}


@pytest.mark.parametrize("content,needle", [
    ("not json\n", "not JSON"), ('{"turns": []}\n', "non-empty"), ("", "no scripts"),
    # a typo in a slot or intent would otherwise be a slot that silently never matches
    ('{"turns": ["云服务器"], "expected_slots": {"prodcut": "cloud_server"}}\n', "bad.jsonl:1: unknown slot 'prodcut'"),
    ('{"turns": ["云服务器"], "expected_slots": {"features": "gpu"}}\n', "slot 'features' must be a list"),
    ('{"turns": ["多少钱"], "expected_active_intents": ["price_enquiry"]}\n', "unknown intent 'price_enquiry'"),
])
def test_eval_dst_rejects_a_bad_file_with_a_clear_error(tmp_path, content, needle):
    data = tmp_path / "bad.jsonl"
    data.write_text(content, encoding="utf-8")
    res = _cli("eval", "dst", "--data", str(data))
    assert res.exit_code == 2 and needle in res.output
