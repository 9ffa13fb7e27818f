"""The call model's media and signalling rules, driven end to end with raw SIP phones (issue 8 part 1).

Each phone here says exactly what a real phone of some make says: only A-law, a telephone-event
payload type of its own, DTMF by SIP INFO, early media in a 183, ringing for longer than 32 s.
"""

import threading
import time

import numpy as np
import pytest

from firmware.dsp import g711
from firmware.dsp.detect import tone_present
from firmware.dsp.rfc4733 import pack_event, unpack_event
from tests.phones.raw import drain, raw_call, registered, rtp_packet, sdp_address, sdp_body, udp_socket, wait_idle

pytestmark = pytest.mark.e2e


def sine(hz: float, n: int = 160, start: int = 0) -> bytes:
    t = np.arange(start, start + n) / 8000
    return (np.sin(2 * np.pi * hz * t) * 8000).astype("<i2").tobytes()


@pytest.fixture
def phones(pbx, request):
    """Two registered raw phones with an RTP socket each; numbers from the test's parameters."""
    made = []

    def make(a_number, b_number):
        a, b = registered(pbx, a_number), registered(pbx, b_number)
        a_rtp, b_rtp = udp_socket(), udp_socket()
        made.extend([a, b, a_rtp, b_rtp])
        return a, b, a_rtp, b_rtp

    yield make
    for thing in made:
        thing.close()


def test_alaw_caller_and_ulaw_callee_hear_each_other_through_transcoding(pbx, phones):
    a, b, a_rtp, b_rtp = phones("1000", "1001")
    dialog, pbx_a, pbx_b, _ = raw_call(
        pbx, a, b, a_rtp, b_rtp,
        offer=sdp_body("127.0.0.1", a_rtp.getsockname()[1], pts=(8, 101)),    # A-law only
        answer=sdp_body("127.0.0.1", b_rtp.getsockname()[1], pts=(0, 101)))   # u-law only
    for seq in range(50):
        a_rtp.sendto(rtp_packet(g711.alaw_encode(sine(700, start=seq * 160)), seq, pt=8), pbx_a)
        b_rtp.sendto(rtp_packet(g711.ulaw_encode(sine(1100, start=seq * 160)), seq, pt=0), pbx_b)
        time.sleep(0.02)
    time.sleep(0.2)
    at_b, at_a = drain(b_rtp), drain(a_rtp)
    assert at_b and all(p[1] & 0x7F == 0 for p in at_b), "b gets u-law (payload type 0)"
    assert at_a and all(p[1] & 0x7F == 8 for p in at_a), "a gets A-law (payload type 8)"
    heard_by_b = b"".join(g711.ulaw_decode(p[12:]) for p in at_b)
    heard_by_a = b"".join(g711.alaw_decode(p[12:]) for p in at_a)
    assert tone_present(heard_by_b[-3200:], 700, 8000, 10)
    assert tone_present(heard_by_a[-3200:], 1100, 8000, 10)
    assert a.bye(dialog) == 200
    wait_idle(pbx)


def test_dtmf_is_renumbered_for_a_callee_with_another_telephone_event_payload_type(pbx, phones):
    a, b, a_rtp, b_rtp = phones("1002", "1003")
    dialog, pbx_a, pbx_b, _ = raw_call(
        pbx, a, b, a_rtp, b_rtp,
        answer=sdp_body("127.0.0.1", b_rtp.getsockname()[1], pts=(0, 120), dtmf_pt=120))
    for seq in range(5):  # some audio first: the PBX latches to a's address
        a_rtp.sendto(rtp_packet(g711.ulaw_encode(sine(700)), seq), pbx_a)
        time.sleep(0.02)
    for i, (duration, end) in enumerate(((160, False), (320, False), (800, True), (800, True))):
        a_rtp.sendto(rtp_packet(pack_event("5", end, duration=duration), 10 + i, pt=101, ts=99999), pbx_a)
        time.sleep(0.02)
    time.sleep(0.3)
    events = [p for p in drain(b_rtp) if p[1] & 0x7F in (101, 120)]
    assert events and all(p[1] & 0x7F == 120 for p in events), [p[1] & 0x7F for p in events]
    assert unpack_event(events[0][12:16])[0] == "5"
    assert a.bye(dialog) == 200
    rec = pbx.wait_cdr(lambda r: r.src == "1002" and r.dst == "1003")
    assert rec.legs[0].get("dtmf") == "5"


