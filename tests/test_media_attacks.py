"""Attacks on the call service and its media from a LAN host (issue 7, items 2, 3, 4, 6, 9).

The PBX listens on the box side of a veth pair; the attacker sits in a network namespace, as a
host on the office LAN would. The phones are raw SIP phones (tests/phones/raw.py) because real
phones refuse to send what an attacker sends.
"""

import os
import socket
import threading
import time

import pytest

from tests.lanhost import LanHost
from tests.pbxproc import PbxProcess
from tests.phones.raw import drain, raw_call as bridged_call, registered as phone, rtp_packet, sdp_body, wait_idle
from tests.phones.raw import udp_socket as udp

pytestmark = pytest.mark.e2e

EXTS = [str(n) for n in range(2000, 2012)]


@pytest.fixture(scope="module")
def lan():
    with LanHost() as host:
        yield host


@pytest.fixture(scope="module")
def box(lan, tmp_path_factory):
    proc = PbxProcess(tmp_path_factory.mktemp("pbx"), extensions=EXTS, addr=lan.box_addr,
                      settings={"busy_tone_seconds": 6, "no_answer_timeout": 20})
    proc.start()
    yield proc
    proc.stop()


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_rtp_spray_from_a_lan_host_neither_hears_the_call_nor_gets_into_it(box, lan):
    a, b = phone(box, "2000"), phone(box, "2001")
    a_rtp, b_rtp = udp(), udp()
    attacker = lan.socket()
    attacker.bind((lan.host_addr, 0))
    attacker.setblocking(False)
    first, last = box.rtp

    def spray(seq):
        for port in range(first, last, 2):
            attacker.sendto(rtp_packet(b"EVIL" * 40, seq), (lan.box_addr, port))

    try:
        dialog, pbx_a, pbx_b, _ = bridged_call(box, a, b, a_rtp, b_rtp)
        # The attacker is first on every port, before either phone has sent a packet: a box that
        # latches to whoever speaks first would now send this call's audio to the attacker.
        for seq in range(3):
            spray(seq)
            time.sleep(0.02)
        for seq in range(40):
            a_rtp.sendto(rtp_packet(b"AAAA" * 40, seq), pbx_a)
            b_rtp.sendto(rtp_packet(b"BBBB" * 40, seq), pbx_b)
            if seq % 10 == 0:
                spray(100 + seq)
            time.sleep(0.02)
        time.sleep(0.3)
        at_a, at_b, at_attacker = drain(a_rtp), drain(b_rtp), drain(attacker)
        assert sum(b"BBBB" in p for p in at_a) >= 30, "a should hear b"
        assert sum(b"AAAA" in p for p in at_b) >= 30, "b should hear a"
        assert not any(b"EVIL" in p for p in at_a + at_b), "injected RTP reached a phone"
        assert at_attacker == [], f"the attacker received {len(at_attacker)} packets of the call"
        assert "packets dropped from " + lan.host_addr in box.log_path.read_text()
        assert a.bye(dialog) == 200
        wait_idle(box)
    finally:
        for s in (a_rtp, b_rtp, attacker):
            s.close()
        a.close()
        b.close()


def test_reinvite_aiming_media_at_the_pbx_itself_is_refused_and_burns_no_cpu(box):
    a, b = phone(box, "2002"), phone(box, "2003")
    a_rtp, b_rtp = udp(), udp()
    try:
        dialog, pbx_a, pbx_b, _ = bridged_call(box, a, b, a_rtp, b_rtp)
        # a re-INVITE that points a's media at the PBX's own port of leg b (a relay loop), or at
        # the edge's SIP port (an RTP flood into the box's own SIP service)
        for target in (pbx_b, pbx_a, (box.addr, box.sip_port)):
            assert a.in_dialog(dialog, "INVITE", sdp_body(*target)) == 488, target
        before = cpu_seconds(box.proc.pid)
        for seq in range(25):
            a_rtp.sendto(rtp_packet(b"AAAA" * 40, seq), pbx_a)
            b_rtp.sendto(rtp_packet(b"BBBB" * 40, seq), pbx_b)
            time.sleep(0.02)
        time.sleep(1.0)
        used = cpu_seconds(box.proc.pid) - before
        assert used < 0.5, f"the call service used {used:.2f} s of CPU in 1.5 s: media loop?"
        assert sum(b"AAAA" in p for p in drain(b_rtp)) >= 20, "the call still carries a's audio to b"
        # a fair re-INVITE (hold) still works: the PBX answers it and plays music to b
        assert a.in_dialog(dialog, "INVITE", sdp_body("127.0.0.1", a_rtp.getsockname()[1],
                                                      direction="sendonly")) == 200
        assert a.bye(dialog) == 200
        wait_idle(box)
    finally:
        for s in (a_rtp, b_rtp):
            s.close()
        a.close()
        b.close()


