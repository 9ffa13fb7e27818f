"""Unusual call patterns worth an alert (what hijacked phones do): pure, on call summaries.

- international minutes in the last hour above all the international minutes of the 30 days
  before (and at least `floor` minutes, so a first ever call abroad is not an alarm);
- chargeable outbound calls started at night (local time, 22:00-06:00 by default).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class CallSummary:
    start: datetime                  # local time (the box's zone)
    billsec: int
    dest_type: str
    payer: str                       # extension
    number: str                      # as dialled
    chargeable: bool = True


@dataclass(frozen=True)
class Alert:
    kind: str                        # "international" | "night"
    text: str


def unusual(calls: list[CallSummary], now: datetime, floor_minutes: int = 10,
            night: tuple[int, int] = (22, 6), night_window: timedelta = timedelta(hours=24)) -> list[Alert]:
    alerts = []
    hour_ago, month_ago = now - timedelta(hours=1), now - timedelta(days=30)
    recent = sum(c.billsec for c in calls if c.dest_type == "international" and hour_ago <= c.start <= now)
    before = sum(c.billsec for c in calls if c.dest_type == "international" and month_ago <= c.start < hour_ago)
    if recent > before and recent >= floor_minutes * 60:
        alerts.append(Alert("international", f"{recent / 60:.0f} international minutes in the last hour, "
                                             f"more than the {before / 60:.0f} of the 30 days before"))
    start_h, end_h = night
    at_night = [c for c in calls if c.chargeable and now - night_window <= c.start <= now
                and (c.start.hour >= start_h or c.start.hour < end_h)]
    if at_night:
        who = sorted({c.payer or "?" for c in at_night})
        alerts.append(Alert("night", f"{len(at_night)} chargeable call(s) at night "
                                     f"({start_h:02d}:00-{end_h:02d}:00) in the last 24 h, from {', '.join(who)}"))
    return alerts
