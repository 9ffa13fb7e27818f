"""SIP trunks, inbound routes (DID -> destination) and outbound routes (dial pattern -> trunk).

Dial patterns follow Asterisk's syntax so that admins can paste what they know: a pattern starts
with '_' and uses X (0-9), Z (1-9), N (2-9), [1-5] / [135] character classes, '.' (one or more
of anything) and '!' (zero or more) at the end; without '_' it is a literal number.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache

from .collection import Collection
from .errors import ValidationError, ValidationErrors
from .destination import Destination, coerce_destination, destination_errors
from .model import NAME_MAX, SECRET_MAX, caller_id_errors, number_errors

TRANSPORTS = ("udp", "tcp", "tls")
_SLUG_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_HOST_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_DID_RE = re.compile(r"\+?[0-9]{1,20}")
_DIGITS_RE = re.compile(r"[0-9*#+]{0,20}")
_CREDENTIAL_RE = re.compile(r"[!-~]*")   # printable ASCII, no spaces: what SIP digest carries safely
PATTERN_MAX = 40


def _slug_errors(field: str, value: object, noun: str) -> list[ValidationError]:
    if not isinstance(value, str) or not _SLUG_RE.fullmatch(value):
        return [ValidationError(field, f"{noun} name {value!r}: use 1-32 lower-case letters, digits, '-' "
                                       "or '_', starting with a letter (e.g. 'carrier-1')")]
    return []


def split_host_port(value: str) -> tuple[str, int | None]:
    """'sip.example.com:5080' -> ('sip.example.com', 5080); '[2001:db8::1]:5060' for IPv6."""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ValueError("text after ']'")
        return host, int(rest[1:]) if rest else None
    if value.count(":") == 1:
        host, port = value.split(":")
        return host, int(port)
    return value, None


def host_errors(field: str, value: object) -> list[ValidationError]:
    hint = "use host, host:port or [IPv6]:port, e.g. sip.carrier.net or 203.0.113.5:5060"
    if not isinstance(value, str) or not value:
        return [ValidationError(field, f"is empty: {hint}")]
    try:
        host, port = split_host_port(value)
    except ValueError:
        return [ValidationError(field, f"'{value}' has a bad port: {hint}")]
    if port is not None and not 1 <= port <= 65535:
        return [ValidationError(field, f"port {port} is outside 1-65535")]
    try:
        ipaddress.ip_address(host)
        return []
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if (not host or len(host) > 253 or not all(_HOST_LABEL_RE.fullmatch(x) for x in labels)
            or labels[-1].isdigit()):
        return [ValidationError(field, f"'{value}' is not a host name or IP address: {hint}")]
    return []


@lru_cache(maxsize=512)
def _pattern_regex(pattern: str) -> re.Pattern:
    """Translate an Asterisk pattern to a regex; raises ValueError naming the bad character."""
    if not pattern.startswith("_"):
        if not re.fullmatch(r"[0-9*#+]+", pattern):
            raise ValueError(f"'{pattern}' is neither a number (digits, * # +) nor a pattern "
                             "starting with '_' (e.g. _9NXXXXXX)")
        return re.compile(re.escape(pattern))
    body, out, i = pattern[1:], [], 0
    if not body:
        raise ValueError("'_' alone matches nothing: add digits or X/N/Z after it, e.g. _9X.")
    while i < len(body):
        c = body[i]
        upper = c.upper()
        if c in "0123456789*#+":
            out.append(re.escape(c))
        elif upper == "X":
            out.append("[0-9]")
        elif upper == "Z":
            out.append("[1-9]")
        elif upper == "N":
            out.append("[2-9]")
        elif c in ".!":
            if i != len(body) - 1:
                raise ValueError(f"'{c}' at position {i + 2} of '{pattern}' must be the last character")
            out.append(".+" if c == "." else ".*")
        elif c == "[":
            end = body.find("]", i)
            inner = body[i + 1:end] if end > 0 else ""
            if end < 0 or not inner or not re.fullmatch(r"[0-9](?:-[0-9])?(?:[0-9](?:-[0-9])?)*", inner):
                raise ValueError(f"bad character class at position {i + 2} of '{pattern}': "
                                 "write digits and ranges inside brackets, e.g. [1-5] or [135]")
            for a, b in re.findall(r"([0-9])-([0-9])", inner):
                if a > b:
                    raise ValueError(f"range {a}-{b} in '{pattern}' runs backwards: write {b}-{a}")
            out.append(f"[{inner}]")
            i = end
        else:
            raise ValueError(f"'{c}' at position {i + 2} of '{pattern}' is not allowed: use digits, * # +, "
                             "X (0-9), Z (1-9), N (2-9), [1-5], and . or ! at the end")
        i += 1
    return re.compile("".join(out))


def pattern_errors(field: str, pattern: object) -> list[ValidationError]:
    if not isinstance(pattern, str) or not pattern:
        return [ValidationError(field, "is empty: give a number or a pattern such as _9NXXXXXX")]
    if len(pattern) > PATTERN_MAX:
        return [ValidationError(field, f"is {len(pattern)} characters; use at most {PATTERN_MAX}")]
    try:
        _pattern_regex(pattern)
    except ValueError as e:
        return [ValidationError(field, str(e))]
    return []


def pattern_matches(pattern: str, number: str) -> bool:
    """True when the dialled number matches the whole pattern (Asterisk semantics)."""
    return _pattern_regex(pattern).fullmatch(number) is not None


@dataclass(frozen=True)
class Trunk:
    """A SIP provider account (or another PBX) that carries calls to and from the outside."""
    name: str
    host: str                       # host[:port] of the provider's registrar/proxy
    username: str = ""
    secret: str = ""
    register: bool = True           # send REGISTER so the provider knows where to send our DIDs
    transport: str = "udp"

    def __repr__(self) -> str:
        return (f"Trunk(name={self.name!r}, host={self.host!r}, username={self.username!r}, secret='***', "
                f"register={self.register!r}, transport={self.transport!r})")

    __str__ = __repr__

    def validate(self) -> None:
        errors = _slug_errors("name", self.name, "trunk") + host_errors("host", self.host)
        for field in ("username", "secret"):
            value = getattr(self, field)
            if not isinstance(value, str) or len(value) > SECRET_MAX or not _CREDENTIAL_RE.fullmatch(value):
                errors.append(ValidationError(field, f"use at most {SECRET_MAX} printable characters, no spaces"))
        if not isinstance(self.register, bool):
            errors.append(ValidationError("register", f"must be true or false, got {self.register!r}"))
        elif self.register and not (self.username and self.secret):
            errors.append(ValidationError(
                "username" if not self.username else "secret",
                "registration needs the user name and password the provider gave you "
                "(or turn registration off for an IP-authenticated trunk)"))
        if self.transport not in TRANSPORTS:
            errors.append(ValidationError("transport", f"{self.transport!r} is not one of {', '.join(TRANSPORTS)}"))
        if errors:
            raise ValidationErrors(errors)


@dataclass(frozen=True)
class InboundRoute:
    """Calls arriving for this DID (the number the provider sends) go to `destination`, a typed
    destination string ("extension:1000", "external:07700900123", "hangup"; see destination.py).

    The DID matches with or without a leading '+'. With `match_national` it also matches the
    other written forms of the same number in the office's country (02071234567, 442071234567,
    +442071234567, 00442071234567), for providers that send a different form than the one entered.
    """
    did: str
    destination: str
    name: str = ""
    match_national: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "destination", coerce_destination(self.destination))

    @property
    def target(self) -> Destination:
        return Destination.parse(self.destination)

    def validate(self) -> None:
        errors = []
        if not isinstance(self.did, str) or not _DID_RE.fullmatch(self.did):
            errors.append(ValidationError("did", f"{self.did!r} is not a phone number: digits with an optional "
                                                 "leading '+', at most 20 (e.g. +442071234567)"))
        if not isinstance(self.destination, str) or not self.destination:
            errors.append(ValidationError("destination", "choose where these calls go, e.g. extension:1000"))
        else:
            errors += destination_errors("destination", self.destination)
        if not isinstance(self.name, str) or len(self.name) > NAME_MAX or not self.name.isprintable():
            errors.append(ValidationError("name", f"use at most {NAME_MAX} printable characters"))
        if not isinstance(self.match_national, bool):
            errors.append(ValidationError("match_national", f"must be true or false, got {self.match_national!r}"))
        if errors:
            raise ValidationErrors(errors)


@dataclass(frozen=True)
class OutboundRoute:
    """Dialled numbers matching `pattern` leave through `trunk`, or `fallback_trunk` if it fails.

    `extensions` lists the extensions allowed to use the route (empty: every extension);
    `caller_id` is the number shown to the callee unless the calling extension has its own
    external_caller_id. Routes are tried in name order (name them 10-local, 20-national... to
    order them); emergency numbers ignore `extensions` (firmware/dialplan/outbound.py).
    """
    name: str
    pattern: str
    trunk: str
    fallback_trunk: str = ""
    strip: int = 0                  # leading digits removed first (e.g. the 9 for an outside line)
    prepend: str = ""               # then this is put in front (e.g. a country code)
    caller_id: str = ""
    extensions: tuple = ()

    def __post_init__(self) -> None:
        if isinstance(self.extensions, list):      # JSON gives lists; keep the record hashable
            object.__setattr__(self, "extensions", tuple(self.extensions))

    def allows(self, extension: str) -> bool:
        """May this extension dial out through the route?"""
        return not self.extensions or extension in self.extensions

    def validate(self) -> None:
        errors = _slug_errors("name", self.name, "route") + pattern_errors("pattern", self.pattern)
        if not isinstance(self.trunk, str) or not self.trunk:
            errors.append(ValidationError("trunk", "choose the trunk these calls use"))
        if not isinstance(self.fallback_trunk, str):
            errors.append(ValidationError("fallback_trunk", "must be a trunk name or empty"))
        elif self.fallback_trunk and self.fallback_trunk == self.trunk:
            errors.append(ValidationError("fallback_trunk", "is the same as the first trunk: pick another or none"))
        if isinstance(self.strip, bool) or not isinstance(self.strip, int) or not 0 <= self.strip <= 20:
            errors.append(ValidationError("strip", f"must be a whole number of digits 0-20, got {self.strip!r}"))
        if not isinstance(self.prepend, str) or not _DIGITS_RE.fullmatch(self.prepend):
            errors.append(ValidationError("prepend", "use at most 20 digits, * # or +"))
        errors += caller_id_errors("caller_id", self.caller_id)
        if not isinstance(self.extensions, tuple) or not all(isinstance(n, str) for n in self.extensions):
            errors.append(ValidationError("extensions", "must be a list of extension numbers (empty: every "
                                                        "extension may use the route)"))
        else:
            bad = [n for n in self.extensions if number_errors(n)]
            if bad:
                errors.append(ValidationError("extensions", f"{', '.join(map(repr, bad))} is not an extension "
                                                            "number (2-6 digits starting with 1-9)"))
        if errors:
            raise ValidationErrors(errors)

    def dial_string(self, number: str) -> str:
        """The number sent to the trunk for a dialled number that matched this route."""
        return self.prepend + number[self.strip:]


TRUNKS = Collection("trunks", Trunk, key="name", noun="trunk")
INBOUND_ROUTES = Collection("inbound_routes", InboundRoute, key="did", noun="inbound route for",
                            sort_key=lambda d: (len(d), d))
OUTBOUND_ROUTES = Collection("outbound_routes", OutboundRoute, key="name", noun="outbound route")
