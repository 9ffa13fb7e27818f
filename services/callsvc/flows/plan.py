"""Carrying out a routing plan (firmware/dialplan): one step after another until someone talks.

Each step is one flow: Ring an extension, Dial out on trunks, a FeatureCode, or Reject. When a
Ring or Dial ends without a conversation the step's `on` branch for the outcome (busy, no
answer, unavailable) is the next plan; a missing branch ends the call with what the caller would
expect to hear for that outcome.
"""

from __future__ import annotations

import logging
import time
from typing import Awaitable, Callable

from firmware.cdr import Disposition
from firmware.dialplan import Dial, FeatureCode, Reject, Ring, describe

from ..bridge import Bridge
from ..channel import Channel
from ..dial import DialResult, Outcome, Target, dial
from . import announce, feature_codes, outside

log = logging.getLogger(__name__)

MAX_STEPS = 12  # a plan is finite by construction (firmware limits forward hops); this is a guard

DISPOSITIONS = {"busy": Disposition.BUSY, "no_answer": Disposition.NO_ANSWER}


# How each kind of plan step is carried out: `runner(svc, caller, step)` returns
#   None          the runner saw the call to its end (answered and hung up, rejected, failed);
#   a DialResult  someone answered (bridge the caller to them), or the outcome whose `on` branch
#                 of the step comes next (busy, no answer, unavailable);
#   a plan step   carry on with that plan (an IVR key, a ring group's overflow...).
STEP_RUNNERS: dict[type, Callable[..., Awaitable]] = {}


def runs(step_type: type):
    """Register the runner of a plan step type: `@runs(Voicemail) async def ...(svc, caller, step)`."""
    def register(runner):
        STEP_RUNNERS[step_type] = runner
        return runner
    return register


async def run(svc, caller: Channel, plan) -> None:
    session = caller.session
    for _ in range(MAX_STEPS):
        if plan is None or caller.is_gone:
            return
        log.info("call %d %s -> %s: %s", session.n, session.src, session.dst, describe(plan))
        runner = STEP_RUNNERS.get(type(plan))
        if runner is None:
            raise TypeError(f"no runner for plan step {plan!r}")
        result = await runner(svc, caller, plan)
        if result is None:
            return
        if not isinstance(result, DialResult):
            plan = result
            continue
        if result.outcome is Outcome.ANSWERED:
            await talk(svc, caller, result)
            return
        if result.outcome is Outcome.CALLER_GONE:
            session.fail(Disposition.CANCELLED, "caller cancelled")
            return
        branch = {Outcome.BUSY: plan.on.busy, Outcome.NO_ANSWER: plan.on.no_answer,
                  Outcome.UNAVAILABLE: plan.on.unavailable}.get(result.outcome)
        if branch is None:
            await announce.fail(svc, caller, result.status if 400 <= result.status < 700 else 500,
                                Disposition.FAILED, f"{result.status} {result.outcome.value}",
                                tone_name="congestion")
            return
        plan = branch
    log.warning("call %d: plan still going after %d steps: hanging up", session.n, MAX_STEPS)
    caller.reject(482, "Loop Detected")


@runs(Reject)
async def reject(svc, caller: Channel, step: Reject) -> None:
    disposition = DISPOSITIONS.get(step.cause, Disposition.FAILED)
    cause = f"{step.code} {step.reason or step.cause}"
    if step.code == 480 and step.cause == "no_answer":
        caller.session.fail(disposition, "no answer")
        caller.reject(480, "Temporarily Unavailable (no answer)")
        return
    if step.prompt is None and step.tone is None:
        caller.session.fail(disposition, cause)
        caller.reject(step.code)
        return
    await announce.fail(svc, caller, step.code, disposition, cause, prompt=step.prompt, tone_name=step.tone)


@runs(Ring)
async def ring(svc, caller: Channel, step: Ring):
    """Ring one extension's phone (through the edge, which knows where it is registered)."""
    target = Target(f"sip:{step.extension}@{svc.edge[0]}:{svc.edge[1]}", step.extension,
                    caller_number=step.caller_id_number, caller_name=step.caller_id_name,
                    headers=((("Diversion", f"<sip:{step.forwarded_from}@{svc.edge[0]}>;reason=unconditional"),)
                             if step.forwarded_from else ()), forwarded_from=step.forwarded_from)
    if step.forwarded_from:
        caller.log("forward", by=step.forwarded_from, to=step.extension)
    svc.ringing[step.extension] = caller.session  # where *8 / **NUM find a call to pick up
    try:
        return await dial(svc, caller.session, caller, [target], timeout=step.timeout)
    finally:
        if svc.ringing.get(step.extension) is caller.session:
            del svc.ringing[step.extension]


async def talk(svc, caller: Channel, result) -> None:
    """Someone answered: answer the caller, bridge the two, stay until the session ends.

    The bridge hangs the other party up when one leaves; transfers may move either meanwhile.
    """
    session = caller.session
    callee = result.channel
    caller.prefer_codec(callee.codec)
    bridge = result.bridge
    if bridge is None:
        bridge = Bridge(svc, "call")
        bridge.add(caller)
        bridge.add(callee)
    bridge.dtmf_hooks.append(svc.in_call_codes)  # `##` blind, `*2` attended transfer
    if svc.settings.record_calls and svc.recordings_dir is not None:
        svc.start_recording(session, caller, callee)
    session.state = "answered"
    session.answer = time.time()
    caller.answer()
    log.info("call %d %s -> %s answered (%s)", session.n, session.src, session.dst, caller.codec)
    await session.done()


runs(Dial)(outside.dial_out)
runs(FeatureCode)(feature_codes.run)
from . import blf, followme, parking, ringgroups  # noqa: E402,F401
from . import daynight  # noqa: E402,F401
from . import voicemail  # noqa: E402,F401
from . import blocking  # noqa: E402,F401
from . import directory, ivr, recording  # noqa: E402,F401
from . import conference  # noqa: E402,F401
from . import queues  # noqa: E402,F401
from . import paging  # noqa: E402,F401
from . import echotest  # noqa: E402,F401
