"""The dialplan: what a dialled number means, as a pure function of config, live state and clock.

    plan = route_call(dialled, caller, config, now, runtime)

returns a chain of steps (Ring, Dial, FeatureCode, Reject), each with what happens next on busy /
no answer / unavailable (plan.py). The call service carries the plan out; nothing here touches
SIP, sockets or files, so every rule is tested with `now=` and no phone (tests/test_dialplan.py).

- views.py: Caller, ConfigView (+ config_view(store)), RuntimeView: everything a plan reads;
- router.py: who may reach what, and the handler for each destination kind;
- extensions.py: ringing an extension: DND, forwards, loops;
- outbound.py: outside numbers: routes, permissions, emergency numbers, trunks, caller ID;
- inbound.py: DID matching for calls from trunks;
- feature_codes.py: *78, *72NUM, **NUM...;
- legacy.py: the old Action/Decision answer, until the call service runs plans.
"""
from __future__ import annotations

from datetime import datetime

from firmware.config.destination import DESTINATION_KINDS, Destination

from .context import MAX_FORWARD_HOPS
from .legacy import Action, Decision, legacy_route_call
from .plan import Dial, FeatureCode, Next, Plan, Reject, Ring, TrunkAttempt, describe
from .router import route_plan
from .views import EMERGENCY_NUMBERS, Caller, ConfigView, RuntimeView, config_view


def route_call(dialled: str, caller, config, now: datetime | None = None,
               runtime: RuntimeView = RuntimeView()):
    """The plan for a call from `caller` (a Caller) to `dialled` (see route_plan).

    Compatibility: called the old way, `route_call(dialled, caller_number, extensions_dict)`, it
    returns the old Decision (what services/callsvc/b2bua.py uses until it runs plans).
    """
    if isinstance(caller, str):
        return legacy_route_call(dialled, caller, config)
    if now is None:
        raise TypeError("route_call needs now= (the plan may depend on the time of day)")
    return route_plan(dialled, caller, config, now, runtime)


__all__ = ["route_call", "route_plan", "Caller", "ConfigView", "RuntimeView", "config_view",
           "Plan", "Ring", "Dial", "TrunkAttempt", "FeatureCode", "Reject", "Next", "describe",
           "Destination", "DESTINATION_KINDS", "EMERGENCY_NUMBERS", "MAX_FORWARD_HOPS",
           "Action", "Decision"]

import firmware.features  # noqa: E402,F401  (registers every feature's steps, handlers and codes)
