"""The web UI in real Chromium (Debian's /usr/bin/chromium driven by Playwright).

First against the web process alone (`python -m webui`, as `pbx run` starts it), then against the
whole PBX: two real SIP phones (pjsua2) register with the secrets the wizard showed, call each
other, and the browser sees it all on the dashboard and in the call records.
Every page visited is saved twice in docs/screenshots/: laptop-NN-name.png (1366x768) and
phone-NN-name.png (390x844), so that both can be looked at after a change.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from firmware.cdr import CallRecord, CdrStore, Disposition
from firmware.config import ConfigStore
from services.media.wavfile import WavWriter
from tests.browser.webui_env import ADMIN_PASSWORD, USER_PASSWORD, WebProcess, control_socket
from webui.auth.accounts import AccountStore
from tests.pbxproc import ROOT, PbxProcess

CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "docs" / "screenshots"
# Flags for a closed network: without them Chromium keeps trying Google's services.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LAPTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}



@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).exists(), "Debian chromium is missing: apt-get install chromium (make test does)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=LAPTOP)
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    yield pg
    context.close()


def shot(page, name: str, full_page: bool = True) -> None:
    """The page as a laptop (1366x768) and a phone (390x844) show it; the test goes on as a laptop."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for prefix, size in (("laptop", LAPTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        assert_fits_the_screen(page, f"{prefix}-{name}")
        page.screenshot(path=str(SHOTS / f"{prefix}-{name}.png"), full_page=full_page)
    page.set_viewport_size(LAPTOP)


