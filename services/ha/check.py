"""keepalived's health check, kept to the standard library so it starts in milliseconds (it runs
every second): `python -m services.ha.check DATA` exits 0 when the call service answers its
control socket and reports its edge running, 1 otherwise (the reason on stderr)."""
from __future__ import annotations

import json
import socket
import sys
from pathlib import Path


def healthy(data_dir: str, timeout: float = 1.0) -> tuple[bool, str]:
    path = Path(data_dir) / "run" / "control.sock"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(b'{"cmd": "ping"}\n')
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
        answer = json.loads(buf or b"{}")
    except (OSError, ValueError) as exc:
        return False, f"call service not answering on {path}: {exc}"
    if not answer.get("pong"):
        return False, f"call service answered {answer!r}"
    if answer.get("edge") is False:
        return False, "the SIP edge is not running"
    return True, "ok"


if __name__ == "__main__":
    ok, why = healthy(sys.argv[1] if len(sys.argv) > 1 else ".")
    if not ok:
        print(f"unhealthy: {why}", file=sys.stderr)
    sys.exit(0 if ok else 1)
