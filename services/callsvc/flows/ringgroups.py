"""Ring groups: ring the group's members the way its strategy says; the first to answer talks.

Who rings when is firmware's decision (firmware/features/ringgroups.py ring_order); this flow
keeps what that decision needs from the live box (who answered the group's last call, who is on
a call now) and rings each round with the dial primitive. Outside members go out through the
trunk their number's outbound route names, as a forward to a mobile does, and with
confirm_external hear "call for <group>, press 1 to accept" before they win.
"""
from __future__ import annotations

import logging
import weakref

from firmware.dialplan import Dial
from firmware.dsp.tones import hold_music
from firmware.features.ringgroups import RingGroupCall, ring_order

from ..channel import Channel
from ..dial import DialResult, Outcome, Target, dial
from ..media import Player
from .outside import LINE_DIAL_HEADER, TRUNK_HEADER
from .plan import runs
from .speech import prompt, say

log = logging.getLogger(__name__)

# per call service: group number -> the member destination that answered its last call
_LAST_ANSWERED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def last_answered(svc) -> dict[str, str]:
    return _LAST_ANSWERED.setdefault(svc, {})


def busy_extensions(svc) -> frozenset[str]:
    """Extensions with an answered call now (first_available skips them)."""
    return frozenset(ch.number for session in svc.calls.values() for ch in session.channels
                     if ch.state == "up" and not ch.is_gone and ch.cel.get("kind") == "extension")


def extension_target(svc, number: str, caller_number: str, caller_name: str, timeout: float) -> Target:
    return Target(f"sip:{number}@{svc.edge[0]}:{svc.edge[1]}", number, timeout=timeout,
                  caller_number=caller_number or None, caller_name=caller_name)


def outside_target(svc, plan, number: str, timeout: float, caller_name: str = "") -> Target | None:
    """The first usable trunk (or exchange line) of a Dial plan, as one dial target."""
    if not isinstance(plan, Dial):
        return None
    for attempt in plan.attempts:
        line = svc.view.lines.get(attempt.trunk)
        if line is not None:
            return Target(f"sip:{line.extension}@{svc.edge[0]}:{svc.edge[1]}", number, timeout=timeout,
                          caller_number=attempt.caller_id or None, caller_name=caller_name,
                          headers=((LINE_DIAL_HEADER, attempt.number_as_sent),), kind="line",
                          trunk=attempt.trunk, external=attempt.number_as_sent)
        trunk = svc.trunk(attempt.trunk)
        if trunk is not None:
            return Target(f"sip:{attempt.number_as_sent}@{trunk.host}", number, timeout=timeout,
                          caller_number=attempt.caller_id or None, caller_name=caller_name,
                          headers=((TRUNK_HEADER, trunk.name),),
                          credentials=(trunk.username, trunk.secret) if trunk.username else None,
                          kind="trunk", trunk=trunk.name, external=attempt.number_as_sent)
    return None


def press_1(svc, intro: "str | bytes"):
    """A confirm hook for dial(): the answered leg hears `intro` (words to speak, or audio such as
    a caller's recorded name) and "press 1 to accept, 2 to reject" (twice at most); only a 1 lets
    it take the call."""
    async def confirm(ch: Channel) -> bool:
        words = intro if isinstance(intro, bytes) else (await say(intro) if intro else b"")
        pcm = words + prompt(svc, "press_1_to_accept")
        for _ in range(2):
            if ch.is_gone:
                return False
            digit = await ch.play(Player(pcm=pcm), stop_on_digits="12") if pcm else None
            if digit is None and not ch.is_gone:
                digit = (await ch.collect(1, timeout=4.0, terminator=""))[:1] or None
            log.info("call %d: %s answered the confirmation with %s", ch.session.n, ch.number, digit or "nothing")
            if digit == "1":
                return True
            if digit == "2":
                return False
        return False
    return confirm


def play_music(svc, caller: Channel) -> None:
    """The caller waits to music (183 with our media) instead of ringback."""
    if caller.rtp is None or caller.is_gone:
        return
    caller.progress()
    moh = getattr(svc, "moh", None)
    if moh is not None and hasattr(moh, "listen"):
        try:
            moh.listen(caller)          # the class of the call's route or the called extension
            return
        except Exception:  # the music-on-hold service is optional here: fall back to the built-in tune
            log.exception("music on hold unavailable; built-in music")
    svc.media.play(caller.rtp, Player(pcm=hold_music(), loop=True))


def stop_music(svc, caller: Channel) -> None:
    moh = getattr(svc, "moh", None)
    if moh is not None and hasattr(moh, "unlisten"):
        try:
            moh.unlisten(caller)
        except Exception:
            log.exception("music on hold: unlisten failed")
    if caller.rtp is not None and not caller.is_gone:
        svc.media.stop(caller.rtp)


@runs(RingGroupCall)
async def run(svc, caller: Channel, step: RingGroupCall):
    group = step.group
    session = caller.session
    loop = svc.loop
    memory = last_answered(svc)
    rounds = ring_order(group, last_answered=memory.get(group.number, ""), busy=busy_extensions(svc))
    caller.log("ring_group", group=group.number, strategy=group.strategy)
    if group.waiting == "music":
        play_music(svc, caller)
    deadline = loop.time() + group.timeout
    statuses: list[int] = []
    try:
        for members in rounds:
            left = deadline - loop.time()
            if left < 1 or caller.is_gone:
                break
            targets, destinations = [], {}
            for m in members:
                timeout = min(m.timeout, left)
                if m.external:
                    t = outside_target(svc, step.outside_plan(m.destination), m.number, timeout, step.caller_id_name)
                    if t is None:
                        log.info("call %d: ring group %s member %s cannot be dialled out: skipped", session.n,
                                 group.number, m.number)
                        continue
                    if group.confirm_external:
                        t.confirm = press_1(svc, f"Call for {group.name}.")
                else:
                    if m.number in step.skip:
                        continue
                    t = extension_target(svc, m.number, step.caller_id_number, step.caller_id_name, timeout)
                targets.append(t)
                destinations[m.number] = m.destination
            if not targets:
                continue
            log.info("call %d: ring group %s rings %s", session.n, group.number, ",".join(t.number for t in targets))
            result = await ring_round(svc, caller, targets, min(max(t.timeout for t in targets), left))
            if result.outcome is Outcome.ANSWERED:
                memory[group.number] = destinations.get(result.channel.number, "")
                log.info("call %d: ring group %s answered by %s", session.n, group.number, result.channel.number)
                return result
            if result.outcome is Outcome.CALLER_GONE:
                return result
            statuses += result.statuses
    finally:
        if group.waiting == "music":
            stop_music(svc, caller)
    log.info("call %d: nobody in ring group %s answered", session.n, group.number)
    return DialResult(Outcome.NO_ANSWER, status=480, statuses=statuses)


async def ring_round(svc, caller: Channel, targets: list[Target], timeout: float) -> DialResult:
    """One round; the extensions in it can be picked up (**NUM)."""
    session = caller.session
    extensions = [t.number for t in targets if t.kind == "extension"]
    for number in extensions:
        svc.ringing[number] = session
    try:
        return await dial(svc, session, caller, targets, timeout=timeout, early_media=False)
    finally:
        for number in extensions:
            if svc.ringing.get(number) is session:
                del svc.ringing[number]
