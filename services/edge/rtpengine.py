"""RtpEngine: the media relay for calls with a browser leg (DTLS-SRTP + ICE <-> plain RTP).

Browsers only speak ICE + DTLS-SRTP with rtcp-mux; the call service speaks plain RTP/AVP G.711.
Kamailio's rtpengine module hands the SDP of calls with a WebSocket leg (and only those) to this
daemon, which terminates ICE and DTLS toward the browser and relays plain RTP to the call service
(docs/decisions/018-browser-phone.md). Userspace only (no kernel module on the box): measured 0.4-0.5 %
of a core per call.

    rtp = RtpEngine(RtpEngineConfig(run_dir, interface="192.0.2.10", ng_port=22222, ports=(20000, 20999)))
    rtp.start(); ...; rtp.stop()
"""
from __future__ import annotations

import collections
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..childproc import die_with_parent
from .config import EdgeError

logger = logging.getLogger(__name__)

_STOP_GRACE = 3.0
_STDERR_KEEP = 30


@dataclass(frozen=True)
class RtpEngineConfig:
    run_dir: Path
    interface: str = "127.0.0.1"            # the address browsers and the call service reach it on
    ng_port: int = 22222                    # control (ng protocol) on 127.0.0.1 UDP
    ports: tuple[int, int] = (20000, 20999)  # its own RTP ports (not the call service's)
    threads: int = 1                        # 2-core box: one worker relays hundreds of calls

    def __post_init__(self) -> None:
        object.__setattr__(self, "run_dir", Path(self.run_dir))
        lo, hi = self.ports
        if not (1024 <= lo < hi <= 65535):
            raise EdgeError(f"browser phone RTP ports {lo}-{hi} are not a range of ports above 1023: "
                            "use e.g. 20000-20999")

    @property
    def pid_path(self) -> Path:
        return self.run_dir / "rtpengine.pid"

    def command(self, binary: str) -> list[str]:
        lo, hi = self.ports
        return [binary, "--config-file=none", "--foreground", "--log-stderr", "--log-level=5",
                "--table=-1", f"--interface={self.interface}", f"--listen-ng=127.0.0.1:{self.ng_port}",
                f"--port-min={lo}", f"--port-max={hi}", f"--num-threads={self.threads}",
                "--timeout=60", "--silent-timeout=3600", "--final-timeout=14400",
                "--delete-delay=5", f"--pidfile={self.pid_path}"]


class RtpEngine:
    def __init__(self, cfg: RtpEngineConfig):
        self.cfg = cfg
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=_STDERR_KEEP)
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running else None

    def start(self, timeout: float = 10.0) -> None:
        """Start rtpengine and return once it answers a ping on its control port."""
        with self._lock:
            if self.running:
                return
            if self._proc is not None:
                logger.error("rtpengine pid %d had exited with code %s", self._proc.pid, self._proc.returncode)
                self._terminate()
            binary = shutil.which("rtpengine") or shutil.which("rtpengine", path="/usr/sbin:/usr/bin")
            if binary is None:
                raise EdgeError("rtpengine is not installed (browser phones need it): "
                                "apt-get install rtpengine-daemon")
            self.cfg.run_dir.mkdir(parents=True, exist_ok=True)
            self._tail.clear()
            began = time.monotonic()
            self._proc = subprocess.Popen(
                self.cfg.command(binary), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, start_new_session=True, preexec_fn=die_with_parent(signal.SIGTERM))
            self._reader = threading.Thread(target=self._forward, args=(self._proc,), name="rtpengine-stderr",
                                            daemon=True)
            self._reader.start()
            try:
                self._wait_ready(began + timeout)
            except BaseException:
                self._terminate()
                raise
            logger.info("rtpengine started: pid %d, media on %s ports %d-%d, control 127.0.0.1:%d, ready in %.0f ms",
                        self._proc.pid, self.cfg.interface, *self.cfg.ports, self.cfg.ng_port,
                        (time.monotonic() - began) * 1000)

    def stop(self) -> None:
        with self._lock:
            if self._proc is None:
                return
            pid = self._proc.pid
            self._terminate()
            logger.info("rtpengine stopped: pid %d", pid)

    def ping(self, timeout: float = 0.5) -> bool:
        """True when the control port answers the ng protocol's ping with pong."""
        cookie = secrets.token_hex(4)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            try:
                s.sendto(f"{cookie} d7:command4:pinge".encode(), ("127.0.0.1", self.cfg.ng_port))
                data = s.recv(4096)
            except OSError:
                return False
        return data.startswith(cookie.encode()) and b"pong" in data

    def _wait_ready(self, deadline: float) -> None:
        while True:
            if self._proc.poll() is not None:
                self._reader.join(2.0)
                raise EdgeError(self._failure(f"rtpengine exited with code {self._proc.returncode}"))
            if time.monotonic() >= deadline:
                raise EdgeError(self._failure(f"rtpengine did not answer on 127.0.0.1:{self.cfg.ng_port} in time"))
            if self.ping(0.1):
                return

    def _failure(self, what: str) -> str:
        text = "\n".join(self._tail)
        if "Address already in use" in text or "Failed to open" in text:
            what += (f": control port {self.cfg.ng_port} or RTP ports {self.cfg.ports[0]}-{self.cfg.ports[1]} "
                     "are in use: stop what uses them or choose other ports")
        return what + "\nlast rtpengine output:\n  " + "\n  ".join(list(self._tail)[-10:])

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(_STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self._reader is not None:
            self._reader.join(2.0)
            self._reader = None
        proc.stderr.close()

    def _forward(self, proc: subprocess.Popen) -> None:
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            self._tail.append(line)
            level = logging.DEBUG
            if "ERR" in line or "CRIT" in line:
                level = logging.ERROR
            elif "WARN" in line:
                level = logging.WARNING
            logger.log(level, "rtpengine: %s", line.strip())