def assert_fits_the_screen(page, what: str) -> None:
    """Nothing but a scrolling table may be wider than the window: no sideways scrolling of the page."""
    wide = page.evaluate("""() => {
        const w = document.documentElement.clientWidth;
        return [...document.querySelectorAll('body *')].filter(e => {
            const r = e.getBoundingClientRect();
            return r.width > 0 && r.right > w + 1 && !e.closest('.table-wrap, pre, datalist, option');
        }).map(e => e.tagName + (e.id ? '#' + e.id : '') + (e.className ? '.' + e.className : '')).slice(0, 5);
    }""")
    assert not wide, f"{what}: wider than the screen: {wide}"


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
        shot(page, "02-wizard-wrong-setup-code")
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
        shot(page, "03-wizard-site")
    page.click("main button[type=submit]")
    expect(page).to_have_url(re.compile(r"/setup/extensions$"))
    for i in range(4):
        number, name = extensions[i] if i < len(extensions) else ("", "")
        page.fill(f"input[name=number_{i}]", number)
        page.fill(f"input[name=name_{i}]", name)
    if screenshots:
        shot(page, "04-wizard-extensions")
    page.click("main button[type=submit]")
    expect(page).to_have_url(re.compile(r"/setup/done$"))
    if screenshots:
        shot(page, "05-wizard-phones")
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
        status = {"uptime": 11520.0, "version": "0.1.0", "registrations": [], "calls": [], "trunks": []}
        with control_socket(data, status):
            expect(page.locator("#pbx-state")).to_contain_text("PBX running", timeout=10_000)
            expect(page.locator("#uptime")).to_have_text(re.compile(r"^3 h 12 min$"))
            status["registrations"].append({"aor": "201", "contact": "sip:201@192.0.2.55:5060",
                                            "expires": 300, "user_agent": "Yealink T54W", "transport": "udp"})
            expect(phone_row(page, "201")).to_contain_text("registered", timeout=10_000)
            expect(phone_row(page, "201").locator(".state.ok")).to_have_count(1)
            status["calls"].append({"call_id": "c1", "src": "201", "dst": "202", "state": "ringing",
                                    "start": time.time() - 75, "answer": None})
            expect(page.locator("#calls")).to_contain_text("ringing", timeout=10_000)
            expect(page.locator("#calls")).to_contain_text(re.compile(r"1 min \d+ s"))
            shot(page, "06-dashboard-live")
            page.goto(web.url + "/extensions")
            expect(page.locator("#ext-201")).to_contain_text("Yealink T54W")
            shot(page, "07-extensions")

        page.click("text=New extension")
        page.fill("#f-number", "0203")
        page.fill("#f-name", "Warehouse")
        page.fill("#f-secret", "short")
        page.click("button:has-text('Create')")
        expect(page.locator("#e-number")).to_contain_text("2-6 digits")
        expect(page.locator("#e-secret")).to_contain_text("use at least 12")
        shot(page, "08-extension-errors")
        page.fill("#f-number", "203")
        page.fill("#f-secret", "")
        page.click("button:has-text('Create')")
        expect(page).to_have_url(re.compile(r"/extensions/203$"))       # Post/Redirect/Get
        expect(page.locator("#secret")).to_have_text(re.compile(r"\S{20,}"))
        shot(page, "09-extension-created")
        page.reload()                                                     # posts nothing again
        expect(page.locator(".flash.bad, .error")).to_have_count(0)
        expect(page.locator("#secret")).to_have_count(0)

        page.goto(web.url + "/trunks/new")
        page.fill("#f-name", "carrier")
        page.fill("#f-host", "sip.carrier.example:5060")
        page.fill("#f-username", "acme")
        page.fill("#f-secret", "Trunk-Pass-1")
        page.click("button:has-text('Create')")
        expect(page.locator("#trunk-list")).to_contain_text("sip.carrier.example:5060")
        shot(page, "10-trunks")

        page.goto(web.url + "/routes/inbound/new")
        page.fill("#f-did", "+442071234567")
        page.select_option("#f-destination_kind", "extension")
        page.select_option("#f-destination_extension", "201")
        page.click("button:has-text('Save')")
        page.goto(web.url + "/routes/inbound/new")
        page.fill("#f-did", "+442071234568")
        page.check("#f-match_national")
        page.select_option("#f-destination_kind", "external")
        page.fill("#f-destination_external", "07700 900123")
        shot(page, "27-inbound-route-outside-number")
        page.click("button:has-text('Save')")
        page.goto(web.url + "/routes/outbound/new")
        page.fill("#f-name", "national")
        page.fill("#f-pattern", "_9Q")
        page.select_option("#f-trunk", "carrier")
        page.click("button:has-text('Save')")
        expect(page.locator("#e-pattern")).to_contain_text("'Q' at position 3")
        shot(page, "11-outbound-route-error")
        page.fill("#f-pattern", "_90NXXXXXXXXX")
        page.fill("#f-strip", "1")
        page.fill("#f-caller_id", "+44 20 7123 4567")
        page.check("input[name=extensions][value='201']")
        page.check("input[name=extensions][value='203']")
        page.click("button:has-text('Save')")
        expect(page.locator("#route-national")).to_contain_text("+442071234567")
        expect(page.locator("#route-national")).to_contain_text("201, 203")
        expect(page.locator("#inbound")).to_contain_text("07700 900123")
        expect(page.locator("#outbound")).to_contain_text("_90NXXXXXXXXX")
        expect(page.locator("#inbound")).to_contain_text("+442071234567")
        expect(page.locator("#inbound")).to_contain_text("extension 201 (Reception)")
        shot(page, "12-routes")

        page.goto(web.url + "/extensions/201")
        page.click("text=Delete extension 201")
        expect(page.locator("#confirm")).to_contain_text("extension 201 is the destination of inbound route +442071234567")
        shot(page, "13-delete-confirmation")

        page.goto(web.url + "/lines")
        page.click("text=New line port")
        page.fill("#f-number", "1")
        page.select_option("#f-kind", "fxo")
        page.select_option("#f-extension", "203")
        page.click("button:has-text('Add')")
        expect(page.locator("#e-destination")).to_contain_text("needs the extension")
        shot(page, "14-line-port-error")
        page.select_option("#f-destination", "202")
        page.fill("#f-name", "BT line")
        page.click("button:has-text('Add')")
        expect(page.locator("#port-1")).to_contain_text("BT line")
        expect(page.locator("#port-1")).to_contain_text("unknown")
        shot(page, "15-line-ports")

        page.click("a:has-text('Settings')")
        page.fill("#f-no_answer_timeout", "2")
        page.fill("#f-smtp_host", "smtp.example.com")
        page.click("button:has-text('Save settings')")
        expect(page.locator("#e-no_answer_timeout")).to_contain_text("choose 5 to 300 seconds")
        expect(page.locator("#e-smtp_from")).to_contain_text("sender address")
        shot(page, "16-settings-errors")
        page.fill("#f-no_answer_timeout", "25")
        page.check("#f-record_calls")
        page.fill("#f-recording_retention_days", "90")
        page.fill("#f-smtp_from", "pbx@acme.example")
        page.click("button:has-text('Save settings')")
        expect(page.locator(".flash.ok")).to_contain_text("Settings saved")
        shot(page, "17-settings")

        cdr = CdrStore(data)
        now = time.time()
        rec_dir = data / "recordings" / time.strftime("%Y%m%d")
        rec_dir.mkdir(parents=True)
        legs = []
        for side, peer in (("caller", "201"), ("callee", "202")):
            path = rec_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-201-202-1-{side}.wav"
            with WavWriter(path) as w:
                w.write(b"\x00\x10" * 8000 * 3)
            legs.append({"leg": "a" if side == "caller" else "b", "peer": peer, "recording": str(path)})
        cdr.write(CallRecord("a1", "201", "202", now - 300, now - 296, now - 180, Disposition.ANSWERED, legs=legs))
        cdr.write(CallRecord("a2", "202", "203", now - 100, None, now - 90, Disposition.BUSY, cause="486 Busy Here"))
        cdr.write_many([CallRecord(f"b{i}", "203", "+442079460000", now - 90_000 - 600 * i, None,
                                   now - 90_000 - 600 * i + 20, Disposition.NO_ANSWER) for i in range(70)])
        cdr.close()
        page.goto(web.url + "/cdr")
        expect(page.locator("#cdr-total")).to_contain_text("72 calls")
        expect(page.locator("#cdr tbody tr")).to_have_count(50)
        expect(page.locator("#cdr")).to_contain_text("486 Busy Here")
        shot(page, "18-call-records")
        page.click("#cdr th a:has-text('Talk time')")
        expect(page.locator("#cdr tbody tr").first).to_contain_text("ANSWERED")
        page.click("a[rel=next]")
        expect(page.locator("#cdr tbody tr")).to_have_count(22)
        page.goto(web.url + "/cdr")
        page.select_option("#f-disposition", "ANSWERED")
        page.click("button:has-text('Filter')")
        expect(page.locator("#cdr tbody tr")).to_have_count(1)
        with page.expect_download() as download:
            page.click("#csv")
        assert download.value.suggested_filename.endswith(".csv")

        page.goto(web.url + "/recordings")
        expect(page.locator("#recordings")).to_contain_text("201 → 202")
        audio = page.locator("#recordings audio").first
        # The browser loads and decodes the WAV through the logged-in session.
        duration = audio.evaluate("""a => new Promise((ok, fail) => {
            a.addEventListener('loadedmetadata', () => ok(a.duration)); a.addEventListener('error', fail);
            a.preload = 'metadata'; a.load(); })""")
        assert 2.9 < duration < 3.1
        shot(page, "19-recordings")

        page.goto(web.url + "/system")
        shot(page, "20-system")
        with page.expect_download() as download:
            page.click("text=Download backup")
        backup = Path(download.value.path()).read_bytes()
        assert download.value.suggested_filename.endswith(".json")
        page.set_input_files("#f-backup_file", {"name": download.value.suggested_filename,
                                                "mimeType": "application/json", "buffer": backup})
        page.click("button:has-text('Restore')")
        expect(page.locator(".flash.ok")).to_contain_text("Configuration restored")
        page.set_input_files("#f-backup_file", {"name": "huge.json", "mimeType": "application/json",
                                                "buffer": b"{" + b" " * (1024 * 1024 + 10) + b"}"})
        page.click("button:has-text('Restore')")
        expect(page.locator("#error-page")).to_contain_text("larger than 1024 kB")
        shot(page, "21-error-upload-too-large")
        page.goto(web.url + "/api/docs")
        expect(page.locator("body")).to_contain_text("/api/v1/outbound-routes")
        shot(page, "22-api-docs", full_page=False)   # the whole reference is a 1 MB picture
        page.click("button:has-text('Log out')")
        expect(page).to_have_url(re.compile(r"/login"))
        shot(page, "23-login")

        AccountStore(data).create("202", USER_PASSWORD, "user", extension="202")
        page.fill("#f-username", "202")
        page.fill("#f-password", USER_PASSWORD)
        page.click("button:has-text('Log in')")
        expect(page).to_have_url(re.compile(r"/me$"))
        expect(page.locator("#my-calls")).to_contain_text("busy")     # 202 -> 203, 486 Busy Here
        page.click("#new-sip-password")
        expect(page.locator("#secret")).to_have_text(re.compile(r"\S{20,}"))
        assert page.locator("#secret").inner_text() == ConfigStore(data).get_extension("202").secret
        shot(page, "24-my-extension")
        assert ADMIN_PASSWORD not in web.log() and "Trunk-Pass-1" not in web.log()
    finally:
        web.stop()


