"""Phonebook: contacts, CSV and vCard in and out, the caller's name, and each vendor's directory
document checked against its documented structure (element names, nesting, escaping)."""
import xml.etree.ElementTree as ET
from datetime import datetime

import pytest

from firmware.config import ConfigStore, ValidationError
from firmware.config.model import Extension
from firmware.config.routing import InboundRoute, Trunk
from firmware.dialplan import Caller, ConfigView, Ring, route_call
from firmware.features.phonebook import (CISCO_PAGE, TABLE, Contact, caller_name, export_csv, export_vcards,
                                         import_csv, import_vcards, phonebook_entries, render)

ACME = Contact("c0ffee01", "Bob & <Sons> Plumbing", "Bob's", work="020 7946 0000", mobile="07700 900123")
ALICE = Contact("c0ffee02", "Alice Smith", work="+441632960001")
MINE = Contact("c0ffee03", "Mum", mobile="07700900555", owner="1000")


def parse(text):
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"')
    return ET.fromstring(text.split("\n", 1)[1])


def test_numbers_are_stored_as_digits_and_a_contact_needs_one():
    assert (ACME.work, ACME.mobile) == ("02079460000", "07700900123")
    with pytest.raises(ValidationError, match="at least one number"):
        Contact("c0ffee09", "Nobody").validate()
    with pytest.raises(ValidationError, match="is not a phone number"):
        Contact("c0ffee09", "Bad", work="call me").validate()
    with pytest.raises(ValidationError, match="not an e-mail address"):
        Contact("c0ffee09", "Bad", work="1000", email="nope").validate()


def test_caller_name_matches_every_written_form_and_only_company_contacts():
    contacts = [ACME, ALICE, MINE]
    assert caller_name(contacts, "+447700900123") == "Bob & <Sons> Plumbing"
    assert caller_name(contacts, "00441632960001") == "Alice Smith"
    assert caller_name(contacts, "07700900555") is None            # someone's personal contact
    assert caller_name(contacts, "anonymous") is None


def test_an_inbound_call_without_a_name_rings_with_the_phonebook_name():
    config = ConfigView.of([Extension("1000", "Reception", "long-enough-secret")],
                           [Trunk("carrier", "sip.example.com", register=False)],
                           [InboundRoute("02071234567", "extension:1000")], records={TABLE: [ACME]})
    now = datetime(2026, 12, 1, 10, 0)
    plan = route_call("02071234567", Caller("trunk", "carrier", "+447700900123", ""), config, now)
    assert isinstance(plan, Ring) and plan.caller_id_name == "Bob & <Sons> Plumbing"
    plan = route_call("02071234567", Caller("trunk", "carrier", "+447700900123", "BOB MOBILE"), config, now)
    assert plan.caller_id_name == "BOB MOBILE"                     # the trunk's own name wins
    plan = route_call("02071234567", Caller("trunk", "carrier", "07700900999", ""), config, now)
    assert plan.caller_id_name == ""


def test_csv_round_trip_with_errors_per_line_and_formulas_defused():
    text = ("Name,Company,Phone,Mobile,E-mail,Email\n"
            "Alice Smith,Acme,020 7946 0001,,,alice@example.com\n"
            ",,,,,\n"
            "No Number,Acme,,,,\n"
            "=cmd|' /C calc'!A0,Evil,0123456789,,,\n")
    contacts, errors = import_csv(text, owner="1000")
    assert [c.name for c in contacts] == ["Alice Smith", "=cmd|' /C calc'!A0"]
    assert contacts[0].work == "02079460001" and contacts[0].email == "alice@example.com"
    assert all(c.owner == "1000" for c in contacts)
    assert errors == ["line 4: work: a contact needs at least one number (work, mobile or other)"]
    out = export_csv(contacts)
    assert out.splitlines()[0] == "name,company,work,mobile,other,email"
    assert "'=cmd" in out
    again, errs = import_csv(export_csv([ACME, ALICE]))
    assert not errs and [(c.name, c.work, c.mobile) for c in again] == [(ACME.name, ACME.work, ACME.mobile),
                                                                          (ALICE.name, ALICE.work, "")]
    assert import_csv("number,mobile\n1000,\n")[1][0].startswith("line 1: no 'name' column")


