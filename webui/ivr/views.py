"""IVR menu pages: the list, a form per menu (a destination for each key, the prompt as text to
speech, an upload or recorded by phone, direct dial, time-out and wrong-key handling), and the
menu as a tree with nested menus expanded.

Text to speech is synthesised here when the menu is saved (espeak-ng in the menu's language
voice, services/media/prompt_files.py), so the first caller does not wait for it. An upload (WAV,
MP3, OGG, FLAC, M4A up to prompt_files.MAX_UPLOAD_BYTES) is converted to 8 kHz mono by ffmpeg;
anything else is refused with the reason. Only the menu form accepts more than the app's 1 MB
request limit.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from flask import (Blueprint, current_app, flash, g, redirect, render_template, request, send_file,
                   url_for)

from firmware.config import ValidationError
from firmware.features.ivr import KEYS, LANGUAGES, PROMPT_KINDS, RECORD_CODE, TABLE, IvrMenu, menu_tree
from services.media import prompt_files
from webui import destinations
from webui.auth import guard
from webui.pbx import config_store, data_dir, validation_errors

bp = Blueprint("ivr", __name__, template_folder="templates", url_prefix="/ivr")
DESTS = tuple(f"option_{k}" for k in KEYS) + ("invalid_destination", "timeout_destination")


@bp.before_app_request
def _upload_limit():
    # before the guard parses the form for its CSRF token: only the menu form may carry a file
    if request.endpoint in ("ivr.new", "ivr.edit") and request.method == "POST":
        request.max_content_length = prompt_files.MAX_UPLOAD_BYTES + 256 * 1024


@bp.errorhandler(413)
def _too_large(_exc):
    from webui.errors import error_page
    return error_page(413, f"upload larger than {prompt_files.MAX_UPLOAD_BYTES // 1048576} MB: shorten the "
                           "prompt or export it at a lower bit rate")


def _audit(event: str, detail: str) -> None:
    current_app.extensions["pbx.accounts"].audit(event, g.user.username, guard.client_address(), detail)


def _menus(store) -> dict[str, IvrMenu]:
    return {m.number: m for m in store.records(TABLE)}


def _labeller(store):
    names = {e.number: e.name for e in store.extensions()}
    menus = _menus(store)

    def label(value: str) -> str:
        if value == "hangup":
            return "goodbye, hang up"
        if value.startswith("ivr:") and value[4:] in menus:
            return f"IVR menu {value[4:]} ({menus[value[4:]].name})"
        return destinations.label(value, names)
    return label


@bp.get("")
def index():
    store = config_store()
    menus = list(_menus(store).values())
    return render_template("ivr/index.html", menus=menus, label=_labeller(store), kinds=PROMPT_KINDS,
                           keys=KEYS, code=RECORD_CODE)


def _values(menu: IvrMenu | None) -> dict:
    if menu is None:
        return {"number": "", "name": "", "prompt_kind": "tts", "prompt_text": "", "language": "en-GB",
                "direct_dial": False, "timeout": "5", "retries": "2", "invalid_destination": "",
                "timeout_destination": "", **{f"option_{k}": "" for k in KEYS}}
    return {"number": menu.number, "name": menu.name, "prompt_kind": menu.prompt_kind,
            "prompt_text": menu.prompt_text, "language": menu.language, "direct_dial": menu.direct_dial,
            "timeout": str(menu.timeout), "retries": str(menu.retries),
            "invalid_destination": menu.invalid_destination, "timeout_destination": menu.timeout_destination,
            **{f"option_{k}": menu.options.get(k, "") for k in KEYS}}


def _posted() -> tuple[dict, dict]:
    form = request.form
    values = {k: form.get(k, "").strip() for k in ("number", "name", "prompt_kind", "language", "timeout",
                                                   "retries")}
    values["prompt_text"] = form.get("prompt_text", "").strip()
    values["direct_dial"] = form.get("direct_dial") == "on"
    errors = {}
    for name in DESTS:
        values[name], problem = destinations.form_value(name, form)
        if problem:
            errors[name] = problem
    for name, unit in (("timeout", "seconds"), ("retries", "repeats")):
        if not values[name].isdigit():
            errors[name] = f"'{values[name]}' is not a whole number ({unit})"
    return values, errors


def _record(values: dict) -> IvrMenu:
    return IvrMenu(values["number"], values["name"], values["prompt_kind"], values["prompt_text"], values["language"],
                   {k: values[f"option_{k}"] for k in KEYS if values[f"option_{k}"]}, values["direct_dial"],
                   int(values["timeout"]) if values["timeout"].isdigit() else 0,
                   int(values["retries"]) if values["retries"].isdigit() else 0,
                   values["invalid_destination"], values["timeout_destination"])


def _store_upload(number: str) -> tuple[bool, str | None]:
    """The uploaded prompt converted into the menu's folder: (uploaded?, why it was refused)."""
    upload = request.files.get("prompt_file")
    if upload is None or not upload.filename:
        return False, None
    with tempfile.TemporaryDirectory(prefix="ivr-upload-") as tmp:
        src = Path(tmp) / ("upload." + upload.filename.rsplit(".", 1)[-1].lower()[:5])
        upload.save(src)
        problem = prompt_files.upload_error(upload.filename, src.stat().st_size)
        if problem:
            return False, problem
        try:
            prompt_files.convert(src, prompt_files.ivr_dir(data_dir(), number) / "upload.wav", label=upload.filename)
        except prompt_files.ConversionError as exc:
            return False, str(exc)
    return True, None


