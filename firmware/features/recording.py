"""Call recordings: which files the retention limit deletes.

Recordings (DATA/recordings/YYYYMMDD/...-caller.wav / -callee.wav, made by "record every
answered call" or by `*1` during a call) are kept until one of the two limits set on the
Settings page says otherwise:

- Settings.recording_retention_days: files older than this many days go (0 = no age limit);
- Settings.recording_max_disk_percent: while the disk holding them is fuller than this, the
  oldest recordings go first, until it is below the limit again (0 = no disk limit). Only
  recordings are deleted: if other data fills the disk, every recording may go.

Pure: the call service lists the files and the disk's use and deletes what this returns.
"""
from __future__ import annotations

from typing import Iterable, NamedTuple

DAY = 86400.0
IN_CALL_CODE = "*1"        # toggles recording of the current call (services/callsvc/flows/recording.py)


class RecordingFile(NamedTuple):
    path: str
    mtime: float       # when it was last written (the end of the call)
    size: int          # bytes


def to_delete(files: Iterable[RecordingFile], now: float, days: int, max_percent: int,
              disk_total: int, disk_used: int) -> list[str]:
    """The recordings to delete, oldest first: past the age limit, then as many more of the
    oldest as it takes to bring the disk's use under `max_percent` of `disk_total`."""
    ordered = sorted(files, key=lambda f: (f.mtime, f.path))
    doomed: list[str] = []
    freed = 0
    keep = []
    for f in ordered:
        if days > 0 and f.mtime < now - days * DAY:
            doomed.append(f.path)
            freed += f.size
        else:
            keep.append(f)
    if max_percent > 0 and disk_total > 0:
        allowed = disk_total * max_percent / 100.0
        for f in keep:
            if disk_used - freed <= allowed:
                break
            doomed.append(f.path)
            freed += f.size
    return doomed
