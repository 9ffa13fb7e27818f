"""Ring groups: "ring the sales phones together", "try reception, then the back office".

A ring group has a number of its own (dialled like an extension, or a destination
"ring_group:600") and members: extensions ("extension:1001") or outside numbers
("external:07700900123", a mobile rung through the trunk), each with its own ring time. The
strategy says who rings when (ring_order):

- ring_all: everyone at once, the first to answer wins;
- hunt: one after another, in the listed order;
- memory_hunt: one after another, starting with whoever answered the group's last call;
- round_robin: one after another, starting with the member after whoever answered last;
- random: one after another, in a random order;
- first_available: one after another, skipping members who are on a call now.

The whole group rings at most `timeout` seconds; then the call goes to `no_answer` (a
destination; "" = the caller hears that nobody answered). Members see the caller's name with the
group's prefix ("Sales: Ann"); with `confirm_external` an outside member hears "call for Sales,
press 1 to accept" and the call is theirs only when they press 1, so a mobile's voicemail never
takes it. The caller hears ringing, or music with waiting="music".

Pure: ring_order() takes the last-answered member and the busy extensions as arguments (the call
service keeps that state), random takes its random.Random.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from firmware.config.destination import (DestinationKind, Destination, destination_errors, register_kind,
                                         EXTENSION_NUMBER_RE, EXTERNAL_NUMBER_RE)
from firmware.config.errors import ValidationError, ValidationErrors
from firmware.config.records import Collection, RecordKind, Ref, destination_refs, pairs_of, register_records
from firmware.dialplan.context import ADMIN, Context
from firmware.dialplan.outbound import dial_out
from firmware.dialplan.plan import NOTHING_NEXT, Dial, Next, Plan, Reject
from firmware.dialplan.router import DESTINATION_HANDLERS, NUMBER_HANDLERS, resolve

TABLE = "ring_groups"
STRATEGIES = ("ring_all", "hunt", "memory_hunt", "round_robin", "random", "first_available")
STRATEGY_LABELS = {"ring_all": "Ring all", "hunt": "Hunt (in order)", "memory_hunt": "Memory hunt",
                   "round_robin": "Round robin", "random": "Random", "first_available": "First available"}
WAITING = ("ringback", "music")
MEMBER_TIMEOUT = (5, 120)
GROUP_TIMEOUT = (5, 600)
MAX_MEMBERS = 32
_PREFIX_MAX = 20


@dataclass(frozen=True)
class Member:
    """One member: "extension:1001" or "external:07700900123", rung for `timeout` seconds."""
    destination: str
    timeout: int = 20

    @property
    def external(self) -> bool:
        return self.destination.startswith("external:")

    @property
    def number(self) -> str:
        return self.destination.partition(":")[2]


def parse_member(text: str, extensions=()) -> Member:
    """'1001', '1001 25', '07700900123 30', 'external:0770... 30' -> Member (ValueError says why).

    A bare number is an extension when `extensions` has it (or it looks like one and no list is
    given), else an outside number."""
    parts = text.replace(",", " ").split()
    if len(parts) > 2 and len(parts[-1]) <= 3:     # "07700 900123 25": a number written in groups
        parts = ["".join(parts[:-1]), parts[-1]]
    if not parts or len(parts) > 2:
        raise ValueError(f"{text!r}: write a number and optionally its ring time, e.g. '1001 20'")
    number, timeout = parts[0], 20
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise ValueError(f"{text!r}: the ring time {parts[1]!r} is not a whole number of seconds")
        timeout = int(parts[1])
    if ":" not in number:
        is_ext = number in extensions if extensions else bool(EXTENSION_NUMBER_RE.fullmatch(number))
        number = f"{'extension' if is_ext else 'external'}:{number}"
    return Member(number, timeout)


def _members(value) -> tuple[Member, ...]:
    return pairs_of(value, Member, "destination", "timeout")


@dataclass(frozen=True)
class RingGroup:
    number: str                      # dialled like an extension; the destination "ring_group:600"
    name: str                        # "Sales"
    strategy: str = "ring_all"
    members: tuple = ()              # Members
    timeout: int = 60                # the whole group, seconds
    caller_id_prefix: str = ""       # "Sales: " before the caller's name on the members' phones
    confirm_external: bool = True    # outside members press 1 to take the call
    waiting: str = "ringback"        # what the caller hears: ringback or music
    no_answer: str = ""              # destination when nobody answered ("" = hang up)

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", _members(self.members))

    def validate(self) -> None:
        errors = []
        if not isinstance(self.number, str) or not EXTENSION_NUMBER_RE.fullmatch(self.number):
            errors.append(ValidationError("number", f"{self.number!r} is not a group number: 2-6 digits "
                                                    "starting with 1-9, e.g. 600"))
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name) > 40 \
                or not self.name.isprintable():
            errors.append(ValidationError("name", "must be 1-40 printable characters, e.g. 'Sales'"))
        if self.strategy not in STRATEGIES:
            errors.append(ValidationError("strategy", f"{self.strategy!r} is not a strategy: use one of "
                                                      f"{', '.join(STRATEGIES)}"))
        if not self.members:
            errors.append(ValidationError("members", "a ring group needs at least one member, e.g. '1001 20'"))
        if len(self.members) > MAX_MEMBERS:
            errors.append(ValidationError("members", f"{len(self.members)} members; at most {MAX_MEMBERS}"))
        seen = set()
        for m in self.members:
            kind, _, target = m.destination.partition(":")
            if kind == "extension" and not EXTENSION_NUMBER_RE.fullmatch(target) or \
                    kind == "external" and not EXTERNAL_NUMBER_RE.fullmatch(target) or \
                    kind not in ("extension", "external"):
                errors.append(ValidationError("members", f"member {m.destination!r} is neither an extension "
                                                         "nor a phone number"))
            if m.destination in seen:
                errors.append(ValidationError("members", f"member {target} is listed twice"))
            seen.add(m.destination)
            if not isinstance(m.timeout, int) or isinstance(m.timeout, bool) or \
                    not MEMBER_TIMEOUT[0] <= m.timeout <= MEMBER_TIMEOUT[1]:
                errors.append(ValidationError("members", f"member {target}: ring time {m.timeout!r} must be "
                                                         f"{MEMBER_TIMEOUT[0]}-{MEMBER_TIMEOUT[1]} seconds"))
        if not isinstance(self.timeout, int) or isinstance(self.timeout, bool) or \
                not GROUP_TIMEOUT[0] <= self.timeout <= GROUP_TIMEOUT[1]:
            errors.append(ValidationError("timeout", f"{self.timeout!r}: the group rings "
                                                     f"{GROUP_TIMEOUT[0]}-{GROUP_TIMEOUT[1]} seconds"))
        if not isinstance(self.caller_id_prefix, str) or len(self.caller_id_prefix) > _PREFIX_MAX \
                or not self.caller_id_prefix.isprintable():
            errors.append(ValidationError("caller_id_prefix", f"at most {_PREFIX_MAX} printable characters, "
                                                              "e.g. 'Sales: '"))
        if not isinstance(self.confirm_external, bool):
            errors.append(ValidationError("confirm_external", "must be true or false"))
        if self.waiting not in WAITING:
            errors.append(ValidationError("waiting", f"{self.waiting!r}: use ringback or music"))
        errors += destination_errors("no_answer", self.no_answer, optional=True)
        if self.no_answer == f"ring_group:{self.number}":
            errors.append(ValidationError("no_answer", "sends the group's unanswered calls back to itself: "
                                                       "pick another destination"))
        if errors:
            raise ValidationErrors(errors)


def _references(group: RingGroup) -> list[Ref]:
    return [Ref("members", "extensions", m.number) for m in group.members if not m.external] \
        + destination_refs(("no_answer", group.no_answer))


RING_GROUPS = register_records(RecordKind(Collection(TABLE, RingGroup, key="number", noun="ring group",
                                                     sort_key=int), references=_references))
register_kind(DestinationKind("ring_group", "Ring group", "600",
                              lambda t: None if EXTENSION_NUMBER_RE.fullmatch(t) else
                              f"'{t}' is not a ring group number (2-6 digits)", refers_to=TABLE,
                              forwardable=True))


# --- who rings when ---------------------------------------------------------------------------
def ring_order(group: RingGroup, *, last_answered: str = "", busy=frozenset(),
               rng: random.Random | None = None) -> list[tuple[Member, ...]]:
    """The rounds of a call to the group: each round's members ring together, the next round
    starts when one has rung out. `last_answered` is the destination of the member who answered
    the group's previous call; `busy` the extensions on a call now."""
    members = list(group.members)
    if group.strategy == "ring_all":
        return [tuple(members)] if members else []
    if group.strategy in ("memory_hunt", "round_robin"):
        at = next((i for i, m in enumerate(members) if m.destination == last_answered), None)
        if at is not None:
            start = at if group.strategy == "memory_hunt" else (at + 1) % len(members)
            members = members[start:] + members[:start]
    elif group.strategy == "random":
        (rng or random.Random()).shuffle(members)
    elif group.strategy == "first_available":
        members = [m for m in members if m.external or m.number not in busy]
    return [(m,) for m in members]


