"""The kernel media path against the user-space relay (issue 16), in network namespaces (needs root).

    .venv/bin/python -m tests.bench.kernel_media [--quick] [--loads 200,500] [--modes direct,routed,off,auto]

The kernel path only runs where packets arrive on a network interface (its ingress hook): media
on a LAN address, not loopback. So the PBX (`pbx run`) runs in box A of an office LAN
(tests/hanet.py: namespaces for a switch, box A, box B and a phone host) with IPv4 forwarding off
there (the kernel path sends packets out from the ingress hook and never routes them), and every
SIPp process runs on the phone host (`ip netns exec`): the SIPp callers (extensions 1000,
1002, ... as tests/bench/phases.py uses them) call extension 1001, a registered SIPp UAS; both
stream G.711 A-law every 20 ms from their rtp_stream socket (tests/sipp/uac_load.xml, uas_load.xml).

Each mode steps up to each load of calls (50 new calls/s), waits for them all to be answered,
then measures for 20 s:

    off     `pbx run --kernel-media off`: the call service relays every packet in user space
    auto    the kernel path; before the window status must show every call forwarded by the kernel
    direct  no PBX: the same SIPp callers call a SIPp UAS on box B peer to peer, media straight
            across the switch: what the load generator and the LAN cost by themselves
    routed  as direct, but the phone host and box B reach each other through box A as a plain IP
            router (host routes, no nftables table): every packet crosses the switch twice, as on
            the kernel path, and box A's IP stack routes it

CPU: utime + stime of the call service, of Kamailio's processes and of the SIPp processes over the
window (/proc/PID/stat), and the machine's busy time from /proc/stat with its softirq part shown
apart, all in % of one core. This kernel has no CONFIG_IRQ_TIME_ACCOUNTING: softirq work that runs
on the way out of a sender's system call (a veth transmit delivers the packet in the sender's
context, through the switch, box A's ingress hook and back to the phone) is charged to that
sender's stime. So the kernel path's forwarding mostly shows up in SIPp's stime, and "machine minus
SIPp" would flatter it; the honest per-call cost of the PBX is the CPU of everything the bench
runs (call service, Kamailio, SIPp, ksoftirqd) above the direct run at the same load, per call
("ours above direct"). That still counts one more pass through the
switch (veth + bridge) than the direct run; "above routed" leaves it out and is what the PBX's
rules add to plain forwarding. The machine's busy time is shown too ("machine above direct"), but
other work on the shared box moves it by tens of % of a core (column "others": busy time not in
our processes; on a quiet box it is the softirq work done while a CPU was idle).

Loss: SIPp never reads its rtp_stream socket, so once the receive buffer is full every datagram
that reaches it is counted as a drop in the phone host's /proc/net/udp: the rise over the window
counts the packets delivered, compared with the nominal 50 per second per call and direction.

Jitter: after each window, while the load still runs, two probe calls between raw phones on the
phone host (extensions 1900 -> 1901, 1902 -> 1903) each send 20 ms PCMU packets both ways for
10 s, the sending time (CLOCK_REALTIME, ns) in the payload, and a direct stream from the phone
host to box B does the same. The receiver takes the kernel's arrival timestamp (SO_TIMESTAMPNS),
so the user-space scheduling of the bench does not count: transit = arrival - sent, the RFC 3550
interarrival jitter of the transits, and the p99 of transit minus its minimum. "Jitter added" is
the PBX path's RFC 3550 jitter minus the direct stream's.
"""
from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.bench import procstat
from tests.bench.phases import (ALL_LINES, CALLEE, PACKETS_PER_SECOND, caller_numbers, percentile,
                                sipp_failures, summarize_sipp_errors)
from tests.hanet import OfficeLan
from tests.pbxproc import ROOT, PbxProcess
from tests.phones.raw import RawPhone, raw_call, rtp_packet, sdp_body
from tests.phones.sipp import Sipp

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)   # Linux; the socket module lacks it
PROBES = (("1900", "1901"), ("1902", "1903"))
RTP_PORTS = (20000, 23200)      # 500 calls + probes, two legs each, ports in steps of two


@dataclass
class Plan:
    loads: tuple[int, ...] = (200, 500)
    window: float = 20.0
    ramp_rate: int = 50
    settle: float = 3.0
    probe_seconds: float = 10.0


