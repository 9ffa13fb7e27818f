"""Checking an uploaded restore file before it reaches the store: type, size, encoding, JSON."""
from __future__ import annotations

import json

MAX_BACKUP_BYTES = 1024 * 1024


class UploadError(ValueError):
    pass


def read_upload(storage) -> object:
    """The decoded JSON document of an uploaded file (werkzeug FileStorage), or UploadError."""
    if storage is None or not storage.filename:
        raise UploadError("choose a backup file (.json) downloaded from this page")
    if not storage.filename.lower().endswith(".json"):
        raise UploadError(f"'{storage.filename}' is not a .json backup file")
    if storage.mimetype not in ("application/json", "application/octet-stream", "text/plain", ""):
        raise UploadError(f"'{storage.filename}' has type {storage.mimetype}, not JSON")
    raw = storage.stream.read(MAX_BACKUP_BYTES + 1)
    return parse_bytes(raw)


def parse_bytes(raw: bytes) -> object:
    if len(raw) > MAX_BACKUP_BYTES:
        raise UploadError(f"file is larger than {MAX_BACKUP_BYTES // 1024} kB: not a backup of this PBX")
    if not raw.strip():
        raise UploadError("file is empty")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise UploadError("file is not UTF-8 text: not a backup of this PBX") from None
    except json.JSONDecodeError as e:
        raise UploadError(f"file is not valid JSON (line {e.lineno}: {e.msg})") from None
