"""The state a routing decision carries down a forward chain: who calls, the path so far, and
whose permissions apply when the chain leads outside."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from .views import Caller, ConfigView, RuntimeView

# dial_as values besides an extension number
NOBODY = ""          # may not dial out at all (a call from a trunk or an analog line)
ADMIN = "*"          # a destination the administrator configured (an inbound route): every route

# A forward chain longer than this is a mistake, and each hop that rings a phone keeps the
# caller waiting a full no-answer timeout.
MAX_FORWARD_HOPS = 5


@dataclass(frozen=True)
class Context:
    caller: Caller
    config: ConfigView
    runtime: RuntimeView
    now: datetime
    dial_as: str = NOBODY             # whose outbound route permissions apply
    seen: tuple[str, ...] = ()        # extensions on this path: a forward back to one is a loop
    forwarded_from: str = ""          # the extension whose forward led here
    hops: int = 0

    def visiting(self, extension: str) -> "Context":
        return replace(self, seen=self.seen + (extension,))

    def forwarded_by(self, extension: str) -> "Context":
        """Following `extension`'s forward: its permissions apply to anything dialled out."""
        return replace(self, forwarded_from=extension, dial_as=extension, hops=self.hops + 1)
