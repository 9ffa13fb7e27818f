"""ConfigStore: the one way to read and change the box's configuration.

Several processes share config.json (`pbx run` reads it while the CLI or web UI writes it).
Every change is a read-modify-write under an flock on config.lock that first re-reads the file,
so no process overwrites another's change. Reads come from memory, refreshed whenever the
file's (inode, mtime, size) differs from what this store last loaded or wrote.
"""
from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tinydb import TinyDB
from tinydb.table import Document

from .collection import Collection
from .errors import ConfigFileError, ConfigLockTimeout, ValidationError, ValidationErrors
from .migrations import SCHEMA_VERSION, migrate, schema_version
from .model import SETTING_NAMES, Extension, Settings, generate_secret, normalize_name
from .storage import AtomicJSONStorage
from .backup import BackupMixin
from .routing_store import RoutingStoreMixin, extension_users
from .lines import LinesStoreMixin
from .records import RECORD_KINDS, destination_refs, missing_references, users_of

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
LOCK_FILE = "config.lock"
# A write takes milliseconds (see docs/decisions/002); a lock held this long means a stuck process.
LOCK_TIMEOUT_S = 10.0
SETTINGS_DOC_ID = 1

EXTENSIONS = Collection("extensions", Extension, key="number", noun="extension",
                        sort_key=lambda n: (len(n), n))   # numeric order: 201 before 1000


class NoPbxData(ConfigFileError):
    """A read-only command was pointed at a directory that holds no PBX configuration."""


def open_data_dir(data_dir: str | Path, create: bool = True) -> Path:
    """The data directory as a Path, made if missing and create is true.

    Errors are ConfigFileError naming the directory and the fix: a file instead of a directory,
    a directory that cannot be made (a path on /proc, no permission) or, with create=False, a
    directory without config.json - `--data typo` must not silently become a new, empty PBX.
    """
    path = Path(data_dir)
    shown = path.absolute()
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigFileError(f"data directory {shown} is not a directory (it is a file): "
                              "pass --data a directory, or move the file away")
    if not create:
        if not os.path.isfile(path / CONFIG_FILE):
            raise NoPbxData(f"no PBX data in {shown} (no {CONFIG_FILE}): pass --data (or set PBX_DATA to) "
                            f"your PBX's data directory, or make a new PBX there with `pbx run --data {path}`")
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigFileError(f"cannot create data directory {shown}: {e.strerror}; "
                              "pass --data a directory this user can write to") from e
    return path


