"""`pbx run` (the whole PBX in one supervised process tree) and `pbx service NAME` (one part of it).

`pbx run` starts, in order: the call service (asyncio + uvloop, in this process), the Kamailio edge
(child process, config generated from the PBX config), the web UI (child process), the local control
socket, the mail sender (a thread next to the call service, services/mailer), and - when analog line ports are configured - the line service (board + gateway, child
process; on the board simulator unless --lines-tty names a board). On the appliance each part runs
as its own systemd unit instead (`pbx service edge|calls`, pbx-lines.service), the same code with
a subset of the components. Every child dies with `pbx run`, even when it is SIGKILLed
(services/childproc.py), and a child that fails is restarted with back-off (Restarts), each
failure logged on one line with its cause. Configuration changes made by other processes
(`pbx ext add`, the web UI) are picked up by polling the config file, so nothing ever needs an
"apply" or a restart.
"""

from __future__ import annotations

import asyncio
import gc
import dataclasses
import errno
import fcntl
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from firmware.cdr import CdrStore
from firmware.config import ConfigStore

from .callsvc import hooks
from .callsvc.b2bua import CallService
from .childproc import die_with_parent
from .callsvc.media import MediaEngine
from .control import ControlServer
from . import browserphone
from .edge import Edge, EdgeConfig
from .edge.config import EdgeError
from .edge.trunks import registration_states
from .notify import Notifier

log = logging.getLogger(__name__)
VERSION = "0.1.0"


GC_THRESHOLDS = (700, 0, 300)


def tune_collector(again: bool = False) -> None:
    """Keep Python's cyclic collector off the call path (issue 16, decision 027).

    Everything loaded by the start (modules, the config model, tables: ~45,000 objects) is moved
    out of the collector's sight (gc.freeze): it lives as long as the process, and every full pass
    would walk it. After a configuration change (`again`) the new model is frozen the same way,
    after one full pass that frees what the change left in cycles. Calls free themselves by
    reference counting (Session.release), so the collector is only a back-stop for the odd cycle.
    Its young pass keeps Python's size (700 objects: larger ones cost as much in all and paused the
    loop for up to 75 ms). Every other pass is a middle one (threshold 0), not one after ten young
    ones: it walks what the calls in progress made since the last one, and after ten young passes
    that was 20,000 objects, a 10-17 ms pause every 2 s at 100 setups/s, the tail of the post-dial
    delay; now a middle pass takes a few ms. A full pass waits for 300 middle
    passes, some 600 rounds of 700 new objects (Python's defaults: 100). At 500 setups/s
    Python's defaults ran full passes of 70-430 ms every 2-3 s while the calls ramped up.
    """
    if again:
        gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


@dataclass
class RunOptions:
    data: Path
    sip_addr: str = "127.0.0.1"
    sip_port: int = 5060
    web_port: int = 8080
    rtp_ports: tuple[int, int] = (10000, 20000)
    kernel_media: str = "auto"       # bridged G.711 forwarded by nftables when the box allows it; "off"
    cs_port: int = 0                 # 0: any free port (the edge config is written after binding)
    web: bool = True
    web_idle_exit: int = 600         # the web UI stops after so many seconds without a request; 0: never
    trusted: tuple[str, ...] = ()
    flood_limit: tuple[int, int] = (100, 2)
    edge_children: int = 4
    components: frozenset = frozenset({"edge", "calls", "web", "lines"})
    lines_tty: str | None = None     # the line board's serial port; None: the simulator
    browser_phone_port: int = 0      # SIP over WebSocket for browser phones (+ rtpengine); 0: off
    browser_phone_rtp_ports: tuple[int, int] = (21000, 21999)   # rtpengine's own RTP ports
    pnp_port: int = 5060             # SIP plug-and-play (224.0.1.75); 0: off. Never on loopback.
    # Scale-out (docs/decisions/025-scale-out-dispatcher.md): `pbx run --call-services N` runs call
    # services 2..N as supervised child processes (`pbx service calls --instance I`), each on its own
    # UDP port and its own slice of rtp_ports, and the edge spreads calls over all of them.
    call_services: int = 1
    instance: int = 1                # this process's call service number (2..N: no mailer, pnp, HA)
    more_call_services: tuple[int, ...] = ()   # `pbx service edge`: the ports of call services 2..N


class RunError(RuntimeError):
    """`pbx run` / `pbx service` cannot go on: one line naming the part, the cause and the fix."""


