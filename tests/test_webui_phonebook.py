"""Phonebook pages, API and the phones' directory files (auth by SIP credentials or token)."""
import base64
import io
import xml.etree.ElementTree as ET

import pytest

from firmware.config import ConfigStore
from firmware.features.phonebook import TABLE, Contact
from tests.browser.webui_env import USER_PASSWORD, api, form_error, post, user_client
from webui.auth.accounts import AccountStore


@pytest.fixture
def store(data):
    return ConfigStore(data)


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_admin_adds_imports_and_exports_company_contacts(admin, store):
    r = post(admin, "/phonebook", {"name": "Bob & Sons", "work": "020 7946 0000"})
    assert r.status_code == 302
    r = post(admin, "/phonebook", {"name": "", "work": "call me"})
    assert r.status_code == 400 and "1-60 printable" in form_error(r.text, "name")
    assert "not a phone number" in form_error(r.text, "work")
    csv_file = (io.BytesIO(b"name,mobile\nCarol,07700 900777\nNo Number,\n"), "people.csv")
    r = admin.post("/phonebook/import", data={"file": csv_file, "csrf_token": _csrf(admin)},
                   content_type="multipart/form-data")
    assert r.status_code == 200 and "line 3: work: a contact needs at least one number" in r.text
    assert sorted(c.name for c in store.records(TABLE)) == ["Bob & Sons", "Carol"]
    r = admin.post("/phonebook/import", data={"file": (io.BytesIO(b"MZ\x90\x00"), "virus.exe"),
                                              "csrf_token": _csrf(admin)}, content_type="multipart/form-data")
    assert r.status_code == 400 and "not a .csv or .vcf file" in r.text
    big = (io.BytesIO(b"name,work\n" + b"x,1000\n" * 135_000), "big.csv")
    r = admin.post("/phonebook/import", data={"file": big, "csrf_token": _csrf(admin)},
                   content_type="multipart/form-data")
    assert r.status_code == 400 and "larger than 900 kB" in r.text
    vcf = admin.get("/phonebook/export.vcf")
    assert vcf.mimetype == "text/vcard" and vcf.text.count("BEGIN:VCARD") == 2
    assert admin.get("/phonebook/export.csv").text.startswith("name,company,work,mobile,other,email")


def _csrf(client):
    from tests.browser.webui_env import csrf
    return csrf(client)


def test_a_user_keeps_personal_contacts_that_nobody_else_sees(app, admin, store, data):
    store.add_extension("201", "Ann")
    store.add_extension("202", "Ben")
    AccountStore(data).create("201", USER_PASSWORD, "user", extension="201")
    AccountStore(data).create("202", USER_PASSWORD, "user", extension="202")
    ann = user_client(app, "201")
    assert "my-contacts-link" in ann.get("/me").text
    assert post(ann, "/phonebook/mine", {"name": "Mum", "mobile": "07700900555"}).status_code == 302
    mum = store.records(TABLE)[0]
    assert mum.owner == "201"
    ben = user_client(app, "202")
    assert "Mum" not in ben.get("/phonebook/mine").text
    assert post(ben, f"/phonebook/mine/{mum.id}/delete", {}).status_code == 404
    assert ben.get("/phonebook").status_code == 403                       # the company list is admin-only
    assert "Mum" not in admin.get("/phonebook").text


def test_directory_files_need_the_extension_credentials_or_the_token(app, admin, store):
    ext = store.add_extension("201", "Reception")
    store.add_record(TABLE, Contact("c0ffee01", "Bob & <Sons>", work="02079460000"))
    store.add_record(TABLE, Contact("c0ffee02", "Mum", mobile="07700900555", owner="201"))
    phone = app.test_client()
    r = phone.get("/phonebook/yealink.xml")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
    assert phone.get("/phonebook/yealink.xml", headers=basic("201", "wrong-password")).status_code == 401
    r = phone.get("/phonebook/yealink.xml", headers=basic("201", ext.secret))
    assert r.status_code == 200 and r.mimetype == "application/xml"
    names = [e.findtext("Name") for e in ET.fromstring(r.data).findall("DirectoryEntry")]
    assert names == ["Bob & <Sons>", "Mum", "Reception"]
    page = admin.get("/phonebook").text
    import re
    token = re.search(r"/phonebook/snom\.xml\?token=([\w-]+)<", page).group(1)
    for vendor, root_tag in (("grandstream", "AddressBook"), ("polycom", "directory"), ("snom", "SnomIPPhoneDirectory"),
                             ("cisco", "CiscoIPPhoneDirectory")):
        r = phone.get(f"/phonebook/{vendor}.xml?token={token}")
        assert r.status_code == 200 and ET.fromstring(r.data).tag == root_tag
        assert b"Mum" not in r.data                                    # the token gives the company list
    assert phone.get(f"/phonebook/snom.xml?token={token}x").status_code == 401
    post(admin, "/phonebook/token", {})
    assert phone.get(f"/phonebook/snom.xml?token={token}").status_code == 401


def test_contacts_api(app, admin, data):
    token = admin_token(app, admin)
    r = api(app.test_client(), "POST", "/api/v1/contacts", token, json={"name": "Dee", "work": "0161 496 0000"})
    assert r.status_code == 201 and r.json["work"] == "01614960000"
    cid = r.json["id"]
    r = api(app.test_client(), "PATCH", f"/api/v1/contacts/{cid}", token, json={"mobile": "bad"})
    assert r.status_code == 400 and r.json["errors"][0]["field"] == "mobile"
    r = api(app.test_client(), "POST", "/api/v1/contacts", token, json={"name": "X", "colour": "red"})
    assert r.status_code == 400 and "unknown field" in r.json["error"]
    assert [c["name"] for c in api(app.test_client(), "GET", "/api/v1/contacts", token).json] == ["Dee"]
    assert api(app.test_client(), "DELETE", f"/api/v1/contacts/{cid}", token).status_code == 204
    assert api(app.test_client(), "GET", f"/api/v1/contacts/{cid}", token).status_code == 404
    assert api(app.test_client(), "GET", "/api/v1/contacts", None).status_code == 401


def admin_token(app, admin):
    return app.extensions["pbx.accounts"].create_token("admin", "phonebook test")