def test_dashboard_shows_every_phone_state_inside_its_card_on_wide_screens_and_on_a_phone(page, tmp_path):
    data = tmp_path / "data"
    store = ConfigStore(data)
    for i in range(6):
        store.add_extension(str(1201 + i), ["Reception desk", "Accounts payable", "Warehouse loading bay",
                                            "Managing director", "Conference room", "Kitchen"][i])
    AccountStore(data).create("admin", ADMIN_PASSWORD, "admin")
    web = WebProcess(data).start()
    try:
        page.goto(web.url + "/login")
        page.fill("#f-username", "admin")
        page.fill("#f-password", ADMIN_PASSWORD)
        page.click("button:has-text('Log in')")
        expect(page).to_have_url(re.compile(r"/dashboard$"))
        # the URL changes when the navigation commits, before the page is parsed: wait for the table
        expect(page.locator("#phones tbody tr")).to_have_count(6)
        for size in ({"width": 1280, "height": 800}, {"width": 1920, "height": 1080}, PHONE):
            page.set_viewport_size(size)
            # The table stays inside the card's padding, and each state reads on one line, fully shown.
            problems = page.evaluate("""() => {
                const card = document.querySelector('#phones').closest('section');
                const style = getComputedStyle(card), c = card.getBoundingClientRect();
                const right = c.right - parseFloat(style.paddingRight), out = [];
                const view = document.querySelector('#phones').closest('.table-wrap') || card;
                const t = document.querySelector('#phones').getBoundingClientRect();
                if (t.right > right + 1) { out.push('table ends at ' + t.right + ', card content at ' + right); }
                document.querySelectorAll('#phones .state').forEach(s => {
                    const r = s.getBoundingClientRect(), v = view.getBoundingClientRect();
                    if (r.right > v.right + 1 || r.left < v.left - 1) { out.push(s.textContent + ' cut off'); }
                    if (r.height > 1.6 * parseFloat(getComputedStyle(s).lineHeight || 20)) {
                        out.push(s.textContent + ' wraps');
                    }
                });
                return out;
            }""")
            assert not problems, f"phones card at {size['width']} px: {problems}"
            assert_fits_the_screen(page, f"dashboard at {size['width']} px")
    finally:
        web.stop()


