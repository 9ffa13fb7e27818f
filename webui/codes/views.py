"""Feature code page: the registry (firmware/dialplan/feature_codes.py) with the administrator's
settings (firmware/features/codes.py): what is dialled, what it does, on/off, changeable."""
from __future__ import annotations

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from firmware.config import ValidationError
from firmware.features.codes import TABLE, rows, set_override
from webui.auth import guard
from webui.pbx import config_store, validation_errors

bp = Blueprint("codes", __name__, template_folder="templates", url_prefix="/codes")


def _audit(event: str, detail: str) -> None:
    current_app.extensions["pbx.accounts"].audit(event, g.user.username, guard.client_address(), detail)


def _render(errors=None, posted=None, status=200):
    table = rows({o.default: o for o in config_store().records(TABLE)})
    groups: dict[str, list] = {}
    for r in table:
        groups.setdefault(r.group, []).append(r)
    return render_template("codes/index.html", groups=groups, errors=errors or {}, posted=posted or {}), status


@bp.get("")
def index():
    return _render()


@bp.post("")
def save():
    default = request.form.get("default", "")
    code = request.form.get("code", "").strip()
    enabled = request.form.get("enabled") == "on"
    try:
        o = set_override(config_store(), default, code=code or default, enabled=enabled)
    except ValidationError as e:
        message = "; ".join(dict.fromkeys(validation_errors(e).values()))
        return _render({default: message}, {default: code}, status=400)
    _audit("feature_code_changed", f"{o.default} -> {o.code or o.default} {'on' if o.enabled else 'off'}")
    flash(f"{o.default}: dialled as {o.code or o.default}, {'on' if o.enabled else 'off'}.", "ok")
    return redirect(url_for("codes.index"))
