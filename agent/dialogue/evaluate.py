"""Scripted DST evaluation: caller-side scripts run through NLU + dialogue state tracking.

A script is one JSON line: {"turns": ["caller turn", ...], "expected_slots": {...},
"expected_active_intents": [...]}.  Slot and intent names are the NLU taxonomy's (`feature`
and `features`, `system` and `systems` are the same list slot).  The bot's own acts are tracked
too (the policy runs each turn), because "这个版本" can only be resolved against what the bot said.

Joint goal accuracy: the share of scripts whose every expected slot matches the state at the end
(slots the script does not mention are not judged).  Lists compare as sets; numbers as numbers;
ids case-insensitively and without spaces; an expected `product` that names a version (saas_pro) also matches the
version the caller settled on by reference ("这个版本")."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.dialogue.playbook import Playbook
from agent.dialogue.script_check import script_problem
from agent.dialogue.state import DialogueState
from agent.dialogue.turn import track
from agent.events import NluResult
from agent.nlu import Understander, understand_turn

_SLOT_ALIASES = {"feature": "features", "system": "systems"}
CONTEXT_TURNS = 3


class ScriptError(ValueError):
    """A scripts file could not be read; the message names the line and the problem."""


@dataclass
class Script:
    line: int
    turns: list[str]
    expected_slots: dict[str, Any]
    expected_active_intents: list[str] = field(default_factory=list)
    bot: list[str] = field(default_factory=list)  # what the agent said between the turns (the script's, when given)


@dataclass
class ScriptResult:
    script: Script
    slot_ok: dict[str, bool]
    intents_ok: bool
    final: dict[str, Any]
    active_intents: list[str]

    @property
    def joint(self) -> bool:
        return all(self.slot_ok.values())


def load_scripts(path: Path) -> list[Script]:
    from agent.nlu.lexicon import load_taxonomy

    intents_known = load_taxonomy().intent_names
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ScriptError(f"cannot read {path}: {exc}") from exc
    for i, raw in enumerate(lines, start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ScriptError(f"{path}:{i}: not JSON ({exc.msg})") from exc
        problem = script_problem(obj, intents_known, corpus=False)
        if problem:
            raise ScriptError(f"{path}:{i}: {problem}")
        slots = obj.get("expected_slots", {})
        intents = obj.get("expected_active_intents", [])
        bot = obj.get("bot") or []
        out.append(Script(line=i, turns=obj["turns"], expected_slots=slots, expected_active_intents=intents, bot=bot))
    if not out:
        raise ScriptError(f"{path}: no scripts")
    return out


def run_script(script: Script, understander: Understander, playbook: Playbook) -> tuple[DialogueState, list[float]]:
    state = DialogueState()
    latencies = []
    for turn, text in enumerate(script.turns, start=1):
        t0 = time.perf_counter()
        context = tuple(script.turns[max(0, turn - 1 - CONTEXT_TURNS) : turn - 1])
        # the caller in a script answers the script's bot lines: the NLU hears those, as the
        # NLU stage hears the agent's last reply in a live call
        bot_prev = script.bot[turn - 2] if 2 <= turn <= len(script.bot) + 1 else None
        out = understand_turn(understander, text, context, bot_prev)
        nlu = NluResult(call_id="script", turn=turn, text=text, intents=out.intents, entities=out.entities)
        state, _ = track(state, nlu, playbook)
        latencies.append((time.perf_counter() - t0) * 1000)
    return state, latencies


def _norm(value: Any) -> str:
    """A value as the labelling guide writes it: lower-case, no spaces (4核8G = 4核8g)."""
    return re.sub(r"\s+", "", str(value)).lower()


def slot_matches(slot: str, want: Any, state: DialogueState) -> bool:
    key = _SLOT_ALIASES.get(slot, slot)
    have = state.value(key)
    if key in ("features", "systems"):
        wants = want if isinstance(want, list) else [want]
        # a set: the same category twice ("OTHER", "OTHER" for two unnamed systems) is one
        return {_norm(v) for v in have or []} == {_norm(v) for v in wants}
    if want is None:
        return have is None
    if isinstance(want, bool) or not isinstance(want, (int, float)):
        if have is not None and _norm(have) == _norm(want):
            return True
        return key == "product" and _norm(state.value("plan") or "") == _norm(want)
    try:
        return have is not None and float(have) == float(want)
    except (TypeError, ValueError):
        return False


def evaluate(scripts: list[Script], understander: Understander, playbook: Playbook) -> tuple[list[ScriptResult], list[float]]:
    results, latencies = [], []
    for sc in scripts:
        state, lat = run_script(sc, understander, playbook)
        latencies += lat
        slot_ok = {slot: slot_matches(slot, want, state) for slot, want in sc.expected_slots.items()}
        active = state.active_intents
        intents_ok = set(sc.expected_active_intents) <= set(active)
        final = {k: v for k, v in state.goal().items()}
        results.append(ScriptResult(sc, slot_ok, intents_ok, final, active))
    return results, latencies


def metrics(results: list[ScriptResult], latencies: list[float]) -> dict[str, Any]:
    n = len(results) or 1
    per_slot: dict[str, list[bool]] = {}
    for r in results:
        for slot, ok in r.slot_ok.items():
            per_slot.setdefault(_SLOT_ALIASES.get(slot, slot), []).append(ok)
    with_intents = [r for r in results if r.script.expected_active_intents]
    lat = sorted(latencies) or [0.0]
    return {
        "scripts": len(results),
        "jga": round(sum(r.joint for r in results) / n, 4),
        "slot_accuracy": {k: round(sum(v) / len(v), 4) for k, v in sorted(per_slot.items())},
        "active_intent_accuracy": round(sum(r.intents_ok for r in with_intents) / len(with_intents), 4) if with_intents else None,
        "jga_with_intents": round(sum(r.joint and r.intents_ok for r in results) / n, 4),
        "p95_ms_per_turn": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 3),
    }
