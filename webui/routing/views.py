"""Route pages: one list for both directions, a form for each."""
from __future__ import annotations

import dataclasses

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from firmware.config import ValidationError
from firmware.config.routing import InboundRoute, OutboundRoute
from webui import destinations
from webui.auth import guard
from webui.pbx import config_store, validation_errors

bp = Blueprint("routing", __name__, template_folder="templates", url_prefix="/routes")


def _audit(event: str, detail: str) -> None:
    current_app.extensions["pbx.accounts"].audit(event, g.user.username, guard.client_address(), detail)


def destination_words(destination: str) -> str:
    """'extension:201' -> 'extension 201', 'external:07700900123' -> '07700 900123', 'hangup' -> 'hang up'."""
    return destinations.label(destination)


@bp.get("")
def index():
    store = config_store()
    return render_template("routing/index.html", inbound=store.inbound_routes(),
                           outbound=store.outbound_routes(),
                           names={e.number: e.name for e in store.extensions()})


# Inbound ---------------------------------------------------------------------------------------
def _inbound_form(values, errors, route, form=None):
    dest = (destinations.DestinationField.from_form("destination", form) if form is not None
            else destinations.DestinationField.of("destination", values["destination"]))
    return render_template("routing/inbound.html", values=values, errors=errors, route=route, dest=dest,
                           kinds=destinations.kinds(), choices=destinations.choices(config_store())), \
        400 if errors else 200


def _inbound_values(values: dict) -> tuple[dict, dict]:
    """The posted inbound route form: its fields, and a destination's missing target."""
    values = dict(values)
    values.update({k: request.form.get(k, "").strip() for k in values if k not in ("destination", "match_national")})
    values["destination"], problem = destinations.form_value("destination", request.form)
    values["match_national"] = request.form.get("match_national") == "on"
    return values, {"destination": problem} if problem else {}


def _route_errors(record, errors: dict) -> dict:
    """With a form error already found, the model's reasons for the other fields too."""
    try:
        record.validate()
    except ValidationError as e:
        for k, v in validation_errors(e).items():
            errors.setdefault(k, v)
    return errors


@bp.route("/inbound/new", methods=["GET", "POST"])
def inbound_new():
    values = {"did": "", "destination": "", "name": "", "match_national": False}
    errors: dict[str, str] = {}
    if request.method == "POST":
        values, errors = _inbound_values(values)
        try:
            if errors:
                _route_errors(InboundRoute(**values), errors)
            else:
                config_store().add_inbound_route(**values)
        except ValidationError as e:
            errors = validation_errors(e)
        if not errors:
            where = destination_words(values["destination"])
            _audit("inbound_route_added", f"DID {values['did']} -> {values['destination']}")
            flash(f"Calls to {values['did']} now go to {where}.", "ok")
            return redirect(url_for("routing.index"))
    return _inbound_form(values, errors, None, request.form if errors else None)


@bp.route("/inbound/<did>", methods=["GET", "POST"])
def inbound_edit(did: str):
    store = config_store()
    route = store.get_inbound_route(did)
    if route is None:
        return guard.refuse(404, f"no inbound route for {did}")
    values = {"did": route.did, "destination": route.destination, "name": route.name,
              "match_national": route.match_national}
    errors: dict[str, str] = {}
    if request.method == "POST":
        values, errors = _inbound_values(values)
        values["did"] = did
        changes = {k: values[k] for k in ("destination", "name", "match_national")}
        try:
            if errors:
                _route_errors(dataclasses.replace(route, **changes), errors)
            else:
                store.update_inbound_route(did, **changes)
        except ValidationError as e:
            errors = validation_errors(e)
        if not errors:
            _audit("inbound_route_changed", f"DID {did} -> {values['destination']}")
            flash(f"Inbound route {did} saved.", "ok")
            return redirect(url_for("routing.index"))
    return _inbound_form(values, errors, route, request.form if errors else None)


@bp.get("/inbound/<did>/delete")
def inbound_delete_confirm(did: str):
    route = config_store().get_inbound_route(did)
    if route is None:
        return guard.refuse(404, f"no inbound route for {did}")
    where = destination_words(route.destination)
    return render_template("confirm.html", title=f"Delete inbound route {did}",
                           what=f"inbound route {did} (to {where})", blockers=[],
                           consequences=[f"calls to {did} are refused instead of going to {where}"],
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
OUT_FIELDS = ("name", "pattern", "trunk", "fallback_trunk", "strip", "prepend", "caller_id", "extensions")


def _outbound_values() -> tuple[dict, dict]:
    values = {k: request.form.get(k, "").strip() for k in OUT_FIELDS if k != "extensions"}
    values["caller_id"] = "".join(values["caller_id"].split())
    # ticked boxes, or one comma/space separated text from a client without the boxes
    picked = [n for item in request.form.getlist("extensions") for n in item.replace(",", " ").split()]
    values["extensions"] = tuple(dict.fromkeys(picked))
    errors = {}
    try:
        values["strip"] = int(values["strip"] or 0)
    except ValueError:
        errors["strip"] = f"'{values['strip']}' is not a whole number: how many leading digits to remove (0-20)"
    return values, errors


def _outbound_form(values, errors, route):
    store = config_store()
    trunks = [(t.name, t.name) for t in store.trunks()]
    exts = [(e.number, f"{e.number} {e.name}") for e in store.extensions()]
    return render_template("routing/outbound.html", values=values, errors=errors, route=route,
                           trunks=[("", "choose…")] + trunks, fallbacks=[("", "none")] + trunks,
                           extensions=exts), 400 if errors else 200


@bp.route("/outbound/new", methods=["GET", "POST"])
def outbound_new():
    values = {"name": "", "pattern": "", "trunk": "", "fallback_trunk": "", "strip": 0, "prepend": "",
              "caller_id": "", "extensions": ()}
    errors: dict[str, str] = {}
    if request.method == "POST":
        values, errors = _outbound_values()
        if errors:
            _route_errors(OutboundRoute(**dict(values, strip=0)), errors)
        else:
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
        if errors:
            _route_errors(OutboundRoute(**dict(values, strip=0)), errors)
        else:
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
