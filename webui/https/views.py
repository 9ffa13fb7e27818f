"""The HTTPS page: which certificate the box serves, and uploading one to replace it (admin only)."""
from __future__ import annotations

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from webui.auth import guard
from webui.https import certs
from webui.pbx import data_dir

bp = Blueprint("https", __name__, template_folder="templates", url_prefix="/https")


def _live_reload() -> bool:
    """Put the active certificate into the running server's TLS context (new connections use it)."""
    live = current_app.extensions.get("pbx.tls")
    if live is None:
        return False
    live.reload()
    return True


def _audit(event: str, detail: str = "") -> None:
    current_app.extensions["pbx.accounts"].audit(event, g.user.username, guard.client_address(), detail)


def _page(error: str = "", status: int = 200):
    live = current_app.extensions.get("pbx.tls")
    host = live.host if live else ""
    return render_template("https/index.html", cert=certs.info(data_dir(), host), serving=live is not None,
                           secure=request.is_secure, error=error), status


@bp.get("")
def index():
    return _page()


@bp.post("/upload")
def upload():
    cert_file, key_file = request.files.get("certificate"), request.files.get("private_key")
    if not cert_file or not cert_file.filename or not key_file or not key_file.filename:
        return _page("choose both files: the certificate (PEM, with its intermediates) and its private key", 400)
    try:
        info = certs.install(data_dir(), cert_file.read(certs.MAX_PEM + 1), key_file.read(certs.MAX_PEM + 1))
    except certs.CertificateError as e:
        _audit("certificate_refused", str(e))
        return _page(f"certificate not installed; the box keeps its current one: {e}", 400)
    applied = _live_reload()
    _audit("certificate_uploaded", info.subject)
    flash(f"Certificate for {', '.join(info.names) or info.subject} installed"
          + ("; new connections use it now." if applied else "; it is used when the web UI serves HTTPS."), "ok")
    return redirect(url_for("https.index"))


@bp.post("/revert")
def revert():
    certs.remove_uploaded(data_dir())
    _live_reload()
    _audit("certificate_reverted")
    flash("The box's own (self-signed) certificate is used again.", "ok")
    return redirect(url_for("https.index"))
