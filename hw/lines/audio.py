"""Per-port line audio through ALSA: 8 kHz, 16-bit, mono, 20 ms frames.

A real line board is a USB Audio Class card (one ALSA device per port, see
docs/decisions/004-line-board.md); the simulator provides the same through the ALSA `file` plugin
on named pipes, so the code below is the code that runs on the box.
"""
from __future__ import annotations

import logging

import alsaaudio

logger = logging.getLogger(__name__)

RATE = 8000
FRAME_SAMPLES = 160                 # 20 ms: the RTP packet time the gateway will use
FRAME_BYTES = FRAME_SAMPLES * 2


class LineAudioError(RuntimeError):
    """An ALSA device that cannot be opened or used, named in the message."""


class LineAudio:
    """Capture and playback on one port's ALSA device. read() returns one 20 ms frame (blocking
    until the card delivers it); write() plays whole frames, padding the last with silence."""

    def __init__(self, device: str, *, capture: bool = True, playback: bool = True) -> None:
        self.device = device
        self._capture = self._open(alsaaudio.PCM_CAPTURE, "capture") if capture else None
        try:
            self._playback = self._open(alsaaudio.PCM_PLAYBACK, "playback") if playback else None
        except LineAudioError:
            self.close()
            raise
        self._pending = b""
        self._overruns = 0

    def _open(self, direction: int, what: str):
        try:
            return alsaaudio.PCM(type=direction, mode=alsaaudio.PCM_NORMAL, device=self.device, rate=RATE,
                                 channels=1, format=alsaaudio.PCM_FORMAT_S16_LE, periodsize=FRAME_SAMPLES,
                                 periods=4)
        except alsaaudio.ALSAAudioError as exc:
            raise LineAudioError(
                f"cannot open ALSA {what} device {self.device!r}: {exc}. List devices with `arecord -L`; "
                f"for the board simulator export the ALSA_CONFIG_PATH it prints") from None

    def read(self) -> bytes:
        """The next 20 ms frame of what the line sends (pcm16le, 320 bytes)."""
        if self._capture is None:
            raise LineAudioError(f"ALSA device {self.device!r} was opened without capture")
        data = self._pending
        while len(data) < FRAME_BYTES:
            try:
                length, chunk = self._capture.read()
            except alsaaudio.ALSAAudioError as exc:
                raise LineAudioError(f"ALSA capture on {self.device!r} failed: {exc}") from None
            if length < 0:
                # -EPIPE: the reader fell behind and the card overran; ALSA restarts the stream.
                self._overruns += 1
                logger.warning("line audio %s: capture overrun #%d", self.device, self._overruns)
                continue
            data += chunk
        self._pending = data[FRAME_BYTES:]
        return data[:FRAME_BYTES]

    def write(self, pcm16le: bytes) -> None:
        """Play audio toward the line; blocks while the card's buffer is full."""
        if self._playback is None:
            raise LineAudioError(f"ALSA device {self.device!r} was opened without playback")
        if len(pcm16le) % FRAME_BYTES:
            pcm16le += bytes(FRAME_BYTES - len(pcm16le) % FRAME_BYTES)
        for i in range(0, len(pcm16le), FRAME_BYTES):
            try:
                self._playback.write(pcm16le[i:i + FRAME_BYTES])
            except alsaaudio.ALSAAudioError as exc:
                raise LineAudioError(f"ALSA playback on {self.device!r} failed: {exc}") from None

    def close(self) -> None:
        for pcm in (getattr(self, "_capture", None), getattr(self, "_playback", None)):
            if pcm is not None:
                try:
                    pcm.close()
                except alsaaudio.ALSAAudioError:
                    pass
        self._capture = self._playback = None

    def __enter__(self) -> "LineAudio":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
