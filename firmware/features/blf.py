"""BLF lamps of extensions: what a phone's busy-lamp-field key watching an extension shows.

RFC 4235 dialog states, as phones draw them: "terminated" (idle, off), "early" (being rung:
flashing; pressing the key picks the call up with **NUM), "confirmed" (on a call, or calling out:
lit). Pure: the call service passes the extension's live legs.
"""
from __future__ import annotations

from typing import Iterable, NamedTuple


class Leg(NamedTuple):
    inbound: bool      # the extension called us (it is the caller of that leg)
    state: str         # the channel's state: down, ringing, early, up, gone


def dialog_state(legs: Iterable[Leg]) -> str:
    """On a call beats being rung beats idle; an extension dialling out counts as on a call.

    Stops at the first leg that makes it "confirmed" (an extension in hundreds of calls is
    asked on every event of each: the call service passes the legs lazily)."""
    rung = False
    for leg in legs:
        if leg.state == "gone":
            continue
        if leg.state == "up" or leg.inbound:
            return "confirmed"
        if leg.state in ("ringing", "early", "down"):
            rung = True
    return "early" if rung else "terminated"
