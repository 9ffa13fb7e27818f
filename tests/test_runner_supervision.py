"""`pbx run` supervises its children: they die with it (even on SIGKILL), and a child that keeps
failing is restarted with back-off, the log naming the cause (a busy web port) and the fix."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import time

import pytest

from tests.pbxproc import PbxProcess

pytestmark = pytest.mark.e2e


def descendants(root: int) -> dict[int, str]:
    """{pid: command line} of every process below root (Kamailio's workers included)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, todo = {}, [root]
    while todo:
        parent = todo.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = cmdline(pid)
                todo.append(pid)
    return found


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that is not ours counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def web_up(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/healthz")
        ok = conn.getresponse().status < 500
        conn.close()
        return ok
    except OSError:
        return False


def wait_for(cond, timeout: float, what: str, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(step)
    raise AssertionError(f"not within {timeout}s: {what}")


def test_killing_pbx_run_with_sigkill_leaves_no_child_behind(tmp_path):
    pbx = PbxProcess(tmp_path / "pbx", extensions=["1060"], web=True)
    pbx.store.add_line_port(1, "fxs", "1060")  # so the line simulator and line service run too
    try:
        pbx.start()
        wait_for(lambda: web_up(pbx.web_port), 15, "the web UI to serve")
        wait_for(lambda: any("hw.lines.service" in c for c in descendants(pbx.proc.pid).values()), 15,
                 "the line service to start")
        children = descendants(pbx.proc.pid)
        kinds = " ".join(children.values())
        assert "kamailio" in kinds and "webui" in kinds and "hw.lines.simulator" in kinds, children
        assert len([c for c in children.values() if "kamailio" in c]) > 1  # its workers too
        os.kill(pbx.proc.pid, signal.SIGKILL)
        pbx.proc.wait(5)
        t0 = time.monotonic()
        try:
            wait_for(lambda: not [p for p in children if alive(p)], 8, "every child of pbx run to exit")
        except AssertionError:
            left = {p: c for p, c in children.items() if alive(p)}
            raise AssertionError(f"left running after pbx run was SIGKILLed: {left}") from None
        took = time.monotonic() - t0
        assert port_free(pbx.web_port), "the web port is still held"
        cfg = str(pbx.data / "edge")
        assert not [p for p in map(int, filter(str.isdigit, os.listdir("/proc")))
                    if alive(p) and "kamailio" in cmdline(p) and cfg in cmdline(p)]
        assert took < 8
    finally:
        for pid in locals().get("children", {}):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        pbx.stop()


def web_children(pbx) -> list[int]:
    return [pid for pid, command in descendants(pbx.proc.pid).items() if "-m webui" in command]


def test_a_killed_web_ui_is_restarted_with_back_off_while_pbx_run_keeps_its_port(tmp_path):
    """pbx run holds the web port itself (decision 026): with the UI killed nobody else can take
    it, the restart is one log line, and a request made while the UI is down waits on the port
    and is answered by the restarted UI (a port taken already at start: tests/test_cli_errors.py)."""
    pbx = PbxProcess(tmp_path / "pbx", web=True)
    try:
        pbx.start()
        wait_for(lambda: web_up(pbx.web_port), 20, "the web UI to serve")
        killed = web_children(pbx)
        assert killed
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        assert not port_free(pbx.web_port), "the web port was released with the UI"
        conn = http.client.HTTPConnection("127.0.0.1", pbx.web_port, timeout=30)
        conn.request("GET", "/login")
        assert conn.getresponse().status < 500
        conn.close()
        log = pbx.log_tail(1000)
        restarts = [line for line in log.splitlines()
                    if "services.runner" in line and "web UI" in line and "retrying" in line]
        assert len(restarts) == 1 and "web UI exited with code -9; retrying in 0.5 s" in restarts[0], log
        assert pbx.proc.poll() is None
    finally:
        pbx.stop()


def test_the_web_ui_stops_when_idle_and_the_next_request_starts_it_again(tmp_path):
    """`pbx run --web-idle-exit 2`: the UI child exits after 2 s without a request (a clean stop,
    not a failure to restart), the port stays held, and the next request starts it and is served."""
    pbx = PbxProcess(tmp_path / "pbx", web=True, args=["--web-idle-exit", "2"])
    try:
        pbx.start()
        wait_for(lambda: web_up(pbx.web_port), 20, "the web UI to serve")
        conn = http.client.HTTPConnection("127.0.0.1", pbx.web_port, timeout=10)
        conn.request("GET", "/login")
        assert conn.getresponse().status < 500
        conn.close()
        wait_for(lambda: not web_children(pbx), 15, "the idle web UI to stop")
        assert not port_free(pbx.web_port), "the web port was released with the idle UI"
        conn = http.client.HTTPConnection("127.0.0.1", pbx.web_port, timeout=30)
        conn.request("GET", "/login")
        assert conn.getresponse().status < 500
        conn.close()
        assert len(web_children(pbx)) == 1
        log = pbx.log_tail(1000)
        assert "web UI: no request for 2 s: stopping until the next connection" in log, log
        assert "web UI: a connection is waiting: starting it" in log, log
        assert "retrying" not in log, log
    finally:
        pbx.stop()


def test_restart_delays_double_up_to_30_s_and_start_over_after_a_stable_run():
    from services.runner import Restarts
    r = Restarts("test child")
    delays = []
    for _ in range(9):
        r.failed("exited with code 1")
        delays.append(r.delay)
        assert r.waiting and not r.due()
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    r.up()
    assert not r.waiting
    r.failed("exited with code 1")          # failed again at once: still backed off
    assert r.delay == 30.0
    r.up()
    r.up_since -= Restarts.STABLE_S         # it had stayed up a while before this failure
    r.failed("exited with code 1")
    assert r.delay == 0.5
