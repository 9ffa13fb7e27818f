"""Phones that configure themselves: enrolled desk phones and the files they fetch (issue 17).

A phone is enrolled by its MAC address and tied to an extension (`Phone`). It fetches its files
from its own URL, https://<box>/prov/<token>/<file>, with its own user name and password: the
token and credentials are random per phone, so knowing (or guessing) a MAC gets nothing, and
"re-provision" rotates them together with the extension's SIP secret.

What the files say is layered: the box's defaults < the vendor's profile < the phone's own
settings (`effective_settings`), then rendered from a template per vendor (Jinja2 with XML
autoescaping for the XML formats; the key=value formats refuse values containing a line break,
which could otherwise inject keys). Pure: `render(phone, context)` takes everything it needs
(the extension, the box's SIP address, the time zone, colleagues for BLF keys...) as arguments.

Vendors and the files their phones ask for (../shared/notes/provisioning-webrtc.md):
    yealink      <mac>.cfg                    "#!version:1.0.0.1" + key = value
    grandstream  cfg<mac>.xml                 <gs_provision> P-values
    poly         <mac>.cfg -> <mac>-pbx.cfg   master file naming the config file (XML)
    snom         <MAC>.xml, snom<model>-<MAC>.htm   <settings><phone-settings>
    fanvil       <mac>.cfg                    <sysConf> XML
    cisco        <mac>.xml                    <flat-profile> (SPA / MPP 3PCC)
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote
from zoneinfo import ZoneInfo

from firmware.config.errors import ValidationError, ValidationErrors
from firmware.config.records import Collection, RecordKind, Ref, register_records

if TYPE_CHECKING:
    import jinja2

TABLE = "phones"
PROFILES = "provisioning_profiles"
MAC_RE = re.compile(r"[0-9a-f]{12}")
VENDORS = {
    "yealink": "Yealink T4x/T5x",
    "grandstream": "Grandstream GXP/GRP",
    "poly": "Poly VVX",
    "snom": "Snom D7xx",
    "fanvil": "Fanvil",
    "cisco": "Cisco SPA/MPP (3PCC)",
}
TRANSPORTS = ("udp", "tcp", "tls")
LANGUAGES = ("en-GB", "en-US", "de-DE", "fr-FR", "es-ES", "it-IT", "nl-NL")
# the settings a layer may set, with their defaults (the box's layer)
DEFAULTS = {
    "transport": "udp",
    "language": "en-GB",
    "ntp_server": "pool.ntp.org",
    "blf_colleagues": "yes",        # a BLF key for each other extension (up to MAX_KEYS)
    # more BLF keys, comma-separated: the day/night lamp and the first park slots of the box's
    # default parking lot (700, slots 701-720); change them here if those codes were changed
    "blf_extra": "*33, 701, 702, 703",
    "voicemail_number": "*97",
    "phonebook": "yes",
    "http_allowed": "no",           # may this phone fetch over plain HTTP (old firmware, self-signed)
}
MAX_KEYS = 30
_SAFE_VALUE = re.compile(r"[^\r\n\x00]*")


def normalize_mac(text: str) -> str:
    """'00:15:65:AB:CD:EF', '0015.65ab.cdef', '001565abcdef' -> '001565abcdef' (ValueError otherwise)."""
    mac = re.sub(r"[\s:.\-]", "", str(text)).lower()
    if not MAC_RE.fullmatch(mac):
        raise ValueError(f"{text!r} is not a MAC address: 12 hex digits, e.g. 00:15:65:ab:cd:ef")
    return mac


def new_token() -> str:
    return secrets.token_urlsafe(16)          # 128 bits: the phone's URL cannot be guessed


def new_password() -> str:
    return secrets.token_urlsafe(15)


def _settings_errors(field_name: str, settings: object) -> list[ValidationError]:
    if not isinstance(settings, dict):
        return [ValidationError(field_name, "must be an object of setting: value")]
    errors = []
    for key, value in settings.items():
        if key not in DEFAULTS:
            errors.append(ValidationError(f"{field_name}.{key}", f"unknown setting; known: {', '.join(DEFAULTS)}"))
        elif not isinstance(value, str) or not _SAFE_VALUE.fullmatch(value) or len(value) > 200:
            errors.append(ValidationError(f"{field_name}.{key}", "must be one line of text (at most 200 characters)"))
        elif key == "transport" and value not in TRANSPORTS:
            errors.append(ValidationError(f"{field_name}.{key}", f"use one of {', '.join(TRANSPORTS)}"))
        elif key == "language" and value not in LANGUAGES:
            errors.append(ValidationError(f"{field_name}.{key}", f"use one of {', '.join(LANGUAGES)}"))
        elif key in ("blf_colleagues", "phonebook", "http_allowed") and value not in ("yes", "no"):
            errors.append(ValidationError(f"{field_name}.{key}", "use yes or no"))
    return errors


@dataclass(frozen=True)
class Phone:
    """An enrolled desk phone. `approved` is False for one discovered by plug-and-play and not
    yet accepted by the admin: it gets nothing until then."""
    mac: str
    vendor: str
    extension: str
    model: str = ""
    label: str = ""
    token: str = field(default_factory=new_token)
    username: str = field(default_factory=lambda: "ph" + secrets.token_hex(5))
    password: str = field(default_factory=new_password)
    admin_password: str = field(default_factory=new_password)   # the phone's own web page
    approved: bool = True
    settings: dict = field(default_factory=dict)

    def validate(self) -> None:
        errors = []
        if not isinstance(self.mac, str) or not MAC_RE.fullmatch(self.mac):
            errors.append(ValidationError("mac", f"{self.mac!r} is not a MAC address in 12 lower-case hex digits"))
        if self.vendor not in VENDORS:
            errors.append(ValidationError("vendor", f"{self.vendor!r}: use one of {', '.join(VENDORS)}"))
        for name in ("model", "label"):
            value = getattr(self, name)
            if not isinstance(value, str) or len(value) > 40 or not _SAFE_VALUE.fullmatch(value):
                errors.append(ValidationError(name, "must be one line of text, at most 40 characters"))
        for name in ("token", "username", "password", "admin_password"):
            value = getattr(self, name)
            if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_\-]{8,64}", value):
                errors.append(ValidationError(name, "must be 8-64 letters, digits, - or _ (leave it out to have one made)"))
        errors += _settings_errors("settings", self.settings)
        if errors:
            raise ValidationErrors(errors)

    def rotated(self) -> "Phone":
        """The same phone with a new URL, new credentials and a new admin password."""
        from dataclasses import replace
        return replace(self, token=new_token(), password=new_password(), admin_password=new_password())


@dataclass(frozen=True)
class Profile:
    """The settings of one layer: scope "global" (the box) or a vendor name."""
    scope: str
    settings: dict = field(default_factory=dict)

    def validate(self) -> None:
        errors = []
        if self.scope != "global" and self.scope not in VENDORS:
            errors.append(ValidationError("scope", f"{self.scope!r}: use 'global' or a vendor ({', '.join(VENDORS)})"))
        errors += _settings_errors("settings", self.settings)
        if errors:
            raise ValidationErrors(errors)


PHONES = register_records(RecordKind(
    Collection(TABLE, Phone, key="mac", noun="phone"),
    references=lambda p: [Ref("extension", "extensions", p.extension)]))
PROFILE_RECORDS = register_records(RecordKind(Collection(PROFILES, Profile, key="scope", noun="provisioning profile")))


def effective_settings(phone: Phone, profiles: dict[str, Profile]) -> dict[str, str]:
    """Box defaults < global profile < vendor profile < the phone's own settings."""
    merged = dict(DEFAULTS)
    for scope in ("global", phone.vendor):
        if scope in profiles:
            merged.update(profiles[scope].settings)
    merged.update(phone.settings)
    return merged


