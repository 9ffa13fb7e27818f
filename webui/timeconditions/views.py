"""Time condition pages: the list, a form for each, and the 14-day calendar of which
destination is active when (computed by firmware.features.timeconditions.preview)."""
from __future__ import annotations

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from firmware.config import ValidationError
from firmware.features import daynight
from firmware.features.timeconditions import COMMON_REGIONS, TABLE, TimeCondition, evaluate, preview, zone
from webui import destinations
from webui.auth import guard
from webui.pbx import config_store, validation_errors

bp = Blueprint("timeconditions", __name__, template_folder="templates", url_prefix="/timeconditions")
FIELDS = ("number", "name", "hours", "special", "holidays", "toggle")
DESTS = ("open_destination", "closed_destination")


def _audit(event: str, detail: str) -> None:
    current_app.extensions["pbx.accounts"].audit(event, g.user.username, guard.client_address(), detail)


def _toggle_states(store) -> dict[str, str]:
    states = {"1": store.settings().mode}
    states.update({t.number: t.state for t in store.records(daynight.TABLE) if t.number != "1"})
    return states


def _now(store):
    from datetime import datetime
    return datetime.now(zone(store.settings().timezone))


@bp.get("")
def index():
    store = config_store()
    states, now = _toggle_states(store), _now(store)
    rows = [(tc, evaluate(tc, now, store.settings().timezone, states.get(tc.toggle) if tc.toggle else None))
            for tc in store.records(TABLE)]
    return render_template("timeconditions/index.html", rows=rows, label=destinations.label,
                           timezone=store.settings().timezone, now=now)


def _values(tc: TimeCondition | None) -> dict:
    if tc is None:
        return {"number": "", "name": "", "hours": "mon-fri 09:00-17:30", "special": "",
                "holidays": "GB/ENG", "toggle": "", "open_destination": "", "closed_destination": ""}
    return {"number": tc.number, "name": tc.name, "hours": "\n".join(tc.hours), "special": "\n".join(tc.special),
            "holidays": f"{tc.holidays_country}/{tc.holidays_region}" if tc.holidays_country else "",
            "toggle": tc.toggle, "open_destination": tc.open_destination, "closed_destination": tc.closed_destination}


def _posted() -> tuple[dict, dict]:
    values = {k: request.form.get(k, "").strip() for k in FIELDS}
    errors = {}
    for name in DESTS:
        values[name], problem = destinations.form_value(name, request.form)
        if problem:
            errors[name] = problem
    return values, errors


def _record(values: dict) -> TimeCondition:
    country, _, region = values["holidays"].partition("/")
    return TimeCondition(values["number"], values["name"], values["open_destination"], values["closed_destination"],
                         hours=values["hours"], special=values["special"], holidays_country=country.strip().upper(),
                         holidays_region=region.strip().upper(), toggle=values["toggle"])


def _render(values, errors, tc, form=None):
    store = config_store()
    dests = {n: (destinations.DestinationField.from_form(n, form) if form is not None
                 else destinations.DestinationField.of(n, values[n])) for n in DESTS}
    regions = [("", "No public holidays")] + [(f"{c}/{r}", label) for c, r, label in COMMON_REGIONS]
    if values["holidays"] and values["holidays"] not in [v for v, _ in regions]:
        regions.append((values["holidays"], values["holidays"]))
    toggles = [("", "None (the schedule alone decides)")] + [
        (n, f"Toggle {n} ({daynight.code_of(n)}): night forces closed") for n in daynight.known_toggles(_view(store))]
    days = []
    if tc is not None:
        states = _toggle_states(store)
        days = preview(tc, _now(store).date(), 14, states.get(tc.toggle) if tc.toggle else None)
    return render_template("timeconditions/form.html", values=values, errors=errors, tc=tc, dests=dests,
                           kinds=destinations.kinds(), choices=destinations.choices(store), regions=regions,
                           toggles=toggles, days=days, label=destinations.label), 400 if errors else 200


def _view(store):
    from firmware.dialplan import config_view
    return config_view(store)


def _save(values, errors, existing):
    try:
        record = _record(values)
        record.validate()
    except ValidationError as e:
        for k, v in validation_errors(e).items():
            errors.setdefault("holidays" if k.startswith("holidays") else k, v)
    if errors:
        return None, errors
    store = config_store()
    try:
        if existing is None:
            store.add_record(TABLE, record)
        else:
            store.replace_record(TABLE, record)
    except ValidationError as e:
        return None, {("holidays" if k.startswith("holidays") else k): v for k, v in validation_errors(e).items()}
    return record, {}


@bp.route("/new", methods=["GET", "POST"])
def new():
    values, errors = _values(None), {}
    if request.method == "POST":
        values, errors = _posted()
        record, errors = _save(values, errors, None)
        if record is not None:
            _audit("time_condition_added", f"{record.number} {record.name}")
            flash(f"Time condition {record.number} added: use it as the destination 'Time condition "
                  f"{record.number}' in a route.", "ok")
            return redirect(url_for("timeconditions.edit", number=record.number))
        return _render(values, errors, None, request.form)
    return _render(values, errors, None)


@bp.route("/<number>", methods=["GET", "POST"])
def edit(number: str):
    tc = config_store().record(TABLE, number)
    if tc is None:
        return guard.refuse(404, f"no time condition {number}")
    values, errors = _values(tc), {}
    if request.method == "POST":
        values, errors = _posted()
        values["number"] = number
        record, errors = _save(values, errors, tc)
        if record is not None:
            _audit("time_condition_changed", f"{number}")
            flash(f"Time condition {number} saved.", "ok")
            return redirect(url_for("timeconditions.edit", number=number))
        return _render(values, errors, tc, request.form)
    return _render(values, errors, tc)


@bp.get("/<number>/delete")
def delete_confirm(number: str):
    tc = config_store().record(TABLE, number)
    if tc is None:
        return guard.refuse(404, f"no time condition {number}")
    return render_template("confirm.html", title=f"Delete time condition {number}", what=f"time condition {number} "
                           f"({tc.name})", blockers=[], consequences=["routes can no longer send calls to it"],
                           action=url_for("timeconditions.delete", number=number),
                           back=url_for("timeconditions.edit", number=number))


@bp.post("/<number>/delete")
def delete(number: str):
    try:
        config_store().remove_record(TABLE, number)
    except ValidationError as e:
        flash(e.message, "error")
        return redirect(url_for("timeconditions.edit", number=number))
    _audit("time_condition_removed", number)
    flash(f"Time condition {number} deleted.", "ok")
    return redirect(url_for("timeconditions.index"))
