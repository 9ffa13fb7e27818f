"""The kernel media path (services/callsvc/kernelpath.py, issue 16) in network namespaces.

The PBX runs in its own namespace (box A of an OfficeLan, IPv4 forwarding off there), the phones on
the phone host: their packets reach the PBX through its eth0 and that interface's ingress hook, as
on a LAN (packets a process sends to itself on loopback pass no interface's ingress). Raw SIP phones with real RTP
sockets: audio checked both ways packet by packet, the kernel's per-flow counters read with `nft`.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from firmware.dsp.rfc4733 import pack_event
from services.control import query
from tests.hanet import OfficeLan, wait_for
from tests.phones.raw import RawPhone, raw_call, rtp_packet, sdp_body

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
SECRETS = {n: f"kernel-path-{n}-secret-9Qz" for n in ("1000", "1001", "1002", "1003", "1004", "1005")}


class Box:
    """`pbx run` on a box of the LAN, media on its own address. IPv4 forwarding stays off: the
    kernel path sends packets out from the ingress hook and never routes them."""

    def __init__(self, lan: OfficeLan, data: Path, host=None):
        from firmware.config import ConfigStore
        self.lan, self.data, self.host = lan, data, host or lan.box_a
        self.addr = self.host.addr
        store = ConfigStore(data)
        for n, secret in SECRETS.items():
            store.add_extension(n, f"Phone {n}", secret=secret)
        self.host.run(["sysctl", "-qw", "net.ipv4.ip_forward=0"], check=True)
        self.log_path = data / "pbx.log"
        self.proc = None

    def start(self, *extra: str, env: dict | None = None, prefix=()) -> "Box":
        self.proc = self.host.popen([*prefix, str(ROOT / ".venv" / "bin" / "pbx"), "run", "--data", str(self.data),
                                          "--sip-addr", self.addr, "--sip-port", "5060", "--no-web", "--no-lines",
                                          "--rtp-ports", "20000-20200", *extra],
                                         stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT, cwd=ROOT,
                                         env={**os.environ, **(env or {})})
        wait_for("the PBX to answer on its control socket", self._up, 30, every=0.2)
        return self

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"pbx run exited:\n{self.log_tail()}")
        try:
            return "kernel_media" in query(str(self.data), "status", timeout=1)
        except Exception:
            return False

    def status(self) -> dict:
        return query(str(self.data), "status")

    def kernel(self) -> dict:
        return self.status()["kernel_media"]

    def flows(self) -> dict[tuple[str, int, int], int]:
        """{(phone ip, phone port, PBX port): packets} of the flows in the kernel now."""
        out = self.host.run(["nft", "-j", "list", "map", "netdev", self.kernel()["table"], "flows"], check=True)
        flows = {}
        for obj in json.loads(out.stdout)["nftables"]:
            for elem in obj.get("map", {}).get("elem", []):
                inner = elem[0]["elem"]
                ip, port, ours = inner["val"]["concat"]
                flows[(ip, port, ours)] = inner["counter"]["packets"]
        return flows

    def tables(self) -> str:
        return self.host.run(["nft", "list", "tables"], check=True).stdout

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Phone:
    """A registered raw SIP phone on the phone host with an RTP socket that keeps talking: a PCMU
    packet every 20 ms whose payload is its own byte, and a record of what it hears and from where."""

    def __init__(self, lan: OfficeLan, box: Box, number: str, rtp_port: int, ip: str | None = None, host=None):
        host = host or lan.phone
        self.number, self.lan, self.ip = number, lan, ip or host.addr
        self.sip = RawPhone(number, SECRETS[number], (box.addr, 5060), sock=host.socket(), ip=self.ip)
        assert self.sip.register() == 200
        self.rtp = host.socket()
        self.rtp.bind((self.ip, rtp_port))
        self.rtp.settimeout(0.05)
        self.port = rtp_port
        self.byte = int(number[-1]) + 0x30
        self.to = None                      # the PBX's RTP address facing this phone
        self.heard: list[tuple[float, int, int, tuple]] = []   # (time, payload type, first payload byte, source)
        self.seq, self.ts = 0, 0
        self.talking = threading.Event()
        self.running = True
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._send, daemon=True),
                        threading.Thread(target=self._receive, daemon=True)]
        for t in self.threads:
            t.start()

    def sdp(self) -> str:
        return sdp_body(self.ip, self.port)

    def talk_to(self, pbx_addr) -> None:
        self.to = tuple(pbx_addr)
        self.talking.set()

    def _send(self):
        while self.running:
            if not self.talking.wait(0.1) or self.to is None:
                continue
            with self.lock:
                packet = rtp_packet(bytes([self.byte]) * 160, self.seq, pt=0, ts=self.ts)
                self.seq, self.ts = (self.seq + 1) & 0xFFFF, self.ts + 160
                try:
                    self.rtp.sendto(packet, self.to)
                except OSError:
                    pass
            time.sleep(0.02)

    def _receive(self):
        while self.running:
            try:
                data, src = self.rtp.recvfrom(2048)
            except OSError:
                continue
            if len(data) > 12:
                self.heard.append((time.monotonic(), data[1] & 0x7F, data[12], src))

    def send_digits(self, digits: str) -> None:
        """RFC 4733 events on the RTP stream, as a phone's keypad sends them."""
        for digit in digits:
            with self.lock:
                ts = self.ts
                for i, (duration, end) in enumerate(((160, False), (480, False), (800, True), (800, True),
                                                     (800, True))):
                    packet = rtp_packet(pack_event(digit, end, duration=duration), self.seq, pt=101, ts=ts,
                                        marker=i == 0)
                    self.seq = (self.seq + 1) & 0xFFFF
                    self.rtp.sendto(packet, self.to)
                self.ts += 800
            time.sleep(0.15)

    def hears(self, other: "Phone", since: float, source=None) -> int:
        """Audio packets from `other` heard since `since` (from `source`, if given)."""
        return sum(1 for t, pt, b, src in self.heard
                   if t >= since and pt == 0 and b == other.byte and (source is None or tuple(src) == tuple(source)))

    def close(self) -> None:
        self.running = False
        for t in self.threads:
            t.join(2)
        self.rtp.close()
        self.sip.close()


