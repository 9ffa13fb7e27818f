"""An office LAN in network namespaces for failover tests: two PBX boxes, a phone host, one switch.

    with OfficeLan() as lan:            # namespaces <tag>sw (the switch: a bridge), <tag>a, <tag>b, <tag>p
        lan.box_a.addr, lan.box_b.addr  # each box's own address; lan.vip is free for the pair
        lan.box_a.run([...])            # a command inside box A
        lan.phone_socket()              # a UDP socket on the phone host
        lan.power_cut(lan.box_a)        # every process of A killed at once and its link down

Addresses come from 198.18.0.0/15 (RFC 2544, never routed), one /24 per LAN; nothing leaves the
machine. Each box has its own port space, so the PBXes use the standard ports (5060).
"""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import threading
import time

from tests.lanhost import CLONE_NEWNET, _ip, _libc, _used_addresses

import ctypes


class Host:
    def __init__(self, lan: "OfficeLan", name: str, addr: str):
        self.lan, self.name, self.addr = lan, name, addr
        self.ns = f"{lan.tag}{name}"
        self.if_out = f"{lan.tag}{name}s"        # the switch side of its cable

    def command(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def run(self, argv: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.command(argv), timeout=timeout, **kw)

    def popen(self, argv: list[str], **kw) -> subprocess.Popen:
        return subprocess.Popen(self.command(argv), start_new_session=True, **kw)

    def addresses(self) -> set[str]:
        out = _ip("-n", self.ns, "-o", "-4", "addr", "show", "dev", "eth0", check=False).stdout
        return {part.split("/")[0] for line in out.splitlines() for part in line.split() if "/" in part
                and part[0].isdigit()}

    def socket(self, family=socket.AF_INET, type=socket.SOCK_DGRAM) -> socket.socket:
        made: list = []

        def enter_and_make():
            try:
                fd = os.open(f"/run/netns/{self.ns}", os.O_RDONLY)
                try:
                    if _libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), f"setns into {self.ns}")
                finally:
                    os.close(fd)
                made.append(socket.socket(family, type))
            except Exception as exc:
                made.append(exc)
        t = threading.Thread(target=enter_and_make)
        t.start()
        t.join()
        if isinstance(made[0], Exception):
            raise made[0]
        return made[0]

    def pids(self) -> list[int]:
        out = _ip("netns", "pids", self.ns, check=False).stdout
        return [int(p) for p in out.split()]


