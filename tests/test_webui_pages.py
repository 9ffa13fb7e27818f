"""Web UI pages: the wizard, every admin form's validation, CDR filters/CSV, backup/restore, dashboard."""
import io
import json
import re
import time

import pytest

from firmware.cdr import CallRecord, CdrStore, Disposition
from firmware.config import ConfigStore
from tests.browser.webui_env import (USER_PASSWORD, complete_setup, control_socket, form_error, login,
                                     make_app, post)


@pytest.fixture
def app(data):
    return make_app(data, STATUS_POLL_SECONDS=0.05, STREAM_MAX_SECONDS=2.0)


@pytest.fixture
def store(data):
    return ConfigStore(data)


# Wizard ----------------------------------------------------------------------------------------
def test_wizard_sets_site_and_first_extensions_which_the_store_holds_at_once(app, data, store):
    client = app.test_client()
    complete_setup(client, data)
    assert client.get("/setup/site").status_code == 200
    r = post(client, "/setup/site", {"site_name": "Acme Ltd", "timezone": "Europe/London", "country": "uk",
                                     "sip_domain": "192.0.2.10"})
    assert r.location.endswith("/setup/extensions")
    r = post(client, "/setup/extensions", {"number_0": "201", "name_0": "Reception",
                                           "number_1": "202", "name_1": "Sales"})
    assert r.location.endswith("/setup/done")
    settings = store.settings()
    assert (settings.site_name, settings.timezone, settings.sip_domain) == ("Acme Ltd", "Europe/London", "192.0.2.10")
    assert [(e.number, e.name) for e in store.extensions()] == [("201", "Reception"), ("202", "Sales")]
    done = client.get("/setup/done").text
    for ext in store.extensions():
        assert len(ext.secret) >= 20 and ext.secret in done
    assert "Acme Ltd" in client.get("/dashboard").text


def test_wizard_suggests_the_address_the_browser_used_as_the_phones_address(app):
    from webui.wizard.views import guess_sip_address
    with app.test_request_context(base_url="http://192.0.2.10:8080"):
        assert guess_sip_address() == "192.0.2.10"
    with app.test_request_context(base_url="http://pbx.office.lan"):
        assert guess_sip_address() == "pbx.office.lan"
    with app.test_request_context(base_url="http://127.0.0.1:8080"):
        assert not guess_sip_address().startswith("127.")


def test_wizard_site_step_names_each_bad_field(admin, store):
    r = post(admin, "/setup/site", {"site_name": "", "timezone": "Mars/Olympus", "country": "fr",
                                    "sip_domain": "not a host!"})
    assert r.status_code == 400
    assert "must not be empty" in form_error(r.text, "site_name")
    assert "unknown time zone" in form_error(r.text, "timezone")
    assert "not one of" in form_error(r.text, "country")
    assert "not a host name" in form_error(r.text, "sip_domain")
    assert store.settings().site_name == "Office PBX"


def test_wizard_extensions_are_added_all_or_none(admin, store):
    store.add_extension("202", "Existing")
    r = post(admin, "/setup/extensions", {"number_0": "201", "name_0": "Good", "number_1": "202", "name_1": "Clash",
                                          "number_2": "0123", "name_2": "Bad", "number_3": "201", "name_3": "Twice"})
    assert r.status_code == 400
    assert "extension 202 already exists" in r.text
    assert "is not 2-6 digits" in r.text
    assert "also in row 1" in r.text
    assert [e.number for e in store.extensions()] == ["202"]


# Extensions ------------------------------------------------------------------------------------
def test_new_extension_form_reports_each_problem_next_to_its_field_and_writes_nothing(admin, store):
    r = post(admin, "/extensions/new", {"number": "12a", "name": "", "secret": "short"})
    assert r.status_code == 400
    assert "not 2-6 digits" in form_error(r.text, "number")
    assert "must not be empty" in form_error(r.text, "name")
    assert "use at least 12" in form_error(r.text, "secret")
    assert store.extensions() == []
    store.add_extension("201", "Ann")
    r = post(admin, "/extensions/new", {"number": "201", "name": "Other"})
    assert "extension 201 already exists" in form_error(r.text, "number")
    r = post(admin, "/extensions/new", {"number": "203", "name": "Cy", "web_password": "123"})
    assert "at least 10" in form_error(r.text, "web_password")
    assert store.get_extension("203") is None


