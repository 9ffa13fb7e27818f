"""SIP trunks at the edge, against a "carrier" no code of ours wrote (SIPp on its own loopback
addresses): registration with digest, refresh and back-off; the call service's outbound INVITE
relayed to the trunk without X-PBX-Trunk and the provider's 407 back; inbound calls from the
trunk's address or to its registered contact marked X-PBX-Trunk and not challenged; a phone's
X-PBX-Trunk removed; nothing reaches the carrier from an unauthenticated LAN host.

Addresses: the edge on 127.0.0.1, the registration carrier on 127.0.0.60, a failing registrar on
127.0.0.62, the IP trunk on 127.0.0.61, a stranger on 127.0.0.64.
"""
from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from firmware.config import ConfigStore
from services.edge import Edge, EdgeConfig
from services.edge.trunks import EdgeTrunk
from tests.phones.sipp import Sipp, run_sipp
from tests.test_edge import SDP, SipEndpoint, digest, free_port, response_to, wait_for_request

CARRIER, IP_TRUNK, BAD_REGISTRAR, STRANGER = "127.0.0.60", "127.0.0.61", "127.0.0.62", "127.0.0.64"
ROOT = Path(__file__).resolve().parent.parent
DID = "442071234567"


def sipp_messages(workdir: Path) -> list[tuple[float, str]]:
    """(time, message) of every message a SIPp run with -trace_msg received."""
    out = []
    for log in workdir.glob("*_messages.log"):
        for block in log.read_text(errors="replace").split("----------------------------------------------- ")[1:]:
            stamp, _, rest = block.partition("\n")
            if "message received" not in rest.split("\n", 1)[0]:
                continue
            when = datetime.strptime(stamp.strip()[:26], "%Y-%m-%d %H:%M:%S.%f").timestamp()
            out.append((when, rest.split("\n", 1)[1].strip()))
    return sorted(out)


def received(workdir: Path, method: str) -> list[tuple[float, str]]:
    return [(t, m) for t, m in sipp_messages(workdir) if m.startswith(method + " ")]


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


def at_least(n: int, items: list):
    return items if len(items) >= n else None


# ----- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ports():
    return {"carrier": free_port(), "bad": free_port(), "ip": free_port()}


@pytest.fixture(scope="module")
def registrars(tmp_path_factory, ports):
    """The carrier's registrar (digest, 200 with expires=10) and one that refuses (403)."""
    work = tmp_path_factory.mktemp("registrars")
    good = Sipp("carrier_registrar.xml", local_ip=CARRIER, port=ports["carrier"], calls=50, timeout=120,
                params={"username": "acct1", "password": "Carrier-Pass-1", "expires": 10},
                workdir=work, extra_args=["-trace_msg"]).start()
    bad = Sipp("carrier_registrar.xml", local_ip=BAD_REGISTRAR, port=ports["bad"], calls=50, timeout=120,
               params={"username": "acct2", "password": "not-what-the-pbx-has", "expires": 10},
               workdir=work, extra_args=["-trace_msg"]).start()
    yield good, bad
    good.stop()
    bad.stop()


@pytest.fixture(scope="module")
def cs_socket():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", free_port()))
    yield sock
    sock.close()


@pytest.fixture(scope="module")
def edge(tmp_path_factory, ports, registrars, cs_socket):
    data = tmp_path_factory.mktemp("edge")
    store = ConfigStore(data)
    store.add_trunk("carrier", f"{CARRIER}:{ports['carrier']}", "acct1", "Carrier-Pass-1")
    store.add_trunk("refuser", f"{BAD_REGISTRAR}:{ports['bad']}", "acct2", "Refused-Pass-2")
    store.add_trunk("iptrunk", f"{IP_TRUNK}:{ports['ip']}", register=False)
    cfg = EdgeConfig(data, sip_port=free_port(), cs_port=cs_socket.getsockname()[1],
                     trunk_timer_seconds=1, trunk_retry_seconds=1, trunk_retry_max_seconds=8)
    edge = Edge(cfg)
    edge.sync_subscribers({"1000": "pw1000"})
    edge.start()
    stop = threading.Event()

    def tend():  # what the runner's supervise loop does
        while not stop.wait(0.5):
            try:
                edge.tend_trunks()
            except Exception:
                pass
    tender = threading.Thread(target=tend, daemon=True)
    tender.start()
    yield edge
    stop.set()
    tender.join(2)
    edge.stop()


