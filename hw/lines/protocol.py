"""Line-board protocol v1 framing (docs/line-board-protocol.md): `$<seq>,<CMD>[,<arg>...]*<CRC8>\n`.

Pure bytes in, frames out: the serial driver and the board simulator share this module, so the two
ends cannot disagree about framing. The decoder resynchronises on the next newline after anything
it cannot read, and counts what it skipped.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)

VERSION = 1
MAX_LINE = 160          # bytes including '$' and '\n'; longer is garbage (a wrong baud rate looks like this)
SEQ_MODULO = 256
_FORBIDDEN = set(b"$*,\r\n")


def crc8(data: bytes) -> int:
    """CRC-8/SMBUS (poly 0x07, init 0): the CRC cheap MCUs ship in their HAL."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


@dataclass(frozen=True)
class Frame:
    seq: int
    cmd: str
    args: tuple[str, ...] = ()

    def encode(self) -> bytes:
        return encode(self.seq, self.cmd, *self.args)


def encode(seq: int, cmd: str, *args: object) -> bytes:
    """One frame as bytes. Arguments are printable ASCII without '$', '*', ',' or line ends."""
    fields = [str(seq % SEQ_MODULO), cmd, *(str(a) for a in args)]
    for field in fields:
        raw = field.encode("ascii", "replace")
        if not raw or any(b in _FORBIDDEN or b < 0x20 or b > 0x7E for b in raw):
            raise ValueError(f"line-board frame field {field!r} is empty or holds a reserved character")
    body = ",".join(fields).encode("ascii")
    frame = b"$" + body + b"*%02X\n" % crc8(body)
    if len(frame) > MAX_LINE:
        raise ValueError(f"line-board frame of {len(frame)} bytes exceeds {MAX_LINE}")
    return frame


class FrameDecoder:
    """Feed it bytes as they arrive; get whole, checked frames back. `garbage` counts skipped lines."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._discarding = False
        self.garbage = 0

    def feed(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_LINE:
                    # No newline within a frame's length: drop it and skip to the next newline.
                    self._skip(bytes(self._buffer[:40]), "overlong line")
                    self._buffer.clear()
                    self._discarding = True
                return frames
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if self._discarding:
                self._discarding = False
                continue
            frame = self._parse(line.rstrip(b"\r"))
            if frame is not None:
                frames.append(frame)

    def _skip(self, line: bytes, why: str) -> None:
        self.garbage += 1
        logger.debug("line board: skipped %s: %r", why, line[:40])

    def _parse(self, line: bytes) -> Frame | None:
        start = line.rfind(b"$")
        if start < 0:
            if line.strip():
                self._skip(line, "line without '$'")
            return None
        if start > 0:
            # Noise before a frame on the same line: the frame after the last '$' may still be whole.
            self._skip(line[:start], "noise before '$'")
            line = line[start:]
        star = line.rfind(b"*")
        if star < 0 or len(line) - star != 3:
            self._skip(line, "frame without '*CRC'")
            return None
        body = line[1:star]
        try:
            crc = int(line[star + 1:], 16)
            text = body.decode("ascii")
        except (ValueError, UnicodeDecodeError):
            self._skip(line, "unreadable frame")
            return None
        if crc8(body) != crc:
            self._skip(line, "bad checksum")
            return None
        fields = text.split(",")
        if len(fields) < 2 or not fields[0].isdigit() or not fields[1]:
            self._skip(line, "frame without seq and command")
            return None
        return Frame(int(fields[0]) % SEQ_MODULO, fields[1].upper(), tuple(fields[2:]))
