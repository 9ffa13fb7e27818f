"""The Failover page and the dashboard's failover card in real Chromium, against two real PBXes in
network namespaces (tests/hanet.py): box B's web UI (its data directory, so its control socket)
shows B as the standby with A active and what it received when; the form refuses a bad VIP with
the reason and may be saved on the standby; after a power cut of A, B says it is active, A is
unreachable, and how long the takeover took. Screenshots 190-193 in docs/screenshots/.
"""
from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.browser import test_webui_browser as specs
from tests.browser.webui_env import ADMIN_PASSWORD, WebProcess
from tests.hanet import OfficeLan, PbxPair, wait_for
from webui.auth.accounts import AccountStore

browser, page, shot = specs.browser, specs.page, specs.shot


def _seed(store):
    store.add_extension("1000", "Ann", secret="Ann-ha-1000-secret")
    store.add_extension("1001", "Bob", secret="Bob-ha-1001-secret")


def test_failover_page_and_dashboard_card_before_and_after_a_takeover(page, tmp_path):
    with OfficeLan() as lan, PbxPair(lan, tmp_path, seed=_seed) as pair:
        b = pair.data["b"]
        AccountStore(b).create("admin", ADMIN_PASSWORD, "admin")
        pair.wait_ready()
        web = WebProcess(b).start()
        try:
            page.goto(web.url + "/login")
            page.fill("#f-username", "admin")
            page.fill("#f-password", ADMIN_PASSWORD)
            page.click("button:has-text('Log in')")
            expect(page).to_have_url(re.compile(r"/dashboard$"))
            expect(page.locator("#standby-note")).to_contain_text("standby of a failover pair")
            page.click("nav a:has-text('Failover')")
            expect(page).to_have_url(re.compile(r"/failover$"))
            # on a loaded machine B may stand back for a moment (late adverts): the page says so;
            # the spec looks at it once B is a plain standby
            wait_for("B a plain standby on its page",
                     lambda: page.goto(web.url + "/failover") and "backup box, standby"
                     in page.text_content("#ha-headline"),
                     20, every=0.5)
            expect(page.locator("#ha-headline")).to_contain_text(f"backup box, standby; VIP {lan.vip}/24")
            expect(page.locator("#ha-peer")).to_contain_text(f"peer {lan.box_a.addr} is active")
            expect(page.locator("#ha-replication")).to_contain_text("Configuration")
            expect(page.locator("#ha-replication")).to_contain_text("received from the active box")
            expect(page.locator("#f-vip")).to_have_value(f"{lan.vip}/24")
            shot(page, "190-failover-standby")

            page.fill("#f-vip", lan.box_a.addr + "/24")
            page.click("#ha-save")
            expect(page.locator("#e-vip")).to_contain_text("the virtual address must differ from both boxes'")
            shot(page, "191-failover-error")
            page.fill("#f-vip", f"{lan.vip}/24")
            page.click("#ha-save")                  # allowed on the standby: these are B's own settings
            expect(page.locator(".flash.ok")).to_contain_text("take effect at the next start of the PBX")

            # the dashboard's card follows the takeover live (the status stream)
            page.click("nav a:has-text('Dashboard')")
            expect(page.locator("#failover-state")).to_have_text("standby")
            expect(page.locator("#dashboard")).to_have_attribute("data-live", "1")
            lan.power_cut(lan.box_a)
            expect(page.locator("#failover-state")).to_have_text("active", timeout=15_000)
            expect(page.locator("#failover-peer")).to_contain_text(f"peer {lan.box_a.addr} unreachable",
                                                                  timeout=15_000)
            wait_for("B to take over", lambda: pair.state("b") == "MASTER", 15)
            wait_for("A unreachable on B", lambda: "unreachable" in page.goto(web.url + "/failover").text(), 15,
                     every=0.3)
            expect(page.locator("#ha-headline")).to_contain_text("backup box, active")
            expect(page.locator("#ha-peer")).to_contain_text(f"peer {lan.box_a.addr} unreachable")
            expect(page.locator("#ha-takeover")).to_contain_text(re.compile(r"took over at .*, \d+ ms after the "
                                                                            r"peer's last heartbeat"))
            expect(page.locator("#standby-note")).to_have_count(0)
            shot(page, "192-failover-after-takeover")
            page.click("nav a:has-text('Dashboard')")
            card = page.locator("#failover-card")
            expect(card).to_contain_text("active")
            expect(card).to_contain_text(f"peer {lan.box_a.addr} unreachable")
            expect(card).to_contain_text("ms after the peer's last heartbeat")
            shot(page, "193-dashboard-failover")
        finally:
            web.stop()
