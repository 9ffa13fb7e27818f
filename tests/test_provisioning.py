"""Phone provisioning (issue 17, items 2-4 and 6): enrolled phones fetch their own files with their
own credentials, over HTTPS; everything else gets 404; plug-and-play answers enrolled MACs only.

Files are parsed back the way each vendor reads them (Yealink key = value, the others XML) and a
phone registers at the running PBX with the credentials read back out of its file.
"""
from __future__ import annotations

import base64
import io
import os
import re
import secrets
import socket
import ssl
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from firmware.config import ConfigStore
from firmware.features import provisioning as prov
from tests.browser.webui_env import admin_client, make_app, post
from tests.pbxproc import ROOT, PbxProcess, free_port
from tests.phones.sipp import run_sipp

NASTY = "Ab1&<\"'>x-Secret"        # a SIP secret with every XML special character
MACS = {"yealink": "001565000001", "grandstream": "000b82000002", "poly": "0004f2000003",
        "snom": "000413000004", "fanvil": "0c383e000005", "cisco": "cc5a53000006"}


def _parse(vendor: str, text: str) -> dict[str, str]:
    """What the phone would read: its account's user, password, server and transport."""
    if vendor == "yealink":
        assert text.startswith("#!version:1.0.0.1\n")
        kv = dict(line.split(" = ", 1) for line in text.splitlines()[1:] if " = " in line and not line.startswith("#"))
        return {"user": kv["account.1.user_name"], "password": kv["account.1.password"],
                "server": kv["account.1.sip_server.1.address"], "port": kv["account.1.sip_server.1.port"]}
    root = ET.fromstring(text)
    if vendor == "grandstream":
        assert root.tag == "gs_provision" and root.find("config") is not None
        c = root.find("config")
        server, _, port = c.findtext("P47").rpartition(":")
        return {"user": c.findtext("P35"), "password": c.findtext("P34"), "server": server, "port": port}
    if vendor == "poly":
        reg = root.find("reg")
        assert root.tag == "PHONE_CONFIG" and reg is not None
        return {"user": reg.get("reg.1.auth.userId"), "password": reg.get("reg.1.auth.password"),
                "server": reg.get("reg.1.server.1.address"), "port": reg.get("reg.1.server.1.port")}
    if vendor == "snom":
        ps = root.find("phone-settings")
        assert root.tag == "settings" and ps is not None
        server, _, rest = ps.findtext("user_outbound").partition(":")
        return {"user": ps.findtext("user_name"), "password": ps.findtext("user_pass"),
                "server": ps.findtext("user_host"), "port": rest.split(";")[0]}
    if vendor == "fanvil":
        line = root.find("SIP_Line_List_Entry")
        assert root.tag == "sysConf" and line is not None
        return {"user": line.findtext("Register_User"), "password": line.findtext("Register_Pswd"),
                "server": line.findtext("Register_Addr"), "port": line.findtext("Register_Port")}
    assert vendor == "cisco" and root.tag == "flat-profile"
    server, _, port = root.findtext("Proxy_1_").rpartition(":")
    return {"user": root.findtext("User_ID_1_"), "password": root.findtext("Password_1_"), "server": server,
            "port": port}


BOX = prov.BoxFacts("pbx.example.lan", 5060, 5061, "https://pbx.example.lan", "Europe/London",
                    datetime(2026, 7, 1, 12, tzinfo=ZoneInfo("Europe/London")))


# ----- rendering (pure) ---------------------------------------------------------------------------
@pytest.mark.parametrize("vendor", list(prov.VENDORS))
def test_every_vendor_file_parses_back_with_the_account_and_a_password_full_of_special_characters(vendor):
    phone = prov.Phone(mac=MACS[vendor], vendor=vendor, extension="1000")
    settings = prov.effective_settings(phone, {})
    files = prov.files_of(phone)
    content_type, text = prov.render(phone, files[-1], prov.Account("1000", "Ann & <Co>", NASTY), BOX, settings,
                                     [("1000", "Ann"), ("1001", "Bob & Sons")])
    got = _parse(vendor, text)
    assert got == {"user": "1000", "password": NASTY, "server": "pbx.example.lan", "port": "5060"}
    assert "Bob" in text and "1001" in text                  # a BLF key for the colleague
    assert phone.admin_password in text                      # the phone's own web page is locked
    if vendor != "yealink":
        assert content_type == "application/xml"


