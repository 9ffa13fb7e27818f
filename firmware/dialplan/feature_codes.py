"""Feature codes an extension dials: one registry of every code the box knows.

Built in (issue 8, section 5):

    *78 / *79        do-not-disturb on / off
    *72NUM / *73     forward every call to NUM / stop
    *90NUM / *91     forward when busy to NUM / stop
    *52NUM / *53     forward when not answered to NUM / stop
    *8               pick up a call ringing in the group
    **NUM            pick up the call ringing at extension NUM

A feature adds its own with `register_code(CodeDef(...))` (voicemail's *97, day/night's *33...).
A code either becomes the FeatureCode step (a setting the call service applies and confirms),
or, when the CodeDef has `plan`, whatever plan that function returns for the parsed code and
the routing context (a voicemail menu, a toggle, a park...).

NUM is what the user would dial: an extension number, or an outside number the extension may
dial. Parsing is separate from resolving NUM against the config so the registry is the whole
grammar.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

GROUP_PICKUP = "*8"
DIRECTED_PICKUP = "**"


@dataclass(frozen=True)
class CodeDef:
    """One feature code. `code` is what is dialled ("*97"); with `takes_number` the digits after
    it are its argument ("*72" + "1001"). `action`/`argument` are what the FeatureCode step
    carries out when there is no `plan`; `plan(parsed, ctx)` returns the plan for the call
    otherwise. `label` says what it does, for the web page and `pbx codes`."""
    code: str
    action: str
    label: str
    argument: str = ""
    takes_number: bool = False
    number_optional: bool = False
    plan: Callable | None = None
    group: str = "Call handling"


FEATURE_CODES: dict[str, CodeDef] = {}


def register_code(definition: CodeDef) -> CodeDef:
    FEATURE_CODES[definition.code] = definition
    return definition


for _code, _action, _argument, _label in (
        ("*78", "dnd", "on", "Do not disturb on"),
        ("*79", "dnd", "off", "Do not disturb off"),
        ("*73", "forward_always", "", "Stop forwarding all calls"),
        ("*91", "forward_busy", "", "Stop forwarding when busy"),
        ("*53", "forward_no_answer", "", "Stop forwarding when not answered")):
    register_code(CodeDef(_code, _action, _label, _argument))
for _code, _action, _label in (
        ("*72", "forward_always", "Forward all calls to NUM"),
        ("*90", "forward_busy", "Forward calls when busy to NUM"),
        ("*52", "forward_no_answer", "Forward calls when not answered to NUM")):
    register_code(CodeDef(_code, _action, _label, takes_number=True))
register_code(CodeDef(GROUP_PICKUP, "pickup", "Pick up a call ringing in the group", group="Pickup"))
register_code(CodeDef(DIRECTED_PICKUP, "pickup", "Pick up the call ringing at extension NUM",
                      takes_number=True, group="Pickup"))


@dataclass(frozen=True)
class ParsedCode:
    code: str
    action: str
    argument: str           # NUM as dialled for codes that take one, else the fixed value
    needs_number: bool = False
    definition: CodeDef | None = None


def parse_feature_code(dialled: str, codes: dict[str, CodeDef] | None = None) -> ParsedCode | None:
    """The code in `dialled`, or None when it is not a feature code we know.

    An exact match wins; otherwise the longest code that takes a number and prefixes `dialled`.
    """
    codes = FEATURE_CODES if codes is None else codes
    exact = codes.get(dialled)
    if exact is not None:
        return ParsedCode(exact.code, exact.action, exact.argument,
                          needs_number=exact.takes_number and not exact.number_optional, definition=exact)
    for code in sorted((c for c in codes.values() if c.takes_number), key=lambda c: -len(c.code)):
        if dialled.startswith(code.code) and len(dialled) > len(code.code):
            return ParsedCode(code.code, code.action, dialled[len(code.code):], needs_number=True, definition=code)
    return None
