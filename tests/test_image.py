"""The appliance image (image/, issue 15): the amd64 root booted with systemd-nspawn.

Runs only with PBX_IMAGE_TEST=1 (`make image-test` sets it): it builds the amd64 root with
mmdebstrap (minutes; reused while the commit and image/ are unchanged) and boots it, which is too
slow for every `make test`. Needs root, systemd-nspawn (systemd-container), mmdebstrap, sipp.

The box runs as it would on hardware: read-only root (--read-only), the data partition a host
directory bound on /data, its own network namespace (--private-network: only lo, so PBX_SIP_ADDR
is 127.0.0.1), and the SIPp phones run inside that namespace (nsenter --net).

Power cuts: PBX_IMAGE_POWER_CUTS (default 100) times the whole container is killed (SIGKILL of
its PID 1: every process dies at once) at a random moment while the CLI writes the configuration
and a call is set up; after each, config.json must load, cdr.sqlite must pass integrity_check,
and the box must boot to READY again. The host's page cache survives such a kill, so this tests
what the processes write (atomic replace, SQLite WAL), not the SD card's own write cache.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.phones.sipp import Sipp, free_port, run_sipp

REPO = Path(__file__).resolve().parents[1]
ROOTFS = REPO / "build" / "image" / "amd64" / "rootfs"
UNITS = ("pbx-calls.service", "pbx-edge.service", "pbx-web.service")
PBX = "/opt/pbx/.venv/bin/python -m services.cli"

pytestmark = [
    pytest.mark.skipif(os.environ.get("PBX_IMAGE_TEST") != "1",
                       reason="image test: set PBX_IMAGE_TEST=1 (make image-test) - builds and boots "
                              "the amd64 root, takes minutes"),
    pytest.mark.timeout(int(os.environ.get("PBX_IMAGE_TIMEOUT", "7200"))),
]


class Box:
    """The image's root booted by systemd-nspawn; data is the host directory bound on /data."""

    def __init__(self, rootfs: Path, data: Path, log: Path, name: str = "pbximg", extra=()) -> None:
        self.rootfs, self.data, self.log_path, self.name = rootfs, data, log, name
        self.extra = list(extra)        # more systemd-nspawn options (an ether link: --network-veth-extra)
        self.proc: subprocess.Popen | None = None
        self.leader = 0
        self.boots = 0

    def start(self) -> "Box":
        self.boots += 1
        log = open(self.log_path, "ab")
        log.write(f"\n===== boot {self.boots} =====\n".encode())
        log.flush()
        self.t_start = time.monotonic()
        self.proc = subprocess.Popen(
            ["systemd-nspawn", "--boot", "--keep-unit", "--register=no", "--quiet",
             "--machine", self.name, "-D", str(self.rootfs), "--read-only", "--private-network",
             f"--bind={self.data}:/data", "--console=read-only", *self.extra],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.leader = self._find_leader()
        return self

    def _find_leader(self, timeout: float = 30.0) -> int:
        """The container's PID 1 as the host sees it (a descendant of nspawn whose NSpid ends in 1)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"systemd-nspawn exited with {self.proc.returncode}: {self.log_tail()}")
            for pid in self._descendants(self.proc.pid):
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                nspid = next((l.split()[1:] for l in status.splitlines() if l.startswith("NSpid:")), [])
                if len(nspid) >= 2 and nspid[-1] == "1":
                    return pid
            time.sleep(0.1)
        raise AssertionError(f"no container init under systemd-nspawn after {timeout} s: {self.log_tail()}")

    @staticmethod
    def _descendants(pid: int) -> list[int]:
        out, todo = [], [pid]
        while todo:
            p = todo.pop()
            try:
                kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
            except OSError:
                continue
            out += [int(k) for k in kids]
            todo += [int(k) for k in kids]
        return out

    def sh(self, script: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        """Run a shell script inside the container (all its namespaces), as root."""
        r = subprocess.run(["nsenter", "-t", str(self.leader), "-a", "--", "/bin/sh", "-c", script],
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"in the box: {script!r} exited {r.returncode}: {r.stdout}{r.stderr}")
        return r

    def pbx(self, args: str, **kw) -> subprocess.CompletedProcess:
        """The PBX admin CLI inside the box, as the pbx user (as an administrator would run it)."""
        return self.sh(f"cd /opt/pbx && PYTHONDONTWRITEBYTECODE=1 runuser -u pbx -- {PBX} {args} "
                       f"--data /var/lib/pbx", **kw)

    def wait_ready(self, timeout: float = 180.0) -> float:
        """Wait until every PBX unit is active (Type=notify: READY=1 sent); the seconds since start."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the box stopped (nspawn rc {self.proc.returncode}): {self.log_tail()}")
            r = subprocess.run(["nsenter", "-t", str(self.leader), "-a", "--", "systemctl", "is-active",
                                *UNITS], capture_output=True, text=True, timeout=30)
            last = r.stdout.split()
            if last == ["active"] * len(UNITS):
                return time.monotonic() - self.t_start
            time.sleep(0.5)
        failed = self.sh("systemctl --failed --no-legend; journalctl -b --no-pager -n 60", check=False)
        raise AssertionError(f"PBX units not READY after {timeout} s: {dict(zip(UNITS, last))}\n{failed.stdout}")

    def memory_mb(self) -> float:
        """PSS of every process in the box (its PID 1 and all below it), in MB."""
        total = 0
        for pid in [self.leader, *self._descendants(self.leader)]:
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
            except OSError:
                continue
        return total / 1024

    def netns(self) -> list[str]:
        return ["nsenter", f"--net=/proc/{self.leader}/ns/net", "--"]

    def power_cut(self) -> None:
        """Every process of the box dies at once (SIGKILL of the PID namespace's init)."""
        try:
            os.kill(self.leader, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.sh("systemctl poweroff --no-block", check=False, timeout=10)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.power_cut()

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def with_netns(sipp: Sipp, box: Box) -> Sipp:
    sipp.args = box.netns() + sipp.args
    return sipp


def in_box(box: Box, make) -> Sipp:
    """Start a SIPp made by make() in the box's network namespace; a port taken there is retried."""
    for attempt in range(5):
        try:
            return with_netns(make(), box).start()
        except RuntimeError as exc:
            if "Address already in use" not in str(exc) or attempt == 4:
                raise


def data_intact(data: Path) -> tuple[dict, int]:
    """config.json loads as JSON and cdr.sqlite passes integrity_check: (config, number of CDRs)."""
    pbx_dir = data / "var" / "lib" / "pbx"
    config = json.loads((pbx_dir / "config.json").read_text())
    cdrs = 0
    if (pbx_dir / "cdr.sqlite").exists():
        # a copy: opening the box's file would replay the WAL into it from the host
        scratch = data.parent / "cdr-check"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        for f in pbx_dir.glob("cdr.sqlite*"):
            shutil.copy2(f, scratch / f.name)
        db = sqlite3.connect(scratch / "cdr.sqlite")
        try:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            cdrs = db.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0] and \
                db.execute("SELECT count(*) FROM calls").fetchone()[0]
        finally:
            db.close()
    return config, cdrs


