"""Application factory: one blueprint per area, all sharing the config store of one data directory."""
from __future__ import annotations

import logging
import os
import secrets
import time
from datetime import timedelta
from pathlib import Path

from flask import Flask, g, jsonify, request
from werkzeug.exceptions import HTTPException

from webui.auth import guard
from webui.auth.accounts import AccountStore

logger = logging.getLogger(__name__)

MAX_UPLOAD = 1024 * 1024  # a backup of 500 extensions is ~100 kB: 1 MB leaves room, stops abuse


def _secret_key(data_dir: Path) -> bytes:
    """Per-box session signing key, made on first start, readable only by the PBX user."""
    path = data_dir / "webui" / "secret-key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        key = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return key


def create_app(data_dir: str | Path, config: dict | None = None) -> Flask:
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    app = Flask(__name__)
    app.config.update(
        DATA_DIR=str(data_dir),
        SECRET_KEY=_secret_key(data_dir),
        MAX_CONTENT_LENGTH=MAX_UPLOAD,
        SESSION_COOKIE_NAME="pbx_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=False,  # True forces it; otherwise it follows HTTPS (see guard)
        PERMANENT_SESSION_LIFETIME=timedelta(hours=8),
        STATUS_POLL_SECONDS=1.0,
        STREAM_MAX_SECONDS=300.0,  # an SSE stream ends after this; EventSource reconnects by itself
        JSON_SORT_KEYS=False,
    )
    app.config.update(config or {})
    app.session_interface = guard.PbxSessionInterface()
    app.extensions["pbx.accounts"] = AccountStore(data_dir)

    import importlib

    from webui import nav, wizard
    for package in nav.blueprint_packages():
        app.register_blueprint(importlib.import_module(f"webui.{package}").bp)

    # A global, not a context variable: imported form macros see globals only.
    app.jinja_env.globals["csrf_token"] = guard.csrf_token
    app.before_request(guard.before_request)
    app.after_request(guard.security_headers)

    @app.context_processor
    def _globals():
        from webui.pbx import config_store
        try:
            site = config_store().settings().site_name
        except Exception:  # a broken config file must not take the login page down with it
            site = "Office PBX"
        return {"site_name": site, "main_pages": nav.MAIN_PAGES, "feature_pages": nav.FEATURE_PAGES,
                "standby_note": guard._standby_says()}

    @app.template_filter("destination")
    def _destination(value, names=None):
        from webui.destinations import label
        return label(value, names)

    @app.template_filter("duration")
    def _duration(seconds):
        from webui.timefmt import duration
        return duration(seconds)

    @app.template_filter("utc")
    def _utc(ts):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))

    @app.teardown_appcontext
    def _close(_exc):
        cdr_store = g.pop("cdr_store", None)
        if cdr_store is not None:
            cdr_store.close()

    from webui.errors import error_page

    for status, text in ((404, "not found: the address is wrong or the thing was deleted"),
                         (405, "method not allowed"),
                         (413, f"upload larger than {MAX_UPLOAD // 1024} kB: use a backup file "
                               "downloaded from the System page")):
        app.register_error_handler(status, _error_handler(status, text))

    from firmware.config import ConfigFileError

    @app.errorhandler(ConfigFileError)
    def _config_unusable(exc):
        # config.json unreadable or from newer firmware: say what to do instead of a bare 500.
        logger.error("configuration unusable: %s", exc)
        if guard.wants_json():
            return jsonify(error=str(exc)), 503
        return error_page(503, str(exc), "Restore a backup on the System page after fixing the file, "
                                         "or ask for help.")

    @app.errorhandler(HTTPException)
    def _http_error(exc):
        # Any other HTTP error (400 from a malformed form, 415, ...): the API answers JSON, never
        # werkzeug's HTML page. Routing redirects never reach here (Flask returns them as is).
        if exc.code is None or exc.code < 400:
            return exc
        if not guard.wants_json():
            return error_page(exc.code, f"{exc.name.lower()}: {exc.description}")
        return jsonify(error=f"{exc.name.lower()}: {exc.description}"), exc.code

    @app.errorhandler(Exception)
    def _unexpected(exc):
        # A bug or an input nothing foresaw: the traceback goes to the log, never to the client.
        logger.error("unexpected error on %s %s", request.method, request.path, exc_info=exc)
        text = ("internal error: the request was not completed; the details are in the PBX log "
                "(journalctl -u pbx-web): please report them")
        if guard.wants_json():
            return jsonify(error=text), 500
        return error_page(500, text)

    wizard.setup_code.ensure(data_dir, app.extensions["pbx.accounts"])
    return app


def _error_handler(status: int, text: str):
    def handle(_exc):
        from webui.errors import error_page
        if guard.wants_json():
            return jsonify(error=text), status
        return error_page(status, text)
    return handle

