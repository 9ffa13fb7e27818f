"""Toggle 1 is the front panel's: its button switches what a 'daynight:1' route does, and a switch
on the Day/night page lights its LED (gpiozero MockFactory pins, the real config store)."""
import threading
import time
from datetime import datetime

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from firmware.config.store import ConfigStore
from firmware.dialplan import Caller, config_view, route_call
from firmware.features.daynight import TABLE, CallFlowToggle
from hw.panel import PanelPins, run_panel
from tests.browser.webui_env import admin_client, make_app, post
from tests.test_panel import panel_listening

PINS = PanelPins()


def _wait(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.fixture
def panel(tmp_path):
    Device.pin_factory = MockFactory()
    store = ConfigStore(tmp_path / "data")
    store.add_extension("201", "Reception")
    store.add_extension("202", "Night desk")
    store.add_trunk("carrier", "sip.example.com", register=False)
    store.add_record(TABLE, CallFlowToggle("1", "Main office", "extension:201", "extension:202"))
    store.add_inbound_route("02071234567", "daynight:1")
    stop = threading.Event()
    thread = threading.Thread(target=run_panel, args=(store, PINS, stop), kwargs={"poll_interval": 0.05})
    thread.start()
    assert _wait(panel_listening), "the panel never attached its button handler"
    yield store
    stop.set()
    thread.join(timeout=2)
    Device.pin_factory.reset()
    Device.pin_factory = None


def rung(store):
    plan = route_call("02071234567", Caller("trunk", "carrier", "07700900123", ""), config_view(store),
                      datetime(2026, 12, 1, 10, 0))
    return plan.extension


def test_the_panel_button_switches_where_a_daynight_route_sends_calls(panel, tmp_path):
    assert rung(ConfigStore(tmp_path / "data")) == "201"
    button = Device.pin_factory.pin(PINS.button)
    button.drive_low()
    button.drive_high()
    assert _wait(lambda: Device.pin_factory.pin(PINS.day_night).state == 1)
    assert rung(ConfigStore(tmp_path / "data")) == "202"


def test_switching_on_the_web_page_lights_the_panel_led(panel, tmp_path):
    data = tmp_path / "data"
    admin = admin_client(make_app(data), data)
    post(admin, "/daynight/1/switch", {})
    assert _wait(lambda: Device.pin_factory.pin(PINS.day_night).state == 1)
    post(admin, "/daynight/1/switch", {})
    assert _wait(lambda: Device.pin_factory.pin(PINS.day_night).state == 0)
