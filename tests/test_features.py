"""Feature codes with real pjsua2 phones: DND, the three forwards, group and directed pickup,
and the extension's configured name as the caller ID name (issue 8 sections 5 and 8)."""

import time

import pytest

from firmware.cdr import Disposition
from firmware.config import ConfigStore
from tests.phones.audio import tone_present
from tests.test_calls import CALLEE_HZ, CALLER_HZ, phone, registered

pytestmark = pytest.mark.e2e
THIRD_HZ = 1500


def dial_code(pbx, p, code, timeout=10):
    """p dials a feature code and hears the confirmation to its end (the PBX hangs up)."""
    p.call(pbx.uri(code))
    p.wait_state("DISCONNECTED", timeout=timeout)
    return p.events()


def extension(pbx, number):
    return ConfigStore(pbx.data).get_extension(number)


def test_star78_makes_callers_hear_busy_and_star79_lets_them_ring_again(pbx, tmp_path):
    with phone(pbx, "1000", tmp_path, CALLER_HZ) as a, phone(pbx, "1001", tmp_path, CALLEE_HZ) as b:
        registered(a), registered(b)
        events = dial_code(pbx, b, "*78")
        assert any(e["state"] == "CONFIRMED" for e in events)  # answered to speak the confirmation
        assert extension(pbx, "1001").dnd is True
        time.sleep(0.7)  # the call service re-reads the config file twice a second
        a.call(pbx.uri("1001"))
        a.wait_state("DISCONNECTED", timeout=15)
        assert a.last_status == 486
        assert b.event_count and not any(e.get("event") == "incoming" and e["call"] > 1 for e in b._events)
        dial_code(pbx, b, "*79")
        assert extension(pbx, "1001").dnd is False
        time.sleep(0.7)
        b.auto_answer(200)
        a.call(pbx.uri("1001"))
        a.wait_state("CONFIRMED", timeout=5)
        a.hangup()
    assert pbx.wait_cdr(lambda r: r.src == "1000" and r.dst == "1001"
                        and r.disposition is Disposition.BUSY) is not None


def test_star72_forwards_every_call_to_another_extension_and_star73_stops_it(pbx, tmp_path):
    with phone(pbx, "1002", tmp_path, CALLER_HZ) as a, phone(pbx, "1003", tmp_path, CALLEE_HZ) as b, \
            phone(pbx, "1004", tmp_path, THIRD_HZ) as c:
        registered(a), registered(b), registered(c)
        dial_code(pbx, b, "*721004")
        assert extension(pbx, "1003").forward_always == "extension:1004"
        time.sleep(0.7)
        c.auto_answer(200)
        a.call(pbx.uri("1003"))
        a.wait_state("CONFIRMED", timeout=5)
        incoming = c.wait_incoming(timeout=1)
        assert "1002" in incoming["from"]
        time.sleep(1.5)
        a.hangup()
        c.wait_state("DISCONNECTED", timeout=5)
        assert tone_present(a.recording_path, THIRD_HZ, start_s=0.5)
        dial_code(pbx, b, "*73")
        assert extension(pbx, "1003").forward_always == ""
    rec = pbx.wait_cdr(lambda r: r.src == "1002" and r.dst == "1004")
    assert rec.disposition is Disposition.ANSWERED and rec.forwarded_from == "1003"


def test_star90_forwards_when_busy(pbx, tmp_path):
    with phone(pbx, "1005", tmp_path, CALLER_HZ) as a, phone(pbx, "1006", tmp_path, CALLEE_HZ) as b, \
            phone(pbx, "1007", tmp_path, THIRD_HZ) as c:
        registered(a), registered(b), registered(c)
        dial_code(pbx, b, "*901007")
        time.sleep(0.7)
        b.auto_answer(486)
        c.auto_answer(200)
        a.call(pbx.uri("1006"))
        a.wait_state("CONFIRMED", timeout=8)
        c.wait_incoming(timeout=1)
        a.hangup()
        c.wait_state("DISCONNECTED", timeout=5)
        dial_code(pbx, b, "*91")
    rec = pbx.wait_cdr(lambda r: r.src == "1005" and r.dst == "1007")
    assert rec.disposition is Disposition.ANSWERED and rec.forwarded_from == "1006"


def test_star52_forwards_when_not_answered(pbx, tmp_path):
    pbx.store.update_settings(no_answer_timeout=5)
    try:
        with phone(pbx, "1008", tmp_path, CALLER_HZ) as a, phone(pbx, "1009", tmp_path, CALLEE_HZ) as b, \
                phone(pbx, "1010", tmp_path, THIRD_HZ) as c:
            registered(a), registered(b), registered(c)
            dial_code(pbx, b, "*521010")
            time.sleep(0.7)
            c.auto_answer(200)
            t0 = time.monotonic()
            a.call(pbx.uri("1009"))
            b.wait_incoming(timeout=5)         # b rings first and does not answer
            a.wait_state("CONFIRMED", timeout=12)
            assert time.monotonic() - t0 >= 4.5
            b.wait_state("DISCONNECTED", timeout=3)  # cancelled when its ring time ran out
            a.hangup()
            c.wait_state("DISCONNECTED", timeout=5)
            dial_code(pbx, b, "*53")
    finally:
        pbx.store.update_settings(no_answer_timeout=30)
    rec = pbx.wait_cdr(lambda r: r.src == "1008" and r.dst == "1010")
    assert rec.disposition is Disposition.ANSWERED and rec.forwarded_from == "1009"


@pytest.mark.parametrize("code", ["*8", "**1012"])
def test_a_ringing_call_is_picked_up_by_another_phone(pbx, tmp_path, code):
    numbers = {"*8": ("1011", "1012", "1013"), "**1012": ("1014", "1012", "1015")}[code]
    with phone(pbx, numbers[0], tmp_path, CALLER_HZ) as a, phone(pbx, numbers[1], tmp_path, CALLEE_HZ) as b, \
            phone(pbx, numbers[2], tmp_path, THIRD_HZ) as c:
        registered(a), registered(b), registered(c)
        code = code.replace("1012", numbers[1])
        a.call(pbx.uri(numbers[1]))
        b.wait_incoming(timeout=5)
        a.wait_state("EARLY", timeout=5)
        c.call(pbx.uri(code))
        c.wait_state("CONFIRMED", timeout=5)
        a.wait_state("CONFIRMED", timeout=5)
        b.wait_state("DISCONNECTED", timeout=5)   # the ringing phone stops: completed elsewhere
        time.sleep(1.5)
        a.hangup()
        c.wait_state("DISCONNECTED", timeout=5)
        assert tone_present(a.recording_path, THIRD_HZ, start_s=0.5)
        assert tone_present(c.recording_path, CALLER_HZ, start_s=0.5)
    # the ringing call's record: the caller talked to the phone that picked up
    rec = pbx.wait_cdr(lambda r: r.src == numbers[0] and r.dst == numbers[2])
    assert rec.disposition is Disposition.ANSWERED


def test_the_configured_name_is_shown_to_the_callee_whatever_the_phone_sent(pbx, tmp_path):
    pbx.store.update_extension("1016", name="Reception Desk")
    time.sleep(0.7)
    with phone(pbx, "1016", tmp_path, CALLER_HZ) as a, phone(pbx, "1017", tmp_path, CALLEE_HZ) as b:
        registered(a), registered(b)
        b.auto_answer(200)
        a.call(pbx.uri("1017"))
        incoming = b.wait_incoming(timeout=5)
        assert "Reception Desk" in incoming["from"], incoming
        a.wait_state("CONFIRMED", timeout=5)
        a.hangup()
