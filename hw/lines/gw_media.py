"""PortMedia: G.711 RTP <-> one analog port's audio while a call is up, on a 20 ms clock.

One UDP socket and one thread per active port. Every 20 ms the thread sends what the line
captured since the last tick as RTP, and plays one frame toward the line: a call-progress tone
(dial, ringback, busy, congestion) or the next frame received over RTP. An appliance has a handful
of ports, so a thread each is cheaper to reason about than sharing the SIP event loop, and an
ALSA write that blocks (a real card's buffer is full) never stalls signalling.
"""
from __future__ import annotations

import collections
import logging
import secrets
import socket
import struct
import threading
import time

from firmware.dsp import g711
from firmware.dsp.tones import ToneGenerator, tone
from hw.lines.audio import FRAME_BYTES, FRAME_SAMPLES, LineAudioError

logger = logging.getLogger(__name__)

TICK_S = 0.02
PAYLOAD_TYPES = {"PCMU": 0, "PCMA": 8}
CODECS = {pt: name for name, pt in PAYLOAD_TYPES.items()}
JITTER_FRAMES = 6          # RTP frames held for the line at most (120 ms): older ones are dropped
PREFILL_FRAMES = 2         # after running dry, wait for 40 ms of audio so one late packet is no gap
CAPTURE_BACKLOG = 3        # line frames sent per tick at most; more means we fell behind: drop them
SILENCE = bytes(FRAME_BYTES)


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
        self.rx = self.tx = 0
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

    def set_remote(self, address: tuple[str, int] | None, codec: str | None = None) -> None:
        """Where RTP goes (from the SDP); None stops sending (hold, or no media yet)."""
        if codec is not None:
            self.codec = codec
        self.remote = address if address is not None and address[1] else None

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
                data, _ = self.sock.recvfrom(2048)
            except BlockingIOError:
                return
            if len(data) < 12 or data[0] >> 6 != 2:
                continue
            pt = data[1] & 0x7F
            codec = CODECS.get(pt)
            if codec is None:
                continue                           # comfort noise, telephone-event: not for the line
            header = 12 + 4 * (data[0] & 0x0F)
            payload = data[header:]
            if data[0] & 0x20 and payload:         # padding (RFC 3550 5.1)
                payload = payload[: len(payload) - payload[-1]]
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
        remote = self.remote
        if remote is None:
            return
        encode = g711.encoder(self.codec)
        for frame in frames[-CAPTURE_BACKLOG:]:
            header = struct.pack("!BBHII", 0x80, PAYLOAD_TYPES[self.codec], self._seq, self._ts, self._ssrc)
            self._seq = (self._seq + 1) & 0xFFFF
            self._ts = (self._ts + FRAME_SAMPLES) & 0xFFFFFFFF
            self.sock.sendto(header + encode(frame), remote)
            self.tx += 1

    def _frame_for_line(self) -> bytes:
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
