"""Show a secret once after a redirect (Post/Redirect/Get) without putting it in the cookie.

The session cookie is signed, not encrypted: a SIP password must not travel in it (nor in a
flash). After a create/regenerate/reveal POST, the view marks *which* secret this session may
see once (an extension number, or a key into the in-process stash for things that are not stored
in clear, such as a new API token); the page after the redirect reads it from the store and
clears the mark. A reload of that page shows the secret hidden again.
"""
from __future__ import annotations

import secrets
import threading
import time

from flask import session

_KEY = "reveal_once"
STASH_SECONDS = 120.0
_stash: dict[str, tuple[float, str]] = {}
_lock = threading.Lock()


def allow(what: str) -> None:
    """This session may see the secret of `what` (e.g. "extension:201") on its next page."""
    session[_KEY] = what


def take(what: str) -> bool:
    """True once if the secret of `what` may be shown now."""
    if session.get(_KEY) == what:
        session.pop(_KEY)
        return True
    return False


def stash(value: str) -> str:
    """Keep a one-time value (e.g. a new API token, stored only as a hash) for the next page."""
    key = secrets.token_urlsafe(16)
    now = time.monotonic()
    with _lock:
        for k in [k for k, (t, _) in _stash.items() if now - t > STASH_SECONDS]:
            del _stash[k]
        _stash[key] = (now, value)
    allow(f"stash:{key}")
    return key


def unstash() -> str | None:
    """The stashed value this session was allowed to see, once; None after that."""
    what = session.get(_KEY, "")
    if not isinstance(what, str) or not what.startswith("stash:"):
        return None
    session.pop(_KEY)
    with _lock:
        item = _stash.pop(what[6:], None)
    if item is None or time.monotonic() - item[0] > STASH_SECONDS:
        return None
    return item[1]
