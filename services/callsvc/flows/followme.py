"""Follow Me: ring the user's list of phones (desk, landline, mobile) instead of the desk alone.

    legs in turn or together, each after its delay  -> the first to answer (and press 1, outside)
    nobody                                          -> the extension's own no-answer handling

An outside leg hears who is calling first: the caller's name as the caller said it when the
call came in ("please say your name after the tone"; the caller waits to music meanwhile), or
the caller's number read out; then "press 1 to accept, 2 to reject".
*21 turns the extension's Follow Me on and off.
"""
from __future__ import annotations

import asyncio
import logging
import os
import tempfile

import numpy as np

from firmware.cdr import Disposition
from firmware.config.errors import ValidationError, ValidationErrors
from firmware.features.followme import TABLE, FollowMeCall, FollowMeToggle, toggled

from ..channel import Channel
from ..dial import DialResult, Outcome
from ..media import Player
from . import announce
from .plan import runs
from .ringgroups import extension_target, outside_target, play_music, press_1, ring_round, stop_music
from .speech import digits, prompt, say

log = logging.getLogger(__name__)

NAME_MAX_S, NAME_SILENCE_S = 4.0, 1.2


def _beep() -> bytes:
    t = np.arange(int(0.25 * 8000)) / 8000
    return (np.sin(2 * np.pi * 1000 * t) * 8000).astype("<i2").tobytes()


async def _record_name(svc, caller: Channel) -> bytes:
    """Answer the caller and record their name ("please say your name after the tone")."""
    from services.media.wavfile import read_wav
    caller.answer()
    session = caller.session
    session.state, session.answer = "answered", caller.answered_at
    await caller.play(Player(pcm=prompt(svc, "say_your_name") + _beep()))
    fd, path = tempfile.mkstemp(prefix="followme-name-", suffix=".wav")
    os.close(fd)
    try:
        await caller.record(path, max_s=NAME_MAX_S, silence_s=NAME_SILENCE_S, stop_on_digits="#")
        try:
            return read_wav(path)
        except (OSError, ValueError) as exc:
            log.warning("call %d: caller's name not usable: %s", session.n, exc)
            return b""
    finally:
        os.unlink(path)


@runs(FollowMeCall)
async def run(svc, caller: Channel, step: FollowMeCall):
    session = caller.session
    caller.log("follow_me", extension=step.extension)
    outside = any(leg.external for leg, _ in step.legs)
    intro: str | bytes = ""
    if step.confirm and outside:
        name = await _record_name(svc, caller) if step.announce == "name" else b""
        number = step.caller_id_number
        if name:
            intro = await say("Call from") + name
        else:
            intro = f"Call from {digits(number)}." if number else f"Call from {step.caller_id_name or 'a caller'}."
    music = caller.state == "up"
    if music:
        play_music(svc, caller)
    try:
        targets = []
        for leg, plan in step.legs:
            if leg.external:
                t = outside_target(svc, plan, leg.number, leg.timeout, step.caller_id_name)
                if t is None:
                    continue
                if step.confirm:
                    t.confirm = press_1(svc, intro)
                t.forwarded_from = step.extension
            else:
                t = extension_target(svc, leg.number, step.caller_id_number, step.caller_id_name, leg.timeout)
            t.delay = leg.delay
            targets.append(t)
        if step.together:
            rounds = [targets]
        else:
            rounds = [[t] for t in targets]
        statuses: list[int] = []
        for targets_now in rounds:
            if caller.is_gone:
                break
            if not step.together:
                # in turn: the delay is a pause before this leg, not a head start on the others
                for t in targets_now:
                    if t.delay:
                        await asyncio.sleep(t.delay)
                        t.delay = 0
            timeout = max(t.delay + t.timeout for t in targets_now)
            log.info("call %d: follow me %s rings %s", session.n, step.extension,
                     ",".join(t.number for t in targets_now))
            result = await ring_round(svc, caller, targets_now, timeout)
            if result.outcome in (Outcome.ANSWERED, Outcome.CALLER_GONE):
                if result.outcome is Outcome.ANSWERED:
                    log.info("call %d: follow me %s answered at %s", session.n, step.extension,
                             result.channel.number)
                return result
            statuses += result.statuses
    finally:
        if music:
            stop_music(svc, caller)
    log.info("call %d: nobody answered follow me of %s", session.n, step.extension)
    return DialResult(Outcome.NO_ANSWER, status=480, statuses=statuses)


@runs(FollowMeToggle)
async def toggle(svc, caller: Channel, step: FollowMeToggle) -> None:
    loop = asyncio.get_running_loop()
    fm = svc.view.table(TABLE).get(step.extension)
    turn_on = toggled(fm)
    if turn_on is None:
        log.info("call %d: *21 from %s: no Follow Me phones set", caller.session.n, step.extension)
        await announce.fail(svc, caller, 404, Disposition.FAILED, "404 no Follow Me phones set",
                            prompt="followme_off")
        return
    try:
        await loop.run_in_executor(None, lambda: svc.store.update_record(TABLE, step.extension, enabled=turn_on))
    except (ValidationError, ValidationErrors, KeyError) as exc:
        log.info("call %d: *21 for %s refused: %s", caller.session.n, step.extension, exc)
        await announce.fail(svc, caller, 403, Disposition.FAILED, f"403 *21: {exc}", tone_name="congestion")
        return
    svc.refresh_config()
    log.info("call %d: follow me of %s %s (*21)", caller.session.n, step.extension, "on" if turn_on else "off")
    caller.log("feature", code="*21", action="follow_me", argument="on" if turn_on else "off")
    caller.answer()
    caller.session.answer = caller.answered_at
    caller.session.state = "answered"
    caller.session.fail(Disposition.ANSWERED, f"feature *21 follow me {'on' if turn_on else 'off'}")
    await caller.play(Player(pcm=prompt(svc, "followme_on" if turn_on else "followme_off") or b"\0\0"))
    await caller.hangup("feature done")
