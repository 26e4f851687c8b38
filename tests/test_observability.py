"""An operator scrapes Prometheus metrics from a running pipeline and reads JSON logs that
carry the call id and turn of every line a stage writes while handling a call."""

from __future__ import annotations

import json
import socket
import urllib.request

from prometheus_client import generate_latest

from agent.observability import configure_logging
from agent.textcall import run_text_call


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_metrics_count_events_latency_and_dead_letters_per_stage(text_pipeline):
    bus = text_pipeline.bus
    await bus.publish("transcripts", "call-x", b"garbage")
    await run_text_call(bus, ["你好", "云服务器多少钱"])
    metrics = text_pipeline.runner("nlu").metrics
    port = _free_port()
    metrics.serve(port)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'dianxiao_events_handled_total{stage="nlu",topic="transcripts"} 2.0' in body
    assert 'dianxiao_dead_letters_total{stage="nlu"} 1.0' in body
    # the nlu stage also reads bot.replies (the agent's last words, for the next turn): 2 + 2
    assert 'dianxiao_events_handled_total{stage="nlu",topic="bot.replies"} 2.0' in body
    assert 'dianxiao_stage_handle_duration_seconds_count{stage="nlu"} 4.0' in body
    assert "# TYPE dianxiao_duplicates_dropped_total counter" in body
    assert "# TYPE dianxiao_consumer_lag_messages gauge" in body


async def test_consumer_lag_is_a_gauge_per_topic_and_partition(text_pipeline):
    await run_text_call(text_pipeline.bus, ["你好"])
    runner = text_pipeline.runner("nlu")
    await runner._report_lag()
    body = generate_latest(runner.metrics.registry).decode()
    partitions = text_pipeline.bus.partitions
    # every group also reads call.control (for the calls' ends): one series per partition of each
    lines = [l for l in body.splitlines() if l.startswith("dianxiao_consumer_lag_messages{")]
    assert len([l for l in lines if 'topic="call.control"' in l]) == partitions
    lines = [l for l in lines if 'topic="transcripts"' in l]
    assert len(lines) == partitions  # one series per partition of the topic nlu reads
    assert 'group="nlu"' in lines[0] and 'stage="nlu"' in lines[0] and 'topic="transcripts"' in lines[0]
    assert {l.split('partition="')[1].split('"')[0] for l in lines} == {str(p) for p in range(partitions)}


async def test_json_logs_carry_call_id_turn_and_stage(text_pipeline, capsys):
    configure_logging("DEBUG", "json")
    await text_pipeline.bus.publish("transcripts", "call-log", b"not an event")
    await run_text_call(text_pipeline.bus, ["你好"], call_id="call-log")
    lines = [json.loads(l) for l in capsys.readouterr().err.splitlines() if l.startswith("{")]
    dead = [l for l in lines if l.get("event") == "dead letter"]
    assert dead and dead[0]["source_topic"] == "transcripts" and dead[0]["call_id"] == "call-log"
    handled = [l for l in lines if l.get("event") == "turn handled" and l.get("call_id") == "call-log"]
    # dtmf watches nlu.results (for the turn), hangup bot.replies (for a goodbye) and outcome
    # bot.replies (for the call's outcome at its end): one line each too
    assert {l["stage"] for l in handled} == {"nlu", "dst", "policy", "dtmf", "hangup", "outcome"}
    assert all(l["turn"] == 1 for l in handled)


async def test_at_info_each_stage_logs_one_line_per_caller_turn(text_pipeline, capsys):
    configure_logging("INFO", "json")
    await run_text_call(text_pipeline.bus, ["你好", "云服务器多少钱"], call_id="call-info")
    lines = [json.loads(l) for l in capsys.readouterr().err.splitlines() if l.startswith("{")]
    mine = [l for l in lines if l.get("call_id") == "call-info"]
    assert mine and all(l["event"] == "turn handled" and l["level"] == "info" for l in mine)
    per_turn = sorted((l["turn"], l["stage"]) for l in mine)
    # the nlu stage handles the caller's words and then the agent's reply (kept for the next turn)
    assert per_turn == [(t, s) for t in (1, 2) for s in ("dst", "dtmf", "hangup", "nlu", "nlu", "outcome", "policy")]
    assert all(isinstance(l["ms"], float) for l in mine)
