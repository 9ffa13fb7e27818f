"""`python -m hw.panel.service --data DIR`: the front panel as a systemd service (Type=notify, watchdog).

run_panel owns the loop and polls the config store once per poll_interval, so that poll is the
loop's heartbeat: the store handed to run_panel sends READY=1 on its first poll (by then the
button is wired and the lamp shows the mode) and WATCHDOG=1 on every later one. A hung loop stops
polling, the pings stop, and systemd restarts the service. A broken config file does not stop the
pings: run_panel shows it on the fault LED and retries, which is the wanted behaviour.

Until the admin password is set, the day/night lamp blinks the setup code (DATA/webui/setup-code)
and the last number of --address (PBX_SIP_ADDR from /etc/pbx/pbx.env): firmware/blinkcode.py.

Pins come from --pins "button=17,fault=21" (missing names keep PanelPins' defaults). Tests and
machines without GPIO run it with GPIOZERO_PIN_FACTORY=mock.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time

from hw.panel.panel import PanelPins, run_panel, setup_code_path

logger = logging.getLogger(__name__)


class HeartbeatStore:
    """The config store as run_panel sees it: each changed() poll also tells systemd the loop lives."""

    def __init__(self, store, notifier, pins: PanelPins) -> None:
        self._store = store
        self._notifier = notifier
        self._pins = pins
        self._ready = False
        self._last_ping = 0.0
        self._status = ""

    def changed(self) -> bool:
        try:
            changed = self._store.changed()
        except Exception:
            self._beat("config store unreadable: fault LED blinking, retrying")
            raise
        try:
            status = f"{self._store.settings().mode} mode, DAY/NIGHT button on GPIO{self._pins.button}"
        except Exception:
            status = "config store unreadable: fault LED blinking, retrying"
        self._beat(status)
        return changed

    def _beat(self, status: str) -> None:
        if self._ready:
            # the loop polls faster than the watchdog needs; pinging every half interval keeps the
            # worst gap (that plus one poll) under the watchdog period
            now = time.monotonic()
            if now - self._last_ping >= self._notifier.interval / 2 or status != self._status:
                self._last_ping, self._status = now, status
                self._notifier.watchdog(status)
            return
        self._last_ping, self._status = time.monotonic(), status
        self._ready = True
        logger.info("panel service ready: %s", status)
        self._notifier.ready(status)

    def __getattr__(self, name):
        return getattr(self._store, name)


def parse_pins(text: str) -> PanelPins:
    """PanelPins from "name=N,name=N" ("" keeps every default); ValueError names the bad part."""
    config: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise ValueError(f"panel pin {item!r}: write name=GPIO number, e.g. button=17")
        config[name.strip()] = int(value)
    return PanelPins.from_config(config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hw.panel.service", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("PBX_DATA", "var"), help="PBX data directory")
    parser.add_argument("--pins", default="", help='BCM pins, e.g. "button=17,fault=21" (default: PanelPins)')
    parser.add_argument("--address", default=os.environ.get("PBX_SIP_ADDR", ""),
                        help="the box's IPv4 address, blinked after the setup code (default: $PBX_SIP_ADDR)")
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between config store polls")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("PBX_LOG_LEVEL", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        pins = parse_pins(args.pins)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from firmware.config import ConfigStore
    from services.notify import Notifier
    notifier = Notifier()
    # the loop must poll at least twice per watchdog period, whatever --poll says
    poll = min(args.poll, notifier.interval)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        store = ConfigStore(args.data)
        run_panel(HeartbeatStore(store, notifier, pins), pins, stop, poll_interval=poll,
                  setup_code_file=setup_code_path(args.data), address=args.address)
    except Exception as exc:       # no GPIO, pins taken, unreadable data dir: one clear line, exit 1
        logger.error("panel service cannot run: %s", exc)
        return 1
    finally:
        notifier.stopping()
    logger.info("panel service stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