# One commit for the whole module (others may commit meanwhile): the root and the .img match it.
COMMIT = os.environ.get("IMAGE_COMMIT") or subprocess.run(
    ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def build(*args: str) -> None:
    subprocess.run([str(REPO / "image" / "build.sh"), "amd64", *args], check=True, timeout=3600,
                   env={**os.environ, "IMAGE_COMMIT": COMMIT})


@pytest.fixture(scope="module")
def work():
    """Scratch space for the module outside pytest's temp dirs: other pytest sessions on this
    machine prune old pytest-N directories, which would pull the data partition from under a
    box that runs for many minutes."""
    path = Path(tempfile.mkdtemp(prefix="image-test-", dir=ROOTFS.parent))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def tmp_path(work, request):
    path = work / request.node.name
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def rootfs():
    """The amd64 root, built by image/build.sh (reused when the commit and recipe are unchanged)."""
    for tool in ("systemd-nspawn", "mmdebstrap", "nsenter", "sipp"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: make image-test installs it (or apt-get install it)")
    build("--root-only")
    assert (ROOTFS / "opt/pbx/.venv/bin/python").exists()
    return ROOTFS


@pytest.fixture(scope="module")
def box(rootfs, work):
    data = work / "data"
    data.mkdir()
    b = Box(rootfs, data, work / "console.log", name=f"pbximg-{os.getpid()}").start()
    b.first_ready = b.wait_ready()
    yield b
    b.stop()


def call_through(box: Box, tmp_path: Path, secrets: dict[str, str], callee: str = "1001",
                 caller: str = "1000") -> None:
    """Register two SIPp phones at the box and complete a call from caller to callee."""
    registrar = ("127.0.0.1", 5060)
    port = free_port()
    reg = with_netns(Sipp("register_auth.xml", registrar, users=[(callee, secrets[callee])], port=port,
                          workdir=tmp_path, timeout=10), box).start().wait()
    assert reg.ok and reg.responses.get(200) == 1, reg.log_tail()
    with with_netns(Sipp("uas_answer.xml", port=port, params={"answer_delay": 200}, workdir=tmp_path,
                         timeout=20), box) as uas:
        call = with_netns(Sipp("uac_call_auth.xml", registrar, service=callee,
                               users=[(caller, secrets[caller])], duration_ms=1500, workdir=tmp_path,
                               timeout=20), box).start().wait()
        answered = uas.wait(15)
    assert call.ok and call.responses.get(200, 0) >= 1, call.log_tail()
    assert answered.successful == 1, answered.log_tail()


def test_the_root_is_the_appliance(rootfs):
    """The built root: pbx user, units enabled, nothing but the PBX's packages, the manifest."""
    assert "pbx:" in (rootfs / "etc/passwd").read_text()
    wants = rootfs / "etc/systemd/system/pbx.target.wants"
    assert {p.name for p in wants.iterdir()} >= set(UNITS)
    assert (rootfs / "etc/systemd/system/multi-user.target.wants/pbx.target").is_symlink()
    assert os.readlink(rootfs / "etc/systemd/system/kamailio.service") == "/dev/null"
    assert (rootfs / "etc/pbx/pbx.env").is_symlink()
    status = (rootfs / "var/lib/dpkg/status").read_text()
    installed = {b.split("\n", 1)[0].removeprefix("Package: ") for b in status.split("\n\n")
                 if "Status: install ok installed" in b}
    assert {"kamailio", "python3", "linux-image-amd64", "systemd-boot", "ffmpeg"} <= installed
    # test tools and build tools stay out of the appliance
    assert not installed & {"sip-tester", "baresip-core", "chromium", "linphone-cli", "gcc", "python3-dev",
                            "openssh-server"}
    freeze = (rootfs / "usr/share/pbx/pip-freeze.txt").read_text()
    assert "aiosipua==" in freeze and "pytest" not in freeze
    # every spoken prompt (build output, not in git) is in the root, or the box would be silent
    from services.media.prompts import PROMPTS
    sounds = rootfs / "opt/pbx/services/media/sounds"
    missing = [p for p in PROMPTS if not (sounds / f"{p}.wav").is_file()]
    assert not missing, f"{len(missing)} of {len(PROMPTS)} prompts missing from the root, e.g. {missing[:3]}"


def test_boots_to_ready_and_listens_only_where_the_pbx_does(box):
    print(f"boot to READY under nspawn: {box.first_ready:.1f} s")
    failed = box.sh("systemctl --failed --no-legend --plain").stdout.strip()
    assert failed == "", failed
    assert box.sh("findmnt -no OPTIONS /").stdout.split(",")[0] == "ro"
    assert box.sh("touch /usr/x 2>&1 || echo refused").stdout.strip().endswith("refused")
    # /var (and so the PBX's data) lives on the data partition
    assert (box.data / "var/lib/pbx/config.json").exists()
    listening = box.sh("ss -Hltnu").stdout
    ports = sorted({line.split()[4].rsplit(":", 1)[1] for line in listening.splitlines()})
    # SIP 5060 (udp+tcp), the call service 5080 on lo, web 443 + redirect 80, Kamailio's
    # control sockets on lo; nothing else (no ssh, no resolver stub, no LLMNR)
    for port in ports:
        assert port in {"5060", "5080", "443", "80"} or \
            all(("127.0.0.1:" + port) in l or ("[::1]:" + port) in l
                for l in listening.splitlines() if l.split()[4].endswith(":" + port)), listening
    for forbidden in ("22", "53", "5355"):
        assert forbidden not in ports, listening
    time.sleep(5)  # idle: the start-up work done
    mem = box.memory_mb()
    print(f"idle memory of the whole booted box (PSS of every process): {mem:.0f} MB")
    assert 20 < mem < 1024, mem
    banner = box.sh("cat /run/pbx-console/pbx.issue").stdout
    assert "Setup code:" in banner, banner


def test_two_sipp_phones_call_through_the_box(box, tmp_path):
    secrets = {"1000": "img-secret-1000-Xy7", "1001": "img-secret-1001-Zq4"}
    for number, secret in secrets.items():
        box.pbx(f"ext add {number} --name Phone{number} --secret {secret}")
    box.secrets = secrets
    deadline = time.monotonic() + 30
    while True:  # the edge picks new extensions up from config.json within a few seconds
        try:
            call_through(box, tmp_path, secrets)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)
    deadline = time.monotonic() + 20
    while data_intact(box.data)[1] < 1 and time.monotonic() < deadline:
        time.sleep(1)
    assert data_intact(box.data)[1] >= 1, "no CDR written for the call"


def test_the_update_check_passes_only_with_a_self_test_call_through_the_booted_box(box):
    """What pbx-update-check.service runs before an updated slot is blessed, as root in the box:
    the units READY, OPTIONS answered, and the echo-test call as extension 1000 (added above)."""
    r = box.sh("cd /opt/pbx && PYTHONDONTWRITEBYTECODE=1 /opt/pbx/.venv/bin/python -m services.update "
               "health --timeout 60", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "passed" in r.stderr and "echo call as 1000: answered in" in r.stderr and "BYE 200" in r.stderr
    # the echo starts after the spoken "echo test" prompt (~4 s): the box's prompts are there
    back_ms = float(re.search(r"own audio back after (\d+) ms", r.stderr).group(1))
    assert back_ms > 2500, f"own audio back after {back_ms} ms: the echo test's prompt did not play"
    # it read the configuration as root without leaving a root-owned file in the pbx user's data
    owners = box.sh("stat -c '%U %n' /var/lib/pbx/config.*").stdout.split("\n")
    assert all(line.startswith("pbx ") for line in owners if line), owners


WEB_GET = ("cd /opt/pbx && /opt/pbx/.venv/bin/python -c \"import http.client, ssl; "
           "c = http.client.{cls}('127.0.0.1', {port}, timeout=60{ctx}); c.request('GET', '/login'); "
           "print(c.getresponse().status)\"")


def _web_get(box: Box, tls: bool) -> int:
    ctx = ", context=ssl._create_unverified_context()" if tls else ""
    cmd = WEB_GET.format(cls="HTTPSConnection" if tls else "HTTPConnection", port=443 if tls else 80, ctx=ctx)
    return int(box.sh(cmd, timeout=90).stdout.strip())


def test_the_web_ui_stops_when_idle_and_its_socket_starts_it_on_the_next_connection(box):
    """pbx-web.socket holds 443 and 80 (decision 026). With a 3 s idle time the web UI service
    stops cleanly (not a failure, not restarted), both ports keep listening, the next HTTPS
    request starts it under real systemd and is answered, and the update check counts the
    stopped UI as started on demand."""
    dropin = "/run/systemd/system/pbx-web.service.d"
    box.sh(f"mkdir -p {dropin} && printf 'PBX_WEB_IDLE_EXIT=3\\n' > /run/pbx-web-idle.env && "
           f"printf '[Service]\\nEnvironmentFile=/run/pbx-web-idle.env\\n' > {dropin}/idle.conf && "
           "systemctl daemon-reload && systemctl restart pbx-web.service")
    try:
        def web_state() -> str:
            return box.sh("systemctl is-active pbx-web.service", check=False).stdout.strip()
        stopped = _wait("the idle web UI to stop", lambda: web_state() == "inactive", 90)
        print(f"web UI stopped {stopped:.1f} s after its restart (idle time 3 s)")
        assert box.sh("systemctl show -p Result --value pbx-web.service").stdout.strip() == "success"
        assert box.sh("systemctl is-active pbx-web.socket", check=False).stdout.strip() == "active"
        listening = box.sh("ss -Hltn").stdout
        assert ":443 " in listening and ":80 " in listening, listening
        check = box.sh("cd /opt/pbx && /opt/pbx/.venv/bin/python -c \"from services.update import unit_states; "
                       "print(unit_states(['pbx-web.service', 'pbx-web.socket']))\"").stdout
        assert "'pbx-web.service': 'on demand'" in check and "'pbx-web.socket': 'active/listening'" in check, check
        t0 = time.monotonic()
        assert _web_get(box, tls=True) in (200, 302)
        print(f"first page with the web UI stopped: {time.monotonic() - t0:.1f} s")
        # READY follows the service's own probe, a moment after the page was served
        _wait("the started web UI to be READY", lambda: web_state() == "active", 30)
        assert _web_get(box, tls=False) == 308        # port 80 redirects to HTTPS
        _wait("the idle web UI to stop again", lambda: web_state() == "inactive", 60)
        assert _web_get(box, tls=False) == 308        # a request on the redirect port starts it too
    finally:
        box.sh(f"rm -rf {dropin} /run/pbx-web-idle.env && systemctl daemon-reload && "
               "systemctl restart pbx-web.service", check=False)


def _eth0_addresses(box: Box) -> list[str]:
    out = box.sh("ip -4 -o addr show dev eth0", check=False).stdout
    return re.findall(r"inet (\S+)", out)


def _save_network(box: Box, mode: str, address: str = "", gateway: str = "") -> None:
    """What the web UI does (webui/network.py): as the pbx user, check and save DATA/network/network.json."""
    box.sh("cd /opt/pbx && runuser -u pbx -- .venv/bin/python -c 'import sys; from firmware.netconf "
           "import parse, save; save(\"/var/lib/pbx\", parse(*sys.argv[1:]))' " + f"{mode} '{address}' '{gateway}'")


def _wait(what: str, predicate, timeout: float) -> float:
    t0 = time.monotonic()
    while not predicate():
        assert time.monotonic() - t0 < timeout, f"{what}: not within {timeout} s"
        time.sleep(0.2)
    return time.monotonic() - t0


def test_a_static_address_saved_as_the_web_ui_does_moves_the_ether_link(rootfs, work):
    """Decision 023's chain on the booted root, with an ether link (a veth): the pbx user saves
    DATA/network/network.json, pbx-network.path starts the root service that renders the networkd
    drop-in; eth0 takes the address, PBX_SIP_ADDR follows and the PBX is READY on it; another address
    moves it; a tampered file is refused and changes nothing; DHCP removes the static address."""
    data = work / "netdata"
    data.mkdir()
    host_if = f"vpbx{os.getpid() % 100000}"
    b = Box(rootfs, data, work / "console-net.log", name=f"pbxnet-{os.getpid()}",
            extra=[f"--network-veth-extra={host_if}:eth0"]).start()
    try:
        _wait("the host side of the veth", lambda: subprocess.run(["ip", "link", "set", host_if, "up"],
                                                                   capture_output=True).returncode == 0, 30)
        b.wait_ready()
        _save_network(b, "static", "10.99.0.2/24", "10.99.0.1")
        took = _wait("eth0 at 10.99.0.2/24", lambda: _eth0_addresses(b) == ["10.99.0.2/24"], 30)
        print(f"static address on eth0 {took:.1f} s after the save")
        _wait("PBX_SIP_ADDR following", lambda: "PBX_SIP_ADDR=10.99.0.2" in
              b.sh("cat /etc/pbx/pbx.env", check=False).stdout, 30)
        b.wait_ready()
        assert "10.99.0.2:5060" in b.sh("ss -lnu", check=False).stdout, "the edge does not listen on the new address"
        assert "DHCP=no" in b.sh("cat /run/systemd/network/80-pbx-wired.network.d/50-pbx-static.conf").stdout

        _save_network(b, "static", "10.99.0.3/24", "10.99.0.1")
        took = _wait("eth0 moved to 10.99.0.3/24", lambda: _eth0_addresses(b) == ["10.99.0.3/24"], 30)
        print(f"moved to the next address {took:.1f} s after the save (the old one gone)")

        # a file the root service must not trust: refused, logged, the address stays
        netdir = data / "var" / "lib" / "pbx" / "network"
        st = netdir.stat()
        tmp = netdir / "network.json.tmp"
        tmp.write_text(json.dumps({"mode": "static", "address": "x\n[Match]", "gateway": "", "dns": []}))
        os.chown(tmp, st.st_uid, st.st_gid)              # as the pbx user of the box wrote it
        os.replace(tmp, netdir / "network.json")
        _wait("pbx-network.service to refuse it", lambda: b.sh("systemctl is-failed pbx-network.service",
                                                                check=False).stdout.strip() == "failed", 20)
        time.sleep(1.0)
        assert _eth0_addresses(b) == ["10.99.0.3/24"]

        _save_network(b, "dhcp")
        _wait("the static address gone", lambda: not any(a.startswith("10.99.0.") for a in _eth0_addresses(b)), 30)
        assert not b.sh("ls /run/systemd/network/80-pbx-wired.network.d/", check=False).stdout.strip()
    finally:
        b.stop()


def test_power_cuts_leave_config_and_cdrs_usable(box, tmp_path):
    cycles = int(os.environ.get("PBX_IMAGE_POWER_CUTS", "100"))
    rng = random.Random(int(os.environ.get("PBX_IMAGE_SEED", "15")))
    secrets = getattr(box, "secrets", None) or {"1000": "img-secret-1000-Xy7", "1001": "img-secret-1001-Zq4"}
    times = []
    for cycle in range(cycles):
        # writers: the CLI changing extensions in a loop, and a call being set up
        writer = subprocess.Popen(
            ["nsenter", "-t", str(box.leader), "-a", "--", "/bin/sh", "-c",
             f"cd /opt/pbx; i=0; while true; do i=$((i+1)); "
             f"runuser -u pbx -- {PBX} ext set 1000 --name cut{cycle}-$i --data /var/lib/pbx >/dev/null 2>&1; done"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        phones = []
        if cycle % 2 == 0:  # a call being set up and talking when the power goes
            for attempt in range(5):  # ports are picked free on the host: the box's may differ
                port = free_port()
                reg = with_netns(Sipp("register_auth.xml", ("127.0.0.1", 5060), users=[("1001", secrets["1001"])],
                                      port=port, workdir=tmp_path, timeout=10), box).start().wait()
                if reg.ok or "Address already in use" not in reg.log_tail():
                    break
            assert reg.ok, f"cycle {cycle}: callee did not register: {reg.log_tail()}"
            phones.append(in_box(box, lambda: Sipp("uas_answer.xml", port=port, workdir=tmp_path, timeout=15)))
            phones.append(in_box(box, lambda: Sipp("uac_call_auth.xml", ("127.0.0.1", 5060), service="1001",
                                                   users=[("1000", secrets["1000"])], duration_ms=2000,
                                                   workdir=tmp_path, timeout=15)))
        time.sleep(rng.uniform(0.2, 4.0))
        box.power_cut()
        writer.wait(10)
        for phone in phones:
            phone.stop(grace=0.5)
        config, _ = data_intact(box.data)
        assert config, f"cycle {cycle}: config.json empty after the cut"
        box.start()
        times.append(box.wait_ready())
        r = box.pbx("ext list", check=False)
        assert r.returncode == 0 and "1000" in r.stdout and "1001" in r.stdout, \
            f"cycle {cycle}: extensions after the cut: {r.stdout}{r.stderr}"
    # after all the cuts the box still carries a call
    call_through(box, tmp_path, secrets)
    print(f"{cycles} power cuts; boot to READY after a cut: median {sorted(times)[len(times) // 2]:.1f} s, "
          f"max {max(times):.1f} s")


def test_the_amd64_image_boots_with_uefi_in_qemu(rootfs, tmp_path):
    """The .img itself: OVMF -> systemd-boot -> Debian kernel -> read-only rootA by PARTUUID, data
    grown to a bigger disk at first boot, DHCP address, and the web UI's setup page over HTTPS."""
    import ssl
    import urllib.request
    qemu, ovmf = shutil.which("qemu-system-x86_64"), Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
    if qemu is None or not ovmf.exists():
        pytest.fail("qemu-system-x86_64 or OVMF missing: make image-test installs qemu-system-x86 ovmf")
    build("--no-xz")  # the root of the box tests is reused (same commit and recipe)
    img = max(ROOTFS.parent.glob("pbx-*-amd64.img"), key=lambda p: p.stat().st_mtime)
    disk = tmp_path / "disk.img"  # an 8 GB "disk" with the image at its start
    subprocess.run(["cp", "--sparse=always", str(img), str(disk)], check=True)
    os.truncate(disk, 8 << 30)
    vars_fd = tmp_path / "vars.fd"
    shutil.copy("/usr/share/OVMF/OVMF_VARS_4M.fd", vars_fd)
    serial = tmp_path / "serial.log"
    web = free_port("tcp")
    # KVM inside this CI's VM fails in OVMF (nested); PBX_IMAGE_QEMU_ACCEL=kvm where it works
    accel = os.environ.get("PBX_IMAGE_QEMU_ACCEL", "tcg")
    vm = subprocess.Popen(
        [qemu, "-accel", accel, "-cpu", "max" if accel == "tcg" else "host", "-m", "1024", "-machine", "q35",
         "-drive", f"if=pflash,format=raw,readonly=on,file={ovmf}", "-drive", f"if=pflash,format=raw,file={vars_fd}",
         "-drive", f"file={disk},format=raw,if=virtio", "-display", "none", "-monitor", "none",
         "-serial", f"file:{serial}", "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{web}-:443",
         "-device", "virtio-net-pci,netdev=n0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    t0 = time.monotonic()
    try:
        text = ""
        deadline = t0 + float(os.environ.get("PBX_IMAGE_QEMU_TIMEOUT", "900"))
        while "Setup code:" not in text:
            assert vm.poll() is None, f"qemu exited {vm.returncode}: {text[-3000:]}"
            assert time.monotonic() < deadline, f"no setup code on the serial console: {text[-3000:]}"
            time.sleep(2)
            text = serial.read_bytes().decode(errors="replace")
        print(f"UEFI boot of the image to the setup code ({accel}): {time.monotonic() - t0:.0f} s")
        import re
        grown = re.search(r"pbx-firstboot: data partition now (\d+) MB", text)
        assert grown and int(grown.group(1)) > 3000, text[-3000:]  # 256 MB in the image, ~3.7 GB here
        assert "open https://10.0.2.15/" in text, text[-3000:]  # QEMU's DHCP gave the address
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        deadline = time.monotonic() + 120
        while True:
            try:
                page = urllib.request.urlopen(f"https://127.0.0.1:{web}/", context=ctx, timeout=30).read().decode()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(3)
        assert "setup code" in page.lower(), page[:500]
    finally:
        vm.kill()
        vm.wait(10)
