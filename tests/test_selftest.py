"""The echo test (*43) and the box's self-test call (services/selftest.py) against `pbx run`.

A pjsua2 phone dials *43 and hears its own tone back after the prompt, and # ends the call; the
self-test call (what pbx-update-check places before an updated slot is blessed, and
`pbx update selftest`) passes against the running PBX, and fails naming the step when the
extension's secret is wrong or the edge does not answer.
"""
import subprocess
import sys
import time

import pytest

from services import update
from services.selftest import SelfTestError, echo_call, pick_extension
from tests.pbxproc import ROOT, PbxProcess, free_port
from tests.phones.audio import tone_present
from tests.phones.pj import PjPhone

pytestmark = pytest.mark.e2e
TONE_HZ = 900


@pytest.fixture(scope="module")
def pbx(tmp_path_factory):
    proc = PbxProcess(tmp_path_factory.mktemp("pbx"), extensions=["1001", "1000"])
    proc.start()
    yield proc
    proc.stop()


def test_star43_echo_test_plays_the_phones_own_audio_back_and_hash_ends_it(pbx, tmp_path):
    with PjPhone(user="1000", secret=pbx.secrets["1000"], registrar=pbx.registrar, tone_hz=TONE_HZ,
                 record_dir=tmp_path) as phone:
        assert phone.register() == 200
        phone.call(pbx.uri("*43"))
        phone.wait_state("CONFIRMED", timeout=10)
        time.sleep(7.0)                         # the ~4 s prompt, then 3 s of echo
        phone.send_dtmf("#")
        phone.wait_state("DISCONNECTED", timeout=8)   # the PBX hangs up on #
        heard = phone.recording_path
    # the phone sends only its 900 Hz tone: hearing it is hearing itself
    assert tone_present(heard, TONE_HZ, start_s=-2.5, end_s=-0.5)
    assert not tone_present(heard, TONE_HZ, start_s=0.5, end_s=3.0)   # the prompt is not an echo
    rec = pbx.wait_cdr(lambda r: r.src == "1000" and r.dst == "*43")
    assert rec.disposition.value == "ANSWERED" and rec.end - rec.answer > 5


def test_the_self_test_call_passes_against_the_running_pbx_as_the_lowest_extension(pbx):
    assert pick_extension(pbx.data) == ("1000", pbx.secrets["1000"])
    result = echo_call(pbx.addr, pbx.sip_port, "1000", pbx.secrets["1000"])
    assert result.echoed >= 10 and result.bye == 200
    assert result.setup_ms < 2000 and 2000 < result.echo_ms < 10000     # after the spoken prompt
    cli = subprocess.run([sys.executable, "-m", "services.cli", "update", "selftest", "--data", str(pbx.data),
                          "--sip", f"{pbx.addr}:{pbx.sip_port}"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert "echo call as 1000: answered in" in cli.stdout and "BYE 200" in cli.stdout


def test_the_self_test_call_fails_naming_the_step(pbx, tmp_path):
    with pytest.raises(SelfTestError, match="answered the echo test call as 1001 with 40[17]"):
        echo_call(pbx.addr, pbx.sip_port, "1001", "not-the-secret-of-1001")
    with pytest.raises(SelfTestError, match="nothing answers SIP at 127.0.0.1:"):
        echo_call("127.0.0.1", free_port(), "1000", pbx.secrets["1000"])
    # the update check: a box with no extension yet passes on SIP OPTIONS alone, and says so; it
    # reads the configuration without writing into the data directory (it runs as root)
    before = sorted(p.name for p in pbx.data.iterdir())
    assert "no extension yet" in update.selftest_call(pbx.addr, pbx.sip_port, tmp_path, time.monotonic())
    line = update.selftest_call(pbx.addr, pbx.sip_port, pbx.data, time.monotonic() + 30)
    assert line.startswith("echo call as 1000")
    assert sorted(p.name for p in pbx.data.iterdir()) == before
    assert list(tmp_path.iterdir()) == []
