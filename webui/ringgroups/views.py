"""Ring group pages: list, new, edit, delete (with a confirmation page)."""
from __future__ import annotations

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from firmware.config import ValidationError
from firmware.features.ringgroups import STRATEGIES, STRATEGY_LABELS, TABLE, RingGroup, parse_member
from webui import destinations
from webui.auth import guard
from webui.pbx import config_store, validation_errors

bp = Blueprint("ringgroups", __name__, template_folder="templates", url_prefix="/ringgroups")


def _audit(event: str, detail: str) -> None:
    current_app.extensions["pbx.accounts"].audit(event, g.user.username, guard.client_address(), detail)


def _member_lines(group: RingGroup) -> str:
    return "\n".join(f"{m.number} {m.timeout}" for m in group.members)


@bp.get("")
def index():
    store = config_store()
    names = {e.number: e.name for e in store.extensions()}
    return render_template("ringgroups/index.html", groups=store.records(TABLE), names=names,
                           labels=STRATEGY_LABELS)


def _values(group: RingGroup | None) -> dict:
    group = group or RingGroup("", "")
    return {"number": group.number, "name": group.name, "strategy": group.strategy,
            "members": _member_lines(group), "timeout": str(group.timeout),
            "caller_id_prefix": group.caller_id_prefix, "confirm_external": group.confirm_external,
            "waiting": group.waiting, "no_answer": group.no_answer}


def _posted(store) -> tuple[dict, dict, RingGroup | None]:
    values = {k: request.form.get(k, "") for k in ("number", "name", "strategy", "members", "timeout",
                                                    "caller_id_prefix", "waiting")}
    for k in ("number", "name", "strategy", "timeout", "waiting"):
        values[k] = values[k].strip()
    values["confirm_external"] = request.form.get("confirm_external") == "on"
    values["no_answer"], problem = destinations.form_value("no_answer", request.form)
    errors = {"no_answer": problem} if problem else {}
    extensions = {e.number for e in store.extensions()}
    members = []
    for line in values["members"].splitlines():
        if line.strip():
            try:
                members.append(parse_member(line.strip(), extensions))
            except ValueError as e:
                errors.setdefault("members", str(e))
    try:
        timeout = int(values["timeout"])
    except ValueError:
        errors["timeout"] = f"{values['timeout']!r} is not a whole number of seconds"
        timeout = 60
    if values["number"] in extensions:
        errors["number"] = f"{values['number']} is an extension: pick a number no extension has, e.g. 600"
    group = RingGroup(values["number"], values["name"].strip(), values["strategy"], tuple(members), timeout,
                      values["caller_id_prefix"], values["confirm_external"], values["waiting"], values["no_answer"])
    try:
        group.validate()
    except ValidationError as e:
        for k, v in validation_errors(e).items():
            errors.setdefault(k, v)
    return values, errors, (None if errors else group)


def _render(values, errors, group, form=None):
    store = config_store()
    dest = (destinations.DestinationField.from_form("no_answer", form) if form is not None
            else destinations.DestinationField.of("no_answer", values["no_answer"]))
    return render_template("ringgroups/form.html", values=values, errors=errors, group=group, dest=dest,
                           kinds=destinations.kinds(),
                           choices=_choices(store, group), strategies=[(s, STRATEGY_LABELS[s]) for s in STRATEGIES],
                           extensions=store.extensions()), 400 if errors else 200


def _choices(store, group):
    choices = destinations.choices(store)
    choices.setdefault(TABLE, [(g.number, f"{g.number} {g.name}") for g in store.records(TABLE)
                               if group is None or g.number != group.number])
    return choices


@bp.route("/new", methods=["GET", "POST"])
def new():
    values, errors = _values(None), {}
    if request.method == "POST":
        store = config_store()
        values, errors, group = _posted(store)
        if group is not None:
            try:
                store.add_record(TABLE, group)
            except ValidationError as e:
                errors = validation_errors(e)
            else:
                _audit("ring_group_added", f"{group.number} {group.name}")
                flash(f"Ring group {group.number} ({group.name}) created: dial {group.number} to reach it.", "ok")
                return redirect(url_for("ringgroups.index"))
    return _render(values, errors, None, request.form if errors else None)


@bp.route("/<number>", methods=["GET", "POST"])
def edit(number: str):
    store = config_store()
    group = store.record(TABLE, number)
    if group is None:
        return guard.refuse(404, f"no ring group {number}")
    values, errors = _values(group), {}
    if request.method == "POST":
        values, errors, new_group = _posted(store)
        if values["number"] != number and not errors:
            errors["number"] = "the number of a ring group cannot be changed; delete it and create another"
        if not errors:
            try:
                store.replace_record(TABLE, new_group)
            except ValidationError as e:
                errors = validation_errors(e)
            else:
                _audit("ring_group_changed", f"{number}")
                flash(f"Ring group {number} saved.", "ok")
                return redirect(url_for("ringgroups.index"))
    return _render(values, errors, group, request.form if errors else None)


@bp.get("/<number>/delete")
def delete_confirm(number: str):
    group = config_store().record(TABLE, number)
    if group is None:
        return guard.refuse(404, f"no ring group {number}")
    return render_template("confirm.html", title=f"Delete ring group {number}",
                           what=f"ring group {number} ({group.name})", blockers=[],
                           consequences=[f"dialling {number} no longer rings its members"],
                           action=url_for("ringgroups.delete", number=number),
                           back=url_for("ringgroups.edit", number=number))


@bp.post("/<number>/delete")
def delete(number: str):
    try:
        config_store().remove_record(TABLE, number)
    except ValidationError as e:
        flash(e.message, "error")
        return redirect(url_for("ringgroups.edit", number=number))
    _audit("ring_group_removed", number)
    flash(f"Ring group {number} deleted.", "ok")
    return redirect(url_for("ringgroups.index"))
