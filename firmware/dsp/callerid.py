"""Caller ID on analog lines as audio: Bellcore SDMF/MDMF and ETSI messages in FSK, DTMF CLIP,
a phase-continuous FSK modulator and a demodulator that decodes it back, and the per-country
ring cadences and caller-ID plans that an FXS port follows.

Sources: Bellcore GR-30-CORE (Bell 202 FSK 1200 bit/s, mark 1200 Hz / space 2200 Hz, 300 bits of
channel seizure, 180 mark bits, SDMF type 0x04 and MDMF type 0x80); ETSI EN 300 659-1/-3 and
BT SIN 227/242 (V.23 FSK, mark 1300 Hz / space 2100 Hz, sent before the first ring after a line
polarity reversal and the 2130+2750 Hz tone alert). ETSI and Bellcore MDMF share the parameter
codes 01 date/time, 02 number, 04 reason number absent, 07 name, 08 reason name absent.
All audio is pcm16le mono at 8 kHz unless a rate is given.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from firmware.dsp.detect import dtmf_samples
from firmware.dsp.levels import dbm0_to_peak
from firmware.dsp.tones import ToneGenerator, ToneSpec

SDMF = 0x04
MDMF = 0x80
PARAM_DATETIME = 0x01
PARAM_NUMBER = 0x02
PARAM_NUMBER_ABSENT = 0x04
PARAM_NAME = 0x07
PARAM_NAME_ABSENT = 0x08
# Reason-for-absence codes: both standards use 'O' (out of area / unavailable) and 'P' (private).
UNAVAILABLE = "O"
PRIVATE = "P"


class CallerIdError(ValueError):
    """A caller-ID message or signal that cannot be built or decoded."""


@dataclass(frozen=True)
class FskStandard:
    name: str
    mark_hz: float
    space_hz: float
    baud: float = 1200.0


BELL202 = FskStandard("bell202", 1200.0, 2200.0)
V23 = FskStandard("v23", 1300.0, 2100.0)
FSK_STANDARDS = {s.name: s for s in (BELL202, V23)}


@dataclass(frozen=True)
class CallerId:
    """Who is calling. `when` is "MMDDHHMM" local time (no year: the message carries none).
    number_absent / name_absent hold 'O' (unavailable) or 'P' (private) when the value is withheld."""
    number: str | None = None
    name: str | None = None
    when: str | None = None
    number_absent: str | None = None
    name_absent: str | None = None

    def __post_init__(self) -> None:
        if self.when is not None and (len(self.when) != 8 or not self.when.isdigit()):
            raise CallerIdError(f"caller ID time must be 8 digits MMDDHHMM, got {self.when!r}")
        for field, value in (("number_absent", self.number_absent), ("name_absent", self.name_absent)):
            if value not in (None, UNAVAILABLE, PRIVATE):
                raise CallerIdError(f"caller ID {field} must be 'O' (unavailable) or 'P' (private), got {value!r}")
        if self.number is not None and not self.number:
            raise CallerIdError("caller ID number is empty: use number=None with number_absent='O' or 'P'")

    @classmethod
    def at(cls, moment, number: str | None = None, name: str | None = None, **absent) -> "CallerId":
        """A CallerId stamped with a datetime (the caller's clock is the caller's business)."""
        return cls(number=number, name=name, when=moment.strftime("%m%d%H%M"), **absent)


# --- messages ---------------------------------------------------------------------------------

def _checksum(body: bytes) -> int:
    # GR-30 / EN 300 659-3: the two's complement of the modulo-256 sum of every preceding byte.
    return (-sum(body)) & 0xFF


def _ascii(value: str, what: str, limit: int) -> bytes:
    try:
        data = value.encode("ascii")
    except UnicodeEncodeError:
        raise CallerIdError(f"caller ID {what} {value!r} must be ASCII (the line carries 7-bit text)") from None
    if len(data) > limit:
        raise CallerIdError(f"caller ID {what} {value!r} is longer than {limit} characters")
    return data


def _frame(kind: int, body: bytes) -> bytes:
    if len(body) > 255:
        raise CallerIdError(f"caller ID message body of {len(body)} bytes does not fit a length byte")
    head = bytes([kind, len(body)]) + body
    return head + bytes([_checksum(head)])


def sdmf_message(cid: CallerId) -> bytes:
    """Bellcore single data message format: type 0x04, MMDDHHMM, then the number or 'O'/'P'.
    SDMF carries no name; the time is mandatory."""
    if cid.when is None:
        raise CallerIdError("SDMF needs the time (CallerId.when, MMDDHHMM); use CallerId.at(datetime, ...)")
    if cid.number is not None:
        number = _ascii(cid.number, "number", 10)
    else:
        number = (cid.number_absent or UNAVAILABLE).encode()
    return _frame(SDMF, cid.when.encode() + number)


def mdmf_message(cid: CallerId) -> bytes:
    """Multiple data message format, type 0x80: the Bellcore MDMF and the ETSI call set-up message."""
    params = b""
    if cid.when is not None:
        params += bytes([PARAM_DATETIME, 8]) + cid.when.encode()
    if cid.number is not None:
        number = _ascii(cid.number, "number", 20)
        params += bytes([PARAM_NUMBER, len(number)]) + number
    else:
        params += bytes([PARAM_NUMBER_ABSENT, 1]) + (cid.number_absent or UNAVAILABLE).encode()
    if cid.name is not None:
        name = _ascii(cid.name, "name", 50)
        params += bytes([PARAM_NAME, len(name)]) + name
    elif cid.name_absent is not None:
        params += bytes([PARAM_NAME_ABSENT, 1]) + cid.name_absent.encode()
    return _frame(MDMF, params)


def parse_message(data: bytes) -> CallerId:
    """The CallerId in an SDMF or MDMF/ETSI message (type, length, body, checksum)."""
    if len(data) < 3:
        raise CallerIdError(f"caller ID message too short ({len(data)} bytes)")
    kind, length = data[0], data[1]
    if len(data) < length + 3:
        raise CallerIdError(f"caller ID message truncated: length byte says {length}, got {len(data) - 3}")
    body = data[2:2 + length]
    if _checksum(data[:2 + length]) != data[2 + length]:
        raise CallerIdError("caller ID checksum mismatch")
    text = body.decode("ascii", "replace")
    if kind == SDMF:
        if length < 9:
            raise CallerIdError(f"SDMF body of {length} bytes: needs 8 bytes of time and a number")
        rest = text[8:]
        if rest in (UNAVAILABLE, PRIVATE):
            return CallerId(when=text[:8], number_absent=rest)
        return CallerId(when=text[:8], number=rest)
    if kind != MDMF:
        raise CallerIdError(f"caller ID message type 0x{kind:02x} is neither SDMF (0x04) nor MDMF (0x80)")
    fields: dict[int, str] = {}
    pos = 0
    while pos + 2 <= length:
        code, size = body[pos], body[pos + 1]
        if pos + 2 + size > length:
            raise CallerIdError(f"MDMF parameter 0x{code:02x} runs past the end of the message")
        fields[code] = body[pos + 2:pos + 2 + size].decode("ascii", "replace")
        pos += 2 + size
    when = fields.get(PARAM_DATETIME)
    if when is not None and (len(when) != 8 or not when.isdigit()):
        when = None
    return CallerId(number=fields.get(PARAM_NUMBER) or None, name=fields.get(PARAM_NAME),
                    when=when, number_absent=_reason(fields.get(PARAM_NUMBER_ABSENT)),
                    name_absent=_reason(fields.get(PARAM_NAME_ABSENT)))


def _reason(value: str | None) -> str | None:
    # Unknown reason codes read as "unavailable" rather than failing the whole message.
    if value is None:
        return None
    return value if value in (UNAVAILABLE, PRIVATE) else UNAVAILABLE


# --- FSK modulation ---------------------------------------------------------------------------

def _uart_bits(data: bytes) -> list[int]:
    bits: list[int] = []
    for byte in data:
        bits.append(0)                                   # start bit = space
        bits.extend((byte >> i) & 1 for i in range(8))   # LSB first
        bits.append(1)                                   # stop bit = mark
    return bits


def fsk_audio(message: bytes, standard: str = "bell202", *, seizure_bits: int = 300, mark_bits: int = 180,
              level_dbm0: float = -13.0, rate: int = 8000) -> bytes:
    """The message as phase-continuous FSK: channel seizure (alternating 0/1), a mark run, the message
    bytes as 8N1 characters and two trailing mark bits so the last stop bit is whole."""
    spec = _standard(standard)
    bits = [i % 2 for i in range(seizure_bits)] + [1] * mark_bits + _uart_bits(message) + [1, 1]
    total = math.ceil(len(bits) * rate / spec.baud)
    index = np.minimum((np.arange(total) * spec.baud / rate).astype(np.int64), len(bits) - 1)
    freq = np.where(np.asarray(bits)[index] == 1, spec.mark_hz, spec.space_hz)
    phase = 2.0 * math.pi * np.cumsum(freq) / rate
    wave = dbm0_to_peak(level_dbm0) * np.sin(phase)
    return np.round(wave).astype("<i2").tobytes()


def _standard(name: str) -> FskStandard:
    try:
        return FSK_STANDARDS[name]
    except KeyError:
        raise CallerIdError(f"unknown FSK standard {name!r}: use one of {sorted(FSK_STANDARDS)}") from None


# --- FSK demodulation -------------------------------------------------------------------------

def _discriminate(samples: np.ndarray, spec: FskStandard, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: mark minus space energy over one bit time, and mark plus space (the carrier)."""
    n = np.arange(len(samples))
    width = max(2, round(rate / spec.baud))
    kernel = np.ones(width) / width
    energies = []
    for f in (spec.mark_hz, spec.space_hz):
        base = samples * np.exp(-2j * math.pi * f * n / rate)
        energies.append(np.abs(np.convolve(base, kernel, mode="same")) ** 2)
    return energies[0] - energies[1], energies[0] + energies[1]


