"""Attacks on the web UI and API: what an anonymous caller, a guesser on the LAN, a forged form,
a hostile backup file or a stolen cookie can do. Each spec names the attack and the expected refusal.

The Flask test client stands in for browsers (environ_base={"REMOTE_ADDR": ...} puts a client at a
LAN address); one spec runs the real web server on a LAN-facing address and attacks it from a
network namespace (tests/lanhost.py), so the address it locks is the one the kernel saw.
"""
from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
import time
import urllib.parse

import pytest

from firmware.config import ConfigStore
from tests.browser.webui_env import (ADMIN_PASSWORD, PUBLIC_ENDPOINTS, SAMPLE_ARGS, admin_client, api,
                                     complete_setup, csrf, every_route, login,
                                     post)
from tests.pbxproc import ROOT, free_port
from webui.auth import accounts as accounts_mod

ADMIN_ADDR = "198.18.7.10"     # the real admin's PC
ATTACKER_ADDR = "198.18.7.66"  # a guesser on the office LAN

PUBLIC = PUBLIC_ENDPOINTS


@pytest.fixture
def clock(app):
    now = [1_000_000.0]
    app.extensions["pbx.accounts"]._clock = lambda: now[0]
    return now


def client_at(app, addr: str):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = addr
    return client


def openapi_operations(app, with_body=False):
    from webui.api.openapi import spec
    with app.test_request_context():
        paths = spec(app)["paths"]
    for path, item in paths.items():
        url = re.sub(r"{(\w+)}", lambda m: str(SAMPLE_ARGS.get(m.group(1), "x1")), path)
        for method, op in item.items():
            if method != "parameters" and (not with_body or "requestBody" in op):
                yield method.upper(), url


def assert_refused_anonymous(r, method, url):
    assert r.status_code != 500, (method, url, r.text[:300])
    if url.startswith("/api/") and url != "/api/docs":
        assert r.status_code == 401, (method, url, r.status_code, r.text[:200])
        assert r.headers["WWW-Authenticate"].startswith("Bearer"), (method, url)
        assert r.is_json and r.get_json()["error"], (method, url)
    else:
        assert r.status_code == 302 and "/login" in r.location, (method, url, r.status_code)


def config_snapshot(app, data) -> str:
    doc = ConfigStore(data).export_config()
    doc.pop("exported")
    accounts = app.extensions["pbx.accounts"]
    tokens = [{k: v for k, v in t.items() if k != "last_used"} for t in accounts.tokens()]
    return json.dumps([doc, [a.__dict__ for a in accounts.accounts()], tokens], sort_keys=True)


# --- anonymous callers ---------------------------------------------------------------------------
def test_anonymous_calls_on_every_openapi_operation_get_401_with_www_authenticate(app, data):
    """Item 14: who is asking comes before the form token, so an anonymous change gets 401, not
    'CSRF token missing'; and nothing described in the API spec answers an anonymous caller."""
    complete_setup(app.test_client(), data)
    ops = list(openapi_operations(app))
    assert len(ops) > 20
    for method, url in ops:
        body = {"json": {"number": "301", "name": "Eve"}} if method in ("POST", "PATCH") else {}
        r = app.test_client().open(url, method=method, **body)   # no cookie, no token, no CSRF
        assert_refused_anonymous(r, method, url)
        r = app.test_client().open(url, method=method, headers={"Authorization": "Bearer pbx_forged"}, **body)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer"), (method, url)


def test_anonymous_requests_on_every_flask_route_are_refused_with_or_without_a_form_token(app, data):
    complete_setup(app.test_client(), data)
    before = config_snapshot(app, data)
    for with_token in (False, True):
        client = app.test_client()
        headers = {"X-CSRF-Token": csrf(client)} if with_token else {}
        for endpoint, method, url in every_route(app):
            if endpoint in PUBLIC:
                continue
            r = client.open(url, method=method, headers=headers, data={"number": "301", "name": "Eve"})
            assert_refused_anonymous(r, method, url)
    assert config_snapshot(app, data) == before


def test_public_routes_never_answer_500_to_anonymous_callers(app, data):
    complete_setup(app.test_client(), data)
    for endpoint, method, url in every_route(app):
        if endpoint in PUBLIC:
            r = app.test_client().open(url, method=method, data={"username": "x" * 5000, "password": "\x00"})
            assert r.status_code < 500, (method, url, r.status_code)


