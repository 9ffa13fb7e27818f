"""Configuration replication between the two boxes of a failover pair.

The active box (VRRP MASTER) sends its whole configuration (the backup document of
firmware/config/backup.py: small, and checked completely before it is applied) to the standby
whenever config.json changes, and again every PUSH_EVERY_S seconds, so a standby that was away
catches up at once. The standby applies a document only when it is newer than its own copy (the
sender's config.json mtime travels with it and becomes the receiver's), all-or-nothing
(ConfigStore.import_config); it never sends. A primary coming back after a takeover starts as
BACKUP for a few seconds (keepalived), receives the newer configuration and only then takes
the VIP back (preempt_delay), so the change made meanwhile on the backup is not lost.

Frames travel over TCP to the peer's own address on REPLICATION_PORT, encrypted and authenticated
with AES-256-GCM under a key derived from the pair's shared secret (HKDF-SHA256): the document
holds SIP secrets. A frame that does not decrypt is dropped and logged; a frame older than
MAX_SKEW_S is refused (replay).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

log = logging.getLogger(__name__)

REPLICATION_PORT = 5998
PUSH_EVERY_S = 2.0
POLL_S = 0.2
MAX_FRAME = 8 * 1024 * 1024
MAX_SKEW_S = 120.0
CDR_BATCH = 500
OVERLAP_S = 5.0       # records are re-sent this far back: a call ending out of order is not missed


def _key(secret: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"officepbx-ha-replication",
                info=b"config v1").derive(secret.encode())


def seal(secret: str, payload: dict) -> bytes:
    nonce = os.urandom(12)
    body = AESGCM(_key(secret)).encrypt(nonce, json.dumps(payload).encode(), b"pbx-ha")
    frame = nonce + body
    return struct.pack("!I", len(frame)) + frame


def unseal(secret: str, frame: bytes) -> dict:
    """The payload of a frame (without its length prefix); ValueError when it is not ours."""
    from cryptography.exceptions import InvalidTag
    try:
        plain = AESGCM(_key(secret)).decrypt(frame[:12], frame[12:], b"pbx-ha")
    except InvalidTag:
        raise ValueError("frame not sealed with this pair's secret") from None
    payload = json.loads(plain)
    if abs(time.time() - payload.get("sent", 0)) > MAX_SKEW_S:
        raise ValueError("frame too old (replayed?) or the clocks differ by more than 2 minutes")
    return payload


class Replicator:
    """Runs in `pbx run` on both boxes: a receiver always, a sender while this box is MASTER."""

    def __init__(self, store, data_dir, ha, state_of):
        self.store = store
        self.data_dir = Path(data_dir)
        self.ha = ha
        self.state_of = state_of            # () -> "MASTER" | "BACKUP" | ...
        self.server: asyncio.base_events.Server | None = None
        self.task: asyncio.Task | None = None
        self.applied = 0
        self.sent = 0
        self.peer_mark = 0.0                # end time of the newest call record the peer holds
        self.last_applied: float | None = None

    @property
    def config_path(self) -> Path:
        return self.store.path

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._receive, self.ha.node_addr, REPLICATION_PORT)
        self.task = asyncio.get_running_loop().create_task(self._send_loop())
        log.info("ha: configuration replication on %s:%d, peer %s", self.ha.node_addr, REPLICATION_PORT,
                 self.ha.peer_addr)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.server is not None:
            self.server.close()

    # --- sending (MASTER) ----------------------------------------------------------------------
    async def _send_loop(self) -> None:
        last_sent_mtime, last_push, last_cdr = None, 0.0, None
        while True:
            await asyncio.sleep(POLL_S)
            if self.state_of() != "MASTER":
                last_sent_mtime = last_cdr = None
                continue
            try:
                mtime = self.config_path.stat().st_mtime
            except FileNotFoundError:
                continue
            now = time.monotonic()
            if mtime != last_sent_mtime or now - last_push >= PUSH_EVERY_S:
                if await self._push(mtime):
                    last_sent_mtime, last_push = mtime, now
                    last_cdr = _cdr_signature(self.data_dir)
                continue
            cdr = _cdr_signature(self.data_dir)
            if cdr != last_cdr:               # a call ended: its record goes at once
                await self._ship_cdrs()
                last_cdr = cdr

    async def _push(self, mtime: float) -> bool:
        doc = await asyncio.get_running_loop().run_in_executor(None, self.store.export_config)
        answer = await self._send({"kind": "config", "changed": mtime, "doc": doc})
        if answer is None:
            return False                     # the peer is down: try again next round
        self.sent += 1
        await self._ship_cdrs()
        return True

    async def _ship_cdrs(self) -> None:
        """Call records written here since the peer's mark (what it holds already), a batch at a
        time; the peer skips rows it has, so an overlap costs nothing and a gap never happens."""
        loop = asyncio.get_running_loop()
        for _ in range(20):
            rows = await loop.run_in_executor(None, _cdr_rows_since, self.data_dir, self.peer_mark - OVERLAP_S)
            answer = await self._send({"kind": "cdr", "rows": rows})
            if answer is None:
                return
            self.peer_mark = max(self.peer_mark, float(answer.get("mark", 0.0)))
            if len(rows) < CDR_BATCH:
                return

    async def _send(self, payload: dict) -> dict | None:
        frame = seal(self.ha.secret, {**payload, "sent": time.time()})
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.ha.peer_addr, REPLICATION_PORT, local_addr=(self.ha.node_addr, 0)), 1.0)
        except (OSError, asyncio.TimeoutError):
            return None
        try:
            writer.write(frame)
            await writer.drain()
            return json.loads(await asyncio.wait_for(reader.read(4096), 5.0) or b"{}")
        except (OSError, asyncio.TimeoutError, ValueError):
            return None
        finally:
            writer.close()

    # --- receiving (BACKUP) ----------------------------------------------------------------------
    async def _receive(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            size = struct.unpack("!I", await asyncio.wait_for(reader.readexactly(4), 5.0))[0]
            if size > MAX_FRAME:
                raise ValueError(f"frame of {size} bytes")
            frame = await asyncio.wait_for(reader.readexactly(size), 5.0)
            payload = unseal(self.ha.secret, frame)
            answer = await asyncio.get_running_loop().run_in_executor(None, self._apply, payload)
            writer.write(json.dumps({"ok": True, **(answer or {})}).encode())
            await writer.drain()
        except (ValueError, asyncio.IncompleteReadError, asyncio.TimeoutError, OSError) as exc:
            log.warning("ha: replication frame from %s refused: %s", peer and peer[0], exc)
        finally:
            writer.close()

    def _apply(self, payload: dict) -> dict | None:
        if payload.get("kind") == "cdr":
            return {"mark": _store_cdr_rows(self.data_dir, payload.get("rows") or [])}
        if payload.get("kind") != "config":
            return None
        if self.state_of() == "MASTER":
            log.warning("ha: configuration from the peer ignored: this box is active (two masters?)")
            return
        changed = float(payload["changed"])
        try:
            mine = self.config_path.stat().st_mtime
        except FileNotFoundError:
            mine = 0.0
        # the active box's configuration wins on first contact (a standby that was away, or
        # seeded by hand); after that only a newer one is applied
        if changed <= mine and self.applied:
            return
        counts = self.store.import_config(payload["doc"])
        os.utime(self.config_path, (changed, changed))
        self.applied += 1
        self.last_applied = time.time()
        log.info("ha: configuration from the active box applied (%s)",
                 ", ".join(f"{n} {s}" for s, n in counts.items() if n))


# ----- call records -----------------------------------------------------------------------------
def _cdr_signature(data_dir: Path):
    """Changes whenever a call record is written (SQLite in WAL mode writes the -wal file)."""
    from firmware.cdr import CDR_FILE
    sig = []
    for name in (CDR_FILE, CDR_FILE + "-wal"):
        try:
            st = (Path(data_dir) / name).stat()
            sig.append((st.st_mtime_ns, st.st_size))
        except FileNotFoundError:
            sig.append(None)
    return tuple(sig)


def _cdr_rows_since(data_dir: Path, since: float) -> list[list]:
    """Raw rows (firmware.cdr.COLUMNS) of the calls that ended at or after `since`, oldest first."""
    import sqlite3
    from firmware.cdr import CDR_FILE, COLUMNS
    path = Path(data_dir) / CDR_FILE
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    try:
        rows = db.execute(f"SELECT {COLUMNS} FROM calls WHERE end_time >= ? ORDER BY end_time, id LIMIT ?",
                          (since, CDR_BATCH)).fetchall()
    except sqlite3.OperationalError:         # no table yet (a box that never had a call)
        return []
    finally:
        db.close()
    return [list(r) for r in rows]


def _store_cdr_rows(data_dir: Path, rows: list[list]) -> float:
    """Store the peer's call records that are not here yet (checked as records first); returns
    the newest end time this box holds from the peer (the sender's next mark)."""
    from firmware.cdr import CdrStore, record_from_row
    mark_path = Path(data_dir) / "ha" / "cdr-mark"
    try:
        mark = float(mark_path.read_text())
    except (OSError, ValueError):
        mark = 0.0
    if not rows:
        return mark
    records = [record_from_row(r) for r in rows]
    with CdrStore(data_dir) as cdr:
        with cdr._lock:
            have = {tuple(r) for r in cdr._db.execute(
                "SELECT call_id, linkedid, seq, start_time FROM calls WHERE end_time >= ?",
                (min(float(r.end) for r in records),)).fetchall()}
        new = [r for r in records if (r.call_id, r.linkedid, r.seq, float(r.start)) not in have]
        if new:
            cdr.write_many(new)
            log.info("ha: %d call record(s) from the active box stored", len(new))
    mark = max(mark, max(float(r.end) for r in records))
    mark_path.write_text(f"{mark}")
    return mark
