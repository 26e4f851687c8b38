"""The agent as separate processes on one machine: `dianxiao run` serves the stages, a caller in
another process talks to it over the embedded log, and SIGTERM stops it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).with_name("dianxiao")


def test_a_caller_in_another_process_talks_to_a_running_agent_which_stops_cleanly_on_sigterm(tmp_path):
    env = {**os.environ, "DIANXIAO_DATA_DIR": str(tmp_path / "data")}
    agent = subprocess.Popen([str(BIN), "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(2.0)  # imports + joining the groups
        caller = subprocess.run(
            [str(BIN), "call", "你好", "我想了解一下云服务器，要1000并发", "那个多少钱"],
            env=env, capture_output=True, text=True, timeout=60,
        )
        assert caller.returncode == 0, caller.stdout + caller.stderr
        assert caller.stdout.count("bot ") == 3
        assert "call id:" in caller.stdout
    finally:
        agent.send_signal(signal.SIGTERM)
        out, _ = agent.communicate(timeout=20)
    assert agent.returncode == 0, out
    assert out.count("stage stopped") == 6  # nlu, dst, policy, hangup, dtmf, outcome
    # the call is in the log for QA
    listing = subprocess.run([str(BIN), "calls", "list", "--json"], env=env, capture_output=True, text=True, timeout=30)
    assert listing.stdout.count('"call_id"') == 1


def test_a_caller_who_says_never_call_again_is_hung_up_on_by_the_running_agent(tmp_path):
    from agent import events as ev
    from agent.calllog import CallLog

    env = {**os.environ, "DIANXIAO_DATA_DIR": str(tmp_path / "data")}
    agent = subprocess.Popen([str(BIN), "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(2.0)
        caller = subprocess.run([str(BIN), "call", "别再给我打电话了"], env=env, capture_output=True, text=True, timeout=60)
        assert caller.returncode == 0, caller.stdout + caller.stderr
        assert "the agent ended the call (bot_ended)" in caller.stdout
        call_id = caller.stdout.split("call id:")[1].split()[0]
        # the running agent's outcome stage writes the call's outcome just after the end
        for _ in range(100):
            log = CallLog(tmp_path / "data" / "bus.sqlite")
            outcomes = [e for e in log.events(call_id) if isinstance(e, ev.CallOutcome)]
            log.close()
            if outcomes:
                break
            time.sleep(0.05)
    finally:
        agent.send_signal(signal.SIGTERM)
        out, _ = agent.communicate(timeout=20)
    assert agent.returncode == 0, out
    call_id = caller.stdout.split("call id:")[1].split()[0]
    # the call log: the agent's hangup stage wrote the end, after the goodbye it names
    events = CallLog(tmp_path / "data" / "bus.sqlite").events(call_id)
    ended = [e for e in events if isinstance(e, ev.CallEnded)]
    goodbye = [e for e in events if isinstance(e, ev.BotReply)][-1]
    assert goodbye.ends_call and goodbye.action == "exit_do_not_call"
    assert [(e.stage, e.reason, e.reply_event_id) for e in ended] == [("hangup", "bot_ended", goodbye.event_id)]
    # and its outcome, once: do-not-call, caused by that end
    outcomes = [e for e in events if isinstance(e, ev.CallOutcome)]
    assert [(o.stage, o.outcome, o.caused_by) for o in outcomes] == [("outcome", "dnc", ended[0].event_id)]
