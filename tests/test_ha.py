"""Failover of a VRRP pair (issue 14, item 1): two real PBXes (`pbx run` with `pbx ha set`) in
their own network namespaces on one switch, a phone host beside them. The primary holds the
virtual IP; a power cut of the primary (every process killed, cable pulled) moves the VIP to the
backup, which then registers phones and says so in `pbx ha status`.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from firmware.config import ConfigStore
from firmware.config.errors import ValidationErrors
from firmware.ha import HaSettings, keepalived_conf, new_secret
from services.ha import settings as ha_settings
from tests.hanet import OfficeLan
from tests.phones.raw import RawPhone

ROOT = Path(__file__).resolve().parents[1]
PBX = str(ROOT / ".venv" / "bin" / "pbx")
SECRET = "Ann-ha-1000-secret"
PHONES = 20                 # registered on the primary before the power cut


def _ha(**kw) -> HaSettings:
    base = dict(enabled=True, role="primary", node_addr="192.0.2.2", peer_addr="192.0.2.3",
                vip="192.0.2.10/24", interface="eth0", secret="s" * 24)
    return HaSettings(**{**base, **kw})


def test_keepalived_gets_vrrp3_unicast_adverts_every_100_ms_with_the_health_check():
    conf = keepalived_conf(_ha(), check_cmd="/x/pbx ha check", notify_cmd="/x/pbx ha notify", run_dir="/tmp")
    assert "vrrp_version 3" in conf and "advert_int 0.1" in conf
    assert "unicast_src_ip 192.0.2.2" in conf and "192.0.2.3" in conf.split("unicast_peer")[1]
    assert "priority 150" in conf and "192.0.2.10/24 dev eth0" in conf
    assert 'script "/x/pbx ha check"' in conf and "fall 2" in conf
    backup = keepalived_conf(_ha(role="backup", node_addr="192.0.2.3", peer_addr="192.0.2.2"),
                             check_cmd="c", notify_cmd="n", run_dir="/tmp")
    assert "priority 100" in backup


@pytest.mark.parametrize("change,field", [({"vip": "192.0.2.10"}, "vip"), ({"vip": "192.0.2.2/24"}, "vip"),
                                          ({"peer_addr": "192.0.2.2"}, "peer_addr"), ({"interface": "eth 0"}, "interface"),
                                          ({"advert_ms": 5}, "advert_ms"), ({"secret": "short"}, "secret"),
                                          ({"role": "master"}, "role")])
def test_bad_failover_settings_are_refused_naming_the_field(change, field):
    with pytest.raises(ValidationErrors) as e:
        _ha(**change).validate()
    assert field in {err.field for err in e.value.errors}


def test_pbx_ha_set_makes_a_shared_secret_and_refuses_a_bad_vip(tmp_path):
    data = tmp_path / "data"
    ConfigStore(data)
    ok = subprocess.run([PBX, "ha", "set", "--data", str(data), "--role", "primary", "--node", "192.0.2.2",
                         "--peer", "192.0.2.3", "--vip", "192.0.2.10/24", "--interface", "eth0"],
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    secret = ha_settings.load(data).secret
    assert len(secret) >= 24 and secret in ok.stdout
    bad = subprocess.run([PBX, "ha", "set", "--data", str(data), "--vip", "192.0.2.2/24"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "--vip: the virtual address must differ" in bad.stderr
    shown = subprocess.run([PBX, "ha", "show", "--data", str(data), "--json"], capture_output=True, text=True)
    assert json.loads(shown.stdout)["vip"] == "192.0.2.10/24" and secret not in shown.stdout


class _Registrar:
    """The carrier's registrar on the phone host (port 5070): answers every REGISTER 200 and
    notes when each came (monotonic)."""

    def __init__(self, sock, addr: str):
        import threading
        self.sock = sock
        self.sock.bind((addr, 5070))
        self.sock.settimeout(0.2)
        self.registers: list[float] = []
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                data, peer = self.sock.recvfrom(65535)
            except OSError:
                continue
            text = data.decode(errors="replace")
            if not text.startswith("REGISTER "):
                continue
            self.registers.append(time.monotonic())
            head = text.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
            keep = [h for h in head if h.split(":", 1)[0].strip().lower() in ("via", "from", "to", "call-id", "cseq")]
            keep = [h + ";tag=reg" if h.lower().startswith("to:") and ";tag=" not in h else h for h in keep]
            reply = "SIP/2.0 200 OK\r\n" + "\r\n".join(keep) + "\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
            self.sock.sendto(reply.encode(), peer)

    def close(self) -> None:
        self.running = False
        self.thread.join(2)
        self.sock.close()


def _wait(what: str, check, timeout: float, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.e2e
def test_power_cut_of_the_primary_moves_the_vip_to_the_backup_which_then_serves_phones(tmp_path):
    with OfficeLan() as lan:
        secret = new_secret()
        procs = {}
        for box, role, peer in ((lan.box_a, "primary", lan.box_b), (lan.box_b, "backup", lan.box_a)):
            data = tmp_path / box.name
            store = ConfigStore(data)
            store.add_extension("1000", "Ann", secret=SECRET)
            for n in range(PHONES):
                store.add_extension(str(2000 + n), f"Desk {n}", secret=f"desk-secret-{n:04d}")
            store.add_trunk("carrier", f"{lan.phone.addr}:5070", username="office", secret="carrier-pass-1")
            ha_settings.save(data, HaSettings(True, role, box.addr, peer.addr, f"{lan.vip}/24", "eth0",
                                              secret=secret))
            log = open(tmp_path / f"{box.name}.log", "wb")
            procs[box.name] = box.popen([PBX, "run", "--data", str(data), "--sip-addr", lan.vip,
                                         "--sip-port", "5060", "--web-port", "8443", "--rtp-ports", "20000-20200"],
                                        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        carrier = _Registrar(lan.phone.socket(), lan.phone.addr)
        try:
            _wait("the primary to hold the VIP", lambda: lan.vip in lan.box_a.addresses(), 60)
            # the trunk registers from the active box only
            _wait("the trunk registration from the primary", lambda: carrier.registers, 30)
            _wait("the backup to be BACKUP",
                  lambda: ha_settings.state(tmp_path / "b").get("state") == "BACKUP", 30)
            assert lan.vip not in lan.box_b.addresses()
            phone = RawPhone("1000", SECRET, (lan.vip, 5060), sock=lan.phone.socket(), ip=lan.phone.addr)
            assert phone.register() == 200
            desks = [RawPhone(str(2000 + n), f"desk-secret-{n:04d}", (lan.vip, 5060), sock=lan.phone.socket(),
                              ip=lan.phone.addr) for n in range(PHONES)]
            assert [d.register() for d in desks] == [200] * PHONES

            # a change on the active box reaches the standby within a second
            added = ConfigStore(tmp_path / "a").add_extension("1001", "Bob")
            began = time.monotonic()
            _wait("the new extension on the standby",
                  lambda: ConfigStore(tmp_path / "b").get_extension("1001") is not None, 10, every=0.02)
            lag = time.monotonic() - began
            print(f"configuration on the standby {lag * 1000:.0f} ms after the change")
            assert lag < 3.0          # ~0.2-0.5 s measured; the target of 1 s is in make ha-bench
            assert ConfigStore(tmp_path / "b").get_extension("1001").secret == added.secret

            # a call record written on the active box is on the standby before the power cut
            from firmware.cdr import CallRecord, CdrStore, Disposition
            ended = time.time()
            with CdrStore(tmp_path / "a") as cdr:
                cdr.write(CallRecord("ha-call-1", "1000", "2001", ended - 30, ended - 25, ended,
                                     Disposition.ANSWERED, linkedid="ha-call-1"))
            began = time.monotonic()

            def on_b():
                with CdrStore(tmp_path / "b") as cdr:
                    return [r for r in cdr.last(5) if r.call_id == "ha-call-1"]
            _wait("the call record on the standby", on_b, 10, every=0.05)
            print(f"call record on the standby {(time.monotonic() - began) * 1000:.0f} ms after it was written")
            assert len(on_b()) == 1              # once, however often it was sent
            assert len(carrier.registers) == 1, "the standby registered the trunk too"
            cut = lan.power_cut(lan.box_a)
            moved = _wait("the backup to take the VIP", lambda: lan.vip in lan.box_b.addresses() and time.monotonic(),
                          10, every=0.005)
            took = moved - cut
            # the registrations made on A are in B's location table without any phone re-registering
            status = subprocess.run([PBX, "status", "--data", str(tmp_path / "b"), "--json"],
                                    capture_output=True, text=True, timeout=30)
            on_b = {r["aor"] for r in json.loads(status.stdout)["registrations"]}
            assert {str(2000 + n) for n in range(PHONES)} | {"1000"} <= on_b, on_b
            for d in desks:
                d.close()
            (tmp_path / "takeover.txt").write_text(f"{took:.3f}\n")
            print(f"VIP moved {took * 1000:.0f} ms after the power cut")
            assert took < 2.0        # 0.3-0.4 s measured on a quiet machine (make ha-bench keeps the number)
            # the trunk registration moves with the VIP: the backup registers it now
            before = len(carrier.registers)
            _wait("the trunk registration from the backup", lambda: len(carrier.registers) > before, 30, every=0.05)
            print(f"trunk registered again {carrier.registers[before] - cut:.2f} s after the power cut")
            # the backup serves: the phone registers again through the VIP
            registered = _wait("the phone to register on the backup", lambda: phone.register(timeout=1.0) == 200, 10,
                               every=0.1)
            assert registered
            bob = RawPhone("1001", added.secret, (lan.vip, 5060), sock=lan.phone.socket(), ip=lan.phone.addr)
            assert bob.register() == 200       # the extension added on A, served by B
            bob.close()
            status = subprocess.run([PBX, "ha", "status", "--data", str(tmp_path / "b"), "--json"],
                                    capture_output=True, text=True, timeout=30)
            doc = json.loads(status.stdout)
            assert doc["state"] == "MASTER" and doc["takeovers"] >= 1 and doc["role"] == "backup"
            phone.close()
        finally:
            carrier.close()
            for proc in procs.values():
                if proc.poll() is None:
                    proc.terminate()
            for proc in procs.values():
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()


def test_the_standby_web_ui_is_read_only_and_names_the_active_box(tmp_path):
    from tests.browser.webui_env import admin_client, make_app, post
    from services.ha.notify import record_state
    data = tmp_path / "data"
    app = make_app(data)
    admin = admin_client(app, data)
    ha_settings.save(data, _ha(role="backup", node_addr="192.0.2.3", peer_addr="192.0.2.2"))
    record_state(data, "BACKUP")
    page = admin.get("/extensions").text
    assert "standby of a failover pair" in page and "https://192.0.2.10/" in page
    r = post(admin, "/settings", {"site_name": "Changed"})
    assert r.status_code == 503 and "make changes on the active box" in r.text
    record_state(data, "MASTER")
    assert "standby of a failover pair" not in admin.get("/extensions").text
