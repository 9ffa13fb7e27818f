"""The queue log: every queue event in SQLite (WAL), data_dir/queue_log.sqlite, beside cdr.sqlite.

As Asterisk's queue_log, one row per event: time, callid (the call's linkedid, as in the CDRs),
queue number, agent (extension, or "NONE"), event and up to five data fields whose meaning
depends on the event (the same as Asterisk's, so people who read those reports read these):

    ENTERQUEUE       data1 = caller number, data2 = position
    CONNECT          data1 = hold time (s), data3 = ring time of the answering agent (s)
    COMPLETECALLER   data1 = hold time, data2 = talk time, data3 = original position
    COMPLETEAGENT    (same)
    TRANSFER         data1 = target, data3 = hold time, data4 = talk time
    ABANDON          data1 = position, data2 = original position, data3 = wait (s)
    EXITWITHTIMEOUT  data1 = position, data2 = original position, data3 = wait
    EXITWITHKEY      data1 = key, data2 = position, data3 = original position, data4 = wait
    EXITEMPTY        data1 = position, data2 = original position, data3 = wait
    FULL / JOINEMPTY (the caller was not let in)
    RINGNOANSWER     data1 = ring time in ms
    AGENTLOGIN / AGENTLOGOFF, PAUSE (data1 = reason) / UNPAUSE

The statistics (firmware/features/queues_stats.py) are pure functions over these rows. Writers
are the call service and the web UI (a login from the agent's page); WAL lets both write and
the web UI read without blocking each other for more than a moment.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

QUEUE_LOG_FILE = "queue_log.sqlite"
EVENTS = ("ENTERQUEUE", "CONNECT", "COMPLETECALLER", "COMPLETEAGENT", "TRANSFER", "ABANDON", "EXITWITHTIMEOUT",
          "EXITWITHKEY", "EXITEMPTY", "FULL", "JOINEMPTY", "RINGNOANSWER", "AGENTLOGIN", "AGENTLOGOFF", "PAUSE",
          "UNPAUSE")
NONE = "NONE"
MAX_ROWS = 1_000_000


@dataclass(frozen=True)
class QueueEvent:
    time: float
    callid: str
    queue: str
    agent: str
    event: str
    data1: str = ""
    data2: str = ""
    data3: str = ""
    data4: str = ""
    data5: str = ""

    def number(self, field: str) -> float:
        """A data field as a number (0 when empty or not a number)."""
        try:
            return float(getattr(self, field) or 0)
        except ValueError:
            return 0.0

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("time", "callid", "queue", "agent", "event", "data1", "data2",
                                              "data3", "data4", "data5")}


_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue_log (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    callid TEXT NOT NULL DEFAULT '',
    queue TEXT NOT NULL DEFAULT '',
    agent TEXT NOT NULL DEFAULT 'NONE',
    event TEXT NOT NULL,
    data1 TEXT NOT NULL DEFAULT '', data2 TEXT NOT NULL DEFAULT '', data3 TEXT NOT NULL DEFAULT '',
    data4 TEXT NOT NULL DEFAULT '', data5 TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS queue_log_time ON queue_log (time);
CREATE INDEX IF NOT EXISTS queue_log_queue_time ON queue_log (queue, time);
"""


class QueueLog:
    """The queue log of one data directory. Thread-safe; one connection per instance."""

    def __init__(self, data_dir):
        self.path = Path(data_dir) / QUEUE_LOG_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def write(self, queue: str, event: str, *, callid: str = "", agent: str = "", data=(),
              at: float | None = None) -> QueueEvent:
        """Append one event (and log one line saying it)."""
        if event not in EVENTS:
            raise ValueError(f"queue log event {event!r} is not one of {', '.join(EVENTS)}")
        fields = [str(d) for d in data][:5]
        fields += [""] * (5 - len(fields))
        ev = QueueEvent(time.time() if at is None else at, callid, str(queue), agent or NONE, event, *fields)
        with self._lock:
            self._db.execute("INSERT INTO queue_log (time, callid, queue, agent, event, data1, data2, data3, data4,"
                             " data5) VALUES (?,?,?,?,?,?,?,?,?,?)",
                             (ev.time, ev.callid, ev.queue, ev.agent, ev.event, *fields))
        logger.info("queue %s: %s %s %s %s", ev.queue, ev.event, ev.agent, ev.callid, "|".join(fields).rstrip("|"))
        return ev

    def events(self, since: float = 0.0, until: float | None = None, queue: str | None = None,
               limit: int = MAX_ROWS) -> list[QueueEvent]:
        """Events with since <= time < until, oldest first."""
        sql = "SELECT time, callid, queue, agent, event, data1, data2, data3, data4, data5 FROM queue_log WHERE time >= ?"
        args: list = [since]
        if until is not None:
            sql += " AND time < ?"
            args.append(until)
        if queue:
            sql += " AND queue = ?"
            args.append(queue)
        sql += " ORDER BY time, id LIMIT ?"
        args.append(int(limit))
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [QueueEvent(*r) for r in rows]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
