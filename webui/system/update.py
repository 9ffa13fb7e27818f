"""The System page's update part (issue 15, decision 021): both root slots (`rauc status`), the
running version, and a bundle upload.

The web UI runs as the unprivileged `pbx` user: an upload is streamed straight into
DATA/update/bundle.raucb.part (not into /tmp, which is RAM on the box), checked (admin, CSRF -
the guard's default -, .raucb name, size, squashfs header) and renamed to bundle.raucb; the
root-owned pbx-update.path/.service then checks the signature (rauc install), installs it into
the other slot and reboots. Its outcome is left in DATA/update/result.json.
"""
from __future__ import annotations

import json
from pathlib import Path

from flask import flash, g, redirect, request, url_for

from services import update as upd
from webui.auth import guard
from webui.pbx import data_dir
from webui.system.views import _audit, _page, bp

PART = upd.SPOOL_NAME + ".part"


def spool_dir() -> Path:
    return Path(data_dir()) / "update"


def slots() -> dict:
    """What the page shows: the running version, both slots (or why not), the last upload."""
    info = {"version": upd.running_version(), "slots": [], "booted": "", "error": "", "last": None,
            "pending": (spool_dir() / upd.SPOOL_NAME).exists()}
    try:
        status = upd.rauc_status()
        info["slots"], info["booted"] = status["slots"], status["booted"]
    except (upd.UpdateError, OSError, ValueError) as exc:
        info["error"] = str(exc)
    try:
        info["last"] = json.loads((spool_dir() / "result.json").read_text())
    except (OSError, ValueError):
        pass
    return info


@bp.before_app_request
def _bundle_stream():
    # before the guard parses the form (for its CSRF token, after it checked the admin login):
    # only this upload may be large, and it goes to the data partition, not to /tmp
    if request.endpoint != "system.update_upload":
        return
    request.max_content_length = upd.MAX_BUNDLE_BYTES + 64 * 1024
    d = spool_dir()

    def stream(total_content_length=None, content_type=None, filename=None, content_length=None):
        d.mkdir(mode=0o750, exist_ok=True)
        return open(d / PART, "wb+")
    request._get_file_stream = stream


@bp.post("/update")
def update_upload():
    part = spool_dir() / PART
    f = request.files.get("bundle_file")
    try:
        if f is None or not f.filename:
            raise upd.UpdateError("no file chosen: choose a .raucb update bundle (make bundle)")
        if (spool_dir() / upd.SPOOL_NAME).exists():
            raise upd.UpdateError("an update is being installed already: wait for the box to restart")
        f.stream.seek(0)
        head = f.stream.read(4096)
        f.stream.seek(0, 2)
        size = f.stream.tell()
        upd.check_bundle_head(f.filename, head, size)
        f.stream.flush()
        f.stream.close()
        part.rename(spool_dir() / upd.SPOOL_NAME)
    except upd.UpdateError as exc:
        if f is not None:
            f.stream.close()
        part.unlink(missing_ok=True)
        _audit("update_refused", str(exc))
        return _page(errors={"bundle_file": str(exc)}, status=400)
    _audit("update_uploaded", f"{f.filename}, {size // (1 << 20)} MB")
    flash(f"{f.filename} uploaded: the box checks its signature, installs it into the other slot and "
          "restarts (a few minutes). If the new version does not come up healthy, the box returns to "
          "this one by itself.", "ok")
    return redirect(url_for("system.index"))
