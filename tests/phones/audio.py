"""What did a phone hear? Tone checks on the WAV files the test phones record.

tone_present(wav, 700) answers "did this phone hear 700 Hz"; on_off_pattern(wav, 425) gives the
cadence of a ringback or busy tone. Each 50 ms frame is judged by firmware.dsp.detect.tone_present
(tone energy min_snr_db above everything else and above line noise); G.711 quantisation noise sits
~35 dB below a full tone, so the default 10 dB separates "tone" from "speech, noise or two tones".
"""

import logging
import struct
from pathlib import Path

import numpy as np

from firmware.dsp import detect

logger = logging.getLogger(__name__)

FRAME_S = 0.05


def read_wav(path):
    """Return (samples as float64 mono, rate) of a 16-bit PCM WAV.

    Files still being written (pjsua2 and baresip fix the header sizes only on close) are read to
    their end instead of trusting a zero or stale data size.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise ValueError(f"{path} is not a WAV file (no RIFF/WAVE header)")
    pos, fmt, data = 12, None, None
    while pos + 8 <= len(raw):
        cid, size = raw[pos:pos + 4], struct.unpack("<I", raw[pos + 4:pos + 8])[0]
        body = pos + 8
        if cid == b"fmt ":
            fmt = struct.unpack("<HHIIHH", raw[body:body + 16])
        elif cid == b"data":
            end = body + size if 0 < size <= len(raw) - body else len(raw)
            data = raw[body:end]
            break
        pos = body + size + (size & 1)
    if fmt is None or data is None:
        raise ValueError(f"{path}: WAV without fmt or data chunk")
    tag, channels, rate, _, _, bits = fmt
    if tag != 1 or bits != 16:
        raise ValueError(f"{path}: need 16-bit PCM WAV, got format {tag} with {bits} bits")
    samples = np.frombuffer(data[:len(data) - len(data) % (2 * channels)], dtype="<i2")
    return samples.reshape(-1, channels)[:, 0].astype(np.float64), rate


def _frames_with_tone(samples, rate, hz, min_snr_db):
    # The appliance's own detector (firmware.dsp.detect) judges each frame, so tests and the
    # PBX agree on what "a tone" is.
    n = int(rate * FRAME_S)
    pcm = samples.astype("<i2").tobytes()
    return np.array([detect.tone_present(pcm[i * 2 * n:(i + 1) * 2 * n], hz, rate, min_snr_db)
                     for i in range(len(samples) // n)], dtype=bool)


def _window(wav_path, start_s, end_s):
    # Negative times count from the end, like Python slices: start_s=-1 is the last second.
    samples, rate = read_wav(wav_path)
    a = None if start_s is None else int(start_s * rate)
    b = None if end_s is None else int(end_s * rate)
    return samples[a:b], rate


def tone_fraction(wav_path, hz, start_s=None, end_s=None, min_snr_db=10.0):
    """Share (0..1) of 50 ms frames in [start_s, end_s) that carry hz."""
    samples, rate = _window(wav_path, start_s, end_s)
    hits = _frames_with_tone(samples, rate, hz, min_snr_db)
    return float(hits.mean()) if len(hits) else 0.0


def tone_present(wav_path, hz, start_s=None, end_s=None, min_snr_db=10.0, min_fraction=0.5):
    """True if hz is heard in at least min_fraction of the frames in [start_s, end_s)."""
    frac = tone_fraction(wav_path, hz, start_s, end_s, min_snr_db)
    logger.info("%s: %.0f Hz in %.0f%% of frames", Path(wav_path).name, hz, frac * 100)
    return frac >= min_fraction


def on_off_pattern(wav_path, hz, min_snr_db=10.0):
    """Cadence of hz as [(on: bool, seconds), ...], e.g. ringback -> [(True, 1.0), (False, 4.0), ...]."""
    samples, rate = read_wav(wav_path)
    hits = _frames_with_tone(samples, rate, hz, min_snr_db)
    runs = []
    for on in hits:
        if runs and runs[-1][0] == bool(on):
            runs[-1][1] += FRAME_S
        else:
            runs.append([bool(on), FRAME_S])
    return [(on, round(d, 3)) for on, d in runs]
