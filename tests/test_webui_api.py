"""REST API: CRUD with token auth, validation answers naming the field, OpenAPI covering every route."""
import json
import re

import pytest

from firmware.config import ConfigStore
from tests.browser.webui_env import admin_client, api, post


@pytest.fixture
def token(app, data):
    admin = admin_client(app, data)
    page = post(admin, "/system/tokens", {"label": "tests"}, follow_redirects=True).text
    return re.search(r'id="new-token">([^<]+)<', page).group(1)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def store(data):
    return ConfigStore(data)


def call(client, token, method, url, body=None):
    kw = {"json": body} if body is not None else {}
    return api(client, method, url, token=token, **kw)


def test_extension_lifecycle_over_the_api(client, token, store):
    r = call(client, token, "POST", "/api/v1/extensions", {"number": "201", "name": "Ann"})
    assert r.status_code == 201
    secret = r.get_json()["secret"]
    assert store.get_extension("201").secret == secret
    listed = call(client, token, "GET", "/api/v1/extensions").get_json()
    assert listed == [{"number": "201", "name": "Ann", "enabled": True, "registered": False, "contacts": [],
                       "dnd": False, "forward_always": "", "forward_busy": "", "forward_no_answer": "",
                       "external_caller_id": "", "department": ""}]
    assert call(client, token, "GET", "/api/v1/extensions/201").get_json()["secret"] == secret
    r = call(client, token, "PATCH", "/api/v1/extensions/201", {"name": "Ann B", "enabled": False})
    assert r.get_json()["name"] == "Ann B" and store.get_extension("201").enabled is False
    new = call(client, token, "POST", "/api/v1/extensions/201/secret").get_json()["secret"]
    assert new != secret and store.get_extension("201").secret == new
    assert call(client, token, "DELETE", "/api/v1/extensions/201").status_code == 204
    assert call(client, token, "GET", "/api/v1/extensions/201").status_code == 404


def test_api_validation_errors_name_each_field(client, token, store):
    r = call(client, token, "POST", "/api/v1/extensions", {"number": "0", "name": "", "secret": "123"})
    assert r.status_code == 400
    fields = {e["field"] for e in r.get_json()["errors"]}
    assert fields == {"number", "name", "secret"}
    r = call(client, token, "POST", "/api/v1/extensions", {"number": "201", "nmae": "typo"})
    assert r.status_code == 400
    assert {"field": "nmae", "message": "unknown field"} in r.get_json()["errors"]
    assert {"field": "name", "message": "is required"} in r.get_json()["errors"]
    r = api(client, "POST", "/api/v1/extensions", token=token, data="number=201", content_type="text/plain")
    assert r.status_code == 400 and "JSON object" in r.get_json()["error"]
    call(client, token, "POST", "/api/v1/extensions", {"number": "201", "name": "Ann"})
    r = call(client, token, "POST", "/api/v1/extensions", {"number": "201", "name": "Again"})
    assert r.status_code == 409 and "already exists" in r.get_json()["error"]
    assert [e.name for e in store.extensions()] == ["Ann"]


