"""Spend limits against toll fraud: per extension and for the site, per day and per month.

`SpendCheck` is built by the call service for each new call (what each extension and the site
spent today and this month, the limits, the rate sheet of each trunk) and handed to the router in
RuntimeView.spend; `refusal()` is the pure decision the outbound router asks before dialling:

    None                              the call may go out
    Refusal("barred", reason)         the sheet marks the destination blocked (premium 09...)
    Refusal("limit", reason)          a limit is reached; a free destination (0800, 999) still goes

A limit is reached when the spend so far is at or above it: with a 1p daily limit the first call
(costing 1.1p) goes through and the second is refused.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Mapping, NamedTuple

from .rate import rate_call
from .sheet import RateSheet

SITE = "site"
ZERO = Decimal(0)


class Limit(NamedTuple):
    per_day: Decimal | None
    per_month: Decimal | None


class Refusal(NamedTuple):
    kind: str        # "limit" | "barred"
    reason: str


@dataclass(frozen=True)
class Spent:
    day: Decimal = ZERO
    month: Decimal = ZERO


@dataclass(frozen=True)
class SpendCheck:
    limits: Mapping[str, Limit] = field(default_factory=lambda: MappingProxyType({}))   # SITE or extension
    spent: Mapping[str, Spent] = field(default_factory=lambda: MappingProxyType({}))    # SITE or extension
    sheets: Mapping[str, RateSheet] = field(default_factory=lambda: MappingProxyType({}))  # trunk or "*"
    currency: str = ""

    def sheet_for(self, trunk: str) -> RateSheet | None:
        return self.sheets.get(trunk) or self.sheets.get("*")

    def refusal(self, extension: str, trunk: str, number: str) -> Refusal | None:
        """May `extension` call `number` (as sent) out on `trunk` now?"""
        sheet = self.sheet_for(trunk)
        charge = rate_call(sheet, number, 60) if sheet is not None else None
        if charge is not None and charge.blocked:
            return Refusal("barred", f"calls to {charge.description or charge.dest_type} ({charge.prefix}) "
                                     f"are barred by rate sheet {charge.sheet_version}")
        if charge is not None and not charge.chargeable:
            return None                                    # free: 0800, emergency
        for scope, who in ((extension, f"extension {extension}"), (SITE, "the site")):
            limit = self.limits.get(scope)
            if limit is None:
                continue
            spent = self.spent.get(scope, Spent())
            cur = f" {self.currency}" if self.currency else ""
            if limit.per_day is not None and spent.day >= limit.per_day:
                return Refusal("limit", f"call limit reached: {who} spent {spent.day}{cur} today "
                                        f"(daily limit {limit.per_day}{cur})")
            if limit.per_month is not None and spent.month >= limit.per_month:
                return Refusal("limit", f"call limit reached: {who} spent {spent.month}{cur} this month "
                                        f"(monthly limit {limit.per_month}{cur})")
        return None


def payer(rec) -> str:
    """The extension a call record's cost is charged to: whose forward or transfer sent the call
    out, else the extension that made it; "" for a call no extension made (trunk to trunk)."""
    if rec.forwarded_from:
        return rec.forwarded_from
    if rec.transfer in ("blind", "attended") and rec.transferred_by:
        return rec.transferred_by
    return rec.src if rec.src_kind in ("extension", "") else ""
