"""The line gateway end to end: analog phones and a PSTN line on the board simulator (pty + ALSA
file plugin) become SIP phones of the real PBX (Kamailio edge + call service), and talk to pjsua2
phones. Audio is proven by tones: the analog side sends 600 Hz into its capture path, the SIP
phone plays 1100 Hz; each side must hear the other's tone.

Ports (as printed on the box): 1 = FXS, analog phone, extension 1050; 2 = FXO, a PSTN line whose
account is 1053 and whose calls ring 1052. Board numbering starts at 0 (sim.ports[0] is port 1).
"""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from firmware.cdr import Disposition
from firmware.config import ConfigStore, ValidationError
from firmware.dsp import detect
from firmware.dsp.tones import ToneGenerator, ToneSpec
from hw.lines import LineBoard
from hw.lines.gateway import GatewayRunner, LineGateway
from hw.lines.simulator import BoardSimulator
from tests.pbxproc import ROOT, PbxProcess
from tests.phones.audio import read_wav, tone_fraction, tone_present
from tests.phones.pj import PjPhone

pytestmark = pytest.mark.e2e

ANALOG_HZ, SIP_HZ = 600, 1100
PSTN_CALLER = "01632960123"
FXS_EXT, SIP_EXT, FXO_DEST, FXO_ACCOUNT, SERVICE_EXT = "1050", "1051", "1052", "1053", "1054"
TARGET_EXT, TARGET_HZ = "1055", 1400       # the third party of a flash-hook transfer
PSTN_NUMBER = "01632960999"                # what a phone dials out on the exchange line, after the 9


@pytest.fixture(scope="module")
def pbx(tmp_path_factory):
    proc = PbxProcess(tmp_path_factory.mktemp("linepbx"),
                      extensions=[FXS_EXT, SIP_EXT, FXO_DEST, FXO_ACCOUNT, SERVICE_EXT, TARGET_EXT],
                      settings={"busy_tone_seconds": 1, "no_answer_timeout": 20, "country": "uk"})
    proc.start()
    # Added after the start: `pbx run` would otherwise run a gateway of its own on a simulator.
    proc.store.add_line_port(1, "fxs", FXS_EXT, name="Reception analog")
    proc.store.add_line_port(2, "fxo", FXO_ACCOUNT, destination=FXO_DEST, name="BT line")
    # 9 then a number goes out on the exchange line (the call service INVITEs the FXO port's
    # account with X-PBX-Dial: <number>)
    proc.store.add_outbound_route("pstn", "_9X.", "line:2", strip=1)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def lines(pbx, tmp_path_factory):
    """Board simulator + driver + gateway, registered at the PBX's edge."""
    sim = BoardSimulator("fxs:1,fxo:1", directory=str(tmp_path_factory.mktemp("board")), country="uk").start()
    saved = os.environ.get("ALSA_CONFIG_PATH")
    os.environ["ALSA_CONFIG_PATH"] = sim.alsa_config_path
    board = LineBoard(sim.tty, country="uk", backoff=(0.05, 0.2)).start()
    runner = None
    try:
        assert board.wait_connected(5), "line board did not sync with the simulator"
        runner = GatewayRunner(LineGateway(ConfigStore(pbx.data), board, edge=pbx.registrar)).start()
        assert runner.wait_registered(5), f"ports did not register: {runner.status()}\n{pbx.log_tail()}"
        yield sim, runner
    finally:
        if runner is not None:
            runner.stop()
        board.close()
        sim.stop()
        if saved is None:
            os.environ.pop("ALSA_CONFIG_PATH", None)
        else:
            os.environ["ALSA_CONFIG_PATH"] = saved


def sip_phone(pbx, number, tmp_path, hz=SIP_HZ):
    p = PjPhone(user=number, secret=pbx.secrets[number], registrar=pbx.registrar, tone_hz=hz,
                record_dir=tmp_path)
    p.start()
    assert p.register() == 200
    return p