# --- login lockout per (account, address) -------------------------------------------------------
def test_wrong_logins_from_one_address_lock_that_address_not_the_admin_elsewhere(app, data, clock):
    """Item 7: five wrong passwords from the attacker lock the attacker out; the admin at their own
    PC logs in as usual, and the lockout is in the audit log with the attacker's address."""
    complete_setup(app.test_client(), data)
    attacker = client_at(app, ATTACKER_ADDR)
    for i in range(accounts_mod.MAX_FAILURES):
        assert login(attacker, "admin", f"guess-number-{i}").status_code == 401
    r = login(attacker, "admin", ADMIN_PASSWORD)        # even the right password: locked here
    assert r.status_code == 429 and "too many failed logins" in r.text
    admin = client_at(app, ADMIN_ADDR)
    r = login(admin, "admin", ADMIN_PASSWORD)
    assert r.status_code == 302 and r.location.endswith("/dashboard"), r.text
    assert admin.get("/extensions").status_code == 200
    log = app.extensions["pbx.accounts"].audit_log()
    assert any(a.event == "lockout" and a.username == "admin" and a.address == ATTACKER_ADDR for a in log)
    assert any(a.event == "login_blocked" and a.address == ATTACKER_ADDR for a in log)
    assert any(a.event == "login" and a.address == ADMIN_ADDR for a in log)
    assert not any(a.address == ADMIN_ADDR and a.event in ("login_blocked", "lockout") for a in log)


def test_the_attackers_address_is_locked_for_every_account_and_unlocks_after_the_lock_time(app, data, clock):
    complete_setup(app.test_client(), data)
    attacker = client_at(app, ATTACKER_ADDR)
    for i in range(accounts_mod.MAX_FAILURES):   # a different account name each time
        assert login(attacker, f"user{i}", "guess-password").status_code == 401
    assert login(attacker, "admin", ADMIN_PASSWORD).status_code == 429
    assert login(client_at(app, ADMIN_ADDR), "admin", ADMIN_PASSWORD).status_code == 302
    clock[0] += accounts_mod.LOCK_SECONDS + 1
    assert login(attacker, "admin", ADMIN_PASSWORD).status_code == 302


def test_a_forged_x_forwarded_for_header_does_not_move_the_lock_to_the_admins_address(app, data, clock):
    """The web server is not behind a proxy: REMOTE_ADDR is the peer; X-Forwarded-For is the attacker's text."""
    complete_setup(app.test_client(), data)
    attacker = client_at(app, ATTACKER_ADDR)
    for i in range(accounts_mod.MAX_FAILURES + 2):
        attacker.get("/login")
        attacker.post("/login", data={"username": "admin", "password": f"guess-{i}",
                                      "csrf_token": csrf(attacker)},
                      headers={"X-Forwarded-For": ADMIN_ADDR, "X-Real-IP": ADMIN_ADDR, "Forwarded": f"for={ADMIN_ADDR}"})
    assert login(client_at(app, ADMIN_ADDR), "admin", ADMIN_PASSWORD).status_code == 302
    log = app.extensions["pbx.accounts"].audit_log(event="login_failed")
    assert log and {a.address for a in log} == {ATTACKER_ADDR}


def test_guessing_from_many_addresses_slows_guessers_but_never_locks_the_admin_out(app, data, clock):
    """The global safety net: once an account is under attack from many addresses, each address
    must wait between attempts for it; an address that has not failed logs in at once."""
    complete_setup(app.test_client(), data)
    attackers = [client_at(app, f"198.18.8.{n}") for n in range(1, 9)]
    for i in range(accounts_mod.MAX_FAILURES - 1):        # stay under the per-address lock
        for attacker in attackers:
            clock[0] += 1
            assert login(attacker, "admin", f"guess-{i}").status_code in (401, 429)
    assert len(app.extensions["pbx.accounts"].audit_log(event="login_attack")) == 1
    r = login(attackers[0], "admin", "guess-again")        # too soon after its last failure
    assert r.status_code == 429 and "wait" in r.text
    admin = client_at(app, ADMIN_ADDR)
    assert login(admin, "admin", ADMIN_PASSWORD).status_code == 302
    typo = client_at(app, "198.18.9.1")                     # the admin mistyping under attack
    assert login(typo, "admin", "Correct-Horse-41").status_code == 401
    r = login(typo, "admin", ADMIN_PASSWORD)
    assert r.status_code == 429 and "seconds" in r.text     # slowed down...
    clock[0] += accounts_mod.SLOWDOWN_SECONDS + 1
    assert login(typo, "admin", ADMIN_PASSWORD).status_code == 302   # ...never locked out


