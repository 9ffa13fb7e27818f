"""Feature codes dialled from a phone: do-not-disturb, the three forwards, and pickup.

    *78 / *79   DND on / off              *72NUM / *73   forward every call to NUM / off
    *90NUM / *91  forward when busy / off   *52NUM / *53   forward when not answered / off
    *8          pick up a call ringing at any extension      **NUM  pick up the call ringing at NUM

The routing plan (firmware/dialplan) has already checked the code and NUM; a setting code is
stored in the extension's config (the web UI and the API show the same setting) and confirmed
with a spoken prompt. A pickup answers the picking phone and makes it the winner of the dial
that rings the other extension; the ringing phone is cancelled as "completed elsewhere".
"""

from __future__ import annotations

import asyncio
import logging

from firmware.cdr import Disposition
from firmware.config.errors import ValidationError, ValidationErrors

from ..channel import Channel
from ..media import Player
from . import announce

log = logging.getLogger(__name__)


async def run(svc, caller: Channel, step) -> None:
    if step.action == "pickup":
        await pickup(svc, caller, step.argument)
        return
    changes = step.changes()
    loop = asyncio.get_running_loop()
    try:
        # the config store writes (and fsyncs) a file: not on the call loop
        await loop.run_in_executor(None, lambda: svc.store.update_extension(step.extension, **changes))
    except (ValidationError, ValidationErrors, KeyError, ValueError) as exc:
        log.info("call %d: feature %s for %s refused: %s", caller.session.n, step.code, step.extension, exc)
        await announce.fail(svc, caller, 403, Disposition.FAILED, f"403 {step.code}: {exc}",
                            tone_name="congestion")
        return
    svc.refresh_config()
    on = step.action == "dnd" and step.argument == "on" or step.action.startswith("forward_") and bool(step.argument)
    log.info("call %d: %s %s %s for %s", caller.session.n, step.code, step.action,
             step.argument or "off", step.extension)
    caller.log("feature", code=step.code, action=step.action, argument=step.argument)
    prompt = ("dnd_" if step.action == "dnd" else "forward_") + ("on" if on else "off")
    caller.answer()
    caller.session.answer = caller.answered_at
    caller.session.state = "answered"
    caller.session.fail(Disposition.ANSWERED, f"feature {step.code} {step.action} {step.argument or 'off'}")
    if svc.prompts is not None:
        await caller.play(Player(pcm=svc.prompts(prompt)))
    await caller.hangup("feature done")


async def pickup(svc, picker: Channel, extension: str) -> None:
    """Take the call ringing at extension (or, for *8, at any extension but the picker's own)."""
    me = picker.session.src
    if extension:
        ringing = svc.ringing.get(extension)
    else:
        ringing = next((s for ext, s in svc.ringing.items() if ext != me and s.caller is not None
                        and s.caller.number != me), None)
    if ringing is None or ringing.pickup is None or ringing.pickup.done():
        await announce.fail(svc, picker, 404, Disposition.FAILED, "404 nothing ringing to pick up",
                            prompt="not_found")
        return
    log.info("call %d: %s picks up call %d (%s -> %s)", picker.session.n, me, ringing.n, ringing.src,
             ringing.dst)
    picker.prefer_codec(ringing.caller.codec)
    picker.answer()
    picker.session.state = "answered"
    picker.session.answer = picker.answered_at
    picker.session.fail(Disposition.ANSWERED, f"picked up call from {ringing.src} to {ringing.dst}")
    ringing.attach(picker)
    picker.log("pickup", by=me, ringing=ringing.dst)
    ringing.pickup.set_result(picker)
    await picker.session.done()
