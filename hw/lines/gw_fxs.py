"""FXS port in the gateway: an analog phone that is an extension of the PBX.

Off-hook: dial tone until the first DTMF digit; digits end with '#' or 4 s without a key, then
the port INVITEs that number as its extension. The phone hears ringback on 180 (or the PBX's
early media on 183), busy or congestion when the call fails, and busy once the far end hangs up,
until it goes on-hook. An INVITE for the extension rings the phone with caller ID; off-hook
answers (200), on-hook hangs up (BYE). Digits keyed during a call go out as RFC 4733 events
(gw_media.py).

Flash-hook (decision 007, "Flash-hook and transfer"), as an ATA does it:
- flash in a call: the call is held (re-INVITE sendonly; the PBX plays music to the other party)
  and the phone hears dial tone ("held");
- flash again before a number is complete: back to the held call (re-INVITE sendrecv);
- a number dialled: a second call to it ("consult_calling", then "consulting" once answered);
- on-hook (or flash) during the second call: transfer. The target still ringing: blind, REFER
  to the number on the held call and CANCEL of the second call; the target answered: attended,
  REFER with Replaces naming the second call. After a flash the phone hears dial tone again;
- the second call fails or its far end hangs up: busy/congestion tone ("consult_failed"); a
  flash returns to the held call;
- on-hook with only the held call (or after a failed transfer): the phone rings ("recall") and
  picking up returns to the held call.
"""
from __future__ import annotations

import asyncio
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
# After a REFER is accepted: how long to wait for its final NOTIFY before leaving the transfer to
# the PBX. Attended: the PBX joins the two at once. Blind: the target may ring for long, and an
# ATA's blind transfer is fire-and-forget.
TRANSFER_WAIT_S = {"attended": 5.0, "blind": 1.0}
RECALL_S = 60.0             # a held call rings the phone back this long, then it is hung up
HELD_STATES = ("held", "consult_calling", "consulting", "consult_failed")


