"""Phonebook pages, API and phone directory files.

Pages: /phonebook (admin: company contacts, import/export, the phones' directory addresses) and
/phonebook/mine (any user with an extension: their personal contacts).

Directory files for desk phones: /phonebook/<vendor>.xml (yealink, grandstream, polycom, snom,
cisco). A phone authenticates with HTTP basic auth as its extension (user = the extension
number, password = its SIP password: it then also gets its user's personal contacts), or with
the box's phonebook token (?token=..., shown on the admin page, renewable), which gives the
company list. Nothing else is served without auth.

API (admin token or session): GET/POST /api/v1/contacts, GET/PATCH/DELETE /api/v1/contacts/<id>;
`owner` is "" for company contacts or an extension number.
"""
from __future__ import annotations

import dataclasses
import hmac
import logging
import secrets
from pathlib import Path

from flask import (Blueprint, Response, current_app, flash, g, jsonify, redirect, render_template, request,
                   url_for)

from firmware.config import ValidationError
from firmware.features.phonebook import (MAX_IMPORT_BYTES, TABLE, VENDORS, Contact, company, export_csv,
                                         export_vcards, import_csv, import_vcards, new_id, personal,
                                         phonebook_entries, render)
from webui.auth import guard
from webui.pbx import config_store, data_dir, validation_errors

log = logging.getLogger(__name__)
bp = Blueprint("phonebook", __name__, template_folder="templates")
FIELDS = ("name", "company", "work", "mobile", "other", "email")
TOKEN_FILE = "phonebook.token"
CONTENT_TYPES = {"cisco": "text/xml; charset=utf-8"}


def _audit(event: str, detail: str) -> None:
    current_app.extensions["pbx.accounts"].audit(event, g.user.username, guard.client_address(), detail)


def phonebook_token(renew: bool = False) -> str:
    """The box's phonebook token (DATA/phonebook.token, mode 0600), made on first use."""
    path = Path(data_dir()) / TOKEN_FILE
    if renew or not path.exists():
        token = secrets.token_urlsafe(18)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(token)
        tmp.chmod(0o600)
        tmp.replace(path)
        return token
    return path.read_text().strip()


# --- pages (admin: company; user: mine) ---------------------------------------------------------------
def _owner_of_page(mine: bool) -> str | None:
    """'' for the company list (admin), the user's extension for "mine", None when refused."""
    if not mine:
        return ""
    return g.user.extension if g.user is not None and g.user.extension else None


def _page(mine: bool, errors=None, values=None, import_errors=None, status=200):
    owner = _owner_of_page(mine)
    contacts = config_store().records(TABLE)
    listed = personal(contacts, owner) if mine else company(contacts)
    urls = {}
    if not mine:
        token = phonebook_token()
        urls = {v: url_for("phonebook.directory_file", vendor=v, token=token, _external=True) for v in VENDORS}
    return render_template("phonebook/index.html", mine=mine, contacts=listed, errors=errors or {},
                           values=values or {f: "" for f in FIELDS}, import_errors=import_errors or [],
                           urls=urls, owner=owner), status


def _mine_guard():
    if _owner_of_page(True) is None:
        return guard.refuse(403, "this account has no extension, so it has no personal contacts")
    return None


def _add(mine: bool):
    owner = _owner_of_page(mine)
    values = {f: request.form.get(f, "").strip() for f in FIELDS}
    contact = Contact(new_id(), owner=owner, **values)
    try:
        config_store().add_record(TABLE, contact)
    except ValidationError as e:
        return _page(mine, validation_errors(e), values, status=400)
    _audit("contact_added", f"{contact.name} ({'personal ' + owner if owner else 'company'})")
    flash(f"{contact.name} added.", "ok")
    return redirect(url_for("phonebook.mine" if mine else "phonebook.index"))


def _delete(mine: bool, contact_id: str):
    owner = _owner_of_page(mine)
    store = config_store()
    contact = store.record(TABLE, contact_id)
    if contact is None or contact.owner != owner:
        return guard.refuse(404, f"no contact {contact_id}")
    store.remove_record(TABLE, contact_id)
    _audit("contact_removed", f"{contact.name}")
    flash(f"{contact.name} deleted.", "ok")
    return redirect(url_for("phonebook.mine" if mine else "phonebook.index"))


