"""Phonebook: company contacts and each user's personal contacts, CSV and vCard in and out, the
caller's name from the phonebook, and the directory files desk phones download.

A contact is a record of the "contacts" table: a name, an optional company, up to three numbers
(work, mobile, other) and an e-mail; `owner` is "" for a company contact, or the extension
number of the user whose personal contact it is. Pure functions only (no I/O):

- `caller_name(contacts, number, country)`: the name an inbound call shows when the trunk sent
  none (company contacts; numbers compared in every written form: 07700900123 = +447700900123);
- `import_csv` / `export_csv` (columns name, company, work, mobile, other, email) and
  `import_vcards` / `export_vcards` (vCard 3.0 through the `vobject` library), each import
  returning the contacts and one error per bad line or card;
- `render(vendor, contacts, ...)` the phone's directory document: Yealink
  (YealinkIPPhoneDirectory), Grandstream (AddressBook), Polycom (directory/item_list), Snom
  (SnomIPPhoneDirectory), Cisco (CiscoIPPhoneDirectory, 32 entries a page with a Next key),
  built with ElementTree so names with & < > are escaped.
"""
from __future__ import annotations

import csv
import io
import re
import secrets
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from typing import Iterable

from firmware.config.errors import ValidationError, ValidationErrors
from firmware.config.records import Collection, RecordKind, register_records
from firmware.dialplan.inbound import e164_digits

TABLE = "contacts"
NUMBER_FIELDS = ("work", "mobile", "other")
CSV_COLUMNS = ("name", "company", "work", "mobile", "other", "email")
VENDORS = ("yealink", "grandstream", "polycom", "snom", "cisco")
CISCO_PAGE = 32                      # a CiscoIPPhoneDirectory holds at most 32 entries
MAX_IMPORT_BYTES = 900 * 1024          # under the web server's 1 MB upload limit
MAX_CONTACTS = 5000
_NUMBER_RE = re.compile(r"\+?[0-9*#]{2,20}")
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_ID_RE = re.compile(r"[a-z0-9]{4,16}")
_OWNER_RE = re.compile(r"[1-9][0-9]{1,5}")


def clean_number(number: str) -> str:
    """'07700 900-123' -> '07700900123' (the spaces, dashes, dots and brackets people write)."""
    return re.sub(r"[\s().\-/]", "", number or "")


def new_id() -> str:
    return secrets.token_hex(5)


@dataclass(frozen=True)
class Contact:
    id: str
    name: str
    company: str = ""
    work: str = ""
    mobile: str = ""
    other: str = ""
    email: str = ""
    owner: str = ""                  # "" = company contact; an extension number = that user's own

    def __post_init__(self) -> None:
        for f in NUMBER_FIELDS:
            object.__setattr__(self, f, clean_number(getattr(self, f)) if isinstance(getattr(self, f), str)
                               else getattr(self, f))
        for f in ("name", "company", "email"):
            if isinstance(getattr(self, f), str):
                object.__setattr__(self, f, getattr(self, f).strip())

    @property
    def numbers(self) -> list[tuple[str, str]]:
        """[('work', '1000'), ('mobile', '07700900123')] for the numbers it has."""
        return [(f, getattr(self, f)) for f in NUMBER_FIELDS if getattr(self, f)]

    def validate(self) -> None:
        errors = []
        if not isinstance(self.id, str) or not _ID_RE.fullmatch(self.id):
            errors.append(ValidationError("id", f"{self.id!r} is not a contact id (4-16 lower-case letters/digits)"))
        if not isinstance(self.name, str) or not self.name or len(self.name) > 60 or not self.name.isprintable():
            errors.append(ValidationError("name", "must be 1-60 printable characters"))
        if not isinstance(self.company, str) or len(self.company) > 60 or not self.company.isprintable():
            errors.append(ValidationError("company", "must be at most 60 printable characters"))
        for f in NUMBER_FIELDS:
            value = getattr(self, f)
            if value and not (isinstance(value, str) and _NUMBER_RE.fullmatch(value)):
                errors.append(ValidationError(f, f"{value!r} is not a phone number: digits with an optional "
                                                 "leading '+', e.g. 07700 900123 or +44 20 7946 0000"))
        if not any(getattr(self, f) for f in NUMBER_FIELDS):
            errors.append(ValidationError("work", "a contact needs at least one number (work, mobile or other)"))
        if self.email and not (isinstance(self.email, str) and _EMAIL_RE.fullmatch(self.email) and len(self.email) <= 100):
            errors.append(ValidationError("email", f"{self.email!r} is not an e-mail address"))
        if self.owner and not (isinstance(self.owner, str) and _OWNER_RE.fullmatch(self.owner)):
            errors.append(ValidationError("owner", f"{self.owner!r} is not an extension number"))
        if errors:
            raise ValidationErrors(errors)


