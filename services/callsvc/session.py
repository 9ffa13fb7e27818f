"""Sessions: everything that belongs to one call from its first INVITE (decision 010).

A session holds the channels born for that call (the caller's and every leg dialled for it), their
bridges, and an event log in the manner of Asterisk's CEL (chan_start, answer, bridge_enter,
bridge_exit, hold, dtmf, hangup ...) tied by a linkedid, the first channel's Call-ID. At its end
the session writes the call record.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import time
from typing import TYPE_CHECKING

from firmware.cdr import CallRecord, Disposition
from firmware.cel import cdr_rows

if TYPE_CHECKING:
    from .channel import Channel

log = logging.getLogger(__name__)

# callables(session, what, channel) told of every event as it is logged (BLF lamps follow the
# chan_start / answer / hangup of extensions' channels: services/callsvc/flows/blf.py)
EVENT_LISTENERS: list = []


class Freed:
    """How the calls' objects leave memory (issue 16): a class counts its instances still in memory
    and those that only the cyclic collector freed, i.e. that were in a reference cycle. An ended
    call should be freed by reference counting the moment nothing uses it (Session.release): the
    collector's full passes walk every live object and stalled the loop 100-500 ms at 300 setups/s.
    `pbx status` shows both under "memory"; tests/test_call_tables.py wants 0 of each after calls."""

    collecting = False

    def __init__(self):
        self.alive = 0
        self.by_collector = 0

    def born(self) -> None:
        self.alive += 1

    def died(self) -> None:
        self.alive -= 1
        if Freed.collecting:
            self.by_collector += 1

    @staticmethod
    def _phase(phase: str, info: dict) -> None:
        Freed.collecting = phase == "start"


gc.callbacks.append(Freed._phase)
SESSIONS, CHANNELS = Freed(), Freed()


class Session:
    ids = itertools.count(1)

    def __init__(self, svc, linkedid: str, src: str, dst: str):
        SESSIONS.born()
        self.svc = svc
        self.n = next(Session.ids)
        self.linkedid = linkedid
        self.src, self.dst = src, dst
        self.start = time.time()
        self.answer: float | None = None   # when the caller was first bridged to someone
        self.end: float | None = None
        self.state = "setup"               # setup, ringing, announcing, answered, ended
        self.channels: list["Channel"] = []
        self.events: list[tuple[float, str, int, dict]] = []
        self.disposition: Disposition | None = None
        self.cause = ""
        self.caller: "Channel | None" = None
        self.who = None                        # the routing plan's Caller (extension, trunk, line)
        self.recordings: list[str] = []
        self.hangup_by = ""  # set when the PBX ends the call for a reason of its own ("rtp timeout")
        self._done = svc.loop.create_future()  # every channel of the session has ended
        self.pickup = None  # while a dial rings: a future another phone's pickup resolves
        self.media_seen = None  # {channel n: (its RTP packet count, when it last moved)}: the RTP-timeout sweep

    def __del__(self):
        SESSIONS.died()

    def event(self, what: str, ch: "Channel | None", /, **data) -> None:
        """One entry of the event log (the schema is firmware/cel.py's; data may hold a 'kind')."""
        self.events.append((time.time(), what, ch.n if ch is not None else 0, data))
        for listener in EVENT_LISTENERS:
            try:
                listener(self, what, ch)
            except Exception:  # a lamp or a monitor must never break the call
                log.exception("call %d: event listener %r failed on %s", self.n, listener, what)

    def start_channel(self, ch: "Channel", **cel) -> None:
        """A channel born for this call: chan_start with what the call record needs of it."""
        ch.cel = cel
        if ch not in self.channels:
            self.channels.append(ch)
        self.event("chan_start", ch, **cel)

    def attach(self, ch: "Channel") -> None:
        """A channel of another call joins one of ours (pickup, transfer): it is logged here too,
        and this call lasts until it has ended as well."""
        if ch in self.channels:
            return
        self.channels.append(ch)
        if self not in ch.sessions:
            ch.sessions.append(self)
        self.event("chan_start", ch, **ch.cel)
        if ch.answered_at is not None:
            self.event("answer", ch)

    def channel_gone(self) -> None:
        if all(ch.is_gone for ch in self.channels) and not self._done.done():
            self._done.set_result(None)

    def release(self) -> None:
        """After the end (call record written, BYEs answered): let go of the channels that have
        ended for good, so the call is freed by reference counting the moment nothing uses it.

        A session and its channels refer to each other (session.channels, channel.session), as do
        a channel and its RTP leg's DTMF callback or its dial's closures: every ended call was left
        for the cyclic collector, whose full passes walk every live object and, at 300 setups/s,
        stalled the event loop 100-500 ms every second or two (issue 16). A channel that lives on
        in another call (a transfer, a pickup) or still owes its BYE is kept."""
        kept = [ch for ch in self.channels
                if not (ch.is_gone and not ch.confirmed and all(s.end is not None for s in ch.sessions))]
        if len(kept) == len(self.channels):
            return
        if self.caller is not None and self.caller not in kept:
            self.caller = None
        self.channels = kept

    async def done(self) -> None:
        """Until every channel of the session has ended (transfers may add channels meanwhile)."""
        await asyncio.shield(self._done)

    def fail(self, disposition: Disposition, cause: str) -> None:
        """Record why the call did not connect (the first reason wins)."""
        if self.disposition is None:
            self.disposition, self.cause = disposition, cause

    def describe(self) -> dict:
        caller = self.caller
        return {"call_id": self.linkedid, "src": self.src, "dst": self.dst, "state": self.state,
                "start": self.start, "answer": self.answer,
                "codec": caller.codec if caller is not None and caller.rtp is not None else None}

    def records(self) -> list[CallRecord]:
        """The call records of the session, built from its event log (firmware/cel.py): one row per
        conversation between two parties, or one row saying why nobody talked."""
        caller = self.caller
        if caller is not None and self.answer is None:
            # the call service's own verdict on a call that never connected wins (cel.py)
            for t, kind, n, data in reversed(self.events):
                if kind == "hangup" and n == caller.n:
                    data["disposition"] = (self.disposition or Disposition.FAILED).value
                    if self.cause:
                        data["cause"] = self.cause
                    break
        if self.hangup_by:
            for t, kind, n, data in self.events:
                if kind == "hangup" and data.get("by") == "pbx" and data.get("cause") in ("normal", ""):
                    data["cause"] = self.hangup_by
        return cdr_rows(self.events, {}, linkedid=self.linkedid)