QUICK = Plan(loads=(20, 50), window=4.0, ramp_rate=25, settle=2.0, probe_seconds=3.0)


@dataclass
class Step:
    mode: str
    calls: int
    up: int = 0
    up_after: int = 0
    in_kernel: int | None = None       # bridges the kernel forwarded (status), auto mode
    cpu: dict = field(default_factory=dict)     # % of one core
    seconds: float = 0.0
    delivered_ab: float | None = None
    delivered_ba: float | None = None
    pbx_drops: int = 0
    jitter: dict = field(default_factory=dict)  # "pbx" / "direct" -> stats
    load: str = ""
    note: str = ""


# --- processes in the namespaces ------------------------------------------------------------------

class NsPbx(PbxProcess):
    """`pbx run` inside a namespace of the LAN, SIP on the box's address port 5060."""

    def __init__(self, host, data: Path, extensions, kernel_media: str, trusted: str):
        super().__init__(data, extensions=extensions, addr=host.addr)
        self.host, self.sip_port, self.rtp = host, 5060, RTP_PORTS
        self.kernel_media, self.trusted_net = kernel_media, trusted

    def start(self, timeout: float = 30.0) -> "NsPbx":
        from services.control import ControlError, query
        cmd = self.host.command([sys.executable, "-m", "services.cli", "run", "--data", str(self.data),
                                 "--sip-addr", self.addr, "--sip-port", "5060", "--no-web", "--no-lines",
                                 "--rtp-ports", f"{self.rtp[0]}-{self.rtp[1]}",
                                 "--kernel-media", self.kernel_media, "--trusted", self.trusted_net])
        self._log = open(self.log_path, "ab")
        # `ip netns exec` execs: the pid is the call service's
        self.proc = subprocess.Popen(cmd, cwd=ROOT,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pbx run exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if "kernel_media" in query(self.data, "status", timeout=1):
                    return self
            except ControlError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"pbx run not ready after {timeout}s:\n{self.log_tail()}")

    def answered(self) -> int:
        return sum(1 for c in self.status()["calls"] if c["state"] == "answered")


_media_ports = iter(range(30000, 39000, 10))


def ns_sipp(host, scenario, remote=None, **kw) -> Sipp:
    """A Sipp on `host` (its address, fixed free ports: the namespace is new)."""
    kw.setdefault("port", next(_media_ports))
    s = Sipp(scenario, remote, local_ip=host.addr, media_port=next(_media_ports), **kw)
    s.args = host.command(s.args)
    return s


def udp_counters(pid: int) -> dict[int, tuple[int, int]]:
    """{local port: (inode, drops)} of the UDP sockets in the network namespace of pid."""
    out = {}
    for line in Path(f"/proc/{pid}/net/udp").read_text().splitlines()[1:]:
        cols = line.split()
        out[int(cols[1].split(":")[1], 16)] = (int(cols[9]), int(cols[-1]))
    return out


def ksoftirqd_pids() -> list[int]:
    """The per-CPU threads that run softirq work the interrupted context did not finish."""
    return [int(e.name) for e in os.scandir("/proc") if e.name.isdigit()
            and procstat.comm(int(e.name)).startswith("ksoftirqd/")]


def ours(cpu: dict) -> float:
    """CPU of what the bench runs: PBX, SIPp, ksoftirqd (not the bench's own probes and polls)."""
    return sum(cpu.get(g, 0.0) for g in ("call service", "kamailio", "sipp", "ksoftirqd"))


def stat_cpu() -> list[int]:
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


class Window:
    """CPU of process groups and of the machine (busy, softirq) over a window, % of one core."""

    def __init__(self, groups: dict[str, list[int]]):
        self.inner = procstat.CpuWindow(groups)

    def start(self) -> "Window":
        self.inner.start()
        self.stat0 = stat_cpu()
        return self

    def stop(self) -> dict[str, float]:
        res = self.inner.stop()
        s1 = stat_cpu()
        d = [b - a for a, b in zip(self.stat0, s1)]
        total = sum(d[:8])
        # everything else on the machine (other work sharing the cores): busy minus what we ran
        res["others"] = res["machine"] - sum(res[g] for g in self.inner.groups)
        res["softirq"] = 100 * os.cpu_count() * d[6] / total if total else 0.0
        res["irq"] = 100 * os.cpu_count() * d[5] / total if total else 0.0
        self.seconds = self.inner.seconds
        return res


