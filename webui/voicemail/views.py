"""Voicemail pages: the mailboxes (admin), one mailbox's messages and greetings (its owner or an
admin), and the signed e-mail link that plays one message without a login.

Who may open a mailbox page: an administrator, the extension whose mailbox it is, and the
members of a group mailbox. The mailbox number is in the URL, so every view checks that
(`_box_or_refuse`); the user's own page is /voicemail/mine. Settings are config records
(firmware/features/voicemail.py); messages and greetings are files with an index
(services/voicemail.py); each message's e-mail state comes from the outbox (services/mailer).
"""
from __future__ import annotations

import dataclasses
import secrets
from datetime import datetime

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, send_file, url_for

from firmware.config import ValidationError
from firmware.features import voicemail as vm
from services.voicemail import (GREETING_KINDS, MAX_GREETING_UPLOAD, VoicemailStore, check_link,
                                remember_link_base)
from webui.auth import guard
from webui.pbx import config_store, data_dir, validation_errors

bp = Blueprint("voicemail", __name__, template_folder="templates", url_prefix="/voicemail")
_UPLOADS = ("voicemail.greeting_upload",)


@bp.before_app_request
def _upload_limit():
    # before the guard parses the form for its CSRF token: only a greeting upload may be large
    if request.endpoint in _UPLOADS:
        request.max_content_length = MAX_GREETING_UPLOAD + 64 * 1024


@bp.errorhandler(413)
def _too_large(_exc):
    from webui.errors import error_page
    return error_page(413, f"upload larger than {MAX_GREETING_UPLOAD // 1048576} MB: a greeting is a short WAV "
                           "file; export it as 8 or 16 kHz mono")


def _audit(event: str, detail: str) -> None:
    current_app.extensions["pbx.accounts"].audit(event, g.user.username, guard.client_address(), detail)


def _store() -> VoicemailStore:
    return VoicemailStore(data_dir())


def _may_open(box) -> bool:
    user = g.user
    return user is not None and (user.is_admin or user.extension == box.number
                                 or (box.group and user.extension in box.members))


def _box_or_refuse(number: str):
    box = config_store().record(vm.TABLE, number)
    if box is None:
        return None, guard.refuse(404, f"no mailbox {number}: the Voicemail page lists them")
    if not _may_open(box):
        return None, guard.refuse(403, f"mailbox {number} is not yours")
    return box, None


def _email_state(email_id: str) -> dict | None:
    if not email_id:
        return None
    try:
        from services.mailer import outbox
        return outbox.status(data_dir(), email_id)
    except (ImportError, KeyError, ValueError):
        return {"state": "unknown", "last_error": "no longer in the mail queue"}


def _back(box):
    return redirect(url_for("voicemail.mailbox", number=box.number))


# --- admin: the mailboxes --------------------------------------------------------------------------
@bp.get("")
def index():
    boxes = config_store().records(vm.TABLE)
    counts = _store().all_counts()
    return render_template("voicemail/index.html", boxes=boxes, counts=counts)


FORM_FIELDS = ("name", "email", "email_mode", "max_messages", "max_message_seconds")


def _form_changes(form, *, admin: bool, group: bool) -> tuple[dict, dict]:
    changes, errors = {}, {}
    fields = FORM_FIELDS if admin else ("email", "email_mode")
    for name in fields:
        value = form.get(name, "").strip()
        if name in ("max_messages", "max_message_seconds"):
            try:
                value = int(value)
            except ValueError:
                errors[name] = "must be a whole number"
                continue
        changes[name] = value
    changes["delete_after_email"] = form.get("delete_after_email") == "on"
    if admin:
        changes["enabled"] = form.get("enabled") == "on"
    if admin and group:
        changes["members"] = tuple(n for n in form.get("members", "").replace(",", " ").split() if n)
    pin = form.get("pin", "").strip()
    if pin:
        try:
            changes.update(vm.pin_changes(pin))
        except ValidationError as e:
            errors["pin"] = e.message
    if changes.get("email_mode") == "link":
        remember_link_base(data_dir(), request.host_url)
    return changes, errors


