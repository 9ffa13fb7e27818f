"""DND, forwards, caller IDs, typed destinations, route permissions and trusted networks in the web
UI and the API (issue 8 sections 2, 3 and 5): each field saved, each bad value refused at its
field with the model's reason, the form token still required, and a user reaching only their
own extension."""
import re

import pytest

from firmware.config import ConfigStore
from firmware.config.destination import DESTINATION_KINDS, DestinationKind
from tests.browser.webui_env import api, form_error, post, user_client


@pytest.fixture
def store(data, admin):
    s = ConfigStore(data)
    s.add_extension("201", "Ann")
    s.add_extension("202", "Bob")
    s.add_trunk("carrier", "sip.example.com", register=False)
    return s


def _no_token(client, url, data):
    return client.post(url, data=data)           # no csrf_token field


HANDLING = {"call_handling": "1", "name": "Ann", "dnd": "on",
            "forward_always_kind": "", "forward_busy_kind": "extension", "forward_busy_extension": "202",
            "forward_no_answer_kind": "external", "forward_no_answer_external": "07700 900-123",
            "external_caller_id": "+442071234567"}


# The extension form (admin) ----------------------------------------------------------------------
def test_admin_sets_dnd_forwards_and_caller_id_on_the_extension_form(admin, store):
    store.add_outbound_route("mobiles", "_07XXXXXXXXX", "carrier")
    page = admin.get("/extensions/201").text
    assert 'id="f-forward_busy_kind"' in page and 'id="f-external_caller_id"' in page
    assert '<option value="201"' not in page          # an extension cannot forward to itself
    r = post(admin, "/extensions/201", HANDLING)
    assert r.status_code == 302, r.text
    ext = store.get_extension("201")
    assert (ext.dnd, ext.forward_always, ext.forward_busy, ext.forward_no_answer, ext.external_caller_id) == (
        True, "", "extension:202", "external:07700900123", "+442071234567")
    page = admin.get("/extensions/201").text
    assert re.search(r'<option value="extension" selected>', page)
    assert 'value="07700900123"' in page and re.search(r'id="f-dnd" name="dnd" checked', page)
    # a save of the name alone (a client without the call-handling fields) keeps them
    assert post(admin, "/extensions/201", {"name": "Ann B"}).status_code == 302
    assert store.get_extension("201").forward_busy == "extension:202"


def test_extension_form_names_each_bad_call_handling_field_and_writes_nothing(admin, store):
    bad = dict(HANDLING, forward_always_kind="extension", forward_always_extension="",
               forward_busy_kind="external", forward_busy_external="07700abc",
               forward_no_answer_kind="external", forward_no_answer_external="07700900123",
               external_caller_id="call me")
    r = post(admin, "/extensions/201", bad)
    assert r.status_code == 400
    assert "choose the extension" in form_error(r.text, "forward_always")
    assert "is not a phone number" in form_error(r.text, "forward_busy")           # the model's reason
    assert "cannot dial 07700900123" in form_error(r.text, "forward_no_answer")    # no outbound route
    assert "is not a phone number" in form_error(r.text, "external_caller_id")
    assert 'value="07700abc"' in r.text                                            # what was typed stays
    ext = store.get_extension("201")
    assert (ext.dnd, ext.forward_busy, ext.external_caller_id) == (False, "", "")
    r = post(admin, "/extensions/201", dict(HANDLING, forward_no_answer_kind="extension",
                                            forward_no_answer_extension="201"))
    assert "forwards extension 201 to itself" in form_error(r.text, "forward_no_answer")
    r = post(admin, "/extensions/201", dict(HANDLING, forward_busy_kind="fax"))
    assert "is not a destination" in form_error(r.text, "forward_busy")
    r = _no_token(admin, "/extensions/201", HANDLING)
    assert r.status_code == 400 and "CSRF" in r.text
    assert store.get_extension("201").dnd is False


def test_a_forward_outside_must_be_a_number_the_extension_may_dial(admin, store):
    store.add_outbound_route("mobiles", "_07XXXXXXXXX", "carrier", extensions=["202"])
    r = post(admin, "/extensions/201", HANDLING)
    assert "may not use route(s) mobiles" in form_error(r.text, "forward_no_answer")
    r = post(admin, "/extensions/201", dict(HANDLING, forward_no_answer_external="999"))
    assert "cannot dial 999" in form_error(r.text, "forward_no_answer") or \
        "emergency" in form_error(r.text, "forward_no_answer")
    store.update_outbound_route("mobiles", extensions=["201", "202"])
    assert post(admin, "/extensions/201", HANDLING).status_code == 302