def test_created_extension_shows_its_generated_password_once_and_a_web_login_for_its_user(app, admin, store):
    r = post(admin, "/extensions/new", {"number": "201", "name": "Ann", "web_password": USER_PASSWORD},
             follow_redirects=True)
    assert r.status_code == 200
    secret = store.get_extension("201").secret
    assert f'id="secret">{secret}<' in r.text
    assert secret not in admin.get("/extensions/201").text            # hidden until revealed
    assert secret in post(admin, "/extensions/201/reveal", follow_redirects=True).text
    assert [a.event for a in app.extensions["pbx.accounts"].audit_log(5)][0] == "secret_revealed"
    user = app.test_client()
    assert login(user, "201", USER_PASSWORD).location.endswith("/me")


def test_regenerate_and_edit_extension(admin, store):
    old = store.add_extension("201", "Ann").secret
    r = post(admin, "/extensions/201/secret", follow_redirects=True)
    new = store.get_extension("201").secret
    assert new != old and new in r.text
    r = post(admin, "/extensions/201", {"name": "Ann Smith", "secret": ""})
    assert r.status_code == 302
    assert store.get_extension("201").name == "Ann Smith" and store.get_extension("201").secret == new
    r = post(admin, "/extensions/201", {"name": "Ann", "secret": "1234567890123"})
    assert "all digits" in form_error(r.text, "secret")
    assert admin.get("/extensions/999").status_code == 404


def test_extension_that_an_inbound_route_rings_cannot_be_deleted(admin, store, app):
    store.add_extension("201", "Ann")
    store.add_inbound_route("+442071234567", "201")
    r = post(admin, "/extensions/201/delete", follow_redirects=True)
    assert "extension 201 is the destination of inbound route +442071234567" in r.text
    assert store.get_extension("201") is not None
    store.remove_inbound_route("+442071234567")
    app.extensions["pbx.accounts"].create("201", USER_PASSWORD, "user", extension="201")
    assert post(admin, "/extensions/201/delete").status_code == 302
    assert store.get_extension("201") is None
    assert app.extensions["pbx.accounts"].get("201") is None      # the web login goes with it


def test_extension_list_shows_registration_state_from_the_running_pbx(admin, store, data):
    store.add_extension("201", "Ann")
    store.add_extension("202", "Bob")
    assert "PBX not running" in admin.get("/extensions").text
    status = {"uptime": 5, "version": "t", "calls": [], "trunks": [],
              "registrations": [{"aor": "sip:201@pbx", "contact": "sip:201@127.0.0.1:5062",
                                 "expires": 60, "user_agent": "TestPhone/1", "transport": "udp"}]}
    with control_socket(data, status):
        html = admin.get("/extensions").text
    row201 = re.search(r'<tr id="ext-201">.*?</tr>', html, re.S).group(0)
    row202 = re.search(r'<tr id="ext-202">.*?</tr>', html, re.S).group(0)
    assert ">registered<" in row201 and "TestPhone/1" in row201
    assert "not registered" in row202


# Trunks and routes -----------------------------------------------------------------------------
def test_trunk_form_checks_host_syntax_port_range_and_credentials(admin, store):
    r = post(admin, "/trunks/new", {"name": "Carrier One", "host": "sip..example", "register": "on",
                                    "transport": "udp"})
    assert r.status_code == 400
    assert "lower-case" in form_error(r.text, "name")
    assert "not a host name" in form_error(r.text, "host")
    assert "registration needs" in form_error(r.text, "username")
    r = post(admin, "/trunks/new", {"name": "carrier", "host": "203.0.113.5:70000", "transport": "udp"})
    assert "outside 1-65535" in form_error(r.text, "host")
    r = post(admin, "/trunks/new", {"name": "carrier", "host": "sip.example.com", "transport": "sctp"})
    assert "not one of" in r.text
    assert store.trunks() == []
    r = post(admin, "/trunks/new", {"name": "carrier", "host": "[2001:db8::1]:5060", "username": "acct",
                                    "secret": "Trunk-Pass-1", "register": "on", "transport": "tls"})
    assert r.status_code == 302
    assert store.get_trunk("carrier").transport == "tls"


