"""Voicemail and recordings shipped from the active box to the standby (issue 14, item 2).

What travels: every file under DATA/voicemail/ and DATA/recordings/ (messages, greetings, call
recordings), named by its path relative to DATA, with its size, mtime and sha256, in chunks of
at most CHUNK bytes (one sealed frame each, services/ha/replication.py). The standby writes a
chunk to DATA/ha/incoming/<name>.part, checks the whole file's size and sha256 after the last
one, sets the sender's mtime, fsyncs and renames it into place: a file is there whole or not at
all. The standby keeps an index of what it holds from the peer (DATA/ha/files.json); a file the
active box no longer has is deleted on the standby only when it is in that index, so a file the
standby wrote itself (while it was active) and has not shipped yet is never lost to a deletion.

What is not a file to ship: temporary names (rec-*.wav while a message is recorded, *.tmp,
*.part, dot files) and the voicemail index (messages.sqlite: its rows travel as rows, see
`voicemail_rows`). A call recording is written while the call runs: it is shipped once it has
not changed for SETTLE_S (the call ended), not at every write.

Why the voicemail index travels as rows and is not rebuilt from the files: the rows hold what
the files do not (who called, when, new or heard, the e-mail's id), and the message files are
named after the row id (msg-<id>.wav), so the standby replaces its table with the active box's
(one transaction) after the files it names are there.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import sqlite3
from contextlib import closing
from pathlib import Path

log = logging.getLogger(__name__)

ROOTS = ("voicemail", "recordings")
CHUNK = 1024 * 1024                 # raw bytes per frame (base64 in the sealed JSON: ~1.4 MB)
ROUND_BYTES = 8 * CHUNK             # at most this much per sending round: config pushes are not held up
SETTLE_S = {"voicemail": 0.0, "recordings": 1.0}
_SKIP_SUFFIXES = (".tmp", ".part", ".sqlite", ".sqlite-wal", ".sqlite-shm", ".sqlite-journal")


def _skipped(root: str, name: str) -> bool:
    return (name.startswith(".") or name.endswith(_SKIP_SUFFIXES)
            or (root == "voicemail" and name.startswith("rec-")))


def scan(data_dir) -> dict[str, tuple[int, int]]:
    """{path relative to DATA: (size, mtime_ns)} of every file to replicate."""
    base = Path(data_dir)
    found: dict[str, tuple[int, int]] = {}
    for root in ROOTS:
        top = base / root
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if _skipped(root, name):
                    continue
                path = Path(dirpath) / name
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                found[path.relative_to(base).as_posix()] = (st.st_size, st.st_mtime_ns)
    return found


def settled(rel: str, mtime_ns: int, now: float) -> bool:
    return now - mtime_ns / 1e9 >= SETTLE_S.get(rel.split("/", 1)[0], 0.0)


def check_rel(rel) -> str:
    """A path from the peer, refused unless it is a plain file path under one of ROOTS."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel or rel.startswith("/"):
        raise ValueError(f"file path {rel!r} refused")
    parts = rel.split("/")
    if len(parts) < 2 or parts[0] not in ROOTS or any(p in ("", ".", "..") for p in parts) \
            or _skipped(parts[0], parts[-1]):
        raise ValueError(f"file path {rel!r} refused: not a voicemail or recording file")
    return rel


def read_chunks(data_dir, rel: str):
    """(offset, bytes, sha256 hex so far) of a file, chunk by chunk; the last one carries the
    digest of everything read (what the standby checks)."""
    digest = hashlib.sha256()
    offset = 0
    with open(Path(data_dir) / rel, "rb") as f:
        while True:
            data = f.read(CHUNK)
            digest.update(data)
            yield offset, data, digest.hexdigest()
            offset += len(data)
            if len(data) < CHUNK:
                return


def chunk_frame(rel: str, size: int, mtime_ns: int, offset: int, data: bytes, sha: str | None) -> dict:
    return {"kind": "file", "path": rel, "size": size, "mtime_ns": mtime_ns, "offset": offset,
            "data": base64.b64encode(data).decode(), "sha256": sha}