def test_deleting_an_extension_names_forwards_and_route_permissions_that_use_it(admin, store):
    store.update_extension("202", forward_busy="extension:201")
    store.add_outbound_route("intl", "_00.", "carrier", extensions=["201"])
    store.add_inbound_route("+442071234567", "extension:201")
    page = admin.get("/extensions/201/delete").text
    assert "extension 202 forwards calls to extension 201" in page
    assert "outbound route intl lists extension 201" in page
    assert "destination of inbound route +442071234567" in page
    r = post(admin, "/extensions/201/delete", follow_redirects=True)
    assert "cannot be deleted" in r.text and store.get_extension("201") is not None


# The user's own page ----------------------------------------------------------------------------
def test_user_sets_their_own_dnd_and_forwards_on_their_page(app, store):
    store.add_outbound_route("mobiles", "_07XXXXXXXXX", "carrier")
    user = user_client(app, "201")
    page = user.get("/me").text
    assert 'id="call-handling"' in page and 'id="f-external_caller_id"' not in page   # admins only
    r = post(user, "/me/calls", {"dnd": "on", "forward_busy_kind": "extension", "forward_busy_extension": "202",
                                 "forward_no_answer_kind": "external", "forward_no_answer_external": "07700900123",
                                 "external_caller_id": "+441234"})
    assert r.status_code == 302 and r.location.endswith("/me#call-handling")
    ext = store.get_extension("201")
    assert (ext.dnd, ext.forward_busy, ext.forward_no_answer, ext.external_caller_id) == (
        True, "extension:202", "external:07700900123", "")                  # caller ID ignored for users
    assert store.get_extension("202").dnd is False
    assert "Call handling saved" in user.get("/me").text
    r = post(user, "/me/calls", {"forward_always_kind": "extension", "forward_always_extension": "999"})
    assert r.status_code == 400 and "no extension 999" in form_error(r.text, "forward_always")
    r = post(user, "/me/calls", {"forward_always_kind": "external", "forward_always_external": ""})
    assert "type the external number" in form_error(r.text, "forward_always")
    assert store.get_extension("201").dnd is True                           # nothing changed by the failures
    r = _no_token(user, "/me/calls", {})
    assert r.status_code == 400 and store.get_extension("201").dnd is True
    assert post(user, "/me/calls", {}).status_code == 302                  # all cleared
    ext = store.get_extension("201")
    assert (ext.dnd, ext.forward_busy, ext.forward_no_answer) == (False, "", "")


def test_a_user_changes_only_their_own_dnd_and_forwards(app, store):
    user = user_client(app, "201")
    assert post(user, "/extensions/202", dict(HANDLING, name="Bob")).status_code == 403
    assert api(user, "PATCH", "/api/v1/extensions/202", json={"dnd": True}).status_code == 403
    assert api(user, "PATCH", "/api/v1/extensions/202", json={"forward_always": "extension:201"}).status_code == 403
    assert store.get_extension("202").dnd is False and store.get_extension("202").forward_always == ""
    r = api(user, "PATCH", "/api/v1/extensions/201", json={"dnd": True, "forward_always": "202"})
    assert r.status_code == 200
    assert (r.get_json()["dnd"], r.get_json()["forward_always"]) == (True, "extension:202")
    r = api(user, "PATCH", "/api/v1/extensions/201", json={"external_caller_id": "+442071234567"})
    assert r.status_code == 400
    assert r.get_json()["errors"] == [{"field": "external_caller_id", "message": "only an administrator may change this"}]


