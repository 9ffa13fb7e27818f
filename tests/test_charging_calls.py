"""Call charging end to end: an extension calls a mobile out through a SIPp carrier, the call record
carries its cost at the carrier's rate; the running cost is in the status during the call; a spend
limit of 1p refuses the next call with the spoken reason, raises an alert and mails it."""

import dataclasses
import time
from decimal import Decimal

import numpy as np
import pytest

from firmware.cdr import Disposition
from firmware.features.charging import ASSIGNMENTS, LIMITS, RateAssignment, SpendLimit
from services import charging
from services.media.prompts import load_prompt
from tests.phones.audio import read_wav
from tests.phones.pj import PjPhone
from tests.phones.sipp import Sipp, free_port
from tests.pbxproc import PbxProcess

pytestmark = pytest.mark.e2e
CARRIER = "127.0.0.71"
# a dear carrier, so that a call of a few seconds is over a 1p limit: 0.60 a minute, per second
DEAR = """# sheet: dear-carrier
# currency: GBP
# country: GB
# decimals: 5
prefix,description,type,rate_per_min,connection,increment,minimum,offpeak_rate,weekend_rate,blocked
07,UK mobile,mobile,0.60,0,1/1,0,,,no
0800,Freephone,freephone,0,0,1/1,0,,,no
09,Premium,premium,1.50,0,60/60,0,,,yes
"""


@pytest.fixture(scope="module")
def carrier_port():
    return free_port("udp", CARRIER)


@pytest.fixture(scope="module")
def pbx(tmp_path_factory, carrier_port):
    proc = PbxProcess(tmp_path_factory.mktemp("pbx"), extensions=["1000", "1001"],
                      settings={"no_answer_timeout": 15, "busy_tone_seconds": 1, "timezone": "Europe/London"})
    proc.store.add_trunk("carrier", f"{CARRIER}:{carrier_port}", register=False)
    proc.store.add_outbound_route("mobiles", "_07X.", "carrier")
    proc.store.add_outbound_route("freephone", "_08X.", "carrier")
    proc.store.add_outbound_route("premium", "_09X.", "carrier")
    sheet = charging.SheetStore(proc.data).import_text(charging.EXAMPLE.read_bytes())
    assert sheet.version_id == "uk-example@1"
    proc.store.add_record(ASSIGNMENTS, RateAssignment("carrier", "uk-example"))
    proc.start()
    yield proc
    proc.stop()


def use_sheet(pbx, text: str, trunk: str = "carrier") -> str:
    """Give `trunk` the sheet in `text` (imported once per PBX); its version id. Each spec sets the
    state it needs itself: under xdist the specs of this module may run on different workers."""
    store = charging.SheetStore(pbx.data)
    name = text.split("# sheet:", 1)[1].split("\n", 1)[0].strip()
    sheet = store.load(name) or store.import_text(text)
    assignment = RateAssignment(trunk, sheet.name)
    if pbx.store.record(ASSIGNMENTS, trunk) is None:
        pbx.store.add_record(ASSIGNMENTS, assignment)
    else:
        pbx.store.replace_record(ASSIGNMENTS, assignment)
    return sheet.version_id


def set_limit(pbx, limit: SpendLimit) -> None:
    if pbx.store.record(LIMITS, limit.scope) is None:
        pbx.store.add_record(LIMITS, limit)
    else:
        pbx.store.replace_record(LIMITS, limit)


def carrier(carrier_port, tmp_path, calls=1):
    return Sipp("uas_answer.xml", local_ip=CARRIER, port=carrier_port, workdir=tmp_path, timeout=40,
                rtp_echo=True, calls=calls).start()


def call_for(pbx, phone, number, seconds, during=None):
    phone.call(pbx.uri(number))
    phone.wait_state("CONFIRMED", timeout=10)
    deadline = time.monotonic() + seconds
    if during is not None:
        during()
    time.sleep(max(0.0, deadline - time.monotonic()))
    phone.hangup()
    phone.wait_state("DISCONNECTED", timeout=5)


