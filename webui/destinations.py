"""Typed destinations in forms and lists: one widget for every place a call can be sent.

The kinds come from firmware.config.destination.DESTINATION_KINDS, so a kind registered there
(voicemail, ring group...) shows up in every destination field without a change here: a kind
whose target names a collection the web UI can list (`CHOICES`) gets a drop-down of that
collection, any other kind with a target a text box, a kind without a target nothing more.

A field `forward_busy` is posted as `forward_busy_kind` ("" for none, "extension", ...) and one
`forward_busy_<kind>` per kind that takes a target; `form_value` turns that back into the
stored string ("extension:1001"), and the model checks it (its reason is shown at the field).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from firmware.config.destination import DESTINATION_KINDS, Destination, DestinationKind

# Spaces, dashes, dots and brackets people type or paste into phone numbers ("07700 900-123")
_PHONE_PUNCTUATION = re.compile(r"[\s().\-]")


def kinds(forward: bool = False) -> list[DestinationKind]:
    """Every registered kind, or only those an extension may forward to."""
    return [k for k in DESTINATION_KINDS.values() if k.forwardable or not forward]


def choices(store, exclude: str = "") -> dict[str, list[tuple[str, str]]]:
    """What a target may be, per collection a kind refers to: {"extensions": [("201", "201 Ann")]}."""
    return {"extensions": [(e.number, f"{e.number} {e.name}") for e in store.extensions() if e.number != exclude]}


@dataclass
class DestinationField:
    """What the destination widget (templates/_forms.html `destination`) shows."""
    name: str
    kind: str = ""                                        # the chosen kind; "" = none
    targets: dict[str, str] = field(default_factory=dict)   # kind -> target typed/chosen for it

    @classmethod
    def of(cls, name: str, value: str) -> "DestinationField":
        """A stored destination string as the widget shows it (a bad one keeps its text)."""
        if not value:
            return cls(name)
        kind, _, target = str(value).partition(":")
        return cls(name, kind, {kind: target} if target else {})

    @classmethod
    def from_form(cls, name: str, form) -> "DestinationField":
        if f"{name}_kind" not in form and name in form:      # a client posting the stored form itself
            return cls.of(name, form.get(name, "").strip())
        return cls(name, form.get(f"{name}_kind", "").strip(),
                   {k: form.get(f"{name}_{k}", "").strip() for k in DESTINATION_KINDS
                    if DESTINATION_KINDS[k].takes_target})


def form_value(name: str, form) -> tuple[str, str | None]:
    """The posted widget as a destination string, and an error when a target is missing.

    Everything else (an unknown kind, a bad number, a kind not allowed here, a missing extension)
    is left to the model, whose reason the form shows at the field.
    """
    f = DestinationField.from_form(name, form)
    if not f.kind:
        return "", None
    kind = DESTINATION_KINDS.get(f.kind)
    if kind is None or not kind.takes_target:
        return f.kind, None
    target = f.targets.get(f.kind, "")
    if not kind.refers_to:
        target = _PHONE_PUNCTUATION.sub("", target)
    if not target:
        what = "choose the" if kind.refers_to else "type the"
        return f"{f.kind}:", f"{what} {kind.label.lower()}, e.g. {kind.example}"
    return f"{f.kind}:{target}", None


def format_number(number: str) -> str:
    """A UK national number grouped as people write it: 07700 900123, 020 7946 0000; others as given."""
    if re.fullmatch(r"0[1-9][0-9]{9}", number):
        if number.startswith("02"):
            return f"{number[:3]} {number[3:7]} {number[7:]}"
        if number.startswith(("080", "03", "09")):
            return f"{number[:4]} {number[4:7]} {number[7:]}"
        return f"{number[:5]} {number[5:]}"
    return number


def label(value: str, names: dict[str, str] | None = None) -> str:
    """For lists: 'extension 201 (Ann)', '07700 900123', 'hang up'; '' for none."""
    if not value:
        return ""
    try:
        dest = Destination.parse(value)
    except ValueError:
        return f"{value} (not a valid destination)"
    if dest.kind == "external":
        return format_number(dest.target)
    if dest.kind == "extension":
        name = (names or {}).get(dest.target)
        if names is not None and name is None:
            return f"extension {dest.target} (missing!)"
        return f"extension {dest.target}" + (f" ({name})" if name else "")
    return dest.label
