"""The network settings (firmware/netconf.py): the networkd drop-in for a static address, refusals
that name the field and the fix, the saved file, and `apply` writing/removing the drop-in (into a
temporary directory: the host's network configuration is never touched)."""
import json

import pytest

from firmware import netconf
from firmware.netconf import NetworkError, NetworkSettings


def test_static_address_renders_the_dropin():
    s = netconf.parse("static", "192.168.1.10/24", "192.168.1.1", "192.168.1.1, 9.9.9.9 192.168.1.1")
    assert s == NetworkSettings("static", "192.168.1.10/24", "192.168.1.1", ("192.168.1.1", "9.9.9.9"))
    text = netconf.render(s)
    assert text.splitlines()[2:] == ["[Network]", "DHCP=no", "Address=192.168.1.10/24", "Gateway=192.168.1.1",
                                     "DNS=192.168.1.1", "DNS=9.9.9.9"]
    assert netconf.parse("static", "10.1.2.3/255.255.0.0", "", "").address == "10.1.2.3/16"   # netmask form
    assert "Gateway" not in netconf.render(netconf.parse("static", "10.1.2.3/16"))          # LAN without router


def test_dhcp_is_the_default_and_has_no_dropin():
    assert netconf.parse("") == NetworkSettings()
    assert netconf.parse("dhcp", "garbage", "garbage", "garbage") == NetworkSettings()   # ignored under DHCP
    assert netconf.render(NetworkSettings()) is None


@pytest.mark.parametrize("address,gateway,dns,field,message", [
    ("", "", "", "address", "a static address is needed"),
    ("192.168.1.10", "", "", "address", "add the prefix length, e.g. 192.168.1.10/24"),
    ("192.168.1.300/24", "", "", "address", "not an IPv4 address with a prefix"),
    ("192.168.1.0/24", "", "", "address", "network address of 192.168.1.0/24: pick a host address, e.g. 192.168.1.10/24"),
    ("192.168.1.255/24", "", "", "address", "broadcast address of 192.168.1.0/24"),
    ("192.168.1.10/31", "", "", "address", "prefix /31: use /8 to /30"),
    ("127.0.0.2/8", "", "", "address", "cannot be a box's address"),
    ("169.254.1.1/16", "", "", "address", "cannot be a box's address"),
    ("fe80::1/64", "", "", "address", "not an IPv4 address"),
    ("192.168.1.10/24", "192.168.2.1", "", "gateway", "gateway 192.168.2.1 is outside 192.168.1.0/24"),
    ("192.168.1.10/24", "192.168.1.255", "", "gateway", "network or broadcast address"),
    ("192.168.1.10/24", "192.168.1.10", "", "gateway", "the box's own address"),
    ("192.168.1.10/24", "router", "", "gateway", "router is not an IPv4 address"),
    ("192.168.1.10/24", "192.168.1.1", "1.1.1.1 dns.google", "dns", "'dns.google' is not an IP address"),
    ("192.168.1.10/24", "192.168.1.1", "1.1.1.1 1.0.0.1 9.9.9.9 8.8.8.8", "dns", "4 DNS servers: give at most 3"),
])
def test_bad_values_are_refused_naming_the_field_and_the_fix(address, gateway, dns, field, message):
    with pytest.raises(NetworkError) as e:
        netconf.parse("static", address, gateway, dns)
    assert field in e.value.errors and message in e.value.errors[field], e.value.errors


def test_every_bad_field_is_reported_at_once():
    with pytest.raises(NetworkError) as e:
        netconf.parse("static", "10.0.0.0/8", "x", "y")
    assert set(e.value.errors) == {"address", "gateway", "dns"}
    with pytest.raises(NetworkError, match="mode: network mode 'ppp': use dhcp or static"):
        netconf.parse("ppp")


def test_save_load_and_apply_write_and_remove_the_dropin(tmp_path):
    data, dropin = tmp_path / "data", tmp_path / "run" / "80-pbx-wired.network.d" / "50-pbx-static.conf"
    assert netconf.load(data) == NetworkSettings()
    assert netconf.apply(data, dropin) is False and not dropin.exists()        # DHCP: nothing to write
    static = netconf.parse("static", "192.168.7.20/24", "192.168.7.1", "192.168.7.1")
    saved = netconf.save(data, static)
    assert saved == data / "network" / "network.json"
    assert json.loads(saved.read_text())["address"] == "192.168.7.20/24"
    assert [p.name for p in saved.parent.iterdir()] == ["network.json"]          # no temporary left over
    assert netconf.load(data) == static
    assert netconf.apply(data, dropin) is True and dropin.read_text() == netconf.render(static)
    assert oct(dropin.stat().st_mode & 0o777) == "0o644"                         # networkd's user reads it
    assert netconf.apply(data, dropin) is False                                  # unchanged
    netconf.save(data, NetworkSettings())
    assert netconf.apply(data, dropin) is True and not dropin.exists()           # back to DHCP


def test_apply_refuses_a_tampered_file_and_keeps_the_network(tmp_path, capsys):
    data, dropin = tmp_path / "data", tmp_path / "run" / "50-pbx-static.conf"
    netconf.save(data, netconf.parse("static", "192.168.7.20/24", "192.168.7.1"))
    assert netconf.main(["apply", "--data", str(data), "--dropin", str(dropin)]) == 0
    assert "pbx-network: static 192.168.7.20/24 gateway 192.168.7.1" in capsys.readouterr().out
    before = dropin.read_text()
    # the web process's user writes something networkd must never see
    netconf.path(data).write_text(json.dumps({"mode": "static", "address": "192.168.7.20/24\n[Match]",
                                              "gateway": "192.168.7.1", "dns": []}))
    assert netconf.main(["apply", "--data", str(data), "--dropin", str(dropin)]) == 1
    assert "not applied, the network is unchanged" in capsys.readouterr().err
    assert dropin.read_text() == before
    netconf.path(data).write_text("{not json")
    assert netconf.main(["apply", "--data", str(data), "--dropin", str(dropin)]) == 1
    assert "save the network settings again" in capsys.readouterr().err
