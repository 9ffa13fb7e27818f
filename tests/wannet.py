"""Two sites joined by an emulated WAN, in network namespaces, for the remote-standby tests.

    with WanSites(delay_ms=40, loss_pct=1) as net:
        net.box_a, net.phone          # the office LAN (a switch), as tests/hanet.py's OfficeLan
        net.router                    # the office's router: .1 on the LAN, the WAN, the carrier's link
        net.remote                    # the remote datacenter's box, behind the WAN
        net.carrier                   # the SIP carrier, on its own link to the router
        net.power_cut(net.box_a)      # every process of A killed, its cable pulled

The WAN link (router <-> remote box) delays each direction by delay_ms and loses loss_pct % of
the packets (a round trip of 2 x delay): `tc qdisc ... netem` on both ends where the kernel has
netem; this machine's kernel has not (CONFIG_NET_SCH_NETEM is not set), so there the link runs
through a "wire" namespace where a small process (`python -m tests.wannet wire ...`) copies every
Ethernet frame from one side to the other with AF_PACKET sockets, dropping loss_pct % at random
and holding the rest delay_ms (what netem does, in user space: about 0.1 ms of its own added).
Addresses: three /24s from 198.18.0.0/15 (RFC 2544, never routed); nothing leaves the machine.
"""
from __future__ import annotations

import ctypes
import fcntl
import json
import random
import re
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from firmware.config import ConfigStore
from firmware.ha import HaSettings, new_secret
from services.ha import settings as ha_settings
from tests.hanet import Host, OfficeLan, RtpStream
from tests.phones.raw import RawPhone, sdp_body
from tests.lanhost import _ip, _used_addresses

ROOT = Path(__file__).resolve().parents[1]
PBX = str(ROOT / ".venv" / "bin" / "pbx")
DID = "442071234567"
SECRET = "Ann-remote-1000-pw"


class _LinkedHost(Host):
    """A host whose cable ends in the router's namespace (not on the LAN switch)."""

    def __init__(self, lan, name: str, addr: str, router_if: str, router_addr: str):
        super().__init__(lan, name, addr)
        self.router_if, self.router_addr = router_if, router_addr


