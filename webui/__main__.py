"""`python -m webui --data DIR --host ADDR --port N`: serve the web UI through waitress.

`pbx run` starts this as a child process. While no admin password exists, the setup code is
printed as one line on stderr (the wizard's first step asks for it).
"""
from __future__ import annotations

import argparse
import logging
import sys
import threading

from pathlib import Path

import waitress

from webui import create_app
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
    parser.add_argument("--threads", type=int, default=8,
                        help="worker threads; each open dashboard holds one (default 8)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(args.data)
    threading.Thread(target=retention_job, args=(args.data, threading.Event()), daemon=True,
                     name="recording-retention").start()
    code = setup_code.read(args.data)
    shown = "localhost" if args.host in ("0.0.0.0", "::", "") else args.host
    if ":" in shown:
        shown = f"[{shown}]"
    if code:
        print(f"setup code: {code} (open http://{shown}:{args.port}/)", file=sys.stderr, flush=True)
    # send_bytes=1: hand every chunk to the socket at once, or waitress would hold dashboard
    # events until 18 kB had piled up. channel_timeout above the SSE keepalive interval (15 s).
    waitress.serve(app, host=args.host, port=args.port, threads=args.threads, send_bytes=1,
                   channel_timeout=60, ident="pbx", clear_untrusted_proxy_headers=True,
                   _quiet=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
