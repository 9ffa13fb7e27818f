"""SIP trunks end to end: an extension calls out through a SIPp "carrier", the carrier calls a DID.

The carrier is SIPp on its own loopback address (code of ours wrote none of it): for outbound calls
a UAS that challenges the INVITE with 401, checks the digest against the trunk's credentials,
answers and echoes the RTP back (-rtp_echo), so the caller hearing its own tone proves audio both
ways through the PBX and the trunk; for inbound calls a UAC delivering a DID.
"""

import socket
import time

import pytest

from firmware.cdr import Disposition
from tests.pbxproc import PbxProcess
from tests.phones.audio import tone_present
from tests.phones.pj import PjPhone
from tests.phones.raw import RawPhone, sdp_body, udp_socket
from tests.phones.sipp import Sipp, free_port
from tests.test_trunks_edge import received

pytestmark = pytest.mark.e2e
CARRIER, BROKEN_CARRIER = "127.0.0.61", "127.0.0.62"
DID = "441632960999"
CALLER_ID = "441632960000"


@pytest.fixture(scope="module")
def carrier_port():
    return free_port("udp", CARRIER)


@pytest.fixture(scope="module")
def broken_port():
    return free_port("udp", BROKEN_CARRIER)


@pytest.fixture(scope="module")
def pbx(tmp_path_factory, carrier_port, broken_port):
    proc = PbxProcess(tmp_path_factory.mktemp("pbx"), extensions=["1000", "1001"],
                      settings={"no_answer_timeout": 15, "busy_tone_seconds": 1})
    proc.store.add_trunk("carrier", f"{CARRIER}:{carrier_port}", "acct1", "Carrier-Pass-1", register=False)
    proc.store.add_trunk("primary", f"{BROKEN_CARRIER}:{broken_port}", register=False)
    proc.store.add_outbound_route("mobiles", "_07X.", "carrier", caller_id=CALLER_ID)
    proc.store.add_outbound_route("international", "_00X.", "primary", fallback_trunk="carrier")
    proc.store.add_inbound_route(DID, "extension:1001", name="main number")
    proc.start()
    yield proc
    proc.stop()


def pj(pbx, number, tmp_path, hz):
    p = PjPhone(user=number, secret=pbx.secrets[number], registrar=pbx.registrar, tone_hz=hz,
                record_dir=tmp_path)
    return p


def test_an_extension_calls_a_mobile_out_on_the_trunk_with_the_routes_caller_id(pbx, carrier_port, tmp_path):
    uas = Sipp("uas_challenge.xml", local_ip=CARRIER, port=carrier_port, workdir=tmp_path, timeout=30,
               rtp_echo=True, params={"username": "acct1", "password": "Carrier-Pass-1"},
               extra_args=["-trace_msg"]).start()
    with pj(pbx, "1000", tmp_path, 700) as a:
        assert a.register() == 200
        a.call(pbx.uri("07700900123"))
        a.wait_state("CONFIRMED", timeout=10)
        time.sleep(2.0)
        a.hangup()
        a.wait_state("DISCONNECTED", timeout=5)
        # the carrier echoed what it got: the caller hears its own tone back through both relays
        assert tone_present(a.recording_path, 700, start_s=0.5)
    result = uas.wait(15)
    assert result.ok, result.log_tail()
    invites = received(uas.workdir, "INVITE")
    assert len(invites) == 2                                   # challenged once, then with credentials
    first, second = invites[0][1], invites[1][1]
    assert first.startswith(f"INVITE sip:07700900123@{CARRIER}:{carrier_port}")
    assert f"sip:{CALLER_ID}@" in second.split("From:", 1)[1].split("\n", 1)[0]
    assert "Authorization: Digest" in second and "X-PBX-Trunk" not in second
    rec = pbx.wait_cdr(lambda r: r.src == "1000" and r.dst == "07700900123")
    assert rec.disposition is Disposition.ANSWERED
    assert (rec.dst_kind, rec.dst_trunk, rec.external_number) == ("trunk", "carrier", "07700900123")


def test_the_carrier_calls_the_did_and_the_routes_extension_rings_with_the_callers_number(pbx, tmp_path):
    with pj(pbx, "1001", tmp_path, 1100) as b:
        assert b.register() == 200
        b.auto_answer(200, after_ms=200)
        uac = Sipp("carrier_uac_call.xml", pbx.registrar, local_ip=CARRIER, service=DID, workdir=tmp_path,
                   timeout=20, rtp_echo=True, params={"caller": "07700900555", "talk_ms": 2500}).start()
        incoming = b.wait_incoming(timeout=8)
        assert "07700900555" in incoming["from"]
        b.wait_state("CONFIRMED", timeout=5)
        result = uac.wait(20)
        assert result.ok, result.log_tail()
        b.wait_state("DISCONNECTED", timeout=5)
        assert tone_present(b.recording_path, 1100, start_s=0.5)   # its own tone, echoed by the carrier
    rec = pbx.wait_cdr(lambda r: r.src == "07700900555")
    assert rec.disposition is Disposition.ANSWERED and rec.dst == "1001"
    assert (rec.src_kind, rec.src_trunk, rec.dst_kind) == ("trunk", "carrier", "extension")


def test_a_trunk_caller_cannot_dial_out_again_through_another_route(pbx, tmp_path):
    # someone at the carrier's address "calls" a mobile number instead of a DID: no relay back out
    carrier = RawPhone("carrier", "", pbx.registrar, ip=CARRIER)
    rtp = udp_socket(CARRIER)
    try:
        status, _, _ = carrier.invite("07700900123", sdp_body(CARRIER, rtp.getsockname()[1]), timeout=15)
    finally:
        carrier.close()
        rtp.close()
    assert status == 404
    rec = pbx.wait_cdr(lambda r: r.dst == "07700900123" and r.disposition is Disposition.FAILED)
    assert rec.cause.startswith("404")


def test_a_trunk_that_fails_by_itself_hands_the_call_to_the_routes_fallback_trunk(pbx, carrier_port,
                                                                                   broken_port, tmp_path):
    import threading
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((BROKEN_CARRIER, broken_port))
    broken = RawPhone("primary", "", pbx.registrar, sock=sock)   # a provider whose proxy is down
    seen = []

    def answer_503():
        req = broken.wait_request("INVITE", timeout=10)
        if req is not None:
            seen.append(req.start)
            broken.reply(req, 503, "Service Unavailable", tag="down1")

    t = threading.Thread(target=answer_503)
    t.start()
    uas = Sipp("uas_challenge.xml", local_ip=CARRIER, port=carrier_port, workdir=tmp_path, timeout=30,
               rtp_echo=True, params={"username": "acct1", "password": "Carrier-Pass-1"}).start()
    try:
        with pj(pbx, "1000", tmp_path, 700) as a:
            assert a.register() == 200
            a.call(pbx.uri("0033123456789"))
            a.wait_state("CONFIRMED", timeout=15)
            a.hangup()
            a.wait_state("DISCONNECTED", timeout=5)
        assert uas.wait(15).ok
    finally:
        t.join(12)
        broken.close()
    assert seen and seen[0].startswith("INVITE sip:0033123456789@")
    rec = pbx.wait_cdr(lambda r: r.dst == "0033123456789")
    assert rec.disposition is Disposition.ANSWERED and rec.dst_trunk == "carrier"
