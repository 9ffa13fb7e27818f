"""The one-time setup code: proves that whoever sets the admin password can see the console.

There is no default password. Until an admin password exists, the web process keeps a short
random code in DATA/webui/setup-code (0600) and prints it; the wizard's first step asks for it.
Setting the admin password deletes the file.
"""
from __future__ import annotations

import hmac
import logging
import os
import secrets
from pathlib import Path

logger = logging.getLogger(__name__)


def path(data_dir: str | Path) -> Path:
    return Path(data_dir) / "webui" / "setup-code"


def read(data_dir: str | Path) -> str | None:
    try:
        return path(data_dir).read_text().strip() or None
    except FileNotFoundError:
        return None


def ensure(data_dir: str | Path, accounts) -> str | None:
    """The current setup code (made if missing), or None once an admin password exists."""
    p = path(data_dir)
    if accounts.has_admin():
        p.unlink(missing_ok=True)
        return None
    code = read(data_dir)
    if code:
        return code
    p.parent.mkdir(parents=True, exist_ok=True)
    code = secrets.token_hex(4)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process (pbx run / a second worker) made it first
        return read(data_dir)
    with os.fdopen(fd, "w") as f:
        f.write(code + "\n")
    return code


def matches(data_dir: str | Path, submitted: str) -> bool:
    code = read(data_dir)
    if not code:
        return False
    return hmac.compare_digest(code.encode(), (submitted or "").strip().lower().encode())


def consume(data_dir: str | Path) -> None:
    path(data_dir).unlink(missing_ok=True)
