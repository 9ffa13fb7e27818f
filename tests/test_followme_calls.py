"""Follow Me end to end: the desk phone (pjsua2) rings and is not answered, then the mobile (a SIPp
carrier UAS) answers, hears who is calling and presses 1, and the caller talks to it; *21 from a
phone turns Follow Me on."""
import time

import pytest

from firmware.cdr import Disposition
from firmware.config import ConfigStore
from firmware.features.followme import FollowMe, Leg
from tests.pbxproc import PbxProcess
from tests.phones.audio import tone_present
from tests.phones.pj import PjPhone
from tests.phones.sipp import Sipp, free_port

pytestmark = pytest.mark.e2e
CARRIER = "127.0.0.72"


@pytest.fixture(scope="module")
def carrier_port():
    return free_port("udp", CARRIER)


@pytest.fixture(scope="module")
def pbx(tmp_path_factory, carrier_port):
    proc = PbxProcess(tmp_path_factory.mktemp("pbx"), extensions=["1000", "1001", "1002", "1003"],
                      settings={"no_answer_timeout": 20, "busy_tone_seconds": 1})
    proc.store.add_trunk("carrier", f"{CARRIER}:{carrier_port}", register=False)
    proc.store.add_outbound_route("mobiles", "_07X.", "carrier")
    proc.store.add_record("follow_me", FollowMe("1001", True, (Leg("extension:1001", 0, 5),
                                                               Leg("external:07700900456", 0, 30))))
    proc.store.add_record("follow_me", FollowMe("1002", False, (Leg("external:07700900789", 0, 20),)))
    proc.store.add_record("follow_me", FollowMe("1003", True, (Leg("external:07700900321", 0, 30),),
                                                announce="name"))
    proc.start()
    yield proc
    proc.stop()


def phone(pbx, number, tmp_path, hz):
    return PjPhone(user=number, secret=pbx.secrets[number], registrar=pbx.registrar, tone_hz=hz, record_dir=tmp_path)


def test_the_desk_does_not_answer_and_the_mobile_takes_the_call_by_pressing_1(pbx, carrier_port, tmp_path):
    mobile = Sipp("carrier_uas_press_1.xml", local_ip=CARRIER, port=carrier_port, workdir=tmp_path, timeout=40,
                  rtp_echo=True, params={"answer_delay": 300, "press_delay": 3000},
                  extra_args=["-trace_msg"]).start()
    with phone(pbx, "1000", tmp_path, 700) as a, phone(pbx, "1001", tmp_path, 1100) as desk:
        assert a.register() == 200 and desk.register() == 200
        a.call(pbx.uri("1001"))
        desk.wait_incoming(timeout=8)
        rang_at = time.monotonic()
        desk.wait_state("DISCONNECTED", timeout=10)          # its 5 s are up: on to the mobile
        assert time.monotonic() - rang_at >= 4
        a.wait_state("CONFIRMED", timeout=20)
        time.sleep(2.5)
        a.hangup()
        a.wait_state("DISCONNECTED", timeout=5)
        assert tone_present(a.recording_path, 700, start_s=-1.5, end_s=-0.2)   # the carrier echoes it
    result = mobile.wait(20)
    assert result.ok, result.log_tail()
    sent = (next(mobile.workdir.glob("*_messages.log"))).read_text(errors="replace")
    assert "INVITE sip:07700900456@" in sent
    rec = pbx.wait_cdr(lambda r: r.src == "1000" and r.disposition is Disposition.ANSWERED)
    assert (rec.dst_kind, rec.external_number, rec.forwarded_from) == ("trunk", "07700900456", "1001")


def test_star_21_turns_follow_me_on(pbx, tmp_path):
    with phone(pbx, "1002", tmp_path, 700) as p:
        assert p.register() == 200
        p.call(pbx.uri("*21"))
        p.wait_state("CONFIRMED", timeout=8)
        p.wait_state("DISCONNECTED", timeout=10)
    assert ConfigStore(pbx.data).record("follow_me", "1002").enabled is True


def test_the_caller_says_their_name_first_and_the_mobile_hears_it_before_pressing_1(pbx, carrier_port, tmp_path):
    mobile = Sipp("carrier_uas_press_1.xml", local_ip=CARRIER, port=carrier_port, workdir=tmp_path, timeout=40,
                  rtp_echo=True, params={"answer_delay": 300, "press_delay": 3000}).start()
    with phone(pbx, "1000", tmp_path, 700) as a:
        assert a.register() == 200
        called = time.monotonic()
        a.call(pbx.uri("1003"))
        a.wait_state("CONFIRMED", timeout=5)             # answered at once: "please say your name"
        assert time.monotonic() - called < 4
        # prompt 3 s, the name 4 s at most (a tone never pauses), the mobile presses 1 after 3 s
        deadline = time.monotonic() + 30
        while "follow me 1003 answered at 07700900321" not in pbx.log_tail(200) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2.0)
        a.hangup()
        a.wait_state("DISCONNECTED", timeout=5)
        assert tone_present(a.recording_path, 700, start_s=-1.5, end_s=-0.2)   # talking to the mobile
    result = mobile.wait(20)
    assert result.ok, result.log_tail()
    rec = pbx.wait_cdr(lambda r: r.src == "1000" and r.external_number == "07700900321")
    assert rec.disposition is Disposition.ANSWERED
