"""Call blocking page: who is blocked and what they get, barred prefixes, and recent blocked calls.

The list of blocked calls comes from the call records: every block ends a call with the cause
"... blocked ..." (firmware/features/blocking.py), read here through a read-only connection.
"""
from __future__ import annotations

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from firmware.cdr import COLUMNS, record_from_row
from firmware.config import ValidationError
from firmware.features.blocking import (ACTION_LABELS, ACTIONS, INBOUND, OUTBOUND, USUAL_OUTBOUND_BLOCKS,
                                        BlockedCaller, BlockedPrefix)
from webui import destinations
from webui.auth import guard
from webui.pbx import config_store, data_dir, validation_errors

bp = Blueprint("blocking", __name__, template_folder="templates", url_prefix="/blocking")
RECENT = 50


def _audit(event: str, detail: str) -> None:
    current_app.extensions["pbx.accounts"].audit(event, g.user.username, guard.client_address(), detail)


def blocked_calls(limit: int = RECENT):
    """The newest calls a block ended (from cdr.sqlite, read-only)."""
    from webui.cdr.query import _connect
    with _connect(data_dir()) as db:
        rows = db.execute(f"SELECT {COLUMNS} FROM calls WHERE cause LIKE '%blocked%' "
                          "ORDER BY start_time DESC LIMIT ?", (limit,)).fetchall()
    return [record_from_row(r) for r in rows]


def _render(errors=None, caller_values=None, prefix_values=None, status=200):
    store = config_store()
    caller_values = caller_values or {"match": "", "action": "reject", "destination": "", "note": ""}
    prefix_values = prefix_values or {"prefix": "", "label": "", "allowed": ""}
    return render_template("blocking/index.html", callers=store.records(INBOUND), prefixes=store.records(OUTBOUND),
                           calls=blocked_calls(), errors=errors or {}, cv=caller_values, pv=prefix_values,
                           actions=[(a, ACTION_LABELS[a]) for a in ACTIONS], label=destinations.label,
                           usual=[p for p, _ in USUAL_OUTBOUND_BLOCKS if store.record(OUTBOUND, p) is None]), status


@bp.get("")
def index():
    return _render()


@bp.post("/callers")
def add_caller():
    values = {k: request.form.get(k, "").strip() for k in ("match", "action", "destination", "note")}
    entry = BlockedCaller(values["match"], values["action"], destination=values["destination"], note=values["note"])
    try:
        config_store().add_record(INBOUND, entry)
    except ValidationError as e:
        return _render({f"caller_{k}": v for k, v in validation_errors(e).items()}, caller_values=values, status=400)
    _audit("caller_blocked", f"{entry.match} ({entry.action})")
    flash(f"Calls from {entry.match} are blocked ({ACTION_LABELS[entry.action].lower()}).", "ok")
    return redirect(url_for("blocking.index"))


@bp.post("/callers/delete")
def remove_caller():
    match = request.form.get("match", "")
    try:
        config_store().remove_record(INBOUND, match)
    except ValidationError as e:
        return guard.refuse(404, e.message)
    _audit("caller_unblocked", match)
    flash(f"{match} is no longer blocked.", "ok")
    return redirect(url_for("blocking.index"))


@bp.post("/prefixes")
def add_prefix():
    values = {k: request.form.get(k, "").strip() for k in ("prefix", "label", "allowed")}
    allowed = tuple(a for a in values["allowed"].replace(",", " ").split() if a)
    entry = BlockedPrefix(values["prefix"], values["label"], allowed)
    try:
        config_store().add_record(OUTBOUND, entry)
    except ValidationError as e:
        return _render({f"prefix_{k}": v for k, v in validation_errors(e).items()}, prefix_values=values, status=400)
    _audit("prefix_barred", f"{entry.prefix} (allowed: {', '.join(allowed) or 'nobody'})")
    flash(f"Numbers starting {entry.prefix} can no longer be dialled" + (
        f" except by {', '.join(allowed)}." if allowed else "."), "ok")
    return redirect(url_for("blocking.index"))


@bp.post("/prefixes/usual")
def add_usual():
    store = config_store()
    added = []
    for prefix, label in USUAL_OUTBOUND_BLOCKS:
        if store.record(OUTBOUND, prefix) is None:
            store.add_record(OUTBOUND, BlockedPrefix(prefix, label))
            added.append(prefix)
    _audit("prefix_barred", ", ".join(added) or "none")
    flash(f"Barred: {', '.join(added)}." if added else "The usual prefixes were barred already.", "ok")
    return redirect(url_for("blocking.index"))


@bp.post("/prefixes/delete")
def remove_prefix():
    prefix = request.form.get("prefix", "")
    try:
        config_store().remove_record(OUTBOUND, prefix)
    except ValidationError as e:
        return guard.refuse(404, e.message)
    _audit("prefix_unbarred", prefix)
    flash(f"Numbers starting {prefix} may be dialled again.", "ok")
    return redirect(url_for("blocking.index"))
