"""FXO port in the gateway: a PSTN line whose incoming calls ring an extension.

Ringing is detected on the line and the caller ID decoded from it (UK: before the first ring;
US: after it). Once the caller ID is known - or at the second ring without one - the port
INVITEs its destination extension as the line's account, with the caller's number as the From
display name (the call service copies it to the callee, so the SIP phone shows it). The line is
seized only when the extension answers, as an ATA's FXO port does: an unanswered call costs the
caller nothing and the exchange's own ringback goes on. The far end hanging up (loop-current drop
or busy tone) sends BYE; a BYE from the PBX releases the line. If the caller gives up before the
answer, ringing stops: after RING_GAP_S without a burst the INVITE is cancelled.
"""
from __future__ import annotations

import logging
import time

from firmware.dsp.callerid import PRIVATE, CallerId
from hw.lines.gw_line import AnalogLine
from hw.lines.gw_sip import SipCall

logger = logging.getLogger(__name__)

RING_GAP_S = 6.0           # longer than any off period of a cadence (US 4 s): the caller has gone
CID_FRESH_S = 10.0         # a UK caller ID arrives up to a few seconds before the first ring


class FxoLine(AnalogLine):
    kind = "fxo"

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.cid: CallerId | None = None
        self._cid_at = 0.0
        self._rings = 0
        self._last_ring = 0.0
        self._watch = None

    # --- the line -------------------------------------------------------------------------------
    def handle_polarity_reversal(self) -> None:
        if self.state == "idle":
            self.cid = None                         # UK: a new call announces itself this way

    def handle_caller_id(self, cid: CallerId) -> None:
        self.cid, self._cid_at = cid, time.monotonic()
        logger.info("line %d (%s): caller ID %s", self.number, self.account.user,
                    cid.number or cid.number_absent or "-")
        if self.state == "alerting":
            self._invite()

    def handle_ring_start(self) -> None:
        self._last_ring = time.monotonic()
        if self.state == "idle":
            self.state = "alerting"
            self._rings = 1
            self._watch_ringing()
            fresh = self.cid is not None and time.monotonic() - self._cid_at < CID_FRESH_S
            if not fresh:
                self.cid = None
            if fresh:
                self._invite()
            return
        if self.state == "alerting":
            self._rings += 1
            if self._rings >= 2:
                self._invite()                      # no caller ID came: present the call anyway

    def handle_ring_stop(self) -> None:
        self._last_ring = time.monotonic()

    def handle_disconnect(self, how: str) -> None:
        if self.state != "talking":
            return
        logger.info("line %d (%s): far end hung up (%s)", self.number, self.account.user,
                    {"loop": "loop current dropped", "busy": "busy tone"}.get(how, how))
        self._release()

    # --- the call to the destination --------------------------------------------------------------
    def _invite(self) -> None:
        media = self.start_media()
        if media is None:
            self.state = "refused"
            return
        self.state = "calling"
        self.calls += 1
        call = self.gw.ua.new_call(self.account)
        call.on_bye = self._pbx_hung_up
        self.call = call
        display = shown_caller(self.cid)
        logger.info("line %d (%s): incoming PSTN call from %s -> extension %s", self.number,
                    self.account.user, display or "unknown", self.cfg.destination)
        self.gw.loop.create_task(self._place(call, display))

    async def _place(self, call: SipCall, display: str | None) -> None:
        resp = await call.dial(self.cfg.destination, self.offer(), display=display)
        if call is not self.call:
            return                                  # the caller gave up meanwhile
        if 200 <= resp.status_code < 300 and self.apply_sdp(resp.body) is not None:
            port = self.port
            if port is not None:
                self.board(port.seize)
            self.media.connect()
            self.state = "talking"
            logger.info("line %d (%s): extension %s answered; line seized", self.number, self.account.user,
                        self.cfg.destination)
            return
        if 200 <= resp.status_code < 300:
            await call.hangup()
        logger.info("line %d (%s): extension %s did not take the call: %d %s", self.number, self.account.user,
                    self.cfg.destination, resp.status_code, resp.reason_phrase)
        # The exchange rings the caller until they give up; the watcher then returns us to idle.
        self.call = None
        self.stop_media()
        self.state = "refused"

    def _pbx_hung_up(self) -> None:
        logger.info("line %d (%s): extension hung up; releasing the line", self.number, self.account.user)
        self.call = None
        self._release()

    def _release(self) -> None:
        self.end_call()
        self.stop_media()
        port = self.port
        if port is not None and port.state == "seized":
            self.board(port.release)
        self.state = "idle"
        self.cid = None

    def _watch_ringing(self) -> None:
        self._watch = None
        if self.state not in ("alerting", "calling", "refused"):
            return
        if time.monotonic() - self._last_ring > RING_GAP_S:
            logger.info("line %d (%s): ringing stopped: the caller gave up", self.number, self.account.user)
            self.end_call()
            self.stop_media()
            self.state = "idle"
            self.cid = None
            return
        self._watch = self.gw.loop.call_later(1.0, self._watch_ringing)

    def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self.state == "talking":
            self._release()
        super().close()


def shown_caller(cid: CallerId | None) -> str | None:
    """The From display name for the caller: the number, else why it is missing."""
    if cid is None:
        return None
    if cid.number:
        return cid.number
    if cid.number_absent:
        return "Private" if cid.number_absent == PRIVATE else "Unavailable"
    return cid.name
