"""Call queue pages in real Chromium against a running PBX, with screenshots in docs/screenshots/
(laptop-/phone-16N-name.png): the wallboard follows a real caller waiting in a queue (live over
SSE) and an agent logging in from their page; the statistics page draws its charts from the
queue log the call service wrote."""
from __future__ import annotations

import re
import time
import urllib.request

import pytest
from playwright.sync_api import expect

from firmware.features.queues import AgentLogin, Queue, QueueMember
from tests.browser.test_webui_browser import browser, page, shot  # noqa: F401  (fixtures)
from tests.browser.webui_env import ADMIN_PASSWORD, USER_PASSWORD
from tests.pbxproc import PbxProcess
from tests.phones.pj import PjPhone
from webui.auth.accounts import AccountStore

pytestmark = pytest.mark.e2e


@pytest.fixture
def pbx(tmp_path):
    proc = PbxProcess(tmp_path / "pbx", extensions=["1000", "1001", "1002"], web=True)
    proc.store.update_extension("1001", name="Ann")
    proc.store.update_extension("1002", name="Bob")
    proc.store.add_record("queues", Queue("500", "Sales", "least_recent", (QueueMember("1001"),),
                                          announce_position=False, announce_wait=False, service_level=20))
    proc.store.add_record("queue_agents", AgentLogin("1001", paused=True, reason="lunch"))
    accounts = AccountStore(proc.data)
    accounts.create("admin", ADMIN_PASSWORD, "admin")
    accounts.create("1002", USER_PASSWORD, "user", extension="1002")
    proc.start()
    proc.url = f"http://{proc.addr}:{proc.web_port}"
    deadline = time.monotonic() + 30
    while True:        # the web UI is a child process of its own: up a moment after the call service
        try:
            with urllib.request.urlopen(proc.url + "/healthz", timeout=1):
                break
        except OSError:
            assert time.monotonic() < deadline, f"web UI not up:\n{proc.log_tail()}"
            time.sleep(0.2)
    yield proc
    proc.stop()


def log_in(page, url, user, password, lands):
    page.goto(url + "/login")
    page.fill("#f-username", user)
    page.fill("#f-password", password)
    page.click("button:has-text('Log in')")
    expect(page).to_have_url(re.compile(lands))


def test_the_wallboard_follows_a_waiting_caller_and_an_agent_logging_in(page, pbx, browser, tmp_path):
    log_in(page, pbx.url, "admin", ADMIN_PASSWORD, r"/dashboard$")
    page.goto(pbx.url + "/queues/wallboard")
    board = page.locator("#wb-queue-500")
    expect(page.locator("#wallboard[data-live='1']")).to_have_count(1, timeout=15_000)
    expect(board.locator(".figure").first).to_contain_text("0")
    expect(board.locator('.agent[data-extension="1001"]')).to_contain_text("paused (lunch)")
    with PjPhone(user="1000", secret=pbx.secrets["1000"], registrar=pbx.registrar, tone_hz=700,
                 record_dir=tmp_path) as caller:
        assert caller.register() == 200
        caller.call(pbx.uri("500"))
        caller.wait_state("CONFIRMED", timeout=10)
        # the caller appears without a reload, and the longest wait counts up
        expect(page.locator("#wb-queue-500[data-waiting='1']")).to_have_count(1, timeout=10_000)
        expect(board.locator(".figure.alert .value").first).to_have_text("1")
        expect(board.locator(".value[data-wait]")).to_have_text(re.compile(r"^[2-9] s$|^1\d s$"), timeout=10_000)
        # an agent logs in from their own page: the board shows them
        agent = browser.new_context(viewport={"width": 1366, "height": 768}).new_page()
        log_in(agent, pbx.url, "1002", USER_PASSWORD, r"/me$")
        agent.goto(pbx.url + "/queues/agent")
        agent.click('#agent-queues tr[data-queue="500"] button:has-text("Log in")')
        expect(agent.locator(".flash.ok")).to_contain_text("Logged in to queue 500 (Sales)")
        shot(agent, "160-queue-agent")
        agent.context.close()
        expect(board.locator('.agent[data-extension="1002"]')).to_have_count(1, timeout=10_000)
        shot(page, "161-queue-wallboard")
        caller.hangup()
        caller.wait_state("DISCONNECTED", timeout=10)
    expect(page.locator("#wb-queue-500[data-waiting='0']")).to_have_count(1, timeout=10_000)
    expect(board).to_contain_text("0 / 1")          # answered / offered today


def test_the_statistics_page_charts_what_the_queue_log_holds(page, pbx, tmp_path):
    with PjPhone(user="1000", secret=pbx.secrets["1000"], registrar=pbx.registrar, tone_hz=700,
                 record_dir=tmp_path) as caller:
        assert caller.register() == 200
        caller.call(pbx.uri("500"))
        caller.wait_state("CONFIRMED", timeout=10)
        page.wait_for_timeout(1500)
        caller.hangup()
        caller.wait_state("DISCONNECTED", timeout=10)
    log_in(page, pbx.url, "admin", ADMIN_PASSWORD, r"/dashboard$")
    page.click("nav >> text=Queues")
    expect(page).to_have_url(re.compile(r"/queues$"))
    expect(page.locator("#queue-500")).to_contain_text("1 offered, 0 answered, 1 abandoned")
    shot(page, "162-queues")
    page.click("text=Statistics >> nth=0")
    row = page.locator('#queue-stats tr[data-queue="500"]')
    expect(row).to_contain_text("Sales")
    expect(row.locator('td[data-label="Abandoned"]')).to_have_text("1")
    expect(row.locator('td[data-label="Service level"]')).to_contain_text("0 % in 20 s")
    for chart in ("chart-days", "chart-hours", "chart-sl", "chart-agents"):
        expect(page.locator(f"#{chart}[data-drawn='1']")).to_have_count(1)
    shot(page, "163-queue-statistics")
    page.goto(pbx.url + "/queues/stats?from=2026-13-01")     # a hand-edited address
    expect(page.locator("#range-error")).to_contain_text("YYYY-MM-DD")
    with page.expect_download() as download:
        page.goto(pbx.url + "/queues")
        page.click("text=Statistics >> nth=0")
        page.click("#csv-queues")
    text = open(download.value.path()).read()
    assert text.splitlines()[0].startswith("queue,name,offered,answered,abandoned")
    assert text.splitlines()[1].startswith("500,Sales,1,0,1")
