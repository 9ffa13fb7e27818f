"""Day/night (call-flow toggle) pages. Toggle 1 is the front panel's: its state is Settings.mode,
so switching it here lights the panel's LED and every BLF key on *33 (the call service publishes
the change when it sees the new configuration)."""
from __future__ import annotations

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from firmware.config import ValidationError
from firmware.dialplan import config_view
from firmware.features import daynight
from firmware.features.daynight import MAIN, TABLE, CallFlowToggle
from webui import destinations
from webui.auth import guard
from webui.pbx import config_store, validation_errors

bp = Blueprint("daynight", __name__, template_folder="templates", url_prefix="/daynight")
DESTS = ("day_destination", "night_destination")


def _audit(event: str, detail: str) -> None:
    current_app.extensions["pbx.accounts"].audit(event, g.user.username, guard.client_address(), detail)


@bp.get("")
def index():
    store = config_store()
    view = config_view(store)
    toggles = []
    for number in daynight.known_toggles(view):
        record = view.table(TABLE).get(number)
        toggles.append({"number": number, "name": record.name if record else "Main (front panel)",
                        "state": daynight.toggle_state(view, number), "code": daynight.code_of(number, view),
                        "record": record})
    return render_template("daynight/index.html", toggles=toggles, label=destinations.label)


@bp.post("/<number>/switch")
def switch(number: str):
    store = config_store()
    if number == MAIN:
        new = daynight.other(store.settings().mode)
        store.update_settings(mode=new)
    else:
        toggle = store.record(TABLE, number)
        if toggle is None:
            return guard.refuse(404, f"no call-flow toggle {number}")
        new = daynight.other(toggle.state)
        store.update_record(TABLE, number, state=new)
    _audit("daynight_switched", f"toggle {number} -> {new}")
    flash(f"Toggle {number} is now {new.upper()}.", "ok")
    return redirect(url_for("daynight.index"))


def _values(t: CallFlowToggle | None, number: str = "") -> dict:
    if t is None:
        return {"number": number, "name": "Main office" if number == MAIN else "", "pin": "", "code": "",
                "day_destination": "", "night_destination": ""}
    return {"number": t.number, "name": t.name, "pin": t.pin, "code": t.code, "day_destination": t.day_destination,
            "night_destination": t.night_destination}


def _render(values, errors, existing, form=None):
    store = config_store()
    dests = {n: (destinations.DestinationField.from_form(n, form) if form is not None
                 else destinations.DestinationField.of(n, values[n])) for n in DESTS}
    return render_template("daynight/form.html", values=values, errors=errors, existing=existing, dests=dests,
                           kinds=destinations.kinds(), choices=destinations.choices(store)), 400 if errors else 200


@bp.route("/edit", methods=["GET", "POST"])
def edit():
    store = config_store()
    number = request.values.get("number", "").strip()
    existing = store.record(TABLE, number) if number else None
    if request.method == "GET":
        return _render(_values(existing, number), {}, existing)
    values = {k: request.form.get(k, "").strip() for k in ("number", "name", "pin", "code")}
    errors = {}
    for name in DESTS:
        values[name], problem = destinations.form_value(name, request.form)
        if problem:
            errors[name] = problem
    state = existing.state if existing is not None else "day"
    record = CallFlowToggle(values["number"], values["name"], values["day_destination"], values["night_destination"],
                            state=state, pin=values["pin"], code=values["code"])
    if not errors:
        try:
            (store.replace_record if existing is not None else store.add_record)(TABLE, record)
        except ValidationError as e:
            errors = validation_errors(e)
    if errors:
        return _render(values, errors, existing, request.form)
    _audit("daynight_saved", f"toggle {record.number} {record.name}")
    flash(f"Toggle {record.number} saved: use the destination 'Day/night toggle {record.number}' in a route; "
          f"phones switch it with {daynight.code_of(record.number, config_view(store))}.", "ok")
    return redirect(url_for("daynight.index"))
