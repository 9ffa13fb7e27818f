"""Web UI security rules: default-deny access, roles, setup code, lockout, CSRF, cookies, headers."""
import logging
import re
import sqlite3


from tests.browser.webui_env import (ADMIN_PASSWORD, PUBLIC_ENDPOINTS, USER_PASSWORD, admin_client, api,
                                     complete_setup, csrf, every_route, login, post, user_client)
from webui.auth import accounts as accounts_mod
from webui.wizard import setup_code

PUBLIC = PUBLIC_ENDPOINTS
USER_ENDPOINTS = {"dashboard.home", "me.index", "me.save", "me.call_handling", "me.reveal", "me.regenerate",
                  "me.password", "phone.index", "phone.credentials",
                  "api.extension_get", "api.extension_update", "api.extension_regenerate",
                  "api.openapi", "api.docs",
                  "phonebook.mine", "phonebook.add_mine", "phonebook.delete_mine", "phonebook.import_mine",
                  "phonebook.export_mine",
                  "queues.agent", "queues.agent_post", "queues.wallboard", "queues.wallboard_stream",
                  # the user's own mailbox and Follow Me (each view checks the extension is theirs)
                  "voicemail.mine", "voicemail.mailbox", "voicemail.audio", "voicemail.mark",
                  "voicemail.delete_message", "voicemail.settings", "voicemail.greeting_audio",
                  "voicemail.greeting_upload", "voicemail.greeting_delete", "followme.mine",
                  "queues.api_wallboard"}

def test_every_route_is_public_only_if_listed_or_marked_for_users(app):
    from webui.auth.guard import access_of
    with app.test_request_context():
        seen = {endpoint: access_of(endpoint) for endpoint, _, _ in every_route(app)}
    assert {e for e, a in seen.items() if a == "public"} == PUBLIC
    assert {e for e, a in seen.items() if a == "user"} == USER_ENDPOINTS
    assert len([e for e, a in seen.items() if a == "admin"]) > 40


def test_before_setup_every_route_leads_to_the_wizard(app, data):
    client = app.test_client()
    token = csrf(client)
    for endpoint, method, url in every_route(app):
        if endpoint in {"wizard.admin", "static", "auth.health"}:
            continue
        r = client.open(url, method=method, headers={"X-CSRF-Token": token})
        if url.startswith("/api/") and url != "/api/docs":
            assert r.status_code == 503, (method, url, r.status_code)
            assert "setup" in r.get_json()["error"]
        else:
            assert r.status_code == 302 and r.location.endswith("/setup"), (method, url, r.status_code)


def test_after_setup_every_non_public_route_refuses_anonymous(app, data):
    complete_setup(app.test_client(), data)
    client = app.test_client()
    token = csrf(client)   # a valid CSRF token: what is tested here is the login check
    for endpoint, method, url in every_route(app):
        if endpoint in PUBLIC:
            continue
        r = client.open(url, method=method, headers={"X-CSRF-Token": token})
        if url.startswith("/api/") and url != "/api/docs":
            assert r.status_code == 401, (method, url, r.status_code)
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
        else:
            assert r.status_code == 302 and "/login" in r.location, (method, url, r.status_code)


def test_extension_user_gets_403_on_every_admin_route(app, data):
    admin = admin_client(app, data)
    post(admin, "/setup/extensions", {"number_0": "201", "name_0": "Ann", "number_1": "202", "name_1": "Bob"})
    user = user_client(app, "201")
    token = csrf(user)
    with app.test_request_context():
        from webui.auth.guard import access_of
        admin_only = [(e, m, u) for e, m, u in every_route(app) if access_of(e) == "admin"]
    for endpoint, method, url in admin_only:
        r = user.open(url, method=method, headers={"X-CSRF-Token": token})
        assert r.status_code == 403, (method, url, r.status_code)


def test_extension_user_sees_and_changes_only_their_own_extension(app, data):
    store = __import__("firmware.config", fromlist=["ConfigStore"]).ConfigStore(data)
    store.add_extension("201", "Ann")
    store.add_extension("202", "Bob")
    complete_setup(app.test_client(), data)
    user = user_client(app, "201")
    assert api(user, "GET", "/api/v1/extensions/201").status_code == 200
    assert api(user, "GET", "/api/v1/extensions/202").status_code == 403
    assert api(user, "PATCH", "/api/v1/extensions/202", json={"name": "Mallory"}).status_code == 403
    assert api(user, "POST", "/api/v1/extensions/202/secret").status_code == 403
    # A user may rename their own extension, not set its SIP password.
    assert api(user, "PATCH", "/api/v1/extensions/201", json={"name": "Ann B"}).status_code == 200
    r = api(user, "PATCH", "/api/v1/extensions/201", json={"secret": "weakish-but-long"})
    assert r.status_code == 400 and r.get_json()["errors"][0]["field"] == "secret"
    assert store.get_extension("201").name == "Ann B"
    assert store.get_extension("202").name == "Bob"
    page = user.get("/me")
    assert "201" in page.text and "Ann B" in page.text
    # Bob is only a choice for a forward (an office directory), nothing of his extension's settings
    assert page.text.count("Bob") == 3 and page.text.count('<option value="202" >202 Bob</option>') == 3
    assert store.get_extension("202").secret not in page.text
    assert user.get("/").location.endswith("/me")


