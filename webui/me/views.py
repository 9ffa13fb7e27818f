"""A user's own extension: name, SIP password (reveal/regenerate), web password, DND and
forwards, call history.

Which extension is taken from the logged-in account, never from the URL, so there is no
number to change in a request to reach someone else's extension. Every change is a POST that
redirects back here (a reload never sends it again); a new SIP password is shown once after the
redirect (webui/show_once.py), never put in the cookie.
"""
from __future__ import annotations

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from firmware.config import ValidationError
from webui import callhandling, show_once
from webui.auth import guard
from webui.auth.accounts import AccountError
from webui.cdr import query
from webui.cdr.filters import record_dict
from webui.cdr.views import site_zone
from webui.paging import make_page, page_number
from webui.pbx import config_store, data_dir, pbx_status, registered_extensions, validation_errors

bp = Blueprint("me", __name__, template_folder="templates", url_prefix="/me")
HISTORY_PAGE = 20


def _history(number: str):
    filters = {"extension": number}
    p = make_page(page_number(request.args.get("page")), query.count(data_dir(), filters), HISTORY_PAGE)
    tz = site_zone()
    calls = [record_dict(r, tz) for r in query.page(data_dir(), filters, limit=p.size, offset=p.offset)]
    return calls, p


def _spend(number: str):
    """(cost, currency, calls) of the extension's outside calls this month (call charging)."""
    from services.charging import spend_this_month, zone
    return spend_this_month(data_dir(), number, zone(config_store().settings()))


def _page(errors=None, name=None, form=None):
    number = g.user.extension
    ext = config_store().get_extension(number) if number else None
    if ext is None:
        return render_template("me/index.html", ext=None, errors={}, revealed=None, regs=[], name="",
                               calls=[], page=None), 200
    regs = registered_extensions(pbx_status()).get(number, [])
    revealed = ext.secret if request.method == "GET" and show_once.take(f"me:{number}") else None
    calls, page = _history(number)
    return render_template("me/index.html", ext=ext, errors=errors or {}, revealed=revealed, regs=regs,
                           name=ext.name if name is None else name, calls=calls, page=page,
                           spend=_spend(number),
                           ch=callhandling.template_args(config_store(), ext, form=form)), \
        400 if errors else 200


def _audit(event: str, detail: str = "") -> None:
    current_app.extensions["pbx.accounts"].audit(event, g.user.username, guard.client_address(), detail)


def _back():
    return redirect(url_for("me.index"))


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
    flash("Saved.", "ok")
    return _back()


@bp.post("/calls")
@guard.user_allowed
def call_handling():
    """DND and the three forwards of the user's own extension (the same as *78, *72, *90, *52)."""
    number = g.user.extension
    store = config_store()
    if not number or store.get_extension(number) is None:
        return guard.refuse(404, "this account has no extension")
    changes, errors = callhandling.form_changes(request.form, admin=False)
    errors = callhandling.check(store, store.get_extension(number), changes, errors)
    if not errors:
        try:
            store.update_extension(number, **changes)
        except ValidationError as e:
            errors = validation_errors(e)
    if errors:
        return _page(errors=errors, form=request.form)
    _audit("call_handling_changed", f"extension {number} (by its user): "
                                    + ", ".join(f"{k}={v or 'none'}" for k, v in changes.items()))
    flash("Call handling saved: it applies to the next call.", "ok")
    return redirect(url_for("me.index") + "#call-handling")


@bp.post("/reveal", endpoint="reveal")
@guard.user_allowed
def reveal_secret():
    ext = config_store().get_extension(g.user.extension or "")
    if ext is None:
        return guard.refuse(404, "this account has no extension")
    _audit("secret_revealed", f"extension {ext.number} (by its user)")
    show_once.allow(f"me:{ext.number}")
    return _back()


@bp.post("/secret")
@guard.user_allowed
def regenerate():
    if not g.user.extension:
        return guard.refuse(404, "this account has no extension")
    ext = config_store().regenerate_secret(g.user.extension)
    _audit("secret_regenerated", f"extension {ext.number} (by its user)")
    show_once.allow(f"me:{ext.number}")
    flash("New SIP password (shown once, below): enter it in your phone now; the old one no longer works.",
          "ok")
    return _back()


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
    flash("Password changed; other sessions are logged out.", "ok")
    return _back()
