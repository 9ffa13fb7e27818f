"""Front panel: the DAY/NIGHT button toggles night mode in the real config store, the lamp follows,
bounces are ignored, and the LEDs blink the boot and fault patterns (gpiozero MockFactory pins)."""
import threading
import time

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from firmware.config.store import ConfigStore
from hw.panel import FrontPanel, PanelPins, run_panel

PINS = PanelPins()
BOUNCE = 0.3


@pytest.fixture(autouse=True)
def mock_pins():
    Device.pin_factory = MockFactory()
    yield Device.pin_factory
    Device.pin_factory.reset()
    Device.pin_factory = None


@pytest.fixture
def panel_service(tmp_path):
    store = ConfigStore(tmp_path / "data")
    stop = threading.Event()
    # the press callback runs the toggle (a store write with fsync) in the pressing thread: on a
    # loaded box that alone can outlast 50 ms, so the chatter test's lockout is 0.3 s
    thread = threading.Thread(target=run_panel, args=(store, PINS, stop),
                              kwargs={"poll_interval": 0.05, "bounce_time": BOUNCE})
    thread.start()
    assert _wait(panel_listening), "the panel never attached its button handler"
    yield store
    stop.set()
    thread.join(timeout=2)
    assert not thread.is_alive()


def panel_listening() -> bool:
    """The panel's press handler is attached to the button. The ready lamp alone says nothing: it
    blinks on at boot before the handler is set, and a press in between was lost (CI flaked)."""
    changed = Device.pin_factory.pin(PINS.button).when_changed     # the Button's own pin handler
    return changed is not None and getattr(changed.__self__, "when_pressed", None) is not None


def _wait(condition, timeout=5.0):  # a loaded CI box fsyncs slowly: wait for the state, not a time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def _press(pin):
    pin.drive_low()        # pull-up: low = pressed
    pin.drive_high()


def test_button_press_toggles_night_mode_in_the_config_store_and_the_lamp_follows(panel_service, tmp_path):
    button = Device.pin_factory.pin(PINS.button)
    lamp = Device.pin_factory.pin(PINS.day_night)
    assert lamp.state == 0
    _press(button)
    assert _wait(lambda: lamp.state == 1)
    assert ConfigStore(tmp_path / "data").settings().mode == "night"     # what a reboot would read
    time.sleep(BOUNCE + 0.01)
    _press(button)
    assert _wait(lambda: lamp.state == 0)
    assert ConfigStore(tmp_path / "data").settings().mode == "day"


def test_bouncing_button_toggles_only_once(panel_service):
    button = Device.pin_factory.pin(PINS.button)
    for _ in range(5):                                  # contact chatter within the lockout
        _press(button)
    assert _wait(lambda: Device.pin_factory.pin(PINS.day_night).state == 1)
    time.sleep(0.1)
    assert panel_service.settings().mode == "night"


def test_mode_changed_elsewhere_moves_the_lamp(panel_service, tmp_path):
    ConfigStore(tmp_path / "data").update_settings(mode="night")          # e.g. *33 in the call service
    assert _wait(lambda: Device.pin_factory.pin(PINS.day_night).state == 1)
    ConfigStore(tmp_path / "data").update_settings(mode="day")
    assert _wait(lambda: Device.pin_factory.pin(PINS.day_night).state == 0)


def test_boot_blinks_ready_until_ready_then_fault_blinks_fast():
    panel = FrontPanel(PINS, on_toggle=lambda: None)
    try:
        assert Device.pin_factory.pin(PINS.power).state == 1
        time.sleep(0.65)
        ready = Device.pin_factory.pin(PINS.ready)
        history = [s.state for s in ready.states]
        assert history[:4] == [False, True, False, True]
        assert all(abs(s.timestamp - 0.25) < 0.08 for s in ready.states[2:4])
        panel.set_ready()
        assert ready.state == 1
        fault = Device.pin_factory.pin(PINS.fault)
        panel.set_fault(True)
        time.sleep(0.45)
        panel.set_fault(False)
        toggles = fault.states[1:]
        assert len(toggles) >= 4 and all(abs(s.timestamp - 0.1) < 0.06 for s in toggles[1:4])
        assert fault.state == 0
        panel.set_voicemail(True)
        assert Device.pin_factory.pin(PINS.voicemail).state == 1
    finally:
        panel.close()


