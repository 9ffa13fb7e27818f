"""Edge: one Kamailio process tree, started, probed, queried and stopped from Python."""
from __future__ import annotations

import collections
import dataclasses
import ipaddress
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from typing import Mapping

from ..childproc import die_with_parent
from .config import EdgeConfig, EdgeError
from .rpc import KamailioRpc, RpcError
from .subscribers import ensure_db, ensure_location_db, ensure_presence_db, write_peers, write_subscribers
from .trunks import Backoff, EdgeTrunk, registration_states, write_trunk_addresses, write_trunks

logger = logging.getLogger(__name__)

_STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
_STDERR_KEEP = 30  # lines quoted in a start-up error
# TLSF for shared and private memory instead of Kamailio's default q_malloc (a debugging allocator
# whose search of its free lists was an eighth of the edge's CPU at 150 call setups/s; issue 16)
MEMORY_MANAGERS = ("-x", "tlsf", "-X", "tlsf")

# What Kamailio prints when it cannot start, and what to do about it.
_CAUSES = (
    ("Address already in use", "port {sip_port} on {sip_addr} is already in use (another SIP "
     "server or edge?): stop it or choose another sip_port"),
    ("Cannot assign requested address", "sip_addr {sip_addr} is not an address of this machine: "
     "use one of its addresses"),
    ("websocket.so", "browser phones need the WebSocket modules: apt-get install kamailio-websocket-modules"),
    ("tls.so", "browser phones need the TLS module: apt-get install kamailio-tls-modules"),
    ("could not find module", "a Kamailio module is missing: apt-get install kamailio "
     "kamailio-sqlite-modules"),
    ("cannot open shared object", "a Kamailio module or library is missing: apt-get install "
     "kamailio kamailio-sqlite-modules"),
    ("parse error", "the generated kamailio.cfg does not parse (template bug): see {cfg}"),
)


