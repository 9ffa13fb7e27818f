"""Call records a page at a time: a count, an offset and a sort order over cdr.sqlite.

CdrStore.query (firmware/cdr.py) returns the newest N calls; a page of a long list also needs the
total and another order. Until CdrStore offers that, these read-only queries use its table
directly, through their own read-only connection (mode=ro: this module cannot change a record).
Rows become CallRecords through the public constructor, so they are checked the same way.
"""
from __future__ import annotations

import sqlite3
from contextlib import closing

from firmware.cdr import CDR_FILE, COLUMNS, CallRecord, Disposition, record_from_row
# ?sort= names -> SQL expressions; the column headers of the call list link to these
SORTS = {"start": "start_time", "src": "src", "dst": "dst", "disposition": "disposition",
         "billsec": "COALESCE(end_time - answer_time, 0)", "duration": "end_time - start_time",
         "cause": "cause", "cost": "COALESCE(cost, 0)"}


def _connect(data_dir):
    from webui.pbx import cdr_store
    cdr_store()    # creates and migrates cdr.sqlite on a new box, so that a read-only open works
    return closing(sqlite3.connect(f"file:{data_dir / CDR_FILE}?mode=ro", uri=True, timeout=5))


def _where(filters: dict) -> tuple[str, list]:
    where, args = [], []
    if filters.get("since") is not None:
        where.append("start_time >= ?")
        args.append(float(filters["since"]))
    if filters.get("until") is not None:
        where.append("start_time < ?")
        args.append(float(filters["until"]))
    if filters.get("extension") is not None:
        where.append("(src = ? OR dst = ?)")
        args += [str(filters["extension"])] * 2
    if filters.get("disposition") is not None:
        where.append("disposition = ?")
        args.append(Disposition(filters["disposition"]).value)
    if filters.get("linkedid") is not None:
        where.append("linkedid = ?")
        args.append(str(filters["linkedid"]))
    if filters.get("with_recording"):
        where.append("legs LIKE '%\"recording\":%'")
    return (" WHERE " + " AND ".join(where)) if where else "", args


def _record(row) -> CallRecord:
    return record_from_row(row)


def count(data_dir, filters: dict) -> int:
    where, args = _where(filters)
    with _connect(data_dir) as db:
        return db.execute(f"SELECT COUNT(*) FROM calls{where}", args).fetchone()[0]


def page(data_dir, filters: dict, sort: str = "start", descending: bool = True, limit: int = 50,
         offset: int = 0) -> list[CallRecord]:
    where, args = _where(filters)
    order = f"{SORTS[sort]} {'DESC' if descending else 'ASC'}, start_time DESC, id DESC"
    with _connect(data_dir) as db:
        rows = db.execute(f"SELECT {COLUMNS} FROM calls{where} ORDER BY {order} LIMIT ? OFFSET ?",
                          (*args, limit, offset)).fetchall()
    return [_record(r) for r in rows]


def parts(data_dir, linkedids) -> dict[str, int]:
    """How many rows each of these calls has (a transfer or a forward makes more than one)."""
    ids = sorted(set(linkedids))
    out: dict[str, int] = {}
    with _connect(data_dir) as db:
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            marks = ", ".join("?" * len(chunk))
            out.update(db.execute(f"SELECT linkedid, COUNT(*) FROM calls WHERE linkedid IN ({marks}) "
                                  "GROUP BY linkedid", chunk).fetchall())
    return out


def recorded_calls(data_dir) -> dict[str, CallRecord]:
    """Each recording file's path -> the call it belongs to (the legs carry the paths)."""
    out: dict[str, CallRecord] = {}
    where, args = _where({"with_recording": True})
    with _connect(data_dir) as db:
        for row in db.execute(f"SELECT {COLUMNS} FROM calls{where}", args):
            rec = _record(row)
            for leg in rec.legs:
                if isinstance(leg.get("recording"), str):
                    out[leg["recording"]] = rec
    return out
