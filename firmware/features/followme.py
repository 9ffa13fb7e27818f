"""Follow Me: "if I don't answer at my desk, try my mobile and ask me to press 1".

Per extension, a list of phones to ring instead of the desk phone alone: the desk itself
("extension:1001"), a colleague's extension, a landline or a mobile ("external:07700900123"),
each with a delay before it starts and a ring time; rung one after another (sequential) or
together. Outside legs hear who is calling before they take the call: the caller's name, recorded
at the start ("say your name after the tone"), or the caller's number read out; then "press 1 to
accept, 2 to reject". Nobody taking it sends the call where the extension's unanswered calls go
(its no-answer forward, else its voicemail, else "no answer").

The user sets it on their own page or toggles it with *21; the administrator on the extension.
Outside legs are dialled with the extension's own outbound permissions, as its forwards are.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from firmware.config.destination import EXTENSION_NUMBER_RE, EXTERNAL_NUMBER_RE
from firmware.config.errors import ValidationError, ValidationErrors
from firmware.config.records import Collection, RecordKind, Ref, register_records
from firmware.dialplan.extensions import RING_HOOKS
from firmware.dialplan.feature_codes import CodeDef, register_code
from firmware.dialplan.outbound import dial_out
from firmware.dialplan.plan import NOTHING_NEXT, Dial, Next, Reject

TABLE = "follow_me"
ANNOUNCE = ("name", "callerid")
MAX_LEGS = 8
DELAY = (0, 120)
RING_TIME = (5, 120)
TOGGLE_CODE = "*21"


@dataclass(frozen=True)
class Leg:
    destination: str          # "extension:1001" or "external:07700900123"
    delay: int = 0            # seconds before it starts ringing
    timeout: int = 20         # seconds it rings

    @property
    def external(self) -> bool:
        return self.destination.startswith("external:")

    @property
    def number(self) -> str:
        return self.destination.partition(":")[2]


def parse_leg(text: str) -> Leg:
    """'1001', '07700900123 20', '07700900123 20 5' (number, ring time, delay) -> Leg."""
    parts = text.replace(",", " ").split()
    if not parts or len(parts) > 3 or not all(p.isdigit() for p in parts[1:]):
        raise ValueError(f"{text!r}: write a number, then optionally its ring time and delay in seconds, "
                         "e.g. '07700900123 20 5'")
    number = parts[0] if ":" in parts[0] else \
        ("extension:" if EXTENSION_NUMBER_RE.fullmatch(parts[0]) else "external:") + parts[0]
    timeout = int(parts[1]) if len(parts) > 1 else 20
    delay = int(parts[2]) if len(parts) > 2 else 0
    return Leg(number, delay, timeout)


def _legs(value) -> tuple[Leg, ...]:
    out = []
    for item in value or ():
        if isinstance(item, Leg):
            out.append(item)
        elif isinstance(item, dict):
            out.append(Leg(str(item.get("destination", "")), item.get("delay", 0), item.get("timeout", 20)))
        else:
            out.append(parse_leg(str(item)))
    return tuple(out)


@dataclass(frozen=True)
class FollowMe:
    extension: str
    enabled: bool = False
    destinations: tuple = ()       # Legs
    together: bool = False         # ring every leg at once (each after its delay)
    confirm: bool = True           # outside legs press 1 to accept
    announce: str = "callerid"     # what outside legs hear first: the caller's recorded name or number

    def __post_init__(self) -> None:
        object.__setattr__(self, "destinations", _legs(self.destinations))

    def validate(self) -> None:
        errors = []
        if not isinstance(self.extension, str) or not EXTENSION_NUMBER_RE.fullmatch(self.extension):
            errors.append(ValidationError("extension", f"{self.extension!r} is not an extension number"))
        for name in ("enabled", "together", "confirm"):
            if not isinstance(getattr(self, name), bool):
                errors.append(ValidationError(name, "must be true or false"))
        if self.announce not in ANNOUNCE:
            errors.append(ValidationError("announce", f"{self.announce!r}: use 'name' (the caller says it) or "
                                                      "'callerid' (the number is read out)"))
        if len(self.destinations) > MAX_LEGS:
            errors.append(ValidationError("destinations", f"{len(self.destinations)} phones; at most {MAX_LEGS}"))
        if self.enabled and not self.destinations:
            errors.append(ValidationError("destinations", "Follow Me needs at least one phone to ring, "
                                                          "e.g. your mobile '07700900123 20'"))
        seen = set()
        for leg in self.destinations:
            kind, _, target = leg.destination.partition(":")
            ok = kind == "extension" and EXTENSION_NUMBER_RE.fullmatch(target) or \
                kind == "external" and EXTERNAL_NUMBER_RE.fullmatch(target)
            if not ok:
                errors.append(ValidationError("destinations", f"{leg.destination!r} is neither an extension nor "
                                                              "a phone number"))
            if leg.destination in seen:
                errors.append(ValidationError("destinations", f"{target} is listed twice"))
            seen.add(leg.destination)
            for what, value, (low, high) in (("delay", leg.delay, DELAY), ("ring time", leg.timeout, RING_TIME)):
                if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                    errors.append(ValidationError("destinations", f"{target}: {what} {value!r} must be "
                                                                  f"{low}-{high} seconds"))
        if errors:
            raise ValidationErrors(errors)


def _references(fm: FollowMe) -> list[Ref]:
    return [Ref("extension", "extensions", fm.extension)] + \
        [Ref("destinations", "extensions", leg.number) for leg in fm.destinations if not leg.external]


FOLLOW_ME = register_records(RecordKind(Collection(TABLE, FollowMe, key="extension", noun="Follow Me",
                                                   sort_key=int), references=_references))


# --- the plan step ------------------------------------------------------------------------------
@dataclass(frozen=True)
class FollowMeCall:
    """Ring `legs` ((Leg, Dial | None), ...) for a call to `extension`; `on` is the extension's own
    busy / no-answer handling."""
    extension: str
    caller_id_number: str
    caller_id_name: str
    legs: tuple
    together: bool = False
    confirm: bool = True
    announce: str = "callerid"
    on: Next = field(default=NOTHING_NEXT, kw_only=True)

    def describe(self) -> str:
        legs = ",".join(f"{leg.number}{'+' + str(leg.delay) if leg.delay else ''}/{leg.timeout}s"
                        for leg, _ in self.legs)
        return f"follow me {self.extension} {'together' if self.together else 'in turn'} [{legs}]"


def follow_me_plan(ext, ctx, ring):
    """The Follow Me step instead of `ring` when the extension has it on (RING_HOOKS)."""
    fm = ctx.config.table(TABLE).get(ext.number)
    if fm is None or not fm.enabled or not fm.destinations:
        return None
    legs = []
    for leg in fm.destinations:
        if leg.external:
            # the user chose these numbers: the extension's own permissions apply, as for a forward
            plan = dial_out(leg.number, ctx.forwarded_by(ext.number))
            if not isinstance(plan, Dial) or plan.emergency:
                continue
            legs.append((leg, plan))
        else:
            target = ctx.config.extensions.get(leg.number)
            if target is None or not target.enabled or leg.number in ctx.seen:
                continue
            legs.append((leg, None))
    if not legs:
        return None
    return FollowMeCall(ext.number, ring.caller_id_number, ring.caller_id_name, tuple(legs), fm.together,
                        fm.confirm, fm.announce, on=ring.on)


RING_HOOKS.append(follow_me_plan)


@dataclass(frozen=True)
class FollowMeToggle:
    """*21: Follow Me of `extension` on when it is off, off when it is on."""
    extension: str
    on: Next = field(default=NOTHING_NEXT, kw_only=True)

    def describe(self) -> str:
        return f"toggle follow me of {self.extension}"


def toggled(fm: FollowMe | None) -> bool | None:
    """What *21 makes of the setting: True on, False off, None when there is nothing to follow."""
    if fm is None or not fm.destinations:
        return None if fm is None or not fm.enabled else False
    return not fm.enabled


register_code(CodeDef(TOGGLE_CODE, "follow_me", "Follow Me on / off",
                      plan=lambda parsed, ctx: FollowMeToggle(ctx.caller.id) if ctx.caller.kind == "extension"
                      else Reject(403, "forbidden", "*21 is for extensions"), group="Call handling"))
