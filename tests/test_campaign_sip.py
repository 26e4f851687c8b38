"""A campaign that really dials: the agent's SIP user agent calls each lead through a trunk
(sipp answering as the customers' phones); a trunk that never answers ends as no_answer after
the retries."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from agent import events as ev
from agent import topics
from connectors.campaign.leads import read_leads
from connectors.campaign.policy import RetryPolicy
from connectors.campaign.runner import CampaignConfig, CampaignRunner, FastForwardClock, ReplyActions, SipDialer
from connectors.sip.agent import SipAgent, SipAgentConfig
from connectors.sip.peers import Sipp, free_udp_port, have
from tests.test_sip_calls import log_events

pytestmark = pytest.mark.skipif(not have("sipp"), reason="sipp (sip-tester) not installed")

PHONES_ANSWER_THEN_HANG_UP = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="customer picks up, listens 1 s, hangs up">
  <recv request="INVITE">
    <action>
      <ereg regexp="sip:[^>]*" search_in="hdr" header="Contact:" assign_to="contact" />
      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="caller" />
      <ereg regexp=".*" search_in="hdr" header="To:" assign_to="callee" />
    </action>
  </recv>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
]]></send>
  <recv request="ACK" />
  <pause milliseconds="1000" />
  <send><![CDATA[
BYE [$contact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: [$callee];tag=[pid]SIPpTag01[call_number]
To: [$caller]
Call-ID: [call_id]
CSeq: 2 BYE
Max-Forwards: 70
Content-Length: 0
]]></send>
  <recv response="200" />
</scenario>
"""


async def test_a_campaign_dials_its_leads_over_sip(embedded_bus, tmp_path):
    (tmp_path / "leads.csv").write_text("phone,name\n13800000001,王先生\n13800000002,李女士\n", encoding="utf-8")
    leads, _ = read_leads(tmp_path / "leads.csv")
    scenario = tmp_path / "phones.xml"
    scenario.write_text(PHONES_ANSWER_THEN_HANG_UP)
    sipp = Sipp(tmp_path / "sipp")
    proc = sipp.start(str(scenario), None, "-rtp_echo", calls=2, limit_s=30)
    try:
        await asyncio.sleep(0.5)
        async with SipAgent(embedded_bus, SipAgentConfig(port=0), campaign="回访") as agent:
            async with ReplyActions(embedded_bus) as actions:
                dialer = SipDialer(agent, ("127.0.0.1", sipp.port), actions, ring_timeout_s=5, max_call_s=10)
                runner = CampaignRunner(leads, dialer, CampaignConfig(name="回访", max_concurrent=2),
                                        clock=FastForwardClock(start=datetime(2026, 11, 27, 3, 0, tzinfo=timezone.utc)))
                records = await asyncio.wait_for(runner.run(), 30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert sorted((r.phone, r.outcome, r.attempts) for r in records) == [
        ("+8613800000001", "reached", 1), ("+8613800000002", "reached", 1)]
    assert all(r.call_id and r.call_id.startswith("sip-") for r in records)
    assert runner.max_in_flight == 2
    started = [e for e in log_events(embedded_bus, topics.CONTROL) if isinstance(e, ev.CallStarted)]
    assert sorted(e.metadata["lead"] for e in started) == ["李女士", "王先生"]
    assert all(e.direction == "outbound" and e.campaign == "回访" for e in started)
    ended = [e for e in log_events(embedded_bus, topics.CONTROL) if isinstance(e, ev.CallEnded)]
    assert [e.reason for e in ended] == ["caller_hangup", "caller_hangup"]


async def test_a_trunk_that_never_answers_ends_as_no_answer_after_retries(embedded_bus, tmp_path):
    (tmp_path / "leads.csv").write_text("phone\n13900000000\n", encoding="utf-8")
    leads, _ = read_leads(tmp_path / "leads.csv")
    silent = ("127.0.0.1", free_udp_port())  # nothing listens there
    async with SipAgent(embedded_bus, SipAgentConfig(port=0)) as agent:
        async with ReplyActions(embedded_bus) as actions:
            dialer = SipDialer(agent, silent, actions, ring_timeout_s=0.5)
            runner = CampaignRunner(leads, dialer, CampaignConfig(retry=RetryPolicy(max_attempts=2, base_s=0.05)),
                                    clock=FastForwardClock(start=datetime(2026, 11, 27, 3, 0, tzinfo=timezone.utc)))
            records = await asyncio.wait_for(runner.run(), 20)
    assert [(r.outcome, r.attempts, r.detail) for r in records] == [("no_answer", 2, "408 no answer")]
    assert log_events(embedded_bus, topics.CONTROL) == []  # no call ever started
