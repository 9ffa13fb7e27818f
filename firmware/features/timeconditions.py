"""Time conditions: "after 6 pm and on bank holidays the main number goes to the night message".

A time condition is a destination ("timecondition:1") that sends a call to its `open_destination`
while the office is open and to its `closed_destination` otherwise. Open or closed is decided on
the wall clock of the box's time zone (Settings.timezone), in this order:

1. a call-flow toggle (day/night, firmware/features/daynight.py) named by `toggle`: in NIGHT the
   office is closed whatever the schedule says; in DAY the schedule below decides;
2. a special date or date range (`special`): "2026-12-24 09:00-12:00" (short day) or
   "2026-12-27..2026-12-31 closed" (custom closure);
3. a public holiday of `holidays_country`/`holidays_region` (the `holidays` library: "GB"/"ENG"
   is England and Wales, "GB"/"SCT" Scotland, "US"/"CA" California...): closed all day;
4. the weekly hours (`hours`): "mon-fri 09:00-12:30,13:30-17:30", "sat 10:00-13:00". A range
   whose end is before its start crosses midnight ("fri 22:00-02:00" is open until 2 am on
   Saturday); "24:00" is the end of the day.

Times are local wall-clock times: on the night the clocks go forward the missing hour is never
open, and on the night they go back the repeated hour is judged twice by the same wall clock.
Everything here is pure (no I/O); `evaluate()` and `preview()` take the time as an argument.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from firmware.config.destination import DestinationKind, register_kind
from firmware.config.errors import ValidationError, ValidationErrors
from firmware.config.records import Collection, RecordKind, Ref, destination_refs, register_records
from firmware.config.destination import destination_errors

TABLE = "time_conditions"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_NUMBER_RE = re.compile(r"[1-9][0-9]{0,2}")
_TIME_RE = re.compile(r"([01]?[0-9]|2[0-4]):([0-5][0-9])")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
DAY_MINUTES = 24 * 60

# "" = no public holidays; otherwise a country code the `holidays` library knows
COMMON_REGIONS = (("GB", "ENG", "England and Wales"), ("GB", "SCT", "Scotland"), ("GB", "NIR", "Northern Ireland"),
                  ("US", "", "United States (federal)"), ("US", "CA", "US: California"), ("US", "NY", "US: New York"))


def _tuple(value) -> tuple:
    if isinstance(value, str):
        return tuple(line.strip() for line in value.splitlines() if line.strip())
    return tuple(value or ())


@dataclass(frozen=True)
class TimeCondition:
    number: str                         # "1": the destination "timecondition:1"
    name: str
    open_destination: str
    closed_destination: str
    hours: tuple = ()                   # ("mon-fri 09:00-17:30", "sat 10:00-13:00")
    special: tuple = ()                 # ("2026-12-24 09:00-12:00", "2026-12-27..2026-12-31 closed")
    holidays_country: str = ""          # "GB", "US"... ("" = none)
    holidays_region: str = ""           # "ENG", "SCT", "CA"... ("" = the whole country)
    toggle: str = ""                    # call-flow toggle number whose NIGHT forces closed ("" = none)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hours", _tuple(self.hours))
        object.__setattr__(self, "special", _tuple(self.special))

    def validate(self) -> None:
        errors = []
        if not isinstance(self.number, str) or not _NUMBER_RE.fullmatch(self.number):
            errors.append(ValidationError("number", f"{self.number!r} is not a time condition number: use 1-999"))
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name) > 40:
            errors.append(ValidationError("name", "must be 1-40 characters, e.g. 'Office hours'"))
        errors += destination_errors("open_destination", self.open_destination)
        errors += destination_errors("closed_destination", self.closed_destination)
        if self.open_destination == f"timecondition:{self.number}" or \
                self.closed_destination == f"timecondition:{self.number}":
            errors.append(ValidationError("open_destination", "a time condition cannot send calls to itself"))
        for i, line in enumerate(self.hours):
            try:
                parse_hours_line(line)
            except ValueError as e:
                errors.append(ValidationError("hours", f"line {i + 1}: {e}"))
        for i, line in enumerate(self.special):
            try:
                parse_special_line(line)
            except ValueError as e:
                errors.append(ValidationError("special", f"line {i + 1}: {e}"))
        problem = holiday_region_error(self.holidays_country, self.holidays_region)
        if problem:
            errors.append(ValidationError("holidays_country", problem))
        if self.toggle and not _NUMBER_RE.fullmatch(str(self.toggle)):
            errors.append(ValidationError("toggle", f"{self.toggle!r} is not a toggle number (1-999) or empty"))
        if errors:
            raise ValidationErrors(errors)


def _references(tc: TimeCondition):
    refs = destination_refs(("open_destination", tc.open_destination), ("closed_destination", tc.closed_destination))
    if tc.toggle and str(tc.toggle) != "1":       # toggle 1 (the front panel's) always exists
        refs.append(Ref("toggle", "call_flow_toggles", str(tc.toggle)))
    return refs


TIME_CONDITIONS = register_records(RecordKind(
    Collection(TABLE, TimeCondition, key="number", noun="time condition", sort_key=lambda n: int(n)),
    references=_references))

register_kind(DestinationKind("timecondition", "Time condition", "1",
                              lambda t: None if _NUMBER_RE.fullmatch(t) else f"'{t}' is not a time condition number",
                              refers_to=TABLE))


# --- parsing ------------------------------------------------------------------------------------------
def _minutes(text: str) -> int:
    m = _TIME_RE.fullmatch(text.strip())
    if not m:
        raise ValueError(f"'{text}' is not a time: write HH:MM, e.g. 09:00 or 17:30")
    value = int(m.group(1)) * 60 + int(m.group(2))
    if value > DAY_MINUTES:
        raise ValueError(f"'{text}' is past 24:00")
    return value


def parse_ranges(text: str) -> tuple[tuple[int, int], ...]:
    """'09:00-12:30,13:30-17:30' -> ((540, 750), (810, 1050)); an end before the start crosses
    midnight: (1320, 120) for 22:00-02:00."""
    ranges = []
    for part in text.split(","):
        start, sep, end = part.strip().partition("-")
        if not sep:
            raise ValueError(f"'{part.strip()}' is not a time range: write START-END, e.g. 09:00-17:30")
        a, b = _minutes(start), _minutes(end)
        if a == b:
            raise ValueError(f"'{part.strip()}' starts and ends at the same time")
        if a == DAY_MINUTES:
            raise ValueError(f"'{part.strip()}' starts at 24:00: write 00:00")
        ranges.append((a, b))
    return tuple(ranges)


def _days(text: str) -> tuple[int, ...]:
    days: list[int] = []
    for part in text.lower().split(","):
        first, sep, last = part.strip().partition("-")
        if first not in DAYS or (sep and last not in DAYS):
            raise ValueError(f"'{part.strip()}' is not a day or day range: use mon..sun, e.g. mon-fri or sat,sun")
        a, b = DAYS.index(first), DAYS.index(last) if sep else DAYS.index(first)
        days += list(range(a, b + 1)) if a <= b else list(range(a, 7)) + list(range(0, b + 1))
    return tuple(days)


def parse_hours_line(line: str) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
    """'mon-fri 09:00-17:30' -> ((0, 1, 2, 3, 4), ((540, 1050),))."""
    days, _, ranges = line.strip().partition(" ")
    if not ranges.strip():
        raise ValueError(f"'{line}' needs days and times, e.g. 'mon-fri 09:00-17:30'")
    return _days(days), parse_ranges(ranges)


def _date(text: str) -> date:
    if not _DATE_RE.fullmatch(text):
        raise ValueError(f"'{text}' is not a date: write YYYY-MM-DD, e.g. 2026-12-24")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"'{text}' is not a date of the calendar") from None


def parse_special_line(line: str) -> tuple[date, date, tuple[tuple[int, int], ...], str]:
    """'2026-12-24 09:00-12:00' or '2026-12-27..2026-12-31 closed [note]' ->
    (first, last, open ranges (() = closed), note)."""
    when, _, rest = line.strip().partition(" ")
    first_text, sep, last_text = when.partition("..")
    first = _date(first_text)
    last = _date(last_text) if sep else first
    if last < first:
        raise ValueError(f"'{when}' ends before it starts")
    if (last - first).days > 366:
        raise ValueError(f"'{when}' is longer than a year")
    what, _, note = rest.strip().partition(" ")
    if what.lower() == "closed":
        return first, last, (), note.strip()
    if not what:
        raise ValueError(f"'{line}' needs 'closed' or opening times after the date, e.g. '{when} closed'")
    return first, last, parse_ranges(what), note.strip()


def holiday_region_error(country: str, region: str) -> str | None:
    if not country:
        return "a region needs a country, e.g. GB" if region else None
    import holidays as holidays_lib     # here, not at import: 8 MB the call service needs only for this
    supported = holidays_lib.list_supported_countries()
    if country not in supported:
        return f"'{country}' is not a country the holidays library knows: use a code like GB or US"
    if region and region not in supported[country]:
        return (f"'{region}' is not a region of {country}: use one of {', '.join(supported[country][:12])}"
                + ("..." if len(supported[country]) > 12 else ""))
    return None


@lru_cache(maxsize=64)
def _holiday_calendar(country: str, region: str, year: int):
    import holidays as holidays_lib
    return holidays_lib.country_holidays(country, subdiv=region or None, years=year)


def holiday_name(country: str, region: str, day: date) -> str | None:
    if not country:
        return None
    return _holiday_calendar(country, region, day.year).get(day)


# --- deciding ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DayPlan:
    """A local date's opening ranges (minutes, start < end, within 0..1440) and why."""
    ranges: tuple[tuple[int, int], ...]
    reason: str            # "office hours", "closed: Christmas Day", "closed: stocktaking"...
    opens: bool = True     # the day's own rules open it at some time (else `reason` says why not)

    @property
    def open_reason(self) -> str:
        """Why the office is open within `ranges` (a range carried over midnight on a closed day)."""
        return self.reason if self.opens else "office hours (from the day before)"

    @property
    def closed_reason(self) -> str:
        """Why the office is closed outside `ranges` on this day."""
        return "outside office hours" if self.opens else self.reason


