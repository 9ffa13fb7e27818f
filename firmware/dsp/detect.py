"""Tone and DTMF detection on 16-bit PCM (Goertzel single-bin DFTs, vectorised with numpy).

goertzel_power() evaluates the DFT at exactly one frequency, which is what the Goertzel
recursion computes; doing it as a dot product with a cached cos/sin basis is the same number
at numpy speed, and lets a whole buffer of blocks go through one matrix product.
"""
from __future__ import annotations

import functools
import logging
import math
from typing import Sequence

import numpy as np

from firmware.dsp.levels import dbm0_to_power, dbm0_to_peak

logger = logging.getLogger(__name__)

# Below this a "tone" is line noise. Q.35 call-progress tones arrive at about -13..-30 dBm0.
TONE_MIN_DBM0 = -45.0

DTMF_ROWS = (697.0, 770.0, 852.0, 941.0)
DTMF_COLS = (1209.0, 1336.0, 1477.0, 1633.0)
DTMF_KEYS = ("123A", "456B", "789C", "*0#D")


def _as_samples(pcm16le: bytes) -> np.ndarray:
    if len(pcm16le) % 2:
        raise ValueError(f"PCM input has an odd length ({len(pcm16le)} bytes): 16-bit samples need "
                         "an even number of bytes")
    return np.frombuffer(pcm16le, dtype="<i2").astype(np.float64)


@functools.lru_cache(maxsize=256)
def _basis(freqs: tuple[float, ...], n: int, rate: int) -> np.ndarray:
    """(n, 2*len(freqs)) matrix: cos columns then sin columns, one pair per frequency."""
    k = np.arange(n)[:, None]
    w = 2.0 * math.pi * np.asarray(freqs)[None, :] / rate
    return np.hstack([np.cos(w * k), np.sin(w * k)])


def _bin_powers(blocks: np.ndarray, freqs: tuple[float, ...], rate: int) -> np.ndarray:
    """Mean-square power at each frequency for each row of `blocks` (rows x freqs).
    A sine of amplitude A exactly at a frequency gives A**2 / 2, the same units as np.mean(x**2)."""
    n = blocks.shape[-1]
    proj = blocks @ _basis(freqs, n, rate)
    nf = len(freqs)
    return 2.0 * (proj[..., :nf] ** 2 + proj[..., nf:] ** 2) / (n * n)


@functools.lru_cache(maxsize=256)
def _tone_subspace(freqs: tuple[float, ...], n: int, rate: int) -> np.ndarray:
    """Orthonormal basis (n, 1 + 2*len(freqs)) of DC plus all sines at these frequencies.
    Projecting on it measures the energy of a multi-frequency tone exactly, where summing
    single-bin powers would double-count or miss the overlap of near frequencies in short
    blocks; DC is a column of its own because a sine block is not orthogonal to its mean."""
    q, _ = np.linalg.qr(np.hstack([np.ones((n, 1)), _basis(freqs, n, rate)]))
    return q


