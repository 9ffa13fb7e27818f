"""Bridges: what joins channels' media (decision 010).

Two members: the media engine's relay, untouched packets on its fast path when both phones speak
the same codec and DTMF numbering, transcoded / renumbered on the slow path otherwise. Three or
more: the mixer (mix-minus on the shared tick: each hears everybody else). A member that puts a
two-party call on hold makes the bridge play music to the other member until it resumes.
DTMF hooks let a feature watch the digits a member presses while bridged (in-call transfer codes).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import moh

if TYPE_CHECKING:
    from .channel import Channel

log = logging.getLogger(__name__)


class Bridge:
    ids = itertools.count(1)

    def __init__(self, svc, name: str = ""):
        self.svc = svc
        self.name = name
        self.id = f"{name or 'bridge'}-{next(Bridge.ids)}"  # unique: the call records tell bridges apart
        self.members: list["Channel"] = []
        self.created = time.time()
        # callables(channel, digit) -> None: features watching in-call digits
        self.dtmf_hooks: list[Callable[["Channel", str], None]] = []
        # what happens when a member hangs up: by default the other one is hung up too (a call
        # ends when either party leaves); a feature in the middle of a transfer sets its own
        self.on_leave: Callable[["Bridge", "Channel"], None] | None = hang_up_the_rest
        self.music_when_alone = False  # a lone member (its partner being transferred) hears music
        self.mixer = None              # three or more members
        # a conference room: always the mixer (a member can be muted), a joining member does not
        # cut the prompts others hear, and every member's call keeps its own record
        self.conference = False

    def add(self, ch: "Channel") -> None:
        if ch in self.members:
            return
        if ch.bridge is not None:
            ch.bridge.remove(ch)
        self._unwire()
        peer = self.members[0] if len(self.members) == 1 else None
        if peer is not None and peer not in ch.session.channels and not self.conference:
            # a channel of another call joins (a pickup, a transfer): the call of the one already
            # in the bridge records the conversation; its own call keeps its own record
            peer.session.attach(ch)
        self.members.append(ch)
        ch.bridge = self
        ch.on_hold_change = self._on_hold_change
        for session in ch.sessions if not self.conference else ():  # a room logs its own events
            if peer is None or peer in session.channels:
                session.event("bridge_enter", ch, bridge=self.id, peer=peer.n if peer is not None else 0)
        self._wire()
        if len(self.members) == 2:
            for member in self.members:
                if member.held:
                    self._on_hold_change(member)

    def _wire(self) -> None:
        """The media path for the members now: the relay for two, the mixer for more."""
        legs = [m.rtp for m in self.members if m.rtp is not None and not m.is_gone]
        if len(legs) >= 2 and not self.conference:
            for leg in legs:
                self.svc.media.stop(leg)
        if len(legs) == 2 and not self.conference:
            self.svc.media.bridge(*legs)
        elif len(legs) > 2 or self.conference and legs:
            self.mixer = self.svc.media.mix(legs)

    def _unwire(self) -> None:
        if self.mixer is not None:
            self.svc.media.unmix(self.mixer)
            self.mixer = None
        elif len(self.members) == 2:
            a, b = self.members
            if a.rtp is not None and b.rtp is not None:
                self.svc.media.unbridge(a.rtp, b.rtp)

    def remove(self, ch: "Channel") -> None:
        """Take ch out (a feature moving it, or ch hanging up: then on_leave decides the rest)."""
        if ch not in self.members:
            return
        self._unwire()
        self.members.remove(ch)
        if len(self.members) >= 2:
            self._wire()
        ch.bridge = None
        ch.on_hold_change = None
        if not self.conference:
            ch.log("bridge_exit", bridge=self.id)
        for other in self.members if len(self.members) == 1 else ():
            if other.rtp is None or other.is_gone:
                continue
            if self.music_when_alone:
                moh.service(self.svc).listen(other, holder=ch)  # the class of the one who left
            else:
                moh.service(self.svc).unlisten(other)
        if ch.is_gone and self.on_leave is not None:
            self.on_leave(self, ch)

    def other(self, ch: "Channel") -> "Channel | None":
        for member in self.members:
            if member is not ch:
                return member
        return None

    def _on_hold_change(self, ch: "Channel") -> None:
        """The held party hears music, not silence; the relay comes back on resume. (With three or
        more, the others just stop hearing the one who holds.)"""
        if len(self.members) != 2 or self.conference:
            return
        other = self.other(ch)
        if other is None or other.rtp is None or other.is_gone:
            return
        if ch.held:
            moh.service(self.svc).listen(other, holder=ch)  # its route's or the holder's class
        else:
            moh.service(self.svc).unlisten(other)

    def on_dtmf(self, ch: "Channel", digit: str) -> None:
        for hook in list(self.dtmf_hooks):
            hook(ch, digit)

    def relay_digit(self, ch: "Channel", digit: str) -> None:
        """A digit that arrived out of band (SIP INFO): the other member gets it as RFC 4733."""
        other = self.other(ch)
        if other is not None and other.rtp is not None:
            other.rtp.send_dtmf(digit)

    def merge(self, other: "Bridge") -> None:
        """Bring every member of other into this bridge (two calls become one three-way call)."""
        for ch in list(other.members):
            other.remove(ch)
            self.add(ch)

    def dissolve(self) -> None:
        for ch in list(self.members):
            self.remove(ch)


def hang_up_the_rest(bridge: Bridge, left: "Channel") -> None:
    """The default: when one party of a call leaves, the call is over for the other too."""
    for other in list(bridge.members):
        bridge.remove(other)
        bridge.svc.spawn(other.hangup("normal"))