PART_NAMES = {"edge": "Kamailio edge", "calls": "call service", "web": "web UI", "lines": "line service"}


class Restarts:
    """When to restart a supervised child: 0.5 s after a failure, doubling up to 30 s while it
    keeps failing; a child that had stayed up STABLE_S before it failed starts over at 0.5 s.
    After MAX_FAILURES failures in a row without such a stable run it has `gave_up`: the
    supervisor then stops the PBX with an error instead of retrying for ever.

    Each failure is one log line: what failed, why, and when the next attempt is.
    """
    FIRST_S = 0.5
    MAX_S = 30.0
    STABLE_S = 60.0
    MAX_FAILURES = 5

    def __init__(self, what: str):
        self.what = what
        self.delay = 0.0
        self.failures = 0                # in a row, since the last stable run
        self.reason = ""                 # of the last failure
        self.up_since: float | None = time.monotonic()
        self.at: float | None = None     # the next attempt; None: not waiting to restart

    def up(self) -> None:
        self.up_since = time.monotonic()
        self.at = None

    def failed(self, reason: str) -> None:
        now = time.monotonic()
        if self.up_since is not None and now - self.up_since >= self.STABLE_S:
            self.delay = 0.0
            self.failures = 0
        self.delay = self.FIRST_S if not self.delay else min(self.delay * 2, self.MAX_S)
        self.failures += 1
        self.reason = reason
        self.up_since = None
        self.at = now + self.delay
        if self.gave_up:
            log.error("%s %s; giving up after %d failures in a row", self.what, reason, self.failures)
        else:
            log.error("%s %s; retrying in %.1f s", self.what, reason, self.delay)

    @property
    def gave_up(self) -> bool:
        return self.failures >= self.MAX_FAILURES

    @property
    def waiting(self) -> bool:
        return self.at is not None

    def due(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at


def lock_data_dir(data: Path, parts) -> list[int]:
    """Hold DATA/run/PART.lock for every part this process runs, for as long as it runs.

    A second `pbx run` (or `pbx service edge` next to a `pbx run`) on the same data directory
    would take over the first one's control socket and stop its Kamailio as a "leftover":
    it fails here instead, before it touches anything. flock: released when the process dies.
    """
    run_dir = data / "run"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"cannot create {run_dir}: {exc.strerror}; pass --data a directory this user "
                       "can write to") from None
    held: list[int] = []
    try:
        for part in sorted(parts):
            path = run_dir / f"{part}.lock"
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise RunError(f"cannot create {path}: {exc.strerror}; pass --data a directory this "
                               "user can write to") from None
            held.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
                raise RunError(f"another PBX{f' (pid {pid})' if pid.isdigit() else ''} is already running "
                               f"the {PART_NAMES.get(part, part)} on data directory {data}: stop it first "
                               "(`pbx status --data DIR` shows it), or pass --data another directory") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        for fd in held:
            os.close(fd)
        raise
    return held


def sip_port_in_use(host: str, port: int) -> str | None:
    """Why Kamailio could not listen for SIP on host:port (udp and tcp) now, or None."""
    for kind, proto in ((socket.SOCK_DGRAM, "udp"), (socket.SOCK_STREAM, "tcp")):
        with socket.socket(socket.AF_INET, kind) as s:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no obstacle
            try:
                s.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return (f"SIP port {port} ({proto}) on {host} in use by another process (another PBX "
                            "or SIP server?): stop it or pass --sip-port")
                return (f"cannot listen for SIP on {host}:{port} ({proto}): {exc.strerror}: pass --sip-addr "
                        "an address of this machine")
    return None


