"""An outbound campaign: a dial list is worked through with a concurrency limit, inside each
lead's calling hours, skipping the do-not-call list, retrying busy lines with back-off, and every
lead ends with exactly one outcome in the CSV and at the CRM (even when the CRM was down)."""

from __future__ import annotations

import asyncio
import csv
import json
import threading
from datetime import datetime, time, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agent import events as ev
from agent import topics
from agent.textcall import ReplyWaiter
from connectors.campaign.crm import CrmWebhook, OutcomeCsv, OutcomeRecord, verify
from connectors.campaign.leads import read_leads
from connectors.campaign.policy import CallingHours, DoNotCallList, Outcome, RetryPolicy, outcome_from_actions
from connectors.campaign.runner import CampaignConfig, CampaignRunner, FastForwardClock, SimulatedDialer
from connectors.mqtt.broker import free_tcp_port
from tests.test_sip_calls import log_events

LEADS = """phone,name,product_interest,timezone
138-0000-0001,王先生,云服务器,Asia/Shanghai
13800000002,李女士,SaaS,Asia/Shanghai
13800000003,张总,云服务器,Asia/Shanghai
+86 138 0000 0004,赵经理,云服务器,Asia/Shanghai
13800000005,刘先生,,Asia/Shanghai
13800000006,陈女士,云服务器,America/New_York
13800000007,周先生,SaaS,Asia/Shanghai
13800000008,吴女士,云服务器,Asia/Shanghai
not-a-number,坏数据,,Asia/Shanghai
13800000009,孙先生,,Mars/Olympus
13800000001,重复,,Asia/Shanghai
"""

SCRIPTS = {
    "+8613800000001": ["云服务器多少钱", "好的，可以安排演示"],  # interested
    "+8613800000002": ["现在没空，明天下午三点再打给我吧"],  # callback
    "+8613800000003": ["你好", "不需要，谢谢"],  # rejected
    "+8613800000005": ["你好", "不要再给我打电话了"],  # asks never to be called again
    "+8613800000006": ["云服务器多少钱", "好的，可以安排演示"],  # in New York: waits for 09:00 there
    "+8613800000008": ["云服务器多少钱", "好的，可以安排演示"],
}


def test_a_dial_list_with_bad_rows_keeps_the_good_ones(tmp_path):
    path = tmp_path / "leads.csv"
    path.write_text(LEADS, encoding="utf-8")
    leads, bad = read_leads(path)
    assert [lead.phone for lead in leads][:4] == ["+8613800000001", "+8613800000002", "+8613800000003", "+8613800000004"]
    assert len(leads) == 8
    assert [(b.line, b.reason) for b in bad] == [
        (10, "phone: not a phone number: 'not-a-number'"), (11, "timezone: unknown time zone 'Mars/Olympus'"),
        (12, "duplicate of an earlier lead: +8613800000001")]


def test_calling_hours_follow_the_leads_own_clock():
    hours = CallingHours(time(9), time(20))
    at = datetime(2026, 11, 27, 2, 0, tzinfo=timezone.utc)  # 10:00 in Shanghai, 21:00 in New York
    assert hours.allows(at, "Asia/Shanghai") and not hours.allows(at, "America/New_York")
    assert hours.next_opening(at, "America/New_York") == datetime(2026, 11, 27, 14, 0, tzinfo=timezone.utc)
    weekdays = CallingHours.parse("09:00-18:00", "0-4")
    saturday = datetime(2026, 11, 28, 2, 0, tzinfo=timezone.utc)
    assert weekdays.next_opening(saturday, "Asia/Shanghai") == datetime(2026, 11, 30, 1, 0, tzinfo=timezone.utc)
    with pytest.raises(ValueError):
        CallingHours.parse("20:00-09:00")


def test_retries_back_off_and_outcomes_come_from_what_the_bot_did():
    retry = RetryPolicy(base_s=600, factor=2, max_s=3600)
    assert [retry.delay(n) for n in (1, 2, 3, 4)] == [600, 1200, 2400, 3600]
    assert outcome_from_actions(["opening", "book_callback"]) == Outcome.CALLBACK_BOOKED
    assert outcome_from_actions(["ask_slot", "book_demo"]) == Outcome.INTERESTED
    assert outcome_from_actions(["opening", "exit_do_not_call"]) == Outcome.REJECTED
    assert outcome_from_actions(["opening"]) == Outcome.REACHED


