"""Call parking: a call transferred to the park number waits in a slot until someone dials it.

    B (talking to A) transfers A to 700 -> A waits in 701 to music, B hears "parked at 7 0 1"
    C dials 701                         -> C talks to A
    nobody within the lot's timeout     -> B's phone rings again, then the lot's return destination

Which slot, and where an unclaimed call goes, are firmware's decisions (firmware/features/
parking.py); this module keeps the slots of the running box (one dict per call service) and
lights the slots' BLF keys (dialog "confirmed" while occupied).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

from firmware.dsp.tones import hold_music
from firmware.features.parking import ParkHint, Retrieve, after_timeout, first_free_slot, lot_of

from ..bridge import Bridge
from ..channel import Channel
from ..dial import DialResult, Outcome, Target, dial
from ..media import Player
from . import announce, transfer
from .plan import run as run_plan
from .plan import runs
from .speech import digits, prompt, say

log = logging.getLogger(__name__)


@dataclass
class Parked:
    slot: str
    lot: object
    channel: Channel
    parker: str              # the extension that parked it ("" when unknown)
    since: float
    task: asyncio.Task | None = None


_SLOTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def slots(svc) -> dict[str, Parked]:
    """The occupied slots of this call service, by slot number."""
    return _SLOTS.setdefault(svc, {})


def status(svc) -> list[dict]:
    """For the web page: who is parked where, by whom, for how long."""
    now = time.time()
    return [{"slot": p.slot, "lot": p.lot.number, "caller": p.channel.number, "name": p.channel.name,
             "parker": p.parker, "since": p.since, "seconds": round(now - p.since)} for p in sorted(slots(svc).values(),
                                                                             key=lambda p: p.slot)]


STATE_FILE = "parking-state.json"   # in the data directory: what the web page shows


def _lamp(svc, slot: str, on: bool) -> None:
    presence = getattr(svc, "presence", None)
    if presence is not None:
        presence.publish_dialog(slot, "confirmed" if on else "terminated")
    _write_state(svc)


def _write_state(svc) -> None:
    """The occupied slots for the web UI (another process): written whole and renamed into place."""
    data_dir = getattr(svc.store, "data_dir", None)
    if data_dir is None:
        return
    path = Path(data_dir) / STATE_FILE
    tmp = path.with_suffix(".part")
    try:
        tmp.write_text(json.dumps({"pid": os.getpid(), "written": time.time(), "slots": status(svc)}))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("parking state not written to %s: %s", path, exc)


def _music(svc, ch: Channel, holder: Channel | None = None) -> None:
    moh = getattr(svc, "moh", None)
    if moh is not None and hasattr(moh, "listen"):
        try:
            moh.listen(ch, holder=holder)     # the class of the parker's extension or the call's route
            return
        except Exception:
            log.exception("music on hold unavailable; built-in music")
    if ch.rtp is not None:
        svc.media.play(ch.rtp, Player(pcm=hold_music(), loop=True))


def _unlisten(svc, ch: Channel) -> None:
    moh = getattr(svc, "moh", None)
    if moh is not None and hasattr(moh, "unlisten"):
        try:
            moh.unlisten(ch)
        except Exception:
            log.exception("music on hold: unlisten failed")
    if ch.rtp is not None and not ch.is_gone:
        svc.media.stop(ch.rtp)


def park(svc, ch: Channel, lot, parker: str, holder: Channel | None = None) -> str | None:
    """Put ch in the lot's first free slot (music, lamp, timeout); None when the lot is full."""
    taken = slots(svc)
    slot = first_free_slot(lot, taken)
    if slot is None:
        return None
    if ch.bridge is not None:
        ch.bridge.remove(ch)
    parked = taken[slot] = Parked(slot, lot, ch, parker, time.time())
    _music(svc, ch, holder)
    _lamp(svc, slot, True)
    ch.log("park", slot=slot, by=parker)
    log.info("call %d: %s parked in %s by %s", ch.session.n, ch.number, slot, parker or "itself")
    parked.task = svc.spawn(_wait(svc, parked))
    return slot


def unpark(svc, slot: str) -> Parked | None:
    parked = slots(svc).pop(slot, None)
    if parked is not None:
        _lamp(svc, slot, False)
        if parked.task is not None and parked.task is not asyncio.current_task():
            parked.task.cancel()
        _unlisten(svc, parked.channel)
    return parked


