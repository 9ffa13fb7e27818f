"""CPU of rtpengine per browser phone call: `python -m tests.bench.browser_phone [--calls 8] [--seconds 20]`.

The real PBX with browser phones on (127.0.0.1), N Chromium pages (fake microphone) logged in as
extensions 201.. each calling a pjsua2 desk phone (221/222, 4 calls each), all talking at once.
rtpengine's utime+stime over the window (from /proc) divided by the calls; its idle CPU before.
The number goes into docs/decisions/018-browser-phone.md.
"""
from __future__ import annotations

import argparse
import re
import socket
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from tests.bench.procstat import comm, cpu_seconds, descendants
from tests.browser.test_phone_browser import BROWSER_HZ, write_tone
from tests.browser.test_webui_browser import CHROMIUM, CHROMIUM_ARGS
from tests.browser.webui_env import ADMIN_PASSWORD, USER_PASSWORD
from tests.pbxproc import PbxProcess, free_port, free_rtp_range
from tests.phones.pj import PjPhone
from webui.auth.accounts import AccountStore


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    n = args.calls
    users = [str(201 + i) for i in range(n)]
    desks = ["221", "222", "223", "224"][: (n + 3) // 4]
    tmp = Path(tempfile.mkdtemp(prefix="bench-phone-"))
    lo, hi = free_rtp_range(200)
    pbx = PbxProcess(tmp / "data", extensions=users + desks, web=True, rtp_size=400,
                     args=["--browser-phone-port", str(free_port(socket.SOCK_STREAM, both=False)),
                           "--browser-phone-rtp-ports", f"{lo}-{hi}", "--no-lines"])
    accounts = AccountStore(pbx.data)
    accounts.create("admin", ADMIN_PASSWORD, "admin")
    for u in users:
        accounts.create(u, USER_PASSWORD, "user", extension=u)
    pbx.start()
    url = f"http://127.0.0.1:{pbx.web_port}"
    phones = []
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        rtp_pid = next(p for p in descendants(pbx.proc.pid) if comm(p) == "rtpengine")
        for d in desks:
            p = PjPhone(user=d, secret=pbx.secrets[d], registrar=pbx.registrar, tone_hz=700, record_dir=tmp).start()
            assert p.register() == 200
            p.auto_answer(200)
            phones.append(p)
        c0, t0 = cpu_seconds(rtp_pid), time.monotonic()
        time.sleep(5)
        idle = (cpu_seconds(rtp_pid) - c0) / (time.monotonic() - t0) * 100
        wav = write_tone(tmp / "tone.wav", BROWSER_HZ, seconds=120)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, timeout=30_000, args=CHROMIUM_ARGS + [
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}", "--autoplay-policy=no-user-gesture-required"])
            pages = []
            for i, u in enumerate(users):
                page = browser.new_context().new_page()
                page.set_default_timeout(30_000)
                page.goto(url + "/login")
                page.fill("#f-username", u)
                page.fill("#f-password", USER_PASSWORD)
                page.click("button:has-text('Log in')")
                expect(page).to_have_url(re.compile(r"/me$"))
                page.goto(url + "/phone")
                expect(page.locator("#phone-state")).to_have_text("registered")
                page.fill("#phone-number", desks[i // 4])
                page.click("#call-btn")
                expect(page.locator("#call-state")).to_have_text("connected")
                pages.append(page)
            time.sleep(3)
            before = [page.evaluate("window.pbxPhone.stats()")["packetsReceived"] for page in pages]
            c0, t0 = cpu_seconds(rtp_pid), time.monotonic()
            time.sleep(args.seconds)
            busy = (cpu_seconds(rtp_pid) - c0) / (time.monotonic() - t0) * 100
            after = [page.evaluate("window.pbxPhone.stats()")["packetsReceived"] for page in pages]
            rss = rss_mb(rtp_pid)
            for page in pages:
                page.click("#hangup-btn")
            browser.close()
        pps = sum(a - b for a, b in zip(after, before)) / args.seconds / n
        print(f"rtpengine: {n} browser calls, {busy:.2f} % of a core ({busy / n:.3f} % per call), idle "
              f"{idle:.2f} %, RSS {rss:.0f} MB; each browser received {pps:.0f} packets/s")
    finally:
        for p in phones:
            p.stop()
        pbx.stop()


if __name__ == "__main__":
    main()