def test_setup_code_is_created_once_and_removed_when_the_admin_password_is_set(app, data):
    code = setup_code.read(data)
    assert re.fullmatch(r"[0-9a-f]{8}", code)
    assert (setup_code.path(data).stat().st_mode & 0o777) == 0o600
    assert setup_code.ensure(data, app.extensions["pbx.accounts"]) == code   # a restart keeps it
    complete_setup(app.test_client(), data)
    assert setup_code.read(data) is None
    assert app.test_client().get("/setup").location.endswith("/login")


def test_setup_refuses_wrong_code_weak_or_mismatched_password(app, data):
    client = app.test_client()
    code = setup_code.read(data)
    r = post(client, "/setup", {"setup_code": "deadbeef", "password": ADMIN_PASSWORD, "password2": ADMIN_PASSWORD})
    assert r.status_code == 400 and "wrong setup code" in r.text
    r = post(client, "/setup", {"setup_code": code, "password": "short", "password2": "short"})
    assert r.status_code == 400 and "at least 10 characters" in r.text
    r = post(client, "/setup", {"setup_code": code, "password": "1234567890123", "password2": "1234567890123"})
    assert r.status_code == 400 and "not only digits" in r.text
    r = post(client, "/setup", {"setup_code": code, "password": ADMIN_PASSWORD, "password2": ADMIN_PASSWORD + "x"})
    assert r.status_code == 400 and "differ" in r.text
    assert not app.extensions["pbx.accounts"].has_admin()


def test_repeated_wrong_setup_codes_lock_the_wizard_and_are_audited(app, data):
    client = app.test_client()
    for _ in range(accounts_mod.MAX_FAILURES):
        post(client, "/setup", {"setup_code": "00000000", "password": ADMIN_PASSWORD, "password2": ADMIN_PASSWORD})
    r = post(client, "/setup", {"setup_code": setup_code.read(data), "password": ADMIN_PASSWORD,
                                "password2": ADMIN_PASSWORD})
    assert r.status_code == 429 and "too many wrong setup codes" in r.text
    events = [a.event for a in app.extensions["pbx.accounts"].audit_log()]
    assert "lockout" in events and "setup_blocked" in events


def test_admin_password_is_stored_as_an_argon2id_hash(app, data):
    complete_setup(app.test_client(), data)
    rows = sqlite3.connect(data / "webui" / "webui.sqlite").execute("SELECT pw_hash FROM account").fetchall()
    assert rows[0][0].startswith("$argon2id$")
    assert ADMIN_PASSWORD not in (data / "webui" / "webui.sqlite").read_bytes().decode("latin-1")


def test_five_wrong_passwords_lock_the_account_then_it_unlocks_after_the_lock_time(app, data):
    now = [1_000_000.0]
    app.extensions["pbx.accounts"]._clock = lambda: now[0]
    complete_setup(app.test_client(), data)
    client = app.test_client()
    for i in range(accounts_mod.MAX_FAILURES):
        r = login(client, "admin", f"wrong-password-{i}")
        assert r.status_code == 401 and "wrong user name or password" in r.text
    r = login(client, "admin", ADMIN_PASSWORD)
    assert r.status_code == 429 and "too many failed logins" in r.text
    log = app.extensions["pbx.accounts"].audit_log()
    assert [a.event for a in log].count("login_failed") == accounts_mod.MAX_FAILURES
    assert any(a.event == "lockout" and a.username == "admin" for a in log)
    assert any(a.event == "login_blocked" for a in log)
    now[0] += accounts_mod.LOCK_SECONDS + 1
    r = login(client, "admin", ADMIN_PASSWORD)
    assert r.status_code == 302 and r.location.endswith("/dashboard")


def test_unknown_user_and_wrong_password_get_the_same_answer(app, data):
    complete_setup(app.test_client(), data)
    a = login(app.test_client(), "admin", "not-the-password")
    b = login(app.test_client(), "nobody", "not-the-password")
    assert a.status_code == b.status_code == 401
    assert "wrong user name or password" in a.text and "wrong user name or password" in b.text


