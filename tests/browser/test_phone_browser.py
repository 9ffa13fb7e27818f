"""The browser phone in real Chromium against the running PBX (Kamailio WebSocket + rtpengine +
call service), with a pjsua2 desk phone on the other end. Chromium's microphone is a WAV file with
a 1000 Hz tone (--use-file-for-fake-audio-capture); the pjsua2 phone sends 700 Hz. Both sides must
hear the other: the pjsua2 phone's recording holds 1000 Hz, the page's getStats() counts packets
received with audio energy. Screenshots in docs/screenshots/ (laptop-/phone-14N-name.png).

Most specs run the PBX on 127.0.0.1: the web UI is http://127.0.0.1 and the WebSocket
ws://127.0.0.1, which Chromium treats as a secure context (getUserMedia works). The last one runs it
on a LAN address (tests/lanhost.py), where the page is HTTPS and the WebSocket wss, both with the
box's own certificate."""
from __future__ import annotations

import re
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import expect, sync_playwright

from tests.browser.test_webui_browser import CHROMIUM, CHROMIUM_ARGS, LAPTOP, shot
from tests.browser.webui_env import ADMIN_PASSWORD, USER_PASSWORD
from tests.pbxproc import PbxProcess, free_port, free_rtp_range
from tests.phones.audio import tone_present
from tests.phones.pj import PjPhone
from webui.auth.accounts import AccountStore

BROWSER_HZ = 1000
DESK_HZ = 700
TARGET_HZ = 1500


def write_tone(path: Path, hz: int, seconds: float = 30.0, rate: int = 48000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (np.sin(2 * np.pi * hz * t) * 9000).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


@pytest.fixture(scope="module")
def pbx(tmp_path_factory):
    data = tmp_path_factory.mktemp("phone") / "data"
    lo, hi = free_rtp_range(100)
    proc = PbxProcess(data, extensions=("201", "202", "203"), web=True,
                      args=["--browser-phone-port", str(free_port(both=False, kind=__import__("socket").SOCK_STREAM)),
                            "--browser-phone-rtp-ports", f"{lo}-{hi}", "--no-lines"])
    accounts = AccountStore(data)
    accounts.create("admin", ADMIN_PASSWORD, "admin")
    accounts.create("201", USER_PASSWORD, "user", extension="201")
    proc.start()
    proc.url = f"http://127.0.0.1:{proc.web_port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:       # the web UI is a child of `pbx run`: wait for it
        try:
            __import__("urllib.request").request.urlopen(proc.url + "/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    wav = write_tone(tmp_path_factory.mktemp("mic") / "tone.wav", BROWSER_HZ)
    args = CHROMIUM_ARGS + ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                            f"--use-file-for-fake-audio-capture={wav}", "--autoplay-policy=no-user-gesture-required"]
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=args, timeout=30_000)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=LAPTOP)
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    yield pg
    context.close()


def desk_phone(pbx, tmp_path, number="202", hz=DESK_HZ) -> PjPhone:
    p = PjPhone(user=number, secret=pbx.secrets[number], registrar=pbx.registrar, tone_hz=hz,
                record_dir=tmp_path).start()
    assert p.register() == 200
    return p


def open_phone(page, pbx):
    page.goto(pbx.url + "/login")
    page.fill("#f-username", "201")
    page.fill("#f-password", USER_PASSWORD)
    page.click("button:has-text('Log in')")
    expect(page).to_have_url(re.compile(r"/me$"))
    page.click("#browser-phone-link")
    expect(page).to_have_url(re.compile(r"/phone$"))
    expect(page.locator("#phone-state")).to_have_text("registered")


def hears_the_other_end(page, seconds: float = 20.0) -> dict:
    """getStats() of the page's call until packets with audio energy arrive (returns the stats)."""
    deadline = time.monotonic() + seconds
    stats = None
    while time.monotonic() < deadline:
        stats = page.evaluate("window.pbxPhone.stats()")
        if stats and stats.get("packetsReceived", 0) >= 100 and (stats.get("totalAudioEnergy") or 0) > 0:
            return stats
        time.sleep(0.3)
    raise AssertionError(f"the browser heard nothing from the other end: {stats}")


