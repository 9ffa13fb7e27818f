"""The test phones work peer to peer (no PBX), so that an end-to-end failure is the PBX's.

pjsua2 <-> pjsua2, SIPp <-> SIPp, baresip <-> pjsua2, each on loopback, on ports the kernel hands out.
"""

import time

import pytest

from tests.phones.audio import tone_present
from tests.phones.baresip import BaresipPhone
from tests.phones.pj import PhoneError, PjPhone
from tests.phones.sipp import Sipp, run_sipp

A_HZ, B_HZ, BARESIP_HZ = 1100, 700, 900


def test_pjsua2_phones_call_directly_and_each_hears_the_others_tone(tmp_path):
    with PjPhone("1000", tone_hz=A_HZ, record_dir=tmp_path) as a, \
            PjPhone("1001", tone_hz=B_HZ, record_dir=tmp_path) as b:
        b.auto_answer(200, after_ms=300)
        a.call(b.uri)
        incoming = b.wait_incoming(5)
        assert "1000@" in incoming["from"] and incoming["call_id"]
        a.wait_state("CONFIRMED", 5)
        b.wait_state("CONFIRMED", 5)
        time.sleep(1.5)
        a.hangup()
        a.wait_state("DISCONNECTED", 5)
        b.wait_state("DISCONNECTED", 5)
        assert [(e["state"], e["code"]) for e in a.events()] == [
            ("CALLING", 0), ("EARLY", 180), ("CONNECTING", 200), ("CONFIRMED", 200),
            ("DISCONNECTED", 200)]
        assert tone_present(a.recording_path, B_HZ) and not tone_present(a.recording_path, A_HZ)
        assert tone_present(b.recording_path, A_HZ) and not tone_present(b.recording_path, B_HZ)


def test_pjsua2_hold_unhold_and_rfc2833_dtmf_reach_the_other_phone(tmp_path):
    with PjPhone("1000", tone_hz=A_HZ, record_dir=tmp_path) as a, \
            PjPhone("1001", tone_hz=B_HZ, record_dir=tmp_path) as b:
        b.auto_answer(200)
        a.call(b.uri)
        a.wait_state("CONFIRMED", 5)
        a.send_dtmf("19#")
        deadline = time.monotonic() + 3
        while b.dtmf_received != "19#" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert b.dtmf_received == "19#"

        mark_a, mark_b = a.event_count, b.event_count
        a.hold()
        a.wait_media("LOCAL_HOLD", 5, after=mark_a)
        b.wait_media("REMOTE_HOLD", 5, after=mark_b)
        mark_a, mark_b = a.event_count, b.event_count
        a.unhold()
        a.wait_media("ACTIVE", 5, after=mark_a)
        b.wait_media("ACTIVE", 5, after=mark_b)
        time.sleep(1.0)
        b.hangup()
        a.wait_state("DISCONNECTED", 5)
        # After unhold the audio path is back: the last second of A's recording is B's tone.
        assert tone_present(a.recording_path, B_HZ, start_s=-0.8)
        assert a.last_status == 200


def test_pjsua2_callee_rejects_with_486_and_caller_sees_it(tmp_path):
    with PjPhone("1000", record_dir=tmp_path) as a, PjPhone("1001", record_dir=tmp_path) as b:
        a.call(b.uri)
        b.wait_incoming(5)
        a.wait_state("EARLY", 5)
        b.reject(486)
        assert a.wait_state("DISCONNECTED", 5)["code"] == 486
        assert a.last_status == 486


def test_pjsua2_phones_call_over_tcp(tmp_path):
    with PjPhone("1000", transport="tcp", tone_hz=A_HZ, record_dir=tmp_path) as a, \
            PjPhone("1001", transport="tcp", tone_hz=B_HZ, record_dir=tmp_path) as b:
        assert b.uri.endswith(";transport=tcp")
        b.auto_answer(200)
        a.call(b.uri)
        a.wait_state("CONFIRMED", 5)
        time.sleep(0.8)
        a.hangup()
        b.wait_state("DISCONNECTED", 5)
        assert tone_present(b.recording_path, A_HZ)


def test_pjsua2_registers_with_digest_and_a_wrong_password_gets_403(tmp_path):
    with Sipp("uas_registrar_auth.xml", params={"username": "1000", "password": "pw1000"},
              workdir=tmp_path) as registrar:
        with PjPhone("1000", secret="pw1000", registrar=("127.0.0.1", registrar.port),
                     record_dir=tmp_path) as a:
            assert a.register(timeout=5) == 200
    with Sipp("uas_registrar_auth.xml", params={"username": "1000", "password": "pw1000"},
              workdir=tmp_path) as registrar:
        with PjPhone("1000", secret="wrong", registrar=("127.0.0.1", registrar.port),
                     record_dir=tmp_path) as a:
            assert a.register(timeout=5) == 403


def test_pjsua2_phone_reports_a_bad_command_without_dying(tmp_path):
    with PjPhone("1000", record_dir=tmp_path) as a:
        with pytest.raises(PhoneError, match="no active call"):
            a.hangup()
        a.call("sip:nobody@127.0.0.1:9")  # still alive and taking commands
        a.hangup()


