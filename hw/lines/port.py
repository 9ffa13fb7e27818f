"""LinePort: one analog port of the line board, the unit the line gateway works with.

FXS port (an analog phone plugs in): state onhook/offhook/ringing, ring(cadence, callerid),
DTMF digits from its audio. FXO port (a PSTN line plugs in): state idle/ringing/seized,
seize()/release(), caller ID decoded from the line audio, disconnect supervision by loop-current
drop (board event) or busy tone (audio). Audio: read_frame()/write_frame() in 20 ms pcm16le.
"""
from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from typing import TYPE_CHECKING

from firmware.dsp.callerid import (
    CallerId, CallerIdPlan, CallerIdReceiver, caller_id_audio, caller_id_plan, parse_dtmf_clip, ring_cadence,
)
from firmware.dsp.detect import DtmfDetector, on_off_segments
from firmware.dsp.tones import tone
from hw.lines.audio import FRAME_BYTES, RATE, LineAudio, LineAudioError

if TYPE_CHECKING:
    from hw.lines.board import LineBoard

logger = logging.getLogger(__name__)

BUSY_WINDOW_S = 3.0          # audio kept for busy-tone supervision
BUSY_CHECK_EVERY = 25        # frames (0.5 s)
BUSY_TOLERANCE = 0.25        # of each cadence interval; Q.35 allows wide cadence tolerances
CID_LISTEN_S = 6.0           # after a reversal or ring, how long the FXO receiver listens


