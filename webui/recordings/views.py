"""Recordings page: each recorded call with its call record, both sides playable in the page.

Retention runs here, when the list is read (and hourly in the web process, see webui/__main__.py):
the recordings older than Settings.recording_retention_days are deleted before they are listed.
Files are served only through these admin-only views (guard's default), never as static files.
"""
from __future__ import annotations

from flask import (Blueprint, current_app, flash, g, redirect, render_template, request, send_file,
                   url_for)

from webui.auth import guard
from webui.cdr.query import recorded_calls
from webui.cdr.views import site_zone
from webui.cdr.filters import record_dict
from webui.paging import make_page, page_number
from webui.pbx import config_store, data_dir
from webui.recordings import library

bp = Blueprint("recordings", __name__, template_folder="templates", url_prefix="/recordings")


def _audit(event: str, detail: str) -> None:
    current_app.extensions["pbx.accounts"].audit(event, g.user.username, guard.client_address(), detail)


def _tail(path) -> str:
    """'20261128/name.wav': how a CDR's recording path and a file on disk are matched, whatever
    form (relative, absolute, symlinked) the data directory had when each was written."""
    parts = str(path).replace("\\", "/").rsplit("/", 2)
    return "/".join(parts[-2:])


def describe(rec: library.Recording, calls: dict, tz) -> dict:
    call = None
    for path in rec.files.values():
        call = calls.get(_tail(path)) or call
    return {"key": rec.key, "sides": [s for s in (*library.SIDES, "") if s in rec.files],
            "mtime": rec.mtime, "size": rec.size, "seconds": rec.seconds,
            "call": record_dict(call, tz) if call else None}


@bp.get("")
def index():
    days = config_store().settings().recording_retention_days
    library.delete_expired(data_dir(), days)
    found = library.scan(data_dir())
    p = make_page(page_number(request.args.get("page")), len(found))
    calls = {_tail(path): rec for path, rec in recorded_calls(data_dir()).items()}
    tz = site_zone()
    rows = [describe(r, calls, tz) for r in found[p.offset:p.offset + p.size]]
    return render_template("recordings/index.html", rows=rows, page=p, retention=days,
                           recording=config_store().settings().record_calls,
                           disk=config_store().settings().recording_max_disk_percent)


def _find_or_404():
    rec = library.find(data_dir(), request.values.get("key", ""))
    if rec is None:
        return None, guard.refuse(404, "no such recording: it was deleted, or the retention period "
                                       "removed it")
    return rec, None


@bp.get("/file")
def file():
    rec, refused = _find_or_404()
    if refused:
        return refused
    side = request.args.get("side", "")
    path = rec.files.get(side)
    if path is None:
        return guard.refuse(404, f"this call has no {side or 'unnamed'} recording")
    download = request.args.get("download") == "1"
    if download:
        _audit("recording_downloaded", path.name)
    # conditional=True answers Range requests: the <audio> element seeks without the whole file
    resp = send_file(path, mimetype="audio/wav", as_attachment=download, download_name=path.name,
                     conditional=True, max_age=0)
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/delete")
def delete_confirm():
    rec, refused = _find_or_404()
    if refused:
        return refused
    what = f"the recording {rec.key.split('/', 1)[1]}"
    return render_template("confirm.html", title="Delete recording", what=what, blockers=[],
                           consequences=[f"deletes {len(rec.files)} file(s): "
                                         + ", ".join(p.name for p in rec.files.values())],
                           action=url_for("recordings.delete", key=rec.key),
                           back=url_for("recordings.index"))


@bp.post("/delete")
def delete():
    rec, refused = _find_or_404()
    if refused:
        return refused
    library.delete(rec)
    _audit("recording_deleted", rec.key)
    flash(f"Recording {rec.key.split('/', 1)[1]} deleted.", "ok")
    return redirect(url_for("recordings.index"))
