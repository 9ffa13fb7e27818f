"""Failover page: this box's own failover settings (the form does what `pbx ha set` does, with
the same checks: firmware/ha.py HaSettings.validate) and, read-only, the pair's state as the
running PBX reports it (services/ha/replication.py: peer health, what was shipped and
acknowledged when, the last takeover and its measured gap).

The settings are this box's own (DATA/ha/settings.json, never replicated), so the form may be
saved on the standby too (webui/auth/guard.py lets ha.save through there). They take effect at
the next start of the PBX: keepalived's configuration and the addresses are set at start.
Admin-only (guard's default).
"""
from __future__ import annotations

import dataclasses
import time
from datetime import datetime

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from firmware.config.errors import ValidationErrors
from firmware.ha import ROLES, new_secret, status_summary
from services.ha import settings as ha_settings
from webui import show_once
from webui.auth import guard
from webui.pbx import data_dir, pbx_status

bp = Blueprint("ha", __name__, template_folder="templates", url_prefix="/failover")

FIELDS = ("role", "site", "node_addr", "peer_addr", "remote_addr", "vip", "interface", "router_id", "advert_ms")
NUMBERS = {"router_id": "the virtual router id", "advert_ms": "the advert interval"}


def live_summary(directory, status: dict | None = None) -> dict:
    """The failover status as the dashboard card and this page show it."""
    ha = ha_settings.load(directory)
    if not ha.enabled:
        return status_summary(None, time.time())
    if status is None:
        status = pbx_status(directory)
    from zoneinfo import ZoneInfo

    from firmware.config import ConfigStore
    tz = ZoneInfo(ConfigStore(directory).settings().timezone)    # the dashboard's stream has no app context
    summary = status_summary(status.get("ha") or None, time.time(),
                             lambda t: datetime.fromtimestamp(t, tz).strftime("%Y-%m-%d %H:%M:%S"))
    if not status.get("ha"):
        st = ha_settings.state(directory)
        if not ha.vrrp:           # the remote standby, or an office box whose failover is the remote one
            what = ("remote standby; main site " + ha.peer_addr if ha.site == "remote"
                    else "office box; remote standby " + ha.remote_addr)
            summary.update(on=True, ok=False, state=st.get("state"), state_word="not running", peer_ok=False,
                           headline=f"{what}: the PBX is not running here" if not status.get("running")
                           else f"{what}: failover not started",
                           peer=f"peer {ha.peer_addr or ha.remote_addr}: not known while the PBX is not running",
                           peer_short=f"peer {ha.peer_addr or ha.remote_addr}: not known")
            return summary
        summary.update(on=True, ok=False, state=st.get("state"), state_word="not running", peer_ok=False,
                       headline=f"{ha.role} box; VIP {ha.vip}: the PBX is not running here"
                       if not status.get("running") else f"{ha.role} box; VIP {ha.vip}: failover not started",
                       peer=f"peer {ha.peer_addr}: not known while the PBX is not running",
                       peer_short=f"peer {ha.peer_addr}: not known")
    return summary


def _page(form=None, errors=None, status=200):
    directory = data_dir()
    ha = ha_settings.load(directory)
    values = form or {k: getattr(ha, k) for k in FIELDS}
    secret = ha.secret if show_once.take("ha-secret") else ""
    return render_template("ha/index.html", values=values, errors=errors or {}, ha=ha, roles=ROLES,
                           summary=live_summary(directory), secret=secret), status


def _audit(event: str, detail: str) -> None:
    current_app.extensions["pbx.accounts"].audit(event, g.user.username, guard.client_address(), detail)


@bp.get("")
def index():
    return _page()


@bp.post("")
def save():
    directory = data_dir()
    current = ha_settings.load(directory)
    if request.form.get("action") == "off":
        ha_settings.save(directory, dataclasses.replace(current, enabled=False))
        _audit("ha_off", "failover switched off")
        flash("Failover is off on this box from the next start of the PBX.", "ok")
        return redirect(url_for("ha.index"))
    form = {k: request.form.get(k, "").strip() for k in FIELDS}
    errors = {}
    changes: dict = {k: form[k] for k in ("role", "node_addr", "peer_addr", "vip", "interface")}
    for key in ("site", "remote_addr"):       # a form without them keeps what is set
        if request.form.get(key) is not None:
            changes[key] = form[key]
    for key, what in NUMBERS.items():
        try:
            changes[key] = int(form[key])
        except ValueError:
            errors[key] = f"{what} must be a whole number"
    secret = request.form.get("secret", "").strip()
    made = not secret and not current.secret
    if secret:
        if len(secret) > 128 or any(c.isspace() for c in secret):
            errors["secret"] = "16-128 characters without spaces: copy it from the other box"
        changes["secret"] = secret
    elif made:
        changes["secret"] = new_secret()
    if not errors:
        ha = dataclasses.replace(current, enabled=True, **changes)
        try:
            ha_settings.save(directory, ha)
        except ValidationErrors as e:
            errors = {}
            for err in e.errors:
                errors.setdefault(err.field, err.message)
    if errors:
        return _page(form=form, errors=errors, status=400)
    what = (f"remote standby, main site {ha.peer_addr}" if ha.site == "remote"
            else f"office box, remote standby {ha.remote_addr}" if not ha.vrrp
            else f"{ha.role}, VIP {ha.vip}, peer {ha.peer_addr}"
            + (f", remote standby {ha.remote_addr}" if ha.remote_addr else ""))
    _audit("ha_set", what + (", new shared secret" if made else ""))
    if made or secret:
        show_once.allow("ha-secret")
    flash(f"Failover settings saved ({what}): they take effect at the next start of the PBX.", "ok")
    return redirect(url_for("ha.index"))