# --- the plan step ----------------------------------------------------------------------------
@dataclass(frozen=True)
class RingGroupCall:
    """Ring `group` for the caller. `outside` holds each external member's Dial plan (trunks and
    caller ID, or a Reject when no route may carry it); `skip` the extension members that must
    not ring (disabled, on do-not-disturb)."""
    group: RingGroup
    caller_id_number: str
    caller_id_name: str
    outside: tuple = ()          # ((destination, Dial | Reject), ...)
    skip: tuple = ()             # extension numbers
    on: Next = field(default=NOTHING_NEXT, kw_only=True)

    def outside_plan(self, destination: str):
        return dict(self.outside).get(destination)

    def describe(self) -> str:
        members = ",".join(m.number for m in self.group.members)
        return f"ring group {self.group.number} {self.group.strategy} [{members}] {self.group.timeout}s"


def plan_group(number: str, ctx: Context) -> Plan:
    group = ctx.config.table(TABLE).get(number)
    if group is None:
        return Reject(404, "not_found", f"no ring group {number}", prompt="not_found")
    if f"group:{number}" in ctx.seen:
        return Reject(482, "loop", f"ring group {number} is already on this call's path")
    here = ctx.visiting(f"group:{number}")
    caller = ctx.caller
    if caller.kind == "extension":
        ext = ctx.config.extensions.get(caller.id)
        cid_number, cid_name = caller.id, (ext.name if ext is not None else caller.name)
    else:
        cid_number, cid_name = caller.number, caller.name
    name = f"{group.caller_id_prefix}{cid_name or cid_number}" if group.caller_id_prefix else cid_name
    outside, skip = [], []
    for m in group.members:
        if m.external:
            # the administrator put the number in the group: any route may carry it
            outside.append((m.destination, dial_out(m.number, _as_admin(here))))
        else:
            ext = ctx.config.extensions.get(m.number)
            if ext is None or not ext.enabled or ext.dnd or m.number == caller.id and caller.kind == "extension":
                skip.append(m.number)
    no_answer = _destination_plan(group.no_answer, here)
    return RingGroupCall(group, cid_number, name, tuple(outside), tuple(skip),
                         on=Next(busy=no_answer, no_answer=no_answer, unavailable=no_answer))


def _as_admin(ctx: Context) -> Context:
    from dataclasses import replace
    return replace(ctx, dial_as=ADMIN)


def _destination_plan(destination: str, ctx: Context) -> Plan:
    if not destination:
        return Reject(480, "no_answer", "nobody in the ring group answered")
    try:
        dest = Destination.parse(destination)
    except ValueError as e:
        return Reject(404, "not_found", f"no-answer destination {destination!r}: {e}", prompt="not_found")
    return resolve(dest, _as_admin(ctx))


def _dialled(dialled: str, ctx: Context) -> Plan | None:
    """A group's number dialled from an extension."""
    if dialled in ctx.config.table(TABLE):
        return plan_group(dialled, ctx)
    return None


DESTINATION_HANDLERS["ring_group"] = lambda dest, ctx: plan_group(dest.target, ctx)
NUMBER_HANDLERS.append(_dialled)

__all__ = ["RingGroup", "Member", "RingGroupCall", "ring_order", "parse_member", "plan_group", "STRATEGIES",
           "TABLE", "Dial"]
