"""Calls to the outside world over SIP trunks (a Dial step of the routing plan).

Each attempt goes to the edge with the trunk's name in `X-PBX-Trunk` and the number as the
trunk wants it in the Request-URI (`sip:<number>@<trunk host>`); the edge relays it to the
provider (and refuses that header from anyone but us). A provider's 401/407 is answered with the
trunk's credentials. The next trunk is tried when one fails by itself (5xx, 408, 403, no answer
from the provider), not when the called number is busy or does not exist.
"""

from __future__ import annotations

import logging

from ..channel import Channel
from ..dial import DialResult, Outcome, Target, dial

log = logging.getLogger(__name__)

TRUNK_HEADER = "X-PBX-Trunk"
# an FXO port's line gateway dials this number on the exchange line (decision 007)
LINE_DIAL_HEADER = "X-PBX-Dial"
# the called party answered for itself: another trunk would get the same answer
FINAL_FOR_THE_NUMBER = (404, 410, 484, 486, 600, 603, 604)


async def dial_out(svc, caller: Channel, step) -> DialResult:
    session = caller.session
    result = DialResult(Outcome.UNAVAILABLE, status=503)
    if step.forwarded_from:
        caller.log("forward", by=step.forwarded_from, to=step.number)
    for attempt in step.attempts:
        line = svc.view.lines.get(attempt.trunk)
        if line is not None:
            result = await _out_on_line(svc, caller, step, attempt, line)
            if result.outcome in (Outcome.ANSWERED, Outcome.CALLER_GONE) or result.status in FINAL_FOR_THE_NUMBER:
                return result
            continue
        trunk = svc.trunk(attempt.trunk)
        if trunk is None:
            log.warning("call %d: trunk %s is not configured any more", session.n, attempt.trunk)
            continue
        target = Target(f"sip:{attempt.number_as_sent}@{trunk.host}", step.number,
                        caller_number=attempt.caller_id or None,
                        headers=((TRUNK_HEADER, trunk.name),),
                        credentials=(trunk.username, trunk.secret) if trunk.username else None,
                        kind="trunk", trunk=trunk.name, external=attempt.number_as_sent,
                        forwarded_from=step.forwarded_from)
        caller.log("dial_out", trunk=trunk.name, number=attempt.number_as_sent, route=step.route,
                   emergency=step.emergency)
        log.info("call %d: %s out on trunk %s as %s", session.n, step.number, trunk.name,
                 attempt.number_as_sent)
        result = await dial(svc, session, caller, [target], timeout=svc.settings.no_answer_timeout)
        if result.outcome in (Outcome.ANSWERED, Outcome.CALLER_GONE):
            return result
        if result.status in FINAL_FOR_THE_NUMBER or result.outcome is Outcome.NO_ANSWER:
            return result
        log.info("call %d: trunk %s failed (%d); trying the next", session.n, trunk.name, result.status)
    return result


async def _out_on_line(svc, caller: Channel, step, attempt, line) -> DialResult:
    """Out on an analog exchange line: the FXO port's gateway seizes the line and dials."""
    session = caller.session
    target = Target(f"sip:{line.extension}@{svc.edge[0]}:{svc.edge[1]}", step.number,
                    caller_number=attempt.caller_id or None,
                    headers=((LINE_DIAL_HEADER, attempt.number_as_sent),), kind="line",
                    trunk=attempt.trunk, external=attempt.number_as_sent, forwarded_from=step.forwarded_from)
    caller.log("dial_out", trunk=attempt.trunk, number=attempt.number_as_sent, route=step.route,
               emergency=step.emergency)
    log.info("call %d: %s out on analog %s (port account %s)", session.n, step.number, attempt.trunk,
             line.extension)
    return await dial(svc, session, caller, [target], timeout=svc.settings.no_answer_timeout)
