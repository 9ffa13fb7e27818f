"""Typed configuration records and the rules a value must meet before it is stored."""
from __future__ import annotations

import ipaddress
import re
import secrets
import zoneinfo
from dataclasses import dataclass, field, fields

from .errors import ValidationError, ValidationErrors
from .destination import coerce_destination, destination_errors

# 2-6 digits, no leading 0 (reserved for the operator/outside line) and no '*' (feature codes).
_NUMBER_RE = re.compile(r"[1-9][0-9]{1,5}")
_HOST_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
NAME_MAX = 40
SECRET_MIN = 12
SECRET_MAX = 64
COUNTRIES = ("uk", "us")
MODES = ("day", "night")


def generate_secret() -> str:
    """A SIP digest password nobody has to type: 18 random bytes -> 24 URL-safe characters.

    Never one starting with '-': pasted into `pbx ext add --secret ...` (or any command line) it
    would be taken for an option. Never one starting with "0x" or "0X": SIPp reads such a password
    as a hexadecimal key and answers every challenge wrongly (1 extension in about 2,000).
    """
    while True:
        secret = secrets.token_urlsafe(18)
        # all-digit is astronomically unlikely, but the rule is the rule
        if not secret.isdigit() and not secret.startswith(("-", "0x", "0X")):
            return secret


def _name_errors(field: str, value: object) -> list[ValidationError]:
    if not isinstance(value, str):
        return [ValidationError(field, f"must be text, got {type(value).__name__}")]
    if not value:
        return [ValidationError(field, "must not be empty")]
    if len(value) > NAME_MAX:
        return [ValidationError(field, f"is {len(value)} characters; shorten it to at most {NAME_MAX}")]
    if not value.isprintable():
        return [ValidationError(field, "contains control or non-printable characters; use plain text")]
    return []


def number_errors(number: object) -> list[ValidationError]:
    if not isinstance(number, str):
        return [ValidationError("number", f"must be a string of 2-6 digits such as '1000', got {number!r}")]
    if not _NUMBER_RE.fullmatch(number):
        return [ValidationError(
            "number", f"'{number}' is not 2-6 digits starting with 1-9 (0 and * are for outside lines and feature codes)")]
    return []


def secret_errors(secret: object, number: object) -> list[ValidationError]:
    if not isinstance(secret, str):
        return [ValidationError("secret", f"must be text, got {type(secret).__name__}")]
    errors = []
    if len(secret) < SECRET_MIN:
        errors.append(ValidationError(
            "secret", f"is {len(secret)} characters; use at least {SECRET_MIN}, or leave it out to have one generated"))
    if len(secret) > SECRET_MAX:
        errors.append(ValidationError("secret", f"is {len(secret)} characters; use at most {SECRET_MAX}"))
    if secret.isdigit():
        # SIP scanners try digit-only passwords first (toll-fraud brute force).
        errors.append(ValidationError("secret", "must not be all digits; mix in letters"))
    if secret == number:
        errors.append(ValidationError("secret", "must not be the extension number"))
    if any(c.isspace() or not c.isprintable() for c in secret):
        errors.append(ValidationError("secret", "must not contain spaces or control characters"))
    return errors


