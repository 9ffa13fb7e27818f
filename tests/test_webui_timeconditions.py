"""Time condition pages: the form checks each field, the store holds it, the 14-day preview shows it."""
import pytest

from firmware.config import ConfigStore
from firmware.features.timeconditions import TABLE
from tests.browser.webui_env import form_error, make_app, post


@pytest.fixture
def app(data):
    return make_app(data, STATUS_POLL_SECONDS=0.05, STREAM_MAX_SECONDS=2.0)


@pytest.fixture
def store(data):
    return ConfigStore(data)


FORM = {"number": "1", "name": "Office hours", "hours": "mon-fri 09:00-17:30\nsat 10:00-13:00",
        "special": "2026-12-24 09:00-12:00 Christmas Eve", "holidays": "GB/ENG", "toggle": "1",
        "open_destination_kind": "extension", "open_destination_extension": "201",
        "closed_destination_kind": "hangup"}


def test_new_time_condition_is_stored_and_previewed_for_14_days(admin, store):
    store.add_extension("201", "Reception")
    r = post(admin, "/timeconditions/new", FORM)
    assert r.status_code == 302, r.text
    tc = store.record(TABLE, "1")
    assert (tc.hours, tc.holidays_country, tc.holidays_region, tc.toggle, tc.open_destination,
            tc.closed_destination) == (("mon-fri 09:00-17:30", "sat 10:00-13:00"), "GB", "ENG", "1",
                                       "extension:201", "hangup")
    page = admin.get("/timeconditions/1").text
    assert page.count("<tr data-day=") == 14
    assert "Time conditions" in admin.get("/timeconditions").text and "Office hours" in admin.get("/timeconditions").text


def test_time_condition_form_names_each_bad_field_and_writes_nothing(admin, store):
    store.add_extension("201", "Reception")
    bad = dict(FORM, hours="mon-fry 09:00-17:30", special="2026-02-30 closed", holidays="GB/XYZ",
               open_destination_extension="")
    r = post(admin, "/timeconditions/new", bad)
    assert r.status_code == 400
    assert "'mon-fry' is not a day" in form_error(r.text, "hours")
    assert "not a date of the calendar" in form_error(r.text, "special")
    assert "not a region of GB" in form_error(r.text, "holidays")
    assert "choose the extension" in form_error(r.text, "open_destination")
    assert store.records(TABLE) == []


def test_time_condition_named_by_a_route_cannot_be_deleted(admin, store):
    store.add_extension("201", "Reception")
    post(admin, "/timeconditions/new", FORM)
    store.add_inbound_route("02079460000", "timecondition:1")
    r = post(admin, "/timeconditions/1/delete", {})
    assert r.status_code == 302 and store.record(TABLE, "1") is not None
    assert "inbound route" in admin.get("/timeconditions/1").text
