"""Paging groups page: each group's number and members; a form to create or edit one; deletion
after a confirmation. Intercom to one extension needs no setup: `*80` then its number."""
from __future__ import annotations

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from firmware.config import ValidationError
from firmware.features import paging as model
from webui.auth import guard
from webui.pbx import config_store, validation_errors

bp = Blueprint("pagegroups", __name__, template_folder="templates", url_prefix="/paging")


def _audit(event: str, detail: str) -> None:
    current_app.extensions["pbx.accounts"].audit(event, g.user.username, guard.client_address(), detail)


@bp.get("")
def index():
    store = config_store()
    return render_template("pagegroups/index.html", groups=store.records(model.TABLE),
                           names={e.number: e.name for e in store.extensions()}, code=model.INTERCOM_CODE)


def _from_form(number: str) -> model.PagingGroup:
    f = request.form
    text = f.get("ring_time", "").strip()
    try:
        ring = int(text) if text else 10
    except ValueError:
        ring = text
    return model.PagingGroup(number=number, name=f.get("name", "").strip(),
                             members=tuple(dict.fromkeys(f.get("members", "").replace(",", " ").split())),
                             ring_time=ring)


def _form(group, errors, new):
    return render_template("pagegroups/form.html", group=group, errors=errors, new=new,
                           ring=model.RING_S), 400 if errors else 200


@bp.route("/new", methods=["GET", "POST"])
def new():
    if request.method == "GET":
        return _form(model.PagingGroup("", ""), {}, True)
    group = _from_form(request.form.get("number", "").strip())
    try:
        config_store().add_record(model.TABLE, group)
    except ValidationError as e:
        return _form(group, validation_errors(e), True)
    _audit("paging_group_added", f"{group.number} {group.name}")
    flash(f"Paging group {group.number} ({group.name}) created: dial {group.number} to page it.", "ok")
    return redirect(url_for("pagegroups.index"))


@bp.route("/<number>", methods=["GET", "POST"])
def edit(number: str):
    store = config_store()
    group = store.record(model.TABLE, number)
    if group is None:
        return guard.refuse(404, f"no paging group {number}: it was deleted, or the address is wrong")
    if request.method == "GET":
        return _form(group, {}, False)
    changed = _from_form(number)
    try:
        store.replace_record(model.TABLE, changed)
    except ValidationError as e:
        return _form(changed, validation_errors(e), False)
    _audit("paging_group_changed", number)
    flash(f"Paging group {number} saved.", "ok")
    return redirect(url_for("pagegroups.index"))


@bp.get("/<number>/delete")
def delete_confirm(number: str):
    group = config_store().record(model.TABLE, number)
    if group is None:
        return guard.refuse(404, f"no paging group {number}")
    return render_template("confirm.html", title=f"Delete paging group {number}",
                           what=f"paging group {number} ({group.name})", blockers=[],
                           consequences=[f"dialling {number} no longer pages {len(group.members)} phone(s)"],
                           action=url_for("pagegroups.delete", number=number),
                           back=url_for("pagegroups.edit", number=number))


@bp.post("/<number>/delete")
def delete(number: str):
    try:
        config_store().remove_record(model.TABLE, number)
    except ValidationError as e:
        flash(f"Not deleted: {e.message}", "error")
        return redirect(url_for("pagegroups.edit", number=number))
    _audit("paging_group_deleted", number)
    flash(f"Paging group {number} deleted.", "ok")
    return redirect(url_for("pagegroups.index"))
