"""The analog line board: protocol framing, the serial driver against the pty simulator, per-port
ALSA audio through the ALSA file plugin (no mocks), caller ID, DTMF and disconnect supervision."""
import os
import threading
import time

import pytest

from firmware.dsp.callerid import CallerId, CallerIdError
from hw.lines import LineAudio, LineAudioError, LineBoard, LineBoardError
from hw.lines.protocol import Frame, FrameDecoder, crc8, encode
from hw.lines.simulator import BoardSimulator, SimulatorError, _script

ACME = CallerId(number="01632960123", name="ACME LTD", when="11251430")


class Events:
    """Collects board events (name, port number, value) and waits for one to show up."""

    def __init__(self, board):
        self.seen = []
        self._cond = threading.Condition()
        for name in ("off_hook", "on_hook", "flash", "ring_start", "ring_stop", "digit", "caller_id",
                     "disconnect", "polarity_reversal"):
            setattr(board, f"when_{name}", self._handler(name))

    def _handler(self, name):
        def record(port, *args):
            with self._cond:
                self.seen.append((name, port.number, *args))
                self._cond.notify_all()
        return record

    def wait(self, predicate, timeout=3.0):
        with self._cond:
            return self._cond.wait_for(lambda: any(predicate(e) for e in self.seen), timeout)

    def digits(self, port):
        return "".join(e[2] for e in self.seen if e[0] == "digit" and e[1] == port)


@pytest.fixture
def sim(tmp_path, monkeypatch):
    simulator = BoardSimulator("fxs:2,fxo:1", directory=str(tmp_path / "board"), country="uk").start()
    monkeypatch.setenv("ALSA_CONFIG_PATH", simulator.alsa_config_path)
    yield simulator
    simulator.stop()


@pytest.fixture
def board(sim):
    b = LineBoard(sim.tty, country="uk", backoff=(0.05, 0.2)).start()
    assert b.wait_connected(3), "board did not sync with the simulator"
    yield b
    b.close()


# --- protocol ---------------------------------------------------------------------------------

def test_frame_is_seq_command_args_and_crc8():
    assert encode(7, "HOOK", 0, "off") == b"$7,HOOK,0,off*%02X\n" % crc8(b"7,HOOK,0,off")
    assert crc8(b"123456789") == 0xF4                   # CRC-8/SMBUS check value
    with pytest.raises(ValueError, match="reserved character"):
        encode(1, "CID", "a,b")


def test_decoder_skips_garbage_and_bad_checksums_and_resyncs_at_newline():
    good = encode(1, "HOOK", 0, "off")
    corrupt = bytearray(encode(2, "HOOK", 1, "off"))
    corrupt[6] ^= 0x20
    stream = b"\x00\xffnoise\n" + bytes(corrupt) + b"x" * 500 + b"\n" + b"zz$junk" + good + encode(3, "PING")
    decoder = FrameDecoder()
    frames = []
    for i in range(0, len(stream), 7):                  # bytes arrive in arbitrary chunks
        frames += decoder.feed(stream[i:i + 7])
    assert frames == [Frame(1, "HOOK", ("0", "off")), Frame(3, "PING")]
    assert decoder.garbage >= 3


# --- control ----------------------------------------------------------------------------------

def test_board_reports_ports_and_states_after_hello(board):
    assert (board.model, board.firmware) == ("SIM-LINE", "1.0")
    assert [(p.number, p.kind, p.state) for p in board.ports.values()] == [
        (0, "fxs", "onhook"), (1, "fxs", "onhook"), (2, "fxo", "idle")]
    assert board.ping() < 0.5


def test_phone_off_hook_dialing_dtmf_flash_and_hang_up_reach_the_port(board, sim):
    events = Events(board)
    board.ports[0].open_audio()
    phone = sim.ports[0]
    phone.off_hook()
    phone.dial("201#")
    assert events.wait(lambda e: e[0] == "digit" and e[2] == "#")
    phone.flash()
    phone.on_hook()
    assert events.wait(lambda e: e[0] == "on_hook")
    assert events.digits(0) == "201#"
    assert [e[0] for e in events.seen if e[0] != "digit"] == ["off_hook", "flash", "on_hook"]
    assert board.ports[0].state == "onhook"


def test_fxs_port_rings_with_uk_caller_id_before_the_first_ring(board, sim):
    events = Events(board)
    board.ports[1].ring(cadence=(300, 600), callerid=ACME)
    assert events.wait(lambda e: e[0] == "ring_start" and e[1] == 1)
    phone = sim.ports[1]
    assert phone.polarity == "reverse"
    assert phone.caller_id() == ACME                    # what a CID phone would show
    sim.ports[1].off_hook()                             # ring trip
    assert events.wait(lambda e: e[0] == "off_hook" and e[1] == 1)
    rings = phone.rings
    time.sleep(0.4)
    assert phone.rings == rings and phone.state == "offhook"
    assert phone.polarity == "normal"                   # restored once the ringing ended


