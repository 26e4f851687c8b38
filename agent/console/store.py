"""The console's own SQLite file (users, sessions, audit log, labels, call index).

Kept apart from the bus log on purpose: the log is the agent's record of what happened and is
only ever appended to by the agent; everything reviewers create lives here."""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

Role = Literal["viewer", "reviewer", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "reviewer", "admin")
SESSION_TTL_S = 12 * 3600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    username TEXT PRIMARY KEY, password_hash TEXT NOT NULL, role TEXT NOT NULL, created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY, username TEXT NOT NULL, csrf TEXT NOT NULL,
    created_at REAL NOT NULL, expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, username TEXT NOT NULL,
    action TEXT NOT NULL, call_id TEXT, detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_by_call ON audit (call_id, ts);
"""


class StoreError(ValueError):
    pass


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One explicit transaction (the connections run in autocommit mode, where `with db:`
    would not open one and every statement would be its own fsync'd commit)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


@dataclass(frozen=True)
class User:
    username: str
    role: Role

    def can(self, role: Role) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


@dataclass(frozen=True)
class Session:
    user: User
    csrf: str


@dataclass(frozen=True)
class AuditEntry:
    ts: float
    username: str
    action: str
    call_id: str | None
    detail: str


def _hash_token(token: str) -> str:
    # Only a hash of the cookie value is stored: a leaked console.sqlite gives no live sessions.
    return hashlib.sha256(token.encode()).hexdigest()


class ConsoleStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process crash; an OS crash may lose the last labels.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(_SCHEMA)
        self._hasher = PasswordHasher()

    def close(self) -> None:
        self.db.close()

    # --- secrets ---------------------------------------------------------------------------

    def secret(self) -> str:
        """The key that signs login-form CSRF tokens; made once per console store."""
        row = self.db.execute("SELECT value FROM meta WHERE name='secret'").fetchone()
        if row:
            return str(row[0])
        value = secrets.token_urlsafe(32)
        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('secret', ?)", (value,))
        return self.secret()

    # --- users -----------------------------------------------------------------------------

    def set_user(self, username: str, password: str, role: Role) -> None:
        if role not in ROLES:
            raise StoreError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
        if not username.strip():
            raise StoreError("username must not be empty")
        if len(password) < 8:
            raise StoreError("password must have at least 8 characters")
        digest = self._hasher.hash(password)
        with transaction(self.db):
            self.db.execute(
                "INSERT INTO users VALUES (?,?,?,?) ON CONFLICT(username) DO UPDATE SET"
                " password_hash=excluded.password_hash, role=excluded.role",
                (username, digest, role, time.time()),
            )
            # A changed password or role ends the user's open sessions.
            self.db.execute("DELETE FROM sessions WHERE username=?", (username,))

    def users(self) -> list[User]:
        return [User(u, r) for u, r in self.db.execute("SELECT username, role FROM users ORDER BY username")]

    def check_password(self, username: str, password: str) -> User | None:
        row = self.db.execute("SELECT password_hash, role FROM users WHERE username=?", (username,)).fetchone()
        if row is None:
            # Hash anyway so that a wrong user name takes as long as a wrong password.
            self._hasher.hash(password)
            return None
        try:
            self._hasher.verify(row[0], password)
        except (VerificationError, InvalidHashError):
            return None
        return User(username, row[1])

    # --- sessions --------------------------------------------------------------------------

    def new_session(self, user: User) -> tuple[str, str]:
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        now = time.time()
        with transaction(self.db):
            self.db.execute("DELETE FROM sessions WHERE expires_at < ?", (now,))
            self.db.execute(
                "INSERT INTO sessions VALUES (?,?,?,?,?)", (_hash_token(token), user.username, csrf, now, now + SESSION_TTL_S)
            )
        return token, csrf

    def session(self, token: str | None) -> Session | None:
        if not token:
            return None
        row = self.db.execute(
            "SELECT s.username, u.role, s.csrf FROM sessions s JOIN users u ON u.username = s.username"
            " WHERE s.token_hash=? AND s.expires_at > ?",
            (_hash_token(token), time.time()),
        ).fetchone()
        return Session(User(row[0], row[1]), row[2]) if row else None

    def end_session(self, token: str | None) -> None:
        if token:
            self.db.execute("DELETE FROM sessions WHERE token_hash=?", (_hash_token(token),))

    # --- audit -----------------------------------------------------------------------------

    def audit(self, username: str, action: str, call_id: str | None = None, detail: str = "") -> None:
        self.db.execute(
            "INSERT INTO audit (ts, username, action, call_id, detail) VALUES (?,?,?,?,?)",
            (time.time(), username, action, call_id, detail),
        )

    def audit_log(self, limit: int = 200, call_id: str | None = None) -> list[AuditEntry]:
        sql = "SELECT ts, username, action, call_id, detail FROM audit"
        args: list[object] = []
        if call_id:
            sql += " WHERE call_id=?"
            args.append(call_id)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        return [AuditEntry(*r) for r in self.db.execute(sql, args)]
