"""`python -m webui --data DIR --host ADDR --port N [--https auto|on|off] [--redirect-port N]`: serve the web UI.

`pbx run` starts this as a child process, on the listening socket it holds (`--listen-fd`), and
starts it again on the next connection after it stopped idle (`--idle-exit`). While no admin
password exists, the setup code is printed as one line on stderr (the wizard's first step asks for it).
"""
from __future__ import annotations

import argparse
import logging
import sys
import threading

from pathlib import Path

from webui import create_app, server
from webui.wizard import setup_code


RETENTION_EVERY_S = 3600.0   # recordings are kept for days: an hour late is of no consequence


def retention_job(data_dir: str, stop: threading.Event, every: float = RETENTION_EVERY_S) -> None:
    """Delete recordings past Settings.recording_retention_days, now and then every hour, so that
    they go even when nobody opens the Recordings page (which runs the same check)."""
    from firmware.config import ConfigStore
    from webui.recordings.library import delete_expired
    while True:
        try:
            delete_expired(Path(data_dir), ConfigStore(data_dir).settings().recording_retention_days)
        except Exception:   # a bad config file or disk: try again next time, never end the web UI
            logging.getLogger(__name__).exception("recording retention failed")
        if stop.wait(every):
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m webui", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="PBX data directory (config.json, cdr.sqlite)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    parser.add_argument("--threads", type=int, default=server.THREADS,
                        help=f"worker threads; each open dashboard holds one (default {server.THREADS})")
    parser.add_argument("--https", choices=server.HTTPS_MODES, default="auto",
                        help="serve HTTPS (auto: unless listening on loopback only)")
    parser.add_argument("--redirect-port", type=int, default=None,
                        help="also answer plain HTTP on this port with a redirect to HTTPS (e.g. 80)")
    parser.add_argument("--listen-fd", type=int, action="append", default=[], metavar="FD",
                        help="serve on this inherited listening socket instead of binding --port "
                             "(given twice: the second is the redirect port's)")
    parser.add_argument("--idle-exit", type=float, default=0.0, metavar="SECONDS",
                        help="stop after this many seconds without a request (needs --listen-fd: "
                             "the process holding the socket starts the UI again); 0: never")
    args = parser.parse_args(argv)
    if args.idle_exit > 0 and not args.listen_fd:
        parser.error("--idle-exit needs --listen-fd: nothing would start the web UI again")
    try:
        sockets = [server.listening_socket(fd) for fd in args.listen_fd]
    except ValueError as exc:
        parser.error(f"--listen-fd: {exc}")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(args.data)
    threading.Thread(target=retention_job, args=(args.data, threading.Event()), daemon=True,
                     name="recording-retention").start()
    servers = server.for_app(app, args.data, args.host, args.port, https=args.https,
                             redirect_port=args.redirect_port, threads=args.threads, sockets=sockets,
                             idle_exit=args.idle_exit)
    scheme = "https" if "pbx.tls" in app.extensions else "http"
    code = setup_code.read(args.data)
    shown = "localhost" if args.host in ("0.0.0.0", "::", "") else args.host
    if ":" in shown:
        shown = f"[{shown}]"
    if code:
        print(f"setup code: {code} (open {scheme}://{shown}:{servers.port}/)", file=sys.stderr, flush=True)
    try:
        servers.prepare()
    except OSError as exc:
        print(f"web UI not started: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
              file=sys.stderr, flush=True)
        return 1
    logging.getLogger(__name__).info("web UI serving on %s://%s:%d/", scheme, shown, servers.port)
    servers.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
