"""The loads of `make bench`, each against a freshly started PBX, all bounded in count and time.

Callers and callees are SIPp processes on loopback. The callers are extension 1000 and as many more
(1002, 1003, ...) as the edge's per-account limit on INVITEs needs at the load's rate, used in turn;
the callee is extension 1001: a SIPp REGISTER from port P, then a SIPp UAS on the same port P answers
every call (it copies Record-Route so in-dialog requests pass the edge). Every INVITE is
digest-authenticated by the edge (407, then INVITE with credentials), as a real phone's would be.

The trunk-to-extension load replaces the caller with a carrier: SIPp on its own loopback address
(CARRIER), the host of an IP trunk without registration, delivering calls for a DID whose inbound
route rings extension 1001. The edge knows the carrier by its source address and does not challenge.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path

from services.edge.config import EdgeConfig, EdgeError
from services.edge.rpc import KamailioRpc
from tests.pbxproc import PbxProcess
from tests.phones.sipp import Sipp, SippResult, free_port, run_sipp

from . import procstat

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
UAC_SETUP = HERE / "uac_setup.xml"     # caller without media, "pdd" timer INVITE -> 180
CARRIER_SETUP = HERE / "carrier_setup.xml"   # the same from a carrier on a trunk, no challenge
CARRIER_LOAD = "carrier_uac_load.xml"  # tests/sipp/: carrier call with rtp_stream, as uac_load.xml
CALLER, CALLEE = "1000", "1001"
CARRIER = "127.0.0.61"                 # the carrier's own loopback address = the IP trunk's host
DID = "441632960999"                   # the inbound route: DID -> extension CALLEE
CARRIER_CALLER_ID = "07700900555"
PACKETS_PER_SECOND = 50                # G.711 with 20 ms packets
ALL_LINES = 10**6                      # SIPp error logs are read whole, then folded
# The edge's limit on REGISTER + INVITE per authenticated account: (requests, seconds).
ACCOUNT_LIMIT: tuple[int, int] = next(f.default for f in fields(EdgeConfig) if f.name == "account_limit")
# Two RTP legs per call; ports go in steps of two. Room for ~1500 concurrent calls (the setup-rate
# steps hold rate x (hold + setup) calls at once: ~750 at 700/s).
RTP_RANGE = 6000
# Setups/s are stepped up to the first step that is not clean (issue 16: "setups/s to the first
# failure"); the trunk-to-extension setups go through the same steps.
SETUP_RATES = (100, 200, 300, 400, 500, 600, 700)


@dataclass
class Plan:
    call_steps: tuple[int, ...] = (50, 100, 200, 300)
    window: float = 20.0               # seconds of CPU measurement per step
    ramp_rate: int = 50                # new calls/s while stepping up
    settle: float = 2.0                # after the last call of a step is up, before measuring
    memory_at: int = 200               # per-call memory from the step with this many calls
    rates: tuple[int, ...] = SETUP_RATES
    rate_seconds: float = 10.0
    hold_ms: int = 1000                # call length in the setup-rate and post-dial-delay loads
    pdd_rate: int = 100
    pdd_seconds: float = 10.0
    baseline_seconds: float = 5.0
    trunk_call_steps: tuple[int, ...] = (100,)    # trunk -> extension: concurrent calls with RTP
    trunk_rates: tuple[int, ...] = SETUP_RATES  # ... and setups/s (same hold time and step length)


QUICK = Plan(call_steps=(10, 20), window=4.0, ramp_rate=20, memory_at=20, rates=(20, 50),
             rate_seconds=3.0, pdd_rate=20, pdd_seconds=3.0, baseline_seconds=2.0,
             trunk_call_steps=(10,), trunk_rates=(20, 50))


@dataclass
class Trouble:
    """What went wrong under load, quoted as seen (SIPp counters, SIPp errors, PBX log lines)."""
    what: str
    sipp_failures: dict = field(default_factory=dict)
    sipp_errors: str = ""
    pbx_log: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [self.what]
        if self.sipp_failures:
            out.append("SIPp counters: " + ", ".join(f"{k}={v}" for k, v in self.sipp_failures.items()))
        if self.sipp_errors:
            out += ["SIPp error log:"] + ["  " + s for s in summarize_sipp_errors(self.sipp_errors)]
        if self.pbx_log:
            out += ["DATA/pbx.log:"] + ["  " + s for s in summarize_log(self.pbx_log)]
        return out


_ABORT = re.compile(r"(Aborting call on unexpected message|Dead call)[^:]*?: ?(?:while expecting '(\w+)' "
                    r"\(index \d+\), )?received '([^\r\n]*)\r?\n(?:.*\n){0,8}?CSeq: ([^\r\n]*)")


def summarize_sipp_errors(text: str, keep: int = 8) -> list[str]:
    """SIPp's error log folded into 'N x what was expected / what came' lines."""
    counts: dict[str, int] = {}
    for m in _ABORT.finditer(text):
        what, expected, got, cseq = m.groups()
        line = f"{what.lower()}: " + (f"expected {expected}, " if expected else "") + f"got '{got}' ({cseq})"
        counts[line] = counts.get(line, 0) + 1
    if not counts:
        return text.strip().splitlines()[-keep:]
    return [f"{n} x {line}" for line, n in sorted(counts.items(), key=lambda kv: -kv[1])[:keep]]