CONTACTS = register_records(RecordKind(
    Collection(TABLE, Contact, key="id", noun="contact", sort_key=str)))


def company(contacts: Iterable[Contact]) -> list[Contact]:
    return sorted((c for c in contacts if not c.owner), key=lambda c: c.name.lower())


def personal(contacts: Iterable[Contact], owner: str) -> list[Contact]:
    return sorted((c for c in contacts if c.owner == owner), key=lambda c: c.name.lower())


def _forms(number: str, country: str) -> set[str]:
    n = clean_number(number)
    return {n, n.lstrip("+"), e164_digits(n, country)} - {""}


def caller_name(contacts: Iterable[Contact], number: str, country: str = "uk") -> str | None:
    """The company contact's name for a caller's number (however it is written), or None."""
    if not number or not any(ch.isdigit() for ch in number):
        return None
    wanted = _forms(number, country)
    for c in company(contacts):
        for _, n in c.numbers:
            if _forms(n, country) & wanted:
                return c.name
    return None


# --- CSV ----------------------------------------------------------------------------------------------
def import_csv(text: str, owner: str = "") -> tuple[list[Contact], list[str]]:
    """Contacts from CSV with a header row (name plus any of company, work, mobile, other, email;
    'phone'/'number' are taken as work); one error per bad line, naming the line."""
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        return [], ["the file is empty: the first line must name the columns, e.g. name,work,mobile,email"]
    header = {h.strip().lower(): h for h in reader.fieldnames if h}
    aliases = {"phone": "work", "number": "work", "telephone": "work", "cell": "mobile", "organization": "company"}
    if "name" not in header:
        return [], [f"line 1: no 'name' column (found {', '.join(reader.fieldnames)}): the first line must "
                    "name the columns, e.g. name,work,mobile,email"]
    contacts, errors = [], []
    for lineno, row in enumerate(reader, start=2):
        values = {}
        for key, original in header.items():
            field = aliases.get(key, key)
            if field in CSV_COLUMNS and (row.get(original) or "").strip():
                values[field] = row[original].strip()
        if not any(values.values()):
            continue
        contact = Contact(new_id(), values.get("name", ""), values.get("company", ""), values.get("work", ""),
                          values.get("mobile", ""), values.get("other", ""), values.get("email", ""), owner)
        try:
            contact.validate()
        except ValidationError as e:
            errors.append(f"line {lineno}: {_first(e)}")
            continue
        contacts.append(contact)
        if len(contacts) > MAX_CONTACTS:
            errors.append(f"more than {MAX_CONTACTS} contacts: split the file")
            break
    return contacts, errors


def _first(e: ValidationError) -> str:
    errs = getattr(e, "errors", [e])
    return "; ".join(f"{getattr(x, 'field', '')}: {getattr(x, 'message', str(x))}" for x in errs)


def _defuse(value: str) -> str:
    # a spreadsheet runs a cell starting with = + - @ as a formula: make it text
    return "'" + value if value[:1] in ("=", "+", "-", "@") and not re.fullmatch(r"\+[0-9]+", value) else value


