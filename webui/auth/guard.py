"""Who is asking and may they: default-deny access rules, CSRF, session cookies, security headers.

Every view is admin-only unless marked with @public or @user_allowed, so a route added later
without thought is closed rather than open (tests walk the whole url map to hold this).
"""
from __future__ import annotations

import hmac
import logging
import secrets
from functools import wraps

from flask import current_app, g, jsonify, redirect, request, session, url_for
from flask.sessions import SecureCookieSessionInterface

logger = logging.getLogger(__name__)

UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
# Reachable before the admin password exists: the wizard's first step and what it needs.
SETUP_ENDPOINTS = {"wizard.admin", "static", "auth.health"}


def public(view):
    view._access = "public"
    return view


def user_allowed(view):
    """Any logged-in account (admin or extension user); the view checks ownership itself."""
    view._access = "user"
    return view


def access_of(endpoint: str | None) -> str:
    if endpoint == "static":  # CSS and the dashboard script: no secrets, needed by the login page
        return "public"
    view = current_app.view_functions.get(endpoint) if endpoint else None
    return getattr(view, "_access", "admin") if view else "public"


def wants_json() -> bool:
    if request.path == "/api/docs":
        return False
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def client_address() -> str:
    """The TCP peer (REMOTE_ADDR), which lockouts and the audit log are keyed on.

    The web server (webui/server.py) serves the LAN directly with no proxy in front, so
    X-Forwarded-For and friends are text the client chose and are ignored: trusting them would
    let a guesser pick whose address gets locked.
    """
    return request.remote_addr or "-"


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(24)
    return token


def _accounts():
    return current_app.extensions["pbx.accounts"]


def login(account) -> None:
    # A fresh session on login: nothing an attacker planted before survives (session fixation).
    # The cookie names a server-side session (accounts.web_session) that logout revokes.
    _accounts().close_session(session.get("sid"))
    session.clear()
    session.permanent = True
    session["sid"] = _accounts().open_session(
        account.username, current_app.permanent_session_lifetime.total_seconds())
    session["user"] = account.username
    session["epoch"] = account.epoch
    csrf_token()


def logout() -> None:
    _accounts().close_session(session.get("sid"))
    session.clear()


def _identify():
    accounts = _accounts()
    g.user, g.via_token = None, False
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        g.via_token = True
        g.user = accounts.account_for_token(auth[7:].strip())
        return
    name = session.get("user")
    if name:
        account = accounts.get(name)
        if (account and account.epoch == session.get("epoch")
                and accounts.session_user(session.get("sid")) == account.username):
            g.user = account
        else:  # logged out, password changed, account deleted or expired: the cookie is void
            session.clear()


def refuse(status: int, message: str):
    if wants_json():
        resp = jsonify(error=message)
        resp.status_code = status
        if status == 401:
            resp.headers["WWW-Authenticate"] = 'Bearer realm="pbx"'
        return resp
    if status == 401:
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    from webui.errors import error_page
    return error_page(status, message)


def before_request():
    """Who is asking, may they, and only then: is the form token right.

    Identity before CSRF: an anonymous API call that would change something gets 401 with
    WWW-Authenticate (log in / send a token), not a misleading "CSRF token missing".
    """
    _identify()
    accounts = current_app.extensions["pbx.accounts"]
    endpoint = request.endpoint
    if not accounts.has_admin():
        if endpoint not in SETUP_ENDPOINTS:
            if wants_json():
                return refuse(503, "first-boot setup is not done: open the web UI and run the wizard")
            return redirect(url_for("wizard.admin"))
    else:
        if g.via_token and g.user is None:
            return refuse(401, "API token unknown or revoked: create one on the System page")
        access = access_of(endpoint)
        if access != "public":
            if g.user is None:
                return refuse(401, "log in first")
            if access == "admin" and not g.user.is_admin:
                return refuse(403, "this page is for administrators")
    standby = _standby_says()
    # the failover settings are this box's own (not replicated): they may be changed on the standby
    if standby and request.method in UNSAFE_METHODS and endpoint not in ("auth.login_post", "auth.logout", "ha.save"):
        return refuse(503, standby)
    return _check_csrf()


def _standby_says() -> str:
    """On the standby box of a failover pair, what to tell someone who tries to change anything:
    the active box's configuration is replicated here and would overwrite it (services/ha)."""
    from pathlib import Path
    import json
    ha_dir = Path(current_app.config["DATA_DIR"]) / "ha"
    try:
        state = json.loads((ha_dir / "state.json").read_text()).get("state")
        settings = json.loads((ha_dir / "settings.json").read_text())
    except (OSError, ValueError):
        return ""
    if not settings.get("enabled") or state == "MASTER":
        return ""
    vip = str(settings.get("vip", "")).split("/")[0]
    return (f"this box is the standby of a failover pair ({state}): it takes the active box's configuration; "
            f"make changes on the active box at https://{vip}/")


def _check_csrf():
    """Every state-changing request from a browser session carries the session's form token."""
    if request.method not in UNSAFE_METHODS or g.via_token:
        return None
    sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token", "")
    expected = session.get("csrf", "")
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        logger.info("CSRF check failed for %s %s from %s", request.method, request.path,
                    client_address())
        return refuse(400, "form expired or was sent from another site (CSRF token missing "
                           "or wrong): reload the page and send it again")
    return None


def owns_extension(number: str) -> bool:
    return g.user is not None and (g.user.is_admin or g.user.extension == number)


def security_headers(resp):
    h = resp.headers
    h.setdefault("Content-Security-Policy",
                 "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                 "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Referrer-Policy", "same-origin")
    h.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    h.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    if request.is_secure:
        h.setdefault("Strict-Transport-Security", "max-age=31536000")
    if request.endpoint != "static":
        # Pages show secrets and live state: never from a cache.
        h.setdefault("Cache-Control", "no-store")
    return resp


class PbxSessionInterface(SecureCookieSessionInterface):
    """Signed-cookie sessions; the Secure flag follows the connection.

    Phones sit on a LAN and the box often has no certificate on first boot: a Secure cookie
    over plain http://192.168.x.y would be dropped by the browser and nobody could log in.
    Over HTTPS (or with SESSION_COOKIE_SECURE=True) the cookie is Secure.
    """

    def get_cookie_secure(self, app) -> bool:
        if app.config.get("SESSION_COOKIE_SECURE"):
            return True
        try:
            return request.is_secure
        except RuntimeError:
            return False


def require_owner(number: str):
    if not owns_extension(number):
        return refuse(403, f"extension {number} is not yours")
    return None


def api_error(status: int, message: str, errors: list | None = None):
    resp = jsonify(error=message, errors=errors or [])
    resp.status_code = status
    return resp


def ownership_required(view):
    @wraps(view)
    def wrapper(number, *args, **kwargs):
        refused = require_owner(number)
        return refused or view(number, *args, **kwargs)
    wrapper._access = "user"
    return wrapper
