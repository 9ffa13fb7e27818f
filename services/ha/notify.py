"""keepalived's notify script, kept to the standard library (it must act at once on a takeover):
`python -m services.ha.notify DATA INSTANCE NAME STATE PRIORITY` records this box's VRRP state
in DATA/ha/state.json (what `pbx ha status` and the dashboard show), counting takeovers.

keepalived starts one notify process per state change and does not wait for it: two changes
close together (BACKUP at start, MASTER 1 s later) race, and under load the BACKUP one was seen
writing last, leaving the active box believing it was standby (no replication, no trunk
registration). So a notify checks the state it was given against the VIP on the interface
(keepalived adds it before MASTER's notify and removes it before BACKUP's and FAULT's), waiting
up to SETTLE_S for it, and drops a notification the VIP contradicts: a later one is the truth.
Writers take a lock, so the read-modify-write of the takeover count is not interleaved."""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SETTLE_S = 0.3

STATES = ("MASTER", "BACKUP", "FAULT", "STOP")


def record_state(data_dir, state: str, now: float | None = None) -> dict:
    path = Path(data_dir) / "ha" / "state.json"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        previous = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        previous = {}
    now = time.time() if now is None else now
    took_over = state == "MASTER" and previous.get("state") != "MASTER"
    doc = {"state": state, "since": now, "previous": previous.get("state"),
           "takeovers": previous.get("takeovers", 0) + (1 if took_over else 0),
           "last_takeover": now if took_over else previous.get("last_takeover")}
    tmp = path.with_name("state.json.tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return doc


def vip_here(data_dir) -> bool | None:
    """Is this box's VIP on its interface now? None when that cannot be told."""
    try:
        ha = json.loads((Path(data_dir) / "ha" / "settings.json").read_text())
        vip, ifname = str(ha["vip"]).split("/")[0], str(ha["interface"])
        out = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", ifname], capture_output=True, text=True,
                             timeout=2).stdout
    except (OSError, ValueError, KeyError, subprocess.SubprocessError):
        return None
    return f" {vip}/" in out


def contradicted(data_dir, state: str, settle: float = SETTLE_S) -> bool:
    """True when the VIP says `state` is stale (a later change happened): MASTER without the VIP,
    BACKUP/FAULT with it, after waiting `settle` seconds for keepalived to finish the change."""
    if state not in ("MASTER", "BACKUP", "FAULT"):
        return False
    want = state == "MASTER"
    deadline = time.monotonic() + settle
    while True:
        here = vip_here(data_dir)
        if here is None or here == want:
            return False
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.02)


def notify(data_dir, state: str) -> dict | None:
    """What keepalived's notify does: record `state` unless the VIP contradicts it (then None)."""
    lock_path = Path(data_dir) / "ha" / "state.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if contradicted(data_dir, state):
            print(f"ha notify: {state} dropped: the virtual IP says a later change happened", file=sys.stderr)
            return None
        return record_state(data_dir, state)


if __name__ == "__main__":
    state = next((w for w in sys.argv[2:] if w in STATES), None)
    if len(sys.argv) < 3 or state is None:
        print(f"usage: python -m services.ha.notify DATA INSTANCE NAME STATE PRIORITY (got {sys.argv[1:]})",
              file=sys.stderr)
        sys.exit(2)
    notify(sys.argv[1], state)