def test_a_call_to_a_mobile_is_charged_at_the_sheets_rate_and_its_running_cost_is_live(pbx, carrier_port, tmp_path):
    assert use_sheet(pbx, charging.EXAMPLE.read_text()) == "uk-example@1"
    if pbx.store.record(LIMITS, "1000") is not None:
        pbx.store.remove_record(LIMITS, "1000")
    uas = carrier(carrier_port, tmp_path)
    seen = {}

    def look_at_the_status():
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            calls = [c for c in pbx.status().get("calls", []) if c.get("trunk") == "carrier"]
            if calls and calls[0].get("cost") not in (None, "0.00000"):
                seen.update(calls[0])
                return
            time.sleep(0.2)

    with PjPhone(user="1000", secret=pbx.secrets["1000"], registrar=pbx.registrar, record_dir=tmp_path) as a:
        assert a.register() == 200
        call_for(pbx, a, "07700900123", 3.0, during=look_at_the_status)
    assert uas.wait(15).ok
    # during the call: one started minute of a mobile at 60/60 (0.55p)
    assert (seen.get("cost"), seen.get("currency"), seen.get("dest_type"), seen.get("external")) == \
        ("0.00550", "GBP", "mobile", "07700900123"), seen
    rec = pbx.wait_cdr(lambda r: r.dst == "07700900123" and r.cost is not None)
    assert rec.disposition is Disposition.ANSWERED and 2 <= rec.billsec <= 5
    assert (rec.cost, rec.currency, rec.rate, rec.dest_type, rec.sheet_version) == \
        (Decimal("0.00550"), "GBP", "0.0055", "mobile", "uk-example@1")


def _similarity(recording, prompt_pcm: bytes, chunk: int = 2000) -> float:
    """How surely the phone heard this prompt: the prompt in quarter-second pieces, each matched
    (normalised cross-correlation) wherever it fits best in what the phone recorded; the median
    over the voiced pieces. G.711 keeps the waveform (1.0 when heard intact), pieces tolerate the
    gaps jitter leaves under load; another prompt or a tone scores about 0.3."""
    heard, _ = read_wav(recording)
    heard = np.asarray(heard, dtype=np.float64)
    ref = np.frombuffer(prompt_pcm, dtype="<i2").astype(np.float64)
    if len(heard) < chunk:
        return 0.0
    n = 1 << int(np.ceil(np.log2(len(heard) + chunk)))
    spectrum = np.fft.rfft(heard, n)
    energy = np.concatenate([[0.0], np.cumsum(heard ** 2)])
    window = np.sqrt(np.maximum(energy[chunk:] - energy[:-chunk], 1e-9))
    loud = np.sqrt((ref ** 2).mean())
    scores = []
    for i in range(0, len(ref) - chunk + 1, chunk):
        piece = ref[i:i + chunk]
        if np.sqrt((piece ** 2).mean()) < 0.1 * loud:
            continue                                   # a pause between words matches anything quiet
        corr = np.fft.irfft(spectrum * np.conj(np.fft.rfft(piece, n)), n)[:len(window)]
        scores.append(float((corr / (window * np.linalg.norm(piece))).max()))
    return float(np.median(scores)) if scores else 0.0


