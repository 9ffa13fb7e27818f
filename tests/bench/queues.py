"""What callers waiting in a call queue cost the call service, next to the same number of held calls.

    .venv/bin/python -m tests.bench.queues [--callers 50] [--seconds 10]

A real PBX (`pbx run`, call service in its process) and SIPp:
  queue: N SIPp callers (each sending G.711 at 50 packets/s) wait in one queue with no agent,
         hearing music on hold (the queue's engine ticking, positions announced on entry);
  held:  N SIPp callers call extension 1001 (a SIPp phone answering without sending media) and
         put the call on hold at once, so the PBX plays music on hold to 1001's leg;
  idle:  the PBX with no call, for the baseline.
CPU is user + system of the `pbx run` process (the call service; Kamailio and SIPp are other
processes) over the window, in % of one core, measured once every caller is in place.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from .procstat import cpu_seconds

HERE = Path(__file__).resolve().parent


def _pbx(data: Path, callers: int):
    from firmware.features.queues import Queue
    from tests.pbxproc import PbxProcess
    # one caller extension per call: the edge allows an account 20 INVITEs per 10 s (account_limit);
    # 8 calls/s keep the setups (INVITE twice, ACK, the hold re-INVITE and its ACK) under its flood limit
    proc = PbxProcess(data, extensions=["1001"] + [str(2000 + i) for i in range(callers)],
                      rtp_size=max(200, 4 * callers + 20))
    proc.store.add_record("queues", Queue("500", "Bench", "ring_all", (), announce_every=0))
    return proc.start()


def _callers(proc, callers: int) -> list[tuple[str, str]]:
    return [(n, proc.secrets[n]) for n in (str(2000 + i) for i in range(callers))]


def _window(proc, seconds: float) -> float:
    pid = proc.proc.pid
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100 * (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def _wait(what, check, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise RuntimeError(f"bench: {what} not reached in {timeout:.0f} s")


def queue_run(proc, callers: int, seconds: float, work: Path) -> float:
    from tests.phones.sipp import Sipp
    hold_ms = int((seconds + 25) * 1000)
    run = Sipp(HERE.parent / "sipp" / "uac_queue.xml", proc.registrar, service="500",
               users=_callers(proc, callers), calls=callers, rate=8, duration_ms=hold_ms,
               workdir=work, timeout=seconds + 60, extra_args=("-l", str(callers))).start()
    try:
        def waiting():
            queues = proc.status().get("queues") or []
            return any(q["number"] == "500" and q["waiting"] >= callers for q in queues)
        _wait(f"{callers} callers waiting", waiting)
        time.sleep(3)   # the entry announcements are over: music only
        return _window(proc, seconds)
    finally:
        run.stop()


def held_run(proc, callers: int, seconds: float, work: Path) -> float:
    from tests.phones.sipp import Sipp, free_port, run_sipp
    port = free_port()
    r = run_sipp("register_auth.xml", proc.registrar, users=[("1001", proc.secrets["1001"])], port=port,
                 workdir=work, timeout=10)
    if not r.ok:
        raise RuntimeError(f"bench: SIPp phone 1001 did not register: {r.log_tail()}")
    phone = Sipp("uas_answer.xml", port=port, calls=callers, params={"answer_delay": 0, "play_pcap": 0},
                 workdir=work, timeout=seconds + 60).start()
    hold_ms = int((seconds + 25) * 1000)
    run = Sipp(HERE / "uac_hold.xml", proc.registrar, service="1001", users=_callers(proc, callers),
               calls=callers, rate=8, duration_ms=hold_ms, workdir=work, timeout=seconds + 60,
               extra_args=("-l", str(callers))).start()
    try:
        def answered():
            calls = proc.status().get("calls") or []
            return sum(1 for c in calls if c.get("state") == "answered") >= callers
        _wait(f"{callers} calls answered", answered)
        time.sleep(3)   # every hold re-INVITE is through
        return _window(proc, seconds)
    finally:
        run.stop()
        phone.stop()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.queues", description=__doc__.splitlines()[0])
    p.add_argument("--callers", type=int, default=50)
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args(argv)
    print(f"Call queues: `pbx run` CPU (call service), % of one core over {args.seconds:.0f} s, "
          f"{args.callers} callers (load average {os.getloadavg()[0]:.2f})", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-queues-") as tmp:
        tmp = Path(tmp)
        for name, run in (("idle", None), ("queue", queue_run), ("held", held_run)):
            proc = _pbx(tmp / name, args.callers)
            try:
                time.sleep(2)
                cpu = _window(proc, args.seconds) if run is None else run(proc, args.callers, args.seconds,
                                                                          tmp / f"{name}-sipp")
            finally:
                proc.stop()
            rows.append((name, cpu))
            print(f"  {name:<6} {cpu:6.2f} %", flush=True)
    idle = rows[0][1]
    for name, cpu in rows[1:]:
        print(f"  {name:<6} above idle: {cpu - idle:6.2f} % ({(cpu - idle) / args.callers:.3f} % per caller)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
