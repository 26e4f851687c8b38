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
DEFAULT_REGION = "CN"  # a number written without a country code is a mainland China number
# What may appear in a written phone number besides digits: separators and a leading +
# (full-width forms too, as Chinese spreadsheets have them).  Anything else - letters, a comma,
# markup - means the cell is not just a number, and we do not guess which part to dial.
_PHONE_CHARS = re.compile(r"^[+＋]?[0-9０-９ \t\-‐–—.()（）/]+$")
# "<number> 转 123", "ext. 123", "x123", "#123", ",123" (a dial pause): an extension after a number
_EXTENSION = re.compile(r"^(?P<number>.*?)\s*(?:转|分机|ext\.?|x|#|,|;)\s*[0-9０-９]{1,6}#?$", re.IGNORECASE)


class NotAPhoneNumber(ValueError):
    """A lead's phone cell is not one dialable number (the message says why)."""


def to_e164(raw: str, region: str = DEFAULT_REGION) -> str:
    """The number in E.164 (`+8613800138000`), the one form dialled and matched against the
    do-not-call list.  Parsed with libphonenumber (`phonenumbers`) for `region` when it has no
    country code; refused (NotAPhoneNumber) unless it is a valid number for its country, with
    nothing else in the cell: no extension (a trunk cannot dial one blindly, and digits glued
    onto the number would dial a different line), no letters (no vanity numbers: 1-800-FLOWERS),
    no second value."""
    import phonenumbers

    text = raw.strip()
    if not text:
        raise NotAPhoneNumber("no phone number")
    if not _PHONE_CHARS.match(text):
        ext = _EXTENSION.match(text)
        if ext and _PHONE_CHARS.match(ext["number"]):
            raise NotAPhoneNumber(f"has an extension, which is not dialled: {raw!r}")
        raise NotAPhoneNumber(f"not a phone number: {raw!r}")
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise NotAPhoneNumber(f"not a phone number: {raw!r} ({exc._msg})") from None
    if number.extension:
        raise NotAPhoneNumber(f"has an extension, which is not dialled: {raw!r}")
    if not phonenumbers.is_valid_number(number):
        raise NotAPhoneNumber(f"not a valid phone number: {raw!r}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_phone(raw: str) -> str:
    """E.164 for a valid number; for anything else the raw text stripped (it then matches nothing)."""
    try:
        return to_e164(raw)
    except NotAPhoneNumber:
        return raw.strip()


def same_number(a: str, b: str) -> bool:
    """Whether two written numbers are the same line (compared in E.164)."""
    return normalise_phone(a) == normalise_phone(b)


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
        return to_e164(v)  # E.164: what is dialled and what the do-not-call list is matched on

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
    from agent.jsonl import BadLine, EmptyInput, decode_lines

    undecodable: list[BadLine] = []
    with path.open("rb") as f:
        # decoded line by line: a non-UTF-8 row is skipped with its number, the rows after it kept
        reader = csv.DictReader(line for _, line in decode_lines(f, undecodable, str(path)))
        if reader.fieldnames is None:
            raise EmptyInput(f"{path}: the file is empty (a CSV with a phone column is expected)")
        header = {h.strip().lower(): h for h in reader.fieldnames}
        columns = {field: next((header[c] for c in names if c in header), None) for field, names in _COLUMNS.items()}
        if columns["phone"] is None:
            raise ValueError(f"{path}: no phone column (one of {', '.join(_COLUMNS['phone'])})")
        for row in reader:
            line = reader.line_num
            if None in row:  # more cells than the header has columns: the row is shifted or glued
                bad.append(BadRow(line, f"{len(reader.fieldnames) + len(row[None])} cells, the header has "
                                        f"{len(reader.fieldnames)}: not one lead"))
                continue
            values = {k: (row.get(col) or "").strip() for k, col in columns.items() if col is not None}
            try:
                lead = Lead(line=line, **values)
            except ValidationError as exc:
                why = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
                bad.append(BadRow(line, why))
                continue
            if lead.phone in seen:
                bad.append(BadRow(line, f"duplicate of an earlier lead: {lead.phone}"))
                continue
            seen.add(lead.phone)
            leads.append(lead)
    bad += [BadRow(b.number, b.reason) for b in undecodable]
    bad.sort(key=lambda b: b.line)
    return leads, bad
