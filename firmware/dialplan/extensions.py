"""Calling an extension: DND, the three forwards, registration and busy state, loop safety.

Rules (issue 8, section 5):
- Unknown or disabled: 404 with the "not found" prompt.
- forward_always wins over everything else (the phone is not rung, so DND does not matter).
- DND, or busy in the RuntimeView: straight to the busy branch: forward_busy, else 486 + busy tone.
- Not registered: the unavailable branch; rang out: the no-answer branch. Both use
  forward_no_answer (a phone that is off does not answer either), else 480 (with the
  "unavailable" prompt when nobody is registered).
- Without a forward for the branch, an extension whose mailbox is on (the default,
  firmware/features/voicemail.py) sends the call to voicemail instead of the 486 / 480:
  the busy greeting for busy and DND, the unavailable one otherwise.
- Loops: a forward to an extension already on this call's path (the caller included) or past
  MAX_FORWARD_HOPS is not followed. For forward_always that means ringing the extension whose
  forward would loop ("ring what is left"); for the other forwards the default answer, whose
  reason names the loop. A forward to an extension that no longer exists or is disabled, to a
  number its owner may not dial, or to an emergency number is ignored the same way.
"""
from __future__ import annotations

from firmware.config.destination import Destination
from firmware.config.model import Extension

from .context import MAX_FORWARD_HOPS, Context
from .plan import Dial, Next, Plan, Reject, Ring


# hook(extension, ctx, ring) -> a plan instead of `ring` (the Ring step with its busy / no-answer
# branches), or None: Follow Me rings the user's list of phones in its place
RING_HOOKS: list = []


def ring_extension(number: str, ctx: Context, resolve) -> Plan:
    """The plan for ringing extension `number`; `resolve(destination, ctx)` plans a forward target."""
    ext = ctx.config.extensions.get(number)
    if ext is None:
        return Reject(404, "not_found", f"no extension {number}", prompt="not_found")
    if not ext.enabled:
        return Reject(404, "not_found", f"extension {number} is disabled", prompt="not_found")
    here = ctx.visiting(number)
    if ext.forward_always:
        plan, _ = _follow(ext, "forward_always", here, resolve)
        if plan is not None:
            return plan
    busy = _branch(ext, "forward_busy", here, resolve, _unanswered(
        number, ctx, "busy", Reject(486, "busy", f"extension {number} is busy", tone="busy")))
    if ext.dnd:
        return _because(busy, f"extension {number} is on do-not-disturb")
    if number in ctx.runtime.busy:
        return busy
    unavailable = _branch(ext, "forward_no_answer", here, resolve, _unanswered(
        number, ctx, "unavailable",
        Reject(480, "unavailable", f"extension {number} is not registered", prompt="unavailable")))
    if not ctx.runtime.reachable(number):
        return unavailable
    no_answer = _branch(ext, "forward_no_answer", here, resolve, _unanswered(
        number, ctx, "unavailable", Reject(480, "no_answer", f"extension {number} did not answer")))
    ring = Ring(number, ctx.config.settings.no_answer_timeout, *_caller_id(ctx),
                forwarded_from=ctx.forwarded_from,
                on=Next(busy=busy, no_answer=no_answer, unavailable=unavailable))
    for hook in RING_HOOKS:   # a feature that rings this extension its own way (Follow Me)
        plan = hook(ext, ctx, ring)
        if plan is not None:
            return plan
    return ring


def _unanswered(number: str, ctx: Context, greeting: str, reject: Reject) -> Plan:
    """Where an unanswered call goes without a forward: the extension's voicemail when its mailbox
    is on, else `reject`."""
    from firmware.features.voicemail import extension_voicemail  # features import the dialplan
    step = extension_voicemail(number, ctx, greeting)
    return step if step is not None else reject


def _caller_id(ctx: Context) -> tuple[str, str]:
    """What the rung phone shows: for our own extensions the configured name wins (issue 8, 8)."""
    caller = ctx.caller
    if caller.kind == "extension":
        ext = ctx.config.extensions.get(caller.id)
        return caller.id, (ext.name if ext is not None else caller.name)
    return caller.number, caller.name


def _branch(ext: Extension, field: str, ctx: Context, resolve, default: Reject) -> Plan:
    if not getattr(ext, field):
        return default
    plan, why_not = _follow(ext, field, ctx, resolve)
    return plan if plan is not None else _because(default, why_not)


def _follow(ext: Extension, field: str, ctx: Context, resolve) -> tuple[Plan | None, str]:
    """The plan for `ext`'s forward, or (None, why it is not followed)."""
    value = getattr(ext, field)
    try:
        dest = Destination.parse(value)
    except ValueError as e:
        return None, f"{field} of {ext.number} ({value!r}) ignored: {e}"
    if ctx.hops >= MAX_FORWARD_HOPS:
        return None, f"{field} of {ext.number} not followed: more than {MAX_FORWARD_HOPS} forwards"
    if dest.kind == "extension":
        if dest.target in ctx.seen:
            path = " -> ".join(ctx.seen + (dest.target,))
            return None, f"{field} of {ext.number} not followed: forward loop {path}"
        target = ctx.config.extensions.get(dest.target)
        if target is None or not target.enabled:
            return None, f"{field} of {ext.number} ignored: extension {dest.target} is missing or disabled"
    plan = resolve(dest, ctx.forwarded_by(ext.number))
    if isinstance(plan, Reject) and plan.cause in ("forbidden", "not_found"):
        return None, f"{field} of {ext.number} ignored: {plan.reason}"
    if isinstance(plan, Dial) and plan.emergency:
        return None, f"{field} of {ext.number} ignored: calls are never forwarded to an emergency number"
    return plan, ""


def _because(plan: Plan, why: str) -> Plan:
    """The same answer, with the reason it was given."""
    if isinstance(plan, Reject) and why:
        return Reject(plan.code, plan.cause, f"{plan.reason}; {why}" if plan.reason else why,
                      prompt=plan.prompt, tone=plan.tone, on=plan.on)
    return plan
