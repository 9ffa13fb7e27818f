"""The remote-datacenter standby (issue 14, item 3): a box on another network (no shared L2, no
VIP) that holds the office's configuration, call records and files, watches the office box's
sealed heartbeats over the WAN and, when they stop, registers the trunks and serves the calls;
it hands back once the office box is steadily back.

The decision is a pure function (firmware/ha.py remote_active, pinned clock). The e2e test runs
two real PBXes in namespaces (tests/wannet.py): the office LAN with box A and a phone, a
carrier on its own link to the office router, and box R behind a WAN of 40 ms each way and 1 %
loss. A's power is cut; the carrier sees R register and sends it an inbound DID call, which
rings the phone's backup registration on R and carries audio both ways.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from firmware.config import ConfigStore
from firmware.config.errors import ValidationErrors
from firmware.ha import REMOTE_HANDBACK_S, REMOTE_TAKEOVER_S, HaSettings, remote_active, status_summary
from services.ha import settings as ha_settings
from tests.hanet import wait_for
from tests.phones.raw import RawPhone
from tests.wannet import DID, SECRET, Carrier, TwoSites, WanSites, inbound_call

ROOT = Path(__file__).resolve().parents[1]
PBX = str(ROOT / ".venv" / "bin" / "pbx")
T0 = 1_800_000_000.0


# ----- the decision, with a pinned clock ---------------------------------------------------------
def _active(active, now, heard=None, since=None, started=T0):
    return remote_active(active=active, now=now, started=started, master_heard=heard, master_since=since)


def test_the_remote_box_takes_over_when_the_main_sites_heartbeats_stop_for_the_timeout():
    assert not _active(False, T0 + 10, heard=T0 + 9.9, since=T0)
    assert not _active(False, T0 + 10, heard=T0 + 10 - REMOTE_TAKEOVER_S + 0.05, since=T0)
    assert _active(False, T0 + 10, heard=T0 + 10 - REMOTE_TAKEOVER_S, since=T0)


def test_a_loss_burst_shorter_than_the_timeout_does_not_make_it_flap():
    # 1.5 s of nothing (a burst of loss on the WAN), then the heartbeats again: no takeover
    heard = T0
    for tick in range(1, 16):
        assert not _active(False, T0 + tick / 10, heard=heard, since=T0 - 60)
    assert not _active(False, T0 + 1.6, heard=T0 + 1.6, since=T0 - 60)


def test_a_remote_box_that_never_heard_the_main_site_takes_over_after_the_timeout_from_its_start():
    assert not _active(False, T0 + 1.0)
    assert _active(False, T0 + REMOTE_TAKEOVER_S)


def test_it_hands_back_only_after_the_main_sites_heartbeats_came_steadily():
    back = T0 + 100
    # the first heartbeat after the outage, then a steady run: active until REMOTE_HANDBACK_S of it
    assert _active(True, back + 0.1, heard=back + 0.1, since=back)
    assert _active(True, back + REMOTE_HANDBACK_S - 0.1, heard=back + REMOTE_HANDBACK_S - 0.15, since=back)
    assert not _active(True, back + REMOTE_HANDBACK_S, heard=back + REMOTE_HANDBACK_S - 0.05, since=back)
    # a single heartbeat through a failing WAN, then silence: stays active
    assert _active(True, back + 3, heard=back + 1.5, since=back + 1.5)
    assert _active(True, back + 3, heard=None, since=None)


# ----- settings and `pbx ha set` -------------------------------------------------------------------
def test_a_remote_standby_needs_no_vip_and_a_lone_office_box_needs_a_remote():
    remote = HaSettings(True, node_addr="203.0.113.7", peer_addr="198.51.100.2", site="remote", secret="s" * 24)
    remote.validate()
    assert not remote.vrrp and remote.vip_addr == "203.0.113.7"
    office = HaSettings(True, node_addr="198.51.100.2", remote_addr="203.0.113.7", secret="s" * 24)
    office.validate()
    assert not office.vrrp and office.vip_addr == "198.51.100.2"
    pair = HaSettings(True, "primary", "192.0.2.2", "192.0.2.3", "192.0.2.10/24", "eth0", secret="s" * 24,
                      remote_addr="203.0.113.7")
    pair.validate()
    assert pair.vrrp
    for bad, field in ((HaSettings(True, node_addr="198.51.100.2", secret="s" * 24), "peer_addr"),
                       (HaSettings(True, node_addr="1.2.3.4", peer_addr="1.2.3.4", site="remote", secret="s" * 24),
                        "peer_addr"),
                       (HaSettings(True, node_addr="1.2.3.4", remote_addr="1.2.3.4", secret="s" * 24), "remote_addr"),
                       (HaSettings(True, node_addr="1.2.3.4", peer_addr="1.2.3.5", site="moon", secret="s" * 24),
                        "site")):
        with pytest.raises(ValidationErrors) as e:
            bad.validate()
        assert field in {err.field for err in e.value.errors}


def test_pbx_ha_set_makes_a_remote_standby(tmp_path):
    data = tmp_path / "data"
    ConfigStore(data)
    ok = subprocess.run([PBX, "ha", "set", "--data", str(data), "--site", "remote", "--node", "203.0.113.7",
                         "--peer", "198.51.100.2", "--secret", "x" * 24], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert "remote standby at 203.0.113.7, main site 198.51.100.2" in ok.stdout
    ha = ha_settings.load(data)
    assert ha.site == "remote" and ha.peer_addr == "198.51.100.2" and not ha.vip


def test_status_names_the_remote_role_and_the_remote_link():
    doc = {"state": "BACKUP", "role": "primary", "site": "remote", "vip": "", "peer": "198.51.100.2",
           "peer_state": "MASTER", "peer_heard_s": 0.05, "replication": {"config_received": T0 - 1}}
    s = status_summary(doc, T0)
    assert s["headline"] == "remote standby, standby; main site 198.51.100.2" and s["ok"]
    doc.update(state="MASTER", peer_state="unreachable", peer_heard_s=4.0,
               last_takeover={"at": T0 - 2, "gap_s": 2.05})
    s = status_summary(doc, T0, lambda t: "12:00:00")
    assert s["headline"].startswith("remote standby, active: it registers the trunks")
    assert s["takeover"] == "took over at 12:00:00, 2050 ms after the peer's last heartbeat"
    pair = {"state": "MASTER", "role": "primary", "site": "main", "vip": "192.0.2.10/24", "peer": "192.0.2.3",
            "peer_state": "BACKUP", "peer_heard_s": 0.05, "replication": {"config_acked": T0 - 1},
            "remote": {"peer": "203.0.113.7", "peer_state": "BACKUP", "peer_heard_s": 0.2,
                       "replication": {"config_acked": T0 - 1.5}}}
    rows = dict((label, (text, ok)) for label, text, ok in status_summary(pair, T0)["rows"])
    assert rows["Remote standby"] == ("203.0.113.7 is standby; configuration acknowledged 1.5 s ago", True)


# ----- two sites in namespaces (tests/wannet.py) --------------------------------------------------
@pytest.mark.e2e
def test_power_cut_of_the_office_box_moves_trunk_and_inbound_calls_to_the_remote_standby(tmp_path):
    with WanSites(delay_ms=40, loss_pct=1.0) as net:
        carrier = Carrier(net.carrier)
        try:
            with TwoSites(net, tmp_path) as sites:
                a, r = net.box_a.addr, net.remote.addr
                wait_for("A to register the trunk", lambda: carrier.from_(a), 45)
                wait_for("the office's configuration on R (over the WAN)",
                         lambda: ConfigStore(sites.data["r"]).get_extension("1000") is not None, 30)
                wait_for("R to be the standby", lambda: sites.state("r") == "BACKUP", 10)
                # the phone registers with both boxes: A its registrar, R its backup registrar
                phone_a = RawPhone("1000", SECRET, (a, 5060), sock=net.phone.socket(), ip=net.phone.addr)
                phone_r = RawPhone("1000", SECRET, (r, 5060), sock=net.phone.socket(), ip=net.phone.addr)
                assert phone_a.register() == 200
                assert wait_for("the phone's backup registration on R", lambda: phone_r.register(timeout=2) == 200,
                                10, every=0.2)
                status = sites.ha_status("r")
                assert status["site"] == "remote" and status["live"]["peer_state"] == "MASTER"
                time.sleep(1.0)
                assert not carrier.from_(r), "the standby registered the trunk while A was active"

                cut = net.power_cut(net.box_a)
                took = wait_for("R to take over", lambda: sites.state("r") == "MASTER" and time.monotonic(), 15,
                                every=0.02) - cut
                registered = wait_for("R to register the trunk", lambda: (carrier.from_(r) or [None])[0], 20,
                                      every=0.02) - cut
                print(f"R active {took:.2f} s after the power cut, trunk registered from R after {registered:.2f} s")
                call = inbound_call(net, net.carrier.addr, r, phone_r)
                answered = call["answered_at"] - cut
                print(f"inbound DID call answered on R {answered:.2f} s after the power cut; "
                      f"audio: carrier got {call['carrier_rx']} packets, the phone {call['phone_rx']}")
                assert call["status"] == 200
                assert call["carrier_rx"] > 50 and call["phone_rx"] > 50, call    # 2 s of 20 ms packets, 1 % loss
                assert call["bye"] == 200
                (tmp_path / "remote.json").write_text(json.dumps(
                    {"active_s": took, "trunk_s": registered, "answered_s": answered}))
                assert took < REMOTE_TAKEOVER_S + 1.5
                assert registered < took + 8.0

                status = sites.ha_status("r")
                assert status["state"] == "MASTER" and status["takeovers"] >= 1
                gap = status["live"]["last_takeover"]["gap_s"]
                assert REMOTE_TAKEOVER_S - 0.2 <= gap < REMOTE_TAKEOVER_S + 1.5, gap

                # a change made on R while it is active (the office is gone) comes back with the office
                ConfigStore(sites.data["r"]).add_extension("1077", "Added at the remote site")

                # power back: A is the office box again, R hands back once A is steadily heard
                subprocess.run(["ip", "-n", net.switch, "link", "set", net.box_a.if_out, "up"], check=True)
                back = time.monotonic()
                sites.start_box("a")
                wait_for("A to register the trunk again", lambda: carrier.from_(a, after=back), 45)
                handed = wait_for("R to hand back", lambda: sites.state("r") == "BACKUP" and time.monotonic(), 30,
                                  every=0.05)
                print(f"R handed back {handed - back:.1f} s after A's power came back")
                assert wait_for("R's edge to stop registering the trunk", lambda: "trunk registrations stopped"
                                in (tmp_path / "r.log").read_text(errors="replace"), 10, every=0.1)
                # and it takes its binding back at the carrier (REGISTER expires 0), so the carrier
                # does not fork DID calls to the standby until the binding would have expired
                unreg = wait_for("R to unregister the trunk at the carrier",
                                 lambda: (carrier.from_(r, after=back, kind="unregister") or [None])[0], 10, every=0.05)
                print(f"R unregistered the trunk {unreg - handed:.2f} s after handing back")
                assert ConfigStore(sites.data["a"]).get_extension("1077") is not None, \
                    "the configuration changed on R while it was active was lost at the handback"
                time.sleep(2.5)                       # a push from A (every 2 s) leaves R with it too
                assert ConfigStore(sites.data["r"]).get_extension("1077") is not None
                phone_a.close()
                phone_r.close()
        finally:
            carrier.close()


@pytest.mark.e2e
def test_a_pair_with_a_remote_standby_the_remote_box_waits_for_both_office_boxes(tmp_path):
    """Office = a VRRP pair (A, B) both naming R: A's power cut moves the VIP to B and R stays
    the standby (B's heartbeats say MASTER); only when B goes too does R take over the trunk."""
    with WanSites(delay_ms=40, loss_pct=1.0, pair=True) as net:
        carrier = Carrier(net.carrier)
        try:
            with TwoSites(net, tmp_path) as sites:
                wait_for("A to hold the VIP", lambda: net.vip in net.box_a.addresses(), 60)
                wait_for("the pair to register the trunk", lambda: carrier.from_(net.vip), 45)
                wait_for("the office's configuration on R",
                         lambda: ConfigStore(sites.data["r"]).get_extension("1000") is not None, 30)
                wait_for("R to be the standby", lambda: sites.state("r") == "BACKUP", 10)
                wait_for("B to hear R", lambda: (sites.ha_status("b")["live"] or {}).get("remote", {})
                         .get("peer_state") == "BACKUP", 20, every=0.5)
                net.power_cut(net.box_a)
                wait_for("B to take the VIP", lambda: net.vip in net.box_b.addresses(), 10, every=0.01)
                watch_until = time.monotonic() + 4.0
                while time.monotonic() < watch_until:
                    assert sites.state("r") == "BACKUP", "R took over although B is active"
                    time.sleep(0.05)
                assert not carrier.from_(net.remote.addr)
                cut = net.power_cut(net.box_b)
                took = wait_for("R to take over", lambda: sites.state("r") == "MASTER" and time.monotonic(), 15,
                                every=0.02) - cut
                registered = wait_for("R to register the trunk", lambda: (carrier.from_(net.remote.addr) or [None])[0],
                                      20, every=0.02) - cut
                print(f"both office boxes gone: R active after {took:.2f} s, trunk registered after {registered:.2f} s")
                assert took < REMOTE_TAKEOVER_S + 1.5
        finally:
            carrier.close()


def test_the_failover_page_sets_up_a_remote_standby(tmp_path):
    from tests.browser.webui_env import admin_client, make_app, post
    data = tmp_path / "data"
    app = make_app(data)
    admin = admin_client(app, data)
    assert "Remote standby&#39;s address" in admin.get("/failover").text or "Remote standby's address" in \
        admin.get("/failover").text
    form = {"role": "primary", "site": "remote", "node_addr": "203.0.113.7", "peer_addr": "198.51.100.2",
            "remote_addr": "", "vip": "", "interface": "", "router_id": "51", "advert_ms": "100", "secret": "x" * 24}
    r = post(admin, "/failover", {**form, "peer_addr": ""})
    assert r.status_code == 400 and "is not an IPv4 address" in r.text
    r = post(admin, "/failover", form, follow_redirects=True)
    assert r.status_code == 200, r.text[-500:]
    saved = ha_settings.load(data)
    assert saved.enabled and saved.site == "remote" and saved.peer_addr == "198.51.100.2" and not saved.vip
    assert "remote standby, main site 198.51.100.2" in r.text
    assert "remote standby; main site 198.51.100.2" in admin.get("/failover").text