def _leftover_edge(cfg: EdgeConfig) -> bool:
    """A Kamailio of this data directory is still running (its parent died): Edge.start stops it."""
    try:
        pid = int(cfg.pid_path.read_text().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return str(cfg.cfg_path).encode() in f.read().split(b"\0")
    except (OSError, ValueError):
        return False


def port_in_use(host: str, port: int) -> str | None:
    """Why a TCP server could not listen on host:port now (another process has it), or None."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as waitress: TIME_WAIT is no obstacle
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} in use by another process: stop it or pass --web-port"
            return f"cannot listen on {host}:{port}: {exc.strerror}"
    return None


def instance_socket(data: Path, instance: int) -> Path:
    """The control socket of call service I (2..N) of several; call service 1 keeps DATA/run/control.sock."""
    return Path(data) / "run" / f"control-{instance}.sock"


def _remove_dead_sockets(data: Path) -> None:
    """Control sockets of call services 2..N that a killed PBX left behind (nobody listens: refused),
    so that `pbx status` does not list a call service that is not there."""
    for path in data.glob("run/control-*.sock"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(str(path))
            except ConnectionRefusedError:
                path.unlink(missing_ok=True)
            except OSError:
                pass


class CdrWriter:
    """Writes CDRs on a thread of its own so an fsync never stalls the call loop."""

    def __init__(self, data_dir: Path):
        self.q: queue.Queue = queue.Queue()
        self.data_dir = data_dir
        self.thread = threading.Thread(target=self._run, name="cdr-writer", daemon=True)
        self.thread.start()

    def __call__(self, record) -> None:
        self.q.put(record)

    def _run(self) -> None:
        store = CdrStore(self.data_dir)
        done = False
        while not done:
            batch = [self.q.get()]
            while len(batch) < 500:  # whatever piled up while the last commit ran
                try:
                    batch.append(self.q.get_nowait())
                except queue.Empty:
                    break
            if None in batch:
                done = True
                batch = [r for r in batch if r is not None]
            if batch:
                self._store(store, batch)
        store.close()

    @staticmethod
    def _store(store, batch) -> None:
        try:
            store.write_many(batch)
        except Exception:
            # one bad record must not cost the others: write them one by one, log the failures
            for rec in batch:
                try:
                    store.write(rec)
                except Exception:
                    log.exception("CDR for call %s could not be written", rec.call_id)

    def close(self) -> None:
        self.q.put(None)
        self.thread.join(timeout=10)


class Pbx:
    def __init__(self, opts: RunOptions):
        self.opts = opts
        self.store = ConfigStore(opts.data)
        self.started = time.time()
        self.edge: Edge | None = None
        self.calls: CallService | None = None
        self.web: subprocess.Popen | None = None
        self.web_restarts = Restarts("web UI")
        self.web_socket: socket.socket | None = None   # the UI's port, held here (decision 026)
        self.web_waiting = False         # the UI stopped idle: the next connection starts it
        self.edge_restarts = Restarts("Kamailio edge")
        self.lines_restarts = Restarts("line service")
        self.lines = None                # hw.lines.gw_process.LinesComponent
        self.control: ControlServer | None = None
        self.cdr = CdrWriter(opts.data) if "calls" in opts.components else None
        self.stopping = asyncio.Event()
        self.notifier = Notifier()
        self.edge_cfg: EdgeConfig | None = None
        self.media_relay = None          # rtpengine for browser phones (services/browserphone.py)
        self._trunks_tended = 0.0
        self.mailer = None               # services.mailer.sender.MailSender, next to the call service
        self.pnp = None                  # the plug-and-play responder's transport (services/pnp.py)
        self.ha = None                   # services.ha.keepalived.Keepalived when failover is on
        self.replicator = None           # services.ha.replication.Replicator when failover is on
        self._mailer_restarted = 0.0
        self.more_calls: dict[int, subprocess.Popen | None] = {}   # call services 2..N (decision 025)
        self.more_calls_restarts: dict[int, Restarts] = {}
        self.more_calls_ports: dict[int, tuple[int, tuple[int, int]]] = {}   # I -> (port, rtp range)

    def _subscribers(self) -> dict[str, str]:
        return {e.number: e.secret for e in self.store.extensions() if e.enabled}

    def _check_ports(self, edge_cfg: EdgeConfig) -> None:
        """A port another process holds is a hard error at start (RunError), not a restart loop."""
        o = self.opts
        if "edge" in o.components and not _leftover_edge(edge_cfg):
            busy = sip_port_in_use(o.sip_addr, o.sip_port)
            if busy:
                raise RunError(f"Kamailio edge cannot start: {busy}")
        if "web" in o.components and o.web:
            self._listen_web()

    def _listen_web(self) -> None:
        """Listen on the web UI's port here, for the life of `pbx run` (as pbx-web.socket does under
        systemd): the UI child serves on this socket (--listen-fd) and stops when idle, and the next
        connection waiting on it starts the UI again (decision 026)."""
        o = self.opts
        sock = socket.socket(socket.AF_INET6 if ":" in o.sip_addr else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # TIME_WAIT is no obstacle
        try:
            sock.bind((o.sip_addr, o.web_port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise RunError(f"web UI cannot start: port {o.web_port} in use by another process: "
                               "stop it or pass --web-port") from None
            raise RunError(f"web UI cannot start: cannot listen on {o.sip_addr}:{o.web_port}: "
                           f"{exc.strerror or exc}") from None
        self.web_socket = sock

    async def start(self) -> None:
        """Start every part; RunError (one line: part, cause, fix) when one cannot start."""
        o = self.opts
        loop = asyncio.get_running_loop()
        cs_port = o.cs_port
        rtp_ports = self._plan_call_services()
        if o.instance == 1 and "calls" in o.components:
            _remove_dead_sockets(o.data)
        if o.instance == 1:
            self._prepare_ha()
        self._check_ports(EdgeConfig(data_dir=o.data, sip_addr=o.sip_addr, sip_port=o.sip_port,
                                     cs_addr="127.0.0.1", cs_port=cs_port or 5080))
        if "calls" in o.components:
            from .media.prompt_files import PromptLoader   # a replaced system prompt wins
            media = MediaEngine(o.sip_addr, rtp_ports, kernel_media=o.kernel_media)
            self.calls = CallService(store=self.store, cdr_sink=self.cdr, media=media,
                                     sip_addr=o.sip_addr, edge=(o.sip_addr, o.sip_port),
                                     listen=("127.0.0.1", o.cs_port), prompts=PromptLoader(o.data),
                                     recordings_dir=o.data / "recordings")
            try:
                await self.calls.start()
            except OSError as exc:
                raise RunError(f"call service cannot listen on udp 127.0.0.1:{o.cs_port}: "
                               f"{exc.strerror or exc}: stop the process using it or pass --cs-port") from None
            cs_port = self.calls.endpoint.local[1]
        self.edge_cfg = EdgeConfig(data_dir=o.data, sip_addr=o.sip_addr, sip_port=o.sip_port,
                                   cs_addr="127.0.0.1", cs_port=cs_port or 5080,
                                   domain=self.store.settings().sip_domain, trusted=o.trusted,
                                   flood_limit=o.flood_limit, children=o.edge_children,
                                   more_call_services=tuple(port for port, _ in self.more_calls_ports.values())
                                   or o.more_call_services,
                                   **(self._ha_edge_options() if self.ha is not None else {}),
                                   **browserphone.edge_options(o, self.store.settings().sip_domain))
        for instance in sorted(self.more_calls_ports):
            self._start_more_calls(instance)
        if "edge" in o.components and o.browser_phone_port:
            try:
                self.media_relay = await loop.run_in_executor(
                    None, browserphone.MediaRelay(o, self.edge_cfg).start)
            except EdgeError as exc:
                raise RunError(f"browser phone media relay cannot start: {str(exc).splitlines()[0]}") from None
        if "edge" in o.components:
            self.edge = Edge(self.edge_cfg)
            if self.ha is not None:
                self.edge.registering = False     # until keepalived makes this box the active one
            self.edge.sync_subscribers(self._subscribers())
            try:
                await loop.run_in_executor(None, self.edge.start)
            except EdgeError as exc:
                raise RunError(f"Kamailio edge cannot start: {str(exc).splitlines()[0]}") from None
        if self.calls is not None:
            self.control = ControlServer(o.data, {"status": self._status, "ping": self._ping,
                                                  "ha": self._ha_status})
            if o.instance > 1:
                self.control.path = instance_socket(o.data, o.instance)
            await self.control.start()
        if self.calls is not None and o.instance == 1:
            from .mailer.sender import MailSender, policy_from_env
            self.mailer = MailSender(o.data, policy=policy_from_env()).start()
        if "web" in o.components and o.web:
            self._start_web()
        if self.calls is not None and o.instance == 1 and o.pnp_port and not o.sip_addr.startswith("127."):
            await self._start_pnp()
        if self.ha is not None:
            await loop.run_in_executor(None, self.ha.start)
            from .ha import settings as ha_settings
            from .ha.replication import Replicator
            self.replicator = Replicator(self.store, o.data, self.ha.ha,
                                         lambda: ha_settings.state(o.data).get("state"))
            self.replicator.calls = self.calls      # answered calls go on after a takeover
            await self.replicator.start()
        if "lines" in o.components and self.store.line_ports():
            await self._start_lines(loop)
        parts = ", ".join(sorted(c for c in o.components if c != "lines" or self.lines is not None))
        from webui.scheme import wants_tls
        scheme = "https" if wants_tls("auto", o.sip_addr) else "http"
        log.info("PBX ready (%s): SIP udp+tcp %s:%d, web %s://%s:%d/, data %s", parts, o.sip_addr,
                 o.sip_port, scheme, o.sip_addr, o.web_port, o.data)
        tune_collector()
        self.notifier.ready(f"serving {parts}")

    def _plan_call_services(self) -> tuple[int, int]:
        """`pbx run --call-services N`: the port and RTP slice of call services 2..N (self.more_calls_ports);
        the RTP range this process's call service uses. Each gets an equal, disjoint slice of --rtp-ports."""
        o = self.opts
        n = o.call_services
        if n <= 1 or o.instance > 1 or not {"edge", "calls"} <= o.components:
            return o.rtp_ports
        from .ha import settings as ha_settings
        if ha_settings.load(o.data).enabled:
            raise RunError(f"--call-services {n} and failover cannot be combined yet (decision 025): "
                           "run one call service per box, or turn failover off (`pbx ha set --off`)")
        first, last = o.rtp_ports
        size = (last - first) // n
        if size < 20:
            raise RunError(f"--rtp-ports {first}-{last} is too narrow for {n} call services: give each at "
                           "least 20 ports (e.g. --rtp-ports 10000-20000)")
        for i in range(2, n + 1):
            if o.cs_port:
                port = o.cs_port + i - 1
            else:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.bind(("127.0.0.1", 0))
                    port = s.getsockname()[1]
            start = first + (i - 1) * size
            self.more_calls_ports[i] = (port, (start, start + size))
            self.more_calls_restarts[i] = Restarts(f"call service {i}")
        log.info("%d call services: 1 on RTP %d-%d, %s", n, first, first + size,
                 ", ".join(f"{i} on udp 127.0.0.1:{p} RTP {r[0]}-{r[1]}" for i, (p, r) in self.more_calls_ports.items()))
        return first, first + size

    def _start_more_calls(self, instance: int) -> None:
        o = self.opts
        port, (first, last) = self.more_calls_ports[instance]
        self.more_calls[instance] = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "service", "calls", "--instance", str(instance),
             "--data", str(o.data), "--sip-addr", o.sip_addr, "--sip-port", str(o.sip_port),
             "--cs-port", str(port), "--rtp-ports", f"{first}-{last}", "--kernel-media", o.kernel_media],
            preexec_fn=die_with_parent())
        self.more_calls_restarts[instance].up()

    def _check_more_calls(self, instance: int) -> None:
        proc = self.more_calls[instance]
        if proc is not None and proc.poll() is not None:
            self.more_calls[instance] = None
            self.more_calls_restarts[instance].failed(f"exited with code {proc.returncode}")
        if self.more_calls[instance] is None and self.more_calls_restarts[instance].due():
            self._start_more_calls(instance)

    def _start_web(self) -> None:
        o = self.opts
        fd = self.web_socket.fileno()
        self.web = subprocess.Popen([sys.executable, "-m", "webui", "--data", str(o.data),
                                     "--host", o.sip_addr, "--port", str(o.web_port), "--listen-fd", str(fd),
                                     "--idle-exit", str(o.web_idle_exit)],
                                    pass_fds=(fd,), preexec_fn=die_with_parent())
        self.web_restarts.up()

    def _check_web(self) -> None:
        if self.web is not None and self.web.poll() is not None:
            code = self.web.returncode
            self.web = None
            if code == 0 and not self.stopping.is_set():
                self._start_web_on_connection()     # it stopped idle (and said so)
                return
            self.web_restarts.failed(f"exited with code {code}")
        if self.web is None and not self.web_waiting and self.web_restarts.due():
            self._start_web()

    def _start_web_on_connection(self) -> None:
        loop = asyncio.get_running_loop()
        fd = self.web_socket.fileno()

        def wanted() -> None:
            loop.remove_reader(fd)
            self.web_waiting = False
            if self.web is None and not self.stopping.is_set():
                log.info("web UI: a connection is waiting: starting it")
                self._start_web()
        self.web_waiting = True
        loop.add_reader(fd, wanted)

    async def _check_edge(self, loop) -> bool:
        """Restart a dead edge (with back-off); False while it is down."""
        if self.edge.running:
            return True
        if not self.edge_restarts.waiting:
            self.edge_restarts.failed("exited")
        if self.edge_restarts.due():
            try:
                await loop.run_in_executor(None, self.edge.start)
            except Exception as exc:
                self.edge_restarts.failed(f"restart failed: {str(exc).splitlines()[0]}")
                return False
            self.edge_restarts.up()
            return True
        return False

    def _check_lines(self) -> None:
        service = self.lines.service
        if service is None or service.poll() is None:
            return
        if not self.lines_restarts.waiting:
            self.lines_restarts.failed(f"exited with code {service.returncode}")
        if self.lines_restarts.due():
            self.lines.check()
            self.lines_restarts.up()

    async def _start_lines(self, loop) -> None:
        from hw.lines.gw_process import LinesComponent
        o = self.opts
        kinds = {p.number: p.kind for p in self.store.line_ports()}
        try:
            self.lines = await loop.run_in_executor(None, LinesComponent(
                o.data, (o.sip_addr, o.sip_port), kinds, self.store.settings().country, o.lines_tty).start)
        except Exception as exc:
            log.error("analog lines not started: %s", exc)

    async def _status(self, _args) -> dict:
        # the edge may be another process (systemd units): its RPC FIFO is in the data directory
        edge = self.edge or Edge(self.edge_cfg)
        try:
            regs = await asyncio.get_running_loop().run_in_executor(None, edge.registrations)
        except Exception as exc:
            log.warning("registrations unavailable from the edge: %s", exc)
            regs = []
        try:
            trunks = await asyncio.get_running_loop().run_in_executor(None, edge.trunk_states)
        except Exception as exc:
            log.warning("trunk states unavailable from the edge: %s", exc)
            trunks = [dict(t, state="unknown") for t in registration_states(edge.trunks(resolve=False), [], {})]
        st = self.calls.status()
        from hw.lines.service import read_states
        lines = [{"number": p.get("port"), "kind": p.get("kind"), "extension": p.get("extension"),
                  "state": p.get("state") if p.get("registered") else "not registered"}
                 for p in read_states(self.opts.data) or []]
        return {"uptime": round(time.time() - self.started, 1), "version": VERSION, "lines": lines,
                "registrations": regs, "calls": st["calls"], "completed_calls": st["completed"],
                "sip": st["sip"], "trunks": trunks, "sip_addr": self.opts.sip_addr,
                "sip_port": self.opts.sip_port, "cs_port": self.calls.endpoint.local[1],
                "call_service": self.opts.instance, "pid": os.getpid(),
                "rtp_legs": st["rtp_legs"], "tables": st["tables"],
                "python_blocks": st["python_blocks"], "memory": st["memory"],
                **{k: st[k] for k in hooks.ON_STATUS if k in st},
                "ha": await self._ha_status(None) or None,
                **({"call_services": await self._more_call_services()} if self.opts.instance == 1 else {})}

    async def _more_call_services(self) -> list[dict]:
        """Call services 2..N (decision 025): each one's calls, from its own control socket
        (DATA/run/control-I.sock, under `pbx run --call-services N` or systemd units alike)."""
        out = []
        for path in sorted(self.opts.data.glob("run/control-*.sock")):
            name = path.stem.split("-", 1)[1]
            entry: dict = {"call_service": int(name) if name.isdigit() else name}
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 2)
                try:
                    writer.write(b'{"cmd": "status"}\n')
                    st = json.loads(await asyncio.wait_for(reader.readline(), 2))
                finally:
                    writer.close()
                entry.update(pid=st["pid"], cs_port=st["cs_port"], calls=len(st["calls"]),
                             completed_calls=st["completed_calls"])
            except (OSError, asyncio.TimeoutError, ValueError, KeyError) as exc:
                entry["error"] = f"not answering on {path}: {exc or type(exc).__name__}"
            out.append(entry)
        return out

    async def _ha_status(self, _args) -> dict:
        """Failover: state, peer health, replication lag, last takeover ({} when off)."""
        return self.replicator.status() if self.replicator is not None else {}

    async def _ping(self, _args) -> dict:
        # keepalived's health check (`pbx ha check`) asks this: the edge counts when it is ours
        return {"pong": True, "edge": self.edge.running if self.edge is not None else None}

    def _given_up(self) -> str | None:
        for restarts in (self.edge_restarts, self.web_restarts, self.lines_restarts,
                         *self.more_calls_restarts.values()):
            if restarts.gave_up:
                return (f"{restarts.what} {restarts.reason}; gave up after {restarts.failures} failures "
                        "in a row")
        return None

    async def supervise(self) -> str | None:
        """Main loop: config changes, child health, watchdog (pinged only while this loop runs).

        Returns None when asked to stop, or why a child was given up (the PBX then stops)."""
        loop = asyncio.get_running_loop()
        while not self.stopping.is_set():
            try:
                await asyncio.wait_for(self.stopping.wait(), min(0.5, self.notifier.interval))
            except asyncio.TimeoutError:
                pass
            if self.stopping.is_set():
                break
            if self.store.changed():
                log.info("configuration changed on disk: applying")
                if self.edge is not None:
                    self.edge.sync_subscribers(self._subscribers())
                    await self._apply_domain(loop)
                if self.calls is not None:
                    self.calls.refresh_config()
                    # the new config model lives until the next change: out of the collector's sight
                    tune_collector(again=True)
            healthy = True
            if self.media_relay is not None:
                await loop.run_in_executor(None, self.media_relay.check)
            if self.ha is not None and self.edge is not None:
                active = self._ha_state() == "MASTER"
                if active != self.edge.registering:
                    await loop.run_in_executor(None, self.edge.set_registering, active)
            if self.ha is not None and not self.ha.alive() and not self.stopping.is_set():
                log.error("ha: keepalived exited (%s): starting it again", self.ha.proc.returncode
                          if self.ha.proc else "not started")
                await loop.run_in_executor(None, self.ha.start)
            if self.edge is not None:
                healthy = await self._check_edge(loop)
                if healthy and time.monotonic() >= self._trunks_tended + 1.0:
                    # failed trunk registrations are retried with back-off (Edge.tend_trunks)
                    self._trunks_tended = time.monotonic()
                    try:
                        await loop.run_in_executor(None, self.edge.tend_trunks)
                    except Exception as exc:
                        log.warning("trunk registrations not tended: %s", exc)
            if "web" in self.opts.components and self.opts.web:
                self._check_web()
            for instance in self.more_calls:
                self._check_more_calls(instance)
            if self.lines is not None:
                self._check_lines()
            if self.mailer is not None and not self.mailer.alive and time.monotonic() - self._mailer_restarted > 30:
                log.error("mail sender thread ended; restarting it")   # its own log says why
                self._mailer_restarted = time.monotonic()
                self.mailer.start()
            given_up = self._given_up()
            if given_up:
                return given_up
            if healthy:
                calls = len(self.calls.calls) if self.calls is not None else 0
                self.notifier.watchdog(f"{calls} active calls" if self.calls is not None else "edge up")

    async def _apply_domain(self, loop) -> None:
        """The SIP domain is part of the generated edge config: a change restarts the edge.

        It is set in the first-boot wizard, before phones register; a later change costs the
        phones one re-registration (their registrations live in the edge's memory).
        """
        domain = self.store.settings().sip_domain
        if domain == self.edge_cfg.domain:
            return
        log.warning("SIP domain changed from %r to %r: restarting the edge", self.edge_cfg.domain, domain)
        self.edge_cfg = dataclasses.replace(self.edge_cfg, domain=domain)
        await loop.run_in_executor(None, self.edge.stop)
        self.edge = Edge(self.edge_cfg)
        if self.ha is not None:
            self.edge.registering = self._ha_state() == "MASTER"
        await loop.run_in_executor(None, self.edge.start)

    def _prepare_ha(self) -> None:
        """With failover on (`pbx ha set`), every service listens on the virtual IP, which only the
        active box holds: the kernel must let the standby bind it already (ip_nonlocal_bind), and
        keepalived (started last, once the services answer) moves it between the boxes."""
        from .ha import settings as ha_settings
        from .ha.keepalived import Keepalived
        ha = ha_settings.load(self.opts.data)
        if not ha.enabled or "calls" not in self.opts.components:
            return
        ha.validate()
        if not self.opts.cs_port:
            # a phone's dialog names the call service's port (behind the edge): the same port on
            # both boxes, so an answered call moves with the VIP (services/ha/calls.py)
            self.opts.cs_port = 5080
        if self.opts.sip_addr != ha.vip_addr:
            raise RunError(f"failover is on: the PBX must listen on the virtual IP {ha.vip_addr}, not "
                           f"{self.opts.sip_addr}: pass --sip-addr {ha.vip_addr} (or `pbx ha set --off`)")
        try:
            Path("/proc/sys/net/ipv4/ip_nonlocal_bind").write_text("1\n")
        except OSError as exc:
            raise RunError(f"failover needs net.ipv4.ip_nonlocal_bind=1 and it cannot be set: {exc.strerror}: "
                           "run as root or set it with sysctl") from None
        self.ha = Keepalived(self.opts.data, ha)

    def _ha_state(self) -> str | None:
        from .ha import settings as ha_settings
        return ha_settings.state(self.opts.data).get("state")

    def _ha_edge_options(self) -> dict:
        """The edge of a failover pair: listens on the box's own address too, replicates
        registrations and bans to the peer (DMQ), and shares the nonce secret with it."""
        import hashlib
        ha = self.ha.ha
        if not ha.vrrp:       # a remote standby or a lone office box: its own address, no DMQ over the WAN
            return {}
        secret = hashlib.sha256(f"officepbx-ha-nonce:{ha.secret}".encode()).hexdigest()[:32]
        return {"node_addr": ha.node_addr, "dmq_peer": ha.peer_addr, "auth_secret": secret}

    async def _start_pnp(self) -> None:
        """Answer desk phones' plug-and-play requests on the LAN (services/pnp.py). A box that
        cannot join the group (no multicast on its interface) still runs: phones are then given
        their address by DHCP or by hand."""
        from webui.scheme import wants_tls

        from . import pnp
        o = self.opts
        scheme = "https" if wants_tls("auto", o.sip_addr) else "http"
        default_port = 443 if scheme == "https" else 80
        base = f"{scheme}://{o.sip_addr}" + ("" if o.web_port == default_port else f":{o.web_port}")
        try:
            self.pnp, _ = await pnp.start(self.store, lambda: base, o.sip_addr, o.pnp_port)
        except OSError as exc:
            log.warning("pnp: plug-and-play not answered (%s): give phones their address by DHCP option 66 "
                        "or by hand", exc.strerror or exc)

    async def stop(self) -> None:
        self.stopping.set()
        self.notifier.stopping()
        if self.ha is not None:     # first: the peer takes the VIP while this box winds down
            await asyncio.get_running_loop().run_in_executor(None, self.ha.stop)
        if self.replicator is not None:
            await self.replicator.stop()
        if self.pnp is not None:
            self.pnp.close()
        if self.control is not None:
            await self.control.stop()
        if self.mailer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.mailer.stop)
        if self.lines is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.lines.stop)
        if self.web is not None:
            self.web.terminate()
            try:
                self.web.wait(5)
            except subprocess.TimeoutExpired:
                self.web.kill()
        if self.web_socket is not None:
            if self.web_waiting:
                asyncio.get_running_loop().remove_reader(self.web_socket.fileno())
            self.web_socket.close()
        for instance, proc in self.more_calls.items():
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for instance, proc in self.more_calls.items():
            if proc is not None:
                try:
                    await asyncio.get_running_loop().run_in_executor(None, proc.wait, 15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if self.calls is not None:
            await self.calls.stop()
        if self.edge is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.edge.stop)
        if self.media_relay is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.media_relay.stop)
        if self.cdr is not None:
            self.cdr.close()


async def _main(opts: RunOptions) -> int:
    parts = {c for c in opts.components if c != "web" or opts.web}
    if opts.instance > 1:           # call service I of several: its own lock (decision 025)
        parts = {f"calls-{opts.instance}" if c == "calls" else c for c in parts}
    locks = lock_data_dir(opts.data, parts)
    try:
        pbx = Pbx(opts)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, pbx.stopping.set)
        try:
            await pbx.start()
        except Exception as exc:
            await pbx.stop()
            if isinstance(exc, RunError):
                raise
            log.debug("start failed", exc_info=True)
            raise RunError(f"PBX cannot start: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") \
                from None
        given_up = await pbx.supervise()
        log.info("PBX stopping")
        await pbx.stop()
        if given_up:
            raise RunError(given_up)
        return 0
    finally:
        for fd in locks:
            os.close(fd)


def run(opts: RunOptions) -> int:
    """Run until SIGTERM/SIGINT (0); RunError when a part cannot start or was given up."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_main(opts))
    return uvloop.run(_main(opts))
