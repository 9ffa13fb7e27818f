"""Paging and intercom: phones called with the auto-answer headers (firmware/features/paging.py).

A page calls every member of the group at once. The pager is answered as soon as the first phone
answers (until then it hears ringing) and talks into a conference-mode Bridge in which every
member is muted: the mixer sends each member the pager's audio and sends the pager the sum of
everybody else's, which is nothing. Members that answer later join as they answer; one hanging
up leaves the rest on the page; the page ends when the pager hangs up or the last member has.
Intercom (`*80NUM`) is one dial() with the same headers, bridged two-way like any call.
"""
from __future__ import annotations

import asyncio
import logging

from firmware.features.paging import Intercom, Page, auto_answer_headers

from ..bridge import Bridge
from ..channel import Channel
from ..dial import DialResult, Outcome, Target, dial, outcome_of
from ..media import MediaCapacityError, Player
from .conference import JOIN_TONE
from .plan import runs

log = logging.getLogger(__name__)


def _codecs(caller: Channel) -> tuple[str, ...]:
    offered = [name for name, _ in caller.offer.codecs] if caller.offer is not None else [caller.codec]
    return tuple(dict.fromkeys(offered + ["PCMU", "PCMA"]))


@runs(Page)
async def run_page(svc, caller: Channel, step: Page):
    session, loop = caller.session, asyncio.get_running_loop()
    headers = auto_answer_headers(svc.edge[0])
    room = Bridge(svc, f"page-{step.group}")
    room.conference = True          # always mixed: members muted, the pager hears nobody
    room.on_leave = None
    first_answer = loop.create_future()
    statuses: list[int] = []
    members: list[Channel] = []

    async def page(number: str) -> None:
        try:
            ch = await Channel.originate(
                svc, session, f"sip:{number}@{svc.edge[0]}:{svc.edge[1]}", number=number,
                caller_number=step.caller_id_number, caller_name=step.caller_id_name, codecs=_codecs(caller),
                dtmf_pt=caller.dtmf_pt, headers=headers, cel={"kind": "extension"})
        except MediaCapacityError as exc:
            log.warning("call %d: cannot page %s: %s", session.n, number, exc)
            statuses.append(480)
            return
        ch.on_ringing = lambda _ch: caller.ring()
        members.append(ch)
        if caller.is_gone:
            await ch.hangup("cancelled")
        timer = loop.call_later(step.ring_time, ch.cancel)
        try:
            status = await ch.wait_answer()
        finally:
            timer.cancel()
        statuses.append(status)
        if not 200 <= status < 300 or ch.is_gone:
            log.info("call %d: page member %s answered %d", session.n, number, status)
            return
        if caller.is_gone:
            await ch.hangup("page over")
            return
        if ch.rtp is not None:
            ch.rtp.muted = True     # one way: nobody hears a member
        room.add(ch)
        ch.log("page_join", group=step.group)
        log.info("page %s: %s answered (%d on the page)", step.group, number, len(room.members) - 1)
        if not first_answer.done():
            first_answer.set_result(ch)

    tasks = [svc.spawn(page(number)) for number in step.members]
    every = asyncio.ensure_future(asyncio.gather(*tasks, return_exceptions=True))
    gone = asyncio.ensure_future(asyncio.shield(caller.gone))
    try:
        await asyncio.wait({first_answer, every, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if caller.is_gone:
        return DialResult(Outcome.CALLER_GONE, statuses=statuses)
    if not first_answer.done():
        outcome, status = outcome_of(statuses)
        return DialResult(outcome if outcome is not Outcome.FAILED else Outcome.UNAVAILABLE,
                          status=status or 480, statuses=statuses)
    caller.answer()
    session.state, session.answer = "answered", caller.answered_at
    log.info("call %d %s -> page %s answered", session.n, session.src, step.group)
    room.add(caller)
    svc.media.play(caller.rtp, Player(pcm=JOIN_TONE))   # the pager's cue to speak
    # until the pager hangs up, or every member has left (and no one is still ringing)
    while not caller.is_gone:
        live = [m for m in members if not m.is_gone]
        if not live and every.done():
            log.info("page %s: every member has left", step.group)
            await caller.hangup("page over")
            break
        waiters = {asyncio.ensure_future(asyncio.shield(caller.gone))}
        waiters |= {asyncio.ensure_future(asyncio.shield(m.gone)) for m in live}
        if not every.done():
            waiters.add(every)
        done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for w in pending:
            if w is not every:
                w.cancel()
    room.dissolve()
    return None


@runs(Intercom)
async def run_intercom(svc, caller: Channel, step: Intercom):
    target = Target(f"sip:{step.extension}@{svc.edge[0]}:{svc.edge[1]}", step.extension,
                    caller_number=step.caller_id_number, caller_name=step.caller_id_name,
                    headers=auto_answer_headers(svc.edge[0]))
    log.info("call %d: intercom %s -> %s", caller.session.n, caller.session.src, step.extension)
    return await dial(svc, caller.session, caller, [target], timeout=step.timeout)