@pytest.fixture
def cs(edge, cs_socket):
    endpoint = SipEndpoint.__new__(SipEndpoint)
    endpoint.sock = cs_socket
    endpoint.ip, endpoint.port = cs_socket.getsockname()
    endpoint.edge = ("127.0.0.1", edge.cfg.sip_port)
    endpoint.drain()
    return endpoint


def state_of(edge: Edge, name: str) -> dict:
    return next(s for s in edge.trunk_states() if s["name"] == name)


# ----- 1. registration --------------------------------------------------------------------------
def test_trunk_registers_with_digest_and_refreshes_before_expiry(edge, registrars):
    good, _ = registrars
    st = wait_until(lambda: (s := state_of(edge, "carrier"))["state"] == "registered" and s, 10,
                    "carrier registered")
    assert st["last_code"] == 200 and 0 < st["expires"] <= 10
    registers = received(good.workdir, "REGISTER")
    first = registers[0][1]
    token = EdgeTrunk.of(ConfigStore(edge.cfg.data_dir).get_trunk("carrier")).contact_user
    assert f"<sip:{token}@127.0.0.1:{edge.cfg.sip_port}>" in first, first
    assert re.search(r"(?m)^To: <?sip:acct1@", first)

    # expires=10 in the 200: the refresh (a challenged REGISTER again, then one with
    # credentials) comes before the 10 s are over
    authorized = lambda: [t for t, m in received(good.workdir, "REGISTER") if "Authorization:" in m]
    times = wait_until(lambda: at_least(2, authorized()), 12, "a second REGISTER")
    assert times[1] - times[0] < 10
    assert state_of(edge, "carrier")["state"] == "registered"


def test_refused_registration_is_failed_with_its_code_and_retried_with_back_off(edge, registrars):
    _, bad = registrars
    st = wait_until(lambda: (s := state_of(edge, "refuser"))["state"] == "failed" and s, 10, "refuser failed")
    assert st["last_code"] == 403 and st["expires"] is None
    # each attempt is a challenged REGISTER and one with (wrong) credentials; attempts are
    # 1, 2, 4 ... s apart (+ up to 2 s of timer granularity)
    attempts = lambda: [t for t, m in received(bad.workdir, "REGISTER") if "Authorization:" in m]
    times = wait_until(lambda: at_least(4, attempts()), 25, "4 attempts")
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[2] > gaps[0] + 1.5, gaps
    assert state_of(edge, "refuser") == dict(st, expires=None, last_code=403)


def test_ip_trunk_has_no_registration_state(edge):
    st = state_of(edge, "iptrunk")
    assert st["state"] == "ip" and st["register"] is False and st["last_code"] is None


# ----- 2. outbound ------------------------------------------------------------------------------
def test_call_service_invite_reaches_the_trunk_without_the_header_and_the_407_comes_back(
        edge, cs, ports, tmp_path):
    host = f"{IP_TRUNK}:{ports['ip']}"
    with Sipp("carrier_uas_407.xml", local_ip=IP_TRUNK, port=ports["ip"], workdir=tmp_path,
              extra_args=["-trace_msg"]) as uas:
        call_id, branch = uuid.uuid4().hex, "z9hG4bK" + uuid.uuid4().hex[:16]
        invite = cs.request("INVITE", f"sip:07700900123@{host}", "1000", to_user="07700900123",
                            call_id=call_id, branch=branch, extra=["X-PBX-Trunk: iptrunk"], body=SDP)
        reply = cs.final_response(invite)
        assert reply is not None and reply.status == 407, reply and reply.first_line
        assert "carrier.test" in reply.header("Proxy-Authenticate")
        # the ACK of a non-2xx answer: same branch, the answer's To tag
        cs.send(cs.request("ACK", f"sip:07700900123@{host}", "1000", to_user="07700900123", call_id=call_id,
                           branch=branch, to_tag=reply.header("To").split("tag=")[1]))
        got = wait_until(lambda: received(uas.workdir, "INVITE"), 5, "INVITE at the carrier")
    result = uas.result
    text = got[0][1]
    assert text.startswith(f"INVITE sip:07700900123@{host} SIP/2.0")
    assert "x-pbx-trunk" not in text.lower()
    assert re.search(rf"(?mi)^Record-Route: <sip:127\.0\.0\.1:{edge.cfg.sip_port};", text)
    assert result.requests.get("ACK") == 1


