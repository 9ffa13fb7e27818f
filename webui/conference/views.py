"""Conference rooms page: every room with its number, PINs and limits; a form to create or edit
one; deletion after a confirmation (refused while an inbound route or another feature sends
calls to the room)."""
from __future__ import annotations

from flask import Blueprint, render_template, request

from firmware.features import conference as model
from webui.pbx import config_store, pbx_status
from webui.record_pages import record_pages

bp = Blueprint("conference", __name__, template_folder="templates", url_prefix="/conference")


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


record_pages(bp, table=model.TABLE, noun="conference room", event="conference_room",
             blank=lambda: model.ConferenceRoom("", ""), from_form=_from_form, form=_form,
             created="dial {number} to join.",
             deleted=lambda room: f"dialling {room.number} no longer reaches a room")
