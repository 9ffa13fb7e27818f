"""The web UI's doors to the rest of the PBX: config store, CDR store and the running services.

One ConfigStore per request: TinyDB is not thread-safe and the web server serves on several threads;
opening the store re-reads config.json (about a millisecond), so every page sees what the CLI or
the call service wrote a moment ago.
"""
from __future__ import annotations

import logging
from pathlib import Path

from flask import current_app, g

logger = logging.getLogger(__name__)


def data_dir() -> Path:
    return Path(current_app.config["DATA_DIR"])


def config_store():
    store = g.get("config_store")
    if store is None:
        from firmware.config import ConfigStore
        store = g.config_store = ConfigStore(data_dir())
    return store


def cdr_store():
    store = g.get("cdr_store")
    if store is None:
        from firmware.cdr import CdrStore
        store = g.cdr_store = CdrStore(data_dir())
    return store


NOT_RUNNING = {"running": False, "uptime": None, "version": None,
               "registrations": [], "calls": [], "trunks": []}


def pbx_status(directory: Path | None = None) -> dict:
    """The running PBX's state, or NOT_RUNNING (with the reason) when it cannot be asked."""
    from services.control import ControlError, query
    try:
        status = query(str(directory or data_dir()), "status")
    except ControlError as e:
        return dict(NOT_RUNNING, reason=str(e))
    return dict(NOT_RUNNING, **status, running=True)


def registered_extensions(status: dict) -> dict[str, list[dict]]:
    """Registrations grouped by extension number (the user part of the AOR)."""
    by_number: dict[str, list[dict]] = {}
    for reg in status.get("registrations", []):
        aor = str(reg.get("aor", ""))
        user = aor.split(":", 1)[-1].split("@", 1)[0]
        by_number.setdefault(user, []).append(reg)
    return by_number


def validation_errors(exc) -> dict[str, str]:
    """A ValidationError(s) as {field: message} for a form, first message per field."""
    out: dict[str, str] = {}
    for err in getattr(exc, "errors", [exc]):
        out.setdefault(getattr(err, "field", "form"), getattr(err, "message", str(err)))
    return out
