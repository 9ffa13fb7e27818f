"""`python -m hw.lines.service --data DIR --port TTY`: the line board driver as a systemd service.

READY=1 goes out once the board has answered HELLO and STATUS (the ports and their states are
known), with STATUS= listing them; WATCHDOG=1 comes from this main loop, so a hung loop gets the
service restarted. A board that vanishes later is the driver's business (reconnect with backoff):
the loop keeps pinging and STATUS= says the board is gone. The line gateway (ports to SIP) will
run on top of this board; until then the service keeps the board synced and reports its ports.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from hw.lines.board import LineBoard

logger = logging.getLogger(__name__)

READY_POLL_S = 0.05      # how soon READY follows the board's STATUS reply


def port_states(board: LineBoard) -> str:
    ports = ", ".join(f"{p.number} {p.kind} {p.state}" for p in sorted(board.ports.values(), key=lambda p: p.number))
    return f"board {board.model} fw {board.firmware} on {board.port_url}: {ports or 'no ports'}"


def serve(board: LineBoard, notifier, stop: threading.Event) -> None:
    """Ping systemd from this loop until stop is set; READY once the board is synced."""
    ready = False
    was_connected = False
    while not stop.wait(READY_POLL_S if not ready else notifier.interval):
        if board.connected:
            was_connected = True
            status = port_states(board)
            if not ready:
                ready = True
                logger.info("line service ready: %s", status)
                notifier.ready(status)
                continue
        elif was_connected:
            status = f"line board at {board.port_url} disconnected: reconnecting (attempt {board.attempts})"
        else:
            status = f"waiting for the line board at {board.port_url} (attempt {board.attempts})"
        notifier.watchdog(status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hw.lines.service", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("PBX_DATA", "var"), help="PBX data directory")
    parser.add_argument("--port", required=True, help="serial device of the line board, e.g. /dev/ttyACM0")
    parser.add_argument("--audio", default="line{port}", help="ALSA device per port ({port} = port number)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("PBX_LOG_LEVEL", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from firmware.config import ConfigStore
    from services.notify import Notifier
    notifier = Notifier()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        country = ConfigStore(args.data).settings().country     # ring cadence and caller ID standard
    except Exception as exc:
        logger.error("line service cannot read the config store in %s: %s", args.data, exc)
        return 1
    board = LineBoard(args.port, country=country, audio_device=args.audio).start()
    try:
        serve(board, notifier, stop)
    finally:
        notifier.stopping()
        board.close()
    logger.info("line service stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
