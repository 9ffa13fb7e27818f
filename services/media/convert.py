"""Uploaded sound files made into the box's audio: 8 kHz mono 16-bit WAV, loudness-normalised.

One converter for every upload (music on hold, IVR and system prompts, greetings): ffmpeg from
Debian, run with a wall-clock time-out, CPU, memory and output-size limits, reading only local
files in audio container formats (a playlist cannot make it fetch anything), so a hostile file
costs at most those limits. What is not audio is refused with ffmpeg's reason, in words for the
person who uploaded it.
"""
from __future__ import annotations

import logging
import os
import resource
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from services.media.wavfile import RATE, read_wav

log = logging.getLogger(__name__)

FFMPEG = "ffmpeg"
FORMATS = "wav,w64,mp3,ogg,flac,mov,mp4,m4a,3gp,3g2,mj2,matroska,webm"
MEMORY = 1024 * 1024 * 1024


class ConversionError(ValueError):
    """An upload that could not become audio for the box; the message says why, for the person."""


@dataclass(frozen=True)
class Limits:
    """What one kind of upload may be: `what` names it in messages ("music", "a spoken prompt")."""
    what: str
    max_seconds: int
    min_seconds: float
    loudness: str              # the ffmpeg loudnorm filter: music a little below speech level
    timeout_s: int = 60        # wall clock for one conversion
    cpu_s: int = 45            # CPU seconds (RLIMIT_CPU)


def convert(src, dst, limits: Limits, *, label: str = "") -> float:
    """Convert `src` to an 8 kHz mono 16-bit WAV at `dst` (atomically); returns its length in s.
    ConversionError says why when it cannot (not audio, too short or long, ffmpeg missing or slow)."""
    label = label or Path(src).name
    if shutil.which(FFMPEG) is None:
        raise ConversionError("ffmpeg is not installed on this box: install it (apt-get install ffmpeg, "
                              "or `make deps`) and upload again")
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".upload-", suffix=".wav", dir=dst.parent)
    os.close(fd)
    output_max = limits.max_seconds * RATE * 2 + 4096

    def child_limits() -> None:        # in the child, before exec
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 5))
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
        resource.setrlimit(resource.RLIMIT_FSIZE, (output_max, output_max))
        os.nice(10)

    cmd = [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-protocol_whitelist", "file",
           "-format_whitelist", FORMATS, "-i", str(src), "-map", "0:a:0", "-vn", "-sn", "-dn",
           "-t", str(limits.max_seconds + 1),
           "-af", f"aformat=channel_layouts=mono,{limits.loudness},aresample={RATE}",
           "-ar", str(RATE), "-ac", "1", "-c:a", "pcm_s16le", "-map_metadata", "-1", "-f", "wav", "-y", tmp]
    try:
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=limits.timeout_s, preexec_fn=child_limits)
        except subprocess.TimeoutExpired:
            raise ConversionError(f"'{label}' took longer than {limits.timeout_s} s to convert: upload a "
                                  "shorter or simpler file") from None
        if proc.returncode != 0:
            raise ConversionError(f"'{label}' is not audio this box can read: {_reason(proc.stderr)}")
        try:
            pcm = read_wav(tmp)
        except ValueError as exc:
            raise ConversionError(f"'{label}' did not convert: {exc}") from None
        seconds = len(pcm) / 2 / RATE
        if seconds < limits.min_seconds:
            raise ConversionError(f"'{label}' holds {seconds:.2f} s of audio; upload at least "
                                  f"{limits.min_seconds} s of {limits.what}")
        if seconds > limits.max_seconds:
            raise ConversionError(f"'{label}' is longer than {limits.max_seconds // 60} minutes: shorten it")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
        log.info("%s upload %s converted to %s (%.1f s)", limits.what, label, dst, seconds)
        return seconds
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _reason(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    text = " ".join(lines)
    if any(s in text for s in ("matches no streams", "does not contain any stream")):
        return "it holds no audio stream"
    if not lines or any(s in text for s in ("Invalid data found", "Invalid argument", "could not find codec")):
        return "its content is not in an audio format (WAV, MP3, OGG, FLAC or M4A)"
    last = lines[-1]
    if ": " in last and last.split(": ", 1)[0].startswith("/"):
        last = last.split(": ", 1)[1]       # names our temporary path, not the user's file
    return last[:200]