class Edge:
    """The SIP edge: Kamailio in front of the call service (see EdgeConfig)."""

    def __init__(self, cfg: EdgeConfig):
        if not isinstance(cfg, EdgeConfig):
            raise EdgeError(f"Edge needs an EdgeConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=_STDERR_KEEP)
        self._rpc = KamailioRpc(cfg.rpc_fifo, cfg.run_dir)
        self._lock = threading.Lock()
        self._stopping = False
        self._backoff = Backoff(cfg.trunk_retry_seconds, cfg.trunk_retry_max_seconds)
        self._config = None                 # the config store trunks() reads, opened on first use
        self._config_lock = threading.Lock()
        # False on the standby box of a failover pair: trunk registrations run on the active box
        # only (a provider sees one contact) and move with the VIP (set_registering)
        self.registering = True

    def set_registering(self, active: bool) -> None:
        """Start (active box) or drop (standby) the trunk registrations, now."""
        if active == self.registering:
            return
        self.registering = active
        logger.info("edge: trunk registrations %s", "started (this box is active)" if active
                    else "stopped (this box is the standby)")
        self.sync_trunks()

    # ----- subscribers -------------------------------------------------------
    def sync_subscribers(self, subscribers: Mapping[str, str]) -> None:
        """Make {extension: password} the complete set of accounts that may register.

        Called on every configuration change, it also refreshes the trusted peers (sync_peers)
        and the trunks (sync_trunks): they live in the same configuration.
        """
        self.cfg.run_dir.mkdir(parents=True, exist_ok=True)
        write_subscribers(self.cfg.db_path, subscribers)
        self.sync_peers()
        self.sync_trunks()

    def peer_networks(self) -> list[ipaddress.IPv4Network]:
        """Sources exempt from the per-address flood limit: EdgeConfig.trusted, the config store's
        trusted_networks setting and the address of every trunk (its host, resolved now)."""
        found = [ipaddress.IPv4Network(net, strict=False) for net in self.cfg.trusted]
        config_file = self.cfg.data_dir / "config.json"
        if not config_file.exists():  # an edge without the PBX's configuration (tests, tools)
            return found
        from firmware.config import ConfigStore
        from firmware.config.routing import split_host_port
        store = ConfigStore(self.cfg.data_dir)
        for net in store.settings().trusted_networks:
            found.append(ipaddress.IPv4Network(net, strict=False))
        for trunk in store.trunks():
            host = split_host_port(trunk.host)[0]
            try:
                found.append(ipaddress.IPv4Network(socket.gethostbyname(host)))
            except (OSError, ValueError) as exc:
                logger.warning("edge: trunk %s host %s not resolved (%s): flood limit applies to it",
                               trunk.name, host, exc)
        return found

    def sync_peers(self) -> None:
        """Write peer_networks() and the trunks' addresses to the address table; a running edge
        reloads it."""
        self.cfg.run_dir.mkdir(parents=True, exist_ok=True)
        peers_changed = write_peers(self.cfg.db_path, self.peer_networks())
        trunks_changed = write_trunk_addresses(self.cfg.db_path, self.trunks())
        if (peers_changed or trunks_changed) and self.running:
            try:
                self._rpc.call("permissions.addressReload")
            except EdgeError as exc:
                logger.error("edge: trusted peers not reloaded: %s", exc)

    # ----- trunks ------------------------------------------------------------
    def trunks(self, resolve: bool = True) -> list[EdgeTrunk]:
        """The config store's trunks (none for an edge without the PBX's configuration)."""
        if not (self.cfg.data_dir / "config.json").exists():
            return []
        from firmware.config import ConfigStore
        # one store, kept: it reads config.json again only when the file has changed. A new store
        # per call parsed the whole file (every extension) once a second for tend_trunks, even
        # on an idle box: 2-3 % of the call service's process at 400 setups/s (issue 16)
        with self._config_lock:
            if self._config is None:
                self._config = ConfigStore(self.cfg.data_dir)
            rows = self._config.trunks()
        trunks = [EdgeTrunk.of(t, resolve) for t in rows]
        if not self.registering:
            trunks = [dataclasses.replace(t, register=False) for t in trunks]
        return trunks

    def sync_trunks(self) -> None:
        """Write the trunks to trunks.sqlite; a running edge loads the registrations that
        changed, drops the removed ones (after a REGISTER with expires 0) and reloads routing."""
        cfg = self.cfg
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        changed, removed, routes_changed = write_trunks(
            cfg.trunks_db_path, self.trunks(), cfg.sip_addr, cfg.sip_port, cfg.trunk_expires)
        if not self.running:
            return
        calls = [("uac.reg_unregister", "l_uuid", u) for u in sorted(removed)]
        calls += [("uac.reg_remove", u) for u in sorted(removed)]
        calls += [("uac.reg_refresh", u) for u in sorted(changed)]
        if routes_changed:
            calls.append(("htable.reload", "trunks"))
        for call in calls:
            try:
                self._rpc.call(*call)
            except EdgeError as exc:
                if call[0] != "uac.reg_unregister":  # not registered: nothing to undo
                    logger.error("edge: trunks not fully applied (%s): %s", call[0], exc)
        for uuid in removed | changed:
            self._backoff.ok(uuid)

    def trunk_states(self) -> list[dict]:
        """Per configured trunk: name, host, transport, register, state, last_code, expires
        (see trunks.registration_states)."""
        trunks = self.trunks(resolve=False)
        if not any(t.register for t in trunks):
            states = registration_states(trunks, [], {})
        else:
            states = registration_states(trunks, self._reg_dump(), self._reg_codes())
        for state in states:
            state.pop("disabled", None)  # the module's flag, for tend_trunks only
        return states

    def tend_trunks(self, now: float | None = None) -> None:
        """Back-off for failed registrations; call it about once a second while the edge runs.

        The uac module disables a registration that failed; this enables it again when its
        back-off delay (trunk_retry_seconds doubling up to trunk_retry_max_seconds) is over."""
        now = time.time() if now is None else now
        trunks = {t.contact_user: t for t in self.trunks(resolve=False) if t.register}
        if not trunks:
            return
        states = {s["name"]: s for s in registration_states(trunks.values(), self._reg_dump(),
                                                                self._reg_codes(), now)}
        for uuid, trunk in trunks.items():
            state = states[trunk.name]
            if state["state"] == "registered":
                self._backoff.ok(uuid)
            elif state["state"] == "failed" and state.get("disabled"):
                due = self._backoff.due.get(uuid)
                if due is None:
                    wait = self._backoff.failed(uuid, now)
                    logger.warning("edge: trunk %s registration failed (code %s, %d in a row): "
                                   "next try in %.0f s", trunk.name, state["last_code"],
                                   self._backoff.failures[uuid], wait)
                elif now >= due:
                    del self._backoff.due[uuid]
                    self._rpc.call("uac.reg_enable", "l_uuid", uuid)

    def _reg_dump(self) -> list[dict]:
        result = self._rpc.call("uac.reg_dump")
        return result if isinstance(result, list) else []

    def _reg_codes(self) -> dict[str, str]:
        codes = {}
        for slot in self._rpc.call("htable.dump", "trunkreg") or []:
            for item in slot.get("slot", []):
                codes[str(item.get("name"))] = str(item.get("value"))
        return codes

    # ----- process -----------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running else None

    def start(self, timeout: float = 10.0) -> None:
        """Start Kamailio and return once it answers an OPTIONS probe with 200."""
        with self._lock:
            if self.running:
                return
            if self._proc is not None:  # died on its own: say so, then clean up
                logger.error("edge: Kamailio pid %d had exited with code %s",
                             self._proc.pid, self._proc.returncode)
                self._terminate()
            binary = _kamailio_binary()
            cfg = self.cfg
            cfg.run_dir.mkdir(parents=True, exist_ok=True)
            self._stop_leftover()
            ensure_db(cfg.db_path)
            ensure_location_db(cfg.location_db_path)
            ensure_presence_db(cfg.presence_db_path)
            write_peers(cfg.db_path, self.peer_networks())
            trunks = self.trunks()
            write_trunk_addresses(cfg.db_path, trunks)
            write_trunks(cfg.trunks_db_path, trunks, cfg.sip_addr, cfg.sip_port, cfg.trunk_expires)
            self._backoff = Backoff(cfg.trunk_retry_seconds, cfg.trunk_retry_max_seconds)
            cfg.cfg_path.write_text(cfg.render())
            if cfg.more_call_services:    # the dispatcher's call services (decision 025)
                cfg.dispatcher_list_path.write_text(cfg.dispatcher_list())
            _write_webrtc_info(cfg)
            for stale in (cfg.rpc_fifo, cfg.ctl_socket):
                stale.unlink(missing_ok=True)
            self._stderr_tail.clear()
            began = time.monotonic()
            self._proc = subprocess.Popen(
                [binary, "-DD", "-E", "-m", str(cfg.shm_mb), "-f", str(cfg.cfg_path), "-P", str(cfg.pid_path),
                 "-Y", str(cfg.run_dir), *MEMORY_MANAGERS],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                # Its own process group: Kamailio signals its whole group on shutdown (that
                # must not reach us), and orphaned workers can be stopped by group.
                start_new_session=True,
                # SIGTERM when we die (even by SIGKILL): Kamailio then stops its workers itself.
                preexec_fn=die_with_parent(signal.SIGTERM))
            self._reader = threading.Thread(target=self._forward_stderr, args=(self._proc,),
                                            name="edge-stderr", daemon=True)
            self._reader.start()
            try:
                self._wait_ready(began + timeout)
            except BaseException:
                self._terminate()
                raise
            logger.info("edge started: pid %d, SIP on %s:%d udp+tcp, ready in %.0f ms",
                        self._proc.pid, cfg.sip_addr, cfg.sip_port,
                        (time.monotonic() - began) * 1000)

    def stop(self) -> None:
        """Stop Kamailio (SIGTERM, SIGKILL after 5 s). Safe to call at any time."""
        with self._lock:
            if self._proc is None:
                return
            pid = self._proc.pid
            self._terminate()
            logger.info("edge stopped: pid %d", pid)

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        self._stopping = True  # shutdown chatter ("EOF on 9") is not an error
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(_STOP_GRACE)
            except subprocess.TimeoutExpired:
                logger.warning("edge pid %d ignored SIGTERM for %.0f s: killing it",
                               proc.pid, _STOP_GRACE)
                proc.kill()
                proc.wait()
        # Workers left behind when the main process died (crash, SIGKILL) hold the ports.
        _kill_group(proc.pid)
        if self._reader is not None:
            self._reader.join(2.0)
            self._reader = None
        proc.stderr.close()
        self._stopping = False

    def _stop_leftover(self) -> None:
        """A previous Kamailio of this data_dir (the parent died) still holds the ports; or its pid
        file outlived it (a power cut) and names a process that is gone or is another program now,
        which would make Kamailio refuse to start ("running process found in the pid file")."""
        try:
            pid = int(self.cfg.pid_path.read_text().strip())
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            self.cfg.pid_path.unlink(missing_ok=True)
            return
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            cmdline = []
        if str(self.cfg.cfg_path).encode() not in cmdline:
            logger.info("edge: stale pid file %s (pid %d is not this edge's Kamailio) removed", self.cfg.pid_path, pid)
            self.cfg.pid_path.unlink(missing_ok=True)
            return
        logger.warning("edge: stopping leftover Kamailio pid %d of %s", pid, self.cfg.run_dir)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE
        while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.05)
        _kill_group(pid)

    def _forward_stderr(self, proc: subprocess.Popen) -> None:
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            self._stderr_tail.append(line)
            level = logging.DEBUG if self._stopping else _level_of(line)
            logger.log(level, "kamailio: %s", line.strip())

    def _wait_ready(self, deadline: float) -> None:
        host, port = self.cfg.probe_addr
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((host if host.startswith("127.") else "", 0))
            local = probe.getsockname()
            sent: set[bytes] = set()
            while True:
                if self._proc.poll() is not None:
                    self._reader.join(2.0)
                    raise EdgeError(self._start_failure(f"Kamailio exited with code "
                                                        f"{self._proc.returncode}"))
                if time.monotonic() >= deadline:
                    raise EdgeError(self._start_failure(
                        f"Kamailio did not answer OPTIONS on {host}:{port} in time"))
                call_id = uuid.uuid4().hex
                sent.add(call_id.encode())
                try:
                    probe.sendto(_options(host, port, local, call_id), (host, port))
                except OSError:
                    pass  # not bound yet: ICMP refused from a previous probe
                probe.settimeout(0.05)
                try:
                    data = probe.recv(65535)
                except socket.timeout:
                    continue
                except ConnectionRefusedError:
                    time.sleep(0.05)  # not bound yet (ICMP): no busy loop
                    continue
                # The answer to any of our probes will do: one that came after its 50 ms (a slower
                # start, e.g. TLS for wss) must not make every later probe read an older answer and
                # send again at once: that loop hit the flood limit and the edge banned its prober.
                if data.startswith(b"SIP/2.0 200") and any(c in data for c in sent):
                    return

    def _start_failure(self, what: str) -> str:
        tail = list(self._stderr_tail)
        text = "\n".join(tail)
        values = {"sip_port": self.cfg.sip_port, "sip_addr": self.cfg.sip_addr,
                  "cfg": self.cfg.cfg_path}
        for needle, cause in _CAUSES:
            if needle in text:
                what = f"{what}: {cause.format(**values)}"
                break
        return what + "\nlast Kamailio output:\n  " + "\n  ".join(tail[-12:])

    # ----- control socket ----------------------------------------------------
    def registrations(self) -> list[dict]:
        """Registered contacts: aor, contact, expires (s left), user_agent, received, transport."""
        result = self._rpc.call("ul.dump")
        found = []
        for domain in (result or {}).get("Domains", []):
            for aor in (domain.get("Domain", {}).get("AoRs") or []):
                info = aor.get("Info", {})
                for contact in info.get("Contacts") or []:
                    c = contact.get("Contact", {})
                    received = c.get("Received", "")
                    socket_name = c.get("Socket", "")
                    found.append({
                        "aor": info.get("AoR", ""),
                        "contact": c.get("Address", ""),
                        "expires": _int_or_zero(c.get("Expires")),
                        "user_agent": c.get("User-Agent", ""),
                        "received": "" if received == "[not set]" else received,
                        "transport": socket_name.split(":", 1)[0] if socket_name else "",
                    })
        return found

    def bans(self) -> list[str]:
        """Source IPs whose packets are being dropped."""
        result = self._rpc.call("htable.dump", "ipban") or []
        ips = []
        for slot in result:
            for item in slot.get("slot", []):
                ips.append(item["name"])
        return sorted(ips)

    def unban(self, ip: str) -> None:
        """Let an IP talk again and forget its counted auth failures."""
        try:
            ip = str(ipaddress.IPv4Address(ip))
        except ValueError:
            raise EdgeError(f"unban: {ip!r} is not an IPv4 address") from None
        for table in ("ipban", "authfail"):
            try:
                self._rpc.call("htable.delete", table, ip)
            except RpcError as exc:
                if exc.code != 404:  # not banned / nothing counted: already the wanted state
                    raise
        logger.info("edge: unban ip=%s", ip)