def test_trunk_edit_keeps_the_password_when_left_empty_and_never_shows_it(admin, store):
    store.add_trunk("carrier", "sip.example.com", "acct", "Trunk-Pass-1")
    page = admin.get("/trunks/carrier").text
    assert "Trunk-Pass-1" not in page
    assert post(admin, "/trunks/carrier", {"host": "sip2.example.com", "username": "acct", "secret": "",
                                           "register": "on", "transport": "udp"}).status_code == 302
    assert store.get_trunk("carrier").secret == "Trunk-Pass-1"
    assert store.get_trunk("carrier").host == "sip2.example.com"


def test_trunk_used_by_a_route_cannot_be_deleted(admin, store):
    store.add_trunk("carrier", "sip.example.com", register=False)
    store.add_outbound_route("national", "_0NXXXXXXXXX", "carrier")
    r = post(admin, "/trunks/carrier/delete", follow_redirects=True)
    assert "used by outbound route(s) national" in r.text
    assert store.get_trunk("carrier") is not None


def test_outbound_route_form_explains_bad_patterns_and_trunk_choices(admin, store):
    store.add_trunk("carrier", "sip.example.com", register=False)
    cases = [
        ({"pattern": "_9Q"}, "pattern", "'Q' at position 3"),
        ({"pattern": "_9.X"}, "pattern", "must be the last character"),
        ({"pattern": "_9[5-1]X"}, "pattern", "runs backwards"),
        ({"pattern": "_9[1-"}, "pattern", "bad character class"),
        ({"pattern": "9X"}, "pattern", "neither a number"),
        ({"trunk": "nope"}, "trunk", "no trunk nope"),
        ({"fallback_trunk": "carrier"}, "fallback_trunk", "same as the first trunk"),
        ({"strip": "two"}, "strip", "not a whole number"),
        ({"prepend": "+44x"}, "prepend", "at most 20 digits"),
    ]
    for change, field, message in cases:
        form = {"name": "national", "pattern": "_9NXXXXXX", "trunk": "carrier", "fallback_trunk": "",
                "strip": "1", "prepend": "", **change}
        r = post(admin, "/routes/outbound/new", form)
        assert r.status_code == 400, change
        assert message in (form_error(r.text, field) or ""), (change, r.text[-800:])
    assert store.outbound_routes() == []
    store.add_trunk("backup", "sip.backup.example", register=False)
    r = post(admin, "/routes/outbound/new", {"name": "national", "pattern": "_9NXXXXXX", "trunk": "carrier",
                                             "fallback_trunk": "backup", "strip": "1", "prepend": "+44"})
    assert r.status_code == 302
    route = store.get_outbound_route("national")
    assert (route.fallback_trunk, route.dial_string("92071234")) == ("backup", "+442071234")


def test_inbound_route_form_needs_a_phone_number_and_an_existing_extension(admin, store):
    store.add_extension("201", "Ann")
    r = post(admin, "/routes/inbound/new", {"did": "020 7123", "destination": "999"})
    assert "not a phone number" in form_error(r.text, "did")
    r = post(admin, "/routes/inbound/new", {"did": "+442071234567", "destination": "999"})
    assert "no extension 999" in form_error(r.text, "destination")
    assert post(admin, "/routes/inbound/new", {"did": "+442071234567", "destination": "201"}).status_code == 302
    r = post(admin, "/routes/inbound/new", {"did": "+442071234567", "destination": "201"})
    assert "already exists" in form_error(r.text, "did")
    assert "+442071234567" in admin.get("/routes").text


# Call records ----------------------------------------------------------------------------------
def _calls(data):
    base = time.mktime((2026, 11, 20, 10, 0, 0, 0, 0, -1))
    cdr = CdrStore(data)
    cdr.write(CallRecord("c1", "201", "202", base, base + 3, base + 63, Disposition.ANSWERED))
    cdr.write(CallRecord("c2", "202", "203", base + 86400, None, base + 86410, Disposition.BUSY,
                         cause="486 Busy Here"))
    cdr.write(CallRecord("c3", "=HYPERLINK(\"http://x\")", "201", base + 2 * 86400, None,
                         base + 2 * 86400 + 5, Disposition.NO_ANSWER))
    cdr.write(CallRecord("c4", "+442071234567", "201", base + 2 * 86400 + 60, base + 2 * 86400 + 62,
                         base + 2 * 86400 + 90, Disposition.ANSWERED))
    cdr.close()


