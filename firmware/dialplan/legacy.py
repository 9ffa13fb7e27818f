"""The first dialplan's answer shape (Action/Decision), kept while services/callsvc/b2bua.py
still calls `route_call(dialled, caller_number, extensions)`: ring an extension or 'not found'.

Remove this module once the call service runs plans (firmware/dialplan/plan.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Action(str, Enum):
    EXTENSION = "extension"      # ring a local extension
    NOT_FOUND = "not_found"      # nothing answers to this number: announcement, then 404


@dataclass(frozen=True)
class Decision:
    action: Action
    target: str = ""
    reason: str = ""


def legacy_route_call(dialled: str, caller: str, extensions: dict) -> Decision:
    """Decide where a call from `caller` to `dialled` goes.

    `extensions` maps extension numbers to Extension objects (anything with an `enabled` flag).
    """
    ext = extensions.get(dialled)
    if ext is not None and getattr(ext, "enabled", True):
        return Decision(Action.EXTENSION, dialled)
    if ext is not None:
        return Decision(Action.NOT_FOUND, dialled, f"extension {dialled} is disabled")
    return Decision(Action.NOT_FOUND, dialled, f"no extension {dialled}")
