"""CDR filters from a query string, shared by the page, the CSV export and the API."""
from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from firmware.cdr import Disposition, details

DISPOSITIONS = tuple(d.value for d in Disposition)
_NUMBER_RE = re.compile(r"\+?[0-9*#]{1,32}")
_PLAIN_NUMBER_RE = re.compile(r"\+?[0-9]+")
# the first eleven are the columns of schema version 1, in their old places: a spreadsheet made
# from an older export still finds them; the fields of calls with many legs follow
CSV_COLUMNS = ("call_id", "src", "dst", "start", "answer", "end", "duration", "billsec",
               "disposition", "cause", "cost",
               "linkedid", "seq", "src_kind", "dst_kind", "src_trunk", "dst_trunk", "external_number",
               "forwarded_from", "transfer", "transferred_by", "currency", "rate", "dest_type", "sheet_version")
NEW_FIELDS = CSV_COLUMNS[11:]


def _parse_time(value: str, tz: ZoneInfo, end_of_day: bool) -> float:
    """'2026-11-25' (a whole day in the site's zone) or '2026-11-25T14:30'."""
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        day = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=tz)
        return (day + timedelta(days=1) if end_of_day else day).timestamp()
    stamp = datetime.fromisoformat(value)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=tz)
    return stamp.timestamp()


def parse(args, tz: ZoneInfo, default_limit: int = 500, max_limit: int = 100_000) -> tuple[dict, dict]:
    """(keyword arguments for CdrStore.query, {field: error}) from request args."""
    query: dict = {}
    errors: dict[str, str] = {}
    for field, end in (("since", False), ("until", True)):
        value = (args.get(field) or "").strip()
        if value:
            try:
                query[field] = _parse_time(value, tz, end)
            except ValueError:
                errors[field] = f"'{value}' is not a date: use YYYY-MM-DD (or YYYY-MM-DDTHH:MM)"
    extension = (args.get("extension") or "").strip()
    if extension:
        if _NUMBER_RE.fullmatch(extension):
            query["extension"] = extension
        else:
            errors["extension"] = f"'{extension}' is not a number: give an extension such as 201"
    disposition = (args.get("disposition") or "").strip().upper()
    if disposition:
        if disposition in DISPOSITIONS:
            query["disposition"] = disposition
        else:
            errors["disposition"] = f"'{disposition}' is not one of {', '.join(DISPOSITIONS)}"
    linkedid = (args.get("linkedid") or "").strip()
    if linkedid:
        if len(linkedid) <= 255 and linkedid.isprintable():
            query["linkedid"] = linkedid
        else:
            errors["linkedid"] = "not a call id: give the linkedid of a call record"
    limit = (args.get("limit") or "").strip()
    try:
        query["limit"] = int(limit) if limit else default_limit
        if not 1 <= query["limit"] <= max_limit:
            raise ValueError
    except ValueError:
        errors["limit"] = f"limit must be a whole number from 1 to {max_limit}"
        query["limit"] = default_limit
    if "since" in query and "until" in query and query["since"] >= query["until"]:
        errors["until"] = "must be after 'since'"
    return query, errors


def record_dict(rec, tz: ZoneInfo) -> dict:
    def iso(t):
        return datetime.fromtimestamp(t, tz).isoformat(timespec="seconds") if t is not None else None
    return {"call_id": rec.call_id, "src": rec.src, "dst": rec.dst, "start": iso(rec.start),
            "answer": iso(rec.answer), "end": iso(rec.end), "duration": rec.duration,
            "billsec": rec.billsec, "disposition": rec.disposition.value, "cause": rec.cause,
            "cost": None if rec.cost is None else str(rec.cost), **{name: getattr(rec, name) for name in NEW_FIELDS},
            "details": details(rec)}


def _cell(value) -> str:
    text = "" if value is None else str(value)
    # Spreadsheets run cells starting with = + - @ as formulas (CSV injection via a caller ID);
    # a plain phone number such as +4420... stays as it is.
    if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _PLAIN_NUMBER_RE.fullmatch(text):
        return "'" + text
    return text


def to_csv(records, tz: ZoneInfo) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for rec in records:
        row = record_dict(rec, tz)
        writer.writerow([_cell(row[c]) for c in CSV_COLUMNS])
    return out.getvalue()
