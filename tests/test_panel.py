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
    thread = threading.Thread(target=run_panel, args=(store, PINS, stop), kwargs={"poll_interval": 0.05})
    thread.start()
    _wait(lambda: Device.pin_factory.pin(PINS.ready).state == 1 and
          Device.pin_factory.pin(PINS.button).when_changed is not None)
    yield store
    stop.set()
    thread.join(timeout=2)
    assert not thread.is_alive()


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
    time.sleep(0.06)
    _press(button)
    assert _wait(lambda: lamp.state == 0)
    assert ConfigStore(tmp_path / "data").settings().mode == "day"


def test_bouncing_button_toggles_only_once(panel_service):
    button = Device.pin_factory.pin(PINS.button)
    for _ in range(5):                                  # contact chatter within 50 ms
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
