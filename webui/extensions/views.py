"""Extension pages: list with registration state, create, edit, delete, reveal/regenerate secret."""
from __future__ import annotations

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from firmware.config import ValidationError
from firmware.config.model import FORWARDS
from webui import callhandling, show_once
from webui.auth import guard
from webui.auth.accounts import AccountError
from webui.pbx import config_store, pbx_status, registered_extensions, validation_errors

bp = Blueprint("extensions", __name__, template_folder="templates", url_prefix="/extensions")


def _audit(event: str, detail: str) -> None:
    current_app.extensions["pbx.accounts"].audit(event, g.user.username, guard.client_address(), detail)


def routes_to(store, number: str) -> list[str]:
    """Inbound routes (DIDs) that ring this extension: deleting it would leave them dangling."""
    return [r.did for r in store.inbound_routes_to(f"extension:{number}")]


def forwarders_to(store, number: str) -> list[str]:
    """Other extensions whose forwards send calls to this one."""
    dest = f"extension:{number}"
    return [e.number for e in store.extensions()
            if e.number != number and dest in (getattr(e, f) for f in FORWARDS)]


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
                # The password is shown once on the next page (webui/show_once.py), never flashed: the
                # flash lives in the (signed, not encrypted) session cookie.
                show_once.allow(f"extension:{ext.number}")
                flash(f"Extension {ext.number} created: enter this password in the phone.", "ok")
                return redirect(url_for("extensions.edit", number=ext.number))
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
        handling: dict = {}
        if "call_handling" in request.form:     # the form's call-handling fields were sent
            handling, problems = callhandling.form_changes(request.form, admin=True)
            errors = callhandling.check(store, ext, {"name": values["name"], "secret": values["secret"] or None,
                                                     **handling}, {**errors, **problems})
        if not errors:
            try:
                store.update_extension(number, name=values["name"], secret=values["secret"] or None, **handling)
            except ValidationError as e:
                errors = validation_errors(e)
            else:
                set_web_password(number, web_password)
                _audit("extension_changed", f"extension {number}"
                       + (" (new SIP password)" if values["secret"] else ""))
                flash(f"Extension {number} saved.", "ok")
                return redirect(url_for("extensions.index"))
    return _edit_page(ext, values, errors,
                      revealed=ext.secret if request.method == "GET" and show_once.take(f"extension:{number}") else None,
                      form=request.form if errors and "call_handling" in request.form else None)


def _edit_page(ext, values=None, errors=None, revealed=None, notice=None, form=None):
    values = values or {"number": ext.number, "name": ext.name, "secret": ""}
    regs = registered_extensions(pbx_status()).get(ext.number, [])
    has_login = current_app.extensions["pbx.accounts"].get(ext.number) is not None
    return render_template("extensions/form.html", values=values, errors=errors or {}, ext=ext,
                           regs=regs, revealed=revealed, notice=notice, has_login=has_login,
                           ch=callhandling.template_args(config_store(), ext, form=form)), 400 if errors else 200


@bp.post("/<number>/reveal")
def reveal(number: str):
    store = config_store()
    ext = store.get_extension(number)
    if ext is None:
        return guard.refuse(404, f"no extension {number}")
    _audit("secret_revealed", f"extension {number}")
    show_once.allow(f"extension:{number}")
    return redirect(url_for("extensions.edit", number=number))


@bp.post("/<number>/secret")
def regenerate(number: str):
    try:
        ext = config_store().regenerate_secret(number)
    except ValidationError as e:
        return guard.refuse(404, e.message)
    _audit("secret_regenerated", f"extension {number}")
    show_once.allow(f"extension:{ext.number}")
    flash(f"New SIP password for {number}: the phone must be updated with it.", "ok")
    return redirect(url_for("extensions.edit", number=number))


def dependents(store, number: str) -> tuple[list[str], list[str]]:
    """(what stops the delete, what the delete also does), in words for the confirmation page."""
    blockers = [f"extension {number} is the destination of inbound route {did}"
                for did in routes_to(store, number)]
    blockers += [f"extension {other} forwards calls to extension {number}" for other in forwarders_to(store, number)]
    blockers += [f"outbound route {r.name} lists extension {number} among those allowed to use it"
                 for r in store.outbound_routes() if number in r.extensions]
    for port in store.line_ports():
        if port.extension == number:
            blockers.append(f"line port {port.number} registers as extension {number}")
        elif port.destination == number:
            blockers.append(f"line port {port.number} (exchange line) rings extension {number}")
    consequences = ["the phone registered as this extension can no longer make or take calls"]
    if current_app.extensions["pbx.accounts"].get(number) is not None:
        consequences.append(f"the web login {number} of the extension's user is removed")
    return blockers, consequences


@bp.get("/<number>/delete")
def delete_confirm(number: str):
    store = config_store()
    ext = store.get_extension(number)
    if ext is None:
        return guard.refuse(404, f"no extension {number}")
    blockers, consequences = dependents(store, number)
    return render_template("confirm.html", title=f"Delete extension {number}",
                           what=f"extension {number} ({ext.name})", blockers=blockers,
                           consequences=consequences, action=url_for("extensions.delete", number=number),
                           back=url_for("extensions.edit", number=number))


@bp.post("/<number>/delete")
def delete(number: str):
    store = config_store()
    if store.get_extension(number) is None:
        return guard.refuse(404, f"no extension {number}")
    blockers, _ = dependents(store, number)
    if blockers:
        flash(f"Extension {number} cannot be deleted: {'; '.join(blockers)}. Change or delete those first.",
              "bad")
        return redirect(url_for("extensions.delete_confirm", number=number))
    try:
        store.remove_extension(number)
    except ValidationError as e:    # a route or port added since the check (CLI, API)
        flash(e.message, "bad")
        return redirect(url_for("extensions.delete_confirm", number=number))
    current_app.extensions["pbx.accounts"].delete(number)
    _audit("extension_removed", f"extension {number}")
    flash(f"Extension {number} deleted.", "ok")
    return redirect(url_for("extensions.index"))