def test_sipp_caller_with_auth_reaches_sipp_callee_and_hangs_up(tmp_path):
    with Sipp("uas_answer.xml", params={"answer_delay": 200}, rtp_echo=True, workdir=tmp_path) as uas:
        r = run_sipp("uac_call_auth.xml", ("127.0.0.1", uas.port), users=[("1000", "pw1000")],
                     duration_ms=1000, workdir=tmp_path, timeout=15)
        callee = uas.wait(10)
    assert r.ok, r.log_tail()
    assert r.responses == {180: 1, 200: 2}  # 200 to INVITE and to BYE
    assert callee.ok and callee.requests == {"INVITE": 1, "ACK": 1, "BYE": 1}


def test_sipp_caller_answers_a_digest_challenge(tmp_path):
    with Sipp("uas_challenge.xml", params={"username": "1000", "password": "pw1000"},
              workdir=tmp_path) as uas:
        r = run_sipp("uac_call_auth.xml", ("127.0.0.1", uas.port), users=[("1000", "pw1000")],
                     duration_ms=300, workdir=tmp_path, timeout=15)
        uas.wait(10)
    assert r.ok, r.log_tail()
    assert r.responses[401] == 1 and r.responses[180] == 1


def test_sipp_cancel_while_ringing_gets_487(tmp_path):
    with Sipp("uas_ring_forever.xml", workdir=tmp_path) as uas:
        r = run_sipp("uac_cancel.xml", ("127.0.0.1", uas.port), duration_ms=300,
                     workdir=tmp_path, timeout=15)
        callee = uas.wait(10)
    assert r.ok, r.log_tail()
    assert r.responses == {180: 1, 200: 1, 487: 1}
    assert callee.requests == {"INVITE": 1, "CANCEL": 1, "ACK": 1}


def test_sipp_expecting_486_passes_on_busy_and_fails_on_another_code(tmp_path):
    with Sipp("uas_busy.xml", workdir=tmp_path) as uas:
        r = run_sipp("uac_expect.xml", ("127.0.0.1", uas.port), params={"expect_code": 486},
                     workdir=tmp_path, timeout=10)
        uas.wait(10)
    assert r.ok and r.responses == {486: 1}
    with Sipp("uas_busy.xml", workdir=tmp_path) as uas:
        r = run_sipp("uac_expect.xml", ("127.0.0.1", uas.port), params={"expect_code": 404},
                     workdir=tmp_path, timeout=10)
        uas.wait(10)
    assert not r.ok and r.failed == 1


def test_sipp_register_with_digest(tmp_path):
    with Sipp("uas_registrar_auth.xml", params={"username": "1000", "password": "pw1000"},
              workdir=tmp_path) as uas:
        r = run_sipp("register_auth.xml", ("127.0.0.1", uas.port), users=[("1000", "pw1000")],
                     workdir=tmp_path, timeout=10)
        uas.wait(10)
    assert r.ok and r.responses == {401: 1, 200: 1}


def test_sipp_load_pair_completes_every_call_with_rtp_stream(tmp_path):
    with Sipp("uas_load.xml", calls=10, workdir=tmp_path) as uas:
        r = run_sipp("uac_load.xml", ("127.0.0.1", uas.port), calls=10, rate=20,
                     duration_ms=1000, workdir=tmp_path, timeout=20)
        callee = uas.wait(10)
    assert r.ok and r.successful == 10 and r.failed == 0, r.log_tail()
    assert callee.successful == 10


def test_baresip_and_pjsua2_call_each_other_with_audio_both_ways(tmp_path):
    with BaresipPhone("1002", workdir=tmp_path, tone_hz=BARESIP_HZ) as b, \
            PjPhone("1000", tone_hz=A_HZ, record_dir=tmp_path) as a:
        a.call(b.uri)  # baresip answers by itself (answermode=auto)
        a.wait_state("CONFIRMED", 5)
        b.wait_event("CALL_ESTABLISHED", 5)
        time.sleep(1.5)
        mark = len(b.events)
        a.hangup()
        a.wait_state("DISCONNECTED", 5)
        b.wait_event("CALL_CLOSED", 5, after=mark)
        assert tone_present(a.recording_path, BARESIP_HZ)
        assert tone_present(b.received_wav, A_HZ)

        a.auto_answer(200, after_ms=200)
        mark = len(b.events)
        b.dial(a.uri)
        a.wait_incoming(5)
        a.wait_state("CONFIRMED", 5)
        b.wait_event("CALL_ESTABLISHED", 5, after=mark)
        time.sleep(1.0)
        b.hangup()
        a.wait_state("DISCONNECTED", 5)
        assert tone_present(a.recording_path, BARESIP_HZ)


def test_baresip_registers_with_digest(tmp_path):
    with Sipp("uas_registrar_auth.xml", params={"username": "1002", "password": "pw1002"},
              workdir=tmp_path) as registrar:
        with BaresipPhone("1002", "pw1002", registrar=("127.0.0.1", registrar.port),
                          workdir=tmp_path) as b:
            assert b.register(timeout=5) == "REGISTER_OK"
        assert registrar.wait(5).ok
