"""PortMedia: G.711 RTP <-> one analog port's audio while a call is up, on a 20 ms clock.

One UDP socket and one thread per active port. Every 20 ms the thread sends what the line
captured since the last tick as RTP, and plays one frame toward the line: a call-progress tone
(dial, ringback, busy, congestion) or the next frame received over RTP. An appliance has a handful
of ports, so a thread each is cheaper to reason about than sharing the SIP event loop, and an
ALSA write that blocks (a real card's buffer is full) never stalls signalling.

DTMF (decision 007): when the far end negotiated telephone-event, a digit keyed on the line is
recognised in the captured audio (Goertzel, firmware.dsp.detect) and sent as RFC 4733 events
instead of audio: from the frame in which it is recognised until its tone ends no audio packet
goes out, so the tone is cut from the call. The detector needs ~45 ms of tone to be sure (up to
three 20 ms frames, as its windows fall), so while events are agreed the audio is held back
LOOKAHEAD_FRAMES (40 ms) and the frames that carried the start of the tone are dropped too: at
most a few ms of a tone reach the far end, far shorter than any receiver accepts as a digit. Events received from the far end
are played toward the line as DTMF tones (an analog phone's caller, or an IVR behind an FXO line,
hears them as it would on a plain line).
"""
from __future__ import annotations

import collections
import logging
import secrets
import socket
import struct
import threading
import time

from typing import Callable

from firmware.dsp import g711
from firmware.dsp.detect import DtmfDetector, dtmf_samples
from firmware.dsp.rfc4733 import EventReceiver, EventSender
from firmware.dsp.tones import ToneGenerator, tone
from hw.lines.audio import FRAME_BYTES, FRAME_SAMPLES, RATE, LineAudioError

logger = logging.getLogger(__name__)

TICK_S = 0.02
PAYLOAD_TYPES = {"PCMU": 0, "PCMA": 8}
CODECS = {pt: name for name, pt in PAYLOAD_TYPES.items()}
JITTER_FRAMES = 6          # RTP frames held for the line at most (120 ms): older ones are dropped
PREFILL_FRAMES = 2         # after running dry, wait for 40 ms of audio so one late packet is no gap
CAPTURE_BACKLOG = 3        # line frames sent per tick at most; more means we fell behind: drop them
SILENCE = bytes(FRAME_BYTES)
LOOKAHEAD_FRAMES = 2       # audio held back while RFC 4733 events are agreed (the detector's delay)
EVENT_GUARD_S = 0.3       # a digit recognised this soon after RTP starts is the tail of dialling
DTMF_OUT_MS = (100, 60)    # a digit received as RFC 4733 events is played to the line as 100 ms tone


