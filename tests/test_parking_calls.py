"""Call parking end to end with pjsua2 phones: B transfers A to 700 and hears the slot, a BLF
watcher sees the slot lit, C dials the slot and talks to A; an unclaimed call rings B again.

What B heard is compared with the announcement itself (espeak-ng's "Parked at 7 0 1."): the
recording must match it, and match it better than the words for slot 702.
"""
import time

import numpy as np
import pytest

from firmware.features.parking import ParkingLot
from services.media.prompts import synthesize
from tests.pbxproc import PbxProcess
from tests.phones.audio import read_wav, tone_present
from tests.phones.pj import PjPhone
from tests.phones.raw import RawPhone

pytestmark = pytest.mark.e2e
A_HZ, B_HZ, C_HZ = 700, 1100, 1500


@pytest.fixture(scope="module")
def pbx(tmp_path_factory):
    proc = PbxProcess(tmp_path_factory.mktemp("pbx"), extensions=[str(n) for n in range(1000, 1010)],
                      settings={"no_answer_timeout": 20, "busy_tone_seconds": 1})
    proc.store.add_record("parking_lots", ParkingLot("700", "Parking", "701", 20, timeout=12,
                                                     return_destination="extension:1008"))
    proc.start()
    yield proc
    proc.stop()


def phone(pbx, number, tmp_path, hz):
    p = PjPhone(user=number, secret=pbx.secrets[number], registrar=pbx.registrar, tone_hz=hz, record_dir=tmp_path)
    return p


def off(body: str) -> bool:
    """A dialog-info body showing no call (the edge writes <state>terminated</state> or no dialog)."""
    return "<state>confirmed</state>" not in body and "<state>early</state>" not in body


def match(recording, reference) -> float:
    """How well `recording` holds `reference`: the median over four quarters of the reference of
    each one's best normalised cross-correlation anywhere in the recording (1.0 = identical), so a
    frame lost or stretched by a phone's jitter buffer costs one quarter, not the whole match."""
    x, _ = read_wav(recording)
    ref = np.frombuffer(reference, "<i2").astype(np.float64)
    quarters = np.array_split(ref[np.argmax(np.abs(ref) > 50):], 4)
    return float(np.median([_best(x, q) for q in quarters]))


def _best(x, ref) -> float:
    n = len(x) + len(ref)
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(ref, size)), size)[:len(x) - len(ref) + 1]
    energy = np.sqrt(np.convolve(x * x, np.ones(len(ref)), "valid"))
    norm = np.linalg.norm(ref)
    # near-silent stretches of the recording would divide by ~0: judge them against a floor
    return float(np.max(np.abs(corr) / (np.maximum(energy, 0.3 * norm) * norm + 1e-9)))


def test_a_call_transferred_to_700_parks_in_701_and_dialling_701_takes_it(pbx, tmp_path):
    watcher = RawPhone("1009", pbx.secrets["1009"], pbx.registrar)
    with phone(pbx, "1000", tmp_path, A_HZ) as a, phone(pbx, "1001", tmp_path, B_HZ) as b, \
            phone(pbx, "1002", tmp_path, C_HZ) as c:
        for p in (a, b, c):
            assert p.register() == 200
        assert watcher.register() == 200
        status, lamp = watcher.subscribe("701", "dialog")
        assert status in (200, 202)
        assert watcher.next_notify(lamp, match=off) is not None   # off
        b.auto_answer(200)
        a.call(pbx.uri("1001"))
        a.wait_state("CONFIRMED", timeout=8)
        time.sleep(1.0)
        b.transfer(pbx.uri("700"))
        b.wait_transfer(200, timeout=15)
        b.wait_state("DISCONNECTED", timeout=8)
        assert watcher.next_notify(lamp, timeout=5, match=lambda body: "<state>confirmed</state>" in body)
        c.call(pbx.uri("701"))
        c.wait_state("CONFIRMED", timeout=8)
        time.sleep(2.0)
        c.hangup()
        a.wait_state("DISCONNECTED", timeout=8)
        assert watcher.next_notify(lamp, timeout=5, match=off)
        # A talked to C after waiting; C heard A
        assert tone_present(a.recording_path, C_HZ, start_s=-1.5, end_s=-0.2)
        assert tone_present(c.recording_path, A_HZ, start_s=0.5)
        said_701 = match(b.recording_path, synthesize("Parked at 7 0 1."))
        said_702 = match(b.recording_path, synthesize("Parked at 7 0 2."))
        assert said_701 > 0.8 and said_701 > said_702 + 0.02, (said_701, said_702)
    watcher.close()


def test_dialling_an_empty_slot_says_nothing_is_parked_there(pbx, tmp_path):
    with phone(pbx, "1003", tmp_path, A_HZ) as c:
        assert c.register() == 200
        c.call(pbx.uri("715"))
        c.wait_state("DISCONNECTED", timeout=15)
        assert c.last_status == 404


def test_a_parked_call_nobody_takes_rings_the_parker_again(pbx, tmp_path):
    with phone(pbx, "1004", tmp_path, A_HZ) as a, phone(pbx, "1005", tmp_path, B_HZ) as b:
        assert a.register() == 200 and b.register() == 200
        b.auto_answer(200)
        a.call(pbx.uri("1005"))
        a.wait_state("CONFIRMED", timeout=8)
        first = b.wait_incoming(timeout=1)
        time.sleep(0.5)
        parked_at = time.monotonic()
        b.transfer(pbx.uri("700"))
        b.wait_transfer(200, timeout=15)
        b.wait_state("DISCONNECTED", timeout=8, call=first["call"])
        b.auto_answer(200, after_ms=500)
        back = b.wait_incoming(timeout=25)
        assert time.monotonic() - parked_at >= 11     # the lot's 12 s
        assert "Parked" in back["from"]
        b.wait_state("CONFIRMED", timeout=8)
        time.sleep(2.0)
        a.hangup()
        b.wait_state("DISCONNECTED", timeout=8)
        assert tone_present(a.recording_path, B_HZ, start_s=-1.5, end_s=-0.2)
        assert tone_present(b.recording_path, A_HZ, start_s=0.5)


def test_a_parked_call_whose_parker_has_gone_goes_to_the_operator(pbx, tmp_path):
    with phone(pbx, "1006", tmp_path, A_HZ) as a, phone(pbx, "1008", tmp_path, C_HZ) as operator:
        assert a.register() == 200 and operator.register() == 200
        operator.auto_answer(200, after_ms=300)
        with phone(pbx, "1007", tmp_path, B_HZ) as b:
            assert b.register() == 200
            b.auto_answer(200)
            a.call(pbx.uri("1007"))
            a.wait_state("CONFIRMED", timeout=8)
            time.sleep(0.5)
            b.transfer(pbx.uri("700"))
            b.wait_transfer(200, timeout=15)
            assert b.unregister() == 200               # the parker leaves for the day
        back = operator.wait_incoming(timeout=30)      # 12 s parked, the parker unreachable: the operator
        assert "1006" in back["from"]
        operator.wait_state("CONFIRMED", timeout=8)
        time.sleep(2.0)
        a.hangup()
        operator.wait_state("DISCONNECTED", timeout=8)
        assert tone_present(a.recording_path, C_HZ, start_s=-1.5, end_s=-0.2)