def test_cdr_page_filters_by_extension_disposition_and_date(admin, data):
    _calls(data)
    rows = lambda r: re.findall(r"<tr><td>\d{4}-\d\d-\d\d", r.text)  # noqa: E731
    assert len(rows(admin.get("/cdr"))) == 4
    assert len(rows(admin.get("/cdr?extension=203"))) == 1
    assert len(rows(admin.get("/cdr?disposition=BUSY"))) == 1
    assert len(rows(admin.get("/cdr?since=2026-11-21&until=2026-11-21"))) == 1
    r = admin.get("/cdr?since=yesterday&extension=2x&disposition=MAYBE")
    assert r.status_code == 400
    assert "use YYYY-MM-DD" in form_error(r.text, "since")
    assert "not a number" in form_error(r.text, "extension")
    assert "not one of" in form_error(r.text, "disposition")


def test_cdr_csv_export_uses_the_filters_and_defuses_spreadsheet_formulas(admin, data):
    _calls(data)
    r = admin.get("/cdr/export.csv?disposition=ANSWERED")
    assert r.mimetype == "text/csv" and "attachment" in r.headers["Content-Disposition"]
    lines = r.text.strip().splitlines()
    assert lines[0].startswith("call_id,src,dst,start") and len(lines) == 3
    assert "+442071234567" in r.text                          # a real number stays as it is
    text = admin.get("/cdr/export.csv?disposition=NO+ANSWER").text
    assert "'=HYPERLINK" in text and ",=HYPERLINK" not in text
    assert admin.get("/cdr/export.csv?since=bad").status_code == 400


# System: backup and restore --------------------------------------------------------------------
def _upload(admin, content: bytes, filename="backup.json", mimetype="application/json"):
    return post(admin, "/system/restore", {"backup_file": (io.BytesIO(content), filename, mimetype)},
                content_type="multipart/form-data")


def test_backup_then_restore_brings_back_the_whole_configuration(admin, store):
    store.add_extension("201", "Ann")
    store.add_trunk("carrier", "sip.example.com", "acct", "Trunk-Pass-1")
    store.add_inbound_route("+442071234567", "201")
    store.add_outbound_route("national", "_9NXXXXXX", "carrier", strip=1)
    store.update_settings(site_name="Acme")
    r = admin.get("/system/backup")
    assert "attachment" in r.headers["Content-Disposition"]
    backup = r.data
    store.remove_outbound_route("national")
    store.remove_inbound_route("+442071234567")
    store.remove_extension("201")
    store.add_extension("999", "Temp")
    r = _upload(admin, backup)
    assert r.status_code == 302
    assert [e.number for e in store.extensions()] == ["201"]
    assert store.get_outbound_route("national").strip == 1
    assert store.get_trunk("carrier").secret == "Trunk-Pass-1"
    assert store.settings().site_name == "Acme"


def test_restore_refuses_wrong_type_bad_json_and_bad_schema_and_changes_nothing(admin, store, app):
    store.add_extension("201", "Ann")
    before = store.path.read_bytes()
    good = json.loads(admin.get("/system/backup").data)
    cases = [
        (b"number,name\n", "extensions.csv", "text/csv", "not a .json backup file"),
        (b"\xff\xfe\x00", "backup.json", "application/json", "not UTF-8"),
        (b"{not json", "backup.json", "application/json", "not valid JSON"),
        (b"", "backup.json", "application/json", "empty"),
        (json.dumps({"hello": 1}).encode(), "backup.json", "application/json", "not a configuration backup"),
        (json.dumps({**good, "schema_version": 99}).encode(), "backup.json", "application/json", "schema version 99"),
    ]
    for content, name, mimetype, message in cases:
        r = _upload(admin, content, name, mimetype)
        assert r.status_code == 400 and message in r.text, (name, message)
    bad = dict(good, extensions=[{"number": "0", "name": "", "secret": "x", "enabled": True}],
               inbound_routes=[{"did": "+44", "destination": "777", "name": ""}])
    r = _upload(admin, json.dumps(bad).encode())
    assert r.status_code == 400 and "nothing changed" in r.text
    problems = re.search(r'<ul class="error" id="restore-errors">(.*?)</ul>', r.text, re.S).group(1)
    assert "extensions[0].number" in problems and "extensions[0].name" in problems
    assert "no extension 777" in problems
    assert store.path.read_bytes() == before
    assert [a.event for a in app.extensions["pbx.accounts"].audit_log(1)] == ["restore_refused"]