# --- CSRF ----------------------------------------------------------------------------------------
def test_csrf_is_refused_on_every_state_changing_route_for_a_logged_in_admin(app, data):
    admin = admin_client(app, data)
    before = config_snapshot(app, data)
    changing = [(e, m, u) for e, m, u in every_route(app) if m in ("POST", "PUT", "PATCH", "DELETE")]
    assert len(changing) > 25
    for endpoint, method, url in changing:
        for form in ({}, {"csrf_token": "forged"}):
            r = admin.open(url, method=method, data={"number": "301", "name": "Eve", **form})
            assert r.status_code == 400, (endpoint, method, url, r.status_code)
            text = r.get_json()["error"] if r.is_json else r.text
            assert "CSRF" in text, (endpoint, url)
        r = admin.open(url, method=method, json={"number": "301"}, headers={"X-CSRF-Token": "forged"})
        assert r.status_code == 400, (endpoint, method, url, r.status_code)
    assert config_snapshot(app, data) == before
    assert admin.get("/extensions").status_code == 200   # still logged in: logout needs the token too


# --- XSS -----------------------------------------------------------------------------------------
PAYLOADS = ('<script>alert("pbx")</script>', '"><svg onload=alert(1)>', "'><img src=x onerror=alert(2)>")
FORMS = {
    "/extensions/new": {"number": "301", "name": "Eve", "secret": "", "web_password": ""},
    "/trunks/new": {"name": "xss", "host": "sip.example.com", "username": "acct", "secret": "", "transport": "udp"},
    "/routes/inbound/new": {"did": "5550199", "destination": "201", "name": "Main"},
    "/routes/outbound/new": {"name": "xss", "pattern": "_9.", "trunk": "carrier", "fallback_trunk": "",
                             "strip": "0", "prepend": ""},
}
PAGES = ("/dashboard", "/extensions", "/extensions/201", "/trunks", "/trunks/carrier", "/routes", "/system", "/cdr")


def test_xss_payloads_in_every_text_field_come_back_escaped(app, data):
    admin = admin_client(app, data)
    assert post(admin, "/extensions/new", {"number": "201", "name": "Ann"}).status_code == 302
    assert post(admin, "/trunks/new", {"name": "carrier", "host": "sip.example.com", "transport": "udp"}
                ).status_code == 302
    for url, fields in FORMS.items():
        for field in fields:
            for payload in PAYLOADS:
                r = post(admin, url, {**fields, field: payload})
                assert r.status_code in (200, 302, 400), (url, field, r.status_code)
                shown = [r.text] + [admin.get(p).text for p in PAGES]
                shown += [admin.get(p).text for p in ("/extensions/301", "/trunks/xss", "/routes/outbound/xss",
                                                      "/routes/inbound/5550199")]
                for text in shown:
                    assert payload not in text, (url, field, payload)
                    assert "<svg" not in text and "<img src=x" not in text, (url, field, payload)
                if r.status_code == 400 and "secret" not in field and "password" not in field:
                    # the form came back with the value: escaped, not dropped
                    assert "&lt;" in r.text or "&#34;&gt;" in r.text or "&#39;&gt;" in r.text, (url, field)


# --- sessions ------------------------------------------------------------------------------------
def _cookie(client) -> str:
    return client.get_cookie("pbx_session").value


def test_a_session_cookie_copied_before_logout_is_refused_after_it(app, data):
    """Item 13: logging out revokes the session on the server; the old cookie is worth nothing."""
    admin = admin_client(app, data)
    assert admin.get("/extensions").status_code == 200
    stolen = _cookie(admin)
    thief = app.test_client()
    thief.set_cookie("pbx_session", stolen)
    assert thief.get("/extensions").status_code == 200          # the copy works while logged in
    assert post(admin, "/logout").status_code == 302
    r = thief.get("/extensions")
    assert r.status_code == 302 and "/login" in r.location
    r = thief.get("/api/v1/extensions")
    assert r.status_code == 401
    replay = app.test_client()
    replay.set_cookie("pbx_session", stolen)
    with replay.session_transaction() as s:
        token = s["csrf"]
    r = replay.post("/api/v1/extensions", json={"number": "301", "name": "Eve"}, headers={"X-CSRF-Token": token})
    assert r.status_code == 401
    assert ConfigStore(data).get_extension("301") is None


def test_a_password_change_revokes_every_session_of_the_account(app, data):
    admin = admin_client(app, data)
    old = _cookie(admin)
    other = app.test_client()
    login(other, "admin", ADMIN_PASSWORD)
    r = post(admin, "/system/password", {"current_password": ADMIN_PASSWORD, "new_password": "Another-Long-Pass-9",
                                         "new_password2": "Another-Long-Pass-9"})
    assert r.status_code == 302
    assert admin.get("/extensions").status_code == 200          # this browser goes on
    assert other.get("/extensions").status_code == 302
    replay = app.test_client()
    replay.set_cookie("pbx_session", old)
    assert replay.get("/extensions").status_code == 302


