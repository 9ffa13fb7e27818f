"""Malformed SIP never crashes anything: the edge and the call service drop or 400 it, calls go on."""

import socket
import time

import pytest

from tests.phones.pj import PjPhone
from tests.test_calls import CALLEE_HZ, CALLER_HZ
from tests.phones.audio import tone_present

pytestmark = pytest.mark.e2e

GOOD_HEAD = (b"OPTIONS sip:pbx@127.0.0.1 SIP/2.0\r\n"
             b"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKjunk1\r\n"
             b"From: <sip:x@127.0.0.1>;tag=1\r\nTo: <sip:pbx@127.0.0.1>\r\n"
             b"Call-ID: junk-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n")

JUNK = [
    b"\x00\xff\xfe" * 300,                                    # binary junk
    b"INVITE sip:1001@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP",   # truncated headers
    GOOD_HEAD + b"Content-Length: 5000\r\n\r\nshort body",     # Content-Length larger than the body
    GOOD_HEAD + b"Content-Length: -7\r\n\r\n",                 # negative Content-Length
    GOOD_HEAD + b"CSeq: banana\r\n\r\n",                       # unparsable CSeq
    b"INVITE sip:1001@127.0.0.1 SIP/2.0\r\n" + b"X-Fill: " + b"A" * 65000 + b"\r\n\r\n",  # ~64 KiB
    b"SIP/2.0 200 OK\r\nVia: nonsense\r\n\r\n",                # stray response
    b"\r\n\r\n",                                               # keepalive
    "INVITE sip:\u00e9\u00e9@127.0.0.1 SIP/2.0\r\nFrom: \u00ff\r\n\r\n".encode("utf-8"),
]


def blast(addr, port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.55", 0))  # not the phones' address: a flood ban may hit it, nothing else
        for data in JUNK:
            try:
                s.sendto(data, (addr, port))
            except OSError:
                pass  # a 64 KiB datagram may exceed the loopback limit: the kernel refuses it


def test_malformed_sip_to_edge_and_call_service_crashes_nothing_and_calls_still_work(pbx, tmp_path):
    status = pbx.status()
    blast("127.0.0.1", pbx.sip_port)
    blast("127.0.0.1", status["cs_port"])
    # TCP: junk and a half message, then the connection closes
    with socket.create_connection(("127.0.0.1", pbx.sip_port), timeout=2) as s:
        s.sendall(JUNK[0] + JUNK[1])
    time.sleep(0.5)
    after = pbx.status()  # the call service answers its control socket
    # the call service hears only the edge: a local process's junk is counted and ignored
    assert after["sip"]["foreign"] >= len(JUNK) - 1, after["sip"]
    assert pbx.proc.poll() is None
    with PjPhone(user="1030", secret=pbx.secrets["1030"], registrar=pbx.registrar, tone_hz=CALLER_HZ,
                 record_dir=tmp_path) as a, \
            PjPhone(user="1031", secret=pbx.secrets["1031"], registrar=pbx.registrar, tone_hz=CALLEE_HZ,
                    record_dir=tmp_path) as b:
        assert a.register() == 200 and b.register() == 200
        b.auto_answer(200)
        a.call(pbx.uri("1031"))
        a.wait_state("CONFIRMED", timeout=5)
        time.sleep(1.5)
        a.hangup()
        b.wait_state("DISCONNECTED", timeout=5)
        assert tone_present(a.recording_path, CALLEE_HZ, start_s=0.3)