def test_every_form_post_without_the_csrf_token_is_refused_and_changes_nothing(app, data):
    admin = admin_client(app, data)
    r = admin.post("/extensions/new", data={"number": "301", "name": "Eve"})
    assert r.status_code == 400 and "CSRF" in r.text
    r = admin.post("/extensions/new", data={"number": "301", "name": "Eve", "csrf_token": "forged"})
    assert r.status_code == 400
    r = admin.post("/api/v1/extensions", json={"number": "301", "name": "Eve"})
    assert r.status_code == 400 and "CSRF" in r.get_json()["error"]
    assert admin.get("/api/v1/extensions").get_json() == []
    assert post(admin, "/extensions/new", {"number": "301", "name": "Eve"}).status_code == 302


def test_api_tokens_authenticate_without_csrf_and_stop_working_when_revoked(app, data):
    admin = admin_client(app, data)
    r = post(admin, "/system/tokens", {"label": "monitoring"}, follow_redirects=True)
    token = re.search(r'id="new-token">([^<]+)<', r.text).group(1)
    anon = app.test_client()
    assert anon.get("/api/v1/extensions").status_code == 401
    assert anon.get("/api/v1/extensions", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert api(anon, "POST", "/api/v1/extensions", token=token,
               json={"number": "301", "name": "Eve"}).status_code == 201
    assert token not in (data / "webui" / "webui.sqlite").read_bytes().decode("latin-1")
    token_id = app.extensions["pbx.accounts"].tokens()[0]["id"]
    post(admin, f"/system/tokens/{token_id}/revoke")
    assert api(anon, "GET", "/api/v1/extensions", token=token).status_code == 401


def test_session_cookie_is_httponly_samesite_and_secure_over_https(app, data):
    client = app.test_client()
    r = client.get("/setup")
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    r = app.test_client().get("/setup", base_url="https://pbx.example")
    assert "Secure" in r.headers["Set-Cookie"]
    assert "Strict-Transport-Security" in r.headers


def test_security_headers_on_pages_and_api(app, data):
    admin = admin_client(app, data)
    for url in ("/dashboard", "/extensions", "/system", "/api/v1/extensions", "/login"):
        h = admin.get(url).headers
        assert "default-src 'self'" in h["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in h["Content-Security-Policy"]
        assert h["X-Content-Type-Options"] == "nosniff"
        assert h["X-Frame-Options"] == "DENY"
        assert h["Cache-Control"] == "no-store"


def test_login_starts_a_new_session_and_ignores_offsite_next(app, data):
    complete_setup(app.test_client(), data)
    client = app.test_client()
    before = csrf(client)
    r = post(client, "/login", {"username": "admin", "password": ADMIN_PASSWORD, "next": "//evil.example/x"})
    assert r.location.endswith("/dashboard")
    assert csrf(client) != before
    client = app.test_client()
    client.get("/login")
    r = post(client, "/login", {"username": "admin", "password": ADMIN_PASSWORD, "next": "/trunks"})
    assert r.location.endswith("/trunks")


def test_password_change_logs_out_every_other_session(app, data):
    first = admin_client(app, data)
    second = app.test_client()
    login(second, "admin", ADMIN_PASSWORD)
    assert second.get("/extensions").status_code == 200
    r = post(first, "/system/password", {"current_password": ADMIN_PASSWORD, "new_password": "Another-Long-Pass-9",
                                         "new_password2": "Another-Long-Pass-9"})
    assert r.status_code == 302
    assert first.get("/extensions").status_code == 200
    assert second.get("/extensions").status_code == 302


def test_logout_ends_the_session(app, data):
    admin = admin_client(app, data)
    post(admin, "/logout")
    assert admin.get("/extensions").status_code == 302


def test_no_password_secret_token_or_setup_code_reaches_the_log(app, data, caplog):
    caplog.set_level(logging.DEBUG)
    code = setup_code.read(data)
    admin = admin_client(app, data)
    r = post(admin, "/extensions/new", {"number": "201", "name": "Ann", "secret": "Sip-Secret-0001",
                                        "web_password": USER_PASSWORD})
    post(admin, "/extensions/201/reveal")
    regenerated = re.search(r'id="secret">([^<]+)<', post(admin, "/extensions/201/secret", follow_redirects=True).text).group(1)
    token = re.search(r'id="new-token">([^<]+)<', post(admin, "/system/tokens", {"label": "x"}, follow_redirects=True).text).group(1)
    post(admin, "/trunks/new", {"name": "carrier", "host": "sip.example.com", "username": "acct",
                                "secret": "Trunk-Pass-777", "register": "on", "transport": "udp"})
    login(app.test_client(), "admin", "Wrong-Guess-123")
    login(app.test_client(), "201", USER_PASSWORD)
    text = caplog.text
    assert "extension 201 added" in text and "audit" in text       # the events are logged...
    for secret in (code, ADMIN_PASSWORD, USER_PASSWORD, "Sip-Secret-0001", regenerated, token,
                   "Trunk-Pass-777", "Wrong-Guess-123"):
        assert secret not in text                                    # ...their secrets are not
    assert r.status_code == 302
