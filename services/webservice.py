"""`pbx service web`: the web UI under systemd, with READY once it serves and a probing watchdog.

waitress owns its own loop, so the watchdog thread pings systemd only after a real HTTP request to
the UI succeeded: a hung web server stops the pings and systemd restarts it.
"""

from __future__ import annotations

import errno
import http.client
import logging
import sys
import threading

import waitress

from .notify import Notifier

log = logging.getLogger(__name__)


def _alive(host: str, port: int) -> bool:
    try:
        conn = http.client.HTTPConnection(host, port, timeout=2)
        conn.request("GET", "/healthz")
        ok = conn.getresponse().status < 500
        conn.close()
        return ok
    except OSError:
        return False


def serve(data_dir, host: str, port: int) -> int:
    from webui import create_app
    from webui.wizard import setup_code
    notifier = Notifier()
    app = create_app(str(data_dir))
    code = setup_code.read(str(data_dir))
    if code:  # first boot: the console (journal) shows the one-time code the wizard asks for
        print(f"setup code: {code} (open http://{host}:{port}/)", file=sys.stderr, flush=True)
    try:
        server = waitress.create_server(app, host=host, port=port, threads=8, send_bytes=1, channel_timeout=60,
                                        ident="pbx", clear_untrusted_proxy_headers=True)
    except OSError as exc:  # one line naming the port and the fix, not a traceback per restart
        if exc.errno == errno.EADDRINUSE:
            log.error("web UI not started: port %d in use by another process: stop it or pass --web-port", port)
        else:
            log.error("web UI not started: cannot listen on %s:%d: %s", host, port, exc.strerror or exc)
        return 1
    probe_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    stop = threading.Event()

    def watchdog():
        ready = False
        while not stop.wait(0 if not ready else notifier.interval):
            if _alive(probe_host, port):
                if not ready:
                    notifier.ready(f"web UI on http://{host}:{port}/")
                    log.info("web UI serving on http://%s:%d/", host, port)
                    ready = True
                notifier.watchdog(f"web UI on http://{host}:{port}/")
            elif not ready:
                stop.wait(0.1)

    t = threading.Thread(target=watchdog, name="web-watchdog", daemon=True)
    t.start()
    try:
        server.run()
    finally:
        stop.set()
        notifier.stopping()
    return 0
