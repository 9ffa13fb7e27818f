"""Call detail records: one row per call in SQLite (WAL), data_dir/cdr.sqlite.

Kept out of the TinyDB config because records are appended on every call and TinyDB rewrites
its whole file per insert. WAL lets the web UI read while the call service writes; with
synchronous=NORMAL a power cut can lose the last committed call but never corrupts the file.
"""
from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path

from firmware.config.errors import ConfigFileError, SchemaVersionError, ValidationError, ValidationErrors

logger = logging.getLogger(__name__)

CDR_FILE = "cdr.sqlite"
BUSY_TIMEOUT_S = 5.0      # a writer holds the lock for well under a millisecond per call record
MAX_QUERY_LIMIT = 100_000


class Disposition(str, Enum):
    """How the call ended, in the words of Asterisk's CDR (reports and billing expect them)."""
    ANSWERED = "ANSWERED"
    BUSY = "BUSY"
    NO_ANSWER = "NO ANSWER"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


@dataclass
class CallRecord:
    call_id: str
    src: str
    dst: str
    start: float                     # epoch seconds: INVITE received
    answer: float | None             # epoch seconds: 200 OK sent to the caller, None if never answered
    end: float                       # epoch seconds: last leg hung up
    disposition: Disposition
    legs: list[dict] = field(default_factory=list)   # per leg: leg, peer, call_id, codec, final, hangup_by...
    cause: str = ""                  # e.g. "486 Busy Here"
    cost: float | None = None

    def __post_init__(self):
        if isinstance(self.disposition, str) and not isinstance(self.disposition, Disposition):
            try:
                self.disposition = Disposition(self.disposition)
            except ValueError:
                pass                 # validate() names it
        self.validate()

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def billsec(self) -> int:
        """Talk time in whole seconds (what rating charges for); 0 when never answered."""
        return round(self.end - self.answer) if self.answer is not None else 0

    def validate(self) -> None:
        errors = _record_errors(self)
        if errors:
            raise ValidationErrors(errors)


MAX_TEXT = 255


def cdr_text(value: str | None, fallback: str = "unknown") -> str:
    """A value from the wire made fit for a CDR text field (1-255 printable characters).

    Call-IDs and dialled numbers come from phones and carriers: an over-long Call-ID or an empty
    Request-URI user must still give a call record, never an error in the middle of a hang-up.
    Control characters become '?', the text is cut at 255 characters, empty becomes fallback.
    """
    text = "".join(ch if ch.isprintable() else "?" for ch in (value or "")[:MAX_TEXT])
    return text or fallback


