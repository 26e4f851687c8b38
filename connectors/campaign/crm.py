"""Campaign outcomes: a CSV export, and a CRM webhook with an HMAC signature and a durable outbox.

Every outcome is written to the outbox (SQLite, committed) before any delivery is tried, and
leaves it only when the CRM answered 2xx.  A CRM that is down, slow or failing costs retries
with back-off, never an outcome; a restarted campaign process delivers what is still there.

Signature (documented for the CRM side): header `X-Dianxiao-Timestamp: <unix seconds>` and
`X-Dianxiao-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`; verify both and
reject old timestamps to stop replays.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import hmac
import json
import sqlite3
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import httpx
import structlog

log = structlog.get_logger("dianxiao.campaign")


@dataclass(frozen=True)
class OutcomeRecord:
    campaign: str
    phone: str
    name: str
    product_interest: str
    outcome: str
    attempts: int
    call_id: str | None
    detail: str
    finished_at: str  # ISO 8601, UTC


CSV_FIELDS = [f.name for f in fields(OutcomeRecord)]


class OutcomeCsv:
    """Appends one row per finished lead (flushed at once, so a crash keeps what was written)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        new = not path.exists() or path.stat().st_size == 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = path.open("a", newline="", encoding="utf-8")
        self._w = csv.DictWriter(self._f, fieldnames=CSV_FIELDS)
        if new:
            self._w.writeheader()
            self._f.flush()

    def write(self, record: OutcomeRecord) -> None:
        self._w.writerow(asdict(record))
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, max_age_s: float = 300) -> bool:
    """The check a CRM runs on our webhook (also used by the tests' CRM)."""
    try:
        fresh = abs(time.time() - float(timestamp)) <= max_age_s
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature)


class CrmWebhook:
    def __init__(self, url: str, secret: str, outbox: Path, *, base_s: float = 1.0, max_s: float = 300.0,
                 timeout_s: float = 10.0) -> None:
        self.url, self.secret = url, secret
        self.base_s, self.max_s = base_s, max_s
        self.timeout_s = timeout_s
        outbox.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(outbox), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, body BLOB NOT NULL, attempts INTEGER NOT NULL"
            " DEFAULT 0, next_at REAL NOT NULL, last_error TEXT)"
        )
        self._wake = asyncio.Event()
        self.delivered = 0

    def enqueue(self, record: OutcomeRecord | dict[str, Any]) -> None:
        body = json.dumps(asdict(record) if isinstance(record, OutcomeRecord) else record, ensure_ascii=False).encode()
        self.db.execute("INSERT INTO outbox (body, next_at) VALUES (?, ?)", (body, time.time()))
        self._wake.set()

    def pending(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    async def deliver_due(self, client: httpx.AsyncClient) -> int:
        """Try every due outcome once; returns how many were delivered."""
        now = time.time()
        rows = self.db.execute("SELECT id, body, attempts FROM outbox WHERE next_at <= ? ORDER BY id", (now,)).fetchall()
        done = 0
        for row_id, body, attempts in rows:
            ts = str(int(time.time()))
            try:
                resp = await client.post(self.url, content=bytes(body), headers={
                    "Content-Type": "application/json", "X-Dianxiao-Timestamp": ts,
                    "X-Dianxiao-Signature": sign(self.secret, ts, bytes(body))}, timeout=self.timeout_s)
                ok, error = 200 <= resp.status_code < 300, f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                ok, error = False, f"{type(exc).__name__}: {exc}"
            if ok:
                self.db.execute("DELETE FROM outbox WHERE id=?", (row_id,))
                self.delivered += 1
                done += 1
            else:
                delay = min(self.max_s, self.base_s * 2 ** attempts)
                self.db.execute("UPDATE outbox SET attempts=attempts+1, next_at=?, last_error=? WHERE id=?",
                                (time.time() + delay, error[:300], row_id))
                log.warning("CRM webhook failed; will retry", error=error[:200], retry_in_s=round(delay, 1))
        return done

    async def run(self, stop: asyncio.Event, drain_s: float = 30.0) -> None:
        """Deliver until `stop` is set and the outbox is empty, or `drain_s` after `stop` when
        the CRM is still failing: what is left stays in the outbox for the next run."""
        loop = asyncio.get_running_loop()
        stop_seen: float | None = None
        async with httpx.AsyncClient() as client:
            while True:
                await self.deliver_due(client)
                if stop.is_set():
                    stop_seen = stop_seen or loop.time()
                    if self.pending() == 0 or loop.time() - stop_seen > drain_s:
                        return
                nxt = self.db.execute("SELECT MIN(next_at) FROM outbox").fetchone()[0]
                wait = 1.0 if nxt is None else max(0.0, min(1.0, nxt - time.time()))
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), wait)
                except asyncio.TimeoutError:
                    pass

    def close(self) -> None:
        self.db.close()
