"""Run simulated calls and judge them: completion (the persona's goal reached within its turns),
joint goal accuracy at call end, compliance (do-not-call honoured on the turn it is said; no
price outside the catalogue; "are you a robot?" answered truthfully), and why calls failed.

`simulate_call` runs a call in-process through NLU + the pure dialogue core (fast: 500 calls in
seconds); `simulate_call_on_bus` runs the same persona over the real topics with the stages
running (what the tests do for a few calls of each persona)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from agent.bus.base import Bus
from agent.dialogue import DialogueState, Playbook
from agent.dialogue.turn import step
from agent.events import NluResult
from agent.nlu import Understander, understand_turn
from agent.simulator.personas import Caller

CONTEXT_TURNS = 3
_PRICE = re.compile(r"(\d+)元")


@dataclass
class Turn:
    caller: str
    bot: str
    action: str
    ends_call: bool


@dataclass
class CallResult:
    persona: str
    turns: list[Turn]
    completed: bool
    missing: list[str]
    violations: list[str]
    joint_goal: bool | None  # None: the call was judged over the bus, where the state is not read back
    slot_errors: list[str] = field(default_factory=list)
    failure: str | None = None
    call_id: str | None = None
    expected_slots: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "persona": self.persona,
            "completed": self.completed,
            "failure": self.failure,
            "missing": self.missing,
            "violations": self.violations,
            "slot_errors": self.slot_errors,
            "turns": [t.__dict__ for t in self.turns],
        }


@dataclass
class _Reply:
    text: str
    action: str
    ends_call: bool


def valid_amounts(playbook: Playbook) -> set[int]:
    """Every yuan amount a reply may state: a plan or add-on price, or a plan plus add-ons."""
    out: set[int] = set()
    for prod in playbook.products:
        addon_prices = [a.price_year for a in prod.addons]
        out |= set(addon_prices)
        for plan in prod.plans:
            for k in range(len(addon_prices) + 1):
                for combo in combinations(addon_prices, k):
                    out.add(plan.price_year + sum(combo))
    return out


def compliance_violations(caller: Caller, turns: list[Turn], playbook: Playbook) -> list[str]:
    out = []
    amounts = valid_amounts(playbook)
    for i, t in enumerate(turns, start=1):
        for m in _PRICE.finditer(t.bot):
            if int(m.group(1)) not in amounts:
                out.append(f"turn {i}: price {m.group(1)}元 is not in the catalogue")
        if caller.said_dnc_on == i and not (t.action.startswith("exit_do_not_call") and t.ends_call):
            out.append(f"turn {i}: do-not-call not honoured (bot did {t.action})")
        if caller.said_dnc_on is not None and i > caller.said_dnc_on:
            out.append(f"turn {i}: the call went on after do-not-call")
        if re.search(r"机器人|真人|机器|人工智能", t.caller) and re.search(r"吗|么|是不是|\?|？", t.caller):
            if "AI" not in t.bot and "转接人工" not in t.bot:
                out.append(f"turn {i}: asked if it is a robot, bot did not say it is an AI")
    return out


def slot_errors(state: DialogueState, expected: dict[str, Any]) -> list[str]:
    """Expected slots the state does not hold exactly (lists compared as sets)."""
    errors = []
    for slot, want in expected.items():
        have = state.value(slot)
        if slot in ("features", "systems"):
            ok = sorted(map(str, have or [])) == sorted(map(str, want or []))
        elif isinstance(want, (int, float)) and not isinstance(want, bool):
            ok = isinstance(have, (int, float)) and float(have) == float(want)
        else:
            ok = have is not None and str(have).lower() == str(want).lower()
        if not ok:
            errors.append(f"{slot}: want {want!r}, have {have!r}")
    return errors


def _failure(caller: Caller, turns: list[Turn], violations: list[str]) -> str | None:
    if violations:
        return "compliance"
    if caller.completed():
        return None
    if not turns:
        return "no turns"
    if len(turns) >= caller.max_turns:
        return "too many turns: " + ",".join(caller.missing())
    last = turns[-1]
    if last.ends_call:
        return f"bot ended the call ({last.action.split('+')[-1]}) before: " + ",".join(caller.missing())
    return "caller gave up: " + ",".join(caller.missing())


def simulate_call(caller: Caller, playbook: Playbook, understander: Understander, call_id: str = "sim") -> CallResult:
    """One call in-process: caller -> NLU -> dialogue core -> reply -> caller."""
    state = DialogueState()
    replies: list[_Reply] = []
    turns: list[Turn] = []
    said: list[str] = []
    turn = 0
    while True:
        text = caller(turn + 1, replies)
        if text is None:
            break
        turn += 1
        out = understand_turn(understander, text, tuple(said[-CONTEXT_TURNS:]), replies[-1].text if replies else None)
        said.append(text)
        result = NluResult(call_id=call_id, turn=turn, text=text, intents=out.intents, entities=out.entities,
                           decided_by=out.decided_by if out.decided_by in ("rule", "model") else "rule")
        state, _action, reply = step(state, result, playbook)
        replies.append(_Reply(reply.text, reply.action, reply.ends_call))
        turns.append(Turn(text, reply.text, reply.action, reply.ends_call))
        if reply.ends_call:
            caller(turn + 1, replies)  # let the caller see the last reply
            break
    violations = compliance_violations(caller, turns, playbook)
    errors = slot_errors(state, caller.goal.expected_slots)
    return CallResult(
        persona=caller.persona,
        turns=turns,
        completed=caller.completed() and not violations,
        missing=caller.missing(),
        violations=violations,
        joint_goal=not errors,
        slot_errors=errors,
        failure=_failure(caller, turns, violations),
    )


async def simulate_call_on_bus(caller: Caller, playbook: Playbook, bus: Bus, waiter: Any = None,
                               timeout: float = 10.0) -> CallResult:
    """The same call over the real topics (the stages must be running on `bus`)."""
    from agent.textcall import run_text_call

    call = await run_text_call(bus, caller, waiter=waiter, timeout=timeout, playbook=playbook.name)
    call_id = call.call_id
    if call.replies and call.replies[-1].ends_call:
        caller(len(call.replies) + 1, call.replies)
    said = caller.said
    turns = [Turn(said[i], r.text, r.action, r.ends_call) for i, r in enumerate(call.replies)]
    violations = compliance_violations(caller, turns, playbook)
    return CallResult(
        persona=caller.persona,
        turns=turns,
        completed=caller.completed() and not violations,
        missing=caller.missing(),
        violations=violations,
        joint_goal=None,
        failure=_failure(caller, turns, violations),
        call_id=call_id,
        expected_slots=dict(caller.goal.expected_slots),
    )


async def judge_final_states(bus: Bus, results: list[CallResult]) -> None:
    """Fill JGA for calls run over the bus from the last dialogue.state each call published."""
    from agent import events as ev
    from agent import topics

    last: dict[str, dict[str, Any]] = {}
    consumer = bus.consumer(f"sim-judge-{id(results)}", [topics.DIALOGUE], start="earliest")
    await consumer.start()
    try:
        idle = 0
        while idle < 3:
            records = await consumer.getmany(timeout_ms=200)
            idle = 0 if records else idle + 1
            for rec in records:
                try:
                    event = ev.decode(rec.value)
                except ev.EventError:
                    continue
                if isinstance(event, ev.DialogueStateUpdated):
                    last[event.call_id] = event.state
    finally:
        await consumer.stop()
    for r in results:
        raw = last.get(r.call_id or "")
        if raw is None:
            continue
        state = DialogueState.model_validate({k: v for k, v in raw.items() if k != "next_action"})
        r.slot_errors = slot_errors(state, r.expected_slots)
        r.joint_goal = not r.slot_errors


def summarise(results: list[CallResult]) -> dict[str, Any]:
    n = len(results) or 1
    judged = [r for r in results if r.joint_goal is not None]
    by_persona: dict[str, dict[str, Any]] = {}
    for persona in sorted({r.persona for r in results}):
        rs = [r for r in results if r.persona == persona]
        by_persona[persona] = {
            "calls": len(rs),
            "completion": round(sum(r.completed for r in rs) / len(rs), 4),
        }
    failures = Counter(r.failure for r in results if r.failure)
    return {
        "calls": len(results),
        "completion_rate": round(sum(r.completed for r in results) / n, 4),
        "avg_turns": round(sum(len(r.turns) for r in results) / n, 2),
        "jga": round(sum(bool(r.joint_goal) for r in judged) / len(judged), 4) if judged else None,
        "compliance_violations": sum(len(r.violations) for r in results),
        "by_persona": by_persona,
        "failures": dict(failures.most_common()),
    }
