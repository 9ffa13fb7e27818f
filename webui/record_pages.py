"""The create / edit / delete pages of a feature kept as records in the config store (conference
rooms, paging groups): one set of views instead of a copy per feature.

    record_pages(bp, table=model.TABLE, noun="conference room", blank=..., from_form=..., form=...,
                 created="dial {number} to join.", deleted="dialling {number} no longer reaches a room")

adds to the blueprint the endpoints `new` (GET form, POST create), `edit` (/<number>: GET form,
POST save), `delete_confirm` (GET /<number>/delete) and `delete` (POST), with the audit events
`<event>_added`, `_changed` and `_deleted`. The feature's own module keeps its index page, its form
template and how the form's fields become a record.
"""
from __future__ import annotations

from typing import Callable

from flask import Blueprint, current_app, flash, g, redirect, request, url_for, render_template

from firmware.config import ValidationError
from webui.auth import guard
from webui.pbx import config_store, validation_errors


def audit(event: str, detail: str) -> None:
    current_app.extensions["pbx.accounts"].audit(event, g.user.username, guard.client_address(), detail)


def record_pages(bp: Blueprint, *, table: str, noun: str, event: str, blank: Callable[[], object],
                 from_form: Callable[[str], object], form: Callable[[object, dict, bool], object],
                 created: str, deleted: Callable[[object], str]) -> None:
    """`from_form(number)` builds the record from request.form; `form(record, errors, new)` renders
    the form page; `created` is the end of the flash after a create ({number} filled in);
    `deleted(record)` says what deleting it stops, on the confirmation page."""
    Noun = noun[0].upper() + noun[1:]
    index = f"{bp.name}.index"

    def new():
        if request.method == "GET":
            return form(blank(), {}, True)
        record = from_form(request.form.get("number", "").strip())
        try:
            config_store().add_record(table, record)
        except ValidationError as e:
            return form(record, validation_errors(e), True)
        audit(f"{event}_added", f"{record.number} {record.name}")
        flash(f"{Noun} {record.number} ({record.name}) created: " + created.format(number=record.number), "ok")
        return redirect(url_for(index))

    def edit(number: str):
        store = config_store()
        record = store.record(table, number)
        if record is None:
            return guard.refuse(404, f"no {noun} {number}: it was deleted, or the address is wrong")
        if request.method == "GET":
            return form(record, {}, False)
        changed = from_form(number)
        try:
            store.replace_record(table, changed)
        except ValidationError as e:
            return form(changed, validation_errors(e), False)
        audit(f"{event}_changed", number)
        flash(f"{Noun} {number} saved.", "ok")
        return redirect(url_for(index))

    def delete_confirm(number: str):
        record = config_store().record(table, number)
        if record is None:
            return guard.refuse(404, f"no {noun} {number}")
        return render_template("confirm.html", title=f"Delete {noun} {number}",
                               what=f"{noun} {number} ({record.name})", blockers=[],
                               consequences=[deleted(record)],
                               action=url_for(f"{bp.name}.delete", number=number),
                               back=url_for(f"{bp.name}.edit", number=number))

    def delete(number: str):
        try:
            config_store().remove_record(table, number)
        except ValidationError as e:
            flash(f"Not deleted: {e.message}", "error")
            return redirect(url_for(f"{bp.name}.edit", number=number))
        audit(f"{event}_deleted", number)
        flash(f"{Noun} {number} deleted.", "ok")
        return redirect(url_for(index))

    bp.add_url_rule("/new", "new", new, methods=["GET", "POST"])
    bp.add_url_rule("/<number>", "edit", edit, methods=["GET", "POST"])
    bp.add_url_rule("/<number>/delete", "delete_confirm", delete_confirm, methods=["GET"])
    bp.add_url_rule("/<number>/delete", "delete", delete, methods=["POST"])