def _import(mine: bool):
    owner = _owner_of_page(mine)
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return _page(mine, import_errors=["choose a .csv or .vcf file"], status=400)
    name = upload.filename.lower()
    if not name.endswith((".csv", ".vcf", ".vcard")):
        return _page(mine, import_errors=[f"'{upload.filename}' is not a .csv or .vcf file"], status=400)
    raw = upload.stream.read(MAX_IMPORT_BYTES + 1)
    if len(raw) > MAX_IMPORT_BYTES:
        return _page(mine, import_errors=[f"the file is larger than {MAX_IMPORT_BYTES // 1024} kB: "
                                          "split it"], status=400)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return _page(mine, import_errors=["the file is not UTF-8 text: save it as UTF-8 (CSV UTF-8 in Excel)"],
                     status=400)
    contacts, errors = (import_csv if name.endswith(".csv") else import_vcards)(text, owner)
    store = config_store()
    for c in contacts:
        store.add_record(TABLE, c)
    _audit("contacts_imported", f"{len(contacts)} from {upload.filename}")
    if errors:
        flash(f"{len(contacts)} contact{'' if len(contacts) == 1 else 's'} imported; {len(errors)} "
              f"skipped (see below).", "ok")
        return _page(mine, import_errors=errors, status=200 if contacts else 400)
    flash(f"{len(contacts)} contact{'' if len(contacts) == 1 else 's'} imported from {upload.filename}.", "ok")
    return redirect(url_for("phonebook.mine" if mine else "phonebook.index"))


def _export(mine: bool, fmt: str):
    owner = _owner_of_page(mine)
    contacts = config_store().records(TABLE)
    listed = personal(contacts, owner) if mine else company(contacts)
    if fmt == "csv":
        return Response(export_csv(listed), mimetype="text/csv",
                        headers={"Content-Disposition": "attachment; filename=contacts.csv"})
    return Response(export_vcards(listed), mimetype="text/vcard",
                    headers={"Content-Disposition": "attachment; filename=contacts.vcf"})


@bp.get("/phonebook")
def index():
    return _page(False)


@bp.post("/phonebook")
def add():
    return _add(False)


@bp.post("/phonebook/<contact_id>/delete")
def delete(contact_id):
    return _delete(False, contact_id)


@bp.post("/phonebook/import")
def import_file():
    return _import(False)


@bp.get("/phonebook/export.<any(csv, vcf):fmt>")
def export(fmt):
    return _export(False, fmt)


@bp.post("/phonebook/token")
def renew_token():
    phonebook_token(renew=True)
    _audit("phonebook_token_renewed", "")
    flash("New phonebook token: update the directory address in the phones' settings.", "ok")
    return redirect(url_for("phonebook.index"))


@bp.get("/phonebook/mine")
@guard.user_allowed
def mine():
    return _mine_guard() or _page(True)


@bp.post("/phonebook/mine")
@guard.user_allowed
def add_mine():
    return _mine_guard() or _add(True)


@bp.post("/phonebook/mine/<contact_id>/delete")
@guard.user_allowed
def delete_mine(contact_id):
    return _mine_guard() or _delete(True, contact_id)


@bp.post("/phonebook/mine/import")
@guard.user_allowed
def import_mine():
    return _mine_guard() or _import(True)


@bp.get("/phonebook/mine/export.<any(csv, vcf):fmt>")
@guard.user_allowed
def export_mine(fmt):
    return _mine_guard() or _export(True, fmt)


# --- directory files for desk phones --------------------------------------------------------------
def _phone_owner() -> str | None:
    """The extension a phone authenticated as ("" for the box token), or None: not allowed."""
    token = request.args.get("token", "")
    if token:
        return "" if hmac.compare_digest(token.encode(), phonebook_token().encode()) else None
    auth = request.authorization
    if auth is None or auth.type != "basic" or not auth.username:
        return None
    ext = config_store().get_extension(auth.username)
    if ext is None or not ext.enabled or not hmac.compare_digest((auth.password or "").encode(), ext.secret.encode()):
        return None
    return ext.number


