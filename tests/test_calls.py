"""Extension-to-extension calls through the running PBX, with pjsua2 phones as the real SIP clients.

Each phone plays its own sine (caller 700 Hz, callee 1100 Hz) and records what it hears, so
two-way audio is proven by finding the other side's tone in each recording. Every test uses its
own extension numbers: a contact registered by an earlier test's phone never gets in the way.
"""

import contextlib
import statistics
import time

import pytest

from firmware.cdr import Disposition
from tests.phones.audio import on_off_pattern, tone_fraction, tone_present
from tests.phones.pj import PjPhone

pytestmark = pytest.mark.e2e
CALLER_HZ, CALLEE_HZ = 700, 1100


def phone(pbx, number, tmp_path, hz, transport="udp"):
    return PjPhone(user=number, secret=pbx.secrets[number], registrar=pbx.registrar,
                   transport=transport, tone_hz=hz, record_dir=tmp_path)


def registered(p):
    assert p.register() == 200
    return p


@contextlib.contextmanager
def answered_call(pbx, tmp_path, caller, callee, transport="udp"):
    """Two registered phones, the caller's call answered by the callee at once: yields (a, b)."""
    with phone(pbx, caller, tmp_path, CALLER_HZ, transport) as a, phone(pbx, callee, tmp_path, CALLEE_HZ) as b:
        registered(a), registered(b)
        b.auto_answer(200)
        a.call(pbx.uri(callee) + (";transport=tcp" if transport == "tcp" else ""))
        a.wait_state("CONFIRMED", timeout=5)
        b.wait_state("CONFIRMED", timeout=5)
        yield a, b


def cdr_for(pbx, src, dst):
    return pbx.wait_cdr(lambda r: r.src == src and r.dst == dst)


def test_call_between_two_extensions_rings_answers_and_carries_audio_both_ways(pbx, tmp_path):
    with phone(pbx, "1000", tmp_path, CALLER_HZ) as a, phone(pbx, "1001", tmp_path, CALLEE_HZ) as b:
        registered(a), registered(b)
        b.auto_answer(200, after_ms=800)
        a.call(pbx.uri("1001"))
        early = a.wait_state("EARLY", timeout=5)
        assert early["code"] == 180
        a.wait_state("CONFIRMED", timeout=5)
        b.wait_state("CONFIRMED", timeout=5)
        status = pbx.status()
        assert [(c["src"], c["dst"], c["state"]) for c in status["calls"]] == [("1000", "1001", "answered")]
        time.sleep(3)
        a.hangup()
        a.wait_state("DISCONNECTED", timeout=5)
        b.wait_state("DISCONNECTED", timeout=5)
        assert tone_present(a.recording_path, CALLEE_HZ, start_s=0.5), "caller did not hear the callee"
        assert tone_present(b.recording_path, CALLER_HZ, start_s=0.5), "callee did not hear the caller"
        assert not tone_present(a.recording_path, CALLER_HZ, start_s=0.5), "caller hears own echo"
    rec = cdr_for(pbx, "1000", "1001")
    assert rec.disposition is Disposition.ANSWERED
    assert rec.answer is not None and 2 <= rec.billsec <= 6
    assert rec.duration >= rec.billsec
    assert rec.legs[0]["hangup_by"] == "caller"
    assert {leg["leg"] for leg in rec.legs} == {"a", "b"}


def test_callee_hangs_up_and_the_caller_is_released(pbx, tmp_path):
    with answered_call(pbx, tmp_path, "1002", "1003") as (a, b):
        time.sleep(1)
        b.hangup()
        a.wait_state("DISCONNECTED", timeout=5)
    rec = cdr_for(pbx, "1002", "1003")
    assert rec.disposition is Disposition.ANSWERED
    assert "callee" in rec.cause


def test_caller_cancel_stops_the_ringing_phone_and_is_recorded_cancelled(pbx, tmp_path):
    with phone(pbx, "1004", tmp_path, CALLER_HZ) as a, phone(pbx, "1005", tmp_path, CALLEE_HZ) as b:
        registered(a), registered(b)
        a.call(pbx.uri("1005"))
        b.wait_incoming(timeout=5)
        a.wait_state("EARLY", timeout=5)
        a.hangup()
        a.wait_state("DISCONNECTED", timeout=5)
        b.wait_state("DISCONNECTED", timeout=5)
        assert a.last_status == 487
    rec = cdr_for(pbx, "1004", "1005")
    assert rec.disposition is Disposition.CANCELLED
    assert rec.answer is None and rec.billsec == 0