@pytest.mark.parametrize("trunk,ruri_host,code", [("nosuch", None, 404), ("iptrunk", "127.0.0.99:5060", 403)])
def test_call_service_cannot_send_to_an_unknown_trunk_or_another_host(edge, cs, ports, trunk, ruri_host, code):
    host = ruri_host or f"{IP_TRUNK}:{ports['ip']}"
    reply = cs.final_response(cs.request("INVITE", f"sip:07700900123@{host}", "1000", to_user="07700900123",
                                         extra=[f"X-PBX-Trunk: {trunk}"], body=SDP))
    assert reply is not None and reply.status == code


# ----- 3. inbound -------------------------------------------------------------------------------
def _carrier_call(edge, cs, tmp_path, local_ip, ruri_user):
    """A SIPp carrier call for the DID; the fake CS answers 486. Returns (CS's INVITE, result)."""
    uac = Sipp("carrier_uac_invite.xml", ("127.0.0.1", edge.cfg.sip_port), local_ip=local_ip,
               service=ruri_user, params={"did": DID}, workdir=tmp_path, timeout=10).start()
    invite, source = wait_for_request(cs, "INVITE", timeout=4)
    if invite is not None:
        cs.send(response_to(invite, "486 Busy Here"), source)
    return invite, uac.wait(15)


def test_call_from_the_ip_trunks_address_reaches_the_call_service_marked_and_unchallenged(edge, cs, tmp_path):
    invite, result = _carrier_call(edge, cs, tmp_path, IP_TRUNK, DID)
    assert invite is not None, "the carrier's INVITE never reached the call service"
    assert invite.header("X-PBX-Trunk") == "iptrunk"
    assert invite.first_line.startswith(f"INVITE sip:{DID}@127.0.0.1:{edge.cfg.sip_port}")
    assert result.responses.get(486) == 1 and 407 not in result.responses, result.responses


def test_call_to_the_registered_contact_is_the_registration_trunks(edge, cs, registrars, tmp_path):
    wait_until(lambda: state_of(edge, "carrier")["state"] == "registered", 10, "carrier registered")
    token = EdgeTrunk.of(ConfigStore(edge.cfg.data_dir).get_trunk("carrier")).contact_user
    invite, result = _carrier_call(edge, cs, tmp_path, STRANGER, token)
    assert invite is not None and invite.header("X-PBX-Trunk") == "carrier"
    assert invite.first_line.startswith(f"INVITE sip:{DID}@"), "the CS sees the DID, not our token"
    assert result.responses.get(486) == 1 and 407 not in result.responses


def test_the_same_call_from_another_address_is_challenged(edge, cs, tmp_path):
    invite, result = _carrier_call(edge, cs, tmp_path, STRANGER, DID)
    assert invite is None
    assert result.responses.get(407) == 1, result.responses


# ----- 4. a phone cannot choose or pose as a trunk -------------------------------------------------
def test_a_phones_x_pbx_trunk_is_removed(edge, cs):
    phone = SipEndpoint(edge.cfg.sip_port)
    try:
        uri = f"sip:07700900123@127.0.0.1:{edge.cfg.sip_port}"
        call_id = uuid.uuid4().hex
        extra = ["X-PBX-Trunk: iptrunk", "X-PBX-Dial: 0900123456"]
        first = phone.final_response(phone.request("INVITE", uri, "1000", to_user="07700900123",
                                                   call_id=call_id, extra=extra, body=SDP))
        assert first.status == 407, "an X-PBX-Trunk header does not spare a phone the challenge"
        auth = digest("Proxy-Authorization", first.header("Proxy-Authenticate"), "INVITE", uri, "1000", "pw1000")
        phone.send(phone.request("INVITE", uri, "1000", to_user="07700900123", call_id=call_id, cseq=2,
                                 extra=extra + [auth], body=SDP))
        invite, source = wait_for_request(cs, "INVITE")
        assert invite is not None
        assert invite.header("X-PBX-Trunk") == "" and "x-pbx-trunk" not in str(invite.headers).lower()
        assert "x-pbx-dial" not in str(invite.headers).lower(), "only the call service tells a line what to dial"
        cs.send(response_to(invite, "486 Busy Here"), source)
    finally:
        phone.close()


