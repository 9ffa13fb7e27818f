"""The PBX driven by SIPp and baresip: registration with digest auth, calls with RTP from a pcap,
cancel, busy, no answer, bad passwords. SIPp is the tool carriers test SIP with; baresip is a second
independent phone stack next to pjsua2.
"""

import time

import numpy as np
import pytest

from firmware.cdr import Disposition
from tests.phones.audio import read_wav, tone_present
from tests.phones.baresip import BaresipPhone
from tests.phones.pj import PjPhone
from tests.phones.sipp import Sipp, free_port, run_sipp

pytestmark = pytest.mark.e2e


def users(pbx, number):
    return [(number, pbx.secrets[number])]


def register_sipp(pbx, number, port, tmp_path, transport="udp"):
    r = run_sipp("register_auth.xml", pbx.registrar, users=users(pbx, number), port=port,
                 transport=transport, workdir=tmp_path, timeout=10)
    assert r.ok, r.log_tail()
    return r


def voice_energy(wav_path, skip_s=0.3) -> float:
    samples, rate = read_wav(wav_path)
    samples = samples[int(skip_s * rate):].astype(float)
    return float(np.sqrt(np.mean(samples ** 2))) if len(samples) else 0.0


def test_sipp_registers_with_digest_auth_over_udp_and_tcp(pbx, tmp_path):
    for number, transport in (("1020", "udp"), ("1021", "tcp")):
        r = register_sipp(pbx, number, free_port(transport), tmp_path, transport)
        assert r.responses.get(401) == 1 and r.responses.get(200) == 1
    aors = {reg["aor"]: reg["transport"] for reg in pbx.status()["registrations"]}
    assert aors.get("1020") == "udp" and aors.get("1021") == "tcp"


def test_wrong_password_is_refused_and_unknown_user_gets_the_same_answer(pbx, tmp_path):
    bad = run_sipp("register_auth.xml", pbx.registrar, users=[("1022", "wrong-password-123")],
                   workdir=tmp_path, timeout=5)
    ghost = run_sipp("register_auth.xml", pbx.registrar, users=[("7777", "wrong-password-123")],
                     workdir=tmp_path, timeout=5)
    assert not bad.ok and not ghost.ok
    assert bad.responses.get(200) is None and ghost.responses.get(200) is None
    assert bad.responses == ghost.responses  # the same challenges: nothing tells which user exists
    assert "1022" not in {reg["aor"] for reg in pbx.status()["registrations"]}


def test_sipp_caller_with_pcap_audio_reaches_a_pjsua2_phone(pbx, tmp_path):
    with PjPhone(user="1023", secret=pbx.secrets["1023"], registrar=pbx.registrar, tone_hz=1100,
                 record_dir=tmp_path) as callee:
        assert callee.register() == 200
        callee.auto_answer(200, after_ms=200)
        r = run_sipp("uac_call_auth.xml", pbx.registrar, service="1023", users=users(pbx, "1024"),
                     duration_ms=3000, workdir=tmp_path, timeout=20)
        assert r.ok, r.log_tail()
        assert r.responses.get(180) == 1 and r.responses.get(200) >= 1
        callee.wait_state("DISCONNECTED", timeout=5)
        # the callee heard the pcap's audio through the PBX relay (not silence, not its own tone)
        assert voice_energy(callee.recording_path) > 200
        assert not tone_present(callee.recording_path, 1100)
    rec = pbx.wait_cdr(lambda c: c.src == "1024" and c.dst == "1023")
    assert rec.disposition is Disposition.ANSWERED and rec.billsec >= 2