class ConfigStore(RoutingStoreMixin, LinesStoreMixin, BackupMixin):
    """Extensions and settings here; trunks and routes (routing_store.py), analog line ports
    (lines.py) and backup/restore (backup.py) come from the mixins."""

    def __init__(self, data_dir: str | Path, create: bool = True):
        """Open the configuration in data_dir; with create=False a directory without config.json
        (a mistyped --data) is refused with NoPbxData instead of becoming a new, empty PBX."""
        self.data_dir = open_data_dir(data_dir, create)
        self.path = self.data_dir / CONFIG_FILE
        self._lock_path = self.data_dir / LOCK_FILE
        self._mutex = threading.RLock()          # flock does not exclude threads of one process
        self._storage = AtomicJSONStorage(self.path)
        self._db = self._new_db()
        self.generation = 0
        self._unseen_change = False
        with self._mutex, self._file_lock():
            self._storage.remove_stale_temp_files()
            self._storage.load()
            tables = self._storage.read()
            if schema_version(tables) != SCHEMA_VERSION or self._storage.disk_signature is None:
                self._storage.begin()
                self._storage.replace_all(migrate(self._storage.read(), source=str(self.path)))
                self._storage.commit()
                self._db = self._new_db()

    # Extensions
    def extensions(self) -> list[Extension]:
        with self._mutex:
            self._refresh()
            return EXTENSIONS.all(self._db)

    def get_extension(self, number: str) -> Extension | None:
        with self._mutex:
            self._refresh()
            return EXTENSIONS.get(self._db, number)

    def add_extension(self, number: str, name: str, secret: str | None = None) -> Extension:
        """Add an extension; without a secret a strong one is generated (24 characters)."""
        ext = Extension(number, normalize_name(name), generate_secret() if secret is None else secret)
        ext.validate()
        with self._write() as db:
            EXTENSIONS.insert(db, ext)
        logger.info("extension %s added (%s)", ext.number, ext.name)
        return ext

    def update_extension(self, number: str, *, name: str | None = None, secret: str | None = None,
                         enabled: bool | None = None, dnd: bool | None = None,
                         forward_always: str | None = None, forward_busy: str | None = None,
                         forward_no_answer: str | None = None,
                         external_caller_id: str | None = None, department: str | None = None) -> Extension:
        """Change the given fields; None leaves a field as it is. A forward is a destination
        string ("extension:1001", "external:07700900123", a bare extension number) or "" for none."""
        forwards = {"forward_always": forward_always, "forward_busy": forward_busy,
                    "forward_no_answer": forward_no_answer}
        changes = {k: v for k, v in (("name", normalize_name(name)), ("secret", secret), ("enabled", enabled),
                                     ("dnd", dnd), ("external_caller_id", external_caller_id),
                                     ("department", None if department is None else normalize_name(department)),
                                     *forwards.items())
                   if v is not None}
        with self._write() as db:
            ext = dataclasses.replace(EXTENSIONS.require(db, number), **changes)
            ext.validate()
            EXTENSIONS.replace(db, ext)
            self._check_references(db, ext)
        logger.info("extension %s updated (%s)", number, ", ".join(sorted(changes)) or "no change")
        return ext

    def regenerate_secret(self, number: str) -> Extension:
        with self._write() as db:
            ext = dataclasses.replace(EXTENSIONS.require(db, number), secret=generate_secret())
            EXTENSIONS.replace(db, ext)
        logger.info("extension %s secret regenerated", number)
        return ext

    def remove_extension(self, number: str) -> None:
        with self._write() as db:
            EXTENSIONS.remove(db, number)
            ports = self._line_port_users(db, number)
            if ports:
                raise ValidationError("number", f"extension {number} is used by line port(s) "
                                                f"{', '.join(map(str, ports))}: change or delete those first")
            users = extension_users(db, number) + users_of(self._feature_records(db), "extensions", number)
            if users:
                raise ValidationError("number", f"extension {number} is {'; '.join(users)}: "
                                                "change or delete those first")
        logger.info("extension %s removed", number)

    # Feature records (firmware/config/records.py): ring groups, mailboxes, IVR menus...
    def records(self, table: str) -> list:
        with self._mutex:
            self._refresh()
            return RECORD_KINDS[table].collection.all(self._db)

    def record(self, table: str, key):
        with self._mutex:
            self._refresh()
            return RECORD_KINDS[table].collection.get(self._db, key)

    def add_record(self, table: str, record):
        collection = RECORD_KINDS[table].collection
        record.validate()
        with self._write() as db:
            collection.insert(db, record)
            self._check_feature_references(db, table, record)
        logger.info("%s %s added", collection.noun, getattr(record, collection.key))
        return record

    def update_record(self, table: str, key, /, **changes):
        collection = RECORD_KINDS[table].collection
        names = {f.name for f in dataclasses.fields(collection.record_type)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValidationErrors([ValidationError(k, f"unknown field; known: {', '.join(sorted(names))}")
                                    for k in unknown])
        if collection.key in changes and changes[collection.key] != key:
            raise ValidationError(collection.key, f"cannot be changed; delete and re-create the {collection.noun}")
        with self._write() as db:
            record = dataclasses.replace(collection.require(db, key), **changes)
            record.validate()
            collection.replace(db, record)
            self._check_feature_references(db, table, record)
        logger.info("%s %s updated (%s)", collection.noun, key, ", ".join(sorted(changes)) or "no change")
        return record

    def replace_record(self, table: str, record):
        """Store a whole new version of an existing record (a form that edits every field)."""
        collection = RECORD_KINDS[table].collection
        record.validate()
        with self._write() as db:
            collection.replace(db, record)
            self._check_feature_references(db, table, record)
        logger.info("%s %s updated", collection.noun, getattr(record, collection.key))
        return record

    def remove_record(self, table: str, key) -> None:
        collection = RECORD_KINDS[table].collection
        with self._write() as db:
            collection.remove(db, key)
            users = self._users_of(db, table, key)
            if users:
                raise ValidationError(collection.key, f"{collection.noun} {key} is {'; '.join(users)}: "
                                                      "change or delete those first")
        logger.info("%s %s removed", collection.noun, key)

    def _feature_records(self, db) -> dict[str, list]:
        return {table: kind.collection.all(db) for table, kind in RECORD_KINDS.items()}

    def known_keys(self, db) -> dict[str, set[str]]:
        """Every collection's keys, for reference checks: extensions, trunks and feature records."""
        from .lines import LINE_PORTS, line_trunk_name
        from .routing import TRUNKS
        known = {table: {str(getattr(r, kind.collection.key)) for r in kind.collection.all(db)}
                 for table, kind in RECORD_KINDS.items()}
        known["extensions"] = {e.number for e in EXTENSIONS.all(db)}
        known["trunks"] = {t.name for t in TRUNKS.all(db)} | {line_trunk_name(p.number) for p in LINE_PORTS.all(db)
                                                             if p.kind == "fxo"}
        return known

    def _check_feature_references(self, db, table: str, record) -> None:
        errors = missing_references(RECORD_KINDS[table].references(record), self.known_keys(db))
        if errors:
            raise ValidationErrors(errors)

    def _users_of(self, db, collection: str, key) -> list[str]:
        """What still names collection/key: feature records, inbound routes, extension forwards."""
        from .model import FORWARDS
        from .routing import INBOUND_ROUTES
        key = str(key)
        users = users_of(self._feature_records(db), collection, key)
        dids = [r.did for r in INBOUND_ROUTES.all(db)
                if any(ref.collection == collection and ref.key == key
                       for ref in destination_refs(("destination", r.destination)))]
        if dids:
            users.append(f"the destination of inbound route(s) {', '.join(dids)}")
        forwarders = [e.number for e in EXTENSIONS.all(db)
                      if any(ref.collection == collection and ref.key == key
                             for ref in destination_refs(*((f, getattr(e, f)) for f in FORWARDS)))]
        if forwarders:
            users.append(f"the forward target of extension(s) {', '.join(forwarders)}")
        return users

    # Settings
    def settings(self) -> Settings:
        with self._mutex:
            self._refresh()
            return self._settings(self._db)

    def update_settings(self, **changes) -> Settings:
        """Apply all changes or none; every bad value is reported in one ValidationErrors."""
        unknown = sorted(set(changes) - set(SETTING_NAMES))
        if unknown:
            raise ValidationErrors([ValidationError(k, f"unknown setting; known settings: {', '.join(SETTING_NAMES)}")
                                    for k in unknown])
        if "site_name" in changes:
            changes["site_name"] = normalize_name(changes["site_name"])
        with self._write() as db:
            settings = dataclasses.replace(self._settings(db), **changes)
            settings.validate()
            db.table("settings").upsert(Document(dataclasses.asdict(settings), doc_id=SETTINGS_DOC_ID))
        logger.info("settings changed: %s", ", ".join(f"{k}={v!r}" for k, v in sorted(changes.items())))
        return settings

    @staticmethod
    def _settings(db: TinyDB) -> Settings:
        doc = db.table("settings").get(doc_id=SETTINGS_DOC_ID) or {}
        return Settings(**{k: v for k, v in doc.items() if k in SETTING_NAMES})

    # Change tracking
    def changed(self) -> bool:
        """True once after another process changed config.json since the last call (or the load)."""
        with self._mutex:
            self._refresh()
            seen, self._unseen_change = self._unseen_change, False
            return seen

    def _refresh(self) -> None:
        if self._storage.current_signature() == self._storage.disk_signature:
            return
        self._storage.load(lambda tables: migrate(tables, source=str(self.path)))
        self._db = self._new_db()
        self.generation += 1
        self._unseen_change = True
        logger.info("config reloaded after a change by another process (generation %d)", self.generation)

    @contextmanager
    def _write(self) -> Iterator[TinyDB]:
        with self._mutex, self._file_lock():
            self._refresh()          # inside the lock: build on the latest file, lose nobody's write
            self._storage.begin()
            try:
                yield self._db
                self._storage.commit()
            except BaseException:
                self._storage.rollback()
                self._db = self._new_db()    # TinyDB's query cache may hold the dropped state
                raise
            self.generation += 1

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        try:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise ConfigFileError(
                f"cannot write in data directory {self.data_dir}: {e.strerror}; pass --data a directory "
                "this user can write to, or fix its permissions") from e
        try:
            deadline = time.monotonic() + LOCK_TIMEOUT_S
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise ConfigLockTimeout(
                            f"{self._lock_path} held by another process for {LOCK_TIMEOUT_S:.0f} s; "
                            "find it with `fuser -v` and stop it") from None
                    time.sleep(0.002)
            yield
        finally:
            os.close(fd)     # closing the descriptor releases the flock

    def _new_db(self) -> TinyDB:
        # A fresh TinyDB view after the data under it was swapped: its tables cache query
        # results and the next document id, both of which would be stale.
        storage = self._storage
        return TinyDB(storage=lambda: storage)

    def __repr__(self) -> str:
        return f"ConfigStore({str(self.data_dir)!r}, generation={self.generation})"
