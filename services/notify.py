"""systemd notification (sd_notify): READY=1 once a service really serves, WATCHDOG=1 from its loop.

Outside systemd (no NOTIFY_SOCKET) every call is a no-op. The watchdog ping is sent from the
service's own main loop, so a hung loop stops pinging and systemd restarts the service.
"""

from __future__ import annotations

import os

import sdnotify


class Notifier:
    def __init__(self):
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._n = sdnotify.SystemdNotifier() if self.enabled else None
        usec = os.environ.get("WATCHDOG_USEC", "")
        # ping at half the watchdog period (sd_watchdog_enabled(3) advice); 1 s when unset
        self.interval = max(0.05, int(usec) / 2e6) if usec.isdigit() and int(usec) > 0 else 1.0

    def send(self, text: str) -> None:
        if self._n is not None:
            self._n.notify(text)

    def ready(self, status: str) -> None:
        self.send(f"READY=1\nSTATUS={status}")

    def watchdog(self, status: str | None = None) -> None:
        self.send("WATCHDOG=1" + (f"\nSTATUS={status}" if status else ""))

    def stopping(self) -> None:
        self.send("STOPPING=1")
