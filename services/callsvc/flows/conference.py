"""Conference rooms: callers who dial a room's number talk together, each hearing everyone else.

The room is one Bridge in conference mode (services/callsvc/bridge.py): always the mixer, so
every member hears the sum of the others and never itself (mix-minus), a muted member's audio is
left out of the mix, and each member's call keeps its own call record (ANSWERED to the room's
number). The decisions (PIN -> role, full, what is announced, what *6 does) are
firmware/features/conference.py's; this flow asks the PIN, announces, joins, watches *6 and
marks joins and leaves with a short tone to the others. Phrases are spoken with espeak-ng at run
time (flows/speech.py), so the room needs no build step.
"""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass

import numpy as np

from firmware.features import conference as model

from .. import hooks
from ..bridge import Bridge
from ..channel import Channel
from ..media import Player
from .plan import runs
from .speech import prompt, say

log = logging.getLogger(__name__)

DIGIT_GAP = 2.0   # '*' then '6' within this time is *6


def _beeps(freqs: tuple[float, ...], note_s: float = 0.12, rate: int = 8000) -> bytes:
    """A short soft two-note tone (rising: someone joined; falling: someone left)."""
    n = int(note_s * rate)
    t = np.arange(n) / rate
    envelope = np.sin(np.pi * np.arange(n) / n)
    peak = 32767 * 10 ** (-16 / 20)
    notes = [np.sin(2 * np.pi * f * t) * envelope * peak for f in freqs]
    return np.round(np.concatenate(notes)).astype("<i2").tobytes()


JOIN_TONE = _beeps((660.0, 990.0))
LEAVE_TONE = _beeps((990.0, 660.0))


@dataclass
class Member:
    channel: Channel
    role: str
    muted: bool
    joined: float


class LiveRoom:
    """A room with people in it: its bridge and who is muted. Gone when the last one leaves."""

    def __init__(self, svc, room: model.ConferenceRoom):
        self.svc = svc
        self.room = room
        self.bridge = Bridge(svc, f"conference-{room.number}")
        self.bridge.conference = True
        self.bridge.on_leave = None            # one member leaving ends nobody else's call
        self.bridge.dtmf_hooks.append(self._on_digit)
        self.members: dict[Channel, Member] = {}
        self._last: dict[int, tuple[str, float]] = {}

    def join(self, ch: Channel, role: str) -> None:
        muted = role == model.LISTENER
        self.members[ch] = Member(ch, role, muted, time.time())
        if ch.rtp is not None:
            ch.rtp.muted = muted
        self.bridge.add(ch)
        ch.log("conference_join", room=self.room.number, role=role)
        log.info("conference %s: %s joined as %s (%d in the room)", self.room.number, ch.number, role,
                 len(self.members))
        if self.room.tones:
            self._tone(JOIN_TONE, but=ch)

    def leave(self, ch: Channel) -> None:
        if self.members.pop(ch, None) is None:
            return
        self.bridge.remove(ch)
        self._last.pop(ch.n, None)
        log.info("conference %s: %s left (%d in the room)", self.room.number, ch.number, len(self.members))
        if self.room.tones:
            self._tone(LEAVE_TONE)

    def _tone(self, pcm: bytes, but: Channel | None = None) -> None:
        for other in self.members:
            if other is not but and other.rtp is not None and not other.is_gone and other.rtp.player is None:
                self.svc.media.play(other.rtp, Player(pcm=pcm))

    def _on_digit(self, ch: Channel, digit: str) -> None:
        prev, at = self._last.get(ch.n, ("", 0.0))
        now = time.monotonic()
        self._last[ch.n] = (digit, now)
        if prev + digit == model.MUTE_KEY and now - at <= DIGIT_GAP:
            self._last.pop(ch.n, None)
            self.svc.spawn(self.toggle_mute(ch))

    async def toggle_mute(self, ch: Channel) -> None:
        member = self.members.get(ch)
        if member is None:
            return
        member.muted, words = model.toggle_mute(member.role, member.muted)
        if ch.rtp is not None:
            ch.rtp.muted = member.muted
        ch.log("conference_mute", room=self.room.number, muted=member.muted)
        log.info("conference %s: %s %s", self.room.number, ch.number, "muted" if member.muted else "unmuted")
        pcm = await say(words)
        if pcm and ch in self.members and ch.rtp is not None and not ch.is_gone:
            self.svc.media.play(ch.rtp, Player(pcm=pcm))

    def status(self) -> dict:
        return {"number": self.room.number, "name": self.room.name,
                "members": [{"number": m.channel.number, "role": m.role, "muted": m.muted, "since": m.joined}
                            for m in self.members.values()]}


