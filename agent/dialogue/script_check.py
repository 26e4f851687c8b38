"""What a multi-turn caller script must hold, checked in one place.

Two readers take scripts: the corpus check (`python -m agent.nlu.corpus check`, the writers'
files, where id/writer and 2-6 turns are required by the labelling guide) and `dianxiao eval dst
--data FILE` (a user's own file, where only the turns and the expectations are needed).  Both
must refuse the same bad expectations - an unknown slot, a list slot given as a string, an
unknown intent - or a typo in a user's file becomes a slot that silently never matches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.dialogue.state import LIST_SLOTS, NUMERIC_SLOTS, SINGLE_SLOTS


def script_problem(obj: Any, intents: Sequence[str], *, corpus: bool) -> str | None:
    """The first thing wrong with one script line, or None.  `corpus`: the writers' format."""
    if not isinstance(obj, dict):
        return "a script line must be a JSON object"
    required = ("id", "writer", "turns", "bot", "expected_slots", "expected_active_intents") if corpus else ("turns",)
    for key in required:
        if key not in obj:
            return f"'{key}' is missing"
    turns = obj["turns"]
    lo, hi = (2, 6) if corpus else (1, None)
    if not (isinstance(turns, list) and all(isinstance(t, str) and t.strip() for t in turns)
            and lo <= len(turns) and (hi is None or len(turns) <= hi)):
        return f"'turns' must be {lo}-{hi} non-empty strings" if hi else "'turns' must be a non-empty list of non-empty strings"
    bot = obj.get("bot") if corpus else (obj.get("bot") or [])
    if not (isinstance(bot, list) and all(isinstance(b, str) for b in bot)):
        return "'bot' must be a list of strings"
    if corpus and len(bot) != len(turns) - 1:
        return f"'bot' must be {len(turns) - 1} strings (one fewer than the turns), not {bot!r:.60}"
    slots = obj.get("expected_slots", {})
    if not isinstance(slots, dict):
        return "'expected_slots' must be an object"
    known = set(SINGLE_SLOTS) | set(LIST_SLOTS.values())
    for name, value in slots.items():
        if name not in known:
            return f"unknown slot {name!r} (known: {', '.join(sorted(known))})"
        if name in LIST_SLOTS.values() and not isinstance(value, list):
            return f"slot {name!r} must be a list"
        if name in NUMERIC_SLOTS and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"slot {name!r} must be a number, not {value!r}"
    active = obj.get("expected_active_intents", [])
    if not isinstance(active, list) or not all(isinstance(i, str) for i in active):
        return "'expected_active_intents' must be a list of intent ids"
    for intent in active:
        if intent not in intents:
            return f"unknown intent {intent!r} in expected_active_intents"
    return None