def test_the_browser_calls_a_desk_phone_with_audio_both_ways_and_sends_dtmf(page, pbx, tmp_path):
    desk = desk_phone(pbx, tmp_path)
    try:
        desk.auto_answer(200, after_ms=1500)
        open_phone(page, pbx)
        page.fill("#phone-number", "202")
        page.click("#call-btn")
        expect(page.locator("#call-state")).to_have_text("connected")
        desk.wait_state("CONFIRMED", timeout=10)
        stats = hears_the_other_end(page)
        assert "audio/PCMU" in stats["codecs"] or "audio/PCMA" in stats["codecs"], stats
        # and the page plays it (the remote stream is in the <audio> element, playing)
        assert page.evaluate("() => { const a = document.getElementById('remote-audio');"
                             " return !!a.srcObject && !a.paused && a.srcObject.getAudioTracks().length === 1; }")
        page.click("#keypad >> text=5")
        page.click("#keypad >> text=#")
        deadline = time.monotonic() + 5
        while desk.dtmf_received != "5#" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert desk.dtmf_received == "5#", f"desk phone got DTMF {desk.dtmf_received!r}"
        time.sleep(2)   # two more seconds of the browser's tone in the desk phone's recording
        shot(page, "140-browser-phone-call")
        page.click("#hold-btn")
        expect(page.locator("#call-state")).to_have_text("on hold")
        page.click("#hold-btn")
        expect(page.locator("#call-state")).to_have_text("connected")
        page.click("#hangup-btn")
        desk.wait_state("DISCONNECTED", timeout=10)
        expect(page.locator("#call-panel")).to_be_hidden()
        assert tone_present(desk.recording_path, BROWSER_HZ, start_s=0.5), "the desk phone did not hear the browser"
        expect(page.locator("#history tbody tr").first).to_contain_text("202")
        expect(page.locator("#history tbody tr").first).to_contain_text("answered")
    finally:
        desk.stop()


def test_a_desk_phone_calls_the_browser_which_rings_and_answers(page, pbx, tmp_path):
    desk = desk_phone(pbx, tmp_path)
    try:
        open_phone(page, pbx)
        desk.call(pbx.uri("201"))
        expect(page.locator("#incoming")).to_be_visible()
        expect(page.locator("#incoming-from")).to_contain_text("202")
        shot(page, "141-browser-phone-ringing")
        page.click("#answer-btn")
        expect(page.locator("#call-state")).to_have_text("connected")
        desk.wait_state("CONFIRMED", timeout=10)
        hears_the_other_end(page)
        time.sleep(2)
        desk.hangup()
        desk.wait_state("DISCONNECTED", timeout=10)
        expect(page.locator("#call-panel")).to_be_hidden()
        assert tone_present(desk.recording_path, BROWSER_HZ, start_s=0.5), "the desk phone did not hear the browser"
        expect(page.locator("#history tbody tr").first).to_contain_text("answered")
        shot(page, "142-browser-phone-history")
    finally:
        desk.stop()


def test_the_browser_blind_transfers_its_caller_to_another_desk_phone(page, pbx, tmp_path):
    caller = desk_phone(pbx, tmp_path)
    target = desk_phone(pbx, tmp_path, "203", TARGET_HZ)
    try:
        target.auto_answer(200, after_ms=300)
        open_phone(page, pbx)
        caller.call(pbx.uri("201"))
        page.click("#answer-btn")
        expect(page.locator("#call-state")).to_have_text("connected")
        caller.wait_state("CONFIRMED", timeout=10)
        page.fill("#transfer-to", "203")
        shot(page, "143-browser-phone-transfer")
        page.click("#transfer-btn")
        target.wait_incoming(timeout=10)
        target.wait_state("CONFIRMED", timeout=10)
        expect(page.locator("#call-panel")).to_be_hidden()      # the PBX ended the browser's leg
        time.sleep(2)
        caller.hangup()
        target.wait_state("DISCONNECTED", timeout=10)
        assert tone_present(caller.recording_path, TARGET_HZ, start_s=-1.5, end_s=-0.3), "caller not joined to 203"
        assert tone_present(target.recording_path, DESK_HZ, start_s=-1.5, end_s=-0.3), "203 does not hear the caller"
        expect(page.locator("#history tbody tr").first).to_contain_text("answered")
    finally:
        target.stop()
        caller.stop()


