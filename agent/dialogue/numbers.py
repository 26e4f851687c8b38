"""Numbers in Chinese text, Arabic (1,000 / 99.95 / 2万) or Chinese (两千 / 三万六 / 一千二百).

Used to fill a slot from a bare answer ("两千左右吧" after the bot asked for concurrency) and to
check that a phrased reply states no number the catalogue does not hold."""

from __future__ import annotations

import re

_DIGITS = {"零": 0, "〇": 0, "一": 1, "幺": 1, "二": 2, "两": 2, "俩": 2, "三": 3, "四": 4, "五": 5,
           "六": 6, "七": 7, "八": 8, "九": 9}
_UNITS = {"十": 10, "百": 100, "千": 1000, "k": 1000, "K": 1000, "w": 10000, "W": 10000}
_BIG = {"万": 10_000, "亿": 100_000_000}
_ARABIC = re.compile(r"(\d+(?:,\d{3})*(?:\.\d+)?)\s*([万千kKwW百]?)")
_CHINESE = re.compile(r"[零〇一幺二两俩三四五六七八九十百千万亿]+")


def chinese_to_int(s: str) -> int | None:
    """一千二 -> 1200, 两万 -> 20000, 三万六 -> 36000, 十五 -> 15; None if not a number."""
    if not s or any(ch not in _DIGITS and ch not in "十百千万亿" for ch in s):
        return None
    total, section, digit, last_unit = 0, 0, None, None
    for ch in s:
        if ch in _DIGITS:
            digit = _DIGITS[ch]
        elif ch in _UNITS:
            section += (digit if digit is not None else 1) * _UNITS[ch]
            last_unit, digit = _UNITS[ch], None
        else:  # 万 / 亿
            section += digit or 0
            total += section * _BIG[ch]
            section, digit, last_unit = 0, None, _BIG[ch]
    if digit is not None:
        # "三万六" / "一千二": a trailing digit is one unit below the last unit
        section += digit * (last_unit // 10 if last_unit and last_unit >= 10 and len(s) > 1 else 1)
    return total + section


def numbers_in(text: str) -> list[int | float]:
    """All numbers a reader would hear in `text`."""
    out: list[int | float] = []
    spans: list[tuple[int, int]] = []
    for m in _ARABIC.finditer(text):
        raw = m.group(1).replace(",", "")
        val = float(raw) if "." in raw else int(raw)
        unit = m.group(2)
        if unit:
            val = val * (_BIG.get(unit) or _UNITS[unit])
        out.append(int(val) if float(val).is_integer() else val)
        spans.append(m.span())
    for m in _CHINESE.finditer(text):
        if any(a <= m.start() < b for a, b in spans):
            continue
        val = chinese_to_int(m.group(0))
        if val is not None:
            out.append(val)
    return out


_NOT_A_COUNT = "共下起样直定般些点年月天会遍次周切半"
# a length of time shorter than a day after a number (两秒, 十分钟, 三个小时)
_DURATION = re.compile(r"\s*(个)?(秒|毫秒|分钟|分鐘|小时|小時|钟头|鐘頭)")


def quantities_in(text: str, single_digits: bool = False) -> list[int]:
    """Numbers that can be an answer to "how many": Arabic numbers, and Chinese ones with a unit
    or several digits (一万七千, 两千, 十五) - not the 一 of 一共/一下/一年.  With
    `single_digits` ("是六不是三"), lone digits count too unless a word like 一共 follows."""
    out = [int(v) for m in _ARABIC.finditer(text) for v in numbers_in(m.group(0))
           if v >= 1 and not _DURATION.match(text, m.end())]
    for m in _CHINESE.finditer(text):
        word = m.group(0)
        if _DURATION.match(text, m.end()):
            continue  # "两秒内", "十分钟": how long, not how many
        if len(word) == 1 and word not in "十百千万":
            nxt = text[m.end() : m.end() + 1]
            if not single_digits or (nxt and nxt in _NOT_A_COUNT) or word in "万亿":
                continue
        if re.search(r"\d", text[max(0, m.start() - 1) : m.start()]):
            continue  # the unit of an Arabic number ("2万"), already counted
        val = chinese_to_int(word)
        if val and val >= 1:
            out.append(val)
    return out
