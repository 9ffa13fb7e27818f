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
import shutil
from pathlib import Path

from firmware.features.moh import DEFAULT, MAX_SECONDS, MAX_UPLOAD_BYTES, MohClass
from services.media.convert import ConversionError, Limits
from services.media.convert import convert as convert_upload
from services.media.wavfile import read_wav

log = logging.getLogger(__name__)

# hold music a little below speech level; a conversion may take 2 minutes of wall clock
LIMITS = Limits("music", MAX_SECONDS, 0.5, "loudnorm=I=-20:TP=-3:LRA=11", timeout_s=120, cpu_s=90)


def moh_dir(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / "moh"


def class_dir(data_dir: str | os.PathLike, name: str) -> Path:
    return moh_dir(data_dir) / name


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, label: str = "") -> float:
    """Convert an uploaded audio file to 8 kHz mono 16-bit WAV at dst; returns its length in s.

    Raises ConversionError saying why (too large, not audio, too long, ffmpeg missing or too slow)."""
    label = label or Path(src).name
    size = Path(src).stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise ConversionError(f"'{label}' is {size / 1048576:.1f} MB; the limit is "
                              f"{MAX_UPLOAD_BYTES // 1048576} MB")
    return convert_upload(src, dst, LIMITS, label=label)


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