def sine(hz, seconds):
    return ToneGenerator(ToneSpec((hz,), level_dbm0=-10.0)).frame(int(8000 * seconds))


def heard_fraction(pcm, hz, skip_s=0.0):
    """Share of 50 ms frames of what the host played to a simulated port that carry hz."""
    pcm = pcm[int(skip_s * 16000):]
    frames = [pcm[i:i + 800] for i in range(0, len(pcm) - 799, 800)]
    return sum(detect.tone_present(f, hz) for f in frames) / max(1, len(frames))


def music_fraction(path, **window):
    """Share of the window in which the PBX's music on hold (any of its notes) is heard."""
    from firmware.dsp.tones import _HOLD_CHORDS
    notes = sorted({hz for chord in _HOLD_CHORDS for hz in chord})
    return max(tone_fraction(path, hz, min_snr_db=6, **window) for hz in notes)


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def line_state(runner, port):
    return next(p["state"] for p in runner.status() if p["port"] == port)


def test_line_ports_register_as_their_extensions_at_the_edge(pbx, lines):
    _, runner = lines
    assert [(p["port"], p["kind"], p["extension"], p["registered"]) for p in runner.status()] == [
        (1, "fxs", FXS_EXT, True), (2, "fxo", FXO_ACCOUNT, True)]
    aors = {r["aor"] for r in pbx.status()["registrations"]}
    assert {FXS_EXT, FXO_ACCOUNT} <= aors


def test_analog_phone_hears_dial_tone_dials_by_dtmf_and_talks_to_a_sip_phone(pbx, lines, tmp_path):
    sim, runner = lines
    analog = sim.ports[0]
    callee = sip_phone(pbx, SIP_EXT, tmp_path)
    try:
        callee.auto_answer(200, after_ms=500)
        analog.heard(clear=True)
        analog.off_hook()
        time.sleep(0.6)
        assert heard_fraction(analog.heard(), (350, 440), skip_s=0.15) > 0.8, "no dial tone after off-hook"
        analog.dial(SIP_EXT)                    # no '#': the 4 s inter-digit timeout ends dialling
        callee.wait_incoming(timeout=8)
        callee.wait_state("CONFIRMED", timeout=5)
        wait_for(lambda: line_state(runner, 1) == "talking", 3, "the FXS line to be talking")
        analog.heard(clear=True)
        analog.send_audio(sine(ANALOG_HZ, 3.0))
        time.sleep(3.0)
        assert heard_fraction(analog.heard(), SIP_HZ, skip_s=0.3) > 0.7, "analog phone did not hear the SIP phone"
        analog.on_hook()
        callee.wait_state("DISCONNECTED", timeout=5)
        assert tone_present(callee.recording_path, ANALOG_HZ, start_s=0.5), "SIP phone did not hear the analog phone"
    finally:
        callee.stop()
    rec = pbx.wait_cdr(lambda r: r.src == FXS_EXT and r.dst == SIP_EXT)
    assert rec.disposition is Disposition.ANSWERED and rec.legs[0]["hangup_by"] == "caller"
    wait_for(lambda: line_state(runner, 1) == "idle", 3, "the FXS line to be idle")


def test_analog_phone_hears_ringback_and_hanging_up_cancels_the_call(pbx, lines, tmp_path):
    sim, runner = lines
    analog = sim.ports[0]
    callee = sip_phone(pbx, SIP_EXT, tmp_path)
    try:
        analog.off_hook()
        analog.dial(SIP_EXT + "#")              # '#' ends dialling at once
        callee.wait_incoming(timeout=8)
        wait_for(lambda: line_state(runner, 1) == "calling", 3, "the FXS line to be calling")
        analog.heard(clear=True)
        time.sleep(1.2)
        # UK ringback 400+450 Hz, 0.4 on 0.2 off 0.4 on 2.0 off, generated on the 180
        assert heard_fraction(analog.heard(), (400, 450)) > 0.3, "no ringback while the SIP phone rings"
        analog.on_hook()
        callee.wait_state("DISCONNECTED", timeout=5)
    finally:
        callee.stop()
    rec = pbx.wait_cdr(lambda r: r.src == FXS_EXT and r.dst == SIP_EXT and r.disposition is Disposition.CANCELLED)
    assert rec.answer is None


