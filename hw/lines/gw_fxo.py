"""FXO port in the gateway: a PSTN line whose incoming calls ring an extension.

Ringing is detected on the line and the caller ID decoded from it (UK: before the first ring;
US: after it). Once the caller ID is known - or at the second ring without one - the port
INVITEs its destination extension as the line's account, with the caller's number as the From
display name (the call service copies it to the callee, so the SIP phone shows it). The line is
seized only when the extension answers, as an ATA's FXO port does: an unanswered call costs the
caller nothing and the exchange's own ringback goes on. The far end hanging up (loop-current drop
or busy tone) sends BYE; a BYE from the PBX releases the line. If the caller gives up before the
answer, ringing stops: after RING_GAP_S without a burst the INVITE is cancelled.

Calls out (decision 007, "Calls out on an FXO line"): the PBX INVITEs the line's account with
`X-PBX-Dial: <number>`. The port seizes the line, waits for the exchange's dial tone, dials
(DTMF tones, or pulses by the board), then sends 183 with SDP so the caller hears the exchange
(ringback, announcements), and answers (200) once the number is dialled - or, with
`answer: reversal`, when the exchange reverses the line polarity.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time

from firmware.dsp.callerid import PRIVATE, CallerId
from firmware.dsp.detect import dtmf_samples, tone_present
from firmware.dsp.tones import tone
from hw.lines.gw_line import AnalogLine
from hw.lines.gw_sip import SipCall

logger = logging.getLogger(__name__)

RING_GAP_S = 6.0           # longer than any off period of a cadence (US 4 s): the caller has gone
CID_FRESH_S = 10.0         # a UK caller ID arrives up to a few seconds before the first ring
DIAL_HEADER = "X-PBX-Dial"  # the number an INVITE from the PBX wants dialled on the line
DIALTONE_WAIT_S = 5.0       # seized without dial tone this long: the line is dead or in use
DIALTONE_FRAMES = 10        # 200 ms of steady dial tone before the first digit
DTMF_DIAL_MS = (100, 100)   # tone and pause per digit (ITU-T Q.23 asks >= 40 ms each)
_DIALLABLE = {"dtmf": re.compile(r"^[0-9*#]{1,32}$"), "pulse": re.compile(r"^[0-9]{1,32}$")}
OUT_STATES = ("seizing", "dialling", "ringing_out")


class FxoLine(AnalogLine):
    kind = "fxo"

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.cid: CallerId | None = None
        self._cid_at = 0.0
        self._rings = 0
        self._last_ring = 0.0
        self._watch = None
        self._answer_sdp = b""

    # --- the line -------------------------------------------------------------------------------
    def handle_polarity_reversal(self) -> None:
        if self.state == "idle":
            self.cid = None                         # UK: a new call announces itself this way
        elif self.state == "ringing_out":
            logger.info("line %d (%s): polarity reversal: the called party answered", self.number,
                        self.account.user)
            self._answer_out()

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
        if self.state in OUT_STATES:
            logger.info("line %d (%s): call out failed: %s", self.number, self.account.user,
                        {"loop": "loop current dropped", "busy": "busy tone"}.get(how, how))
            call, self.call = self.call, None
            if call is not None:
                call.reject(486 if how == "busy" else 480)
            self._release()
            return
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

    # --- calls out: the PBX asks the line to dial a number ------------------------------------------
    def incoming(self, call: SipCall) -> None:
        number = (call.invite.headers.get_first(DIAL_HEADER.lower()) or "").strip()
        if not number:
            call.reject(403, f"Forbidden (line port {self.number} dials out only what {DIAL_HEADER} names)")
            return
        mode = self.cfg.dialling
        if not _DIALLABLE.get(mode, _DIALLABLE["dtmf"]).match(number):
            call.reject(484, f"Address Incomplete ({number[:32]!r} cannot be dialled by {mode})")
            return
        port = self.port
        if port is None or not self.gw.board.connected:
            call.reject(480, "Temporarily Unavailable (line board not connected)")
            return
        if self.state != "idle" or port.state == "seized":
            # ringing in (alerting, or refused and still ringing) or already off-hook
            call.reject(486, "Busy Here (the exchange line is in use)")
            return
        self.state = "seizing"
        self.calls += 1
        self.call = call
        call.on_cancel = self._out_cancelled
        call.on_bye = self._pbx_hung_up
        logger.info("line %d (%s): call out to %s", self.number, self.account.user, number)
        self.gw.loop.create_task(self._call_out(call, number))

    async def _call_out(self, call: SipCall, number: str) -> None:
        port, loop = self.port, self.gw.loop
        media = self.start_media()
        if media is None or port is None:
            self._out_failed(call, 480, "Temporarily Unavailable (line audio failed)")
            return
        codec = self.apply_sdp(call.invite.body)
        if codec is None:
            self._out_failed(call, 488, "")
            return
        self._answer_sdp = self.answer_body(codec)
        media.set_remote(None)                     # nothing goes to the caller before the 183
        heard = loop.create_future()
        media.listener = _DialToneWatch(tone(self.gw.country, "dial").freqs,
                                        lambda: loop.call_soon_threadsafe(_settle, heard))
        try:
            await loop.run_in_executor(None, port.seize)
        except Exception as exc:
            self._out_failed(call, 503, f"Service Unavailable (the line could not be seized: {exc})")
            return
        if call is not self.call:
            if self.state == "idle" and port.state == "seized":
                self.board(port.release)           # cancelled while the board seized the line
            return
        try:
            await asyncio.wait_for(heard, DIALTONE_WAIT_S)
        except asyncio.TimeoutError:
            media.listener = None
            if call is self.call:
                logger.warning("line %d (%s): no dial tone %.0f s after seizing: line dead or in use",
                               self.number, self.account.user, DIALTONE_WAIT_S)
                self._out_failed(call, 503, "Service Unavailable (no dial tone on the exchange line)")
            return
        media.listener = None
        if call is not self.call:
            return                                 # cancelled meanwhile
        self.state = "dialling"
        if self.cfg.dialling == "pulse":
            try:
                await loop.run_in_executor(None, port.pulse_dial, number)
            except Exception as exc:
                if call is self.call:
                    self._out_failed(call, 503, f"Service Unavailable (pulse dialling failed: {exc})")
                return
        else:
            media.play_audio(dtmf_samples(number, on_ms=DTMF_DIAL_MS[0], off_ms=DTMF_DIAL_MS[1]))
            while media.playing_audio and call is self.call:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.1)               # the card's buffer plays the last digit out
        if call is not self.call:
            return
        logger.info("line %d (%s): %s dialled", self.number, self.account.user, number)
        # the caller hears the exchange from now on: ringback, announcements, the answer
        self.apply_sdp(call.invite.body)
        media.connect()
        call.progress(self._answer_sdp)
        if self.cfg.answer == "reversal":
            self.state = "ringing_out"             # until LOOP rev (or the caller gives up)
        else:
            self._answer_out()

    def _answer_out(self) -> None:
        call = self.call
        if call is None or self.state not in ("dialling", "ringing_out"):
            return
        call.answer(self._answer_sdp)
        self.state = "talking"
        logger.info("line %d (%s): call out answered (%s)", self.number, self.account.user,
                    "polarity reversal" if self.cfg.answer == "reversal" else "number dialled")

    def _out_failed(self, call: SipCall, code: int, reason: str) -> None:
        if self.call is call:
            self.call = None
        call.reject(code, reason)
        self._release()

    def _out_cancelled(self) -> None:
        logger.info("line %d (%s): the caller gave up the call out; releasing the line", self.number,
                    self.account.user)
        self.call = None
        self._release()

    def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self.state == "talking" or self.state in OUT_STATES:
            self._release()
        super().close()


class _DialToneWatch:
    """On the media thread: calls found() once DIALTONE_FRAMES frames in a row carry dial tone."""

    def __init__(self, freqs, found) -> None:
        self.freqs = tuple(freqs)
        self.found = found
        self.run = 0

    def __call__(self, frame: bytes) -> None:
        self.run = self.run + 1 if tone_present(frame, self.freqs) else 0
        if self.run == DIALTONE_FRAMES:
            self.found()


def _settle(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(True)


def shown_caller(cid: CallerId | None) -> str | None:
    """The From display name for the caller: the number, else why it is missing."""
    if cid is None:
        return None
    if cid.number:
        return cid.number
    if cid.number_absent:
        return "Private" if cid.number_absent == PRIVATE else "Unavailable"
    return cid.name
