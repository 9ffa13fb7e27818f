"""BLF lamps of extensions end to end: a watcher subscribed to an extension's dialog state (at the
Kamailio edge) sees it ring (early, naming the caller), answer (confirmed) and hang up
(terminated); from a flashing lamp, **NUM picks the ringing call up."""
import re
import time

import pytest

from tests.pbxproc import PbxProcess
from tests.phones.audio import tone_present
from tests.phones.pj import PjPhone
from tests.phones.raw import RawPhone

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pbx(tmp_path_factory):
    proc = PbxProcess(tmp_path_factory.mktemp("pbx"), extensions=[str(n) for n in range(1000, 1010)],
                      settings={"no_answer_timeout": 20, "busy_tone_seconds": 1})
    proc.start()
    yield proc
    proc.stop()


def phone(pbx, number, tmp_path, hz):
    return PjPhone(user=number, secret=pbx.secrets[number], registrar=pbx.registrar, tone_hz=hz, record_dir=tmp_path)


def state(body: str) -> str:
    for s in ("confirmed", "early"):
        if f"<state>{s}</state>" in body:
            return s
    return "terminated"


@pytest.fixture
def watcher(pbx):
    w = RawPhone("1009", pbx.secrets["1009"], pbx.registrar)
    assert w.register() == 200
    yield w
    w.close()


def test_a_watcher_sees_an_extension_ring_answer_and_hang_up(pbx, tmp_path, watcher):
    status, lamp = watcher.subscribe("1001", "dialog")
    assert status in (200, 202)
    first = watcher.next_notify(lamp)
    assert first is not None and state(first.body) == "terminated"
    with phone(pbx, "1000", tmp_path, 700) as a, phone(pbx, "1001", tmp_path, 1100) as b:
        assert a.register() == 200 and b.register() == 200
        b.auto_answer(200, after_ms=1500)
        a.call(pbx.uri("1001"))
        ringing = watcher.next_notify(lamp, match=lambda body: state(body) == "early")
        assert ringing is not None and "<identity>sip:1000@" in ringing.body    # who is calling
        assert '<target uri="sip:**1001@' in ringing.body       # a BLF key dials the directed pickup
        assert watcher.next_notify(lamp, match=lambda body: state(body) == "confirmed") is not None
        a.wait_state("CONFIRMED", timeout=5)
        time.sleep(0.5)
        a.hangup()
        b.wait_state("DISCONNECTED", timeout=5)
        assert watcher.next_notify(lamp, match=lambda body: state(body) == "terminated") is not None


def test_from_a_flashing_lamp_star_star_num_picks_the_call_up(pbx, tmp_path, watcher):
    status, lamp = watcher.subscribe("1003", "dialog")
    assert status in (200, 202)
    with phone(pbx, "1002", tmp_path, 700) as a, phone(pbx, "1003", tmp_path, 1100) as b, \
            phone(pbx, "1004", tmp_path, 1500) as c:
        for p in (a, b, c):
            assert p.register() == 200
        a.call(pbx.uri("1003"))
        b.wait_incoming(timeout=5)
        flashing = watcher.next_notify(lamp, match=lambda body: state(body) == "early")
        assert flashing is not None
        # the key dials the dialog's remote target, as Yealink and Snom phones do: **1003
        dialled = re.search(r'<remote>.*?<target uri="sip:([^@"]+)@', flashing.body, re.S).group(1)
        assert dialled == "**1003"
        c.call(pbx.uri(dialled))
        c.wait_state("CONFIRMED", timeout=8)
        b.wait_state("DISCONNECTED", timeout=5)           # no longer ringing: picked up elsewhere
        a.wait_state("CONFIRMED", timeout=5)
        time.sleep(1.5)
        a.hangup()
        c.wait_state("DISCONNECTED", timeout=5)
        assert tone_present(c.recording_path, 700, start_s=0.5)
        assert tone_present(a.recording_path, 1500, start_s=-1.2, end_s=-0.2)
        assert watcher.next_notify(lamp, match=lambda body: state(body) == "terminated") is not None