# ----- the whole PBX: status, `pbx trunk list`, API, dashboard; nothing out from a stranger -----
def test_registration_state_in_status_cli_api_and_dashboard(tmp_path):
    from tests.browser.webui_env import admin_client, api, make_app
    from tests.pbxproc import PbxProcess
    from webui.dashboard.views import snapshot
    port = free_port()
    with Sipp("carrier_registrar.xml", local_ip=CARRIER, port=port, calls=20, timeout=60, workdir=tmp_path,
              params={"username": "acct9", "password": "Carrier-Pass-9", "expires": 60}):
        pbx = PbxProcess(tmp_path / "pbx", extensions=["1000"])
        pbx.store.add_trunk("carrier", f"{CARRIER}:{port}", "acct9", "Carrier-Pass-9")
        pbx.store.add_trunk("iptrunk", f"{IP_TRUNK}:5060", register=False)
        with pbx:
            trunks = wait_until(lambda: (t := pbx.status()["trunks"]) and t[0]["state"] == "registered" and t,
                                15, "registered in status")
            by_name = {t["name"]: t for t in trunks}
            assert by_name["carrier"] == {"name": "carrier", "host": f"{CARRIER}:{port}", "register": True,
                                          "transport": "udp", "state": "registered", "last_code": 200,
                                          "expires": by_name["carrier"]["expires"]}
            assert 0 < by_name["carrier"]["expires"] <= 60
            assert by_name["iptrunk"]["state"] == "ip"

            out = subprocess.run([sys.executable, "-m", "services.cli", "trunk", "list", "--data", str(pbx.data)],
                                 cwd=ROOT, capture_output=True, text=True, timeout=20)
            assert out.returncode == 0, out.stderr
            lines = out.stdout.splitlines()
            assert lines[0].split() == ["name", "host", "transport", "register", "state", "code", "expires"]
            assert re.match(rf"carrier\s+{re.escape(CARRIER)}:{port}\s+udp\s+yes\s+registered\s+200\s+\d+s$",
                            lines[1]), out.stdout
            assert re.match(r"iptrunk\s+\S+\s+udp\s+no\s+ip$", lines[2]), out.stdout

            app = make_app(pbx.data)
            client = admin_client(app, pbx.data)
            listed = {t["name"]: t for t in api(client, "GET", "/api/v1/trunks").get_json()}
            assert listed["carrier"]["state"] == "registered" and listed["carrier"]["last_code"] == 200
            assert listed["iptrunk"]["state"] == "ip"
            assert "Carrier-Pass-9" not in json.dumps(listed)
            with app.app_context():
                cards = {t["name"]: t["state"] for t in snapshot(pbx.data)["trunks"]}
            assert cards == {"carrier": "registered", "iptrunk": "IP-authenticated"}


def test_unauthenticated_invite_from_a_lan_host_never_reaches_the_carrier(tmp_path):
    from tests.lanhost import LanHost
    from tests.pbxproc import PbxProcess
    from tests.test_edge_security import LanPhone
    port = free_port()
    with LanHost() as lan, Sipp("uas_answer.xml", local_ip=IP_TRUNK, port=port, calls=5, timeout=30,
                                workdir=tmp_path, extra_args=["-trace_msg"]) as carrier:
        pbx = PbxProcess(tmp_path / "pbx", extensions=["1000"], addr=lan.box_addr)
        pbx.store.add_trunk("iptrunk", f"{IP_TRUNK}:{port}", register=False)
        pbx.store.add_outbound_route("out", "_0.", "iptrunk")
        with pbx:
            stranger = LanPhone(lan, pbx.registrar)
            try:
                box = f"{pbx.addr}:{pbx.sip_port}"
                for uri, extra in ((f"sip:07700900123@{box}", []),
                                   (f"sip:07700900123@{box}", ["X-PBX-Trunk: iptrunk"]),
                                   (f"sip:07700900123@{IP_TRUNK}:{port}", ["X-PBX-Trunk: iptrunk"])):
                    reply = stranger.final_response(stranger.request("INVITE", uri, "1000", to_user="07700900123",
                                                                     extra=extra, body=SDP))
                    assert reply is not None and reply.status == 407, (uri, extra, reply and reply.first_line)
            finally:
                stranger.close()
            time.sleep(1.0)
        assert received(carrier.workdir, "INVITE") == []