@pytest.mark.parametrize("address", ["pbx.example.com", "999.999.999.999", "::1", "224.0.0.9"])
def test_unusable_sdp_address_gets_488_and_another_calls_announcement_keeps_playing(box, address):
    a, c = phone(box, "2004"), phone(box, "2005")
    a_rtp = udp()
    try:
        # a dials a number that does not exist: the PBX answers with early media and speaks
        threading_result = {}

        def caller():
            threading_result["status"] = a.invite("7999", sdp_body("127.0.0.1", a_rtp.getsockname()[1]),
                                                  timeout=15)[0]

        t = threading.Thread(target=caller)
        t.start()
        time.sleep(1.0)
        assert len(drain(a_rtp)) > 20, "the announcement is playing"
        kind = "IP6" if ":" in address else "IP4"
        status, _, resp = c.invite("7999", sdp_body(address, 4000, ip_kind=kind))
        assert status == 488, f"{address}: {status}"
        time.sleep(0.3)
        drain(a_rtp)
        time.sleep(1.0)
        assert len(drain(a_rtp)) >= 40, "the other call's announcement stopped: the media tick died"
        t.join(20)
        assert threading_result["status"] == 404
        wait_idle(box)
    finally:
        a_rtp.close()
        a.close()
        c.close()


def test_overlong_call_id_and_empty_number_still_end_with_bye_and_a_cdr(box):
    a, b = phone(box, "2006"), phone(box, "2007")
    a_rtp, b_rtp = udp(), udp()
    long_id = "x" * 300 + "@attacker"
    try:
        dialog, _, _, b_dialog = bridged_call(box, a, b, a_rtp, b_rtp, call_id=long_id)
        assert a.bye(dialog) == 200
        bye = b.wait_request("BYE", timeout=5)
        assert bye is not None, "the callee never got a BYE"
        b.reply(bye, 200)
        rec = box.wait_cdr(lambda r: r.call_id.startswith("x" * 200))
        assert len(rec.call_id) == 255 and rec.src == "2006" and rec.dst == "2007"
        assert rec.disposition.value == "ANSWERED"
        # an INVITE with no user part at all (nothing dialled)
        status, _, _ = a.invite("", sdp_body("127.0.0.1", a_rtp.getsockname()[1]),
                                uri=f"sip:{box.addr}:{box.sip_port}", call_id="empty-number-1", timeout=15)
        assert status in (404, 484), status
        rec = box.wait_cdr(lambda r: r.call_id == "empty-number-1")
        assert rec.dst == "(none)"
        wait_idle(box)
        assert "no CDR written" not in box.log_path.read_text()
    finally:
        for s in (a_rtp, b_rtp):
            s.close()
        a.close()
        b.close()


def test_call_service_port_answers_nobody_but_the_edge(box):
    cs_port = box.status()["cs_port"]
    before = box.status()["sip"]["foreign"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(1.5)
        port = s.getsockname()[1]
        invite = (f"INVITE sip:2008@127.0.0.1:{cs_port} SIP/2.0\r\n"
                  f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKlocal1\r\n"
                  "From: <sip:2009@127.0.0.1>;tag=1\r\nTo: <sip:2008@127.0.0.1>\r\n"
                  "Call-ID: local-process-1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
                  f"Contact: <sip:2009@127.0.0.1:{port}>\r\nContent-Type: application/sdp\r\n")
        body = sdp_body("127.0.0.1", 4000)
        s.sendto((invite + f"Content-Length: {len(body)}\r\n\r\n" + body).encode(), ("127.0.0.1", cs_port))
        with pytest.raises(socket.timeout):
            s.recvfrom(4096)
    st = box.status()
    assert st["sip"]["foreign"] == before + 1
    assert not st["calls"]
