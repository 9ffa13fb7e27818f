"""Backup and restore for the page and the API: the configuration plus the extension users' web
logins (argon2 hashes, never passwords), and the checks an uploaded file passes first (type,
size, encoding, JSON)."""
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
    return decode_json(raw, "file", "use a backup file downloaded from the System page")


def decode_json(raw: bytes, what: str, fix: str) -> object:
    """JSON text -> object, or UploadError naming what is wrong with it and how to fix it.

    Hostile JSON must be refused, not crash the request: brackets nested thousands deep make the
    decoder run out of stack (RecursionError), and a number of more than 4300 digits is refused by
    Python's int conversion (ValueError) -- neither is a JSONDecodeError.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UploadError(f"{what} is not UTF-8 text: {fix}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UploadError(f"{what} is not valid JSON (line {e.lineno}: {e.msg}): {fix}") from None
    except RecursionError:
        raise UploadError(f"{what} has brackets nested too deeply to be a PBX configuration "
                          f"(JSON nested thousands of levels): {fix}") from None
    except ValueError as e:  # int_max_str_digits; the message says how many digits
        raise UploadError(f"{what} has a number with too many digits ({_short(e)}): {fix}") from None


def _short(e: ValueError) -> str:
    return str(e).split(";", 1)[0].replace("Exceeds the limit", "limit")


def full_backup(store, accounts) -> dict:
    """The configuration document with the users' web logins in its "web_logins" section."""
    return {**store.export_config(), "web_logins": accounts.export_logins()}


def restore(store, accounts, doc) -> dict[str, int]:
    """Restore configuration and web logins, all or nothing; ValidationErrors lists every problem.

    The logins are checked against the backup's own extensions before anything is written; a
    backup made before logins were carried leaves the current logins as they are.
    """
    from firmware.config import ValidationError, ValidationErrors
    logins = doc.get("web_logins") if isinstance(doc, dict) else None
    if logins is not None:
        numbers = {e.get("number") for e in doc.get("extensions", []) if isinstance(e, dict)} \
            if isinstance(doc.get("extensions"), list) else set()
        problems = accounts.login_errors(logins, numbers)
        if problems:
            raise ValidationErrors([ValidationError(where, what) for where, what in problems])
    counts = store.import_config(doc)
    if logins is not None:
        counts["web_logins"] = accounts.restore_logins(logins)
    return counts