def _number_taken(number: str) -> str:
    """What else answers to `number` when dialled from an extension ("" if nothing)."""
    store = config_store()
    if store.get_extension(number) is not None:
        return f"extension {number}"
    from firmware.config.records import RECORD_KINDS
    for table in ("ring_groups", "queues", "conference_rooms", "paging_groups"):
        kind = RECORD_KINDS.get(table)
        if kind is not None and store.record(table, number) is not None:
            return f"{kind.collection.noun} {number}"
    return ""


def _save(values: dict, errors: dict, existing: IvrMenu | None):
    """Validate, take the upload, store the menu and speak its text; (menu, errors)."""
    if not errors:
        try:
            _record(values).validate()
        except ValidationError as e:
            errors = {**validation_errors(e), **errors}
    if existing is None and not errors:
        taken = _number_taken(values["number"])
        if taken:
            errors["number"] = f"{values['number']} is already {taken}'s number: a caller dialling it would reach " \
                               "that, not the menu; pick another"
    if errors:
        return None, errors
    uploaded, problem = _store_upload(values["number"])
    if problem:
        current_app.logger.info("IVR menu %s: prompt upload refused: %s", values["number"], problem)
        return None, {"prompt_file": problem}
    if uploaded:
        values["prompt_kind"] = "upload"
    if values["prompt_kind"] == "upload" and not uploaded and \
            not prompt_files.menu_prompt_path(data_dir(), _record(values)).is_file():
        return None, {"prompt_file": "no prompt has been uploaded for this menu yet: choose a file"}
    record = _record(values)
    store = config_store()
    try:
        if existing is None:
            store.add_record(TABLE, record)
        else:
            store.replace_record(TABLE, record)
    except ValidationError as e:
        if existing is None and uploaded:
            prompt_files.remove_menu_files(data_dir(), record.number)
        return None, validation_errors(e)
    if record.prompt_kind == "tts":
        try:
            prompt_files.generate_menu_tts(data_dir(), record)
        except (RuntimeError, OSError) as exc:     # the menu works anyway: the call service speaks it
            current_app.logger.warning("IVR menu %s: text to speech failed: %s", record.number, exc)
            flash(f"The menu's text could not be spoken now ({exc}); the first call will try again.", "error")
    return record, {}


def _render(values, errors, menu, form=None):
    store = config_store()
    dests = {n: (destinations.DestinationField.from_form(n, form) if form is not None
                 else destinations.DestinationField.of(n, values[n])) for n in DESTS}
    menus = _menus(store)
    tree = menu_tree(menu, menus, _labeller(store)) if menu is not None else None
    prompt_ready = menu is not None and prompt_files.menu_prompt_path(data_dir(), menu).is_file()
    return render_template("ivr/form.html", values=values, errors=errors, menu=menu, dests=dests, keys=KEYS,
                           kinds=destinations.kinds(), choices=destinations.choices(store), tree=tree,
                           prompt_kinds=list(PROMPT_KINDS.items()), languages=[(k, k) for k in LANGUAGES],
                           prompt_ready=prompt_ready, code=RECORD_CODE,
                           max_mb=prompt_files.MAX_UPLOAD_BYTES // 1048576), 400 if errors else 200


@bp.route("/new", methods=["GET", "POST"])
def new():
    values, errors = _values(None), {}
    if request.method == "POST":
        values, errors = _posted()
        record, errors = _save(values, errors, None)
        if record is not None:
            _audit("ivr_menu_added", f"{record.number} {record.name}")
            flash(f"IVR menu {record.number} added: dial {record.number} from an extension to try it, or use "
                  f"'IVR menu {record.number}' as a destination.", "ok")
            return redirect(url_for("ivr.edit", number=record.number))
        return _render(values, errors, None, request.form)
    return _render(values, errors, None)


@bp.route("/<number>", methods=["GET", "POST"])
def edit(number: str):
    menu = config_store().record(TABLE, number)
    if menu is None:
        return guard.refuse(404, f"no IVR menu {number}")
    values, errors = _values(menu), {}
    if request.method == "POST":
        values, errors = _posted()
        values["number"] = number
        record, errors = _save(values, errors, menu)
        if record is not None:
            _audit("ivr_menu_changed", number)
            flash(f"IVR menu {number} saved.", "ok")
            return redirect(url_for("ivr.edit", number=number))
        return _render(values, errors, menu, request.form)
    return _render(values, errors, menu)


@bp.get("/<number>/prompt")
def prompt(number: str):
    menu = config_store().record(TABLE, number)
    if menu is None:
        return guard.refuse(404, f"no IVR menu {number}")
    path = prompt_files.menu_prompt_path(data_dir(), menu)
    if not path.is_file():
        return guard.refuse(404, f"IVR menu {number} has no {PROMPT_KINDS[menu.prompt_kind].lower()} prompt yet")
    resp = send_file(path, mimetype="audio/wav", conditional=True, max_age=0,
                     download_name=f"ivr-{number}-{menu.prompt_kind}.wav")
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/<number>/delete")
def delete_confirm(number: str):
    menu = config_store().record(TABLE, number)
    if menu is None:
        return guard.refuse(404, f"no IVR menu {number}")
    return render_template("confirm.html", title=f"Delete IVR menu {number}", what=f"IVR menu {number} ({menu.name})",
                           blockers=[], consequences=["its prompt files are deleted too",
                                                      f"dialling {number} no longer reaches it"],
                           action=url_for("ivr.delete", number=number), back=url_for("ivr.edit", number=number))


@bp.post("/<number>/delete")
def delete(number: str):
    try:
        config_store().remove_record(TABLE, number)
    except ValidationError as e:
        flash(e.message, "error")
        return redirect(url_for("ivr.edit", number=number))
    prompt_files.remove_menu_files(data_dir(), number)
    _audit("ivr_menu_removed", number)
    flash(f"IVR menu {number} deleted.", "ok")
    return redirect(url_for("ivr.index"))
