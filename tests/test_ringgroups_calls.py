"""Ring groups end to end: pjsua2 phones as members and callers, a SIPp "carrier" as the mobile of
an outside member who must press 1 before the call is theirs.

Groups (configured before the PBX starts):
  600 ring all 1001, 1002             601 hunt 1003 (4 s), then 1004
  602 ring all 1006 and the mobile 07700900123 (through the carrier), press 1 to accept
  603 hunt 1008 for 4 s, nobody answers: no-answer destination extension 1009
  604 ring all 1011 and the mobile 07700900222, whose owner presses 2 (reject)
"""
import time

import pytest

from firmware.cdr import Disposition
from firmware.features.ringgroups import Member, RingGroup
from tests.pbxproc import PbxProcess
from tests.phones.audio import tone_present
from tests.phones.pj import PjPhone
from tests.phones.sipp import Sipp, free_port

pytestmark = pytest.mark.e2e
CARRIER = "127.0.0.71"
CALLER_HZ, MEMBER_HZ = 700, 1100


@pytest.fixture(scope="module")
def carrier_port():
    return free_port("udp", CARRIER)


@pytest.fixture(scope="module")
def pbx(tmp_path_factory, carrier_port):
    proc = PbxProcess(tmp_path_factory.mktemp("pbx"), extensions=[str(n) for n in range(1000, 1012)],
                      settings={"no_answer_timeout": 20, "busy_tone_seconds": 1})
    proc.store.add_trunk("carrier", f"{CARRIER}:{carrier_port}", register=False)
    proc.store.add_outbound_route("mobiles", "_07X.", "carrier")
    add = proc.store.add_record
    add("ring_groups", RingGroup("600", "Sales", "ring_all", (Member("extension:1001"), Member("extension:1002")),
                                 caller_id_prefix="Sales: "))
    add("ring_groups", RingGroup("601", "Support", "hunt", (Member("extension:1003", 5), Member("extension:1004"))))
    add("ring_groups", RingGroup("602", "Field", "ring_all", (Member("extension:1006"),
                                                              Member("external:07700900123", 30)),
                                 confirm_external=True, waiting="music"))
    add("ring_groups", RingGroup("603", "Night", "hunt", (Member("extension:1008", 5),), timeout=5,
                                 no_answer="extension:1009"))
    add("ring_groups", RingGroup("604", "Service", "ring_all", (Member("extension:1011", 30),
                                                                Member("external:07700900222", 30))))
    proc.start()
    yield proc
    proc.stop()


def phone(pbx, number, tmp_path, hz=MEMBER_HZ):
    return PjPhone(user=number, secret=pbx.secrets[number], registrar=pbx.registrar, tone_hz=hz,
                   record_dir=tmp_path)


def registered(*phones):
    for p in phones:
        assert p.register() == 200


def test_ring_all_rings_both_members_the_first_to_answer_talks_and_the_other_stops(pbx, tmp_path):
    with phone(pbx, "1000", tmp_path, CALLER_HZ) as a, phone(pbx, "1001", tmp_path) as b, \
            phone(pbx, "1002", tmp_path, 1500) as c:
        registered(a, b, c)
        a.call(pbx.uri("600"))
        incoming_b = b.wait_incoming(timeout=8)
        c.wait_incoming(timeout=8)
        assert '"Sales: Ext 1000"' in incoming_b["from"]
        time.sleep(1.0)
        c.answer(200)
        a.wait_state("CONFIRMED", timeout=8)
        b.wait_state("DISCONNECTED", timeout=8)   # cancelled: completed elsewhere
        time.sleep(2.0)
        a.hangup()
        c.wait_state("DISCONNECTED", timeout=8)
        assert tone_present(a.recording_path, 1500, start_s=-1.5, end_s=-0.2)
        assert tone_present(c.recording_path, CALLER_HZ, start_s=0.5)
    rec = pbx.wait_cdr(lambda r: r.src == "1000" and r.dst == "1002")
    assert rec.disposition is Disposition.ANSWERED
    assert any(leg["peer"] == "1001" and "completed elsewhere" in leg.get("cause", "") for leg in rec.legs)


