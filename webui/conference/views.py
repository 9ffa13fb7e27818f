"""Conference rooms page: every room with its number, PINs and limits; a form to create or edit
one; deletion after a confirmation (refused while an inbound route or another feature sends
calls to the room)."""
from __future__ import annotations

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from firmware.config import ValidationError
from firmware.features import conference as model
from webui.auth import guard
from webui.pbx import config_store, pbx_status, validation_errors

bp = Blueprint("conference", __name__, template_folder="templates", url_prefix="/conference")


def _audit(event: str, detail: str) -> None:
    current_app.extensions["pbx.accounts"].audit(event, g.user.username, guard.client_address(), detail)


@bp.get("")
def index():
    status = pbx_status()
    live = {r.get("number"): r.get("members", []) for r in status.get("conference") or []}
    return render_template("conference/index.html", rooms=config_store().records(model.TABLE), live=live,
                           running=status.get("running"))


def _int(name: str, default: int):
    text = request.form.get(name, "").strip()
    try:
        return int(text) if text else default
    except ValueError:
        return text   # the model's validate() names it


def _from_form(number: str) -> model.ConferenceRoom:
    f = request.form
    return model.ConferenceRoom(
        number=number, name=f.get("name", "").strip(), pin=f.get("pin", "").strip(),
        listener_pin=f.get("listener_pin", "").strip(), max_members=_int("max_members", 10),
        announce_count=f.get("announce_count") == "on", tones=f.get("tones") == "on",
        listeners=tuple(dict.fromkeys(f.get("listeners", "").replace(",", " ").split())))


def _form(room, errors, new):
    return render_template("conference/form.html", room=room, errors=errors, new=new,
                           members=model.MEMBERS), 400 if errors else 200


@bp.route("/new", methods=["GET", "POST"])
def new():
    if request.method == "GET":
        return _form(model.ConferenceRoom("", ""), {}, True)
    room = _from_form(request.form.get("number", "").strip())
    try:
        config_store().add_record(model.TABLE, room)
    except ValidationError as e:
        return _form(room, validation_errors(e), True)
    _audit("conference_room_added", f"{room.number} {room.name}")
    flash(f"Conference room {room.number} ({room.name}) created: dial {room.number} to join.", "ok")
    return redirect(url_for("conference.index"))


@bp.route("/<number>", methods=["GET", "POST"])
def edit(number: str):
    store = config_store()
    room = store.record(model.TABLE, number)
    if room is None:
        return guard.refuse(404, f"no conference room {number}: it was deleted, or the address is wrong")
    if request.method == "GET":
        return _form(room, {}, False)
    changed = _from_form(number)
    try:
        store.replace_record(model.TABLE, changed)
    except ValidationError as e:
        return _form(changed, validation_errors(e), False)
    _audit("conference_room_changed", number)
    flash(f"Conference room {number} saved.", "ok")
    return redirect(url_for("conference.index"))


@bp.get("/<number>/delete")
def delete_confirm(number: str):
    room = config_store().record(model.TABLE, number)
    if room is None:
        return guard.refuse(404, f"no conference room {number}")
    return render_template("confirm.html", title=f"Delete conference room {number}",
                           what=f"conference room {number} ({room.name})", blockers=[],
                           consequences=[f"dialling {number} no longer reaches a room"],
                           action=url_for("conference.delete", number=number),
                           back=url_for("conference.edit", number=number))


@bp.post("/<number>/delete")
def delete(number: str):
    try:
        config_store().remove_record(model.TABLE, number)
    except ValidationError as e:
        flash(f"Not deleted: {e.message}", "error")
        return redirect(url_for("conference.edit", number=number))
    _audit("conference_room_deleted", number)
    flash(f"Conference room {number} deleted.", "ok")
    return redirect(url_for("conference.index"))