def test_restore_larger_than_one_megabyte_is_refused_before_reading(admin, store):
    r = _upload(admin, b"{" + b" " * (1024 * 1024 + 10) + b"}")
    assert r.status_code == 413 and "larger than 1024 kB" in r.text


def test_system_page_shows_version_disk_and_audit_log(admin):
    page = admin.get("/system").text
    assert "Version" in page and "GB free" in page and "setup_admin" in page


# Dashboard -------------------------------------------------------------------------------------
def test_dashboard_says_pbx_not_running_without_the_control_socket(admin, store):
    store.add_extension("201", "Ann")
    html = admin.get("/dashboard").text
    assert "PBX not running" in html and "201" in html


def test_dashboard_stream_pushes_a_new_event_when_a_phone_registers_or_a_call_starts(admin, store, data):
    store.add_extension("201", "Ann")
    store.add_extension("202", "Bob")
    status = {"uptime": 1.0, "version": "test", "registrations": [], "calls": [], "trunks": []}
    with control_socket(data, status):
        r = admin.get("/dashboard/stream", buffered=False)
        assert r.mimetype == "text/event-stream"
        chunks = iter(r.response)

        def next_event():
            buf = ""
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                buf += next(chunks).decode()
                if buf.startswith("event: status"):
                    return json.loads(buf.split("data: ", 1)[1])
                if buf.endswith("\n\n"):
                    buf = ""
            raise AssertionError("no event within 5 s")

        first = next_event()
        assert first["running"] and [e["registered"] for e in first["extensions"]] == [False, False]
        status["registrations"].append({"aor": "sip:201@pbx", "contact": "sip:201@127.0.0.1:5070",
                                        "expires": 60, "user_agent": "T", "transport": "udp"})
        second = next_event()
        assert [e["registered"] for e in second["extensions"]] == [True, False]
        status["calls"].append({"call_id": "x", "src": "201", "dst": "202", "state": "ringing",
                                "start": time.time(), "answer": None})
        third = next_event()
        assert third["calls"][0]["state"] == "ringing"
        r.close()


def test_dashboard_stream_ends_by_itself_after_its_lifetime(admin, data):
    started = time.monotonic()
    r = admin.get("/dashboard/stream", buffered=False)
    chunks = list(r.response)      # ends: STREAM_MAX_SECONDS is 2 s in these tests
    assert time.monotonic() - started < 10
    assert any(b"PBX not running" in c for c in chunks)


def test_a_corrupt_config_file_gets_a_clear_page_not_a_crash(admin, data):
    (data / "config.json").write_text("{ half a file")
    r = admin.get("/extensions")
    assert r.status_code == 503 and "not valid JSON" in r.text and "restore it from a backup" in r.text
    r = admin.get("/api/v1/extensions", headers={"X-CSRF-Token": "x"})
    assert r.status_code == 503 and "not valid JSON" in r.get_json()["error"]


# Issue 9: durations, Post/Redirect/Get, confirmations, paging, error page, own page, logins in backups
def test_dashboard_shows_the_uptime_in_hours_and_minutes_not_seconds(admin, data):
    from webui.timefmt import duration
    assert [duration(s) for s in (42, 725, 11520, 2 * 86400 + 5 * 3600)] == [
        "42 s", "12 min 5 s", "3 h 12 min", "2 d 5 h"]
    status = {"uptime": 11520.4, "version": "t", "registrations": [], "calls": [], "trunks": []}
    with control_socket(data, status):
        html = admin.get("/dashboard").text
    assert '<span id="uptime">3 h 12 min</span>' in html


def test_reloading_the_page_after_create_shows_the_result_and_posts_nothing_again(admin, store):
    r = post(admin, "/extensions/new", {"number": "201", "name": "Ann"})
    assert r.status_code == 302 and r.location.endswith("/extensions/201")
    secret = store.get_extension("201").secret
    first = admin.get(r.location).text
    assert f'id="secret">{secret}<' in first and "Extension 201 created" in first
    reload = admin.get(r.location).text                 # what the browser's reload does now
    assert secret not in reload and "already exists" not in reload


