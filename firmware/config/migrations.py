"""Schema versions of config.json and the steps that upgrade one version to the next.

The version lives in the "meta" table. MIGRATIONS[n] turns a version-n database into version n+1.
Migrations work on the raw tables ({table: {doc_id: document}}), not on the dataclasses, so an
old step keeps working after the model changes. Add a step at the end; never edit a shipped one.
"""
from __future__ import annotations

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


MIGRATIONS: list[Migration] = [_v0_to_v1]
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
