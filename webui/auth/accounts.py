"""Web accounts, API tokens, login throttling and the audit log, in one SQLite file.

SQLite rather than the TinyDB config store: the audit log and failure counters are append-heavy.
A configuration backup carries the extension users' logins (argon2 hashes, see export_logins), so
that a restored box lets its phone users log in again; admin accounts and API tokens stay out.
"""
from __future__ import annotations

import hashlib
import logging
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher, extract_parameters as argon2_parameters
from argon2.exceptions import InvalidHashError, VerificationError

logger = logging.getLogger(__name__)

ROLES = ("admin", "user")
MIN_PASSWORD = 10
# Lockout policy. Locks are per client address, never per account alone: an account-wide lock
# would let anyone on the LAN lock the admin out with five wrong passwords.
# - this many failures for one account from one address inside the window lock that
#   (account, address) pair for LOCK_SECONDS; the same many from one address for any accounts
#   lock that address. Online guessing then costs days per password and address.
# - global safety net, which slows but never locks: once an account has GLOBAL_SLOWDOWN_AFTER
#   failures from all addresses inside the window, an address that failed for it must wait
#   SLOWDOWN_SECONDS before its next try. An address without a recent failure (the real admin)
#   is never held back; the event is audited once as login_attack.
MAX_FAILURES = 5
WINDOW_SECONDS = 15 * 60
LOCK_SECONDS = 15 * 60
GLOBAL_SLOWDOWN_AFTER = 20
SLOWDOWN_SECONDS = 60