def test_busy_extension_gets_486_and_caller_hears_uk_busy_tone(pbx, tmp_path):
    with phone(pbx, "1006", tmp_path, CALLER_HZ) as a, phone(pbx, "1007", tmp_path, CALLEE_HZ) as b:
        registered(a), registered(b)
        b.auto_answer(486)
        a.call(pbx.uri("1007"))
        a.wait_state("DISCONNECTED", timeout=10)
        assert a.last_status == 486
        # UK busy: 400 Hz, 0.375 s on / 0.375 s off, heard as early media before the 486
        assert tone_fraction(a.recording_path, 400) > 0.3
        pattern = [d for on, d in on_off_pattern(a.recording_path, 400) if on][:-1]
        assert pattern and 0.3 <= statistics.median(pattern) <= 0.45, pattern
    rec = cdr_for(pbx, "1006", "1007")
    assert rec.disposition is Disposition.BUSY
    assert rec.cause.startswith("486")


def test_unanswered_call_gets_480_after_the_configured_no_answer_time(pbx, tmp_path):
    pbx.store.update_settings(no_answer_timeout=5)  # applied live, no restart
    try:
        with phone(pbx, "1008", tmp_path, CALLER_HZ) as a, phone(pbx, "1009", tmp_path, CALLEE_HZ) as b:
            registered(a), registered(b)
            time.sleep(0.7)  # the PBX polls the config file twice a second
            t0 = time.monotonic()
            a.call(pbx.uri("1009"))
            b.wait_incoming(timeout=5)
            a.wait_state("DISCONNECTED", timeout=15)
            waited = time.monotonic() - t0
            b.wait_state("DISCONNECTED", timeout=5)
            assert a.last_status == 480
            assert 4.5 <= waited <= 8, waited
    finally:
        pbx.store.update_settings(no_answer_timeout=30)
    rec = cdr_for(pbx, "1008", "1009")
    assert rec.disposition is Disposition.NO_ANSWER


def test_unknown_extension_gets_spoken_announcement_then_404(pbx, tmp_path):
    with phone(pbx, "1010", tmp_path, CALLER_HZ) as a:
        registered(a)
        a.call(pbx.uri("1999"))
        a.wait_state("DISCONNECTED", timeout=15)
        states = [(e["state"], e["code"]) for e in a.events()]
        assert ("EARLY", 183) in states
        assert a.last_status == 404
        assert _speech_heard(a.recording_path)
    rec = cdr_for(pbx, "1010", "1999")
    assert rec.disposition is Disposition.FAILED
    assert rec.cause.startswith("404")


def test_unregistered_extension_gets_announcement_then_480(pbx, tmp_path):
    with phone(pbx, "1011", tmp_path, CALLER_HZ) as a:
        registered(a)
        a.call(pbx.uri("1012"))  # 1012 exists but no phone is registered
        a.wait_state("DISCONNECTED", timeout=15)
        assert a.last_status == 480
        assert _speech_heard(a.recording_path)
    assert cdr_for(pbx, "1011", "1012").disposition is Disposition.FAILED


def test_held_party_hears_music_on_hold_and_the_caller_again_after_unhold(pbx, tmp_path):
    from firmware.dsp.tones import _HOLD_CHORDS
    notes = sorted({hz for chord in _HOLD_CHORDS for hz in chord})
    with answered_call(pbx, tmp_path, "1013", "1014") as (a, b):
        time.sleep(0.5)
        mark = a.event_count
        a.hold()
        a.wait_media("LOCAL_HOLD", timeout=5, after=mark)
        t_hold = time.monotonic()
        time.sleep(2.5)
        mark = a.event_count
        a.unhold()
        a.wait_media("ACTIVE", timeout=5, after=mark)
        t_unhold = time.monotonic()
        time.sleep(1.5)
        a.hangup()
        t_end = time.monotonic()
        b.wait_state("DISCONNECTED", timeout=5)
        # while held, the callee hears the PBX's music (its notes), not the caller and not silence
        window = dict(start_s=-(t_end - t_hold - 0.4), end_s=-(t_end - t_unhold + 0.4))
        music = max(tone_fraction(b.recording_path, hz, min_snr_db=6, **window) for hz in notes)
        assert music > 0.15, music
        assert tone_fraction(b.recording_path, CALLER_HZ, **window) < 0.1
        # after unhold the callee hears the caller again
        assert tone_present(b.recording_path, CALLER_HZ, start_s=-1.2, end_s=-0.2)
    assert cdr_for(pbx, "1013", "1014").disposition is Disposition.ANSWERED


