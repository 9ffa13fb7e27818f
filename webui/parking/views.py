"""Parking page: the lot (park number, slots, timeout, where unclaimed calls go) and the slots,
refreshed live from the call service's state file (services/callsvc/flows/parking.py)."""
from __future__ import annotations

import json
import os
import time

from flask import Blueprint, current_app, flash, g, jsonify, redirect, render_template, request, url_for

from firmware.config import ValidationError
from firmware.features.parking import DEFAULT_LOT, TABLE, ParkingLot
from webui import destinations
from webui.auth import guard
from webui.pbx import config_store, data_dir, validation_errors

bp = Blueprint("parking", __name__, template_folder="templates", static_folder="static",
               url_prefix="/parking")
STATE_FILE = "parking-state.json"


def _audit(event: str, detail: str) -> None:
    current_app.extensions["pbx.accounts"].audit(event, g.user.username, guard.client_address(), detail)


def parked_calls() -> list[dict]:
    """Who is parked where now; [] when the call service is not running (its file is stale)."""
    try:
        state = json.loads((data_dir() / STATE_FILE).read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return []
    now = time.time()
    return [dict(s, seconds=round(now - s.get("since", now))) for s in state.get("slots", [])]


def _lot(store) -> tuple[ParkingLot, bool]:
    lots = store.records(TABLE)
    return (lots[0], True) if lots else (DEFAULT_LOT, False)


def _values(lot: ParkingLot) -> dict:
    return {"number": lot.number, "name": lot.name, "first_slot": lot.first_slot, "slots": str(lot.slots),
            "timeout": str(lot.timeout), "return_destination": lot.return_destination}


@bp.route("", methods=["GET", "POST"])
def index():
    store = config_store()
    lot, stored = _lot(store)
    values, errors = _values(lot), {}
    if request.method == "POST":
        values = {k: request.form.get(k, "").strip() for k in ("number", "name", "first_slot", "slots", "timeout")}
        values["return_destination"], problem = destinations.form_value("return_destination", request.form)
        if problem:
            errors["return_destination"] = problem
        numbers = {}
        for k in ("slots", "timeout"):
            try:
                numbers[k] = int(values[k])
            except ValueError:
                errors[k] = f"{values[k]!r} is not a whole number"
        extensions = {e.number for e in store.extensions()}
        new = ParkingLot(values["number"], values["name"], values["first_slot"], numbers.get("slots", 20),
                         numbers.get("timeout", 45), values["return_destination"])
        if not errors:
            clash = sorted(extensions & ({new.number} | set(new.slot_numbers())))
            if clash:
                errors["first_slot"] = f"extension(s) {', '.join(clash)} have numbers of the lot: move the lot"
        if not errors:
            try:
                new.validate()
                if stored and lot.number != new.number:
                    store.remove_record(TABLE, lot.number)
                    store.add_record(TABLE, new)
                elif stored:
                    store.replace_record(TABLE, new)
                else:
                    store.add_record(TABLE, new)
            except ValidationError as e:
                errors = validation_errors(e)
        if not errors:
            _audit("parking_changed", f"{new.number} slots {new.first_slot}+{new.slots} timeout {new.timeout}")
            flash(f"Parking saved: transfer calls to {new.number}; they wait in {new.slot_numbers()[0]}-"
                  f"{new.slot_numbers()[-1]}.", "ok")
            return redirect(url_for("parking.index"))
    form = request.form if errors else None
    dest = (destinations.DestinationField.from_form("return_destination", form) if form is not None
            else destinations.DestinationField.of("return_destination", values["return_destination"]))
    return render_template("parking/index.html", lot=lot, values=values, errors=errors, dest=dest,
                           kinds=destinations.kinds(), choices=destinations.choices(store),
                           parked={p["slot"]: p for p in parked_calls()}), 400 if errors else 200


@bp.get("/slots.json")
def slots_json():
    """The parked calls now, for the page's live refresh."""
    return jsonify(parked=parked_calls())
