"""Sessions: everything that belongs to one call from its first INVITE (decision 009).

A session holds the channels born for that call (the caller's and every leg dialled for it), their
bridges, and an event log in the manner of Asterisk's CEL (chan_start, answer, bridge_enter,
bridge_exit, hold, dtmf, hangup ...) tied by a linkedid, the first channel's Call-ID. At its end
the session writes the call record.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import TYPE_CHECKING

from firmware.cdr import CallRecord, Disposition, cdr_text

if TYPE_CHECKING:
    from .channel import Channel

log = logging.getLogger(__name__)


class Session:
    ids = itertools.count(1)

    def __init__(self, svc, linkedid: str, src: str, dst: str):
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
        self.callee: "Channel | None" = None   # who the caller talked to (for the record)
        self.recordings: list[str] = []
        self.hangup_by = ""  # set when the PBX ends the call for a reason of its own ("rtp timeout")
        self._done = svc.loop.create_future()  # every channel of the session has ended
        self.pickup = None  # while a dial rings: a future another phone's pickup resolves

    def event(self, kind: str, ch: "Channel | None", **data) -> None:
        self.events.append((time.time(), kind, ch.n if ch is not None else 0, data))
        if ch is not None and ch not in self.channels:
            self.channels.append(ch)

    def channel_gone(self) -> None:
        if all(ch.is_gone for ch in self.channels) and not self._done.done():
            self._done.set_result(None)

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

    def record(self) -> CallRecord:
        """The call record of the whole session (one row; the legs say who was on it)."""
        caller, callee = self.caller, self.callee
        if self.disposition is None or (self.answer is not None and self.disposition is not Disposition.ANSWERED):
            self.disposition = Disposition.ANSWERED if self.answer is not None else Disposition.FAILED
        legs = []
        if caller is not None:
            by = {"remote": "caller", "": ""}.get(caller.hangup_by, caller.hangup_by)
            if not by and callee is not None and callee.hangup_by == "remote":
                by = "callee"
            legs.append({"leg": "a", "peer": self.src, "call_id": caller.call_id, "codec": caller.codec,
                         "hangup_by": self.hangup_by or by})
            if caller.dtmf_log:
                legs[0]["dtmf"] = caller.dtmf_log
        if callee is not None:
            legs.append({"leg": "b", "peer": self.dst, "call_id": callee.call_id, "codec": callee.codec,
                         "final": callee.final_status or (200 if callee.answered_at else 0)})
        for leg, path in zip(legs, self.recordings):
            leg["recording"] = path
        cause = self.cause or (f"hangup by {legs[0]['hangup_by']}" if legs and legs[0]["hangup_by"] else "")
        return CallRecord(call_id=cdr_text(self.linkedid), src=cdr_text(self.src, "anonymous"),
                          dst=cdr_text(self.dst, "(none)"), start=self.start, answer=self.answer,
                          end=self.end, disposition=self.disposition, legs=legs, cause=cause)