def test_pins_come_from_config_with_clear_errors():
    assert PanelPins.from_config({"button": 4, "fault": 21}) == PanelPins(button=4, fault=21)
    assert PanelPins.from_config(None) == PINS
    with pytest.raises(ValueError, match="unknown panel pin buzzer"):
        PanelPins.from_config({"buzzer": 12})
    with pytest.raises(ValueError, match="button='17'"):
        PanelPins.from_config({"button": "17"})
    with pytest.raises(ValueError, match="share GPIO 5"):
        PanelPins.from_config({"ready": 5})


# The setup code as a blink code on the day/night lamp (firmware/blinkcode.py), played 4x faster.
SCALE = 0.25


def _played(pin, scale=SCALE):
    """The pin's history as (on, seconds at full speed) steps; the state still on is not included."""
    states = pin.states
    return [(bool(prev.state), cur.timestamp / scale) for prev, cur in zip(states, states[1:])]


def test_setup_code_blinks_on_the_day_night_lamp_and_repeats():
    from firmware import blinkcode
    from tests.test_blinkcode import read_back
    panel = FrontPanel(PINS, on_toggle=lambda: None)
    lamp = Device.pin_factory.pin(PINS.day_night)
    try:
        panel.show_mode("night")
        start = len(lamp.states)
        panel.show_setup_code("2a", "192.168.1.3", time_scale=SCALE)
        round_steps = blinkcode.pattern("2a", 3)
        assert _wait(lambda: len(lamp.states) - start >= len(round_steps) + 3,
                     timeout=blinkcode.duration(round_steps) * SCALE + 5)
        played = _played(lamp)[start - 1:]             # from the night lamp lighting up
        # the pin follows firmware.blinkcode's timeline step by step (tests/test_blinkcode.py reads
        # that timeline back). A loaded machine can only make a step late, never early: the lower
        # bound is tight, the upper one loose (LATE full-speed seconds = 0.25 s real)
        LATE = 1.0

        def follows(got, want):
            return want - 0.04 <= got <= want + LATE
        assert played[0][0] is True and played[0][1] <= LATE     # the night lamp goes out at once,
        assert played[1][0] is False and follows(played[1][1], blinkcode.END_GAP)   # dark, then the start
        one_round = played[2:2 + len(round_steps)]
        assert [on for on, _ in one_round] == [on for on, _ in round_steps]
        late = [(i, got, want) for i, ((_, got), (_, want)) in enumerate(zip(one_round, round_steps))
                if not follows(got, want)]
        assert not late, f"steps off the timeline (index, played, wanted): {late}"
        if all(got - want < 0.15 for (_, got), (_, want) in zip(one_round, round_steps)):
            assert read_back(one_round) == ("2a", 3)             # readable as played (an idle machine)
        assert played[2 + len(round_steps)][0] is True
    finally:
        panel.close()


def test_lamp_shows_the_mode_again_once_the_setup_code_is_consumed(tmp_path):
    from hw.panel.panel import setup_code_path
    from webui.wizard import setup_code
    data = tmp_path / "data"
    store = ConfigStore(data)
    store.update_settings(mode="night")
    code_file = setup_code_path(data)
    assert code_file == setup_code.path(data)            # the web UI's file, not a copy of its name
    code_file.parent.mkdir(parents=True)
    code_file.write_text("3b\n")
    stop = threading.Event()
    thread = threading.Thread(target=run_panel, args=(store, PINS, stop),
                              kwargs={"poll_interval": 0.05, "setup_code_file": code_file,
                                      "address": "10.0.0.9", "blink_scale": SCALE})
    thread.start()
    lamp = Device.pin_factory.pin(PINS.day_night)
    try:
        assert _wait(lambda: len(lamp.states) >= 4)      # night lamp on, then the blink code
        setup_code.consume(data)                         # the wizard set the admin password
        def steady():             # no change for longer than the longest step lit (the start, 0.75 s)
            before = len(lamp.states)
            time.sleep(0.9)
            return len(lamp.states) == before and lamp.state == 1
        assert _wait(steady, timeout=5)
        ConfigStore(data).update_settings(mode="day")    # and the lamp follows the mode again
        assert _wait(lambda: lamp.state == 0)
    finally:
        stop.set()
        thread.join(timeout=3)
    assert not thread.is_alive()
