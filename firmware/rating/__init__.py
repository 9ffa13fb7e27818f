"""Call charging at carrier rate (issue 13): rate sheets, rating, spend limits, patterns. Pure: no I/O.

- `sheet`: a rate sheet (per trunk or carrier) parsed from CSV text. A row matches by E.164
  prefix or number range, longest match wins; a `*` row is the fallback for a destination type
  (what the phone-number library says the number is when no prefix matches). Each row has a rate
  per minute, a connection charge, a billing increment (60/60, 1/1, 30/6...), a minimum charge,
  optional off-peak and weekend rates (the sheet's peak hours, judged in the box's time zone)
  and a `blocked` flag. The import reports, line by line, what it refused and why.
- `numbers`: numbers normalised to E.164 and classified with `phonenumbers`.
- `rate`: the charge of one call: Decimal in the sheet's currency, rounded once per call
  (the sheet's `decimals`), never a float.
- `limits`: spend limits per extension and for the site, per day and month, and the pure decision
  whether an outbound call may start (`SpendCheck.refusal`).
- `patterns`: unusual-pattern alerts (international minutes, calls at night).
- `records`: the config records: which sheet each trunk uses, the spend limits.

Where the sheets live (DATA/rating/, one file per version) and when calls are rated (at hang-up)
belongs to the call service: services/charging.py, services/callsvc/charging.py.
"""
from .numbers import classify, normalise
from .rate import Charge, billed_seconds, rate_call
from .sheet import ImportProblem, Rate, RateSheet, SheetError, parse_sheet

__all__ = ["Charge", "ImportProblem", "Rate", "RateSheet", "SheetError", "billed_seconds", "classify",
           "normalise", "parse_sheet", "rate_call"]