def test_vcard_round_trip_through_vobject():
    text = export_vcards([ACME, ALICE])
    assert text.count("BEGIN:VCARD") == 2 and "TEL;TYPE=CELL:07700900123" in text
    back, errors = import_vcards(text)
    assert not errors
    assert [(c.name, c.company, c.work, c.mobile) for c in back] == [
        (ACME.name, "Bob's", "02079460000", "07700900123"), ("Alice Smith", "", "+441632960001", "")]
    card21 = "BEGIN:VCARD\r\nVERSION:2.1\r\nN:Jones;Carol\r\nTEL;CELL:07700 900777\r\nEND:VCARD\r\n"
    contacts, errors = import_vcards(card21 + "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:No Phone\r\nEND:VCARD\r\n")
    assert [(c.name, c.mobile) for c in contacts] == [("Carol Jones", "07700900777")]
    assert errors and errors[0].startswith("card 2 (No Phone)")
    assert import_vcards("hello")[1]


def test_yealink_directory():
    root = parse(render("yealink", [ACME, ALICE]))
    assert root.tag == "YealinkIPPhoneDirectory"
    entries = root.findall("DirectoryEntry")
    assert [e.findtext("Name") for e in entries] == [ACME.name, ALICE.name]
    assert [t.text for t in entries[0].findall("Telephone")] == ["02079460000", "07700900123"]
    assert all(child.tag in ("Name", "Telephone") for e in entries for child in e)


def test_grandstream_address_book():
    root = parse(render("grandstream", [ACME]))
    assert root.tag == "AddressBook" and root.findtext("version") == "1"
    contact = root.find("Contact")
    assert (contact.findtext("FirstName"), contact.findtext("LastName")) == ("Bob", "& <Sons> Plumbing")
    phones = contact.findall("Phone")
    assert [(p.get("type"), p.findtext("phonenumber"), p.findtext("accountindex")) for p in phones] == \
        [("Work", "02079460000", "0"), ("Mobile", "07700900123", "0")]


def test_polycom_directory():
    text = render("polycom", [ACME, ALICE])
    assert text.startswith('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>')
    root = parse(text)
    assert root.tag == "directory"
    items = root.find("item_list").findall("item")
    assert [(i.findtext("fn"), i.findtext("ln"), i.findtext("ct")) for i in items] == [
        ("Bob", "& <Sons> Plumbing", "02079460000"), ("Bob", "& <Sons> Plumbing", "07700900123"),
        ("Alice", "Smith", "+441632960001")]


def test_snom_directory():
    root = parse(render("snom", [ALICE], title="Acme"))
    assert root.tag == "SnomIPPhoneDirectory" and root.findtext("Title") == "Acme"
    assert [(e.findtext("Name"), e.findtext("Telephone")) for e in root.findall("DirectoryEntry")] == \
        [("Alice Smith", "+441632960001")]


def test_cisco_directory_pages_of_32_with_a_next_key():
    many = [Contact(f"c{i:07d}", f"Person {i:03d}", work=f"{2000 + i}") for i in range(40)]
    root = parse(render("cisco", many, title="Acme phonebook", next_url="http://pbx/phonebook/cisco.xml?page=2"))
    assert root.tag == "CiscoIPPhoneDirectory"
    assert [c.tag for c in root][:2] == ["Title", "Prompt"]
    assert len(root.findall("DirectoryEntry")) == CISCO_PAGE
    keys = {k.findtext("Name"): k.findtext("URL") for k in root.findall("SoftKeyItem")}
    assert keys == {"Dial": "SoftKey:Dial", "Exit": "SoftKey:Exit", "Next": "http://pbx/phonebook/cisco.xml?page=2"}
    last = parse(render("cisco", many, page=2, next_url="x"))
    assert len(last.findall("DirectoryEntry")) == 8 and "Next" not in [k.findtext("Name") for k in last.findall("SoftKeyItem")]


@pytest.mark.parametrize("vendor", ["yealink", "grandstream", "polycom", "snom", "cisco"])
def test_names_with_ampersand_and_angle_brackets_are_escaped(vendor):
    text = render(vendor, [ACME])
    assert "&amp; &lt;Sons&gt;" in text and "& <Sons>" not in text
    ET.fromstring(text.split("\n", 1)[1])        # well-formed


def test_phone_directory_lists_extensions_company_and_the_users_own_contacts(tmp_path):
    store = ConfigStore(tmp_path)
    store.add_extension("1000", "Reception")
    for c in (ACME, ALICE, MINE):
        store.add_record(TABLE, c)
    exts = store.extensions()
    names = [c.name for c in phonebook_entries(store.records(TABLE), exts, owner="1000")]
    assert names == ["Alice Smith", ACME.name, "Mum", "Reception"]
    assert "Mum" not in [c.name for c in phonebook_entries(store.records(TABLE), exts)]
