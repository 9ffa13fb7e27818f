"""Mail in real Chromium against the whole PBX (`pbx run`, whose mail sender sends the outbox):
the SMTP form of the Settings page, the Mail page's test e-mail, and a message that shows
"retrying" (and why) while the SMTP server is down, then "sent" once aiosmtpd is started on its
port. The dashboard's banner comes and goes with it. Screenshots 70-74 in docs/screenshots/.
"""
from __future__ import annotations

import re
import time
import urllib.request

from playwright.sync_api import expect

from firmware.config import ConfigStore
from tests.browser import test_webui_browser as specs
from tests.browser.webui_env import ADMIN_PASSWORD
from tests.mailer_smtp import SmtpServer
from tests.pbxproc import PbxProcess
from webui.auth.accounts import AccountStore

browser, page, shot = specs.browser, specs.page, specs.shot    # the fixtures and screenshots of every page spec


def wait_web(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"web UI at {url} did not answer in {timeout} s")


def test_smtp_settings_test_e_mail_retrying_while_the_server_is_down_then_sent(page, tmp_path):
    data = tmp_path / "pbx"
    AccountStore(data).create("admin", ADMIN_PASSWORD, "admin")
    server = SmtpServer()                   # its port, with nothing listening yet: the server is down
    pbx = PbxProcess(data, web=True, env={"PBX_MAIL_BACKOFF": "1,2,600"})
    pbx.start()
    try:
        url = f"http://{pbx.addr}:{pbx.web_port}"
        wait_web(url)
        page.goto(url + "/login")
        page.fill("#f-username", "admin")
        page.fill("#f-password", ADMIN_PASSWORD)
        page.click("button:has-text('Log in')")
        expect(page).to_have_url(re.compile(r"/dashboard$"))

        # The SMTP form: a password without a user name is refused with the reason ...
        page.goto(url + "/settings")
        page.fill("#f-smtp_host", "127.0.0.1")
        page.fill("#f-smtp_port", str(server.port))
        page.select_option("#f-smtp_tls", "none")
        page.fill("#f-smtp_user", "")
        page.fill("#f-smtp_password", "never-shown-again")
        page.fill("#f-smtp_from", "pbx@office.example")
        page.click("#settings-form button[type=submit]")
        expect(page.locator("#e-smtp_user")).to_contain_text("a password needs the user name")
        assert "never-shown-again" not in page.content()          # not even on the error page
        page.fill("#f-smtp_password", "")
        page.click("#settings-form button[type=submit]")
        expect(page.locator(".flash.ok")).to_contain_text("Settings saved")
        settings = ConfigStore(data).settings()
        assert (settings.smtp_host, settings.smtp_port, settings.smtp_tls, settings.smtp_from) == \
            ("127.0.0.1", server.port, "none", "pbx@office.example")

        # ... and the Mail page sends a test e-mail through it: retrying while the server is down
        page.click("nav a:has-text('Mail')")
        expect(page).to_have_url(re.compile(r"/mail$"))
        expect(page.locator("#server-line")).to_contain_text(f"127.0.0.1:{server.port} (no encryption, no login)")
        page.fill("#f-to", "anna@office")
        page.click("#send-test")
        expect(page.locator("#e-to")).to_contain_text("'anna@office' is not an e-mail address")
        page.fill("#f-to", "anna@office.example")
        page.click("#send-test")
        expect(page.locator(".flash.ok")).to_contain_text("Test e-mail to anna@office.example queued")
        row = page.locator("#outbox tbody tr").first
        expect(row.locator("td[data-label=State]")).to_have_text("retrying", timeout=15_000)
        expect(row.locator("td.why")).to_contain_text(f"cannot connect to 127.0.0.1:{server.port}: Connection refused")
        expect(row.locator("button:has-text('Retry now')")).to_be_visible()
        shot(page, "70-mail-retrying")

        page.goto(url + "/dashboard")
        banner = page.locator("#mail-banner")
        expect(banner).to_be_visible()
        expect(banner).to_contain_text("1 retrying, 0 failed")
        expect(banner).to_contain_text("Connection refused")
        shot(page, "71-dashboard-mail-failing")

        # The server comes back: the next retry (at most 2 s apart here) sends it; the page follows
        page.goto(url + "/mail")
        expect(page.locator("#outbox-card")).to_have_attribute("data-live", "1")
        with server:
            row = page.locator("#outbox tbody tr").first
            expect(row.locator("td[data-label=State]")).to_have_text("sent", timeout=20_000)
            expect(row.locator("td[data-label=Sent]")).not_to_be_empty()
            expect(row.locator("button:has-text('Retry now')")).to_have_count(0)
            shot(page, "72-mail-sent")
            mail_from, rcpts, _ = server.inbox.wait(1)[0]
            assert (mail_from, rcpts) == ("pbx@office.example", ["anna@office.example"])
            assert server.inbox.parsed()["Subject"] == "Test e-mail from Office PBX"
        assert re.search(r"mail \S+ sent to anna@office.example via 127.0.0.1:\d+ \(attempt \d+\)", pbx.log_tail(200))

        page.goto(url + "/dashboard")
        expect(page.locator("#mail-banner")).to_be_hidden()
    finally:
        pbx.stop()
        server.stop()
