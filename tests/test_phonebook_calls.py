"""Phonebook end to end: a SIPp carrier calls in with a number and no name, and the pjsua2 phone
that rings shows the company contact's name; a phone downloads its directory over HTTP with its
SIP credentials from the running PBX's web server."""

import base64
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import pytest

from firmware.features.phonebook import TABLE, Contact
from tests.pbxproc import PbxProcess
from tests.phones.pj import PjPhone
from tests.browser.webui_env import ADMIN_PASSWORD
from tests.phones.sipp import Sipp, free_port
from webui.auth.accounts import AccountStore

pytestmark = pytest.mark.e2e
CARRIER = "127.0.0.72"
DID = "441632960888"


@pytest.fixture(scope="module")
def pbx(tmp_path_factory):
    proc = PbxProcess(tmp_path_factory.mktemp("pbx"), extensions=["1000", "1001"], web=True,
                      settings={"no_answer_timeout": 15, "busy_tone_seconds": 1})
    proc.store.add_trunk("carrier", f"{CARRIER}:{free_port('udp', CARRIER)}", register=False)
    proc.store.add_inbound_route(DID, "extension:1001")
    proc.store.add_record(TABLE, Contact("c0ffee01", "Bob & Sons Plumbing", mobile="07700 900555"))
    proc.store.add_record(TABLE, Contact("c0ffee02", "Mum", mobile="07700900777", owner="1001"))
    AccountStore(proc.data).create("admin", ADMIN_PASSWORD, "admin")     # a box past its setup wizard
    proc.start()
    yield proc
    proc.stop()


def test_a_caller_without_a_name_is_shown_by_the_phonebook_name(pbx, tmp_path):
    with PjPhone(user="1001", secret=pbx.secrets["1001"], registrar=pbx.registrar, tone_hz=1100,
                 record_dir=tmp_path) as b:
        assert b.register() == 200
        b.auto_answer(200, after_ms=200)
        uac = Sipp("carrier_uac_noname.xml", pbx.registrar, local_ip=CARRIER, service=DID, workdir=tmp_path,
                   timeout=20, params={"caller": "+447700900555", "talk_ms": 500}).start()
        incoming = b.wait_incoming(timeout=8)
        assert '"Bob & Sons Plumbing"' in incoming["from"] and "447700900555" in incoming["from"]
        assert uac.wait(20).ok


def test_a_phone_downloads_its_directory_with_its_sip_credentials(pbx):
    url = f"http://127.0.0.1:{pbx.web_port}/phonebook/yealink.xml"
    try:
        urllib.request.urlopen(url, timeout=10)
        raise AssertionError("served without credentials")
    except urllib.error.HTTPError as e:
        assert e.code == 401 and e.headers["WWW-Authenticate"].startswith("Basic")
    auth = base64.b64encode(f"1001:{pbx.secrets['1001']}".encode()).decode()
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"Basic {auth}"}),
                                timeout=10) as r:
        root = ET.fromstring(r.read())
    names = [e.findtext("Name") for e in root.findall("DirectoryEntry")]
    assert "Bob & Sons Plumbing" in names and "Mum" in names and "Ext 1000" in names
