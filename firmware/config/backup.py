"""The whole configuration as one JSON document: backup download and all-or-nothing restore.

A restore is checked completely (format, schema version, every field of every record, duplicate
keys, references between records) before anything is written; then it replaces the configuration
in one atomic file write. A bad file therefore changes nothing.
"""
from __future__ import annotations

import dataclasses
import logging
import time

from tinydb.table import Document

from .errors import ValidationError, ValidationErrors
from .migrations import SCHEMA_VERSION, migrate_backup
from .model import Extension, Settings
from .routing import INBOUND_ROUTES, OUTBOUND_ROUTES, TRUNKS, InboundRoute, OutboundRoute, Trunk
from .routing_store import reference_errors
from .lines import LINE_PORTS, LinePortConfig, line_port_reference_errors
from .records import RECORD_KINDS, missing_references

logger = logging.getLogger(__name__)

FORMAT = "officepbx-config"
MAX_RECORDS = 10_000   # per collection: far above an office, far below what would exhaust memory

# Sections the file carries for another store, which checks and restores them itself: the web
# UI's account store puts the extension users' logins (argon2 hashes only) in "web_logins".
CARRIED_SECTIONS = ("web_logins",)

# section name in the document -> (record type, key field)
SECTIONS = {
    "extensions": (Extension, "number"),
    "trunks": (Trunk, "name"),
    "inbound_routes": (InboundRoute, "did"),
    "outbound_routes": (OutboundRoute, "name"),
    "line_ports": (LinePortConfig, "number"),
}


def _sections() -> dict:
    """The built-in sections and every registered feature collection (firmware/config/records.py)."""
    return {**SECTIONS, **{table: (kind.collection.record_type, kind.collection.key)
                           for table, kind in RECORD_KINDS.items()}}


