"""`dianxiao learn`: which moves are followed by wins more often than the playbook's own, per
situation, with counts and intervals, controlling for the lead segment — and a playbook
proposal (a YAML diff) plus an HTML report a sales manager can accept or reject.

Method.  A decision is one objection a caller raised and the seller's answer to it (its act).
For each situation (objection type) every move is compared with the current playbook's move
by the difference of win rates *within* strata of lead segment × source (bot calls are
compared with bot calls, a human seller's with the same seller's), averaged over the strata
where both moves were used, with a 95 % interval (stats.stratified_lift).  A move is proposed
when that interval is above zero and the playbook can say it: it has words for the act, or
the winning human calls give them (a new template).  Correlation is not causation: the bot's
calls are trustworthy for this only when they were explored (randomised moves); a human's
choices may follow the customer, which the report says beside each number."""

from __future__ import annotations

import difflib
import html
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agent.dialogue import Playbook
from agent.dialogue.policy import STAGE_OF
from agent.learning import versions
from agent.learning.acts import ACTS, OBJECTIONS
from agent.learning.data import CallRecord, size_band
from agent.learning.stats import Lift, stratified_lift, wilson
from agent.outcomes import STAGES, WINS

#: what the shipped policy answers each objection with (agent/dialogue/policy.py), as acts
BUILTIN_ACT = {"objection.price": "cheaper_plan", "objection.competitor": "compare_rival",
               "objection.timing": "offer_callback", "objection.authority": "offer_callback"}
MIN_N = 30  # fewer decisions than this for a move: reported, never proposed


def current_move(pb: Playbook, situation: str) -> str:
    move = pb.moves.get(situation)
    return move.act if move is not None else BUILTIN_ACT[situation]


@dataclass
class MoveStats:
    move: str
    n: int
    wins: int
    lo: float
    hi: float
    by_source: Counter[str]
    lift: Lift | None = None  # against the current move

    @property
    def rate(self) -> float:
        return self.wins / self.n if self.n else 0.0


@dataclass
class SituationResult:
    situation: str
    current: str
    moves: list[MoveStats]
    proposed: MoveStats | None = None
    note: str = ""
    by_product: dict[str, list[MoveStats]] = field(default_factory=dict)
    by_size: dict[str, list[MoveStats]] = field(default_factory=dict)


@dataclass
class Learned:
    base: str
    win_on: str
    calls: int
    human_calls: int
    situations: list[SituationResult]
    orders: list[tuple[str, int, int, float, float]]
    funnel: dict[str, list[tuple[str, int]]]
    changes: list[dict[str, Any]]
    diff: str
    bot_acts: set[str]


def _move_stats(decisions: list[tuple[str, str, bool]], strata: bool = True) -> dict[str, MoveStats]:
    out: dict[str, MoveStats] = {}
    for stratum, move, win in decisions:
        s = out.setdefault(move, MoveStats(move, 0, 0, 0.0, 1.0, Counter()))
        s.n += 1
        s.wins += win
        s.by_source[stratum.split("/")[0]] += 1
    for s in out.values():
        s.lo, s.hi = wilson(s.wins, s.n)
    return out


def clean_words(text: str, pb: Playbook) -> str | None:
    """A seller's words as a template: rivals' names made generic, and None for words with a
    number (a price or a count the playbook's catalogue would have to back)."""
    if re.search(r"[0-9０-９]|[一二两三四五六七八九十百千万]+(元|块|折|%)", text):
        return None
    names = sorted({n for c in [*pb.competitors, *pb.pack_competitors] for n in (c.name, *c.aliases) if len(n) >= 2},
                   key=len, reverse=True)
    for n in names:
        text = text.replace(n, "别家")
    return text