def summarize_log(lines: list[str], keep: int = 10) -> list[str]:
    """Log lines without timestamps and process ids, counted, first seen first."""
    counts: dict[str, int] = {}
    first: dict[str, str] = {}
    for line in lines:
        key = re.sub(r"^\S+ \S+ ", "", line)                 # date and time
        key = re.sub(r"\b\d+\(\d+\)", "N(pid)", key)            # kamailio: rank(pid)
        key = re.sub(r"127\.0\.0\.1:\d+|\('127\.0\.0\.1', \d+\)", "127.0.0.1:PORT", key)
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, line[:23])
    return [f"{n} x {key}" + (f" (first {first[key]})" if n > 1 else f" ({first[key]})")
            for key, n in list(counts.items())[:keep]]


# --- the PBX under test ------------------------------------------------------------------------------

def caller_numbers(rate: float) -> list[str]:
    """Caller extensions for a load of `rate` INVITEs/s, used in turn: CALLER, then 1002, 1003, ...
    Each account may send ACCOUNT_LIMIT INVITEs (after the challenge) per window; four times the
    accounts that needs keeps every one at a quarter of its limit, whatever the window's phase."""
    requests, seconds = ACCOUNT_LIMIT
    n = max(1, math.ceil(4 * rate * seconds / requests))
    return [CALLER] + [str(int(CALLEE) + i) for i in range(1, n)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _query_socket(path: Path) -> dict:
    """One control command ("status") on a call service's own socket (DATA/run/control-I.sock)."""
    import json
    import socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(b'{"cmd": "status"}\n')
        with s.makefile("rb") as f:
            return json.loads(f.readline())


class BenchPbx:
    """A fresh PBX with caller extensions for `caller_rate` calls/s (caller_numbers) and a registered
    SIPp callee port; with trunk=True also an IP trunk whose host is CARRIER (no registration) and
    the inbound route DID -> CALLEE."""

    def __init__(self, workdir: Path, name: str, caller_rate: float = 0, trunk: bool = False,
                 call_services: int = 1):
        self.workdir = workdir / name
        self.callers = caller_numbers(caller_rate)
        self.call_services = call_services    # > 1: `pbx run --call-services N` (decision 025)
        self.pbx = PbxProcess(self.workdir / "data", extensions=[CALLEE, *self.callers],
                              trusted=("127.0.0.1",), rtp_size=RTP_RANGE,
                              args=["--call-services", str(call_services)] if call_services > 1 else ())
        self.callee_port = free_port()
        if trunk:
            # The edge matches a trunk's calls by source IP, any port: each carrier SIPp has its own.
            self.pbx.store.add_trunk("carrier", f"{CARRIER}:{free_port('udp', CARRIER)}", register=False)
            self.pbx.store.add_inbound_route(DID, f"extension:{CALLEE}", name="bench DID")
        self._log_mark = 0

    def start(self) -> "BenchPbx":
        self.pbx.start()
        r = run_sipp("register_auth.xml", self.pbx.registrar, port=self.callee_port,
                     users=[(CALLEE, self.pbx.secrets[CALLEE])], params={"expires": 3600},
                     workdir=self.workdir, timeout=10)
        if not r.ok:
            raise RuntimeError(f"callee {CALLEE} could not register: responses {r.responses}\n"
                               f"{r.log_tail()}\n{self.pbx.log_tail(20)}")
        return self

    def stop(self) -> None:
        self.pbx.stop()

    @property
    def caller(self) -> list[tuple[str, str]]:
        """SIPp's injection users: each call takes the next caller extension (SEQUENTIAL)."""
        return [(n, self.pbx.secrets[n]) for n in self.callers]

    def pids(self) -> dict[str, list[int]]:
        pid = self.pbx.proc.pid
        more = [p for p in procstat.descendants(pid) if b"--instance" in _cmdline(p)]   # call services 2..N
        return {"call service": [pid, *more], "kamailio": procstat.kamailio_pids(pid)}

    def _calls(self) -> list[dict]:
        """The calls up in every call service (2..N answer on DATA/run/control-I.sock)."""
        calls = list(self.pbx.status()["calls"])
        if self.call_services > 1:
            from services.runner import instance_socket
            for i in range(2, self.call_services + 1):
                try:
                    calls += _query_socket(instance_socket(self.pbx.data, i))["calls"]
                except (OSError, ValueError):    # restarting: it holds no call
                    pass
        return calls

    def answered(self) -> int:
        return sum(1 for c in self._calls() if c["state"] == "answered")

    def active(self) -> int:
        return len(self._calls())

    def wait_active(self, want, timeout: float) -> int:
        """Poll until `want(count of answered calls)` holds or timeout; returns the last count."""
        deadline = time.monotonic() + timeout
        n = self.answered()
        while not want(n) and time.monotonic() < deadline:
            time.sleep(0.25)
            n = self.answered()
        return n

    def wait_idle(self, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        n = self.active()
        while n and time.monotonic() < deadline:
            time.sleep(0.25)
            n = self.active()
        return n

    def edge_shm(self) -> dict:
        """Kamailio's shared memory pool (transactions live there): total and peak use, MB."""
        run_dir = self.pbx.data / "edge"
        try:
            m = KamailioRpc(run_dir / "kamailio_rpc.fifo", run_dir).call("core.shmmem")
        except EdgeError as exc:
            logger.warning("edge shared memory not readable: %s", exc)
            return {}
        return {k: m[k] / 2**20 for k in ("total", "real_used", "max_used") if k in m}

    def mark_log(self) -> None:
        self._log_mark = self.pbx.log_path.stat().st_size

    def log_problems(self, pattern: str = r"\b(ERROR|CRITICAL)\b|Traceback|ERROR:") -> list[str]:
        """Lines of DATA/pbx.log since mark_log() that match pattern (default: errors)."""
        with open(self.pbx.log_path, "rb") as f:
            f.seek(self._log_mark)
            text = f.read().decode(errors="replace")
        return [line for line in text.splitlines() if re.search(pattern, line)]

    def log_warnings(self) -> list[str]:
        return self.log_problems(r"\bWARNING\b|WARNING:")


def sipp_failures(r: SippResult) -> dict:
    """Non-zero failure counters of a SIPp run (cumulative), plus retransmissions."""
    out = {k.removesuffix("(C)"): int(v) for k, v in r.stats.items()
           if k.endswith("(C)") and k.startswith(("Failed", "DeadCall", "OutOfCall")) and v.isdigit()
           and int(v)}
    if r.unexpected:
        out["unexpected messages"] = r.unexpected
    if r.returncode not in (0, None):
        out["exit code"] = r.returncode
    return out


def sipp_pids() -> list[int]:
    """The SIPp processes this bench started (load generators share the two cores with the PBX)."""
    return [p for p in procstat.descendants(os.getpid()) if procstat.comm(p) == "sipp"]


def retransmissions(r: SippResult) -> int:
    return int(r.stats.get("Retransmissions(C)") or 0)


# --- 1. concurrent bridged calls with RTP both ways ---------------------------------------------------

@dataclass
class CallStep:
    calls: int
    up: int = 0                         # answered calls when the window started
    up_after: int = 0                   # ... and when it ended
    cpu: dict = field(default_factory=dict)   # % of one core: call service, kamailio, sipp, machine
    seconds: float = 0.0
    delivered_ab: float | None = None   # RTP packets the callee received / nominal 50 pps per call
    delivered_ba: float | None = None
    pbx_drops: int = 0                  # datagrams dropped on the PBX's RTP sockets in the window
    memory: dict = field(default_factory=dict)  # process group -> Memory, calls up

    @property
    def held(self) -> bool:
        return self.up == self.calls and self.up_after == self.calls

    @property
    def per_call(self) -> float:
        return self.cpu.get("call service", 0.0) / self.calls


@dataclass
class CallsResult:
    steps: list[CallStep] = field(default_factory=list)
    idle: dict = field(default_factory=dict)      # process group -> Memory, before any call
    idle_cpu: dict = field(default_factory=dict)  # process group -> % of one core, before any call
    event_loop: str = ""                          # what the call service runs on: uvloop or asyncio
    callers_failed: int = 0
    callee_failed: int = 0
    retransmissions: int = 0
    trouble: list[Trouble] = field(default_factory=list)


def concurrent_calls(workdir: Path, plan: Plan) -> CallsResult:
    res = CallsResult()
    bench = BenchPbx(workdir, "calls", caller_rate=plan.ramp_rate).start()
    try:
        time.sleep(1)  # let Kamailio's workers and the call service finish starting
        pids = bench.pids()
        idle = procstat.CpuWindow(pids).start()
        time.sleep(3)
        res.idle_cpu = idle.stop()
        res.idle = {name: procstat.memory(p) for name, p in pids.items()}
        res.event_loop = "uvloop" if procstat.maps(bench.pbx.proc.pid, "uvloop") else "asyncio"
        bench.mark_log()

        def caller(count: int, hold: float) -> Sipp:
            return Sipp("uac_load.xml", bench.pbx.registrar, users=bench.caller, service=CALLEE,
                        calls=count, rate=plan.ramp_rate, duration_ms=hold * 1000,
                        timeout=hold + 40, workdir=bench.workdir)
        step_up_calls(bench, plan, plan.call_steps, caller, res)
    finally:
        bench.stop()
    return res


def step_up_calls(bench: BenchPbx, plan: Plan, steps: tuple[int, ...], new_caller, res: CallsResult,
                  label: str = "") -> None:
    """Add calls at plan.ramp_rate up to each of `steps` (new_caller(count, hold seconds) -> a SIPp
    caller, not started), measure each step, then let them all end together; results into res."""
    callers: list[Sipp] = []
    uas = None
    try:
        # All calls end together after the last window: each caller's hold time runs to that end.
        prev, budget = 0, 0.0
        for n in steps:
            budget += (n - prev) / plan.ramp_rate + 8 + plan.settle + plan.window
            prev = n
        end_at = time.monotonic() + budget + 3
        uas = Sipp("uas_load.xml", port=bench.callee_port, calls=10**6, workdir=bench.workdir,
                   timeout=budget + 60).start()
        media_ports = {uas.media_port}
        prev = 0
        for n in steps:
            step = CallStep(n)
            res.steps.append(step)
            hold = end_at - time.monotonic()
            caller = new_caller(n - prev, hold).start()
            callers.append(caller)
            media_ports.add(caller.media_port)
            ramp = (n - prev) / plan.ramp_rate
            step.up = bench.wait_active(lambda k: k >= n, ramp + 8)
            if step.up < n:
                res.trouble.append(Trouble(
                    f"{label}{n} concurrent calls: only {step.up} answered after {ramp + 8:.0f} s",
                    pbx_log=bench.log_problems()))
                break
            time.sleep(plan.settle)
            step_pids = bench.pids() | {"sipp": sipp_pids()}
            pbx_sockets = procstat.socket_inodes(bench.pbx.proc.pid)
            drops0 = procstat.udp_drops(inodes=pbx_sockets)
            recv0 = {p: procstat.udp_drops([p]) for p in media_ports}
            window = procstat.CpuWindow(step_pids).start()
            time.sleep(plan.window)
            step.cpu = window.stop()
            step.seconds = window.seconds
            recv1 = {p: procstat.udp_drops([p]) for p in media_ports}
            step.pbx_drops = procstat.udp_drops(inodes=pbx_sockets) - drops0
            # SIPp never reads RTP on its rtp_stream socket: once its receive buffer is full, every
            # datagram that reaches it is counted as a drop, so the rise counts packets delivered.
            nominal = n * PACKETS_PER_SECOND * step.seconds
            step.delivered_ab = (recv1[uas.media_port] - recv0[uas.media_port]) / nominal
            step.delivered_ba = sum(recv1[c.media_port] - recv0[c.media_port] for c in callers) / nominal
            step.memory = {name: procstat.memory(step_pids[name]) for name in ("call service", "kamailio")}
            step.up_after = bench.answered()
            logger.info("%s%d calls: call service %.1f %% of a core (%.3f %%/call), kamailio %.1f %%, "
                        "machine %.0f %%", label, n, step.cpu["call service"], step.per_call,
                        step.cpu["kamailio"], step.cpu["machine"])
            if step.up_after < n:
                res.trouble.append(Trouble(f"{label}{n} concurrent calls: {n - step.up_after} calls ended "
                                           "during the measurement window", pbx_log=bench.log_problems()))
                break
            prev = n
        for caller in callers:
            r = caller.wait(max(5.0, end_at - time.monotonic() + 30))
            res.callers_failed += r.failed
            res.retransmissions += retransmissions(r)
            if sipp_failures(r):
                res.trouble.append(Trouble(f"{label}caller SIPp ({r.successful} calls completed)",
                                           sipp_failures(r), r.log_tail(ALL_LINES)))
        bench.wait_idle()
        callee = uas.stop()
        res.callee_failed = callee.failed
        if sipp_failures(callee):
            res.trouble.append(Trouble(f"{label}callee SIPp ({callee.successful} calls completed)",
                                       sipp_failures(callee), callee.log_tail(ALL_LINES)))
        problems = bench.log_problems() + bench.log_warnings()
        if problems:
            what = f"{label}concurrent-call load" if label else "the concurrent-call load"
            res.trouble.append(Trouble(f"PBX log errors and warnings during {what}", pbx_log=problems))
    finally:
        for s in callers + ([uas] if uas else []):
            s.stop(grace=1)


# --- 2. call setups per second, 3. post-dial delay ---------------------------------------------------

@dataclass
class RateStep:
    rate: int
    calls: int
    successful: int = 0
    failed: int = 0
    callee_failed: int = 0
    retransmissions: int = 0
    seconds: float = 0.0
    cpu: dict = field(default_factory=dict)
    no_180: int = 0                     # calls answered with no 180 reaching the caller first
    edge_shm: dict = field(default_factory=dict)  # Kamailio shm after the step: total, max_used MB
    log_problems: int = 0               # ERROR lines in DATA/pbx.log during the step
    log_warnings: int = 0

    def cpu_ms(self, group: str) -> float | None:
        """ms of CPU of a process group per call set up in this step (the window spans the step)."""
        if group not in self.cpu or not self.calls:
            return None
        return self.cpu[group] / 100 * self.seconds * 1000 / self.calls

    @property
    def clean(self) -> bool:
        return (self.successful == self.calls and self.failed == 0 and self.callee_failed == 0
                and self.log_problems == 0)


@dataclass
class Delay:
    samples: int = 0
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    max: float | None = None
    failed: int = 0
    rtd_p50: float | None = None     # SIPp's own timer, 4 ms steps
    rtd_p99: float | None = None


@dataclass
class SetupResult:
    steps: list[RateStep] = field(default_factory=list)
    pdd: Delay = field(default_factory=Delay)
    baseline: Delay = field(default_factory=Delay)   # the same SIPp pair, peer to peer
    trouble: list[Trouble] = field(default_factory=list)

    @property
    def best_clean_rate(self) -> int:
        best = 0
        for s in self.steps:
            if not s.clean:
                break
            best = s.rate
        return best

    @property
    def first_failure(self) -> int | None:
        """The first setup rate that was not clean (None: every step tried was)."""
        return next((s.rate for s in self.steps if not s.clean), None)


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, -(-len(ordered) * p // 100) - 1))
    return ordered[int(k)]


def read_rtd(workdir: Path, name: str = "pdd") -> list[float]:
    """Per-call response times (ms) of timer `name` from SIPp's -trace_rtt files (SIPp's clock
    advances in 4 ms steps on this kernel, so these serve as a cross-check only)."""
    out = []
    for path in workdir.glob("*_rtt.csv"):
        for line in path.read_text().splitlines()[1:]:
            cols = line.split(";")
            if len(cols) == 3 and cols[2] == name:
                out.append(float(cols[1]))
    return out


_ENTRY = re.compile(r"^-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)$", re.M)


def read_post_dial_delays(workdir: Path) -> list[float]:
    """Per-call INVITE -> 180 times (ms) from SIPp's -trace_msg log, whose entries carry microsecond
    timestamps: from the first sending of the INVITE that the 180 answers (same CSeq: the one with
    credentials behind the edge) to the first 180 received."""
    sent: dict[tuple[str, str], datetime] = {}
    delays: dict[str, float] = {}
    for path in workdir.glob("*_messages.log"):
        parts = _ENTRY.split(path.read_text(errors="replace"))
        for stamp, body in zip(parts[1::2], parts[2::2]):
            lines = body.strip().splitlines()
            if len(lines) < 3:
                continue
            first = lines[2] if not lines[1].strip() else lines[1]
            call_id = _header(lines, "call-id")
            cseq = _header(lines, "cseq").split(" ")[0]
            when = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f")
            if lines[0].startswith("UDP message sent") and first.startswith("INVITE "):
                sent.setdefault((call_id, cseq), when)
            elif (lines[0].startswith("UDP message received") and first.startswith("SIP/2.0 180")
                  and call_id not in delays and (call_id, cseq) in sent):
                delays[call_id] = (when - sent[(call_id, cseq)]).total_seconds() * 1000
    return list(delays.values())


def _header(lines: list[str], name: str) -> str:
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return ""


def _delay(r: SippResult) -> Delay:
    values = read_post_dial_delays(r.workdir)
    rtd = read_rtd(r.workdir)
    return Delay(len(values), percentile(values, 50), percentile(values, 90), percentile(values, 99),
                 max(values) if values else None, r.failed, percentile(rtd, 50), percentile(rtd, 99))


def _callee(bench: BenchPbx, calls: int, seconds: float) -> Sipp:
    return Sipp("uas_answer.xml", port=bench.callee_port, calls=calls, params={"answer_delay": 0},
                workdir=bench.workdir / f"callee-{time.monotonic_ns()}", timeout=seconds + 30).start()


def setups_and_delay(workdir: Path, plan: Plan) -> SetupResult:
    res = SetupResult()
    bench = BenchPbx(workdir, "setups", caller_rate=max(plan.rates + (plan.pdd_rate,))).start()
    try:
        time.sleep(1)
        caller = dict(scenario=UAC_SETUP, users=bench.caller, service=CALLEE)
        post_dial_delay(bench, plan, caller, dict(caller, users=[(CALLER, None)]), res)
        bench.wait_idle()
        setup_rates(bench, plan, plan.rates, caller, res)
    finally:
        bench.stop()
    return res


def post_dial_delay(bench: BenchPbx, plan: Plan, caller: dict, direct: dict, res: SetupResult,
                    label: str = "") -> None:
    """3. INVITE (with credentials behind the edge) -> 180, callee rings at once, at plan.pdd_rate
    through the PBX; then the same SIPp pair peer to peer (`direct`: the caller's Sipp arguments
    without credentials). `caller` holds scenario and Sipp keyword arguments."""
    rtt = ["-trace_rtt", "-rtt_freq", "1", "-trace_msg"]
    n = int(plan.pdd_rate * plan.pdd_seconds)
    uas = _callee(bench, 10**6, plan.pdd_seconds + plan.baseline_seconds + 20)
    try:
        kw = dict(caller)
        r = run_sipp(kw.pop("scenario"), bench.pbx.registrar, calls=n, rate=plan.pdd_rate,
                     duration_ms=plan.hold_ms, timeout=plan.pdd_seconds + 30,
                     workdir=bench.workdir / "pdd", extra_args=rtt, **kw)
        res.pdd = _delay(r)
        if sipp_failures(r):
            res.trouble.append(Trouble(f"{label}post-dial-delay load, caller", sipp_failures(r),
                                       r.log_tail(ALL_LINES)))
        # the same two SIPp processes without the PBX: what SIPp and loopback add by themselves
        kw = dict(direct)
        r = run_sipp(kw.pop("scenario"), ("127.0.0.1", bench.callee_port),
                     calls=int(plan.pdd_rate * plan.baseline_seconds), rate=plan.pdd_rate,
                     duration_ms=plan.hold_ms, timeout=plan.baseline_seconds + 30,
                     workdir=bench.workdir / "direct", extra_args=rtt, **kw)
        res.baseline = _delay(r)
    finally:
        uas.stop()


def setup_rates(bench: BenchPbx, plan: Plan, rates: tuple[int, ...], caller: dict, res: SetupResult,
                label: str = "") -> None:
    """2. Step the rate of call setups (no RTP) up until a step is not clean."""
    for rate in rates:
        step = RateStep(rate, int(rate * plan.rate_seconds))
        res.steps.append(step)
        bench.mark_log()
        uas = _callee(bench, 10**6, plan.rate_seconds + 30)
        window = procstat.CpuWindow(bench.pids()).start()
        try:
            kw = dict(caller)
            r = run_sipp(kw.pop("scenario"), bench.pbx.registrar, calls=step.calls, rate=rate,
                         duration_ms=plan.hold_ms,
                         timeout=plan.rate_seconds + plan.hold_ms / 1000 + 20,
                         workdir=bench.workdir / f"rate-{rate}", **kw)
            step.cpu = window.stop()
            step.seconds = window.seconds
            left = bench.wait_idle()
        finally:
            callee = uas.stop()
        step.edge_shm = bench.edge_shm()
        step.successful, step.failed = r.successful, r.failed
        step.no_180 = max(0, r.successful - r.responses.get(180, 0))
        step.callee_failed = callee.failed
        step.retransmissions = retransmissions(r) + retransmissions(callee)
        problems = bench.log_problems()
        step.log_problems = len(problems)
        warnings = bench.log_warnings()
        step.log_warnings = len(warnings)
        logger.info("%s%d setups/s: %d/%d calls ok, %d failed, %d retransmissions, call service "
                    "%.0f %% of a core", label, rate, step.successful, step.calls, step.failed,
                    step.retransmissions, step.cpu["call service"])
        if left:
            # the log lines go with the failure below when there is one
            res.trouble.append(Trouble(f"{label}{rate} setups/s: {left} calls still up in the PBX 15 s "
                                       "after the last BYE", pbx_log=[] if problems else warnings))
            step.log_problems += 1
        if not step.clean:
            failures = sipp_failures(r)
            failures.update({f"callee {k}": v for k, v in sipp_failures(callee).items()})
            res.trouble.append(Trouble(
                f"{label}{rate} setups/s: {step.successful} of {step.calls} calls completed, "
                f"{step.failed} failed at the caller, {step.callee_failed} at the callee",
                failures, r.log_tail(ALL_LINES) + "\n" + callee.log_tail(ALL_LINES),
                problems + warnings))
            break
        if step.no_180:
            res.trouble.append(Trouble(
                f"{label}{rate} setups/s: {step.no_180} calls were answered (200) without a 180 reaching "
                "the caller first (counted, not failed: a phone accepts that)"))
        if warnings:
            res.trouble.append(Trouble(f"{label}{rate} setups/s (clean): warnings in the PBX log",
                                       pbx_log=warnings))


# --- 5. trunk to extension: the same measures with a carrier on an IP trunk as the caller ------------

@dataclass
class TrunkResult:
    calls: CallsResult = field(default_factory=CallsResult)    # concurrent calls with RTP
    setups: SetupResult = field(default_factory=SetupResult)   # setups/s and post-dial delay

    @property
    def trouble(self) -> list[Trouble]:
        return self.calls.trouble + self.setups.trouble


TRUNK_LABEL = "trunk -> extension, "


def trunk_calls(workdir: Path, plan: Plan) -> TrunkResult:
    """A SIPp carrier on CARRIER calls DID (inbound route -> CALLEE, answered by SIPp): concurrent
    calls with RTP both ways, then post-dial delay, then setups/s, all against one fresh PBX."""
    res = TrunkResult()
    bench = BenchPbx(workdir, "trunk", trunk=True).start()
    carrier = dict(local_ip=CARRIER, service=DID, params={"caller": CARRIER_CALLER_ID})
    try:
        time.sleep(1)  # as in concurrent_calls: the idle row, then the steps
        pids = bench.pids()
        idle = procstat.CpuWindow(pids).start()
        time.sleep(3)
        res.calls.idle_cpu = idle.stop()
        res.calls.idle = {name: procstat.memory(p) for name, p in pids.items()}
        res.calls.event_loop = "uvloop" if procstat.maps(bench.pbx.proc.pid, "uvloop") else "asyncio"
        bench.mark_log()

        def caller(count: int, hold: float) -> Sipp:
            return Sipp(CARRIER_LOAD, bench.pbx.registrar, calls=count, rate=plan.ramp_rate,
                        duration_ms=hold * 1000, timeout=hold + 40, workdir=bench.workdir, **carrier)
        step_up_calls(bench, plan, plan.trunk_call_steps, caller, res.calls, TRUNK_LABEL)
        setup = dict(carrier, scenario=CARRIER_SETUP)
        post_dial_delay(bench, plan, setup, setup, res.setups, TRUNK_LABEL)
        bench.wait_idle()
        setup_rates(bench, plan, plan.trunk_rates, setup, res.setups, TRUNK_LABEL)
    finally:
        bench.stop()
    return res


# --- 4. memory -----------------------------------------------------------------------------------------

def footprint(groups: dict) -> float:
    """MB the PBX holds: RSS of the call service (one process: RSS is what it holds, its shared
    libraries counted in full) + PSS of Kamailio (its forked workers share one memory pool that RSS
    would count once per worker). PSS of the call service would move with unrelated Python processes
    on the machine that share its libraries."""
    return (groups["call service"].rss_kb + groups["kamailio"].pss_kb) / 1024


def per_call_memory(calls: CallsResult, at: int) -> tuple[CallStep | None, float | None]:
    """(step with `at` calls, MB per call above idle) if that step was measured."""
    step = next((s for s in calls.steps if s.calls == at and s.memory), None)
    if step is None or not calls.idle:
        return None, None
    return step, (footprint(step.memory) - footprint(calls.idle)) / at
