"""Transfers with real pjsua2 phones: REFER blind and attended (Replaces), and the `##` / `*2` codes.

A (700 Hz) calls B (1100 Hz); B transfers A to C (1500 Hz). A transfer works when, at the end, A
hears C's tone and C hears A's; the one that fails returns A to B.
"""

import time

import pytest

from firmware.cdr import Disposition
from tests.phones.audio import tone_present
from tests.test_calls import CALLEE_HZ, CALLER_HZ, answered_call, phone, registered

pytestmark = pytest.mark.e2e
TARGET_HZ = 1500


def heard_at_the_end(p, hz):
    """hz in the last second of what phone p heard on its current call (once that call is over)."""
    return tone_present(p.recording_path, hz, start_s=-1.2, end_s=-0.2)


def test_blind_transfer_by_refer_joins_the_caller_to_the_target(pbx, tmp_path):
    with answered_call(pbx, tmp_path, "1000", "1001") as (a, b), \
            phone(pbx, "1002", tmp_path, TARGET_HZ) as c:
        registered(c)
        c.auto_answer(200, after_ms=300)
        time.sleep(0.5)
        b.transfer(pbx.uri("1002"))
        b.wait_transfer(200, timeout=10)
        c.wait_incoming(timeout=1)
        c.wait_state("CONFIRMED", timeout=5)
        b.wait_state("DISCONNECTED", timeout=8)
        time.sleep(1.5)
        a.hangup()
        c.wait_state("DISCONNECTED", timeout=5)
        assert heard_at_the_end(a, TARGET_HZ) and heard_at_the_end(c, CALLER_HZ)
    assert pbx.wait_cdr(lambda r: r.src == "1000" and r.dst == "1001").disposition is Disposition.ANSWERED


def test_attended_transfer_by_refer_with_replaces_joins_the_held_caller_to_the_target(pbx, tmp_path):
    with answered_call(pbx, tmp_path, "1003", "1004") as (a, b), \
            phone(pbx, "1005", tmp_path, TARGET_HZ) as c:
        registered(c)
        c.auto_answer(200)
        first = b.current_call
        b.hold()
        time.sleep(0.5)
        b.call(pbx.uri("1005"))
        second = b.current_call
        b.wait_state("CONFIRMED", timeout=5, call=second)
        c.wait_state("CONFIRMED", timeout=5)
        time.sleep(0.5)
        b.transfer_replaces(call=first, other=second)
        b.wait_transfer(200, timeout=10, call=first)
        b.wait_state("DISCONNECTED", timeout=8, call=first)
        b.wait_state("DISCONNECTED", timeout=8, call=second)
        time.sleep(1.5)
        a.hangup()
        c.wait_state("DISCONNECTED", timeout=5)
        assert heard_at_the_end(a, TARGET_HZ) and heard_at_the_end(c, CALLER_HZ)


def test_double_hash_then_a_number_blind_transfers_the_other_party(pbx, tmp_path):
    with answered_call(pbx, tmp_path, "1006", "1007") as (a, b), \
            phone(pbx, "1008", tmp_path, TARGET_HZ) as c:
        registered(c)
        c.auto_answer(200, after_ms=300)
        time.sleep(0.5)
        b.send_dtmf("##")
        time.sleep(1.0)
        b.send_dtmf("1008#")
        c.wait_incoming(timeout=10)
        c.wait_state("CONFIRMED", timeout=5)
        b.wait_state("DISCONNECTED", timeout=5)
        time.sleep(1.5)
        a.hangup()
        c.wait_state("DISCONNECTED", timeout=5)
        assert heard_at_the_end(a, TARGET_HZ) and heard_at_the_end(c, CALLER_HZ)


def test_star_two_consults_the_target_and_hanging_up_joins_the_two(pbx, tmp_path):
    with answered_call(pbx, tmp_path, "1009", "1010") as (a, b), \
            phone(pbx, "1011", tmp_path, TARGET_HZ) as c:
        registered(c)
        c.auto_answer(200, after_ms=300)
        time.sleep(0.5)
        b.send_dtmf("*2")
        time.sleep(1.0)
        b.send_dtmf("1011#")
        c.wait_incoming(timeout=10)
        c.wait_state("CONFIRMED", timeout=5)
        time.sleep(1.5)
        b.hangup()
        b.wait_state("DISCONNECTED", timeout=5)
        assert heard_at_the_end(b, TARGET_HZ)   # B talked to C while A waited
        time.sleep(1.5)
        a.hangup()
        c.wait_state("DISCONNECTED", timeout=5)
        assert heard_at_the_end(a, TARGET_HZ) and heard_at_the_end(c, CALLER_HZ)