@bp.route("/new", methods=["GET", "POST"])
def new():
    values = {"number": "", "name": "", "members": "", "email": "", "email_mode": "none",
              "delete_after_email": False, "max_messages": vm.DEFAULT_MAX_MESSAGES,
              "max_message_seconds": vm.DEFAULT_MAX_SECONDS, "enabled": True}
    errors = {}
    if request.method == "POST":
        values.update({k: request.form.get(k, "").strip() for k in ("number", "name", "members", "email",
                                                                     "email_mode", "max_messages",
                                                                     "max_message_seconds")})
        changes, errors = _form_changes(request.form, admin=True, group=True)
        if not errors:
            pin = f"{secrets.randbelow(1_000_000):06d}"
            try:
                box = vm.Mailbox(values["number"], group=True, generated_pin=pin, **changes)
                config_store().add_record(vm.TABLE, box)
            except (ValidationError, TypeError) as e:
                errors = validation_errors(e)
            else:
                _audit("mailbox_added", f"group mailbox {box.number} ({box.name})")
                flash(f"Group mailbox {box.number} added; its PIN is {pin}.", "ok")
                return redirect(url_for("voicemail.edit", number=box.number))
    return render_template("voicemail/form.html", box=None, values=values, errors=errors), 400 if errors else 200


@bp.route("/<number>/edit", methods=["GET", "POST"])
def edit(number):
    box = config_store().record(vm.TABLE, number)
    if box is None:
        return guard.refuse(404, f"no mailbox {number}")
    values = dict(dataclasses.asdict(box), members=" ".join(box.members))
    errors = {}
    if request.method == "POST":
        changes, errors = _form_changes(request.form, admin=True, group=box.group)
        values.update({k: v for k, v in changes.items() if k not in ("pin_hash", "generated_pin")})
        values["members"] = request.form.get("members", "")
        if not errors:
            try:
                config_store().update_record(vm.TABLE, number, **changes)
            except ValidationError as e:
                errors = validation_errors(e)
            else:
                _audit("mailbox_changed", f"mailbox {number}: " + ", ".join(sorted(k for k in changes if k != "pin_hash")))
                flash(f"Mailbox {number} saved.", "ok")
                return redirect(url_for("voicemail.index"))
    return render_template("voicemail/form.html", box=box, values=values, errors=errors), 400 if errors else 200


@bp.get("/<number>/delete")
def delete_confirm(number):
    box = config_store().record(vm.TABLE, number)
    if box is None or not box.group:
        return guard.refuse(404, f"no group mailbox {number} (an extension's mailbox is switched off, not deleted)")
    count = len(_store().messages(number))
    return render_template("confirm.html", title="Delete group mailbox", what=f"group mailbox {number} ({box.name})",
                           blockers=[], consequences=[f"deletes its {count} message(s) and greetings"],
                           action=url_for("voicemail.delete", number=number), back=url_for("voicemail.index"))


@bp.post("/<number>/delete")
def delete(number):
    try:
        config_store().remove_record(vm.TABLE, number)
    except ValidationError as e:
        flash(e.message, "error")
        return redirect(url_for("voicemail.index"))
    store = _store()
    for msg in store.messages(number):
        store.delete(number, msg.id)
    for kind in GREETING_KINDS:
        store.delete_greeting(number, kind)
    _audit("mailbox_deleted", f"group mailbox {number}")
    flash(f"Group mailbox {number} deleted.", "ok")
    return redirect(url_for("voicemail.index"))


# --- a mailbox: its owner, its group's members, or an admin ------------------------------------------
@bp.get("/mine")
@guard.user_allowed
def mine():
    if not g.user.extension:
        return guard.refuse(404, "this account has no extension, so no mailbox")
    return redirect(url_for("voicemail.mailbox", number=g.user.extension))


