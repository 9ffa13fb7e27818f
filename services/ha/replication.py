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
        last_sent_mtime, last_push = None, 0.0
        while True:
            await asyncio.sleep(POLL_S)
            if self.state_of() != "MASTER":
                last_sent_mtime = None
                continue
            try:
                mtime = self.config_path.stat().st_mtime
            except FileNotFoundError:
                continue
            now = time.monotonic()
            if mtime == last_sent_mtime and now - last_push < PUSH_EVERY_S:
                continue
            if await self._push(mtime):
                last_sent_mtime, last_push = mtime, now

    async def _push(self, mtime: float) -> bool:
        doc = await asyncio.get_running_loop().run_in_executor(None, self.store.export_config)
        frame = seal(self.ha.secret, {"kind": "config", "sent": time.time(), "changed": mtime, "doc": doc})
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.ha.peer_addr, REPLICATION_PORT, local_addr=(self.ha.node_addr, 0)), 1.0)
        except (OSError, asyncio.TimeoutError):
            return False                     # the peer is down: try again next round
        try:
            writer.write(frame)
            await writer.drain()
            await asyncio.wait_for(reader.read(2), 2.0)      # "ok"
            self.sent += 1
            return True
        except (OSError, asyncio.TimeoutError):
            return False
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
            await asyncio.get_running_loop().run_in_executor(None, self._apply, payload)
            writer.write(b"ok")
            await writer.drain()
        except (ValueError, asyncio.IncompleteReadError, asyncio.TimeoutError, OSError) as exc:
            log.warning("ha: replication frame from %s refused: %s", peer and peer[0], exc)
        finally:
            writer.close()

    def _apply(self, payload: dict) -> None:
        if payload.get("kind") != "config":
            return
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
