"""Soak: many short calls through a freshly started `pbx run`, the memory of every PBX process sampled.

    .venv/bin/python -m tests.bench.soak                     # 100,000 calls at 150/s (`make soak`)
    .venv/bin/python -m tests.bench.soak --calls 10000       # the short run of `make bench`

All services of `pbx run` are up: the call service, the Kamailio edge, the web UI and the line service
(one FXS port on the line board simulator, which stands in for the hardware and is shown but not
counted). The web UI runs on demand (decision 026): it is sampled once while it serves, then idle is
sampled after it stopped (--web-idle-exit 5 s here, 600 s by default), as on a box at rest. Calls come in blocks of --every calls (10,000 by default): SIPp callers place them at
--rate calls/s, each held --hold-ms ms; most without RTP (tests/bench/uac_setup.xml -> uas_answer.xml:
the load is setup and teardown), a share (--rtp-share) with G.711 both ways (uac_load.xml ->
uas_load.xml, to a second callee). After each block the calls drain, the call service's per-call tables
(sessions, channels, transactions: `pbx status`) are waited back to zero, then every process's memory
is read from /proc/PID/smaps_rollup. Verdict: total growth from the first block to the last within
5 %, idle < 120 MB for all services together, each resident page counted once (issue 16).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.phones.sipp import Sipp, free_port, run_sipp

from . import phases, procstat

logger = logging.getLogger(__name__)

RTP_CALLEE = "1900"       # the second callee, answering the calls with RTP (uas_load.xml)
LINE_EXTENSION = "1950"   # the FXS line port's extension: makes `pbx run` start the line service
GROWTH_LIMIT = 5.0        # % from the first block to the last
IDLE_LIMIT_MB = 120.0
WEB_IDLE_EXIT_S = 5       # the web UI stops this long after its last request (decision 026)
# After a block, calls end and the tables empty within this: channels linger 8 s; a call whose BYE was
# lost (a failed SIPp call under load) ends at the RTP timeout, 60 s.
DRAIN_S = 75.0
# Process groups: the call service is `pbx run` itself; the others are found among its descendants.
COUNTED = ("call service", "kamailio", "web UI", "line service")


def process_groups(pbx_pid: int) -> dict[str, list[int]]:
    """PBX processes by part. Python parts are told apart by their command line."""
    out: dict[str, list[int]] = {"call service": [pbx_pid], "kamailio": [], "web UI": [],
                                 "line service": [], "line board simulator": []}
    for pid in procstat.descendants(pbx_pid):
        if procstat.comm(pid) == "kamailio":
            out["kamailio"].append(pid)
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if b"webui" in argv:
            out["web UI"].append(pid)
        elif b"hw.lines.service" in argv:
            out["line service"].append(pid)
        elif b"hw.lines.simulator" in argv:
            out["line board simulator"].append(pid)
    return out


@dataclass
class Sample:
    label: str
    calls: int                                   # calls placed so far
    memory: dict = field(default_factory=dict)   # group -> procstat.Memory
    procs: dict = field(default_factory=dict)    # group -> number of processes
    tables: dict = field(default_factory=dict)   # the call service's per-call tables
    kinds: dict = field(default_factory=dict)    # the call service's RSS by mapping (smaps_kinds)
    python_blocks: int | None = None             # live: memory blocks the call service's Python holds
    edge_shm: dict = field(default_factory=dict) # live: Kamailio's shared pool in use (real_used), peak, MB
    load: float = 0.0
    union: float | None = None                   # every counted process together, each page once (MB)

    def mb(self, group: str) -> float:
        """What a part holds: RSS for a single Python process (its libraries counted in full), PSS
        summed for Kamailio (its forked workers share one memory pool, which RSS counts per worker)."""
        m = self.memory.get(group)
        if m is None:
            return 0.0
        return m.pss_mb if group == "kamailio" else m.rss_mb

    @property
    def total(self) -> float:
        return sum(self.mb(g) for g in COUNTED)

    @property
    def total_pss(self) -> float:
        return sum(self.memory[g].pss_mb for g in COUNTED if g in self.memory)


@dataclass
class SoakResult:
    calls: int = 0
    rate: float = 0
    rtp_calls: int = 0
    successful: int = 0
    failed: int = 0
    callee_failed: int = 0
    seconds: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    completed: int = 0                                   # `pbx status` completed_calls at the end
    leftover: dict = field(default_factory=dict)         # tables not empty after a drain
    trouble: list[phases.Trouble] = field(default_factory=list)
    services: list[str] = field(default_factory=list)
    web_up: Sample | None = None                         # before the idle sample, the web UI serving

    @property
    def idle(self) -> Sample | None:
        return self.samples[0] if self.samples else None

    @property
    def growth(self) -> tuple[Sample, Sample, float] | None:
        """(first block, last sample, % growth of the total) over the churn."""
        loaded = [s for s in self.samples if s.calls]
        if len(loaded) < 2:
            return None
        first, last = loaded[0], loaded[-1]
        return first, last, 100 * (last.total - first.total) / first.total

    @property
    def clean(self) -> bool:
        """Every call completed and nothing left in the call service's tables."""
        return (self.failed == 0 and self.callee_failed == 0 and self.successful == self.calls
                and not self.leftover)

    @property
    def idle_mb(self) -> float | None:
        """Idle memory of all services: their resident pages together, each once (the summed RSS
        when the frames cannot be read)."""
        if self.idle is None:
            return None
        return self.idle.union if self.idle.union is not None else self.idle.total

    @property
    def goals_met(self) -> bool:
        g = self.growth
        return (g is not None and g[2] <= GROWTH_LIMIT and self.idle_mb is not None
                and self.idle_mb < IDLE_LIMIT_MB)


