"""JSON REST API over the same store the pages use: /api/v1/...

Authentication: `Authorization: Bearer TOKEN` (tokens from the System page), or the browser
session plus an X-CSRF-Token header (the UI's own calls); who is asking is checked before the
form token, so an anonymous change is a 401 with WWW-Authenticate. Errors are
{"error": "...", "errors": [{"field": ..., "message": ...}]} with 400/401/403/404/409/413; every
answer under /api is JSON, an unexpected failure included (500, details only in the log).
Secrets: extension SIP passwords only in single-extension answers (the phone needs them);
trunk passwords are write-only.
"""
from __future__ import annotations

import dataclasses
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, current_app, g, jsonify, render_template, request

from firmware.config import ValidationError
from firmware.config.errors import ValidationErrors
from webui.auth import guard
from webui.cdr import filters
from webui.pbx import cdr_store, config_store, pbx_status, registered_extensions
from webui.system.backup import UploadError, decode_json, full_backup, parse_bytes, read_upload
from webui.system.backup import restore as restore_backup

bp = Blueprint("api", __name__, template_folder="templates", url_prefix="/api")


class BadRequest(Exception):
    def __init__(self, message: str, errors: list | None = None, status: int = 400):
        super().__init__(message)
        self.message, self.errors, self.status = message, errors or [], status


@bp.errorhandler(BadRequest)
def _bad_request(e: BadRequest):
    return guard.api_error(e.status, e.message, e.errors)


@bp.errorhandler(ValidationError)
def _invalid(e: ValidationError):
    errors = [{"field": err.field, "message": err.message} for err in e.errors]
    status = 409 if any("already exists" in err.message for err in e.errors) else 400
    return guard.api_error(status, "; ".join(f"{x['field']}: {x['message']}" for x in errors), errors)


def body(allowed: set[str], required: set[str] = frozenset(), admin_only: set[str] = frozenset()) -> dict:
    if not request.is_json:
        raise BadRequest("send a JSON object with Content-Type: application/json")
    try:
        data = decode_json(request.get_data(cache=True), "request body",
                           "send a JSON object with the fields listed in /api/docs")
    except UploadError as e:
        raise BadRequest(str(e), [{"field": "body", "message": str(e)}]) from None
    if not isinstance(data, dict):
        raise BadRequest("send a JSON object with Content-Type: application/json")
    unknown = sorted(set(data) - allowed)
    missing = sorted(required - set(data))
    errors = [{"field": k, "message": "only an administrator may change this" if k in admin_only
               else "unknown field"} for k in unknown]
    errors += [{"field": k, "message": "is required"} for k in missing]
    if errors:
        raise BadRequest(f"fields allowed: {', '.join(sorted(allowed))}", errors)
    return data


def not_found(what: str):
    raise BadRequest(f"no {what}", status=404)


def _audit(event: str, detail: str = "") -> None:
    current_app.extensions["pbx.accounts"].audit(event, g.user.username, guard.client_address(),
                                                 detail + (" (API)" if g.via_token else ""))


# Extensions ------------------------------------------------------------------------------------
def ext_json(ext, regs: dict, with_secret: bool) -> dict:
    out = {"number": ext.number, "name": ext.name, "enabled": ext.enabled,
           "registered": ext.number in regs, "contacts": [r.get("contact") for r in regs.get(ext.number, [])],
           "dnd": ext.dnd, "forward_always": ext.forward_always, "forward_busy": ext.forward_busy,
           "forward_no_answer": ext.forward_no_answer, "external_caller_id": ext.external_caller_id,
           "department": ext.department}
    if with_secret:
        out["secret"] = ext.secret
    return out


@bp.get("/v1/extensions")
def extensions_list():
    regs = registered_extensions(pbx_status())
    return jsonify([ext_json(e, regs, False) for e in config_store().extensions()])


@bp.post("/v1/extensions")
def extensions_create():
    data = body({"number", "name", "secret"}, {"number", "name"})
    ext = config_store().add_extension(data["number"], data["name"], data.get("secret") or None)
    _audit("extension_added", f"extension {ext.number}")
    return jsonify(ext_json(ext, {}, True)), 201


@bp.get("/v1/extensions/<number>")
@guard.ownership_required
def extension_get(number: str):
    ext = config_store().get_extension(number) or not_found(f"extension {number}")
    return jsonify(ext_json(ext, registered_extensions(pbx_status()), True))


