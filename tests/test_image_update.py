"""A/B updates of the real amd64 .img under QEMU (issue 15 item 4, decision 021).

Runs only with PBX_IMAGE_TEST=1 (`make image-test`), niced: it builds the image and two signed
bundles of the same root (make bundle; one `--broken`, whose pbx-calls.service cannot start),
boots the .img with OVMF (TCG), finishes the setup wizard over HTTPS and uploads each bundle on
the System page, as an administrator would:

- the broken bundle: RAUC writes slot B, the box restarts into it (boot entry pbx-b+3-0.conf),
  pbx-update-check.service finds pbx-calls not running, so the boot is never blessed: the entry is
  marked bad and the box comes back on slot A, READY, where the System page shows B as bad;
- the good bundle (after an extension was added on the Extensions page): the box restarts into
  slot B, the check passes - every unit READY and its self-test call to the echo test as extension
  201 got its own audio back - systemd-bless-boot blesses the entry (pbx-b.conf) and the System
  page shows B booted and good.

Every step waits on the serial console (pbx-console's "open https://" line each boot, the
check's verdict) and the web UI; TCG makes a boot take minutes (PBX_IMAGE_QEMU_TIMEOUT per step).
"""
from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.phones.sipp import free_port
from tests.test_image import COMMIT, REPO, ROOTFS, build

pytestmark = [
    pytest.mark.skipif(os.environ.get("PBX_IMAGE_TEST") != "1",
                       reason="image test: set PBX_IMAGE_TEST=1 (make image-test) - builds the image and "
                              "two bundles, boots them under QEMU, takes most of an hour"),
    pytest.mark.timeout(int(os.environ.get("PBX_IMAGE_TIMEOUT", "7200"))),
]
NICE = ["nice", "-n", "19", "ionice", "-c3"]
STEP = float(os.environ.get("PBX_IMAGE_QEMU_TIMEOUT", "1200"))
PASSWORD = "correct horse battery staple 15"


class Web:
    """The box's web UI through QEMU's forwarded port: cookies and the form token by hand."""

    def __init__(self, port: int) -> None:
        self.base = f"https://127.0.0.1:{port}"
        self.ctx = ssl.create_default_context()
        self.ctx.check_hostname, self.ctx.verify_mode = False, ssl.CERT_NONE
        self.cookies: dict[str, str] = {}

    def request(self, path: str, data: bytes | None = None, headers: dict | None = None,
                timeout: float = 120) -> tuple[int, str]:
        h = dict(headers or {})
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *a, **k):
                return None
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=self.ctx), NoRedirect)
        req = urllib.request.Request(self.base + path, data=data, headers=h)
        try:
            r = opener.open(req, timeout=timeout)
            status, body, hdrs = r.status, r.read().decode(errors="replace"), r.headers
        except urllib.error.HTTPError as e:
            status, body, hdrs = e.code, e.read().decode(errors="replace"), e.headers
        for c in hdrs.get_all("Set-Cookie") or []:
            k, _, v = c.split(";", 1)[0].partition("=")
            self.cookies[k.strip()] = v
        return status, body

    def wait_up(self, deadline: float) -> None:
        while True:
            try:
                self.request("/login", timeout=30)
                return
            except OSError:
                assert time.monotonic() < deadline, "the web UI did not answer"
                time.sleep(5)

    def token(self, path: str) -> str:
        _, body = self.request(path)
        m = re.search(r'name="csrf_token" value="([^"]+)"', body)
        assert m, f"no form token on {path}: {body[:300]}"
        return m.group(1)

    def post(self, path: str, fields: dict) -> tuple[int, str]:
        return self.request(path, urllib.parse.urlencode(fields).encode(),
                            {"Content-Type": "application/x-www-form-urlencoded"})

    def setup(self, code: str) -> None:
        tok = self.token("/setup")
        status, body = self.post("/setup", {"csrf_token": tok, "setup_code": code, "password": PASSWORD,
                                            "password2": PASSWORD})
        assert status == 302, body[:500]

    def login(self) -> None:
        self.cookies.clear()
        tok = self.token("/login")
        status, body = self.post("/login", {"csrf_token": tok, "username": "admin", "password": PASSWORD})
        assert status == 302, body[:500]

    def upload(self, bundle: Path) -> tuple[int, str]:
        tok = self.token("/system")
        boundary = uuid.uuid4().hex
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n{tok}\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"bundle_file\"; filename=\"{bundle.name}\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        size = len(head) + bundle.stat().st_size + len(tail)

        def body():
            yield head
            with open(bundle, "rb") as f:
                while chunk := f.read(1 << 20):
                    yield chunk
            yield tail
        return self.request("/system/update", body(), {"Content-Type": f"multipart/form-data; boundary={boundary}",
                                                       "Content-Length": str(size)}, timeout=1800)

    def system(self) -> str:
        status, body = self.request("/system")
        assert status == 200, body[:300]
        return body


