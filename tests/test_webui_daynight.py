"""Day/night page: toggle 1 is the front panel's mode; more toggles with destinations and a PIN."""
import pytest

from firmware.config import ConfigStore
from firmware.features.daynight import TABLE
from tests.browser.webui_env import admin_client, form_error, make_app, post


@pytest.fixture
def admin(data):
    return admin_client(make_app(data), data)


def test_switching_toggle_one_changes_the_front_panels_mode(admin, data):
    store = ConfigStore(data)
    assert "DAY" in admin.get("/daynight").text
    post(admin, "/daynight/1/switch", {})
    assert store.settings().mode == "night"
    post(admin, "/daynight/1/switch", {})
    assert store.settings().mode == "day"


def test_a_second_toggle_with_destinations_and_a_pin(admin, data):
    store = ConfigStore(data)
    store.add_extension("201", "Sales")
    r = post(admin, "/daynight/edit", {"number": "2", "name": "Sales", "pin": "12",
                                       "day_destination_kind": "extension", "day_destination_extension": "201",
                                       "night_destination_kind": "hangup"})
    assert r.status_code == 400 and "4-8 digits" in form_error(r.text, "pin")
    r = post(admin, "/daynight/edit", {"number": "2", "name": "Sales", "pin": "4321",
                                       "day_destination_kind": "extension", "day_destination_extension": "201",
                                       "night_destination_kind": "hangup"})
    assert r.status_code == 302
    t = store.record(TABLE, "2")
    assert (t.day_destination, t.night_destination, t.pin, t.state) == ("extension:201", "hangup", "4321", "day")
    post(admin, "/daynight/2/switch", {})
    assert store.record(TABLE, "2").state == "night" and store.settings().mode == "day"
    page = admin.get("/daynight").text
    assert "*332" in page and "(PIN)" in page and "4321" not in page
    form = {"number": "2", "name": "Sales", "pin": "4321", "code": "*78", "day_destination_kind": "extension",
            "day_destination_extension": "201", "night_destination_kind": "hangup"}
    r = post(admin, "/daynight/edit", form)
    assert r.status_code == 400 and "is taken" in form_error(r.text, "code")
    post(admin, "/daynight/edit", dict(form, code="*34"))
    assert store.record(TABLE, "2").code == "*34" and store.record(TABLE, "2").state == "night"
    assert "<code>*34</code>" in admin.get("/daynight").text
