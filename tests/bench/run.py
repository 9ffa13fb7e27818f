"""`make bench`: load the PBX with SIPp, print the table, record it in docs/benchmarks.md.

    .venv/bin/python -m tests.bench.run            # full run, about 6 minutes, writes the doc
    .venv/bin/python -m tests.bench.run --quick    # small loads to check the harness, no doc
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from . import phases, procstat, report

logger = logging.getLogger(__name__)


def method(plan: phases.Plan) -> list[str]:
    steps = "/".join(str(n) for n in plan.call_steps)
    rates = ", ".join(str(r) for r in plan.rates)
    trunk_steps = "/".join(str(n) for n in plan.trunk_call_steps)
    trunk_rates = ", ".join(str(r) for r in plan.trunk_rates)
    return [
        "Method (all on loopback; each load against a freshly started `pbx run`: call service + Kamailio "
        "edge, no web UI, temporary data directory, free ports, 127.0.0.1 exempt from the flood limit):",
        "",
        f"- Callers and callees are SIPp. Callers = extension {phases.CALLER} and as many more (1002, 1003, "
        f"...) as the edge's per-account limit ({phases.ACCOUNT_LIMIT[0]} INVITEs per "
        f"{phases.ACCOUNT_LIMIT[1]:.0f} s) needs at a load's rate, four times over, each call taking the "
        f"next in turn ({len(phases.caller_numbers(plan.ramp_rate))} for the concurrent calls, "
        f"{len(phases.caller_numbers(max(plan.rates + (plan.pdd_rate,))))} for the setups); callee = "
        f"extension {phases.CALLEE}, registered with digest from the port its SIPp UAS then answers on. "
        "Every INVITE is challenged by the edge (407) and re-sent with credentials.",
        f"- Concurrent calls: tests/sipp/uac_load.xml -> uas_load.xml, G.711 A-law both ways from each "
        f"call's own socket (rtp_stream, 20 ms packets). Calls are added at {plan.ramp_rate}/s up to "
        f"{steps}; {plan.settle:.0f} s after the last one is answered, utime+stime of each process group "
        f"from /proc/PID/stat over a {plan.window:.0f} s window, in % of one core. \"machine\" is the whole "
        "box from /proc/stat (2 cores = 200 %), other work on the box included. RTP a->b / b->a: datagrams "
        "that reached the callee's / callers' media sockets over the nominal 50 per second per call "
        "(SIPp never reads its rtp_stream socket, so the kernel's drop counter of that socket counts "
        "arrivals); PBX drops: receive-buffer drops on the PBX's own RTP sockets.",
        f"- Call setups/s: tests/bench/uac_setup.xml -> tests/sipp/uas_answer.xml (180 and 200 at once), "
        f"no RTP, {plan.hold_ms} ms calls, {plan.rate_seconds:.0f} s per step at {rates} calls/s, stopping "
        "at the first step that is not clean. Clean = every call completed, no failure counter at either "
        "SIPp, no ERROR line in DATA/pbx.log (warnings are listed), no call left in the PBX. \"200 "
        "without 180\": calls answered with no 180 reaching the caller first (counted, not failed). "
        "The highest clean step is the headline \"setups/s to the first failure\". ms CPU/call: a process "
        "group's utime+stime over the step (from the first INVITE to the last call's end) / calls. "
        "Edge shm peak: Kamailio's shared memory pool, where its SIP transactions live (JSON-RPC "
        "core.shmmem max_used after the step).",
        f"- Post-dial delay: from the caller's sending of the INVITE with credentials to its receiving "
        f"the 180, taken from the microsecond timestamps of SIPp's message log (-trace_msg); SIPp's own "
        f"rtd timer agrees but advances in 4 ms steps here. {plan.pdd_rate} calls/s for "
        f"{plan.pdd_seconds:.0f} s, callee rings at once. Baseline: the same SIPp pair peer to peer; "
        "\"added by the PBX\" = through the PBX minus baseline, percentile by percentile.",
        "- Memory, from /proc/PID/smaps_rollup: RSS of `pbx run` (the call service, one process) plus "
        "PSS of the Kamailio processes (its forked workers share one memory pool: PSS counts it once, "
        f"RSS once per worker). Idle = before the first call, one phone registered (the callers "
        f"configured); per call = (at {plan.memory_at} calls - idle) / {plan.memory_at}.",
        f"- Trunk to extension (section 5, its own fresh PBX): the callers are a SIPp carrier on its own "
        f"loopback address {phases.CARRIER}, the host of an IP trunk without registration; the edge knows "
        f"it by its source address and neither challenges nor flood-limits it. It calls DID {phases.DID}, "
        f"whose inbound route rings extension {phases.CALLEE}, answered by the same SIPp UAS as above. "
        f"Concurrent calls: "
        f"tests/sipp/carrier_uac_load.xml -> uas_load.xml, G.711 A-law both ways (rtp_stream), "
        f"{trunk_steps} calls added at {plan.ramp_rate}/s, measured as in 1. Then post-dial delay "
        f"(carrier's INVITE -> 180, {plan.pdd_rate} calls/s for {plan.pdd_seconds:.0f} s, baseline the "
        f"same pair peer to peer) and setups/s at {trunk_rates} calls/s, {plan.rate_seconds:.0f} s per "
        f"step, both with tests/bench/carrier_setup.xml, measured and judged clean as in 2 and 3.",
        "- Peers (Asterisk 22.10 chan_pjsip with media anchored; Kamailio 5.6 + rtpengine 10.5 userspace) "
        "were measured on the same kind of 2-core machine with SIPp and 30 s windows "
        "(shared/notes/sip-and-media.md).",
    ]


def header(machine: dict, started: datetime, seconds: float, plan: phases.Plan) -> list[str]:
    return [
        "",
        f"Run of {started.strftime('%Y-%m-%d %H:%M UTC')} ({seconds:.0f} s). Machine: {machine['cpu']}, "
        f"{machine['memory']} RAM, {machine['os']}; Python {machine['python']}, SIPp {machine['sipp']}, "
        f"Kamailio {machine['kamailio']}. Load average at the start: {machine['load']} (the machine is "
        "shared: other work runs beside the bench).",
        "",
        *method(plan),
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small loads to check the harness; no doc written")
    p.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    p.add_argument("--keep", action="store_true", help="keep the work directory (SIPp logs, pbx.log)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if shutil.which("sipp") is None or shutil.which("kamailio") is None:
        print("error: sipp and kamailio are needed: apt-get install sip-tester kamailio "
              "kamailio-sqlite-modules (or run `make bench` as root)", file=sys.stderr)
        return 2
    plan = phases.QUICK if args.quick else phases.Plan()
    machine = procstat.machine()
    started = datetime.now(timezone.utc)
    t0 = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="pbx-bench-"))
    try:
        logger.info("bench work directory %s", workdir)
        calls = phases.concurrent_calls(workdir, plan)
        setups = phases.setups_and_delay(workdir, plan)
        trunk = phases.trunk_calls(workdir, plan)
    except RuntimeError as exc:
        print(f"error: the bench could not run: {exc}", file=sys.stderr)
        print(f"(work directory kept: {workdir})", file=sys.stderr)
        return 1
    seconds = time.monotonic() - t0
    print("\n".join(header(machine, started, seconds, plan)[:2]))
    print("\n".join(report.render(calls, setups, plan, markdown=False, trunk=trunk)))
    if not (args.quick or args.no_doc):
        path = report.write_doc(report.render(calls, setups, plan, markdown=True, trunk=trunk),
                                header(machine, started, seconds, plan))
        print(f"\nwritten to {path}")
    if args.keep or calls.trouble or setups.trouble or trunk.trouble:
        print(f"work directory (SIPp logs, DATA/pbx.log): {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