@pytest.mark.parametrize("url, form", [
    ("/trunks/new", {"name": "carrier", "host": "sip.example.com", "transport": "udp"}),
    ("/routes/inbound/new", {"did": "+442071234567", "destination": "201"}),
    ("/routes/outbound/new", {"name": "national", "pattern": "_9X.", "trunk": "t1", "strip": "1"}),
    ("/lines/new", {"number": "1", "kind": "fxs", "extension": "201"}),
    ("/settings", {"site_name": "Acme", "timezone": "UTC", "country": "uk", "no_answer_timeout": "30",
                   "recording_retention_days": "0", "smtp_port": "587", "smtp_tls": "starttls"}),
    ("/system/tokens", {"label": "monitoring"}),
])
def test_every_successful_form_post_redirects(admin, store, url, form):
    store.add_extension("201", "Ann")
    store.add_trunk("t1", "sip.example.com", register=False)
    assert post(admin, url, form).status_code == 302


def test_deleting_an_extension_asks_first_and_names_what_depends_on_it(admin, store, app):
    store.add_extension("201", "Ann")
    store.add_extension("390", "Line")
    store.add_inbound_route("+442071234567", "201")
    store.add_line_port(2, "fxo", "390", "201")
    page = admin.get("/extensions/201").text
    assert 'href="/extensions/201/delete"' in page and 'action="/extensions/201/delete"' not in page
    confirm = admin.get("/extensions/201/delete").text
    assert "extension 201 is the destination of inbound route +442071234567" in confirm
    assert "line port 2 (exchange line) rings extension 201" in confirm
    assert 'action="/extensions/201/delete"' not in confirm          # nothing to confirm yet
    store.remove_line_port(2)
    store.remove_inbound_route("+442071234567")
    app.extensions["pbx.accounts"].create("201", USER_PASSWORD, "user", extension="201")
    confirm = admin.get("/extensions/201/delete").text
    assert 'action="/extensions/201/delete"' in confirm and "web login 201" in confirm
    assert store.get_extension("201") is not None
    assert post(admin, "/extensions/201/delete").status_code == 302
    assert store.get_extension("201") is None


def test_deleting_a_trunk_or_route_asks_first_naming_the_routes_that_use_the_trunk(admin, store):
    store.add_extension("201", "Ann")
    store.add_trunk("carrier", "sip.example.com", register=False)
    store.add_outbound_route("national", "_9NXXXXXX", "carrier")
    store.add_inbound_route("+442071234567", "201")
    assert "outbound route national (_9NXXXXXX) sends calls to trunk carrier" in admin.get(
        "/trunks/carrier/delete").text
    assert 'action="/routes/outbound/national/delete"' in admin.get("/routes/outbound/national/delete").text
    assert "instead of going to extension 201" in admin.get("/routes/inbound/+442071234567/delete").text
    assert store.get_outbound_route("national") is not None and store.get_trunk("carrier") is not None


def _many_calls(data, n):
    base = time.mktime((2026, 11, 20, 10, 0, 0, 0, 0, -1))
    with CdrStore(data) as cdr:
        cdr.write_many([CallRecord(f"m{i}", str(200 + i % 7), "300", base + 60 * i, None, base + 60 * i + i % 13,
                                   Disposition.NO_ANSWER) for i in range(n)])


def test_cdr_page_pages_through_every_call_with_the_total_at_the_top(admin, data):
    _many_calls(data, 620)
    rows = lambda html: re.findall(r"<tr><td>(\d{4}-\d\d-\d\d [^<]+)</td><td[^>]*>(\d+)</td>", html)  # noqa: E731
    first = admin.get("/cdr").text
    assert "<strong>620</strong> calls" in first and "showing 1–50" in first
    assert len(rows(first)) == 50 and "page 1 of 13" in first
    last = admin.get("/cdr?page=13").text
    assert len(rows(last)) == 20 and "showing 601–620" in last
    seen = {r for p in range(1, 14) for r in rows(admin.get(f"/cdr?page={p}").text)}
    assert len(seen) == 620                                 # no call hidden behind a cap
    filtered = admin.get("/cdr?extension=203").text
    assert "<strong>89</strong> calls match these filters" in filtered
    assert 'href="/cdr?extension=203&amp;sort=start&amp;order=desc&amp;page=2"' in filtered


