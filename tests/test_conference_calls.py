"""Conference rooms end to end with pjsua2 phones: each member hears every other member and never
itself (mix-minus), the PIN and the listener PIN, *6 mute, an admin-muted listener, a full room.

Each phone sends its own sine; what a phone heard is judged by the spectrum of its recording in a
window when everybody was in the room: the others' frequencies stand far above the noise floor,
its own is not there.
"""
import time

import numpy as np
import pytest

from firmware.features import conference as model
from tests.pbxproc import PbxProcess
from tests.phones.audio import read_wav, tone_fraction
from tests.phones.pj import PjPhone

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pbx(tmp_path_factory):
    proc = PbxProcess(tmp_path_factory.mktemp("conf-pbx"), extensions=[str(n) for n in range(1100, 1110)])
    proc.store.add_record(model.TABLE, model.ConferenceRoom("800", "Board room"))
    proc.store.add_record(model.TABLE, model.ConferenceRoom("801", "Sales call", pin="1234", listener_pin="5678",
                                                            max_members=3, tones=False))
    proc.start()
    yield proc
    proc.stop()


def levels_db(wav, freqs, start_s, end_s):
    """Level of each frequency in [start_s, end_s) (negative = from the end), in dB relative to
    the strongest component of what the phone heard: 0 for the loudest tone, about -3 for a tone
    as loud, below -35 for one that is not there (G.711 noise and window leakage)."""
    x, rate = read_wav(wav)
    x = x[int(start_s * rate):int(end_s * rate) if end_s else None]
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) + 1e-9
    hz = np.fft.rfftfreq(len(x), 1 / rate)
    floor = spectrum.max()
    return {f: float(20 * np.log10(spectrum[(hz > f - 8) & (hz < f + 8)].max() / floor)) for f in freqs}


def joined(pbx, room, count, timeout=25.0):
    """Wait until the PBX's status shows `count` people in the room; returns them."""
    deadline = time.monotonic() + timeout
    members = []
    while time.monotonic() < deadline:
        rooms = {r["number"]: r["members"] for r in pbx.status().get("conference", [])}
        members = rooms.get(room, [])
        if len(members) == count:
            return members
        time.sleep(0.2)
    raise AssertionError(f"{count} never in room {room} (last seen {members}):\n{pbx.log_tail(30)}")


def phone(pbx, number, tmp_path, hz):
    p = PjPhone(user=number, secret=pbx.secrets[number], registrar=pbx.registrar, tone_hz=hz,
                record_dir=tmp_path).start()
    assert p.register() == 200
    return p


def test_three_phones_in_one_room_each_hear_the_other_two_and_not_themselves(pbx, tmp_path):
    tones = {"1100": 700, "1101": 1100, "1102": 1500}
    phones = [phone(pbx, n, tmp_path, hz) for n, hz in tones.items()]
    try:
        for count, p in enumerate(phones, 1):
            p.call(pbx.uri("800"))
            p.wait_state("CONFIRMED", timeout=10)
            members = joined(pbx, "800", count)
        assert sorted(m["number"] for m in members) == sorted(tones) and not any(m["muted"] for m in members)
        time.sleep(3.5)
        t_all = time.monotonic()
        for p in phones:
            p.hangup()
        for p in phones:
            p.wait_state("DISCONNECTED", timeout=10)
        ago = time.monotonic() - t_all
        for (number, own), p in zip(tones.items(), phones):
            lv = levels_db(p.recording_path, tones.values(), -(ago + 3.0), -(ago + 0.3))
            others = [lv[hz] for hz in tones.values() if hz != own]
            assert min(others) > -6, (number, lv)            # both others, loud and clear
            assert lv[own] < -35, (number, lv)               # not itself (mix-minus)
        # the first member heard the join tone (660 then 990 Hz) when each of the others came in
        assert tone_fraction(phones[0].recording_path, 990) > 0, "no join tone heard"
    finally:
        for p in phones:
            p.stop()
    rec = pbx.wait_cdr(lambda r: r.src == "1100" and r.dst == "800")
    assert rec.disposition.value == "ANSWERED"


def test_pin_listener_mute_and_a_full_room(pbx, tmp_path):
    a = phone(pbx, "1103", tmp_path, 700)          # talker
    b = phone(pbx, "1104", tmp_path, 1100)         # listener PIN: joins muted, cannot unmute
    c = phone(pbx, "1105", tmp_path, 1500)         # talker, first keys a wrong PIN
    d = phone(pbx, "1106", tmp_path, 1900)         # the room is full for it
    try:
        a.call(pbx.uri("801"))
        a.wait_state("CONFIRMED", timeout=10)
        time.sleep(1.0)
        a.send_dtmf("1234#")
        joined(pbx, "801", 1)
        b.call(pbx.uri("801"))
        b.wait_state("CONFIRMED", timeout=10)
        time.sleep(1.0)
        b.send_dtmf("5678#")
        joined(pbx, "801", 2)
        c.call(pbx.uri("801"))
        c.wait_state("CONFIRMED", timeout=10)
        time.sleep(1.0)
        c.send_dtmf("9999#")
        time.sleep(3.0)
        c.send_dtmf("1234#")
        members = {m["number"]: m for m in joined(pbx, "801", 3)}
        assert members["1104"]["role"] == "listener" and members["1104"]["muted"]
        assert members["1103"]["role"] == members["1105"]["role"] == "talker"
        d.call(pbx.uri("801"))
        d.wait_state("DISCONNECTED", timeout=20)   # answered, told the room is full, hung up
        assert any(e["state"] == "CONFIRMED" for e in d.events())
        time.sleep(3.0)
        mark_both = time.monotonic()
        b.send_dtmf("*6")                            # a listener cannot unmute
        a.send_dtmf("*6")                            # a talker mutes
        time.sleep(3.5)
        mark_muted = time.monotonic()
        for p in (a, b, c):
            p.hangup()
        for p in (a, b, c):
            p.wait_state("DISCONNECTED", timeout=10)
        end = time.monotonic()
        before = dict(start_s=-(end - mark_both + 2.5), end_s=-(end - mark_both + 0.2))
        after = dict(start_s=-(end - mark_muted + 2.0), end_s=-(end - mark_muted + 0.2))
        la = levels_db(a.recording_path, (700, 1100, 1500), **before)
        assert la[1500] > -6 and la[1100] < -35, la            # a hears c, not the listener b
        lb = levels_db(b.recording_path, (700, 1100, 1500), **before)
        assert lb[700] > -6 and lb[1500] > -6, lb             # the listener hears both talkers
        lc_before = levels_db(c.recording_path, (700, 1100), **before)
        assert lc_before[700] > -6 and lc_before[1100] < -35, lc_before
        assert tone_fraction(a.recording_path, 990) == 0     # this room has no join/leave tones
        heard, rate = read_wav(c.recording_path)
        quiet = heard[int(after["start_s"] * rate):int(after["end_s"] * rate)]
        assert np.sqrt(np.mean(quiet ** 2)) < 30, "c still hears someone after a muted itself (b stays muted)"
    finally:
        for p in (a, b, c, d):
            p.stop()
    log = pbx.log_path.read_text(errors="replace")
    assert "conference 801: wrong PIN from 1105" in log
    assert "1103 muted" in log
