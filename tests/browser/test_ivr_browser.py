"""IVR menus built in real Chromium, then called by real phones: the menu made on the page routes
key 1 to a ring group and key 2 to voicemail. Also the System prompts page. Screenshots go to
docs/screenshots/ as laptop-/phone-8N-name.png."""
from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from firmware.features.ringgroups import Member, RingGroup
from tests.browser.test_webui_browser import browser, page, shot  # noqa: F401  (fixtures)
from firmware.config import ConfigStore
from tests.browser.webui_env import ADMIN_PASSWORD, WebProcess
from tests.pbxproc import PbxProcess
from tests.phones.audio import tone_present
from tests.phones.pj import PjPhone
from webui.auth.accounts import AccountStore

CALLER_HZ, MEMBER_HZ = 700, 1100


@pytest.fixture
def pbx(tmp_path):
    proc = PbxProcess(tmp_path / "pbx", extensions=["1000", "1001", "1002"], web=True, voicemail=True,
                      settings={"busy_tone_seconds": 1})
    proc.store.update_extension("1001", name="Sales desk")
    proc.store.add_record("ring_groups", RingGroup("600", "Sales", "ring_all", (Member("extension:1001"),)))
    AccountStore(proc.data).create("admin", ADMIN_PASSWORD, "admin")
    proc.start()
    proc.url = f"http://{proc.addr}:{proc.web_port}"
    wait_for_web(proc.url)
    yield proc
    proc.stop()


def wait_for_web(url, timeout=20.0):
    """`pbx run` is ready before its web process answers: wait for /healthz."""
    import urllib.request
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def log_in(page, url):
    page.goto(url + "/login")
    page.fill("#f-username", "admin")
    page.fill("#f-password", ADMIN_PASSWORD)
    page.click("button:has-text('Log in')")
    expect(page).to_have_url(re.compile(r"/dashboard$"))


def build_menu_in_the_browser(page, url):
    log_in(page, url)
    page.click("nav >> text=IVR menus")
    expect(page).to_have_url(re.compile(r"/ivr$"))
    page.click("text=New menu")
    page.fill("#f-number", "500")
    page.fill("#f-name", "Reception")
    page.fill("#f-prompt_text", "Thank you for calling. For sales press 1. To leave a message press 2.")
    page.select_option("#f-language", "en-GB")
    page.select_option("#f-option_1_kind", "ring_group")
    page.fill("#f-option_1_ring_group", "699")             # a group that does not exist
    page.select_option("#f-option_2_kind", "voicemail")
    page.fill("#f-option_2_voicemail", "1002")
    page.fill("#f-timeout", "4")
    page.fill("#f-retries", "1")
    page.click("button:has-text('Add')")
    expect(page.locator("#e-option_1")).to_contain_text("no ring group 699")
    shot(page, "80-ivr-error")
    page.fill("#f-option_1_ring_group", "600")
    page.click("button:has-text('Add')")
    expect(page).to_have_url(re.compile(r"/ivr/500$"))
    tree = page.locator("#ivr-tree")
    expect(tree).to_contain_text("1 → ring group 600")
    expect(tree).to_contain_text("2 → voicemail 1002")
    expect(tree).to_contain_text("no key → goodbye, hang up")
    expect(tree.locator("audio")).to_have_count(1)       # the spoken prompt, made when saved
    shot(page, "81-ivr-menu-tree")
    page.goto(url + "/ivr")
    expect(page.locator("#ivr-500")).to_contain_text("Reception")
    shot(page, "82-ivr-menus")


@pytest.mark.e2e
def test_a_menu_built_in_the_browser_sends_key_1_to_a_ring_group_and_key_2_to_voicemail(page, pbx, tmp_path):
    build_menu_in_the_browser(page, pbx.url)
    with PjPhone(user="1000", secret=pbx.secrets["1000"], registrar=pbx.registrar, tone_hz=CALLER_HZ,
                 record_dir=tmp_path) as caller, \
            PjPhone(user="1001", secret=pbx.secrets["1001"], registrar=pbx.registrar, tone_hz=MEMBER_HZ,
                    record_dir=tmp_path) as member:
        assert caller.register() == 200 and member.register() == 200
        caller.call(pbx.uri("500"))
        caller.wait_state("CONFIRMED", timeout=10)
        time.sleep(1.0)
        caller.send_dtmf("1")
        member.wait_incoming(timeout=10)                   # the ring group's member rings
        member.answer(200)
        time.sleep(2.0)
        caller.hangup()
        member.wait_state("DISCONNECTED", timeout=8)
        assert tone_present(caller.recording_path, MEMBER_HZ, start_s=-1.5, end_s=-0.2)

        caller.call(pbx.uri("500"))
        caller.wait_state("CONFIRMED", timeout=10)
        time.sleep(1.0)
        caller.send_dtmf("2")
        deadline = time.monotonic() + 10
        while "-> 500: voicemail 1002" not in pbx.log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        caller.hangup()
        caller.wait_state("DISCONNECTED", timeout=8)
    log = pbx.log_path.read_text()
    assert re.search(r"IVR 500 try 1: keys '1' -> goto ring_group:600", log)
    assert re.search(r"IVR 500 try 1: keys '2' -> goto voicemail:1002", log)
    assert re.search(r"-> 500: voicemail 1002", log)      # the mailbox's flow took the call


@pytest.fixture
def web(tmp_path):
    data = tmp_path / "data"
    ConfigStore(data)
    AccountStore(data).create("admin", ADMIN_PASSWORD, "admin")
    proc = WebProcess(data).start()
    yield proc
    proc.stop()


def test_system_prompts_page_lists_every_prompt_and_replaces_one(page, web, tmp_path):
    from tests.test_webui_ivr import wav_16k_stereo
    log_in(page, web.url)
    page.click("nav >> text=System prompts")
    expect(page).to_have_url(re.compile(r"/prompts$"))
    expect(page.locator("#p-not_found")).to_contain_text("The number you have dialled is not recognised")
    upload = tmp_path / "busy.wav"
    upload.write_bytes(wav_16k_stereo(1.5))
    page.click("#replace-busy summary")
    page.set_input_files("#upload-busy", str(upload))
    page.locator("#p-busy button:has-text('Upload')").click()
    expect(page.locator(".flash.ok")).to_contain_text("Prompt busy (en-GB) replaced")
    expect(page.locator("#p-busy")).to_contain_text("played instead")
    assert (web.data / "prompts" / "custom" / "busy.wav").is_file()
    shot(page, "83-system-prompts")
    page.locator("#p-busy button:has-text('Revert')").click()
    expect(page.locator(".flash.ok")).to_contain_text("is the box's own again")
    assert not (web.data / "prompts" / "custom" / "busy.wav").exists()
    page.click("#lang-en-US")
    expect(page).to_have_url(re.compile(r"/prompts\?lang=en-US$"))
    expect(page.locator("main")).to_contain_text("IVR menus in en-US")
    shot(page, "84-system-prompts-en-us")
