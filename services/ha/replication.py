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

Call records, voicemail and recordings travel the same way (services/ha/files.py). Both boxes
also send each other a sealed UDP heartbeat every HEARTBEAT_S on the same port, carrying their
VRRP state: it is the peer's health on the status pages, and the gap of a takeover (from the
last heartbeat of the peer as MASTER to this box's MASTER) is measured from it. What was shipped
and acknowledged when is kept in DATA/ha/replication.json for `pbx ha status` and the web UI.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
import time
from pathlib import Path

from . import files
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
HEARTBEAT_S = 0.1
FILES_EVERY_S = 0.5
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

    def __init__(self, store, data_dir, ha, state_of, peer_addr: str | None = None, stats_name: str = "replication.json"):
        self.store = store
        self.data_dir = Path(data_dir)
        self.ha = ha
        self.state_of = state_of            # () -> "MASTER" | "BACKUP" | ...
        # the box this one replicates with: the LAN peer, or (no LAN pair) the remote standby, or
        # on the remote standby the main site's box; a pair's link to its remote standby is a
        # second Replicator sharing this one's sockets (self.remote)
        self.peer_addr = peer_addr or ha.peer_addr or ha.remote_addr
        self.stats_name = stats_name
        self.remote: "Replicator | None" = None
        self.shared: "Replicator | None" = None
        self.started_at = time.time()
        self.main_master_since: float | None = None   # remote standby: the current run of MASTER heartbeats
        self.main_addrs: dict[str, float] = {}         # remote standby: main-site boxes heard (address: when)
        self.main_states: dict[str, tuple] = {}        # ... and what each said last: (state, when)
        self.server: asyncio.base_events.Server | None = None
        self.task: asyncio.Task | None = None
        self.applied = 0
        self.sent = 0
        self.peer_mark = 0.0                # end time of the newest call record the peer holds
        self.last_applied: float | None = None
        self.mirror = files.FileMirror(self.data_dir)
        self.peer_files: dict[str, list] | None = None   # what the peer holds (None: ask it first)
        self.vm_signature = None            # of the voicemail index last acknowledged by the peer
        self.files_pending = 0
        self.hb_transport = None
        self.hb_task: asyncio.Task | None = None
        self.peer_state: str | None = None
        self.peer_heard: float | None = None          # wall time of the peer's last heartbeat
        self.peer_master_heard: float | None = None   # ... of its last heartbeat as MASTER
        self.seen_takeover: float | None = None
        self.peer_role: str | None = None
        self.advert_heard: float | None = None        # monotonic time of the peer's last VRRP advert
        self.peer_master_since: float | None = None   # monotonic: its heartbeats began to say MASTER
        self.vrrp_sock = None
        self.yielding = False                # the tie-breaker's verdict, in DATA/ha/yield for keepalived
        self.calls = None                    # this box's CallService (set by `pbx run`): answered calls
        self.calls_signature = None          # of the answered calls the peer acknowledged
        self.peer_calls: list[dict] = []     # the active box's answered calls (services/ha/calls.py)
        self._last_state: str | None = None
        self.fifo_fd: int | None = None      # keepalived's notify FIFO: state changes in order, at once
        self._fifo_buf = b""
        self._fifo_master_at: float | None = None
        self._fifo_seen = False
        self.fifo_state: str | None = None
        self.stats: dict = {}                # what was shipped/acknowledged/received when (wall time)
        self._stats_written = 0.0
        self._last_stats_doc = None

    def _mark(self, what: str, **more) -> None:
        self.stats[what] = time.time()
        self.stats.update(more)

    def status(self) -> dict:
        """Peer health, replication lag and the last takeover (the "ha" part of `pbx status`)."""
        now = time.time()
        st = _read_json(self.data_dir / "ha" / "state.json")
        doc = {"state": st.get("state", "unknown"), "since": st.get("since"), "role": self.ha.role,
               "vip": self.ha.vip, "node": self.ha.node_addr, "peer": self.peer_addr,
               "site": self.ha.site,
               "peer_state": self.peer_state if self._peer_alive(now) else "unreachable",
               "peer_heard_s": round(now - self.peer_heard, 3) if self.peer_heard else None,
               "files_pending": self.files_pending, "takeovers": st.get("takeovers", 0),
               "replication": {k: self.stats.get(k) for k in (
                   "config_acked", "cdr_acked", "file_acked", "voicemail_index_acked",
                   "config_received", "cdr_received", "file_received", "voicemail_index_received",
                   "calls_acked", "calls_received")},
               "answered_calls_held": len(self.peer_calls), "calls_taken_over": self.stats.get("calls_taken_over"),
               "files_stored": self.mirror.stored, "files_deleted": self.mirror.deleted,
               "last_takeover": self.stats.get("last_takeover"), "yielding": self.yielding,
               "adverts_heard_s": round(time.monotonic() - self.advert_heard, 3) if self.advert_heard else None}
        if self.remote is not None:
            doc["remote"] = self.remote.status()
        return doc

    def _peer_alive(self, now: float) -> bool:
        return self.peer_heard is not None and now - self.peer_heard < 1.0

    def _write_stats(self) -> None:
        """DATA/ha/replication.json for `pbx ha status` when the PBX cannot be asked: written when
        the state, the peer's state or a count changes, else every 10 s (not at every heartbeat)."""
        doc = self.status()
        doc.pop("peer_heard_s")
        doc.pop("adverts_heard_s")
        doc.pop("remote", None)
        steady = json.dumps({k: v for k, v in doc.items() if k != "replication"}, sort_keys=True)
        if steady == self._last_stats_doc and time.monotonic() - self._stats_written < 10.0:
            return
        doc["peer_heard"], doc["written"] = self.peer_heard, time.time()
        self._last_stats_doc, self._stats_written = steady, time.monotonic()
        path = self.data_dir / "ha" / self.stats_name
        tmp = path.with_name(self.stats_name + ".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, path)

    @property
    def config_path(self) -> Path:
        return self.store.path

    @property
    def lan_link(self) -> bool:
        """Replicating with the LAN peer of a VRRP pair (adverts, tie-breaker, answered calls)."""
        return self.ha.vrrp and self.peer_addr == self.ha.peer_addr

    async def start(self, shared: "Replicator | None" = None) -> None:
        loop = asyncio.get_running_loop()
        if not self.lan_link:
            # over the WAN the call's media addresses differ (no VIP): answered calls stay where they are
            self.calls = None
        if shared is not None:                # a pair's link to its remote standby: the pair's sockets
            self.shared, self.hb_transport = shared, shared.hb_transport
        else:
            self.server = await asyncio.start_server(self._receive, self.ha.node_addr, REPLICATION_PORT)
            self.hb_transport, _ = await loop.create_datagram_endpoint(
                lambda: _Heartbeats(self), local_addr=(self.ha.node_addr, REPLICATION_PORT))
        self.task = loop.create_task(self._send_loop())
        self.hb_task = loop.create_task(self._heartbeat_loop())
        if self.lan_link:
            self._listen_adverts(loop)
            self._listen_fifo(loop)
        log.info("ha: replication on %s:%d, peer %s (%s)", self.ha.node_addr, REPLICATION_PORT, self.peer_addr,
                 "LAN pair" if self.lan_link else "remote standby over the WAN" if self.ha.site == "main"
                 else "this box is the remote standby")
        if shared is None and self.lan_link and self.ha.remote_addr:
            self.remote = Replicator(self.store, self.data_dir, self.ha, self.state_of,
                                     peer_addr=self.ha.remote_addr, stats_name="remote-replication.json")
            await self.remote.start(shared=self)

    async def stop(self) -> None:
        if self.remote is not None:
            await self.remote.stop()
        for task in (self.task, self.hb_task):
            if task is not None:
                task.cancel()
        if self.hb_transport is not None and self.shared is None:
            self.hb_transport.close()
        if self.vrrp_sock is not None:
            asyncio.get_running_loop().remove_reader(self.vrrp_sock.fileno())
            self.vrrp_sock.close()
        if self.fifo_fd is not None:
            asyncio.get_running_loop().remove_reader(self.fifo_fd)
            os.close(self.fifo_fd)
            self.fifo_fd = None
        if self.server is not None:
            self.server.close()

    # --- heartbeats (both boxes) and the tie-breaker ----------------------------------------------
    def _listen_adverts(self, loop) -> None:
        """The peer's VRRP adverts, seen beside keepalived (a raw socket gets a copy of each):
        the tie-breaker needs to know whether they still arrive."""
        import socket
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
            sock.setblocking(False)
        except OSError as exc:
            log.warning("ha: VRRP adverts cannot be watched (%s): no tie-breaker for lost adverts", exc)
            return
        self.vrrp_sock = sock

        def readable():
            while True:
                try:
                    _, addr = sock.recvfrom(2048)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    return
                if addr[0] == self.peer_addr:
                    self.advert_heard = time.monotonic()
        loop.add_reader(sock.fileno(), readable)

    def _listen_fifo(self, loop) -> None:
        """keepalived's vrrp_notify_fifo (`INSTANCE "PBX" MASTER 150` lines): the takeover is
        seen the moment keepalived makes it, not when the notify script has started (a Python
        start, 0.1-0.4 s under load): answered calls are rebuilt at once. Opened read-write, so
        a keepalived restart is no end-of-file."""
        path = self.data_dir / "ha" / "notify.fifo"
        try:
            self.fifo_fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        except OSError as exc:
            log.info("ha: keepalived's notify FIFO not read (%s): takeovers seen from its notify script", exc)
            return

        def readable():
            try:
                self._fifo_buf += os.read(self.fifo_fd, 4096)
            except BlockingIOError:
                return
            except OSError:
                return
            *lines, self._fifo_buf = self._fifo_buf.split(b"\n")
            for line in lines:
                words = line.decode(errors="replace").split()
                if len(words) >= 3 and words[0] == "INSTANCE":
                    self._fifo_state(words[2])
        loop.add_reader(self.fifo_fd, readable)

    def current_state(self) -> str | None:
        """This box's VRRP state: keepalived's FIFO (in order, at once) once it has spoken, else
        state.json (written by the notify script, a Python start later)."""
        return self.fifo_state if self._fifo_seen else self.state_of()

    def _fifo_state(self, state: str) -> None:
        self._fifo_seen = True
        self.fifo_state = state
        if state == "MASTER":
            self._fifo_master_at = time.time()
        self._take_calls_over(state)

    def _tie_break(self) -> None:
        from firmware.ha import loses_election, should_yield
        if self.vrrp_sock is None:
            return
        now, mono = time.time(), time.monotonic()
        # adverts are missed from the later of the last one and the peer becoming MASTER (a
        # backup sends none: a peer that just took over has not had time to send one)
        since = max((t for t in (self.advert_heard, self.peer_master_since) if t is not None), default=None)
        verdict = should_yield(
            peer_state=self.peer_state, peer_heard_age=now - self.peer_heard if self.peer_heard else None,
            advert_age=mono - since if since is not None else None,
            loses=loses_election(self.ha.role, self.ha.node_addr, self.peer_role, self.peer_addr))
        if verdict == self.yielding:
            return
        path = self.data_dir / "ha" / "yield"
        path.write_text("1\n" if verdict else "0\n")    # in place: keepalived reads it on close (inotify)
        self.yielding = verdict
        if verdict:
            log.warning("ha: the peer %s is active (its heartbeat says so) but its VRRP adverts do not "
                        "arrive: this box yields (FAULT) so there is one active box", self.peer_addr)
            self.stats["yields"] = self.stats.get("yields", 0) + 1
        else:
            log.info("ha: tie-breaker released (the peer's adverts arrive again, or the peer is gone)")

    async def _heartbeat_loop(self) -> None:
        while True:
            # the FIFO's state: a box on its way down says STOP at once, so the peer's tie-breaker
            # does not take heartbeats of a stale MASTER for lost adverts
            state = self.current_state()
            try:
                frame = seal(self.ha.secret, {"kind": "hb", "state": state, "role": self.ha.role,
                                              "site": self.ha.site, "sent": time.time()})[4:]
                for addr in self._heartbeat_targets():
                    try:
                        self.hb_transport.sendto(frame, (addr, REPLICATION_PORT))
                    except OSError:
                        pass                  # no route while the link is down: next time
            except OSError:
                pass
            if self.ha.site == "remote":
                try:
                    self._remote_tick()
                except OSError as exc:
                    log.error("ha: remote standby's state not written: %s", exc)
            try:
                self._tie_break()
            except OSError as exc:
                log.error("ha: tie-breaker verdict not written: %s", exc)
            if self.shared is None:           # a pair's remote link: the LAN link notes the takeover
                self._note_takeover(self.state_of())
            if not self._fifo_seen and self.lan_link:           # keepalived's FIFO, once it speaks, is the one in order
                self._take_calls_over(state)
            try:
                self._write_stats()
            except OSError as exc:
                log.debug("ha: replication status not written: %s", exc)
            await asyncio.sleep(HEARTBEAT_S)

    def _heartbeat_targets(self) -> list[str]:
        """The peer; on the remote standby also every main-site box heard lately (a pair's
        active box may be either of them)."""
        targets = [self.peer_addr]
        if self.ha.site == "remote":
            now = time.time()
            targets += [a for a, t in self.main_addrs.items() if a != self.peer_addr and now - t < 5.0]
        return targets

    def _remote_tick(self) -> None:
        """The remote standby's takeover and handback (firmware/ha.py remote_active): its state
        goes into DATA/ha/state.json as keepalived's notify would write it, so `pbx run` moves
        the trunk registrations exactly as for a LAN pair."""
        from firmware.ha import remote_active
        from .notify import record_state
        now = time.time()
        active = self.state_of() == "MASTER"
        want = remote_active(active=active, now=now, started=self.started_at,
                             master_heard=self.peer_master_heard, master_since=self.main_master_since)
        if want == active:
            return
        if want:
            before = self.peer_master_heard
            log.warning("ha: the main site is gone (%s): this remote standby takes over the trunks and calls",
                        f"no heartbeat of an active box for {now - before:.1f} s" if before
                        else "no heartbeat of an active box since this box started")
        else:
            log.info("ha: the main site's active box is back (heartbeats steady for %.1f s): handing back",
                     now - (self.main_master_since or now))
        record_state(self.data_dir, "MASTER" if want else "BACKUP")

    def _heard(self, frame: bytes, addr: str | None = None) -> None:
        try:
            payload = unseal(self.ha.secret, frame)
        except ValueError:
            return
        if payload.get("kind") != "hb":
            return
        now = time.time()
        if self.ha.site == "remote":
            self._heard_main_site(payload, addr or self.peer_addr, now)
            return
        if self.peer_state != payload.get("state") or not self._peer_alive(now):
            log.info("ha: peer %s is %s", addr or self.peer_addr, payload.get("state"))
        if payload.get("state") == "MASTER" and self.peer_state != "MASTER":
            self.peer_master_since = time.monotonic()
        self.peer_state, self.peer_heard = payload.get("state"), now
        self.peer_role = payload.get("role")
        try:
            self._tie_break()                 # at once: a heartbeat without adverts is the signal
        except OSError as exc:
            log.error("ha: tie-breaker verdict not written: %s", exc)
        if self.peer_state == "MASTER":
            self.peer_master_heard = now

    def _heard_main_site(self, payload: dict, addr: str, now: float) -> None:
        """The remote standby hears every office box (either of a pair may be the active one):
        the main site is MASTER while any of them said so within the last second."""
        from firmware.ha import REMOTE_STEADY_GAP_S
        if payload.get("site") == "remote":
            return                            # another remote standby: not the main site
        state = payload.get("state")
        before = self.main_states.get(addr)
        if before is None or before[0] != state or now - before[1] > 1.0:
            log.info("ha: main site box %s is %s", addr, state)
        self.main_states[addr] = (state, now)
        self.main_addrs[addr] = now
        if state == "MASTER":
            if self.peer_master_heard is None or now - self.peer_master_heard > REMOTE_STEADY_GAP_S:
                self.main_master_since = now
            self.peer_master_heard = now
        master = any(s == "MASTER" and now - t < 1.0 for s, t in self.main_states.values())
        self.peer_state, self.peer_heard = ("MASTER" if master else state), now
        self.peer_role = payload.get("role")

    def _take_calls_over(self, state: str | None) -> None:
        """Becoming MASTER: the answered calls the active box last told us of go on here.
        Leaving MASTER: this box's answered calls go on at the peer, they end here silently."""
        became = state == "MASTER" and self._last_state != "MASTER"
        left = state in ("BACKUP", "FAULT", "STOP") and self._last_state == "MASTER"
        if state is not None:
            self._last_state = state
        if left and self.calls is not None:
            from . import calls
            try:
                n = calls.release(self.calls)
            except Exception:
                log.exception("ha: answered calls not released")
                n = 0
            if n:
                log.info("ha: %d answered call(s) left to the peer", n)
        if not became or not self.peer_calls or self.calls is None:
            return
        from . import calls
        taken, self.peer_calls = self.peer_calls, []

        async def run():
            n = await calls.adopt(self.calls, taken)
            self.stats["calls_taken_over"] = n
            log.info("ha: %d of %d answered call(s) taken over", n, len(taken))
        asyncio.get_running_loop().create_task(run())

    def _note_takeover(self, state: str | None) -> None:
        """A new MASTER state: the gap is from the peer's last heartbeat as MASTER (or its last
        heartbeat at all) to this box's takeover as keepalived's notify recorded it."""
        if state != "MASTER":
            return
        st = _read_json(self.data_dir / "ha" / "state.json")
        at = st.get("last_takeover")
        if not at or at == self.seen_takeover:
            return
        self.seen_takeover = at
        if self._fifo_master_at and 0 <= at - self._fifo_master_at < 5.0:
            at = self._fifo_master_at          # keepalived's own moment, not the notify script's
        before = self.peer_master_heard or self.peer_heard
        gap = round(at - before, 3) if before and before <= at else None
        self.stats["last_takeover"] = {"at": at, "gap_s": gap, "peer_last_heard": before}
        log.info("ha: this box took over%s", f", {gap * 1000:.0f} ms after the peer's last heartbeat"
                 if gap is not None else " (no heartbeat of the peer heard before)")

    # --- sending (MASTER) ----------------------------------------------------------------------
    async def _send_loop(self) -> None:
        last_sent_mtime, last_push, last_cdr, last_files = None, 0.0, None, 0.0
        while True:
            await asyncio.sleep(POLL_S)
            if self.state_of() != "MASTER":
                last_sent_mtime = last_cdr = None
                self.peer_files = self.vm_signature = self.calls_signature = None
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
                else:
                    continue
            cdr = _cdr_signature(self.data_dir)
            if cdr != last_cdr:               # a call ended: its record goes at once
                await self._ship_cdrs()
                last_cdr = cdr
            if self.calls is not None:
                await self._ship_calls()
            if now - last_files >= FILES_EVERY_S or self.files_pending:
                last_files = now
                try:
                    await self._ship_files()
                except OSError as exc:
                    log.warning("ha: files not shipped this round: %s", exc)

    async def _ship_calls(self) -> None:
        """The answered calls, when they changed (answered, ended, a CSeq moved)."""
        from . import calls
        try:
            snap = calls.snapshot(self.calls)
        except Exception:                     # a call in an odd state must not stop replication
            log.exception("ha: answered calls not listed")
            return
        signature = json.dumps(snap, sort_keys=True)
        if signature == self.calls_signature:
            return
        answer = await self._send({"kind": "calls", "calls": snap})
        if answer is not None and answer.get("ok"):
            self.calls_signature = signature
            self._mark("calls_acked")

    async def _ship_files(self) -> None:
        """Voicemail and recordings the peer does not have (or has older), then deletions of
        what it holds from here and is gone here, then the voicemail index once the message
        files it names are there."""
        loop = asyncio.get_running_loop()
        if self.peer_files is None:
            answer = await self._send({"kind": "files-list"})
            if answer is None or "files" not in answer:
                return
            self.peer_files = answer["files"]
        peer = self.peer_files
        local = await loop.run_in_executor(None, files.scan, self.data_dir)
        same = {rel: list(v) for rel, v in local.items() if rel in peer and peer[rel][:2] == list(v) and not peer[rel][2]}
        if same:
            if await self._send({"kind": "files-confirm", "files": same}) is None:
                return
            for rel in same:
                peer[rel][2] = 1
        todo = sorted((rel for rel, v in local.items() if (peer.get(rel) or [None, None])[:2] != list(v)),
                      key=lambda rel: (not rel.startswith("voicemail/"), local[rel][1]))
        now, budget, pending, vm_pending = time.time(), files.ROUND_BYTES, 0, False
        for rel in todo:
            size, mtime_ns = local[rel]
            if budget <= 0 or not files.settled(rel, mtime_ns, now):
                pending += 1
                vm_pending = vm_pending or rel.startswith("voicemail/")
                continue
            shipped = await self._ship_file(rel, size, mtime_ns)
            if shipped is None:               # the peer is unreachable: next round
                self.files_pending = len(todo)
                return
            if shipped:
                peer[rel] = [size, mtime_ns, 1]
                self._mark("file_acked")
            else:
                pending += 1
                vm_pending = vm_pending or rel.startswith("voicemail/")
            budget -= size
        gone = [rel for rel, v in peer.items() if v[2] and rel not in local]
        if gone:
            if await self._send({"kind": "files-delete", "paths": gone}) is None:
                return
            for rel in gone:
                peer.pop(rel, None)
            self._mark("file_acked")
        self.files_pending = pending
        if vm_pending:
            return
        signature = files.voicemail_signature(self.data_dir)
        if signature != self.vm_signature:
            doc = await loop.run_in_executor(None, files.voicemail_rows, self.data_dir)
            if doc is None:
                self.vm_signature = signature
                return
            answer = await self._send({"kind": "voicemail-index", **doc})
            if answer is not None and answer.get("ok"):
                self.vm_signature = signature
                self._mark("voicemail_index_acked")

    async def _ship_file(self, rel: str, size: int, mtime_ns: int) -> bool | None:
        """True when the peer stored it whole, False to try again later, None: peer down."""
        loop = asyncio.get_running_loop()
        try:
            chunks = files.read_chunks(self.data_dir, rel)
            while True:
                item = await loop.run_in_executor(None, next, chunks, None)
                if item is None:
                    return False              # it shrank while being read: next round
                offset, data, sha = item
                answer = await self._send(files.chunk_frame(rel, size, mtime_ns, offset, data, sha))
                if answer is None:
                    return None
                if answer.get("stored"):
                    return True
                if answer.get("restart") or not answer.get("ok"):
                    return False
        except FileNotFoundError:
            return False                      # deleted meanwhile: the deletion follows

    async def _push(self, mtime: float) -> bool:
        doc = await asyncio.get_running_loop().run_in_executor(None, self.store.export_config)
        answer = await self._send({"kind": "config", "changed": mtime, "doc": doc, "site": self.ha.site})
        if answer is None:
            return False                     # the peer is down: try again next round
        self.sent += 1
        self._mark("config_acked")
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
            self._mark("cdr_acked")
            self.peer_mark = max(self.peer_mark, float(answer.get("mark", 0.0)))
            if len(rows) < CDR_BATCH:
                return

    async def _send(self, payload: dict) -> dict | None:
        frame = seal(self.ha.secret, {**payload, "sent": time.time()})
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.peer_addr, REPLICATION_PORT, local_addr=(self.ha.node_addr, 0)), 1.0)
        except (OSError, asyncio.TimeoutError):
            return None
        try:
            writer.write(frame)
            await writer.drain()
            answer = json.loads(await asyncio.wait_for(reader.read(), 10.0) or b"{}")
        except (OSError, asyncio.TimeoutError, ValueError):
            return None
        finally:
            writer.close()
        self._mark("peer_acked")
        return answer

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
        kind = payload.get("kind")
        if kind == "cdr":
            self._mark("cdr_received")
            return {"mark": _store_cdr_rows(self.data_dir, payload.get("rows") or [])}
        if kind == "calls":
            if self.state_of() == "MASTER":
                return {"ok": False, "why": "this box is active"}
            self.peer_calls = list(payload.get("calls") or [])
            self._mark("calls_received")
            return {"calls": len(self.peer_calls)}
        if kind in ("files-list", "file", "files-confirm", "files-delete", "voicemail-index"):
            if self.state_of() == "MASTER":
                self._ignored_while_active(kind)
                return {"ok": False, "why": "this box is active"}
            if kind == "files-list":
                return {"files": self.mirror.listing()}
            if kind == "file":
                answer = self.mirror.chunk(payload)
                if answer.get("stored"):
                    self._mark("file_received")
                return answer
            if kind == "files-confirm":
                return self.mirror.confirm(payload.get("files") or {})
            if kind == "files-delete":
                self._mark("file_received")
                return self.mirror.delete(payload.get("paths") or [])
            n = files.store_voicemail_rows(self.data_dir, payload)
            self._mark("voicemail_index_received")
            log.info("ha: voicemail index from the active box applied (%d message(s))", n)
            return {"messages": n}
        if kind != "config":
            return None
        self._mark("config_received")
        changed = float(payload["changed"])
        try:
            mine = self.config_path.stat().st_mtime
        except FileNotFoundError:
            mine = 0.0
        carried_back = False
        if self.state_of() == "MASTER":
            # An office box takes one thing from a remote standby that is still active (the few
            # seconds before its handback): a configuration changed there while the office was
            # gone, newer than this box's. Otherwise the office's own copy would come back over it
            # and the change would be lost (decision 024).
            if not (payload.get("site") == "remote" and self.ha.site != "remote" and changed > mine):
                self._ignored_while_active("configuration")
                return
            carried_back = True
        # the active box's configuration wins on first contact (a standby that was away, or
        # seeded by hand); after that only a newer one is applied
        elif changed <= mine and self.applied:
            return
        counts = self.store.import_config(payload["doc"])
        os.utime(self.config_path, (changed, changed))
        self.applied += 1
        self.last_applied = time.time()
        what = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        if carried_back:
            log.warning("ha: configuration changed on the remote standby while it was active taken back (%s; "
                        "newer than this box's by %.0f s)", what, changed - mine)
        else:
            log.info("ha: configuration from the active box applied (%s)", what)


    def _ignored_while_active(self, kind: str) -> None:
        if self.ha.site == "remote" or not self.lan_link:
            # the remote standby hands back only after the main site's box has been heard steadily
            # for a few seconds: both send meanwhile, each keeps its own (docs/decisions/024)
            log.debug("ha: %s from the peer ignored: this box is active until the handback", kind)
        else:
            log.warning("ha: %s from the peer ignored: this box is active (two masters?)", kind)


class _Heartbeats(asyncio.DatagramProtocol):
    def __init__(self, replicator: Replicator):
        self.replicator = replicator

    def datagram_received(self, data: bytes, addr) -> None:
        rep = self.replicator
        if addr[0] == rep.peer_addr:
            rep._heard(data, addr[0])
        elif rep.remote is not None and addr[0] == rep.remote.peer_addr:
            rep.remote._heard(data, addr[0])
        elif rep.ha.site == "remote":
            rep._heard(data, addr[0])         # a main-site box (either of a pair): sealed, so it is ours


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


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