def test_pjsua2_caller_hears_a_sipp_callee_playing_pcap(pbx, tmp_path):
    port = free_port()
    register_sipp(pbx, "1025", port, tmp_path)
    with Sipp("uas_answer.xml", port=port, params={"answer_delay": 200, "play_pcap": 1},
              workdir=tmp_path, timeout=20) as uas, \
            PjPhone(user="1026", secret=pbx.secrets["1026"], registrar=pbx.registrar, tone_hz=700,
                    record_dir=tmp_path) as caller:
        assert caller.register() == 200
        caller.call(pbx.uri("1025"))
        caller.wait_state("CONFIRMED", timeout=5)
        time.sleep(3)
        caller.hangup()
        caller.wait_state("DISCONNECTED", timeout=5)
        result = uas.wait(10)
    assert result.successful == 1, result.log_tail()
    assert voice_energy(caller.recording_path) > 200


def test_sipp_cancel_while_ringing_gives_487(pbx, tmp_path):
    port = free_port()
    register_sipp(pbx, "1027", port, tmp_path)
    with Sipp("uas_ring_forever.xml", port=port, workdir=tmp_path, timeout=15) as uas:
        r = run_sipp("uac_cancel.xml", pbx.registrar, service="1027", users=users(pbx, "1028"),
                     workdir=tmp_path, timeout=15)
        assert r.ok, r.log_tail()
        assert r.responses.get(487) == 1
        assert uas.wait(10).successful == 1  # the callee saw the CANCEL
    assert pbx.wait_cdr(lambda c: c.src == "1028" and c.dst == "1027").disposition is Disposition.CANCELLED


def test_sipp_busy_callee_gives_486(pbx, tmp_path):
    port = free_port()
    register_sipp(pbx, "1029", port, tmp_path)
    with Sipp("uas_busy.xml", port=port, workdir=tmp_path, timeout=15):
        r = run_sipp("uac_expect.xml", pbx.registrar, service="1029", users=users(pbx, "1032"),
                     params={"expect_code": 486}, workdir=tmp_path, timeout=15)
        assert r.ok, r.log_tail()
    assert pbx.wait_cdr(lambda c: c.src == "1032" and c.dst == "1029").disposition is Disposition.BUSY


def test_sipp_unanswered_callee_gives_480_after_no_answer_time(pbx, tmp_path):
    port = free_port()
    register_sipp(pbx, "1033", port, tmp_path)
    pbx.store.update_settings(no_answer_timeout=5)
    try:
        time.sleep(0.7)
        with Sipp("uas_ring_forever.xml", port=port, workdir=tmp_path, timeout=20):
            t0 = time.monotonic()
            r = run_sipp("uac_expect.xml", pbx.registrar, service="1033", users=users(pbx, "1034"),
                         params={"expect_code": 480}, workdir=tmp_path, timeout=20)
            assert r.ok, r.log_tail()
            assert 4.5 <= time.monotonic() - t0 <= 9
    finally:
        pbx.store.update_settings(no_answer_timeout=30)
    assert pbx.wait_cdr(lambda c: c.src == "1034" and c.dst == "1033").disposition is Disposition.NO_ANSWER


def test_baresip_calls_pjsua2_with_audio_both_ways(pbx, tmp_path):
    with BaresipPhone("1035", pbx.secrets["1035"], registrar=pbx.registrar, workdir=tmp_path,
                      tone_hz=900) as bare, \
            PjPhone(user="1036", secret=pbx.secrets["1036"], registrar=pbx.registrar, tone_hz=1100,
                    record_dir=tmp_path) as pj:
        assert bare.register() == "REGISTER_OK"
        assert pj.register() == 200
        pj.auto_answer(200)
        bare.dial(pbx.uri("1036"))
        bare.wait_event("CALL_ESTABLISHED", timeout=8)
        time.sleep(3)
        bare.hangup()
        pj.wait_state("DISCONNECTED", timeout=5)
        assert tone_present(pj.recording_path, 900, start_s=0.5), "pjsua2 did not hear baresip"
    assert tone_present(bare.received_wav, 1100, start_s=0.5), "baresip did not hear pjsua2"
    assert pbx.wait_cdr(lambda c: c.src == "1035" and c.dst == "1036").disposition is Disposition.ANSWERED
