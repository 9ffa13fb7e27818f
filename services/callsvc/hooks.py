"""Where a feature's call-service side hooks into the service's life, registered at import.

    from services.callsvc.hooks import ON_START, ON_CONFIG_CHANGE
    ON_START.append(lambda svc: publish_every_lamp(svc))       # once the SIP socket is up
    ON_CONFIG_CHANGE.append(lambda svc, view: ...)             # another process changed the config
    ON_STATUS["queues"] = lambda svc: ...                       # a part of `pbx status` / the web UI's

A hook that raises is logged and skipped; it never stops the service or the other hooks.
"""
from __future__ import annotations

from typing import Callable

ON_START: list[Callable] = []
ON_CONFIG_CHANGE: list[Callable] = []
ON_STATUS: dict[str, Callable] = {}
