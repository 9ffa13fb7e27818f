"""One step of the setups/s load (as a row of `make bench` table 2), optionally profiled (issue 16).

    .venv/bin/python -m tests.bench.setup_cost 300                    # 10 s at 300 setups/s
    .venv/bin/python -m tests.bench.setup_cost 300 --profile py-spy   # + the call service's stacks
    .venv/bin/python -m tests.bench.setup_cost 300 --profile perf     # + Kamailio's (perf record -g)
    .venv/bin/python -m tests.bench.setup_cost 300 --root /tmp/old    # the PBX from another tree
    .venv/bin/python -m tests.bench.setup_cost 300 --call-services 2  # scale-out (decision 025)

Prints the step (completed, failed, ms of CPU per call of the call service and of Kamailio) and the
load average; with --profile the raw stacks stay in the work directory (py-spy's "raw" format:
one collapsed stack and its sample count a line). py-spy is not a dependency of the project:
`.venv/bin/pip install py-spy` for profiling. --root runs `pbx run` from another checkout (e.g.
`git archive COMMIT | tar -x -C /tmp/old`) with this tree's bench, for before/after numbers.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests import pbxproc

from . import phases, procstat


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.setup_cost", description=__doc__.splitlines()[0])
    p.add_argument("rate", type=int, help="call setups per second")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the step (default 10)")
    p.add_argument("--profile", choices=("py-spy", "perf"), help="profile the call service or Kamailio")
    p.add_argument("--gil", action="store_true", help="py-spy: only the thread holding the GIL")
    p.add_argument("--root", type=Path, help="run `pbx run` from this tree instead of this one")
    p.add_argument("--call-services", type=int, default=1, metavar="N",
                   help="`pbx run --call-services N` (the call service CPU is then all N together)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    if args.root:
        pbxproc.ROOT = args.root.resolve()
    tool = {"py-spy": shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
            "perf": shutil.which("perf")}.get(args.profile or "")
    if args.profile and not (tool and Path(tool).exists()):
        print(f"error: {args.profile} not found: .venv/bin/pip install py-spy / apt-get install linux-perf",
              file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="pbx-setup-cost-"))
    plan = phases.Plan(rates=(args.rate,), rate_seconds=args.seconds)
    bench = phases.BenchPbx(work, "pbx", caller_rate=args.rate, call_services=args.call_services).start()
    prof = None
    res = phases.SetupResult()
    try:
        time.sleep(1)
        secs = str(int(args.seconds))
        if args.profile == "py-spy":
            prof = subprocess.Popen([tool, "record", "-p", str(bench.pbx.proc.pid), "-r", "200", "-d", secs,
                                     "-f", "raw", "-o", str(work / "py-spy.txt"), "--nonblocking"]
                                    + (["--gil"] if args.gil else []),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        elif args.profile == "perf":
            pids = ",".join(map(str, procstat.kamailio_pids(bench.pbx.proc.pid)))
            prof = subprocess.Popen([tool, "record", "-F", "499", "-g", "-p", pids, "-o", str(work / "perf.data"),
                                     "--", "sleep", secs], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        caller = dict(scenario=phases.UAC_SETUP, users=bench.caller, service=phases.CALLEE)
        phases.setup_rates(bench, plan, plan.rates, caller, res)
    finally:
        if prof is not None:
            prof.wait(args.seconds + 60)
        bench.stop()
    for s in res.steps:
        print(f"{s.rate} setups/s: {s.successful}/{s.calls} completed, {s.failed} failed (caller), "
              f"{s.callee_failed} (callee), {s.retransmissions} retransmissions, call service "
              f"{s.cpu_ms('call service'):.2f} ms CPU/call ({s.cpu.get('call service', 0):.0f} %), Kamailio "
              f"{s.cpu_ms('kamailio'):.2f} ms CPU/call, machine {s.cpu.get('machine', 0):.0f} of 200 %, "
              f"{'clean' if s.clean else 'NOT clean'}")
    for t in res.trouble:
        print("\n".join(t.lines()[:12]))
    print("load average", " ".join(open("/proc/loadavg").read().split()[:3]))
    if args.profile or res.trouble:
        print(f"work directory (stacks, SIPp logs, DATA/pbx.log): {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