def test_cdr_columns_sort_both_ways(admin, data):
    _many_calls(data, 30)
    srcs = lambda html: [s for _, s in re.findall(r"<tr><td>(\d{4}-[^<]+)</td><td[^>]*>(\d+)</td>", html)]  # noqa: E731
    up = srcs(admin.get("/cdr?sort=src&order=asc").text)
    down = srcs(admin.get("/cdr?sort=src&order=desc").text)
    assert up == sorted(up) and down == sorted(down, reverse=True) and up[0] == "200"
    html = admin.get("/cdr?sort=duration&order=desc").text
    assert 'aria-sort="descending"' in html and "12 s" in html.split("<tbody>")[1][:400]
    assert admin.get("/cdr?sort=nonsense;DROP").status_code == 200        # unknown sort: by start


def test_an_upload_over_the_size_limit_gets_the_same_error_page_as_other_errors(admin):
    r = _upload(admin, b"{" + b" " * (1024 * 1024 + 10) + b"}")
    assert r.status_code == 413 and "larger than 1024 kB" in r.text
    assert '<header class="top">' in r.text and 'id="error-page"' in r.text and "File too large" in r.text
    missing = admin.get("/extensions/999")
    assert missing.status_code == 404 and 'id="error-page"' in missing.text


def test_users_page_shows_their_own_calls_and_a_new_sip_password_once(app, admin, store, data):
    from tests.browser.webui_env import user_client
    store.add_extension("201", "Ann")
    store.add_extension("202", "Bob")
    _calls(data)
    user = user_client(app, "201")
    page = user.get("/me").text
    assert "3 calls" in page and "486 Busy Here" not in page      # 202 -> 203 is not Ann's
    assert "← +442071234567" in page and "→ 202" in page
    assert 'id="my-voicemail-link"' in page                       # voicemail works (issue 10)
    assert "Do not disturb" in page and "Forward when busy" in page   # DND and forwards work (issue 8)
    old = store.get_extension("201").secret
    r = post(user, "/me/secret")
    assert r.status_code == 302 and r.location.endswith("/me")
    new = store.get_extension("201").secret
    assert new != old and f'id="secret">{new}<' in user.get("/me").text
    assert new not in user.get("/me").text                         # once only


def test_backup_carries_user_logins_as_hashes_and_restore_brings_them_back(app, admin, store):
    store.add_extension("201", "Ann")
    accounts = app.extensions["pbx.accounts"]
    accounts.create("201", USER_PASSWORD, "user", extension="201")
    raw = admin.get("/system/backup").data
    doc = json.loads(raw)
    assert [(x["username"], x["extension"]) for x in doc["web_logins"]] == [("201", "201")]
    assert doc["web_logins"][0]["pw_hash"].startswith("$argon2id$")
    assert USER_PASSWORD.encode() not in raw and b"admin" not in json.dumps(doc["web_logins"]).encode()
    accounts.delete("201")
    store.remove_extension("201")
    assert _upload(admin, raw).status_code == 302
    assert login(app.test_client(), "201", USER_PASSWORD).location.endswith("/me")
    bad = dict(doc, web_logins=[{"username": "201", "extension": "201", "pw_hash": "plain-password"}])
    r = _upload(admin, json.dumps(bad).encode())
    assert r.status_code == 400 and "web_logins[0].pw_hash: not an argon2 password hash" in r.text


def test_the_audit_log_records_the_wizards_site_settings_and_extensions(app, data):
    client = app.test_client()
    complete_setup(client, data)
    post(client, "/setup/site", {"site_name": "Acme Ltd", "timezone": "Europe/London", "country": "uk",
                                 "sip_domain": "192.0.2.10"})
    post(client, "/setup/extensions", {"number_0": "201", "name_0": "Reception", "number_1": "202", "name_1": "Sales"})
    log = [(a.event, a.detail) for a in app.extensions["pbx.accounts"].audit_log(10)]
    assert ("extension_added", "extension 201 (wizard)") in log and ("extension_added", "extension 202 (wizard)") in log
    site = [d for e, d in log if e == "settings_changed"]
    assert site and "site_name=Acme Ltd" in site[0] and "timezone=Europe/London" in site[0]
