"""Trunk list, create, edit (an empty password keeps the stored one), delete."""
from __future__ import annotations

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from firmware.config import ValidationError
from firmware.config.routing import TRANSPORTS
from webui.auth import guard
from webui.pbx import config_store, pbx_status, validation_errors

bp = Blueprint("trunks", __name__, template_folder="templates", url_prefix="/trunks")
FIELDS = ("name", "host", "username", "secret", "transport")


def _audit(event: str, detail: str) -> None:
    current_app.extensions["pbx.accounts"].audit(event, g.user.username, guard.client_address(), detail)


def trunk_states(status: dict) -> dict[str, dict]:
    return {t.get("name"): t for t in status.get("trunks", []) if isinstance(t, dict)}


def _form_values() -> dict:
    values = {k: request.form.get(k, "").strip() for k in FIELDS}
    values["register"] = request.form.get("register") == "on"
    return values


def _render(values, errors, trunk):
    return render_template("trunks/form.html", values=values, errors=errors, trunk=trunk,
                           transports=[(t, t.upper()) for t in TRANSPORTS]), 400 if errors else 200


@bp.get("")
def index():
    status = pbx_status()
    return render_template("trunks/index.html", trunks=config_store().trunks(), states=trunk_states(status),
                           status=status)


@bp.route("/new", methods=["GET", "POST"])
def new():
    values = {"name": "", "host": "", "username": "", "secret": "", "transport": "udp", "register": True}
    errors: dict[str, str] = {}
    if request.method == "POST":
        values = _form_values()
        try:
            trunk = config_store().add_trunk(**values)
        except ValidationError as e:
            errors = validation_errors(e)
        else:
            _audit("trunk_added", f"trunk {trunk.name}")
            flash(f"Trunk {trunk.name} created.", "ok")
            return redirect(url_for("trunks.index"))
    return _render(values, errors, None)


@bp.route("/<name>", methods=["GET", "POST"])
def edit(name: str):
    store = config_store()
    trunk = store.get_trunk(name)
    if trunk is None:
        return guard.refuse(404, f"no trunk {name}")
    values = {"name": trunk.name, "host": trunk.host, "username": trunk.username, "secret": "",
              "transport": trunk.transport, "register": trunk.register}
    errors: dict[str, str] = {}
    if request.method == "POST":
        values = _form_values()
        changes = {k: values[k] for k in ("host", "username", "transport", "register")}
        if values["secret"]:
            changes["secret"] = values["secret"]
        try:
            store.update_trunk(name, **changes)
        except ValidationError as e:
            errors = validation_errors(e)
        else:
            _audit("trunk_changed", f"trunk {name}")
            flash(f"Trunk {name} saved.", "ok")
            return redirect(url_for("trunks.index"))
        values["name"] = name
    return _render(values, errors, trunk)


@bp.get("/<name>/delete")
def delete_confirm(name: str):
    store = config_store()
    trunk = store.get_trunk(name)
    if trunk is None:
        return guard.refuse(404, f"no trunk {name}")
    blockers = [f"outbound route {r.name} ({r.pattern}) sends calls to trunk {name}"
                + (" as its fallback" if r.fallback_trunk == name else "")
                for r in store.outbound_routes() if name in (r.trunk, r.fallback_trunk)]
    return render_template("confirm.html", title=f"Delete trunk {name}", what=f"trunk {name} ({trunk.host})",
                           blockers=blockers, consequences=["calls can no longer go out or come in through it"],
                           action=url_for("trunks.delete", name=name), back=url_for("trunks.edit", name=name))


@bp.post("/<name>/delete")
def delete(name: str):
    try:
        config_store().remove_trunk(name)
    except ValidationError as e:
        flash(e.message, "bad")
        return redirect(url_for("trunks.edit", name=name) if config_store().get_trunk(name) else url_for("trunks.index"))
    _audit("trunk_removed", f"trunk {name}")
    flash(f"Trunk {name} deleted.", "ok")
    return redirect(url_for("trunks.index"))
