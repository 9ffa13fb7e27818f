"""Login and logout pages; repeated failures lock the address they come from (see accounts.py)."""
from __future__ import annotations

import math
from urllib.parse import urlparse

from flask import Blueprint, current_app, g, jsonify, redirect, render_template, request, url_for

from webui.auth import guard
from webui.auth.accounts import GLOBAL_SLOWDOWN_AFTER, SLOWDOWN_SECONDS, login_keys

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
    pair_key, address_key, account_key = login_keys(username, address)

    def refused(message: str, status: int):
        return render_template("auth/login.html", username=username, next=request.form.get("next", ""),
                               errors={"form": message}), status

    wait = accounts.locked_for(pair_key, address_key)
    if wait > 0:
        accounts.audit("login_blocked", username, address, "locked out (this address)")
        return refused(f"too many failed logins from this address: try again in "
                       f"{math.ceil(wait / 60)} minute(s), or log in from another computer", 429)
    wait = accounts.slowed_for(account_key, pair_key)
    if wait > 0:
        accounts.audit("login_blocked", username, address, "slowed down: account under attack")
        return refused(f"many failed logins for this account from several addresses: wait "
                       f"{math.ceil(wait)} seconds before trying again", 429)
    account = accounts.verify(username, password)
    if account is None:
        if accounts.record_failure(pair_key, address_key):
            accounts.audit("lockout", username, address,
                           f"this address locked for {accounts_lock_minutes()} minutes after repeated failures")
        accounts.record_failure(account_key)   # counted for the safety net; never locks
        if accounts.failures(account_key) == GLOBAL_SLOWDOWN_AFTER:
            accounts.audit("login_attack", username, address,
                           f"{GLOBAL_SLOWDOWN_AFTER} failed logins from several addresses: "
                           f"each address now waits {SLOWDOWN_SECONDS} s between tries")
        accounts.audit("login_failed", username, address, "wrong user name or password")
        return refused("wrong user name or password", 401)
    accounts.clear_failures(pair_key)
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