# ----- rendering -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Account:
    number: str
    name: str
    secret: str


@dataclass(frozen=True)
class BoxFacts:
    """What the files need to know about the box."""
    sip_host: str                 # the address or domain phones register to
    sip_port: int
    sip_tls_port: int
    base_url: str                 # https://box[:port] (no trailing slash)
    timezone: str = "UTC"
    now: datetime | None = None   # for the time zone's current offset
    backup_host: str = ""         # the remote standby (failover, `pbx ha set --remote`): the phones'
                                  # second registrar where the vendor has one (Yealink, Poly, Cisco, Grandstream)


def files_of(phone: Phone) -> list[str]:
    """The file names this phone asks for, the first being its main configuration."""
    mac, mac_up = phone.mac, phone.mac.upper()
    return {
        "yealink": [f"{mac}.cfg"],
        "grandstream": [f"cfg{mac}.xml"],
        "poly": [f"{mac}.cfg", f"{mac}-pbx.cfg"],
        "snom": [f"{mac_up}.xml", f"snom{phone.model or 'D785'}-{mac_up}.htm"],
        "fanvil": [f"{mac}.cfg"],
        "cisco": [f"{mac}.xml"],
    }[phone.vendor]


def wants_file(phone: Phone, filename: str) -> bool:
    """Is `filename` one of this phone's files? Snom's model part and the MAC's case may differ."""
    if filename in files_of(phone):
        return True
    return (phone.vendor == "snom" and re.fullmatch(rf"snom[A-Za-z0-9]+-{phone.mac}\.htm", filename, re.I) is not None) \
        or filename.lower() in (f.lower() for f in files_of(phone))


