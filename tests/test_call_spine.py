"""User stories for the call spine: a text call through the real topics on the embedded bus,
a stage killed mid-call, malformed events, and replay as a regression check."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent import events as ev
from agent import topics
from agent.bus import EmbeddedBus
from agent.calllog import CallLog
from agent.nlu import NluOutput, load_understander
from agent.pipeline import TEXT_STAGES, build_stage
from agent.replay import replay_call
from agent.settings import Settings
from agent.stages.nlu import NluStage
from agent.testing import running_pipeline
from agent.textcall import ReplyWaiter, run_text_call, say

FOUR_TURNS = [
    "你好",
    "我想要一个云服务器，要支持1000并发",
    "那个的年费是多少？",
    "好的，谢谢，先这样吧",
]


async def _all(bus: EmbeddedBus, topic: str) -> list:
    out = []
    for p in range(bus.partitions):
        end = await bus.end_offset((topic, p))
        for rec in await bus.read_range((topic, p), 0, end):
            try:
                out.append(ev.decode(rec.value))
            except ev.EventError:
                out.append(rec)
    return out


async def test_caller_asks_the_fee_of_that_one_and_the_bot_answers_about_the_same_product(text_pipeline):
    call = await run_text_call(text_pipeline.bus, FOUR_TURNS)

    assert [r.turn for r in call.replies] == [1, 2, 3, 4]
    states = [e for e in await _all(text_pipeline.bus, topics.DIALOGUE) if e.call_id == call.call_id]
    last = states[-1].state
    # the product and the concurrency from turn 2 survive turn 3, which names neither
    slots = last["slots"]
    product = slots["product"]["value"] if isinstance(slots["product"], dict) else slots["product"]
    assert product == "cloud_server"
    fee_reply = call.replies[2]
    assert "云服务器" in fee_reply.text
    assert any(ch.isdigit() for ch in fee_reply.text), fee_reply.text
    # every event of the call is in the log, in causal order, with the same call id
    log = CallLog(text_pipeline.bus.path)
    turns = log.turns(call.call_id)
    assert [t.caller_text for t in turns] == FOUR_TURNS
    assert all(t.reply for t in turns)
    assert all({"nlu", "dst", "policy"} <= set(t.latency_ms) for t in turns)
    log.close()


async def test_a_stage_killed_after_turn_two_resumes_with_the_same_state(tmp_path: Path):
    async def final_state(bus: EmbeddedBus, kill: bool) -> dict:
        await bus.start()
        async with running_pipeline(bus) as pipe:
            if not kill:
                call = await run_text_call(bus, FOUR_TURNS)
            else:
                def script(turn: int, so_far: list[ev.BotReply]) -> str | None:
                    return FOUR_TURNS[turn - 1] if turn <= 2 else None

                # Turns 1-2, then the DST stage dies (its task is cancelled: no graceful commit
                # beyond what it had already committed) and a brand-new one takes its place.
                first = await run_text_call(bus, script, call_id="call-kill", hang_up=False)
                task = pipe.tasks[pipe.runners.index(pipe.runner("dst"))]
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await pipe.restart_stage("dst", build_stage("dst", Settings()))
                # the caller goes on with turns 3 and 4 of the *same* call
                async with ReplyWaiter(bus) as waiter:
                    for n, text in ((3, FOUR_TURNS[2]), (4, FOUR_TURNS[3])):
                        await say(bus, first.call_id, n, text)
                        await waiter.wait(first.call_id, n, timeout=10)
            call_id = "call-kill" if kill else call.call_id
            states = [e for e in await _all(bus, topics.DIALOGUE) if e.call_id == call_id]
        await bus.close()
        assert [s.turn for s in states] == [1, 2, 3, 4]
        state = dict(states[-1].state)
        return state

    reference = await final_state(EmbeddedBus(tmp_path / "a.sqlite"), kill=False)
    resumed = await final_state(EmbeddedBus(tmp_path / "b.sqlite"), kill=True)
    assert resumed == reference


async def test_the_same_event_delivered_twice_is_handled_once(text_pipeline):
    bus = text_pipeline.bus
    final = ev.TranscriptFinal(call_id="call-dup", turn=1, stage="caller", text="云服务器多少钱")
    await bus.publish_event(topics.TRANSCRIPTS, final)
    await bus.publish_event(topics.TRANSCRIPTS, final)  # at-least-once delivery repeats it
    for _ in range(50):
        results = [e for e in await _all(bus, topics.NLU) if e.call_id == "call-dup"]
        if results:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    results = [e for e in await _all(bus, topics.NLU) if e.call_id == "call-dup"]
    assert len(results) == 1
    assert text_pipeline.runner("nlu").metrics.duplicates.labels("nlu")._value.get() == 1


async def test_malformed_events_land_in_dead_letters_and_the_stage_goes_on(text_pipeline):
    bus = text_pipeline.bus
    good = ev.TranscriptFinal(call_id="call-bad", turn=1, stage="caller", text="你好").model_dump(mode="json")
    await bus.publish(topics.TRANSCRIPTS, "call-bad", b"\xff\xfe not json")
    await bus.publish(topics.TRANSCRIPTS, "call-bad", json.dumps({**good, "type": "transcript.final2"}).encode())
    await bus.publish(topics.TRANSCRIPTS, "call-bad", json.dumps({**good, "colour": "blue"}).encode())
    await bus.publish(topics.TRANSCRIPTS, "call-bad", b"DXA\x01truncated")

    call = await run_text_call(bus, ["你好", "云服务器多少钱"])
    assert len(call.replies) == 2  # the stage kept going

    letters = [e for e in await _all(bus, topics.DEAD_LETTERS) if e.call_id == "call-bad"]
    reasons = sorted(d.reason for d in letters)
    assert len(letters) == 4, reasons
    assert any("not JSON" in r for r in reasons)
    assert any("unknown event type" in r for r in reasons)
    assert any("colour" in r for r in reasons)
    assert any("audio frame" in r for r in reasons)
    assert all(d.consumer == "nlu" and d.source_topic == topics.TRANSCRIPTS for d in letters)


class _ForgetsPrices:
    """An NLU 'model version' that no longer recognises price questions."""

    version = "rules-without-price"

    def __init__(self) -> None:
        self.inner = load_understander(None)

    def understand(self, text, context=()):
        out = self.inner.understand(text, context)
        kept = [i for i in out.intents if i.name != "price_inquiry"] or [ev.Intent(name="other")]
        return NluOutput(intents=kept, entities=out.entities, decided_by=out.decided_by, version=self.version)


async def test_replay_passes_on_an_unchanged_pipeline_and_fails_when_a_rule_changes(text_pipeline, tmp_path):
    call = await run_text_call(text_pipeline.bus, FOUR_TURNS)
    log = CallLog(text_pipeline.bus.path)
    settings = Settings()

    same = replay_call(log, call.call_id, [build_stage(n, settings) for n in TEXT_STAGES])
    assert same.inputs == 4
    assert same.changed == []

    changed = replay_call(
        log, call.call_id, [NluStage(_ForgetsPrices()), build_stage("dst", settings), build_stage("policy", settings)]
    )
    stages_changed = {(d.stage, d.turn) for d in changed.changed}
    assert ("nlu", 3) in stages_changed  # the fee question is no longer a price inquiry
    assert any("price_inquiry" in line for d in changed.changed for line in d.changes)
    log.close()


async def test_golden_call_check_on_the_command_line(text_pipeline, tmp_path):
    """A team exports a golden call, and `replay --check` guards it: it passes as recorded and
    fails once the recorded reply no longer matches what the pipeline says."""
    from agent.cli import _COMMAND_MODULES, app
    import importlib

    for m in _COMMAND_MODULES:
        importlib.import_module(m)
    call = await run_text_call(text_pipeline.bus, FOUR_TURNS)
    runner = CliRunner()
    golden = tmp_path / "golden.jsonl"
    res = runner.invoke(app, ["calls", "export", str(golden), "--call", call.call_id, "--log", str(text_pipeline.bus.path)])
    assert res.exit_code == 0, res.output

    ok_log = tmp_path / "ok.sqlite"
    res = runner.invoke(app, ["calls", "import", str(golden), "--log", str(ok_log)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["replay", call.call_id, "--check", "--log", str(ok_log)])
    assert res.exit_code == 0, res.output

    # The golden file says the bot answered something else on turn 3: the check must fail.
    lines = golden.read_text(encoding="utf-8").splitlines()
    edited = []
    for line in lines:
        obj = json.loads(line)
        if obj["event"]["type"] == "bot.reply" and obj["event"]["turn"] == 3:
            obj["event"]["text"] = "这是旧版本的回答"
        edited.append(json.dumps(obj, ensure_ascii=False))
    stale = tmp_path / "stale.jsonl"
    stale.write_text("\n".join(edited) + "\nnot json\n", encoding="utf-8")
    bad_log = tmp_path / "stale.sqlite"
    res = runner.invoke(app, ["calls", "import", str(stale), "--log", str(bad_log)])
    assert res.exit_code == 1 and f"{stale}:{len(lines) + 1}:" in res.output  # bad line reported, rest imported
    res = runner.invoke(app, ["replay", call.call_id, "--check", "--log", str(bad_log)])
    assert res.exit_code == 1
    assert "这是旧版本的回答" in res.output


# --- the agent ends the call; key presses are understood (issue 16) -------------------------


async def test_a_caller_who_says_never_call_again_gets_a_goodbye_and_the_agent_ends_the_call(text_pipeline):
    call = await run_text_call(text_pipeline.bus, ["你好", "别再给我打电话了"])

    goodbye = call.replies[-1]
    assert goodbye.ends_call and call.ended_by_bot
    ended = [e for e in await _all(text_pipeline.bus, topics.CONTROL)
             if isinstance(e, ev.CallEnded) and e.call_id == call.call_id]
    # exactly one end, written by the agent's hangup stage, naming the goodbye it ended on
    assert [(e.stage, e.reason, e.reply_event_id) for e in ended] == [("hangup", "bot_ended", goodbye.event_id)]
    assert ended[0].outcome == goodbye.action
    assert call.agent_ended is not None and call.agent_ended.event_id == ended[0].event_id


async def test_a_caller_who_stays_silent_hears_a_polite_goodbye_and_the_call_is_ended(embedded_bus):
    from agent.textcall import start_call

    settings = Settings(silence_hangup_s=1.0)
    async with running_pipeline(embedded_bus, settings) as pipe, ReplyWaiter(embedded_bus) as waiter:
        started = await start_call(embedded_bus, "call-silent")
        ended = await waiter.wait_ended("call-silent", timeout=10)
        assert pipe.silence is not None and pipe.silence.fired == 1
    assert ended is not None and ended.stage == "hangup" and ended.reason == "bot_ended"
    assert ended.ts_wall - started.ts_wall >= 1.0  # not before the silence
    replies = [e for e in await _all(embedded_bus, topics.REPLIES) if e.call_id == "call-silent"]
    assert len(replies) == 1 and replies[0].ends_call and replies[0].action == "exit_silence"
    assert "再见" in replies[0].text and ended.reply_event_id == replies[0].event_id
    silent = [e for e in await _all(embedded_bus, topics.CONTROL) if isinstance(e, ev.CallerSilent)]
    assert len(silent) == 1 and silent[0].silent_ms >= 1000


async def test_a_caller_who_keeps_talking_is_not_cut_off_for_silence(embedded_bus):
    settings = Settings(silence_hangup_s=1.5)
    async with running_pipeline(embedded_bus, settings) as pipe, ReplyWaiter(embedded_bus) as waiter:
        from agent.textcall import start_call

        await start_call(embedded_bus, "call-chatty")
        for turn, text in enumerate(["你好", "云服务器多少钱", "嗯", "能便宜点吗"], start=1):
            await asyncio.sleep(0.9)  # each pause shorter than the limit, 3.6 s in all
            await say(embedded_bus, "call-chatty", turn, text)
            await waiter.wait("call-chatty", turn, 10)
        assert pipe.silence is not None and pipe.silence.fired == 0
    assert not [e for e in await _all(embedded_bus, topics.CONTROL) if isinstance(e, ev.CallEnded)]


async def test_a_caller_presses_0_for_a_person_and_keys_in_a_callback_number(text_pipeline):
    from agent.textcall import start_call

    bus = text_pipeline.bus
    async with ReplyWaiter(bus) as waiter:
        await start_call(bus, "call-keys")
        await say(bus, "call-keys", 1, "你好")
        await waiter.wait("call-keys", 1, 10)
        # what a phone connector writes for the keys (RTP telephone-events, a provider's dtmf)
        await bus.publish_event(topics.CONTROL, ev.CallDtmf(call_id="call-keys", stage="sip", digit="0", turn=1))
        for d in "*13800138000#":
            await bus.publish_event(topics.CONTROL, ev.CallDtmf(call_id="call-keys", stage="sip", digit=d, turn=1))
        for _ in range(100):
            results = [e for e in await _all(bus, topics.NLU) if e.call_id == "call-keys" and e.model_version == "dtmf-1"]
            states = [e for e in await _all(bus, topics.DIALOGUE) if e.call_id == "call-keys"]
            if len(results) == 2 and len(states) == 3:
                break
            await asyncio.sleep(0.05)
    assert [[i.name for i in r.intents] for r in results] == [["request_human"], ["callback_request"]]
    assert results[1].entities[0].type == "phone" and results[1].entities[0].value == "13800138000"
    # DST and policy took the keys like words: the number is in the state, and the bot answered each
    slots = states[-1].state["slots"]
    phone = slots["phone"]["value"] if isinstance(slots["phone"], dict) else slots["phone"]
    assert phone == "13800138000"
    replies = [e for e in await _all(bus, topics.REPLIES) if e.call_id == "call-keys"]
    assert len(replies) == 3
