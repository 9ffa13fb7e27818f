"""FXS port in the gateway: an analog phone that is an extension of the PBX.

Off-hook: dial tone until the first DTMF digit; digits end with '#' or 4 s without a key, then
the port INVITEs that number as its extension. The phone hears ringback on 180 (or the PBX's
early media on 183), busy or congestion when the call fails, and busy once the far end hangs up,
until it goes on-hook. An INVITE for the extension rings the phone with caller ID; off-hook
answers (200), on-hook hangs up (BYE).
"""
from __future__ import annotations

import logging
import time

from firmware.dsp.callerid import CallerId
from hw.lines.gw_line import AnalogLine
from hw.lines.gw_sip import SipCall
from services.callsvc.sip import user_of

logger = logging.getLogger(__name__)

INTERDIGIT_S = 4.0          # end of dialling without '#'
FIRST_DIGIT_S = 15.0        # off-hook with no digit at all: congestion (a receiver left off the hook)
MAX_DIGITS = 20
CID_PLAYOUT_S = 3.0         # UK caller ID before the first ring: alert + FSK + gaps take ~1.5 s
BUSY_CODES = (486, 600, 603)


class FxsLine(AnalogLine):
    kind = "fxs"

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.digits = ""
        self._timer = None
        self._early_media = False

    # --- the phone ------------------------------------------------------------------------------
    def handle_off_hook(self) -> None:
        if self.state == "ringing" and self.call is not None:
            self._answer()
            return
        if self.state != "idle":
            return
        media = self.start_media()
        if media is None:
            return
        media.play_tone("dial")
        self.digits = ""
        self.state = "dialing"
        self._arm(FIRST_DIGIT_S)
        logger.info("line %d (%s): off-hook, dial tone", self.number, self.account.user)

    def handle_digit(self, digit: str) -> None:
        if self.state != "dialing":
            return                    # in a call the digits travel in the audio itself
        if not self.digits:
            self.media.play_tone(None)
        if digit == "#":
            self._dial()
            return
        self.digits += digit
        if len(self.digits) >= MAX_DIGITS:
            self._dial()
        else:
            self._arm(INTERDIGIT_S)

    def handle_on_hook(self) -> None:
        self._disarm()
        if self.state == "idle":
            return
        logger.info("line %d (%s): on-hook in state %s", self.number, self.account.user, self.state)
        self.end_call()
        self.stop_media()
        self.state = "idle"

    # --- dialling out ---------------------------------------------------------------------------
    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.gw.loop.call_later(seconds, self._dial)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _dial(self) -> None:
        self._disarm()
        if self.state != "dialing":
            return
        if not self.digits:
            logger.info("line %d (%s): no digits dialled; congestion", self.number, self.account.user)
            self._fail("congestion")
            return
        number = self.digits
        self.state = "calling"
        self.calls += 1
        self._early_media = False
        call = self.gw.ua.new_call(self.account)
        call.on_progress = self._progress
        call.on_bye = self._far_end_hung_up
        self.call = call
        logger.info("line %d (%s): dialling %s", self.number, self.account.user, number)
        self.gw.loop.create_task(self._place(call, number))

    async def _place(self, call: SipCall, number: str) -> None:
        resp = await call.dial(number, self.offer())
        if call is not self.call:
            return                                  # the phone hung up meanwhile
        if 200 <= resp.status_code < 300:
            if self.apply_sdp(resp.body) is None:
                await call.hangup()
                self._fail("congestion")
                return
            self.media.connect()
            self.state = "talking"
            logger.info("line %d (%s): %s answered", self.number, self.account.user, number)
            return
        self.call = None
        logger.info("line %d (%s): call to %s failed: %d %s", self.number, self.account.user, number,
                    resp.status_code, resp.reason_phrase)
        self._fail("busy" if resp.status_code in BUSY_CODES else "congestion")

    def _progress(self, resp) -> None:
        if self.state != "calling" or self.media is None:
            return
        if resp.body and self.apply_sdp(resp.body) is not None:
            self._early_media = True                # the PBX plays what the caller should hear
            self.media.connect()
        elif resp.status_code == 180 and not self._early_media:
            self.media.play_tone("ringback")

    def _fail(self, tone_name: str) -> None:
        self.state = "released"
        if self.media is not None:
            self.media.set_remote(None)
            self.media.play_tone(tone_name)

    def _far_end_hung_up(self) -> None:
        logger.info("line %d (%s): the far end hung up", self.number, self.account.user)
        self.call = None
        self._fail("busy")

    # --- calls in -------------------------------------------------------------------------------
    def incoming(self, call: SipCall) -> None:
        port = self.port
        if port is None or not self.gw.board.connected:
            call.reject(480, "Temporarily Unavailable (line board not connected)")
            return
        if self.state != "idle" or port.state == "offhook":
            call.reject(486)
            return
        self.state = "ringing"
        self.calls += 1
        self.call = call
        call.on_cancel = self._caller_gave_up
        call.on_bye = self._far_end_hung_up
        call.ringing()
        cid = caller_id_of(call.invite.headers.get_first("from"))
        logger.info("line %d (%s): ringing, caller ID %s %s", self.number, self.account.user,
                    cid.number or "-", cid.name or "")
        self.board(port.ring, None, cid)

    def _answer(self) -> None:
        call = self.call
        media = self.start_media()
        if media is None:
            call.reject(480, "Temporarily Unavailable (line audio failed)")
            self.call = None
            self.state = "released"
            return
        codec = self.apply_sdp(call.invite.body)
        if codec is None:
            call.reject(488)
            self.call = None
            self._fail("congestion")
            return
        call.answer(self.answer_body(codec))
        media.connect()
        self.state = "talking"
        logger.info("line %d (%s): answered (%s)", self.number, self.account.user, codec)

    def _caller_gave_up(self) -> None:
        logger.info("line %d (%s): caller gave up; ringing stops", self.number, self.account.user)
        self.call = None
        self.state = "idle"
        port = self.port
        if port is not None:
            self.board(port.stop_ring)
            # A UK ring starts only after the caller ID FSK: if the caller left while it played,
            # the ring command comes after this stop. Check again once the FSK is surely over.
            self.gw.loop.call_later(CID_PLAYOUT_S, self._stop_stray_ring)

    def _stop_stray_ring(self) -> None:
        port = self.port
        if self.state == "idle" and port is not None and port.state == "ringing":
            logger.info("line %d (%s): ringing began after the caller left; stopping it", self.number,
                        self.account.user)
            self.board(port.stop_ring)


def caller_id_of(from_header: str) -> CallerId:
    """What the analog phone's display shows: the number (a display name made of digits is the
    number, e.g. a PSTN caller passed on by an FXO line) and the name, if any."""
    display = from_header.split("<", 1)[0].strip().strip('"').strip() if "<" in from_header else ""
    user = user_of(from_header)
    dialable = display.lstrip("+").isdigit()
    number = _printable(display if dialable else user, 20)
    name = _printable(display, 32) if display and not dialable else None
    when = time.strftime("%m%d%H%M")
    return CallerId(number=number or None, name=name or None, when=when,
                    number_absent=None if number else "O")


def _printable(text: str, limit: int) -> str:
    return "".join(c for c in text if 32 <= ord(c) < 127)[:limit]