def test_an_attended_transfer_to_a_phone_that_is_not_there_returns_the_caller(pbx, tmp_path):
    with answered_call(pbx, tmp_path, "1012", "1013") as (a, b):
        time.sleep(0.5)
        b.send_dtmf("*2")
        time.sleep(1.0)
        b.send_dtmf("1014#")  # 1014 exists, but no phone is registered for it
        time.sleep(3.0)
        a.hangup()
        b.wait_state("DISCONNECTED", timeout=5)
        assert heard_at_the_end(a, CALLEE_HZ) and heard_at_the_end(b, CALLER_HZ)


def test_baresip_blind_transfers_by_refer(pbx, tmp_path):
    from tests.phones.baresip import BaresipPhone
    with phone(pbx, "1015", tmp_path, CALLER_HZ) as a, phone(pbx, "1017", tmp_path, TARGET_HZ) as c, \
            BaresipPhone("1016", pbx.secrets["1016"], registrar=pbx.registrar, workdir=tmp_path,
                         tone_hz=CALLEE_HZ, auto_answer=True) as b:
        registered(a), registered(c)
        assert b.register() == "REGISTER_OK"
        c.auto_answer(200, after_ms=300)
        a.call(pbx.uri("1016"))
        a.wait_state("CONFIRMED", timeout=8)
        time.sleep(1.0)
        b.command("transfer", pbx.uri("1017"))
        c.wait_incoming(timeout=10)
        c.wait_state("CONFIRMED", timeout=5)
        time.sleep(2.0)
        a.hangup()
        c.wait_state("DISCONNECTED", timeout=5)
        assert heard_at_the_end(a, TARGET_HZ) and heard_at_the_end(c, CALLER_HZ)


def test_call_records_of_transfers_name_each_conversation(pbx, tmp_path):
    """Runs after the transfers above: A->B then A->C (by B) for a blind transfer; A->B, B->C and
    A->C (attended, by B) for attended ones, the *2 consultation marked as one."""
    def row(src, dst):
        return pbx.wait_cdr(lambda r: r.src == src and r.dst == dst)

    blind = row("1000", "1002")
    assert (blind.transfer, blind.transferred_by) == ("blind", "1001")
    assert row("1000", "1001").linkedid == blind.linkedid
    # REFER with Replaces: B's consultation was a call of its own, then A talks to C
    row("1003", "1004"), row("1004", "1005")
    assert (row("1003", "1005").transfer, row("1003", "1005").transferred_by) == ("attended", "1004")
    # *2: the consultation happens inside A's call and is marked
    assert row("1010", "1011").transfer == "consultation"
    assert (row("1009", "1011").transfer, row("1009", "1011").transferred_by) == ("attended", "1010")
    assert row("1009", "1010").linkedid == row("1009", "1011").linkedid


@pytest.mark.parametrize("code,numbers", [("##", ("1018", "1019", "1020")), ("*2", ("1021", "1022", "1023"))],
                         ids=["blind", "attended"])
def test_baresip_transfers_its_caller_with_the_keypad_codes(pbx, tmp_path, code, numbers):
    """## (blind) and *2 then hanging up (attended) typed on baresip's keypad, its only way to send
    DTMF; baresip 1.0 has no attended REFER."""
    from tests.phones.baresip import BaresipPhone
    caller, transferrer, target = numbers
    with phone(pbx, caller, tmp_path, CALLER_HZ) as a, phone(pbx, target, tmp_path, TARGET_HZ) as c, \
            BaresipPhone(transferrer, pbx.secrets[transferrer], registrar=pbx.registrar, workdir=tmp_path,
                         tone_hz=CALLEE_HZ, auto_answer=True) as b:
        registered(a), registered(c)
        assert b.register() == "REGISTER_OK"
        c.auto_answer(200, after_ms=300)
        a.call(pbx.uri(transferrer))
        a.wait_state("CONFIRMED", timeout=8)
        time.sleep(1.0)
        b.send_dtmf(code)
        time.sleep(1.0)
        b.send_dtmf(target + "#")
        c.wait_incoming(timeout=10)
        c.wait_state("CONFIRMED", timeout=5)
        if code == "*2":
            time.sleep(1.0)
            b.hangup()  # the consultation over: the two are joined
        time.sleep(2.0)
        a.hangup()
        c.wait_state("DISCONNECTED", timeout=5)
        assert heard_at_the_end(a, TARGET_HZ) and heard_at_the_end(c, CALLER_HZ)
    rec = pbx.wait_cdr(lambda r: r.src == caller and r.dst == target)
    assert (rec.transfer, rec.transferred_by) == ("blind" if code == "##" else "attended", transferrer)
