"""Calls to outside numbers: which outbound route, which trunks in which order, which caller ID.

Rules (issue 8, section 3):
- Routes are tried in order; the first whose pattern matches the dialled number and that the
  dialling extension may use (OutboundRoute.extensions, empty = everyone) carries the call. A
  number some route matches but none allows is refused with 403; one no route matches, 404.
- Permissions are those of `ctx.dial_as`: the dialling extension, or for a forward the extension
  whose forward it is (so a forward cannot reach a route its owner may not dial), or ADMIN for an
  inbound route's external destination. A call from a trunk or a line has none: no open relay.
- Emergency numbers (ConfigView.emergency_numbers, dialled as they are or after a matching
  route's strip, e.g. 9-999) are allowed for every extension whatever the permission lists say,
  leave through the first route that matches them, or through every trunk when none does, and
  are sent as the bare emergency number (no prepend).
- Caller ID: the extension's own external_caller_id wins, then the route's caller_id, else ""
  (the trunk account's default). The person's direct number is the more specific fact, and the
  one an emergency operator should call back.
"""
from __future__ import annotations

from firmware.config.routing import OutboundRoute, pattern_matches

from .context import ADMIN, NOBODY, Context
from .plan import Dial, Next, Plan, Reject, TrunkAttempt


# Checks of a call out before it goes (call blocking's barred prefixes): check(number, sent, ctx)
# -> a Reject, or None to let it go. Emergency calls are never checked.
DIAL_OUT_CHECKS: list = []


def dial_out(number: str, ctx: Context) -> Plan:
    """The plan for dialling `number` out with ctx.dial_as's permissions."""
    config = ctx.config
    if ctx.dial_as == NOBODY:
        return Reject(403, "forbidden", f"a call from {ctx.caller.kind} {ctx.caller.id} cannot be sent back "
                                        f"out to {number}", tone="congestion")
    matching = [r for r in config.outbound_routes if pattern_matches(r.pattern, number)]
    for route in matching:
        emergency = _is_emergency(number, route, config.emergency_numbers)
        if emergency or ctx.dial_as == ADMIN or route.allows(ctx.dial_as):
            sent = _emergency_number(number, route, config.emergency_numbers) if emergency \
                else route.dial_string(number)
            for check in DIAL_OUT_CHECKS if not emergency else ():
                refused = check(number, sent, ctx)
                if refused is not None:
                    return refused
            attempts = tuple(TrunkAttempt(t, sent, _caller_id(route, ctx))
                             for t in (route.trunk, route.fallback_trunk) if t and config.carrier(t))
            if not attempts:
                return _unavailable(number, f"route {route.name} names no existing trunk")
            if not emergency and ctx.runtime.spend is not None:      # call charging (firmware/rating/limits.py)
                refused = ctx.runtime.spend.refusal(ctx.dial_as, attempts[0].trunk, sent)
                if refused is not None:
                    limit = refused.kind == "limit"
                    return Reject(403, "call_limit" if limit else "barred", refused.reason,
                                  prompt="call_limit_reached" if limit else "number_barred")
            return _dial(number, attempts, route.name, ctx, emergency)
    if number in config.emergency_numbers:
        # an emergency call no route matches goes out on anything that can carry it, SIP or analog
        attempts = tuple(TrunkAttempt(t, number, _caller_id(None, ctx)) for t in (*config.trunks, *config.lines))
        if not attempts:
            return _unavailable(number, "emergency call but no trunk is configured")
        return _dial(number, attempts, "", ctx, emergency=True)
    if matching:
        return Reject(403, "forbidden", f"extension {ctx.dial_as} may not use route(s) "
                                        f"{', '.join(r.name for r in matching)} for {number}", tone="congestion")
    return Reject(404, "not_found", f"no extension or outbound route for {number}", prompt="not_found")


def _is_emergency(number: str, route: OutboundRoute, emergency_numbers: tuple[str, ...]) -> bool:
    return number in emergency_numbers or number[route.strip:] in emergency_numbers


def _emergency_number(number: str, route: OutboundRoute, emergency_numbers: tuple[str, ...]) -> str:
    # Sent bare, never with the route's prepend: carriers take "999", not "+44999".
    return number if number in emergency_numbers else number[route.strip:]


def _caller_id(route: OutboundRoute | None, ctx: Context) -> str:
    ext = ctx.config.extensions.get(ctx.dial_as)
    if ext is not None and ext.external_caller_id:
        return ext.external_caller_id
    return route.caller_id if route is not None else ""


def _dial(number: str, attempts: tuple[TrunkAttempt, ...], route: str, ctx: Context, emergency: bool) -> Dial:
    return Dial(number, attempts, route, forwarded_from=ctx.forwarded_from, emergency=emergency,
                on=Next(busy=Reject(486, "busy", f"{number} is busy", tone="busy"),
                        no_answer=Reject(480, "no_answer", f"{number} did not answer"),
                        unavailable=_unavailable(number, "every trunk failed")))


def _unavailable(number: str, why: str) -> Reject:
    return Reject(480, "unavailable", f"{number}: {why}", tone="congestion")
