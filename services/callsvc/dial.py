"""The dial primitive: ring one or many targets for a caller, first answer wins (decision 010).

As FreeSWITCH's originate: targets ring at once (ring all) or one after another (hunt), each with
its own ring time, start delay and caller ID. The caller hears ringing (180) as soon as any target
rings, and the first target's early media (183 with SDP: a carrier's announcement) is bridged to
the caller before the answer. The first answer wins; every other target gets a CANCEL with
`Reason: SIP;cause=200;text="Call completed elsewhere"` (RFC 3326) so it logs no missed call.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Awaitable, Callable

from .bridge import Bridge
from .channel import COMPLETED_ELSEWHERE, Channel
from .media import MediaCapacityError

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger(__name__)


class Outcome(str, Enum):
    ANSWERED = "answered"
    BUSY = "busy"                  # 486 / 600 / 603, or DND
    NO_ANSWER = "no_answer"        # rang out, or 408
    UNAVAILABLE = "unavailable"    # 404 / 410 / 480: nobody registered there
    CALLER_GONE = "caller_gone"    # the caller hung up or cancelled first
    FAILED = "failed"              # anything else (5xx, bad SDP...)


@dataclass
class Target:
    uri: str
    number: str                        # what the records and logs call this target
    timeout: float | None = None       # its own ring time (None: the dial's)
    delay: float = 0.0                 # start ringing it this much later
    caller_number: str | None = None   # caller ID shown to it (None: the caller's)
    caller_name: str | None = None
    headers: tuple = ()
    credentials: tuple[str, str] | None = None  # a trunk's (user, password) for its provider's challenge
    kind: str = "extension"            # for the call record: extension, trunk or line
    trunk: str = ""                    # trunk name, or "line:N"
    external: str = ""                 # the number as sent to the provider
    forwarded_from: str = ""
    # asked once the target answers, before it wins: an outside leg hears "press 1 to accept" so a
    # mobile's voicemail never takes the call (ring groups, Follow Me); False hangs that leg up
    confirm: Callable[[Channel], Awaitable[bool]] | None = None


@dataclass
class DialResult:
    outcome: Outcome
    channel: Channel | None = None     # the answered target
    status: int = 0                    # the most telling final status of the targets
    statuses: list[int] = field(default_factory=list)
    bridge: Bridge | None = None       # the caller and the winner, already bridged


def outcome_of(statuses: list[int]) -> tuple[Outcome, int]:
    """What a caller should hear when every target failed (busy wins over unavailable...)."""
    for codes, outcome in (((486, 600, 603), Outcome.BUSY), ((408, 487), Outcome.NO_ANSWER),
                           ((404, 410, 480), Outcome.UNAVAILABLE)):
        for code in statuses:
            if code in codes:
                return outcome, code
    return Outcome.FAILED, (statuses[0] if statuses else 0)


async def dial(svc, session: "Session", caller: Channel, targets: list[Target], *, timeout: float,
               sequential: bool = False, early_media: bool = True) -> DialResult:
    """Ring targets for caller until one answers, all fail, the time runs out or the caller leaves."""
    if sequential:
        statuses: list[int] = []
        for target in targets:
            result = await dial(svc, session, caller, [target], timeout=target.timeout or timeout,
                                early_media=early_media)
            if result.outcome in (Outcome.ANSWERED, Outcome.CALLER_GONE):
                return result
            statuses += result.statuses
        outcome, status = outcome_of(statuses)
        return DialResult(outcome, status=status, statuses=statuses)
    return await _ring_all(svc, session, caller, targets, timeout, early_media)


async def _ring_all(svc, session, caller: Channel, targets: list[Target], timeout: float,
                    early_media: bool) -> DialResult:
    loop = asyncio.get_running_loop()
    early: list[Bridge] = []
    ringing: list[Channel] = []
    statuses: list[int] = []
    capacity_error: MediaCapacityError | None = None

    def on_ringing(ch: Channel) -> None:
        if session.state == "setup":
            session.state = "ringing"
        caller.ring()

    def on_progress(ch: Channel) -> None:
        if session.state == "setup":
            session.state = "ringing"
        if not early_media or early or caller.is_gone:
            caller.ring()
            return
        caller.prefer_codec(ch.codec)
        caller.progress()
        bridge = Bridge(svc, "early media")
        bridge.add(caller)
        bridge.add(ch)
        early.append(bridge)

    async def ring(target: Target) -> tuple[Target, Channel | None, int]:
        nonlocal capacity_error
        if target.delay:
            await asyncio.sleep(target.delay)
        if caller.is_gone:
            return target, None, 487
        try:
            ch = await Channel.originate(
                svc, session, target.uri, number=target.number,
                caller_number=target.caller_number or session.src,
                caller_name=target.caller_name if target.caller_name is not None else caller.name,
                codecs=_codecs_for(caller), dtmf_pt=caller.dtmf_pt, headers=target.headers,
                cel={"kind": target.kind, "trunk": target.trunk, "external": target.external,
                     "forwarded_from": target.forwarded_from})
        except MediaCapacityError as exc:
            log.warning("call %d: cannot ring %s: %s", session.n, target.number, exc)
            capacity_error = exc
            return target, None, 480
        ch.on_ringing, ch.on_progress = on_ringing, on_progress
        ch.credentials, ch.trunk = target.credentials, target.trunk
        ringing.append(ch)
        if finished or caller.is_gone:
            # the dial ended while this target's RTP socket opened: it must not ring on unowned
            await ch.hangup("cancelled")
        ring_time = target.timeout or timeout
        timer = loop.call_later(ring_time + target.delay, ch.cancel) if target.timeout else None
        try:
            status = await ch.wait_answer()
        finally:
            if timer is not None:
                timer.cancel()
        if 200 <= status < 300 and target.confirm is not None and not finished:
            if not await target.confirm(ch) or finished or caller.is_gone:
                await ch.hangup("not accepted")
                status = 480
        return target, ch, status

    finished = False
    tasks = {svc.spawn(ring(t)) for t in targets}
    caller_gone = asyncio.ensure_future(asyncio.shield(caller.gone))
    # a pickup (*8, **NUM) from another phone ends the ringing with that phone as the winner
    session.pickup = loop.create_future()
    deadline = loop.time() + timeout
    winner: Channel | None = None
    pending = set(tasks)
    try:
        while pending and winner is None:
            left = deadline - loop.time()
            if left <= 0:
                break
            done, _ = await asyncio.wait(pending | {caller_gone, session.pickup}, timeout=left,
                                         return_when=asyncio.FIRST_COMPLETED)
            if caller_gone in done:
                break
            if session.pickup in done:
                winner = session.pickup.result()
                break
            for task in done:
                pending.discard(task)
                target, ch, status = task.result()
                statuses.append(status)
                if not 200 <= status < 300:
                    log.info("call %d: %s answered %d", session.n, target.number, status)
                if ch is not None and 200 <= status < 300 and winner is None and not caller.is_gone:
                    winner = ch
    finally:
        caller_gone.cancel()
        finished = True
        if not session.pickup.done():
            session.pickup.cancel()
        session.pickup = None
    for ch in ringing:
        if ch is not winner and not ch.is_gone:
            # the losers' ring tasks go on in the background until their INVITEs end (487, or a BYE
            # for one that answered in the same moment)
            await ch.hangup(COMPLETED_ELSEWHERE if winner is not None else "cancelled")
    if winner is not None:
        bridge = next((b for b in early if winner in b.members), None)
        for b in early:
            if b is not bridge:
                b.dissolve()
        return DialResult(Outcome.ANSWERED, winner, 200, statuses, bridge)
    for b in early:
        b.dissolve()
    if caller.is_gone:
        return DialResult(Outcome.CALLER_GONE, statuses=statuses)
    if not pending and capacity_error is not None and len(statuses) == len(targets) and all(
            s == 480 for s in statuses):
        raise capacity_error
    if pending:  # the time ran out with targets still ringing
        return DialResult(Outcome.NO_ANSWER, status=408, statuses=statuses)
    outcome, status = outcome_of(statuses)
    return DialResult(outcome, status=status, statuses=statuses)


def _codecs_for(caller: Channel) -> tuple[str, ...]:
    """Offer the caller's codecs first (a pure relay if the target takes one), then the other G.711."""
    offered = [name for name, _ in caller.offer.codecs] if caller.offer is not None else [caller.codec]
    return tuple(dict.fromkeys(offered + ["PCMU", "PCMA"]))