def decode_fsk(audio: bytes, standard: str = "bell202", rate: int = 8000) -> bytes:
    """The first caller-ID message (type..checksum) found in FSK audio, checksum verified."""
    spec = _standard(standard)
    samples = np.frombuffer(audio[: len(audio) // 2 * 2], dtype="<i2").astype(np.float64)
    if len(samples) < rate * 0.05:
        raise CallerIdError("no caller ID: less than 50 ms of audio")
    decision, carrier = _discriminate(samples, spec, rate)
    # The carrier gate is relative to the loudest part, so the decoder does not care about line level.
    loud = np.percentile(carrier, 95)
    if loud <= 0:
        raise CallerIdError("no caller ID: the audio is silent")
    present = carrier > 0.1 * loud
    spb = rate / spec.baud
    mark = (decision > 0) & present
    start = _after_mark_run(mark, int(8 * spb))
    while start is not None:
        data = _uart_bytes(decision, present, start, spb)
        message = _first_message(data)
        if message is not None:
            return message
        start = _after_mark_run(mark, int(8 * spb), start + int(spb))
    raise CallerIdError(f"no caller ID message found in {len(samples) / rate:.2f} s of {spec.name} FSK audio")


def _after_mark_run(mark: np.ndarray, length: int, begin: int = 0) -> int | None:
    """Index where a run of at least `length` mark samples has lasted `length` samples."""
    run = 0
    # A plain loop over a boolean array of a few thousand samples: simple and fast enough.
    for i in range(begin, len(mark)):
        run = run + 1 if mark[i] else 0
        if run >= length:
            return i
    return None


def _uart_bytes(decision: np.ndarray, present: np.ndarray, start: int, spb: float) -> bytes:
    out = bytearray()
    half = spb * 0.25
    i = start
    end = len(decision)
    while i < end - 1:
        if not present[i]:
            break
        if decision[i] > 0 and decision[i + 1] <= 0:
            # Start-bit edge, interpolated to a fraction of a sample.
            edge = i + decision[i] / (decision[i] - decision[i + 1])
            bits = []
            for k in range(10):
                # Integrate over the middle of the bit: its edges carry the neighbours' energy.
                lo = int(round(edge + (k + 0.5) * spb - half))
                hi = int(round(edge + (k + 0.5) * spb + half)) + 1
                if hi >= end:
                    return bytes(out)
                bits.append(1 if decision[lo:hi].sum() > 0 else 0)
            if bits[0] != 0:
                i += 1        # a noise dip inside a mark run, not a start bit
                continue
            if bits[9] != 1:
                break         # framing error: the message ends (or never started) here
            out.append(sum(b << k for k, b in enumerate(bits[1:9])))
            i = int(edge + 9.5 * spb)
            continue
        i += 1
    return bytes(out)


def _first_message(data: bytes) -> bytes | None:
    for pos in range(len(data) - 2):
        if data[pos] not in (SDMF, MDMF):
            continue
        length = data[pos + 1]
        candidate = data[pos:pos + length + 3]
        if len(candidate) == length + 3 and _checksum(candidate[:-1]) == candidate[-1]:
            return candidate
    return None


def decode_caller_id(audio: bytes, standard: str = "bell202", rate: int = 8000) -> CallerId:
    """The CallerId carried by FSK audio."""
    return parse_message(decode_fsk(audio, standard, rate))


class CallerIdReceiver:
    """Collects line audio after a ring or polarity reversal and yields the CallerId once decoded.
    Holds at most `window` seconds; decodes every 100 ms of new audio (a message lasts ~0.5 s)."""

    def __init__(self, standard: str = "bell202", rate: int = 8000, window: float = 3.0) -> None:
        self.spec = _standard(standard)
        self.rate = rate
        self._limit = int(window * rate) * 2
        self._step = int(0.1 * rate) * 2
        self._buffer = bytearray()
        self._pending = 0

    def feed(self, frame: bytes) -> CallerId | None:
        self._buffer += frame
        if len(self._buffer) > self._limit:
            del self._buffer[: len(self._buffer) - self._limit]
        self._pending += len(frame)
        if self._pending < self._step:
            return None
        self._pending = 0
        try:
            return decode_caller_id(bytes(self._buffer), self.spec.name, self.rate)
        except CallerIdError:
            return None


# --- DTMF CLIP --------------------------------------------------------------------------------

def dtmf_clip_digits(cid: CallerId) -> str:
    """DTMF caller ID (ETSI ES 200 778-1 annex B, used in parts of Europe): A<number>C, or
    B<reason>C when withheld - B00C unavailable, B10C private."""
    if cid.number is not None:
        if not all(c in "0123456789*#" for c in cid.number):
            raise CallerIdError(f"DTMF CLIP can only carry digits, * and #: {cid.number!r}")
        return f"A{cid.number}C"
    return "B10C" if cid.number_absent == PRIVATE else "B00C"


def parse_dtmf_clip(digits: str) -> CallerId | None:
    """The CallerId in a detected digit string, or None when it holds no complete A..C / B..C frame."""
    for lead in ("A", "B"):
        start = digits.find(lead)
        end = digits.find("C", start + 1) if start >= 0 else -1
        if start < 0 or end < 0:
            continue
        inner = digits[start + 1:end]
        if lead == "A" and inner:
            return CallerId(number=inner)
        if lead == "B":
            return CallerId(number_absent=PRIVATE if inner == "10" else UNAVAILABLE)
    return None


# --- per-country ringing and caller-ID plans --------------------------------------------------

# Ring cadences in milliseconds, alternating on/off starting with on.
RING_CADENCES: dict[str, tuple[int, ...]] = {
    "us": (2000, 4000),                # GR-506 / GR-30: 2 s on, 4 s off
    "uk": (400, 200, 400, 2000),       # BT SIN 350: double ring
}

# ETSI dual-tone alerting signal (DT-AS) that wakes a UK phone's CID receiver before the FSK.
TONE_ALERT = ToneSpec((2130.0, 2750.0), level_dbm0=-16.0)


@dataclass(frozen=True)
class CallerIdPlan:
    """How a country delivers caller ID on an FXS port.
    before_ring: FSK goes out before the first ring (after polarity reversal + tone alert),
    otherwise in the silent interval after the first ring, `delay_ms` after it ends."""
    fsk: str
    before_ring: bool
    delay_ms: int
    polarity_reversal: bool = False
    tone_alert_ms: int = 0


CALLER_ID_PLANS: dict[str, CallerIdPlan] = {
    "us": CallerIdPlan(fsk="bell202", before_ring=False, delay_ms=500),
    # SIN 227: reversal, >= 100 ms, 100 ms DT-AS, 45-75 ms, FSK, then ringing >= 200 ms after.
    "uk": CallerIdPlan(fsk="v23", before_ring=True, delay_ms=100, polarity_reversal=True, tone_alert_ms=100),
}


# DTMF CLIP as sent in parts of Europe (Netherlands, Denmark): reversal, digits, then ringing.
DTMF_CLIP_PLAN = CallerIdPlan(fsk="dtmf", before_ring=True, delay_ms=300, polarity_reversal=True)


def ring_cadence(country: str) -> tuple[int, ...]:
    try:
        return RING_CADENCES[country.lower()]
    except (KeyError, AttributeError):
        raise CallerIdError(f"no ring cadence for country {country!r}: use one of {sorted(RING_CADENCES)}") from None


def caller_id_plan(country: str) -> CallerIdPlan:
    try:
        return CALLER_ID_PLANS[country.lower()]
    except (KeyError, AttributeError):
        raise CallerIdError(f"no caller-ID plan for country {country!r}: use one of {sorted(CALLER_ID_PLANS)}") from None


def caller_id_audio(cid: CallerId, country: str | CallerIdPlan, rate: int = 8000) -> bytes:
    """The audio an FXS port plays for this country (or plan): for the UK the tone alert, a 50 ms gap
    and V.23 FSK of the MDMF/ETSI message; for the US Bell 202 FSK of the MDMF message; for
    DTMF_CLIP_PLAN the A<number>C digits."""
    plan = country if isinstance(country, CallerIdPlan) else caller_id_plan(country)
    if plan.fsk == "dtmf":
        return dtmf_samples(dtmf_clip_digits(cid), rate=rate)
    fsk = fsk_audio(mdmf_message(cid), plan.fsk, rate=rate)
    if not plan.tone_alert_ms:
        return fsk
    alert = ToneGenerator(TONE_ALERT, rate).frame(rate * plan.tone_alert_ms // 1000)
    gap = bytes(2 * rate * 50 // 1000)
    return alert + gap + fsk
