"""Paging and intercom end to end with pjsua2 phones that answer by themselves only when the
INVITE carries the auto-answer headers (as a desk phone does): members hear the pager, the pager
hears nothing from them; `*80NUM` intercom is two-way."""
import time

import numpy as np
import pytest

from firmware.features import paging as model
from tests.pbxproc import PbxProcess
from tests.phones.audio import read_wav, tone_fraction
from tests.phones.pj import PjPhone

pytestmark = pytest.mark.e2e
PAGER_HZ, A_HZ, B_HZ = 700, 1100, 1500


@pytest.fixture(scope="module")
def pbx(tmp_path_factory):
    proc = PbxProcess(tmp_path_factory.mktemp("paging-pbx"), extensions=[str(n) for n in range(1200, 1210)])
    # 1203 has no phone registered: the page goes on without it
    proc.store.add_record(model.TABLE, model.PagingGroup("500", "Warehouse", members=("1201", "1202", "1203")))
    proc.start()
    yield proc
    proc.stop()


def phone(pbx, number, tmp_path, hz, intercom=False):
    p = PjPhone(user=number, secret=pbx.secrets[number], registrar=pbx.registrar, tone_hz=hz,
                record_dir=tmp_path).start()
    assert p.register() == 200
    if intercom:
        p.auto_answer(200, intercom_only=True)
    return p


def rms(wav, start_s, end_s):
    x, rate = read_wav(wav)
    x = x[int(start_s * rate):int(end_s * rate)]
    return float(np.sqrt(np.mean(x ** 2))) if len(x) else 0.0


def test_a_page_is_answered_by_the_members_phones_who_hear_the_pager_one_way(pbx, tmp_path):
    pager = phone(pbx, "1200", tmp_path, PAGER_HZ)
    a = phone(pbx, "1201", tmp_path, A_HZ, intercom=True)
    b = phone(pbx, "1202", tmp_path, B_HZ, intercom=True)
    try:
        pager.call(pbx.uri("500"))
        pager.wait_state("CONFIRMED", timeout=15)
        for member in (a, b):
            incoming = member.wait_incoming(timeout=5)
            headers = " | ".join(incoming["auto_answer_headers"])
            assert "answer-after=0" in headers and "info=alert-autoanswer" in headers, headers
            member.wait_state("CONFIRMED", timeout=10)
        time.sleep(3.5)
        t_talk = time.monotonic()
        pager.hangup()
        pager.wait_state("DISCONNECTED", timeout=10)
        for member in (a, b):
            member.wait_state("DISCONNECTED", timeout=10)     # the page ends for everyone
        ago = time.monotonic() - t_talk
        window = dict(start_s=-(ago + 2.5), end_s=-(ago + 0.3))
        for member, own in ((a, A_HZ), (b, B_HZ)):
            assert tone_fraction(member.recording_path, PAGER_HZ, **window) > 0.8
            other = B_HZ if own == A_HZ else A_HZ
            assert tone_fraction(member.recording_path, other, min_snr_db=0, **window) < 0.05
        # the pager hears nothing from the members (one way)
        assert tone_fraction(pager.recording_path, A_HZ, min_snr_db=0, **window) < 0.05
        assert tone_fraction(pager.recording_path, B_HZ, min_snr_db=0, **window) < 0.05
        assert rms(pager.recording_path, **window) < 50
    finally:
        for p in (pager, a, b):
            p.stop()
    log = pbx.log_path.read_text(errors="replace")
    assert "page 500: 1201 answered" in log and "page 500: 1202 answered" in log
    rec = pbx.wait_cdr(lambda r: r.src == "1200")       # one record: the pager's call to the group
    assert rec.dst == "500" and rec.disposition.value == "ANSWERED", rec
    assert not [r for r in pbx.cdrs() if r.src in ("1201", "1202")]


def test_intercom_star_80_is_auto_answered_and_two_way_and_an_ordinary_call_still_rings(pbx, tmp_path):
    caller = phone(pbx, "1204", tmp_path, PAGER_HZ)
    callee = phone(pbx, "1205", tmp_path, A_HZ, intercom=True)
    try:
        caller.call(pbx.uri("1205"))                    # an ordinary call: the phone rings
        caller.wait_state("EARLY", timeout=10)
        time.sleep(1.5)
        assert not any(e["state"] == "CONFIRMED" for e in caller.events())
        caller.hangup()
        caller.wait_state("DISCONNECTED", timeout=10)
        caller.call(pbx.uri("*801205"))
        caller.wait_state("CONFIRMED", timeout=10)
        callee.wait_state("CONFIRMED", timeout=10)
        time.sleep(3.0)
        t = time.monotonic()
        caller.hangup()
        caller.wait_state("DISCONNECTED", timeout=10)
        callee.wait_state("DISCONNECTED", timeout=10)
        ago = time.monotonic() - t
        window = dict(start_s=-(ago + 2.0), end_s=-(ago + 0.3))
        assert tone_fraction(callee.recording_path, PAGER_HZ, **window) > 0.8
        assert tone_fraction(caller.recording_path, A_HZ, **window) > 0.8
    finally:
        caller.stop()
        callee.stop()
