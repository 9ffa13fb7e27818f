"""Conference rooms: a number people dial (or an inbound route's "conference:800") to talk together.

A room has a number (dialled like an extension), a name, an optional PIN for talkers and an
optional listener PIN (whoever enters it joins muted and cannot unmute: an "admin-muted"
listener), extensions that always join as listeners, a member limit, whether the count of
people is announced on joining, and whether joins and leaves are marked by a tone.

Everything here is a decision without I/O, for the call service's flow
(services/callsvc/flows/conference.py): which role a caller gets for a PIN (admit), whether the
room is full, what a joining member hears about the others (count_words), and what *6 does
(toggle_mute).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from firmware.config.collection import Collection
from firmware.config.destination import EXTENSION_NUMBER_RE, DestinationKind, register_kind
from firmware.config.errors import ValidationError, ValidationErrors
from firmware.config.records import RecordKind, Ref, register_records
from firmware.dialplan.context import Context
from firmware.dialplan.plan import NOTHING_NEXT, Next, Plan, Reject
from firmware.dialplan.router import DESTINATION_HANDLERS, NUMBER_HANDLERS

TABLE = "conference_rooms"
PIN_RE = re.compile(r"[0-9]{3,10}")
MEMBERS = (2, 60)
MUTE_KEY = "*6"
PIN_TRIES = 3

TALKER, LISTENER = "talker", "listener"


@dataclass(frozen=True)
class ConferenceRoom:
    number: str                        # dialled like an extension; destination "conference:800"
    name: str
    pin: str = ""                      # talkers' PIN ("" = anyone may join)
    listener_pin: str = ""             # joins muted, cannot unmute ("" = no listener PIN)
    max_members: int = 10
    announce_count: bool = True        # "you are the only person" / "there are 3 other people"
    tones: bool = True                 # a tone to everybody when someone joins or leaves
    listeners: tuple[str, ...] = ()    # extensions that always join muted (admin-muted)

    def __post_init__(self) -> None:
        if isinstance(self.listeners, list):
            object.__setattr__(self, "listeners", tuple(self.listeners))

    def validate(self) -> None:
        errors = []
        if not isinstance(self.number, str) or not EXTENSION_NUMBER_RE.fullmatch(self.number):
            errors.append(ValidationError("number", f"{self.number!r} is not a room number: 2-6 digits "
                                                    "starting with 1-9, e.g. 800"))
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name) > 40 \
                or not self.name.isprintable():
            errors.append(ValidationError("name", "must be 1-40 printable characters, e.g. 'Board room'"))
        for fname in ("pin", "listener_pin"):
            value = getattr(self, fname)
            if not isinstance(value, str) or value and not PIN_RE.fullmatch(value):
                errors.append(ValidationError(fname, "must be empty or 3-10 digits, e.g. 4321"))
        if self.listener_pin and self.listener_pin == self.pin:
            errors.append(ValidationError("listener_pin", "is the same as the PIN: a caller could not be "
                                                          "told apart; pick another or leave it empty"))
        if not isinstance(self.max_members, int) or isinstance(self.max_members, bool) or \
                not MEMBERS[0] <= self.max_members <= MEMBERS[1]:
            errors.append(ValidationError("max_members", f"{self.max_members!r}: a room holds "
                                                         f"{MEMBERS[0]}-{MEMBERS[1]} people"))
        for flag in ("announce_count", "tones"):
            if not isinstance(getattr(self, flag), bool):
                errors.append(ValidationError(flag, "must be true or false"))
        if not isinstance(self.listeners, tuple) or not all(
                isinstance(n, str) and EXTENSION_NUMBER_RE.fullmatch(n) for n in self.listeners):
            errors.append(ValidationError("listeners", f"{self.listeners!r}: list extension numbers, e.g. 1003"))
        if errors:
            raise ValidationErrors(errors)

    @property
    def needs_pin(self) -> bool:
        return bool(self.pin or self.listener_pin)


ROOMS = register_records(RecordKind(
    Collection(TABLE, ConferenceRoom, key="number", noun="conference room", sort_key=int),
    references=lambda r: [Ref("listeners", "extensions", n) for n in r.listeners]))
register_kind(DestinationKind("conference", "Conference room", "800",
                              lambda t: None if EXTENSION_NUMBER_RE.fullmatch(t) else
                              f"'{t}' is not a conference room number (2-6 digits)", refers_to=TABLE,
                              forwardable=True))


# --- decisions -------------------------------------------------------------------------------
def admit(room: ConferenceRoom, entered: str | None, extension: str = "") -> str | None:
    """The role a caller joins with: TALKER or LISTENER, None for a wrong PIN.

    `entered` is the PIN the caller keyed (None when the room asks none). An extension on the
    room's listener list always joins as a listener, whatever PIN it keyed."""
    if room.needs_pin:
        if entered is None:
            return None
        if room.pin and entered == room.pin or not room.pin and room.listener_pin and entered == "":
            role = TALKER
        elif room.listener_pin and entered == room.listener_pin:
            role = LISTENER
        else:
            return None
    else:
        role = TALKER
    return LISTENER if extension and extension in room.listeners else role


def is_full(room: ConferenceRoom, members: int) -> bool:
    return members >= room.max_members


def count_words(others: int) -> str:
    """What a joining member hears about the room."""
    if others <= 0:
        return "You are the only person in this conference."
    if others == 1:
        return "There is one other person in this conference."
    return f"There are {others} other people in this conference."


def toggle_mute(role: str, muted: bool) -> tuple[bool, str]:
    """*6: the member's new mute state and what it hears. A listener stays muted."""
    if role == LISTENER:
        return True, "You are a listener in this conference and cannot speak."
    return (False, "You are unmuted.") if muted else (True, "You are muted.")


# --- the plan step ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Conference:
    """Join the caller to `room`; `extension` is the caller's own extension ("" from outside)."""
    room: ConferenceRoom
    extension: str = ""
    on: Next = field(default=NOTHING_NEXT, kw_only=True)

    def describe(self) -> str:
        return f"conference {self.room.number} ({self.room.name}){' PIN' if self.room.needs_pin else ''}"


def plan_room(number: str, ctx: Context) -> Plan:
    room = ctx.config.table(TABLE).get(number)
    if room is None:
        return Reject(404, "not_found", f"no conference room {number}", prompt="not_found")
    return Conference(room, ctx.caller.id if ctx.caller.kind == "extension" else "")


def _dialled(dialled: str, ctx: Context) -> Plan | None:
    """A room's number dialled from an extension."""
    if dialled in ctx.config.table(TABLE):
        return plan_room(dialled, ctx)
    return None


DESTINATION_HANDLERS["conference"] = lambda dest, ctx: plan_room(dest.target, ctx)
NUMBER_HANDLERS.append(_dialled)
