"""A rate sheet: CSV text in, a checked RateSheet out, with a report of every line it refused.

File format (UTF-8 CSV; `#` lines before the header set the sheet's properties):

    # sheet: uk-example          name (letters, digits, - _), also the folder of its versions
    # currency: GBP              ISO 4217 code
    # country: GB                the home country: national numbers and prefixes like 07 are in it
    # decimals: 5                a call's charge is rounded once, to this many decimal places
    # peak: mon-fri 08:00-18:00  when the peak rate applies (optional: without it one rate all day)
    prefix,description,type,rate_per_min,connection,increment,minimum,offpeak_rate,weekend_rate,blocked
    07,UK mobile,mobile,0.0055,0,60/60,0,,,no

prefix: "+447" (E.164 digits), "07" (national, the leading 0 becomes the country code), "118"
(national short code), a range "+447700900000-+447700900999" (both ends the same length), or
"*" for the fallback of a destination type. A row's `direction` column (optional: out | in,
default out) with "in" and prefix "*" charges inbound calls on the sheet's trunk (freephone).
Longest prefix wins; at equal length a prefix beats a range.
increment: "first/next" seconds (60/60, 1/1, 30/6). Money columns are decimal numbers in the
sheet's currency per minute (rate) or per call (connection, minimum); empty means 0 (off-peak
and weekend: the row's rate). blocked: yes / no (calls to it are refused before they start).
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

import phonenumbers

from .numbers import DEST_TYPES

COLUMNS = ("prefix", "description", "type", "rate_per_min", "connection", "increment", "minimum",
           "offpeak_rate", "weekend_rate", "blocked")
OPTIONAL = ("offpeak_rate", "weekend_rate", "blocked", "direction", "connection", "minimum")
MAX_ROWS = 20_000
MAX_BYTES = 2_000_000
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_PEAK_RE = re.compile(r"(mon|tue|wed|thu|fri|sat|sun)(?:-(mon|tue|wed|thu|fri|sat|sun))?\s+"
                      r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)")
MAX_MONEY = Decimal("1000")


class SheetError(ValueError):
    """The sheet as a whole cannot be used (no rows, bad header, bad properties); `problems` lists why."""

    def __init__(self, message: str, problems: list["ImportProblem"] = ()):
        super().__init__(message)
        self.problems = list(problems)


@dataclass(frozen=True)
class ImportProblem:
    line: int                         # 1-based line of the file
    text: str                         # the line as it was
    reason: str                       # why it was refused, and what to do

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}: {self.text[:80]!r}"


@dataclass(frozen=True)
class Rate:
    low: str                          # E.164 digits (no plus); a prefix: low == high
    high: str
    description: str
    dest_type: str
    rate: Decimal                     # per minute (peak, or all day)
    connection: Decimal = Decimal(0)
    first: int = 60                   # billing increment: first block, then blocks of `next`
    next: int = 60
    minimum: Decimal = Decimal(0)
    offpeak: Decimal | None = None
    weekend: Decimal | None = None
    blocked: bool = False
    direction: str = "out"
    line: int = 0

    @property
    def fallback(self) -> bool:
        return self.low == "*"

    @property
    def prefix(self) -> str:
        if self.fallback:
            return "*"
        return "+" + self.low if self.low == self.high else f"+{self.low}-+{self.high}"

    @property
    def increment(self) -> str:
        return f"{self.first}/{self.next}"

    def matches(self, digits: str) -> bool:
        n = len(self.low)
        return len(digits) >= n and self.low <= digits[:n] <= self.high

    def specificity(self) -> tuple[int, int]:
        return (len(self.low), 1 if self.low == self.high else 0)


@dataclass(frozen=True)
class RateSheet:
    name: str
    currency: str
    country: str = "GB"
    decimals: int = 5
    peak_days: tuple[int, ...] = ()           # weekday numbers 0=Mon; () = no bands
    peak_start: int = 0                       # minutes after midnight
    peak_end: int = 0
    rates: tuple[Rate, ...] = ()
    version: int = 0                          # set by the store: 1, 2, 3... per import
    problems: tuple[ImportProblem, ...] = field(default=(), compare=False)

    @property
    def version_id(self) -> str:
        """What a call record keeps: "uk-example@3"."""
        return f"{self.name}@{self.version}"

    def find(self, e164: str, dest_type: str = "", direction: str = "out") -> Rate | None:
        """The row for an E.164 number: the longest matching prefix, else the `*` row of its type."""
        digits = e164.lstrip("+")
        best = None
        for r in self.rates:
            if r.direction != direction or r.fallback:
                continue
            if r.matches(digits) and (best is None or r.specificity() > best.specificity()):
                best = r
        if best is not None:
            return best
        for r in self.rates:
            if r.direction == direction and r.fallback and (r.dest_type == dest_type or direction == "in"):
                return r
        return None


def parse_sheet(text: str, name: str = "") -> RateSheet:
    """Parse CSV text into a RateSheet; rows that cannot be used are left out and listed in
    `problems` (line, text, reason). SheetError when nothing usable is left or a property is bad."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise SheetError("the rate sheet is not UTF-8 text: save it as CSV (UTF-8)") from None
    if len(text) > MAX_BYTES:
        raise SheetError(f"the rate sheet is over {MAX_BYTES // 1_000_000} MB: is it the right file?")
    text = text.lstrip("\ufeff")
    lines = text.splitlines()
    props: dict[str, str] = {}
    problems: list[ImportProblem] = []
    header_at = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            key, sep, value = stripped[1:].partition(":")
            if sep and key.strip().lower() in ("sheet", "currency", "country", "decimals", "peak"):
                props[key.strip().lower()] = value.strip()
            continue
        header_at = i
        break
    if header_at is None:
        raise SheetError("the rate sheet has no header line: the first line that is not a # comment must be "
                         + ",".join(COLUMNS))
    sheet_name = props.get("sheet") or name
    currency = props.get("currency", "").upper()
    country = props.get("country", "GB").upper()
    errors = []
    if not _NAME_RE.fullmatch(sheet_name or ""):
        errors.append("'# sheet: NAME' is missing or not 1-40 letters, digits, - or _ (e.g. uk-example)")
    if not re.fullmatch(r"[A-Z]{3}", currency):
        errors.append("'# currency: XXX' is missing or not a 3-letter ISO code (e.g. GBP)")
    if not phonenumbers.country_code_for_region(country):
        errors.append(f"'# country: {country}' is not a known 2-letter country code (e.g. GB)")
    try:
        decimals = int(props.get("decimals", "5"))
        if not 0 <= decimals <= 8:
            raise ValueError
    except ValueError:
        errors.append("'# decimals: N' must be a whole number from 0 to 8")
        decimals = 5
    peak_days, peak_start, peak_end = (), 0, 0
    if props.get("peak"):
        m = _PEAK_RE.fullmatch(props["peak"].lower())
        if not m:
            errors.append(f"'# peak: {props['peak']}' is not like 'mon-fri 08:00-18:00'")
        else:
            d0, d1 = _DAYS.index(m.group(1)), _DAYS.index(m.group(2) or m.group(1))
            peak_days = tuple(range(d0, d1 + 1)) if d0 <= d1 else tuple(list(range(d0, 7)) + list(range(0, d1 + 1)))
            peak_start = int(m.group(3)) * 60 + int(m.group(4))
            peak_end = int(m.group(5)) * 60 + int(m.group(6))
            if peak_end <= peak_start:
                errors.append(f"'# peak: {props['peak']}': the end must be after the start")
    if errors:
        raise SheetError("rate sheet properties: " + "; ".join(errors))
    reader = csv.reader(lines[header_at:])
    header = [h.strip().lower() for h in next(reader)]
    missing = [c for c in COLUMNS if c not in header and c not in OPTIONAL]
    if missing:
        raise SheetError(f"the header line lacks column(s) {', '.join(missing)}; it must name "
                         + ",".join(COLUMNS))
    rates: list[Rate] = []
    seen: dict[tuple, int] = {}
    cc = str(phonenumbers.country_code_for_region(country))
    for offset, row in enumerate(reader, start=1):
        lineno = header_at + 1 + offset
        raw = lines[lineno - 1] if lineno - 1 < len(lines) else ",".join(row)
        if not row or not "".join(row).strip() or raw.lstrip().startswith("#"):
            continue
        if len(rates) >= MAX_ROWS:
            problems.append(ImportProblem(lineno, raw, f"more than {MAX_ROWS} rows: the rest was not read"))
            break
        cells = {h: (row[i].strip() if i < len(row) else "") for i, h in enumerate(header)}
        try:
            rate = _row(cells, cc, lineno)
        except ValueError as e:
            problems.append(ImportProblem(lineno, raw, str(e)))
            continue
        key = (rate.low, rate.high, rate.direction, rate.dest_type if rate.fallback else "")
        if key in seen:
            problems.append(ImportProblem(lineno, raw, f"prefix {rate.prefix} is already on line {seen[key]}; "
                                                       "keep one row per prefix"))
            continue
        seen[key] = lineno
        rates.append(rate)
    if not rates:
        raise SheetError("the rate sheet has no usable rows", problems)
    return RateSheet(sheet_name, currency, country, decimals, peak_days, peak_start, peak_end, tuple(rates),
                     problems=tuple(problems))


