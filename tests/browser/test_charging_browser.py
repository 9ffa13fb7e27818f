"""Call charging in real Chromium against the running PBX: the dashboard shows the running cost of
a call out through a SIPp carrier; a 1p spend limit set on the page refuses the next call and the
dashboard shows the alert banner; the reports page draws its charts from thousands of rated CDR
rows. Screenshots go to docs/screenshots/ as laptop-/phone-13N-name.png."""
from __future__ import annotations

import re
import time
from datetime import datetime, timezone

import pytest
from playwright.sync_api import expect

from firmware.features.charging import ASSIGNMENTS, RateAssignment
from services import charging
from tests.browser.test_webui_browser import browser, page, shot  # noqa: F401  (fixtures)
from tests.browser.webui_env import ADMIN_PASSWORD
from tests.charging_history import make_history
from tests.pbxproc import PbxProcess
from tests.phones.pj import PjPhone
from tests.phones.sipp import Sipp, free_port
from webui.auth.accounts import AccountStore

pytestmark = pytest.mark.e2e
CARRIER = "127.0.0.72"
DEAR = """# sheet: dear-carrier
# currency: GBP
# country: GB
# decimals: 5
prefix,description,type,rate_per_min,connection,increment,minimum,offpeak_rate,weekend_rate,blocked
07,UK mobile,mobile,0.60,0,1/1,0,,,no
"""


def daytime_zone() -> str:
    """A time zone in which it is now between 08:00 and 20:00. Calls made at night (22:00-06:00,
    box time) raise an unusual-pattern alert, whose banner this test must not see before its own
    limit alert: in London it would appear whenever the suite runs late in the evening."""
    hour = datetime.now(timezone.utc).hour
    for zone, offset in (("Europe/London", 0), ("Asia/Shanghai", 8), ("America/Los_Angeles", -8)):
        if 8 <= (hour + offset) % 24 < 20:       # summer time (London, Los Angeles): 1 h later, still day
            return zone
    raise AssertionError(f"no daytime zone for {hour}:00 UTC")


@pytest.fixture
def pbx(tmp_path):
    port = free_port("udp", CARRIER)
    proc = PbxProcess(tmp_path / "pbx", extensions=["1000", "1001"], web=True,
                      settings={"busy_tone_seconds": 1, "timezone": daytime_zone()})
    proc.store.add_trunk("carrier", f"{CARRIER}:{port}", register=False)
    proc.store.add_outbound_route("mobiles", "_07X.", "carrier")
    charging.SheetStore(proc.data).import_text(charging.EXAMPLE.read_bytes())
    proc.store.add_record(ASSIGNMENTS, RateAssignment("*", "uk-example"))
    AccountStore(proc.data).create("admin", ADMIN_PASSWORD, "admin")
    proc.carrier_port = port
    proc.start()
    proc.url = f"http://{proc.addr}:{proc.web_port}"
    _wait_for_web(proc)
    yield proc
    proc.stop()


def _wait_for_web(proc, timeout: float = 30.0) -> None:
    """The web UI starts beside the call service: wait until it answers (returns as soon as it does)."""
    import urllib.error
    import urllib.request
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(proc.url + "/login", timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"web UI not up at {proc.url}:\n{proc.log_tail()}")
            time.sleep(0.2)


def log_in(page, url):
    page.goto(url + "/login")
    page.fill("#f-username", "admin")
    page.fill("#f-password", ADMIN_PASSWORD)
    page.click("button:has-text('Log in')")
    expect(page).to_have_url(re.compile(r"/dashboard$"))


