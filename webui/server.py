"""The web UI's HTTP(S) server: cheroot (CherryPy's WSGI server), a thread per connection.

    servers = WebServers(app, host, port, tls=context, redirect_port=80)
    servers.start(); ...; servers.stop()

With `tls` (a LiveTls: the context from webui/https/certs.py) the UI is served over HTTPS on `port`,
and `redirect_port` (if given) answers plain HTTP with a redirect to the same path over HTTPS.
Without it the UI is plain HTTP on `port` (a box listening on loopback only: `make run`).

Why cheroot: the UI must speak TLS itself (a box has no proxy in front), and waitress, which
served it before, has no TLS. cheroot does, keeps the SSLContext we hand it (a new certificate
uploaded on the HTTPS page applies to the next connection without a restart), streams
server-sent events without buffering and is kept by the CherryPy project (docs/decisions/).
"""
from __future__ import annotations

import logging
import ssl
import threading
import time
from urllib.parse import quote

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

log = logging.getLogger(__name__)

THREADS = 16        # each open dashboard or wallboard holds one for its event stream
MAX_THREADS = 64
TIMEOUT_S = 60      # above the event streams' 15 s keepalive


class LiveTls:
    """The TLS context the server hands each new connection; reload() swaps in a fresh one built
    from the active certificate files (a fresh context: loading an RSA certificate into the old
    one would leave a previous ECDSA certificate beside it, and clients would still get that)."""

    def __init__(self, data_dir, host: str):
        from webui.https import certs
        self.data_dir, self.host = data_dir, host
        self.context = certs.context(data_dir, host)

    def reload(self) -> None:
        from webui.https import certs
        self.context = certs.context(self.data_dir, self.host)


class _ContextAdapter(BuiltinSSLAdapter):
    """cheroot's TLS adapter serving whatever context `live` holds at each handshake."""

    def __init__(self, live: LiveTls):
        # BuiltinSSLAdapter wants file names; it only uses them to build its own context
        self.certificate = self.private_key = self.certificate_chain = None
        self.ciphers = None
        self.live = live
        self._server_env = {}

    @property
    def context(self):
        return self.live.context

    @context.setter
    def context(self, _value):
        pass

    def get_environ(self, sock) -> dict:
        return {"wsgi.url_scheme": "https", "HTTPS": "on"}


def _redirect_app(https_port: int, ui=None):
    """Plain HTTP: everything is redirected to HTTPS, except phones' provisioning files (/prov/),
    which go to the UI app: it serves them only to phones flagged to fetch over plain HTTP."""
    def app(environ, start_response):
        if ui is not None and environ.get("PATH_INFO", "").startswith("/prov/"):
            return ui(environ, start_response)
        host = environ.get("HTTP_HOST", "").rsplit(":", 1)[0] or environ.get("SERVER_NAME", "localhost")
        if host.startswith("[") is False and ":" in host:      # a bare IPv6 address
            host = f"[{host}]"
        port = "" if https_port == 443 else f":{https_port}"
        path = quote(environ.get("PATH_INFO", "/")) + (f"?{environ['QUERY_STRING']}"
                                                       if environ.get("QUERY_STRING") else "")
        start_response("308 Permanent Redirect", [("Location", f"https://{host}{port}{path}"),
                                                  ("Content-Length", "0")])
        return [b""]
    return app


class WebServers:
    def __init__(self, app, host: str, port: int, *, tls: LiveTls | None = None,
                 redirect_port: int | None = None, threads: int = THREADS):
        self.servers: list[wsgi.Server] = []
        main = wsgi.Server((host, port), app, numthreads=threads, max=MAX_THREADS, timeout=TIMEOUT_S,
                           server_name="pbx")
        if tls is not None:
            main.ssl_adapter = _ContextAdapter(tls)
        self.servers.append(main)
        if tls is not None and redirect_port:
            self.servers.append(wsgi.Server((host, redirect_port), _redirect_app(port, app), numthreads=4,
                                            timeout=10, server_name="pbx"))
        self._threads: list[threading.Thread] = []

    def prepare(self) -> None:
        """Bind every socket (OSError names the port in use) before anything is served."""
        for server in self.servers:
            server.prepare()

    def serve_forever(self) -> None:
        """Serve until stop(); the redirect server runs on its own thread."""
        for server in self.servers[1:]:
            t = threading.Thread(target=server.serve, name="web-redirect", daemon=True)
            t.start()
            self._threads.append(t)
        self.servers[0].serve()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


HTTPS_MODES = ("auto", "on", "off")


def wants_tls(mode: str, host: str) -> bool:
    """auto: HTTPS unless the UI listens on loopback only (a development box: `make run`), where
    nothing crosses a network and browsers treat the address as secure already."""
    if mode not in HTTPS_MODES:
        raise ValueError(f"https mode {mode!r}: use one of {', '.join(HTTPS_MODES)}")
    if mode != "auto":
        return mode == "on"
    return not (host == "localhost" or host.startswith("127.") or host == "::1")


def for_app(app, data_dir, host: str, port: int, *, https: str = "auto", redirect_port: int | None = None,
            threads: int = THREADS) -> "WebServers":
    """The servers for the web UI app: HTTPS (certificate from webui/https/certs.py, live-reloadable
    from the HTTPS page) or plain HTTP, per `https` and the address."""
    tls = None
    if wants_tls(https, host):
        tls = LiveTls(data_dir, host)
        app.extensions["pbx.tls"] = tls
        threading.Thread(target=_follow_certificate, args=(tls,), daemon=True, name="tls-reload").start()
    return WebServers(app, host, port, tls=tls, redirect_port=redirect_port, threads=threads)


def _follow_certificate(tls: LiveTls, every: float = 2.0) -> None:
    """Load the active certificate again whenever its files change (an upload on the HTTPS page,
    which may be served by another worker, or a revert): new connections get it."""
    from webui.https import certs

    def signature():
        crt, key, _ = certs.active_files(tls.data_dir, tls.host)
        return tuple((p, p.stat().st_mtime_ns, p.stat().st_size) for p in (crt, key))
    seen = signature()
    while True:
        time.sleep(every)
        try:
            now = signature()
            if now != seen:
                tls.reload()
                seen = now
                log.info("web UI: certificate %s loaded", now[0][0].name)
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.error("web UI: new certificate not loaded (the previous one stays): %s", exc)