def test_sessions_are_recorded_on_the_server_and_removed_at_logout(app, data):
    admin = admin_client(app, data)
    accounts = app.extensions["pbx.accounts"]
    assert len(accounts.sessions("admin")) == 1
    post(admin, "/logout")
    assert accounts.sessions("admin") == []
    assert any(a.event == "logout" for a in accounts.audit_log())


def test_a_session_ends_after_eight_idle_hours_on_the_server_too(app, data, clock):
    admin = admin_client(app, data)
    for _ in range(3):                      # in use: it goes on past eight hours from login
        clock[0] += 7 * 3600
        assert admin.get("/extensions").status_code == 200
    clock[0] += 8 * 3600 + 1                # idle longer than the session lifetime
    r = admin.get("/extensions")
    assert r.status_code == 302 and "/login" in r.location


# --- hostile input: never a 500, never HTML on the API ------------------------------------------
DEEP = b"[" * 100_000 + b"]" * 100_000
HUGE_NUMBER = b'{"format": "officepbx-config", "schema_version": ' + b"9" * 5000 + b"}"


@pytest.fixture
def token(app, data):
    admin = admin_client(app, data)
    ConfigStore(data).add_extension("201", "Ann")
    page = post(admin, "/system/tokens", {"label": "tests"}, follow_redirects=True).text
    return re.search(r'id="new-token">([^<]+)<', page).group(1)


@pytest.mark.parametrize("raw, reason", [(DEEP, "nested"), (HUGE_NUMBER, "digits")])
def test_hostile_restore_documents_are_refused_with_a_reason_and_change_nothing(app, data, token, raw, reason):
    """Item 12: 100,000 nested brackets or a 5,000-digit number: 400 with a reason, JSON on the API."""
    before = config_snapshot(app, data)
    client = app.test_client()
    r = api(client, "POST", "/api/v1/restore", token=token, data=raw, content_type="application/json")
    assert r.status_code in (400, 422) and r.is_json, (r.status_code, r.text[:200])
    assert reason in r.get_json()["error"]
    r = api(client, "POST", "/api/v1/restore", token=token,
            data={"backup_file": (__import__("io").BytesIO(raw), "backup.json", "application/json")})
    assert r.status_code in (400, 422) and r.is_json and reason in r.get_json()["error"]
    admin = app.test_client()
    login(admin, "admin", ADMIN_PASSWORD)
    r = post(admin, "/system/restore",
             {"backup_file": (__import__("io").BytesIO(raw), "backup.json", "application/json")})
    assert r.status_code == 400 and reason in r.text
    assert config_snapshot(app, data) == before


@pytest.mark.parametrize("raw", [DEEP, b'{"number": ' + b"1" * 5000 + b', "name": "x"}'])
def test_hostile_json_bodies_on_every_api_write_get_a_json_400(app, data, token, raw):
    before = config_snapshot(app, data)
    client = app.test_client()
    ops = list(openapi_operations(app, with_body=True))
    assert len(ops) >= 10
    for method, url in ops:
        r = api(client, method, url, token=token, data=raw, content_type="application/json")
        assert r.status_code in (400, 404, 422), (method, url, r.status_code, r.text[:200])
        assert r.is_json and r.get_json()["error"], (method, url)
    assert config_snapshot(app, data) == before


def test_an_unexpected_error_on_the_api_is_json_without_a_traceback(app, data, token, monkeypatch, caplog):
    def broken():
        raise RuntimeError("internal detail /srv/secret.py line 3")
    monkeypatch.setattr("webui.api.views.config_store", broken)
    r = api(app.test_client(), "GET", "/api/v1/extensions", token=token)
    assert r.status_code == 500 and r.is_json
    assert "internal detail" not in r.text and "Traceback" not in r.text
    assert "log" in r.get_json()["error"]
    assert "internal detail" in caplog.text                      # the box's log has it


def test_http_errors_on_the_api_are_json_never_html(app, data, token, monkeypatch):
    from werkzeug.exceptions import UnsupportedMediaType

    def unsupported():
        raise UnsupportedMediaType()
    monkeypatch.setattr("webui.api.views.config_store", unsupported)
    client = app.test_client()
    for method, url in (("GET", "/api/v1/extensions"), ("GET", "/api/v1/nothing-here"),
                        ("PUT", "/api/v1/settings")):
        r = api(client, method, url, token=token)
        assert r.is_json and r.get_json()["error"], (method, url, r.status_code, r.text[:100])
        assert "<html" not in r.text.lower() and "<!doctype" not in r.text.lower()



