"""The Network settings in the wizard's site step and on the System page (webui/network.py): DHCP by
default, a static address saved to DATA/network/network.json, bad values refused field by field,
login and CSRF as for every form. The host's network is never touched: off the appliance the pages
only write DATA/network/ and say so; the appliance's path unit is tested in tests/test_netconf.py."""
import json

import pytest

from firmware import netconf
from firmware.config import ConfigStore
from tests.browser.webui_env import complete_setup, form_error, post

SITE = {"site_name": "Acme Ltd", "timezone": "Europe/London", "country": "uk"}
STATIC = {"net_mode": "static", "net_address": "192.168.5.20/24", "net_gateway": "192.168.5.1",
          "net_dns": "192.168.5.1 9.9.9.9"}


@pytest.fixture
def saved(data):
    return lambda: json.loads(netconf.path(data).read_text())


def test_wizard_site_step_offers_dhcp_by_default_and_says_where_it_applies(admin):
    page = admin.get("/setup/site").text
    assert '<option value="dhcp" selected' in page and 'name="net_address"' in page
    assert 'id="network-not-appliance"' in page and "own network is not changed" in page


def test_wizard_saves_a_static_address_and_the_phones_follow_it(admin, data, saved):
    r = post(admin, "/setup/site", {**SITE, "sip_domain": "", **STATIC})
    assert r.status_code == 302 and r.location.endswith("/setup/extensions")
    assert saved() == {"mode": "static", "address": "192.168.5.20/24", "gateway": "192.168.5.1",
                       "dns": ["192.168.5.1", "9.9.9.9"]}
    assert ConfigStore(data).settings().sip_domain == "192.168.5.20"
    page = admin.get("/setup/site").text                       # shown again as saved
    assert '<option value="static" selected' in page and 'value="192.168.5.20/24"' in page
    assert "network_changed" in admin.get("/system").text      # audited
    # the drop-in the appliance would get; nothing is written outside DATA
    assert [p.name for p in (data / "network").iterdir()] == ["network.json"]
    assert "Address=192.168.5.20/24" in netconf.render(netconf.load(data))


def test_wizard_refuses_bad_network_values_and_writes_nothing(admin, data):
    r = post(admin, "/setup/site", {**SITE, "sip_domain": "192.168.5.20", "net_mode": "static",
                                    "net_address": "192.168.5.255/24", "net_gateway": "10.0.0.1",
                                    "net_dns": "dns.google"})
    assert r.status_code == 400
    assert "broadcast address of 192.168.5.0/24" in form_error(r.text, "net_address")
    assert "'dns.google' is not an IP address" in form_error(r.text, "net_dns")
    assert 'value="192.168.5.255/24"' in r.text                # the typed values stay in the form
    r = post(admin, "/setup/site", {**SITE, "sip_domain": "192.168.5.20", **STATIC, "net_gateway": "10.0.0.1"})
    assert "gateway 10.0.0.1 is outside 192.168.5.0/24" in form_error(r.text, "net_gateway")
    assert not netconf.path(data).exists()
    assert ConfigStore(data).settings().site_name != "Acme Ltd"     # the site settings waited too


def test_a_site_form_without_the_network_part_keeps_the_network(admin, data, saved):
    netconf.save(data, netconf.parse(**{k[4:]: v for k, v in STATIC.items()}))
    r = post(admin, "/setup/site", {**SITE, "sip_domain": "192.0.2.10"})
    assert r.status_code == 302
    assert saved()["mode"] == "static"
    r = post(admin, "/setup/site", {**SITE, "sip_domain": "192.0.2.10", "net_mode": "dhcp"})
    assert r.status_code == 302 and saved() == {"mode": "dhcp", "address": "", "gateway": "", "dns": []}
    assert ConfigStore(data).settings().sip_domain == "192.0.2.10"   # DHCP leaves the phones' address


def test_system_page_sets_the_network_and_refuses_bad_values(admin, data, saved):
    page = admin.get("/system").text
    assert 'id="network-settings"' in page and '<option value="dhcp" selected' in page
    r = post(admin, "/system/network", STATIC)
    assert r.status_code == 302 and r.location.endswith("/system#network-settings")
    assert saved()["address"] == "192.168.5.20/24"
    assert "they apply on the appliance" in admin.get("/system").text
    r = post(admin, "/system/network", {"net_mode": "static", "net_address": "192.168.5.20"})
    assert r.status_code == 400
    assert "add the prefix length, e.g. 192.168.5.20/24" in form_error(r.text, "net_address")
    assert saved()["address"] == "192.168.5.20/24"
    r = post(admin, "/system/network", {"net_mode": "dhcp"})
    assert r.status_code == 302 and saved()["mode"] == "dhcp"


def test_a_damaged_settings_file_shows_on_the_form(admin, data):
    netconf.path(data).parent.mkdir(parents=True)
    netconf.path(data).write_text("{broken")
    r = admin.get("/system")
    assert r.status_code == 200 and "save the network settings again" in form_error(r.text, "net_mode")
    assert post(admin, "/system/network", {"net_mode": "dhcp"}).status_code == 302   # saving repairs it
    assert netconf.load(data).mode == "dhcp"


def test_the_default_dhcp_writes_no_file(admin, data):
    r = post(admin, "/setup/site", {**SITE, "sip_domain": "192.0.2.10", "net_mode": "dhcp"})
    assert r.status_code == 302 and not netconf.path(data).exists()     # nothing for the path unit to do


def test_network_forms_need_the_admin_login_and_the_csrf_token(app, data, admin):
    anonymous = app.test_client()
    r = post(anonymous, "/system/network", STATIC)
    assert r.status_code == 302 and "/login" in r.location and not netconf.path(data).exists()
    r = admin.post("/system/network", data=STATIC)                       # no CSRF token
    assert r.status_code == 400 and "CSRF" in r.text and not netconf.path(data).exists()
    r = admin.post("/setup/site", data={**SITE, "sip_domain": "", **STATIC, "csrf_token": "forged"})
    assert r.status_code == 400 and not netconf.path(data).exists()


def test_on_the_appliance_a_new_address_gives_the_link_to_continue_there(admin, data, tmp_path, monkeypatch):
    mark = tmp_path / "pbx-network.path"
    mark.write_text("")
    monkeypatch.setattr(netconf, "APPLIANCE_MARK", mark)
    assert 'id="network-not-appliance"' not in admin.get("/setup/site").text
    r = post(admin, "/setup/site", {**SITE, "sip_domain": "", **STATIC})
    assert r.status_code == 200 and 'id="network-moved"' in r.text
    assert 'href="https://192.168.5.20/setup/extensions"' in r.text
    assert netconf.load(data).address == "192.168.5.20/24"
    r = post(admin, "/system/network", {**STATIC, "net_address": "192.168.5.21/24"},
             base_url="https://192.168.5.21")                  # already browsing at that address
    assert r.status_code == 302


def test_hostile_network_values_are_refused_with_a_reason_never_a_500(admin, data):
    from tests.test_webui_attacks import HOSTILE_VALUES
    for value in HOSTILE_VALUES:
        for name in ("net_mode", "net_address", "net_gateway", "net_dns"):
            form = {**STATIC, name: value}
            for url, extra in (("/system/network", {}), ("/setup/site", {**SITE, "sip_domain": ""})):
                r = post(admin, url, {**extra, **form})
                assert r.status_code == 400, (url, name, value[:20], r.status_code)
                assert 0 < len(form_error(r.text, name)) < 200, (url, name, value[:20])
    assert not netconf.path(data).exists()