@bp.patch("/v1/extensions/<number>")
@guard.ownership_required
def extension_update(number: str):
    # A phone's user may rename their extension and set its DND and forwards (as *78, *72...
    # do from the phone); its password, enabled state and outside caller ID are for admins
    # (users regenerate instead, so a weak chosen password never reaches a user-owned line).
    from webui.callhandling import ADMIN_FIELDS, USER_FIELDS, reach_errors
    admin_fields = {"name", "secret", "enabled", *ADMIN_FIELDS}
    allowed = admin_fields if g.user.is_admin else {"name", *USER_FIELDS}
    data = body(allowed, admin_only=admin_fields)
    store = config_store()
    store.get_extension(number) or not_found(f"extension {number}")
    far = reach_errors(store, number, data)
    if far:
        raise ValidationErrors([ValidationError(k, v) for k, v in far.items()])
    ext = store.update_extension(number, **data)
    _audit("extension_changed", f"extension {number}")
    return jsonify(ext_json(ext, {}, True))


@bp.post("/v1/extensions/<number>/secret")
@guard.ownership_required
def extension_regenerate(number: str):
    store = config_store()
    store.get_extension(number) or not_found(f"extension {number}")
    ext = store.regenerate_secret(number)
    _audit("secret_regenerated", f"extension {number}")
    return jsonify(ext_json(ext, {}, True))


@bp.delete("/v1/extensions/<number>")
def extension_delete(number: str):
    store = config_store()
    store.get_extension(number) or not_found(f"extension {number}")
    from webui.extensions.views import dependents
    blockers, _ = dependents(store, number)
    if blockers:
        raise BadRequest(f"{'; '.join(blockers)}: change or delete those first",
                         [{"field": "number", "message": "in use"}], 409)
    try:
        store.remove_extension(number)
    except ValidationError as e:   # a route or port added since the check
        raise BadRequest(e.message, [{"field": "number", "message": "in use"}], 409) from None
    current_app.extensions["pbx.accounts"].delete(number)
    _audit("extension_removed", f"extension {number}")
    return "", 204


# Trunks and routes: same shape, so one set of handlers per collection --------------------------
def trunk_json(t) -> dict:
    out = dataclasses.asdict(t)
    out["secret_set"] = bool(out.pop("secret"))
    return out


COLLECTIONS = {
    # url name: (noun, key, list, get, add, update, remove, to_json, fields, required)
    "trunks": ("trunk", "name", "trunks", "get_trunk", "add_trunk", "update_trunk", "remove_trunk", trunk_json,
               {"name", "host", "username", "secret", "register", "transport"}, {"name", "host"}),
    "inbound-routes": ("inbound route for", "did", "inbound_routes", "get_inbound_route", "add_inbound_route",
                       "update_inbound_route", "remove_inbound_route", dataclasses.asdict,
                       {"did", "destination", "name", "match_national"}, {"did", "destination"}),
    "outbound-routes": ("outbound route", "name", "outbound_routes", "get_outbound_route", "add_outbound_route",
                        "update_outbound_route", "remove_outbound_route", dataclasses.asdict,
                        {"name", "pattern", "trunk", "fallback_trunk", "strip", "prepend", "caller_id",
                         "extensions"},
                        {"name", "pattern", "trunk"}),
}


def _collection_views(url: str, spec: tuple) -> None:
    noun, key, list_m, get_m, add_m, update_m, remove_m, to_json, fields, required = spec
    event = noun.replace(" for", "").replace(" ", "_")

    def list_view():
        records = [to_json(r) for r in getattr(config_store(), list_m)()]
        if url == "trunks":  # the running edge's view of each trunk
            live = {t.get("name"): t for t in pbx_status().get("trunks", []) if isinstance(t, dict)}
            for r in records:
                st = live.get(r["name"], {})
                r.update(state=st.get("state", "unknown"), last_code=st.get("last_code"),
                         expires=st.get("expires"))
        return jsonify(records)

    def create_view():
        data = body(fields, required)
        record = getattr(config_store(), add_m)(**data)
        _audit(f"{event}_added", f"{noun} {data[key]}")
        return jsonify(to_json(record)), 201

    def get_view(ident):
        record = getattr(config_store(), get_m)(ident) or not_found(f"{noun} {ident}")
        return jsonify(to_json(record))

    def update_view(ident):
        data = body(fields - {key})
        store = config_store()
        getattr(store, get_m)(ident) or not_found(f"{noun} {ident}")
        record = getattr(store, update_m)(ident, **data)
        _audit(f"{event}_changed", f"{noun} {ident}")
        return jsonify(to_json(record))

    def delete_view(ident):
        store = config_store()
        getattr(store, get_m)(ident) or not_found(f"{noun} {ident}")
        try:
            getattr(store, remove_m)(ident)
        except ValidationError as e:
            raise BadRequest(e.message, [{"field": e.field, "message": e.message}], 409) from None
        _audit(f"{event}_removed", f"{noun} {ident}")
        return "", 204

    name = url.replace("-", "_")
    bp.add_url_rule(f"/v1/{url}", f"{name}_list", list_view, methods=["GET"])
    bp.add_url_rule(f"/v1/{url}", f"{name}_create", create_view, methods=["POST"])
    bp.add_url_rule(f"/v1/{url}/<ident>", f"{name}_get", get_view, methods=["GET"])
    bp.add_url_rule(f"/v1/{url}/<ident>", f"{name}_update", update_view, methods=["PATCH"])
    bp.add_url_rule(f"/v1/{url}/<ident>", f"{name}_delete", delete_view, methods=["DELETE"])