def test_us_caller_id_goes_between_first_and_second_ring(tmp_path, monkeypatch):
    with BoardSimulator("fxs:1", directory=str(tmp_path / "us"), country="us") as us_sim:
        monkeypatch.setenv("ALSA_CONFIG_PATH", us_sim.alsa_config_path)
        with LineBoard(us_sim.tty, country="us") as us_board:
            assert us_board.wait_connected(3)
            events = Events(us_board)
            us_board.ports[0].ring(cadence=(300, 1500), callerid=ACME)
            assert events.wait(lambda e: e[0] == "ring_stop", timeout=2)
            assert not us_sim.ports[0].heard()          # nothing before the first ring ends
            # the whole FSK burst (seizure, marks, message) lasts ~0.6 s after the first ring:
            # decode as it arrives instead of guessing how much audio is enough
            deadline = time.monotonic() + 3
            cid = None
            while cid is None and time.monotonic() < deadline:
                try:
                    cid = us_sim.ports[0].caller_id("bell202")
                except CallerIdError:
                    time.sleep(0.05)
            assert cid == ACME
            us_board.ports[0].stop_ring()


def test_fxo_incoming_call_shows_caller_id_and_seizing_stops_ringing(board, sim):
    events = Events(board)
    board.ports[2].open_audio()
    sim.ports[2].incoming_call("01632960999", "BOB", cadence=(300, 200, 300, 1000))
    assert events.wait(lambda e: e[0] == "caller_id", timeout=4)
    cid = next(e[2] for e in events.seen if e[0] == "caller_id")
    assert (cid.number, cid.name) == ("01632960999", "BOB")
    assert ("polarity_reversal", 2) in events.seen
    assert events.wait(lambda e: e[0] == "ring_start" and e[1] == 2)
    board.ports[2].seize()
    assert sim.ports[2].state == "seized"
    count = sum(e[0] == "ring_start" for e in events.seen)
    time.sleep(0.8)
    assert sum(e[0] == "ring_start" for e in events.seen) == count


def test_fxo_far_end_disconnect_by_loop_current_drop_and_by_busy_tone(board, sim):
    events = Events(board)
    line = board.ports[2]
    line.open_audio()
    line.seize()
    sim.ports[2].far_end_hangup("loop")
    assert events.wait(lambda e: e == ("disconnect", 2, "loop"))
    sim.ports[2].far_end_hangup("busy")                 # UK busy: 400 Hz 0.375 s on/off
    assert events.wait(lambda e: e == ("disconnect", 2, "busy"), timeout=4)
    line.release()
    assert sim.ports[2].state == "idle"


def test_refused_commands_raise_with_the_board_reason(board):
    with pytest.raises(ValueError, match="FXO port: cannot ring"):
        board.ports[2].ring()
    with pytest.raises(LineBoardError, match="wrongkind"):
        board.command("SEIZE", 0)
    with pytest.raises(LineBoardError, match="badport"):
        board.command("RING", 9, "400-200")
    with pytest.raises(LineBoardError, match="badarg"):
        board.command("RING", 0, "400")


# --- bad input and a vanishing board ----------------------------------------------------------

def test_garbage_on_the_line_is_skipped_and_events_still_arrive(board, sim):
    events = Events(board)
    sim.send_raw(b"\x00\xff\xfe garbage\r\n$1,HOOK,0,off*00\n" + b"#" * 300 + b"\n")
    sim.ports[0].off_hook()
    assert events.wait(lambda e: e == ("off_hook", 0))
    assert board.garbage >= 2 and board.connected


def test_unplugged_board_is_retried_with_backoff_and_resyncs(board, sim):
    gone, back = threading.Event(), threading.Event()
    board.when_disconnected = lambda b: gone.set()
    board.when_connected = lambda b: back.set()
    attempts = board.attempts
    sim.unplug()
    assert gone.wait(3)
    with pytest.raises(LineBoardError, match="not connected"):
        board.command("PING")
    time.sleep(0.5)
    sim.plug()
    assert back.wait(5)
    assert board.attempts > attempts + 1
    events = Events(board)
    sim.ports[0].off_hook()
    assert events.wait(lambda e: e == ("off_hook", 0))


def test_missing_serial_port_is_logged_and_retried_a_bounded_number_of_times(tmp_path, caplog):
    board = LineBoard(str(tmp_path / "no-such-tty"), backoff=(0.01, 0.02), max_attempts=3).start()
    board._reader.join(timeout=3)
    board.close()
    assert board.attempts == 3 and not board.connected
    assert "no-such-tty unavailable" in caplog.text and "giving up after 3 attempts" in caplog.text


