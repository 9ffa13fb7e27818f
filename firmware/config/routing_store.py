"""ConfigStore methods for trunks and routes (mixed into ConfigStore; uses its _write/_refresh).

References are checked inside the write lock, against the state being written: a route never
points at a trunk or extension that another process removed a moment earlier, and an extension
that a route, a route's permission list or another extension's forward names cannot be removed.
"""
from __future__ import annotations

import dataclasses
import logging

from .destination import coerce_destination, destination_reference_errors
from .errors import ValidationError, ValidationErrors
from .model import FORWARDS, Extension
from .routing import INBOUND_ROUTES, OUTBOUND_ROUTES, TRUNKS, InboundRoute, OutboundRoute, Trunk

logger = logging.getLogger(__name__)


def _known_fields(record_type, changes: dict) -> None:
    names = {f.name for f in dataclasses.fields(record_type)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise ValidationErrors([ValidationError(k, f"unknown field; known: {', '.join(sorted(names))}")
                                for k in unknown])


def reference_errors(record, trunks: set[str], numbers: set[str],
                     others: dict[str, set[str]] | None = None) -> list[ValidationError]:
    """What a record names must exist: a route's trunks and extensions, an extension's forward
    targets (checked on every write and on restore). `others`: feature collections' keys, for
    destinations such as "voicemail:1000"."""
    known = {**(others or {}), "extensions": numbers}
    errors = []
    if isinstance(record, InboundRoute):
        errors += destination_reference_errors("destination", record.destination, known)
    if isinstance(record, OutboundRoute):
        for field in ("trunk", "fallback_trunk"):
            name = getattr(record, field)
            if name and name not in trunks:
                errors.append(ValidationError(field, f"no trunk {name}: create it first or pick an existing one "
                                                       "(an analog exchange line is 'line:N', N its FXO port)"))
        missing = [n for n in record.extensions if n not in numbers]
        if missing:
            errors.append(ValidationError("extensions", f"no extension {', '.join(missing)}: create it first or "
                                                        "take it off the list"))
    if isinstance(record, Extension):
        for field in FORWARDS:
            if getattr(record, field):
                errors += destination_reference_errors(field, getattr(record, field), known)
    return errors


def extension_users(db, number: str) -> list[str]:
    """What still names extension `number` (so it cannot be removed), as phrases for the message."""
    from .store import EXTENSIONS
    dest = f"extension:{number}"
    users = []
    dids = [r.did for r in INBOUND_ROUTES.all(db) if r.destination == dest]
    if dids:
        users.append(f"the destination of inbound route(s) {', '.join(dids)}")
    routes = [r.name for r in OUTBOUND_ROUTES.all(db) if number in r.extensions]
    if routes:
        users.append(f"allowed on outbound route(s) {', '.join(routes)}")
    forwarders = [e.number for e in EXTENSIONS.all(db)
                  if e.number != number and dest in (getattr(e, f) for f in FORWARDS)]
    if forwarders:
        users.append(f"the forward target of extension(s) {', '.join(forwarders)}")
    return users


class RoutingStoreMixin:
    """Trunks, inbound and outbound routes on the ConfigStore."""

    # Trunks
    def trunks(self) -> list[Trunk]:
        return self._read_all(TRUNKS)

    def get_trunk(self, name: str) -> Trunk | None:
        return self._read_one(TRUNKS, name)

    def add_trunk(self, name: str, host: str, username: str = "", secret: str = "", register: bool = True,
                  transport: str = "udp") -> Trunk:
        return self._add(TRUNKS, Trunk(name, host, username, secret, register, transport))

    def update_trunk(self, name: str, /, **changes) -> Trunk:
        return self._update(TRUNKS, Trunk, name, changes)

    def remove_trunk(self, name: str) -> None:
        with self._write() as db:
            TRUNKS.require(db, name)
            users = [r.name for r in OUTBOUND_ROUTES.all(db) if name in (r.trunk, r.fallback_trunk)]
            if users:
                raise ValidationError("name", f"trunk {name} is used by outbound route(s) {', '.join(users)}: "
                                              "change or delete those routes first")
            others = self._users_of(db, "trunks", name)
            if others:
                raise ValidationError("name", f"trunk {name} is {'; '.join(others)}: change or delete those first")
            TRUNKS.remove(db, name)
        logger.info("trunk %s removed", name)

    # Inbound routes
    def inbound_routes(self) -> list[InboundRoute]:
        return self._read_all(INBOUND_ROUTES)

    def get_inbound_route(self, did: str) -> InboundRoute | None:
        return self._read_one(INBOUND_ROUTES, did)

    def add_inbound_route(self, did: str, destination: str, name: str = "",
                          match_national: bool = False) -> InboundRoute:
        """`destination` is a destination string ("extension:1000"); a bare extension number is
        taken as that extension."""
        return self._add(INBOUND_ROUTES, InboundRoute(did, destination, name.strip(), match_national))

    def update_inbound_route(self, did: str, /, **changes) -> InboundRoute:
        return self._update(INBOUND_ROUTES, InboundRoute, did, changes)

    def inbound_routes_to(self, destination: str) -> list[InboundRoute]:
        """The inbound routes sending calls to `destination` ("extension:1000", or a bare number)."""
        wanted = coerce_destination(destination)
        return [r for r in self.inbound_routes() if r.destination == wanted]

    def remove_inbound_route(self, did: str) -> None:
        with self._write() as db:
            INBOUND_ROUTES.remove(db, did)
        logger.info("inbound route %s removed", did)

    # Outbound routes
    def outbound_routes(self) -> list[OutboundRoute]:
        return self._read_all(OUTBOUND_ROUTES)

    def get_outbound_route(self, name: str) -> OutboundRoute | None:
        return self._read_one(OUTBOUND_ROUTES, name)

    def add_outbound_route(self, name: str, pattern: str, trunk: str, fallback_trunk: str = "",
                           strip: int = 0, prepend: str = "", caller_id: str = "",
                           extensions: tuple | list = ()) -> OutboundRoute:
        return self._add(OUTBOUND_ROUTES, OutboundRoute(name, pattern, trunk, fallback_trunk, strip, prepend,
                                                        caller_id, extensions))

    def update_outbound_route(self, name: str, /, **changes) -> OutboundRoute:
        return self._update(OUTBOUND_ROUTES, OutboundRoute, name, changes)

    def remove_outbound_route(self, name: str) -> None:
        with self._write() as db:
            OUTBOUND_ROUTES.remove(db, name)
        logger.info("outbound route %s removed", name)

    # Shared steps
    def _read_all(self, collection):
        with self._mutex:
            self._refresh()
            return collection.all(self._db)

    def _read_one(self, collection, key):
        with self._mutex:
            self._refresh()
            return collection.get(self._db, key)

    def _add(self, collection, record):
        record.validate()
        with self._write() as db:
            collection.insert(db, record)
            self._check_references(db, record)
        logger.info("%s %s added", collection.noun, getattr(record, collection.key))
        return record

    def _update(self, collection, record_type, key, changes: dict):
        _known_fields(record_type, changes)
        if collection.key in changes and changes[collection.key] != key:
            raise ValidationError(collection.key, f"cannot be changed; delete and re-create the {collection.noun}")
        with self._write() as db:
            record = dataclasses.replace(collection.require(db, key), **changes)
            record.validate()
            collection.replace(db, record)
            self._check_references(db, record)
        logger.info("%s %s updated (%s)", collection.noun, key, ", ".join(sorted(changes)) or "no change")
        return record

    def _check_references(self, db, record) -> None:
        known = self.known_keys(db)
        errors = reference_errors(record, known["trunks"], known["extensions"], known)
        if errors:
            raise ValidationErrors(errors)