GOLDEN = Path(__file__).parent / "golden" / "provisioning"


@pytest.mark.parametrize("vendor", list(prov.VENDORS))
def test_every_vendor_file_matches_its_golden_file(vendor):
    """The whole rendered file for a fixed phone and box, against the reviewed copy in
    tests/golden/provisioning/ (PBX_UPDATE_GOLDEN=1 rewrites them after a deliberate change)."""
    phone = prov.Phone(mac=MACS[vendor], vendor=vendor, extension="1000", model="M1", label="Desk",
                       token="T" * 22, username="phuser0001", password="P" * 20, admin_password="A" * 20)
    for name in prov.files_of(phone):
        _, text = prov.render(phone, name, prov.Account("1000", "Ann & <Co>", NASTY), BOX,
                              prov.effective_settings(phone, {}), [("1000", "Ann"), ("1001", "Bob & Sons")])
        golden = GOLDEN / f"{vendor}-{name}"
        if os.environ.get("PBX_UPDATE_GOLDEN") == "1":
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(text)
        assert text == golden.read_text(), f"{golden} differs: review the change, then PBX_UPDATE_GOLDEN=1"


def test_poly_master_file_names_the_config_file_and_grandstream_gets_a_posix_time_zone():
    poly = prov.Phone(mac=MACS["poly"], vendor="poly", extension="1000")
    _, master = prov.render(poly, prov.files_of(poly)[0], prov.Account("1000", "A", "s" * 12), BOX,
                            prov.effective_settings(poly, {}), [])
    assert ET.fromstring(master).get("CONFIG_FILES") == f"{MACS['poly']}-pbx.cfg"
    gs = prov.Phone(mac=MACS["grandstream"], vendor="grandstream", extension="1000")
    _, text = prov.render(gs, prov.files_of(gs)[0], prov.Account("1000", "A", "s" * 12), BOX,
                          prov.effective_settings(gs, {}), [])
    assert ET.fromstring(text).find("config").findtext("P64") == "GMT0BST,M3.5.0/1,M10.5.0"


def test_a_line_break_in_a_key_value_file_is_refused_not_written():
    phone = prov.Phone(mac=MACS["yealink"], vendor="yealink", extension="1000")
    with pytest.raises(ValueError, match="line break"):
        prov.render(phone, prov.files_of(phone)[0], prov.Account("1000", "Ann\naccount.2.enable = 1", "s" * 12),
                    BOX, prov.effective_settings(phone, {}), [])


def test_settings_are_layered_box_then_vendor_then_phone():
    phone = prov.Phone(mac=MACS["snom"], vendor="snom", extension="1000", settings={"language": "de-DE"})
    profiles = {"global": prov.Profile("global", {"ntp_server": "ntp.lan", "language": "fr-FR"}),
                "snom": prov.Profile("snom", {"transport": "tcp"}),
                "yealink": prov.Profile("yealink", {"transport": "tls"})}
    s = prov.effective_settings(phone, profiles)
    assert (s["ntp_server"], s["transport"], s["language"]) == ("ntp.lan", "tcp", "de-DE")


@pytest.mark.parametrize("text,ok", [("00:15:65:AB:CD:EF", True), ("0015.65ab.cdef", True),
                                     ("001565abcdeg", False), ("00:15:65", False)])
def test_mac_addresses_are_normalised_or_refused_with_the_form_to_use(text, ok):
    if ok:
        assert prov.normalize_mac(text) == "001565abcdef"
    else:
        with pytest.raises(ValueError, match="12 hex digits"):
            prov.normalize_mac(text)


# ----- the file server (web UI app) -----------------------------------------------------------------
@pytest.fixture
def box(tmp_path):
    data = tmp_path / "data"
    store = ConfigStore(data)
    store.add_extension("1000", "Ann", secret=NASTY)
    store.add_extension("1001", "Bob")
    app = make_app(data)
    return data, store, app


