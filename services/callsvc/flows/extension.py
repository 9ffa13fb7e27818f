"""Calling an extension: ring its phone, bridge on answer, and what the caller hears otherwise.

Busy (486, 600, 603): the busy tone, then 486. Unregistered or not found there (404, 410, 480): the
"unavailable" announcement, then 480. Rang out: 480 (no answer). Anything else: congestion tone
with the far end's code. Answered: the two phones are bridged (and recorded when the office
records calls) until either hangs up.
"""

from __future__ import annotations

import logging
import time

from firmware.cdr import Disposition

from ..bridge import Bridge
from ..channel import Channel
from ..dial import Outcome, Target, dial
from . import announce

log = logging.getLogger(__name__)


async def call_extension(svc, caller: Channel, ext: str) -> None:
    session = caller.session
    edge = f"{svc.edge[0]}:{svc.edge[1]}"
    timeout = svc.settings.no_answer_timeout
    result = await dial(svc, session, caller, [Target(f"sip:{ext}@{edge}", ext)], timeout=timeout)
    if result.outcome is Outcome.ANSWERED:
        await talk(svc, caller, result)
        return
    if result.outcome is Outcome.CALLER_GONE:
        session.fail(Disposition.CANCELLED, "caller cancelled")
        return
    if result.outcome is Outcome.NO_ANSWER:
        log.info("call %d %s -> %s: no answer after %ss", session.n, session.src, ext, timeout)
        session.fail(Disposition.NO_ANSWER, "no answer")
        caller.reject(480, "Temporarily Unavailable (no answer)")
        return
    code = result.status
    if result.outcome is Outcome.BUSY:
        await announce.fail(svc, caller, 486, Disposition.BUSY, f"{code} Busy", tone_name="busy")
    elif result.outcome is Outcome.UNAVAILABLE:
        await announce.fail(svc, caller, 480, Disposition.FAILED, f"{code} unavailable", prompt="unavailable")
    else:
        await announce.fail(svc, caller, code if 400 <= code < 700 else 500, Disposition.FAILED,
                            f"{code} callee failed", tone_name="congestion")


async def talk(svc, caller: Channel, result) -> None:
    """The callee answered: answer the caller, bridge them, hold until either hangs up."""
    session = caller.session
    callee = result.channel
    session.callee = callee
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
    # the bridge hangs up the other party when one leaves; transfers may move either meanwhile
    await session.done()
