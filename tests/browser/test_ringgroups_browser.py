"""Ring groups, parking and Follow Me pages in real Chromium, with screenshots in docs/screenshots/
(laptop-/phone-7N-name.png): an admin builds a ring group (after a form error), watches a parked
call appear in its slot without reloading, and a user turns Follow Me on from their own page."""
from __future__ import annotations

import json
import os
import re
import time

import pytest
from playwright.sync_api import expect

from firmware.config import ConfigStore
from tests.browser.test_webui_browser import browser, page, shot  # noqa: F401  (fixtures)
from tests.browser.webui_env import ADMIN_PASSWORD, USER_PASSWORD, WebProcess
from webui.auth.accounts import AccountStore


@pytest.fixture
def web(tmp_path):
    data = tmp_path / "data"
    store = ConfigStore(data)
    for number, name in (("201", "Reception"), ("202", "Sales desk"), ("203", "Back office")):
        store.add_extension(number, name)
    store.add_trunk("carrier", "sip.carrier.example", register=False)
    store.add_outbound_route("mobiles", "_07XXXXXXXXX", "carrier")
    accounts = AccountStore(data)
    accounts.create("admin", ADMIN_PASSWORD, "admin")
    accounts.create("202", USER_PASSWORD, "user", extension="202")
    proc = WebProcess(data).start()
    proc.store = store
    yield proc
    proc.stop()


def log_in(page, web, user="admin", password=ADMIN_PASSWORD, lands=r"/dashboard$"):
    page.goto(web.url + "/login")
    page.fill("#f-username", user)
    page.fill("#f-password", password)
    page.click("button:has-text('Log in')")
    expect(page).to_have_url(re.compile(lands))


def test_admin_creates_a_ring_group_with_a_mobile_that_must_press_1(page, web):
    log_in(page, web)
    page.click("nav >> text=Ring groups")
    expect(page).to_have_url(re.compile(r"/ringgroups$"))
    page.click("text=New ring group")
    page.fill("#f-number", "201")
    page.fill("#f-name", "Sales")
    page.select_option("#f-strategy", "hunt")
    page.fill("#f-members", "202 15\n203 15\n07700 900123 25")
    page.fill("#f-caller_id_prefix", "Sales: ")
    page.select_option("#f-waiting", "music")
    page.select_option("#f-no_answer_kind", "extension")
    page.select_option("#f-no_answer_extension", "201")
    page.click("#save-group")
    expect(page.locator("#e-number")).to_contain_text("201 is an extension")
    shot(page, "70-ring-group-error")
    page.fill("#f-number", "600")
    page.click("#save-group")
    expect(page).to_have_url(re.compile(r"/ringgroups$"))
    row = page.locator("#group-600")
    expect(row).to_contain_text("Hunt (in order)")
    expect(row).to_contain_text("07700900123")
    expect(row).to_contain_text("press 1")
    expect(row).to_contain_text("extension 201 (Reception)")
    shot(page, "71-ring-groups")
    group = web.store.record("ring_groups", "600")
    assert [m.destination for m in group.members] == ["extension:202", "extension:203", "external:07700900123"]


def test_the_parking_page_shows_a_parked_call_as_it_arrives(page, web):
    log_in(page, web)
    page.click("nav >> text=Parking")
    expect(page).to_have_url(re.compile(r"/parking$"))
    expect(page.locator("#slots tr[data-slot]")).to_have_count(20)
    expect(page.locator('#slots tr[data-slot="701"] .who')).to_have_text("free")
    # what the call service writes when B parks A in 701 (services/callsvc/flows/parking.py)
    (web.data / "parking-state.json").write_text(json.dumps({"pid": os.getpid(), "written": time.time(), "slots": [
        {"slot": "701", "lot": "700", "caller": "07700900555", "name": "Dana", "parker": "202",
         "since": time.time() - 75}]}))
    expect(page.locator('#slots tr[data-slot="701"] .who')).to_have_text("Dana 07700900555", timeout=6000)
    expect(page.locator('#slots tr[data-slot="701"] .for')).to_contain_text("1 min")
    expect(page.locator("#parked-count")).to_have_text("1")
    page.fill("#f-timeout", "5")
    page.click("#save-parking")
    expect(page.locator("#e-timeout")).to_contain_text("10-3600")
    page.fill("#f-timeout", "60")
    page.select_option("#f-return_destination_kind", "extension")
    page.select_option("#f-return_destination_extension", "201")
    page.click("#save-parking")
    expect(page.locator(".flash.ok")).to_contain_text("Parking saved")
    expect(page.locator('#slots tr[data-slot="701"]')).to_have_class(re.compile("busy"))
    shot(page, "72-parking")
    lot = web.store.record("parking_lots", "700")
    assert (lot.timeout, lot.return_destination) == (60, "extension:201")


def test_a_user_turns_follow_me_on_from_their_own_page(page, web):
    log_in(page, web, "202", USER_PASSWORD, r"/me$")
    page.click("#follow-me-link")
    expect(page).to_have_url(re.compile(r"/followme/me$"))
    page.check("#f-enabled")
    page.fill("#f-destinations", "202 15\n07700900123 20 soon")
    page.click("#save-follow-me")
    expect(page.locator("#e-destinations")).to_contain_text("ring time and delay")
    shot(page, "73-follow-me-error")
    page.fill("#f-destinations", "202 15\n07700900123 20")
    page.select_option("#f-announce", "name")
    page.click("#save-follow-me")
    expect(page.locator(".flash.ok")).to_contain_text("Follow Me on for 202")
    shot(page, "74-follow-me")
    fm = web.store.record("follow_me", "202")
    assert fm.enabled and [leg.destination for leg in fm.destinations] == ["extension:202", "external:07700900123"]
    assert fm.announce == "name"