def test_hunt_rings_the_first_member_then_the_next_when_it_rings_out(pbx, tmp_path):
    with phone(pbx, "1005", tmp_path, CALLER_HZ) as a, phone(pbx, "1003", tmp_path) as first, \
            phone(pbx, "1004", tmp_path) as second:
        registered(a, first, second)
        second.auto_answer(200, after_ms=300)
        a.call(pbx.uri("601"))
        first.wait_incoming(timeout=8)
        started = time.monotonic()
        second.wait_incoming(timeout=12)
        assert time.monotonic() - started >= 3.5          # only after the first rang its 5 s
        first.wait_state("DISCONNECTED", timeout=2)
        a.wait_state("CONFIRMED", timeout=8)
        time.sleep(1.5)
        a.hangup()
        second.wait_state("DISCONNECTED", timeout=8)
        assert tone_present(a.recording_path, MEMBER_HZ, start_s=-1.2, end_s=-0.2)


def test_an_outside_member_gets_the_call_only_after_pressing_1(pbx, carrier_port, tmp_path):
    mobile = Sipp("carrier_uas_press_1.xml", local_ip=CARRIER, port=carrier_port, workdir=tmp_path, timeout=40,
                  rtp_echo=True, params={"answer_delay": 500, "press_delay": 2500}).start()
    with phone(pbx, "1007", tmp_path, CALLER_HZ) as a, phone(pbx, "1006", tmp_path) as desk:
        registered(a, desk)
        a.call(pbx.uri("602"))
        desk.wait_incoming(timeout=8)
        early = a.wait_state("EARLY", timeout=8)
        # the mobile answered at ~0.5 s but the call is not the caller's until the 1 at ~3 s
        with pytest.raises(Exception):
            a.wait_state("CONFIRMED", timeout=2.0)
        a.wait_state("CONFIRMED", timeout=15)
        desk.wait_state("DISCONNECTED", timeout=5)   # the desk phone stops ringing
        time.sleep(2.5)
        a.hangup()
        a.wait_state("DISCONNECTED", timeout=5)
        assert early["code"] == 183                   # music while waiting (our early media)
        # the carrier echoes what it hears: the caller's own tone comes back once bridged
        assert tone_present(a.recording_path, CALLER_HZ, start_s=-1.5, end_s=-0.2)
    result = mobile.wait(20)
    assert result.ok, result.log_tail()
    rec = pbx.wait_cdr(lambda r: r.src == "1007" and r.disposition is Disposition.ANSWERED)
    assert (rec.dst_kind, rec.dst_trunk, rec.external_number) == ("trunk", "carrier", "07700900123")


def test_nobody_answering_sends_the_call_to_the_groups_no_answer_destination(pbx, tmp_path):
    with phone(pbx, "1010", tmp_path, CALLER_HZ) as a, phone(pbx, "1008", tmp_path) as member, \
            phone(pbx, "1009", tmp_path, 1500) as overflow:
        registered(a, member, overflow)
        overflow.auto_answer(200, after_ms=200)
        a.call(pbx.uri("603"))
        member.wait_incoming(timeout=8)
        overflow.wait_incoming(timeout=12)
        member.wait_state("DISCONNECTED", timeout=2)
        a.wait_state("CONFIRMED", timeout=8)
        time.sleep(1.5)
        a.hangup()
        overflow.wait_state("DISCONNECTED", timeout=8)
        assert tone_present(a.recording_path, 1500, start_s=-1.2, end_s=-0.2)


def test_an_outside_member_pressing_2_is_hung_up_while_the_others_keep_ringing(pbx, carrier_port, tmp_path):
    mobile = Sipp("carrier_uas_press_2.xml", local_ip=CARRIER, port=carrier_port, workdir=tmp_path, timeout=40,
                  params={"answer_delay": 300, "press_delay": 1500}).start()
    with phone(pbx, "1000", tmp_path, CALLER_HZ) as a, phone(pbx, "1011", tmp_path) as desk:
        registered(a, desk)
        a.call(pbx.uri("604"))
        desk.wait_incoming(timeout=8)
        result = mobile.wait(20)                     # the PBX hung the mobile up after its 2 (BYE)
        assert result.ok, result.log_tail()
        assert a.events()[-1]["state"] != "CONFIRMED"  # the caller is still waiting...
        desk.answer(200)                              # ...and the desk, still ringing, takes it
        a.wait_state("CONFIRMED", timeout=8)
        time.sleep(1.5)
        a.hangup()
        desk.wait_state("DISCONNECTED", timeout=5)
        assert tone_present(a.recording_path, MEMBER_HZ, start_s=-1.2, end_s=-0.2)