# API --------------------------------------------------------------------------------------------
def test_the_extension_resource_reads_and_writes_call_handling(app, admin, store):
    token = re.search(r'id="new-token">([^<]+)<',
                      post(admin, "/system/tokens", {"label": "t"}, follow_redirects=True).text).group(1)
    r = api(admin, "PATCH", "/api/v1/extensions/201", token=token,
            json={"dnd": True, "forward_busy": "extension:202", "external_caller_id": "+442071234567"})
    assert r.status_code == 200
    got = api(admin, "GET", "/api/v1/extensions/201", token=token).get_json()
    assert {k: got[k] for k in ("dnd", "forward_always", "forward_busy", "forward_no_answer", "external_caller_id")} \
        == {"dnd": True, "forward_always": "", "forward_busy": "extension:202", "forward_no_answer": "",
            "external_caller_id": "+442071234567"}
    r = api(admin, "PATCH", "/api/v1/extensions/201", token=token,
            json={"dnd": "yes", "forward_always": "hangup", "forward_no_answer": "external:07700900123"})
    assert r.status_code == 400
    errors = {e["field"]: e["message"] for e in r.get_json()["errors"]}
    assert "cannot dial 07700900123" in errors["forward_no_answer"]
    r = api(admin, "PATCH", "/api/v1/extensions/201", token=token, json={"dnd": "yes", "forward_always": "hangup"})
    errors = {e["field"]: e["message"] for e in r.get_json()["errors"]}
    assert "true or false" in errors["dnd"] and "cannot be forwarded to 'hangup'" in errors["forward_always"]
    assert store.get_extension("201").forward_always == ""
    spec = api(admin, "GET", "/api/openapi.json", token=token).get_json()["components"]["schemas"]
    for name in ("dnd", "forward_always", "forward_busy", "forward_no_answer", "external_caller_id"):
        assert name in spec["Extension"]["properties"] and name in spec["ExtensionUpdate"]["properties"]
    assert "hangup" in spec["InboundRoute"]["properties"]["destination"]["description"]
    assert "match_national" in spec["InboundRouteUpdate"]["properties"]
    assert {"caller_id", "extensions"} <= set(spec["OutboundRouteUpdate"]["properties"])
    assert "trusted_networks" in spec["Settings"]["properties"]


def test_routes_over_the_api_carry_typed_destinations_caller_id_and_permissions(admin, store):
    r = api(admin, "POST", "/api/v1/inbound-routes",
            json={"did": "+442071234567", "destination": "external:07700900123", "match_national": True})
    assert r.status_code == 201 and r.get_json()["match_national"] is True
    r = api(admin, "POST", "/api/v1/inbound-routes", json={"did": "+442071234568", "destination": "07700900123"})
    assert r.status_code == 400 and "has no kind" in r.get_json()["errors"][0]["message"]
    r = api(admin, "PATCH", "/api/v1/inbound-routes/+442071234567", json={"destination": "hangup"})
    assert r.get_json()["destination"] == "hangup"
    r = api(admin, "POST", "/api/v1/outbound-routes", json={"name": "intl", "pattern": "_00.", "trunk": "carrier",
                                                             "caller_id": "+442071234567", "extensions": ["201"]})
    assert r.status_code == 201 and r.get_json()["extensions"] == ["201"]
    r = api(admin, "PATCH", "/api/v1/outbound-routes/intl", json={"extensions": ["201", "299"], "caller_id": "x"})
    errors = {e["field"]: e["message"] for e in r.get_json()["errors"]}
    assert "is not a phone number" in errors["caller_id"]
    r = api(admin, "PATCH", "/api/v1/outbound-routes/intl", json={"extensions": ["201", "299"]})
    assert r.status_code == 400 and "no extension 299" in r.get_json()["errors"][0]["message"]
    assert store.get_outbound_route("intl").extensions == ("201",)


# Inbound routes ---------------------------------------------------------------------------------
def test_inbound_route_form_offers_every_destination_kind_and_the_list_shows_labels(admin, store):
    page = admin.get("/routes/inbound/new").text
    for kind in DESTINATION_KINDS.values():
        assert f'<option value="{kind.name}"' in page
    assert 'id="f-match_national"' in page
    for did, form in (("+442071234567", {"destination_kind": "extension", "destination_extension": "201"}),
                      ("+442071234568", {"destination_kind": "external", "destination_external": "07700 900123",
                                         "match_national": "on"}),
                      ("+442071234569", {"destination_kind": "hangup"})):
        r = post(admin, "/routes/inbound/new", {"did": did, **form})
        assert r.status_code == 302, r.text
    assert [(r.destination, r.match_national) for r in store.inbound_routes()] == [
        ("extension:201", False), ("external:07700900123", True), ("hangup", False)]
    listing = admin.get("/routes").text
    assert "extension 201 (Ann)" in listing and "07700 900123" in listing and "hang up" in listing
    assert "and national forms" in listing
    r = post(admin, "/routes/inbound/+442071234569", {"destination_kind": "extension", "destination_extension": "202"})
    assert r.status_code == 302 and store.get_inbound_route("+442071234569").destination == "extension:202"


