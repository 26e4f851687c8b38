"""Issue 17: the agent knows how many calls it can serve.  Past its capacity a new caller is
refused at once (486 Busy Here with Retry-After), and every caller it did admit is answered."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from agent.observability import Metrics
from agent.testing import running_pipeline
from connectors.echo import EchoStage
from connectors.sip.agent import SipAgent, SipAgentConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from bench_voice import Caller, Turn  # noqa: E402  (the benchmark's real SIP/RTP phone)

import numpy as np  # noqa: E402


def a_sentence() -> list[Turn]:
    t = np.arange(8000 * 2) / 8000
    tone = (6000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)  # 2 s the echo line plays back
    turn = Turn.__new__(Turn)
    from agent.speech.codec import ulaw_encode

    turn.name, turn.paused = "tone", False
    turn.frames = [ulaw_encode(tone[i : i + 160]) for i in range(0, len(tone), 160)]
    turn.speech_end_frame = len(turn.frames)
    return [turn]


async def test_callers_past_capacity_are_refused_busy_and_every_admitted_caller_is_answered(embedded_bus):
    metrics = Metrics()
    async with running_pipeline(embedded_bus, stages=[EchoStage()], metrics=metrics):
        async with SipAgent(embedded_bus, SipAgentConfig(port=0, max_calls=2, retry_after_s=20)) as agent:
            agent.metrics = metrics
            callers = [Caller(agent.address, a_sentence(), reply_timeout_s=4) for _ in range(4)]
            await asyncio.gather(*(c.run() for c in callers))

    admitted = [c for c in callers if c.status == "answered"]
    refused = [c for c in callers if c.status == "refused"]
    assert len(admitted) == 2 and len(refused) == 2
    # refused cleanly: Busy Here, and when to try again
    assert all(c.refused_with.startswith("SIP/2.0 486") and "Retry-After: 20" in c.refused_with for c in refused)
    # no admitted caller was left waiting: each one's turn was answered with audio
    assert all(r["answered"] for c in admitted for r in c.results)
    assert agent.admitted == 2 and agent.refused_busy == 2
    sample = {s.name + str(s.labels): s.value for m in metrics.registry.collect() for s in m.samples}
    assert sample["dianxiao_calls_admitted_total{'connector': 'sip'}"] == 2
    assert sample["dianxiao_calls_refused_total{'connector': 'sip'}"] == 2
