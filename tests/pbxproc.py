"""Start the real PBX (`pbx run`: Kamailio edge + call service) on free loopback ports for a test."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port(kind=socket.SOCK_DGRAM, both=True) -> int:
    """A port free for UDP and TCP on 127.0.0.1 (SIP listens on both)."""
    for _ in range(200):
        port = random.randint(20000, 40000)
        socks = []
        try:
            for k in ((socket.SOCK_DGRAM, socket.SOCK_STREAM) if both else (kind,)):
                s = socket.socket(socket.AF_INET, k)
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port found on 127.0.0.1")


def free_rtp_range(size: int = 200) -> tuple[int, int]:
    # 10000-19999: below free_port()'s SIP/web ports (20000-40000) and the kernel's ephemeral ports
    # (ip_local_port_range 32768-60999), so a port the kernel hands to a phone's or SIPp's socket is
    # never one the PBX wants for RTP (the soak logged 18,402 "RTP port ... unusable; trying the
    # next" with 40000-60000)
    for _ in range(100):
        first = random.randrange(10000, 20000 - size, 2)
        probe = [first, first + size // 2, first + size - 2]
        try:
            for p in probe:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.bind(("127.0.0.1", p))
            return first, first + size
        except OSError:
            continue
    raise RuntimeError("no free RTP range on 127.0.0.1")


class PbxProcess:
    """`pbx run` in a child process with its own data directory and ports."""

    def __init__(self, data_dir: Path, extensions=(), settings=None, web=False, trusted=(),
                 rtp_size=200, env=None, addr="127.0.0.1", voicemail=False, args=()):
        """voicemail=False switches the test extensions' mailboxes off (they are on by default on a
        real box): the call specs written before voicemail expect busy / unavailable answers."""
        self.data = Path(data_dir)
        self.data.mkdir(parents=True, exist_ok=True)
        self.addr = addr  # a LanHost's box_addr for attack tests from a LAN host
        self.sip_port = free_port()
        self.web_port = free_port(socket.SOCK_STREAM, both=False)
        self.rtp = free_rtp_range(rtp_size)
        self.web = web
        self.trusted = trusted
        self.env = dict(env or {})
        self.args = list(args)  # more `pbx run` options (e.g. --browser-phone-port)
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data / "pbx.log"
        from firmware.config import ConfigStore
        self.store = ConfigStore(self.data)
        self.secrets: dict[str, str] = {}
        for number in extensions:
            ext = self.store.get_extension(number) or self.store.add_extension(number, f"Ext {number}")
            self.secrets[number] = ext.secret
            if not voicemail:
                self.store.update_record("mailboxes", number, enabled=False)
        if settings:
            self.store.update_settings(**settings)

    @property
    def registrar(self) -> tuple[str, int]:
        return self.addr, self.sip_port

    def uri(self, number: str) -> str:
        return f"sip:{number}@{self.addr}:{self.sip_port}"

    def start(self, timeout: float = 30.0) -> "PbxProcess":
        cmd = [sys.executable, "-m", "services.cli", "run", "--data", str(self.data),
               "--sip-addr", self.addr, "--sip-port", str(self.sip_port), "--web-port", str(self.web_port),
               "--rtp-ports", f"{self.rtp[0]}-{self.rtp[1]}"]
        if not self.web:
            cmd.append("--no-web")
        for t in self.trusted:
            cmd += ["--trusted", t]
        cmd += self.args
        self._log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        from services.control import ControlError, query
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pbx run exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                query(self.data, "ping", timeout=1)
                return self
            except ControlError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"pbx run not ready after {timeout}s:\n{self.log_tail()}")

    def status(self) -> dict:
        from services.control import query
        return query(self.data, "status")

    def cdrs(self, n: int = 50):
        from firmware.cdr import CdrStore
        store = CdrStore(self.data)
        try:
            return store.last(n)
        finally:
            store.close()

    def wait_cdr(self, call_filter, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for rec in self.cdrs():
                if call_filter(rec):
                    return rec
            time.sleep(0.1)
        raise AssertionError(f"no matching CDR within {timeout}s; have: {self.cdrs(5)}")

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                # its children (Kamailio and its workers, web UI, lines) die with it: PDEATHSIG
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None:
            self._log.close()
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