for _url, _spec in COLLECTIONS.items():
    _collection_views(_url, _spec)


# Settings, status, CDR, backup -----------------------------------------------------------------
def settings_json(settings) -> dict:
    """Settings as the API shows them: the SMTP password is write-only (smtp_password_set says
    whether one is stored), like a trunk's secret."""
    doc = dataclasses.asdict(settings)
    doc["smtp_password_set"] = bool(doc.pop("smtp_password", ""))
    return doc


@bp.get("/v1/settings")
def settings_get():
    return jsonify(settings_json(config_store().settings()))


@bp.patch("/v1/settings")
def settings_update():
    from firmware.config.model import SETTING_NAMES, SecretText
    data = body(set(SETTING_NAMES))
    if isinstance(data.get("smtp_password"), str):
        data["smtp_password"] = SecretText(data["smtp_password"])   # never in the log line
    settings = config_store().update_settings(**data)
    _audit("settings_changed", ", ".join(sorted(data)))
    return jsonify(settings_json(settings))


@bp.get("/v1/status")
def status():
    return jsonify(pbx_status())


@bp.get("/v1/cdr")
def cdr():
    tz = ZoneInfo(config_store().settings().timezone)
    query, errors = filters.parse(request.args, tz, default_limit=100, max_limit=10_000)
    if errors:
        raise BadRequest("bad filter", [{"field": k, "message": v} for k, v in errors.items()])
    return jsonify([filters.record_dict(r, tz) for r in cdr_store().query(**query)])


@bp.get("/v1/cdr.csv")
def cdr_csv():
    tz = ZoneInfo(config_store().settings().timezone)
    query, errors = filters.parse(request.args, tz, default_limit=100_000)
    if errors:
        raise BadRequest("bad filter", [{"field": k, "message": v} for k, v in errors.items()])
    return Response(filters.to_csv(cdr_store().query(**query), tz), mimetype="text/csv")


@bp.get("/v1/reports")
def reports():
    """Call reports (the Reports page's numbers): ?since=YYYY-MM-DD&until=YYYY-MM-DD&group=day|week|month."""
    from webui.reports.views import current_report
    report, errors = current_report(request.args)
    if errors:
        raise BadRequest("bad filter", [{"field": k, "message": v} for k, v in errors.items()])
    return jsonify(report)


@bp.get("/v1/reports.csv")
def reports_csv():
    from webui.reports import data
    from webui.reports.views import current_report
    report, errors = current_report(request.args)
    if errors:
        raise BadRequest("bad filter", [{"field": k, "message": v} for k, v in errors.items()])
    return Response(data.to_csv(report), mimetype="text/csv")


@bp.get("/v1/backup")
def backup():
    _audit("backup_downloaded")
    return jsonify(full_backup(config_store(), current_app.extensions["pbx.accounts"]))


@bp.post("/v1/restore")
def restore():
    try:
        if request.files:
            doc = read_upload(request.files.get("backup_file") or next(iter(request.files.values())))
        elif request.mimetype == "application/json":
            doc = parse_bytes(request.get_data(cache=False))
        else:
            raise UploadError("send the backup as application/json or as a multipart file 'backup_file'")
    except UploadError as e:
        raise BadRequest(str(e), [{"field": "backup_file", "message": str(e)}]) from None
    try:
        counts = restore_backup(config_store(), current_app.extensions["pbx.accounts"], doc)
    except ValidationError as e:
        raise BadRequest("backup refused, nothing changed",
                         [{"field": err.field, "message": err.message} for err in e.errors]) from None
    _audit("restore", ", ".join(f"{n} {s}" for s, n in counts.items()))
    return jsonify(restored=counts)


# Documentation ---------------------------------------------------------------------------------
@bp.get("/openapi.json")
@guard.user_allowed
def openapi():
    from webui.api.openapi import spec
    return jsonify(spec(current_app))


@bp.get("/docs")
@guard.user_allowed
def docs():
    from webui.api.openapi import spec
    return render_template("api/docs.html", spec=spec(current_app))
