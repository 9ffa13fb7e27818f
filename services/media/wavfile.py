"""WAV files <-> 8 kHz mono 16-bit PCM, the format the media engine works in.

read_wav() accepts what people actually upload as greetings and music on hold: integer PCM of
8/16/24/32 bits, 32/64-bit float, G.711 A-law and mu-law, WAVE_FORMAT_EXTENSIBLE headers, any
channel count (mixed down) and any rate (resampled). Writes are atomic (temp file + fsync +
rename), so a power cut never leaves a half-written prompt or voicemail behind.
"""
from __future__ import annotations

import logging
import math
import os
import struct
import tempfile
from pathlib import Path

from services.media.lazy_numpy import np

logger = logging.getLogger(__name__)

RATE = 8000
# mkstemp creates 0600; prompts and recordings are read by other services (web UI, mail).
_FILE_MODE = 0o644
_PCM, _FLOAT, _ALAW, _ULAW, _EXTENSIBLE = 1, 3, 6, 7, 0xFFFE


def _header(data_bytes: int, rate: int) -> bytes:
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, _PCM, 1, rate, rate * 2, 2, 16)
            + b"data" + struct.pack("<I", data_bytes))


def _fmt_and_data(raw: bytes, name: str) -> tuple[tuple, memoryview]:
    if len(raw) < 12 or raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise ValueError(f"{name} is not a WAV file (no RIFF/WAVE header): convert it to WAV, "
                         "e.g. sox INPUT -r 8000 -c 1 -b 16 OUTPUT.wav")
    fmt = None
    pos = 12
    view = memoryview(raw)
    while pos + 8 <= len(raw):
        cid = raw[pos:pos + 4]
        size = struct.unpack_from("<I", raw, pos + 4)[0]
        body = pos + 8
        if cid == b"fmt ":
            if size < 16:
                raise ValueError(f"{name} has a truncated fmt chunk ({size} bytes): re-export the file")
            fmt = struct.unpack_from("<HHIIHH", raw, body)
            if fmt[0] == _EXTENSIBLE and size >= 40:
                # The real format code is the first 2 bytes of the SubFormat GUID.
                fmt = (struct.unpack_from("<H", raw, body + 24)[0],) + fmt[1:]
        elif cid == b"data":
            if fmt is None:
                raise ValueError(f"{name} has its data chunk before the fmt chunk: re-export the file")
            # A writer that crashed leaves size 0 or 0xFFFFFFFF: take the data to the end of file.
            end = len(raw) if size in (0, 0xFFFFFFFF) or body + size > len(raw) else body + size
            return fmt, view[body:end]
        pos = body + size + (size & 1)  # chunks are padded to even length
    raise ValueError(f"{name} has no {'fmt' if fmt is None else 'data'} chunk: re-export the file")