def analyse(records: list[CallRecord], pb: Playbook, base: str, raw: dict[str, Any], win_on: str = "call",
            min_n: int = MIN_N) -> Learned:
    bot_acts = {a for r in records if r.source == "bot" for a in r.seller_acts}
    situations = []
    changes: list[dict[str, Any]] = []
    for objection in OBJECTIONS:
        situation = f"objection.{objection}"
        rows = [(f"{r.source}/{r.segment}", d.move, r.win(win_on)) for r in records for d in r.decisions
                if d.situation == situation]
        if not rows:
            continue
        cur = current_move(pb, situation)
        stats = _move_stats(rows)
        for s in stats.values():
            if s.move != cur:
                s.lift = stratified_lift(rows, s.move, cur)
        res = SituationResult(situation, cur, sorted(stats.values(), key=lambda s: -s.n))
        for key, field_name in ((lambda r: r.product or "unknown", "by_product"), (lambda r: size_band(r.size), "by_size")):
            groups: dict[str, list[tuple[str, str, bool]]] = defaultdict(list)
            for r in records:
                for d in r.decisions:
                    if d.situation == situation:
                        groups[key(r)].append((r.source, d.move, r.win(win_on)))
            setattr(res, field_name, {g: sorted(_move_stats(v).values(), key=lambda s: -s.n) for g, v in sorted(groups.items())})
        good = [s for s in stats.values() if s.move != cur and s.move in ACTS and situation in ACTS[s.move].answers
                and s.n >= min_n and s.lift is not None and s.lift.lo > 0]
        good.sort(key=lambda s: (s.lift.lo if s.lift else 0), reverse=True)
        for cand in good:
            words = _words_for(cand.move, records, pb, win_on)
            if cand.move not in pb.templates and words is None:
                res.note = f"{cand.move} wins more but no won call gives words for it without a number"
                continue
            res.proposed = cand
            evidence = {
                "situation": situation, "current": cur, "proposed": cand.move,
                "proposed_win_rate": round(cand.rate, 4), "proposed_n": cand.n,
                "lift": round(cand.lift.diff, 4), "lift_95ci": [round(cand.lift.lo, 4), round(cand.lift.hi, 4)],
                "compared_in_strata": cand.lift.strata, "decisions": {"proposed": cand.lift.n_move, "current": cand.lift.n_ref},
                "seen_in": dict(cand.by_source), "bot_never_used": cand.move not in bot_acts,
            }
            if cand.move not in pb.templates and words is not None:
                changes.append({"path": ["templates", cand.move], "from": versions.get_path(raw, ["templates", cand.move]),
                                "to": words, "why": f"words for {cand.move}, from the human sellers' won calls"})
            target: Any = None if cand.move in STAGE_OF else {"act": cand.move, "offer": ACTS[cand.move].offer}
            changes.append({"path": ["moves", situation], "from": versions.get_path(raw, ["moves", situation]),
                            "to": target,
                            "why": (f"answer the {objection} objection with {cand.move} instead of {cur}: "
                                    f"{cand.lift.diff:+.1%} wins (95 % CI {cand.lift.lo:+.1%} to {cand.lift.hi:+.1%}), "
                                    f"same segment and source"),
                            "evidence": evidence})
            break
        situations.append(res)
    new_raw = versions.apply_changes(raw, changes) if changes else raw
    diff = "".join(difflib.unified_diff(
        yaml.safe_dump(raw, allow_unicode=True, sort_keys=False, width=200).splitlines(True),
        yaml.safe_dump(new_raw, allow_unicode=True, sort_keys=False, width=200).splitlines(True),
        fromfile=base, tofile=f"{base} + proposal"))
    return Learned(base, win_on, sum(r.source == "bot" for r in records), sum(r.source == "human" for r in records),
                   situations, _orders(records, win_on), _funnel(records, win_on), changes, diff, bot_acts)


def _words_for(move: str, records: list[CallRecord], pb: Playbook, win_on: str) -> str | None:
    said = Counter()
    for r in records:
        if r.source == "human" and r.win(win_on):
            for act, text in r.utterances:
                if act == move:
                    words = clean_words(text, pb)
                    if words:
                        said[words] += 1
    return said.most_common(1)[0][0] if said else None


def _orders(records: list[CallRecord], win_on: str) -> list[tuple[str, int, int, float, float]]:
    """Win rates of two answers in a row in one call ("offer_trial → offer_discount")."""
    pairs: dict[str, list[int]] = {}
    for r in records:
        moves = [f"{d.situation.split('.')[1]}:{d.move}" for d in r.decisions]
        for a, b in zip(moves, moves[1:]):
            c = pairs.setdefault(f"{a} → {b}", [0, 0])
            c[0] += 1
            c[1] += r.win(win_on)
    rows = [(k, n, w, *wilson(w, n)) for k, (n, w) in pairs.items() if n >= 20]
    return sorted(rows, key=lambda x: -x[1])[:14]


