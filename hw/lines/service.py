"""`python -m hw.lines.service --data DIR --port TTY`: the line board driver as a systemd service.

READY=1 goes out once the board has answered HELLO and STATUS (the ports and their states are
known), with STATUS= listing them; WATCHDOG=1 comes from this main loop, so a hung loop gets the
service restarted. A board that vanishes later is the driver's business (reconnect with backoff):
the loop keeps pinging and STATUS= says the board is gone.

The line gateway (hw/lines/gateway.py, decision 007) runs on top of the board in the same process,
on its own asyncio loop thread: each configured line port registers at the edge (--sip-addr,
--sip-port; PBX_SIP_ADDR / PBX_SIP_PORT) as its extension. Ports added or changed in the config
store come into service without a restart. STATUS= appends each port's registration and call
state; the watchdog ping waits for the gateway's loop to answer, so a hung gateway gets the
service restarted too.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from hw.lines.board import LineBoard

logger = logging.getLogger(__name__)

READY_POLL_S = 0.05      # how soon READY follows the board's STATUS reply
GATEWAY_ANSWER_S = 2.0   # the gateway loop must report its ports within this, or no watchdog ping
STOP_LIMIT_S = 5.0       # a stop (SIGTERM) that takes longer than this ends the process at once


def port_states(board: LineBoard) -> str:
    ports = ", ".join(f"{p.number} {p.kind} {p.state}" for p in sorted(board.ports.values(), key=lambda p: p.number))
    return f"board {board.model} fw {board.firmware} on {board.port_url}: {ports or 'no ports'}"


STATE_FILE = "run/lines.json"   # what the running line service last saw, for `pbx status` and the web UI


def publish_states(data_dir, ports: list[dict]) -> None:
    """Write the ports' states where the call service's status (and so the web UI) reads them.

    The line service is a process of its own (a unit of its own under systemd); a small file in
    the data directory, replaced atomically, is the one channel both setups share."""
    path = Path(data_dir) / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"time": time.time(), "ports": ports}))
    os.replace(tmp, path)


def read_states(data_dir, max_age: float = 15.0) -> list[dict] | None:
    """The ports' states if the line service published them in the last max_age seconds."""
    try:
        doc = json.loads((Path(data_dir) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or time.time() - float(doc.get("time", 0)) > max_age:
        return None
    return [p for p in doc.get("ports", []) if isinstance(p, dict)]


def line_states(ports: list[dict]) -> str:
    """The gateway's ports for STATUS=, e.g. "lines: 1 fxs 1050 idle, 2 fxo 1053 not registered"."""
    if not ports:
        return ""
    return "lines: " + ", ".join(f"{p['port']} {p['kind']} {p['extension']} "
                                 f"{p['state'] if p['registered'] else 'not registered'}" for p in ports)


def serve(board: LineBoard, notifier, stop: threading.Event, lines: Callable[[], str] | None = None) -> None:
    """Ping systemd from this loop until stop is set; READY once the board is synced.
    `lines` returns the gateway's part of STATUS= (raising if the gateway does not answer)."""
    ready = False
    was_connected = False
    while not stop.wait(READY_POLL_S if not ready else notifier.interval):
        if board.connected:
            was_connected = True
            status = port_states(board)
            if lines is not None:
                try:
                    extra = lines()
                except Exception as exc:
                    # No ping: a gateway that stopped answering gets the service restarted.
                    logger.error("line gateway did not report its ports: %s", exc or type(exc).__name__)
                    continue
                status += f"; {extra}" if extra else ""
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
    parser.add_argument("--sip-addr", default=os.environ.get("PBX_SIP_ADDR", "127.0.0.1"),
                        help="address of the SIP edge; the gateway's SIP and RTP bind to it too")
    parser.add_argument("--sip-port", type=int, default=int(os.environ.get("PBX_SIP_PORT", "5060")),
                        help="port of the SIP edge")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("PBX_LOG_LEVEL", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from firmware.config import ConfigStore
    from services.notify import Notifier
    notifier = Notifier()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping(stop))
    try:
        store = ConfigStore(args.data)
        country = store.settings().country     # ring cadence and caller ID standard
    except Exception as exc:
        logger.error("line service cannot read the config store in %s: %s", args.data, exc)
        return 1
    board = LineBoard(args.port, country=country, audio_device=args.audio).start()
    runner = start_gateway(store, board, (args.sip_addr, args.sip_port))
    try:
        def lines() -> str:
            ports = runner.status(timeout=GATEWAY_ANSWER_S)
            try:
                publish_states(args.data, ports)
            except OSError as exc:
                logger.warning("line states not published in %s: %s", args.data, exc)
            return line_states(ports)

        serve(board, notifier, stop, None if runner is None else lines)
    finally:
        notifier.stopping()
        if runner is not None:
            runner.stop()
        board.close()
    logger.info("line service stopped")
    return 0


def stopping(stop: threading.Event, limit: float = STOP_LIMIT_S) -> None:
    """Begin a clean stop, bounded: unregistering from an edge that is gone, a hung gateway loop or
    a serial port that does not close must not keep the service (and its ports) alive past `limit`
    seconds - `pbx run` killed with SIGKILL expects its children gone within seconds."""
    if stop.is_set():
        return
    stop.set()

    def too_slow() -> None:
        logger.error("line service did not stop within %.0f s; exiting now", limit)
        os._exit(1)

    timer = threading.Timer(limit, too_slow)
    timer.daemon = True
    timer.start()


def start_gateway(store, board: LineBoard, edge: tuple[str, int]):
    """The gateway on its own loop thread, or None (logged) when it cannot run here: the board
    service goes on, so the ports' hook states stay visible while the cause is fixed."""
    from hw.lines.gateway import GatewayRunner, LineGateway
    try:
        return GatewayRunner(LineGateway(store, board, edge=edge, sip_addr=edge[0])).start()
    except Exception as exc:
        logger.error("line gateway cannot start (SIP edge %s:%d): %s. The unit needs AF_INET and the "
                     "network (no PrivateNetwork) for SIP and RTP", edge[0], edge[1], exc)
        return None


if __name__ == "__main__":
    sys.exit(main())