@bp.get("/phonebook/<any(yealink, grandstream, polycom, snom, cisco):vendor>.xml")
@guard.public
def directory_file(vendor):
    owner = _phone_owner()
    if owner is None:
        log.info("phonebook %s refused for %s: no or wrong credentials", vendor, guard.client_address())
        resp = Response("phonebook: authenticate as the extension (its SIP password) or add ?token= from the "
                        "Phonebook page\n", status=401, mimetype="text/plain")
        resp.headers["WWW-Authenticate"] = 'Basic realm="phonebook", charset="UTF-8"'
        return resp
    store = config_store()
    entries = phonebook_entries(store.records(TABLE), store.extensions(), owner=owner)
    title = store.settings().site_name
    kw = {}
    if vendor == "cisco":
        page = request.args.get("page", "1")
        page = int(page) if page.isdigit() and 0 < int(page) < 1000 else 1
        kw = {"page": page, "next_url": url_for("phonebook.directory_file", vendor="cisco", page=page + 1,
                                                _external=True, **({"token": request.args["token"]}
                                                                   if request.args.get("token") else {}))}
    log.info("phonebook %s: %d entries for %s", vendor, len(entries), f"extension {owner}" if owner else "token")
    return Response(render(vendor, entries, title=title, **kw), mimetype="application/xml",
                    content_type=CONTENT_TYPES.get(vendor, "application/xml; charset=utf-8"))


# --- REST API -------------------------------------------------------------------------------------
def _contact_json(c: Contact) -> dict:
    return dataclasses.asdict(c)


def _api_invalid(e: ValidationError):
    errors = [{"field": getattr(x, "field", ""), "message": getattr(x, "message", str(x))}
              for x in getattr(e, "errors", [e])]
    return guard.api_error(400, "; ".join(f"{x['field']}: {x['message']}" for x in errors), errors)


def _api_body(required=()):
    from webui.system.backup import UploadError, decode_json
    try:
        data = decode_json(request.get_data(cache=True), "request body",
                           "send a JSON object with the fields listed in /api/docs") if request.is_json else None
    except UploadError as e:
        return None, guard.api_error(400, str(e))
    if not isinstance(data, dict):
        return None, guard.api_error(400, "send a JSON object with Content-Type: application/json")
    unknown = sorted(set(data) - set(FIELDS) - {"owner"})
    missing = sorted(set(required) - set(data))
    if unknown or missing or not all(isinstance(v, str) for v in data.values()):
        errors = [{"field": k, "message": f"unknown field; known: {', '.join(FIELDS + ('owner',))}"} for k in unknown]
        errors += [{"field": k, "message": "required"} for k in missing]
        errors += [{"field": k, "message": "must be text"} for k, v in data.items() if not isinstance(v, str)]
        return None, guard.api_error(400, "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors)
    return data, None


@bp.get("/api/v1/contacts")
def api_list():
    contacts = config_store().records(TABLE)
    owner = request.args.get("owner")
    listed = [c for c in contacts if owner is None or c.owner == owner]
    return jsonify([_contact_json(c) for c in sorted(listed, key=lambda c: c.name.lower())])


@bp.post("/api/v1/contacts")
def api_create():
    data, problem = _api_body(required=("name",))
    if problem:
        return problem
    contact = Contact(new_id(), **data)
    try:
        config_store().add_record(TABLE, contact)
    except ValidationError as e:
        return _api_invalid(e)
    _audit("contact_added", f"{contact.name} (API)")
    return jsonify(_contact_json(contact)), 201


@bp.get("/api/v1/contacts/<contact_id>")
def api_get(contact_id):
    contact = config_store().record(TABLE, contact_id)
    if contact is None:
        return guard.api_error(404, f"no contact {contact_id}")
    return jsonify(_contact_json(contact))


@bp.patch("/api/v1/contacts/<contact_id>")
def api_update(contact_id):
    data, problem = _api_body()
    if problem:
        return problem
    store = config_store()
    if store.record(TABLE, contact_id) is None:
        return guard.api_error(404, f"no contact {contact_id}")
    try:
        contact = store.update_record(TABLE, contact_id, **data)
    except ValidationError as e:
        return _api_invalid(e)
    _audit("contact_changed", f"{contact.name} (API)")
    return jsonify(_contact_json(contact))


@bp.delete("/api/v1/contacts/<contact_id>")
def api_delete(contact_id):
    store = config_store()
    contact = store.record(TABLE, contact_id)
    if contact is None:
        return guard.api_error(404, f"no contact {contact_id}")
    store.remove_record(TABLE, contact_id)
    _audit("contact_removed", f"{contact.name} (API)")
    return "", 204