def test_analog_phone_dialling_a_busy_extension_hears_busy_tone(pbx, lines, tmp_path):
    sim, runner = lines
    analog = sim.ports[0]
    callee = sip_phone(pbx, SIP_EXT, tmp_path)
    try:
        callee.auto_answer(486)
        analog.off_hook()
        analog.dial(SIP_EXT + "#")
        wait_for(lambda: line_state(runner, 1) == "released", 8, "the call to fail")
        analog.heard(clear=True)
        time.sleep(1.0)
        assert heard_fraction(analog.heard(), 400) > 0.3, "no busy tone after 486"
        analog.on_hook()
    finally:
        callee.stop()
    assert pbx.wait_cdr(lambda r: r.src == FXS_EXT and r.disposition is Disposition.BUSY)
    wait_for(lambda: line_state(runner, 1) == "idle", 3, "the FXS line to be idle")


def test_sip_phone_calls_the_analog_phone_which_rings_with_caller_id_and_answers(pbx, lines, tmp_path):
    sim, runner = lines
    analog = sim.ports[0]
    caller = sip_phone(pbx, SIP_EXT, tmp_path)
    try:
        analog.heard(clear=True)
        caller.call(pbx.uri(FXS_EXT))
        assert caller.wait_state("EARLY", timeout=5)["code"] == 180
        assert analog.wait_state("ringing", timeout=5)
        wait_for(lambda: analog.rings >= 1, 5, "the first ring")
        assert analog.caller_id().number == SIP_EXT             # UK: V.23 FSK before the first ring
        analog.off_hook()
        caller.wait_state("CONFIRMED", timeout=5)
        analog.heard(clear=True)
        analog.send_audio(sine(ANALOG_HZ, 3.0))
        time.sleep(3.0)
        assert heard_fraction(analog.heard(), SIP_HZ, skip_s=0.3) > 0.7, "analog phone did not hear the SIP phone"
        caller.hangup()                                           # the far end hangs up first
        caller.wait_state("DISCONNECTED", timeout=5)
        assert tone_present(caller.recording_path, ANALOG_HZ, start_s=0.5), "SIP phone did not hear the analog phone"
        wait_for(lambda: line_state(runner, 1) == "released", 3, "the gateway to see the BYE")
        analog.heard(clear=True)
        time.sleep(1.0)
        assert heard_fraction(analog.heard(), 400) > 0.3, "no busy tone after the far end hung up"
        analog.on_hook()
    finally:
        caller.stop()
    rec = pbx.wait_cdr(lambda r: r.src == SIP_EXT and r.dst == FXS_EXT)
    assert rec.disposition is Disposition.ANSWERED and rec.billsec >= 2
    wait_for(lambda: line_state(runner, 1) == "idle", 3, "the FXS line to be idle")


def test_caller_hanging_up_before_the_answer_stops_the_analog_phone_ringing(pbx, lines, tmp_path):
    sim, runner = lines
    analog = sim.ports[0]
    caller = sip_phone(pbx, SIP_EXT, tmp_path)
    try:
        caller.call(pbx.uri(FXS_EXT))
        wait_for(lambda: analog.rings >= 1 and analog.state == "ringing", 5, "the analog phone to ring")
        caller.hangup()
        caller.wait_state("DISCONNECTED", timeout=5)
        assert analog.wait_state("onhook", timeout=3), "still ringing after the caller left"
        rings = analog.rings
        time.sleep(1.0)
        assert analog.rings == rings
        assert line_state(runner, 1) == "idle"
    finally:
        caller.stop()
    assert pbx.wait_cdr(lambda r: r.src == SIP_EXT and r.dst == FXS_EXT and r.disposition is Disposition.CANCELLED)