class FxsLine(AnalogLine):
    kind = "fxs"

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.digits = ""
        self._timer = None
        self._early_media = False
        self.consult: SipCall | None = None       # the second call of a flash-hook transfer
        self._consult_number = ""
        self._recall_timer = None

    def describe(self) -> dict:
        info = super().describe()
        media = self.media
        info["dtmf_sent"] = media.digits_sent if media is not None else ""
        return info

    # --- the phone ------------------------------------------------------------------------------
    def handle_off_hook(self) -> None:
        if self.state == "ringing" and self.call is not None:
            self._answer()
            return
        if self.state == "recall":
            self._answer_recall()
            return
        if self.state != "idle":
            return
        self._dial_tone()
        logger.info("line %d (%s): off-hook, dial tone", self.number, self.account.user)

    def _dial_tone(self) -> None:
        media = self.start_media()
        if media is None:
            return
        media.set_remote(None)
        media.play_tone("dial")
        self.digits = ""
        self.state = "dialing"
        self._arm(FIRST_DIGIT_S)

    def handle_digit(self, digit: str) -> None:
        if self.state not in ("dialing", "held"):
            return                    # in a call the media thread sends digits as RFC 4733 events
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

    def handle_flash(self) -> None:
        state = self.state
        logger.info("line %d (%s): flash in state %s", self.number, self.account.user, state)
        if state == "talking" and self.call is not None and self.call.state == "confirmed":
            self._hold()
        elif state in ("held", "consult_failed"):
            self._disarm()
            self._drop_consult()
            self._resume()
        elif state in ("consult_calling", "consulting"):
            self._transfer(on_hook=False)

    def handle_on_hook(self) -> None:
        self._disarm()
        if self.state == "idle":
            return
        logger.info("line %d (%s): on-hook in state %s", self.number, self.account.user, self.state)
        if self.state in ("consult_calling", "consulting") and self.call is not None:
            self._transfer(on_hook=True)
            return
        if self.state in ("held", "consult_failed") and self.call is not None:
            self._drop_consult()
            self.stop_media()
            self._recall()
            return
        if self.state in ("transferring", "recall"):
            return
        self._drop_consult()
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
        if self.state == "held":
            self._dial_consult()
            return
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
        call.on_bye = lambda: self._bye_from(call)
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
        if self.state not in ("calling", "consult_calling") or self.media is None:
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

    def _bye_from(self, call: SipCall) -> None:
        """A BYE from the PBX on one of this port's calls."""
        if call is self.consult:
            self.consult = None
            if self.state == "consulting":
                logger.info("line %d (%s): the consulted party hung up", self.number, self.account.user)
                self._consult_failed("busy")
            return
        if call is not self.call:
            return
        if self.state in HELD_STATES or self.state in ("recall", "transferring"):
            logger.info("line %d (%s): the held party hung up", self.number, self.account.user)
            self.call = None
            if self.state == "recall":
                self._stop_recall()
            elif self.state in ("consult_calling", "consulting"):
                # what is left is an ordinary call with the second party
                self.call, self.consult = self.consult, None
                self.state = "calling" if self.state == "consult_calling" else "talking"
            elif self.state == "consult_failed":
                self._fail("busy")
            return                                   # "held": the phone keeps its dial tone
        self._far_end_hung_up()

    # --- flash-hook: hold, consult, transfer, recall ---------------------------------------------
    def _hold(self) -> None:
        call = self.call
        logger.info("line %d (%s): flash: the call is held, dial tone", self.number, self.account.user)
        self.state = "held"
        self.digits = ""
        self.media.set_remote(None)
        self.media.play_tone("dial")
        self.gw.loop.create_task(self._offer_direction(call, "sendonly"))

    def _resume(self) -> None:
        call = self.call
        if call is None:
            self._dial_tone()
            return
        logger.info("line %d (%s): back to the held call", self.number, self.account.user)
        self.state = "talking"
        self.media.play_tone(None)
        self.gw.loop.create_task(self._offer_direction(call, "sendrecv"))

    async def _offer_direction(self, call: SipCall, direction: str) -> None:
        resp = await call.reinvite(self.offer(direction))
        if resp is None or not 200 <= resp.status_code < 300:
            logger.warning("line %d (%s): %s re-INVITE failed: %s", self.number, self.account.user,
                           "hold" if direction == "sendonly" else "resume",
                           f"{resp.status_code} {resp.reason_phrase}" if resp is not None else "call not up")
            return
        if direction == "sendrecv" and call is self.call and self.state == "talking" and self.media is not None:
            if self.apply_sdp(resp.body) is not None:
                self.media.connect()

    def _dial_consult(self) -> None:
        if not self.digits:
            self._resume()
            return
        number, self.digits = self.digits, ""
        self.state = "consult_calling"
        self._early_media = False
        self._consult_number = number
        consult = self.gw.ua.new_call(self.account)
        consult.on_progress = self._progress
        consult.on_bye = lambda: self._bye_from(consult)
        self.consult = consult
        logger.info("line %d (%s): consultation call to %s", self.number, self.account.user, number)
        self.gw.loop.create_task(self._place_consult(consult, number))

    async def _place_consult(self, consult: SipCall, number: str) -> None:
        resp = await consult.dial(number, self.offer())
        if consult is self.call and self.state == "calling":
            # the held party left while this rang: it is now the port's only call
            if 200 <= resp.status_code < 300 and self.apply_sdp(resp.body) is not None:
                self.media.connect()
                self.state = "talking"
            elif 200 <= resp.status_code < 300:
                await consult.hangup()
                self._fail("congestion")
            else:
                self.call = None
                self._fail("busy" if resp.status_code in BUSY_CODES else "congestion")
            return
        if consult is not self.consult:
            if 200 <= resp.status_code < 300 and self.state != "transferring":
                await consult.hangup()                 # dropped while it was answered
            return
        if 200 <= resp.status_code < 300 and self.apply_sdp(resp.body) is not None:
            self.media.connect()
            self.state = "consulting"
            logger.info("line %d (%s): %s answered the consultation call", self.number, self.account.user, number)
            return
        if 200 <= resp.status_code < 300:
            await consult.hangup()
        self.consult = None
        logger.info("line %d (%s): consultation call to %s failed: %d %s", self.number, self.account.user, number,
                    resp.status_code, resp.reason_phrase)
        self._consult_failed("busy" if resp.status_code in BUSY_CODES else "congestion")

    def _consult_failed(self, tone_name: str) -> None:
        self.state = "consult_failed"
        if self.media is not None:
            self.media.set_remote(None)
            self.media.play_tone(tone_name)

    def _drop_consult(self) -> None:
        consult, self.consult = self.consult, None
        if consult is not None:
            asyncio.ensure_future(consult.hangup())

    def _transfer(self, on_hook: bool) -> None:
        call, consult = self.call, self.consult
        attended = consult is not None and consult.state == "confirmed"
        number = self._consult_number
        domain = self.gw.ua.domain
        if attended:
            refer_to = f"<sip:{user_of(consult.dialog.remote) or number}@{domain}?Replaces={consult.replaces()}>"
        else:
            refer_to = f"<sip:{number}@{domain}>"
        kind = "attended" if attended else "blind"
        logger.info("line %d (%s): %s: %s transfer of the held call to %s", self.number, self.account.user,
                    "on-hook" if on_hook else "flash", kind, number)
        self.state = "transferring"
        if on_hook:
            self.stop_media()
        else:
            self.media.set_remote(None)
            self.media.play_tone(None)
        self.gw.loop.create_task(self._refer(call, consult, refer_to, kind, on_hook))

    async def _refer(self, call: SipCall, consult: SipCall | None, refer_to: str, kind: str, on_hook: bool) -> None:
        final: asyncio.Future = self.gw.loop.create_future()

        def on_notify(req) -> None:
            state = (req.headers.get_first("subscription-state") or "").lower()
            body = req.body.decode("utf-8", "replace") if req.body else ""
            parts = body.split()
            status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            if (state.startswith("terminated") or status >= 200) and not final.done():
                final.set_result(status)
        call.on_notify = on_notify
        resp = await call.refer(refer_to)
        ok = resp is not None and 200 <= resp.status_code < 300
        if kind == "blind" and consult is not None:
            consult.cancel()                         # the PBX rings the target again for the held party
            self.consult = None
        status = 0
        if ok:
            try:
                status = await asyncio.wait_for(asyncio.shield(final), TRANSFER_WAIT_S[kind])
            except asyncio.TimeoutError:
                status = 202                         # accepted and under way: the PBX carries it on
        logger.info("line %d (%s): %s transfer %s (%s)", self.number, self.account.user, kind,
                    "done" if ok and status < 300 else "failed",
                    f"REFER {resp.status_code}, NOTIFY {status}" if resp is not None else "call gone")
        if self.state != "transferring":
            return
        if ok and status < 300:
            # our part is over: the PBX hangs up our two legs too; do it ourselves if it has not
            for leg in (call, consult):
                if leg is not None:
                    await leg.hangup()
            if self.call is call:
                self.call = None
            self.consult = None
            if on_hook:
                self.stop_media()
                self.state = "idle"
            else:
                self._dial_tone()
            return
        # refused or failed: the held call comes back to the phone
        self._drop_consult()
        if self.call is None:
            if on_hook:
                self.stop_media()
                self.state = "idle"
            else:
                self._fail("busy")
            return
        if on_hook:
            self._recall()
        else:
            self._resume()

    def _recall(self) -> None:
        """The phone hung up with a call on hold: ring it; picking up returns to the held call."""
        port = self.port
        self.state = "recall"
        logger.info("line %d (%s): a call is on hold: ringing the phone back", self.number, self.account.user)
        if port is not None:
            self.board(port.ring, None, None)
        self._recall_timer = self.gw.loop.call_later(RECALL_S, self._recall_timeout)

    def _stop_recall(self) -> None:
        if self._recall_timer is not None:
            self._recall_timer.cancel()
            self._recall_timer = None
        port = self.port
        if port is not None and port.state == "ringing":
            self.board(port.stop_ring)
        self.state = "idle"

    def _recall_timeout(self) -> None:
        self._recall_timer = None
        if self.state == "recall":
            logger.info("line %d (%s): nobody took the held call back; hanging it up", self.number,
                        self.account.user)
            self.end_call()
            self._stop_recall()

    def _answer_recall(self) -> None:
        if self._recall_timer is not None:
            self._recall_timer.cancel()
            self._recall_timer = None
        if self.start_media() is None or self.call is None:
            self.state = "idle"
            return
        self._resume()

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
        call.on_bye = lambda: self._bye_from(call)
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

    def close(self) -> None:
        self._disarm()
        self._drop_consult()
        if self._recall_timer is not None:
            self._recall_timer.cancel()
            self._recall_timer = None
        super().close()


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