class LinePort:
    def __init__(self, board: "LineBoard", number: int, kind: str) -> None:
        self.board = board
        self.number = number
        self.kind = kind
        self.state = "onhook" if kind == "fxs" else "idle"
        self.audio_device = board.audio_device.format(port=number)
        self.caller_id: CallerId | None = None
        for name in ("off_hook", "on_hook", "flash", "ring_start", "ring_stop", "digit", "caller_id",
                     "disconnect", "polarity_reversal"):
            setattr(self, f"when_{name}", None)
        self._audio: LineAudio | None = None
        self._audio_thread: threading.Thread | None = None
        self._audio_stop = threading.Event()
        self._frames: queue.Queue[bytes] = queue.Queue(maxsize=50)
        self._ring_stopped = threading.Event()
        self._cid_until = 0.0
        self._cid_receiver: CallerIdReceiver | None = None
        self._dtmf_clip = ""

    def __repr__(self) -> str:
        return f"<LinePort {self.number} {self.kind} {self.state}>"

    def emit(self, name: str, *args) -> None:
        """Record the event's side effects and queue board-level then port-level handlers."""
        if name == "ring_stop":
            self._ring_stopped.set()
        if name in ("ring_start", "polarity_reversal") and self.kind == "fxo":
            self._listen_for_caller_id()
        if name == "caller_id":
            self.caller_id = args[0]
        for target in (self.board, self):
            self.board._queue_call(getattr(target, f"when_{name}", None), self, *args)

    # --- FXS ------------------------------------------------------------------------------------

    def ring(self, cadence: tuple[int, ...] | None = None, callerid: CallerId | None = None,
             plan: CallerIdPlan | None = None) -> None:
        """Ring the phone with the country's cadence (ms on/off...), sending caller ID as the
        country's plan says (or `plan`): UK before the first ring, US after it. Returns at once."""
        self._require("fxs", "ring")
        cadence = tuple(cadence or ring_cadence(self.board.country))
        if callerid is None:
            self._ring_command(cadence)
            return
        plan = plan or caller_id_plan(self.board.country)
        threading.Thread(target=self._ring_with_caller_id, args=(cadence, callerid, plan),
                         name=f"line{self.number}-cid", daemon=True).start()

    def stop_ring(self) -> None:
        self._require("fxs", "stop ringing")
        self.board.command("STOPRING", self.number)
        if self.state == "ringing":
            # nobody answered (an answer would have set "offhook"): the phone is back on its hook,
            # which also ends the caller-ID thread's wait to restore normal line polarity
            self.state = "onhook"

    def set_flash_times(self, min_ms: int, max_ms: int) -> None:
        """FXS: an on-hook of min_ms..max_ms is reported as `flash`, a longer one as on-hook
        (FLASHTIME, protocol v1 revision 2; an older board NAKs it with badcmd and keeps 100-700)."""
        self._require("fxs", "time flashes")
        self.board.command("FLASHTIME", self.number, int(min_ms), int(max_ms))

    def _ring_command(self, cadence: tuple[int, ...]) -> None:
        self._ring_stopped.clear()
        self.board.command("RING", self.number, "-".join(str(int(ms)) for ms in cadence))
        self.state = "ringing"

    def _ring_with_caller_id(self, cadence: tuple[int, ...], cid: CallerId, plan: CallerIdPlan) -> None:
        try:
            audio = caller_id_audio(cid, plan)
            if plan.before_ring:
                if plan.polarity_reversal:
                    self.board.command("POLARITY", self.number, "reverse")
                time.sleep(plan.delay_ms / 1000)
                self._play_timed(audio)
                time.sleep(0.2)                         # SIN 227: ringing no sooner than 200 ms after the FSK
                self._ring_command(cadence)
                if plan.polarity_reversal:
                    # Back to normal polarity once the ringing ends (answered, stopped or abandoned).
                    deadline = time.monotonic() + 300
                    while self.state == "ringing" and time.monotonic() < deadline:
                        time.sleep(0.05)
                    self.board.command("POLARITY", self.number, "normal")
            else:
                self._ring_command(cadence)
                # GR-30: the data goes in the silent interval, at least 500 ms after the first ring ends.
                if not self._ring_stopped.wait(cadence[0] / 1000 + 1.0):
                    logger.warning("line %d: first ring did not end; caller ID not sent", self.number)
                    return
                time.sleep(plan.delay_ms / 1000)
                if self.state == "ringing":
                    self._play_timed(audio)
            logger.info("line %d: caller ID %s sent", self.number, cid.number or cid.number_absent)
        except Exception as exc:  # the ring thread must log, not die silently
            logger.error("line %d: ringing with caller ID failed: %s", self.number, exc)

    def _play_timed(self, audio: bytes) -> None:
        """Play and return when the line has had time to carry it (a paced card blocks anyway)."""
        start = time.monotonic()
        self.open_audio()
        # Trailing silence pushes the message's tail out of the card's 4-period (80 ms) buffer
        # even when nothing else is played after it.
        self.write_frame(audio + bytes(2 * RATE // 5))
        remaining = len(audio) / 2 / RATE - (time.monotonic() - start)
        if remaining > 0:
            time.sleep(remaining)

    # --- FXO ------------------------------------------------------------------------------------

    def seize(self) -> None:
        """Take the line off-hook (answer an incoming call or get dial tone)."""
        self._require("fxo", "seize")
        self.board.command("SEIZE", self.number)
        self.state = "seized"
        self._cid_until = 0.0

    def pulse_dial(self, digits: str) -> None:
        """FXO, seized: dial digits by loop disconnect (10 pulses a second, 0 = ten pulses, 700 ms
        between digits); returns when the board has dialled them (DIAL, protocol v1 revision 2)."""
        self._require("fxo", "dial")
        if not digits or not digits.isdigit():
            raise ValueError(f"pulse dialling sends digits 0-9 only, not {digits!r}")
        pulses = sum(10 if d == "0" else int(d) for d in digits)
        self.board.command("DIAL", self.number, digits, timeout=pulses * 0.1 + len(digits) * 0.7 + 2.0)

    def release(self) -> None:
        self._require("fxo", "release")
        self.board.command("RELEASE", self.number)
        self.state = "idle"

    def _listen_for_caller_id(self) -> None:
        if self.state == "seized" or self._cid_until > time.monotonic():
            return
        plan = caller_id_plan(self.board.country)
        self._cid_receiver = CallerIdReceiver(plan.fsk if plan.fsk != "dtmf" else "bell202")
        self._dtmf_clip = ""
        self._cid_until = time.monotonic() + CID_LISTEN_S

    # --- audio ----------------------------------------------------------------------------------

    def open_audio(self) -> None:
        """Open the port's ALSA device and start listening (DTMF, caller ID, busy tone)."""
        if self._audio is not None:
            return
        self._audio = LineAudio(self.audio_device)
        self._audio_stop.clear()
        self._audio_thread = threading.Thread(target=self._listen, name=f"line{self.number}-audio", daemon=True)
        self._audio_thread.start()

    def close_audio(self) -> None:
        self._audio_stop.set()
        thread, self._audio_thread = self._audio_thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)
        audio, self._audio = self._audio, None
        if audio is not None:
            audio.close()

    def read_frame(self, timeout: float = 1.0) -> bytes | None:
        """The next 20 ms of line audio, or None if none arrived in time. Keeps the latest second."""
        try:
            return self._frames.get(timeout=timeout)
        except queue.Empty:
            return None

    def write_frame(self, pcm16le: bytes) -> None:
        """Play audio toward the line (any length; whole 20 ms frames go out)."""
        if self._audio is None:
            self.open_audio()
        self._audio.write(pcm16le)

    def _listen(self) -> None:
        audio = self._audio
        dtmf = DtmfDetector(RATE)
        busy_spec = tone(self.board.country, "busy")
        recent: collections.deque[bytes] = collections.deque(maxlen=int(BUSY_WINDOW_S * RATE * 2 / FRAME_BYTES))
        count = 0
        while not self._audio_stop.is_set():
            try:
                frame = audio.read()
            except LineAudioError as exc:
                logger.error("line %d: %s", self.number, exc)
                return
            if self._frames.full():
                try:
                    self._frames.get_nowait()
                except queue.Empty:
                    pass
            self._frames.put_nowait(frame)
            digits = dtmf.feed(frame)
            listening_cid = self._cid_receiver is not None and time.monotonic() < self._cid_until
            for digit in digits:
                if listening_cid and self.kind == "fxo":
                    self._dtmf_clip += digit
                    cid = parse_dtmf_clip(self._dtmf_clip)
                    if cid is not None:
                        self._cid_until = 0.0
                        self.emit("caller_id", cid)
                else:
                    self.emit("digit", digit)
            if listening_cid:
                cid = self._cid_receiver.feed(frame)
                if cid is not None:
                    self._cid_until = 0.0
                    self.emit("caller_id", cid)
            if self.kind == "fxo" and self.state == "seized":
                recent.append(frame)
                count += 1
                if count % BUSY_CHECK_EVERY == 0 and _is_busy(b"".join(recent), busy_spec):
                    recent.clear()
                    self.emit("disconnect", "busy")

    def _require(self, kind: str, what: str) -> None:
        if self.kind != kind:
            raise ValueError(f"line {self.number} is an {self.kind.upper()} port: cannot {what} "
                             f"(only {kind.upper()} ports can)")


def _is_busy(pcm16le: bytes, spec) -> bool:
    """True when the audio holds two whole on/off cycles of the busy tone's cadence."""
    segments = on_off_segments(pcm16le, spec.freqs, RATE)
    on_s, off_s = spec.cadence[:2] if spec.cadence else (0.0, 0.0)
    if not on_s:
        return False
    # Drop the first and last runs: the window cuts them anywhere.
    inner = segments[1:-1]
    matches = 0
    for is_on, seconds in inner:
        want = on_s if is_on else off_s
        matches = matches + 1 if abs(seconds - want) <= BUSY_TOLERANCE * want else 0
        if matches >= 3:
            return True
    return False