def test_phone_hung_up_while_the_board_was_unplugged_ends_the_call_when_it_is_back(pbx, lines, tmp_path):
    sim, runner = lines
    analog = sim.ports[0]
    callee = sip_phone(pbx, SIP_EXT, tmp_path)
    try:
        callee.auto_answer(200)
        analog.off_hook()
        analog.dial(SIP_EXT + "#")
        callee.wait_incoming(timeout=8)
        callee.wait_state("CONFIRMED", timeout=5)
        sim.unplug()
        analog.on_hook()                        # nobody hears this HOOK event
        time.sleep(0.3)
        assert callee.events()[-1]["state"] == "CONFIRMED"
        sim.plug()                              # BOOT, then STATUS reports the phone on-hook
        callee.wait_state("DISCONNECTED", timeout=5)
        wait_for(lambda: line_state(runner, 1) == "idle", 3, "the FXS line to be idle")
    finally:
        callee.stop()


def test_pstn_call_on_the_fxo_line_rings_its_extension_showing_the_callers_number(pbx, lines, tmp_path):
    sim, runner = lines
    line = sim.ports[1]
    phone = sip_phone(pbx, FXO_DEST, tmp_path)
    try:
        line.incoming_call(PSTN_CALLER)
        incoming = phone.wait_incoming(timeout=8)
        assert PSTN_CALLER in incoming["from"]
        assert line.state == "ringing"                             # not seized before the answer
        phone.answer(200)
        phone.wait_state("CONFIRMED", timeout=5)
        assert line.wait_state("seized", timeout=3)
        line.heard(clear=True)
        line.send_audio(sine(ANALOG_HZ, 3.0))
        time.sleep(3.0)
        assert heard_fraction(line.heard(), SIP_HZ, skip_s=0.3) > 0.7, "the PSTN caller did not hear the phone"
        line.far_end_hangup("loop")
        phone.wait_state("DISCONNECTED", timeout=5)                # BYE from the gateway
        assert tone_present(phone.recording_path, ANALOG_HZ, start_s=0.5), "the phone did not hear the PSTN caller"
        assert line.wait_state("idle", timeout=3)                  # released
    finally:
        phone.stop()
    rec = pbx.wait_cdr(lambda r: r.src == FXO_ACCOUNT and r.dst == FXO_DEST)
    assert rec.disposition is Disposition.ANSWERED and rec.legs[0]["hangup_by"] == "caller"


def test_pstn_caller_giving_up_before_the_answer_cancels_the_ringing_extension(pbx, lines, tmp_path):
    sim, runner = lines
    line = sim.ports[1]
    phone = sip_phone(pbx, FXO_DEST, tmp_path)
    try:
        line.incoming_call(PSTN_CALLER, cadence=(300, 200))     # the exchange gives up after 10 rings (5 s)
        phone.wait_incoming(timeout=8)
        assert line.wait_state("idle", timeout=8)                # the caller has gone
        phone.wait_state("DISCONNECTED", timeout=9)              # no ring burst for 6 s: CANCEL
        assert line_state(runner, 2) == "idle"
    finally:
        phone.stop()
    rec = pbx.wait_cdr(lambda r: r.src == FXO_ACCOUNT and r.disposition is Disposition.CANCELLED)
    assert rec.answer is None


