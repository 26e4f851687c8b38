"""Spoken and written numbers -> int: 一千 -> 1000, 两万 -> 20000, 三千五 -> 3500, 1.5万 -> 15000,
一万二 -> 12000, 1万5 -> 15000, 2k -> 2000, 十来万 -> 100000.  Phone numbers are handled elsewhere (cn2an reads
them as quantities, so this module does not use it)."""

from __future__ import annotations

import re

DIGITS = {"零": 0, "〇": 0, "一": 1, "幺": 1, "二": 2, "两": 2, "俩": 2, "三": 3, "仨": 3, "四": 4,
          "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
UNITS = {"十": 10, "百": 100, "千": 1000}
BIG = {"万": 10_000, "亿": 100_000_000}
SUFFIX = {"k": 1000, "w": 10_000, "千": 1000, "万": 10_000, "亿": 100_000_000, "百": 100}

_CN = "零〇一幺二两俩三仨四五六七八九十百千万亿"
# a number token: Arabic (with optional decimals / k / w / 万 suffixes) or Chinese numerals
NUMBER = (
    rf"(?:\d+[千万亿百]\d(?![\d.])[千百]?"  # 1万5, 3千5, 1万5千: the ASR's digits with the spoken tail
    rf"|\d+(?:\.\d+)?(?:\s*(?:[kw](?![a-z])|[千万亿百])+)?|[{_CN}]+(?:点[{_CN[:-5]}]+)?[千万亿]?)"
)
NUMBER_RE = re.compile(NUMBER)
_FUZZY = re.compile(r"[来多余几]")


def _cn_int(s: str) -> int | None:
    if not s:
        return None
    if all(c in DIGITS for c in s) and len(s) > 1:  # 一三八 read digit by digit
        return int("".join(str(DIGITS[c]) for c in s))
    total = 0
    section = 0
    number = 0
    last_unit = 0
    prev_was_digit = False
    for c in s:
        if c in DIGITS:
            number = DIGITS[c]
            prev_was_digit = True
        elif c in UNITS:
            u = UNITS[c]
            if not prev_was_digit and number == 0:
                number = 1  # 十五 = 15
            section += number * u
            number = 0
            last_unit = u
            prev_was_digit = False
        elif c in BIG:
            b = BIG[c]
            section += number
            if section == 0:
                section = 1
            total = (total + section) * b if b > 10_000 else total + section * b
            section = 0
            number = 0
            last_unit = b
            prev_was_digit = False
        else:
            return None
    if number and prev_was_digit and last_unit >= 10:
        # 三千五 = 3500, 一万二 = 12000, 两百五 = 250: a bare trailing digit is one unit down
        section += number * (last_unit // 10)
    else:
        section += number
    return total + section


def parse_number(token: str) -> int | None:
    """One number token (as matched by NUMBER_RE) -> int, or None when it is not a number."""
    t = token.strip().lower().replace(",", "").replace(" ", "")
    if not t:
        return None
    t = _FUZZY.sub("", t) or t
    m = re.fullmatch(r"(\d+)([千万亿百])(\d)([千百]?)", t)
    if m:  # 1万5 = 15000, 3千5 = 3500 (a bare tail digit is one unit down), 1万5千 = 15000
        head, unit, tail, tail_unit = m.groups()
        return int(head) * SUFFIX[unit] + int(tail) * (SUFFIX[tail_unit] if tail_unit else SUFFIX[unit] // 10)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kw千万亿百]*)", t)
    if m:
        value = float(m.group(1))
        for suffix in m.group(2):
            value *= SUFFIX[suffix]
        return int(round(value))
    if "点" in t:  # 一点五万 = 15000
        whole, _, rest = t.partition("点")
        mult = 1
        while rest and rest[-1] in BIG:
            mult *= BIG[rest[-1]]
            rest = rest[:-1]
        w = _cn_int(whole) if whole else 0
        if w is None or not rest or not all(c in DIGITS for c in rest):
            return None
        frac = float("0." + "".join(str(DIGITS[c]) for c in rest))
        return int(round((w + frac) * mult))
    return _cn_int(t)


def find_numbers(text: str) -> list[tuple[int, int, int]]:
    """(start, end, value) for every number in text."""
    out = []
    for m in NUMBER_RE.finditer(text):
        v = parse_number(m.group(0))
        if v is not None:
            out.append((m.start(), m.end(), v))
    return out
