"""Conference rooms, the pure part: records, who joins with which role, what is announced, *6,
and how calls reach a room (an extension dialling its number, an inbound route's destination)."""
from datetime import datetime

import pytest

from firmware.config import ConfigStore, ValidationError
from firmware.config.model import Extension
from firmware.config.routing import InboundRoute
from firmware.dialplan import Caller, ConfigView, route_call
from firmware.features import conference as model
from firmware.dialplan.plan import Reject

NOW = datetime(2026, 11, 28, 10, 0)
ROOM = model.ConferenceRoom("800", "Board room", pin="1234", listener_pin="5678", listeners=("1002",))


def test_the_pin_decides_talker_or_listener_and_a_listed_extension_always_listens():
    assert model.admit(ROOM, "1234") == model.TALKER
    assert model.admit(ROOM, "5678") == model.LISTENER
    assert model.admit(ROOM, "1111") is None and model.admit(ROOM, "") is None and model.admit(ROOM, None) is None
    assert model.admit(ROOM, "1234", extension="1002") == model.LISTENER
    open_room = model.ConferenceRoom("801", "Open")
    assert model.admit(open_room, None) == model.TALKER
    listeners_only = model.ConferenceRoom("802", "Town hall", listener_pin="999")
    assert model.admit(listeners_only, "") == model.TALKER          # hash alone: a talker
    assert model.admit(listeners_only, "999") == model.LISTENER


def test_what_a_joining_member_hears_and_what_star_6_does():
    assert model.count_words(0) == "You are the only person in this conference."
    assert model.count_words(1) == "There is one other person in this conference."
    assert model.count_words(4) == "There are 4 other people in this conference."
    assert model.toggle_mute(model.TALKER, False) == (True, "You are muted.")
    assert model.toggle_mute(model.TALKER, True) == (False, "You are unmuted.")
    assert model.toggle_mute(model.LISTENER, True)[0] is True      # admin-muted stays muted
    assert model.is_full(model.ConferenceRoom("800", "x", max_members=3), 3)
    assert not model.is_full(model.ConferenceRoom("800", "x", max_members=3), 2)


def test_bad_rooms_are_refused_naming_the_field(tmp_path):
    store = ConfigStore(tmp_path)
    for room, field in ((model.ConferenceRoom("8", "x"), "number"),
                        (model.ConferenceRoom("800", ""), "name"),
                        (model.ConferenceRoom("800", "x", pin="12"), "pin"),
                        (model.ConferenceRoom("800", "x", pin="1234", listener_pin="1234"), "listener_pin"),
                        (model.ConferenceRoom("800", "x", max_members=1), "max_members"),
                        (model.ConferenceRoom("800", "x", listeners=("1999",)), "listeners")):
        with pytest.raises(ValidationError) as e:
            store.add_record(model.TABLE, room)
        assert e.value.field == field, str(e.value)
    store.add_record(model.TABLE, model.ConferenceRoom("800", "Board room"))
    assert store.record(model.TABLE, "800").name == "Board room"


def _view():
    return ConfigView.of([Extension("1000", "Ann", secret="s3cret-enough-1")],
                         inbound_routes=[InboundRoute("441632960800", "conference:800")],
                         records={model.TABLE: [ROOM]})


def test_an_extension_dials_the_room_number_and_an_inbound_route_sends_callers_there():
    plan = route_call("800", Caller("extension", "1000"), _view(), now=NOW)
    assert plan == model.Conference(ROOM, "1000")
    assert "conference 800 (Board room) PIN" in plan.describe()
    from_trunk = route_call("441632960800", Caller("trunk", "carrier", number="07700900123"), _view(), now=NOW)
    assert from_trunk == model.Conference(ROOM, "")
    nothing = route_call("801", Caller("extension", "1000"), _view(), now=NOW)
    assert not isinstance(nothing, model.Conference)
    missing = model.plan_room("809", type("Ctx", (), {"config": _view(), "caller": Caller("extension", "1000")}))
    assert isinstance(missing, Reject) and missing.code == 404


def test_the_conference_page_creates_edits_and_deletes_rooms(tmp_path):
    from tests.browser.webui_env import admin_client, make_app, post
    data = tmp_path / "data"
    client = admin_client(make_app(data), data)
    assert "No conference rooms." in client.get("/conference").text
    r = post(client, "/conference/new", {"number": "800", "name": "Board room", "pin": "12",
                                         "max_members": "10", "announce_count": "on"})
    assert r.status_code == 400 and "3-10 digits" in r.text
    r = post(client, "/conference/new", {"number": "800", "name": "Board room", "pin": "4321",
                                         "max_members": "5", "announce_count": "on", "tones": "on"},
             follow_redirects=True)
    assert "Conference room 800 (Board room) created" in r.text
    assert ConfigStore(data).record(model.TABLE, "800") == model.ConferenceRoom("800", "Board room", pin="4321",
                                                                                 max_members=5)
    r = post(client, "/conference/800", {"name": "Board", "pin": "", "listener_pin": "999",
                                         "max_members": "30"}, follow_redirects=True)
    room = ConfigStore(data).record(model.TABLE, "800")
    assert room.listener_pin == "999" and not room.tones and not room.announce_count
    r = post(client, "/conference/800/delete", follow_redirects=True)
    assert "Conference room 800 deleted" in r.text and ConfigStore(data).record(model.TABLE, "800") is None
