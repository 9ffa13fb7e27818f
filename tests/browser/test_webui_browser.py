"""The web UI in real Chromium (Debian's /usr/bin/chromium driven by Playwright).

First against the web process alone (`python -m webui`, as `pbx run` starts it), then against the
whole PBX: two real SIP phones (pjsua2) register with the secrets the wizard showed, call each
other, and the browser sees it all on the dashboard and in the call records.
Every page visited is saved as a screenshot in docs/screenshots/.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from firmware.cdr import CallRecord, CdrStore, Disposition
from tests.browser.webui_env import ADMIN_PASSWORD, WebProcess, control_socket
from tests.pbxproc import ROOT, PbxProcess

CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "docs" / "screenshots"
# Flags for a closed network: without them Chromium keeps trying Google's services.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]



@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).exists(), "Debian chromium is missing: apt-get install chromium (make test does)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    yield pg
    context.close()


def shot(page, name: str, full_page: bool = True) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)


def wait_for_line(read, pattern: str, timeout: float = 15.0) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, read())
        if m:
            return m
        time.sleep(0.1)
    raise AssertionError(f"no line matching {pattern!r} within {timeout} s:\n{read()[-2000:]}")


def walk_wizard(page, url: str, code: str, extensions: list[tuple[str, str]], sip_domain: str,
                screenshots: bool) -> dict[str, str]:
    """Drive the wizard from the first page to the phone list; returns {number: SIP password}."""
    page.goto(url + "/")
    expect(page).to_have_url(re.compile(r"/setup$"))
    if screenshots:
        shot(page, "01-wizard-admin-password")
    page.fill("#f-setup_code", "00000000")
    page.fill("#f-password", ADMIN_PASSWORD)
    page.fill("#f-password2", ADMIN_PASSWORD)
    page.click("main button[type=submit]")
    expect(page.locator("#e-setup_code")).to_contain_text("wrong setup code")
    if screenshots:
        shot(page, "01b-wizard-wrong-setup-code")
    page.fill("#f-setup_code", code)
    page.fill("#f-password", ADMIN_PASSWORD)
    page.fill("#f-password2", ADMIN_PASSWORD)
    page.click("main button[type=submit]")
    expect(page).to_have_url(re.compile(r"/setup/site$"))
    page.fill("#f-site_name", "Acme Ltd")
    page.fill("#f-timezone", "Europe/London")
    page.select_option("#f-country", "uk")
    page.fill("#f-sip_domain", sip_domain)
    if screenshots:
        shot(page, "02-wizard-site")
    page.click("main button[type=submit]")
    expect(page).to_have_url(re.compile(r"/setup/extensions$"))
    for i in range(4):
        number, name = extensions[i] if i < len(extensions) else ("", "")
        page.fill(f"input[name=number_{i}]", number)
        page.fill(f"input[name=name_{i}]", name)
    if screenshots:
        shot(page, "03-wizard-extensions")
    page.click("main button[type=submit]")
    expect(page).to_have_url(re.compile(r"/setup/done$"))
    if screenshots:
        shot(page, "04-wizard-phones")
    secrets = {}
    for number, _ in extensions:
        row = page.locator("table.data tr", has_text=number).first
        secrets[number] = row.locator("code.secret").inner_text().strip()
    return secrets


def phone_row(page, number: str):
    return page.locator(f'#phones tr[data-number="{number}"]')


def test_admin_walks_the_wizard_creates_an_extension_and_watches_the_dashboard_live(page, tmp_path):
    data = tmp_path / "data"
    web = WebProcess(data).start()
    try:
        line = wait_for_line(web.log, r"setup code: ([0-9a-f]{8}) \(open (http://\S+)/\)")
        assert line.group(2) == web.url
        secrets = walk_wizard(page, web.url, line.group(1), [("201", "Reception"), ("202", "Sales")],
                              "192.0.2.10", screenshots=True)
        assert all(len(s) >= 20 for s in secrets.values())

        page.click("text=Go to the dashboard")
        expect(page.locator("#pbx-state")).to_contain_text("PBX not running")
        expect(phone_row(page, "201")).to_contain_text("not registered")
        # The PBX comes up and a phone registers: the page changes without a reload.
        status = {"uptime": 42.0, "version": "0.1.0", "registrations": [], "calls": [], "trunks": []}
        with control_socket(data, status):
            expect(page.locator("#pbx-state")).to_contain_text("PBX running", timeout=10_000)
            status["registrations"].append({"aor": "201", "contact": "sip:201@192.0.2.55:5060",
                                            "expires": 300, "user_agent": "Yealink T54W", "transport": "udp"})
            expect(phone_row(page, "201")).to_contain_text("registered", timeout=10_000)
            expect(phone_row(page, "201").locator(".state.ok")).to_have_count(1)
            status["calls"].append({"call_id": "c1", "src": "201", "dst": "202", "state": "ringing",
                                    "start": time.time(), "answer": None})
            expect(page.locator("#calls")).to_contain_text("ringing", timeout=10_000)
            shot(page, "05-dashboard-live")
            page.goto(web.url + "/extensions")
            expect(page.locator("#ext-201")).to_contain_text("Yealink T54W")
            shot(page, "06-extensions")

        page.click("text=New extension")
        page.fill("#f-number", "0203")
        page.fill("#f-name", "Warehouse")
        page.fill("#f-secret", "short")
        page.click("button:has-text('Create')")
        expect(page.locator("#e-number")).to_contain_text("2-6 digits")
        expect(page.locator("#e-secret")).to_contain_text("use at least 12")
        shot(page, "07-extension-errors")
        page.fill("#f-number", "203")
        page.fill("#f-secret", "")
        page.click("button:has-text('Create')")
        expect(page.locator("#secret")).to_have_text(re.compile(r"\S{20,}"))
        shot(page, "08-extension-created")

        page.goto(web.url + "/trunks/new")
        page.fill("#f-name", "carrier")
        page.fill("#f-host", "sip.carrier.example:5060")
        page.fill("#f-username", "acme")
        page.fill("#f-secret", "Trunk-Pass-1")
        page.click("button:has-text('Create')")
        expect(page.locator("#trunk-list")).to_contain_text("sip.carrier.example:5060")
        shot(page, "09-trunks")

        page.goto(web.url + "/routes/inbound/new")
        page.fill("#f-did", "+442071234567")
        page.select_option("#f-destination", "201")
        page.click("button:has-text('Save')")
        page.goto(web.url + "/routes/outbound/new")
        page.fill("#f-name", "national")
        page.fill("#f-pattern", "_9Q")
        page.select_option("#f-trunk", "carrier")
        page.click("button:has-text('Save')")
        expect(page.locator("#e-pattern")).to_contain_text("'Q' at position 3")
        shot(page, "10-outbound-route-error")
        page.fill("#f-pattern", "_90NXXXXXXXXX")
        page.fill("#f-strip", "1")
        page.click("button:has-text('Save')")
        expect(page.locator("#outbound")).to_contain_text("_90NXXXXXXXXX")
        expect(page.locator("#inbound")).to_contain_text("+442071234567")
        shot(page, "11-routes")

        cdr = CdrStore(data)
        now = time.time()
        cdr.write(CallRecord("a1", "201", "202", now - 300, now - 296, now - 180, Disposition.ANSWERED))
        cdr.write(CallRecord("a2", "202", "203", now - 100, None, now - 90, Disposition.BUSY, cause="486 Busy Here"))
        cdr.close()
        page.goto(web.url + "/cdr")
        expect(page.locator("#cdr")).to_contain_text("486 Busy Here")
        page.select_option("#f-disposition", "ANSWERED")
        page.click("button:has-text('Filter')")
        expect(page.locator("#cdr tbody tr")).to_have_count(1)
        shot(page, "12-call-records")
        with page.expect_download() as download:
            page.click("#csv")
        assert download.value.suggested_filename.endswith(".csv")

        page.goto(web.url + "/system")
        shot(page, "13-system")
        with page.expect_download() as download:
            page.click("text=Download backup")
        backup = Path(download.value.path()).read_bytes()
        assert download.value.suggested_filename.endswith(".json")
        page.set_input_files("#f-backup_file", {"name": download.value.suggested_filename,
                                                "mimeType": "application/json", "buffer": backup})
        page.click("button:has-text('Restore')")
        expect(page.locator(".flash.ok")).to_contain_text("Configuration restored")
        page.goto(web.url + "/api/docs")
        expect(page.locator("body")).to_contain_text("/api/v1/outbound-routes")
        shot(page, "14-api-docs", full_page=False)   # the whole reference is a 1 MB picture
        page.click("button:has-text('Log out')")
        expect(page).to_have_url(re.compile(r"/login"))
        shot(page, "15-login")
        assert ADMIN_PASSWORD not in web.log() and "Trunk-Pass-1" not in web.log()
    finally:
        web.stop()


@pytest.mark.e2e
def test_two_phones_registered_with_wizard_secrets_call_each_other_and_the_browser_sees_it(page, tmp_path):
    from tests.phones.pj import PjPhone
    pbx = PbxProcess(tmp_path / "pbx", web=True)
    pbx.start()
    phones = []
    try:
        url = f"http://{pbx.addr}:{pbx.web_port}"
        line = wait_for_line(pbx.log_tail, r"setup code: ([0-9a-f]{8}) \(open (http://\S+)/\)")
        assert line.group(2) == url
        secrets = walk_wizard(page, url, line.group(1), [("201", "Reception"), ("202", "Sales")], "",
                              screenshots=False)
        page.goto(url + "/dashboard")
        expect(page.locator("#pbx-state")).to_contain_text("PBX running")

        for number in ("201", "202"):
            phone = PjPhone(user=number, secret=secrets[number], registrar=pbx.registrar,
                            record_dir=tmp_path / "phones").start()
            phones.append(phone)
            assert phone.register() == 200
        caller, callee = phones
        for number in ("201", "202"):
            expect(phone_row(page, number).locator(".state.ok")).to_have_text("registered", timeout=10_000)

        callee.auto_answer(200, after_ms=500)
        caller.call(pbx.uri("202"))
        caller.wait_state("CONFIRMED", timeout=10)
        call_row = page.locator("#calls tbody tr", has_text="202")
        expect(call_row).to_contain_text("201", timeout=10_000)
        shot(page, "16-dashboard-real-call")
        time.sleep(1.0)
        caller.hangup()
        caller.wait_state("DISCONNECTED", timeout=10)
        expect(page.locator("#calls")).to_contain_text("No calls.", timeout=10_000)

        pbx.wait_cdr(lambda r: r.src == "201" and r.dst == "202")
        page.goto(url + "/cdr?extension=201")
        expect(page.locator("#cdr tbody tr").first).to_contain_text("ANSWERED")
        shot(page, "17-call-records-real-call")
    finally:
        for phone in phones:
            phone.stop()
        pbx.stop()
