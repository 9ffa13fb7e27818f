"""Call detail records in SQLite (WAL), data_dir/cdr.sqlite: one row per A-B conversation.

A simple call is one row. A call with many legs (a transfer, a forward to a mobile) is several
rows sharing a linkedid, numbered by seq; firmware/cel.py builds them from the call's events.
Times are kept as exact epoch seconds; `duration` and `billsec` are whole seconds by one rule
(`whole_seconds`, docs/cdr.md), so billsec never exceeds duration.

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
from decimal import Decimal, InvalidOperation
from enum import Enum
from pathlib import Path

from firmware.config.errors import ConfigFileError, SchemaVersionError, ValidationError, ValidationErrors

logger = logging.getLogger(__name__)

CDR_FILE = "cdr.sqlite"
BUSY_TIMEOUT_S = 5.0      # a writer holds the lock for well under a millisecond per call record
MAX_QUERY_LIMIT = 100_000
PARTY_KINDS = ("extension", "trunk", "line")      # what is at the far end of a channel
# how a row came about: "" an ordinary call; blind / attended: the transferee -> target row a
# transfer made; consultation: the transferrer -> target talk of an attended transfer
TRANSFER_KINDS = ("", "blind", "attended", "consultation")


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
    cost: Decimal | None = None      # in `currency`, exact (rating, firmware/rating); None = not rated
    # --- schema version 2: calls with many legs (firmware/cel.py) --------------------------------
    linkedid: str = ""               # the call this row belongs to (its first Call-ID); "" -> call_id
    seq: int = 1                     # 1, 2, 3... the rows of one linkedid in the order they began
    src_kind: str = ""               # "extension" | "trunk" | "line", "" when not recorded
    dst_kind: str = ""
    src_trunk: str = ""              # the trunk (or "line:N") an inbound src came in on
    dst_trunk: str = ""              # the trunk (or "line:N") dst was called out on (what rating needs)
    external_number: str = ""        # dst on a trunk / line: the number as sent to the provider
    forwarded_from: str = ""         # the extension whose forward rang dst
    transfer: str = ""               # one of TRANSFER_KINDS
    transferred_by: str = ""         # the transferrer's number on a blind / attended row
    # --- schema version 3: call charging (firmware/rating, docs/cdr.md) --------------------------
    currency: str = ""               # ISO 4217 code of cost, "" when not rated
    rate: str = ""                   # the rate per minute that applied, as decimal text ("0.0055")
    dest_type: str = ""              # landline, mobile, freephone, premium, international... / inbound / internal
    sheet_version: str = ""          # the rate sheet and version used: "uk-example@3"

    def __post_init__(self):
        if isinstance(self.cost, (int, float)) and not isinstance(self.cost, bool) and math.isfinite(self.cost):
            self.cost = Decimal(str(self.cost))        # a legacy float column value, made exact text first
        if self.linkedid == "" and isinstance(self.call_id, str):
            self.linkedid = self.call_id
        if isinstance(self.disposition, str) and not isinstance(self.disposition, Disposition):
            try:
                self.disposition = Disposition(self.disposition)
            except ValueError:
                pass                 # validate() names it
        self.validate()

    @property
    def duration(self) -> int:
        """Whole seconds from start to end (whole_seconds: the same rule as billsec)."""
        return whole_seconds(self.start, self.end)

    @property
    def billsec(self) -> int:
        """Talk time in whole seconds (what rating charges for); 0 when never answered; <= duration."""
        return whole_seconds(self.answer, self.end) if self.answer is not None else 0

    def validate(self) -> None:
        errors = _record_errors(self)
        if errors:
            raise ValidationErrors(errors)


MAX_TEXT = 255


def whole_seconds(t0: float, t1: float) -> int:
    """t1 - t0 as whole seconds: to the millisecond, then half a second and more rounds up.

    The one rule for duration and billsec (docs/cdr.md). It is applied to each interval, never to
    the two times, and it never decreases as an interval grows: since answer >= start,
    billsec <= duration always (1.510 s of talk in a 1.526 s call: billsec 2, duration 2).
    Asterisk's `initiatedseconds=yes` rounds the same way.
    """
    ms = max(0, round((t1 - t0) * 1000))
    return (ms + 500) // 1000


def cdr_text(value: str | None, fallback: str = "unknown") -> str:
    """A value from the wire made fit for a CDR text field (1-255 printable characters).

    Call-IDs and dialled numbers come from phones and carriers: an over-long Call-ID or an empty
    Request-URI user must still give a call record, never an error in the middle of a hang-up.
    Control characters become '?', the text is cut at 255 characters, empty becomes fallback.
    """
    text = "".join(ch if ch.isprintable() else "?" for ch in (value or "")[:MAX_TEXT])
    return text or fallback


def details(rec) -> list[str]:
    """What a call with many legs adds to src -> dst, in words, one phrase each (empty for a plain call).

    "via trunk carrier as +447700900123", "in on trunk carrier", "forwarded from 201",
    "blind transfer by 1001", "attended transfer by 1001", "consultation (attended transfer)".
    """
    out = []
    if rec.src_trunk:
        out.append(f"in on {_trunk(rec.src_trunk)}")
    if rec.dst_trunk:
        out.append(f"via {_trunk(rec.dst_trunk)}" + (f" as {rec.external_number}" if rec.external_number else ""))
    elif rec.external_number:
        out.append(f"as {rec.external_number}")
    if rec.forwarded_from:
        out.append(f"forwarded from {rec.forwarded_from}")
    if rec.transfer == "consultation":
        out.append("consultation (attended transfer)")
    elif rec.transfer:
        out.append(f"{rec.transfer} transfer" + (f" by {rec.transferred_by}" if rec.transferred_by else ""))
    return out


def _trunk(name: str) -> str:
    return f"analog line {name[5:]}" if name.startswith("line:") else f"trunk {name}"


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
    if rec.cost is not None and not (isinstance(rec.cost, Decimal) and rec.cost.is_finite() and rec.cost >= 0):
        errors.append(ValidationError("cost", f"must be a non-negative Decimal or None, got {rec.cost!r}"))
    if not isinstance(rec.currency, str) or rec.currency not in ("",) and not (
            len(rec.currency) == 3 and rec.currency.isalpha() and rec.currency.isupper()):
        errors.append(ValidationError("currency", f"must be a 3-letter ISO code such as GBP (or empty), "
                                                  f"got {rec.currency!r}"))
    if not isinstance(rec.rate, str) or rec.rate and not _decimal_text(rec.rate):
        errors.append(ValidationError("rate", f"must be decimal text such as '0.0055' (or empty), got {rec.rate!r}"))
    if not isinstance(rec.linkedid, str) or not rec.linkedid or len(rec.linkedid) > MAX_TEXT \
            or not rec.linkedid.isprintable():
        errors.append(ValidationError("linkedid", f"must be 1-255 printable characters, got {rec.linkedid!r}"))
    if isinstance(rec.seq, bool) or not isinstance(rec.seq, int) or rec.seq < 1:
        errors.append(ValidationError("seq", f"must be a whole number from 1, got {rec.seq!r}"))
    for name in ("src_kind", "dst_kind"):
        if getattr(rec, name) not in ("",) + PARTY_KINDS:
            errors.append(ValidationError(name, f"must be one of {', '.join(PARTY_KINDS)} (or empty), "
                                                f"got {getattr(rec, name)!r}"))
    if rec.transfer not in TRANSFER_KINDS:
        errors.append(ValidationError("transfer", f"must be one of {', '.join(TRANSFER_KINDS[1:])} (or empty), "
                                                  f"got {rec.transfer!r}"))
    for name in ("src_trunk", "dst_trunk", "external_number", "forwarded_from", "transferred_by", "dest_type",
                 "sheet_version"):
        value = getattr(rec, name)
        if not isinstance(value, str) or len(value) > MAX_TEXT or not value.isprintable():
            errors.append(ValidationError(name, f"must be up to 255 printable characters, got {value!r}"))
    return errors


def _decimal_text(text: str) -> bool:
    try:
        value = Decimal(text)
    except InvalidOperation:
        return False
    return value.is_finite() and value >= 0


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
    # 2: calls with many legs. A row written before is a whole call: its own linkedid, seq 1,
    # and '' (not recorded) for kinds, trunks, forward and transfer.
    (
        "ALTER TABLE calls ADD COLUMN linkedid TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE calls ADD COLUMN seq INTEGER NOT NULL DEFAULT 1 CHECK (seq >= 1)",
        "ALTER TABLE calls ADD COLUMN src_kind TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE calls ADD COLUMN dst_kind TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE calls ADD COLUMN src_trunk TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE calls ADD COLUMN dst_trunk TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE calls ADD COLUMN external_number TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE calls ADD COLUMN forwarded_from TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE calls ADD COLUMN transfer TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE calls ADD COLUMN transferred_by TEXT NOT NULL DEFAULT ''",
        "UPDATE calls SET linkedid = call_id",
        "CREATE INDEX calls_linkedid ON calls (linkedid, seq)",
    ),
    # 3: call charging. cost_exact is the cost as decimal text (the REAL `cost` beside it keeps a
    # float copy for old readers and quick SQL sums); rows from before are not rated ('').
    (
        "ALTER TABLE calls ADD COLUMN cost_exact TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE calls ADD COLUMN currency TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE calls ADD COLUMN rate TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE calls ADD COLUMN dest_type TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE calls ADD COLUMN sheet_version TEXT NOT NULL DEFAULT ''",
        "UPDATE calls SET cost_exact = CAST(cost AS TEXT) WHERE cost IS NOT NULL",
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)

# the columns of a CallRecord, in the order of its fields (webui/cdr/query.py reads the same)
COLUMNS = ("call_id, src, dst, start_time, answer_time, end_time, disposition, legs, cause, cost, "
           "linkedid, seq, src_kind, dst_kind, src_trunk, dst_trunk, external_number, forwarded_from, "
           "transfer, transferred_by, cost_exact, currency, rate, dest_type, sheet_version")
_COLUMNS = COLUMNS
_EXTRA = ("linkedid", "seq", "src_kind", "dst_kind", "src_trunk", "dst_trunk", "external_number",
          "forwarded_from", "transfer", "transferred_by")
_CHARGING = ("currency", "rate", "dest_type", "sheet_version")


def record_from_row(row) -> CallRecord:
    """A CallRecord from a row of COLUMNS (checked by its constructor like any other)."""
    call_id, src, dst, start, answer, end, disp, legs, cause, cost, *extra = row
    extra, (cost_exact, *charging) = extra[:len(_EXTRA)], extra[len(_EXTRA):]
    exact = Decimal(cost_exact) if cost_exact else None if cost is None else Decimal(str(cost))
    return CallRecord(call_id, src, dst, start, answer, end, Disposition(disp), json.loads(legs), cause, exact,
                      *extra, **dict(zip(_CHARGING, charging)))


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
                         None if rec.cost is None else float(rec.cost),
                         *(getattr(rec, name) for name in _EXTRA),
                         "" if rec.cost is None else str(rec.cost), *(getattr(rec, name) for name in _CHARGING)))
        marks = ", ".join("?" * (11 + len(_EXTRA) + len(_CHARGING)))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(f"INSERT INTO calls ({_COLUMNS}) VALUES ({marks})", rows)
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
              limit: int = 1000, linkedid: str | None = None) -> list[CallRecord]:
        """Calls that started in [since, until), involving `extension` as src or dst, newest first.

        linkedid: only the rows of that call (a transfer's A->B, B->C, A->C...).
        """
        where, args = [], []
        if linkedid is not None:
            where.append("linkedid = ?")
            args.append(str(linkedid))
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
        return [record_from_row(row) for row in rows]

    def rows_since(self, since: float | datetime, until: float | datetime | None = None
                   ) -> list[tuple[int, CallRecord]]:
        """(row id, record) of the calls that started in [since, until), oldest first (re-rating)."""
        args = [_epoch("since", since)]
        sql = f"SELECT id, {_COLUMNS} FROM calls WHERE start_time >= ?"
        if until is not None:
            sql += " AND start_time < ?"
            args.append(_epoch("until", until))
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY start_time, id", args).fetchall()
        return [(row[0], record_from_row(row[1:])) for row in rows]

    def set_charges(self, charges: list[tuple[int, CallRecord]]) -> int:
        """Store new cost, currency, rate, dest_type and sheet_version of rows by id, in one
        transaction (`pbx cdr rerate`); the other fields stay as they were. Returns rows changed."""
        rows = []
        for rowid, rec in charges:
            rec.validate()
            rows.append((None if rec.cost is None else float(rec.cost), "" if rec.cost is None else str(rec.cost),
                         *(getattr(rec, name) for name in _CHARGING), int(rowid)))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.executemany("UPDATE calls SET cost = ?, cost_exact = ?, currency = ?, rate = ?, "
                                           "dest_type = ?, sheet_version = ? WHERE id = ?", rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return cur.rowcount

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