def _records(doc: dict, section: str, record_type, key: str, errors: list) -> list:
    items = doc.get(section, [])
    if not isinstance(items, list):
        errors.append(ValidationError(section, "must be a list of objects"))
        return []
    if len(items) > MAX_RECORDS:
        errors.append(ValidationError(section, f"has {len(items)} entries; at most {MAX_RECORDS}"))
        return []
    fields = {f.name: f for f in dataclasses.fields(record_type)}
    required = {n for n, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    records, seen = [], set()
    for i, item in enumerate(items):
        where = f"{section}[{i}]"
        if not isinstance(item, dict):
            errors.append(ValidationError(where, "must be an object"))
            continue
        unknown = sorted(set(item) - set(fields))
        missing = sorted(required - set(item))
        if unknown:
            errors.append(ValidationError(where, f"unknown field(s) {', '.join(unknown)}"))
        if missing:
            errors.append(ValidationError(where, f"missing field(s) {', '.join(missing)}"))
        if unknown or missing:
            continue
        record = record_type(**item)
        try:
            record.validate()
        except ValidationErrors as e:
            errors.extend(ValidationError(f"{where}.{err.field}", err.message) for err in e.errors)
            continue
        if getattr(record, key) in seen:
            errors.append(ValidationError(f"{where}.{key}", f"{getattr(record, key)} appears twice"))
            continue
        seen.add(getattr(record, key))
        records.append(record)
    return records


def parse_backup(doc: object) -> tuple[Settings, dict[str, list]]:
    """Check a backup document completely; raise ValidationErrors listing every problem.
    A backup made by older firmware is migrated first, as config.json would be."""
    doc = migrate_backup(doc)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValidationErrors([ValidationError(
            "file", f"not a configuration backup of this PBX (expected \"format\": \"{FORMAT}\"); "
                    "use a file downloaded from the System page")])
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ValidationErrors([ValidationError(
            "schema_version", f"backup has schema version {version!r}, this firmware uses {SCHEMA_VERSION}; "
                              "restore it on the firmware that made it")])
    errors: list[ValidationError] = []
    sections = _sections()
    unknown = sorted(set(doc) - set(sections) - set(CARRIED_SECTIONS)
                     - {"format", "schema_version", "exported", "settings"})
    if unknown:
        errors.append(ValidationError("file", f"unknown section(s) {', '.join(unknown)}"))
    raw_settings = doc.get("settings", {})
    settings = Settings()
    if not isinstance(raw_settings, dict):
        errors.append(ValidationError("settings", "must be an object"))
    else:
        names = {f.name for f in dataclasses.fields(Settings)}
        bad = sorted(set(raw_settings) - names)
        if bad:
            errors.append(ValidationError("settings", f"unknown setting(s) {', '.join(bad)}"))
        else:
            settings = Settings(**raw_settings)
            try:
                settings.validate()
            except ValidationErrors as e:
                errors.extend(ValidationError(f"settings.{err.field}", err.message) for err in e.errors)
    records = {name: _records(doc, name, rt, key, errors) for name, (rt, key) in sections.items()}
    trunks = {t.name for t in records["trunks"]}
    numbers = {e.number for e in records["extensions"]}
    known = {table: {str(getattr(r, sections[table][1])) for r in records[table]} for table in RECORD_KINDS}
    known.update(extensions=numbers, trunks=trunks)
    for section in ("inbound_routes", "outbound_routes", "extensions"):
        key = SECTIONS[section][1]
        for record in records[section]:
            errors.extend(ValidationError(f"{section}[{getattr(record, key)}].{err.field}", err.message)
                          for err in reference_errors(record, trunks, numbers, known))
    for table, kind in RECORD_KINDS.items():
        for record in records[table]:
            errors.extend(ValidationError(f"{table}[{getattr(record, kind.collection.key)}].{err.field}", err.message)
                          for err in missing_references(kind.references(record), known))
    for port in records["line_ports"]:
        errors.extend(ValidationError(f"line_ports[{port.number}].{err.field}", err.message)
                      for err in line_port_reference_errors(port, records["line_ports"], numbers))
    if errors:
        raise ValidationErrors(errors)
    return settings, records


class BackupMixin:
    """export_config() / import_config(doc) on the ConfigStore."""

    def export_config(self) -> dict:
        from .store import EXTENSIONS
        with self._mutex:
            self._refresh()
            db = self._db
            return {
                "format": FORMAT,
                "schema_version": SCHEMA_VERSION,
                "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "settings": dataclasses.asdict(self._settings(db)),
                "extensions": [dataclasses.asdict(r) for r in EXTENSIONS.all(db)],
                "trunks": [dataclasses.asdict(r) for r in TRUNKS.all(db)],
                "inbound_routes": [dataclasses.asdict(r) for r in INBOUND_ROUTES.all(db)],
                "outbound_routes": [dataclasses.asdict(r) for r in OUTBOUND_ROUTES.all(db)],
                "line_ports": [dataclasses.asdict(r) for r in LINE_PORTS.all(db)],
                **{table: [dataclasses.asdict(r) for r in kind.collection.all(db)]
                   for table, kind in RECORD_KINDS.items()},
            }

    def import_config(self, doc: object) -> dict[str, int]:
        """Replace the whole configuration with a checked backup; returns records per section."""
        from .store import EXTENSIONS, SETTINGS_DOC_ID
        settings, records = parse_backup(doc)
        collections = {"extensions": EXTENSIONS, "trunks": TRUNKS,
                       "inbound_routes": INBOUND_ROUTES, "outbound_routes": OUTBOUND_ROUTES,
                       "line_ports": LINE_PORTS,
                       **{table: kind.collection for table, kind in RECORD_KINDS.items()}}
        with self._write() as db:
            for section, collection in collections.items():
                db.table(collection.table).truncate()
                for record in records[section]:
                    collection.insert(db, record)
            db.table("settings").upsert(Document(dataclasses.asdict(settings), doc_id=SETTINGS_DOC_ID))
        counts = {section: len(items) for section, items in records.items()}
        logger.info("configuration restored from backup (%s)",
                    ", ".join(f"{n} {s}" for s, n in counts.items()))
        return counts
