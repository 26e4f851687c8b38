"""Reading the project's line-oriented data files (eval sets, manifests, corpora, call exports)
with errors that name the file and line, so a user can fix their data without guessing.

Two ways to meet a bad line:
* strict (the default): the first bad line raises `error("FILE:LINE: why")`;
* lenient (pass `bad=[]`): each bad line is recorded as a `BadLine` and skipped, so one broken
  line (a non-UTF-8 byte, a cut-off JSON object) does not throw away every good line after it.
  `finish()` then prints the skipped lines and refuses an input with nothing usable in it.

Lines are decoded one by one (not the whole file as one text stream), because Python's text
reader raises on the first undecodable byte and everything after it is lost."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

from agent.errors import OperatorError

T = TypeVar("T")


class EmptyInput(OperatorError, ValueError):
    """A data file with no usable line: an error (exit 2), not a report over zero items."""

    hint = "check that the path points at the data file you meant"


@dataclass(frozen=True)
class BadLine:
    number: int
    reason: str


def decode_lines(raw_lines: Iterable[bytes | str], bad: list[BadLine] | None = None,
                 where: str = "input", error: type[Exception] = ValueError) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line, decoded as UTF-8 one line at a time.  An undecodable
    line is recorded in `bad` (or, without `bad`, raises `error`) and yields "" so that line
    numbers downstream stay the physical ones."""
    for number, raw in enumerate(raw_lines, start=1):
        if isinstance(raw, str):
            yield number, raw
            continue
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a UTF-8 byte order mark (spreadsheet exports)
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            reason = f"not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
            if bad is None:
                raise error(f"{where}:{number}: {reason}") from exc
            bad.append(BadLine(number, reason))
            yield number, ""


def read_jsonl(path: Path, error: type[Exception] = ValueError,
               bad: list[BadLine] | None = None) -> Iterator[tuple[int, object]]:
    """(line number, parsed value) for each non-blank line.  A line that is not UTF-8 or not
    JSON raises `error("FILE:LINE: why")`, or, when a `bad` list is given, is added to it and
    skipped."""
    with Path(path).open("rb") as fh:
        for number, line in decode_lines(fh, bad, str(path), error):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                if bad is None:
                    raise error(f"{path}:{number}: not JSON ({exc})") from exc
                bad.append(BadLine(number, f"not JSON ({exc})"))


def report_bad(where: str | Path, bad: Iterable[BadLine], out: IO[str] | None = None) -> None:
    """One line per skipped line on stderr: `FILE:LINE: skipped: why`."""
    for b in sorted(bad, key=lambda b: b.number):
        print(f"{where}:{b.number}: skipped: {b.reason}", file=out or sys.stderr)


def finish(where: str | Path, items: list[T], bad: list[BadLine], what: str = "lines",
           error: type[Exception] = EmptyInput) -> list[T]:
    """Report the skipped lines; refuse an input that left nothing to work on (`error`, by
    default EmptyInput: one line on stderr, exit 2, which names the first bad line - a binary
    file given by mistake is one line, not a screenful)."""
    if items:
        report_bad(where, bad)
    else:
        if bad:
            first = min(bad, key=lambda b: b.number)
            detail = f"all {len(bad)} non-blank lines are bad; line {first.number}: {first.reason}"
        else:
            detail = "the file is empty"
        raise error(f"{where}: no usable {what} ({detail})")
    return items
