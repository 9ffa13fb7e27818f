"""The Phones and HTTPS pages in real Chromium, against the real web process serving HTTPS with
the box's own certificate: enroll a phone (a wrong MAC refused with the reason), see its address,
re-provision it; the HTTPS page shows the certificate in use and refuses a bad upload.
Screenshots 120-123 in docs/screenshots/."""
from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
from playwright.sync_api import expect

from firmware.config import ConfigStore
from firmware.features import provisioning as prov
from tests.browser import test_webui_browser as specs
from tests.browser.webui_env import ADMIN_PASSWORD
from tests.pbxproc import ROOT, free_port
from webui.auth.accounts import AccountStore

browser, shot = specs.browser, specs.shot


@pytest.fixture
def https_ui(tmp_path):
    data = tmp_path / "data"
    store = ConfigStore(data)
    store.add_extension("1000", "Reception")
    store.add_extension("1001", "Sales")
    AccountStore(data).create("admin", ADMIN_PASSWORD, "admin")
    port = free_port()
    log = open(tmp_path / "web.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "webui", "--data", str(data), "--host", "127.0.0.1",
                             "--port", str(port), "--https", "on"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while not (data / "tls" / "box.crt").exists():
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "web.log").read_text()
        time.sleep(0.1)
    time.sleep(0.5)
    yield data, f"https://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)
    log.close()


@pytest.fixture
def page(browser):
    # the admin accepted the box's self-signed certificate once (what the HTTPS page's fingerprint is for)
    context = browser.new_context(viewport=specs.LAPTOP, ignore_https_errors=True)
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    yield pg
    context.close()


def test_enroll_a_phone_see_its_address_and_the_certificate_page(https_ui, page):
    data, url = https_ui
    page.goto(url + "/login")
    page.fill("#f-username", "admin")
    page.fill("#f-password", ADMIN_PASSWORD)
    page.click("button:has-text('Log in')")
    expect(page).to_have_url(re.compile(r"/dashboard$"))
    page.click("nav a:has-text('Phones')")
    expect(page).to_have_url(re.compile(r"/provisioning$"))
    page.fill("#f-mac", "00:15:65:zz")
    page.click("#enroll button[type=submit]")
    expect(page.locator("#e-mac")).to_contain_text("12 hex digits")
    shot(page, "120-phones-mac-refused")
    page.fill("#f-mac", "00:15:65:AB:CD:EF")
    page.select_option("#f-vendor", "yealink")
    page.fill("#f-model", "T46U")
    page.select_option("#f-extension", "1001")
    page.fill("#f-label", "Sales desk")
    page.click("#enroll button[type=submit]")
    expect(page.locator(".flash.ok")).to_contain_text("Phone 001565abcdef enrolled for extension 1001")
    phone = ConfigStore(data).record(prov.TABLE, "001565abcdef")
    expect(page.locator("#phone-001565abcdef .prov-url")).to_have_text(
        f"https://{phone.username}:{phone.password}@127.0.0.1:{url.rsplit(':', 1)[1]}/prov/{phone.token}/")
    shot(page, "121-phones")
    page.click("#phone-001565abcdef button:has-text('Re-provision')")
    expect(page.locator(".flash.ok")).to_contain_text("new provisioning URL and credentials")
    assert ConfigStore(data).record(prov.TABLE, "001565abcdef").token != phone.token
    page.click("nav a:has-text('HTTPS')")
    expect(page.locator("#cert-source")).to_contain_text("made by this box")
    expect(page.locator("#cert-names")).to_contain_text("127.0.0.1")
    shot(page, "122-https-certificate")
    page.set_input_files("input[name=certificate]", files=[{"name": "box.pem", "mimeType": "application/x-pem-file",
                                                            "buffer": b"not a certificate"}])
    page.set_input_files("input[name=private_key]", files=[{"name": "box.key", "mimeType": "application/x-pem-file",
                                                            "buffer": b"not a key"}])
    page.click("#upload button[type=submit]")
    expect(page.locator("#upload-error")).to_contain_text("not a PEM certificate")
    expect(page.locator("#cert-source")).to_contain_text("made by this box")
    shot(page, "123-https-upload-refused")
