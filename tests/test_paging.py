"""Paging and intercom, the pure part: groups, who is paged, *80NUM, the auto-answer headers; and
the paging groups page."""
from datetime import datetime

import pytest

from firmware.config import ConfigStore, ValidationError
from firmware.config.model import Extension
from firmware.config.routing import InboundRoute
from firmware.dialplan import Caller, ConfigView, route_call
from firmware.dialplan.plan import Reject
from firmware.features import paging as model

NOW = datetime(2026, 11, 28, 10, 0)
GROUP = model.PagingGroup("500", "Warehouse", members=("1000", "1001", "1002", "1003"))


def _view():
    exts = [Extension("1000", "Ann", secret="s3cret-enough-1"), Extension("1001", "Bob", secret="s3cret-enough-2"),
            Extension("1002", "Cy", secret="s3cret-enough-3", dnd=True),
            Extension("1003", "Di", secret="s3cret-enough-4", enabled=False)]
    return ConfigView.of(exts, inbound_routes=[InboundRoute("441632960500", "paging:500")],
                         records={model.TABLE: [GROUP, model.PagingGroup("501", "Night", ("1002", "1003"))]})


def test_a_page_calls_every_member_but_the_pager_and_those_on_dnd_or_disabled():
    plan = route_call("500", Caller("extension", "1000"), _view(), now=NOW)
    assert isinstance(plan, model.Page)
    assert plan.members == ("1001",) and plan.caller_id_name == "Page: Ann" and plan.ring_time == 10
    assert plan.describe() == "page 500 (Warehouse) [1001]"
    assert route_call("500", Caller("extension", "1001"), _view(), now=NOW).members == ("1000",)
    nobody = route_call("501", Caller("extension", "1000"), _view(), now=NOW)
    assert isinstance(nobody, Reject) and "no member to page" in nobody.reason
    from_trunk = route_call("441632960500", Caller("trunk", "carrier", number="07700900123"), _view(), now=NOW)
    assert isinstance(from_trunk, model.Page) and from_trunk.members == ("1000", "1001")


def test_star_80_num_is_an_intercom_to_that_extension():
    plan = route_call("*801001", Caller("extension", "1000"), _view(), now=NOW)
    assert plan == model.Intercom("1001", "1000", "Intercom: Ann")
    assert route_call("*801002", Caller("extension", "1000"), _view(), now=NOW).code == 486   # on DND
    assert route_call("*801009", Caller("extension", "1000"), _view(), now=NOW).code == 404
    assert route_call("*801000", Caller("extension", "1000"), _view(), now=NOW).code == 404   # itself


def test_the_auto_answer_headers_cover_the_phone_families():
    headers = model.auto_answer_headers("192.0.2.10")
    assert ("Call-Info", "<sip:192.0.2.10>;answer-after=0") in headers
    assert ("Alert-Info", "<http://www.notused.com>;info=alert-autoanswer;delay=0") in headers
    assert ("Alert-Info", "Ring Answer") in headers


def test_bad_groups_are_refused_naming_the_field(tmp_path):
    store = ConfigStore(tmp_path)
    store.add_extension("1001", "Bob")
    for group, field in ((model.PagingGroup("5", "x", members=("1001",)), "number"),
                         (model.PagingGroup("500", "", members=("1001",)), "name"),
                         (model.PagingGroup("500", "x"), "members"),
                         (model.PagingGroup("500", "x", members=("1001", "1001")), "members"),
                         (model.PagingGroup("500", "x", members=("1009",)), "members"),
                         (model.PagingGroup("500", "x", members=("1001",), ring_time=0), "ring_time")):
        with pytest.raises(ValidationError) as e:
            store.add_record(model.TABLE, group)
        assert e.value.field == field, str(e.value)


def test_the_paging_page_creates_edits_and_deletes_groups(tmp_path):
    from tests.browser.webui_env import admin_client, make_app, post
    data = tmp_path / "data"
    client = admin_client(make_app(data), data)
    store = ConfigStore(data)
    store.add_extension("1001", "Bob")
    store.add_extension("1002", "Cy")
    page = client.get("/paging").text
    assert "No paging groups." in page and "*80" in page
    r = post(client, "/paging/new", {"number": "500", "name": "Warehouse", "members": "1001 1009"})
    assert r.status_code == 400 and "no extension 1009" in r.text
    r = post(client, "/paging/new", {"number": "500", "name": "Warehouse", "members": "1001, 1002",
                                     "ring_time": "8"}, follow_redirects=True)
    assert "Paging group 500 (Warehouse) created" in r.text
    assert ConfigStore(data).record(model.TABLE, "500") == model.PagingGroup("500", "Warehouse", ("1001", "1002"), 8)
    post(client, "/paging/500", {"name": "Yard", "members": "1002", "ring_time": "10"})
    assert ConfigStore(data).record(model.TABLE, "500").members == ("1002",)
    r = post(client, "/paging/500/delete", follow_redirects=True)
    assert "Paging group 500 deleted" in r.text