class OfficeLan:
    def __init__(self):
        self.tag = f"ha{os.getpid() % 1000:03d}{random.randrange(100):02d}"
        used = _used_addresses()
        for _ in range(100):
            second, third = random.choice((18, 19)), random.randrange(256)
            net = f"198.{second}.{third}"
            if f" {net}." not in used:
                break
        self.net = net
        self.switch = f"{self.tag}sw"
        self.box_a = Host(self, "a", f"{net}.2")
        self.box_b = Host(self, "b", f"{net}.3")
        self.phone = Host(self, "p", f"{net}.20")
        self.vip = f"{net}.10"
        self.started: list[str] = []

    @property
    def hosts(self) -> list[Host]:
        return [self.box_a, self.box_b, self.phone]

    def start(self) -> "OfficeLan":
        try:
            _ip("netns", "add", self.switch)
            self.started.append(self.switch)
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            # an office switch forwards frames and runs no IP filter: where the kernel has
            # br_netfilter, each namespace starts with bridged IPv4 frames sent through its (empty)
            # IP hooks, a cost per frame the kernel media bench would count against the PBX
            for proto in ("iptables", "ip6tables", "arptables"):
                path = f"/proc/sys/net/bridge/bridge-nf-call-{proto}"
                subprocess.run(["ip", "netns", "exec", self.switch, "sh", "-c", f"[ ! -e {path} ] || echo 0 > {path}"],
                               check=True, capture_output=True, text=True)
            _ip("-n", self.switch, "link", "set", "br0", "up")
            for host in self.hosts:
                _ip("netns", "add", host.ns)
                self.started.append(host.ns)
                _ip("link", "add", "eth0", "netns", host.ns, "type", "veth", "peer", "name", host.if_out,
                    "netns", self.switch)
                _ip("-n", self.switch, "link", "set", host.if_out, "master", "br0")
                _ip("-n", self.switch, "link", "set", host.if_out, "up")
                _ip("-n", host.ns, "addr", "add", f"{host.addr}/24", "dev", "eth0")
                _ip("-n", host.ns, "link", "set", "eth0", "up")
                _ip("-n", host.ns, "link", "set", "lo", "up")
        except subprocess.CalledProcessError as exc:
            self.stop()
            raise RuntimeError(f"could not build the test LAN: {exc.stderr.strip()} (needs root and iproute2)") from None
        return self

    def power_cut(self, host: Host) -> float:
        """Every process of the box killed at once and its cable pulled: what a power cut looks
        like from the LAN. Returns the monotonic time of the cut."""
        _ip("-n", self.switch, "link", "set", host.if_out, "down")
        at = time.monotonic()
        for pid in host.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return at

    def stop(self) -> None:
        for host in self.hosts:
            for pid in host.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for ns in reversed(self.started):
            _ip("netns", "del", ns, check=False)
        self.started.clear()

    def __enter__(self) -> "OfficeLan":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class PbxPair:
    """Two real PBXes (`pbx run` with `pbx ha set`) on an OfficeLan: A primary, B backup.

        with OfficeLan() as lan, PbxPair(lan, tmp_path, seed=lambda store: ...) as pair:
            pair.data["a"], pair.wait_active("a")
    `seed(store)` fills each box's configuration before it starts (the same on both)."""

    def __init__(self, lan: OfficeLan, base, seed=None, pbx: str | None = None):
        from pathlib import Path
        self.lan, self.base, self.seed = lan, Path(base), seed
        root = Path(__file__).resolve().parents[1]
        self.root = root
        self.pbx = pbx or str(root / ".venv" / "bin" / "pbx")
        self.data = {"a": self.base / "a", "b": self.base / "b"}
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self) -> "PbxPair":
        from firmware.config import ConfigStore
        from firmware.ha import HaSettings, new_secret
        from services.ha import settings as ha_settings
        lan, secret = self.lan, new_secret()
        for box, role, peer in ((lan.box_a, "primary", lan.box_b), (lan.box_b, "backup", lan.box_a)):
            data = self.data[box.name]
            store = ConfigStore(data)
            if self.seed is not None:
                self.seed(store)
            ha_settings.save(data, HaSettings(True, role, box.addr, peer.addr, f"{lan.vip}/24", "eth0",
                                              secret=secret))
            self.start_box(box.name)
        return self

    def start_box(self, name: str) -> None:
        box = {"a": self.lan.box_a, "b": self.lan.box_b}[name]
        log = open(self.base / f"{name}.log", "ab")
        self.procs[name] = box.popen([self.pbx, "run", "--data", str(self.data[name]), "--sip-addr", self.lan.vip,
                                      "--sip-port", "5060", "--web-port", "8443", "--rtp-ports", "20000-20200"],
                                     stdout=log, stderr=subprocess.STDOUT, cwd=self.root)

    def state(self, name: str) -> str | None:
        from services.ha import settings as ha_settings
        return ha_settings.state(self.data[name]).get("state")

    def wait_ready(self, timeout: float = 90) -> None:
        """A holds the VIP and B is BACKUP."""
        wait_for("the primary to hold the VIP", lambda: self.lan.vip in self.lan.box_a.addresses(), timeout)
        wait_for("the primary to know it is MASTER", lambda: self.state("a") == "MASTER", timeout)
        wait_for("the backup to be BACKUP", lambda: self.state("b") == "BACKUP", timeout)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()

    def __enter__(self) -> "PbxPair":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_for(what: str, check, timeout: float, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class RtpStream:
    """A phone's RTP: sends a PCMU packet every 20 ms to `to`, notes when packets arrive."""

    def __init__(self, sock, to):
        self.sock, self.to = sock, to
        self.sock.settimeout(0.05)
        self.arrivals: list[float] = []
        self.running = True
        self.threads = [threading.Thread(target=self._send, daemon=True),
                        threading.Thread(target=self._receive, daemon=True)]
        for t in self.threads:
            t.start()

    def _send(self):
        from tests.phones.raw import rtp_packet as _rtp_packet
        seq, ts, next_at = 0, 0, time.monotonic()
        while self.running:
            try:
                self.sock.sendto(_rtp_packet(b"\xff" * 160, seq, pt=0, ts=ts), self.to)
            except OSError:
                pass
            seq, ts = (seq + 1) & 0xFFFF, ts + 160
            next_at += 0.02
            time.sleep(max(0.0, next_at - time.monotonic()))

    def _receive(self):
        while self.running:
            try:
                data = self.sock.recv(2048)
            except OSError:
                continue
            if len(data) > 12 and data[0] >> 6 == 2:
                self.arrivals.append(time.monotonic())

    def stop(self):
        self.running = False
        for t in self.threads:
            t.join(2)

    def largest_gap(self, since: float, until: float) -> float:
        times = [t for t in self.arrivals if since <= t <= until]
        if len(times) < 2:
            return until - since
        return max(b - a for a, b in zip([since] + times, times + [until]))