class _Log:
    def __init__(self, box: Box):
        self.box = box

    def log_tail(self) -> str:
        return self.box.log_tail()


@pytest.fixture(scope="module")
def lan():
    with OfficeLan() as lan:
        yield lan


@pytest.fixture(scope="module")
def box(lan, tmp_path_factory):
    box = Box(lan, tmp_path_factory.mktemp("kernel-media")).start()
    yield box
    box.stop()


def call(box: Box, a: Phone, b: Phone):
    dialog, pbx_a, pbx_b, b_dialog = raw_call(_Log(box), a.sip, b.sip, a.rtp, b.rtp, offer=a.sdp(), answer=b.sdp())
    a.talk_to(pbx_a)
    b.talk_to(pbx_b)
    return dialog, b_dialog


def in_kernel(box: Box, *phones: Phone) -> bool:
    keys = {(p.ip, p.port, p.to[1]) for p in phones}
    return keys <= set(box.flows())


def test_a_bridged_call_runs_in_the_kernel_both_ways_and_leaves_no_flow_behind(lan, box):
    assert box.kernel()["on"], box.log_tail()
    a, b = Phone(lan, box, "1000", 40000), Phone(lan, box, "1001", 40002)
    try:
        dialog, _ = call(box, a, b)
        wait_for("both flows in the kernel", lambda: in_kernel(box, a, b), 10)
        before = box.flows()
        t0 = time.monotonic()
        time.sleep(1.0)
        after = box.flows()
        # the kernel forwarded what the phones sent (about 50 packets a second each way) ...
        for p in (a, b):
            key = (lan.phone.addr, p.port, p.to[1])
            assert after[key] - before[key] >= 35, (before, after)
        # ... and each phone heard the other from the PBX's port that faces it, payload untouched
        assert b.hears(a, t0, source=b.to) >= 35 and a.hears(b, t0, source=a.to) >= 35
        assert box.kernel()["bridges"] == 1
        time.sleep(1.5)       # the call service reads the kernel's counters every second
        shown = subprocess.run([str(ROOT / ".venv" / "bin" / "pbx"), "status", "--data", str(box.data)],
                               capture_output=True, text=True, timeout=30).stdout
        assert "media: 1 bridged calls forwarded by the kernel" in shown, shown
        assert a.sip.bye(dialog) == 200
        wait_for("the flows taken out", lambda: not box.flows(), 5)
        rec = wait_for("the call record", lambda: _cdr(box, "1000", "1001"), 10)
        kernel_a = rec.legs[0].get("rtp_kernel", 0)
        assert kernel_a >= 75 and rec.legs[0]["rtp_in"] >= kernel_a, rec.legs   # 2.5 s in the kernel
    finally:
        a.close()
        b.close()


