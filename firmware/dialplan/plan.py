"""The plan `route_call` returns: a chain of steps, each saying what to do next when it fails.

A plan is one step. The call service carries out the step; when it ends without a conversation
it looks at `step.on`: `busy` (the callee or the far end is busy, or on do-not-disturb),
`no_answer` (it rang for `timeout` seconds), `unavailable` (not registered, or every trunk
failed) and carries out that plan, or hangs up when it is None. Steps are frozen values, so a
plan can be logged, compared in tests and reused for one config generation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union


@dataclass(frozen=True)
class Next:
    """What happens after a step that did not end in a conversation."""
    busy: "Plan | None" = None
    no_answer: "Plan | None" = None
    unavailable: "Plan | None" = None


NOTHING_NEXT = Next()


@dataclass(frozen=True)
class Ring:
    """Ring a local extension for `timeout` seconds, showing it the given caller ID.

    `forwarded_from` is the extension whose forward sent the call here ("" when dialled
    directly), for the CDR and the phone's display (a Diversion header)."""
    extension: str
    timeout: int
    caller_id_number: str
    caller_id_name: str
    forwarded_from: str = ""
    on: Next = field(default=NOTHING_NEXT, kw_only=True)


@dataclass(frozen=True)
class TrunkAttempt:
    """One try to carry an outside call: send `number_as_sent` to `trunk` showing `caller_id`
    ("" = whatever the trunk's account shows by default)."""
    trunk: str
    number_as_sent: str
    caller_id: str = ""


@dataclass(frozen=True)
class Dial:
    """Call an outside number. The call service tries `attempts` in order and moves to the next
    on a 5xx, a 408 or no answer from the trunk itself (not on 486/404 from the callee).

    `route` is the outbound route used ("" for an emergency call no route matched);
    `forwarded_from` the extension whose forward sent the call out."""
    number: str
    attempts: tuple[TrunkAttempt, ...]
    route: str
    forwarded_from: str = ""
    emergency: bool = False
    on: Next = field(default=NOTHING_NEXT, kw_only=True)


@dataclass(frozen=True)
class FeatureCode:
    """A feature code dialled by `extension`; the call service carries it out and confirms it.

    `action`/`argument`: "dnd" "on"|"off"; "forward_always"|"forward_busy"|"forward_no_answer"
    with the destination string to forward to, or "" to switch the forward off; "pickup" with ""
    (group pickup) or the extension whose ringing call to take."""
    code: str
    action: str
    argument: str
    extension: str
    on: Next = field(default=NOTHING_NEXT, kw_only=True)

    def changes(self) -> dict:
        """The update_extension() arguments for a setting code ({} for pickup)."""
        if self.action == "dnd":
            return {"dnd": self.argument == "on"}
        if self.action.startswith("forward_"):
            return {self.action: self.argument}
        return {}


@dataclass(frozen=True)
class Reject:
    """End the call with a final SIP `code` after the caller hears `prompt` or `tone`.

    `cause` is a short keyword for logs and CDRs: not_found, busy, no_answer, unavailable,
    forbidden, loop, hangup; `reason` says in words why ("extension 1000 is on do-not-disturb")."""
    code: int
    cause: str
    reason: str = ""
    prompt: str | None = None
    tone: str | None = None
    on: Next = field(default=NOTHING_NEXT, kw_only=True)


# A feature adds its own step types: a frozen dataclass with `on: Next` (kw_only, default
# NOTHING_NEXT) and `describe() -> str`; the call service registers how to carry it out
# (services/callsvc/flows/plan.py: `runs(StepType)`).
Plan = Union[Ring, Dial, FeatureCode, Reject]


def describe(plan: Plan | None, depth: int = 0) -> str:
    """One line for the call log: 'ring 1000 30s [busy: reject 486 busy; no answer: dial ...]'."""
    if plan is None:
        return "hang up"
    if isinstance(plan, Ring):
        text = f"ring {plan.extension} {plan.timeout}s" + (f" (forward of {plan.forwarded_from})"
                                                           if plan.forwarded_from else "")
    elif isinstance(plan, Dial):
        trunks = ",".join(f"{a.trunk}:{a.number_as_sent}" for a in plan.attempts)
        text = f"dial {plan.number} via {plan.route or 'any trunk'} [{trunks}]" + (
            " EMERGENCY" if plan.emergency else "")
    elif isinstance(plan, FeatureCode):
        text = f"feature {plan.code}: {plan.action} {plan.argument!r} for {plan.extension}"
    elif isinstance(plan, Reject):
        text = f"reject {plan.code} {plan.cause}" + (f" ({plan.reason})" if plan.reason else "")
    else:
        text = plan.describe()     # a feature's own step (voicemail, ring group, IVR...)
    branches = [(name, getattr(plan.on, name)) for name in ("busy", "no_answer", "unavailable")]
    shown = [f"{name.replace('_', ' ')}: {describe(p, depth + 1)}" for name, p in branches if p is not None]
    return text + (f" [{'; '.join(shown)}]" if shown and depth < 3 else "")