@dataclass(frozen=True)
class Extension:
    """A SIP endpoint users dial by number; `secret` is its digest-auth password.

    dnd and the forwards are the user's own call handling (feature codes *78/*79, *72/*73,
    *90/*91, *52/*53): a forward is a destination string ("extension:1001",
    "external:07700900123") or "" for none. `external_caller_id` is the number shown to outside
    callees when this extension dials out (it wins over the outbound route's caller ID).
    """
    number: str
    name: str
    secret: str
    enabled: bool = True
    dnd: bool = False
    forward_always: str = ""
    forward_busy: str = ""
    forward_no_answer: str = ""
    external_caller_id: str = ""
    department: str = ""           # for reports: calls and cost per department ("" = none)

    def __post_init__(self) -> None:
        for name in FORWARDS:    # a bare extension number is the shorthand for "extension:NUMBER"
            object.__setattr__(self, name, coerce_destination(getattr(self, name)))

    def __repr__(self) -> str:
        # Secrets end up in logs through repr() (f"{ext!r}", tracebacks, debuggers): never show them.
        return f"Extension(number={self.number!r}, name={self.name!r}, secret='***', enabled={self.enabled!r})"

    __str__ = __repr__

    def validate(self) -> None:
        """Raise ValidationErrors listing every field that breaks the rules."""
        errors = number_errors(self.number) + _name_errors("name", self.name)
        errors += secret_errors(self.secret, self.number)
        for flag in ("enabled", "dnd"):
            if not isinstance(getattr(self, flag), bool):
                errors.append(ValidationError(flag, f"must be true or false, got {getattr(self, flag)!r}"))
        errors += forward_errors(self)
        errors += caller_id_errors("external_caller_id", self.external_caller_id)
        if self.department != "":
            errors += _name_errors("department", self.department)
        if errors:
            raise ValidationErrors(errors)


FORWARDS = ("forward_always", "forward_busy", "forward_no_answer")
_CALLER_ID_RE = re.compile(r"\+?[0-9]{1,20}")


def forward_errors(ext: "Extension") -> list[ValidationError]:
    """Each forward is empty or a destination an extension may forward to, never itself."""
    errors = []
    for name in FORWARDS:
        value = getattr(ext, name)
        problems = destination_errors(name, value, forward=True, optional=True)
        if not problems and value == f"extension:{ext.number}":
            problems = [ValidationError(name, f"forwards extension {ext.number} to itself: pick another "
                                               "destination or clear it")]
        errors += problems
    return errors


def caller_id_errors(field: str, value: object) -> list[ValidationError]:
    """An outgoing caller ID number: empty (the default applies) or digits with an optional '+'."""
    if not isinstance(value, str) or (value and not _CALLER_ID_RE.fullmatch(value)):
        return [ValidationError(field, f"{value!r} is not a phone number: digits with an optional leading "
                                       "'+', at most 20 (e.g. +442071234567), or empty for the default")]
    return []


def _int_errors(field: str, value: object, low: int, high: int, unit: str) -> list[ValidationError]:
    if isinstance(value, bool) or not isinstance(value, int):
        return [ValidationError(field, f"must be a whole number of {unit}, got {value!r}")]
    if not low <= value <= high:
        return [ValidationError(field, f"is {value}; choose {low} to {high} {unit}")]
    return []


def _host_errors(field: str, value: object) -> list[ValidationError]:
    if not isinstance(value, str):
        return [ValidationError(field, f"must be text, got {type(value).__name__}")]
    if value == "":
        return []
    try:
        ipaddress.ip_address(value.strip("[]"))
        return []
    except ValueError:
        pass
    labels = value.rstrip(".").split(".")
    if len(value) > 253 or not all(_HOST_LABEL_RE.fullmatch(label) for label in labels):
        return [ValidationError(field, f"'{value}' is not a host name or IP address (e.g. pbx.example.com)")]
    return []