def _money(cells: dict, column: str, optional: bool) -> Decimal | None:
    value = cells.get(column, "")
    if value == "":
        if optional:
            return None
        raise ValueError(f"{column} is empty: give a decimal number such as 0.0055")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{column} {value!r} is not a decimal number (write 0.0055, not 0,0055 or 0.55p)") from None
    if not amount.is_finite() or amount < 0 or amount > MAX_MONEY:
        raise ValueError(f"{column} {value!r} must be from 0 to {MAX_MONEY}")
    return amount


def _prefix_digits(text: str, cc: str, what: str) -> str:
    text = text.replace(" ", "")
    if text.startswith("+"):
        digits = text[1:]
    elif text.startswith("00"):
        digits = text[2:]
    elif text.startswith("0"):
        digits = cc + text[1:]
    else:
        digits = cc + text
    if not digits.isdigit() or not 1 <= len(digits) <= 15:
        raise ValueError(f"{what} {text!r} is not a prefix: write +447, 07, 118 or a range +4420-+4429, or *")
    return digits


def _row(cells: dict, cc: str, lineno: int) -> Rate:
    prefix = cells.get("prefix", "")
    if not prefix:
        raise ValueError("prefix is empty: write +447, 07, 118, a range, or * for a type's fallback")
    if prefix == "*":
        low = high = "*"
    elif "-" in prefix:
        a, b = prefix.split("-", 1)
        low, high = _prefix_digits(a, cc, "range start"), _prefix_digits(b, cc, "range end")
        if len(low) != len(high) or low > high:
            raise ValueError(f"range {prefix!r} must have two ends of the same length, the first not above the second")
    else:
        low = high = _prefix_digits(prefix, cc, "prefix")
    dest_type = cells.get("type", "").lower()
    if dest_type not in DEST_TYPES:
        raise ValueError(f"type {dest_type!r} is not one of {', '.join(DEST_TYPES)}")
    rate = _money(cells, "rate_per_min", optional=False)
    connection = _money(cells, "connection", optional=True) or Decimal(0)
    minimum = _money(cells, "minimum", optional=True) or Decimal(0)
    offpeak = _money(cells, "offpeak_rate", optional=True)
    weekend = _money(cells, "weekend_rate", optional=True)
    inc = cells.get("increment", "") or "60/60"
    m = re.fullmatch(r"(\d{1,4})/(\d{1,4})", inc)
    if not m or not int(m.group(1)) >= 1 or not int(m.group(2)) >= 1:
        raise ValueError(f"increment {inc!r} must be first/next seconds such as 60/60, 1/1 or 30/6")
    blocked_text = cells.get("blocked", "").lower()
    if blocked_text not in ("", "yes", "no", "true", "false", "y", "n", "1", "0"):
        raise ValueError(f"blocked {blocked_text!r} must be yes or no")
    direction = (cells.get("direction", "") or "out").lower()
    if direction not in ("in", "out"):
        raise ValueError(f"direction {direction!r} must be out or in")
    if direction == "in" and low != "*":
        raise ValueError("an inbound row (direction in) must have prefix *: it charges the calls in on the trunk")
    return Rate(low, high, cells.get("description", "")[:80], dest_type, rate, connection, int(m.group(1)),
                int(m.group(2)), minimum, offpeak, weekend, blocked_text in ("yes", "true", "y", "1"), direction,
                lineno)
