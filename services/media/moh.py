"""Music-on-hold files on disk: uploads converted with ffmpeg, and the audio a class plays.

Files live in DATA/moh/<class>/<name>.wav as 8 kHz mono 16-bit PCM, loudness-normalised to
about -20 LUFS (hold music a little below speech level). An upload (WAV, MP3, OGG, FLAC, M4A) is
converted by ffmpeg from Debian, run with a wall-clock time-out, CPU, memory and output-size
limits, only the file protocol and only audio container formats (a playlist cannot make it fetch
anything), so a hostile file costs at most those limits. What is not audio is refused with
ffmpeg's reason.
"""
from __future__ import annotations

import logging
import os
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path

from firmware.features.moh import DEFAULT, MAX_SECONDS, MAX_UPLOAD_BYTES, MohClass
from services.media.wavfile import RATE, read_wav

log = logging.getLogger(__name__)

FFMPEG = "ffmpeg"
TIMEOUT_S = 120           # wall clock for one conversion
CPU_S = 90                # CPU seconds (RLIMIT_CPU)
MEMORY = 1024 * 1024 * 1024
OUTPUT_MAX = MAX_SECONDS * RATE * 2 + 4096
FORMATS = "wav,w64,mp3,ogg,flac,mov,mp4,m4a,3gp,3g2,mj2,matroska,webm"
LOUDNESS = "loudnorm=I=-20:TP=-3:LRA=11"
MIN_SECONDS = 0.5


class ConversionError(ValueError):
    """An upload that could not become hold music; the message says why, for the person."""


def moh_dir(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / "moh"


def class_dir(data_dir: str | os.PathLike, name: str) -> Path:
    return moh_dir(data_dir) / name


def _limits() -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_S, CPU_S + 5))
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
    resource.setrlimit(resource.RLIMIT_FSIZE, (OUTPUT_MAX, OUTPUT_MAX))
    os.nice(10)


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, label: str = "") -> float:
    """Convert an uploaded audio file to 8 kHz mono 16-bit WAV at dst; returns its length in s.

    Raises ConversionError saying why (not audio, too long, ffmpeg missing or too slow)."""
    label = label or Path(src).name
    if shutil.which(FFMPEG) is None:
        raise ConversionError("ffmpeg is not installed on this box: install it (apt-get install ffmpeg, "
                              "or `make deps`) and upload again")
    size = Path(src).stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise ConversionError(f"'{label}' is {size / 1048576:.1f} MB; the limit is "
                              f"{MAX_UPLOAD_BYTES // 1048576} MB")
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".upload-", suffix=".wav", dir=dst.parent)
    os.close(fd)
    cmd = [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-protocol_whitelist", "file",
           "-format_whitelist", FORMATS, "-i", str(src), "-map", "0:a:0", "-vn", "-sn", "-dn",
           "-t", str(MAX_SECONDS + 1), "-af", f"aformat=channel_layouts=mono,{LOUDNESS},aresample={RATE}",
           "-ar", str(RATE), "-ac", "1", "-c:a", "pcm_s16le", "-map_metadata", "-1", "-f", "wav", "-y", tmp]
    try:
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=TIMEOUT_S, preexec_fn=_limits)
        except subprocess.TimeoutExpired:
            raise ConversionError(f"'{label}' took longer than {TIMEOUT_S} s to convert: upload a shorter "
                                  "or simpler file") from None
        if proc.returncode != 0:
            raise ConversionError(f"'{label}' is not audio this box can read: {_reason(proc.stderr)}")
        try:
            pcm = read_wav(tmp)
        except ValueError as exc:
            raise ConversionError(f"'{label}' did not convert: {exc}") from None
        seconds = len(pcm) / 2 / RATE
        if seconds < MIN_SECONDS:
            raise ConversionError(f"'{label}' holds {seconds:.2f} s of audio; upload at least "
                                  f"{MIN_SECONDS} s of music")
        if seconds > MAX_SECONDS:
            raise ConversionError(f"'{label}' is longer than {MAX_SECONDS // 60} minutes: shorten it")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
        log.info("music on hold: %s converted to %s (%.1f s)", label, dst, seconds)
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
    # "/tmp/.../upload.mp3: ..." names our temporary path, not the user's file
    if ": " in last and last.split(": ", 1)[0].startswith("/"):
        last = last.split(": ", 1)[1]
    return last[:200]


def class_audio(data_dir: str | os.PathLike, cls: MohClass) -> dict[str, bytes]:
    """The pcm16 of each of a class's files that can be read (a missing file is logged, skipped)."""
    found = {}
    for name in cls.files:
        path = class_dir(data_dir, cls.name) / name
        try:
            found[name] = read_wav(path)
        except (OSError, ValueError) as exc:
            log.warning("music on hold class %s: %s unusable: %s", cls.name, name, exc)
    return found


def remove_file(data_dir: str | os.PathLike, cls_name: str, name: str) -> None:
    path = class_dir(data_dir, cls_name) / name
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def remove_class_dir(data_dir: str | os.PathLike, cls_name: str) -> None:
    if cls_name != DEFAULT:
        shutil.rmtree(class_dir(data_dir, cls_name), ignore_errors=True)
