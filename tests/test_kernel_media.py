"""The kernel media path (services/callsvc/kernelpath.py, issue 16) in network namespaces.

The PBX runs in its own namespace (box A of an OfficeLan, IPv4 forwarding on there), the phones on
the phone host: their packets reach the PBX through its eth0 and the prerouting hook, as on a LAN
(packets a process sends to itself on loopback never pass prerouting). Raw SIP phones with real RTP
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
    """`pbx run` on a box of the LAN, media on its own address, forwarding on in its namespace."""

    def __init__(self, lan: OfficeLan, data: Path, host=None):
        from firmware.config import ConfigStore
        self.lan, self.data, self.host = lan, data, host or lan.box_a
        self.addr = self.host.addr
        store = ConfigStore(data)
        for n, secret in SECRETS.items():
            store.add_extension(n, f"Phone {n}", secret=secret)
        self.host.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
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
        out = self.host.run(["nft", "-j", "list", "map", "ip", self.kernel()["table"], "flows"], check=True)
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

    def __init__(self, lan: OfficeLan, box: Box, number: str, rtp_port: int):
        self.number, self.lan = number, lan
        self.sip = RawPhone(number, SECRETS[number], (box.addr, 5060), sock=lan.phone.socket(), ip=lan.phone.addr)
        assert self.sip.register() == 200
        self.rtp = lan.phone.socket()
        self.rtp.bind((lan.phone.addr, rtp_port))
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
        return sdp_body(self.lan.phone.addr, self.port)

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
    keys = {(box.lan.phone.addr, p.port, p.to[1]) for p in phones}
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


def test_killing_the_pbx_leaves_no_table_behind_and_without_forwarding_or_the_capability_the_relay_carries_calls(
        lan, tmp_path):
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
        # the relay carries the call, the reason logged: forwarding off, then no CAP_NET_ADMIN
        for n, (forwarding, prefix, reason) in enumerate((
                ("0", (), "IPv4 forwarding is off"),
                ("1", ("setpriv", "--bounding-set", "-net_admin", "--inh-caps", "-net_admin", "--"),
                 "nftables refused the table"))):
            lan.box_b.run(["sysctl", "-qw", f"net.ipv4.ip_forward={forwarding}"], check=True)
            box.start(prefix=prefix)
            assert box.kernel() == {"on": False}
            assert f"kernel media path off: {reason}" in box.log_tail()
            a, b = Phone(lan, box, "1001", 40034 + 4 * n), Phone(lan, box, "1002", 40036 + 4 * n)
            dialog, _ = call(box, a, b)
            t0 = time.monotonic()
            time.sleep(1.0)
            assert b.hears(a, t0, source=b.to) >= 35 and a.hears(b, t0, source=a.to) >= 35
            assert "pbx_media" not in box.tables()
            assert a.sip.bye(dialog) == 200
            a.close()
            b.close()
            box.stop()
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
    from services.callsvc.kernelpath import why_not
    on, off = tmp_path / "on", tmp_path / "off"
    on.write_text("1\n")
    off.write_text("0\n")
    assert why_not("198.18.0.2", str(on)) is None
    assert "forwarding is off" in why_not("198.18.0.2", str(off)) and "ip_forward=1" in why_not("198.18.0.2", str(off))
    assert "prerouting" in why_not("127.0.0.1", str(on))
    assert "IPv6" in why_not("2001:db8::1", str(on))
    assert "cannot read" in why_not("198.18.0.2", str(tmp_path / "missing"))


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