def sample(bench: phases.BenchPbx, label: str, calls: int) -> Sample:
    groups = process_groups(bench.pbx.proc.pid)
    s = Sample(label, calls, {g: procstat.memory(p) for g, p in groups.items() if p},
               {g: len(p) for g, p in groups.items()}, load=_load())
    s.union = procstat.resident_union_mb([p for g in COUNTED for p in groups[g]])
    s.kinds = smaps_kinds(bench.pbx.proc.pid)
    s.edge_shm = bench.edge_shm()
    try:
        st = bench.pbx.status()
        s.tables = st.get("tables", {})
        s.python_blocks = st.get("python_blocks")
    except Exception as exc:  # the control socket: memory still counts, the tables say "?"
        logger.warning("pbx status not readable: %s", exc)
    logger.info("%s (%d calls): total %.1f MB, %s; call service by mapping %s; Python blocks %s; "
                "edge shm %s; tables %s", label, calls, s.total, ", ".join(f"{g} {s.mb(g):.1f}" for g in s.memory),
                ", ".join(f"{k} {v:.1f}" for k, v in s.kinds.items()), s.python_blocks,
                {k: round(v, 1) for k, v in s.edge_shm.items()}, s.tables)
    return s


def smaps_kinds(pid: int) -> dict[str, float]:
    """Rss (MB) of a process by kind of mapping: heap (brk: the main malloc arena), anon (mmap'd:
    thread malloc arenas, Python's arenas, big buffers), file (code and data of libraries)."""
    out = {"heap": 0.0, "anon": 0.0, "file": 0.0}
    kind = "anon"
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return out
    for line in text.splitlines():
        if line[:1] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
            parts = line.split(None, 5)
            name = parts[5] if len(parts) > 5 else ""
            kind = "heap" if name == "[heap]" else ("file" if name.startswith("/") else "anon")
        elif line.startswith("Rss:"):
            out[kind] += int(line.split()[1]) / 1024
    return out


def _load() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def drain(bench: phases.BenchPbx, timeout: float = DRAIN_S) -> dict:
    """Wait until no call is up and every per-call table is empty; returns what is left ({} = all)."""
    deadline = time.monotonic() + timeout
    left: dict = {}
    while time.monotonic() < deadline:
        st = bench.pbx.status()
        left = {k: v for k, v in st.get("tables", {}).items() if v}
        if st["calls"]:
            left["calls"] = len(st["calls"])
        if not left:
            return {}
        time.sleep(0.5)
    return left


