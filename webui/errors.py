"""The one error page: every refusal and failure a browser sees, in the site's layout.

The API (and any client asking for JSON) gets {"error": ...} instead; that choice is made by the
callers (guard.refuse, the app's error handlers), this module only draws the page.
"""
from __future__ import annotations

from flask import current_app, render_template

TITLES = {400: "Request refused", 401: "Log in first", 403: "Not allowed", 404: "Not found",
          405: "Not allowed here", 413: "File too large", 429: "Too many attempts",
          500: "Internal error", 503: "Configuration problem"}


def error_page(status: int, message: str, hint: str = ""):
    try:
        body = render_template("error.html", status=status, title=TITLES.get(status, f"Error {status}"),
                               message=message, hint=hint)
    except Exception:  # the layout itself failed (a broken template, no app context): plain text
        from markupsafe import escape
        body = (f"<!doctype html><title>{status}</title><h1>{TITLES.get(status, status)}</h1>"
                f"<p>{escape(message)}</p><p>{escape(hint)}</p><p><a href='/'>Back</a></p>")
    return current_app.response_class(body, status=status, mimetype="text/html")
