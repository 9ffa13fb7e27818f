"""A host on the office LAN for attack tests: a network namespace joined to this machine by a veth pair.

The PBX under test listens on the box side of the veth (`box_addr`); the test's attacker sits in the
namespace (`host_addr`), so its packets arrive from a LAN address, not from 127.0.0.1, and the box
cannot tell it apart from a phone on the office network. Addresses come from 198.18.0.0/15 (RFC 2544,
set aside for benchmarking: never routed), one /30 per LAN host; nothing leaves this machine.

    with LanHost() as lan:
        pbx = PbxProcess(tmp, addr=lan.box_addr).start()
        sock = lan.socket(socket.AF_INET, socket.SOCK_DGRAM)   # a socket inside the namespace
        lan.run(["svwar", ...])                                 # a program inside the namespace

`socket()` creates the socket in a short-lived thread that has entered the namespace (setns is per
thread), so tests can attack from the namespace without a helper process.
"""

from __future__ import annotations

import ctypes
import os
import random
import secrets
import socket
import subprocess
import threading
import time

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _used_addresses() -> str:
    return _ip("-o", "addr", check=False).stdout


class LanHost:
    """One LAN host (a namespace) and the box's address facing it."""

    def __init__(self):
        self._name(secrets.token_hex(4))
        used = _used_addresses()
        for _ in range(100):
            third, fourth = random.randrange(256), random.randrange(0, 256, 4)
            second = random.choice((18, 19))
            box = f"198.{second}.{third}.{fourth + 1}"
            if f" {box}/" not in used:
                break
        self.box_addr = box
        self.host_addr = f"198.{second}.{third}.{fourth + 2}"
        self.started = False

    def _name(self, tag: str) -> None:
        self.ns = f"pbxlan{tag}"
        self.box_if, self.host_if = f"pbxb{tag}", f"pbxh{tag}"

    def start(self) -> "LanHost":
        # A random name, never one still in use (a namespace another test leaked, or the same name drawn
        # twice); iproute2's first `netns add` on a machine also races with a concurrent one while it
        # mounts /run/netns, so a failed add is tried again under a new name a few times.
        for attempt in range(5):
            added = _ip("netns", "add", self.ns, check=False)
            if added.returncode == 0:
                break
            if attempt == 4:
                raise RuntimeError(f"could not make LAN host {self.ns}: {added.stderr.strip()} "
                                   "(network namespaces need root and iproute2)")
            time.sleep(0.05 * (attempt + 1))
            self._name(secrets.token_hex(4))
        self.started = True
        try:
            _ip("link", "add", self.box_if, "type", "veth", "peer", "name", self.host_if)
            _ip("link", "set", self.host_if, "netns", self.ns)
            _ip("addr", "add", f"{self.box_addr}/30", "dev", self.box_if)
            _ip("link", "set", self.box_if, "up")
            self.exec_ip("addr", "add", f"{self.host_addr}/30", "dev", self.host_if)
            self.exec_ip("link", "set", self.host_if, "up")
            self.exec_ip("link", "set", "lo", "up")
        except subprocess.CalledProcessError as exc:
            self.stop()
            raise RuntimeError(f"could not make LAN host {self.ns}: {exc.stderr.strip()} "
                               "(network namespaces need root and iproute2)") from None
        return self

    def exec_ip(self, *args: str) -> None:
        _ip("-n", self.ns, *args)

    def command(self, argv: list[str]) -> list[str]:
        """argv run inside the namespace (for subprocess.Popen / run)."""
        return ["ip", "netns", "exec", self.ns, *argv]

    def run(self, argv: list[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.command(argv), timeout=timeout, **kw)

    def socket(self, family=socket.AF_INET, type=socket.SOCK_DGRAM, proto=0) -> socket.socket:
        """A socket that lives in the namespace (its traffic comes from host_addr)."""
        made: list = []

        def enter_and_make():
            try:
                fd = os.open(f"/run/netns/{self.ns}", os.O_RDONLY)
                try:
                    if _libc.setns(fd, CLONE_NEWNET) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, f"setns into {self.ns}: {os.strerror(err)}")
                finally:
                    os.close(fd)
                made.append(socket.socket(family, type, proto))
            except Exception as exc:  # handed to the caller's thread below
                made.append(exc)

        t = threading.Thread(target=enter_and_make, name=f"setns-{self.ns}")
        t.start()
        t.join()
        if isinstance(made[0], Exception):
            raise made[0]
        return made[0]

    def stop(self) -> None:
        if self.started:
            _ip("link", "del", self.box_if, check=False)  # also removes the peer in the namespace
            _ip("netns", "del", self.ns, check=False)
            self.started = False

    def __enter__(self) -> "LanHost":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