@dataclass(frozen=True)
class Settings:
    """Site-wide settings: one record per box."""
    site_name: str = "Office PBX"
    country: str = "uk"            # "uk"|"us": tones and ring cadences
    no_answer_timeout: int = 30    # seconds, 5..300
    busy_tone_seconds: int = 4     # busy/announcement time before the final response, 0..30
    timezone: str = "UTC"
    sip_domain: str = ""           # what phones put after @; empty = the box's SIP address
    mode: str = "day"              # "day"|"night": toggled by *33 and the panel button
    record_calls: bool = False     # record both sides of every answered call to DATA/recordings
    recording_retention_days: int = 0   # recordings older than this many days are deleted; 0 keeps them
    recording_max_disk_percent: int = 0  # the oldest recordings go while the disk is fuller; 0 = no limit
    # Outgoing mail (voicemail to e-mail, alerts); an empty smtp_host means the box sends no mail.
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_user: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_from: str = ""
    smtp_tls: str = "starttls"          # "starttls" (port 587), "tls" (port 465) or "none"
    # LAN networks/addresses ("192.0.2.0/24") whose phones share one address (NAT) or that carry a
    # SIP peer: the edge exempts them from the per-address flood limit (per-account limits still apply)
    trusted_networks: tuple = ()

    def validate(self) -> None:
        """Raise ValidationErrors listing every setting that breaks the rules."""
        errors = _name_errors("site_name", self.site_name)
        if self.country not in COUNTRIES:
            errors.append(ValidationError("country", f"{self.country!r} is not one of {', '.join(COUNTRIES)}"))
        errors += _int_errors("no_answer_timeout", self.no_answer_timeout, 5, 300, "seconds")
        errors += _int_errors("busy_tone_seconds", self.busy_tone_seconds, 0, 30, "seconds")
        errors += _timezone_errors(self.timezone)
        errors += _host_errors("sip_domain", self.sip_domain)
        if self.mode not in MODES:
            errors.append(ValidationError("mode", f"{self.mode!r} is not one of {', '.join(MODES)}"))
        if not isinstance(self.record_calls, bool):
            errors.append(ValidationError("record_calls", f"must be true or false, got {self.record_calls!r}"))
        errors += _int_errors("recording_retention_days", self.recording_retention_days, 0, 3650, "days")
        errors += _int_errors("recording_max_disk_percent", self.recording_max_disk_percent, 0, 99, "percent")
        errors += smtp_errors(self)
        errors += _network_list_errors("trusted_networks", self.trusted_networks)
        if errors:
            raise ValidationErrors(errors)


def _network_list_errors(field: str, value: object) -> list[ValidationError]:
    if not isinstance(value, (list, tuple)):
        return [ValidationError(field, f"must be a list of IPv4 addresses or networks, got {value!r}")]
    for item in value:
        try:
            ipaddress.IPv4Network(item, strict=False)
        except (ValueError, TypeError):
            return [ValidationError(field, f"{item!r} is not an IPv4 address or network (e.g. '192.0.2.0/24')")]
    return []


SMTP_TLS = ("starttls", "tls", "none")
_EMAIL_RE = re.compile(r"[^@\s<>\"]{1,64}@[A-Za-z0-9.-]{1,253}")


class SecretText(str):
    """A password kept as plain text but printed as '***' (settings changes are logged with repr)."""

    def __repr__(self) -> str:
        return "'***'"


def smtp_errors(s: "Settings") -> list[ValidationError]:
    errors = _host_errors("smtp_host", s.smtp_host)
    errors += _int_errors("smtp_port", s.smtp_port, 1, 65535, "(a TCP port)")
    if s.smtp_tls not in SMTP_TLS:
        errors.append(ValidationError("smtp_tls", f"{s.smtp_tls!r} is not one of {', '.join(SMTP_TLS)}"))
    for name in ("smtp_user", "smtp_password"):
        value = getattr(s, name)
        if not isinstance(value, str) or len(value) > 128 or not value.isprintable():
            errors.append(ValidationError(name, "must be plain text of at most 128 characters"))
    if not isinstance(s.smtp_from, str) or (s.smtp_from and not _EMAIL_RE.fullmatch(s.smtp_from)):
        errors.append(ValidationError("smtp_from", f"{s.smtp_from!r} is not an e-mail address such as "
                                                   "pbx@example.com"))
    elif s.smtp_host and not s.smtp_from:
        errors.append(ValidationError("smtp_from", "mail needs a sender address, e.g. pbx@example.com"))
    if s.smtp_password and not s.smtp_user:
        errors.append(ValidationError("smtp_user", "a password needs the user name it belongs to"))
    return errors


def _timezone_errors(value: object) -> list[ValidationError]:
    if not isinstance(value, str) or not value:
        return [ValidationError("timezone", f"must be a zone name such as 'Europe/London', got {value!r}")]
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return [ValidationError("timezone", f"unknown time zone {value!r}; use a name such as 'Europe/London'")]
    return []


SETTING_NAMES = tuple(f.name for f in fields(Settings))


def normalize_name(value: object) -> object:
    """Names are compared and shown without surrounding blanks."""
    return value.strip() if isinstance(value, str) else value
