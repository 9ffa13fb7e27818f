"""Day/night toggles from a phone: *33 (toggle 1, the front panel's) or *33N, and the BLF lamps.

    *33  -> [PIN, if the toggle has one] -> DAY <-> NIGHT -> "night mode on" / "day mode on"

The state is stored in the config (toggle 1: Settings.mode; others: the toggle's record), so the
front panel's LED, the web pages and every BLF key show the same. The lamp of toggle N is the
dialog state of "*33" / "*33N" published to the edge (lit = confirmed at night, off =
terminated by day): at start, after a *33, and whenever another process (the panel, the web UI,
`pbx`) changed the configuration.
"""

from __future__ import annotations

import asyncio
import logging

from firmware.cdr import Disposition
from firmware.features import daynight
from firmware.features.daynight import ToggleDayNight

from .. import hooks
from ..channel import Channel
from ..media import Player
from . import announce
from .plan import runs

log = logging.getLogger(__name__)

PIN_TRIES = 3
_PUBLISHED: dict = {}          # id(svc) -> {toggle: state}


def publish_lamps(svc, view=None) -> None:
    """Publish every toggle's lamp that changed since the last time (all of them the first time)."""
    presence = getattr(svc, "presence", None)
    view = view or svc.view
    if presence is None or view is None:
        return
    published = _PUBLISHED.setdefault(id(svc), {})
    for number in daynight.known_toggles(view):
        state = daynight.toggle_state(view, number)
        if published.get(number) == (state, daynight.code_of(number, view)):
            continue
        published[number] = (state, daynight.code_of(number, view))
        resource = daynight.code_of(number, view)
        log.info("day/night toggle %s is %s: BLF %s %s", number, state.upper(), resource, daynight.lamp(state))
        presence.publish_dialog(resource, daynight.lamp(state))


def _on_start(svc) -> None:
    _PUBLISHED.pop(id(svc), None)
    publish_lamps(svc)


hooks.ON_START.append(_on_start)
hooks.ON_CONFIG_CHANGE.append(publish_lamps)


def _flip(store, number: str) -> str:
    """Switch toggle `number` in the config (on an executor: it writes a file); the new state."""
    if number == daynight.MAIN:
        new = daynight.other(store.settings().mode)
        store.update_settings(mode=new)
        return new
    toggle = store.record(daynight.TABLE, number)
    if toggle is None:
        raise KeyError(f"no call-flow toggle {number}")
    new = daynight.other(toggle.state)
    store.update_record(daynight.TABLE, number, state=new)
    return new


async def _pin_ok(svc, caller: Channel, pin: str) -> bool:
    for _ in range(PIN_TRIES):
        first = None
        if svc.prompts is not None:       # a digit typed over the prompt is the PIN's first
            first = await caller.play(Player(pcm=svc.prompts("enter_pin")), stop_on_digits="0123456789#")
        got = "" if first == "#" else (first or "") + await caller.collect(8 - bool(first), timeout=8.0,
                                                                             inter_digit=4.0)
        if got == pin:
            return True
        if caller.is_gone:
            return False
        log.info("call %d: wrong PIN for a day/night toggle", caller.session.n)
        if svc.prompts is not None:
            await caller.play(Player(pcm=svc.prompts("pin_wrong")))
    return False


@runs(ToggleDayNight)
async def run_toggle(svc, caller: Channel, step: ToggleDayNight) -> None:
    session = caller.session
    caller.answer()
    session.answer = caller.answered_at
    session.state = "answered"
    if step.needs_pin:
        record = svc.view.table(daynight.TABLE).get(step.toggle)
        if record is None or not await _pin_ok(svc, caller, record.pin):
            session.fail(Disposition.FAILED, f"403 {daynight.code_of(step.toggle, svc.view)}: wrong PIN")
            if not caller.is_gone:
                await caller.hangup("wrong pin")
            return
    loop = asyncio.get_running_loop()
    try:
        new = await loop.run_in_executor(None, _flip, svc.store, step.toggle)
    except Exception as exc:       # a config that cannot be written: say so, do not crash the call
        log.warning("call %d: day/night toggle %s not switched: %s", session.n, step.toggle, exc)
        await announce.fail(svc, caller, 500, Disposition.FAILED, f"500 toggle {step.toggle}: {exc}",
                            tone_name="congestion")
        return
    svc.refresh_config()
    publish_lamps(svc)
    log.info("call %d: %s switched day/night toggle %s to %s", session.n, step.extension, step.toggle, new.upper())
    caller.log("feature", code=daynight.code_of(step.toggle, svc.view), action="daynight", argument=new)
    session.fail(Disposition.ANSWERED, f"feature {daynight.code_of(step.toggle, svc.view)} {new}")
    if svc.prompts is not None and not caller.is_gone:
        await caller.play(Player(pcm=svc.prompts(f"{new}_mode_on")))
    if not caller.is_gone:
        await caller.hangup("feature done")