async def _wait(svc, parked: Parked) -> None:
    """Until the caller hangs up (the slot is free again) or the timeout: then ring back."""
    ch = parked.channel
    try:
        await asyncio.wait_for(asyncio.shield(ch.gone), parked.lot.timeout)
    except asyncio.TimeoutError:
        pass
    if slots(svc).get(parked.slot) is not parked:
        return
    if ch.is_gone:
        unpark(svc, parked.slot)
        log.info("call %d: the caller parked in %s hung up", ch.session.n, parked.slot)
        return
    slots(svc).pop(parked.slot, None)
    _lamp(svc, parked.slot, False)
    log.info("call %d: nobody took the call parked in %s: ringing back", ch.session.n, parked.slot)
    ch.log("park_timeout", slot=parked.slot)
    for destination in after_timeout(parked.lot, parked.parker):
        if ch.is_gone:
            return
        if destination.startswith("extension:"):
            number = destination.partition(":")[2]
            result = await dial(svc, ch.session, ch, [Target(f"sip:{number}@{svc.edge[0]}:{svc.edge[1]}", number,
                                                             caller_number=ch.number, caller_name=f"Parked: {ch.name or ch.number}")],
                                timeout=svc.settings.no_answer_timeout, early_media=False)
            if result.outcome is Outcome.ANSWERED:
                _connect(svc, ch, result.channel)
                return
            continue
        _unlisten(svc, ch)
        await run_plan(svc, ch, svc.plan_for(ch.session, destination))
        return
    if not ch.is_gone:
        await ch.hangup("parked call not taken")


def _connect(svc, parked: Channel, other: Channel) -> Bridge:
    _unlisten(svc, parked)
    bridge = Bridge(svc, "parked call")
    bridge.add(parked)
    bridge.add(other)
    bridge.dtmf_hooks.append(svc.in_call_codes)
    return bridge


# --- parking by a blind transfer (REFER or `##`) to the park number ---------------------------
def _transfer_taker(svc, number: str):
    lot = lot_of(number, svc.view)
    if lot is None or number != lot.number:
        return None

    async def take(transferee: Channel, transferrer: Channel) -> DialResult:
        parker = transferrer.number if svc.extension(transferrer.number) is not None else ""
        slot = park(svc, transferee, lot, parker, holder=transferrer)
        if slot is None:
            log.info("call %d: parking lot %s is full", transferee.session.n, lot.number)
            await transferrer.play(Player(pcm=prompt(svc, "parking_full") or b"\0\0"))
            return DialResult(Outcome.BUSY, status=486)
        words = await say(f"Parked at {digits(slot)}.")
        if words:
            await transferrer.play(Player(pcm=words))
        return DialResult(Outcome.ANSWERED, status=200)
    return take


transfer.BLIND_TRANSFER_TAKERS.append(_transfer_taker)


# --- dialling a slot takes the call -----------------------------------------------------------
@runs(Retrieve)
async def retrieve(svc, caller: Channel, step: Retrieve) -> None:
    parked = slots(svc).get(step.slot)
    if parked is None or parked.channel.is_gone:
        from firmware.cdr import Disposition
        await announce.fail(svc, caller, 404, Disposition.FAILED, f"404 nothing parked in {step.slot}",
                            prompt="parking_empty")
        return
    unpark(svc, step.slot)
    ch = parked.channel
    session = caller.session
    log.info("call %d: %s takes the call parked in %s (%s)", session.n, session.src, step.slot, ch.number)
    caller.prefer_codec(ch.codec)
    caller.answer()
    session.state = "answered"
    session.answer = caller.answered_at
    caller.log("unpark", slot=step.slot)
    _connect(svc, ch, caller)
    await session.done()


# --- the park number dialled on its own: how an analog phone parks ------------------------------
HINT_RINGS_S = 30.0


@runs(ParkHint)
async def hint(svc, caller: Channel, step: ParkHint) -> None:
    """Early media (nothing is answered): "hang up to park the call in 7 0 1", then ringing until
    the caller hangs up, which for an analog phone's held call means the gateway transfers it here."""
    from firmware.cdr import Disposition
    slot = first_free_slot(step.lot, slots(svc))
    if slot is None:
        await announce.fail(svc, caller, 486, Disposition.BUSY, "486 parking lot full", prompt="parking_full")
        return
    words = await say(f"Hang up to park the call in {digits(slot)}.")
    caller.progress()
    if words and not caller.is_gone:
        await caller.play(Player(pcm=words))
    try:
        await asyncio.wait_for(asyncio.shield(caller.gone), HINT_RINGS_S)
        caller.session.fail(Disposition.CANCELLED, f"hung up at the park number {step.lot.number}")
    except asyncio.TimeoutError:
        caller.session.fail(Disposition.NO_ANSWER, "nothing parked")
        caller.reject(480, "Temporarily Unavailable (transfer a call to park it)")