def _tone_energy(blocks: np.ndarray, freqs: tuple[float, ...], rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(tone power, everything-else power) of each block, as mean squares; DC is ignored."""
    n = blocks.shape[-1]
    proj = blocks @ _tone_subspace(freqs, n, rate)
    dc = proj[..., 0] ** 2
    tone = np.sum(proj[..., 1:] ** 2, axis=-1)
    other = np.maximum(np.sum(blocks * blocks, axis=-1) - dc - tone, 0.0)
    return tone / n, other / n


def _freq_tuple(freq: float | Sequence[float]) -> tuple[float, ...]:
    if isinstance(freq, (int, float)):
        return (float(freq),)
    freqs = tuple(float(f) for f in freq)
    if not freqs:
        raise ValueError("no frequency given: pass a frequency in Hz or a sequence of them")
    return freqs


def goertzel_power(samples: np.ndarray, freq: float, rate: int = 8000) -> float:
    """Power of the component at `freq` in `samples` (A**2/2 for a sine of amplitude A)."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        return 0.0
    return float(_bin_powers(x, (float(freq),), rate)[0])


def tone_present(pcm16le: bytes, freq: float | Sequence[float], rate: int = 8000,
                 min_snr_db: float = 10.0) -> bool:
    """True when the energy at `freq` (or the sum over several frequencies, e.g. (480, 620) for
    US busy) stands min_snr_db above everything else in the buffer and above line noise."""
    x = _as_samples(pcm16le)
    if x.size == 0:
        return False
    tone_p, other = _tone_energy(x, _freq_tuple(freq), rate)
    return bool(tone_p >= dbm0_to_power(TONE_MIN_DBM0)
                and tone_p >= 10.0 ** (min_snr_db / 10.0) * max(float(other), 1e-9))


def dominant_frequency(pcm16le: bytes, rate: int = 8000, lo: float = 200, hi: float = 3400) -> float:
    """Frequency in Hz of the strongest spectral peak between lo and hi (0.0 for silence)."""
    x = _as_samples(pcm16le)
    if x.size < 2:
        raise ValueError(f"dominant_frequency needs at least 2 samples, got {x.size}")
    if not 0 <= lo < hi <= rate / 2:
        raise ValueError(f"band {lo}..{hi} Hz must lie within 0..{rate / 2} Hz with lo < hi")
    x = (x - x.mean()) * np.hanning(x.size)
    # Zero padding to >= 4x and >= 1 s of samples puts FFT bins <= 1 Hz apart before interpolation.
    nfft = 1 << max(int(math.ceil(math.log2(max(4 * x.size, rate)))), 1)
    mag = np.abs(np.fft.rfft(x, nfft))
    freqs = np.fft.rfftfreq(nfft, 1.0 / rate)
    band = np.nonzero((freqs >= lo) & (freqs <= hi))[0]
    k = int(band[np.argmax(mag[band])])
    if mag[k] == 0.0:
        return 0.0
    if 0 < k < len(mag) - 1:
        # Parabolic interpolation of the log magnitude around the peak bin.
        a, b, c = np.log(mag[k - 1:k + 2] + 1e-12)
        denom = a - 2 * b + c
        offset = 0.5 * (a - c) / denom if denom else 0.0
        return float((k + offset) * rate / nfft)
    return float(freqs[k])


def on_off_segments(pcm16le: bytes, freq: float | Sequence[float], rate: int = 8000,
                    block_ms: int = 10) -> list[tuple[bool, float]]:
    """The tone's cadence: runs of (tone on?, seconds), measured in blocks of block_ms.
    A block counts as on when the tone is above line noise and carries at least half the block's
    energy: a block that the tone only partly covers then rounds to the nearer edge, and the
    beating of two close frequencies (US ringback 440+480 Hz) does not chop the tone up."""
    x = _as_samples(pcm16le)
    bn = max(1, round(rate * block_ms / 1000))
    nblocks = x.size // bn
    if nblocks == 0:
        return []
    blocks = x[: nblocks * bn].reshape(nblocks, bn)
    tone_p, other = _tone_energy(blocks, _freq_tuple(freq), rate)
    on = (tone_p >= dbm0_to_power(TONE_MIN_DBM0)) & (tone_p >= other)
    segments: list[tuple[bool, float]] = []
    run_start = 0
    for i in range(1, nblocks + 1):
        if i == nblocks or on[i] != on[run_start]:
            segments.append((bool(on[run_start]), (i - run_start) * bn / rate))
            run_start = i
    return segments


class DtmfDetector:
    """Streaming DTMF receiver in the spirit of ITU-T Q.24: a digit needs one row and one column
    tone, each above -32 dBm0, twist within 8 dB, both 6 dB clear of the other tones of their group,
    and most of the signal energy (which rejects speech); it must hold for 3 consecutive 25.6 ms
    windows 10 ms apart (>= ~40 ms of tone; 20 ms blips are ignored) and is reported once. The same
    digit again needs a pause (3 windows without it, which a 40 ms pause gives and a 10 ms
    drop-out from a lost packet does not)."""

    MIN_TONE_DBM0 = -32.0
    MAX_TWIST_DB = 8.0
    MIN_GROUP_MARGIN_DB = 6.0
    MIN_ENERGY_SHARE = 0.6
    WINDOWS_ON = 3
    WINDOWS_OFF = 3

    def __init__(self, rate: int = 8000) -> None:
        self.rate = rate
        # 205 samples at 8 kHz is the classic Goertzel DTMF block: bins 39 Hz apart, which
        # separates the 73 Hz-spaced row tones.
        self._window = round(205 * rate / 8000)
        self._hop = round(rate / 100)
        self._freqs = DTMF_ROWS + DTMF_COLS
        self._buf = np.zeros(0)
        self._candidate: str | None = None
        self._count = 0
        self._active: str | None = None
        self._missed = 0
        self._min_p = dbm0_to_power(self.MIN_TONE_DBM0)
        self._twist = 10.0 ** (self.MAX_TWIST_DB / 10.0)
        self._margin = 10.0 ** (self.MIN_GROUP_MARGIN_DB / 10.0)
        basis = _basis(self._freqs, self._window, rate)
        self._basis = np.hstack([basis, np.ones((self._window, 1))])
        self._basis_sums = basis.sum(axis=0).tolist()

    def _classify(self, windows: np.ndarray) -> list[str | None]:
        """The digit each analysis window holds, or None."""
        # One matrix product gives the 8 cos and 8 sin projections plus the window sum (last
        # column); the mean is removed afterwards (projection minus mean x column sum), and the
        # per-window arithmetic on those 17 numbers is cheaper in plain Python than in numpy
        # calls for the two windows of a 20 ms frame.
        proj = (windows @ self._basis).tolist()
        energy = np.einsum("ij,ij->i", windows, windows).tolist()
        n, sums = self._window, self._basis_sums
        scale = 2.0 / (n * n)
        verdicts = []
        for row, e in zip(proj, energy):
            mean = row[16] / n
            p = [scale * ((row[i] - mean * sums[i]) ** 2 + (row[i + 8] - mean * sums[i + 8]) ** 2)
                 for i in range(8)]
            verdicts.append(self._digit(p, e / n - mean * mean))
        return verdicts

    def _digit(self, p: list[float], total: float) -> str | None:
        rows, cols = p[:4], p[4:]
        pr, pc = max(rows), max(cols)
        if pr < self._min_p or pc < self._min_p or pr + pc < self.MIN_ENERGY_SHARE * total:
            return None
        if pr > self._twist * pc or pc > self._twist * pr:
            return None
        r, c = rows.index(pr), cols.index(pc)
        if any(v * self._margin > pr for i, v in enumerate(rows) if i != r):
            return None
        if any(v * self._margin > pc for i, v in enumerate(cols) if i != c):
            return None
        return DTMF_KEYS[r][c]

    @property
    def active(self) -> str | None:
        """The digit whose tone is still on (reported by feed() and not ended yet), or None. It
        ends after WINDOWS_OFF windows without the tone (~30 ms after the key is released)."""
        return self._active

    def feed(self, pcm16le: bytes) -> str:
        """Add audio; returns the digits whose detection completed in it (usually "")."""
        x = _as_samples(pcm16le)
        buf = np.concatenate([self._buf, x]) if self._buf.size else x
        if buf.size < self._window:
            self._buf = buf
            return ""
        nwin = (buf.size - self._window) // self._hop + 1
        used = (nwin - 1) * self._hop + self._window
        if float(np.dot(buf[:used], buf[:used])) < 2.0 * self._min_p * self._window:
            verdicts: list[str | None] = [None] * nwin  # too quiet for any digit: skip the bins
        else:
            step = buf.strides[0]
            windows = np.lib.stride_tricks.as_strided(
                buf, shape=(nwin, self._window), strides=(self._hop * step, step), writeable=False)
            verdicts = self._classify(windows)
        self._buf = buf[nwin * self._hop:].copy()
        digits = []
        for digit in verdicts:
            if digit is not None and digit == self._candidate:
                self._count += 1
            else:
                self._candidate, self._count = digit, 1 if digit is not None else 0
            if digit is not None and digit == self._active:
                self._missed = 0
            elif self._active is not None:
                self._missed += 1
                if self._missed >= self.WINDOWS_OFF:
                    self._active = None
            if digit is not None and self._count >= self.WINDOWS_ON and digit != self._active:
                self._active, self._missed = digit, 0
                digits.append(digit)
                logger.debug("DTMF digit %s detected", digit)
        return "".join(digits)


def detect_dtmf(pcm16le: bytes, rate: int = 8000) -> str:
    """All DTMF digits in a buffer, in order."""
    return DtmfDetector(rate).feed(pcm16le)


def dtmf_samples(digits: str, rate: int = 8000, on_ms: int = 80, off_ms: int = 80,
                 row_dbm0: float = -9.0, col_dbm0: float = -7.0) -> bytes:
    """pcm16le DTMF for `digits` (0-9 * # A-D): each digit on_ms of tone then off_ms of silence.
    The column tone is 2 dB louder, as telephones send it (pre-emphasis against line loss)."""
    on_n, off_n = round(rate * on_ms / 1000), round(rate * off_ms / 1000)
    t = np.arange(on_n) / rate
    out: list[np.ndarray] = []
    for ch in digits.upper():
        for r, keys in enumerate(DTMF_KEYS):
            if ch in keys:
                c = keys.index(ch)
                break
        else:
            raise ValueError(f"{ch!r} is not a DTMF digit: use 0-9, *, #, A-D")
        out.append(dbm0_to_peak(row_dbm0) * np.sin(2 * math.pi * DTMF_ROWS[r] * t)
                   + dbm0_to_peak(col_dbm0) * np.sin(2 * math.pi * DTMF_COLS[c] * t))
        out.append(np.zeros(off_n))
    if not out:
        return b""
    return np.round(np.concatenate(out)).astype("<i2").tobytes()
