"""Music on hold end to end: a pjsua2 caller put on hold by the callee hears the MP3 uploaded for
the callee's class (its frequency found in what the phone recorded), not the caller's silence."""
import time

import pytest

from firmware.dsp.tones import _HOLD_CHORDS
from firmware.features import moh as model
from services.media import moh as files
from tests.pbxproc import PbxProcess
from tests.phones.audio import tone_fraction
from tests.phones.pj import PjPhone
from tests.test_moh import make_audio

pytestmark = pytest.mark.e2e
CALLER_HZ, CALLEE_HZ, MUSIC_HZ = 700, 1100, 600


@pytest.fixture(scope="module")
def pbx(tmp_path_factory):
    data = tmp_path_factory.mktemp("moh-pbx")
    proc = PbxProcess(data, extensions=["1000", "1001", "1002", "1003"])
    mp3 = make_audio(data / "jingle.mp3", hz=MUSIC_HZ, seconds=20)
    files.convert(mp3, files.class_dir(data, "sales") / "jingle.wav")
    proc.store.add_record(model.TABLE, model.MohClass("sales", files=("jingle.wav",), extensions=("1001",)))
    proc.start()
    yield proc
    proc.stop()


def phone(pbx, number, tmp_path, hz):
    p = PjPhone(user=number, secret=pbx.secrets[number], registrar=pbx.registrar, tone_hz=hz,
                record_dir=tmp_path)
    return p


def held_by_callee(pbx, tmp_path, caller, callee, seconds=3.0):
    """caller calls callee, callee holds for `seconds`: the window (from the end) of the hold."""
    with phone(pbx, caller, tmp_path, CALLER_HZ) as a, phone(pbx, callee, tmp_path, CALLEE_HZ) as b:
        assert a.register() == 200 and b.register() == 200
        b.auto_answer(200)
        a.call(pbx.uri(callee))
        a.wait_state("CONFIRMED", timeout=10)
        b.wait_state("CONFIRMED", timeout=10)
        time.sleep(0.5)
        mark = b.event_count
        b.hold()
        b.wait_media("LOCAL_HOLD", timeout=10, after=mark)
        t_hold = time.monotonic()
        time.sleep(1.0)
        listening = pbx.status().get("moh", {})
        time.sleep(seconds - 1.0)
        t_unhold = time.monotonic()
        a.hangup()
        t_end = time.monotonic()
        a.wait_state("DISCONNECTED", timeout=10)
        return (a.recording_path, dict(start_s=-(t_end - t_hold - 0.5), end_s=-(t_end - t_unhold + 0.2)),
                listening)


def test_a_caller_held_by_the_callee_hears_the_mp3_uploaded_for_the_callees_class(pbx, tmp_path):
    wav, window, listening = held_by_callee(pbx, tmp_path, "1000", "1001")
    assert listening["sales"] == {"listeners": 1, "track": "jingle.wav"}
    assert tone_fraction(wav, MUSIC_HZ, min_snr_db=10, **window) > 0.7
    assert tone_fraction(wav, CALLEE_HZ, **window) < 0.1
    notes = sorted({hz for chord in _HOLD_CHORDS for hz in chord})
    assert max(tone_fraction(wav, hz, min_snr_db=6, **window) for hz in notes) < 0.1   # not the default tune


def test_an_extension_in_no_class_holds_its_caller_on_the_default_class(pbx, tmp_path):
    wav, window, listening = held_by_callee(pbx, tmp_path, "1002", "1003")
    assert listening["default"]["listeners"] == 1 and listening.get("sales", {}).get("listeners", 0) == 0
    notes = sorted({hz for chord in _HOLD_CHORDS for hz in chord})
    assert max(tone_fraction(wav, hz, min_snr_db=6, **window) for hz in notes) > 0.15
    assert tone_fraction(wav, MUSIC_HZ, **window) < 0.1


def test_during_an_attended_transfer_the_waiting_party_hears_the_transferrers_class(pbx, tmp_path):
    with phone(pbx, "1002", tmp_path, CALLER_HZ) as a, phone(pbx, "1001", tmp_path, CALLEE_HZ) as b:
        assert a.register() == 200 and b.register() == 200
        b.auto_answer(200)
        a.call(pbx.uri("1001"))
        a.wait_state("CONFIRMED", timeout=10)
        b.wait_state("CONFIRMED", timeout=10)
        time.sleep(0.5)
        b.send_dtmf("*2")               # 1001 starts an attended transfer: 1002 waits
        time.sleep(3.0)
        t = time.monotonic()
        a.hangup()
        a.wait_state("DISCONNECTED", timeout=10)
        ago = time.monotonic() - t
        window = dict(start_s=-(ago + 2.0), end_s=-(ago + 0.2))
        assert tone_fraction(a.recording_path, MUSIC_HZ, **window) > 0.7
        assert tone_fraction(a.recording_path, CALLEE_HZ, **window) < 0.1