def _auth(phone) -> dict:
    token = base64.b64encode(f"{phone.username}:{phone.password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_an_enrolled_phone_fetches_its_file_and_guesses_get_404_or_401(box):
    data, store, app = box
    admin = admin_client(app, data)
    r = post(admin, "/provisioning", {"mac": "00:15:65:00:00:01", "vendor": "yealink", "extension": "1000"})
    assert r.status_code == 302, r.text
    phone = store.record(prov.TABLE, MACS["yealink"])
    client = app.test_client()
    good = client.get(f"/prov/{phone.token}/{MACS['yealink']}.cfg", headers=_auth(phone))
    assert good.status_code == 200 and _parse("yealink", good.text)["password"] == NASTY
    # another MAC's file name under this phone's folder, a guessed folder, the MAC alone: 404
    assert client.get(f"/prov/{phone.token}/001565000009.cfg", headers=_auth(phone)).status_code == 404
    assert client.get(f"/prov/{secrets.token_urlsafe(16)}/{MACS['yealink']}.cfg",
                      headers=_auth(phone)).status_code == 404
    assert client.get(f"/{MACS['yealink']}.cfg").status_code in (302, 404)
    # no credentials / someone else's: 401
    assert client.get(f"/prov/{phone.token}/{MACS['yealink']}.cfg").status_code == 401
    wrong = {"Authorization": "Basic " + base64.b64encode(f"{phone.username}:nope".encode()).decode()}
    assert client.get(f"/prov/{phone.token}/{MACS['yealink']}.cfg", headers=wrong).status_code == 401
    page = admin.get("/provisioning").text
    assert prov.provisioning_url(phone, "http://localhost") in page


def test_an_address_that_keeps_guessing_is_refused_for_a_while(box):
    data, store, app = box
    from webui.provisioning import views
    admin_client(app, data)                 # the box is set up (before that, the wizard answers)
    views._seen.clear()
    client = app.test_client()
    for _ in range(views.FAIL_LIMIT):
        assert client.get(f"/prov/{secrets.token_urlsafe(16)}/x.cfg").status_code == 404
    assert client.get(f"/prov/{secrets.token_urlsafe(16)}/x.cfg").status_code == 429
    views._seen.clear()


def test_reprovision_rotates_url_credentials_and_the_sip_secret(box):
    data, store, app = box
    admin = admin_client(app, data)
    post(admin, "/provisioning", {"mac": MACS["snom"], "vendor": "snom", "extension": "1001"})
    old = store.record(prov.TABLE, MACS["snom"])
    old_secret = store.get_extension("1001").secret
    r = post(admin, f"/provisioning/{MACS['snom']}/reprovision")
    assert r.status_code == 302
    new = store.record(prov.TABLE, MACS["snom"])
    assert (new.token, new.password, new.admin_password) != (old.token, old.password, old.admin_password)
    assert store.get_extension("1001").secret != old_secret
    client = app.test_client()
    name = f"{MACS['snom'].upper()}.xml"
    assert client.get(f"/prov/{old.token}/{name}", headers=_auth(old)).status_code == 404
    fresh = client.get(f"/prov/{new.token}/{name}", headers=_auth(new))
    assert fresh.status_code == 200
    assert _parse("snom", fresh.text)["password"] == store.get_extension("1001").secret


def test_csv_import_enrolls_good_lines_and_names_each_refused_one(box):
    data, store, app = box
    admin = admin_client(app, data)
    csv_text = ("mac,vendor,extension,model,label\n"
                f"{MACS['cisco']},cisco,1000,8851,Front desk\n"
                "zz:zz,yealink,1000,,\n"
                f"{MACS['fanvil']},fanvil,4242,,\n")
    r = post(admin, "/provisioning/import", {"csv_file": (io.BytesIO(csv_text.encode()), "phones.csv")},
             content_type="multipart/form-data")
    assert r.status_code == 200
    assert "line 3:" in r.text and "not a MAC address" in r.text
    assert "line 4:" in r.text and "no extension 4242" in r.text
    assert [p.mac for p in store.records(prov.TABLE)] == [MACS["cisco"]]


# ----- over HTTPS, from the real web process ----------------------------------------------------------
def test_each_vendor_fetches_a_valid_file_over_https_with_its_own_credentials(tmp_path):
    data = tmp_path / "data"
    store = ConfigStore(data)
    store.add_extension("1000", "Ann", secret=NASTY)
    phones = {}
    for vendor, mac in MACS.items():
        store.add_record(prov.TABLE, prov.Phone(mac=mac, vendor=vendor, extension="1000"))
        phones[vendor] = store.record(prov.TABLE, mac)
    store.update_record(prov.TABLE, MACS["poly"], settings={"http_allowed": "yes"})   # a factory Poly
    phones["poly"] = store.record(prov.TABLE, MACS["poly"])
    _set_up(data)
    port, plain = free_port(), free_port()
    log = open(tmp_path / "web.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "webui", "--data", str(data), "--host", "127.0.0.1",
                             "--port", str(port), "--https", "on", "--redirect-port", str(plain)],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not (data / "tls" / "box.crt").exists() or not _listening(port):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "web.log").read_text()
            time.sleep(0.1)
        ctx = ssl.create_default_context(cafile=str(data / "tls" / "box.crt"))
        for vendor, phone in phones.items():
            url = f"https://127.0.0.1:{port}/prov/{phone.token}/{prov.files_of(phone)[-1]}"
            req = urllib.request.Request(url, headers={**_auth(phone), "User-Agent": f"{vendor} test phone"})
            with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
                assert resp.status == 200
                assert _parse(vendor, resp.read().decode())["password"] == NASTY
            other = phones["yealink" if vendor != "yealink" else "snom"]
            with pytest.raises(urllib.error.HTTPError) as e:     # another phone's credentials
                urllib.request.urlopen(urllib.request.Request(url, headers=_auth(other)), context=ctx, timeout=10)
            assert e.value.code == 401
        # plain HTTP: only the phone flagged for it gets its file; the others are told to use HTTPS
        for vendor, phone in phones.items():
            url = f"http://127.0.0.1:{plain}/prov/{phone.token}/{prov.files_of(phone)[-1]}"
            try:
                with urllib.request.urlopen(urllib.request.Request(url, headers=_auth(phone)), timeout=10) as resp:
                    status = resp.status
            except urllib.error.HTTPError as e:
                status = e.code
            assert status == (200 if vendor == "poly" else 403), vendor
        # the phone book address in a file logs in as the phone's extension and gets the directory
        with urllib.request.urlopen(urllib.request.Request(
                f"https://127.0.0.1:{port}/prov/{phones['yealink'].token}/{MACS['yealink']}.cfg",
                headers=_auth(phones["yealink"])), context=ctx, timeout=10) as resp:
            kv = dict(line.split(" = ", 1) for line in resp.read().decode().splitlines() if " = " in line)
        book = urllib.parse.urlsplit(kv["remote_phonebook.data.1.url"])
        login = base64.b64encode(f"{urllib.parse.unquote(book.username)}:{urllib.parse.unquote(book.password)}"
                                 .encode()).decode()
        with urllib.request.urlopen(urllib.request.Request(
                f"https://127.0.0.1:{port}{book.path}", headers={"Authorization": f"Basic {login}"}),
                context=ctx, timeout=10) as resp:
            assert resp.status == 200 and b"YealinkIPPhoneDirectory" in resp.read()
        audit = (tmp_path / "web.log").read_text()
        assert f"fetch {MACS['cisco']}.xml from 127.0.0.1 (phone {MACS['cisco']} ext 1000) -> 200" in audit
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _set_up(data) -> None:
    """The box has had its first-boot setup (an admin exists): until then every page is the wizard."""
    from webui.auth.accounts import AccountStore
    AccountStore(data).create("admin", "Correct-Horse-42", "admin")


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.mark.e2e
def test_a_phone_registers_with_the_credentials_read_back_out_of_its_file(tmp_path):
    with PbxProcess(tmp_path, extensions=["1000"], web=True) as pbx:
        store = ConfigStore(pbx.data)
        store.add_record(prov.TABLE, prov.Phone(mac=MACS["grandstream"], vendor="grandstream", extension="1000"))
        phone = store.record(prov.TABLE, MACS["grandstream"])
        _set_up(pbx.data)
        url = f"http://127.0.0.1:{pbx.web_port}/prov/{phone.token}/cfg{MACS['grandstream']}.xml"
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(urllib.request.Request(url, headers=_auth(phone)), timeout=5) as resp:
                    got = _parse("grandstream", resp.read().decode())
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "the web UI did not serve the phone's file"
                time.sleep(0.2)
        assert (got["server"], int(got["port"])) == ("127.0.0.1", pbx.sip_port)
        # SIPp registers (digest auth) with exactly what the phone read out of its file
        result = run_sipp("register_auth.xml", (got["server"], int(got["port"])),
                          users=[(got["user"], got["password"])])
        assert result.ok, result.log_tail()
        assert got["user"] in {r["aor"] for r in pbx.status()["registrations"]}