def test_dtmf_still_reaches_the_other_phone_and_a_double_hash_transfer_moves_the_call_out_and_back(lan, box):
    a, b, c = Phone(lan, box, "1002", 40010), Phone(lan, box, "1003", 40012), Phone(lan, box, "1004", 40014)
    try:
        dialog, b_dialog = call(box, a, b)
        wait_for("the call in the kernel", lambda: in_kernel(box, a, b), 10)
        # a digit in the call: the event packets bypass the kernel's rewrite and are relayed by the
        # call service, so the other phone gets them (and features hear them)
        t0 = time.monotonic()
        a.send_digits("5")
        wait_for("the event at B", lambda: any(pt == 101 and t >= t0 for t, pt, _, _ in b.heard), 5)
        assert in_kernel(box, a, b)          # a digit alone does not take the call out
        # B presses ## and dials C: A waits on music (out of the kernel), then talks to C (back in)
        answered = {}

        def callee():
            req = c.sip.wait_request("INVITE", 15)
            if req is not None:
                from tests.phones.raw import sdp_address
                answered["pbx_c"] = sdp_address(req.body)
                answered["dialog"] = c.sip.answer(req, c.sdp())
                c.talk_to(answered["pbx_c"])
        t = threading.Thread(target=callee)
        t.start()
        b.send_digits("##")
        wait_for("A's flow taken back while A hears music", lambda: not in_kernel(box, a, b), 5)
        b.send_digits("1004#")
        t.join(20)
        assert "dialog" in answered, box.log_tail()
        wait_for("A and C in the kernel", lambda: in_kernel(box, a, c), 10)
        t1 = time.monotonic()
        time.sleep(0.8)
        assert c.hears(a, t1, source=c.to) >= 25 and a.hears(c, t1, source=a.to) >= 25
        assert a.sip.bye(dialog) == 200
        wait_for("no flow left", lambda: not box.flows(), 5)
    finally:
        for p in (a, b, c):
            p.close()


def test_hold_takes_the_call_out_of_the_kernel_for_music_and_unhold_puts_it_back(lan, box):
    a, b = Phone(lan, box, "1005", 40020), Phone(lan, box, "1000", 40022)
    try:
        dialog, _ = call(box, a, b)
        wait_for("the call in the kernel", lambda: in_kernel(box, a, b), 10)
        assert a.sip.in_dialog(dialog, "INVITE", sdp_body(lan.phone.addr, a.port, direction="sendonly")) == 200
        t0 = time.monotonic()
        wait_for("the call out of the kernel", lambda: not box.flows(), 5)
        time.sleep(0.6)
        held = [x for x in b.heard if x[0] >= t0 + 0.2]
        assert held and not any(byte == a.byte for _, pt, byte, _ in held), "B hears music, not A"
        assert a.sip.in_dialog(dialog, "INVITE", sdp_body(lan.phone.addr, a.port)) == 200
        wait_for("the call back in the kernel", lambda: in_kernel(box, a, b), 10)
        t1 = time.monotonic()
        time.sleep(0.6)
        assert b.hears(a, t1, source=b.to) >= 20 and a.hears(b, t1, source=a.to) >= 20
        assert a.sip.bye(dialog) == 200
        wait_for("no flow left", lambda: not box.flows(), 5)
    finally:
        a.close()
        b.close()


