"""The replay diff as a reviewer reads it: only the fields that changed, each with the recorded
and the replayed value, the changed characters marked.  (The page used to print both outputs
in full as JSON, ~4 000 px for a five-turn call with nothing highlighted.)"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

_MISSING = object()


@dataclass
class FieldChange:
    path: str
    old: Markup  # recorded, with the removed part in <del>
    new: Markup  # replayed, with the added part in <ins>


@dataclass
class OutputDiff:
    turn: int
    stage: str
    fields: list[FieldChange]


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}, "c": [x, y]} -> {"a.b": 1, "c": [x, y]}: lists stay whole (an intent set
    reads better as one value than as c[0], c[1])."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k in sorted(value, key=str):
            out.update(flatten(value[k], f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix or "value": value}


def _text(v: Any) -> str:
    if v is _MISSING:
        return ""
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, sort_keys=True)


def highlight(old: Any, new: Any) -> tuple[Markup, Markup]:
    """Both values as HTML, the characters that differ wrapped in <del> / <ins>."""
    if old is _MISSING:
        return Markup('<span class="absent">(none)</span>'), Markup("<ins>%s</ins>") % _text(new)
    if new is _MISSING:
        return Markup("<del>%s</del>") % _text(old), Markup('<span class="absent">(none)</span>')
    a, b = _text(old), _text(new)
    left: list[str] = []
    right: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            left.append(str(escape(a[i1:i2])))
            right.append(str(escape(b[j1:j2])))
            continue
        if i2 > i1:
            left.append(f"<del>{escape(a[i1:i2])}</del>")
        if j2 > j1:
            right.append(f"<ins>{escape(b[j1:j2])}</ins>")
    return Markup("".join(left)), Markup("".join(right))


def field_changes(recorded: Any, replayed: Any) -> list[FieldChange]:
    a, b = flatten(recorded), flatten(replayed)
    out = []
    for path in sorted(set(a) | set(b)):
        old, new = a.get(path, _MISSING), b.get(path, _MISSING)
        if old == new:
            continue
        o, n = highlight(old, new)
        out.append(FieldChange(path, o, n))
    return out


def changed_outputs(diffs: list[Any]) -> list[OutputDiff]:
    """The replay's StageDiffs that changed, each reduced to its changed fields."""
    out = []
    for d in diffs:
        fields = field_changes(d.recorded, d.replayed)
        if fields:
            out.append(OutputDiff(d.turn, d.stage, fields))
    return out