FORM_FIELDS = ("number", "name", "secret", "web_password", "host", "username", "transport", "register", "did",
               "destination", "pattern", "trunk", "fallback_trunk", "strip", "prepend", "label",
               "current_password", "new_password", "new_password2", "site_name", "country", "timezone",
               "sip_domain", "mode", "setup_code", "password", "password2", "no_answer_timeout",
               "busy_tone_seconds", "since", "until", "extension", "disposition", "limit",
               *(f"{k}_{i}" for k in ("number", "name") for i in range(4)))
HOSTILE_VALUES = ("\x00", "x" * 10_000, "9" * 5000, "1e309", "../../etc/passwd", "' OR 1=1 --", "[]")


def test_hostile_form_and_query_values_on_every_route_never_answer_500(app, data):
    admin = admin_client(app, data)
    ConfigStore(data).add_extension("201", "Ann")
    token = csrf(admin)
    for endpoint, method, url in every_route(app):
        if endpoint == "auth.logout":
            continue
        for value in HOSTILE_VALUES:
            values = dict.fromkeys(FORM_FIELDS, value)
            if method == "GET":
                r = admin.get(url, query_string=values)
            else:
                r = admin.open(url, method=method, data={**values, "csrf_token": token})
            assert r.status_code < 500, (method, url, value[:20], r.status_code)

# --- the real server, attacked from a LAN host --------------------------------------------------
def _http(conn_factory, method, path, headers=None, body=None):
    conn = conn_factory()
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def _web_login(conn_factory, password, extra_headers=None):
    status, headers, page = _http(conn_factory, "GET", "/login")
    assert status == 200, page[:200]
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode({"username": "admin", "password": password, "csrf_token": token})
    return _http(conn_factory, "POST", "/login", {"Cookie": cookie, **(extra_headers or {}),
                                                  "Content-Type": "application/x-www-form-urlencoded"}, form)


def test_real_web_server_wrong_logins_from_a_lan_host_do_not_lock_out_the_admin(tmp_path):
    from tests.lanhost import LanHost
    data = tmp_path / "data"
    accounts = accounts_mod.AccountStore(data)
    accounts.create("admin", ADMIN_PASSWORD, "admin")
    with LanHost() as lan:
        port = free_port(both=False, kind=__import__("socket").SOCK_STREAM)
        log = open(tmp_path / "webui.log", "wb")
        # The web server as `pbx run` starts it (python -m webui --host <SIP address>), on the
        # address facing the LAN host.
        proc = subprocess.Popen([sys.executable, "-m", "webui", "--data", str(data), "--host", lan.box_addr,
                                 "--port", str(port)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            # on a LAN address the UI is HTTPS with the box's own certificate (naming that
            # address), which the clients here trust, as a browser does once the user accepted it
            import ssl

            def trusting():
                return ssl.create_default_context(cafile=str(data / "tls" / "box.crt"))

            def from_box():
                return http.client.HTTPSConnection(lan.box_addr, port, timeout=10, context=trusting())

            def from_lan():
                conn = http.client.HTTPSConnection(lan.box_addr, port, timeout=10)
                sock = lan.socket(__import__("socket").AF_INET, __import__("socket").SOCK_STREAM)
                sock.settimeout(10)
                sock.connect((lan.box_addr, port))
                conn.sock = trusting().wrap_socket(sock, server_hostname=lan.box_addr)
                return conn

            deadline = time.monotonic() + 20
            while True:
                try:
                    if _http(from_box, "GET", "/healthz")[0] == 200:
                        break
                except OSError:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "webui.log").read_text()
                time.sleep(0.1)
            spoof = {"X-Forwarded-For": lan.box_addr, "Forwarded": f"for={lan.box_addr}"}
            for i in range(accounts_mod.MAX_FAILURES):
                status, _, page = _web_login(from_lan, f"lan-guess-{i}", spoof)
                assert status == 401, page[:300]
            status, _, page = _web_login(from_lan, ADMIN_PASSWORD, spoof)
            assert status == 429 and "too many failed logins" in page
            status, headers, page = _web_login(from_box, ADMIN_PASSWORD)
            assert status == 302 and headers["Location"].endswith("/dashboard"), (status, page[:300])
        finally:
            proc.terminate()
            proc.wait(10)
            log.close()
    audit = accounts_mod.AccountStore(data).audit_log()
    assert any(a.event == "lockout" and a.address == lan.host_addr for a in audit), audit
    assert {a.address for a in audit if a.event == "login_failed"} == {lan.host_addr}
    assert any(a.event == "login" and a.address == lan.box_addr for a in audit)
