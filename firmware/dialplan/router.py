"""route_call: what a dialled number means for this caller, as a plan (see plan.py).

Who may reach what (no open relay, issue 8 section 3):
- an extension: emergency numbers first (never shadowed by an extension or blocked by a
  permission), then feature codes (*...), its fellow extensions, then the outbound routes it
  is allowed to use;
- a trunk: only the inbound routes, by DID; the route's destination may be of any kind, an
  outside number included, because the administrator chose it;
- an analog exchange line (FXO): only the extension the line port rings.
A caller from outside never dials out on its own, and reaches the outside only through a
destination someone configured: an inbound route, or an extension's forward (with that
extension's permissions).
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Callable

from firmware.config.destination import DESTINATION_KINDS, EXTENSION_NUMBER_RE, Destination

from .context import ADMIN, Context
from .extensions import ring_extension
from .feature_codes import parse_feature_code
from .inbound import match_inbound_route
from .outbound import dial_out
from .plan import Dial, FeatureCode, Plan, Reject
from .views import Caller, ConfigView, RuntimeView


def resolve(dest: Destination, ctx: Context) -> Plan:
    """The plan for sending the call to a typed destination."""
    return DESTINATION_HANDLERS[dest.kind](dest, ctx)


DESTINATION_HANDLERS: dict[str, Callable[[Destination, Context], Plan]] = {
    "extension": lambda dest, ctx: ring_extension(dest.target, ctx, resolve),
    "external": lambda dest, ctx: dial_out(dest.target, ctx),
    "hangup": lambda dest, ctx: Reject(603, "hangup", "the destination is 'hang up'"),
}


# Numbers a feature makes dialable from an extension (a ring group's 600, the park lot's 700 and its
# slots): hook(dialled, ctx) -> the plan, or None when the number is not the feature's. Tried after
# the extensions, before the outbound routes.
NUMBER_HANDLERS: list[Callable[[str, Context], "Plan | None"]] = []

# Screens of calls from the outside (trunks and exchange lines) before anything else: call
# blocking's block list. hook(dialled, ctx) -> the plan for a screened-out caller, or None.
INBOUND_SCREENS: list[Callable[[str, Context], "Plan | None"]] = []

# Names for outside callers who come without one (the phonebook): namer(caller, config) -> name or None.
CALLER_NAMERS: list[Callable[[Caller, ConfigView], "str | None"]] = []


def check_handlers() -> None:
    """Every destination kind has a handler (features register theirs with DESTINATION_HANDLERS)."""
    unhandled = set(DESTINATION_KINDS) - set(DESTINATION_HANDLERS)
    if unhandled:
        raise RuntimeError(f"destination kind(s) {sorted(unhandled)} have no handler in the dialplan")


def plan_for_destination(destination: str, caller: Caller, config: ConfigView, now: datetime,
                         runtime: RuntimeView = RuntimeView()) -> Plan:
    """The plan for sending a call in progress to a configured destination string (an IVR key,
    a ring group's no-answer destination, a parked call's timeout...). The administrator chose
    it, so every outbound route may carry it, as for an inbound route."""
    try:
        dest = Destination.parse(destination)
    except ValueError as e:
        return Reject(404, "not_found", f"destination {destination!r}: {e}", prompt="not_found")
    ctx = Context(caller, config, runtime, now, dial_as=ADMIN,
                  seen=(caller.id,) if caller.kind == "extension" else ())
    return resolve(dest, ctx)


def route_plan(dialled: str, caller: Caller, config: ConfigView, now: datetime,
               runtime: RuntimeView = RuntimeView()) -> Plan:
    """The plan for a call from `caller` to `dialled`."""
    shown = caller.name.strip().lstrip("+")
    if caller.is_outside and (not shown or shown.isdigit()):     # no name, or just the number again
        caller = replace(caller, name=next(filter(None, (namer(caller, config) for namer in CALLER_NAMERS)),
                                           caller.name))
    ctx = Context(caller, config, runtime, now)
    check_handlers()
    for screen in INBOUND_SCREENS if caller.is_outside else ():
        plan = screen(dialled, ctx)
        if plan is not None:
            return plan
    if caller.kind == "trunk":
        return _from_trunk(dialled, ctx)
    if caller.kind == "line":
        if not EXTENSION_NUMBER_RE.fullmatch(dialled):
            return Reject(404, "not_found", f"an analog line can only ring an extension, not {dialled!r}",
                          prompt="not_found")
        return ring_extension(dialled, ctx, resolve)
    return _from_extension(dialled, ctx)


def _from_trunk(dialled: str, ctx: Context) -> Plan:
    route = match_inbound_route(dialled, ctx.config.inbound_routes, ctx.config.settings.country)
    if route is None:
        return Reject(404, "not_found", f"no inbound route for {dialled!r} (trunk {ctx.caller.id})",
                      prompt="not_found")
    try:
        dest = route.target
    except ValueError as e:
        return Reject(404, "not_found", f"inbound route {route.did}: {e}", prompt="not_found")
    return resolve(dest, replace(ctx, dial_as=ADMIN))


def _from_extension(dialled: str, ctx: Context) -> Plan:
    config, me = ctx.config, ctx.config.extensions.get(ctx.caller.id)
    if me is None or not me.enabled:
        return Reject(403, "forbidden", f"calling extension {ctx.caller.id} is unknown or disabled",
                      tone="congestion")
    ctx = replace(ctx, dial_as=me.number, seen=(me.number,))
    if dialled in config.emergency_numbers:
        return dial_out(dialled, ctx)
    if dialled.startswith("*"):
        return _feature_code(dialled, ctx)
    if dialled in config.extensions:
        return ring_extension(dialled, ctx, resolve)
    for handler in NUMBER_HANDLERS:
        plan = handler(dialled, ctx)
        if plan is not None:
            return plan
    return dial_out(dialled, ctx)


def _feature_code(dialled: str, ctx: Context) -> Plan:
    from firmware.features.codes import effective_codes   # (features import the dialplan)
    parsed = parse_feature_code(dialled, effective_codes(ctx.config))   # as the admin set them
    me = ctx.caller.id
    if parsed is None:
        return Reject(404, "not_found", f"{dialled} is not a feature code", prompt="not_found")
    if parsed.needs_number and not parsed.argument:
        return Reject(404, "not_found", f"{parsed.code} needs a number after it, e.g. {parsed.code}1001",
                      prompt="not_found")
    if parsed.definition is not None and parsed.definition.plan is not None:
        return parsed.definition.plan(parsed, ctx)
    argument = parsed.argument
    if parsed.action == "pickup" and argument:
        target = ctx.config.extensions.get(argument)
        if target is None or not target.enabled:
            return Reject(404, "not_found", f"no extension {argument} to pick up from", prompt="not_found")
    elif parsed.action.startswith("forward_") and argument:
        resolved = _forward_target(argument, ctx)
        if isinstance(resolved, Reject):
            return resolved
        argument = resolved
    return FeatureCode(parsed.code, parsed.action, argument, me)


def _forward_target(number: str, ctx: Context) -> str | Reject:
    """NUM of *72NUM as a destination string: what dialling NUM would reach, if anything."""
    me = ctx.caller.id
    if number == me:
        return Reject(404, "not_found", f"extension {me} cannot forward to itself", prompt="not_found")
    target = ctx.config.extensions.get(number)
    if target is not None:
        if not target.enabled:
            return Reject(404, "not_found", f"extension {number} is disabled", prompt="not_found")
        return f"extension:{number}"
    plan = dial_out(number, ctx)
    if not isinstance(plan, Dial):
        return plan
    if plan.emergency:
        return Reject(403, "forbidden", f"calls cannot be forwarded to the emergency number {number}",
                      tone="congestion")
    return f"external:{number}"
