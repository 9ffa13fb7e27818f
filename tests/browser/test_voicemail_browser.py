"""Voicemail pages in real Chromium, with screenshots in docs/screenshots/ (laptop-/phone-9N-name.png):
the admin's mailbox list and a group mailbox form (after an error), and a user's own mailbox page
reached from "My extension": the message plays in the <audio> element, is marked read and
deleted, a greeting WAV is uploaded and a weak PIN refused."""
from __future__ import annotations

import re
import struct

import numpy as np
import pytest
from playwright.sync_api import expect

from firmware.config import ConfigStore
from firmware.features import voicemail as vm
from services.media.wavfile import RATE, write_wav
from services.voicemail import VoicemailStore
from tests.browser import test_webui_browser as specs
from tests.browser.webui_env import ADMIN_PASSWORD, USER_PASSWORD, WebProcess
from webui.auth.accounts import AccountStore

browser, page, shot = specs.browser, specs.page, specs.shot    # the fixtures and screenshots of every page spec


def tone(seconds: float) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * 700 * t) * 8000).astype("<i2").tobytes()


@pytest.fixture
def web(tmp_path):
    data = tmp_path / "data"
    store = ConfigStore(data)
    for number, name in (("201", "Reception"), ("202", "Sales desk")):
        store.add_extension(number, name)
    accounts = AccountStore(data)
    accounts.create("admin", ADMIN_PASSWORD, "admin")
    accounts.create("202", USER_PASSWORD, "user", extension="202")
    messages = VoicemailStore(data)
    for caller, when in (("201", 1_795_000_000.0), ("07700900123", 1_795_100_000.0)):
        rec = messages.recording_path("202")
        write_wav(rec, tone(3.0))
        messages.add("202", rec, caller, "Reception" if caller == "201" else "", when, 3.0)
    proc = WebProcess(data).start()
    proc.store, proc.messages = store, messages
    yield proc
    proc.stop()


def log_in(page, web, user="admin", password=ADMIN_PASSWORD, lands=r"/dashboard$"):
    page.goto(web.url + "/login")
    page.fill("#f-username", user)
    page.fill("#f-password", password)
    page.click("button:has-text('Log in')")
    expect(page).to_have_url(re.compile(lands))


def test_admin_sees_every_mailbox_and_adds_a_group_mailbox(page, web):
    log_in(page, web)
    page.click("nav >> text=Voicemail")
    expect(page).to_have_url(re.compile(r"/voicemail$"))
    expect(page.locator("#mailbox-202")).to_contain_text("2 new · 0 old")
    expect(page.locator("#mailbox-201")).to_contain_text(web.store.record(vm.TABLE, "201").generated_pin)
    page.click("#new-group-mailbox")
    page.fill("#f-number", "201")
    page.fill("#f-name", "Sales")
    page.fill("#f-members", "201 202")
    page.click("#save-mailbox")
    expect(page.locator("#e-number")).to_contain_text("201 is an extension")
    shot(page, "90-group-mailbox-error")
    page.fill("#f-number", "8000")
    page.fill("#f-email", "sales@office.example")
    page.select_option("#f-email_mode", "attach")
    page.click("#save-mailbox")
    expect(page.locator(".flash.ok")).to_contain_text("Group mailbox 8000 added")
    box = web.store.record(vm.TABLE, "8000")
    assert box.group and box.members == ("201", "202") and box.email_mode == "attach"
    page.goto(web.url + "/voicemail")
    expect(page.locator("#mailbox-8000")).to_contain_text("group: 201, 202")
    shot(page, "91-voicemail-mailboxes")


def test_a_user_plays_marks_and_deletes_a_message_and_uploads_a_greeting(page, web, tmp_path):
    log_in(page, web, "202", USER_PASSWORD, lands=r"/me$")
    page.click("#my-voicemail-link")
    expect(page).to_have_url(re.compile(r"/voicemail/202$"))
    rows = page.locator("#voicemail-messages tbody tr")
    expect(rows).to_have_count(2)
    first = web.messages.messages("202")[0]            # the newest: the outside caller
    row = page.locator(f"#msg-{first.id}")
    expect(row).to_contain_text("07700900123")
    # the browser plays the WAV: its duration comes from the served file
    duration = page.evaluate("""async id => {
        const a = document.querySelector('#msg-' + id + ' audio');
        a.preload = 'auto'; a.load();
        await new Promise((ok, bad) => { a.onloadedmetadata = ok; a.onerror = bad; });
        return a.duration; }""", first.id)
    assert abs(duration - 3.0) < 0.1
    expect(page.locator("#generated-pin")).to_have_text(web.store.record(vm.TABLE, "202").generated_pin)
    shot(page, "92-my-voicemail")
    row.locator("button:has-text('Mark read')").click()
    expect(page.locator(".flash.ok")).to_contain_text("marked read")
    assert web.messages.counts("202") == (1, 1)
    page.locator(f"#msg-{first.id} button:has-text('Delete')").click()
    expect(page.locator(".flash.ok")).to_contain_text("deleted")
    expect(rows).to_have_count(1)

    page.fill("#f-pin", "1234")
    page.click("#save-mailbox-settings")
    expect(page.locator(".flash.error")).to_contain_text("too easy to guess")
    page.fill("#f-pin", "4826")
    page.click("#save-mailbox-settings")
    expect(page.locator(".flash.ok")).to_contain_text("Your new PIN works")
    assert vm.pin_matches(web.store.record(vm.TABLE, "202"), "4826")

    not_wav = tmp_path / "greeting.mp3"
    not_wav.write_bytes(b"ID3\x03\x00not audio")
    page.select_option("#f-kind", "busy")
    page.set_input_files("#f-file", str(not_wav))
    page.click("#upload-greeting")
    expect(page.locator(".flash.error")).to_contain_text("not a WAV file")
    wav = tmp_path / "greeting.wav"
    pcm = tone(2.0)
    wav.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVE" + b"fmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, RATE, RATE * 2, 2, 16) + b"data" + struct.pack("<I", len(pcm)) + pcm)
    page.select_option("#f-kind", "busy")
    page.set_input_files("#f-file", str(wav))
    page.click("#upload-greeting")
    expect(page.locator(".flash.ok")).to_contain_text("busy greeting (2 s)")
    expect(page.locator("#greeting-busy audio")).to_have_count(1)
    shot(page, "93-my-voicemail-greeting")
