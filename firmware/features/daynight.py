"""Call-flow toggles (day/night): a switch someone flips by dialling *33, pressing the front
panel's button or on the web page, and that routes use as a destination.

Toggle 1 is the office's main switch: its state is Settings.mode (what the front panel's
DAY/NIGHT button changes and its LED shows, hw/panel/panel.py), so the button, *33, the web UI
and a BLF key watching *33 can never disagree. More toggles (per department) are records of the
"call_flow_toggles" table with their own `state`; toggle N is dialled as *33N and watched by a
BLF key on *33N. A toggle record (toggle 1 included) holds its name, the day and night
destinations the destination "daynight:N" sends to, and an optional PIN that *33 asks for.

    *33     toggle 1 (DAY <-> NIGHT)           *33N   toggle N
    BLF on *33 / *33N: lit ("confirmed") at night, off ("terminated") by day.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from firmware.config.destination import DestinationKind, destination_errors, register_kind
from firmware.config.errors import ValidationError, ValidationErrors
from firmware.config.records import Collection, RecordKind, destination_refs, register_records
from firmware.dialplan.feature_codes import CodeDef, register_code
from firmware.dialplan.plan import NOTHING_NEXT, Next, Reject

TABLE = "call_flow_toggles"
CODE = "*33"
STATES = ("day", "night")
MAIN = "1"             # the toggle whose state is Settings.mode (front panel)
_NUMBER_RE = re.compile(r"[1-9]")
_PIN_RE = re.compile(r"[0-9]{4,8}")
_OWN_CODE_RE = re.compile(r"\*[0-9]{1,5}")


@dataclass(frozen=True)
class CallFlowToggle:
    number: str                      # "1".."9": dialled as *33 (1) or *33N
    name: str
    day_destination: str = ""
    night_destination: str = ""
    state: str = "day"               # toggle 1 keeps its state in Settings.mode instead
    pin: str = ""                    # 4-8 digits *33 asks for; "" = none
    code: str = ""                   # its own code ("*34"), dialled and watched instead of *33N

    def __repr__(self) -> str:       # the PIN stays out of logs
        return f"CallFlowToggle(number={self.number!r}, name={self.name!r}, state={self.state!r})"

    def validate(self) -> None:
        errors = []
        if not isinstance(self.number, str) or not _NUMBER_RE.fullmatch(self.number):
            errors.append(ValidationError("number", f"{self.number!r} is not a toggle number: use 1-9 "
                                                    "(toggle N is dialled as *33N, toggle 1 as *33)"))
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name) > 40:
            errors.append(ValidationError("name", "must be 1-40 characters, e.g. 'Main office'"))
        errors += destination_errors("day_destination", self.day_destination, optional=True)
        errors += destination_errors("night_destination", self.night_destination, optional=True)
        for f in ("day_destination", "night_destination"):
            if getattr(self, f) == f"daynight:{self.number}":
                errors.append(ValidationError(f, "a toggle cannot send calls to itself"))
        if self.state not in STATES:
            errors.append(ValidationError("state", f"{self.state!r} is not one of day, night"))
        if self.pin and not (isinstance(self.pin, str) and _PIN_RE.fullmatch(self.pin)):
            errors.append(ValidationError("pin", "must be 4-8 digits, or empty for no PIN"))
        if self.code:
            from firmware.dialplan.feature_codes import FEATURE_CODES
            if not (isinstance(self.code, str) and _OWN_CODE_RE.fullmatch(self.code)):
                errors.append(ValidationError("code", f"{self.code!r} is not a feature code: '*' then 1-5 digits, "
                                                      "e.g. *34; or empty for *33N"))
            elif self.code in FEATURE_CODES or self.code.startswith(CODE):
                errors.append(ValidationError("code", f"{self.code} is taken (a feature code, or *33N of a toggle): "
                                                      "choose another"))
        if errors:
            raise ValidationErrors(errors)


TOGGLES = register_records(RecordKind(
    Collection(TABLE, CallFlowToggle, key="number", noun="call-flow toggle", sort_key=int),
    references=lambda t: destination_refs(("day_destination", t.day_destination),
                                          ("night_destination", t.night_destination))))

register_kind(DestinationKind("daynight", "Day/night toggle", "1",
                              lambda t: None if _NUMBER_RE.fullmatch(t) else f"'{t}' is not a toggle number (1-9)",
                              refers_to=TABLE))


def toggle_state(config, number: str) -> str:
    """'day' or 'night' for toggle `number` in a ConfigView (toggle 1: Settings.mode)."""
    number = str(number)
    if number == MAIN:
        return config.settings.mode
    toggle = config.table(TABLE).get(number)
    return toggle.state if toggle is not None else "day"


def code_of(number: str, config=None) -> str:
    """What is dialled (and what a BLF key watches) for toggle `number`: *33, *332... (with a
    ConfigView: *33 as the administrator set it, firmware/features/codes.py)."""
    base = CODE
    if config is not None:
        from .codes import effective_code
        own = config.table(TABLE).get(str(number))
        if own is not None and own.code:
            return own.code
        base = effective_code(config, CODE) or CODE
    return base if str(number) == MAIN else f"{base}{number}"


def known_toggles(config) -> list[str]:
    """Toggle numbers that exist: 1 always (the panel's), plus every record."""
    return sorted({MAIN, *config.table(TABLE).keys()}, key=int)


def other(state: str) -> str:
    return "day" if state == "night" else "night"


def lamp(state: str) -> str:
    """The BLF dialog state of a toggle: lit at night."""
    return "confirmed" if state == "night" else "terminated"


@dataclass(frozen=True)
class ToggleDayNight:
    """Flip call-flow toggle `toggle` (asking for its PIN when it has one) and confirm it with a
    prompt ("night mode on" / "day mode on"); dialled by `extension`."""
    toggle: str
    extension: str
    needs_pin: bool = False
    on: Next = field(default=NOTHING_NEXT, kw_only=True)

    def describe(self) -> str:
        return f"day/night toggle {self.toggle}" + (" (PIN)" if self.needs_pin else "") + f" by {self.extension}"


def _code_plan(parsed, ctx):
    number = parsed.argument or MAIN
    record = ctx.config.table(TABLE).get(number)
    if number != MAIN and record is None:
        return Reject(404, "not_found", f"no call-flow toggle {number} (dialled {CODE}{number})", prompt="not_found")
    return ToggleDayNight(number, ctx.caller.id, needs_pin=bool(record is not None and record.pin))


register_code(CodeDef(CODE, "daynight", "Switch day/night mode (*33N: toggle N)", takes_number=True,
                      number_optional=True, plan=_code_plan, group="Day/night"))


def _own_codes(config) -> dict:
    """Toggles with their own code: dialling it switches that toggle (firmware/features/codes.py)."""
    out = {}
    for toggle in config.table(TABLE).values():
        if toggle.code:
            out[toggle.code] = CodeDef(toggle.code, "daynight", f"Switch {toggle.name} (toggle {toggle.number})",
                                       plan=lambda parsed, ctx, t=toggle: ToggleDayNight(
                                           t.number, ctx.caller.id, needs_pin=bool(t.pin)),
                                       group="Day/night")
    return out


def _register_own_codes() -> None:
    from . import codes
    if _own_codes not in codes.CONFIGURED_CODES:
        codes.CONFIGURED_CODES.append(_own_codes)


def _plan(dest, ctx):
    from firmware.config.destination import Destination
    from firmware.dialplan.context import MAX_FORWARD_HOPS
    from firmware.dialplan.router import resolve

    toggle = ctx.config.table(TABLE).get(dest.target)
    if toggle is None:
        return Reject(404, "not_found", f"no call-flow toggle {dest.target}", prompt="not_found")
    if ctx.hops >= MAX_FORWARD_HOPS:
        return Reject(482, "loop", f"toggle {toggle.number}: too many hops", tone="congestion")
    state = toggle_state(ctx.config, toggle.number)
    target = toggle.night_destination if state == "night" else toggle.day_destination
    if not target:
        return Reject(404, "not_found", f"toggle {toggle.number} has no {state} destination", prompt="not_found")
    try:
        parsed = Destination.parse(target)
    except ValueError as e:
        return Reject(404, "not_found", f"toggle {toggle.number}: {e}", prompt="not_found")
    return resolve(parsed, replace(ctx, hops=ctx.hops + 1))


def _register_handler() -> None:
    from firmware.dialplan.router import DESTINATION_HANDLERS
    DESTINATION_HANDLERS["daynight"] = _plan


_register_handler()
_register_own_codes()
