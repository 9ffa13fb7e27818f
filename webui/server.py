"""The web UI's HTTP(S) server: cheroot (CherryPy's WSGI server), a thread per connection.

    servers = WebServers(app, host, port, tls=context, redirect_port=80)
    servers.start(); ...; servers.stop()

With `tls` (a LiveTls: the context from webui/https/certs.py) the UI is served over HTTPS on `port`,
and `redirect_port` (if given) answers plain HTTP with a redirect to the same path over HTTPS.
Without it the UI is plain HTTP on `port` (a box listening on loopback only: `make run`).

On demand (decision 026): under systemd (pbx-web.socket) or `pbx run`, the listening sockets
belong to the process that starts the UI and are handed over (`inherited_sockets()`, `--listen-fd`);
with `idle_exit` the UI stops after that many seconds without a request, and the holder of the
sockets starts it again when the next connection waits on them. An idle box then carries no web
UI in memory (about 35 MB PSS).

Why cheroot: the UI must speak TLS itself (a box has no proxy in front), and waitress, which
served it before, has no TLS. cheroot does, keeps the SSLContext we hand it (a new certificate
uploaded on the HTTPS page applies to the next connection without a restart), streams
server-sent events without buffering and is kept by the CherryPy project (docs/decisions/).
"""
from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
from urllib.parse import quote

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from webui.scheme import HTTPS_MODES, wants_tls  # noqa: F401  (part of this module's interface)

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


def inherited_sockets() -> list[socket.socket]:
    """The listening sockets systemd handed over (sd_listen_fds(3): LISTEN_PID is this process,
    LISTEN_FDS of them from fd 3 on, in the order of the socket unit's ListenStream= lines). The
    variables are removed, as sd_listen_fds(1) does: cheroot's own prepare() would otherwise take
    fd 3 for every server, and a child process must not believe the sockets are its own."""
    pid = os.environ.pop("LISTEN_PID", "")
    count = os.environ.pop("LISTEN_FDS", "")
    os.environ.pop("LISTEN_FDNAMES", None)
    if not pid.isdigit() or int(pid) != os.getpid() or not count.isdigit():
        return []
    return [listening_socket(fd) for fd in range(3, 3 + int(count))]


def listening_socket(fd: int) -> socket.socket:
    """A handed-over listening TCP socket; ValueError naming the fd if it is not one."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ValueError(f"fd {fd} is not a socket: {exc.strerror or exc}") from None
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise ValueError(f"fd {fd} is not a listening TCP socket")
    os.set_inheritable(fd, False)
    return sock


class _Server(wsgi.Server):
    """cheroot's server, optionally on a socket that is already bound and listening. Such a socket
    stays open in the process that handed it over: that process starts the UI again when the next
    connection waits on it, so stopping must not leave a connection queued on it (cheroot's stop()
    connects to its own socket to wake accept(); the selector loop does not need that)."""

    def __init__(self, bind_addr, app, *, listening: socket.socket | None = None, **kwargs):
        if listening is not None:
            bind_addr = listening.getsockname()[:2]
        super().__init__(bind_addr, app, **kwargs)
        self.listening = listening

    def bind(self, family, type, proto=0):
        if self.listening is None:
            return super().bind(family, type, proto)
        sock = self.socket = self.listening
        if self.nodelay:      # what prepare_socket() sets on a socket of its own
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.bind_addr = sock.getsockname()[:2]
        return sock

    def stop(self):
        if self.listening is None or not self.ready:
            return super().stop()
        sock, self.socket = self.socket, None
        super().stop()
        if sock is not None:
            sock.close()


class IdleExit:
    """Stops the servers after `seconds` without a request (none in progress: an open dashboard's
    event stream is one). /healthz does not count: it is the service's own watchdog probe."""

    def __init__(self, seconds: float, clock=time.monotonic):
        self.seconds = seconds
        self.clock = clock
        self.busy = 0
        self.last = clock()
        self._lock = threading.Lock()

    def _done(self) -> None:
        with self._lock:
            self.busy -= 1
            self.last = self.clock()

    def wrap(self, app):
        def counted(environ, start_response):
            if environ.get("PATH_INFO") == "/healthz":
                return app(environ, start_response)
            with self._lock:
                self.busy += 1
            try:
                result = app(environ, start_response)
            except BaseException:
                self._done()
                raise
            return _Counted(result, self._done)
        return counted

    def idle(self) -> bool:
        with self._lock:
            return self.busy == 0 and self.clock() - self.last >= self.seconds

    def watch(self, servers: "WebServers", every: float = 1.0) -> threading.Thread:
        def run():
            while not self.idle():
                time.sleep(every)
            log.info("web UI: no request for %d s: stopping until the next connection", self.seconds)
            servers.stop()
        t = threading.Thread(target=run, name="web-idle-exit", daemon=True)
        t.start()
        return t