class Console:
    def __init__(self, path: Path, vm: subprocess.Popen) -> None:
        self.path, self.vm, self.pos = path, vm, 0

    def text(self) -> str:
        try:
            return self.path.read_bytes().decode(errors="replace")
        except FileNotFoundError:  # qemu has not opened it yet
            return ""

    def wait_for(self, pattern: str, timeout: float = STEP) -> re.Match:
        """The next match of pattern after the last one waited for."""
        deadline = time.monotonic() + timeout
        while True:
            m = re.compile(pattern).search(self.text(), self.pos)
            if m:
                self.pos = m.end()
                return m
            assert self.vm.poll() is None, f"qemu exited {self.vm.returncode}: {self.text()[-3000:]}"
            assert time.monotonic() < deadline, f"not on the console after {timeout:.0f} s: {pattern!r}\n" \
                                                f"{self.text()[-4000:]}"
            time.sleep(3)


def slot_row(page: str, slot: str) -> str:
    m = re.search(rf"<tr><td>{slot} \(rootfs\.\d\)</td>(.*?)</tr>", page, re.S)
    assert m, f"slot {slot} not on the System page: {page[page.find('id=' + chr(34) + 'update'):][:1500]}"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", m.group(1))).strip()


@pytest.fixture
def tmp_path():
    """Scratch space under build/image/ (as in test_image.py: other pytest sessions on this
    machine prune old pytest-N directories while this runs for most of an hour)."""
    path = Path(tempfile.mkdtemp(prefix="image-update-test-", dir=ROOTFS.parent))
    yield path
    if os.environ.get("PBX_IMAGE_KEEP") != "1":
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def image_and_bundles():
    for tool in ("qemu-system-x86_64", "rauc", "mksquashfs"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: make image-test installs it (image tools)")
    build("--no-xz")
    env = {**os.environ, "IMAGE_COMMIT": COMMIT}
    for extra in ([], ["--broken"]):
        subprocess.run([*NICE, str(REPO / "image" / "bundle.sh"), "amd64", *extra], check=True, timeout=3600, env=env)
    img = max(ROOTFS.parent.glob("pbx-*-amd64.img"), key=lambda p: p.stat().st_mtime)
    version = img.name[len("pbx-"):-len("-amd64.img")]
    good = ROOTFS.parent / f"pbx-{version}-amd64.raucb"
    broken = ROOTFS.parent / f"pbx-{version}-amd64-broken.raucb"
    assert good.exists() and broken.exists()
    return img, good, broken


def test_a_broken_update_rolls_back_and_a_good_one_is_kept(image_and_bundles, tmp_path):
    img, good, broken = image_and_bundles
    ovmf = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
    disk = tmp_path / "disk.img"
    subprocess.run(["cp", "--sparse=always", str(img), str(disk)], check=True)
    os.truncate(disk, 8 << 30)
    vars_fd = tmp_path / "vars.fd"
    shutil.copy("/usr/share/OVMF/OVMF_VARS_4M.fd", vars_fd)
    serial = tmp_path / "serial.log"
    port = free_port("tcp")
    accel = os.environ.get("PBX_IMAGE_QEMU_ACCEL", "tcg")
    vm = subprocess.Popen(
        [*NICE, "qemu-system-x86_64", "-accel", accel, "-cpu", "max" if accel == "tcg" else "host", "-m", "1536",
         "-machine", "q35", "-drive", f"if=pflash,format=raw,readonly=on,file={ovmf}",
         "-drive", f"if=pflash,format=raw,file={vars_fd}", "-drive", f"file={disk},format=raw,if=virtio",
         "-display", "none", "-monitor", "none", "-serial", f"file:{serial}",
         "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:443", "-device", "virtio-net-pci,netdev=n0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    con, web = Console(serial, vm), Web(port)
    t0 = time.monotonic()
    try:
        code = con.wait_for(r"Setup code: (\S+)").group(1)
        print(f"slot A up (setup code on the console) after {time.monotonic() - t0:.0f} s")
        web.wait_up(time.monotonic() + STEP)
        web.setup(code)
        page = web.system()
        assert "boots next" in slot_row(page, "A") and "booted" in slot_row(page, "A"), slot_row(page, "A")

        # 1. the broken bundle: boots B once, fails the check, comes back on A
        t = time.monotonic()
        status, body = web.upload(broken)
        assert status == 302, body[:1000]
        print(f"broken bundle uploaded in {time.monotonic() - t:.0f} s")
        verdict = con.wait_for(r"pbx-update-check: slot (\w) (passed|failed)[^\r\n]*")
        assert verdict.group(1) == "B" and verdict.group(2) == "failed", verdict.group(0)
        assert "pbx-calls.service" in verdict.group(0), verdict.group(0)
        print(f"slot B failed its check {time.monotonic() - t:.0f} s after the upload: {verdict.group(0)}")
        con.wait_for(r"marking its boot entry bad")
        con.wait_for(r"Office PBX \S+: open https://")
        web.wait_up(time.monotonic() + STEP)
        web.login()
        page = web.system()
        a, b = slot_row(page, "A"), slot_row(page, "B")
        print(f"after the rollback ({time.monotonic() - t:.0f} s after the upload): A: {a} | B: {b}")
        assert "booted" in a and "boots next" in a, a
        assert "bad" in b, b
        assert re.search(r"<dt>PBX</dt><dd>running", page), page[:2000]

        # 2. the good bundle: boots B, passes (with its self-test call as the box's one extension), blessed
        status, body = web.post("/extensions/new", {"csrf_token": web.token("/extensions/new"), "number": "201",
                                                    "name": "Reception", "secret": ""})
        assert status == 302, body[:1000]
        t = time.monotonic()
        status, body = web.upload(good)
        assert status == 302, body[:1000]
        verdict = con.wait_for(r"pbx-update-check: slot (\w) (passed|failed)[^\r\n]*")
        assert verdict.group(1) == "B" and verdict.group(2) == "passed", verdict.group(0)
        assert "echo call as 201: answered in" in verdict.group(0) and "BYE 200" in verdict.group(0), verdict.group(0)
        print(f"slot B passed its check {time.monotonic() - t:.0f} s after the upload: {verdict.group(0)}")
        deadline = time.monotonic() + 300
        while True:
            web.wait_up(time.monotonic() + STEP)
            web.login()
            page = web.system()
            b = slot_row(page, "B")
            if "booted" in b and "good" in b:
                break
            assert time.monotonic() < deadline, f"slot B not booted and good: {b}"
            time.sleep(10)
        print(f"slot B booted and blessed: {b}")
        assert re.search(r"<dt>PBX</dt><dd>running", page), page[:2000]
    finally:
        vm.kill()
        vm.wait(10)
        print(f"serial console: {serial}")
