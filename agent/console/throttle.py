"""Login throttling, per user name and per client address.

Before: 50 wrong passwords in 20 s, no delay, no lockout.  Now every failure is remembered (in
the console store, so a restart or a second worker does not reset it) and counted over a
window; after `free` failures each further attempt must wait a delay that doubles with every
failure (capped), and after `lock_after` failures the key is locked out for `lockout_s`.  An
attempt that comes too early is refused *without checking the password*, so guessing does not
get faster by ignoring the delay.  Both keys count: spraying one password over many user names
from one address trips the address, and a botnet on one user name trips the user.

The price: anyone can lock a user out for `lockout_s` by failing on purpose (the usual trade;
an admin can still reset the password with `dianxiao console create-user`)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

_SCHEMA = """
CREATE TABLE IF NOT EXISTS login_failures (kind TEXT NOT NULL, key TEXT NOT NULL, ts REAL NOT NULL);
CREATE INDEX IF NOT EXISTS login_failures_by_key ON login_failures (kind, key, ts);
"""


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    wait_s: float = 0.0  # how long until the next attempt is looked at
    locked: bool = False  # the wait is a lockout (too many failures), not just the growing delay
    reason: str = ""


class LoginThrottle:
    def __init__(
        self,
        db: sqlite3.Connection,
        *,
        free: int = 3,
        base_delay_s: float = 1.0,
        max_delay_s: float = 30.0,
        lock_after: int = 10,
        lockout_s: float = 900.0,
        window_s: float = 900.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.free, self.base, self.max_delay = free, base_delay_s, max_delay_s
        self.lock_after, self.lockout_s, self.window_s = lock_after, lockout_s, window_s
        self.clock = clock
        db.executescript(_SCHEMA)

    def delay_after(self, failures: int) -> float:
        """The wait imposed after `failures` failures in the window (0 for the first `free`)."""
        if failures < self.free:
            return 0.0
        return min(self.max_delay, self.base * 2 ** (failures - self.free))

    def _state(self, kind: str, key: str, now: float) -> tuple[int, float | None]:
        n, last = self.db.execute(
            "SELECT COUNT(*), MAX(ts) FROM login_failures WHERE kind=? AND key=? AND ts > ?",
            (kind, key, now - max(self.window_s, self.lockout_s)),
        ).fetchone()
        return int(n), last

    def check(self, username: str, address: str) -> Verdict:
        """May this attempt be looked at now?"""
        now = self.clock()
        worst = Verdict(True)
        for kind, key in (("user", username), ("address", address)):
            n, last = self._state(kind, key, now)
            if last is None:
                continue
            if n >= self.lock_after:
                wait, locked = last + self.lockout_s - now, True
            else:
                wait, locked = last + self.delay_after(n) - now, False
            if wait > 0 and wait > worst.wait_s:
                what = f"{kind} {key!r}" if kind == "user" else f"address {key}"
                worst = Verdict(False, wait, locked, f"{n} failed logins for {what}")
        return worst

    def failed(self, username: str, address: str) -> Verdict:
        """Record a failure; returns what the next attempt faces (locked = this one locked it)."""
        now = self.clock()
        self.db.executemany(
            "INSERT INTO login_failures VALUES (?,?,?)", [("user", username, now), ("address", address, now)]
        )
        self.db.execute("DELETE FROM login_failures WHERE ts < ?", (now - 2 * max(self.window_s, self.lockout_s),))
        return self.check(username, address)

    def succeeded(self, username: str) -> None:
        # Only the user's count: clearing the address's too would let someone with one valid
        # account reset their address's count between guesses at other users' passwords.
        self.db.execute("DELETE FROM login_failures WHERE kind='user' AND key=?", (username,))
