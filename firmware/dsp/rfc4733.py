"""RFC 4733 telephone-event payloads (DTMF over RTP): packing, parsing and a receiver.

Payload (section 2.3): event (8 bits) | E (end) | R (reserved) | volume (6 bits, -dBm0) |
duration (16 bits, in RTP timestamp units). All packets of one event share the RTP timestamp
of its start; the end packet is sent three times (section 2.5.1.4).
"""
from __future__ import annotations

import collections
import logging
import struct

logger = logging.getLogger(__name__)

EVENTS = "0123456789*#ABCD"
_MAX_DURATION = 0xFFFF


def pack_event(digit: str, end: bool, volume: int = 10, duration: int | None = None) -> bytes:
    """The 4-byte payload for one packet of a DTMF event. duration is in timestamp units
    (8 per ms at 8 kHz) since the event started."""
    if duration is None:
        raise TypeError("pack_event() needs duration= (timestamp units since the event started)")
    if not isinstance(digit, str) or len(digit) != 1 or digit.upper() not in EVENTS:
        raise ValueError(f"{digit!r} is not a DTMF event: use one of {EVENTS}")
    if not 0 <= volume <= 63:
        raise ValueError(f"volume {volume} is out of range: 0..63 (-dBm0)")
    if not 0 <= duration <= _MAX_DURATION:
        raise ValueError(f"duration {duration} is out of range: 0..{_MAX_DURATION} timestamp units")
    return struct.pack("!BBH", EVENTS.index(digit.upper()), (0x80 if end else 0) | volume, duration)


def unpack_event(payload: bytes) -> tuple[str, bool, int, int]:
    """(digit, end, volume, duration) from a 4-byte telephone-event payload."""
    if len(payload) != 4:
        raise ValueError(f"telephone-event payload must be 4 bytes, got {len(payload)}")
    event, flags, duration = struct.unpack("!BBH", payload)
    if event >= len(EVENTS):
        raise ValueError(f"telephone-event {event} is not a DTMF digit (0-15); ignore it")
    return EVENTS[event], bool(flags & 0x80), flags & 0x3F, duration


class EventReceiver:
    """Turns a stream of telephone-event packets into digits, each reported once.

    A digit is reported on the first packet seen with a new RTP timestamp, whether that is the
    start packet or (when the start was lost) a later update or an end packet. Repeats and
    retransmitted end packets share the timestamp and are ignored; a late packet of an older
    event is ignored too. An event longer than 0xFFFF units continues under a new timestamp
    (section 2.5.1.3) and is not reported again.
    """

    _REMEMBERED = 16

    def __init__(self) -> None:
        self._seen: collections.deque[int] = collections.deque(maxlen=self._REMEMBERED)
        self._last: tuple[int, str, bool, int] | None = None  # timestamp, digit, ended, duration
        self.malformed = 0

    def feed(self, rtp_timestamp: int, payload: bytes) -> str | None:
        """The new digit this packet starts, or None. Never raises on what arrives from the
        network: trailing RTP padding is ignored, non-DTMF events (flash hook, 16+) return None,
        and a payload shorter than 4 bytes is counted in `malformed` and dropped."""
        if len(payload) < 4:
            self.malformed += 1
            if self.malformed == 1:  # once per stream: a broken peer sends 50 of these a second
                logger.warning("dropping telephone-event packets shorter than 4 bytes (got %d)", len(payload))
            return None
        if payload[0] >= len(EVENTS):
            return None
        digit, end, _volume, duration = unpack_event(bytes(payload[:4]))
        ts = rtp_timestamp & 0xFFFFFFFF
        if ts in self._seen:
            if self._last is not None and self._last[0] == ts:
                self._last = (ts, digit, self._last[2] or end, max(self._last[3], duration))
            return None
        continuation = (self._last is not None and not self._last[2] and self._last[1] == digit
                        and self._last[3] == _MAX_DURATION
                        and (ts - self._last[0]) & 0xFFFFFFFF == _MAX_DURATION)
        self._seen.append(ts)
        self._last = (ts, digit, end, duration)
        if continuation:
            return None
        logger.debug("RTP event digit %s (timestamp %d)", digit, ts)
        return digit


class EventSender:
    """The payloads of one DTMF event as it goes on, for a sender on a 20 ms clock (section 2.5.1).

    The sender stops sending audio frames for the digit and instead calls `update()` once per
    frame while the key is held (the first payload goes out with the RTP marker bit and, like all
    of them, with the RTP timestamp of the event's start), then `end()` once: three copies of the
    end packet. An event longer than 0xFFFF units is cut at that duration (8 s at 8 kHz, far
    beyond a key press)."""

    def __init__(self, digit: str, frame_units: int = 160, volume: int = 10) -> None:
        pack_event(digit, False, volume, duration=0)          # validates digit and volume
        self.digit = digit.upper()
        self.frame_units = frame_units
        self.volume = volume
        self.duration = 0
        self.packets = 0

    @property
    def marker(self) -> bool:
        """True for the first packet of the event (RTP marker bit)."""
        return self.packets == 0

    def update(self) -> bytes:
        self.duration = min(self.duration + self.frame_units, _MAX_DURATION)
        self.packets += 1
        return pack_event(self.digit, False, self.volume, duration=self.duration)

    def end(self) -> list[bytes]:
        if self.duration == 0:
            self.duration = self.frame_units
        self.packets += 3
        return [pack_event(self.digit, True, self.volume, duration=self.duration)] * 3
