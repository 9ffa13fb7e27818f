"""Call charging in the call service (issue 13): spend limits for the router, rating at hang-up,
the running cost of calls in progress, and alerts.

b2bua.py calls three functions, one line each:
    runtime(svc)                   the RuntimeView a routing decision gets (spend so far, limits, sheets)
    rate(svc, records)             the session's call records, rated, on their way to the CDR writer
    describe(svc, session)         a call in the status, with its cost so far
"""
from __future__ import annotations

import logging
import time
import weakref
from dataclasses import replace

from firmware.cdr import whole_seconds
from firmware.dialplan import RuntimeView
from firmware.features.charging import ASSIGNMENTS, LIMITS
from firmware.rating import rate_call
from firmware.rating.limits import SITE, Spent, payer
from services import charging

log = logging.getLogger(__name__)

_STATE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


class _State:
    def __init__(self, svc):
        self.data_dir = svc.store.data_dir
        self.ledger = charging.Ledger(self.data_dir, charging.zone(svc.settings))
        self.sheets: dict = {}
        self.sheets_at = -1.0
        self.assignments: tuple = ()

    def current_sheets(self, svc) -> dict:
        # the assignments as the config file has them now (a stat when nothing changed); a re-import
        # (a new newest version) changes no config: look at the sheet files again every few seconds
        assignments = tuple(svc.store.records(ASSIGNMENTS))
        now = time.monotonic()
        if assignments != self.assignments or now - self.sheets_at > 3:
            self.sheets = charging.active_sheets(self.data_dir, assignments)
            self.sheets_at, self.assignments = now, assignments
            self.ledger.tz = charging.zone(svc.settings)      # "today" and "this month" in the box's zone
        return self.sheets


def _state(svc) -> _State:
    state = _STATE.get(svc)
    if state is None:
        state = _STATE[svc] = _State(svc)
    return state


def runtime(svc) -> RuntimeView:
    """The live state for a routing decision, with what spend limits need (RuntimeView.spend).

    The spend so far includes what the calls in progress have cost until now: ten hijacked calls
    started at once must not each find the limit untouched."""
    try:
        state = _state(svc)
        check = charging.spend_check(svc.store, state.ledger, state.current_sheets(svc), time.time())
        if check is not None and check.limits:
            check = replace(check, spent=_with_live_calls(svc, state, dict(check.spent)))
    except Exception:
        # charging must never stop calls: without it the call goes out unchecked, and the log says so
        log.exception("call charging: spend check unavailable")
        check = None
    return RuntimeView(spend=check)


def _live(svc, session, sheets):
    """(payer, charge so far) of a session's answered call out on a trunk, or None."""
    leg = next((ch for ch in session.channels if ch.cel.get("kind") in ("trunk", "line") and not ch.inbound
                and not ch.is_gone), None)
    if leg is None:
        return None
    sheet = sheets.get(leg.cel.get("trunk", "")) or sheets.get("*")
    billsec = whole_seconds(leg.answered_at, time.time()) if leg.answered_at is not None else 0
    charge = rate_call(sheet, leg.cel.get("external", "") or leg.number, billsec, svc.now())
    who = session.who
    payer_ = leg.cel.get("forwarded_from") or (session.src if who is not None and who.kind == "extension" else "")
    return leg, payer_, charge


def _with_live_calls(svc, state: _State, spent: dict) -> dict:
    sheets = state.current_sheets(svc)
    for session in list(svc.calls.values()):
        live = _live(svc, session, sheets)
        if live is None or not live[2].cost:
            continue
        _, who, charge = live
        for scope in dict.fromkeys((who, SITE)):
            if scope:
                was = spent.get(scope, Spent())
                spent[scope] = Spent(was.day + charge.cost, was.month + charge.cost)
    return spent


def rate(svc, records: list) -> list:
    """Rate the session's records (cost, currency, rate, destination type, sheet version); raise the
    spend-limit and unusual-pattern alerts. A failure leaves the records unrated, never lost."""
    try:
        state = _state(svc)
        sheets, tz = state.current_sheets(svc), charging.zone(svc.settings)
        rated = [charging.rate_record(r, sheets, tz) for r in records]
    except Exception:
        log.exception("call charging: records not rated")
        return records
    try:
        now = time.time()
        chargeable = False
        for rec in rated:
            state.ledger.add(rec)
            if rec.cost:
                log.info("call %s %s -> %s: %s %s (%s, %s, %s)", rec.call_id, rec.src, rec.dst, rec.cost, rec.currency,
                         rec.dest_type, rec.rate, rec.sheet_version)
                chargeable = True
            if charging.LIMIT_MARK in rec.cause:
                _limit_alert(svc, state, rec, now)
        if chargeable:
            for text in charging.check_patterns(state.data_dir, state.ledger, now):
                _mail(svc, state, SITE, "Unusual calls", text)
    except Exception:
        log.exception("call charging: alerts failed")
    return rated


def _limit_alert(svc, state: _State, rec, now: float) -> None:
    who = payer(rec) or rec.src
    reason = rec.cause.split(" ", 1)[1] if rec.cause[:3].isdigit() else rec.cause
    text = f"{who} called {rec.dst} and was refused: {reason}"
    if charging.add_alert(state.data_dir, "limit", text, scope=who, now=now, dedupe_s=3600):
        _mail(svc, state, who, "Call limit reached", text)


def _mail(svc, state: _State, scope: str, subject: str, text: str) -> None:
    to = []
    for key in dict.fromkeys((scope, SITE)):
        limit = svc.store.record(LIMITS, key)
        if limit is not None and limit.email:
            to += [a.strip() for a in limit.email.split(",")]
    site = getattr(svc.settings, "site_name", "") or "PBX"
    charging.mail_alert(state.data_dir, ", ".join(dict.fromkeys(to)), f"{site}: {subject}",
                        f"{text}\n\nSee the dashboard of {site} for the calls in progress and Reports for the history.\n")


def describe(svc, session) -> dict:
    """session.describe() plus, for a call out on a trunk: trunk, external number, and its cost so
    far (what it would cost if it ended now), rate and destination type."""
    out = session.describe()
    try:
        live = _live(svc, session, _state(svc).current_sheets(svc))
        if live is None:
            return out
        leg, _, charge = live
        out.update(trunk=leg.cel.get("trunk", ""), external=leg.cel.get("external", ""), cost=str(charge.cost),
                   currency=charge.currency, rate=str(charge.rate), dest_type=charge.dest_type)
    except Exception:
        log.exception("call charging: no running cost for call %s", out.get("call_id"))
    return out