class PortMedia:
    """The audio path of one port during one call. Thread-safe setters, called from the SIP loop."""

    def __init__(self, port, address: str, country: str) -> None:
        self.port = port
        self.country = country
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, 0))
        self.sock.setblocking(False)
        self.address, self.local_port = self.sock.getsockname()[:2]
        self.remote: tuple[str, int] | None = None
        self.codec = "PCMU"
        self.dtmf_pt: int | None = None           # telephone-event payload type both ways, if agreed
        self.rx = self.tx = 0
        self.digits_sent = ""                     # digits sent as RFC 4733 events in this call
        self.digits_received = ""
        # Called with each captured frame on the media thread (FXO: dial tone watch), before RTP.
        self.listener: Callable[[bytes], None] | None = None
        self._detector = DtmfDetector(RATE)
        self._event: EventSender | None = None
        self._event_ts = 0
        self._events_from = 0.0
        self._held: collections.deque[bytes] = collections.deque()   # held back while events are agreed
        self._rx_events = EventReceiver()
        self._to_line = bytearray()                # audio queued for the line ahead of RTP (DTMF)
        self._to_line_lock = threading.Lock()
        self._tone: ToneGenerator | None = None
        self._tone_name: str | None = None
        self._rtp_to_line = False
        self._jitter: collections.deque[bytes] = collections.deque(maxlen=JITTER_FRAMES)
        self._filling = True
        self._seq = secrets.randbits(16)
        self._ts = secrets.randbits(32)
        self._ssrc = secrets.randbits(32)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"line{port.number}-media", daemon=True)

    def __repr__(self) -> str:
        return f"<PortMedia line {self.port.number} rtp {self.address}:{self.local_port} -> {self.remote}>"

    # --- control (any thread) ------------------------------------------------------------------
    def start(self) -> "PortMedia":
        self.port.open_audio()
        # Audio captured before the call (up to a second) is stale: the far end must not hear it.
        while self.port.read_frame(timeout=0) is not None:
            pass
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
        self.sock.close()

    def set_remote(self, address: tuple[str, int] | None, codec: str | None = None,
                   dtmf_pt: int | None | bool = False) -> None:
        """Where RTP goes (from the SDP); None stops sending (hold, or no media yet). dtmf_pt:
        the agreed telephone-event payload type (None: none agreed, DTMF stays in the audio)."""
        if codec is not None:
            self.codec = codec
        if dtmf_pt is not False:
            self.dtmf_pt = dtmf_pt
        remote = address if address is not None and address[1] else None
        if remote is not None and self.remote is None:
            # the capture thread reports digits a little ahead of this thread's reads: the '#'
            # that ended dialling can still be in the frames sent just after the answer
            self._events_from = time.monotonic() + EVENT_GUARD_S
        self.remote = remote

    def play_audio(self, pcm16le: bytes) -> None:
        """Play this toward the line ahead of tones and RTP (dialling DTMF on an FXO line)."""
        with self._to_line_lock:
            self._to_line += pcm16le

    @property
    def playing_audio(self) -> bool:
        return bool(self._to_line)

    def play_tone(self, name: str | None) -> None:
        """Play the country's call-progress tone toward the line (None: silence), instead of RTP."""
        if name is not None and name == self._tone_name:
            return                                 # already playing: keep its cadence going
        self._tone = ToneGenerator(tone(self.country, name)) if name else None
        self._tone_name = name
        self._rtp_to_line = False

    def connect(self) -> None:
        """Talk: what arrives over RTP goes to the line (early media or an answered call)."""
        self._tone = None
        self._tone_name = None
        self._rtp_to_line = True

    @property
    def tone_name(self) -> str | None:
        return self._tone_name

    # --- the 20 ms clock ------------------------------------------------------------------------
    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            try:
                self._receive_rtp()
                self._send_line_audio()
                self.port.write_frame(self._frame_for_line())
            except LineAudioError as exc:
                logger.error("line %d: audio failed, call audio stops: %s", self.port.number, exc)
                return
            except OSError as exc:
                # The socket was closed under us (stop) or the network went away: RTP is best effort.
                if self._stop.is_set():
                    return
                logger.warning("line %d: RTP socket error: %s", self.port.number, exc)
            next_tick += TICK_S
            delay = next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.2:
                next_tick = time.monotonic()      # we were stalled: restart the clock, do not burst

    def _receive_rtp(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(2048)
            except BlockingIOError:
                return
            if len(data) < 12 or data[0] >> 6 != 2:
                continue
            if addr != self.remote:
                continue                           # not the current call's leg (e.g. a held call's)
            pt = data[1] & 0x7F
            codec = CODECS.get(pt)
            header = 12 + 4 * (data[0] & 0x0F)
            payload = data[header:]
            if data[0] & 0x20 and payload:         # padding (RFC 3550 5.1)
                payload = payload[: len(payload) - payload[-1]]
            if codec is None:
                if pt == self.dtmf_pt and self.dtmf_pt is not None:
                    digit = self._rx_events.feed(int.from_bytes(data[4:8], "big"), payload)
                    if digit is not None and self._rtp_to_line:
                        self.digits_received += digit
                        self.play_audio(dtmf_samples(digit, on_ms=DTMF_OUT_MS[0], off_ms=DTMF_OUT_MS[1]))
                continue                           # comfort noise: not for the line
            self.rx += 1
            pcm = g711.decoder(codec)(payload)
            for i in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES):
                self._jitter.append(pcm[i:i + FRAME_BYTES])

    def _send_line_audio(self) -> None:
        frames = []
        while len(frames) < 50:
            frame = self.port.read_frame(timeout=0)
            if frame is None:
                break
            frames.append(frame)
        listener = self.listener
        if listener is not None:
            for frame in frames:
                listener(frame)
        remote = self.remote
        if remote is None:
            self._event = None
            self._held.clear()
            for frame in frames:
                # a key still held from before (dialling, hold) is not a new digit of the call
                self._detector.feed(frame)
            return
        encode = g711.encoder(self.codec)
        for frame in frames[-CAPTURE_BACKLOG:]:
            pt = self.dtmf_pt
            if pt is not None:
                new = self._detector.feed(frame)
                event = self._event
                if event is not None and (new or self._detector.active != event.digit):
                    for payload in event.end():
                        self._send(pt, payload, False, self._event_ts, remote)
                    self._event = event = None
                if new and time.monotonic() < self._events_from:
                    new = ""
                if new:
                    event = self._event = EventSender(new[-1])
                    self._event_ts = self._ts
                    self.digits_sent += event.digit
                    self._held.clear()                 # the start of the tone: never sent
                if event is not None:
                    # the key is held: an event update instead of this frame's audio (the tone)
                    marker = event.marker
                    self._send(pt, event.update(), marker, self._event_ts, remote)
                    self._ts = (self._ts + FRAME_SAMPLES) & 0xFFFFFFFF
                    continue
                self._held.append(frame)
                frame = self._held.popleft() if len(self._held) > LOOKAHEAD_FRAMES else SILENCE
            self._send(PAYLOAD_TYPES[self.codec], encode(frame), False, self._ts, remote)
            self._ts = (self._ts + FRAME_SAMPLES) & 0xFFFFFFFF
            self.tx += 1

    def _send(self, pt: int, payload: bytes, marker: bool, ts: int, remote: tuple[str, int]) -> None:
        header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, self._seq, ts, self._ssrc)
        self._seq = (self._seq + 1) & 0xFFFF
        self.sock.sendto(header + payload, remote)

    def _frame_for_line(self) -> bytes:
        if self._to_line:
            with self._to_line_lock:
                frame = bytes(self._to_line[:FRAME_BYTES])
                del self._to_line[:FRAME_BYTES]
            if self._rtp_to_line and self._jitter:
                self._jitter.popleft()             # the tone stands in for this frame of the call
            return frame + bytes(FRAME_BYTES - len(frame))
        generator = self._tone
        if generator is not None:
            return generator.frame(FRAME_SAMPLES)
        if not self._rtp_to_line:
            return SILENCE
        if self._filling and len(self._jitter) < PREFILL_FRAMES:
            return SILENCE
        self._filling = False
        if not self._jitter:
            self._filling = True
            return SILENCE
        return self._jitter.popleft()
