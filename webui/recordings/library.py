"""Recording files on disk: one call's WAVs grouped, safe lookup by key, retention.

The call service writes DATA/recordings/YYYYMMDD/<stamp>-<src>-<dst>-<n>-caller.wav and
...-callee.wav (services/callsvc/b2bua.py); a call's key is the path without the side suffix.
Recordings are conversations: files are made 0600 and their folders 0700 (files written before
WavWriter made them 0600 are tightened when the list is read).
"""
from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

logger = logging.getLogger(__name__)

DIR_NAME = "recordings"
SIDES = ("caller", "callee")
_KEY_RE = re.compile(r"\d{8}/[A-Za-z0-9][A-Za-z0-9._+-]{0,200}")
_SIDE_RE = re.compile(r"-(caller|callee)\.wav$")
DAY = 86400.0


@dataclass
class Recording:
    key: str                                   # "20261128/20261128-101500-201-202-7"
    files: dict[str, Path] = field(default_factory=dict)   # side ("caller"/"callee", "" if unknown) -> file
    mtime: float = 0.0
    size: int = 0

    @property
    def seconds(self) -> float:
        """Length of the longest side: 16-bit 8 kHz mono is 16000 bytes a second after a 44-byte header."""
        return max(((p.stat().st_size - 44) / 16000 for p in self.files.values() if p.exists()), default=0.0)


def root(data_dir: Path) -> Path:
    return Path(data_dir) / DIR_NAME


def expired(files: Iterable[tuple[str, float]], now: float, days: int) -> list[str]:
    """Names of the files older than `days` days at `now` (their mtime: when the call ended).

    0 days keeps everything: retention is off until someone chooses a period.
    """
    if days <= 0:
        return []
    cutoff = now - days * DAY
    return [name for name, mtime in files if mtime < cutoff]


def _files(base: Path) -> Iterable[Path]:
    if not base.is_dir():
        return []
    return (p for day in sorted(base.iterdir()) if day.is_dir() and re.fullmatch(r"\d{8}", day.name)
            for p in sorted(day.iterdir()) if p.is_file())


def delete_expired(data_dir: Path, days: int, now: float | None = None) -> list[Path]:
    """Delete recordings older than the retention period; returns what was deleted."""
    base = root(data_dir)
    files = list(_files(base))
    stats = {str(p): p.stat().st_mtime for p in files}
    gone = []
    for name in expired(stats.items(), time.time() if now is None else now, days):
        try:
            os.unlink(name)
            gone.append(Path(name))
        except FileNotFoundError:
            pass
    for day in {p.parent for p in gone}:
        try:
            day.rmdir()      # only when empty
        except OSError:
            pass
    if gone:
        logger.info("recording retention (%d days): deleted %d file(s)", days, len(gone))
    return gone


def _tighten(path: Path, mode: int) -> None:
    try:
        if path.stat().st_mode & 0o077:
            os.chmod(path, mode)
    except OSError as e:
        logger.warning("cannot restrict %s to the PBX user: %s", path, e)


def scan(data_dir: Path) -> list[Recording]:
    """Every finished recording, grouped per call, newest first (temp files of running calls left out)."""
    base = root(data_dir)
    groups: dict[str, Recording] = {}
    if base.is_dir():
        _tighten(base, 0o700)
    for path in _files(base):
        if path.name.startswith(".") or path.suffix != ".wav":
            continue
        _tighten(path.parent, 0o700)
        _tighten(path, 0o600)
        m = _SIDE_RE.search(path.name)
        side = m.group(1) if m else ""
        stem = path.name[:m.start()] if m else path.name[:-4]
        key = f"{path.parent.name}/{stem}"
        st = path.stat()
        rec = groups.setdefault(key, Recording(key))
        rec.files[side] = path
        rec.mtime = max(rec.mtime, st.st_mtime)
        rec.size += st.st_size
    return sorted(groups.values(), key=lambda r: (r.mtime, r.key), reverse=True)


def find(data_dir: Path, key: str) -> Recording | None:
    """The recording of one call by its key, or None; a key cannot reach outside the folder."""
    if not _KEY_RE.fullmatch(key or "") or ".." in key:
        return None
    base = root(data_dir).resolve()
    day, stem = key.split("/", 1)
    folder = (base / day).resolve()
    if folder.parent != base or not folder.is_dir():
        return None
    rec = Recording(key)
    for side in SIDES:
        path = folder / f"{stem}-{side}.wav"
        if path.is_file():
            rec.files[side] = path
    if not rec.files and (folder / f"{stem}.wav").is_file():
        rec.files[""] = folder / f"{stem}.wav"
    if not rec.files:
        return None
    rec.mtime = max(p.stat().st_mtime for p in rec.files.values())
    rec.size = sum(p.stat().st_size for p in rec.files.values())
    return rec


def delete(rec: Recording) -> None:
    for path in rec.files.values():
        path.unlink(missing_ok=True)
    try:
        next(iter(rec.files.values())).parent.rmdir()
    except (OSError, StopIteration):
        pass