def test_a_1p_limit_refuses_the_second_call_with_the_spoken_reason_an_alert_and_a_mail(pbx, carrier_port, tmp_path):
    version = use_sheet(pbx, DEAR)
    set_limit(pbx, SpendLimit("1001", per_day="0.01", email="boss@example.com"))
    uas = carrier(carrier_port, tmp_path)
    with PjPhone(user="1001", secret=pbx.secrets["1001"], registrar=pbx.registrar, record_dir=tmp_path) as b:
        assert b.register() == 200
        time.sleep(1.0)                       # the call service sees the new config on its next look
        call_for(pbx, b, "07700900555", 2.5)
        first = pbx.wait_cdr(lambda r: r.dst == "07700900555" and r.cost is not None)
        assert first.cost == Decimal("0.01") * first.billsec > Decimal("0.01")    # 1p a second, over the limit
        assert first.sheet_version == version == "dear-carrier@1"
        # the second call: refused before it reaches the carrier, with the prompt as early media
        b.call(pbx.uri("07700900556"))
        b.wait_state("DISCONNECTED", timeout=15)
        assert b.last_status == 403
        heard = _similarity(b.recording_path, load_prompt("call_limit_reached"))
        other = max(_similarity(b.recording_path, load_prompt(p)) for p in ("number_barred", "not_found"))
        assert heard > 0.7 and heard > other + 0.2, (heard, other)
    assert uas.wait(15).ok                     # the carrier saw one call only (calls=1)
    refused = pbx.wait_cdr(lambda r: r.dst == "07700900556")
    assert refused.disposition is Disposition.FAILED and "call limit reached" in refused.cause
    assert "extension 1001 spent" in refused.cause and (refused.cost or 0) == 0
    alerts = charging.alerts(pbx.data)
    assert alerts and alerts[0]["kind"] == "limit" and "1001 called 07700900556" in alerts[0]["text"]
    from services.mailer import outbox
    mails = [m for m in outbox.messages(pbx.data) if m["ref"] == "charging-alert"]
    assert len(mails) == 1 and "Call limit reached" in mails[0]["subject"] and mails[0]["to"] == ["boss@example.com"]


def test_the_sheet_bars_premium_numbers_with_their_own_prompt(pbx, tmp_path):
    version = use_sheet(pbx, charging.EXAMPLE.read_text())
    with PjPhone(user="1000", secret=pbx.secrets["1000"], registrar=pbx.registrar, record_dir=tmp_path) as a:
        assert a.register() == 200
        a.call(pbx.uri("09011234567"))
        a.wait_state("DISCONNECTED", timeout=15)
        assert a.last_status == 403
        assert _similarity(a.recording_path, load_prompt("number_barred")) > 0.7
    rec = pbx.wait_cdr(lambda r: r.dst == "09011234567")
    assert f"calls to UK premium rate (09) (+449) are barred by rate sheet {version}" in rec.cause


def test_calls_in_progress_count_towards_the_limit(pbx, carrier_port, tmp_path):
    # 2p a day, and a call in progress at 1p a second (1000 may have spent 0.55p in the first spec)
    use_sheet(pbx, DEAR)
    set_limit(pbx, SpendLimit("1000", per_day="0.02"))
    uas = carrier(carrier_port, tmp_path)
    with PjPhone(user="1000", secret=pbx.secrets["1000"], registrar=pbx.registrar, record_dir=tmp_path) as a:
        assert a.register() == 200
        time.sleep(1.0)
        a.call(pbx.uri("07700900777"))
        a.wait_state("CONFIRMED", timeout=10)
        first = a.current_call
        time.sleep(3.0)                     # 3p so far: over the limit while still talking
        a.call(pbx.uri("07700900778"))
        a.wait_state("DISCONNECTED", timeout=15)
        assert a.last_status == 403
        a.hangup(call=first)
        a.wait_state("DISCONNECTED", timeout=5, call=first)
    assert uas.wait(15).ok
    refused = pbx.wait_cdr(lambda r: r.dst == "07700900778")
    assert "call limit reached: extension 1000 spent" in refused.cause


def test_rerate_after_a_sheet_change_rates_the_history_again(pbx):
    from firmware.cdr import CallRecord, CdrStore
    from firmware.rating import parse_sheet
    now = time.time()
    dear = dataclasses.replace(parse_sheet(DEAR), version=1)
    row = charging.rate_record(CallRecord("rerate-1", "1000", "07700900999", now - 70, now - 60, now, Disposition.ANSWERED,
                                          src_kind="extension", dst_kind="trunk", dst_trunk="carrier",
                                          external_number="07700900999"), {"carrier": dear}, charging.zone(pbx.store.settings()))
    assert row.cost == Decimal("0.60000")
    with CdrStore(pbx.data) as cdr:
        cdr.write(row)
    version = use_sheet(pbx, charging.EXAMPLE.read_text())
    rows, before, after = charging.rerate(pbx.data, now - 3600)
    assert rows >= 1 and after < before
    with CdrStore(pbx.data) as cdr:
        again = cdr.query(linkedid="rerate-1")[0]
    assert (again.cost, again.sheet_version, again.rate) == (Decimal("0.00550"), version, "0.0055")
