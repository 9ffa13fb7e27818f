"""The Mail page and the dashboard's mail banner (Flask test client; the browser spec is in
tests/browser/test_mailer_browser.py)."""
from __future__ import annotations

import time

from firmware.config import ConfigStore
from services.mailer import outbox
from services.mailer.sender import MailSender
from firmware.mailer import RetryPolicy
from tests.browser.webui_env import admin_client, form_error, make_app, post, user_client
from tests.mailer_smtp import SmtpServer


def test_test_e_mail_needs_a_mail_server_and_a_good_address(tmp_path):
    app = make_app(tmp_path)
    admin = admin_client(app, tmp_path)
    page = admin.get("/mail")
    assert page.status_code == 200 and "No mail server is set" in page.text
    r = post(admin, "/mail/test", {"to": "anna@office.example"})
    assert r.status_code == 400 and "no mail server is set" in form_error(r.text, "to")
    ConfigStore(tmp_path).update_settings(smtp_host="smtp.office.example", smtp_from="pbx@office.example",
                                          smtp_user="pbx", smtp_password="s3cret-password")
    r = post(admin, "/mail/test", {"to": "anna at office"})
    assert r.status_code == 400 and form_error(r.text, "to") == \
        "'anna at office' is not an e-mail address such as someone@example.com"
    r = post(admin, "/mail/test", {"to": "anna@office.example"})
    assert r.status_code == 302 and "/mail#m-" in r.location
    [m] = outbox.messages(tmp_path)
    assert m["state"] == "queued" and m["to"] == ["anna@office.example"] and m["ref"] == "test by admin"
    page = admin.get("/mail").text
    assert f'id="m-{m["id"]}"' in page and "waiting for the sender" in page
    assert "smtp.office.example:587 (STARTTLS, login as pbx), sender pbx@office.example" in page
    assert "s3cret-password" not in page
    data = admin.get("/mail/messages.json").get_json()
    assert data["messages"][0]["id"] == m["id"] and data["summary"]["queued"] == 1


def test_the_mail_page_is_for_admins_and_its_forms_need_the_csrf_token(tmp_path):
    app = make_app(tmp_path)
    admin = admin_client(app, tmp_path)
    ConfigStore(tmp_path).add_extension("201", "Reception")
    user = user_client(app, "201")
    assert user.get("/mail").status_code == 403
    assert app.test_client().get("/mail").status_code == 302          # to the login page
    r = admin.post("/mail/test", data={"to": "anna@office.example"})  # no token
    assert r.status_code in (400, 403) and outbox.messages(tmp_path) == []


def test_dashboard_shows_a_banner_while_mail_is_retrying_and_retry_now_sends_it(tmp_path):
    server = SmtpServer()
    ConfigStore(tmp_path).update_settings(smtp_host="127.0.0.1", smtp_port=server.port, smtp_tls="none",
                                          smtp_from="pbx@office.example")
    app = make_app(tmp_path)
    admin = admin_client(app, tmp_path)
    assert 'id="mail-banner"' in admin.get("/dashboard").text
    assert 'id="mail-banner" data-url="/mail" hidden' in admin.get("/dashboard").text
    sender = MailSender(tmp_path, policy=RetryPolicy(300, 300, 3600), timeout=5).start()
    try:
        message_id = outbox.enqueue(tmp_path, to="anna@office.example", subject="s", text="t")
        deadline = time.monotonic() + 20
        while outbox.status(tmp_path, message_id)["state"] != "retrying" and time.monotonic() < deadline:
            time.sleep(0.05)
        dash = admin.get("/dashboard").text
        assert "1 retrying, 0 failed in the last week" in dash and "Connection refused" in dash
        assert 'data-url="/mail" hidden' not in dash
        page = admin.get("/mail").text
        assert "Connection refused · next try" in page and "Retry now" in page
        with server:
            r = post(admin, f"/mail/{message_id}/retry")
            assert r.status_code == 302
            while outbox.status(tmp_path, message_id)["state"] != "sent" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert outbox.status(tmp_path, message_id)["state"] == "sent"
        assert 'data-url="/mail" hidden' in admin.get("/dashboard").text
        assert post(admin, "/mail/nonsense/retry").status_code == 400
    finally:
        sender.stop()
