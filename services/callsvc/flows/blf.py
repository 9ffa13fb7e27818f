"""BLF lamps: each extension's dialog state is PUBLISHed to the edge as its calls ring, answer and
end (services/callsvc/presence.py; the edge NOTIFYs the phones that SUBSCRIBEd to it).

Every session event names a channel; when that channel is an extension's, the extension's state is
worked out again from all its live legs (firmware/features/blf.py) and published when it changed.
The live legs of each extension are kept in an index as their chan_start, answer and hangup events
pass, the legs that light the lamp apart from those being rung: walking every channel of every call
per event cost a quarter of the call service's CPU at 150 call setups/s (issue 16), and grew with
the square of the calls up.
While ringing, the dialog names the caller (<remote>), which phones show and use for BLF pickup
(they dial **NUM, the directed pickup code).
"""
from __future__ import annotations

import itertools
import logging
import weakref

from firmware.dialplan.feature_codes import DIRECTED_PICKUP
from firmware.features.blf import Leg, dialog_state

from .. import session as session_module

log = logging.getLogger(__name__)

_PUBLISHED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
# per call service: extension number -> its legs that have not ended, in two parts: those that light
# the lamp by themselves (the extension calling, or answered: chan_start / answer say so) and the
# others (being rung). A channel's state only becomes "up" with its answer event.
_LIVE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
WATCHED_EVENTS = ("chan_start", "answer", "hangup", "bridge_enter")


class _Legs:
    __slots__ = ("lit", "rung")

    def __init__(self):
        self.lit: dict = {}      # channel n -> channel
        self.rung: dict = {}


def _legs(svc, number: str):
    """The legs the lamp is worked out from: one lit leg if there is one (it decides "confirmed"),
    else the oldest leg being rung; an extension rung by hundreds of calls is not walked whole."""
    live = _LIVE.get(svc)
    legs = live.get(number) if live is not None else None
    if legs is None:
        return ()
    if not legs.lit and not legs.rung:
        del live[number]
        return ()
    return tuple(itertools.islice((legs.lit or legs.rung).values(), 1))


def _track(svc, what: str, ch) -> None:
    legs = _LIVE.setdefault(svc, {}).setdefault(ch.number, _Legs())
    if what == "hangup" or ch.is_gone:
        legs.lit.pop(ch.n, None)
        legs.rung.pop(ch.n, None)
    elif ch.inbound or ch.state == "up":
        legs.rung.pop(ch.n, None)
        legs.lit[ch.n] = ch
    elif what == "chan_start":
        legs.rung[ch.n] = ch


def refresh(svc, number: str) -> None:
    """Publish `number`'s state if it changed since the last time."""
    presence = getattr(svc, "presence", None)
    if presence is None or svc.extension(number) is None:
        return
    state = dialog_state(Leg(ch.inbound, ch.state) for ch in _legs(svc, number))
    remote = target = ""
    if state == "early":
        ringing = next((ch for ch in _legs(svc, number) if not ch.inbound), None)
        caller = ringing.session.caller if ringing is not None else None
        if caller is not None and caller.number:
            remote = f"sip:{caller.number}@{svc.edge[0]}"
            # what the phone dials when its flashing key is pressed: directed pickup of `number`
            code = pickup_code(svc)
            target = f"sip:{code}{number}@{svc.edge[0]}" if code else ""
    published = _PUBLISHED.setdefault(svc, {})
    if published.get(number) == (state, remote, target):
        return
    published[number] = (state, remote, target)
    # debug: an extension's lamp follows its calls, which are logged already (four to five lamp
    # changes per call were half the call service's INFO lines under load)
    log.debug("BLF %s: %s%s", number, state, f" (call from {remote}, pickup {target})" if remote else "")
    presence.publish_dialog(number, state, remote=remote, remote_target=target)


def pickup_code(svc) -> str:
    """The directed pickup code as dialled now (** unless the administrator changed it)."""
    try:
        from firmware.features.codes import effective_code
        return effective_code(svc.view, DIRECTED_PICKUP) or ""
    except ImportError:
        return DIRECTED_PICKUP


def _on_event(session, what: str, ch) -> None:
    if ch is None or what not in WATCHED_EVENTS or ch.cel.get("kind") != "extension":
        return
    _track(session.svc, what, ch)
    refresh(session.svc, ch.number)


if _on_event not in session_module.EVENT_LISTENERS:
    session_module.EVENT_LISTENERS.append(_on_event)