def test_inbound_route_form_names_a_bad_destination_at_its_field(admin, store):
    r = post(admin, "/routes/inbound/new", {"did": "+442071234567", "destination_kind": "extension",
                                            "destination_extension": ""})
    assert r.status_code == 400 and "choose the extension" in form_error(r.text, "destination")
    r = post(admin, "/routes/inbound/new", {"did": "abc", "destination_kind": "external",
                                            "destination_external": "0800-CALL-NOW"})
    assert "is not a phone number" in form_error(r.text, "destination")
    assert "is not a phone number" in form_error(r.text, "did")
    r = post(admin, "/routes/inbound/new", {"did": "+442071234567", "destination_kind": "extension",
                                            "destination_extension": "299"})
    assert "no extension 299" in form_error(r.text, "destination")
    r = post(admin, "/routes/inbound/new", {"did": "+442071234567", "destination_kind": "fax"})
    assert "is not a destination" in form_error(r.text, "destination")
    r = _no_token(admin, "/routes/inbound/new", {"did": "+442071234567", "destination_kind": "hangup"})
    assert r.status_code == 400
    assert store.inbound_routes() == []


def test_a_destination_kind_registered_later_appears_in_the_forms_without_web_changes(admin, store, monkeypatch):
    monkeypatch.setitem(DESTINATION_KINDS, "voicemail",
                        DestinationKind("voicemail", "Voicemail box", "201", refers_to="extensions", forwardable=True))
    page = admin.get("/routes/inbound/new").text
    assert '<option value="voicemail" >Voicemail box</option>' in page
    assert 'id="f-destination_voicemail"' in page and '<select id="f-destination_voicemail"' in page
    assert 'id="f-forward_busy_voicemail"' in admin.get("/extensions/201").text


# Outbound routes --------------------------------------------------------------------------------
def test_outbound_route_form_sets_caller_id_and_who_may_use_it(admin, store):
    form = {"name": "national", "pattern": "_0NXXXXXXXXX", "trunk": "carrier", "strip": "0",
            "caller_id": "+44 20 7123 4567", "extensions": ["201", "202"]}
    assert post(admin, "/routes/outbound/new", form).status_code == 302
    route = store.get_outbound_route("national")
    assert (route.caller_id, route.extensions) == ("+442071234567", ("201", "202"))
    listing = admin.get("/routes").text
    assert "+442071234567" in listing and "201, 202" in listing
    page = admin.get("/routes/outbound/national").text
    assert re.search(r'name="extensions" value="202" checked', page)
    r = post(admin, "/routes/outbound/national", dict(form, extensions=[]))
    assert r.status_code == 302 and store.get_outbound_route("national").extensions == ()
    assert "every extension" in admin.get("/routes").text
    r = post(admin, "/routes/outbound/national", dict(form, caller_id="ask reception", strip="x",
                                                      extensions=["201", "299"]))
    assert r.status_code == 400
    assert "is not a phone number" in form_error(r.text, "caller_id")
    assert "not a whole number" in form_error(r.text, "strip")
    r = post(admin, "/routes/outbound/national", dict(form, extensions=["201", "299"]))
    assert "no extension 299" in form_error(r.text, "extensions")
    assert _no_token(admin, "/routes/outbound/national", form).status_code == 400
    assert store.get_outbound_route("national").extensions == ()


# Settings ---------------------------------------------------------------------------------------
def test_trusted_networks_on_the_settings_page(admin, store, data):
    settings = admin.get("/settings").text
    assert 'id="f-trusted_networks"' in settings
    form = {k: str(v) for k, v in {"site_name": "Acme", "timezone": "UTC", "country": "uk", "sip_domain": "",
                                   "no_answer_timeout": 30, "recording_retention_days": 0, "smtp_host": "",
                                   "smtp_port": 587, "smtp_tls": "starttls", "smtp_user": "", "smtp_from": ""}.items()}
    r = post(admin, "/settings", dict(form, trusted_networks="192.168.1.0/24,\r\n10.0.0.7"))
    assert r.status_code == 302
    assert tuple(ConfigStore(data).settings().trusted_networks) == ("192.168.1.0/24", "10.0.0.7")
    assert "192.168.1.0/24\n10.0.0.7</textarea>" in admin.get("/settings").text
    r = post(admin, "/settings", dict(form, trusted_networks="192.168.1.0/24\nthe office"))
    assert r.status_code == 400
    assert "'the office' is not an IPv4 address or network" in form_error(r.text, "trusted_networks")
    assert _no_token(admin, "/settings", dict(form, trusted_networks="")).status_code == 400
    assert tuple(ConfigStore(data).settings().trusted_networks) == ("192.168.1.0/24", "10.0.0.7")
