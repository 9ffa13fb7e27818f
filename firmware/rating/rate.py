"""The charge of one call: which row, which band, how many seconds billed, how much.

    billed = 0 when not answered; else the first increment, then whole `next` increments
    cost   = connection + rate x billed / 60, at least the row's minimum
    rounded once, half up, to the sheet's decimals

All in Decimal; a float never enters (a billsec is an int, rates come from the sheet's text).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from .numbers import classify, normalise
from .sheet import Rate, RateSheet

ZERO = Decimal(0)


@dataclass(frozen=True)
class Charge:
    cost: Decimal                 # rounded, in `currency`
    currency: str
    rate: Decimal                 # per minute, of the band that applied
    dest_type: str
    sheet_version: str            # "uk-example@3", "" when no sheet applied
    number: str = ""              # E.164
    prefix: str = ""              # the row that matched ("+447", "*")
    description: str = ""
    band: str = ""                # "peak" | "offpeak" | "weekend" | "" (one rate all day)
    billed: int = 0               # seconds billed after increments
    blocked: bool = False

    @property
    def chargeable(self) -> bool:
        """A call to this number can cost money (what a spend limit stops)."""
        return self.rate > 0 or self.blocked


def billed_seconds(billsec: int, first: int, next_: int) -> int:
    """Seconds billed for `billsec` of talk at increment first/next (60/60, 1/1, 30/6)."""
    if billsec <= 0:
        return 0
    if billsec <= first:
        return first
    rest = billsec - first
    return first + -(-rest // next_) * next_


def band_of(sheet: RateSheet, when: datetime | None) -> str:
    """peak / offpeak / weekend at local time `when` (the box's zone); "" when the sheet has no bands."""
    if not sheet.peak_days or when is None:
        return ""
    if when.weekday() >= 5 and when.weekday() not in sheet.peak_days:
        return "weekend"
    minute = when.hour * 60 + when.minute
    if when.weekday() in sheet.peak_days and sheet.peak_start <= minute < sheet.peak_end:
        return "peak"
    return "offpeak"


def _band_rate(row: Rate, band: str) -> Decimal:
    if band == "weekend":
        return row.weekend if row.weekend is not None else row.offpeak if row.offpeak is not None else row.rate
    if band == "offpeak":
        return row.offpeak if row.offpeak is not None else row.rate
    return row.rate


def quantize(sheet: RateSheet, amount: Decimal) -> Decimal:
    return amount.quantize(Decimal(1).scaleb(-sheet.decimals), rounding=ROUND_HALF_UP)


def find_rate(sheet: RateSheet, number: str, direction: str = "out") -> tuple[str, str, Rate | None]:
    """(E.164, destination type, the row) for a number as sent to the provider."""
    if direction == "in":
        return "", "inbound", sheet.find("", "inbound", direction="in")
    e164 = normalise(number, sheet.country)
    if not e164:
        return "", "", None
    kind = classify(e164, sheet.country)
    row = sheet.find(e164, kind)
    return e164, (row.dest_type if row is not None else kind), row


def rate_call(sheet: RateSheet | None, number: str, billsec: int, when: datetime | None = None,
              direction: str = "out") -> Charge:
    """The charge of a call of `billsec` talk seconds to `number` (as sent out) starting at `when`
    (an aware datetime in the box's zone: it picks the band). Without a sheet, or a number the sheet
    has no row for, the cost is 0 and the destination type says what the number is."""
    if isinstance(billsec, bool) or not isinstance(billsec, int) or billsec < 0:
        raise ValueError(f"billsec must be whole seconds >= 0, got {billsec!r}")
    if sheet is None:
        return Charge(ZERO, "", ZERO, "inbound" if direction == "in" else classify(number), "")
    e164, kind, row = find_rate(sheet, number, direction)
    if row is None:
        return Charge(quantize(sheet, ZERO), sheet.currency, ZERO, kind, sheet.version_id, e164)
    band = band_of(sheet, when)
    per_minute = _band_rate(row, band)
    billed = billed_seconds(billsec, row.first, row.next)
    if billsec <= 0:
        cost = ZERO
    else:
        cost = max(row.connection + per_minute * billed / 60, row.minimum)
    return Charge(quantize(sheet, cost), sheet.currency, per_minute, row.dest_type, sheet.version_id, e164,
                  row.prefix, row.description, band, billed, row.blocked)
