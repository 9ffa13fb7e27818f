"""G.711 mu-law (PCMU) and A-law (PCMA) codecs on 16-bit little-endian PCM.

The encoders are one 65,536-entry lookup table indexed by the raw 16-bit sample and the decoders
one 256-entry table, so a 20 ms frame costs a single numpy take() (about 3 us for 160 samples).
The tables are built from the ITU-T G.711 segment rules as written in the Sun reference code
(the same code CPython's audioop uses), so the output is bit-exact with audioop's lin2ulaw,
lin2alaw, ulaw2lin and alaw2lin.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

# Segment end points of the reference code: mu-law works on 14-bit magnitudes, A-law on 13-bit.
_SEG_UEND = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_SEG_AEND = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159


def _all_samples() -> np.ndarray:
    """Every int16 value, ordered so that index == the sample's bits read as uint16."""
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)


def _build_ulaw_encode() -> np.ndarray:
    pcm = _all_samples() >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_SEG_UEND, mag, side="left")
    code = (np.minimum(seg, 7) << 4) | ((mag >> (np.minimum(seg, 7) + 1)) & 0xF)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


def _build_alaw_encode() -> np.ndarray:
    pcm = _all_samples() >> 3
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    mag = np.where(pcm >= 0, pcm, -pcm - 1)
    seg = np.searchsorted(_SEG_AEND, mag, side="left")
    segc = np.minimum(seg, 7)
    quant = np.where(segc < 2, mag >> 1, mag >> np.maximum(segc, 1)) & 0xF
    code = np.where(seg >= 8, 0x7F, (segc << 4) | quant)
    return (code ^ mask).astype(np.uint8)


def _build_ulaw_decode() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + _ULAW_BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype("<i2")


def _build_alaw_decode() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype("<i2")


_ULAW_ENC = _build_ulaw_encode()
_ALAW_ENC = _build_alaw_encode()
_ULAW_DEC = _build_ulaw_decode()
_ALAW_DEC = _build_alaw_decode()

# One 20 ms packet (160 samples at 8 kHz) of digital silence: the code for linear 0.
SILENCE = {"PCMU": b"\xff" * 160, "PCMA": b"\xd5" * 160}


def _samples(pcm16le: bytes) -> np.ndarray:
    if len(pcm16le) % 2:
        raise ValueError(f"PCM input has an odd length ({len(pcm16le)} bytes): 16-bit samples need "
                         "an even number of bytes")
    return np.frombuffer(pcm16le, dtype="<u2")


def ulaw_encode(pcm16le: bytes) -> bytes:
    """16-bit little-endian PCM -> mu-law (one byte per sample)."""
    return _ULAW_ENC.take(_samples(pcm16le)).tobytes()


def ulaw_decode(data: bytes) -> bytes:
    """mu-law -> 16-bit little-endian PCM."""
    return _ULAW_DEC.take(np.frombuffer(data, dtype=np.uint8)).tobytes()


def alaw_encode(pcm16le: bytes) -> bytes:
    """16-bit little-endian PCM -> A-law (one byte per sample)."""
    return _ALAW_ENC.take(_samples(pcm16le)).tobytes()


def alaw_decode(data: bytes) -> bytes:
    """A-law -> 16-bit little-endian PCM."""
    return _ALAW_DEC.take(np.frombuffer(data, dtype=np.uint8)).tobytes()


_ENCODERS = {"PCMU": ulaw_encode, "PCMA": alaw_encode}
_DECODERS = {"PCMU": ulaw_decode, "PCMA": alaw_decode}


def _lookup(table: dict, codec: str, what: str) -> Callable[[bytes], bytes]:
    try:
        return table[codec.upper()]
    except (KeyError, AttributeError):
        raise ValueError(f"no G.711 {what} for codec {codec!r}: use one of {sorted(table)}") from None


def encoder(codec: str) -> Callable[[bytes], bytes]:
    """The encode function for an SDP codec name ("PCMU" or "PCMA")."""
    return _lookup(_ENCODERS, codec, "encoder")


def decoder(codec: str) -> Callable[[bytes], bytes]:
    """The decode function for an SDP codec name ("PCMU" or "PCMA")."""
    return _lookup(_DECODERS, codec, "decoder")
