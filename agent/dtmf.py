"""What a key press means: the playbook's DTMF map and the pure collector of callback numbers.

A key of its own (`keys`: "0" -> request_human) becomes that intent at once; digits without one
(or after `collect_start`) are a number being entered, finished by `collect_end` or by reaching
`max_digits`, and become a `phone` entity with the callback_request intent.  The dtmf stage
(agent/stages/dtmf.py) turns the outcome into an nlu.result, so DST and policy need nothing new.

The map lives in agent/data/dtmf.yaml per playbook (the playbook model itself forbids unknown
keys); a playbook object that carries a `dtmf` mapping wins, so moving the map into the
playbook YAML later needs no change here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.errors import OperatorError
from agent.resources import DATA_DIR

DTMF_FILE = DATA_DIR / "dtmf.yaml"
DIGITS = set("0123456789*#ABCD")


class DtmfError(OperatorError, ValueError):
    hint = "fix agent/data/dtmf.yaml (or the playbook's dtmf section)"


class DtmfMap(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    keys: dict[str, str] = Field(default_factory=dict)
    collect_start: str = "*"
    collect_end: str = "#"
    min_digits: int = Field(default=7, ge=1)
    max_digits: int = Field(default=12, ge=1)

    @field_validator("keys")
    @classmethod
    def _keys_are_keys(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if k not in DIGITS]
        if bad:
            raise ValueError(f"not phone keys: {bad} (0-9 * # A-D)")
        return v


@lru_cache(maxsize=8)
def _file_maps() -> dict[str, Any]:
    return yaml.safe_load(DTMF_FILE.read_text(encoding="utf-8")) or {}


def dtmf_map(playbook: Any = None) -> DtmfMap:
    """The key map for `playbook` (a Playbook, its name, or None for the default)."""
    own = getattr(playbook, "dtmf", None)
    raw = _file_maps()
    name = playbook if isinstance(playbook, str) else getattr(playbook, "name", None)
    entry = own if own is not None else (raw.get("playbooks") or {}).get(name)
    try:
        return DtmfMap.model_validate({**(raw.get("default") or {}), **(entry or {})})
    except ValidationError as exc:
        raise DtmfError(f"DTMF map for playbook {name!r} is malformed: {exc.errors(include_url=False)}") from exc


@dataclass
class Pressed:
    """What a finished key sequence means: an intent, and a number when one was entered."""

    intent: str | None
    keys: str
    phone: str | None = None


@dataclass
class KeyBuffer:
    collecting: bool = False
    digits: list[str] = field(default_factory=list)


def press(buf: KeyBuffer, digit: str, m: DtmfMap) -> Pressed | None:
    """Feed one key; returns what the caller meant once a key or a number is complete."""
    if buf.collecting:
        if digit == m.collect_end:
            return _number(buf, m, digit)
        if digit == m.collect_start:  # started over
            buf.digits.clear()
            return None
        if digit.isdigit():
            buf.digits.append(digit)
            if len(buf.digits) >= m.max_digits:
                return _number(buf, m, "")
        return None
    if digit == m.collect_start:
        buf.collecting, buf.digits = True, []
        return None
    if digit in m.keys:
        return Pressed(m.keys[digit], digit)
    if digit.isdigit():
        buf.collecting, buf.digits = True, [digit]
    return None


def _number(buf: KeyBuffer, m: DtmfMap, end: str) -> Pressed:
    digits = "".join(buf.digits)
    buf.collecting, buf.digits = False, []
    if len(digits) < m.min_digits:
        return Pressed(None, digits + end)  # too short for a number: understood as nothing
    return Pressed("callback_request", digits + end, phone=digits)