def test_killing_the_pbx_leaves_no_table_behind_and_without_the_capability_the_relay_carries_calls(lan, tmp_path):
    box = Box(lan, tmp_path / "b", host=lan.box_b).start()
    a, b = Phone(lan, box, "1001", 40030), Phone(lan, box, "1002", 40032)
    try:
        call(box, a, b)
        wait_for("the call in the kernel", lambda: in_kernel(box, a, b), 10)
        table = box.kernel()["table"]
        assert table in box.tables()
        os.killpg(box.proc.pid, signal.SIGKILL)       # no clean-up code runs
        box.proc.wait(10)
        wait_for("the kernel to drop the table of the killed process", lambda: table not in box.tables(), 5)
        a.close()
        b.close()
        # without CAP_NET_ADMIN the relay carries the call, the reason logged
        box.start(prefix=("setpriv", "--bounding-set", "-net_admin", "--inh-caps", "-net_admin", "--"))
        assert box.kernel() == {"on": False}
        assert "kernel media path off: nftables refused the table" in box.log_tail()
        a, b = Phone(lan, box, "1001", 40034), Phone(lan, box, "1002", 40036)
        dialog, _ = call(box, a, b)
        t0 = time.monotonic()
        time.sleep(1.0)
        assert b.hears(a, t0, source=b.to) >= 35 and a.hears(b, t0, source=a.to) >= 35
        assert "pbx_media" not in box.tables()
        assert a.sip.bye(dialog) == 200
    finally:
        a.close()
        b.close()
        box.stop()


def test_the_kernels_counters_keep_a_talking_call_past_the_rtp_timeout_and_a_silent_one_ends(lan, tmp_path):
    box = Box(lan, tmp_path / "t", host=lan.box_b).start(env={"PBX_RTP_TIMEOUT": "3"})
    a, b = Phone(lan, box, "1003", 40040), Phone(lan, box, "1004", 40042)
    try:
        call(box, a, b)
        wait_for("the call in the kernel", lambda: in_kernel(box, a, b), 10)
        time.sleep(6)        # twice the timeout: the call service saw no packet, the kernel saw them all
        assert len(box.status()["calls"]) == 1, box.log_tail()
        a.talking.clear()
        b.talking.clear()
        wait_for("the silent call hung up", lambda: not box.status()["calls"], 10, every=0.2)
        rec = wait_for("its record", lambda: _cdr(box, "1003", "1004"), 10)
        assert rec.legs[0]["rtp_kernel"] >= 250, rec.legs      # ~6 s at 50 packets a second
        assert "rtp timeout" in (rec.cause + box.log_tail())
    finally:
        a.close()
        b.close()
        box.stop()


def _cdr(box: Box, src: str, dst: str):
    from firmware.cdr import CdrStore
    store = CdrStore(box.data)
    try:
        return next((r for r in store.last(20) if r.src == src and r.dst == dst), None)
    finally:
        store.close()


def test_each_reason_the_kernel_path_cannot_run_is_named(tmp_path):
    from services.callsvc.kernelpath import read_routes, route_to, why_not
    routes = tmp_path / "route"      # /proc/net/route: eth0 198.18.0.0/24, default via 198.18.0.1
    routes.write_text("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
                      "eth0\t00000000\t010012C6\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
                      "eth0\t000012C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
                      "eth1\t006CA8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n")
    assert why_not("198.18.0.2", str(routes)) is None
    assert "no interface has 203.0.113.5 on its link" in why_not("203.0.113.5", str(routes))
    assert "no interface" in why_not("198.18.0.2", str(tmp_path / "missing"))
    assert "local path" in why_not("127.0.0.1", str(routes))
    assert "IPv6" in why_not("2001:db8::1", str(routes))
    table = read_routes(str(routes))
    assert route_to("198.18.0.77", table) == ("eth0", None)          # on the link: the phone itself
    assert route_to("203.0.113.5", table) == ("eth0", "198.18.0.1")  # beyond a router: the gateway
    assert route_to("192.168.108.9", table) == ("eth1", None)        # another interface


def test_a_lan_host_spraying_a_call_in_the_kernel_is_neither_forwarded_nor_heard(lan, box):
    """RTP bleed against the kernel path: only the latched phone's exact address and port are
    rewritten; packets from anyone else reach the socket, which drops them (issue 7's rule)."""
    a, b = Phone(lan, box, "1000", 40050), Phone(lan, box, "1001", 40052)
    attacker = lan.phone.socket()
    attacker.bind((lan.phone.addr, 40099))
    try:
        dialog, _ = call(box, a, b)
        wait_for("the call in the kernel", lambda: in_kernel(box, a, b), 10)
        t0 = time.monotonic()
        for seq in range(100):
            attacker.sendto(rtp_packet(b"\x77" * 160, seq), a.to)      # A's side of the call
            attacker.sendto(rtp_packet(b"\x77" * 160, seq), b.to)
            time.sleep(0.005)
        time.sleep(0.5)
        assert not [x for x in a.heard + b.heard if x[0] >= t0 and x[2] == 0x77], "injected audio heard"
        assert in_kernel(box, a, b) and set(box.flows()) == {(lan.phone.addr, p.port, p.to[1]) for p in (a, b)}
        assert b.hears(a, t0, source=b.to) >= 20 and a.hears(b, t0, source=a.to) >= 20
        assert a.sip.bye(dialog) == 200
    finally:
        attacker.close()
        a.close()
        b.close()


