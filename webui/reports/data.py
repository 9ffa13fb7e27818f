"""The CDR rows a report needs, read straight from cdr.sqlite (one SELECT over an indexed range),
turned into firmware.rating.reports rows; and the report as CSV."""
from __future__ import annotations

import csv
import io
import sqlite3
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from firmware.cdr import CDR_FILE, CdrStore
from firmware.rating import reports
from firmware.rating.reports import ReportRow

SECTIONS = (("periods", "Period"), ("extensions", "Extension"), ("departments", "Department"),
            ("dest_types", "Destination type"),
            ("trunks", "Trunk"), ("top_destinations", "Number"), ("hours", "Hour"))
MAX_DAYS = 800


def rows(data_dir, since: float, until: float) -> list[ReportRow]:
    path = Path(data_dir) / CDR_FILE
    if not path.exists():
        return []
    CdrStore(data_dir).close()            # brings an old file to the current schema first
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        found = db.execute(
            "SELECT start_time, answer_time, end_time, src, src_kind, dst, dst_kind, src_trunk, dst_trunk, "
            "external_number, forwarded_from, transfer, transferred_by, cost_exact, currency, dest_type "
            "FROM calls WHERE start_time >= ? AND start_time < ?", (since, until)).fetchall()
    finally:
        db.close()
    out = []
    for (start, answer, end, src, src_kind, dst, dst_kind, src_trunk, dst_trunk, ext, fwd, transfer, tby, cost,
         currency, dest_type) in found:
        outbound = dst_kind in ("trunk", "line")
        if outbound:
            who = fwd or (tby if transfer in ("blind", "attended") and tby else src if src_kind in ("extension", "") else "")
        else:
            who = src if src_kind in ("extension", "") else dst if dst_kind in ("extension", "") else ""
        billsec = int(round(end - answer)) if answer is not None else 0
        out.append(ReportRow(start, billsec, answer is not None, Decimal(cost) if cost else Decimal(0), currency,
                             dest_type, who, dst_trunk if outbound else src_trunk, dst if outbound else "", outbound))
    return out


def parse_range(args, tz: ZoneInfo, now: datetime | None = None) -> tuple[float, float, str, dict]:
    """(since, until, group, errors) from ?since=YYYY-MM-DD&until=YYYY-MM-DD&group=day|week|month.
    Default: the last 30 days, by day."""
    now = now or datetime.now(tz)
    errors = {}
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    group = (args.get("group") or "day").strip()
    if group not in reports.GROUPS:
        errors["group"] = f"'{group}' is not one of day, week, month"
        group = "day"
    since, until = today - timedelta(days=29), today + timedelta(days=1)
    for name in ("since", "until"):
        value = (args.get(name) or "").strip()
        if not value:
            continue
        try:
            day = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=tz)
        except ValueError:
            errors[name] = f"'{value}' is not a date: use YYYY-MM-DD"
            continue
        if name == "since":
            since = day
        else:
            until = day + timedelta(days=1)
    if since >= until:
        errors["until"] = "must not be before 'since'"
    elif (until - since).days > MAX_DAYS:
        errors["since"] = f"a report covers at most {MAX_DAYS} days: narrow the dates"
    return since.timestamp(), until.timestamp(), group, errors


def build(data_dir, since: float, until: float, tz: ZoneInfo, group: str, names=None, departments=None) -> dict:
    report = reports.build(rows(data_dir, since, until), since, until, tz, group, names=names,
                           departments=departments)
    report["since"] = datetime.fromtimestamp(since, tz).strftime("%Y-%m-%d")
    report["until"] = (datetime.fromtimestamp(until, tz) - timedelta(days=1)).strftime("%Y-%m-%d")
    return report


def to_csv(report: dict) -> str:
    """One table: section, key, name / type, calls, answered, minutes, cost, currency."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["section", "key", "detail", "calls", "answered", "minutes", "cost", "currency"])
    for section, _ in SECTIONS:
        for r in report[section]:
            key = r["key"]
            if key[:1] in ("=", "+", "-", "@") and not key.lstrip("+").isdigit():
                key = "'" + key                               # no formulas from a spreadsheet
            w.writerow([section, key, r.get("name") or r.get("dest_type") or "", r["calls"], r.get("answered", ""),
                        r.get("minutes", ""), r.get("cost", ""), report["currency"] if "cost" in r else ""])
    return out.getvalue()