def test_two_browser_phones_call_each_other_the_administrator_acting_as_an_extension(browser, pbx):
    """201 (a user) calls 203, whose page an administrator opened by choosing 203: both browser legs
    go through rtpengine and the call service, and each page receives the other's audio."""
    user_ctx, admin_ctx = browser.new_context(viewport=LAPTOP), browser.new_context(viewport=LAPTOP)
    try:
        caller, callee = user_ctx.new_page(), admin_ctx.new_page()
        for pg in (caller, callee):
            pg.set_default_timeout(15_000)
        open_phone(caller, pbx)
        callee.goto(pbx.url + "/login")
        callee.fill("#f-username", "admin")
        callee.fill("#f-password", ADMIN_PASSWORD)
        callee.click("button:has-text('Log in')")
        callee.click("nav >> text=Browser phone")
        expect(callee.locator("#phone-missing")).to_be_visible()
        callee.select_option("#f-ext", "203")
        callee.click("#choose-ext button")
        expect(callee).to_have_url(re.compile(r"/phone\?ext=203$"))
        expect(callee.locator("#phone-state")).to_have_text("registered")
        shot(callee, "144-browser-phone-admin-as-extension")
        caller.fill("#phone-number", "203")
        caller.click("#call-btn")
        expect(callee.locator("#incoming-from")).to_contain_text("201")
        callee.click("#answer-btn")
        expect(caller.locator("#call-state")).to_have_text("connected")
        expect(callee.locator("#call-state")).to_have_text("connected")
        hears_the_other_end(caller)
        hears_the_other_end(callee)
        caller.click("#hangup-btn")
        expect(callee.locator("#call-panel")).to_be_hidden()
        expect(callee.locator("#history tbody tr").first).to_contain_text("answered")
    finally:
        user_ctx.close()
        admin_ctx.close()


# ----- on a LAN address: HTTPS page, wss with the box's certificate -------------------------------
@pytest.fixture(scope="module")
def lan_pbx(tmp_path_factory):
    from tests.lanhost import LanHost
    with LanHost() as lan:
        data = tmp_path_factory.mktemp("phone-lan") / "data"
        lo, hi = free_rtp_range(100)
        proc = PbxProcess(data, extensions=("201", "202"), web=True, addr=lan.box_addr,
                          args=["--browser-phone-port", str(free_port(both=False, kind=__import__("socket").SOCK_STREAM)),
                                "--browser-phone-rtp-ports", f"{lo}-{hi}", "--no-lines"])
        accounts = AccountStore(data)
        accounts.create("admin", ADMIN_PASSWORD, "admin")
        accounts.create("201", USER_PASSWORD, "user", extension="201")
        proc.start()
        proc.url = f"https://{lan.box_addr}:{proc.web_port}"
        import ssl
        import urllib.request
        insecure = ssl.create_default_context()
        insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(proc.url + "/healthz", timeout=1, context=insecure)
                break
            except OSError:
                time.sleep(0.2)
        yield proc
        proc.stop()


def test_over_https_the_browser_phone_uses_wss_with_the_boxs_certificate(browser, lan_pbx, tmp_path):
    """The box's self-signed certificate, accepted once by the user (here: ignore_https_errors),
    serves the page and the secure WebSocket alike."""
    context = browser.new_context(viewport=LAPTOP, ignore_https_errors=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    desk = PjPhone(user="202", secret=lan_pbx.secrets["202"], registrar=lan_pbx.registrar, tone_hz=DESK_HZ,
                   local_addr=lan_pbx.addr, record_dir=tmp_path).start()
    try:
        assert desk.register() == 200
        desk.auto_answer(200, after_ms=500)
        open_phone(page, lan_pbx)
        creds = page.evaluate("""() => fetch('/phone/credentials', {method: 'POST', body: new URLSearchParams({ext: '201'}),
            headers: {'X-CSRF-Token': document.getElementById('phone-app').dataset.csrf}}).then(r => r.json())""")
        assert creds["ws_url"].startswith(f"wss://{lan_pbx.addr}:")
        page.fill("#phone-number", "202")
        page.click("#call-btn")
        expect(page.locator("#call-state")).to_have_text("connected")
        hears_the_other_end(page)
        time.sleep(2)
        page.click("#hangup-btn")
        desk.wait_state("DISCONNECTED", timeout=10)
        assert tone_present(desk.recording_path, BROWSER_HZ, start_s=0.5), "the desk phone did not hear the browser"
    finally:
        desk.stop()
        context.close()