# ----- plug-and-play ------------------------------------------------------------------------------------
def _pnp_subscribe(mac: str, local_port: int, vendor: str = "snom") -> bytes:
    call_id = secrets.token_hex(8)
    return (f"SUBSCRIBE sip:MAC%3a{mac}@224.0.1.75 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 198.18.0.2:{local_port};branch=z9hG4bK{call_id}\r\n"
            f"From: <sip:MAC%3a{mac}@198.18.0.2>;tag={call_id[:6]}\r\n"
            f"To: <sip:MAC%3a{mac}@224.0.1.75>\r\nCall-ID: {call_id}@phone\r\nCSeq: 1 SUBSCRIBE\r\n"
            f"Contact: <sip:phone@198.18.0.2:{local_port}>\r\n"
            f'Event: ua-profile;profile-type="device";vendor="{vendor}";model="D785";version="10.1"\r\n'
            "Expires: 0\r\nAccept: application/url\r\nContent-Length: 0\r\n\r\n").encode()


def test_plug_and_play_answers_an_enrolled_mac_over_multicast_and_nothing_else(tmp_path):
    """The phone sits on a LAN host (network namespace) and multicasts as a real one does."""
    import asyncio
    import threading
    from services import pnp
    from tests.lanhost import LanHost
    data = tmp_path / "data"
    store = ConfigStore(data)
    store.add_extension("1000", "Ann")
    store.add_record(prov.TABLE, prov.Phone(mac=MACS["snom"], vendor="snom", extension="1000"))
    enrolled = store.record(prov.TABLE, MACS["snom"])
    port = free_port()
    with LanHost() as lan:
        loop = asyncio.new_event_loop()
        started = threading.Event()
        holder = {}

        def run():
            asyncio.set_event_loop(loop)
            holder["t"], holder["p"] = loop.run_until_complete(
                pnp.start(store, lambda: f"https://{lan.box_addr}", lan.box_addr, port))
            started.set()
            loop.run_forever()
        threading.Thread(target=run, daemon=True).start()
        assert started.wait(5)
        try:
            phone_sock = lan.socket(socket.AF_INET, socket.SOCK_DGRAM)
            phone_sock.bind((lan.host_addr, 0))
            phone_sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(lan.host_addr))
            phone_sock.settimeout(3)
            local = phone_sock.getsockname()[1]
            phone_sock.sendto(_pnp_subscribe(MACS["snom"], local), (prov.PNP_GROUP, port))
            ok = phone_sock.recv(65535).decode()
            assert ok.startswith("SIP/2.0 200")
            notify = phone_sock.recv(65535).decode()
            assert notify.startswith("NOTIFY ") and "Content-Type: application/url" in notify
            assert notify.split("\r\n\r\n", 1)[1] == prov.provisioning_url(enrolled, f"https://{lan.box_addr}")
            # an unknown MAC gets no answer at all, and is listed for the admin to approve
            phone_sock.sendto(_pnp_subscribe("000413999999", local), (prov.PNP_GROUP, port))
            with pytest.raises(socket.timeout):
                phone_sock.recv(65535)
            listed = store.record(prov.TABLE, "000413999999")
            assert listed is not None and not listed.approved and listed.vendor == "snom"
            # still nothing after it was listed, until the admin approves it
            phone_sock.sendto(_pnp_subscribe("000413999999", local), (prov.PNP_GROUP, port))
            with pytest.raises(socket.timeout):
                phone_sock.recv(65535)
            phone_sock.close()
        finally:
            loop.call_soon_threadsafe(holder["t"].close)
            loop.call_soon_threadsafe(loop.stop)