class FileMirror:
    """The standby's side: stores chunks, keeps the index of files held from the peer."""

    def __init__(self, data_dir):
        self.data_dir = Path(data_dir)
        self.incoming = self.data_dir / "ha" / "incoming"
        self.index_path = self.data_dir / "ha" / "files.json"
        self.stored = 0
        self.deleted = 0

    def _index(self) -> dict[str, list]:
        try:
            return json.loads(self.index_path.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def _save_index(self, index: dict) -> None:
        tmp = self.index_path.with_name("files.json.tmp")
        tmp.write_text(json.dumps(index))
        os.replace(tmp, self.index_path)

    def listing(self) -> dict[str, list]:
        """What this box holds: {path: [size, mtime_ns, 1 if held from the peer else 0]}."""
        index = self._index()
        return {rel: [size, mtime, 1 if rel in index else 0] for rel, (size, mtime) in scan(self.data_dir).items()}

    def chunk(self, frame: dict) -> dict:
        rel = check_rel(frame.get("path"))
        size, mtime_ns, offset = int(frame["size"]), int(frame["mtime_ns"]), int(frame["offset"])
        data = base64.b64decode(frame.get("data") or "")
        self.incoming.mkdir(parents=True, exist_ok=True, mode=0o700)
        part = self.incoming / (hashlib.sha256(rel.encode()).hexdigest()[:32] + ".part")
        if offset == 0:
            mode = "wb"
        else:
            have = part.stat().st_size if part.exists() else -1
            if have != offset:
                return {"restart": True}          # a chunk went missing: the sender starts over
            mode = "ab"
        with open(part, mode) as f:
            f.write(data)
            if offset + len(data) < size:
                return {"have": offset + len(data)}
            f.flush()
            os.fsync(f.fileno())
        digest = hashlib.sha256()
        with open(part, "rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                digest.update(block)
        got = part.stat().st_size
        if got != size or digest.hexdigest() != frame.get("sha256"):
            part.unlink(missing_ok=True)
            log.warning("ha: %s from the active box refused: %d bytes, sha256 differs or size %d expected",
                        rel, got, size)
            return {"restart": True}
        os.utime(part, ns=(mtime_ns, mtime_ns))
        target = self.data_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, target)
        dfd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        index = self._index()
        index[rel] = [size, mtime_ns, digest.hexdigest()]
        self._save_index(index)
        self.stored += 1
        log.info("ha: %s from the active box stored (%d bytes)", rel, size)
        return {"stored": rel}

    def confirm(self, files: dict) -> dict:
        """Files the active box has just like this box (same size and mtime): held from the peer
        from now on, so a later deletion there reaches them."""
        index, local, n = self._index(), scan(self.data_dir), 0
        for rel, (size, mtime_ns) in files.items():
            rel = check_rel(rel)
            if local.get(rel) == (size, mtime_ns):
                index[rel] = [size, mtime_ns, ""]
                n += 1
        self._save_index(index)
        return {"confirmed": n}

    def delete(self, paths: list) -> dict:
        index, local, gone = self._index(), scan(self.data_dir), []
        for rel in paths:
            rel = check_rel(rel)
            held = index.pop(rel, None)
            if held is None:
                continue                              # not from the peer: this box's own file
            if rel in local and tuple(local[rel]) == (held[0], held[1]):
                (self.data_dir / rel).unlink(missing_ok=True)
                gone.append(rel)
                try:
                    (self.data_dir / rel).parent.rmdir()   # a recordings day folder, when empty
                except OSError:
                    pass
        self._save_index(index)
        if gone:
            self.deleted += len(gone)
            log.info("ha: %d file(s) deleted as on the active box: %s", len(gone), ", ".join(gone[:5]))
        return {"deleted": len(gone)}


# ----- the voicemail index ------------------------------------------------------------------------
def voicemail_signature(data_dir):
    sig = []
    for name in ("messages.sqlite", "messages.sqlite-wal"):
        try:
            st = (Path(data_dir) / "voicemail" / name).stat()
            sig.append((st.st_mtime_ns, st.st_size))
        except FileNotFoundError:
            sig.append(None)
    return tuple(sig)


def voicemail_rows(data_dir) -> dict | None:
    """The active box's whole message index (an office's few thousand rows), or None without one."""
    path = Path(data_dir) / "voicemail" / "messages.sqlite"
    if not path.exists():
        return None
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
        try:
            cols = [r[1] for r in db.execute("PRAGMA table_info(messages)")]
            rows = db.execute(f"SELECT {', '.join(cols)} FROM messages ORDER BY id").fetchall()
            seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
        except sqlite3.OperationalError:
            return None
    return {"columns": cols, "rows": [list(r) for r in rows], "seq": seq[0] if seq else 0}


def store_voicemail_rows(data_dir, doc: dict) -> int:
    """Replace this box's message index with the active box's, in one transaction."""
    from services.voicemail import VoicemailStore
    store = VoicemailStore(data_dir)             # makes the table on a standby that never had one
    with closing(store._connect()) as db:
        known = {r[1] for r in db.execute("PRAGMA table_info(messages)")}
        cols = [c for c in doc["columns"] if c in known]
        if "id" not in cols or "mailbox" not in cols:
            raise ValueError("voicemail index without id or mailbox column")
        pick = [doc["columns"].index(c) for c in cols]
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM messages")
            db.executemany(f"INSERT INTO messages ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                           [[row[i] for i in pick] for row in doc["rows"]])
            db.execute("DELETE FROM sqlite_sequence WHERE name = 'messages'")
            db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('messages', ?)", (int(doc.get("seq") or 0),))
            db.execute("COMMIT")
        except Exception:
            db.execute("ROLLBACK")
            raise
    return len(doc["rows"])
