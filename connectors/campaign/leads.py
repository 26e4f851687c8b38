"""The dial list: a CSV of leads (phone, name, product interest, local time zone).

A bad row never stops a campaign: it is reported with its line number and the reason, and the
rest of the list is dialled."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_TZ = "Asia/Shanghai"
_PHONE = re.compile(r"^\+?[0-9]{5,15}$")


def normalise_phone(raw: str) -> str:
    """Digits only, with a leading + kept; '138-0013-8000' -> '13800138000', '+86 138...' -> '+86138...'."""
    raw = raw.strip()
    digits = re.sub(r"[^0-9]", "", raw)
    return ("+" + digits) if raw.startswith("+") else digits


def same_number(a: str, b: str) -> bool:
    """Whether two normalised numbers are the same line (+86 prefix or not)."""
    def core(n: str) -> str:
        n = n.lstrip("+")
        return n[2:] if n.startswith("86") and len(n) == 13 else n
    return core(a) == core(b)


class Lead(BaseModel):
    model_config = ConfigDict(frozen=True)

    phone: str
    name: str = ""
    product_interest: str = ""
    timezone: str = DEFAULT_TZ
    line: int = Field(default=0, description="line in the CSV (1 = header)")

    @field_validator("phone")
    @classmethod
    def _phone(cls, v: str) -> str:
        n = normalise_phone(v)
        if not _PHONE.match(n):
            raise ValueError(f"not a phone number: {v!r}")
        return n

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        v = v.strip() or DEFAULT_TZ
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str


# Accepted column names (English and Chinese headers, as CRMs export them).
_COLUMNS = {
    "phone": ("phone", "phone_number", "number", "电话", "手机", "手机号"),
    "name": ("name", "姓名", "客户"),
    "product_interest": ("product_interest", "product", "interest", "产品", "意向产品"),
    "timezone": ("timezone", "time_zone", "tz", "时区"),
}


def read_leads(path: Path) -> tuple[list[Lead], list[BadRow]]:
    leads: list[Lead] = []
    bad: list[BadRow] = []
    seen: set[str] = set()
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = {h.strip().lower(): h for h in (reader.fieldnames or [])}
        columns = {field: next((header[c] for c in names if c in header), None) for field, names in _COLUMNS.items()}
        if columns["phone"] is None:
            raise ValueError(f"{path}: no phone column (one of {', '.join(_COLUMNS['phone'])})")
        for row in reader:
            line = reader.line_num
            values = {k: (row.get(col) or "").strip() for k, col in columns.items() if col is not None}
            try:
                lead = Lead(line=line, **values)
            except ValidationError as exc:
                why = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
                bad.append(BadRow(line, why))
                continue
            if any(same_number(lead.phone, s) for s in seen):
                bad.append(BadRow(line, f"duplicate of an earlier lead: {lead.phone}"))
                continue
            seen.add(lead.phone)
            leads.append(lead)
    return leads, bad