class WanSites(OfficeLan):
    def __init__(self, delay_ms: int = 40, loss_pct: float = 1.0, pair: bool = False):
        super().__init__()
        self.delay_ms, self.loss_pct, self.pair = delay_ms, loss_pct, pair     # pair: box B on the LAN too
        used = _used_addresses()
        nets = []
        for _ in range(200):
            net = f"198.{random.choice((18, 19))}.{random.randrange(256)}"
            if f" {net}." not in used and net != self.net and net not in nets:
                nets.append(net)
            if len(nets) == 2:
                break
        self.wan_net, self.carrier_net = nets
        self.router = Host(self, "r", f"{self.net}.1")
        self.remote = _LinkedHost(self, "w", f"{self.wan_net}.2", "wan0", f"{self.wan_net}.1")
        self.carrier = _LinkedHost(self, "c", f"{self.carrier_net}.2", "car0", f"{self.carrier_net}.1")
        self.wire = Host(self, "x", "")        # the WAN emulator's namespace (when there is no netem)
        self.emulated = ""                       # "netem" or "wire": how the WAN's delay and loss are made

    @property
    def hosts(self) -> list[Host]:
        # box B of the OfficeLan is made only for a pair (the standby here is the remote one)
        return [self.box_a, *([self.box_b] if self.pair else []), self.phone, self.router, self.remote,
                self.carrier, self.wire]

    @property
    def lan_hosts(self) -> list[Host]:
        return [self.box_a, *([self.box_b] if self.pair else []), self.phone]

    def start(self) -> "WanSites":
        try:
            _ip("netns", "add", self.switch)
            self.started.append(self.switch)
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
            for host in (*self.lan_hosts, self.router):
                _ip("netns", "add", host.ns)
                self.started.append(host.ns)
                _ip("link", "add", "eth0", "netns", host.ns, "type", "veth", "peer", "name", host.if_out,
                    "netns", self.switch)
                _ip("-n", self.switch, "link", "set", host.if_out, "master", "br0")
                _ip("-n", self.switch, "link", "set", host.if_out, "up")
                _ip("-n", host.ns, "addr", "add", f"{host.addr}/24", "dev", "eth0")
                _ip("-n", host.ns, "link", "set", "eth0", "up")
                _ip("-n", host.ns, "link", "set", "lo", "up")
            _ip("netns", "add", self.wire.ns)
            self.started.append(self.wire.ns)
            for host in (self.remote, self.carrier):
                _ip("netns", "add", host.ns)
                self.started.append(host.ns)
                _ip("link", "add", "eth0", "netns", host.ns, "type", "veth", "peer", "name", host.router_if,
                    "netns", self.router.ns)
                _ip("-n", self.router.ns, "addr", "add", f"{host.router_addr}/24", "dev", host.router_if)
                _ip("-n", self.router.ns, "link", "set", host.router_if, "up")
                _ip("-n", host.ns, "addr", "add", f"{host.addr}/24", "dev", "eth0")
                _ip("-n", host.ns, "link", "set", "eth0", "up")
                _ip("-n", host.ns, "link", "set", "lo", "up")
                _ip("-n", host.ns, "route", "add", "default", "via", host.router_addr)
            for host in self.lan_hosts:
                _ip("-n", host.ns, "route", "add", "default", "via", self.router.addr)
            self.router.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
            netem = ["netem", "delay", f"{self.delay_ms}ms", "loss", f"{self.loss_pct}%"]
            made = self.router.run(["tc", "qdisc", "add", "dev", self.remote.router_if, "root", *netem])
            if made.returncode == 0:
                self.remote.run(["tc", "qdisc", "add", "dev", "eth0", "root", *netem], check=True)
                self.emulated = "netem"
            elif "unknown" in made.stderr:
                self._wire()
            else:
                raise subprocess.CalledProcessError(made.returncode, made.args, made.stdout, made.stderr)
        except subprocess.CalledProcessError as exc:
            self.stop()
            err = exc.stderr.strip() if isinstance(exc.stderr, str) else exc.stderr
            raise RuntimeError(f"could not build the two sites: {err} (needs root, iproute2 and sch_netem)") from None
        return self

    def _wire(self) -> None:
        """No netem: the WAN cable is cut in two at a namespace where tests.wannet's wire copies
        the frames across with the delay and the loss."""
        router_if = rif = self.remote.router_if
        # router side: wan0 <-> wa (wire ns); remote side: eth0 <-> wb (wire ns)
        _ip("-n", self.router.ns, "link", "del", router_if)      # and its other end, the remote box's eth0
        _ip("link", "add", router_if, "netns", self.router.ns, "type", "veth", "peer", "name", "wa",
            "netns", self.wire.ns)
        _ip("-n", self.router.ns, "addr", "add", f"{self.remote.router_addr}/24", "dev", rif)
        _ip("-n", self.router.ns, "link", "set", rif, "up")
        _ip("link", "add", "eth0", "netns", self.remote.ns, "type", "veth", "peer", "name", "wb",
            "netns", self.wire.ns)
        _ip("-n", self.remote.ns, "addr", "add", f"{self.remote.addr}/24", "dev", "eth0")
        _ip("-n", self.remote.ns, "link", "set", "eth0", "up")
        _ip("-n", self.remote.ns, "route", "add", "default", "via", self.remote.router_addr)
        for ifname in ("wa", "wb"):
            _ip("-n", self.wire.ns, "link", "set", ifname, "promisc", "on", "up")
        # frames cross the wire whole and with their checksums: no offloads on the two senders
        for host, ifname in ((self.router, rif), (self.remote, "eth0")):
            host.run([sys.executable, "-m", "tests.wannet", "no-offload", ifname], check=True)
        self.wire_proc = self.wire.popen([sys.executable, "-m", "tests.wannet", "wire", "wa", "wb",
                                          str(self.delay_ms), str(self.loss_pct)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.wire_proc.poll() is not None:
                raise RuntimeError(f"the WAN wire exited: {self.wire_proc.stderr.read().decode()[-300:]}")
            if self.remote.run(["ping", "-c", "1", "-W", "1", self.remote.router_addr]).returncode == 0:
                break
        self.emulated = "wire"

    def __enter__(self) -> "WanSites":
        return self.start()


# ----- two PBXes and a carrier on them ----------------------------------------------------------------------
class Carrier:
    """The carrier: a registrar on carrier:5070 answering every REGISTER 200 and noting (time,
    source address, Contact) of each; it calls in from carrier:5071."""

    def __init__(self, host):
        self.host = host
        self.sock = host.socket()
        self.sock.bind((host.addr, 5070))
        self.sock.settimeout(0.2)
        self.registers: list[tuple[float, str, str]] = []
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                data, peer = self.sock.recvfrom(65535)
            except OSError:
                continue
            text = data.decode(errors="replace")
            if not text.startswith("REGISTER "):
                continue
            contact = re.search(r"(?mi)^(?:Contact|m):\s*(.*)$", text)
            expires = re.search(r"(?mi)^Expires:\s*(\d+)", text)
            gone = (expires and expires.group(1) == "0") or (contact and "expires=0" in contact.group(1))
            self.registers.append((time.monotonic(), peer[0], "unregister" if gone else "register"))
            head = text.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
            keep = [h for h in head if h.split(":", 1)[0].strip().lower() in ("via", "from", "to", "call-id", "cseq")]
            keep = [h + ";tag=reg" if h.lower().startswith("to:") and ";tag=" not in h else h for h in keep]
            if contact and not gone:       # a registrar names the binding it keeps
                keep.append(f"Contact: {contact.group(1).strip().split(';expires=')[0]};expires=600")
            reply = "SIP/2.0 200 OK\r\n" + "\r\n".join(keep) + "\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
            self.sock.sendto(reply.encode(), peer)

    def from_(self, addr: str, after: float = 0.0, kind: str = "register") -> list[float]:
        return [t for t, a, k in self.registers if a == addr and t > after and k == kind]

    def close(self) -> None:
        self.running = False
        self.thread.join(2)
        self.sock.close()


def two_sites_config(store: ConfigStore, carrier_addr: str) -> None:
    store.add_extension("1000", "Ann", secret=SECRET)
    store.add_trunk("carrier", f"{carrier_addr}:5070", username="office", secret="carrier-pass-1")
    store.add_inbound_route(DID, "extension:1000", name="main number")


class TwoSites:
    """Box A (the office, alone on its LAN, remote standby R) and box R (site remote), both
    `pbx run`; only A's configuration is seeded: R gets it over the WAN. With a WanSites(pair=True)
    the office is a VRRP pair (A primary, B backup, VIP net.vip), both naming R as their remote."""

    def __init__(self, net, base: Path):
        self.net, self.base = net, Path(base)
        self.data = {"a": self.base / "a", "b": self.base / "b", "r": self.base / "r"}
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self) -> "TwoSites":
        net, secret = self.net, new_secret()
        two_sites_config(ConfigStore(self.data["a"]), net.carrier.addr)
        ConfigStore(self.data["r"])
        if net.pair:
            two_sites_config(ConfigStore(self.data["b"]), net.carrier.addr)
            for box, role, peer in ((net.box_a, "primary", net.box_b), (net.box_b, "backup", net.box_a)):
                ha_settings.save(self.data[box.name], HaSettings(True, role, box.addr, peer.addr, f"{net.vip}/24",
                                                                 "eth0", secret=secret, remote_addr=net.remote.addr))
        else:
            ha_settings.save(self.data["a"], HaSettings(True, node_addr=net.box_a.addr,
                                                        remote_addr=net.remote.addr, secret=secret))
        ha_settings.save(self.data["r"], HaSettings(True, node_addr=net.remote.addr, peer_addr=net.box_a.addr,
                                                    site="remote", secret=secret))
        for name in ("a", "b", "r") if net.pair else ("a", "r"):
            self.start_box(name)
        return self

    def start_box(self, name: str) -> None:
        host = {"a": self.net.box_a, "b": self.net.box_b, "r": self.net.remote}[name]
        addr = self.net.vip if self.net.pair and name != "r" else host.addr
        log = open(self.base / f"{name}.log", "ab")
        self.procs[name] = host.popen([PBX, "run", "--data", str(self.data[name]), "--sip-addr", addr,
                                       "--sip-port", "5060", "--web-port", "8443", "--rtp-ports", "20000-20200"],
                                      stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)

    def state(self, name: str) -> str | None:
        return ha_settings.state(self.data[name]).get("state")

    def ha_status(self, name: str) -> dict:
        out = subprocess.run([PBX, "ha", "status", "--data", str(self.data[name]), "--json"],
                             capture_output=True, text=True, timeout=30)
        return json.loads(out.stdout)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()

    def __enter__(self) -> "TwoSites":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def inbound_call(net, carrier_addr: str, remote_addr: str, phone: RawPhone, seconds: float = 2.0) -> dict:
    """The carrier calls the DID at R; the phone (registered on R) answers; both send audio for
    `seconds`. Returns {"status", "answered_at", "carrier_rx", "phone_rx", "bye"}."""
    caller = RawPhone("carrier", "", (remote_addr, 5060), sock=net.carrier.socket(), ip=carrier_addr)
    c_rtp, p_rtp = net.carrier.socket(), net.phone.socket()
    c_rtp.bind((carrier_addr, 0))
    p_rtp.bind((phone.ip, 0))
    answered: dict = {}

    def callee():
        invite = phone.wait_request("INVITE", timeout=15)
        if invite is None:
            return
        body = invite.body if isinstance(invite.body, str) else invite.body.decode()
        m = re.search(r"c=IN IP4 (\S+)[\s\S]*m=audio (\d+)", body)
        answered["to"] = (m.group(1), int(m.group(2)))
        answered["dialog"] = phone.answer(invite, sdp_body(phone.ip, p_rtp.getsockname()[1]))
    t = threading.Thread(target=callee, daemon=True)
    t.start()
    try:
        status, dialog, answer = caller.invite(DID, sdp_body(carrier_addr, c_rtp.getsockname()[1]), timeout=15)
        at = time.monotonic()
        t.join(5)
        result = {"status": status, "answered_at": at, "carrier_rx": 0, "phone_rx": 0, "bye": None}
        if status != 200 or "to" not in answered:
            return result
        body = answer.body if isinstance(answer.body, str) else answer.body.decode()
        m = re.search(r"c=IN IP4 (\S+)[\s\S]*m=audio (\d+)", body)
        c_stream = RtpStream(c_rtp, (m.group(1), int(m.group(2))))
        p_stream = RtpStream(p_rtp, answered["to"])
        time.sleep(seconds)
        c_stream.stop()
        p_stream.stop()
        result.update(carrier_rx=len(c_stream.arrivals), phone_rx=len(p_stream.arrivals), bye=caller.bye(dialog))
        return result
    finally:
        caller.close()
        c_rtp.close()
        p_rtp.close()


# ----- the wire: netem's delay and loss in user space --------------------------------------------
SIOCETHTOOL, ETHTOOL_STXCSUM, ETHTOOL_STSO, ETHTOOL_SSG = 0x8946, 0x17, 0x1f, 0x19


def no_offload(ifname: str) -> None:
    """Checksums computed and segments cut by the kernel, not left to the (virtual) card: a frame
    copied by a packet socket is then a frame any receiver accepts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for cmd in (ETHTOOL_STSO, ETHTOOL_STXCSUM, ETHTOOL_SSG):
        value = ctypes.create_string_buffer(struct.pack("II", cmd, 0))
        ifr = struct.pack("16sP", ifname.encode(), ctypes.addressof(value)) + b"\0" * 16
        fcntl.ioctl(sock, SIOCETHTOOL, ifr)
    sock.close()


def wire(a: str, b: str, delay_ms: float, loss_pct: float) -> None:
    socks = {}
    for name in (a, b):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        s.bind((name, 0))
        socks[name] = s
    other = {socks[a]: socks[b], socks[b]: socks[a]}
    queues = {socks[a]: deque(), socks[b]: deque()}     # per receiving side: (due, frame), in order
    delay, loss = delay_ms / 1000.0, loss_pct / 100.0
    rng = random.Random()
    while True:
        now = time.monotonic()
        due = min((q[0][0] for q in queues.values() if q), default=None)
        timeout = None if due is None else max(0.0, due - now)
        readable, _, _ = select.select(list(socks.values()), [], [], timeout)
        now = time.monotonic()
        for s in readable:
            while True:
                try:
                    frame, addr = s.recvfrom(65535, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                if addr[2] == socket.PACKET_OUTGOING:
                    continue                        # our own copy of what we sent
                if rng.random() >= loss:
                    queues[s].append((now + delay, frame))
        for s, q in queues.items():
            while q and q[0][0] <= now:
                try:
                    other[s].send(q.popleft()[1])
                except OSError:
                    pass                            # too big or the link is down: lost, as on a WAN


if __name__ == "__main__":
    if sys.argv[1] == "no-offload":
        no_offload(sys.argv[2])
    elif sys.argv[1] == "wire":
        wire(sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]))
