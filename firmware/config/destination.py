"""Typed destinations: where a call goes, as stored in the config ("extension:1000").

An inbound route, a forward and (later) a ring group's overflow or an IVR key all name a
destination. Each is a `Destination(kind, target)` and is stored as "kind:target" ("hangup" has no
target). Every destination string is parsed and checked here, so the config store, the web UI and
the dialplan agree on what a destination may be.

Adding a kind (voicemail, ring_group, queue, ivr, time_condition...) is one `register_kind` call
with its target check and the collection its target must exist in, plus the dialplan's handler
for it (firmware/dialplan/router.py refuses to start without one).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from .errors import ValidationError

EXTENSION_NUMBER_RE = re.compile(r"[1-9][0-9]{1,5}")      # the same rule as model.number_errors
EXTERNAL_NUMBER_RE = re.compile(r"\+?[0-9]{1,20}")


@dataclass(frozen=True)
class DestinationKind:
    """One kind of destination and the rules its target must meet."""
    name: str
    label: str                          # what the web UI shows: "Extension"
    example: str = ""                   # an example target for error messages; "" = takes no target
    target_error: Callable[[str], str | None] | None = None   # None when the target is fine
    refers_to: str = ""                 # the collection the target must exist in ("extensions")
    forwardable: bool = False           # may an extension forward its calls here?

    @property
    def takes_target(self) -> bool:
        return bool(self.example)


DESTINATION_KINDS: dict[str, DestinationKind] = {}


def register_kind(kind: DestinationKind) -> DestinationKind:
    DESTINATION_KINDS[kind.name] = kind
    return kind


def _extension_target_error(target: str) -> str | None:
    if not EXTENSION_NUMBER_RE.fullmatch(target):
        return f"'{target}' is not an extension number (2-6 digits starting with 1-9)"
    return None


def _external_target_error(target: str) -> str | None:
    if not EXTERNAL_NUMBER_RE.fullmatch(target):
        return f"'{target}' is not a phone number: digits with an optional leading '+', at most 20"
    return None


register_kind(DestinationKind("extension", "Extension", "1000", _extension_target_error,
                              refers_to="extensions", forwardable=True))
register_kind(DestinationKind("external", "External number", "07700900123", _external_target_error,
                              forwardable=True))
register_kind(DestinationKind("hangup", "Hang up"))


@dataclass(frozen=True)
class Destination:
    """Where a call goes: `kind` is a registered kind, `target` what of that kind ("1000")."""
    kind: str
    target: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.target}" if self.target else self.kind

    @property
    def label(self) -> str:
        """For people: 'extension 1000', 'external number 07700900123', 'hang up'."""
        kind = DESTINATION_KINDS.get(self.kind)
        name = kind.label.lower() if kind else self.kind
        return f"{name} {self.target}" if self.target else name

    @classmethod
    def parse(cls, text: object) -> "Destination":
        """'extension:1000' -> Destination('extension', '1000'); ValueError says how to write it."""
        if not isinstance(text, str) or not text:
            raise ValueError(f"is empty: {_how()}")
        kind_name, sep, target = text.partition(":")
        kind = DESTINATION_KINDS.get(kind_name)
        if kind is None:
            if EXTENSION_NUMBER_RE.fullmatch(text) or EXTERNAL_NUMBER_RE.fullmatch(text):
                raise ValueError(f"'{text}' has no kind: write 'extension:{text}' for the extension or "
                                 f"'external:{text}' for an outside number")
            raise ValueError(f"'{text}' is not a destination: {_how()}")
        if not kind.takes_target:
            if sep:
                raise ValueError(f"'{kind_name}' takes no target: write just '{kind_name}'")
            return cls(kind_name)
        if not target:
            raise ValueError(f"'{text}' needs a target: write e.g. '{kind_name}:{kind.example}'")
        problem = kind.target_error(target) if kind.target_error else None
        if problem:
            raise ValueError(f"{problem}; e.g. '{kind_name}:{kind.example}'")
        return cls(kind_name, target)


def _how() -> str:
    examples = ", ".join(f"'{k.name}:{k.example}'" if k.takes_target else f"'{k.name}'"
                         for k in DESTINATION_KINDS.values())
    return f"write kind:target, one of {examples}"


def coerce_destination(value: object) -> object:
    """The shorthand the CLI, forms and older API clients send: a bare extension number ('1000')
    means 'extension:1000'. Anything else is returned unchanged for `destination_errors` to judge."""
    if isinstance(value, str) and EXTENSION_NUMBER_RE.fullmatch(value.strip()):
        return f"extension:{value.strip()}"
    return value


def destination_errors(field: str, value: object, *, forward: bool = False,
                       optional: bool = False) -> list[ValidationError]:
    """Syntax of a stored destination string; `forward` limits it to kinds an extension may forward to."""
    if optional and value == "":
        return []
    try:
        dest = Destination.parse(value)
    except ValueError as e:
        return [ValidationError(field, str(e))]
    if forward and not DESTINATION_KINDS[dest.kind].forwardable:
        allowed = ", ".join(k.name for k in DESTINATION_KINDS.values() if k.forwardable)
        return [ValidationError(field, f"calls cannot be forwarded to '{dest}': use one of {allowed}")]
    return []


def destination_reference_errors(field: str, value: str, known: dict[str, set[str]]) -> list[ValidationError]:
    """A destination's target must exist: `known` maps a collection name to the keys it holds."""
    try:
        dest = Destination.parse(value)
    except ValueError:
        return []          # syntax is destination_errors' job
    kind = DESTINATION_KINDS[dest.kind]
    if kind.refers_to and dest.target not in known.get(kind.refers_to, set()):
        return [ValidationError(field, f"no {kind.label.lower()} {dest.target}: create it first or pick an "
                                       "existing one")]
    return []
