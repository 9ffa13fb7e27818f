"""Transfers: blind and attended, by REFER (RFC 3515, Replaces RFC 3891) and by in-call codes.

The party who transfers is the transferrer; the one it was talking to, the transferee.
- Blind (REFER without Replaces, or `##` then the number): the transferrer leaves; the transferee
  hears ringing while the target rings, and is bridged to it on answer. If the target fails, the
  transferee goes back to the transferrer when it is still there, else hears why and is hung up.
- Attended by REFER with Replaces: the transferrer has a second call with the target; the
  transferee and the target are bridged, the transferrer's two calls end.
- Attended by `*2` then the number (for phones without a transfer key, as Asterisk's atxfer): the
  transferee hears music, the transferrer talks to the target; when the transferrer hangs up the
  transferee and the target are joined; a target that fails or hangs up first returns the
  transferee to the transferrer.
Progress of a REFER goes back as NOTIFY with a message/sipfrag body ("SIP/2.0 200 OK").
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import unquote

from firmware.dsp.tones import ToneGenerator, tone

from ..bridge import Bridge, hang_up_the_rest
from ..channel import Channel
from ..dial import DialResult, Outcome, Target, dial
from ..media import Player
from ..sip import REASONS, uri_of, user_of

log = logging.getLogger(__name__)

# Features that take a blind-transferred call themselves instead of ringing a phone (parking's
# 700): hook(svc, number) -> None, or `async take(transferee, transferrer) -> DialResult` (ANSWERED
# when the feature has the call; anything else sends the transferee back as a failed transfer).
BLIND_TRANSFER_TAKERS: list = []

CODE_TIMEOUT = 2.0        # `##` / `*2`: both digits within this time
DIGITS_FIRST = 6.0        # the first digit of the target number within this time
DIGITS_NEXT = 3.0


def parse_refer_to(value: str) -> tuple[str, dict[str, str] | None]:
    """(target number, Replaces parts or None) from a Refer-To header value."""
    uri = uri_of(value)
    number = user_of(uri)
    replaces = None
    if "?" in uri:
        headers = uri.split("?", 1)[1]
        for part in headers.split("&"):
            name, _, raw = part.partition("=")
            if name.lower() == "replaces":
                fields = unquote(raw).split(";")
                replaces = {"call_id": fields[0]}
                for field in fields[1:]:
                    key, _, val = field.partition("=")
                    replaces[key.strip().lower()] = val.strip()
    return number, replaces


def notify_sipfrag(ch: Channel, status: int, final: bool) -> None:
    """Tell the transferrer how the transfer goes (RFC 3515 section 2.4.4)."""
    if ch.is_gone or not ch.confirmed:
        return
    body = f"SIP/2.0 {status} {REASONS.get(status, 'Unknown')}\r\n".encode()
    req = ch.in_dialog("NOTIFY", extra=[
        ("Event", "refer"),
        ("Subscription-State", "terminated;reason=noresource" if final else "active;expires=60")])
    req.headers.append("Content-Type", "message/sipfrag;version=2.0")
    req.body = body
    ch.svc.endpoint.request(req)


def on_refer(svc, ch: Channel, req, tx) -> None:
    """A REFER in an answered, bridged call: accept it (202) and run the transfer."""
    bridge = ch.bridge
    refer_to = req.headers.get_first("refer-to")
    if ch.state != "up" or bridge is None or bridge.other(ch) is None or not refer_to:
        ch._respond(tx, 603 if refer_to else 400,
                    reason="Decline (nothing to transfer)" if refer_to else "Bad Request (no Refer-To)")
        return
    number, replaces = parse_refer_to(refer_to)
    if replaces is not None:
        other_leg = svc.channels.get(replaces["call_id"])
        if other_leg is None or other_leg.is_gone or other_leg.bridge is None:
            ch._respond(tx, 481, reason="Call/Transaction Does Not Exist (Replaces)")
            return
    elif not number:
        ch._respond(tx, 400, reason="Bad Request (Refer-To names no number)")
        return
    ch._respond(tx, 202)
    notify_sipfrag(ch, 100, final=False)
    if replaces is not None:
        svc.spawn(attended_by_replaces(svc, ch, other_leg))
    else:
        svc.spawn(blind(svc, ch, number, refer=True))


def _event(ch: Channel, what: str, /, **data) -> None:
    ch.log(what, **data)
    log.info("call %s: %s %s", ch.session.n, what, " ".join(f"{k}={v}" for k, v in data.items()))


async def blind(svc, transferrer: Channel, number: str, *, refer: bool) -> None:
    bridge = transferrer.bridge
    transferee = bridge.other(transferrer) if bridge is not None else None
    if transferee is None:
        return
    _event(transferrer, "blind_transfer", transferee=transferee.n, number=number)
    bridge.on_leave = None            # the transferrer leaving no longer ends the call
    bridge.remove(transferrer)
    take = next((t for t in (hook(svc, number) for hook in BLIND_TRANSFER_TAKERS) if t is not None), None)
    result = await (take(transferee, transferrer) if take is not None else _ring_for(svc, transferee, number))
    if result.outcome is Outcome.ANSWERED:
        if result.channel is not None:
            _join(svc, transferee, result.channel)
        if refer:
            notify_sipfrag(transferrer, 200, final=True)
            # a phone that transferred usually hangs up on the NOTIFY; if it does not, we do
            await asyncio.sleep(2)
        await transferrer.hangup("transferred")
        return
    if refer:
        notify_sipfrag(transferrer, result.status or 480, final=True)
    await _back_or_fail(svc, transferee, transferrer, bridge, result)


async def attended_by_replaces(svc, transferrer: Channel, replaced: Channel) -> None:
    """transferrer's call: bridged with the transferee; replaced: its other call, bridged with the target."""
    transferee = transferrer.bridge.other(transferrer)
    target = replaced.bridge.other(replaced) if replaced.bridge is not None else None
    if transferee is None or target is None:
        notify_sipfrag(transferrer, 481, final=True)
        return
    _event(transferrer, "attended_transfer", transferee=transferee.n, target=target.n)
    for leg in (transferrer, replaced):
        leg.bridge.on_leave = None
        leg.bridge.remove(leg)
    _join(svc, transferee, target)
    notify_sipfrag(transferrer, 200, final=True)
    await asyncio.sleep(2)
    await asyncio.gather(transferrer.hangup("transferred"), replaced.hangup("transferred"))


