"""Office call routing pages in real Chromium: time conditions (with the 14-day calendar),
call blocking and feature codes. Screenshots go to docs/screenshots/ as laptop-/phone-NN-name.png."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from firmware.config import ConfigStore
from tests.browser.test_webui_browser import browser, page, shot  # noqa: F401  (fixtures)
from tests.browser.webui_env import ADMIN_PASSWORD, WebProcess
from webui.auth.accounts import AccountStore


@pytest.fixture
def web(tmp_path):
    data = tmp_path / "data"
    store = ConfigStore(data)
    store.add_extension("201", "Reception")
    store.add_extension("202", "Night desk")
    store.update_settings(timezone="Europe/London")
    AccountStore(data).create("admin", ADMIN_PASSWORD, "admin")
    proc = WebProcess(data).start()
    proc.store = store
    yield proc
    proc.stop()


def log_in(page, web):
    page.goto(web.url + "/login")
    page.fill("#f-username", "admin")
    page.fill("#f-password", ADMIN_PASSWORD)
    page.click("button:has-text('Log in')")
    expect(page).to_have_url(re.compile(r"/dashboard$"))


def test_admin_sets_office_hours_with_bank_holidays_and_sees_the_14_day_calendar(page, web):
    log_in(page, web)
    page.click("nav >> text=Time conditions")
    expect(page).to_have_url(re.compile(r"/timeconditions$"))
    page.click("text=New time condition")
    page.fill("#f-number", "1")
    page.fill("#f-name", "Office hours")
    page.fill("#f-hours", "mon-fri 09:00-12:30,13:30-17:30\nsat 10:00-13:00")
    page.fill("#f-special", "2026-12-24 09:00-12:00 Christmas Eve\n2026-12-28..2026-12-31 closed stocktaking")
    page.select_option("#f-holidays", "GB/ENG")
    page.select_option("#f-open_destination_kind", "extension")
    page.select_option("#f-open_destination_extension", "201")
    page.select_option("#f-closed_destination_kind", "extension")
    page.select_option("#f-closed_destination_extension", "202")
    page.fill("#f-hours", "mon-fry 09:00-17:30")
    page.click("button:has-text('Add')")
    expect(page.locator("#e-hours")).to_contain_text("'mon-fry' is not a day")
    shot(page, "60-timecondition-error")
    page.fill("#f-hours", "mon-fri 09:00-12:30,13:30-17:30\nsat 10:00-13:00")
    page.click("button:has-text('Add')")
    expect(page).to_have_url(re.compile(r"/timeconditions/1$"))
    calendar = page.locator("#tc-calendar")
    expect(calendar.locator("tr[data-day]")).to_have_count(14)
    expect(calendar.locator(".tc-seg.open").first).to_be_visible()
    shot(page, "61-timecondition-calendar")
    page.goto(web.url + "/timeconditions")
    expect(page.locator("#tc-1")).to_contain_text("Office hours")
    expect(page.locator("#tc-1")).to_contain_text(re.compile(r"open|closed"))
    shot(page, "62-timeconditions")


def test_admin_blocks_a_caller_and_bars_premium_and_international_numbers(page, web):
    log_in(page, web)
    page.click("nav >> text=Call blocking")
    expect(page).to_have_url(re.compile(r"/blocking$"))
    page.fill("#add-caller #f-match", "not a number")
    page.click("#add-caller button:has-text('Block')")
    expect(page.locator("#e-match")).to_contain_text("prefix ending in *")
    page.fill("#add-caller #f-match", "07700 900123")
    page.select_option("#add-caller #f-action", "announcement")
    page.fill("#add-caller #f-note", "nuisance calls")
    page.click("#add-caller button:has-text('Block')")
    expect(page.locator("#blocked-callers")).to_contain_text("07700900123")
    expect(page.locator("#blocked-callers")).to_contain_text("Announcement")
    page.fill("#add-caller #f-match", "anonymous")
    page.select_option("#add-caller #f-action", "busy")
    page.click("#add-caller button:has-text('Block')")
    page.click("text=Bar the usual")
    expect(page.locator("#barred-prefixes")).to_contain_text("Premium rate (09)")
    expect(page.locator("#barred-prefixes")).to_contain_text("International (00)")
    shot(page, "63-call-blocking")


def test_admin_moves_the_day_night_code_and_switches_one_off(page, web):
    log_in(page, web)
    page.click("nav >> text=Feature codes")
    expect(page).to_have_url(re.compile(r"/codes$"))
    row = page.locator('tr[data-code="*33"]')
    expect(row).to_contain_text("Switch day/night mode")
    row.locator("input[name=code]").fill("*78")
    row.locator("button:has-text('Save')").click()
    expect(page.locator('tr[data-code="*33"] .error')).to_contain_text("already the code for 'Do not disturb on'")
    page.locator('tr[data-code="*33"] input[name=code]').fill("*34")
    page.locator('tr[data-code="*33"] button:has-text("Save")').click()
    expect(page.locator('tr[data-code="*33"]')).to_contain_text("*34[NUM]")
    page.locator('tr[data-code="*32"] input[name=enabled]').uncheck()
    page.locator('tr[data-code="*32"] button:has-text("Save")').click()
    expect(page.locator('tr[data-code="*32"] input[name=enabled]')).not_to_be_checked()
    shot(page, "64-feature-codes")
    assert web.store.record("feature_code_overrides", "*33").code == "*34"


def test_admin_switches_night_mode_and_adds_a_department_toggle(page, web):
    log_in(page, web)
    page.click("nav >> text=Day/night")
    expect(page).to_have_url(re.compile(r"/daynight$"))
    page.click("#toggle-1 button:has-text('Switch to NIGHT')")
    expect(page.locator("#toggle-1")).to_contain_text("NIGHT")
    assert web.store.settings().mode == "night"
    page.click("text=New toggle")
    page.fill("#f-number", "2")
    page.fill("#f-name", "Sales")
    page.select_option("#f-day_destination_kind", "extension")
    page.select_option("#f-day_destination_extension", "201")
    page.select_option("#f-night_destination_kind", "extension")
    page.select_option("#f-night_destination_extension", "202")
    page.fill("#f-pin", "4321")
    page.click("button:has-text('Save')")
    expect(page.locator("#toggle-2")).to_contain_text("*332")
    shot(page, "65-day-night")


def test_admin_adds_and_imports_company_contacts_and_sees_the_phone_directory_addresses(page, web, tmp_path):
    log_in(page, web)
    page.click("nav >> text=Phonebook")
    expect(page).to_have_url(re.compile(r"/phonebook$"))
    page.fill("#add-contact #f-name", "Bob & Sons Plumbing")
    page.fill("#add-contact #f-work", "call me")
    page.click("#add-contact button:has-text('Add')")
    expect(page.locator("#e-work")).to_contain_text("not a phone number")
    page.fill("#add-contact #f-work", "020 7946 0000")
    page.click("#add-contact button:has-text('Add')")
    expect(page.locator("#contacts")).to_contain_text("02079460000")
    csv_path = tmp_path / "people.csv"
    csv_path.write_text("name,company,mobile,email\nCarol Jones,Acme,07700 900777,carol@example.com\nNo Number,,,\n")
    page.set_input_files("#import input[type=file]", str(csv_path))
    page.click("#import button:has-text('Import')")
    expect(page.locator("#import-errors")).to_contain_text("line 3")
    expect(page.locator("#contacts")).to_contain_text("Carol Jones")
    expect(page.locator("#directory-urls")).to_contain_text("/phonebook/yealink.xml?token=")
    shot(page, "66-phonebook")
