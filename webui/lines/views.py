"""Line port pages: what `pbx line add|list|rm` does, in the browser.

Live state: each port registers with the SIP edge as its extension (decision 007), so the
registrations in the PBX's status tell whether the port is up; the line service publishes what each
port is doing (hw/lines/service.py), which the status carries as "lines". Without it (the line
service not running) the page says "unknown" rather than guessing.
"""
from __future__ import annotations

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from firmware.config import ValidationError
from firmware.config.lines import KINDS, MAX_PORTS
from webui.auth import guard
from webui.pbx import config_store, pbx_status, registered_extensions, validation_errors

bp = Blueprint("lines", __name__, template_folder="templates", url_prefix="/lines")
KIND_LABELS = {"fxs": "FXS: an analog phone plugs in", "fxo": "FXO: an exchange line plugs in"}


def _audit(event: str, detail: str) -> None:
    current_app.extensions["pbx.accounts"].audit(event, g.user.username, guard.client_address(), detail)


def live_state(status: dict) -> dict[int, dict]:
    """Per port number: {"registered": bool|None, "hook": text} from the running PBX."""
    regs = registered_extensions(status)
    reported = {}
    for item in status.get("lines") or []:
        if isinstance(item, dict) and isinstance(item.get("number", item.get("port")), int):
            reported[item.get("number", item.get("port"))] = str(item.get("state", "unknown"))
    ports = config_store().line_ports()
    return {p.number: {"registered": (p.extension in regs) if status["running"] else None,
                       "hook": reported.get(p.number, "unknown")} for p in ports}


@bp.get("")
def index():
    status = pbx_status()
    store = config_store()
    return render_template("lines/index.html", ports=store.line_ports(), state=live_state(status),
                           status=status, names={e.number: e.name for e in store.extensions()})


def _form_values() -> dict:
    values = {k: request.form.get(k, "").strip() for k in ("number", "kind", "extension", "destination", "name")}
    if values["kind"] == "fxs":
        values["destination"] = ""      # the field is hidden for FXS in spirit: a phone port rings itself
    return values


def _render(values, errors, port):
    exts = [(e.number, f"{e.number} {e.name}") for e in config_store().extensions()]
    return render_template("lines/form.html", values=values, errors=errors, port=port, max_ports=MAX_PORTS,
                           kinds=[(k, KIND_LABELS[k]) for k in KINDS],
                           extensions=[("", "choose…")] + exts,
                           destinations=[("", "— (FXS ports ring themselves)")] + exts), 400 if errors else 200


def _port_number(raw: str) -> tuple[int | None, str | None]:
    try:
        return int(raw), None
    except ValueError:
        return None, f"'{raw}' is not a port number: use 1-{MAX_PORTS} as printed on the box"


@bp.route("/new", methods=["GET", "POST"])
def new():
    values = {"number": "", "kind": "fxs", "extension": "", "destination": "", "name": ""}
    errors: dict[str, str] = {}
    if request.method == "POST":
        values = _form_values()
        number, problem = _port_number(values["number"])
        if problem:
            errors["number"] = problem
        else:
            try:
                port = config_store().add_line_port(number, values["kind"], values["extension"],
                                                    values["destination"], values["name"])
            except ValidationError as e:
                errors = validation_errors(e)
            else:
                _audit("line_port_added", f"port {port.number} {port.kind} as {port.extension}")
                flash(f"Line port {port.number} added: it registers as {port.extension}.", "ok")
                return redirect(url_for("lines.index"))
    return _render(values, errors, None)


@bp.route("/<int:number>", methods=["GET", "POST"])
def edit(number: int):
    store = config_store()
    port = store.get_line_port(number)
    if port is None:
        return guard.refuse(404, f"no line port {number}")
    values = {"number": str(port.number), "kind": port.kind, "extension": port.extension,
              "destination": port.destination, "name": port.name}
    errors: dict[str, str] = {}
    if request.method == "POST":
        values = {**_form_values(), "number": str(number)}
        try:
            store.update_line_port(number, kind=values["kind"], extension=values["extension"],
                                   destination=values["destination"], name=values["name"])
        except ValidationError as e:
            errors = validation_errors(e)
        else:
            _audit("line_port_changed", f"port {number}")
            flash(f"Line port {number} saved.", "ok")
            return redirect(url_for("lines.index"))
    return _render(values, errors, port)


@bp.get("/<int:number>/delete")
def delete_confirm(number: int):
    port = config_store().get_line_port(number)
    if port is None:
        return guard.refuse(404, f"no line port {number}")
    what = f"line port {number} ({port.kind.upper()}, registers as {port.extension})"
    consequence = ("the analog phone on this port stops working" if port.kind == "fxs"
                   else f"calls coming in on this exchange line no longer ring {port.destination}")
    return render_template("confirm.html", title=f"Delete line port {number}", what=what, blockers=[],
                           consequences=[consequence], action=url_for("lines.delete", number=number),
                           back=url_for("lines.edit", number=number))


@bp.post("/<int:number>/delete")
def delete(number: int):
    try:
        config_store().remove_line_port(number)
    except ValidationError as e:
        return guard.refuse(404, e.message)
    _audit("line_port_removed", f"port {number}")
    flash(f"Line port {number} deleted.", "ok")
    return redirect(url_for("lines.index"))
