"""Masking of phone numbers and names for viewers (reviewers and admins see the real text)."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Mainland mobiles, landlines with area code, and any other long digit run (account numbers).
_PHONE = re.compile(r"(?<!\d)(\+?86[- ]?)?(1[3-9]\d)[- ]?(\d{4})[- ]?(\d{4})(?!\d)|(?<!\d)\d{7,}(?!\d)")
# "我叫王小明" / "我是李强" / "姓张" / "王先生" — a surname (+ given name) in the usual frames.
_NAME_AFTER = re.compile(r"(我叫|我是|叫我|我姓|姓)([\u4e00-\u9fff]{1,3})")
_NAME_TITLE = re.compile(r"([\u4e00-\u9fff])(先生|女士|小姐|总|经理)")
NAME_ENTITY_TYPES = frozenset({"name", "person", "contact", "contact_name", "phone"})


def _mask_phone(m: re.Match[str]) -> str:
    if m.group(2):
        return f"{m.group(2)}****{m.group(4)}"
    digits = m.group(0)
    return digits[:2] + "*" * (len(digits) - 4) + digits[-2:]


def mask_text(text: str | None, extra: Iterable[str] = ()) -> str | None:
    """Mask phone numbers, names in common phrasings, and any known names/phones given."""
    if not text:
        return text
    for value in extra:
        if value and len(value) >= 2:
            text = text.replace(value, "*" * len(value))
    text = _PHONE.sub(_mask_phone, text)
    text = _NAME_AFTER.sub(lambda m: m.group(1) + "*" * len(m.group(2)), text)
    text = _NAME_TITLE.sub(lambda m: "*" + m.group(2), text)
    return text


def mask_caller(caller: str | None) -> str | None:
    if not caller:
        return caller
    masked = _PHONE.sub(_mask_phone, caller)
    if masked == caller and len(caller) > 4:
        return caller[:2] + "*" * (len(caller) - 4) + caller[-2:]
    return masked