def test_dtmf_is_relayed_to_the_callee_and_detected_by_the_pbx(pbx, tmp_path):
    with answered_call(pbx, tmp_path, "1015", "1016") as (a, b):
        time.sleep(0.5)
        a.send_dtmf("159#")
        deadline = time.monotonic() + 5
        while b.dtmf_received != "159#" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert b.dtmf_received == "159#"
        a.hangup()
        b.wait_state("DISCONNECTED", timeout=5)
    rec = cdr_for(pbx, "1015", "1016")
    assert rec.legs[0].get("dtmf") == "159#"


def test_phone_on_tcp_calls_phone_on_udp(pbx, tmp_path):
    with answered_call(pbx, tmp_path, "1017", "1018", transport="tcp") as (a, b):
        time.sleep(2)
        a.hangup()
        b.wait_state("DISCONNECTED", timeout=5)
        assert tone_present(a.recording_path, CALLEE_HZ, start_s=0.5)
        assert tone_present(b.recording_path, CALLER_HZ, start_s=0.5)


def _speech_heard(wav_path) -> bool:
    """An announcement is speech: energy spread over the voice band, not our test tones."""
    from tests.phones.audio import read_wav
    import numpy as np
    samples, rate = read_wav(wav_path)
    if len(samples) < rate:
        return False
    rms = float(np.sqrt(np.mean(samples.astype(float) ** 2)))
    return rms > 300 and not tone_present(wav_path, CALLEE_HZ)


def test_call_recording_writes_one_wav_per_side_with_what_each_said(pbx, tmp_path):
    from tests.phones.audio import tone_present as heard
    pbx.store.update_settings(record_calls=True)
    try:
        time.sleep(0.7)  # the PBX polls the config file twice a second
        with answered_call(pbx, tmp_path, "1019", "1020") as (a, b):
            time.sleep(2)
            a.hangup()
            b.wait_state("DISCONNECTED", timeout=5)
    finally:
        pbx.store.update_settings(record_calls=False)
    rec = cdr_for(pbx, "1019", "1020")
    caller_wav, callee_wav = rec.legs[0]["recording"], rec.legs[1]["recording"]
    assert heard(caller_wav, CALLER_HZ) and not heard(caller_wav, CALLEE_HZ)
    assert heard(callee_wav, CALLEE_HZ) and not heard(callee_wav, CALLER_HZ)


def test_us_country_setting_gives_us_busy_tone(pbx, tmp_path):
    pbx.store.update_settings(country="us")
    try:
        with phone(pbx, "1021", tmp_path, CALLER_HZ) as a, phone(pbx, "1022", tmp_path, CALLEE_HZ) as b:
            registered(a), registered(b)
            time.sleep(0.7)
            b.auto_answer(486)
            a.call(pbx.uri("1022"))
            a.wait_state("DISCONNECTED", timeout=10)
            assert a.last_status == 486
            # US busy: 480 + 620 Hz, 0.5 s on / 0.5 s off
            assert tone_fraction(a.recording_path, (480, 620)) > 0.3
            assert tone_fraction(a.recording_path, 400) < 0.05
            pattern = [d for on, d in on_off_pattern(a.recording_path, (480, 620)) if on][:-1]
            assert pattern and 0.4 <= max(pattern) <= 0.6, pattern
    finally:
        pbx.store.update_settings(country="uk")


def test_sip_domain_set_live_is_served_by_the_edge_without_a_manual_restart(pbx, tmp_path):
    assert _options_status(pbx, "pbx.office.test") != 200
    pbx.store.update_settings(sip_domain="pbx.office.test")
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _options_status(pbx, "pbx.office.test") != 200:
            time.sleep(0.3)
        assert _options_status(pbx, "pbx.office.test") == 200
        with phone(pbx, "1023", tmp_path, CALLER_HZ) as a:  # phones register again after the change
            registered(a)
    finally:
        pbx.store.update_settings(sip_domain="")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _options_status(pbx, "pbx.office.test") == 200:
            time.sleep(0.3)  # the edge restarts again: let it finish before the next test


def _options_status(pbx, domain: str) -> int:
    import secrets
    import socket
    call_id = secrets.token_hex(8)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(1.0)
        port = s.getsockname()[1]
        s.sendto((f"OPTIONS sip:{domain} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{call_id}\r\n"
                  f"From: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:{domain}>\r\nCall-ID: {call_id}\r\n"
                  f"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode(),
                 pbx.registrar)
        try:
            return int(s.recv(65535).split(b" ", 2)[1])
        except (socket.timeout, ConnectionRefusedError):
            return 0
