"""Signal levels in dBm0 for 16-bit linear PCM that is carried as G.711.

0 dBm0 is the G.711 digital milliwatt (G.711 Table 5/6): decoded to 16-bit it is a sine of peak
22,651 (RMS 16,016), about 3.2 dB below a full-scale sine.
"""
from __future__ import annotations

import math

DBM0_RMS = 16016.0


def dbm0_to_peak(dbm0: float) -> float:
    """Peak amplitude (16-bit units) of a sine at this level."""
    return DBM0_RMS * math.sqrt(2.0) * 10.0 ** (dbm0 / 20.0)


def dbm0_to_power(dbm0: float) -> float:
    """Mean square (16-bit units squared) of a signal at this level."""
    return DBM0_RMS * DBM0_RMS * 10.0 ** (dbm0 / 10.0)


def power_to_dbm0(mean_square: float) -> float:
    """Level of a signal from its mean square; -inf for digital silence."""
    if mean_square <= 0.0:
        return float("-inf")
    return 10.0 * math.log10(mean_square / (DBM0_RMS * DBM0_RMS))
