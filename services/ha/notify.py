"""keepalived's notify script, kept to the standard library (it must act at once on a takeover):
`python -m services.ha.notify DATA INSTANCE NAME STATE PRIORITY` records this box's VRRP state
in DATA/ha/state.json (what `pbx ha status` and the dashboard show), counting takeovers."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

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


if __name__ == "__main__":
    state = next((w for w in sys.argv[2:] if w in STATES), None)
    if len(sys.argv) < 3 or state is None:
        print(f"usage: python -m services.ha.notify DATA INSTANCE NAME STATE PRIORITY (got {sys.argv[1:]})",
              file=sys.stderr)
        sys.exit(2)
    record_state(sys.argv[1], state)
