"""Call-progress tones (dial, ringback, busy, congestion) with UK and US cadences, at 8 kHz.

Frequencies and cadences: UK from BT SIN 350, US from the Precise Tone Plan (ANSI T1.401).
A ToneGenerator is per call; the samples of a whole cadence cycle are computed once per
(ToneSpec, rate) and shared, so producing a 20 ms frame is a slice of a cached buffer.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from firmware.dsp.levels import dbm0_to_peak

# Gating edges ramp over 2 ms (raised cosine): an abrupt start or stop of a sine is a click
# that spreads energy over the whole band.
_RAMP_S = 0.002


@dataclass(frozen=True)
class ToneSpec:
    """Tone frequencies in Hz played together, and a cadence of alternating on/off seconds
    starting with on (an empty cadence = continuous). level_dbm0 is the level of each frequency."""
    freqs: tuple[float, ...]
    cadence: tuple[float, ...] = ()
    level_dbm0: float = -13.0

    def __post_init__(self) -> None:
        # Tuples keep the spec hashable: it is the key of the cycle cache.
        object.__setattr__(self, "freqs", tuple(float(f) for f in self.freqs))
        object.__setattr__(self, "cadence", tuple(float(s) for s in self.cadence))
        if not self.freqs or any(f <= 0 for f in self.freqs):
            raise ValueError(f"ToneSpec needs one or more positive frequencies, got {self.freqs!r}")
        if len(self.cadence) % 2 or any(s <= 0 for s in self.cadence):
            raise ValueError("ToneSpec cadence must be on/off pairs of positive seconds, "
                             f"got {self.cadence!r}")


TONES: dict[tuple[str, str], ToneSpec] = {
    ("uk", "dial"): ToneSpec((350.0, 440.0)),
    ("uk", "ringback"): ToneSpec((400.0, 450.0), (0.4, 0.2, 0.4, 2.0)),
    ("uk", "busy"): ToneSpec((400.0,), (0.375, 0.375)),
    ("uk", "congestion"): ToneSpec((400.0,), (0.4, 0.35, 0.225, 0.525)),
    ("us", "dial"): ToneSpec((350.0, 440.0)),
    ("us", "ringback"): ToneSpec((440.0, 480.0), (2.0, 4.0)),
    ("us", "busy"): ToneSpec((480.0, 620.0), (0.5, 0.5)),
    ("us", "congestion"): ToneSpec((480.0, 620.0), (0.25, 0.25)),
}


def tone(country: str, name: str) -> ToneSpec:
    """The ToneSpec for a country ("uk", "us") and tone name ("dial", "ringback", "busy", "congestion")."""
    try:
        return TONES[(country.lower(), name.lower())]
    except (KeyError, AttributeError):
        countries = sorted({c for c, _ in TONES})
        names = sorted({n for _, n in TONES})
        raise ValueError(f"no tone {name!r} for country {country!r}: countries are {countries}, "
                         f"tones are {names}") from None


def _period_samples(freqs: tuple[float, ...], rate: int) -> int:
    """Smallest sample count after which every frequency is back at phase 0 (1 if none is)."""
    if all(float(f).is_integer() for f in freqs):
        g = rate
        for f in freqs:
            g = math.gcd(g, int(f))
        return rate // g
    return 1


def _cycle_samples(spec: ToneSpec, rate: int) -> int:
    period = _period_samples(spec.freqs, rate)
    if spec.cadence:
        cadence = round(sum(spec.cadence) * rate)
        # A whole number of both the cadence and the sine period keeps the loop seamless.
        return cadence * period // math.gcd(cadence, period)
    # Continuous tone: at least one second so that any frame size is a single slice or two.
    return period * max(1, math.ceil(rate / period))


@functools.lru_cache(maxsize=64)
def _cycle(spec: ToneSpec, rate: int) -> bytes:
    """One seamless loop of the tone as pcm16le (computed once per spec and rate)."""
    n = _cycle_samples(spec, rate)
    t = np.arange(n) / rate
    amp = dbm0_to_peak(spec.level_dbm0)
    wave = sum(amp * np.sin(2.0 * math.pi * f * t) for f in spec.freqs)
    if spec.cadence:
        gate = np.zeros(n)
        ramp_n = max(1, round(_RAMP_S * rate))
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp_n) + 0.5) / ramp_n)
        cadence_n = round(sum(spec.cadence) * rate)
        for start_cycle in range(0, n, cadence_n):
            pos = start_cycle
            for i, seconds in enumerate(spec.cadence):
                length = round(seconds * rate)
                if i % 2 == 0:
                    on = np.ones(length)
                    k = min(ramp_n, length // 2)
                    on[:k] = ramp[:k]
                    on[length - k:] = ramp[:k][::-1]
                    gate[pos:pos + length] = on[: n - pos]
                pos += length
        wave = wave * gate
    return np.clip(np.round(wave), -32768, 32767).astype("<i2").tobytes()


class ToneGenerator:
    """Plays one ToneSpec frame by frame, continuous in phase and cadence across frames."""

    def __init__(self, spec: ToneSpec, rate: int = 8000) -> None:
        self.spec = spec
        self.rate = rate
        self._cycle = _cycle(spec, rate)
        self._pos = 0

    def frame(self, samples: int = 160) -> bytes:
        """The next `samples` samples of the tone as pcm16le."""
        if samples < 0:
            raise ValueError(f"frame size must be a non-negative sample count, got {samples}")
        want = samples * 2
        cycle = self._cycle
        end = self._pos + want
        if end <= len(cycle):
            out = cycle[self._pos:end]
            self._pos = end % len(cycle)
            return out
        parts = [cycle[self._pos:]]
        need = want - len(parts[0])
        while need > len(cycle):
            parts.append(cycle)
            need -= len(cycle)
        parts.append(cycle[:need])
        self._pos = need % len(cycle)
        return b"".join(parts)


# Default music on hold until an office uploads its own: a slow arpeggio of soft notes (C major,
# A minor, F major, G major), each with a smooth attack and decay so the G.711 stream carries no
# clicks. 8 s, generated once; the held party hears it looped.
_HOLD_CHORDS = ((261.63, 329.63, 392.00), (220.00, 261.63, 329.63), (174.61, 220.00, 261.63),
                (196.00, 246.94, 293.66))
_HOLD_NOTE_S = 0.5


@functools.lru_cache(maxsize=2)
def hold_music(rate: int = 8000) -> bytes:
    """pcm16le music on hold, about -16 dBm0 (below speech level, as hold music should be)."""
    n = int(_HOLD_NOTE_S * rate)
    t = np.arange(n) / rate
    envelope = np.sin(np.pi * np.arange(n) / n) ** 2
    peak = dbm0_to_peak(-16.0)
    notes = []
    for chord in _HOLD_CHORDS:
        for freq in (*chord, chord[1]):
            wave = np.sin(2 * np.pi * freq * t) + 0.3 * np.sin(2 * np.pi * 2 * freq * t)
            notes.append(wave / 1.3 * envelope * peak)
    return np.clip(np.round(np.concatenate(notes)), -32768, 32767).astype("<i2").tobytes()
