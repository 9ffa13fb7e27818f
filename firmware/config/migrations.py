"""Schema versions of config.json and the steps that upgrade one version to the next.

The version lives in the "meta" table. MIGRATIONS[n] turns a version-n database into version n+1.
Migrations work on the raw tables ({table: {doc_id: document}}), not on the dataclasses, so an
old step keeps working after the model changes. Add a step at the end; never edit a shipped one.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Callable

from .errors import ConfigFileError, SchemaVersionError

logger = logging.getLogger(__name__)

Tables = dict[str, dict[str, Any]]
Migration = Callable[[Tables], Tables]

META_TABLE = "meta"
META_DOC_ID = "1"


def _v0_to_v1(tables: Tables) -> Tables:
    """Initial layout: extensions keyed by number, one settings document."""
    tables.setdefault("extensions", {})
    tables.setdefault("settings", {})
    return tables


def _v1_to_v2(tables: Tables) -> Tables:
    """Typed destinations: an inbound route's bare extension number "1000" becomes "extension:1000".

    Extensions gain dnd, forwards and external_caller_id, and outbound routes caller_id and
    extensions (who may use them); their defaults (off, empty, everyone) need no rewrite.
    """
    for doc in tables.get("inbound_routes", {}).values():
        destination = doc.get("destination") if isinstance(doc, dict) else None
        if isinstance(destination, str) and destination and ":" not in destination:
            doc["destination"] = f"extension:{destination}"
    return tables


MIGRATIONS: list[Migration] = [_v0_to_v1, _v1_to_v2]
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(tables: Tables) -> int:
    """The version recorded in the meta table; 0 for a new (empty) database."""
    meta = tables.get(META_TABLE, {}).get(META_DOC_ID, {})
    version = meta.get("schema_version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ConfigFileError(f"meta.schema_version is {version!r}, not a version number; restore a backup")
    return version


def migrate(tables: Tables, migrations: list[Migration] = MIGRATIONS, source: str = "config.json") -> Tables:
    """Bring tables up to len(migrations); refuse a database written by newer firmware."""
    known = len(migrations)
    version = schema_version(tables)
    if version > known:
        raise SchemaVersionError(
            f"{source} has schema version {version} but this firmware knows up to {known}; "
            "update the firmware, or restore a backup made by this version")
    for step in range(version, known):
        tables = migrations[step](tables)
        tables.setdefault(META_TABLE, {})[META_DOC_ID] = {"schema_version": step + 1}
        logger.info("config schema migrated from version %d to %d", step, step + 1)
    return tables


def migrate_backup(doc: object) -> object:
    """A backup document made by older firmware, brought up to SCHEMA_VERSION like config.json.

    A backup holds each table as a list of records and settings as one object; it is turned into
    tables, migrated by the same steps, and turned back. Anything that is not an older backup
    (wrong format, a newer or nonsense version) is returned unchanged for parse_backup to refuse.
    """
    if not isinstance(doc, dict):
        return doc
    version = doc.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version < SCHEMA_VERSION:
        return doc
    doc = copy.deepcopy(doc)       # the steps change records in place; leave the caller's alone
    lists = [name for name, value in doc.items() if isinstance(value, list)]
    tables: Tables = {name: {str(i + 1): item for i, item in enumerate(doc[name])} for name in lists}
    if isinstance(doc.get("settings"), dict):
        tables["settings"] = {"1": doc["settings"]}
    tables[META_TABLE] = {META_DOC_ID: {"schema_version": version}}
    tables = migrate(tables, source="the backup")
    upgraded = dict(doc, schema_version=SCHEMA_VERSION)
    for name in lists:
        upgraded[name] = list(tables[name].values())
    if "settings" in tables and isinstance(doc.get("settings"), dict):
        upgraded["settings"] = tables["settings"]["1"]
    return upgraded
