"""`pbx service web`: the web UI under systemd, with READY once it serves and a probing watchdog.

The server owns its own threads, so the watchdog thread pings systemd only after a real HTTP(S)
request to the UI succeeded: a hung web server stops the pings and systemd restarts it.

Socket-activated (pbx-web.socket holds ports 443 and 80, decision 026): with `idle_exit` the UI
stops after that many seconds without a request, and systemd starts it again on the next
connection. Started without the socket unit it binds the ports itself and stays up.
"""

from __future__ import annotations

import errno
import http.client
import logging
import ssl
import sys
import threading

from .notify import Notifier

log = logging.getLogger(__name__)


def _alive(host: str, port: int, tls: bool = False) -> bool:
    try:
        if tls:   # our own certificate, probed on loopback: nothing to verify against
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            conn = http.client.HTTPSConnection(host, port, timeout=2, context=ctx)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=2)
        conn.request("GET", "/healthz")
        ok = conn.getresponse().status < 500
        conn.close()
        return ok
    except OSError:
        return False


def serve(data_dir, host: str, port: int, https: str = "auto", redirect_port: int | None = None,
          idle_exit: float = 0.0) -> int:
    from webui import create_app, server
    from webui.wizard import setup_code
    notifier = Notifier()
    try:
        sockets = server.inherited_sockets()
    except ValueError as exc:
        log.error("web UI not started: the sockets systemd handed over are unusable: %s: check "
                  "pbx-web.socket", exc)
        return 1
    if sockets:
        port = sockets[0].getsockname()[1]
    elif idle_exit > 0:
        log.info("web UI: not socket-activated (pbx-web.socket), so it stays up instead of stopping when idle")
        idle_exit = 0.0
    app = create_app(str(data_dir))
    servers = server.for_app(app, data_dir, host, port, https=https, redirect_port=redirect_port,
                             sockets=sockets, idle_exit=idle_exit)
    tls = "pbx.tls" in app.extensions
    scheme = "https" if tls else "http"
    code = setup_code.read(str(data_dir))
    if code:  # first boot: the console (journal) shows the one-time code the wizard asks for
        print(f"setup code: {code} (open {scheme}://{host}:{port}/)", file=sys.stderr, flush=True)
    try:
        servers.prepare()
    except OSError as exc:  # one line naming the port and the fix, not a traceback per restart
        if exc.errno == errno.EADDRINUSE:
            log.error("web UI not started: port %d (or the redirect port) in use by another process: stop it "
                      "or pass --web-port", port)
        else:
            log.error("web UI not started: cannot listen on %s:%d: %s", host, port, exc.strerror or exc)
        return 1
    probe_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    stop = threading.Event()

    def watchdog():
        ready = False
        while not stop.wait(0 if not ready else notifier.interval):
            if _alive(probe_host, port, tls):
                if not ready:
                    notifier.ready(f"web UI on {scheme}://{host}:{port}/")
                    log.info("web UI serving on %s://%s:%d/", scheme, host, port)
                    ready = True
                notifier.watchdog(f"web UI on {scheme}://{host}:{port}/")
            elif not ready:
                stop.wait(0.1)

    t = threading.Thread(target=watchdog, name="web-watchdog", daemon=True)
    t.start()
    try:
        servers.serve_forever()
    finally:
        stop.set()
        notifier.stopping()
    return 0
