"""Mail page: the SMTP server in use, a "send test e-mail" form, and the outbox with each message's
state (queued, retrying and why, sent, failed and why), kept current by mail.js polling
/mail/messages.json. The server itself is set on the Settings page (Outgoing mail); the sender
runs in `pbx run` (services/mailer). Admin-only (guard's default).
"""
from __future__ import annotations

import time
from datetime import datetime

from flask import Blueprint, current_app, flash, g, jsonify, redirect, render_template, request, url_for

from services.mailer import outbox
from webui.auth import guard
from webui.cdr.views import site_zone
from webui.pbx import config_store, data_dir

bp = Blueprint("mail", __name__, template_folder="templates", static_folder="static",
               url_prefix="/mail")

TLS_LABELS = {"starttls": "STARTTLS", "tls": "TLS", "none": "no encryption"}
STATE_CLASS = {"sent": "ok", "queued": "", "retrying": "off", "failed": "bad"}


def _when(ts, tz) -> str:
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


def rows(limit: int = 200) -> list[dict]:
    """The outbox as the page shows it: times in the box's zone, one line saying why."""
    tz = site_zone()
    out = []
    for m in outbox.messages(data_dir(), limit):
        why = m["last_error"] or ""
        if m["state"] == "retrying":
            why = f"{why} · next try {_when(m['next_try'], tz)[11:]}"
        elif m["state"] == "queued" and not why:
            why = "waiting for the sender"
            if not m["attempts"] and time.time() - (m["created"] or 0) > 10:
                why = "not tried yet: is the PBX running? (the dashboard says)"
        out.append({"id": m["id"], "created": _when(m["created"], tz), "to": ", ".join(m["to"]),
                    "subject": m["subject"], "ref": m["ref"], "state": m["state"],
                    "state_class": STATE_CLASS.get(m["state"], ""), "attempts": m["attempts"],
                    "why": why, "sent_at": _when(m["sent_at"], tz),
                    "can_retry": m["state"] in ("retrying", "failed")})
    return out


def server_line(settings) -> str:
    if not settings.smtp_host:
        return ""
    login = f", login as {settings.smtp_user}" if settings.smtp_user else ", no login"
    return (f"{settings.smtp_host}:{settings.smtp_port} ({TLS_LABELS.get(settings.smtp_tls, settings.smtp_tls)}"
            f"{login}), sender {settings.smtp_from}")


def _page(errors=None, to="", status=200):
    settings = config_store().settings()
    return render_template("mail/index.html", rows=rows(), server=server_line(settings), errors=errors or {},
                           to=to, summary=outbox.summary(data_dir())), status


def _audit(event: str, detail: str) -> None:
    current_app.extensions["pbx.accounts"].audit(event, g.user.username, guard.client_address(), detail)


@bp.get("")
def index():
    return _page()


@bp.get("/messages.json")
def messages_json():
    return jsonify({"messages": rows(), "summary": outbox.summary(data_dir())})


@bp.post("/test")
def send_test():
    to = request.form.get("to", "").strip()
    try:
        message_id = outbox.enqueue_test(data_dir(), to, requested_by=g.user.username)
    except ValueError as e:
        return _page(errors={"to": str(e)}, to=to, status=400)
    _audit("mail_test", f"{to} ({message_id})")
    flash(f"Test e-mail to {to} queued: its line below shows when it is sent, or why not.", "ok")
    return redirect(url_for("mail.index") + f"#m-{message_id}")


@bp.post("/<ident>/retry")
def retry(ident: str):
    message_id = ident
    try:
        state = outbox.retry(data_dir(), message_id)
    except ValueError as e:
        return guard.refuse(400, str(e))
    _audit("mail_retry", message_id)
    flash("Trying it again now." if state == "retrying" else "Queued again: trying it now.", "ok")
    return redirect(url_for("mail.index") + f"#m-{message_id}")
