"""One form for every site setting; all of it is saved or none (ConfigStore.update_settings)."""
from __future__ import annotations

import dataclasses

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from firmware.config import ValidationError
from firmware.config.model import SMTP_TLS, SecretText
from webui.auth import guard
from webui.pbx import config_store, validation_errors
from webui.wizard.views import COUNTRIES, timezones

bp = Blueprint("settings", __name__, template_folder="templates", url_prefix="/settings")

TEXT = ("site_name", "timezone", "country", "sip_domain", "smtp_host", "smtp_user", "smtp_from", "smtp_tls")
NUMBERS = {"no_answer_timeout": "seconds", "recording_retention_days": "days", "smtp_port": "a TCP port"}
TLS_CHOICES = (("starttls", "STARTTLS (usually port 587)"), ("tls", "TLS from the start (usually port 465)"),
               ("none", "none: plain text (only inside a trusted network)"))
assert tuple(v for v, _ in TLS_CHOICES) == SMTP_TLS


def form_changes() -> tuple[dict, dict[str, str]]:
    """The submitted form as settings changes, and the fields that are not even numbers."""
    changes: dict = {k: request.form.get(k, "").strip() for k in TEXT}
    errors: dict[str, str] = {}
    for name, unit in NUMBERS.items():
        raw = request.form.get(name, "").strip()
        try:
            changes[name] = int(raw)
        except ValueError:
            errors[name] = f"'{raw}' is not a whole number ({unit})"
    changes["record_calls"] = request.form.get("record_calls") == "on"
    if "recording_max_disk_percent" in request.form:      # older API clients do not send it
        raw = request.form["recording_max_disk_percent"].strip() or "0"
        try:
            changes["recording_max_disk_percent"] = int(raw)
        except ValueError:
            errors["recording_max_disk_percent"] = f"'{raw}' is not a whole number (percent)"
    if "trusted_networks" in request.form:    # one per line or comma separated; the model checks each
        items = request.form["trusted_networks"].replace(",", "\n").splitlines()
        changes["trusted_networks"] = tuple(item.strip() for item in items if item.strip())
    password = request.form.get("smtp_password", "")
    if request.form.get("smtp_password_clear") == "on":
        changes["smtp_password"] = SecretText("")
    elif password:
        changes["smtp_password"] = SecretText(password)   # empty keeps the stored one
    return changes, errors


def _page(values: dict, errors: dict, password_set: bool):
    return render_template("settings/index.html", values=values, errors=errors, countries=COUNTRIES,
                           timezones=timezones(), tls_choices=TLS_CHOICES,
                           password_set=password_set), 400 if errors else 200


@bp.get("")
def index():
    settings = config_store().settings()
    return _page(dataclasses.asdict(settings), {}, bool(settings.smtp_password))


@bp.post("")
def save():
    store = config_store()
    current = store.settings()
    changes, errors = form_changes()
    valid = {k: v for k, v in changes.items() if k not in errors}
    try:
        if errors:   # still check the rest, so that every bad field is named at once
            dataclasses.replace(current, **valid).validate()
        else:
            store.update_settings(**valid)
    except ValidationError as e:
        errors = {**validation_errors(e), **errors}
    if errors:
        values = {**dataclasses.asdict(current), **valid,
                  **{k: request.form.get(k, "") for k in errors if k in NUMBERS}}
        return _page(values, errors, bool(current.smtp_password))
    changed = sorted(k for k, v in changes.items() if getattr(current, k) != v)
    current_app.extensions["pbx.accounts"].audit(
        "settings_changed", g.user.username, guard.client_address(), ", ".join(changed) or "no change")
    flash("Settings saved. The PBX uses them now." if changed else "Nothing changed.", "ok")
    return redirect(url_for("settings.index"))
