"""`dianxiao campaign report`: conversion per arm of an A/B campaign with intervals, and a
sequential test with a stop rule that stays valid however often it is looked at.

The arms are read from the call log (call.started: campaign, playbook version), conversions
from each call's call.outcome (a win: demo booked or deal closed on the call; `on="deal"`: the
CRM's deal won).  Calls are taken in the order they ended; every `look_every` calls the mSPRT
(stats.msprt) is evaluated for each arm against the first (the control), at alpha divided by
the number of comparisons; the campaign may stop at the first look where it rejects "no
difference", and the confidence sequence at that look is still a 1 − alpha interval."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent import events as ev
from agent import topics
from agent.errors import OperatorError
from agent.learning.stats import msprt, wilson
from agent.outcomes import WINS


class ReportError(OperatorError, ValueError):
    hint = "name a call log that holds the campaign (dianxiao campaign run --arms … --log FILE)"


@dataclass
class ArmResult:
    arm: str
    calls: int
    wins: int
    rate: float
    lo: float
    hi: float


@dataclass
class Comparison:
    arm: str
    control: str
    diff: float
    fixed_95: tuple[float, float]
    always_valid: tuple[float, float]
    alpha: float
    stopped_at: int | None  # calls (all arms) at the first look where the rule fired
    verdict: str


@dataclass
class CampaignReport:
    campaign: str | None
    on: str
    arms: list[ArmResult]
    comparisons: list[Comparison]
    looks: int
    look_every: int
    unassigned: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        lines = [f"campaign {self.campaign or '(all)'} — conversion = {'deal won' if self.on == 'deal' else 'demo booked or deal closed'}"]
        lines.append(f"{'arm':<18}{'calls':>7}{'wins':>7}{'rate':>8}   95 % Wilson")
        for a in self.arms:
            lines.append(f"{a.arm:<18}{a.calls:>7}{a.wins:>7}{a.rate:>8.1%}   {a.lo:.1%} – {a.hi:.1%}")
        for c in self.comparisons:
            lines.append(f"{c.arm} − {c.control}: {c.diff:+.1%}  fixed-n 95 % CI {c.fixed_95[0]:+.1%} to {c.fixed_95[1]:+.1%}; "
                         f"always-valid {1 - c.alpha:.1%} CS {c.always_valid[0]:+.1%} to {c.always_valid[1]:+.1%}")
            lines.append(f"  stop rule (mSPRT, a look every {self.look_every} calls): {c.verdict}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _calls(path: Path, campaign: str | None) -> list[tuple[float, str, bool, bool]]:
    """(ended at, arm, call win, deal won) per call of the campaign, in the order they ended."""
    from agent.bus.embedded import open_log_db

    if not path.is_file():
        raise ReportError(f"no call log at {path}")
    db = open_log_db(path)
    info: dict[str, dict[str, Any]] = {}
    try:
        for key, value in db.execute("SELECT key, value FROM log WHERE topic=? ORDER BY ts", (topics.CONTROL,)):
            try:
                e = ev.decode(bytes(value))
            except ev.EventError:
                continue
            c = info.setdefault(key, {})
            if isinstance(e, ev.CallStarted):
                c["campaign"] = e.campaign
                c["arm"] = (e.metadata or {}).get("arm") or e.playbook
            elif isinstance(e, ev.CallEnded):
                c["ended"] = e.ts_wall
            elif isinstance(e, ev.CallOutcome):
                if e.kind == "call":
                    c["win"] = e.outcome in WINS
                    c.setdefault("ended", e.ts_wall)
                elif e.outcome == "deal_won":
                    c["deal"] = True
    finally:
        db.close()
    out = [(c["ended"], c.get("arm") or "", bool(c.get("win")), bool(c.get("deal"))) for c in info.values()
           if "ended" in c and "win" in c and (campaign is None or c.get("campaign") == campaign)]
    return sorted(out)


def report(path: Path, campaign: str | None = None, *, on: str = "call", alpha: float = 0.05, look_every: int = 200,
           tau: float = 0.05) -> CampaignReport:
    calls = _calls(path, campaign)
    if not calls:
        raise ReportError(f"{path} holds no finished calls{f' of campaign {campaign!r}' if campaign else ''} with an outcome")
    arms: list[str] = []
    for _, arm, _, _ in calls:
        if arm and arm not in arms:
            arms.append(arm)
    arms.sort()
    unassigned = sum(1 for _, arm, _, _ in calls if not arm)
    if len(arms) < 2:
        raise ReportError(f"campaign {campaign or ''} has {len(arms)} arm(s) ({', '.join(arms)}): a report compares two or more",
                          hint="run the campaign with --arms A,B")
    win_of = (lambda c: c[3]) if on == "deal" else (lambda c: c[2])
    control = arms[0]
    a_alpha = alpha / (len(arms) - 1)
    counts = {a: [0, 0] for a in arms}
    stopped: dict[str, int | None] = {a: None for a in arms[1:]}
    looks = 0
    for i, c in enumerate(calls, start=1):
        if not c[1]:
            continue
        counts[c[1]][0] += 1
        counts[c[1]][1] += win_of(c)
        if i % look_every == 0 or i == len(calls):
            looks += 1
            for arm in arms[1:]:
                (na, ka), (nb, kb) = counts[control], counts[arm]
                if stopped[arm] is None and na and nb and msprt(ka, na, kb, nb, a_alpha, tau).reject:
                    stopped[arm] = i
    results = []
    for a in arms:
        n, k = counts[a]
        lo, hi = wilson(k, n)
        results.append(ArmResult(a, n, k, k / n if n else 0.0, lo, hi))
    comps = []
    for arm in arms[1:]:
        (na, ka), (nb, kb) = counts[control], counts[arm]
        s = msprt(ka, na, kb, nb, a_alpha, tau)
        if stopped[arm] is not None:
            verdict = (f"stop — {arm} {'beats' if s.diff > 0 else 'loses to'} {control}; the rule fired at the look after "
                       f"{stopped[arm]} calls")
        else:
            verdict = "keep going — no difference shown yet at this alpha"
        comps.append(Comparison(arm, control, s.diff, (s.fixed_lo, s.fixed_hi), (s.cs_lo, s.cs_hi), a_alpha, stopped[arm], verdict))
    notes = [f"{unassigned} calls had no arm and were left out"] if unassigned else []
    return CampaignReport(campaign, on, results, comps, looks, look_every, unassigned, notes)


def write_json(rep: CampaignReport, path: Path) -> None:
    path.write_text(json.dumps(rep.as_dict(), ensure_ascii=False, indent=2), encoding="utf-8")


__all__ = ["ArmResult", "CampaignReport", "Comparison", "ReportError", "report", "write_json"]