_ROOMS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def rooms(svc) -> dict[str, LiveRoom]:
    """The rooms with people in them, by number (per call service)."""
    return _ROOMS.setdefault(svc, {})


async def _ask_pin(svc, caller: Channel, room: model.ConferenceRoom, extension: str) -> str | None:
    ask = await say("Please enter the conference PIN, then press hash." if room.pin else
                    "Please enter the listener PIN, or press hash to join.")
    wrong = prompt(svc, "pin_wrong")
    while not caller.digits.empty():
        caller.digits.get_nowait()     # keys pressed before the answer are no PIN
    first = None                       # a key pressed during "that PIN is not correct"
    for _ in range(model.PIN_TRIES):
        if caller.is_gone:
            return None
        if first is None and ask:
            first = await caller.play(Player(pcm=ask), stop_on_digits="0123456789#")
        entered = "" if first == "#" else (first or "") + await caller.collect(
            10, timeout=8.0, inter_digit=4.0, terminator="#")
        role = model.admit(room, entered, extension)
        if role is not None:
            return role
        log.info("conference %s: wrong PIN from %s", room.number, caller.number)
        first = None
        if wrong and not caller.is_gone:
            first = await caller.play(Player(pcm=wrong), stop_on_digits="0123456789#")
    return None


async def _say_then_hang_up(svc, caller: Channel, words: str, cause: str) -> None:
    pcm = await say(words)
    if pcm and not caller.is_gone:
        await caller.play(Player(pcm=pcm))
    await caller.hangup(cause)


@runs(model.Conference)
async def run_conference(svc, caller: Channel, step: model.Conference):
    room, session = step.room, caller.session
    live = rooms(svc).get(room.number)
    if live is not None and model.is_full(room, len(live.members)):
        # full before we even answer: the caller hears why, not a ringing that never ends
        caller.answer()
        await _say_then_hang_up(svc, caller, "This conference is full. Please try again later.", "conference full")
        return None
    caller.answer()
    session.state, session.answer = "answered", caller.answered_at
    log.info("call %d %s -> conference %s answered", session.n, session.src, room.number)
    await asyncio.sleep(0.3)   # the phone's media path settles before the first words
    if room.needs_pin:
        role = await _ask_pin(svc, caller, room, step.extension)
        if role is None:
            await _say_then_hang_up(svc, caller, "Goodbye.", "wrong pin")
            return None
    else:
        role = model.admit(room, None, step.extension)
    live = rooms(svc).get(room.number)
    others = len(live.members) if live is not None else 0
    words = []
    if room.announce_count:
        words.append(model.count_words(others))
    if role == model.LISTENER:
        words.append("You are joining as a listener.")
    if words and not caller.is_gone:
        pcm = await say(" ".join(words))
        if pcm:
            await caller.play(Player(pcm=pcm))
    if caller.is_gone:
        return None
    live = rooms(svc).get(room.number)
    if live is None:
        live = rooms(svc)[room.number] = LiveRoom(svc, room)
    if model.is_full(room, len(live.members)):   # it filled up while we announced
        await _say_then_hang_up(svc, caller, "This conference is full. Please try again later.", "conference full")
        return None
    live.join(caller, role)
    try:
        await asyncio.shield(caller.gone)
    finally:
        live.leave(caller)
        if not live.members and rooms(svc).get(room.number) is live:
            del rooms(svc)[room.number]
            live.bridge.dissolve()
    return None


def _status(svc) -> list[dict]:
    return [room.status() for room in rooms(svc).values()]


hooks.ON_STATUS["conference"] = _status   # `pbx status --json` and the Conference page