# --- the jitter probes ----------------------------------------------------------------------------

class Probe:
    """Streams of 20 ms PCMU packets carrying their sending time; arrival times from the kernel."""

    def __init__(self):
        self.streams: list[tuple[str, socket.socket, tuple]] = []   # (path, socket, to)
        self.recv: dict[int, tuple[str, list[tuple[int, int]]]] = {}  # fd -> (path, [(sent, arrived)])
        self.running = False

    def add_sender(self, path: str, sock: socket.socket, to) -> None:
        self.streams.append((path, sock, tuple(to)))

    def add_receiver(self, path: str, sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setblocking(False)
        self.recv[sock.fileno()] = (path, [], sock)

    def run(self, seconds: float) -> None:
        self.running = True
        rx = threading.Thread(target=self._receive, daemon=True)
        rx.start()
        seq, next_at, end = 0, time.monotonic(), time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                for _, sock, to in self.streams:
                    payload = struct.pack("!Q", time.time_ns()) + b"\xff" * 152
                    try:
                        sock.sendto(rtp_packet(payload, seq, pt=0), to)
                    except OSError:
                        pass
                seq += 1
                next_at += 0.02
                time.sleep(max(0.0, next_at - time.monotonic()))
            time.sleep(0.2)
        finally:
            self.running = False
            rx.join(2)
        self.sent = seq

    def _receive(self) -> None:
        sel = selectors.DefaultSelector()
        for fd, (_, _, sock) in self.recv.items():
            sel.register(sock, selectors.EVENT_READ)
        while self.running:
            for key, _ in sel.select(0.05):
                sock = key.fileobj
                while True:
                    try:
                        data, anc, _, _ = sock.recvmsg(2048, 64)
                    except (BlockingIOError, InterruptedError):
                        break
                    arrived = None
                    for level, kind, raw in anc:
                        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                            sec, nsec = struct.unpack("qq", raw[:16])
                            arrived = sec * 10**9 + nsec
                    if arrived is not None and len(data) >= 20:
                        self.recv[sock.fileno()][1].append((struct.unpack("!Q", data[12:20])[0], arrived))
        sel.close()

    def stats(self) -> dict[str, dict]:
        """Per path ("pbx", "direct"): packets expected/received, RFC 3550 jitter, transit spread (ms)."""
        out: dict[str, dict] = {}
        per_path: dict[str, list[list[tuple[int, int]]]] = {}
        senders = {}
        for path, _, _ in self.streams:
            senders[path] = senders.get(path, 0) + 1
        for path, got, _ in self.recv.values():
            per_path.setdefault(path, []).append(sorted(got))
        for path, streams in per_path.items():
            jitters, spreads, received = [], [], 0
            for got in streams:
                received += len(got)
                if len(got) < 10:
                    continue
                transit = [(a - s) / 1e6 for s, a in got]
                j = 0.0
                for prev, cur in zip(transit, transit[1:]):
                    j += (abs(cur - prev) - j) / 16
                jitters.append(j)
                low = min(transit)
                spreads += [t - low for t in transit]
            out[path] = {"expected": senders.get(path, 0) * self.sent, "received": received,
                         "jitter_ms": max(jitters) if jitters else None,
                         "p99_ms": percentile(spreads, 99), "max_ms": max(spreads) if spreads else None}
        return out


def probe_jitter(lan, pbx: NsPbx, seconds: float) -> dict:
    """Probe calls through the PBX and a direct stream, measured together (see the module doc)."""
    phones, sockets, dialogs = [], [], []
    probe = Probe()
    try:
        port = 41000
        for a_num, b_num in PROBES:
            a = RawPhone(a_num, pbx.secrets[a_num], pbx.registrar, sock=lan.phone.socket(), ip=lan.phone.addr)
            b = RawPhone(b_num, pbx.secrets[b_num], pbx.registrar, sock=lan.phone.socket(), ip=lan.phone.addr)
            phones += [a, b]
            assert a.register() == 200 and b.register() == 200, f"probe phones {a_num}, {b_num} not registered"
            ra, rb = lan.phone.socket(), lan.phone.socket()
            sockets += [ra, rb]
            ra.bind((lan.phone.addr, port))
            rb.bind((lan.phone.addr, port + 2))
            dialog, pbx_a, pbx_b, _ = raw_call(pbx, a, b, ra, rb, offer=sdp_body(lan.phone.addr, port),
                                               answer=sdp_body(lan.phone.addr, port + 2))
            dialogs.append((a, dialog))
            probe.add_sender("pbx", ra, pbx_a)
            probe.add_sender("pbx", rb, pbx_b)
            probe.add_receiver("pbx", ra)
            probe.add_receiver("pbx", rb)
            port += 4
        src, dst = lan.phone.socket(), lan.box_b.socket()
        sockets += [src, dst]
        src.bind((lan.phone.addr, port))
        dst.bind((lan.box_b.addr, port))
        probe.add_sender("direct", src, (lan.box_b.addr, port))
        probe.add_receiver("direct", dst)
        probe.run(seconds)
        stats = probe.stats()
        # the raw (sent, arrived) pairs per receiving socket, for a look at when delays happened
        out = pbx.data.parent / f"probe-{time.time_ns()}.json"
        out.write_text(json.dumps({f"{path}-{fd}": got for fd, (path, got, _) in probe.recv.items()}))
        if pbx.kernel_media == "auto":
            stats["pbx"]["in_kernel"] = pbx.status()["kernel_media"].get("bridges")
        return stats
    finally:
        for a, dialog in dialogs:
            try:
                a.bye(dialog)
            except Exception:
                pass
        for s in sockets:
            s.close()
        for p in phones:
            p.close()


# --- one mode, stepping up the loads --------------------------------------------------------------

def run_mode(lan, mode: str, plan: Plan, workdir: Path, steps: list[Step]) -> None:
    """Measure `mode` at each load; its steps are appended to `steps` as they are measured (kept
    when a later load fails)."""
    callers = caller_numbers(plan.ramp_rate)
    pbx = None
    sipps: list[Sipp] = []
    routes = []
    if mode == "routed":
        # the direct run's media and SIP through box A as a plain IP router (no nftables table)
        lan.box_a.run(["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=0",
                       "net.ipv4.conf.eth0.send_redirects=0"], check=True)
        routes = [(lan.phone, lan.box_b.addr), (lan.box_b, lan.phone.addr)]
        for host, to in routes:
            host.run(["ip", "route", "add", f"{to}/32", "via", lan.box_a.addr], check=True)
    if mode not in ("direct", "routed"):
        lan.box_a.run(["sysctl", "-qw", "net.ipv4.ip_forward=0"], check=True)
        extensions = [CALLEE, *callers, *[n for pair in PROBES for n in pair]]
        pbx = NsPbx(lan.box_a, workdir / mode / "data", extensions, mode, f"{lan.phone.addr}/32").start()
    try:
        if pbx is not None:
            time.sleep(1)
            callee_port = next(_media_ports)
            reg = ns_sipp(lan.phone, "register_auth.xml", pbx.registrar, port=callee_port,
                          users=[(CALLEE, pbx.secrets[CALLEE])], params={"expires": 3600},
                          workdir=workdir / mode, timeout=10).start().wait()
            if not reg.ok:
                raise RuntimeError(f"callee {CALLEE} could not register: {reg.responses}\n{reg.log_tail()}\n"
                                   f"{pbx.log_tail(20)}")
            uas_host, target = lan.phone, pbx.registrar
            users = [(n, pbx.secrets[n]) for n in callers]
        else:
            callee_port = 5060
            uas_host, target = lan.box_b, (lan.box_b.addr, 5060)
            users = [(n, None) for n in callers]
        budget, prev = 0.0, 0
        for n in plan.loads:
            budget += (n - prev) / plan.ramp_rate + 10 + plan.settle + plan.window + plan.probe_seconds + 8
            prev = n
        end_at = time.monotonic() + budget + 5
        uas = ns_sipp(uas_host, "uas_load.xml", port=callee_port, calls=10**6, workdir=workdir / mode,
                      timeout=budget + 60, extra_args=() if pbx else ("-fd", "1"))
        sipps.append(uas.start())
        media = [uas]
        prev = 0
        for n in plan.loads:
            step = Step(mode, n)
            steps.append(step)
            hold = end_at - time.monotonic()
            caller = ns_sipp(lan.phone, "uac_load.xml", target, users=users, service=CALLEE, calls=n - prev,
                             rate=plan.ramp_rate, duration_ms=hold * 1000, timeout=hold + 40,
                             workdir=workdir / mode)
            sipps.append(caller.start())
            media.append(caller)
            deadline = time.monotonic() + (n - prev) / plan.ramp_rate + 10
            up = lambda: pbx.answered() if pbx else _sipp_current_calls(uas)   # noqa: E731
            while up() < n and time.monotonic() < deadline:
                time.sleep(0.25)
            step.up = up()
            if step.up < n:
                step.note = f"only {step.up} of {n} calls answered"
                break
            time.sleep(plan.settle)
            if mode == "auto":
                deadline = time.monotonic() + 10
                while pbx.status()["kernel_media"].get("bridges", 0) < n and time.monotonic() < deadline:
                    time.sleep(0.25)
                step.in_kernel = pbx.status()["kernel_media"].get("bridges", 0)
                if step.in_kernel != n:
                    step.note = f"only {step.in_kernel} of {n} bridges in the kernel"
            groups = {"sipp": [s._proc.pid for s in sipps if s._proc.poll() is None],
                      "ksoftirqd": ksoftirqd_pids(), "bench": [os.getpid()]}
            if pbx is not None:
                groups["call service"] = [pbx.proc.pid]
                groups["kamailio"] = procstat.kamailio_pids(pbx.proc.pid)
                pbx_inodes = procstat.socket_inodes(pbx.proc.pid)
                box0 = udp_counters(pbx.proc.pid)
            phone_pid, uas_pid = caller._proc.pid, uas._proc.pid
            rx0 = {**udp_counters(uas_pid), **udp_counters(phone_pid)}
            step.load = "%.2f" % os.getloadavg()[0]
            window = Window(groups).start()
            time.sleep(plan.window)
            step.cpu = window.stop()
            step.seconds = window.seconds
            rx1 = {**udp_counters(uas_pid), **udp_counters(phone_pid)}
            nominal = n * PACKETS_PER_SECOND * step.seconds
            step.delivered_ab = (rx1[uas.media_port][1] - rx0[uas.media_port][1]) / nominal
            step.delivered_ba = sum(rx1[c.media_port][1] - rx0[c.media_port][1] for c in media[1:]) / nominal
            if pbx is not None:
                box1 = udp_counters(pbx.proc.pid)
                step.pbx_drops = sum(d - box0.get(p, (0, d))[1] for p, (ino, d) in box1.items()
                                     if ino in pbx_inodes)
                step.jitter = probe_jitter(lan, pbx, plan.probe_seconds)
            step.up_after = pbx.answered() if pbx else _sipp_current_calls(uas)
            print(f"{mode} {n} calls: {json.dumps(step.__dict__, default=str)}", file=sys.stderr, flush=True)
            if step.up_after < n:
                step.note = f"{n - step.up_after} calls ended during the window"
                break
            prev = n
        for caller in sipps[1:]:
            r = caller.wait(max(5.0, end_at - time.monotonic() + 30))
            if sipp_failures(r):
                steps[-1].note += f" caller SIPp: {sipp_failures(r)} " + \
                    "; ".join(summarize_sipp_errors(r.log_tail(ALL_LINES), 3))
    finally:
        for s in sipps:
            s.stop(grace=1)
        if pbx is not None:
            pbx.stop()
        for host, to in routes:
            host.run(["ip", "route", "del", f"{to}/32"])


def _sipp_current_calls(uas: Sipp) -> int:
    """Calls the direct run's SIPp UAS has up: from its -trace_stat file (written every 5 s by
    default; good enough to know the ramp is done)."""
    try:
        rows = uas.stat_file.read_text().splitlines()
        head, last = rows[0].split(";"), rows[-1].split(";")
        return int(dict(zip(head, last)).get("CurrentCall", 0))
    except (OSError, IndexError, ValueError):
        return 0


# --- the table ------------------------------------------------------------------------------------

def table(steps: list[Step]) -> str:
    direct = {s.calls: s for s in steps if s.mode == "direct" and s.cpu}
    routed = {s.calls: s for s in steps if s.mode == "routed" and s.cpu}
    head = ("| path | calls | in kernel | call service | per call | Kamailio | SIPp | ksoftirqd | machine | softirq | "
            "others | PBX per call: ours above direct | ours above routed, per call | machine above direct, per call | (machine - SIPp) per call | "
            "RTP a->b | RTP b->a | PBX drops | probe jitter PBX / direct ms (added) | probe p99 spread PBX / direct ms "
            "| load |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    names = {"off": "user-space relay", "auto": "kernel", "direct": "direct (no PBX)",
             "routed": "routed by box A (no PBX)"}
    f = lambda v, fmt: "-" if v is None else format(v, fmt)   # noqa: E731
    for s in steps:
        c = s.cpu
        if not c:
            lines.append(f"| {names[s.mode]} | {s.calls} | - | {s.note or 'not measured'} |")
            continue
        cs = c.get("call service")
        base = direct.get(s.calls) if s.mode != "direct" else None
        above = (ours(c) - ours(base.cpu)) / s.calls if base else None
        hop = routed.get(s.calls) if s.mode in ("off", "auto") else None
        above_routed = (ours(c) - ours(hop.cpu)) / s.calls if hop else None
        above_machine = (c["machine"] - base.cpu["machine"]) / s.calls if base else None
        pj, dj = (s.jitter.get("pbx") or {}), (s.jitter.get("direct") or {})
        jit = "-"
        if pj.get("jitter_ms") is not None and dj.get("jitter_ms") is not None:
            jit = f"{pj['jitter_ms']:.3f} / {dj['jitter_ms']:.3f} ({pj['jitter_ms'] - dj['jitter_ms']:+.3f})"
            lost = pj["expected"] - pj["received"]
            if lost:
                jit += f", {lost} of {pj['expected']} probe packets lost"
        spread = (f"{pj['p99_ms']:.3f} / {dj['p99_ms']:.3f}" if pj.get("p99_ms") is not None
                  and dj.get("p99_ms") is not None else "-")
        lines.append(
            f"| {names[s.mode]} | {s.calls} | {f(s.in_kernel, 'd') if s.mode == 'auto' else '-'} | "
            f"{f(cs, '.2f')} | {f(cs / s.calls if cs is not None else None, '.4f')} | "
            f"{f(c.get('kamailio'), '.2f')} | {c['sipp']:.1f} | {c['ksoftirqd']:.1f} | {c['machine']:.1f} | "
            f"{c['softirq']:.1f} | {c['others']:.1f} | {f(above, '.4f')} | {f(above_routed, '.4f')} | "
            f"{f(above_machine, '.4f')} | "
            f"{(c['machine'] - c['sipp']) / s.calls:.4f} | "
            f"{f(100 * s.delivered_ab, '.1f')}% | {f(100 * s.delivered_ba, '.1f')}% | "
            f"{s.pbx_drops if s.mode != 'direct' else '-'} | {jit} | {spread} | {s.load} |"
            + (f" {s.note}" if s.note else ""))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20 and 50 calls, 4 s windows")
    ap.add_argument("--loads", help="comma-separated concurrent calls (default 200,500)")
    ap.add_argument("--modes", default="direct,routed,off,auto", help="of direct, routed, off, auto")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = ap.parse_args(argv)
    plan = QUICK if args.quick else Plan()
    if args.loads:
        plan.loads = tuple(int(x) for x in args.loads.split(","))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if os.geteuid() != 0:
        print("tests.bench.kernel_media needs root (network namespaces, nftables)", file=sys.stderr)
        return 2
    for tool in ("sipp", "nft", "ip"):
        if shutil.which(tool) is None:
            print(f"tests.bench.kernel_media needs {tool} (apt-get install sip-tester nftables iproute2)",
                  file=sys.stderr)
            return 2
    workdir = Path(tempfile.mkdtemp(prefix="bench-kernel-media-"))
    steps: list[Step] = []
    try:
        with OfficeLan() as lan:
            for mode in args.modes.split(","):
                try:
                    run_mode(lan, mode, plan, workdir, steps)
                except (AssertionError, RuntimeError, subprocess.CalledProcessError) as exc:
                    print(f"{mode}: {exc}", file=sys.stderr)
                    steps.append(Step(mode, 0, note="failed: " + str(exc).splitlines()[0]))
    finally:
        if args.keep:
            print(f"work directory: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    m = procstat.machine()
    print(f"\n## Kernel media path (issue 16): {m['cpu']}, {m['os']}, SIPp {m['sipp']}, load {m['load']}\n")
    print("CPU in % of one core over the window; per call = divided by the calls; RTP = packets delivered "
          "to the SIPp sockets / nominal 50 pps per call and direction.\n")
    print(table(steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
