"""What the security tests check after an attack: processes alive, memory, tracebacks, idle, a real call."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from services.edge import Edge, EdgeConfig
from tests.phones.audio import tone_present
from tests.phones.pj import PjPhone

CALLER_HZ, CALLEE_HZ = 700, 1100


def edge_of(pbx) -> Edge:
    """A handle on the running PBX's Kamailio (its RPC FIFO lives in the data directory)."""
    return Edge(EdgeConfig(pbx.data, sip_addr=pbx.addr, sip_port=pbx.sip_port))


def kamailio_pids(pbx) -> list[int]:
    """The edge's main process and its workers (one process group)."""
    try:
        main = int((Path(pbx.data) / "edge" / "kamailio.pid").read_text().strip())
        pgid = os.getpgid(main)
    except (OSError, ValueError):
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid and "kamailio" in Path(f"/proc/{entry}/comm").read_text():
                    pids.append(int(entry))
            except (OSError, ProcessLookupError):
                pass
    return sorted(pids)


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kb(pid: int) -> int:
    """Proportional set size: Kamailio's workers share one pool, PSS counts it once overall."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory(pbx) -> dict:
    """pbx run (the call service lives in it) RSS; the edge's PSS summed over its processes and the
    part of its shared memory pool in use (PSS keeps every pool page ever touched: the pool's
    real_used is what would show a leak)."""
    out = {"pbx_rss_kb": rss_kb(pbx.proc.pid),
           "edge_pss_kb": sum(pss_kb(p) for p in kamailio_pids(pbx)),
           "edge_processes": len(kamailio_pids(pbx)), "edge_shm_used_kb": -1, "edge_transactions": -1}
    try:
        edge = edge_of(pbx)
        out["edge_shm_used_kb"] = edge._rpc.call("core.shmmem")["real_used"] // 1024
        out["edge_transactions"] = edge._rpc.call("tm.stats")["current"]
    except Exception:
        pass
    return out


def tracebacks(pbx) -> list[str]:
    """Each Python traceback in <data>/pbx.log with the log line before it (what failed)."""
    lines = pbx.log_path.read_text(errors="replace").splitlines()
    found = []
    for i, line in enumerate(lines):
        if line.startswith("Traceback"):
            end = i + 1
            while end < len(lines) and (lines[end].startswith((" ", "\t")) or not re.match(r"\d{4}-\d\d-\d\d ", lines[end])):
                end += 1
            found.append("\n".join(lines[max(0, i - 1):min(end, i + 40)]))
    return found


def alive(pbx, edge_processes: int) -> list[str]:
    """What is dead: the pbx run process (call service inside), Kamailio and its workers, the
    control socket answering."""
    dead = []
    if pbx.proc is None or pbx.proc.poll() is not None:
        dead.append(f"pbx run exited with {pbx.proc and pbx.proc.returncode}")
        return dead
    n = len(kamailio_pids(pbx))
    if n < edge_processes:
        dead.append(f"kamailio: {n} of {edge_processes} processes left")
    try:
        pbx.status()
    except Exception as exc:
        dead.append(f"call service does not answer status: {exc}")
    return dead


def wait_idle(pbx, timeout: float = 35.0) -> tuple[dict, float]:
    """Wait until no call and no RTP leg is left; return the last status and the time it took.
    (Kamailio's own transactions may linger up to its timer H, 32 s: reported, not waited for.)"""
    t0 = time.monotonic()
    st = pbx.status()
    while time.monotonic() - t0 < timeout:
        st = pbx.status()
        if not st["calls"] and st["rtp_legs"] == 0:
            break
        time.sleep(0.5)
    return st, time.monotonic() - t0


def real_call(pbx, tmp_path, caller: str, callee: str, seconds: float = 1.5) -> tuple[bool, bool]:
    """Two pjsua2 phones register, call, talk: (caller heard callee, callee heard caller)."""
    with PjPhone(user=caller, secret=pbx.secrets[caller], registrar=pbx.registrar, tone_hz=CALLER_HZ,
                 record_dir=tmp_path) as a, \
            PjPhone(user=callee, secret=pbx.secrets[callee], registrar=pbx.registrar, tone_hz=CALLEE_HZ,
                    record_dir=tmp_path) as b:
        assert a.register() == 200 and b.register() == 200
        b.auto_answer(200)
        a.call(pbx.uri(callee))
        a.wait_state("CONFIRMED", timeout=5)
        b.wait_state("CONFIRMED", timeout=5)
        time.sleep(seconds)
        a.hangup()
        b.wait_state("DISCONNECTED", timeout=5)
        return (tone_present(a.recording_path, CALLEE_HZ, start_s=0.3),
                tone_present(b.recording_path, CALLER_HZ, start_s=0.3))
