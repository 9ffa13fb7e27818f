"""Route pages: one list for both directions, a form for each."""
from __future__ import annotations

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from firmware.config import ValidationError
from webui.auth import guard
from webui.pbx import config_store, validation_errors

bp = Blueprint("routing", __name__, template_folder="templates", url_prefix="/routes")


def _audit(event: str, detail: str) -> None:
    current_app.extensions["pbx.accounts"].audit(event, g.user.username, guard.client_address(), detail)


def destination_words(destination: str) -> str:
    """'201' or 'extension:201' -> 'extension 201'; other typed destinations as 'kind target'."""
    kind, _, target = destination.partition(":")
    if not target:
        return f"extension {kind}" if kind.isdigit() else kind
    return f"{kind} {target}"


@bp.get("")
def index():
    store = config_store()
    return render_template("routing/index.html", inbound=store.inbound_routes(),
                           outbound=store.outbound_routes(),
                           names={e.number: e.name for e in store.extensions()})


# Inbound ---------------------------------------------------------------------------------------
def _inbound_form(values, errors, route):
    exts = [(e.number, f"{e.number} {e.name}") for e in config_store().extensions()]
    return render_template("routing/inbound.html", values=values, errors=errors, route=route,
                           extensions=[("", "choose…")] + exts), 400 if errors else 200


@bp.route("/inbound/new", methods=["GET", "POST"])
def inbound_new():
    values = {"did": "", "destination": "", "name": ""}
    errors: dict[str, str] = {}
    if request.method == "POST":
        values = {k: request.form.get(k, "").strip() for k in values}
        try:
            config_store().add_inbound_route(**values)
        except ValidationError as e:
            errors = validation_errors(e)
        else:
            _audit("inbound_route_added", f"DID {values['did']} -> {values['destination']}")
            flash(f"Calls to {values['did']} now ring {values['destination']}.", "ok")
            return redirect(url_for("routing.index"))
    return _inbound_form(values, errors, None)


@bp.route("/inbound/<did>", methods=["GET", "POST"])
def inbound_edit(did: str):
    store = config_store()
    route = store.get_inbound_route(did)
    if route is None:
        return guard.refuse(404, f"no inbound route for {did}")
    values = {"did": route.did, "destination": route.destination, "name": route.name}
    errors: dict[str, str] = {}
    if request.method == "POST":
        values.update({k: request.form.get(k, "").strip() for k in ("destination", "name")})
        try:
            store.update_inbound_route(did, destination=values["destination"], name=values["name"])
        except ValidationError as e:
            errors = validation_errors(e)
        else:
            _audit("inbound_route_changed", f"DID {did} -> {values['destination']}")
            flash(f"Inbound route {did} saved.", "ok")
            return redirect(url_for("routing.index"))
    return _inbound_form(values, errors, route)


@bp.get("/inbound/<did>/delete")
def inbound_delete_confirm(did: str):
    route = config_store().get_inbound_route(did)
    if route is None:
        return guard.refuse(404, f"no inbound route for {did}")
    where = destination_words(route.destination)
    return render_template("confirm.html", title=f"Delete inbound route {did}",
                           what=f"inbound route {did} (to {where})", blockers=[],
                           consequences=[f"calls to {did} are refused instead of ringing {where}"],
                           action=url_for("routing.inbound_delete", did=did),
                           back=url_for("routing.inbound_edit", did=did))


@bp.post("/inbound/<did>/delete")
def inbound_delete(did: str):
    try:
        config_store().remove_inbound_route(did)
    except ValidationError as e:
        return guard.refuse(404, e.message)
    _audit("inbound_route_removed", f"DID {did}")
    flash(f"Inbound route {did} deleted.", "ok")
    return redirect(url_for("routing.index"))


# Outbound --------------------------------------------------------------------------------------
OUT_FIELDS = ("name", "pattern", "trunk", "fallback_trunk", "strip", "prepend")


def _outbound_values() -> tuple[dict, dict]:
    values = {k: request.form.get(k, "").strip() for k in OUT_FIELDS}
    errors = {}
    try:
        values["strip"] = int(values["strip"] or 0)
    except ValueError:
        errors["strip"] = f"'{values['strip']}' is not a whole number: how many leading digits to remove (0-20)"
    return values, errors


def _outbound_form(values, errors, route):
    trunks = [(t.name, t.name) for t in config_store().trunks()]
    return render_template("routing/outbound.html", values=values, errors=errors, route=route,
                           trunks=[("", "choose…")] + trunks, fallbacks=[("", "none")] + trunks), \
        400 if errors else 200


@bp.route("/outbound/new", methods=["GET", "POST"])
def outbound_new():
    values = {"name": "", "pattern": "", "trunk": "", "fallback_trunk": "", "strip": 0, "prepend": ""}
    errors: dict[str, str] = {}
    if request.method == "POST":
        values, errors = _outbound_values()
        if not errors:
            try:
                config_store().add_outbound_route(**values)
            except ValidationError as e:
                errors = validation_errors(e)
            else:
                _audit("outbound_route_added", f"route {values['name']} {values['pattern']} -> {values['trunk']}")
                flash(f"Outbound route {values['name']} created.", "ok")
                return redirect(url_for("routing.index"))
    return _outbound_form(values, errors, None)


@bp.route("/outbound/<name>", methods=["GET", "POST"])
def outbound_edit(name: str):
    store = config_store()
    route = store.get_outbound_route(name)
    if route is None:
        return guard.refuse(404, f"no outbound route {name}")
    values = {k: getattr(route, k) for k in OUT_FIELDS}
    errors: dict[str, str] = {}
    if request.method == "POST":
        values, errors = _outbound_values()
        values["name"] = name
        if not errors:
            try:
                store.update_outbound_route(name, **{k: values[k] for k in OUT_FIELDS if k != "name"})
            except ValidationError as e:
                errors = validation_errors(e)
            else:
                _audit("outbound_route_changed", f"route {name}")
                flash(f"Outbound route {name} saved.", "ok")
                return redirect(url_for("routing.index"))
    return _outbound_form(values, errors, route)


@bp.get("/outbound/<name>/delete")
def outbound_delete_confirm(name: str):
    route = config_store().get_outbound_route(name)
    if route is None:
        return guard.refuse(404, f"no outbound route {name}")
    return render_template("confirm.html", title=f"Delete outbound route {name}",
                           what=f"outbound route {name} ({route.pattern} via {route.trunk})", blockers=[],
                           consequences=[f"numbers matching {route.pattern} can no longer be dialled out "
                                         "(unless another route matches them)"],
                           action=url_for("routing.outbound_delete", name=name),
                           back=url_for("routing.outbound_edit", name=name))


@bp.post("/outbound/<name>/delete")
def outbound_delete(name: str):
    try:
        config_store().remove_outbound_route(name)
    except ValidationError as e:
        return guard.refuse(404, e.message)
    _audit("outbound_route_removed", f"route {name}")
    flash(f"Outbound route {name} deleted.", "ok")
    return redirect(url_for("routing.index"))