def reached(r: CallRecord) -> set[str]:
    got = {"opening"}
    acts = set(r.seller_acts)
    if acts & {"ask_need", "ask_size", "answer"} or r.caller_acts[1:2]:
        got.add("discovery")
    if acts & {"recommend", "quote", "cheaper_plan"}:
        got.add("recommendation")
    if r.decisions:
        got.add("objection_handling")
    if r.outcome in WINS or r.win("deal"):
        got.add("closing")
    if r.sale_stage in ("opening", "discovery", "recommendation", "objection_handling", "closing"):
        got |= set(STAGES[: STAGES.index(r.sale_stage) + 1])  # the stage the agent recorded, and those before it
    return got


def _funnel(records: list[CallRecord], win_on: str) -> dict[str, list[tuple[str, int]]]:
    out = {}
    for source in ("bot", "human"):
        rs = [r for r in records if r.source == source]
        if not rs:
            continue
        rows = [(s, sum(s in reached(r) for r in rs)) for s in ("opening", "discovery", "recommendation", "objection_handling")]
        rows.append(("won" + (" (deal)" if win_on == "deal" else " (demo / deal on the call)"), sum(r.win(win_on) for r in rs)))
        out[source] = rows
    return out


# --- writing the proposal and the report ---------------------------------------------------------


def write_proposal(learned: Learned, raw: dict[str, Any], path: Path, sources: dict[str, Any]) -> None:
    doc = {
        "base": learned.base,
        "base_digest": versions.digest(raw),
        "learned_from": {**sources, "bot_calls": learned.calls, "human_calls": learned.human_calls, "win": learned.win_on},
        "changes": learned.changes,
    }
    head = ("# Playbook proposal from `dianxiao learn`.  Nothing changes until a sales manager runs\n"
            f"#   dianxiao learn accept {path.name}\n"
            "# which writes the next version of the playbook.  Delete a change to leave it out.\n")
    path.write_text(head + yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=200), encoding="utf-8")


def _bar_svg(rows: list[tuple[str, int]], width: int = 520) -> str:
    top = max((n for _, n in rows), default=1) or 1
    h = 24 * len(rows) + 8
    parts = [f'<svg width="{width}" height="{h}" role="img">']
    for i, (label, n) in enumerate(rows):
        w = int((width - 260) * n / top)
        y = 4 + 24 * i
        parts.append(f'<text x="0" y="{y + 15}" font-size="12">{html.escape(label)}</text>'
                     f'<rect x="200" y="{y}" width="{w}" height="18" fill="#4a7ab5"/>'
                     f'<text x="{204 + w}" y="{y + 14}" font-size="12">{n} ({n / rows[0][1]:.0%})</text>')
    parts.append("</svg>")
    return "".join(parts)


def _ci_svg(stats: list[MoveStats], current: str, width: int = 560) -> str:
    h = 22 * len(stats) + 26
    x0, span = 170, width - 230
    parts = [f'<svg width="{width}" height="{h}" role="img">']
    for t in (0, 0.25, 0.5, 0.75, 1.0):
        x = x0 + span * t
        parts.append(f'<line x1="{x}" y1="0" x2="{x}" y2="{h - 18}" stroke="#ddd"/><text x="{x - 8}" y="{h - 4}" font-size="10">{t:.0%}</text>')
    for i, s in enumerate(stats):
        y = 12 + 22 * i
        colour = "#888" if s.move == current else ("#2a9d4b" if s.lift and s.lift.lo > 0 else "#c0392b" if s.lift and s.lift.hi < 0 else "#4a7ab5")
        parts.append(f'<text x="0" y="{y + 4}" font-size="12">{html.escape(s.move)}{" (now)" if s.move == current else ""}</text>'
                     f'<line x1="{x0 + span * s.lo:.1f}" y1="{y}" x2="{x0 + span * s.hi:.1f}" y2="{y}" stroke="{colour}" stroke-width="3"/>'
                     f'<circle cx="{x0 + span * s.rate:.1f}" cy="{y}" r="4" fill="{colour}"/>'
                     f'<text x="{width - 55}" y="{y + 4}" font-size="11">n={s.n}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(stats: list[MoveStats]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(s.move)}</td><td>{s.n}</td><td>{s.rate:.1%}</td><td>{s.lo:.1%} – {s.hi:.1%}</td>"
        f"<td>{', '.join(f'{k} {v}' for k, v in s.by_source.items())}</td>"
        f"<td>{'' if s.lift is None else f'{s.lift.diff:+.1%} ({s.lift.lo:+.1%} to {s.lift.hi:+.1%})'}</td></tr>"
        for s in stats)
    return ("<table><tr><th>move</th><th>n</th><th>win rate</th><th>95 % Wilson</th><th>seen in</th>"
            f"<th>lift vs now, same segment (95 % CI)</th></tr>{rows}</table>")


