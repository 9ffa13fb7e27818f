"""A user's own extension: name, SIP password (reveal/regenerate), web password.

Which extension is taken from the logged-in account, never from the URL, so there is no
number to change in a request to reach someone else's extension.
"""
from __future__ import annotations

from flask import Blueprint, current_app, g, render_template, request

from firmware.config import ValidationError
from webui.auth import guard
from webui.auth.accounts import AccountError
from webui.pbx import config_store, pbx_status, registered_extensions, validation_errors

bp = Blueprint("me", __name__, template_folder="templates", url_prefix="/me")


def _page(errors=None, revealed=None, notice=None, name=None):
    number = g.user.extension
    ext = config_store().get_extension(number) if number else None
    if ext is None:
        return render_template("me/index.html", ext=None, errors={}, revealed=None, notice=None,
                               regs=[], name=""), 200
    regs = registered_extensions(pbx_status()).get(number, [])
    return render_template("me/index.html", ext=ext, errors=errors or {}, revealed=revealed,
                           notice=notice, regs=regs, name=ext.name if name is None else name), \
        400 if errors else 200


def _audit(event: str, detail: str = "") -> None:
    current_app.extensions["pbx.accounts"].audit(event, g.user.username, guard.client_address(), detail)


@bp.get("")
@guard.user_allowed
def index():
    return _page()


@bp.post("")
@guard.user_allowed
def save():
    if not g.user.extension:
        return guard.refuse(404, "this account has no extension")
    name = request.form.get("name", "").strip()
    try:
        config_store().update_extension(g.user.extension, name=name)
    except ValidationError as e:
        return _page(errors=validation_errors(e), name=name)
    _audit("extension_changed", f"extension {g.user.extension} (by its user)")
    return _page(notice="Saved.")


@bp.post("/reveal")
@guard.user_allowed
def reveal():
    ext = config_store().get_extension(g.user.extension or "")
    if ext is None:
        return guard.refuse(404, "this account has no extension")
    _audit("secret_revealed", f"extension {ext.number} (by its user)")
    return _page(revealed=ext.secret)


@bp.post("/secret")
@guard.user_allowed
def regenerate():
    if not g.user.extension:
        return guard.refuse(404, "this account has no extension")
    ext = config_store().regenerate_secret(g.user.extension)
    _audit("secret_regenerated", f"extension {ext.number} (by its user)")
    return _page(revealed=ext.secret, notice="New SIP password: update your phone with it.")


@bp.post("/password")
@guard.user_allowed
def password():
    accounts = current_app.extensions["pbx.accounts"]
    current = request.form.get("current_password", "")
    new = request.form.get("new_password", "")
    if accounts.verify(g.user.username, current) is None:
        return _page(errors={"current_password": "wrong current password"})
    try:
        account = accounts.set_password(g.user.username, new)
    except AccountError as e:
        return _page(errors={"new_password": e.message})
    guard.login(account)  # the epoch moved on: keep this session, void all others
    _audit("password_changed")
    return _page(notice="Password changed; other sessions are logged out.")
