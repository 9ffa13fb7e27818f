"""Scale-out: `pbx run --call-services 2` (docs/decisions/025-scale-out-dispatcher.md).

The Kamailio edge spreads new calls to extensions over two call service processes by a hash of
the Call-ID (dispatcher module, OPTIONS probes). pjsua2 phones call each other; each call service's
own control socket shows which one carries a call, and both phones hear the other's tone. Then call
service 2 hangs (SIGSTOP) and is killed (SIGKILL): new calls still complete.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

from services.control import ControlError, query_socket
from services.edge.config import EdgeConfig
from services.runner import instance_socket
from tests.pbxproc import ROOT, PbxProcess
from tests.phones.audio import tone_present
from tests.phones.pj import PjPhone

pytestmark = pytest.mark.e2e
CALLER_HZ, CALLEE_HZ = 700, 1100
EXTENSIONS = [str(n) for n in range(1000, 1010)]


def _query(path, cmd="status"):
    return query_socket(path, cmd)


def service_status(pbx, instance):
    if instance == 1:
        return pbx.status()
    return _query(instance_socket(pbx.data, instance))


def carrier(pbx, src, dst, services=(1, 2)):
    """Which call service (1 or 2) holds the answered call src -> dst right now."""
    found = []
    for n in services:
        try:
            calls = service_status(pbx, n)["calls"]
        except ControlError:             # killed and not started again yet: it holds no call
            continue
        if any((c["src"], c["dst"]) == (src, dst) for c in calls):
            found.append(n)
    assert len(found) == 1, f"call {src} -> {dst} found on call services {found}"
    return found[0]


def wait_instance(pbx, instance, timeout=10.0, not_pid=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            st = _query(instance_socket(pbx.data, instance))
            if st.get("pid") != not_pid:
                return st
        except ControlError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"call service {instance} not answering on its control socket:\n{pbx.log_tail()}")


@pytest.fixture(scope="module")
def pbx(tmp_path_factory):
    proc = PbxProcess(tmp_path_factory.mktemp("pbx"), extensions=EXTENSIONS, rtp_size=400,
                      settings={"busy_tone_seconds": 2, "no_answer_timeout": 30},
                      args=["--call-services", "2"])
    proc.start()
    try:
        wait_instance(proc, 2)
        yield proc
    finally:
        proc.stop()


@contextlib.contextmanager
def phones(pbx, tmp_path, numbers):
    with contextlib.ExitStack() as stack:
        out = {}
        for i, n in enumerate(numbers):
            p = stack.enter_context(PjPhone(user=n, secret=pbx.secrets[n], registrar=pbx.registrar,
                                            tone_hz=CALLER_HZ if i % 2 == 0 else CALLEE_HZ,
                                            record_dir=tmp_path))
            assert p.register() == 200
            out[n] = p
        yield out


def one_call(pbx, a, b, src, dst, audio_s=0.0, services=(1, 2)):
    """src calls dst, dst answers at once; returns the call service that carried it."""
    b.auto_answer(200)
    a.call(pbx.uri(dst))
    a.wait_state("CONFIRMED", timeout=8)
    b.wait_state("CONFIRMED", timeout=5)
    where = carrier(pbx, src, dst, services)
    time.sleep(audio_s)
    a.hangup()
    a.wait_state("DISCONNECTED", timeout=5)
    b.wait_state("DISCONNECTED", timeout=5)
    if audio_s:
        assert tone_present(a.recording_path, CALLEE_HZ, start_s=0.3), f"{src} did not hear {dst}"
        assert tone_present(b.recording_path, CALLER_HZ, start_s=0.3), f"{dst} did not hear {src}"
    return where


def test_one_call_service_renders_the_config_of_before(tmp_path):
    """The edge config with one call service has no trace of the dispatcher."""
    one = EdgeConfig(tmp_path, cs_port=5080).render()
    assert "dispatcher" not in one and "CS_PICK" not in one
    assert '$du = "sip:127.0.0.1:5080;transport=udp";' in one
    two = EdgeConfig(tmp_path, cs_port=5080, more_call_services=(5081,))
    text = two.render()
    assert 'loadmodule "dispatcher.so"' in text and "route(CS_PICK);" in text
    assert '($sp == 5080 || $sp == 5081)' in text
    assert two.dispatcher_list().splitlines()[1:] == [
        "1 sip:127.0.0.1:5080;transport=udp 0 2", "1 sip:127.0.0.1:5081;transport=udp 0 1"]


def test_calls_are_spread_over_both_call_services_with_audio(pbx, tmp_path):
    pairs = [("1000", "1001"), ("1002", "1003"), ("1004", "1005")]
    seen: dict[int, int] = {1: 0, 2: 0}
    with phones(pbx, tmp_path, [n for pair in pairs for n in pair]) as ph:
        for _round in range(4):          # 3 calls at once per round; a round lands on one service 1 in 4
            for src, dst in pairs:
                ph[dst].auto_answer(200)
                ph[src].call(pbx.uri(dst))
            for src, dst in pairs:
                ph[src].wait_state("CONFIRMED", timeout=8)
                ph[dst].wait_state("CONFIRMED", timeout=5)
                seen[carrier(pbx, src, dst)] += 1
            time.sleep(2)
            for src, dst in pairs:
                ph[src].hangup()
            for src, dst in pairs:
                ph[src].wait_state("DISCONNECTED", timeout=5)
                ph[dst].wait_state("DISCONNECTED", timeout=5)
                assert tone_present(ph[src].recording_path, CALLEE_HZ, start_s=0.5), f"{src} did not hear {dst}"
                assert tone_present(ph[dst].recording_path, CALLER_HZ, start_s=0.5), f"{dst} did not hear {src}"
            if seen[1] and seen[2]:
                break
    assert seen[1] and seen[2], f"calls per call service: {seen}"
    done = {n: service_status(pbx, n)["completed_calls"] for n in (1, 2)}
    assert done[1] >= seen[1] and done[2] >= seen[2], done
    # call service 1's status (and `pbx status`) names call service 2 and what it carried
    [two] = pbx.status()["call_services"]
    assert two["call_service"] == 2 and two["completed_calls"] == done[2], two
    out = subprocess.run([sys.executable, "-m", "services.cli", "status", "--data", str(pbx.data)],
                         capture_output=True, text=True, timeout=30, cwd=ROOT).stdout
    assert f"call service 2: 0 active calls, {done[2]} completed" in out, out
    # both wrote their call records into the one CDR database
    assert len([r for r in pbx.cdrs(50) if (r.src, r.dst) in pairs]) == seen[1] + seen[2]


def test_in_dialog_requests_from_either_phone_reach_call_service_2(pbx, tmp_path):
    """A call carried by call service 2: the callee's re-INVITEs (hold, unhold) and BYE go through the
    edge to that service by loose routing (its Contact and the edge's Record-Route), and its
    requests reach both phones."""
    with phones(pbx, tmp_path, ["1009", "1008"]) as ph:
        a, b = ph["1009"], ph["1008"]
        for _ in range(12):              # until the Call-ID hash picks service 2 (1 in 2 each time)
            b.auto_answer(200)
            a.call(pbx.uri("1008"))
            a.wait_state("CONFIRMED", timeout=8)
            b.wait_state("CONFIRMED", timeout=5)
            if carrier(pbx, "1009", "1008") == 2:
                break
            a.hangup()
            a.wait_state("DISCONNECTED", timeout=5)
            b.wait_state("DISCONNECTED", timeout=5)
        else:
            pytest.fail("12 calls in a row landed on call service 1")
        mark = b.event_count
        b.hold()
        b.wait_media("LOCAL_HOLD", timeout=5, after=mark)
        mark = b.event_count
        b.unhold()
        b.wait_media("ACTIVE", timeout=5, after=mark)
        time.sleep(1.0)
        b.hangup()
        b.wait_state("DISCONNECTED", timeout=5)
        a.wait_state("DISCONNECTED", timeout=5)
        assert tone_present(a.recording_path, CALLEE_HZ, start_s=-1.5, end_s=-0.3), "no audio after unhold"
    rec = pbx.wait_cdr(lambda r: (r.src, r.dst) == ("1009", "1008") and r.legs[0].get("hangup_by") == "callee")
    assert rec.billsec >= 1


def test_a_hung_or_killed_call_service_2_is_skipped(pbx, tmp_path):
    pid = wait_instance(pbx, 2)["pid"]
    with phones(pbx, tmp_path, ["1006", "1007"]) as ph:
        a, b = ph["1006"], ph["1007"]
        os.kill(pid, signal.SIGSTOP)      # hung: its socket takes datagrams, nothing answers
        try:
            started = time.monotonic()
            # (its control socket does not answer either: only call service 1 is asked)
            where = [one_call(pbx, a, b, "1006", "1007", audio_s=1.5 if i == 0 else 0.0, services=(1,))
                     for i in range(4)]
            assert where == [1, 1, 1, 1]
            assert time.monotonic() - started < 20
        finally:
            os.kill(pid, signal.SIGCONT)
        os.kill(pid, signal.SIGKILL)      # dead: the supervisor starts it again
        where = [one_call(pbx, a, b, "1006", "1007", audio_s=1.5 if i == 0 else 0.0) for i in range(3)]
        restarted = wait_instance(pbx, 2, not_pid=pid)
        assert restarted["pid"] != pid
    assert "call service 2 exited with code -9; retrying" in pbx.log_tail(400)
    print("after SIGKILL, calls carried by call services", where)


def test_feature_calls_stay_on_call_service_1(pbx, tmp_path):
    """A number that is not an extension (here the echo test *43) goes to call service 1 every time:
    features keep their state in its memory (decision 025)."""
    with phones(pbx, tmp_path, ["1008"]) as ph:
        a = ph["1008"]
        where = []
        for i in range(4):
            a.call(pbx.uri("*43"))
            a.wait_state("CONFIRMED", timeout=8)
            where.append(carrier(pbx, "1008", "*43"))
            a.hangup()
            a.wait_state("DISCONNECTED", timeout=5)
    assert where == [1, 1, 1, 1]
