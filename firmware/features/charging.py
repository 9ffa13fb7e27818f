"""Call charging's configuration (issue 13): which rate sheet each trunk uses, and spend limits.

rate_assignments  key `trunk`: a trunk's name, "line:N" for an analog exchange line, or "*" for
                  every trunk without its own. `sheet` names a sheet stored in DATA/rating/ (the
                  store, services/charging.py, checks it exists); `version` 0 = the newest import.
spend_limits      key `scope`: "site" or an extension number. per_day / per_month: decimal text
                  in the sheet's currency ("" = no limit). email: who is told when it is reached.
The decisions are in firmware/rating (pure).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from firmware.config.errors import ValidationError, ValidationErrors
from firmware.config.records import Collection, RecordKind, Ref, register_records
from firmware.rating.limits import SITE, Limit

ASSIGNMENTS = "rate_assignments"
LIMITS = "spend_limits"
_SHEET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")
_TRUNK_RE = re.compile(r"\*|line:[0-9]{1,2}|[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")
_EMAIL_RE = re.compile(r"[^@\s,<>]+@[^@\s,<>]+\.[^@\s,<>]+")


@dataclass(frozen=True)
class RateAssignment:
    trunk: str
    sheet: str
    version: int = 0

    def validate(self) -> None:
        errors = []
        if not isinstance(self.trunk, str) or not _TRUNK_RE.fullmatch(self.trunk):
            errors.append(ValidationError("trunk", f"{self.trunk!r} is not a trunk name, line:N or * (every trunk)"))
        if not isinstance(self.sheet, str) or not _SHEET_RE.fullmatch(self.sheet):
            errors.append(ValidationError("sheet", f"{self.sheet!r} is not a rate sheet name (import one first)"))
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 0:
            errors.append(ValidationError("version", "must be a whole number, 0 for the newest import"))
        if errors:
            raise ValidationErrors(errors)


def _money_errors(name: str, value) -> list[ValidationError]:
    if value == "":
        return []
    try:
        amount = Decimal(value) if isinstance(value, str) else None
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite() or amount < 0 or amount > 1_000_000:
        return [ValidationError(name, f"{value!r} is not an amount: write e.g. 5.00 (or leave empty for no limit)")]
    return []


@dataclass(frozen=True)
class SpendLimit:
    scope: str                 # "site" or an extension number
    per_day: str = ""
    per_month: str = ""
    email: str = ""

    def validate(self) -> None:
        errors = []
        if not isinstance(self.scope, str) or not (self.scope == SITE or re.fullmatch(r"[0-9]{2,8}", self.scope)):
            errors.append(ValidationError("scope", f"{self.scope!r}: use 'site' or an extension number"))
        errors += _money_errors("per_day", self.per_day) + _money_errors("per_month", self.per_month)
        if self.email and not (isinstance(self.email, str) and all(_EMAIL_RE.fullmatch(a.strip())
                                                                  for a in self.email.split(","))):
            errors.append(ValidationError("email", f"{self.email!r} is not an e-mail address (or a list with commas)"))
        if errors:
            raise ValidationErrors(errors)

    def limit(self) -> Limit:
        return Limit(Decimal(self.per_day) if self.per_day else None,
                     Decimal(self.per_month) if self.per_month else None)


def _assignment_refs(a: RateAssignment):
    if a.trunk != "*":
        return [Ref("trunk", "trunks", a.trunk)]
    return []


register_records(RecordKind(Collection(ASSIGNMENTS, RateAssignment, key="trunk", noun="rate sheet assignment"),
                            references=_assignment_refs))
register_records(RecordKind(Collection(LIMITS, SpendLimit, key="scope", noun="spend limit",
                                       sort_key=lambda s: (s != SITE, s)),
                            references=lambda s: [Ref("scope", "extensions", s.scope)] if s.scope != SITE else []))