def write_report(learned: Learned, path: Path, proposal_name: str) -> None:
    e = html.escape
    parts = [f"""<!doctype html><html lang="en"><meta charset="utf-8"><title>Playbook learning: {e(learned.base)}</title>
<style>body{{font:14px system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}}table{{border-collapse:collapse;margin:.5em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}th{{background:#f3f3f3}}.prop{{background:#eef8ee;padding:.6em 1em;border-left:4px solid #2a9d4b}}
pre{{background:#f7f7f7;padding:.8em;overflow:auto}}.muted{{color:#777}}</style>
<h1>What wins, and what to change in {e(learned.base)}</h1>
<p>{learned.calls} bot calls, {learned.human_calls} human sellers' calls; a win is
{'a deal won (CRM)' if learned.win_on == 'deal' else 'a demo booked or a deal closed on the call'}.
Moves are compared with the playbook's current move within the same lead segment and source.</p>"""]
    if learned.changes:
        items = "".join(f"<li>{e(c['why'])}</li>" for c in learned.changes)
        parts.append(f'<div class="prop"><h2>Proposal</h2><ul>{items}</ul><p>Accept: <code>dianxiao learn accept {e(proposal_name)}</code> '
                     "(writes the next playbook version; the live playbook does not change otherwise). Reject: do nothing.</p></div>")
    else:
        parts.append('<div class="prop"><h2>Proposal</h2><p>No move beats the current one with a 95 % interval above zero.</p></div>')
    parts.append("<h2>Funnel by sale stage</h2>")
    for source, rows in learned.funnel.items():
        parts.append(f"<h3>{'the bot' if source == 'bot' else 'human sellers'}</h3>{_bar_svg(rows)}")
    for res in learned.situations:
        parts.append(f"<h2>Caller raises the {e(res.situation.split('.')[1])} objection</h2>"
                     f"<p>now: <b>{e(res.current)}</b>{' · proposed: <b>' + e(res.proposed.move) + '</b>' if res.proposed else ''}"
                     f"{' · ' + e(res.note) if res.note else ''}</p>"
                     f"{_ci_svg(res.moves, res.current)}{_table(res.moves)}")
        for title, groups in (("by product", res.by_product), ("by size", res.by_size)):
            cells = "".join(f"<tr><td>{e(g)}</td><td>{', '.join(f'{s.move} {s.rate:.0%} (n={s.n})' for s in ss)}</td></tr>"
                            for g, ss in groups.items())
            parts.append(f"<details><summary>{title}</summary><table>{cells}</table></details>")
    if learned.orders:
        rows = "".join(f"<tr><td>{e(k)}</td><td>{n}</td><td>{w / n:.1%}</td><td>{lo:.1%} – {hi:.1%}</td></tr>"
                       for k, n, w, lo, hi in learned.orders)
        parts.append("<h2>Orders: two answers in a row</h2><table><tr><th>first → then</th><th>n</th><th>win rate</th>"
                     f"<th>95 % Wilson</th></tr>{rows}</table>")
    parts.append(f"<h2>The change as a diff</h2><pre>{e(learned.diff) or 'no change'}</pre>"
                 "<p class='muted'>A human seller's choice of move may follow the customer (a seller offers a trial to the "
                 "keen ones); the bot's explored calls are randomised and carry no such bias.</p></html>")
    path.write_text("".join(parts), encoding="utf-8")


__all__ = ["BUILTIN_ACT", "Learned", "MIN_N", "analyse", "clean_words", "current_move", "write_proposal", "write_report"]
