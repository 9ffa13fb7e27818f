"""Time conditions end to end: a SIPp carrier calls a DID whose inbound route is a time condition;
the pjsua2 phone of the open or the closed destination rings by the box's clock, a closure for
today closes it, and night mode (toggle 1, *33's) forces it closed."""

import contextlib
import datetime
import time
from zoneinfo import ZoneInfo

import pytest

from firmware.features.timeconditions import TABLE, TimeCondition
from tests.pbxproc import PbxProcess
from tests.phones.pj import PjPhone
from tests.phones.sipp import Sipp, free_port

pytestmark = pytest.mark.e2e
CARRIER = "127.0.0.73"
DID = "441632960555"
ZONE = "Europe/London"


@pytest.fixture(scope="module")
def pbx(tmp_path_factory):
    proc = PbxProcess(tmp_path_factory.mktemp("pbx"), extensions=["1000", "1001"],
                      settings={"no_answer_timeout": 15, "busy_tone_seconds": 1, "timezone": ZONE})
    proc.store.add_trunk("carrier", f"{CARRIER}:{free_port('udp', CARRIER)}", register=False)
    proc.store.add_record(TABLE, TimeCondition("1", "Office", "extension:1000", "extension:1001",
                                               hours=("mon-sun 00:00-24:00",), toggle="1"))
    proc.store.add_inbound_route(DID, "timecondition:1")
    proc.start()
    yield proc
    proc.stop()


def rings(pbx, tmp_path):
    """Call the DID from the carrier; which of 1000 (open) and 1001 (closed) rings."""
    with contextlib.ExitStack() as stack:
        phones = {n: stack.enter_context(PjPhone(user=n, secret=pbx.secrets[n], registrar=pbx.registrar,
                                                 tone_hz=900, record_dir=tmp_path)) for n in ("1000", "1001")}
        for p in phones.values():
            assert p.register() == 200
            p.auto_answer(200, after_ms=100)
        uac = Sipp("carrier_uac_call.xml", pbx.registrar, local_ip=CARRIER, service=DID, workdir=tmp_path,
                   timeout=20, params={"caller": "07700900555", "talk_ms": 300}).start()
        assert uac.wait(20).ok
        return [n for n, p in phones.items() if any(e.get("event") == "incoming" for e in p._events)]


def test_open_by_the_schedule_then_closed_for_a_closure_today_then_by_night_mode(pbx, tmp_path):
    assert rings(pbx, tmp_path / "open") == ["1000"]
    today = datetime.datetime.now(ZoneInfo(ZONE)).date().isoformat()
    pbx.store.update_record(TABLE, "1", special=(f"{today} closed staff training",))
    time.sleep(1.0)                                        # the call service reads the new config
    assert rings(pbx, tmp_path / "closure") == ["1001"]
    pbx.store.update_record(TABLE, "1", special=())
    time.sleep(1.0)
    assert rings(pbx, tmp_path / "open-again") == ["1000"]
    pbx.store.update_settings(mode="night")
    time.sleep(1.0)
    assert rings(pbx, tmp_path / "night") == ["1001"]