def test_trunks_and_routes_over_the_api(client, token, store):
    r = call(client, token, "POST", "/api/v1/trunks",
             {"name": "carrier", "host": "sip.example.com:5060", "username": "acct", "secret": "Trunk-Pass-1"})
    assert r.status_code == 201
    assert r.get_json() == {"name": "carrier", "host": "sip.example.com:5060", "username": "acct",
                            "register": True, "transport": "udp", "secret_set": True}
    assert "Trunk-Pass-1" not in call(client, token, "GET", "/api/v1/trunks").text
    r = call(client, token, "POST", "/api/v1/trunks", {"name": "bad", "host": "-bad-.example", "register": False})
    assert r.status_code == 400 and r.get_json()["errors"][0]["field"] == "host"
    call(client, token, "POST", "/api/v1/extensions", {"number": "201", "name": "Ann"})
    assert call(client, token, "POST", "/api/v1/inbound-routes",
                {"did": "+442071234567", "destination": "201"}).status_code == 201
    r = call(client, token, "POST", "/api/v1/outbound-routes",
             {"name": "intl", "pattern": "_900.", "trunk": "carrier", "strip": 1})
    assert r.status_code == 201 and r.get_json()["pattern"] == "_900."
    r = call(client, token, "POST", "/api/v1/outbound-routes", {"name": "x", "pattern": "_9!X", "trunk": "carrier"})
    assert r.status_code == 400 and r.get_json()["errors"][0]["field"] == "pattern"
    r = call(client, token, "PATCH", "/api/v1/outbound-routes/intl", {"strip": "1"})
    assert r.status_code == 400 and "whole number" in r.get_json()["errors"][0]["message"]
    assert call(client, token, "PATCH", "/api/v1/outbound-routes/intl", {"prepend": "+"}).get_json()["prepend"] == "+"
    r = call(client, token, "DELETE", "/api/v1/trunks/carrier")
    assert r.status_code == 409 and "intl" in r.get_json()["error"]
    r = call(client, token, "DELETE", "/api/v1/extensions/201")
    assert r.status_code == 409 and "+442071234567" in r.get_json()["error"]
    assert call(client, token, "DELETE", "/api/v1/outbound-routes/intl").status_code == 204
    assert call(client, token, "DELETE", "/api/v1/trunks/carrier").status_code == 204
    assert store.trunks() == [] and len(store.inbound_routes()) == 1


def test_settings_patch_is_all_or_nothing(client, token, store):
    r = call(client, token, "PATCH", "/api/v1/settings", {"site_name": "Acme", "no_answer_timeout": 1})
    assert r.status_code == 400 and r.get_json()["errors"][0]["field"] == "no_answer_timeout"
    assert store.settings().site_name == "Office PBX"
    r = call(client, token, "PATCH", "/api/v1/settings", {"site_name": "Acme", "mode": "night"})
    assert r.get_json()["mode"] == "night" and store.settings().site_name == "Acme"


def test_backup_and_restore_over_the_api_refuse_a_bad_document_whole(client, token, store):
    store.add_extension("201", "Ann")
    backup = call(client, token, "GET", "/api/v1/backup").get_json()
    assert backup["format"] == "officepbx-config" and backup["extensions"][0]["number"] == "201"
    store.add_extension("202", "Bob")
    broken = dict(backup, outbound_routes=[{"name": "x", "pattern": "_9", "trunk": "missing"}])
    r = call(client, token, "POST", "/api/v1/restore", broken)
    assert r.status_code == 400 and "no trunk missing" in json.dumps(r.get_json())
    assert [e.number for e in store.extensions()] == ["201", "202"]
    r = call(client, token, "POST", "/api/v1/restore", backup)
    assert r.get_json()["restored"]["extensions"] == 1
    assert [e.number for e in store.extensions()] == ["201"]


def test_cdr_over_the_api_checks_its_filters(client, token):
    assert call(client, token, "GET", "/api/v1/cdr").get_json() == []
    r = call(client, token, "GET", "/api/v1/cdr?limit=0&since=x")
    assert r.status_code == 400 and {e["field"] for e in r.get_json()["errors"]} == {"limit", "since"}
    assert call(client, token, "GET", "/api/v1/cdr.csv").text.startswith("call_id,")


def test_status_says_not_running_without_the_pbx(client, token):
    r = call(client, token, "GET", "/api/v1/status").get_json()
    assert r["running"] is False and "not running" in r["reason"]


def test_openapi_describes_exactly_the_api_routes(app, client, token):
    spec = call(client, token, "GET", "/api/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    described = {(path, method.upper()) for path, item in spec["paths"].items()
                 for method in item if method != "parameters"}
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/"):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            served |= {(path, m) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert described == served
    for path, item in spec["paths"].items():
        for name in re.findall(r"{(\w+)}", path):
            params = item.get("parameters", [])
            assert any(p["name"] == name and p["in"] == "path" for p in params), path


def test_api_docs_page_lists_every_endpoint(app, data):
    admin = admin_client(app, data)
    html = admin.get("/api/docs").text
    assert "/api/v1/extensions/{number}/secret" in html and "OutboundRoute" in html
