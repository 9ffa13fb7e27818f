"""Extension pages: list with registration state, create, edit, delete, reveal/regenerate secret."""
from __future__ import annotations

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from firmware.config import ValidationError
from webui.auth import guard
from webui.auth.accounts import AccountError
from webui.pbx import config_store, pbx_status, registered_extensions, validation_errors

bp = Blueprint("extensions", __name__, template_folder="templates", url_prefix="/extensions")


def _audit(event: str, detail: str) -> None:
    current_app.extensions["pbx.accounts"].audit(event, g.user.username, guard.client_address(), detail)


def routes_to(store, number: str) -> list[str]:
    """Inbound routes (DIDs) that ring this extension: deleting it would leave them dangling."""
    return [r.did for r in store.inbound_routes() if r.destination == number]


def set_web_password(number: str, password: str) -> None:
    """Phone users log in with their extension number; an empty password leaves things as they are."""
    if not password:
        return
    accounts = current_app.extensions["pbx.accounts"]
    if accounts.get(number) is None:
        accounts.create(number, password, "user", extension=number)
    else:
        accounts.set_password(number, password)
    _audit("user_password_set", f"web login for extension {number}")


@bp.get("")
def index():
    status = pbx_status()
    regs = registered_extensions(status)
    return render_template("extensions/index.html", extensions=config_store().extensions(),
                           regs=regs, status=status)


@bp.route("/new", methods=["GET", "POST"])
def new():
    values = {"number": "", "name": "", "secret": ""}
    errors: dict[str, str] = {}
    if request.method == "POST":
        values = {k: request.form.get(k, "").strip() for k in values}
        web_password = request.form.get("web_password", "")
        store = config_store()
        if web_password:
            try:
                from webui.auth.accounts import check_password_strength
                check_password_strength(web_password, values["number"])
            except AccountError as e:
                errors["web_password"] = e.message
        if not errors:
            try:
                ext = store.add_extension(values["number"], values["name"], values["secret"] or None)
            except ValidationError as e:
                errors = validation_errors(e)
            else:
                set_web_password(ext.number, web_password)
                _audit("extension_added", f"extension {ext.number}")
                # Shown once in this response, never flashed: the flash lives in the (signed,
                # not encrypted) session cookie.
                return _edit_page(ext, revealed=ext.secret,
                                  notice=f"Extension {ext.number} created: enter this password in the phone.")
    return render_template("extensions/form.html", values=values, errors=errors, ext=None,
                           regs=[], revealed=None, notice=None, has_login=False), 400 if errors else 200


@bp.route("/<number>", methods=["GET", "POST"])
def edit(number: str):
    store = config_store()
    ext = store.get_extension(number)
    if ext is None:
        return guard.refuse(404, f"no extension {number}")
    values = {"number": ext.number, "name": ext.name, "secret": ""}
    errors: dict[str, str] = {}
    if request.method == "POST":
        values["name"] = request.form.get("name", "").strip()
        values["secret"] = request.form.get("secret", "").strip()
        web_password = request.form.get("web_password", "")
        if web_password:
            try:
                from webui.auth.accounts import check_password_strength
                check_password_strength(web_password, number)
            except AccountError as e:
                errors["web_password"] = e.message
        if not errors:
            try:
                store.update_extension(number, name=values["name"], secret=values["secret"] or None)
            except ValidationError as e:
                errors = validation_errors(e)
            else:
                set_web_password(number, web_password)
                _audit("extension_changed", f"extension {number}"
                       + (" (new SIP password)" if values["secret"] else ""))
                flash(f"Extension {number} saved.", "ok")
                return redirect(url_for("extensions.index"))
    return _edit_page(ext, values, errors)


def _edit_page(ext, values=None, errors=None, revealed=None, notice=None):
    values = values or {"number": ext.number, "name": ext.name, "secret": ""}
    regs = registered_extensions(pbx_status()).get(ext.number, [])
    has_login = current_app.extensions["pbx.accounts"].get(ext.number) is not None
    return render_template("extensions/form.html", values=values, errors=errors or {}, ext=ext,
                           regs=regs, revealed=revealed, notice=notice,
                           has_login=has_login), 400 if errors else 200


@bp.post("/<number>/reveal")
def reveal(number: str):
    store = config_store()
    ext = store.get_extension(number)
    if ext is None:
        return guard.refuse(404, f"no extension {number}")
    _audit("secret_revealed", f"extension {number}")
    return _edit_page(ext, revealed=ext.secret)


@bp.post("/<number>/secret")
def regenerate(number: str):
    try:
        ext = config_store().regenerate_secret(number)
    except ValidationError as e:
        return guard.refuse(404, e.message)
    _audit("secret_regenerated", f"extension {number}")
    return _edit_page(ext, revealed=ext.secret,
                      notice=f"New SIP password for {number}: the phone must be updated with it.")


@bp.post("/<number>/delete")
def delete(number: str):
    store = config_store()
    if store.get_extension(number) is None:
        return guard.refuse(404, f"no extension {number}")
    dids = routes_to(store, number)
    if dids:
        flash(f"Extension {number} still receives inbound route(s) {', '.join(dids)}: "
              "point them elsewhere first (Routes page).", "bad")
        return redirect(url_for("extensions.edit", number=number))
    store.remove_extension(number)
    current_app.extensions["pbx.accounts"].delete(number)
    _audit("extension_removed", f"extension {number}")
    flash(f"Extension {number} deleted.", "ok")
    return redirect(url_for("extensions.index"))