async def attended_by_code(svc, transferrer: Channel, number: str) -> None:
    """`*2`: the transferee on music; the transferrer consults the target, then hangs up to join them."""
    bridge = transferrer.bridge
    transferee = bridge.other(transferrer) if bridge is not None else None
    if transferee is None:
        return
    _event(transferrer, "attended_transfer_start", transferee=transferee.n, number=number)
    bridge.on_leave = None
    bridge.music_when_alone = True
    bridge.remove(transferrer)
    result = await _ring_for(svc, transferrer, number)
    if result.outcome is not Outcome.ANSWERED:
        await _back_or_fail(svc, transferee, transferrer, bridge, result)
        return
    target = result.channel
    consult = Bridge(svc, "consultation")
    consult.on_leave = None  # who leaves first decides what happens: below
    consult.add(transferrer)
    consult.add(target)
    await asyncio.wait([asyncio.ensure_future(asyncio.shield(c.gone)) for c in (transferrer, target, transferee)],
                       return_when=asyncio.FIRST_COMPLETED)
    if transferrer.is_gone and not target.is_gone and not transferee.is_gone:
        # the transferrer hung up: the two it was connecting talk to each other
        _event(transferrer, "attended_transfer", transferee=transferee.n, target=target.n)
        consult.remove(target)
        bridge.remove(transferee)
        _join(svc, transferee, target)
    elif target.is_gone and not transferrer.is_gone and not transferee.is_gone:
        consult.remove(transferrer)
        _rejoin(svc, bridge, transferee, transferrer, "target hung up")
    else:
        # the waiting party gave up (or two left at once): what is left is an ordinary call
        consult.on_leave = hang_up_the_rest
        for ch in (transferrer, target):
            if ch.is_gone:
                hang_up_the_rest(consult, ch)
        consult.dtmf_hooks.append(svc.in_call_codes)


