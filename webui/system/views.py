"""System facts and maintenance: everything here is admin-only (guard's default)."""
from __future__ import annotations

import json
import shutil
import time
from importlib import metadata

from flask import Blueprint, Response, current_app, flash, g, redirect, render_template, request, url_for

from firmware import netconf
from firmware.config import ValidationError
from webui import network, show_once
from webui.auth import guard
from webui.auth.accounts import AccountError
from webui.pbx import config_store, data_dir, pbx_status
from webui.system.backup import UploadError, full_backup, read_upload
from webui.system.backup import restore as restore_backup

bp = Blueprint("system", __name__, template_folder="templates", url_prefix="/system")


def software_version() -> str:
    try:
        return metadata.version("officepbx")
    except metadata.PackageNotFoundError:
        # Running from a source tree that pip never installed: the version is in pyproject.toml.
        import tomllib
        from pathlib import Path
        try:
            with open(Path(__file__).resolve().parents[2] / "pyproject.toml", "rb") as f:
                return tomllib.load(f)["project"]["version"]
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"


def host_uptime() -> float | None:
    try:
        with open("/proc/uptime") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def facts() -> dict:
    status = pbx_status()
    disk = shutil.disk_usage(data_dir())
    return {"version": status.get("version") or software_version(), "pbx_running": status["running"],
            "pbx_uptime": status.get("uptime"), "host_uptime": host_uptime(),
            "disk_total": disk.total, "disk_free": disk.free, "data_dir": str(data_dir())}


def _accounts():
    return current_app.extensions["pbx.accounts"]


def _audit(event: str, detail: str = "") -> None:
    _accounts().audit(event, g.user.username, guard.client_address(), detail)


def _page(errors=None, new_token=None, restore_errors=None, status=200, net=None):
    accounts = _accounts()
    errors = dict(errors or {})
    if net is None:
        saved, net_errors = network.current()
        net = network.values(saved)
        errors = {**net_errors, **errors}
    from webui.system.update import slots
    return render_template("system/index.html", facts=facts(), errors=errors, update=slots(),
                           restore_errors=restore_errors or [], new_token=new_token,
                           tokens=accounts.tokens(), audit=accounts.audit_log(50), net=net,
                           on_appliance=netconf.on_appliance()), status


@bp.get("")
def index():
    return _page(new_token=show_once.unstash())


@bp.get("/backup")
def backup():
    doc = full_backup(config_store(), _accounts())
    _audit("backup_downloaded")
    name = time.strftime("pbx-backup-%Y%m%d-%H%M%S.json")
    return Response(json.dumps(doc, indent=1, ensure_ascii=False), mimetype="application/json",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.post("/restore")
def restore():
    try:
        doc = read_upload(request.files.get("backup_file"))
        counts = restore_backup(config_store(), _accounts(), doc)
    except UploadError as e:
        _audit("restore_refused", str(e))
        return _page(errors={"backup_file": str(e)}, status=400)
    except ValidationError as e:
        _audit("restore_refused", f"{len(e.errors)} problem(s)")
        return _page(errors={"backup_file": "the file was not restored; nothing changed:"},
                     restore_errors=[f"{err.field}: {err.message}" for err in e.errors], status=400)
    _audit("restore", ", ".join(f"{n} {s}" for s, n in counts.items()))
    flash("Configuration restored: " + ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in counts.items())
          + ". The PBX uses it now.", "ok")
    return redirect(url_for("system.index"))


@bp.post("/network")
def network_settings():
    values, settings, errors = network.from_form()
    if errors:
        return _page(errors=errors, net=values, status=400)
    if network.save(settings):
        _audit("network_changed", network.describe(settings))
        moved = network.moved_to(settings)
        if moved:
            return network.moved_page(moved, url_for("system.index"))
        flash("Network settings saved: " + network.describe(settings) +
              ("." if netconf.on_appliance() else " (in DATA/network/; they apply on the appliance)."), "ok")
    return redirect(url_for("system.index") + "#network-settings")


@bp.post("/password")
def password():
    accounts = _accounts()
    if accounts.verify(g.user.username, request.form.get("current_password", "")) is None:
        return _page(errors={"current_password": "wrong current password"}, status=400)
    new = request.form.get("new_password", "")
    if new != request.form.get("new_password2", ""):
        return _page(errors={"new_password2": "the two passwords differ"}, status=400)
    try:
        account = accounts.set_password(g.user.username, new)
    except AccountError as e:
        return _page(errors={"new_password": e.message}, status=400)
    guard.login(account)
    _audit("password_changed")
    flash("Password changed; other sessions are logged out.", "ok")
    return redirect(url_for("system.index"))


@bp.post("/tokens")
def token_create():
    try:
        token = _accounts().create_token(g.user.username, request.form.get("label", ""))
    except AccountError as e:
        return _page(errors={e.field: e.message}, status=400)
    _audit("token_created", request.form.get("label", ""))
    show_once.stash(token)   # shown once, on the page after the redirect (never in the cookie)
    return redirect(url_for("system.index") + "#tokens")


@bp.post("/tokens/<int:token_id>/revoke")
def token_revoke(token_id: int):
    if _accounts().revoke_token(token_id):
        _audit("token_revoked", f"token {token_id}")
        flash("Token revoked.", "ok")
    return redirect(url_for("system.index"))


from webui.system import update as _update  # noqa: E402,F401  (its routes join bp)
