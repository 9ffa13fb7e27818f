"""Dashboard page and its event stream.

The stream polls the running PBX once a second (services.control "status") and sends an event
only when something other than the uptime changed; the page advances the uptime clock itself.
A stream ends after STREAM_MAX_SECONDS so that a forgotten tab cannot hold a server thread for
ever; EventSource reconnects on its own after `retry`.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from flask import Blueprint, Response, current_app, g, redirect, render_template, url_for

from webui.auth import guard
from webui.pbx import data_dir, pbx_status, registered_extensions

logger = logging.getLogger(__name__)

bp = Blueprint("dashboard", __name__, template_folder="templates")


def snapshot(directory: Path) -> dict:
    """Everything the dashboard shows, as one JSON-able dict."""
    from firmware.config import ConfigStore
    status = pbx_status(directory)
    regs = registered_extensions(status)
    extensions = [{"number": e.number, "name": e.name, "registered": e.number in regs,
                   "contacts": [r.get("contact", "") for r in regs.get(e.number, [])]}
                  for e in ConfigStore(directory).extensions()]
    states = {t.get("name"): t for t in status.get("trunks", []) if isinstance(t, dict)}
    trunks = []
    for t in ConfigStore(directory).trunks():
        live = states.get(t.name, {})
        state = live.get("state") or ("registered" if live.get("registered") else None)
        if state is None:
            state = ("IP-authenticated" if not t.register
                     else "not registered" if status["running"] else "unknown")
        elif state == "ip":
            state = "IP-authenticated"
        elif state == "failed" and live.get("last_code"):
            state = f"failed ({live['last_code']})"
        trunks.append({"name": t.name, "host": t.host, "state": state})
    return {
        "running": status["running"],
        "reason": status.get("reason", ""),
        "version": status.get("version"),
        "uptime": status.get("uptime"),
        "registrations": status.get("registrations", []),
        "calls": status.get("calls", []),
        "trunks": trunks,
        "sip_addr": status.get("sip_addr"),
        "sip_port": status.get("sip_port"),
        "extensions": extensions,
        "mail": mail_summary(directory),
        "alerts": charging_alerts(directory),
        "ha": failover_card(directory, status),
    }


def failover_card(directory: Path, status: dict) -> dict | None:
    """The failover card: this box's state, the peer's, late replication, the last takeover
    (only the parts that do not change every second: the stream sends only changes)."""
    try:
        from webui.ha.views import live_summary
        s = live_summary(directory, status)
    except Exception as e:  # the dashboard must show even if the failover files are unreadable
        logger.warning("failover status unavailable: %s", e)
        return None
    if not s["on"]:
        return None
    late = [label for label, _, ok in s["rows"] if not ok]
    return {"ok": s["ok"], "state": s["state_word"], "headline": s["headline"], "peer": s.get("peer_short", s["peer"]),
            "peer_ok": s["peer_ok"], "late": late, "takeover": s["takeover"]}


def charging_alerts(directory: Path) -> list[dict]:
    """Spend-limit and unusual-pattern alerts of the last 24 h (call charging), for their banner."""
    try:
        from webui.charging.views import alerts_for_display
        return [{"when": a["when"], "kind": a["kind"], "text": a["text"]} for a in alerts_for_display(directory)]
    except Exception as e:  # the dashboard must show even if the alerts file is unreadable
        logger.warning("charging alerts unavailable: %s", e)
        return []


def mail_summary(directory: Path) -> dict:
    """Outgoing mail retrying or failed (services/mailer): the dashboard's mail banner."""
    from services.mailer import outbox
    try:
        return outbox.summary(directory)
    except OSError as e:
        return {"queued": 0, "retrying": 0, "failed": 0, "last_error": f"outbox unreadable: {e}"}


@bp.get("/")
@guard.user_allowed
def home():
    return redirect(url_for("dashboard.index") if g.user.is_admin else url_for("me.index"))


@bp.get("/dashboard")
def index():
    return render_template("dashboard/index.html", state=snapshot(data_dir()), now=time.time())


@bp.get("/dashboard/stream")
def stream():
    directory = data_dir()
    poll = float(current_app.config["STATUS_POLL_SECONDS"])
    lifetime = float(current_app.config["STREAM_MAX_SECONDS"])

    def events():
        deadline = time.monotonic() + lifetime
        last_key, last_sent = None, time.monotonic()
        yield "retry: 2000\n\n"
        while time.monotonic() < deadline:
            try:
                state = snapshot(directory)
            except Exception as e:  # a bad config file: say so on the page, keep the stream alive
                logger.warning("dashboard snapshot failed: %s", e)
                state = {"running": False, "reason": f"cannot read state: {e}"}
            key = json.dumps({k: v for k, v in state.items() if k != "uptime"}, sort_keys=True)
            if key != last_key:
                last_key, last_sent = key, time.monotonic()
                yield f"event: status\ndata: {json.dumps(state)}\n\n"
            elif time.monotonic() - last_sent > 15:
                last_sent = time.monotonic()
                yield ": keepalive\n\n"  # keeps proxies and NAT from dropping an idle stream
            time.sleep(poll)

    return Response(events(), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
