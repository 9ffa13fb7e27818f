"""A TinyDB storage that replaces config.json atomically, so a power cut never leaves half a file.

SD cards on a Pi lose power mid-write; a plain rewrite (TinyDB's JSONStorage truncates and writes
in place) can leave a truncated file. Here every commit writes a temp file in the same directory,
fsyncs it, os.replace()s it onto config.json and fsyncs the directory (so the rename itself is on
disk). A reader therefore sees the whole old file or the whole new one, never a mix.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from tinydb.storages import Storage

from .errors import ConfigFileError

logger = logging.getLogger(__name__)

TEMP_PREFIX = ".config.json."
TEMP_SUFFIX = ".tmp"

Tables = dict[str, dict[str, Any]]   # TinyDB's raw layout: {table: {doc_id: document}}
Signature = tuple[int, int, int]   # (st_ino, st_mtime_ns, st_size): tells another process's write apart


def signature(st: os.stat_result) -> Signature:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class AtomicJSONStorage(Storage):
    """Holds the decoded file in memory; TinyDB reads and writes that copy.

    Writes only happen inside begin()/commit(): TinyDB's table updates go to a private copy,
    and commit() puts the final state on disk in a single atomic replace (rollback() drops it).
    The store decides when to load() from disk (under its lock, or when the file changed).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._data: Tables = {}
        self._pending: Tables | None = None
        self.disk_signature: Signature | None = None

    # TinyDB's Storage interface
    def read(self) -> Tables:
        return self._pending if self._pending is not None else self._data

    def write(self, data: Tables) -> None:
        if self._pending is None:
            raise RuntimeError("config write outside a transaction; use ConfigStore methods")
        self._pending = data

    def close(self) -> None:
        self._pending = None

    # Transactions
    def begin(self) -> None:
        # TinyDB mutates the dict it reads in place: give it a copy so rollback is possible.
        # A JSON round trip is a deep copy 3x faster than copy.deepcopy (C encoder and decoder).
        self._pending = json.loads(json.dumps(self._data))

    def rollback(self) -> None:
        self._pending = None

    def commit(self) -> None:
        data, self._pending = self._pending, None
        if data is None:
            raise RuntimeError("commit without begin")
        self.disk_signature = self._write_file(data)
        self._data = data

    def replace_all(self, data: Tables) -> None:
        """Swap the whole pending state (migrations work on raw tables, not through TinyDB)."""
        if self._pending is None:
            raise RuntimeError("config write outside a transaction; use ConfigStore methods")
        self._pending = data

    # Disk
    def current_signature(self) -> Signature | None:
        try:
            return signature(os.stat(self.path))
        except FileNotFoundError:
            return None

    def load(self, transform: Callable[[Tables], Tables] = lambda t: t) -> None:
        """Read config.json into memory (a missing or empty file is an empty database).

        `transform` (the schema migration) runs before anything is replaced, so a file that
        cannot be used leaves the previous state in place.
        """
        try:
            with open(self.path, "rb") as f:
                # fstat the descriptor we read from, so signature and content belong together.
                sig = signature(os.fstat(f.fileno()))
                raw = f.read()
        except FileNotFoundError:
            self._data, self.disk_signature = transform({}), None
            return
        except OSError as e:
            raise ConfigFileError(f"cannot read {self.path}: {e.strerror}; check its permissions") from e
        self._data = transform(self._decode(raw))
        self.disk_signature = sig

    def _decode(self, raw: bytes) -> Tables:
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigFileError(
                f"{self.path} is not valid JSON ({e}); restore it from a backup, "
                "or move it away to start with an empty configuration") from e
        if not isinstance(data, dict) or not all(isinstance(t, dict) for t in data.values()):
            raise ConfigFileError(
                f"{self.path} is JSON but not a configuration database (expected an object of tables); "
                "restore it from a backup, or move it away to start empty")
        return data

    def _write_file(self, data: Tables) -> Signature:
        # Compact on purpose: with indent= json falls back to its pure-Python encoder (5x slower);
        # read it with `python -m json.tool config.json`.
        payload = json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
        directory = self.path.parent
        # mkstemp creates the file 0600: it holds SIP secrets.
        try:
            return self._replace_file(directory, payload)
        except OSError as e:
            raise ConfigFileError(
                f"cannot write {self.path}: {e.strerror}; check free space and permissions of {directory}") from e

    def _replace_file(self, directory: Path, payload: bytes) -> Signature:
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        _fsync_dir(directory)
        return signature(os.stat(self.path))

    def remove_stale_temp_files(self) -> int:
        """Delete temp files left by a writer killed mid-write (call only while holding the lock)."""
        removed = 0
        for p in self.path.parent.glob(TEMP_PREFIX + "*" + TEMP_SUFFIX):
            _unlink_quietly(str(p))
            removed += 1
        if removed:
            logger.info("removed %d temp file(s) left by an interrupted config write", removed)
        return removed


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
