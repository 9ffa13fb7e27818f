"""This box's HA settings and state files in DATA/ha/ (never replicated: they differ per box)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from firmware.ha import HaSettings

from .notify import STATES  # noqa: E402,F401


def ha_dir(data_dir) -> Path:
    path = Path(data_dir) / "ha"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def load(data_dir) -> HaSettings:
    try:
        doc = json.loads((ha_dir(data_dir) / "settings.json").read_text())
    except FileNotFoundError:
        return HaSettings()
    return HaSettings.from_json(doc)


def save(data_dir, ha: HaSettings) -> None:
    """Checked first, then written atomically (mode 0600: it holds the shared secret)."""
    if ha.enabled:
        ha.validate()
    _write(ha_dir(data_dir) / "settings.json", json.dumps(ha.to_json(), indent=1))


def record_state(data_dir, state: str) -> dict:
    """What keepalived told us last: the state and when; takeovers are counted (services/ha/notify.py)."""
    from .notify import record_state as record
    return record(data_dir, state)


def state(data_dir) -> dict:
    try:
        return json.loads((ha_dir(data_dir) / "state.json").read_text())
    except (FileNotFoundError, ValueError):
        return {"state": "unknown"}


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
