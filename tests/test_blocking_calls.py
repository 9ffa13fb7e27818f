"""Call blocking end to end: a SIPp "carrier" calls in from blocked numbers and gets each entry's
answer; a pjsua2 phone answers a caller, dials *32 and that caller is refused next time; a phone
dialling a barred prefix hears the refusal."""

import pytest

from firmware.cdr import Disposition
from firmware.features.blocking import INBOUND, OUTBOUND, BlockedCaller, BlockedPrefix
from tests.pbxproc import PbxProcess
from tests.phones.pj import PjPhone
from tests.phones.sipp import Sipp, free_port

pytestmark = pytest.mark.e2e
CARRIER = "127.0.0.71"
DID = "441632960777"


@pytest.fixture(scope="module")
def pbx(tmp_path_factory):
    proc = PbxProcess(tmp_path_factory.mktemp("pbx"), extensions=["1000", "1001"],
                      settings={"no_answer_timeout": 15, "busy_tone_seconds": 1})
    carrier_port = free_port("udp", CARRIER)
    proc.store.add_trunk("carrier", f"{CARRIER}:{carrier_port}", "acct1", "Carrier-Pass-1", register=False)
    proc.store.add_outbound_route("national", "_0X.", "carrier")
    proc.store.add_inbound_route(DID, "extension:1001", name="main number")
    for match, action in (("07700900001", "reject"), ("07700900002", "busy"), ("0906*", "hangup"),
                          ("anonymous", "announcement")):
        proc.store.add_record(INBOUND, BlockedCaller(match, action))
    proc.store.add_record(OUTBOUND, BlockedPrefix("09", "Premium rate"))
    proc.start()
    yield proc
    proc.stop()


def carrier_call(pbx, tmp_path, caller):
    return Sipp("carrier_uac_blocked.xml", pbx.registrar, local_ip=CARRIER, service=DID, workdir=tmp_path,
                timeout=15, params={"caller": caller}).start().wait(25)


@pytest.mark.parametrize("caller,status", [("07700900001", 403), ("+447700900002", 486), ("09061234567", 603),
                                           ("anonymous", 403)])
def test_the_carrier_calling_from_a_blocked_number_gets_the_entrys_answer(pbx, tmp_path, caller, status):
    result = carrier_call(pbx, tmp_path, caller)
    assert result.ok, result.log_tail()
    assert result.responses.get(status) == 1, result.responses
    if caller == "anonymous":
        assert result.responses.get(183) == 1           # the announcement is early media
    rec = pbx.wait_cdr(lambda r: r.src == caller and r.dst == DID)
    assert rec.disposition is Disposition.FAILED and "blocked" in rec.cause
    assert "blocked by the entry" in pbx.log_path.read_text()


def test_star32_blocks_the_last_caller_who_is_then_refused(pbx, tmp_path):
    with PjPhone(user="1001", secret=pbx.secrets["1001"], registrar=pbx.registrar, tone_hz=1100,
                 record_dir=tmp_path) as b:
        assert b.register() == 200
        b.auto_answer(200, after_ms=200)
        uac = Sipp("carrier_uac_call.xml", pbx.registrar, local_ip=CARRIER, service=DID, workdir=tmp_path,
                   timeout=20, params={"caller": "07700900555", "talk_ms": 1000}).start()
        b.wait_incoming(timeout=8)
        assert uac.wait(20).ok
        b.wait_state("DISCONNECTED", timeout=5)
        b.call(pbx.uri("*32"))
        b.wait_state("CONFIRMED", timeout=5)                     # answered to say "blocked"
        b.wait_state("DISCONNECTED", timeout=15)
    entry = pbx.store.record(INBOUND, "07700900555")
    assert entry is not None and entry.action == "reject" and entry.note == "blocked by 1001 with *32"
    result = carrier_call(pbx, tmp_path, "07700900555")
    assert result.responses.get(403) == 1, result.responses


def test_a_phone_dialling_a_barred_premium_number_is_refused(pbx, tmp_path):
    with PjPhone(user="1000", secret=pbx.secrets["1000"], registrar=pbx.registrar, tone_hz=900,
                 record_dir=tmp_path) as a:
        assert a.register() == 200
        a.call(pbx.uri("09061234567"))
        a.wait_state("DISCONNECTED", timeout=15)
        assert a.last_status == 403
    rec = pbx.wait_cdr(lambda r: r.src == "1000" and r.dst == "09061234567")
    assert "prefix 09" in rec.cause
