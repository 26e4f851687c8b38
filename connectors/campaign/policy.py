"""The rules of a campaign as pure functions: calling hours, retry back-off, do-not-call, and
the outcome of a call read from what the bot did."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import Enum
from pathlib import Path
from zoneinfo import ZoneInfo

from connectors.campaign.leads import NotAPhoneNumber, same_number, to_e164


class Outcome(str, Enum):
    REACHED = "reached"
    INTERESTED = "interested"
    CALLBACK_BOOKED = "callback_booked"
    REJECTED = "rejected"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    DO_NOT_CALL = "do_not_call"  # on the list: never dialled
    FAILED = "failed"  # the number or the trunk refused the call
    OUT_OF_HOURS = "out_of_hours"  # the campaign ended before the lead's calling window opened


RETRYABLE = frozenset({Outcome.NO_ANSWER, Outcome.BUSY})

# The policy's action names (agent.dialogue.policy) that decide how a call went.
_CALLBACK = {"book_callback", "offer_callback"}
_INTERESTED = {"book_demo", "close_sale", "send_quote", "handoff_human"}
_REJECTED = {"exit_do_not_call", "exit_polite"}


def outcome_from_actions(actions: list[str]) -> Outcome:
    """What a completed call achieved, from the bot's actions in order (the last decisive wins)."""
    for action in reversed(actions):
        if action in _CALLBACK:
            return Outcome.CALLBACK_BOOKED
        if action in _INTERESTED:
            return Outcome.INTERESTED
        if action in _REJECTED:
            return Outcome.REJECTED
    return Outcome.REACHED


@dataclass(frozen=True)
class CallingHours:
    """Dial only between `start` and `end` of the lead's local day, on the given weekdays."""

    start: time = time(9, 0)
    end: time = time(20, 0)
    weekdays: frozenset[int] = frozenset(range(7))  # Monday = 0

    @classmethod
    def parse(cls, text: str, weekdays: str | None = None) -> "CallingHours":
        """'09:00-20:00' (and optionally weekdays '0-4' or '0,1,2')."""
        try:
            a, b = text.split("-")
            start, end = time.fromisoformat(a.strip()), time.fromisoformat(b.strip())
        except ValueError as exc:
            raise ValueError(f"calling hours must look like 09:00-20:00, not {text!r}") from exc
        if start >= end:
            raise ValueError(f"calling hours {text!r}: start must be before end")
        days: frozenset[int] = frozenset(range(7))
        if weekdays:
            if "-" in weekdays:
                lo, hi = (int(x) for x in weekdays.split("-"))
                days = frozenset(range(lo, hi + 1))
            else:
                days = frozenset(int(x) for x in weekdays.split(","))
        return cls(start, end, days)

    def allows(self, now_utc: datetime, tz: str) -> bool:
        local = now_utc.astimezone(ZoneInfo(tz))
        return local.weekday() in self.weekdays and self.start <= local.time() < self.end

    def next_opening(self, now_utc: datetime, tz: str) -> datetime:
        """The first moment at or after `now_utc` when the lead may be called (UTC)."""
        if self.allows(now_utc, tz):
            return now_utc
        zone = ZoneInfo(tz)
        local = now_utc.astimezone(zone)
        for days in range(0, 8):
            day = (local + timedelta(days=days)).date()
            opening = datetime.combine(day, self.start, tzinfo=zone)
            if opening >= local and day.weekday() in self.weekdays:
                return opening.astimezone(now_utc.tzinfo)
        raise ValueError("calling hours allow no day of the week")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    base_s: float = 600.0  # first retry after 10 minutes
    factor: float = 2.0
    max_s: float = 4 * 3600.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        return min(self.max_s, self.base_s * self.factor ** (attempt - 1))


class DoNotCallList:
    """Numbers never to dial, kept and matched in E.164 (`+8613800138000`): `138-0013-8000`,
    `+86 138 0013 8000` and `008613800138000` are one line.  A list entry that is not a valid
    number is kept in `bad` with its line (it could match nothing, and the operator should know)."""

    def __init__(self, numbers: list[str] | None = None) -> None:
        self._numbers: set[str] = set()
        self.bad: list[tuple[int, str]] = []  # (line, why) of entries in the loaded file that are not numbers
        for n in numbers or []:
            self.add(n)

    @classmethod
    def load(cls, path: Path | None) -> "DoNotCallList":
        dnc = cls()
        if path is None or not path.exists():
            return dnc
        from agent.jsonl import BadLine, decode_lines

        undecodable: list[BadLine] = []
        with path.open("rb") as fh:
            for number, line in decode_lines(fh, undecodable, str(path)):
                raw = line.split("#")[0].split(",")[0].strip()
                if not raw:
                    continue
                try:
                    dnc._numbers.add(to_e164(raw))
                except NotAPhoneNumber as exc:
                    dnc.bad.append((number, str(exc)))
        dnc.bad += [(b.number, b.reason) for b in undecodable]
        dnc.bad.sort()
        return dnc

    def add(self, number: str) -> None:
        self._numbers.add(to_e164(number))

    def __contains__(self, number: str) -> bool:
        try:
            return to_e164(number) in self._numbers
        except NotAPhoneNumber:
            return False

    def __len__(self) -> int:
        return len(self._numbers)

    def append_to(self, path: Path, number: str) -> None:
        """Persist a number the customer asked us never to call again."""
        self.add(number)
        with path.open("a", encoding="utf-8") as f:
            f.write(to_e164(number) + "\n")


__all__ = ["Outcome", "RETRYABLE", "outcome_from_actions", "CallingHours", "RetryPolicy", "DoNotCallList", "same_number"]
