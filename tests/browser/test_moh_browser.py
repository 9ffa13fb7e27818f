"""Music on hold, conference rooms and paging groups in real Chromium: an MP3 uploaded, converted,
listed and playable in the page; a file that is not audio refused with the reason; a room and a
paging group created. Screenshots go to docs/screenshots/ as laptop-/phone-15N-name.png."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from firmware.config import ConfigStore
from tests.browser.test_webui_browser import browser, page, shot  # noqa: F401  (fixtures)
from tests.browser.webui_env import ADMIN_PASSWORD, WebProcess
from tests.test_moh import make_audio
from webui.auth.accounts import AccountStore


@pytest.fixture
def web(tmp_path):
    data = tmp_path / "data"
    store = ConfigStore(data)
    for number, name in (("1001", "Sales"), ("1002", "Warehouse"), ("1003", "Yard")):
        store.add_extension(number, name)
    AccountStore(data).create("admin", ADMIN_PASSWORD, "admin")
    proc = WebProcess(data).start()
    yield proc
    proc.stop()


def log_in(page, web):
    page.goto(web.url + "/login")
    page.fill("#f-username", "admin")
    page.fill("#f-password", ADMIN_PASSWORD)
    page.click("button:has-text('Log in')")
    expect(page).to_have_url(re.compile(r"/dashboard$"))


def test_admin_uploads_hold_music_listens_to_it_and_a_text_file_is_refused(page, web, tmp_path):
    log_in(page, web)
    page.click("nav >> text=Music on hold")
    expect(page).to_have_url(re.compile(r"/moh$"))
    page.fill("#f-name", "sales")
    page.fill("#f-extensions", "1001")
    page.click("#new-class button:has-text('Create')")
    expect(page.locator(".flash")).to_contain_text("Music on hold class sales created")
    mp3 = make_audio(tmp_path / "Summer tune.mp3", hz=600, seconds=8)
    page.set_input_files("#upload-sales", str(mp3))
    page.click("#class-sales button:has-text('Upload')")
    expect(page.locator(".flash")).to_contain_text("Summer tune.mp3 added to sales as Summer-tune.wav")
    audio = page.locator("#class-sales audio")
    expect(audio).to_have_count(1)
    src = audio.get_attribute("src")
    reply = page.request.get(web.url + src)
    assert reply.status == 200 and reply.headers["content-type"] == "audio/wav" and reply.body()[:4] == b"RIFF"
    notes = tmp_path / "notes.mp3"
    notes.write_text("minutes of the meeting\n" * 20)
    page.set_input_files("#upload-sales", str(notes))
    page.click("#class-sales button:has-text('Upload')")
    expect(page.locator(".flash.error")).to_contain_text("not in an audio format")
    shot(page, "150-music-on-hold")


def test_admin_creates_a_conference_room_and_a_paging_group(page, web):
    log_in(page, web)
    page.click("nav >> text=Conference")
    page.click("text=New room")
    page.fill("#f-number", "800")
    page.fill("#f-name", "Board room")
    page.fill("#f-pin", "12")
    page.click("button:has-text('Save')")
    expect(page.locator("#e-pin")).to_contain_text("3-10 digits")
    shot(page, "151-conference-error")
    page.fill("#f-pin", "4321")
    page.fill("#f-listener_pin", "8765")
    page.click("button:has-text('Save')")
    expect(page.locator("#room-800")).to_contain_text("Board room")
    shot(page, "152-conference-rooms")
    page.click("nav >> text=Paging")
    page.click("text=New paging group")
    page.fill("#f-number", "500")
    page.fill("#f-name", "Warehouse")
    page.fill("#f-members", "1002 1003")
    page.click("button:has-text('Save')")
    expect(page.locator("#group-500")).to_contain_text("1002")
    shot(page, "153-paging-groups")
