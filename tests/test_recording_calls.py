"""On-demand recording end to end: `*1` (RFC 4733 from a pjsua2 phone) during a call starts
recording it, `*1` again stops it; both parties' audio is in the files, the call record names
them, the Recordings page lists them with their call; the call service deletes recordings past
the retention limit on its own."""
import os
import time
from pathlib import Path

import pytest

from firmware.cdr import Disposition
from services.media.wavfile import read_wav
from tests.browser.webui_env import ADMIN_PASSWORD, login, make_app
from tests.pbxproc import PbxProcess
from tests.phones.audio import tone_present
from tests.phones.pj import PjPhone
from webui.auth.accounts import AccountStore

pytestmark = pytest.mark.e2e
CALLER_HZ, CALLEE_HZ = 700, 1100


@pytest.fixture(scope="module")
def pbx(tmp_path_factory):
    proc = PbxProcess(tmp_path_factory.mktemp("pbx"), extensions=["1000", "1001"],
                      env={"PBX_RECORDING_RETENTION_EVERY": "1"})
    proc.start()
    yield proc
    proc.stop()


def recordings(pbx) -> list[Path]:
    return sorted((pbx.data / "recordings").glob("*/*.wav"))


def test_star_1_records_both_parties_until_star_1_again_and_the_page_shows_it_with_its_call(pbx, tmp_path):
    with PjPhone(user="1000", secret=pbx.secrets["1000"], registrar=pbx.registrar, tone_hz=CALLER_HZ,
                 record_dir=tmp_path) as a, \
            PjPhone(user="1001", secret=pbx.secrets["1001"], registrar=pbx.registrar, tone_hz=CALLEE_HZ,
                    record_dir=tmp_path) as b:
        assert a.register() == 200 and b.register() == 200
        b.auto_answer(200, after_ms=200)
        a.call(pbx.uri("1001"))
        a.wait_state("CONFIRMED", timeout=10)
        time.sleep(1.5)
        assert recordings(pbx) == []                 # record_calls is off: nothing yet
        a.send_dtmf("*1")
        time.sleep(4.0)
        a.send_dtmf("*1")
        time.sleep(3.0)                              # talking on, no longer recorded
        a.hangup()
        b.wait_state("DISCONNECTED", timeout=8)
    files = recordings(pbx)
    assert [f.name.rsplit("-", 1)[1] for f in files] == ["callee.wav", "caller.wav"]
    callee, caller = files
    for path, hz in ((caller, CALLER_HZ), (callee, CALLEE_HZ)):
        seconds = len(read_wav(path)) / 16000
        assert 2.5 < seconds < 5.5, f"{path.name}: {seconds:.1f} s, not the ~4 s between the two *1"
        assert tone_present(path, hz, start_s=0.5, end_s=-0.5)
    rec = pbx.wait_cdr(lambda r: r.src == "1000" and r.dst == "1001")
    assert rec.disposition is Disposition.ANSWERED
    assert {Path(leg["recording"]).name for leg in rec.legs if leg.get("recording")} == {caller.name, callee.name}

    AccountStore(pbx.data).create("admin", ADMIN_PASSWORD, "admin")
    client = make_app(pbx.data).test_client()
    assert login(client, "admin", ADMIN_PASSWORD).status_code == 302
    page = client.get("/recordings").text
    assert "1000 → 1001" in page and "answered" in page
    assert f"linkedid={rec.linkedid}" in page                  # the link to its call record
    key = f"{caller.parent.name}/{caller.name.rsplit('-', 1)[0]}"
    played = client.get("/recordings/file", query_string={"key": key, "side": "callee"})
    assert played.status_code == 200 and played.data == callee.read_bytes()
    download = client.get("/recordings/file", query_string={"key": key, "side": "caller", "download": "1"})
    assert "attachment" in download.headers["Content-Disposition"]


def test_the_call_service_deletes_recordings_past_the_retention_limit(pbx):
    old_day = pbx.data / "recordings" / "20200101"
    old_day.mkdir(parents=True)
    old = old_day / "20200101-090000-1000-1001-1-caller.wav"
    old.write_bytes(b"RIFF" + b"\0" * 40)
    ten_days_ago = time.time() - 10 * 86400
    os.utime(old, (ten_days_ago, ten_days_ago))
    time.sleep(2.5)
    assert old.exists()                          # no limit set: kept
    pbx.store.update_settings(recording_retention_days=7)
    deadline = time.monotonic() + 15
    while old.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not old.exists() and not old_day.exists()
    assert all(p.exists() for p in recordings(pbx))    # today's recordings stay
    assert "recording retention (7 days, 0% of the disk): deleted 1 file(s)" in pbx.log_path.read_text()