def _write_webrtc_info(cfg: EdgeConfig) -> None:
    """Tell the browser phone page (another process) where the WebSocket is, or that there is none."""
    path = cfg.webrtc_info_path
    if not cfg.ws_port:
        path.unlink(missing_ok=True)
        return
    if cfg.ws_tls:
        write_tls_cfg(cfg.tls_cfg_path, cfg.ws_cert, cfg.ws_key)
    import json
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"port": cfg.ws_port, "tls": cfg.ws_tls}))
    tmp.replace(path)


def write_tls_cfg(path, cert: str, key: str) -> None:
    """Kamailio's TLS settings for the wss listener: this certificate and key, TLS 1.2 or later, no
    client certificates (browsers send none)."""
    text = (f"[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n"
            f"certificate = {cert}\nprivate_key = {key}\n")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _kill_group(pgid: int) -> None:
    """SIGKILL what is left of the process group our Kamailio led (its own session)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)


def _kamailio_binary() -> str:
    binary = shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin:/usr/local/sbin")
    if binary is None:
        raise EdgeError("kamailio is not installed: apt-get install kamailio "
                        "kamailio-sqlite-modules kamailio-presence-modules")
    return binary


def _options(host: str, port: int, local: tuple[str, int], call_id: str) -> bytes:
    via_host = local[0] if local[0] != "0.0.0.0" else host
    return (f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {via_host}:{local[1]};branch=z9hG4bK{call_id[:16]};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:probe@{via_host}>;tag={call_id[16:]}\r\n"
            f"To: <sip:{host}:{port}>\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: 1 OPTIONS\r\n"
            f"Content-Length: 0\r\n\r\n").encode()


def _level_of(line: str) -> int:
    if "uac_reg_tm_callback(): got sip response" in line:
        return logging.DEBUG  # a failed trunk registration: Edge.tend_trunks logs it once, with its retry
    for marker, level in ((" CRITICAL:", logging.CRITICAL), (" ALERT:", logging.CRITICAL),
                          (" BUG:", logging.ERROR), (" ERROR:", logging.ERROR),
                          (" WARNING:", logging.WARNING), (" NOTICE:", logging.INFO),
                          (" INFO:", logging.DEBUG)):  # Kamailio's INFO is start-up chatter
        if marker in line:
            return level
    return logging.DEBUG


def _int_or_zero(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