def login_keys(username: str, address: str) -> tuple[str, str, str]:
    """Failure counter keys: (account at this address, this address, the account anywhere)."""
    user = (username or "").lower()
    return f"user:{user}|ip:{address}", f"ip:{address}", f"user:{user}"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS account (
    username TEXT PRIMARY KEY, role TEXT NOT NULL, pw_hash TEXT NOT NULL,
    extension TEXT, epoch INTEGER NOT NULL DEFAULT 1, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS api_token (
    id INTEGER PRIMARY KEY, digest TEXT UNIQUE NOT NULL, username TEXT NOT NULL,
    label TEXT NOT NULL, created REAL NOT NULL, last_used REAL);
CREATE TABLE IF NOT EXISTS login_failure (key TEXT NOT NULL, ts REAL NOT NULL);
CREATE INDEX IF NOT EXISTS login_failure_key ON login_failure(key, ts);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, event TEXT NOT NULL, username TEXT NOT NULL,
    address TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS web_session (
    digest TEXT PRIMARY KEY, username TEXT NOT NULL, created REAL NOT NULL, expires REAL NOT NULL,
    lifetime REAL NOT NULL);
CREATE INDEX IF NOT EXISTS web_session_user ON web_session(username);
"""


class AccountError(ValueError):
    """A refused account change; field names the form field, message says what to fix."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Account:
    username: str
    role: str
    extension: str | None
    epoch: int  # bumped on password change: sessions carrying an older epoch are void

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class AuditEntry:
    ts: float
    event: str
    username: str
    address: str
    detail: str


def check_password_strength(password: str, username: str = "") -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError("password", f"use at least {MIN_PASSWORD} characters")
    if len(password) > 256:
        raise AccountError("password", "use at most 256 characters")
    if password.isdigit():
        raise AccountError("password", "use letters too, not only digits")
    if username and username.lower() in password.lower():
        raise AccountError("password", "must not contain the user name")


def _next_epoch(before: tuple[str, int] | None, digest: str) -> int:
    """A restored login keeps its sessions if its password is the same, else they are void."""
    if before is None:
        return 1
    return before[1] if before[0] == digest else before[1] + 1


class AccountStore:
    """Accounts and security records under DATA/webui/webui.sqlite (WAL, one connection per thread)."""

    def __init__(self, data_dir: str | Path, clock=time.time):
        self.dir = Path(data_dir) / "webui"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "webui.sqlite"
        self._clock = clock
        self._local = threading.local()
        # argon2id with the library's RFC 9106 low-memory profile: ~50 ms on the dev machine.
        self._hasher = PasswordHasher()
        with self._db() as db:
            db.executescript(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    # --- accounts ---------------------------------------------------------------------------
    def has_admin(self) -> bool:
        row = self._db().execute("SELECT 1 FROM account WHERE role='admin' LIMIT 1").fetchone()
        return row is not None

    def get(self, username: str) -> Account | None:
        row = self._db().execute(
            "SELECT username, role, extension, epoch FROM account WHERE username=?", (username,)
        ).fetchone()
        return Account(*row) if row else None

    def accounts(self) -> list[Account]:
        rows = self._db().execute(
            "SELECT username, role, extension, epoch FROM account ORDER BY role, username")
        return [Account(*r) for r in rows]

    def create(self, username: str, password: str, role: str, extension: str | None = None) -> Account:
        username = (username or "").strip()
        if not username or len(username) > 40 or not username.replace("-", "").replace("_", "").isalnum():
            raise AccountError("username", "use 1-40 letters, digits, '-' or '_'")
        if role not in ROLES:
            raise AccountError("role", f"must be one of {', '.join(ROLES)}")
        check_password_strength(password, username)
        digest = self._hasher.hash(password)
        try:
            self._db().execute(
                "INSERT INTO account (username, role, pw_hash, extension, created) VALUES (?,?,?,?,?)",
                (username, role, digest, extension, self._clock()))
        except sqlite3.IntegrityError:
            raise AccountError("username", f"account {username} already exists") from None
        logger.info("web account %s created (role %s)", username, role)
        return self.get(username)

    def set_password(self, username: str, password: str) -> Account:
        check_password_strength(password, username)
        digest = self._hasher.hash(password)
        cur = self._db().execute(
            "UPDATE account SET pw_hash=?, epoch=epoch+1 WHERE username=?", (digest, username))
        if cur.rowcount == 0:
            raise AccountError("username", f"no account {username}")
        self.close_sessions(username)  # every browser logged in with the old password is out
        logger.info("web account %s: password changed", username)
        return self.get(username)

    def delete(self, username: str) -> None:
        db = self._db()
        db.execute("DELETE FROM account WHERE username=?", (username,))
        db.execute("DELETE FROM api_token WHERE username=?", (username,))
        self.close_sessions(username)

    def verify(self, username: str, password: str) -> Account | None:
        row = self._db().execute(
            "SELECT pw_hash FROM account WHERE username=?", (username,)).fetchone()
        if row is None:
            # Hash anyway so that a missing account takes as long as a wrong password.
            self._hasher.hash(password or "x")
            return None
        try:
            self._hasher.verify(row[0], password)
        except (VerificationError, InvalidHashError):
            return None
        if self._hasher.check_needs_rehash(row[0]):
            self._db().execute("UPDATE account SET pw_hash=? WHERE username=?",
                               (self._hasher.hash(password), username))
        return self.get(username)

    # --- login throttling -------------------------------------------------------------------
    def locked_for(self, *keys: str) -> float:
        """Seconds until every key is below the failure limit again (0 = not locked)."""
        now = self._clock()
        wait = 0.0
        for key in keys:
            rows = self._db().execute(
                "SELECT ts FROM login_failure WHERE key=? AND ts>? ORDER BY ts DESC",
                (key, now - max(WINDOW_SECONDS, LOCK_SECONDS))).fetchall()
            if len(rows) >= MAX_FAILURES:
                wait = max(wait, rows[0][0] + LOCK_SECONDS - now)
        return max(wait, 0.0)

    def record_failure(self, *keys: str) -> bool:
        """Count a failed login; True when this failure just locked one of the keys."""
        now = self._clock()
        db = self._db()
        db.execute("DELETE FROM login_failure WHERE ts<?", (now - WINDOW_SECONDS - LOCK_SECONDS,))
        locked = False
        for key in keys:
            db.execute("INSERT INTO login_failure (key, ts) VALUES (?,?)", (key, now))
            n = db.execute("SELECT COUNT(*) FROM login_failure WHERE key=? AND ts>?",
                           (key, now - WINDOW_SECONDS)).fetchone()[0]
            locked |= n == MAX_FAILURES
        return locked

    def failures(self, key: str) -> int:
        """Failures counted for key inside the window."""
        return self._db().execute("SELECT COUNT(*) FROM login_failure WHERE key=? AND ts>?",
                                  (key, self._clock() - WINDOW_SECONDS)).fetchone()[0]

    def slowed_for(self, account_key: str, pair_key: str) -> float:
        """Seconds this address must still wait before its next try for an account under attack."""
        if self.failures(account_key) < GLOBAL_SLOWDOWN_AFTER:
            return 0.0
        row = self._db().execute("SELECT MAX(ts) FROM login_failure WHERE key=?", (pair_key,)).fetchone()
        if not row or row[0] is None:
            return 0.0
        return max(row[0] + SLOWDOWN_SECONDS - self._clock(), 0.0)

    def clear_failures(self, key: str) -> None:
        self._db().execute("DELETE FROM login_failure WHERE key=?", (key,))

    # --- browser sessions ---------------------------------------------------------------------
    # The signed cookie only carries a random session id; whether it is still valid is decided
    # here, so logging out (or a password change) ends the session even for a copied cookie.
    def open_session(self, username: str, lifetime: float) -> str:
        now = self._clock()
        sid = secrets.token_urlsafe(32)
        db = self._db()
        db.execute("DELETE FROM web_session WHERE expires<?", (now,))
        db.execute("INSERT INTO web_session (digest, username, created, expires, lifetime) "
                   "VALUES (?,?,?,?,?)", (self._digest(sid), username, now, now + lifetime, lifetime))
        return sid

    def session_user(self, sid: str) -> str | None:
        """The account name of a live session, or None (unknown, closed or expired).

        Like the cookie, a session lasts its lifetime after the last request (not after login);
        the expiry is written at most once a minute.
        """
        if not sid or not isinstance(sid, str):
            return None
        now, digest = self._clock(), self._digest(sid)
        db = self._db()
        row = db.execute("SELECT username, expires, lifetime FROM web_session WHERE digest=? AND expires>?",
                         (digest, now)).fetchone()
        if row is None:
            return None
        if now + row[2] - row[1] > 60:
            db.execute("UPDATE web_session SET expires=? WHERE digest=?", (now + row[2], digest))
        return row[0]

    def close_session(self, sid: str) -> None:
        if sid and isinstance(sid, str):
            self._db().execute("DELETE FROM web_session WHERE digest=?", (self._digest(sid),))

    def close_sessions(self, username: str) -> int:
        return self._db().execute("DELETE FROM web_session WHERE username=?", (username,)).rowcount

    def sessions(self, username: str | None = None) -> list[dict]:
        sql, args = "SELECT username, created, expires FROM web_session WHERE expires>?", [self._clock()]
        if username:
            sql += " AND username=?"
            args.append(username)
        rows = self._db().execute(sql + " ORDER BY created", args)
        return [dict(zip(("username", "created", "expires"), r)) for r in rows]

    # --- API tokens -------------------------------------------------------------------------
    @staticmethod
    def _digest(token: str) -> str:
        # Tokens are 32 random bytes: a plain SHA-256 is enough (no dictionary to guess from).
        return hashlib.sha256(token.encode()).hexdigest()

    def create_token(self, username: str, label: str) -> str:
        label = (label or "").strip()
        if not label or len(label) > 40 or not label.isprintable():
            raise AccountError("label", "give the token a name of 1-40 printable characters")
        if self.get(username) is None:
            raise AccountError("username", f"no account {username}")
        token = "pbx_" + secrets.token_urlsafe(32)
        self._db().execute(
            "INSERT INTO api_token (digest, username, label, created) VALUES (?,?,?,?)",
            (self._digest(token), username, label, self._clock()))
        logger.info("API token %r created for %s", label, username)
        return token

    def tokens(self, username: str | None = None) -> list[dict]:
        sql = "SELECT id, username, label, created, last_used FROM api_token"
        args: tuple = ()
        if username:
            sql += " WHERE username=?"
            args = (username,)
        rows = self._db().execute(sql + " ORDER BY id", args)
        return [dict(zip(("id", "username", "label", "created", "last_used"), r)) for r in rows]

    def revoke_token(self, token_id: int, username: str | None = None) -> bool:
        sql, args = "DELETE FROM api_token WHERE id=?", [token_id]
        if username:
            sql += " AND username=?"
            args.append(username)
        return self._db().execute(sql, args).rowcount == 1

    def account_for_token(self, token: str) -> Account | None:
        db = self._db()
        row = db.execute("SELECT id, username FROM api_token WHERE digest=?",
                         (self._digest(token),)).fetchone()
        if row is None:
            return None
        db.execute("UPDATE api_token SET last_used=? WHERE id=?", (self._clock(), row[0]))
        return self.get(row[1])

    # --- backup of the extension users' logins ----------------------------------------------
    def export_logins(self) -> list[dict]:
        """The extension users' web logins for a configuration backup: argon2 hashes, never a
        password. Admin accounts stay out: a restore must not bring back an old admin password
        that whoever restores may no longer know."""
        rows = self._db().execute(
            "SELECT username, extension, pw_hash FROM account WHERE role='user' ORDER BY username")
        return [{"username": u, "extension": e, "pw_hash": h} for u, e, h in rows]

    @staticmethod
    def login_errors(logins: object, extensions: set[str]) -> list[tuple[str, str]]:
        """(where, what is wrong) for a backup's web_logins section; empty when it can be restored."""
        if not isinstance(logins, list):
            return [("web_logins", "must be a list of objects")]
        errors, seen = [], set()
        for i, item in enumerate(logins):
            where = f"web_logins[{i}]"
            if not isinstance(item, dict) or set(item) != {"username", "extension", "pw_hash"}:
                errors.append((where, "must be an object with exactly username, extension, pw_hash"))
                continue
            name, ext, digest = item["username"], item["extension"], item["pw_hash"]
            if not isinstance(name, str) or not name or len(name) > 40 or \
                    not name.replace("-", "").replace("_", "").isalnum():
                errors.append((f"{where}.username", "use 1-40 letters, digits, '-' or '_'"))
            elif name in seen:
                errors.append((f"{where}.username", f"{name} appears twice"))
            seen.add(name)
            if ext not in extensions:
                errors.append((f"{where}.extension", f"no extension {ext!r} in this backup"))
            if not isinstance(digest, str) or not digest.startswith("$argon2") or len(digest) > 512:
                errors.append((f"{where}.pw_hash", "not an argon2 password hash (a backup never holds "
                                                  "plain passwords)"))
            else:
                try:
                    argon2_parameters(digest)
                except InvalidHashError:
                    errors.append((f"{where}.pw_hash", "damaged argon2 hash"))
        return errors

    def restore_logins(self, logins: list[dict]) -> int:
        """Replace the extension users' logins with a backup's (checked by login_errors first).

        An account whose hash changed or that is gone has its sessions closed; the admin
        accounts are left as they are."""
        db = self._db()
        before = {u: (h, e) for u, h, e in
                  db.execute("SELECT username, pw_hash, epoch FROM account WHERE role='user'")}
        wanted = {item["username"]: item for item in logins}
        admins = {a.username for a in self.accounts() if a.is_admin}
        for name, (digest, _epoch) in before.items():
            if name not in wanted or wanted[name]["pw_hash"] != digest:
                self.close_sessions(name)
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM account WHERE role='user'")
            for name, item in wanted.items():
                if name in admins:
                    continue   # never turn an admin login into a user one
                db.execute("INSERT INTO account (username, role, pw_hash, extension, epoch, created) "
                           "VALUES (?, 'user', ?, ?, ?, ?)",
                           (name, item["pw_hash"], item["extension"],
                            _next_epoch(before.get(name), item["pw_hash"]), self._clock()))
            db.execute("DELETE FROM api_token WHERE username NOT IN (SELECT username FROM account)")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        logger.info("web logins restored from backup: %d extension user(s)", len(wanted))
        return len(wanted)

    # --- audit log --------------------------------------------------------------------------
    def audit(self, event: str, username: str = "", address: str = "", detail: str = "") -> None:
        self._db().execute(
            "INSERT INTO audit (ts, event, username, address, detail) VALUES (?,?,?,?,?)",
            (self._clock(), event, username or "-", address or "-", detail))
        logger.info("audit %s user=%s from=%s %s", event, username or "-", address or "-", detail)

    def audit_log(self, limit: int = 200, event: str | None = None) -> list[AuditEntry]:
        sql, args = "SELECT ts, event, username, address, detail FROM audit", []
        if event:
            sql += " WHERE event=?"
            args.append(event)
        rows = self._db().execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit))
        return [AuditEntry(*r) for r in rows]

    # --- small key/value facts (wizard progress) --------------------------------------------
    def meta(self, key: str, default: str | None = None) -> str | None:
        row = self._db().execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self._db().execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?,?)", (key, value))