def _own_ranges(tc: TimeCondition, day: date) -> tuple[tuple[tuple[int, int], ...], str]:
    """The ranges `day`'s own rules give, midnight crossings unsplit, and the reason."""
    for line in reversed(tc.special):         # a later line wins over an earlier one
        first, last, ranges, note = parse_special_line(line)
        if first <= day <= last:
            what = note or ("closure" if not ranges else "special hours")
            return ranges, what if ranges else f"closed: {what}"
    name = holiday_name(tc.holidays_country, tc.holidays_region, day)
    if name:
        return (), f"closed: {name}"
    ranges: list[tuple[int, int]] = []
    for line in tc.hours:
        days, day_ranges = parse_hours_line(line)
        if day.weekday() in days:
            ranges += day_ranges
    return tuple(ranges), ("office hours" if ranges else f"closed on {DAY_NAMES[day.weekday()]}s")


def day_plan(tc: TimeCondition, day: date) -> DayPlan:
    """Open ranges of `day`: its own, cut at midnight, plus what a range of the day before that
    crosses midnight carries over."""
    own, reason = _own_ranges(tc, day)
    ranges = [(a, b if b > a else DAY_MINUTES) for a, b in own]
    before, _ = _own_ranges(tc, day - timedelta(days=1))
    ranges += [(0, b) for a, b in before if b < a]
    return DayPlan(tuple(_merge(ranges)), reason, opens=bool(own))