def test_a_stream_of_garbage_makes_the_driver_reconnect(sim, caplog):
    stop = threading.Event()

    def babble():
        while not stop.is_set():
            sim.send_raw(b"\x55\xaa noise at the wrong baud rate\n")
            time.sleep(0.005)

    with LineBoard(sim.tty, backoff=(0.05, 0.1)) as board:
        assert board.wait_connected(3)
        thread = threading.Thread(target=babble)
        thread.start()
        try:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and "sends garbage" not in caplog.text:
                time.sleep(0.05)
        finally:
            stop.set()
            thread.join()
        assert "sends garbage" in caplog.text
        assert board.wait_connected(3)


# --- audio ------------------------------------------------------------------------------------

def test_line_audio_carries_20ms_frames_both_ways_through_alsa(sim):
    with LineAudio(sim.device(0)) as audio:
        sim.ports[0].send_audio(b"\x01\x02" * 160 * 3)
        frames = [audio.read() for _ in range(6)]
        assert all(len(f) == 320 for f in frames)
        assert b"\x01\x02" * 160 in frames
        audio.write(b"\x05\x00" * 800)                  # 100 ms
        audio.write(bytes(320 * 5))                     # push it out of the card's buffer
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and b"\x05\x00" * 800 not in sim.ports[0].heard():
        time.sleep(0.02)
    assert b"\x05\x00" * 800 in sim.ports[0].heard()


def test_missing_alsa_device_is_a_clear_error_naming_it(sim):
    with pytest.raises(LineAudioError, match="'line7'.*arecord -L"):
        LineAudio("line7")


def test_simulator_script_commands_and_states():
    with BoardSimulator("fxs:1,fxo:1") as s:
        assert _script(s, "status") == "0:fxs:onhook 1:fxo:idle"
        assert _script(s, "offhook 0") == "ok"
        assert _script(s, "call 0").startswith("error")
        with pytest.raises(SimulatorError, match="already off-hook"):
            s.ports[0].off_hook()
        assert os.path.islink(s.tty)


def test_stopping_an_unanswered_ring_puts_the_port_back_on_hook(board, sim):
    port = board.ports[0]
    port.ring(cadence=(300, 300))
    deadline = time.monotonic() + 3
    while port.state != "ringing" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert port.state == "ringing"
    port.stop_ring()
    assert port.state == "onhook"


# --- protocol v1 revision 2: flash timing, pulse dialling, the exchange side of an outgoing call ---

def test_flash_timing_is_set_per_port_and_a_longer_on_hook_is_hanging_up(board, sim):
    events = Events(board)
    phone = sim.ports[0]
    phone.off_hook()
    phone.flash(300)                                      # default window 100-700 ms: a flash
    assert events.wait(lambda e: e[0] == "flash")
    phone.flash(900)                                      # too long: on-hook, then off-hook again
    assert events.wait(lambda e: e[0] == "off_hook" and len([x for x in events.seen if x[0] == "off_hook"]) == 2)
    board.ports[0].set_flash_times(100, 1000)
    phone.flash(900)                                      # now inside the window
    assert events.wait(lambda e: len([x for x in events.seen if x[0] == "flash"]) == 2)
    phone.flash(50)                                       # a bounce: nothing
    time.sleep(0.2)
    assert [e[0] for e in events.seen if e[0] != "digit"] == ["off_hook", "flash", "on_hook", "off_hook", "flash"]
    with pytest.raises(LineBoardError, match="badarg"):
        board.ports[0].set_flash_times(700, 100)


def test_seized_idle_line_gives_dial_tone_hears_dtmf_and_pulse_digits_and_answers(board, sim):
    from firmware.dsp.detect import dtmf_samples, tone_present
    events = Events(board)
    port, line = board.ports[2], sim.ports[2]
    port.open_audio()
    port.seize()
    time.sleep(0.4)
    frames = [port.read_frame() for _ in range(10)]
    assert sum(tone_present(f, (350, 440)) for f in frames if f) >= 8, "no dial tone on a seized line"
    port.write_frame(dtmf_samples("0123", on_ms=100, off_ms=100))
    deadline = time.monotonic() + 3
    while line.dialled != "0123" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert line.dialled == "0123"
    start = time.monotonic()
    port.pulse_dial("21")                                 # returns once the board has dialled them
    assert time.monotonic() - start > 0.3 + 0.7
    assert line.dialled == "012321"
    line.answer()
    assert events.wait(lambda e: e[0] == "polarity_reversal")
    port.release()
    with pytest.raises(LineBoardError, match="notseized"):
        port.pulse_dial("1")