def export_csv(contacts: Iterable[Contact]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(CSV_COLUMNS)
    for c in contacts:
        w.writerow([_defuse(getattr(c, f)) for f in CSV_COLUMNS])
    return out.getvalue()


# --- vCard --------------------------------------------------------------------------------------------
_TEL_TYPES = {"work": "WORK", "mobile": "CELL", "other": "VOICE"}


def export_vcards(contacts: Iterable[Contact]) -> str:
    import vobject
    cards = []
    for c in contacts:
        card = vobject.vCard()
        card.add("fn").value = c.name
        first, _, last = c.name.rpartition(" ") if " " in c.name else ("", "", c.name)
        card.add("n").value = vobject.vcard.Name(family=last, given=first)
        if c.company:
            card.add("org").value = [c.company]
        for field, number in c.numbers:
            tel = card.add("tel")
            tel.value = number
            tel.type_param = _TEL_TYPES[field]
        if c.email:
            email = card.add("email")
            email.value = c.email
            email.type_param = "INTERNET"
        cards.append(card.serialize())
    return "".join(cards)


def import_vcards(text: str, owner: str = "") -> tuple[list[Contact], list[str]]:
    """Contacts from vCard 2.1/3.0/4.0 text; TEL TYPE=CELL -> mobile, WORK -> work, else other."""
    import vobject
    contacts, errors = [], []
    try:
        cards = list(vobject.readComponents(text, ignoreUnreadable=True))
    except Exception as e:       # vobject raises ParseError and others for broken text
        return [], [f"not a vCard file: {e}"]
    if not cards:
        return [], ["no vCard (BEGIN:VCARD ... END:VCARD) in the file"]
    for i, card in enumerate(cards, start=1):
        if card.name.upper() != "VCARD":
            errors.append(f"card {i}: a {card.name}, not a VCARD")
            continue
        name = getattr(card, "fn", None)
        name = name.value if name is not None else ""
        if not name and hasattr(card, "n"):
            n = card.n.value
            name = " ".join(p for p in (n.given, n.family) if p)
        numbers = {"work": "", "mobile": "", "other": ""}
        for tel in card.contents.get("tel", []):
            # TYPE=CELL (3.0/4.0, possibly "work,voice"), or a bare CELL parameter (2.1)
            types = {t.upper() for v in tel.params.get("TYPE", []) for t in v.split(",")}
            types |= {p.upper() for p in getattr(tel, "singletonparams", [])} | {k.upper() for k in tel.params}
            field = "mobile" if "CELL" in types else "work" if "WORK" in types else "other"
            if not numbers[field]:
                numbers[field] = clean_number(tel.value)
            elif not numbers["other"]:
                numbers["other"] = clean_number(tel.value)
        org = card.contents.get("org", [])
        company_name = org[0].value[0] if org and org[0].value else ""
        email = card.contents.get("email", [])
        contact = Contact(new_id(), name, company_name, numbers["work"], numbers["mobile"], numbers["other"],
                          email[0].value if email else "", owner)
        try:
            contact.validate()
        except ValidationError as e:
            errors.append(f"card {i} ({name or 'no name'}): {_first(e)}")
            continue
        contacts.append(contact)
        if len(contacts) > MAX_CONTACTS:
            errors.append(f"more than {MAX_CONTACTS} contacts: split the file")
            break
    return contacts, errors


# --- phone directory files ------------------------------------------------------------------------
def _xml(root: ET.Element, declaration: str = '<?xml version="1.0" encoding="UTF-8"?>\n') -> str:
    ET.indent(root)
    return declaration + ET.tostring(root, encoding="unicode") + "\n"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def _split_name(name: str) -> tuple[str, str]:
    """'Alice van Dyke' -> ('Alice', 'van Dyke'); one word is the last name."""
    first, _, last = name.partition(" ")
    return (first, last) if last else ("", first)


def yealink(contacts, title: str = "") -> str:
    root = ET.Element("YealinkIPPhoneDirectory")
    for c in contacts:
        entry = _sub(root, "DirectoryEntry")
        _sub(entry, "Name", c.name)
        for _, number in c.numbers:
            _sub(entry, "Telephone", number)
    return _xml(root)


def grandstream(contacts, title: str = "") -> str:
    root = ET.Element("AddressBook")
    _sub(root, "version", "1")
    types = {"work": "Work", "mobile": "Mobile", "other": "Other"}
    for c in contacts:
        contact = _sub(root, "Contact")
        first, last = _split_name(c.name)
        _sub(contact, "LastName", last)
        _sub(contact, "FirstName", first)
        if c.company:
            _sub(contact, "Company", c.company)
        for field, number in c.numbers:
            phone = _sub(contact, "Phone", type=types[field])
            _sub(phone, "phonenumber", number)
            _sub(phone, "accountindex", "0")
    return _xml(root)


def polycom(contacts, title: str = "") -> str:
    root = ET.Element("directory")
    items = _sub(root, "item_list")
    for c in contacts:
        first, last = _split_name(c.name)
        for field, number in c.numbers:      # one item per number: <ct> holds one contact number
            item = _sub(items, "item")
            _sub(item, "ln", last)
            _sub(item, "fn", first)
            _sub(item, "ct", number)
            if len(c.numbers) > 1:
                _sub(item, "lb", f"{c.name} ({field})")
    return _xml(root, '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n')


def snom(contacts, title: str = "Phonebook") -> str:
    root = ET.Element("SnomIPPhoneDirectory")
    _sub(root, "Title", title)
    _sub(root, "Prompt", "Dial")
    for c in contacts:
        for field, number in c.numbers:
            entry = _sub(root, "DirectoryEntry")
            _sub(entry, "Name", c.name if len(c.numbers) == 1 else f"{c.name} ({field})")
            _sub(entry, "Telephone", number)
    return _xml(root)


def cisco(contacts, title: str = "Phonebook", page: int = 1, next_url: str = "") -> str:
    """One page of at most 32 entries; `next_url` (the next page's address) adds a Next soft key."""
    entries = [(c.name if len(c.numbers) == 1 else f"{c.name} ({field})", number)
               for c in contacts for field, number in c.numbers]
    start = (max(page, 1) - 1) * CISCO_PAGE
    shown = entries[start:start + CISCO_PAGE]
    root = ET.Element("CiscoIPPhoneDirectory")
    _sub(root, "Title", title[:32])
    _sub(root, "Prompt", f"Page {max(page, 1)} of {max(1, -(-len(entries) // CISCO_PAGE))}")
    for name, number in shown:
        entry = _sub(root, "DirectoryEntry")
        _sub(entry, "Name", name[:32])
        _sub(entry, "Telephone", number[:32])
    keys = [("Dial", "SoftKey:Dial"), ("Exit", "SoftKey:Exit")]
    if next_url and start + CISCO_PAGE < len(entries):
        keys.append(("Next", next_url))
    for position, (name, url) in enumerate(keys, start=1):
        key = _sub(root, "SoftKeyItem")
        _sub(key, "Name", name)
        _sub(key, "URL", url)
        _sub(key, "Position", str(position))
    return _xml(root)


RENDERERS = {"yealink": yealink, "grandstream": grandstream, "polycom": polycom, "snom": snom, "cisco": cisco}


def render(vendor: str, contacts: Iterable[Contact], title: str = "Phonebook", **kw) -> str:
    if vendor not in RENDERERS:
        raise ValueError(f"no phonebook format {vendor!r}: use one of {', '.join(VENDORS)}")
    return RENDERERS[vendor](list(contacts), title=title, **kw)


def phonebook_entries(contacts: Iterable[Contact], extensions: Iterable = (), owner: str = "") -> list[Contact]:
    """What a phone's directory lists: the extensions (by name), the company contacts and, for a
    phone's own user, their personal contacts, sorted by name."""
    entries = [Contact("ext" + e.number.zfill(4), e.name, work=e.number) for e in extensions
               if getattr(e, "enabled", True)]
    entries += company(contacts)
    if owner:
        entries += [replace(c, owner="") for c in personal(contacts, owner)]
    return sorted(entries, key=lambda c: c.name.lower())


def _name_caller(caller, config):
    return caller_name(config.table(TABLE).values(), caller.number, config.settings.country)


def _register_namer() -> None:
    from firmware.dialplan import router
    if _name_caller not in router.CALLER_NAMERS:
        router.CALLER_NAMERS.append(_name_caller)


_register_namer()
