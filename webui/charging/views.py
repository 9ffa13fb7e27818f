"""Call charging page (issue 13).

- Rate sheets: upload a CSV (checked for type, size and content; each import is a new version, the
  lines refused are listed with the reason), or import the shipped UK example; download a version.
- Which sheet each trunk uses (config records rate_assignments; "*" = every trunk without its own).
- Spend limits per extension and for the site, per day and per month (config records spend_limits).
- Alerts (limits reached, unusual patterns), dismissed together.
"""
from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, flash, g, redirect, render_template, request, url_for

from firmware.config import ValidationError
from firmware.features.charging import ASSIGNMENTS, LIMITS, RateAssignment, SpendLimit
from firmware.rating.sheet import SheetError
from services import charging
from webui.auth import guard
from webui.pbx import config_store, data_dir, validation_errors

bp = Blueprint("charging", __name__, template_folder="templates", url_prefix="/charging")


def _audit(event: str, detail: str) -> None:
    current_app.extensions["pbx.accounts"].audit(event, g.user.username, guard.client_address(), detail)


def alerts_for_display(directory=None) -> list[dict]:
    """The undismissed alerts of the last 24 h, newest first, with `when` in the box's time."""
    from datetime import datetime

    from firmware.config import ConfigStore
    directory = directory or data_dir()
    tz = charging.zone(ConfigStore(directory, create=False).settings())
    return [{**a, "when": datetime.fromtimestamp(a["time"], tz).strftime("%a %d %b %H:%M")}
            for a in charging.alerts(directory)]


def _render(problems=(), imported=None, errors=None, limit_values=None, status=200):
    store = config_store()
    sheets = charging.SheetStore(data_dir())
    listing = [(name, sheets.versions(name), sheets.load(name)) for name in sheets.names()]
    trunks = ["*"] + [t.name for t in store.trunks()] + [f"line:{p.number}" for p in store.line_ports()
                                                         if getattr(p, "kind", "") == "fxo"]
    assigned = {a.trunk: a for a in store.records(ASSIGNMENTS)}
    return render_template("charging/index.html", listing=listing, trunks=trunks, assigned=assigned,
                           limits=store.records(LIMITS), extensions=store.extensions(), problems=problems,
                           imported=imported, errors=errors or {}, alerts=alerts_for_display(),
                           limit_values=limit_values or {"scope": "site", "per_day": "", "per_month": "", "email": ""},
                           max_kb=charging.MAX_UPLOAD // 1000), status


@bp.get("")
def index():
    return _render()


@bp.post("/import")
def import_sheet():
    if request.form.get("example"):
        raw, label = charging.EXAMPLE.read_bytes(), "the UK example"
    else:
        upload = request.files.get("file")
        if upload is None or not upload.filename:
            return _render(errors={"file": "choose a CSV file to import"}, status=400)
        if not upload.filename.lower().endswith((".csv", ".txt")):
            return _render(errors={"file": f"{upload.filename} is not a CSV file: export the sheet as .csv"}, status=400)
        raw, label = upload.read(charging.MAX_UPLOAD + 1), upload.filename
    try:
        sheet = charging.SheetStore(data_dir()).import_text(raw)
    except SheetError as e:
        return _render(problems=e.problems, errors={"file": f"{label}: {e}"}, status=400)
    _audit("rating.import", f"{sheet.version_id} from {label}")
    flash(f"Imported {label} as {sheet.version_id}: {len(sheet.rates)} rates"
          + (f", {len(sheet.problems)} line(s) refused (listed below)" if sheet.problems else ""))
    return _render(problems=sheet.problems, imported=sheet)


@bp.get("/sheet/<name>/v<int:version>.csv")
def download(name: str, version: int):
    try:
        text = charging.SheetStore(data_dir()).text(name, version)
    except (FileNotFoundError, OSError):
        abort(404)
    return Response(text, mimetype="text/csv", headers={"Content-Disposition": f'attachment; filename="{name}-v{version}.csv"'})


@bp.post("/assign")
def assign():
    store = config_store()
    trunk, sheet = request.form.get("trunk", ""), request.form.get("sheet", "")
    if not sheet:
        if store.record(ASSIGNMENTS, trunk) is not None:
            store.remove_record(ASSIGNMENTS, trunk)
            _audit("rating.assign", f"{trunk}: none")
            flash(f"{'Every trunk' if trunk == '*' else 'Trunk ' + trunk} now uses no rate sheet")
        return redirect(url_for("charging.index"))
    if sheet not in charging.SheetStore(data_dir()).names():
        return _render(errors={"assign": f"there is no rate sheet {sheet}: import it first"}, status=400)
    try:
        version = int(request.form.get("version") or 0)
        record = RateAssignment(trunk, sheet, version)
        if store.record(ASSIGNMENTS, trunk) is None:
            store.add_record(ASSIGNMENTS, record)
        else:
            store.replace_record(ASSIGNMENTS, record)
    except (ValueError, ValidationError) as e:
        return _render(errors={"assign": "; ".join(validation_errors(e).values()) if isinstance(e, ValidationError)
                               else "version must be a whole number"}, status=400)
    _audit("rating.assign", f"{trunk}: {sheet}@{version or 'newest'}")
    flash(f"{'Every trunk without its own sheet' if trunk == '*' else 'Trunk ' + trunk} now uses {sheet}")
    return redirect(url_for("charging.index"))


@bp.post("/limits")
def save_limit():
    store = config_store()
    values = {k: request.form.get(k, "").strip() for k in ("scope", "per_day", "per_month", "email")}
    record = SpendLimit(**values)
    try:
        if store.record(LIMITS, record.scope) is None:
            store.add_record(LIMITS, record)
        else:
            store.replace_record(LIMITS, record)
    except ValidationError as e:
        return _render(errors=validation_errors(e), limit_values=values, status=400)
    _audit("rating.limit", f"{record.scope}: day {record.per_day or '-'} month {record.per_month or '-'}")
    flash(f"Spend limit for {'the site' if record.scope == 'site' else 'extension ' + record.scope} saved")
    return redirect(url_for("charging.index"))


@bp.post("/limits/<scope>/delete")
def delete_limit(scope: str):
    store = config_store()
    if store.record(LIMITS, scope) is not None:
        store.remove_record(LIMITS, scope)
        _audit("rating.limit", f"{scope}: removed")
        flash(f"Spend limit for {'the site' if scope == 'site' else 'extension ' + scope} removed")
    return redirect(url_for("charging.index"))


@bp.post("/alerts/dismiss")
def dismiss():
    charging.dismiss_alerts(data_dir())
    _audit("rating.alerts", "dismissed")
    flash("Alerts dismissed")
    return redirect(request.form.get("next") if request.form.get("next") in ("/dashboard",) else url_for("charging.index"))