def _is_time(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _record_errors(rec: CallRecord) -> list[ValidationError]:
    errors = []
    for name in ("call_id", "src", "dst"):
        value = getattr(rec, name)
        if not isinstance(value, str) or not value or len(value) > MAX_TEXT or not value.isprintable():
            errors.append(ValidationError(name, f"must be 1-255 printable characters, got {value!r}"))
    for name in ("start", "end"):
        if not _is_time(getattr(rec, name)):
            errors.append(ValidationError(name, f"must be epoch seconds, got {getattr(rec, name)!r}"))
    times_ok = _is_time(rec.start) and _is_time(rec.end)
    if times_ok and rec.end < rec.start:
        errors.append(ValidationError("end", f"is {rec.start - rec.end:.3f} s before start: negative duration"))
    if rec.answer is not None:
        if not _is_time(rec.answer):
            errors.append(ValidationError("answer", f"must be epoch seconds or None, got {rec.answer!r}"))
        elif times_ok and not rec.start <= rec.answer <= rec.end:
            errors.append(ValidationError("answer", "must lie between start and end"))
    if not isinstance(rec.disposition, Disposition):
        known = ", ".join(d.value for d in Disposition)
        errors.append(ValidationError("disposition", f"unknown disposition {rec.disposition!r}; use one of {known}"))
    elif (rec.disposition is Disposition.ANSWERED) != (rec.answer is not None):
        errors.append(ValidationError(
            "disposition", "ANSWERED needs an answer time, and only ANSWERED calls have one"))
    if not isinstance(rec.legs, list) or not all(isinstance(leg, dict) for leg in rec.legs):
        errors.append(ValidationError("legs", "must be a list of dicts, one per leg"))
    else:
        try:
            json.dumps(rec.legs)
        except (TypeError, ValueError) as e:
            errors.append(ValidationError("legs", f"must hold only JSON values ({e})"))
    if not isinstance(rec.cause, str):
        errors.append(ValidationError("cause", f"must be text such as '486 Busy Here', got {rec.cause!r}"))
    if rec.cost is not None and not _is_time(rec.cost):
        errors.append(ValidationError("cost", f"must be a non-negative number or None, got {rec.cost!r}"))
    return errors


# MIGRATIONS[n] takes the database from user_version n to n+1. Append; never edit a shipped step.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        """CREATE TABLE calls (
            id INTEGER PRIMARY KEY,
            call_id TEXT NOT NULL,
            src TEXT NOT NULL,
            dst TEXT NOT NULL,
            start_time REAL NOT NULL,
            answer_time REAL,
            end_time REAL NOT NULL CHECK (end_time >= start_time),
            disposition TEXT NOT NULL
                CHECK (disposition IN ('ANSWERED', 'BUSY', 'NO ANSWER', 'FAILED', 'CANCELLED')),
            legs TEXT NOT NULL DEFAULT '[]',
            cause TEXT NOT NULL DEFAULT '',
            cost REAL CHECK (cost IS NULL OR cost >= 0)
        )""",
        "CREATE INDEX calls_start ON calls (start_time)",
        "CREATE INDEX calls_src ON calls (src, start_time)",
        "CREATE INDEX calls_dst ON calls (dst, start_time)",
        "CREATE INDEX calls_call_id ON calls (call_id)",
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)

_COLUMNS = "call_id, src, dst, start_time, answer_time, end_time, disposition, legs, cause, cost"


class CdrStore:
    def __init__(self, data_dir: str | Path):
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / CDR_FILE
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: each INSERT commits on its own, before write() returns.
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                       check_same_thread=False)
        except (OSError, sqlite3.Error) as e:
            raise ConfigFileError(f"cannot open {self.path}: {e}; check the data directory") from e
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise ConfigFileError(f"cannot use {self.path}: {e}; move it away to start a new call log") from e
        except BaseException:
            self._db.close()
            raise
        self._lock = threading.Lock()     # one connection shared by the threads of a process

    def _migrate(self) -> None:
        # BEGIN IMMEDIATE so two processes opening a new file do not both create the table.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"{self.path} has schema version {version} but this firmware knows up to "
                    f"{SCHEMA_VERSION}; update the firmware, or move the file away")
            for step in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[step]:
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {step + 1}")
                logger.info("cdr schema migrated from version %d to %d", step, step + 1)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def write(self, rec: CallRecord) -> None:
        """Store one call; it is committed when this returns."""
        self.write_many([rec])

    def write_many(self, records: list[CallRecord]) -> None:
        """Store several calls in one transaction (one commit, one WAL sync): all or none.

        A busy PBX finishes many calls between two commits; the call service's CDR writer
        hands over whatever has piled up instead of paying a commit per call.
        """
        rows = []
        for rec in records:
            rec.validate()
            rows.append((rec.call_id, rec.src, rec.dst, float(rec.start),
                         None if rec.answer is None else float(rec.answer), float(rec.end),
                         rec.disposition.value, json.dumps(rec.legs, separators=(",", ":")), rec.cause,
                         None if rec.cost is None else float(rec.cost)))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    f"INSERT INTO calls ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        for rec in records:
            logger.debug("cdr %s %s -> %s %s", rec.call_id, rec.src, rec.dst, rec.disposition.value)

    def last(self, n: int = 20) -> list[CallRecord]:
        """The n most recent calls, newest first."""
        return self.query(limit=n)

    def query(self, since: float | datetime | None = None, until: float | datetime | None = None,
              extension: str | None = None, disposition: Disposition | str | None = None,
              limit: int = 1000) -> list[CallRecord]:
        """Calls that started in [since, until), involving `extension` as src or dst, newest first."""
        where, args = [], []
        if since is not None:
            where.append("start_time >= ?")
            args.append(_epoch("since", since))
        if until is not None:
            where.append("start_time < ?")
            args.append(_epoch("until", until))
        if extension is not None:
            where.append("(src = ? OR dst = ?)")
            args += [str(extension), str(extension)]
        if disposition is not None:
            try:
                args.append(Disposition(disposition).value)
            except ValueError:
                known = ", ".join(d.value for d in Disposition)
                raise ValidationError("disposition", f"unknown disposition {disposition!r}; use one of {known}") from None
            where.append("disposition = ?")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_QUERY_LIMIT:
            raise ValidationError("limit", f"must be a whole number from 1 to {MAX_QUERY_LIMIT}, got {limit!r}")
        sql = (f"SELECT {_COLUMNS} FROM calls" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY start_time DESC, id DESC LIMIT ?")
        with self._lock:
            rows = self._db.execute(sql, (*args, limit)).fetchall()
        return [CallRecord(call_id, src, dst, start, answer, end, Disposition(disp), json.loads(legs), cause, cost)
                for call_id, src, dst, start, answer, end, disp, legs, cause, cost in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "CdrStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _epoch(name: str, value: float | datetime) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValidationError(name, "datetime must carry a time zone (naive times are ambiguous)")
        return value.timestamp()
    if not _is_time(value):
        raise ValidationError(name, f"must be epoch seconds or an aware datetime, got {value!r}")
    return float(value)