def test_a_phone_beyond_a_router_is_reached_through_the_gateway(lan, box):
    """A phone on another subnet (a carrier, a branch office): the kernel hands its packets to the
    gateway of the box's route, not to the phone's own address. The phone host is that gateway
    here; it holds 203.0.113.20 on its loopback, answers ARP only for its LAN address and names
    only that address in its own ARP requests (else the box would learn the far address from them),
    so a packet sent to the phone's address as a neighbour would never arrive."""
    far = "203.0.113.20"
    lan.phone.run(["ip", "addr", "add", f"{far}/32", "dev", "lo"], check=True)
    lan.phone.run(["sysctl", "-qw", "net.ipv4.conf.eth0.arp_ignore=1", "net.ipv4.conf.eth0.arp_announce=2"],
                  check=True)
    box.host.run(["ip", "route", "add", "203.0.113.0/24", "via", lan.phone.addr], check=True)
    box.host.run(["ip", "neigh", "flush", "dev", "eth0"], check=True)
    a = b = None
    try:
        time.sleep(1.1)    # the call service reads the routing table at most once a second
        a, b = Phone(lan, box, "1004", 40060, ip=far), Phone(lan, box, "1005", 40062)
        dialog, _ = call(box, a, b)
        wait_for("the call in the kernel", lambda: in_kernel(box, a, b), 10)
        hops = box.host.run(["nft", "list", "map", "netdev", box.kernel()["table"], "next_hop"], check=True).stdout
        assert lan.phone.addr in hops, hops            # one flow (towards the far phone) via the gateway
        t0 = time.monotonic()
        time.sleep(1.0)
        assert b.hears(a, t0, source=b.to) >= 35 and a.hears(b, t0, source=a.to) >= 35
        flows = box.flows()
        assert flows[(far, a.port, a.to[1])] >= 35 and flows[(lan.phone.addr, b.port, b.to[1])] >= 35, flows
        assert a.sip.bye(dialog) == 200
        wait_for("no flow left", lambda: not box.flows(), 5)
        hops = box.host.run(["nft", "list", "map", "netdev", box.kernel()["table"], "next_hop"], check=True).stdout
        assert lan.phone.addr not in hops, hops
    finally:
        for phone in (a, b):
            if phone is not None:
                phone.close()
        box.host.run(["ip", "route", "del", "203.0.113.0/24"])
        lan.phone.run(["sysctl", "-qw", "net.ipv4.conf.eth0.arp_ignore=0", "net.ipv4.conf.eth0.arp_announce=0"])
        lan.phone.run(["ip", "addr", "del", f"{far}/32", "dev", "lo"])


def test_a_phone_on_another_address_of_the_box_itself_stays_in_user_space(lan, box):
    """A softphone on the box (on a second address of its LAN interface) talks to the PBX over
    loopback: its packets never pass the interface's ingress, and the other phone's packets sent to
    it as a neighbour would be lost. The call stays with the relay and both sides hear each other."""
    own = box.addr.rsplit(".", 1)[0] + ".99"
    box.host.run(["ip", "addr", "add", f"{own}/24", "dev", "eth0"], check=True)
    a = b = None
    try:
        time.sleep(1.1)    # the call service reads the routing table at most once a second
        a, b = Phone(lan, box, "1002", 40070, ip=own, host=box.host), Phone(lan, box, "1003", 40072)
        dialog, _ = call(box, a, b)
        time.sleep(1.0)
        t0 = time.monotonic()
        time.sleep(1.0)
        assert b.hears(a, t0, source=b.to) >= 35 and a.hears(b, t0, source=a.to) >= 35
        assert box.kernel()["bridges"] == 0 and not box.flows()
        assert a.sip.bye(dialog) == 200
    finally:
        for phone in (a, b):
            if phone is not None:
                phone.close()
        box.host.run(["ip", "addr", "del", f"{own}/24", "dev", "eth0"])
