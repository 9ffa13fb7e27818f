"""System prompts page: the box's announcements (services/media/prompts.py PROMPTS) in each
language set (en-GB: the box's own voice; en-US: spoken on first use, used by IVR menus in that
language), each playable in the page. The administrator may replace one with an upload (converted
to 8 kHz mono into DATA/prompts/custom/[<language>/]<prompt>.wav, which calls then play instead:
services/media/prompt_files.py) and revert to the box's own.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, send_file, url_for

from services.media import prompt_files
from services.media.prompts import PROMPTS
from webui.auth import guard
from webui.pbx import data_dir

bp = Blueprint("prompts", __name__, template_folder="templates", url_prefix="/prompts")
LANGUAGES = tuple(prompt_files.LANGUAGES)


@bp.before_app_request
def _upload_limit():
    # before the guard parses the form for its CSRF token: only the upload may be large
    if request.endpoint == "prompts.upload":
        request.max_content_length = prompt_files.MAX_UPLOAD_BYTES + 64 * 1024


@bp.errorhandler(413)
def _too_large(_exc):
    from webui.errors import error_page
    return error_page(413, f"upload larger than {prompt_files.MAX_UPLOAD_BYTES // 1048576} MB: shorten the "
                           "prompt or export it at a lower bit rate")


def _audit(event: str, detail: str) -> None:
    current_app.extensions["pbx.accounts"].audit(event, g.user.username, guard.client_address(), detail)


def _seconds(path: Path) -> float:
    try:
        return max(0.0, path.stat().st_size - 44) / 16000
    except OSError:
        return 0.0


def _language() -> str:
    lang = request.values.get("lang", prompt_files.DEFAULT_LANGUAGE)
    return lang if lang in LANGUAGES else prompt_files.DEFAULT_LANGUAGE


@bp.get("")
def index():
    lang = _language()
    rows = []
    for prompt_id, text in PROMPTS.items():
        custom = prompt_files.custom_path(data_dir(), prompt_id, lang)
        own = prompt_files.builtin_path(data_dir(), prompt_id, lang)
        rows.append({"id": prompt_id, "text": text, "custom": custom.is_file(), "custom_s": _seconds(custom),
                     "default": own.is_file() or lang != prompt_files.DEFAULT_LANGUAGE,
                     "default_s": _seconds(own)})
    return render_template("prompts/index.html", rows=rows, max_mb=prompt_files.MAX_UPLOAD_BYTES // 1048576,
                           replaced=sum(r["custom"] for r in rows), lang=lang, languages=LANGUAGES,
                           default_language=prompt_files.DEFAULT_LANGUAGE)


def _known_or_404(prompt_id: str):
    if prompt_id not in PROMPTS:
        return guard.refuse(404, f"no system prompt {prompt_id!r}: pick one from the System prompts page")
    return None


@bp.get("/<prompt_id>/audio")
def audio(prompt_id: str):
    refused = _known_or_404(prompt_id)
    if refused:
        return refused
    lang = _language()
    which = request.args.get("which", "default")
    if which == "custom":
        path = prompt_files.custom_path(data_dir(), prompt_id, lang)
    else:
        try:      # another language's own prompt is spoken the first time someone asks for it
            path = prompt_files.ensure_builtin(data_dir(), prompt_id, lang)
        except (RuntimeError, OSError) as exc:
            return guard.refuse(503, f"prompt {prompt_id} could not be spoken in {lang}: {exc}")
    if not path.is_file():
        return guard.refuse(404, f"prompt {prompt_id} has no {'replacement' if which == 'custom' else 'recording'}"
                                 f" in {lang}" + ("" if which == "custom" else ": run `make prompts`"))
    resp = send_file(path, mimetype="audio/wav", conditional=True, max_age=0,
                     download_name=f"{prompt_id}-{lang}.wav")
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.post("/<prompt_id>/upload")
def upload(prompt_id: str):
    refused = _known_or_404(prompt_id)
    if refused:
        return refused
    lang = _language()
    back = redirect(url_for("prompts.index", lang=lang) + f"#p-{prompt_id}")
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        flash("Choose a sound file to upload first.", "error")
        return back
    with tempfile.TemporaryDirectory(prefix="prompt-upload-") as tmp:
        src = Path(tmp) / ("upload." + upload.filename.rsplit(".", 1)[-1].lower()[:5])
        upload.save(src)
        problem = prompt_files.upload_error(upload.filename, src.stat().st_size)
        seconds = 0.0
        if problem is None:
            try:
                seconds = prompt_files.convert(src, prompt_files.custom_path(data_dir(), prompt_id, lang),
                                               label=upload.filename)
            except prompt_files.ConversionError as exc:
                problem = str(exc)
    if problem is not None:
        current_app.logger.info("system prompt %s (%s): upload refused: %s", prompt_id, lang, problem)
        flash(f"Prompt {prompt_id} ({lang}) not replaced: {problem}", "error")
        return back
    _audit("prompt_replaced", f"{prompt_id} {lang} ({seconds:.1f} s)")
    flash(f"Prompt {prompt_id} ({lang}) replaced by {upload.filename} ({seconds:.1f} s, 8 kHz mono): calls play "
          "it now.", "ok")
    return back


@bp.post("/<prompt_id>/revert")
def revert(prompt_id: str):
    refused = _known_or_404(prompt_id)
    if refused:
        return refused
    lang = _language()
    prompt_files.custom_path(data_dir(), prompt_id, lang).unlink(missing_ok=True)
    _audit("prompt_reverted", f"{prompt_id} {lang}")
    flash(f"Prompt {prompt_id} ({lang}) is the box's own again.", "ok")
    return redirect(url_for("prompts.index", lang=lang) + f"#p-{prompt_id}")
