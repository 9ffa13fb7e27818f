"""*32 blocks the last outside caller of the extension that dials it.

The call service remembers, per extension, the caller ID of the last call from a trunk or an
exchange line that rang it (a session event listener: an outgoing leg to an extension in a call
whose caller is outside). *32 adds that number to the block list (firmware/features/blocking.py)
with the default action and a note saying who blocked it, and confirms with "the last caller has
been blocked". A withheld last caller cannot be blocked by number: the user hears "there is no
caller to block" (block withheld numbers on the web page instead).

Blocked calls themselves are rejected by the routing plan (cause "blocked", logged by the plan
runner and recorded in the call records).
"""

from __future__ import annotations

import asyncio
import logging
import time

from firmware.cdr import Disposition
from firmware.config.errors import ValidationError, ValidationErrors
from firmware.features.blocking import INBOUND, BlockedCaller, BlockLastCaller, is_withheld

from .. import session as session_module
from ..channel import Channel
from ..media import Player
from .plan import runs

log = logging.getLogger(__name__)

LAST_CALLER: dict[int, dict[str, tuple[str, float]]] = {}     # id(svc) -> extension -> (number, when)


def _on_event(session, what: str, ch) -> None:
    if what != "chan_start" or ch is None or ch.inbound or ch.cel.get("kind") != "extension":
        return
    who = session.who
    if who is None or not who.is_outside:
        return
    LAST_CALLER.setdefault(id(session.svc), {})[ch.number] = (who.number, time.time())


if _on_event not in session_module.EVENT_LISTENERS:
    session_module.EVENT_LISTENERS.append(_on_event)


def last_caller(svc, extension: str) -> str | None:
    entry = LAST_CALLER.get(id(svc), {}).get(extension)
    return entry[0] if entry is not None else None


async def _confirm(svc, caller: Channel, prompt: str) -> None:
    caller.answer()
    caller.session.answer = caller.answered_at
    caller.session.state = "answered"
    if svc.prompts is not None:
        await caller.play(Player(pcm=svc.prompts(prompt)))
    if not caller.is_gone:
        await caller.hangup("feature done")


@runs(BlockLastCaller)
async def run_block_last(svc, caller: Channel, step: BlockLastCaller) -> None:
    session = caller.session
    number = last_caller(svc, step.extension)
    if number is None or is_withheld(number):
        log.info("call %d: *32 by %s: no outside caller to block (%s)", session.n, step.extension,
                 "withheld" if number is not None else "none yet")
        session.fail(Disposition.ANSWERED, "feature *32: nothing to block")
        await _confirm(svc, caller, "nothing_to_block")
        return
    entry = BlockedCaller(number, "reject", note=f"blocked by {step.extension} with *32")
    loop = asyncio.get_running_loop()

    def add():
        if svc.store.record(INBOUND, entry.match) is None:
            svc.store.add_record(INBOUND, entry)
    try:
        await loop.run_in_executor(None, add)
    except (ValidationError, ValidationErrors) as exc:
        log.warning("call %d: *32 by %s: %s not blocked: %s", session.n, step.extension, number, exc)
        session.fail(Disposition.FAILED, f"feature *32: {exc}")
        await _confirm(svc, caller, "nothing_to_block")
        return
    svc.refresh_config()
    log.info("call %d: %s blocked the last caller %s with *32", session.n, step.extension, number)
    caller.log("feature", code="*32", action="block_last", argument=number)
    session.fail(Disposition.ANSWERED, f"feature *32 blocked {number}")
    await _confirm(svc, caller, "caller_blocked")