def test_dtmf_sent_by_sip_info_reaches_the_other_phone_as_rfc4733(pbx, phones):
    a, b, a_rtp, b_rtp = phones("1004", "1005")
    dialog, pbx_a, pbx_b, _ = raw_call(pbx, a, b, a_rtp, b_rtp)
    b_rtp.sendto(rtp_packet(g711.ulaw_encode(sine(1100)), 1), pbx_b)  # b's address latched
    time.sleep(0.1)
    dialog.cseq += 1
    body = "Signal=7\r\nDuration=160\r\n"
    a.send(a._request("INFO", dialog.target, dialog.call_id, dialog.local, dialog.remote, dialog.cseq,
                      extra=["Content-Type: application/dtmf-relay"], routes=dialog.routes)
           .replace("Content-Length: 0", f"Content-Length: {len(body)}") + body)
    ok = a._final(dialog.call_id, dialog.cseq, 5)
    assert ok is not None and ok.status == 200
    time.sleep(0.3)
    events = [p for p in drain(b_rtp) if p[1] & 0x7F == 101]
    assert events and unpack_event(events[0][12:16])[0] == "7"
    assert a.bye(dialog) == 200
    rec = pbx.wait_cdr(lambda r: r.src == "1004" and r.dst == "1005")
    assert rec.legs[0].get("dtmf") == "7"


def test_early_media_in_a_183_reaches_the_caller_before_the_answer(pbx, phones):
    a, b, a_rtp, b_rtp = phones("1006", "1007")
    early_heard = []

    def callee():
        req = b.wait_request("INVITE", 8)
        pbx_b = sdp_address(req.body)
        tag = "early1"
        b.reply(req, 183, "Session Progress", sdp_body("127.0.0.1", b_rtp.getsockname()[1]), tag=tag)
        for seq in range(40):  # a carrier's announcement: "the person you are calling..."
            b_rtp.sendto(rtp_packet(b"\xAA" * 160, seq), pbx_b)
            time.sleep(0.02)
        early_heard.extend(drain(a_rtp))
        b.answer(req, sdp_body("127.0.0.1", b_rtp.getsockname()[1]))

    t = threading.Thread(target=callee)
    t.start()
    status, dialog, _ = a.invite("1007", sdp_body("127.0.0.1", a_rtp.getsockname()[1]))
    t.join(10)
    assert status == 200
    assert any(m.status == 183 and "m=audio" in m.body for m in a.provisional)
    assert sum(p[12:] == b"\xAA" * 160 for p in early_heard) >= 30, "the caller heard the early media"
    assert a.bye(dialog) == 200
    wait_idle(pbx)


def test_a_retransmitted_200_gets_the_same_ack_again_byte_for_byte(pbx, phones):
    """A callee whose 200 is retransmitted (our ACK was late or lost) must get the same ACK again:
    a new one, with a new Via branch, is a new request to it (SIPp aborts the call on it)."""
    a, b, a_rtp, b_rtp = phones("1010", "1011")
    acks = []

    def callee():
        req = b.wait_request("INVITE", 8)
        answer = sdp_body("127.0.0.1", b_rtp.getsockname()[1])
        for _ in range(2):                          # the 200, then its retransmission (timer G)
            b.reply(req, 200, "OK", answer, tag="retx200")
            acks.append(b.wait_request("ACK", 3))

    t = threading.Thread(target=callee)
    t.start()
    status, dialog, _ = a.invite("1011", sdp_body("127.0.0.1", a_rtp.getsockname()[1]))
    t.join(10)
    assert status == 200
    assert len(acks) == 2 and None not in acks, acks
    assert acks[1].raw == acks[0].raw
    assert a.bye(dialog) == 200
    wait_idle(pbx)


def test_a_callee_ringing_longer_than_32_s_can_still_answer(pbx, phones):
    pbx.store.update_settings(no_answer_timeout=60)
    try:
        a, b, a_rtp, b_rtp = phones("1008", "1009")
        time.sleep(0.7)  # the PBX polls the config file twice a second

        def callee():
            req = b.wait_request("INVITE", 8)
            b.reply(req, 180, "Ringing", tag="ring1")
            time.sleep(34)  # past Timer B (32 s), which once failed such a call with 408
            b.answer(req, sdp_body("127.0.0.1", b_rtp.getsockname()[1]))

        t = threading.Thread(target=callee)
        t.start()
        status, dialog, _ = a.invite("1009", sdp_body("127.0.0.1", a_rtp.getsockname()[1]), timeout=40)
        t.join(10)
        assert status == 200
        assert a.bye(dialog) == 200
    finally:
        pbx.store.update_settings(no_answer_timeout=30)
    wait_idle(pbx)
