"""Running an outbound campaign: dial the leads with a concurrency limit, inside each lead's local
calling hours, never a number on the do-not-call list, retrying busy / no-answer with back-off,
and record one outcome per lead (CSV + CRM webhook outbox).

The dialer is pluggable: `SipDialer` places real SIP calls through the agent's user agent;
`SimulatedDialer` plays scripted customers over the real text pipeline (demos, tests, dry runs).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

import structlog

from agent import events as ev
from agent import topics
from agent.bus.base import Bus
from agent.textcall import ReplyWaiter, run_text_call
from connectors.campaign.crm import CrmWebhook, OutcomeCsv, OutcomeRecord
from connectors.campaign.leads import Lead
from connectors.campaign.policy import RETRYABLE, CallingHours, DoNotCallList, Outcome, RetryPolicy, outcome_from_actions

log = structlog.get_logger("dianxiao.campaign")


@dataclass(frozen=True)
class CallResult:
    outcome: Outcome
    call_id: str | None = None
    detail: str = ""
    actions: tuple[str, ...] = ()


class Dialer(Protocol):
    async def dial(self, lead: Lead, attempt: int) -> CallResult: ...


class Clock:
    """Wall time for scheduling (UTC).  Tests shift it to jump over calling-hours waits."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(timezone.utc) + self.offset

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FastForwardClock(Clock):
    """Waits longer than `real_limit_s` are skipped by moving the clock forward (dry runs, tests)."""

    def __init__(self, start: datetime | None = None, real_limit_s: float = 0.5) -> None:
        super().__init__()
        if start is not None:
            self.offset = start - datetime.now(timezone.utc)
        self.real_limit_s = real_limit_s

    async def sleep(self, seconds: float) -> None:
        if seconds > self.real_limit_s:
            self.offset += timedelta(seconds=seconds)
            await asyncio.sleep(0)
        else:
            await asyncio.sleep(max(0.0, seconds))


@dataclass
class CampaignConfig:
    name: str = "campaign"
    max_concurrent: int = 20
    hours: CallingHours = field(default_factory=CallingHours)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: leads not finished by then end as out_of_hours / their last retryable outcome
    ends_at: datetime | None = None
    #: where to persist numbers whose owner asked never to be called again
    dnc_path: Path | None = None


@dataclass
class Progress:
    total: int
    dialling: int = 0
    finished: int = 0
    attempts: int = 0
    waiting_for_hours: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)