def _merge(ranges):
    merged: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


@dataclass(frozen=True)
class Decision:
    open: bool
    destination: str
    reason: str


def evaluate(tc: TimeCondition, now: datetime, timezone: str = "UTC", toggle_state: str | None = None) -> Decision:
    """Open or closed at `now` (an aware datetime; a naive one is taken as local time already)."""
    local = now.astimezone(zone(timezone)) if now.tzinfo is not None else now
    if tc.toggle and toggle_state == "night":
        return Decision(False, tc.closed_destination, f"night mode (toggle {tc.toggle})")
    plan = day_plan(tc, local.date())
    minute = local.hour * 60 + local.minute
    if any(a <= minute < b for a, b in plan.ranges):
        return Decision(True, tc.open_destination, plan.open_reason)
    return Decision(False, tc.closed_destination, plan.closed_reason)


@dataclass(frozen=True)
class Segment:
    start: str          # "09:00"
    end: str            # "17:30" ("24:00" = end of the day)
    open: bool
    destination: str
    reason: str


@dataclass(frozen=True)
class PreviewDay:
    day: date
    label: str          # "Fri 25 Dec"
    segments: tuple[Segment, ...]


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def preview(tc: TimeCondition, start: date, days: int = 14, toggle_state: str | None = None) -> list[PreviewDay]:
    """Which destination is active when, day by day from `start` (local dates), for the web page.
    With the toggle in NIGHT every day shows closed (as it would be until someone switches it)."""
    out = []
    for i in range(days):
        day = start + timedelta(days=i)
        segments: list[Segment] = []
        if tc.toggle and toggle_state == "night":
            segments.append(Segment("00:00", "24:00", False, tc.closed_destination, f"night mode (toggle {tc.toggle})"))
        else:
            plan = day_plan(tc, day)
            closed_reason = plan.closed_reason
            cursor = 0
            for a, b in plan.ranges:
                if a > cursor:
                    segments.append(Segment(_hhmm(cursor), _hhmm(a), False, tc.closed_destination, closed_reason))
                segments.append(Segment(_hhmm(a), _hhmm(b), True, tc.open_destination, plan.open_reason))
                cursor = b
            if cursor < DAY_MINUTES:
                segments.append(Segment(_hhmm(cursor), "24:00", False, tc.closed_destination, closed_reason))
        out.append(PreviewDay(day, day.strftime("%a %d %b"), tuple(segments)))
    return out