def _env() -> jinja2.Environment:
    import jinja2       # here, not at import: 9 MB a process needs only when a phone fetches its files
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).with_name("provisioning_templates")),
                             autoescape=lambda name: bool(name) and name.endswith(".xml.j2"),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["kv"] = _key_value
    return env


def _key_value(value) -> str:
    """A value for a key = value line: a line break would start a new key, so it is refused."""
    text = str(value)
    if not _SAFE_VALUE.fullmatch(text):
        raise ValueError(f"value {text[:20]!r}... holds a line break: refused (it could inject settings)")
    return text


_ENV: jinja2.Environment | None = None


def render(phone: Phone, filename: str, account: Account, box: BoxFacts, settings: dict[str, str],
           colleagues: list[tuple[str, str]]) -> tuple[str, str]:
    """(content type, text) of `filename` for `phone`. `colleagues`: (number, name) of the other
    extensions, for BLF keys."""
    global _ENV
    if _ENV is None:
        _ENV = _env()
    files = files_of(phone)
    template = {
        "yealink": "yealink.cfg", "grandstream": "grandstream.xml", "snom": "snom.xml",
        "fanvil": "fanvil.xml", "cisco": "cisco.xml",
        "poly": "poly-master.xml" if filename.lower() == files[0].lower() else "poly.xml",
    }[phone.vendor]
    blf = []
    if settings["blf_colleagues"] == "yes":
        blf += [(n, name) for n, name in colleagues if n != account.number]
    blf += [(t.strip(), t.strip()) for t in settings["blf_extra"].split(",") if t.strip()]
    zone = ZoneInfo(box.timezone)
    now = (box.now or datetime.now(zone)).astimezone(zone)
    offset_s = int(now.utcoffset().total_seconds())
    transport = settings["transport"]
    text = _ENV.get_template(template + ".j2").render(
        phone=phone, account=account, box=box, settings=settings, blf=blf[:MAX_KEYS],
        transport=transport, sip_port=box.sip_tls_port if transport == "tls" else box.sip_port,
        tz_name=box.timezone, tz_offset_s=offset_s, tz_offset_h=_hours(offset_s), tz_posix=posix_tz(box.timezone),
        tz_gmt="GMT{}{:02d}:{:02d}".format("+" if offset_s >= 0 else "-", abs(offset_s) // 3600,
                                          abs(offset_s) % 3600 // 60),
        phonebook_url=phonebook_url(phone, account, box),
        files=files)
    content_type = "text/plain" if template.endswith(".cfg") else "application/xml"
    return content_type, text


# the company phone book's format per vendor (webui/phonebook serves /phonebook/<format>.xml);
# Fanvil phones have no documented XML phone book format there: they get none
PHONEBOOK_FORMATS = {"yealink": "yealink", "grandstream": "grandstream", "poly": "polycom", "snom": "snom",
                     "cisco": "cisco"}


def phonebook_url(phone: Phone, account: Account, box: BoxFacts) -> str:
    """The phone book address, logging in as the phone's own extension (the same credentials the
    file already carries for SIP); "" for a vendor without a phone book format."""
    fmt = PHONEBOOK_FORMATS.get(phone.vendor)
    if fmt is None:
        return ""
    scheme, _, rest = box.base_url.partition("://")
    return f"{scheme}://{quote(account.number, safe='')}:{quote(account.secret, safe='')}@{rest}/phonebook/{fmt}.xml"


def _hours(offset_s: int) -> str:
    sign = "+" if offset_s >= 0 else "-"
    h, rem = divmod(abs(offset_s), 3600)
    return f"{sign}{h}" + (f":{rem // 60:02d}" if rem else "")


def posix_tz(name: str) -> str:
    """The POSIX TZ string of a zone (the footer of its TZif file: 'GMT0BST,M3.5.0/1,M10.5.0'),
    which Grandstream phones take; 'UTC0' when the zone file has none."""
    for base in ("/usr/share/zoneinfo",):
        try:
            data = (Path(base) / name).read_bytes()
        except OSError:
            continue
        if data[:4] == b"TZif" and data[4:5] in (b"2", b"3", b"4"):
            footer = data.rstrip(b"\n").rsplit(b"\n", 1)[-1]
            text = footer.decode("ascii", "replace").strip()
            if text:
                return text
    return "UTC0"


# ----- plug-and-play (SIP multicast SUBSCRIBE Event: ua-profile) -------------------------------------
PNP_GROUP = "224.0.1.75"


def pnp_mac(request_uri: str, from_header: str = "") -> str | None:
    """The MAC a PnP SUBSCRIBE names: 'sip:MAC%3a001565abcdef@224.0.1.75' (Snom, Yealink,
    Fanvil), or a From user made of the MAC (Grandstream); None when there is none."""
    for text in (request_uri, from_header):
        m = re.search(r"MAC(?:%3a|:)([0-9a-fA-F]{12})", text, re.I)
        if m:
            return m.group(1).lower()
    m = re.search(r"sip:([0-9a-fA-F]{12})@", from_header)
    return m.group(1).lower() if m else None


def provisioning_url(phone: Phone, base_url: str, with_credentials: bool = True) -> str:
    """The URL to give the phone (typed into it, sent by PnP): its own folder, with its own
    credentials in the URL (user:password@), which every vendor listed here accepts."""
    scheme, _, rest = base_url.partition("://")
    auth = f"{phone.username}:{phone.password}@" if with_credentials else ""
    return f"{scheme}://{auth}{rest}/prov/{phone.token}/"


def pnp_answer(mac: str | None, phones: dict[str, Phone], base_url: str) -> str | None:
    """The provisioning URL to send a PnP request for `mac`, or None: unknown and not yet
    approved MACs get nothing (a LAN host must not learn another phone's URL, and a phone
    nobody enrolled must not be configured by whoever answers first)."""
    phone = phones.get(mac or "")
    if phone is None or not phone.approved:
        return None
    return provisioning_url(phone, base_url)