async def test_a_campaign_works_the_list_within_every_rule(rules_pipeline, tmp_path):
    bus = rules_pipeline.bus
    (tmp_path / "leads.csv").write_text(LEADS, encoding="utf-8")
    leads, _ = read_leads(tmp_path / "leads.csv")
    dnc_path = tmp_path / "dnc.txt"
    dnc_path.write_text("# customers who asked\n+86 138 0000 0004\n", encoding="utf-8")
    clock = FastForwardClock(start=datetime(2026, 11, 27, 2, 0, tzinfo=timezone.utc))  # 10:00 Shanghai
    dialled: dict[str, list[tuple[int, datetime]]] = {}

    def customer(lead, attempt):
        dialled.setdefault(lead.phone, []).append((attempt, clock.now()))
        if lead.phone == "+8613800000007":
            return "busy" if attempt == 1 else ["现在没空，明天下午三点再打给我吧"]
        if lead.phone == "+8613800000004":
            raise AssertionError("a do-not-call number was dialled")
        return SCRIPTS.get(lead.phone, "no_answer")

    out = OutcomeCsv(tmp_path / "outcomes.csv")
    config = CampaignConfig(name="双十一回访", max_concurrent=3, hours=CallingHours(time(9), time(20)),
                            retry=RetryPolicy(max_attempts=3, base_s=0.05, factor=2), dnc_path=dnc_path)
    async with ReplyWaiter(bus) as waiter:
        runner = CampaignRunner(leads, SimulatedDialer(bus, customer, waiter, campaign=config.name), config,
                                dnc=DoNotCallList.load(dnc_path), csv_out=out, clock=clock)
        records = await asyncio.wait_for(runner.run(), 60)
    out.close()

    by_phone = {r.phone: r for r in records}
    assert len(records) == len(leads) == 8  # one outcome per lead, no more, no less
    assert {p: r.outcome for p, r in by_phone.items()} == {
        "+8613800000001": "interested", "+8613800000002": "callback_booked", "+8613800000003": "rejected",
        "+8613800000004": "do_not_call", "+8613800000005": "rejected", "+8613800000006": "interested",
        "+8613800000007": "callback_booked", "+8613800000008": "interested",
    }
    assert runner.max_in_flight == 3
    # busy once, then reached on the retry; the New York lead was called at 09:00 its time
    assert [a for a, _ in dialled["+8613800000007"]] == [1, 2] and by_phone["+8613800000007"].attempts == 2
    assert dialled["+8613800000006"][0][1] >= datetime(2026, 11, 27, 14, 0, tzinfo=timezone.utc)
    assert "+8613800000004" not in dialled
    # the customer who said "never call again" is on the list now, for every later campaign
    assert "+8613800000005" in DoNotCallList.load(dnc_path)
    rows = list(csv.DictReader((tmp_path / "outcomes.csv").open(encoding="utf-8")))
    assert sorted(r["phone"] for r in rows) == sorted(by_phone)
    assert all(r["campaign"] == "双十一回访" for r in rows)
    started = [e for e in log_events(bus, topics.CONTROL) if isinstance(e, ev.CallStarted)]
    assert {e.caller for e in started} == set(SCRIPTS) | {"+8613800000007"}
    assert all(e.campaign == "双十一回访" and e.direction == "outbound" for e in started)


async def test_no_answer_is_retried_then_recorded(embedded_bus, tmp_path):
    leads, _ = read_leads(_write(tmp_path, "phone\n13900000000\n"))
    calls = []

    class Unanswered:
        async def dial(self, lead, attempt):
            calls.append(attempt)
            from connectors.campaign.runner import CallResult
            return CallResult(Outcome.NO_ANSWER, detail="408")

    runner = CampaignRunner(leads, Unanswered(), CampaignConfig(retry=RetryPolicy(max_attempts=3, base_s=0.01)),
                            clock=FastForwardClock(start=datetime(2026, 11, 27, 3, 0, tzinfo=timezone.utc)))
    records = await runner.run()
    assert calls == [1, 2, 3]
    assert [(r.outcome, r.attempts) for r in records] == [("no_answer", 3)]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "leads.csv"
    path.write_text(text, encoding="utf-8")
    return path


# --- the CRM webhook ---------------------------------------------------------------------------


class Crm:
    """A real HTTP endpoint that checks the signature, and can fail on purpose."""

    def __init__(self, port: int, secret: str, fail_first: int = 0) -> None:
        self.received: list[dict] = []
        self.bad_signatures = 0
        self.fail_left = fail_first
        crm = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if crm.fail_left > 0:
                    crm.fail_left -= 1
                    self.send_response(503)
                elif not verify(secret, self.headers["X-Dianxiao-Timestamp"], body, self.headers["X-Dianxiao-Signature"]):
                    crm.bad_signatures += 1
                    self.send_response(401)
                else:
                    crm.received.append(json.loads(body))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def record(phone: str, outcome: str = "interested") -> OutcomeRecord:
    return OutcomeRecord("c", phone, "客户", "云服务器", outcome, 1, None, "", "2026-11-27T02:00:00+00:00")


async def test_outcomes_survive_a_crm_that_is_down_and_a_restart(tmp_path):
    port = free_tcp_port()
    url = f"http://127.0.0.1:{port}/hooks/outcomes"
    outbox = tmp_path / "outbox.sqlite"
    first = CrmWebhook(url, "hook-secret", outbox, base_s=0.05)
    for n in range(3):
        first.enqueue(record(f"1380000000{n}"))
    stop = asyncio.Event()
    stop.set()
    await first.run(stop, drain_s=0.3)  # the CRM is down: nothing delivered, nothing lost
    assert first.pending() == 3 and first.delivered == 0
    first.close()

    crm = Crm(port, "hook-secret", fail_first=2)  # it comes back, still failing twice
    try:
        second = CrmWebhook(url, "hook-secret", outbox, base_s=0.05)  # a new process, same outbox
        await asyncio.wait_for(second.run(stop, drain_s=10), 15)
        assert second.pending() == 0
        second.close()
    finally:
        crm.close()
    assert sorted(r["phone"] for r in crm.received) == ["13800000000", "13800000001", "13800000002"]
    assert crm.bad_signatures == 0


async def test_a_webhook_signed_with_the_wrong_secret_is_refused_and_kept(tmp_path):
    port = free_tcp_port()
    crm = Crm(port, "the-real-secret")
    try:
        hook = CrmWebhook(f"http://127.0.0.1:{port}/", "a-wrong-secret", tmp_path / "outbox.sqlite", base_s=0.05)
        hook.enqueue(record("13800000000"))
        stop = asyncio.Event()
        stop.set()
        await hook.run(stop, drain_s=0.3)
        assert crm.bad_signatures >= 1 and crm.received == []
        assert hook.pending() == 1  # kept for when the secret is fixed
        hook.close()
    finally:
        crm.close()
