"""Login and logout pages with lockout after repeated failures."""
from __future__ import annotations

import math
from urllib.parse import urlparse

from flask import Blueprint, current_app, g, jsonify, redirect, render_template, request, url_for

from webui.auth import guard

bp = Blueprint("auth", __name__, template_folder="templates")


def _safe_next(target: str | None) -> str:
    # Only same-site paths: an open redirect after login is a phishing aid.
    if not target:
        return url_for("dashboard.index")
    parts = urlparse(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("dashboard.index")
    return target


def home_for(account) -> str:
    if account.is_admin:
        return url_for("dashboard.index")
    return url_for("me.index")


@bp.get("/login")
@guard.public
def login():
    if g.user is not None:
        return redirect(home_for(g.user))
    return render_template("auth/login.html", errors={}, username="", next=request.args.get("next", ""))


@bp.post("/login")
@guard.public
def login_post():
    accounts = current_app.extensions["pbx.accounts"]
    username = request.form.get("username", "").strip()[:64]
    password = request.form.get("password", "")
    address = guard.client_address()
    keys = (f"user:{username.lower()}", f"ip:{address}")
    wait = accounts.locked_for(*keys)
    if wait > 0:
        accounts.audit("login_blocked", username, address, "locked out")
        minutes = math.ceil(wait / 60)
        return render_template(
            "auth/login.html", username=username, next=request.form.get("next", ""),
            errors={"form": f"too many failed logins: try again in {minutes} minute(s)"}), 429
    account = accounts.verify(username, password)
    if account is None:
        if accounts.record_failure(*keys):
            accounts.audit("lockout", username, address,
                           f"locked for {accounts_lock_minutes()} minutes after repeated failures")
        accounts.audit("login_failed", username, address, "wrong user name or password")
        return render_template(
            "auth/login.html", username=username, next=request.form.get("next", ""),
            errors={"form": "wrong user name or password"}), 401
    accounts.clear_failures(keys[0])
    guard.login(account)
    accounts.audit("login", account.username, address, f"role {account.role}")
    nxt = request.form.get("next")
    return redirect(_safe_next(nxt) if nxt else home_for(account))


def accounts_lock_minutes() -> int:
    from webui.auth.accounts import LOCK_SECONDS
    return LOCK_SECONDS // 60


@bp.post("/logout")
@guard.public
def logout():
    if g.user is not None:
        current_app.extensions["pbx.accounts"].audit("logout", g.user.username, guard.client_address())
    guard.logout()
    return redirect(url_for("auth.login"))


@bp.get("/healthz")
@guard.public
def health():
    """For `pbx run` and monitoring: the web process is up (no state, no secrets)."""
    return jsonify(ok=True)
