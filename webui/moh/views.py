"""Music on hold page: the classes, their files (played in the page), uploads and deletions.

An upload (WAV, MP3, OGG, FLAC, M4A up to firmware.features.moh.MAX_UPLOAD_BYTES) is converted
with ffmpeg to 8 kHz mono 16-bit WAV, loudness-normalised (services/media/moh.py), and added to
the class; anything else is refused with the reason. Only this upload route accepts more than
the app's 1 MB request limit. Files are served only through these admin views.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from flask import (Blueprint, current_app, flash, g, redirect, render_template, request, send_file,
                   url_for)

from firmware.config import ValidationError
from firmware.config.errors import ValidationErrors
from firmware.features import moh as model
from services.media import moh as files
from webui.auth import guard
from webui.pbx import config_store, data_dir, pbx_status, validation_errors

bp = Blueprint("moh", __name__, template_folder="templates", url_prefix="/moh")


@bp.before_app_request
def _upload_limit():
    # runs before the guard parses the form for its CSRF token: only the upload may be large
    if request.endpoint == "moh.upload":
        request.max_content_length = model.MAX_UPLOAD_BYTES + 64 * 1024


@bp.errorhandler(413)
def _too_large(_exc):
    from webui.errors import error_page
    return error_page(413, f"upload larger than {model.MAX_UPLOAD_BYTES // 1048576} MB: shorten the music "
                           "or export it at a lower bit rate")


def _audit(event: str, detail: str) -> None:
    current_app.extensions["pbx.accounts"].audit(event, g.user.username, guard.client_address(), detail)


def _table() -> dict:
    return {c.name: c for c in config_store().records(model.TABLE)}


def _split(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(p for p in text.replace(",", " ").split() if p))


def _seconds(cls_name: str, name: str) -> float:
    try:
        return max(0.0, (files.class_dir(data_dir(), cls_name) / name).stat().st_size - 44) / 16000
    except OSError:
        return 0.0


@bp.get("")
def index():
    classes = model.classes(_table())
    lengths = {(c.name, f): _seconds(c.name, f) for c in classes for f in c.files}
    status = pbx_status()
    listening = {name: s.get("listeners", 0) for name, s in (status.get("moh") or {}).items()}
    return render_template("moh/index.html", classes=classes, lengths=lengths, orders=model.ORDERS,
                           listening=listening, running=status.get("running"),
                           types=", ".join(t.upper() for t in model.UPLOAD_TYPES if t != "oga"),
                           max_mb=model.MAX_UPLOAD_BYTES // 1048576, max_min=model.MAX_SECONDS // 60,
                           values={}, errors={})


def _form_class(name: str, existing: model.MohClass | None) -> model.MohClass:
    base = existing or model.MohClass(name)
    return dataclasses.replace(base, name=name, order=request.form.get("order", "order"),
                               extensions=_split(request.form.get("extensions", "")),
                               routes=_split(request.form.get("routes", "")),
                               description=request.form.get("description", "").strip())


def _save(cls: model.MohClass, new: bool) -> dict:
    store = config_store()
    table = _table()
    try:
        problems = model.conflicts(cls, table)
        if problems:
            raise ValidationErrors(problems)
        if new or cls.name not in table:
            store.add_record(model.TABLE, cls)
        else:
            store.replace_record(model.TABLE, cls)
    except ValidationError as e:
        return validation_errors(e)
    return {}


@bp.post("/new")
def new():
    name = request.form.get("name", "").strip().lower()
    cls = _form_class(name, None)
    errors = _save(cls, new=True) if name != model.DEFAULT else {"name": "'default' always exists: edit it below"}
    if errors:
        classes = model.classes(_table())
        return render_template("moh/index.html", classes=classes, lengths={}, orders=model.ORDERS,
                               types=", ".join(t.upper() for t in model.UPLOAD_TYPES if t != "oga"),
                               max_mb=model.MAX_UPLOAD_BYTES // 1048576, max_min=model.MAX_SECONDS // 60,
                               listening={}, running=False, values=request.form, errors=errors), 400
    _audit("moh_class_added", name)
    flash(f"Music on hold class {name} created: upload its music below.", "ok")
    return redirect(url_for("moh.index") + f"#class-{name}")


def _class_or_404(name: str):
    table = _table()
    if name in table:
        return table[name], None
    if name == model.DEFAULT:
        return model.default_class(), None
    return None, guard.refuse(404, f"no music on hold class {name}: it was deleted, or the address is wrong")


@bp.route("/<name>", methods=["GET", "POST"])
def edit(name: str):
    cls, refused = _class_or_404(name)
    if refused:
        return refused
    errors: dict = {}
    if request.method == "POST":
        changed = _form_class(name, cls)
        errors = _save(changed, new=False)
        if not errors:
            _audit("moh_class_changed", name)
            flash(f"Music on hold class {name} saved.", "ok")
            return redirect(url_for("moh.index") + f"#class-{name}")
        cls = changed
    return render_template("moh/edit.html", cls=cls, orders=model.ORDERS, errors=errors), 400 if errors else 200


@bp.post("/<name>/upload")
def upload(name: str):
    cls, refused = _class_or_404(name)
    if refused:
        return refused
    upload = request.files.get("file")
    back = redirect(url_for("moh.index") + f"#class-{name}")
    if upload is None or not upload.filename:
        flash("Choose an audio file to upload first.", "error")
        return back
    with tempfile.TemporaryDirectory(prefix="moh-upload-") as tmp:
        suffix = "".join(c for c in upload.filename.rsplit(".", 1)[-1].lower() if c.isascii() and c.isalnum())
        src = Path(tmp) / f"upload.{suffix[:5] or 'bin'}"
        upload.save(src)
        size = src.stat().st_size
        problem = model.upload_error(upload.filename, size)
        if problem is None and len(cls.files) >= model.MAX_FILES:
            problem = f"class {name} already has {model.MAX_FILES} files: delete one first"
        if problem is None:
            stored = model.file_name_for(upload.filename, cls.files)
            try:
                seconds = files.convert(src, files.class_dir(data_dir(), name) / stored, label=upload.filename)
            except files.ConversionError as exc:
                problem = str(exc)
    if problem is not None:
        current_app.logger.info("music on hold upload to %s refused: %s", name, problem)
        flash(f"Not added: {problem}", "error")
        return back
    errors = _save(dataclasses.replace(cls, files=cls.files + (stored,)), new=False)
    if errors:
        files.remove_file(data_dir(), name, stored)
        flash(f"Not added: {'; '.join(errors.values())}", "error")
        return back
    _audit("moh_file_added", f"{name}/{stored} ({seconds:.0f} s)")
    flash(f"{upload.filename} added to {name} as {stored} ({seconds:.0f} s, 8 kHz mono).", "ok")
    return back


def _file_or_404(name: str):
    cls, refused = _class_or_404(name)
    if refused:
        return None, None, refused
    fname = request.values.get("file", "")
    if fname not in cls.files:
        return None, None, guard.refuse(404, f"class {name} has no file {fname!r}")
    return cls, fname, None


@bp.get("/<name>/file")
def file(name: str):
    cls, fname, refused = _file_or_404(name)
    if refused:
        return refused
    path = files.class_dir(data_dir(), name) / fname
    if not path.is_file():
        return guard.refuse(404, f"{fname} is missing on disk: delete it from the class and upload it again")
    resp = send_file(path, mimetype="audio/wav", conditional=True, max_age=0, download_name=fname)
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/<name>/file/delete")
def file_delete_confirm(name: str):
    cls, fname, refused = _file_or_404(name)
    if refused:
        return refused
    return render_template("confirm.html", title="Delete music file", what=f"{fname} from class {name}",
                           blockers=[], consequences=[f"callers on hold in {name} stop hearing it"
                                                      + ("; the class plays the box's own tune when it has no files"
                                                         if len(cls.files) == 1 else "")],
                           action=url_for("moh.file_delete", name=name, file=fname),
                           back=url_for("moh.index") + f"#class-{name}")


@bp.post("/<name>/file/delete")
def file_delete(name: str):
    cls, fname, refused = _file_or_404(name)
    if refused:
        return refused
    errors = _save(dataclasses.replace(cls, files=tuple(f for f in cls.files if f != fname)), new=False)
    if errors:
        flash(f"Not deleted: {'; '.join(errors.values())}", "error")
    else:
        files.remove_file(data_dir(), name, fname)
        _audit("moh_file_deleted", f"{name}/{fname}")
        flash(f"{fname} deleted from {name}.", "ok")
    return redirect(url_for("moh.index") + f"#class-{name}")


@bp.get("/<name>/delete")
def delete_confirm(name: str):
    cls, refused = _class_or_404(name)
    if refused:
        return refused
    blockers = ["the default class cannot be deleted (delete its files to go back to the box's tune)"] \
        if name == model.DEFAULT else []
    return render_template("confirm.html", title=f"Delete class {name}", what=f"music on hold class {name}",
                           blockers=blockers,
                           consequences=[f"deletes its {len(cls.files)} file(s)",
                                         "its extensions and routes hear the default class"],
                           action=url_for("moh.delete", name=name), back=url_for("moh.index"))


@bp.post("/<name>/delete")
def delete(name: str):
    cls, refused = _class_or_404(name)
    if refused:
        return refused
    if name == model.DEFAULT:
        return guard.refuse(400, "the default class cannot be deleted: delete its files instead")
    try:
        config_store().remove_record(model.TABLE, name)
    except ValidationError as e:
        flash(f"Not deleted: {e.message}", "error")
        return redirect(url_for("moh.index"))
    files.remove_class_dir(data_dir(), name)
    _audit("moh_class_deleted", name)
    flash(f"Music on hold class {name} deleted.", "ok")
    return redirect(url_for("moh.index"))
