"""Call reports (issue 13): calls, minutes and cost per day / week / month, per extension, per
destination type and trunk, the top destinations and the busiest hours. Pure: rows in, numbers out.

A row is a ReportRow (one CDR row, read by webui/reports/data.py). Money is summed in Decimal and
handed out as decimal text; minutes are talk minutes (billsec / 60) to one decimal place.
Per department: each row counts for the department its extension has now (Extension.department);
extensions without one are "(no department)".
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

GROUPS = ("day", "week", "month")
ZERO = Decimal(0)


@dataclass(frozen=True)
class ReportRow:
    start: float
    billsec: int
    answered: bool
    cost: Decimal
    currency: str
    dest_type: str
    extension: str                   # who the row belongs to: the payer of an outbound call, else the extension in it
    trunk: str                       # the trunk it went out (or came in) on, "" for internal
    number: str                      # outbound: the number as dialled; "" otherwise
    outbound: bool


class _Sum:
    __slots__ = ("calls", "answered", "seconds", "cost")

    def __init__(self):
        self.calls, self.answered, self.seconds, self.cost = 0, 0, 0, ZERO

    def add(self, row: ReportRow) -> None:
        self.calls += 1
        self.answered += row.answered
        self.seconds += row.billsec
        self.cost += row.cost

    def out(self, key: str, **extra) -> dict:
        return {"key": key, "calls": self.calls, "answered": self.answered,
                "minutes": round(self.seconds / 60, 1), "cost": str(self.cost), **extra}


def period_key(when: datetime, group: str) -> str:
    if group == "day":
        return when.strftime("%Y-%m-%d")
    if group == "week":
        year, week, _ = when.isocalendar()
        return f"{year}-W{week:02d}"
    return when.strftime("%Y-%m")


def periods(since: datetime, until: datetime, group: str) -> list[str]:
    """Every period key from since up to (not including) until, so empty days still show."""
    keys, day = [], since
    while day < until and len(keys) < 2000:
        key = period_key(day, group)
        if not keys or keys[-1] != key:
            keys.append(key)
        day += timedelta(days=1)
    return keys


NO_DEPARTMENT = "(no department)"


def build(rows: list[ReportRow], since: float, until: float, tz: ZoneInfo, group: str = "day",
          top: int = 10, names: dict[str, str] | None = None,
          departments: dict[str, str] | None = None) -> dict:
    """The report of the rows that started in [since, until), in the box's zone `tz`."""
    if group not in GROUPS:
        raise ValueError(f"group must be one of {', '.join(GROUPS)}, got {group!r}")
    names = names or {}
    total = _Sum()
    by_period: dict[str, _Sum] = defaultdict(_Sum)
    by_ext: dict[str, _Sum] = defaultdict(_Sum)
    by_dept: dict[str, _Sum] = defaultdict(_Sum)
    departments = departments or {}
    by_type: dict[str, _Sum] = defaultdict(_Sum)
    by_trunk: dict[str, _Sum] = defaultdict(_Sum)
    by_number: dict[str, _Sum] = defaultdict(_Sum)
    number_type: dict[str, str] = {}
    hours = Counter()
    currencies = Counter()
    for row in rows:
        if not since <= row.start < until:
            continue
        local = datetime.fromtimestamp(row.start, tz)
        total.add(row)
        by_period[period_key(local, group)].add(row)
        hours[local.hour] += 1
        if row.extension:
            by_ext[row.extension].add(row)
            by_dept[departments.get(row.extension) or NO_DEPARTMENT].add(row)
        by_type[row.dest_type or "unknown"].add(row)
        if row.trunk:
            by_trunk[row.trunk].add(row)
        if row.outbound and row.number:
            by_number[row.number].add(row)
            number_type[row.number] = row.dest_type
        if row.currency:
            currencies[row.currency] += 1
    start_local, end_local = datetime.fromtimestamp(since, tz), datetime.fromtimestamp(until, tz)
    keys = periods(start_local, end_local, group)
    keys += sorted(k for k in by_period if k not in keys)

    def ranked(sums: dict[str, _Sum], **extra) -> list[dict]:
        return [s.out(k, **{n: f(k) for n, f in extra.items()})
                for k, s in sorted(sums.items(), key=lambda kv: (-kv[1].cost, -kv[1].calls, kv[0]))]

    return {
        "group": group,
        "currency": currencies.most_common(1)[0][0] if currencies else "",
        "totals": total.out("total"),
        "periods": [by_period[k].out(k) if k in by_period else _Sum().out(k) for k in keys],
        "extensions": ranked(by_ext, name=lambda k: names.get(k, "")),
        "departments": ranked(by_dept),
        "dest_types": ranked(by_type),
        "trunks": ranked(by_trunk),
        "top_destinations": ranked(by_number, dest_type=lambda k: number_type.get(k, ""))[:top],
        "hours": [{"key": f"{h:02d}:00", "calls": hours.get(h, 0)} for h in range(24)],
        "busiest_hours": [f"{h:02d}:00" for h, n in sorted(hours.items(), key=lambda kv: (-kv[1], kv[0]))[:3] if n],
    }
