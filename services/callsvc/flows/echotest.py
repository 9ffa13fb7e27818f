"""The echo test on a call (firmware/features/echotest.py): answer, say what happens, then send
the phone's own audio back to it until # or the hang-up.

The echo rides on the leg's recorder hook (RtpLeg.record_to): every audio frame the phone sends
is decoded there anyway, and `_Echo.write` sends it straight back on the same leg, so it costs one
packet out per packet in and no timer. RFC 4733 digits still reach the channel (# ends the test).
"""
from __future__ import annotations

import asyncio
import logging

from firmware.features.echotest import EchoTest

from ..channel import Channel
from ..media import Player
from .ivr import answer, flush_digits
from .plan import runs
from .speech import prompt

log = logging.getLogger(__name__)


class _Echo:
    """A recorder that sends what it is given back to the leg it listens on."""

    def __init__(self, leg):
        self.leg = leg
        self.frames = 0

    def write(self, pcm: bytes) -> None:
        self.frames += 1
        self.leg.send_frame(pcm)

    def close(self) -> None:
        pass            # nothing to flush: RtpLeg closes its recorder when the call ends


@runs(EchoTest)
async def run_echo(svc, caller: Channel, step: EchoTest):
    session = caller.session
    answer(caller)
    caller.log("echo_test")
    await caller.play(Player(pcm=prompt(svc, "echo_test")), stop_on_digits="#")
    if caller.is_gone or caller.rtp is None:
        return None
    flush_digits(caller)
    echo = _Echo(caller.rtp)
    caller.rtp.record_to(echo)
    ended = asyncio.ensure_future(caller._digit_in("#"))
    try:
        await asyncio.wait({ended, asyncio.ensure_future(asyncio.shield(caller.gone))},
                           timeout=step.max_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ended.cancel()
        if caller.rtp is not None:
            caller.rtp.record_to(None)
    log.info("call %d: echo test ended: %d frames echoed", session.n, echo.frames)
    if not caller.is_gone:
        await caller.hangup("echo test done")
    return None