async def _ring_for(svc, party: Channel, number: str):
    """Ring number on behalf of party (who is already answered: it hears ringing from us)."""
    if svc.extension(number) is None:
        return DialResult(Outcome.UNAVAILABLE, status=404)
    uri = f"sip:{number}@{svc.edge[0]}:{svc.edge[1]}"
    playing_ringback = party.rtp is not None and party.rtp.player is None
    if playing_ringback:
        svc.media.play(party.rtp, Player(tone=ToneGenerator(tone(svc.settings.country, "ringback"))))
    try:
        return await dial(svc, party.session, party, [Target(uri, number, caller_number=party.number,
                                                            caller_name=party.name)],
                          timeout=svc.settings.no_answer_timeout, early_media=False)
    finally:
        if playing_ringback and party.rtp is not None:
            svc.media.stop(party.rtp)


def _join(svc, a: Channel, b: Channel) -> None:
    bridge = Bridge(svc, "transferred")
    bridge.add(a)
    bridge.add(b)
    bridge.dtmf_hooks.append(svc.in_call_codes)


def _rejoin(svc, bridge: Bridge, transferee: Channel, transferrer: Channel, why: str = "") -> None:
    bridge.music_when_alone = False
    if transferee.rtp is not None:
        svc.media.stop(transferee.rtp)
    bridge.add(transferrer)
    bridge.on_leave = hang_up_the_rest
    _event(transferrer, "transfer_failed_back", transferee=transferee.n, why=why)


async def _back_or_fail(svc, transferee: Channel, transferrer: Channel, bridge: Bridge, result) -> None:
    if not transferrer.is_gone and not transferee.is_gone:
        _rejoin(svc, bridge, transferee, transferrer, f"{result.outcome.value} {result.status}")
        return
    if transferee.is_gone:
        return
    name = "busy" if result.outcome is Outcome.BUSY else "congestion"
    await transferee.play(Player(tone=ToneGenerator(tone(svc.settings.country, name)),
                                 seconds=max(svc.settings.busy_tone_seconds, 1)))
    await transferee.hangup("transfer failed")


class InCallCodes:
    """Watches a bridged party's digits for `##` (blind) and `*2` (attended) transfer codes, and
    `*1` (record the call on demand)."""

    def __init__(self, svc):
        self.svc = svc
        self.last: dict[int, tuple[str, float]] = {}
        self.busy: set[int] = set()

    def __call__(self, ch: Channel, digit: str) -> None:
        if ch.n in self.busy:
            return
        prev, at = self.last.get(ch.n, ("", 0.0))
        now = time.monotonic()
        self.last[ch.n] = (digit, now)
        code = prev + digit if now - at <= CODE_TIMEOUT else digit
        if code == "*1":                 # on-demand recording (flows/recording.py)
            self.last.pop(ch.n, None)
            from .recording import toggle
            toggle(self.svc, ch)
            return
        if code in ("##", "*2"):
            self.last.pop(ch.n, None)
            self.busy.add(ch.n)
            self.svc.spawn(self._run(ch, code))

    async def _run(self, ch: Channel, code: str) -> None:
        try:
            bridge = ch.bridge
            other = bridge.other(ch) if bridge is not None else None
            if other is None:
                return
            # the transferee waits on music while the transferrer dials
            bridge.on_leave = None
            bridge.music_when_alone = True
            bridge.remove(ch)
            while not ch.digits.empty():
                ch.digits.get_nowait()
            number = await ch.collect(20, timeout=DIGITS_FIRST, inter_digit=DIGITS_NEXT, terminator="#")
            bridge.add(ch)
            bridge.on_leave = hang_up_the_rest
            bridge.music_when_alone = False
            if ch.is_gone or other.is_gone:
                return
            if not number:
                return  # nothing dialled: back to the call
            if code == "##":
                await blind(self.svc, ch, number, refer=False)
            else:
                await attended_by_code(self.svc, ch, number)
        finally:
            self.busy.discard(ch.n)
