"""Browser phone page (/phone): JsSIP in the page registers as an extension over the edge's WebSocket.

A user gets their own extension only (taken from the login, never from the URL); an administrator
chooses one (?ext=). The SIP password is not in the page's HTML: the script asks for it with a
POST carrying the form token (/phone/credentials), which is audited, and only for an extension the
caller owns. The edge listens for WebSocket only when `pbx run --browser-phone-port` is given; it
writes DATA/edge/webrtc.json (port, tls), which this page reads.

Headers: the strict policy of every page, plus `connect-src` for this box's WebSocket and the
microphone for this page only (Permissions-Policy microphone=(self)).
"""
from __future__ import annotations

import json

from flask import Blueprint, current_app, g, jsonify, make_response, render_template, request

from webui.auth import guard
from webui.pbx import config_store, data_dir

bp = Blueprint("phone", __name__, template_folder="templates", url_prefix="/phone")

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "media-src 'self' blob:; connect-src 'self' {ws}; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")


def webrtc_info() -> dict | None:
    """{"port": N, "tls": bool} while the edge offers browser phones, else None."""
    try:
        info = json.loads((data_dir() / "edge" / "webrtc.json").read_text())
        return {"port": int(info["port"]), "tls": bool(info["tls"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _host() -> str:
    """The host name or address this page was reached by (the WebSocket goes to the same)."""
    host = request.host
    if host.startswith("["):
        return host.split("]")[0] + "]"
    return host.rsplit(":", 1)[0] if ":" in host else host


def ws_url(info: dict) -> str:
    return f"{'wss' if info['tls'] else 'ws'}://{_host()}:{info['port']}"


def _chosen() -> str | None:
    """The extension the page acts as: the user's own; an administrator's choice (?ext=) or own."""
    if g.user.is_admin:
        return request.values.get("ext") or g.user.extension
    return g.user.extension


@bp.get("")
@guard.user_allowed
def index():
    number = _chosen()
    store = config_store()
    ext = store.get_extension(number) if number else None
    if number and ext is None:
        return guard.refuse(404, f"no extension {number}: choose one of the list")
    info = webrtc_info()
    choices = [e.number for e in store.extensions()] if g.user.is_admin else []
    resp = make_response(render_template("phone/index.html", ext=ext, info=info, choices=choices,
                                         mixed=bool(info and request.is_secure and not info["tls"])))
    resp.headers["Content-Security-Policy"] = CSP.format(ws=ws_url(info) if info else "")
    resp.headers["Permissions-Policy"] = "camera=(), microphone=(self), geolocation=()"
    return resp


@bp.post("/credentials")
@guard.user_allowed
def credentials():
    """The SIP account of an extension the caller owns, for the page's script (never cached)."""
    number = request.form.get("ext", "")
    if not guard.owns_extension(number):
        return guard.api_error(403, f"extension {number} is not yours")
    ext = config_store().get_extension(number)
    if ext is None:
        return guard.api_error(404, f"no extension {number}")
    info = webrtc_info()
    if info is None:
        return guard.api_error(503, "browser phones are off on this box: the administrator starts the PBX "
                                    "with --browser-phone-port (see README, Browser phone)")
    domain = config_store().settings().sip_domain or _host().strip("[]")
    current_app.extensions["pbx.accounts"].audit("browser_phone_credentials", g.user.username,
                                                 guard.client_address(), f"extension {number}")
    return jsonify(ws_url=ws_url(info), uri=f"sip:{number}@{domain}", user=number, password=ext.secret,
                   name=ext.name or number)