class CampaignRunner:
    def __init__(self, leads: Sequence[Lead], dialer: Dialer, config: CampaignConfig | None = None, *,
                 dnc: DoNotCallList | None = None, csv_out: OutcomeCsv | None = None,
                 webhook: CrmWebhook | None = None, clock: Clock | None = None,
                 on_progress: Callable[[Progress], None] | None = None) -> None:
        self.leads = list(leads)
        self.dialer = dialer
        self.config = config or CampaignConfig()
        self.dnc = dnc or DoNotCallList()
        self.csv_out, self.webhook = csv_out, webhook
        self.clock = clock or Clock()
        self.on_progress = on_progress
        self.progress = Progress(total=len(self.leads))
        self.records: list[OutcomeRecord] = []
        self.max_in_flight = 0  # the most calls that were ever up at once (the concurrency bar)
        self._seq = itertools.count()

    def _finish(self, lead: Lead, outcome: Outcome, attempts: int, result: CallResult | None = None) -> None:
        record = OutcomeRecord(
            campaign=self.config.name, phone=lead.phone, name=lead.name, product_interest=lead.product_interest,
            outcome=outcome.value, attempts=attempts, call_id=result.call_id if result else None,
            detail=result.detail if result else "", finished_at=self.clock.now().isoformat(timespec="seconds"),
        )
        self.records.append(record)
        if self.csv_out is not None:
            self.csv_out.write(record)
        if self.webhook is not None:
            self.webhook.enqueue(record)
        self.progress.finished += 1
        self.progress.outcomes[outcome.value] += 1
        log.info("lead finished", phone=lead.phone, outcome=outcome.value, attempts=attempts)

    def _report(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.progress)

    async def run(self) -> list[OutcomeRecord]:
        queue: list[tuple[float, int, Lead, int]] = []
        start = self.clock.now().timestamp()
        for lead in self.leads:
            heapq.heappush(queue, (start, next(self._seq), lead, 1))
        running: dict[asyncio.Task[CallResult], tuple[Lead, int]] = {}
        last: dict[str, CallResult] = {}
        self._report()
        while queue or running:
            now = self.clock.now()
            # start every due lead while there is a free line
            while queue and queue[0][0] <= now.timestamp() and len(running) < self.config.max_concurrent:
                _, _, lead, attempt = heapq.heappop(queue)
                if lead.phone in self.dnc:  # checked at dial time: a number added mid-campaign counts
                    self._finish(lead, Outcome.DO_NOT_CALL, attempt - 1, last.get(lead.phone))
                    continue
                if not self.config.hours.allows(now, lead.timezone):
                    opening = self.config.hours.next_opening(now, lead.timezone)
                    if self.config.ends_at is not None and opening >= self.config.ends_at:
                        prev = last.get(lead.phone)
                        self._finish(lead, prev.outcome if prev else Outcome.OUT_OF_HOURS, attempt - 1, prev)
                    else:
                        heapq.heappush(queue, (opening.timestamp(), next(self._seq), lead, attempt))
                    continue
                task = asyncio.create_task(self._attempt(lead, attempt))
                running[task] = (lead, attempt)
                self.progress.attempts += 1
                self.max_in_flight = max(self.max_in_flight, len(running))
            self.progress.dialling = len(running)
            self.progress.waiting_for_hours = sum(
                1 for due, _, _, _ in queue if due > self.clock.now().timestamp()
            )
            self._report()
            next_due = queue[0][0] - self.clock.now().timestamp() if queue else None
            if running:
                timeout = None if next_due is None or len(running) >= self.config.max_concurrent else max(0.0, min(next_due, 0.5))
                done, _ = await asyncio.wait(running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    lead, attempt = running.pop(task)
                    result = task.result()
                    last[lead.phone] = result
                    if result.outcome in RETRYABLE and attempt < self.config.retry.max_attempts:
                        due = self.clock.now().timestamp() + self.config.retry.delay(attempt)
                        heapq.heappush(queue, (due, next(self._seq), lead, attempt + 1))
                        continue
                    if "exit_do_not_call" in result.actions:
                        # the customer asked never to be called again: honour it for every campaign
                        if self.config.dnc_path is not None:
                            self.dnc.append_to(self.config.dnc_path, lead.phone)
                        else:
                            self.dnc.add(lead.phone)
                    self._finish(lead, result.outcome, attempt, result)
            elif next_due is not None:
                await self.clock.sleep(next_due)
        self.progress.dialling = 0
        self._report()
        return self.records

    async def _attempt(self, lead: Lead, attempt: int) -> CallResult:
        try:
            return await self.dialer.dial(lead, attempt)
        except Exception as exc:  # one broken call never stops the campaign
            log.exception("dial failed", phone=lead.phone)
            return CallResult(Outcome.FAILED, detail=f"{type(exc).__name__}: {exc}")


# --- dialers ----------------------------------------------------------------------------------


class ReplyActions:
    """Tails bot.replies and keeps each call's actions (how the call went, for its outcome)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.actions: dict[str, list[str]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> "ReplyActions":
        self._task = asyncio.create_task(self._pump())
        await self._ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _pump(self) -> None:
        consumer = self.bus.consumer(f"campaign-{uuid.uuid4().hex[:8]}", [topics.REPLIES], start="latest")
        await consumer.start()
        self._ready.set()
        try:
            while True:
                for rec in await consumer.getmany(timeout_ms=200):
                    try:
                        reply = ev.decode(rec.value)
                    except ev.EventError:
                        continue
                    if isinstance(reply, ev.BotReply):
                        self.actions.setdefault(reply.call_id, []).append(reply.action)
        finally:
            await consumer.stop()


class SipDialer:
    """Real calls: the agent's SIP user agent dials `uri_template` through a trunk/registrar."""

    def __init__(self, agent: Any, trunk: tuple[str, int], actions: ReplyActions, *,
                 uri_template: str = "sip:{phone}@{host}:{port}", auth: tuple[str, str] | None = None,
                 ring_timeout_s: float = 30.0, max_call_s: float = 600.0) -> None:
        self.agent, self.trunk, self.actions = agent, trunk, actions
        self.uri_template, self.auth = uri_template, auth
        self.ring_timeout_s, self.max_call_s = ring_timeout_s, max_call_s

    async def dial(self, lead: Lead, attempt: int) -> CallResult:
        from connectors.sip.agent import DialError

        uri = self.uri_template.format(phone=lead.phone, host=self.trunk[0], port=self.trunk[1])
        try:
            call = await self.agent.dial(uri, self.trunk, auth=self.auth, ring_timeout_s=self.ring_timeout_s,
                                         metadata={"lead": lead.name, "product_interest": lead.product_interest})
        except DialError as exc:
            if exc.status in (486, 600, 603):
                return CallResult(Outcome.BUSY, detail=str(exc))
            if exc.status in (408, 480, 487):
                return CallResult(Outcome.NO_ANSWER, detail=str(exc))
            return CallResult(Outcome.FAILED, detail=str(exc))
        try:
            await asyncio.wait_for(call.ended.wait(), self.max_call_s)
        except asyncio.TimeoutError:
            await self.agent.hangup(call.call_id, "max_duration")
        await asyncio.sleep(0.3)  # the last reply reaches the tap
        actions = tuple(self.actions.actions.pop(call.call_id, []))
        return CallResult(outcome_from_actions(list(actions)), call.call_id, call.end_reason or "", actions)


#: a scripted customer: (lead, attempt) -> "busy" | "no_answer" | list of things to say
CustomerScript = Callable[[Lead, int], "str | list[str]"]


class SimulatedDialer:
    """Scripted customers over the real text pipeline (no telephony): for demos and dry runs."""

    def __init__(self, bus: Bus, script: CustomerScript, waiter: ReplyWaiter, *, campaign: str = "campaign",
                 reply_timeout_s: float = 10.0) -> None:
        self.bus, self.script, self.waiter = bus, script, waiter
        self.campaign, self.reply_timeout_s = campaign, reply_timeout_s

    async def dial(self, lead: Lead, attempt: int) -> CallResult:
        said = self.script(lead, attempt)
        if said == "busy":
            return CallResult(Outcome.BUSY, detail="486 Busy Here (simulated)")
        if said == "no_answer" or isinstance(said, str):
            return CallResult(Outcome.NO_ANSWER, detail="408 no answer (simulated)")
        call = await run_text_call(self.bus, said, waiter=self.waiter, timeout=self.reply_timeout_s,
                                   caller=lead.phone, campaign=self.campaign, direction="outbound",
                                   metadata={"lead": lead.name, "product_interest": lead.product_interest})
        actions = tuple(r.action for r in call.replies)
        return CallResult(outcome_from_actions(list(actions)), call.call_id,
                          "bot ended" if call.ended_by_bot else "customer hung up", actions)