def test_line_service_runs_the_gateway_which_registers_and_unregisters_on_stop(pbx, tmp_path):
    """`python -m hw.lines.service` (what pbx-lines.service runs) with its own board and a copy
    of the PBX's config in which port 1 is extension 1054."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(pbx.data / "config.json", data / "config.json")
    store = ConfigStore(data)
    for route in store.outbound_routes():
        store.remove_outbound_route(route.name)
    for port in store.line_ports():
        store.remove_line_port(port.number)
    store.add_line_port(1, "fxs", SERVICE_EXT)
    with BoardSimulator("fxs:1", directory=str(tmp_path / "board")) as sim:
        env = dict(os.environ, ALSA_CONFIG_PATH=sim.alsa_config_path, PYTHONUNBUFFERED="1")
        env.pop("NOTIFY_SOCKET", None)
        log = open(tmp_path / "lines.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "hw.lines.service", "--data", str(data), "--port", sim.tty,
                                 "--sip-addr", pbx.addr, "--sip-port", str(pbx.sip_port)],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: SERVICE_EXT in {r["aor"] for r in pbx.status()["registrations"]}, 8,
                     "the service's port to register")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
            wait_for(lambda: SERVICE_EXT not in {r["aor"] for r in pbx.status()["registrations"]}, 3,
                     "the port to unregister")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            log.close()


def test_pbx_run_with_line_ports_and_no_board_runs_the_gateway_on_the_simulator(tmp_path):
    other = PbxProcess(tmp_path / "pbx", extensions=["1060"])
    other.store.add_line_port(1, "fxs", "1060")
    try:
        other.start()
        wait_for(lambda: "1060" in {r["aor"] for r in other.status()["registrations"]}, 10,
                 "the simulated analog phone's port to register")
        # the port's live state reaches `pbx status` (and the web UI's line ports page)
        wait_for(lambda: [(p["number"], p["state"]) for p in other.status()["lines"]] == [(1, "idle")], 10,
                 "port 1 reported idle in the status")
        children = child_pids(other.proc.pid)
        assert len(children) >= 3                       # Kamailio, simulator, line service (at least)
    finally:
        other.stop()
    assert not [pid for pid in children if os.path.exists(f"/proc/{pid}")], "children left running"
    assert not (tmp_path / "pbx" / "linesim" / "tty").exists()


def child_pids(pid):
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out += [int(p) for p in f.read().split()]
    return out


def test_line_port_config_names_the_bad_field_and_the_fix(tmp_path):
    store = ConfigStore(tmp_path)
    store.add_extension("2000", "Analog")
    store.add_extension("2001", "Line")
    store.add_line_port(1, "fxs", "2000")
    with pytest.raises(ValidationError, match="already line port 1's account"):
        store.add_line_port(2, "fxs", "2000")
    with pytest.raises(ValidationError, match="FXO line needs the extension its incoming calls ring"):
        store.add_line_port(2, "fxo", "2001")
    with pytest.raises(ValidationError, match="no extension 2999: create it first"):
        store.add_line_port(2, "fxo", "2001", destination="2999")
    with pytest.raises(ValidationError, match="'fxx' is not a port kind"):
        store.add_line_port(2, "fxx", "2001")
    with pytest.raises(ValidationError, match="used by line port"):
        store.remove_extension("2000")
    assert [p.number for p in store.line_ports()] == [1]


# --- in-call DTMF, flash-hook transfer, calls out on the exchange line (issue 8) -----------------

def analog_calls(sim, runner, callee, number=SIP_EXT):
    """The analog phone dials number, the SIP phone callee answers: the FXS line is talking."""
    analog = sim.ports[0]
    callee.auto_answer(200)
    analog.off_hook()
    analog.dial(number + "#")
    callee.wait_incoming(timeout=8)
    callee.wait_state("CONFIRMED", timeout=5)
    wait_for(lambda: line_state(runner, 1) == "talking", 3, "the FXS line to be talking")
    return analog


def test_digits_pressed_in_a_call_go_out_as_rfc4733_events_not_as_tones(pbx, lines, tmp_path):
    sim, runner = lines
    callee = sip_phone(pbx, SIP_EXT, tmp_path)
    try:
        analog = analog_calls(sim, runner, callee)
        time.sleep(0.5)
        analog.dial("159#", on_ms=120, off_ms=120)
        try:
            wait_for(lambda: callee.dtmf_received == "159#", 5, "RFC 4733 digits at the SIP phone")
        except AssertionError:
            raise AssertionError(f"the SIP phone got {callee.dtmf_received!r}; the port sent "
                                 f"{runner.status()[0].get('dtmf_sent')!r}") from None
        time.sleep(0.5)
        analog.on_hook()
        callee.wait_state("DISCONNECTED", timeout=5)
        # the in-band tones are cut out of the audio once recognised: the far end does not hear them
        # as well (it would see each digit twice if it listened to both)
        samples, rate = read_wav(callee.recording_path)
        in_call = samples[int(rate * 0.3):]             # after the tail of the # that ended dialling
        assert detect.detect_dtmf(in_call.astype("<i2").tobytes()) == ""
    finally:
        callee.stop()
    rec = pbx.wait_cdr(lambda r: r.src == FXS_EXT and r.dst == SIP_EXT and r.legs[0].get("dtmf"))
    assert rec.legs[0]["dtmf"] == "159#"
    wait_for(lambda: line_state(runner, 1) == "idle", 3, "the FXS line to be idle")


def test_flash_holds_the_call_with_music_gives_dial_tone_and_a_second_flash_returns(pbx, lines, tmp_path):
    sim, runner = lines
    callee = sip_phone(pbx, SIP_EXT, tmp_path)
    try:
        analog = analog_calls(sim, runner, callee)
        analog.send_audio(sine(ANALOG_HZ, 12.0))
        time.sleep(1.0)
        analog.flash()
        wait_for(lambda: line_state(runner, 1) == "held", 3, "the call to be on hold")
        t_hold = time.monotonic()
        analog.heard(clear=True)
        time.sleep(2.0)
        assert heard_fraction(analog.heard(), (350, 440), skip_s=0.2) > 0.8, "no dial tone after the flash"
        analog.flash()                                  # nothing dialled: back to the held call
        wait_for(lambda: line_state(runner, 1) == "talking", 3, "the call to be back")
        t_back = time.monotonic()
        analog.heard(clear=True)
        time.sleep(2.0)
        assert heard_fraction(analog.heard(), SIP_HZ, skip_s=0.3) > 0.7, "not back with the SIP phone"
        t_end = time.monotonic()
        analog.on_hook()
        analog.clear_audio()
        callee.wait_state("DISCONNECTED", timeout=5)
        path = callee.recording_path
        held = dict(start_s=-(t_end - t_hold - 0.5), end_s=-(t_end - t_back + 0.3))
        assert tone_fraction(path, ANALOG_HZ, **held) < 0.1, "the held party still heard the analog phone"
        assert music_fraction(path, **held) > 0.15, "the held party heard no music"
        assert tone_present(path, ANALOG_HZ, start_s=-1.5, end_s=-0.3), "the SIP phone did not get the call back"
    finally:
        callee.stop()
    wait_for(lambda: line_state(runner, 1) == "idle", 3, "the FXS line to be idle")


def test_flash_dial_and_hang_up_transfers_the_held_party_to_the_answered_target(pbx, lines, tmp_path):
    sim, runner = lines
    held = sip_phone(pbx, SIP_EXT, tmp_path)
    target = sip_phone(pbx, TARGET_EXT, tmp_path, hz=TARGET_HZ)
    try:
        analog = analog_calls(sim, runner, held)
        time.sleep(0.5)
        analog.flash()
        wait_for(lambda: line_state(runner, 1) == "held", 3, "the call to be on hold")
        target.auto_answer(200, after_ms=300)
        analog.dial(TARGET_EXT + "#")
        target.wait_incoming(timeout=8)
        target.wait_state("CONFIRMED", timeout=5)
        wait_for(lambda: line_state(runner, 1) == "consulting", 3, "the consultation call")
        analog.heard(clear=True)
        time.sleep(1.5)
        assert heard_fraction(analog.heard(), TARGET_HZ, skip_s=0.3) > 0.7, "the analog phone did not talk to C"
        analog.on_hook()                                # hanging up transfers (REFER with Replaces)
        wait_for(lambda: line_state(runner, 1) == "idle", 8, "the FXS line to be idle after the transfer")
        time.sleep(3.0)
        assert held.events()[-1]["state"] == "CONFIRMED" and target.events()[-1]["state"] == "CONFIRMED"
        held.hangup()
        held.wait_state("DISCONNECTED", timeout=5)
        target.wait_state("DISCONNECTED", timeout=5)
        assert tone_present(held.recording_path, TARGET_HZ, start_s=-2.0, end_s=-0.3), "B does not hear C"
        assert tone_present(target.recording_path, SIP_HZ, start_s=-2.0, end_s=-0.3), "C does not hear B"
    finally:
        held.stop()
        target.stop()


def test_analog_phone_calls_out_on_the_exchange_line_which_is_seized_dialled_and_answered(pbx, lines, tmp_path):
    sim, runner = lines
    line = sim.ports[1]
    caller = sip_phone(pbx, SIP_EXT, tmp_path)
    try:
        line.heard(clear=True)
        caller.call(pbx.uri("9" + PSTN_NUMBER))
        assert line.wait_state("seized", timeout=5), "the gateway did not seize the line"
        wait_for(lambda: line.dialled == PSTN_NUMBER, 10, f"the number on the line (got {line.dialled!r})")
        # after dialling the call counts as answered (no answer signal on a plain line)
        caller.wait_state("CONFIRMED", timeout=5)
        line.answer()
        line.heard(clear=True)
        line.send_audio(sine(ANALOG_HZ, 3.0))
        time.sleep(3.0)
        assert heard_fraction(line.heard(), SIP_HZ, skip_s=0.3) > 0.7, "the PSTN party did not hear the phone"
        caller.hangup()
        caller.wait_state("DISCONNECTED", timeout=5)
        assert tone_present(caller.recording_path, ANALOG_HZ, start_s=-2.5), "the phone did not hear the PSTN party"
        assert line.wait_state("idle", timeout=3), "the line was not released"
    finally:
        caller.stop()
    wait_for(lambda: line_state(runner, 2) == "idle", 3, "the FXO line to be idle")


def test_hanging_up_while_the_target_rings_is_a_blind_transfer(pbx, lines, tmp_path):
    sim, runner = lines
    held = sip_phone(pbx, SIP_EXT, tmp_path)
    target = sip_phone(pbx, TARGET_EXT, tmp_path, hz=TARGET_HZ)
    try:
        analog = analog_calls(sim, runner, held)
        analog.flash()
        wait_for(lambda: line_state(runner, 1) == "held", 3, "the call to be on hold")
        analog.dial(TARGET_EXT + "#")
        target.wait_incoming(timeout=8)                 # the consultation call rings
        wait_for(lambda: line_state(runner, 1) == "consult_calling", 3, "the consultation call to ring")
        target.auto_answer(200, after_ms=1000)
        analog.on_hook()                                # blind: REFER to 1055, CANCEL of the ringing call
        target.wait_incoming(timeout=8)                 # the PBX rings the target for the held party
        target.wait_state("CONFIRMED", timeout=5)
        wait_for(lambda: line_state(runner, 1) == "idle", 5, "the FXS line to be idle")
        time.sleep(2.5)
        held.hangup()
        held.wait_state("DISCONNECTED", timeout=5)
        target.wait_state("DISCONNECTED", timeout=5)
        assert tone_present(held.recording_path, TARGET_HZ, start_s=-2.0, end_s=-0.3), "B does not hear C"
        assert tone_present(target.recording_path, SIP_HZ, start_s=-2.0, end_s=-0.3), "C does not hear B"
    finally:
        held.stop()
        target.stop()


def test_hanging_up_on_a_held_call_rings_the_phone_back_and_answering_resumes_it(pbx, lines, tmp_path):
    sim, runner = lines
    callee = sip_phone(pbx, SIP_EXT, tmp_path)
    try:
        analog = analog_calls(sim, runner, callee)
        analog.flash()
        wait_for(lambda: line_state(runner, 1) == "held", 3, "the call to be on hold")
        analog.on_hook()
        assert analog.wait_state("ringing", timeout=3), "the phone was not rung back"
        assert callee.events()[-1]["state"] == "CONFIRMED"
        analog.off_hook()
        wait_for(lambda: line_state(runner, 1) == "talking", 3, "the held call to be back")
        analog.heard(clear=True)
        time.sleep(1.5)
        assert heard_fraction(analog.heard(), SIP_HZ, skip_s=0.3) > 0.7, "not back with the SIP phone"
        callee.send_dtmf("7")                           # RFC 4733 from the SIP phone: a tone on the line
        time.sleep(0.6)
        assert "7" in detect.detect_dtmf(analog.heard())
        analog.on_hook()
        callee.wait_state("DISCONNECTED", timeout=5)
    finally:
        callee.stop()
    wait_for(lambda: line_state(runner, 1) == "idle", 3, "the FXS line to be idle")


def test_a_line_with_answer_supervision_answers_the_call_out_on_polarity_reversal(pbx, lines, tmp_path):
    sim, runner = lines
    line = sim.ports[1]
    pbx.store.update_line_port(2, answer="reversal")
    caller = sip_phone(pbx, SIP_EXT, tmp_path)
    try:
        wait_for(lambda: fxo_answers_by(runner, "reversal"), 5, "the FXO port back in service with the change")
        caller.call(pbx.uri("9" + PSTN_NUMBER))
        assert line.wait_state("seized", timeout=5), "the gateway did not seize the line"
        wait_for(lambda: line.dialled == PSTN_NUMBER, 10, f"the number on the line (got {line.dialled!r})")
        time.sleep(3.5)                                # the exchange rings the number: early media
        assert caller.events()[-1]["state"] == "EARLY"
        line.heard(clear=True)
        t_answer = time.monotonic()
        line.answer(reversal=True)
        caller.wait_state("CONFIRMED", timeout=5)
        time.sleep(1.5)
        assert heard_fraction(line.heard(), SIP_HZ, skip_s=0.3) > 0.7, "the PSTN party did not hear the phone"
        caller.hangup()
        t_end = time.monotonic()
        caller.wait_state("DISCONNECTED", timeout=5)
        assert line.wait_state("idle", timeout=3), "the line was not released"
        # the caller heard the exchange's ringback before the answer (UK 400+450 Hz, 0.4 on 0.2 off
        # 0.4 on 2.0 off, from 2 s after the last digit)
        before = -(t_end - t_answer)
        assert tone_fraction(caller.recording_path, (400, 450), start_s=before - 1.4, end_s=before) > 0.25
    finally:
        caller.stop()
        pbx.store.update_line_port(2, answer="dialled")
        wait_for(lambda: fxo_answers_by(runner, "dialled"), 5, "the FXO port back as it was")


def fxo_answers_by(runner, how):
    line = runner.gateway.lines.get(2)
    return line is not None and line.cfg.answer == how and runner.wait_registered(1)


def test_a_stop_that_hangs_ends_the_line_service_within_the_limit():
    """SIGTERM starts a clean stop; one that hangs (an edge gone, a port that will not close) must
    still end the process, or `pbx run` killed with SIGKILL leaves it behind."""
    code = ("import threading, time\n"
            "from hw.lines.service import stopping\n"
            "stop = threading.Event()\n"
            "stopping(stop, 0.5)\n"
            "assert stop.is_set()\n"
            "stopping(stop, 0.5)  # a second signal arms nothing new\n"
            "time.sleep(30)  # the clean stop hanging\n")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 1, proc.stderr
    assert time.monotonic() - t0 < 10
    assert "did not stop within" in proc.stderr
