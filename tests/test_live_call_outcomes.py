"""A live call (text here; SIP and websocket calls run the same stages) ends with its own
`call.outcome` in the call log, written by the agent's outcome stage — not only simulated
campaigns.  The tests play the caller only: they never publish an outcome."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent import events as ev
from agent import topics
from agent.bus import EmbeddedBus
from agent.dialogue import load_playbook
from agent.learning.data import read_call_log
from agent.textcall import end_call, run_text_call

BOOKS_A_DEMO = ["你好", "想了解一下SaaS平台", "大概2000并发", "太贵了，预算不够", "好的"]
NEVER_CALL_AGAIN = ["你好", "别再给我打电话了"]


async def _control(bus: EmbeddedBus, call_id: str) -> list:
    out = []
    for p in range(bus.partitions):
        end = await bus.end_offset((topics.CONTROL, p))
        for rec in await bus.read_range((topics.CONTROL, p), 0, end):
            e = ev.decode(rec.value)
            if e.call_id == call_id:
                out.append(e)
    return out


async def _outcomes(bus: EmbeddedBus, call_id: str, wait_s: float = 5.0) -> list[ev.CallOutcome]:
    """The call's outcomes once the first is there (or after wait_s), plus a moment for a repeat."""
    for _ in range(int(wait_s / 0.05)):
        if any(isinstance(e, ev.CallOutcome) for e in await _control(bus, call_id)):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # a second outcome, if the stage wrote one, would be here by now
    return [e for e in await _control(bus, call_id) if isinstance(e, ev.CallOutcome)]


async def test_a_caller_who_books_a_demo_leaves_one_demo_booked_outcome_at_the_closing_stage(rules_pipeline):
    call = await run_text_call(rules_pipeline.bus, BOOKS_A_DEMO, call_id="live-demo")
    assert call.replies[-1].action == "book_demo" and call.agent_ended is not None

    outs = await _outcomes(rules_pipeline.bus, "live-demo")
    assert [(o.kind, o.outcome, o.sale_stage, o.source, o.stage) for o in outs] == [
        ("call", "demo_booked", "closing", "agent", "outcome")]
    assert outs[0].caused_by == call.agent_ended.event_id  # caused by the agent's own end of the call


async def test_a_do_not_call_request_leaves_one_dnc_outcome_even_when_the_caller_hangs_up_too(rules_pipeline):
    call = await run_text_call(rules_pipeline.bus, NEVER_CALL_AGAIN, call_id="live-dnc")
    assert call.replies[-1].action == "exit_do_not_call" and call.agent_ended is not None
    # the caller's phone sends its own hang-up after the agent's (as a SIP BYE race would)
    await end_call(rules_pipeline.bus, "live-dnc", 2, reason="hangup")

    outs = await _outcomes(rules_pipeline.bus, "live-dnc")
    assert [(o.outcome, o.sale_stage) for o in outs] == [("dnc", "opening")]
    assert outs[0].caused_by == call.agent_ended.event_id


async def test_a_caller_who_hangs_up_after_a_price_leaves_quote_sent(rules_pipeline):
    call = await run_text_call(rules_pipeline.bus, ["你好", "想了解一下SaaS平台", "大概2000并发"], call_id="live-quote")
    assert not call.ended_by_bot  # the caller hung up

    outs = await _outcomes(rules_pipeline.bus, "live-quote")
    assert [(o.outcome, o.sale_stage) for o in outs] == [("quote_sent", "recommendation")]


async def test_dianxiao_learn_reads_the_live_calls_outcomes(rules_pipeline):
    for call_id, script in (("learn-demo", BOOKS_A_DEMO), ("learn-dnc", NEVER_CALL_AGAIN)):
        await run_text_call(rules_pipeline.bus, script, call_id=call_id)
        assert await _outcomes(rules_pipeline.bus, call_id)

    records = {r.call_id: r for r in read_call_log(Path(rules_pipeline.bus.path), load_playbook("cloud_saas"))}
    assert (records["learn-demo"].outcome, records["learn-demo"].sale_stage) == ("demo_booked", "closing")
    assert records["learn-demo"].win("call") and not records["learn-dnc"].win("call")
    assert records["learn-dnc"].outcome == "dnc"
    # the price objection and the bot's answer to it are there for the learner
    assert [d.situation for d in records["learn-demo"].decisions] == ["objection.price"]


def test_an_end_handled_again_after_a_crash_gives_the_same_outcome_event():
    """A stage that died before committing handles the end again with the state it had: the
    outcome it writes then has the same id, so the log keeps one."""
    from agent.stages.base import CallContext
    from agent.stages.outcome import OutcomeStage

    stage = OutcomeStage()
    reply = ev.BotReply(call_id="c", turn=1, text="好的，已为您预约演示", action="quote+book_demo", ends_call=True)
    end = ev.CallEnded(call_id="c", turn=1, stage="hangup", reason="bot_ended", outcome="book_demo")
    ids = []
    for _ in range(2):
        ctx = CallContext("c", stage.new_state("c"))
        stage.handle(reply, ctx)
        [out] = stage.handle(end, ctx)
        assert stage.handle(end, ctx) == []  # and once per call in one life
        ids.append((out.event.event_id, out.event.outcome, out.event.sale_stage))
    assert ids[0] == ids[1] == (ids[0][0], "demo_booked", "closing")