@bp.get("/<number>")
@guard.user_allowed
def mailbox(number):
    box, refused = _box_or_refuse(number)
    if refused:
        return refused
    store = _store()
    from webui.cdr.views import site_zone
    tz = site_zone()
    rows = [{"msg": msg, "when": datetime.fromtimestamp(msg.received, tz).strftime("%Y-%m-%d %H:%M"),
             "email": _email_state(msg.email_id)} for msg in store.messages(number)]
    greetings = {kind: store.greeting(number, kind) is not None for kind in GREETING_KINDS}
    groups = [b for b in config_store().records(vm.TABLE) if b.group and g.user.extension in b.members]
    return render_template("voicemail/mailbox.html", box=box, rows=rows, greetings=greetings, groups=groups,
                           errors={}, admin=g.user.is_admin, max_mb=MAX_GREETING_UPLOAD // 1048576)


def _message_or_refuse(number: str, msg_id: int):
    box, refused = _box_or_refuse(number)
    if refused:
        return None, None, refused
    msg = _store().get(number, msg_id)
    if msg is None:
        return None, None, guard.refuse(404, f"no message {msg_id} in mailbox {number}: it was deleted")
    return box, msg, None


@bp.get("/<number>/<int:msg_id>/audio")
@guard.user_allowed
def audio(number, msg_id):
    box, msg, refused = _message_or_refuse(number, msg_id)
    if refused:
        return refused
    download = request.args.get("download") == "1"
    name = f"voicemail-{number}-{msg_id}.wav"
    if download:
        _audit("voicemail_downloaded", f"mailbox {number} message {msg_id}")
    resp = send_file(_store().file_of(msg), mimetype="audio/wav", as_attachment=download, download_name=name,
                     conditional=True, max_age=0)
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.post("/<number>/<int:msg_id>/mark")
@guard.user_allowed
def mark(number, msg_id):
    box, msg, refused = _message_or_refuse(number, msg_id)
    if refused:
        return refused
    status = "old" if request.form.get("status") == "old" else "new"
    _store().mark(number, msg_id, status)
    flash(f"Message {msg_id} marked {'read' if status == 'old' else 'unread'}.", "ok")
    return _back(box)


@bp.post("/<number>/<int:msg_id>/delete")
@guard.user_allowed
def delete_message(number, msg_id):
    box, msg, refused = _message_or_refuse(number, msg_id)
    if refused:
        return refused
    _store().delete(number, msg_id)
    _audit("voicemail_deleted", f"mailbox {number} message {msg_id}")
    flash(f"Message {msg_id} deleted.", "ok")
    return _back(box)


@bp.post("/<number>/settings")
@guard.user_allowed
def settings(number):
    """The owner's own settings: PIN and e-mail (an admin has the full form)."""
    box, refused = _box_or_refuse(number)
    if refused:
        return refused
    changes, errors = _form_changes(request.form, admin=False, group=box.group)
    if not errors:
        try:
            config_store().update_record(vm.TABLE, number, **changes)
        except ValidationError as e:
            errors = validation_errors(e)
    if errors:
        for field, message in errors.items():
            flash(f"{field.replace('_', ' ')}: {message}", "error")
        return _back(box)
    _audit("mailbox_changed", f"mailbox {number} (by its user): " + ", ".join(
        sorted("pin" if k == "pin_hash" else k for k in changes if k != "generated_pin")))
    flash("Mailbox settings saved." + (" Your new PIN works from now on." if "pin_hash" in changes else ""), "ok")
    return _back(box)


@bp.post("/<number>/greeting")
@guard.user_allowed
def greeting_upload(number):
    box, refused = _box_or_refuse(number)
    if refused:
        return refused
    kind = request.form.get("kind", "")
    upload = request.files.get("file")
    if kind not in GREETING_KINDS:
        flash(f"greeting: choose one of {', '.join(GREETING_KINDS)}", "error")
        return _back(box)
    if upload is None or not upload.filename:
        flash("greeting: choose a WAV file to upload", "error")
        return _back(box)
    try:
        seconds = _store().save_greeting(number, kind, upload.read(MAX_GREETING_UPLOAD + 1))
    except ValueError as e:
        flash(f"greeting: {e}", "error")
        return _back(box)
    _audit("voicemail_greeting", f"mailbox {number}: {kind} greeting uploaded ({seconds:.0f} s)")
    flash(f"The {kind} greeting ({seconds:.0f} s) is in use from the next call.", "ok")
    return _back(box)


@bp.get("/<number>/greeting/<kind>")
@guard.user_allowed
def greeting_audio(number, kind):
    box, refused = _box_or_refuse(number)
    if refused:
        return refused
    path = _store().greeting(number, kind) if kind in GREETING_KINDS else None
    if path is None:
        return guard.refuse(404, f"mailbox {number} has no {kind} greeting: callers hear the spoken default")
    resp = send_file(path, mimetype="audio/wav", conditional=True, max_age=0)
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.post("/<number>/greeting/<kind>/delete")
@guard.user_allowed
def greeting_delete(number, kind):
    box, refused = _box_or_refuse(number)
    if refused:
        return refused
    if kind in GREETING_KINDS and _store().delete_greeting(number, kind):
        _audit("voicemail_greeting", f"mailbox {number}: {kind} greeting deleted")
        flash(f"The {kind} greeting is deleted: callers hear the spoken default.", "ok")
    return _back(box)


# --- the e-mail link: no login, the signature is the key --------------------------------------------
@bp.get("/listen/<token>")
@guard.public
def listen(token):
    try:
        number, msg_id = check_link(data_dir(), token)
    except ValueError as e:
        return guard.refuse(403, str(e))
    msg = _store().get(number, msg_id)
    if msg is None:
        return guard.refuse(404, "this message was deleted")
    resp = send_file(_store().file_of(msg), mimetype="audio/wav", download_name=f"voicemail-{number}-{msg_id}.wav",
                     conditional=True, max_age=0)
    resp.headers["Cache-Control"] = "no-store"
    return resp