def soak(workdir: Path, calls: int, rate: float, every: int, hold_ms: int, rtp_share: float,
         idle_s: float = 5.0) -> SoakResult:
    res = SoakResult(calls=calls, rate=rate)
    bench = phases.BenchPbx(workdir, "soak", caller_rate=rate)
    pbx = bench.pbx
    pbx.web = True
    pbx.args += ["--web-idle-exit", str(WEB_IDLE_EXIT_S)]
    rtp_ext = pbx.store.add_extension(RTP_CALLEE, "Soak RTP callee")
    pbx.secrets[RTP_CALLEE] = rtp_ext.secret
    pbx.store.add_extension(LINE_EXTENSION, "Soak line port")
    for number in (RTP_CALLEE, LINE_EXTENSION):
        pbx.store.update_record("mailboxes", number, enabled=False)
    pbx.store.add_line_port(1, "fxs", LINE_EXTENSION, name="soak")
    uas = rtp_uas = None
    try:
        bench.start()
        rtp_port = free_port()
        r = run_sipp("register_auth.xml", pbx.registrar, port=rtp_port,
                     users=[(RTP_CALLEE, pbx.secrets[RTP_CALLEE])], params={"expires": 3600},
                     workdir=bench.workdir, timeout=10)
        if not r.ok:
            raise RuntimeError(f"RTP callee {RTP_CALLEE} could not register: {r.responses}\n{r.log_tail()}")
        time.sleep(idle_s)  # the web UI and the line service finish starting, the line registers
        res.web_up = sample(bench, "web UI up", 0)
        deadline = time.monotonic() + WEB_IDLE_EXIT_S + 30
        while process_groups(pbx.proc.pid)["web UI"] and time.monotonic() < deadline:
            time.sleep(0.5)
        idle = sample(bench, "idle", 0)
        res.samples.append(idle)
        res.services = [g for g in COUNTED if idle.procs.get(g)]
        bench.mark_log()
        blocks = -(-calls // every)
        budget = calls / rate + blocks * (hold_ms / 1000 + DRAIN_S + 10)
        uas = Sipp("uas_answer.xml", port=bench.callee_port, calls=10**7, params={"answer_delay": 0},
                   workdir=bench.workdir / "callee", timeout=budget + 60).start()
        rtp_uas = Sipp("uas_load.xml", port=rtp_port, calls=10**7, workdir=bench.workdir / "callee-rtp",
                       timeout=budget + 60).start()
        t0 = time.monotonic()
        done = 0
        for b in range(blocks):
            n = min(every, calls - done)
            n_rtp = round(n * rtp_share)
            block_s = n / rate
            callers = [Sipp(phases.UAC_SETUP, pbx.registrar, users=bench.caller, service=phases.CALLEE,
                            calls=n - n_rtp, rate=rate * (n - n_rtp) / n, duration_ms=hold_ms,
                            timeout=block_s + hold_ms / 1000 + 30, workdir=bench.workdir / f"block-{b}")]
            if n_rtp:
                callers.append(Sipp("uac_load.xml", pbx.registrar, users=bench.caller, service=RTP_CALLEE,
                                    calls=n_rtp, rate=rate * n_rtp / n, duration_ms=hold_ms,
                                    timeout=block_s + hold_ms / 1000 + 30,
                                    workdir=bench.workdir / f"block-{b}-rtp"))
            for c in callers:
                c.start()
            for c in callers:
                r = c.wait()
                res.successful += r.successful
                res.failed += r.failed
                if phases.sipp_failures(r):
                    res.trouble.append(phases.Trouble(
                        f"block {b + 1} caller {c.scenario.name} ({r.successful} calls completed)",
                        phases.sipp_failures(r), r.log_tail(phases.ALL_LINES)))
            done += n
            res.rtp_calls += n_rtp
            left = drain(bench)
            if left:
                res.leftover = left
                res.trouble.append(phases.Trouble(f"after {done} calls: still in the call service "
                                                  f"{DRAIN_S:.0f} s after the last BYE: {left}"))
            res.samples.append(sample(bench, f"after block {b + 1}", done))
            if res.failed > max(10, done // 10):
                break  # more than a tenth failed: the load is broken, its memory would not tell a leak
        res.seconds = time.monotonic() - t0
        st = pbx.status()
        res.completed = st.get("completed_calls", 0)
        for name, callee in (("callee", uas), ("RTP callee", rtp_uas)):
            c = callee.stop()
            res.callee_failed += c.failed
            if phases.sipp_failures(c):
                res.trouble.append(phases.Trouble(f"{name} SIPp ({c.successful} calls completed)",
                                                  phases.sipp_failures(c), c.log_tail(phases.ALL_LINES)))
        problems = bench.log_problems() + bench.log_warnings()
        if problems:
            res.trouble.append(phases.Trouble("PBX log errors and warnings during the soak", pbx_log=problems))
    finally:
        for s in (uas, rtp_uas):
            if s is not None:
                s.stop(grace=1)
        bench.stop()
    return res


def render(res: SoakResult, markdown: bool = False) -> list[str]:
    groups = [g for g in COUNTED + ("line board simulator",) if any(g in s.memory for s in res.samples)]
    head = (["calls", "load"] + [f"{g} MB" for g in groups]
            + ["call service heap/anon/file MB", "total MB", "total PSS MB", "all, each page once MB",
               "live: Python blocks", "live: edge shm MB (peak)", "left in tables"])
    rows = []
    for s in res.samples:
        cells = [f"{s.calls:,}" if s.calls else "idle", f"{s.load:.1f}"]
        for g in groups:
            m = s.memory.get(g)
            if m is None:
                cells.append("-")
            elif g == "kamailio":
                cells.append(f"{m.pss_mb:.1f} PSS ({s.procs[g]} procs)")
            else:
                cells.append(f"{m.rss_mb:.1f} ({m.pss_mb:.1f} PSS)")
        left = {k: v for k, v in s.tables.items() if v}
        cells.append("/".join(f"{s.kinds.get(k, 0):.1f}" for k in ("heap", "anon", "file")))
        cells += [f"{s.total:.1f}", f"{s.total_pss:.1f}", f"{s.union:.1f}" if s.union is not None else "?",
                  f"{s.python_blocks:,}" if s.python_blocks is not None else "?",
                  (f"{s.edge_shm['real_used']:.1f} ({s.edge_shm.get('max_used', 0):.1f})"
                   if "real_used" in s.edge_shm else "?"),
                  "none" if s.tables and not left else (str(left) if left else "?")]
        rows.append(cells)
    out = _table(head, rows, markdown)
    g = res.growth
    idle = res.idle
    out.append("")
    out.append(f"{res.successful:,} of {res.calls:,} calls completed ({res.rtp_calls:,} with RTP both ways), "
               f"{res.failed} failed at the callers, {res.callee_failed} at the callees; "
               f"{res.seconds:.0f} s at {res.rate:g}/s; call service completed_calls {res.completed:,}.")
    if idle is not None:
        held = res.idle_mb
        how = "each resident page once" if idle.union is not None else "summed RSS: page frames not readable"
        out.append(f"Idle: {held:.1f} MB with {', '.join(res.services)} ({how}; summed RSS {idle.total:.1f}, "
                   f"summed PSS {idle.total_pss:.1f}); goal < {IDLE_LIMIT_MB:.0f} MB: "
                   + ("met" if held < IDLE_LIMIT_MB else "NOT met") + ".")
    web = res.web_up.memory.get("web UI") if res.web_up is not None else None
    if web is not None:
        stopped = idle is not None and "web UI" not in idle.memory
        out.append(f"The web UI held {web.rss_mb:.1f} MB RSS ({web.pss_mb:.1f} PSS) while serving; "
                   + (f"it stopped {WEB_IDLE_EXIT_S} s after its last request, before the idle sample "
                      "(it starts on the next connection: decision 026)." if stopped
                      else "it had NOT stopped by the idle sample."))
    if g is not None:
        first, last, pct = g
        per = ", ".join(f"{grp} {last.mb(grp) - first.mb(grp):+.1f} MB" for grp in COUNTED if grp in last.memory)
        out.append(f"Growth from {first.calls:,} to {last.calls:,} calls: {pct:+.1f} % "
                   f"({first.total:.1f} -> {last.total:.1f} MB; {per}); goal within {GROWTH_LIMIT:.0f} %: "
                   + ("met" if pct <= GROWTH_LIMIT else "NOT met") + ".")
    live = live_growth(res)
    if live:
        out.append(live)
    if res.leftover:
        out.append(f"Left in the call service after the drain: {res.leftover}")
    for t in res.trouble:
        out += [""] + t.lines()
    return out


def live_growth(res: SoakResult) -> str:
    """What stays live, apart from the allocators' high-water marks (RSS keeps the pages a peak of
    calls in flight touched): the call service's Python blocks and Kamailio's shared pool in use."""
    g = res.growth
    if g is None:
        return ""
    first, last, _ = g
    parts = []
    if first.python_blocks and last.python_blocks:
        parts.append(f"call service Python blocks {first.python_blocks:,} -> {last.python_blocks:,} "
                     f"({100 * (last.python_blocks - first.python_blocks) / first.python_blocks:+.1f} %)")
    if first.edge_shm.get("real_used") and last.edge_shm.get("real_used"):
        a, b = first.edge_shm["real_used"], last.edge_shm["real_used"]
        parts.append(f"edge shared pool in use {a:.1f} -> {b:.1f} MB ({100 * (b - a) / a:+.1f} %)")
    return ("Live memory after the drain, from " + f"{first.calls:,} to {last.calls:,} calls: "
            + "; ".join(parts) + ".") if parts else ""


def _table(head: list[str], rows: list[list[str]], markdown: bool) -> list[str]:
    if markdown:
        return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + \
               ["| " + " | ".join(r) + " |" for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    return ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in [head] + rows]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.soak", description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=100_000, help="calls in all (default 100,000)")
    p.add_argument("--rate", type=float, default=150, help="new calls per second (default 150)")
    p.add_argument("--every", type=int, help="calls per block, memory sampled after each "
                   "(default 10,000; a tenth of --calls when that is fewer than 100,000)")
    p.add_argument("--hold-ms", type=int, default=1000, help="call length (default 1000 ms)")
    p.add_argument("--rtp-share", type=float, default=0.05, help="share of calls with RTP (default 0.05)")
    p.add_argument("--markdown", action="store_true", help="print the table as markdown")
    p.add_argument("--strict", action="store_true", help="exit 1 when a memory goal is not met too "
                   "(always: when a call failed or the call service kept a call's state)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (SIPp logs, pbx.log)")
    args = p.parse_args(argv)
    if args.calls < 2 or args.rate <= 0 or not 0 <= args.rtp_share < 1:
        p.error("--calls must be >= 2, --rate > 0 and --rtp-share in [0, 1)")
    every = args.every or min(10_000, max(1, args.calls // 10))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if shutil.which("sipp") is None or shutil.which("kamailio") is None:
        print("error: sipp and kamailio are needed: apt-get install sip-tester kamailio "
              "kamailio-sqlite-modules (or run `make bench` as root)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="pbx-soak-"))
    machine = procstat.machine()
    try:
        res = soak(workdir, args.calls, args.rate, every, args.hold_ms, args.rtp_share)
    except RuntimeError as exc:
        print(f"error: the soak could not run: {exc}\n(work directory kept: {workdir})", file=sys.stderr)
        return 1
    print(f"\nMemory over {args.calls:,} calls ({machine['cpu']}, load average at the start {machine['load']}):")
    print("\n".join(render(res, args.markdown)))
    if args.keep or res.trouble:
        print(f"work directory (SIPp logs, DATA/pbx.log): {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if res.clean and (res.goals_met or not args.strict) else 1


if __name__ == "__main__":
    sys.exit(main())