def test_running_cost_on_the_dashboard_and_a_1p_limit_that_stops_the_next_call(page, pbx, tmp_path):
    log_in(page, pbx.url)
    uas = Sipp("uas_answer.xml", local_ip=CARRIER, port=pbx.carrier_port, workdir=tmp_path, timeout=60,
               rtp_echo=True, calls=2).start()
    with PjPhone(user="1000", secret=pbx.secrets["1000"], registrar=pbx.registrar, record_dir=tmp_path) as a:
        assert a.register() == 200
        a.call(pbx.uri("07700900123"))
        a.wait_state("CONFIRMED", timeout=10)
        row = page.locator("#calls tbody tr", has_text="07700900123")
        expect(row.locator("td.cost")).to_have_text("0.00550 GBP", timeout=10_000)   # a started minute at 0.55p
        shot(page, "130-dashboard-running-cost")
        a.hangup()
        a.wait_state("DISCONNECTED", timeout=5)
    pbx.wait_cdr(lambda r: r.dst == "07700900123" and r.cost is not None)

    # the admin imports a dear sheet, gives it to the carrier and sets 1p a day for extension 1001
    page.goto(pbx.url + "/charging")
    sheet = tmp_path / "dear.csv"
    sheet.write_text(DEAR)
    page.set_input_files("#f-file", str(sheet))
    page.click("#import-form button:has-text('Import as a new version')")
    expect(page.locator("p.flash")).to_contain_text("as dear-carrier@1")
    page.select_option("#assign-carrier select[name=sheet]", "dear-carrier")
    page.click("#assign-carrier button:has-text('Use')")
    page.select_option("#f-scope", "1001")
    page.fill("#f-per_day", "0.01")
    page.click("#limit-form button:has-text('Save limit')")
    expect(page.locator("#limit-list")).to_contain_text("Extension 1001")
    shot(page, "131-call-charging")

    page.goto(pbx.url + "/dashboard")
    expect(page.locator("#charging-banner")).to_be_hidden()
    with PjPhone(user="1001", secret=pbx.secrets["1001"], registrar=pbx.registrar, record_dir=tmp_path) as b:
        assert b.register() == 200
        time.sleep(1.0)                                 # the call service sees the new config on its next look
        b.call(pbx.uri("07700900555"))
        b.wait_state("CONFIRMED", timeout=10)
        time.sleep(2.0)
        b.hangup()
        b.wait_state("DISCONNECTED", timeout=5)
        first = pbx.wait_cdr(lambda r: r.dst == "07700900555" and r.cost is not None)
        assert first.cost > 0 and first.sheet_version == "dear-carrier@1"
        b.call(pbx.uri("07700900556"))
        b.wait_state("DISCONNECTED", timeout=15)
        assert b.last_status == 403
    expect(page.locator("#charging-banner")).to_be_visible(timeout=10_000)
    expect(page.locator("#charging-alerts")).to_contain_text("1001 called 07700900556 and was refused: call limit reached")
    shot(page, "132-dashboard-limit-banner")
    refused = pbx.wait_cdr(lambda r: r.dst == "07700900556")
    assert "call limit reached" in refused.cause
    assert uas.wait(20).ok


def test_reports_draw_charts_from_thousands_of_rated_calls(page, pbx):
    history = make_history(pbx.data, n=3000, days=60)
    assert history["rows"] == 3000
    log_in(page, pbx.url)
    started = time.perf_counter()
    page.goto(pbx.url + "/reports?group=day")
    expect(page.locator("body")).to_have_attribute("data-charts-ready", "1")
    seconds = time.perf_counter() - started
    print(f"reports page with {history['rows']} calls: {seconds:.2f} s to charts drawn")
    assert seconds < 5.0, seconds                       # generous bound under load; about 0.3 s when idle
    for chart in ("periods", "extensions", "dest-types", "trunks", "hours"):
        expect(page.locator(f"#chart-{chart}")).to_have_attribute("data-drawn", "1")
    expect(page.locator("#t-extensions tbody tr")).to_have_count(5)
    expect(page.locator("#report-summary")).to_contain_text("GBP")
    shot(page, "133-reports")
    page.select_option("select[name=group]", "week")
    page.click("#report-filters button:has-text('Show')")
    expect(page).to_have_url(re.compile(r"group=week"))
    expect(page.locator("body")).to_have_attribute("data-charts-ready", "1")
    page.goto(pbx.url + "/reports/print?group=month")
    expect(page.locator("body")).to_have_attribute("data-charts-ready", "1")
    shot(page, "134-reports-printable")
