"""Settings page: every site setting after the wizard, checked field by field, saved all or nothing."""
import logging


from firmware.config import ConfigStore
from tests.browser.webui_env import admin_client, form_error, post

GOOD = {"site_name": "Acme Ltd", "timezone": "Europe/London", "country": "uk", "sip_domain": "192.0.2.10",
        "no_answer_timeout": "25", "record_calls": "on", "recording_retention_days": "90",
        "smtp_host": "smtp.example.com", "smtp_port": "587", "smtp_tls": "starttls",
        "smtp_user": "pbx", "smtp_password": "Mail-Pass-123", "smtp_from": "pbx@example.com"}


def test_settings_page_is_linked_in_the_navigation_and_shows_the_current_values(admin, data):
    ConfigStore(data).update_settings(site_name="Acme", no_answer_timeout=40)
    nav = admin.get("/dashboard").text
    assert 'href="/settings"' in nav
    page = admin.get("/settings").text
    assert 'value="Acme"' in page and 'value="40"' in page


def test_settings_are_saved_and_the_post_redirects_so_a_reload_sends_nothing(admin, data, app):
    r = post(admin, "/settings", GOOD)
    assert r.status_code == 302 and r.location.endswith("/settings")
    s = ConfigStore(data).settings()
    assert (s.site_name, s.timezone, s.sip_domain, s.no_answer_timeout) == ("Acme Ltd", "Europe/London",
                                                                          "192.0.2.10", 25)
    assert (s.record_calls, s.recording_retention_days) == (True, 90)
    assert (s.smtp_host, s.smtp_port, s.smtp_user, s.smtp_password, s.smtp_from, s.smtp_tls) == (
        "smtp.example.com", 587, "pbx", "Mail-Pass-123", "pbx@example.com", "starttls")
    page = admin.get("/settings").text
    assert "Settings saved" in page and "Mail-Pass-123" not in page       # the password is never shown
    audit = app.extensions["pbx.accounts"].audit_log(1)[0]
    assert audit.event == "settings_changed" and "smtp_password" in audit.detail
    assert "Mail-Pass-123" not in audit.detail
    # an empty password field keeps the stored one; the checkbox removes it
    assert post(admin, "/settings", {**GOOD, "smtp_password": ""}).status_code == 302
    assert ConfigStore(data).settings().smtp_password == "Mail-Pass-123"
    post(admin, "/settings", {**GOOD, "smtp_password": "", "smtp_password_clear": "on"})
    assert ConfigStore(data).settings().smtp_password == ""


def test_every_bad_setting_is_named_at_its_field_and_nothing_is_saved(admin, data):
    before = ConfigStore(data).path.read_bytes()
    bad = {**GOOD, "site_name": "", "timezone": "Mars/Olympus", "sip_domain": "not a host!",
           "no_answer_timeout": "2", "recording_retention_days": "forever", "smtp_port": "70000",
           "smtp_from": "nobody", "smtp_tls": "ssl3"}
    r = post(admin, "/settings", bad)
    assert r.status_code == 400
    assert "must not be empty" in form_error(r.text, "site_name")
    assert "unknown time zone" in form_error(r.text, "timezone")
    assert "not a host name" in form_error(r.text, "sip_domain")
    assert "choose 5 to 300 seconds" in form_error(r.text, "no_answer_timeout")
    assert "'forever' is not a whole number" in form_error(r.text, "recording_retention_days")
    assert "choose 1 to 65535" in form_error(r.text, "smtp_port")
    assert "not an e-mail address" in form_error(r.text, "smtp_from")
    assert "not one of" in form_error(r.text, "smtp_tls")
    assert 'value="forever"' in r.text                     # what was typed stays in the field
    assert ConfigStore(data).path.read_bytes() == before
    r = post(admin, "/settings", {**GOOD, "smtp_from": ""})
    assert "needs a sender address" in form_error(r.text, "smtp_from")


def test_the_smtp_password_never_reaches_the_log_or_the_api(admin, app, caplog):
    caplog.set_level(logging.DEBUG)
    post(admin, "/settings", GOOD)
    assert "Mail-Pass-123" not in caplog.text and "smtp_password" in caplog.text
    doc = admin.get("/api/v1/settings", headers={"X-CSRF-Token": "x"}).get_json()
    assert "smtp_password" not in doc and doc["smtp_password_set"] is True
    assert "Mail-Pass-123" not in admin.get("/settings").text


def test_settings_page_is_for_administrators_only(app, data):
    admin_client(app, data)
    assert app.test_client().get("/settings").status_code == 302          # to the login page