def test_a_user_sets_dnd_and_a_forward_on_their_own_page(page, tmp_path):
    """Issue 8 section 5: forwards and DND from the user's page, the same fields *72/*78 change."""
    data = tmp_path / "data"
    store = ConfigStore(data)
    store.add_extension("201", "Reception")
    store.add_extension("202", "Sales office")
    store.add_trunk("carrier", "sip.carrier.example", register=False)
    store.add_outbound_route("mobiles", "_07XXXXXXXXX", "carrier")
    accounts = AccountStore(data)
    accounts.create("admin", ADMIN_PASSWORD, "admin")
    accounts.create("201", USER_PASSWORD, "user", extension="201")
    web = WebProcess(data).start()
    try:
        page.goto(web.url + "/login")
        page.fill("#f-username", "201")
        page.fill("#f-password", USER_PASSWORD)
        page.click("button:has-text('Log in')")
        expect(page).to_have_url(re.compile(r"/me$"))
        # Only the box of the chosen kind shows (webui/static/forms.js).
        expect(page.locator("#f-forward_busy_extension")).to_be_hidden()
        page.select_option("#f-forward_busy_kind", "extension")
        expect(page.locator("#f-forward_busy_extension")).to_be_visible()
        expect(page.locator("#f-forward_busy_external")).to_be_hidden()
        page.select_option("#f-forward_busy_extension", "202")
        page.select_option("#f-forward_no_answer_kind", "external")
        page.fill("#f-forward_no_answer_external", "0770 09")
        page.click("#save-call-handling")
        expect(page.locator("#e-forward_no_answer")).to_contain_text("cannot dial 077009")
        shot(page, "25-my-forward-error")
        page.fill("#f-forward_no_answer_external", "07700 900123")
        page.check("#f-dnd")
        page.click("#save-call-handling")
        expect(page.locator(".flash.ok")).to_contain_text("Call handling saved")
        expect(page.locator("#f-forward_busy_extension")).to_have_value("202")
        expect(page.locator("#f-forward_no_answer_external")).to_have_value("07700900123")
        expect(page.locator("#f-dnd")).to_be_checked()
        shot(page, "26-my-forwards")
        ext = ConfigStore(data).get_extension("201")
        assert (ext.dnd, ext.forward_busy, ext.forward_no_answer) == (True, "extension:202", "external:07700900123")
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
            # the wizard has just written the extension: the edge learns it on the PBX's next
            # config poll (twice a second), and a phone that was early registers again, as phones do
            for _ in range(8):
                code = phone.register()
                if code == 200:
                    break
                time.sleep(0.5)
            assert code == 200
        caller, callee = phones
        for number in ("201", "202"):
            expect(phone_row(page, number).locator(".state.ok")).to_have_text("registered", timeout=10_000)

        callee.auto_answer(200, after_ms=500)
        caller.call(pbx.uri("202"))
        caller.wait_state("CONFIRMED", timeout=10)
        call_row = page.locator("#calls tbody tr", has_text="202")
        expect(call_row).to_contain_text("201", timeout=10_000)
        shot(page, "30-dashboard-real-call")
        time.sleep(1.0)
        caller.hangup()
        caller.wait_state("DISCONNECTED", timeout=10)
        expect(page.locator("#calls")).to_contain_text("No calls.", timeout=10_000)

        pbx.wait_cdr(lambda r: r.src == "201" and r.dst == "202")
        page.goto(url + "/cdr?extension=201")
        expect(page.locator("#cdr tbody tr").first).to_contain_text("ANSWERED")
        shot(page, "31-call-records-real-call")
    finally:
        for phone in phones:
            phone.stop()
        pbx.stop()
