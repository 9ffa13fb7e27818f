"""Feature records: one generic, typed way for a feature to keep its configuration in the store.

A feature (voicemail, ring groups, parking...) keeps its model, validation and reference rules
in its own module and registers them here once:

    RING_GROUPS = register_records(RecordKind(
        Collection("ring_groups", RingGroup, key="number", noun="ring group"),
        references=lambda g: [Ref("members", "extensions", n) for n in g.members]
                             + destination_refs(("no_answer", g.no_answer))))

The record type is a frozen dataclass with `validate()` raising ValidationErrors (as Extension
does). The store then offers records()/record()/add_record()/update_record()/remove_record()
for it, checks its references on every write (against the state being written, inside the
lock), refuses to remove anything another record still names, carries it in backups, and the
dialplan's ConfigView holds it (`config.records["ring_groups"]`).

A reference is (field, collection, key): "extensions" for extension numbers, "trunks" for
trunks, or any registered collection's table. destination_refs() turns destination strings
("voicemail:1000") into references through the destination kind's `refers_to`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, NamedTuple

from .collection import Collection
from .destination import DESTINATION_KINDS, Destination
from .errors import ValidationError


class Ref(NamedTuple):
    field: str          # the field of the referring record, for the error message
    collection: str     # "extensions", "trunks" or a registered table
    key: str


@dataclass(frozen=True)
class RecordKind:
    collection: Collection
    # what the record names elsewhere (checked on write; blocks the removal of what it names)
    references: Callable[[Any], Iterable[Ref]] = lambda record: ()

    @property
    def table(self) -> str:
        return self.collection.table


RECORD_KINDS: dict[str, RecordKind] = {}


def register_records(kind: RecordKind) -> RecordKind:
    """Register a feature's collection (idempotent per table: re-importing a module is harmless)."""
    RECORD_KINDS[kind.table] = kind
    return kind


def pairs_of(value, kind: type, first: str, second: str) -> tuple:
    """A record's list of small (first, second) items (a ring group's members, a queue's members)
    as `kind` instances, however they were stored or given: instances as they are, dicts
    {first: ..., second: ...}, [a, b] pairs, or a bare first value (the second then defaults)."""
    out = []
    for m in value or ():
        if isinstance(m, kind):
            out.append(m)
        elif isinstance(m, dict):
            out.append(kind(str(m.get(first, "")), **({second: m[second]} if second in m else {})))
        elif isinstance(m, (list, tuple)) and len(m) == 2:
            out.append(kind(str(m[0]), m[1]))
        else:
            out.append(kind(str(m)))
    return tuple(out)


def destination_refs(*fields: tuple[str, str]) -> list[Ref]:
    """References made by destination strings: destination_refs(("no_answer", "voicemail:1000"))."""
    refs = []
    for field, value in fields:
        if not value:
            continue
        try:
            dest = Destination.parse(value)
        except ValueError:
            continue          # syntax is the record's validate()'s job
        kind = DESTINATION_KINDS[dest.kind]
        if kind.refers_to:
            refs.append(Ref(field, kind.refers_to, dest.target))
    return refs


def missing_references(refs: Iterable[Ref], known: dict[str, set[str]]) -> list[ValidationError]:
    """Errors for references to things that do not exist; `known` maps a collection to its keys."""
    errors = []
    for ref in refs:
        if ref.key not in known.get(ref.collection, set()):
            noun = RECORD_KINDS[ref.collection].collection.noun if ref.collection in RECORD_KINDS \
                else ref.collection.rstrip("s").replace("_", " ")
            errors.append(ValidationError(ref.field, f"no {noun} {ref.key}: create it first or pick an existing one"))
    return errors


def users_of(records_by_table: dict[str, list], collection: str, key: str) -> list[str]:
    """Phrases naming the feature records that still refer to `collection`/`key`."""
    users = []
    for table, records in records_by_table.items():
        kind = RECORD_KINDS[table]
        names = [str(getattr(r, kind.collection.key)) for r in records
                 if any(ref.collection == collection and ref.key == key for ref in kind.references(r))]
        if names:
            users.append(f"used by {kind.collection.noun}(s) {', '.join(names)}")
    return users