# --- the dialplan -----------------------------------------------------------------------------------------
def _plan(dest, ctx):
    from firmware.dialplan.context import MAX_FORWARD_HOPS
    from firmware.dialplan.plan import Reject
    from firmware.dialplan.router import resolve
    from firmware.config.destination import Destination
    from . import daynight

    tc = ctx.config.table(TABLE).get(dest.target)
    if tc is None:
        return Reject(404, "not_found", f"no time condition {dest.target}", prompt="not_found")
    if ctx.hops >= MAX_FORWARD_HOPS:
        return Reject(482, "loop", f"time condition {tc.number}: too many hops", tone="congestion")
    state = daynight.toggle_state(ctx.config, tc.toggle) if tc.toggle else None
    decision = evaluate(tc, ctx.now, ctx.config.settings.timezone, state)
    try:
        target = Destination.parse(decision.destination)
    except ValueError as e:
        return Reject(404, "not_found", f"time condition {tc.number}: {e}", prompt="not_found")
    return resolve(target, replace(ctx, hops=ctx.hops + 1))


def _register_handler() -> None:
    from firmware.dialplan.router import DESTINATION_HANDLERS
    DESTINATION_HANDLERS["timecondition"] = _plan


_register_handler()

__all__ = ["TimeCondition", "evaluate", "preview", "day_plan", "Decision", "Segment", "PreviewDay",
           "TIME_CONDITIONS", "COMMON_REGIONS"]
