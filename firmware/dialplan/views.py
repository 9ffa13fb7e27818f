"""What the routing plan reads: who is calling, a snapshot of the config, and the live state.

The call service builds a ConfigView once per config generation (`config_view(store)`, the one
place that reads the store for routing) and a RuntimeView per call from what it knows about
registrations and calls in progress. Both are frozen values: a plan depends on nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from firmware.config.lines import LinePortConfig, line_trunk_name
from firmware.config.model import Extension, Settings
from firmware.config.records import RECORD_KINDS
from firmware.config.routing import InboundRoute, OutboundRoute, Trunk

CALLER_KINDS = ("extension", "trunk", "line")

# Always dialable by every extension, whatever the routes' permission lists say. Numbers outside
# this list that a country needs (e.g. 101, 111 in the UK) are not emergency numbers here.
EMERGENCY_NUMBERS = ("999", "112", "911")


@dataclass(frozen=True)
class Caller:
    """Who is calling.

    kind: "extension" (a phone of ours, FXS ports included: `id` is its number), "trunk" (a SIP
    provider: `id` is the trunk name) or "line" (an analog exchange line on an FXO port: `id` is
    the port number). `number`/`name`: the caller ID as received.
    """
    kind: str
    id: str
    number: str = ""
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in CALLER_KINDS:
            raise ValueError(f"caller kind {self.kind!r} is not one of {', '.join(CALLER_KINDS)}")

    @property
    def is_outside(self) -> bool:
        """A call from the outside world: it may never be sent back out (no open relay)."""
        return self.kind != "extension"


@dataclass(frozen=True)
class RuntimeView:
    """The live state a plan depends on.

    registered: extensions with a phone registered now; None when the call service does not
    know (then every enabled extension is rung, and a failed ring takes the unavailable branch).
    busy: extensions that must not be offered another call now (in a call, no call waiting):
    they go straight to their busy branch.
    """
    registered: frozenset[str] | None = None
    busy: frozenset[str] = frozenset()
    # call charging: spend so far, limits and rate sheets (firmware.rating.limits.SpendCheck);
    # None: no limits are checked
    spend: Any = None

    def reachable(self, extension: str) -> bool:
        return self.registered is None or extension in self.registered


@dataclass(frozen=True)
class ConfigView:
    """A read-only snapshot of the configuration the routing plan needs."""
    extensions: Mapping[str, Extension]
    trunks: Mapping[str, Trunk]
    inbound_routes: tuple[InboundRoute, ...]
    outbound_routes: tuple[OutboundRoute, ...]        # in the order they are tried
    settings: Settings
    emergency_numbers: tuple[str, ...] = EMERGENCY_NUMBERS
    generation: int = field(default=0, compare=False)
    # analog exchange lines an outbound route may use like a trunk, by "line:N" (FXO ports only)
    lines: Mapping[str, LinePortConfig] = field(default_factory=lambda: MappingProxyType({}))
    # feature records by table and key (firmware/config/records.py): records["ring_groups"]["600"]
    records: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))

    def table(self, name: str) -> Mapping[str, Any]:
        """A feature's records by key ({} when it has none)."""
        return self.records.get(name, MappingProxyType({}))

    def carrier(self, name: str) -> bool:
        """name is a SIP trunk or an FXO line that can carry a call out."""
        return name in self.trunks or name in self.lines

    @classmethod
    def of(cls, extensions: Iterable[Extension] = (), trunks: Iterable[Trunk] = (),
           inbound_routes: Iterable[InboundRoute] = (), outbound_routes: Iterable[OutboundRoute] = (),
           settings: Settings | None = None, emergency_numbers: Iterable[str] = EMERGENCY_NUMBERS,
           generation: int = 0, line_ports: Iterable[LinePortConfig] = (),
           records: Mapping[str, Iterable[Any]] | None = None) -> "ConfigView":
        """Build a view from records (what the store returns, or what a test writes)."""
        return cls(MappingProxyType({e.number: e for e in extensions}),
                   MappingProxyType({t.name: t for t in trunks}),
                   tuple(inbound_routes), tuple(outbound_routes), settings or Settings(),
                   tuple(emergency_numbers), generation,
                   MappingProxyType({line_trunk_name(p.number): p for p in line_ports if p.kind == "fxo"}),
                   MappingProxyType({table: MappingProxyType({str(getattr(r, RECORD_KINDS[table].collection.key)): r
                                                              for r in items})
                                     for table, items in (records or {}).items()}))


def config_view(store) -> ConfigView:
    """The ConfigView of a ConfigStore now; rebuild it when `store.generation` changes."""
    generation = store.generation
    return ConfigView.of(store.extensions(), store.trunks(), store.inbound_routes(), store.outbound_routes(),
                         store.settings(), generation=generation, line_ports=store.line_ports(),
                         records={table: store.records(table) for table in RECORD_KINDS})