def _to_float(fmt: tuple, data: memoryview, name: str) -> tuple[np.ndarray, int]:
    """Samples as float64 in -1..1, shape (frames, channels), and the sample rate."""
    code, channels, rate, _byte_rate, _align, bits = fmt
    if channels < 1 or rate < 1:
        raise ValueError(f"{name} declares {channels} channels at {rate} Hz: the header is damaged")
    width = {_ALAW: 1, _ULAW: 1}.get(code, (bits + 7) // 8)
    frame = width * channels
    usable = len(data) - len(data) % frame
    data = data[:usable]
    if code == _PCM and width == 1:
        x = (np.frombuffer(data, np.uint8).astype(np.float64) - 128.0) / 128.0
    elif code == _PCM and width == 2:
        x = np.frombuffer(data, "<i2").astype(np.float64) / 32768.0
    elif code == _PCM and width == 3:
        b = np.frombuffer(data, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = np.where(v >= 1 << 23, v - (1 << 24), v).astype(np.float64) / float(1 << 23)
    elif code == _PCM and width == 4:
        x = np.frombuffer(data, "<i4").astype(np.float64) / float(1 << 31)
    elif code == _FLOAT and width in (4, 8):
        x = np.frombuffer(data, "<f4" if width == 4 else "<f8").astype(np.float64)
    elif code in (_ALAW, _ULAW):
        from firmware.dsp import g711
        pcm = (g711.alaw_decode if code == _ALAW else g711.ulaw_decode)(bytes(data))
        x = np.frombuffer(pcm, "<i2").astype(np.float64) / 32768.0
    else:
        raise ValueError(f"{name} uses WAV format {code:#x} with {bits}-bit samples, which is not "
                         "supported: convert it to 16-bit PCM (sox INPUT -b 16 OUTPUT.wav)")
    return x.reshape(-1, channels), rate


def _resample_block(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """FFT resampling of one block. Above 90 % of the lower Nyquist frequency the spectrum is
    rolled off with a raised cosine instead of cut, which keeps the ringing of a brick-wall filter
    out of speech. The block is zero-padded so the FFT's wrap-around does not smear its end into
    its start."""
    n_out = max(1, round(x.size * rate_out / rate_in))
    # The padded length is a whole number of rate_in/gcd spans, so that it maps to a whole number
    # of output samples: otherwise the output grid is stretched and the timing drifts.
    step_in = rate_in // math.gcd(rate_in, rate_out)
    n_in_padded = -(-(x.size + max(64, int(0.05 * x.size))) // step_in) * step_in
    spec = np.fft.rfft(x, n_in_padded)
    n_out_padded = n_in_padded * rate_out // rate_in
    keep = n_out_padded // 2 + 1
    freqs = np.fft.rfftfreq(n_in_padded, 1.0 / rate_in)
    edge = min(rate_in, rate_out) / 2.0
    start = 0.9 * edge
    taper = np.clip((freqs - start) / (edge - start), 0.0, 1.0)
    spec = spec * (0.5 + 0.5 * np.cos(np.pi * taper))
    if keep <= spec.size:
        spec = spec[:keep]
    else:
        spec = np.concatenate([spec, np.zeros(keep - spec.size, dtype=spec.dtype)])
    y = np.fft.irfft(spec, n_out_padded) * (n_out_padded / n_in_padded)
    return y[:n_out]


def resample(x: np.ndarray, rate_in: int, rate_out: int = RATE, block_s: float = 20.0) -> np.ndarray:
    """Band-limited resampling of a 1-D float signal, output length round(len * out / in).

    Long inputs (music on hold) go in blocks of about block_s seconds, each resampled with 0.5 s
    of its neighbours on either side which are then dropped, so memory stays bounded on a Pi.
    Block edges sit on input samples that map to whole output samples, keeping the timing exact."""
    if rate_in == rate_out or x.size == 0:
        return x.copy()
    g = math.gcd(rate_in, rate_out)
    step_in, step_out = rate_in // g, rate_out // g  # smallest input span with an exact output span
    block = step_in * max(1, round(block_s * rate_in / step_in))
    margin = step_in * max(1, math.ceil(0.5 * rate_in / step_in))
    if x.size <= block + 2 * margin:
        return _resample_block(x, rate_in, rate_out)
    n_out = round(x.size * rate_out / rate_in)
    out = []
    for start in range(0, x.size, block):
        lo = max(0, start - margin)
        hi = min(x.size, start + block + margin)
        y = _resample_block(x[lo:hi], rate_in, rate_out)
        skip = (start - lo) // step_in * step_out
        out.append(y[skip:skip + block // step_in * step_out])
    return np.concatenate(out)[:n_out]


def float_to_pcm16(x: np.ndarray) -> bytes:
    """float -1..1 -> pcm16le, clipped."""
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype("<i2").tobytes()


def parse_wav(raw: bytes, name: str = "WAV data", rate: int = RATE) -> bytes:
    """pcm16le mono at `rate` from the bytes of a WAV file; `name` appears in errors."""
    fmt, data = _fmt_and_data(raw, name)
    x, rate_in = _to_float(fmt, data, name)
    if x.shape[0] == 0:
        raise ValueError(f"{name} holds no audio (empty data chunk): record or export it again")
    return float_to_pcm16(resample(x.mean(axis=1), rate_in, rate))


def read_wav(path: str | os.PathLike) -> bytes:
    """The audio of a WAV file as 8 kHz mono pcm16le, converted from whatever it holds."""
    path = Path(path)
    raw = path.read_bytes()
    if not raw:
        raise ValueError(f"{path} is empty (0 bytes): record or export it again")
    return parse_wav(raw, str(path))


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the rename is still atomic
    finally:
        os.close(fd)


def write_wav(path: str | os.PathLike, pcm16le: bytes, rate: int = RATE) -> None:
    """Write mono 16-bit PCM as a WAV file atomically (temp file in the same folder + rename)."""
    if len(pcm16le) % 2:
        raise ValueError(f"PCM for {path} has an odd length ({len(pcm16le)} bytes): 16-bit samples "
                         "need an even number of bytes")
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(_header(len(pcm16le), rate))
            f.write(pcm16le)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


class WavWriter:
    """Streams mono 16-bit PCM into a WAV file (call recording, voicemail).

    Frames go to a hidden temp file beside `path`; close() writes the real sizes into the header
    and renames it into place, so `path` only ever holds a complete file. If the process dies
    mid-recording, the temp file is still readable by read_wav (it reads to the end of file)."""

    def __init__(self, path: str | os.PathLike, rate: int = RATE) -> None:
        self.path = Path(path)
        self.rate = rate
        self.frames = 0
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part",
                                         dir=self.path.parent)
        os.fchmod(fd, 0o600)  # recordings and voicemail are conversations: the PBX user only, like config.json
        self._file = os.fdopen(fd, "wb")
        self._file.write(_header(0, rate))

    def write(self, pcm16le: bytes) -> None:
        """Append samples."""
        if self._file is None:
            raise ValueError(f"recording {self.path} is already closed")
        if len(pcm16le) % 2:
            raise ValueError(f"PCM for {self.path} has an odd length ({len(pcm16le)} bytes)")
        self._file.write(pcm16le)
        self.frames += len(pcm16le) // 2

    @property
    def duration(self) -> float:
        """Seconds written so far."""
        return self.frames / self.rate

    def close(self) -> None:
        """Finish the header and move the file into place (idempotent)."""
        if self._file is None:
            return
        f, self._file = self._file, None
        try:
            f.seek(0)
            f.write(_header(self.frames * 2, self.rate))
            f.flush()
            os.fsync(f.fileno())
            f.close()
            os.replace(self._tmp, self.path)
        except BaseException:
            f.close()
            Path(self._tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(self.path.parent)
        logger.info("wrote %s (%.1f s)", self.path, self.duration)

    def abort(self) -> None:
        """Drop the recording: nothing appears at `path`."""
        if self._file is not None:
            self._file.close()
            self._file = None
            Path(self._tmp).unlink(missing_ok=True)

    def __enter__(self) -> "WavWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