class _Counted:
    """A WSGI response that reports when the server is done with it (close(), PEP 3333)."""

    def __init__(self, result, done):
        self.result, self.done = result, done

    def __iter__(self):
        return iter(self.result)

    def close(self):
        try:
            if hasattr(self.result, "close"):
                self.result.close()
        finally:
            self.done()


class WebServers:
    def __init__(self, app, host: str, port: int, *, tls: LiveTls | None = None,
                 redirect_port: int | None = None, threads: int = THREADS,
                 sockets: list[socket.socket] | None = None, idle_exit: float = 0.0):
        """`sockets`: already listening (the UI's, then the redirect's), instead of binding `port`
        and `redirect_port`. `idle_exit` > 0: stop after so many seconds without a request."""
        sockets = list(sockets or [])
        self.idle = IdleExit(idle_exit) if idle_exit > 0 else None
        if self.idle is not None:
            app = self.idle.wrap(app)
        if sockets:
            port = sockets[0].getsockname()[1]
        self.port = port
        self.servers: list[wsgi.Server] = []
        main = _Server((host, port), app, listening=sockets[0] if sockets else None, numthreads=threads,
                       max=MAX_THREADS, timeout=TIMEOUT_S, server_name="pbx")
        if tls is not None:
            main.ssl_adapter = _ContextAdapter(tls)
        self.servers.append(main)
        redirect = sockets[1] if len(sockets) > 1 else None
        if tls is not None and (redirect is not None or (redirect_port and not sockets)):
            self.servers.append(_Server((host, redirect_port), _redirect_app(port, app), listening=redirect,
                                        numthreads=4, timeout=10, server_name="pbx"))
        self._threads: list[threading.Thread] = []

    def prepare(self) -> None:
        """Bind every socket (OSError names the port in use) before anything is served."""
        for server in self.servers:
            server.prepare()

    def serve_forever(self) -> None:
        """Serve until stop() (or until idle: `idle_exit`); the redirect server runs on its own thread."""
        if self.idle is not None:
            self.idle.watch(self)
        for server in self.servers[1:]:
            t = threading.Thread(target=server.serve, name="web-redirect", daemon=True)
            t.start()
            self._threads.append(t)
        self.servers[0].serve()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def for_app(app, data_dir, host: str, port: int, *, https: str = "auto", redirect_port: int | None = None,
            threads: int = THREADS, sockets: list[socket.socket] | None = None,
            idle_exit: float = 0.0) -> "WebServers":
    """The servers for the web UI app: HTTPS (certificate from webui/https/certs.py, live-reloadable
    from the HTTPS page) or plain HTTP, per `https` and the address; on handed-over `sockets` and
    stopping when idle as WebServers says."""
    tls = None
    if wants_tls(https, host):
        tls = LiveTls(data_dir, host)
        app.extensions["pbx.tls"] = tls
        threading.Thread(target=_follow_certificate, args=(tls,), daemon=True, name="tls-reload").start()
    return WebServers(app, host, port, tls=tls, redirect_port=redirect_port, threads=threads, sockets=sockets,
                      idle_exit=idle_exit)


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
