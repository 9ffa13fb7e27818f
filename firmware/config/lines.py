"""Analog line ports: which extension each FXS port is, and where each FXO line's calls go.

The line gateway registers every port with the SIP edge like an ATA does (decision 007): an FXS
port (an analog phone plugs in) registers as its extension; an FXO port (a PSTN line plugs in)
registers as the extension account configured for that line and calls `destination` when the
line rings. Ports are numbered 1..N as printed on the box; the board protocol counts from 0.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from .collection import Collection
from .errors import ValidationError, ValidationErrors
from .model import NAME_MAX, number_errors

logger = logging.getLogger(__name__)

KINDS = ("fxs", "fxo")
DIALLING = ("dtmf", "pulse")        # how an FXO port dials out on its exchange line
ANSWER = ("dialled", "reversal")    # when an outgoing FXO call counts as answered
FLASH_LIMITS_MS = (20, 2000)
MAX_PORTS = 32          # far above any line board a Pi drives, small enough to catch typos
# An outbound route may send calls out on an analog exchange line as it would on a SIP trunk:
# its trunk field then names the FXO port as "line:N".
LINE_TRUNK_PREFIX = "line:"


def line_trunk_name(port_number: int) -> str:
    return f"{LINE_TRUNK_PREFIX}{port_number}"


@dataclass(frozen=True)
class LinePortConfig:
    """One port of the line board. `extension` is the SIP account the port registers as;
    `destination` (FXO only) is the extension an incoming call on the line rings.

    FXS: an on-hook of flash_min_ms..flash_max_ms is a flash-hook (the board times it), longer is
    hanging up. FXO, calls out on the line: `dialling` dtmf (tones) or pulse (loop disconnect);
    `answer` dialled (the call counts as answered once the number is dialled, as most FXO
    gateways do: a plain line signals no answer) or reversal (when the exchange reverses the line
    polarity, for lines with answer supervision)."""
    number: int
    kind: str
    extension: str
    destination: str = ""
    name: str = ""
    flash_min_ms: int = 100
    flash_max_ms: int = 700
    dialling: str = "dtmf"
    answer: str = "dialled"

    def validate(self) -> None:
        errors = []
        if isinstance(self.number, bool) or not isinstance(self.number, int) or not 1 <= self.number <= MAX_PORTS:
            errors.append(ValidationError("number", f"line port {self.number!r} must be a port number 1-{MAX_PORTS} "
                                                    "as printed on the box"))
        if self.kind not in KINDS:
            errors.append(ValidationError("kind", f"{self.kind!r} is not a port kind: use 'fxs' (an analog phone "
                                                  "plugs in) or 'fxo' (a PSTN line plugs in)"))
        errors += [ValidationError("extension", e.message) for e in number_errors(self.extension)]
        if self.kind == "fxo":
            if not self.destination:
                errors.append(ValidationError("destination", "an FXO line needs the extension its incoming "
                                                             "calls ring, e.g. destination='1000'"))
            else:
                errors += [ValidationError("destination", e.message) for e in number_errors(self.destination)]
                if self.destination == self.extension:
                    errors.append(ValidationError("destination", f"the line's own account {self.extension} "
                                                                 "cannot be its destination: pick the extension "
                                                                 "that should ring"))
        elif self.destination:
            errors.append(ValidationError("destination", "only FXO lines have a destination; an FXS port "
                                                         "simply is its extension"))
        lo, hi = FLASH_LIMITS_MS
        flash = (self.flash_min_ms, self.flash_max_ms)
        if any(isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi for v in flash) \
                or self.flash_min_ms >= self.flash_max_ms:
            errors.append(ValidationError("flash_max_ms", f"a flash is an on-hook of flash_min_ms to flash_max_ms "
                                                          f"milliseconds, both {lo}-{hi} and min below max "
                                                          f"(e.g. 100 and 700), not {flash[0]!r}-{flash[1]!r}"))
        if self.dialling not in DIALLING:
            errors.append(ValidationError("dialling", f"{self.dialling!r}: use 'dtmf' (tones) or 'pulse' "
                                                      "(loop disconnect, for old exchanges)"))
        if self.answer not in ANSWER:
            errors.append(ValidationError("answer", f"{self.answer!r}: use 'dialled' (answered once dialled) or "
                                                    "'reversal' (the exchange reverses polarity on answer)"))
        if not isinstance(self.name, str) or len(self.name) > NAME_MAX or not self.name.isprintable():
            errors.append(ValidationError("name", f"must be plain text of at most {NAME_MAX} characters"))
        if errors:
            raise ValidationErrors(errors)


LINE_PORTS = Collection("line_ports", LinePortConfig, key="number", noun="line port", sort_key=int)


def line_port_reference_errors(port: LinePortConfig, others: list[LinePortConfig],
                               numbers: set[str]) -> list[ValidationError]:
    """The accounts a port names must exist, and no two ports may register as one account."""
    errors = []
    if port.extension not in numbers:
        errors.append(ValidationError("extension", f"no extension {port.extension}: create it first (the port "
                                                   "registers with its secret)"))
    if port.destination and port.destination not in numbers:
        errors.append(ValidationError("destination", f"no extension {port.destination}: create it first or "
                                                     "pick an existing one"))
    for other in others:
        if other.number != port.number and other.extension == port.extension:
            errors.append(ValidationError("extension", f"extension {port.extension} is already line port "
                                                       f"{other.number}'s account: each port needs its own"))
    return errors


class LinesStoreMixin:
    """Line ports on the ConfigStore (uses its _write/_refresh like the routing mixin)."""

    def line_ports(self) -> list[LinePortConfig]:
        with self._mutex:
            self._refresh()
            return LINE_PORTS.all(self._db)

    def get_line_port(self, number: int) -> LinePortConfig | None:
        with self._mutex:
            self._refresh()
            return LINE_PORTS.get(self._db, number)

    def add_line_port(self, number: int, kind: str, extension: str, destination: str = "",
                      name: str = "") -> LinePortConfig:
        port = LinePortConfig(number, kind, extension, destination, name.strip())
        port.validate()
        with self._write() as db:
            LINE_PORTS.insert(db, port)
            self._check_line_port(db, port)
        logger.info("line port %d added (%s as %s%s)", number, kind, extension,
                    f" -> {destination}" if destination else "")
        return port

    def update_line_port(self, number: int, **changes) -> LinePortConfig:
        names = {f.name for f in dataclasses.fields(LinePortConfig)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValidationErrors([ValidationError(k, f"unknown field; known: {', '.join(sorted(names))}")
                                    for k in unknown])
        if "number" in changes and changes["number"] != number:
            raise ValidationError("number", "cannot be changed; delete the line port and add it again")
        with self._write() as db:
            port = dataclasses.replace(LINE_PORTS.require(db, number), **changes)
            port.validate()
            LINE_PORTS.replace(db, port)
            self._check_line_port(db, port)
        logger.info("line port %d updated (%s)", number, ", ".join(sorted(changes)) or "no change")
        return port

    def remove_line_port(self, number: int) -> None:
        from .routing import OUTBOUND_ROUTES
        with self._write() as db:
            name = line_trunk_name(number)
            users = [r.name for r in OUTBOUND_ROUTES.all(db) if name in (r.trunk, r.fallback_trunk)]
            if users:
                raise ValidationError("number", f"line port {number} carries outbound route(s) "
                                                f"{', '.join(users)}: change their trunk first")
            LINE_PORTS.remove(db, number)
        logger.info("line port %d removed", number)

    def _check_line_port(self, db, port: LinePortConfig) -> None:
        from .store import EXTENSIONS
        errors = line_port_reference_errors(port, LINE_PORTS.all(db), {e.number for e in EXTENSIONS.all(db)})
        if errors:
            raise ValidationErrors(errors)

    def _line_port_users(self, db, extension: str) -> list[int]:
        """Line ports that register as, or ring, this extension (it must not vanish under them)."""
        return [p.number for p in LINE_PORTS.all(db) if extension in (p.extension, p.destination)]
