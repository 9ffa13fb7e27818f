"""Feature codes an extension dials: DND, the three forwards, pickup (issue 8, section 5).

    *78 / *79        do-not-disturb on / off
    *72NUM / *73     forward every call to NUM / stop
    *90NUM / *91     forward when busy to NUM / stop
    *52NUM / *53     forward when not answered to NUM / stop
    *8               pick up a call ringing in the group
    **NUM            pick up the call ringing at extension NUM

NUM is what the user would dial: an extension number, or an outside number the extension may
dial (it becomes "extension:NUM" or "external:NUM"). Parsing is separate from resolving NUM
against the config so the table above is the whole grammar.
"""
from __future__ import annotations

from dataclasses import dataclass

SETTING_CODES = {
    "*78": ("dnd", "on"),
    "*79": ("dnd", "off"),
    "*73": ("forward_always", ""),
    "*91": ("forward_busy", ""),
    "*53": ("forward_no_answer", ""),
}
FORWARD_CODES = {"*72": "forward_always", "*90": "forward_busy", "*52": "forward_no_answer"}
GROUP_PICKUP = "*8"
DIRECTED_PICKUP = "**"


@dataclass(frozen=True)
class ParsedCode:
    code: str
    action: str
    argument: str           # NUM as dialled for forwards and directed pickup, else the fixed value
    needs_number: bool = False


def parse_feature_code(dialled: str) -> ParsedCode | None:
    """The code in `dialled`, or None when it is not a feature code we know."""
    if dialled.startswith(DIRECTED_PICKUP):
        return ParsedCode(DIRECTED_PICKUP, "pickup", dialled[2:], needs_number=True)
    if dialled == GROUP_PICKUP:
        return ParsedCode(GROUP_PICKUP, "pickup", "")
    if dialled in SETTING_CODES:
        return ParsedCode(dialled, *SETTING_CODES[dialled])
    if dialled[:3] in FORWARD_CODES:
        return ParsedCode(dialled[:3], FORWARD_CODES[dialled[:3]], dialled[3:], needs_number=True)
    return None
