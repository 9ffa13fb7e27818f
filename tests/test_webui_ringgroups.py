"""The ring group, parking and Follow Me pages: forms check each field and store what they say;
users reach only their own Follow Me; the parking page shows who is parked from the call
service's state."""
import json
import os
import time

import pytest

from firmware.config import ConfigStore
from firmware.features.followme import FollowMe, Leg
from firmware.features.ringgroups import Member
from tests.browser.webui_env import form_error, make_app, post, user_client


@pytest.fixture
def store(data):
    s = ConfigStore(data)
    for n, name in (("1001", "Ann"), ("1002", "Bob")):
        s.add_extension(n, name)
    s.add_trunk("carrier", "sip.carrier.example", register=False)
    s.add_outbound_route("mobiles", "_07X.", "carrier")
    return s


@pytest.fixture
def app(data, store):
    return make_app(data)


GROUP = {"number": "600", "name": "Sales", "strategy": "hunt", "members": "1001 15\n07700 900123 25",
         "timeout": "60", "caller_id_prefix": "Sales: ", "confirm_external": "on", "waiting": "music",
         "no_answer_kind": "extension", "no_answer_extension": "1002"}


def test_a_new_ring_group_is_stored_with_its_members_and_listed(admin, store):
    r = post(admin, "/ringgroups/new", GROUP)
    assert r.status_code == 302, r.text
    g = store.record("ring_groups", "600")
    assert g.members == (Member("extension:1001", 15), Member("external:07700900123", 25))
    assert (g.strategy, g.waiting, g.no_answer, g.caller_id_prefix) == ("hunt", "music", "extension:1002", "Sales: ")
    page = admin.get("/ringgroups").text
    assert "Sales" in page and "07700900123" in page and "extension 1002 (Bob)" in page


@pytest.mark.parametrize("changes,field,words", [
    ({"number": "1001"}, "number", "is an extension"),
    ({"members": "1001 soon"}, "members", "not a whole number"),
    ({"members": ""}, "members", "at least one member"),
    ({"timeout": "forever"}, "timeout", "not a whole number"),
    ({"no_answer_extension": ""}, "no_answer", "choose the extension"),
])
def test_ring_group_form_errors_name_the_field_and_the_fix(admin, changes, field, words):
    r = post(admin, "/ringgroups/new", {**GROUP, **changes})
    assert r.status_code == 400
    assert words in (form_error(r.text, field) or ""), r.text


def test_a_ring_group_is_edited_and_deleted(admin, store):
    post(admin, "/ringgroups/new", GROUP)
    r = post(admin, "/ringgroups/600", {**GROUP, "strategy": "ring_all", "members": "1002"})
    assert r.status_code == 302
    assert store.record("ring_groups", "600").members == (Member("extension:1002", 20),)
    assert post(admin, "/ringgroups/600/delete").status_code == 302
    assert store.record("ring_groups", "600") is None


def test_parking_settings_are_saved_and_the_slots_show_who_is_parked(admin, store, data):
    r = post(admin, "/parking", {"number": "800", "name": "Warehouse", "first_slot": "801", "slots": "5",
                                 "timeout": "60", "return_destination_kind": "extension",
                                 "return_destination_extension": "1001"})
    assert r.status_code == 302, r.text
    lot = store.record("parking_lots", "800")
    assert (lot.slots, lot.timeout, lot.return_destination) == (5, 60, "extension:1001")
    (data / "parking-state.json").write_text(json.dumps({"pid": os.getpid(), "slots": [
        {"slot": "802", "lot": "800", "caller": "07700900555", "name": "Cy", "parker": "1002",
         "since": time.time() - 30}]}))
    page = admin.get("/parking").text
    assert 'data-slot="802" class="busy"' in page and "Cy 07700900555" in page
    live = admin.get("/parking/slots.json", headers={"Accept": "application/json"}).get_json()
    assert live["parked"][0]["slot"] == "802" and live["parked"][0]["seconds"] >= 30


def test_parking_refuses_slots_that_are_extensions(admin):
    r = post(admin, "/parking", {"number": "1000", "name": "P", "first_slot": "1001", "slots": "3",
                                 "timeout": "45", "return_destination_kind": ""})
    assert r.status_code == 400 and "1001" in (form_error(r.text, "first_slot") or "")


def test_a_user_sets_their_own_follow_me_and_cannot_reach_anyone_elses(app, admin, store):
    user = user_client(app, "1001")
    r = post(user, "/followme/me", {"enabled": "on", "destinations": "1001 15\n07700900123 20 5", "mode": "sequential",
                                    "confirm": "on", "announce": "name"})
    assert r.status_code == 302, r.text
    fm = store.record("follow_me", "1001")
    assert fm.enabled and fm.destinations == (Leg("extension:1001", 0, 15), Leg("external:07700900123", 5, 20))
    assert fm.announce == "name"
    assert user.get("/followme/1002").status_code in (302, 403, 404)
    assert user.get("/ringgroups").status_code in (302, 403, 404)
    assert "/followme/me" in user.get("/me").text


def test_the_admin_edits_any_extensions_follow_me(admin, store):
    r = post(admin, "/followme/1002", {"enabled": "on", "destinations": "", "mode": "together"})
    assert r.status_code == 400 and "at least one phone" in (form_error(r.text, "destinations") or "")
    r = post(admin, "/followme/1002", {"destinations": "07700900123 30", "mode": "together"})
    assert r.status_code == 302
    assert store.record("follow_me", "1002") == FollowMe("1002", False, (Leg("external:07700900123", 0, 30),),
                                                         True, False, "callerid")
    assert "07700900123" in admin.get("/followme").text


def test_the_extension_page_links_to_its_follow_me(admin):
    assert 'href="/followme/1001"' in admin.get("/extensions/1001").text


def test_follow_me_refuses_a_number_the_extension_cannot_dial(admin):
    r = post(admin, "/followme/1002", {"enabled": "on", "destinations": "0033123456789 20", "mode": "sequential"})
    assert r.status_code == 400
    assert "cannot dial 0033123456789" in (form_error(r.text, "destinations") or "")
