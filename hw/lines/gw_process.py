"""`pbx run`'s lines component: the line service (board driver + gateway) as a child process.

With a board tty it drives that board. Without one - a development machine, `make run` - it
first starts the board simulator with the configured ports (`python -m hw.lines.simulator`) and
points the service at the simulator's pty and ALSA config, so analog phones can be scripted
against a running PBX. On the appliance pbx-lines.service runs `python -m hw.lines.service`
itself and `pbx run` is not used.
"""
from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from services.childproc import die_with_parent  # they die with `pbx run`, even on SIGKILL

logger = logging.getLogger(__name__)

SIMULATOR_START_S = 10.0


def simulator_ports(kinds: dict[int, str]) -> str:
    """The simulator's --ports for ports 1..N (gaps become FXS): {1: fxs, 2: fxs, 3: fxo} -> fxs:2,fxo:1."""
    runs: list[list] = []
    for number in range(1, max(kinds) + 1):
        kind = kinds.get(number, "fxs")
        if runs and runs[-1][0] == kind:
            runs[-1][1] += 1
        else:
            runs.append([kind, 1])
    return ",".join(f"{kind}:{count}" for kind, count in runs)


class LinesComponent:
    def __init__(self, data: Path, edge: tuple[str, int], kinds: dict[int, str], country: str,
                 tty: str | None = None) -> None:
        self.data = Path(data)
        self.edge = edge
        self.kinds = kinds
        self.country = country
        self.tty = tty
        self.simulator: subprocess.Popen | None = None
        self.service: subprocess.Popen | None = None
        self.env = dict(os.environ)

    def start(self) -> "LinesComponent":
        if self.tty is None:
            self._start_simulator()
        self._start_service()
        return self

    def _start_simulator(self) -> None:
        directory = self.data / "linesim"
        cmd = [sys.executable, "-m", "hw.lines.simulator", "--ports", simulator_ports(self.kinds),
               "--dir", str(directory), "--country", self.country]
        self.simulator = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          preexec_fn=die_with_parent())
        # Raw reads: a buffered readline() could swallow both lines while select() waits for more.
        out = b""
        fd = self.simulator.stdout.fileno()
        deadline = time.monotonic() + SIMULATOR_START_S
        while out.count(b"\n") < 2 and time.monotonic() < deadline and self.simulator.poll() is None:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if ready:
                out += os.read(fd, 4096)
        lines = out.decode(errors="replace").splitlines()
        if len(lines) < 2 or not lines[1].startswith("ALSA_CONFIG_PATH="):
            self.stop()
            raise RuntimeError(f"line board simulator did not start (got {lines!r}); run `{' '.join(cmd)}` to see why")
        self.tty = lines[0]
        self.env["ALSA_CONFIG_PATH"] = lines[1].split("=", 1)[1]
        logger.info("no line board given: simulator with ports %s on %s", simulator_ports(self.kinds), self.tty)

    def _start_service(self) -> None:
        cmd = [sys.executable, "-m", "hw.lines.service", "--data", str(self.data), "--port", self.tty,
               "--sip-addr", self.edge[0], "--sip-port", str(self.edge[1])]
        env = {k: v for k, v in self.env.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        self.service = subprocess.Popen(cmd, env=env, preexec_fn=die_with_parent())

    def check(self) -> None:
        """Restart the line service if it exited (the simulator, if ours, keeps its state)."""
        if self.service is not None and self.service.poll() is not None:
            logger.error("line service exited with %s; restarting it", self.service.returncode)
            self._start_service()

    def stop(self) -> None:
        for proc in (self.service, self.simulator):
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.simulator is not None and self.simulator.stdout is not None:
            self.simulator.stdout.close()
        self.service = self.simulator = None
