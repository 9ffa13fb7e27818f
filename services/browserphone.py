"""Browser phones for `pbx run`: the edge's WebSocket settings and the supervised media relay.

Enabled with `pbx run --browser-phone-port PORT` (0, the default: off). Then
  - the edge (Kamailio) listens for SIP over WebSocket on PORT: wss with the web UI's certificate
    (DATA/tls/, the active pair) when the web UI is HTTPS, plain ws when the box listens on loopback
    (`make run`: http://127.0.0.1 and ws://127.0.0.1 count as secure for getUserMedia), and accepts
    only the web UI's own origins;
  - rtpengine runs as a child, restarted when it dies, and carries the media of calls with a
    browser leg only (docs/decisions/018-browser-phone.md).
"""
from __future__ import annotations

import logging
import socket
import time

from .edge.config import EdgeError
from .edge.rtpengine import RtpEngine, RtpEngineConfig

log = logging.getLogger(__name__)

RESTART_AFTER_S = 5.0


def uses_tls(sip_addr: str) -> bool:
    from webui.scheme import wants_tls
    return wants_tls("auto", sip_addr)


def web_origins(sip_addr: str, web_port: int, domain: str = "") -> tuple[str, ...]:
    """Every origin the box's own web UI is reached by: its address, host names and SIP domain."""
    scheme = "https" if uses_tls(sip_addr) else "http"
    default = 443 if scheme == "https" else 80
    hostname = socket.gethostname()
    hosts = [sip_addr, hostname, f"{hostname}.local", domain]
    if sip_addr.startswith("127."):
        hosts.append("localhost")
    port = "" if web_port == default else f":{web_port}"
    return tuple(dict.fromkeys(f"{scheme}://{h}{port}" for h in hosts if h and h != "0.0.0.0"))


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def edge_options(opts, domain: str) -> dict:
    """EdgeConfig keyword arguments for RunOptions `opts` ({} when browser phones are off)."""
    if not getattr(opts, "browser_phone_port", 0):
        return {}
    found = {"ws_port": opts.browser_phone_port, "rtpengine_port": free_udp_port(),
             "ws_origins": web_origins(opts.sip_addr, opts.web_port, domain)}
    if uses_tls(opts.sip_addr):
        from webui.https import certs
        crt, key, _ = certs.active_files(opts.data, opts.sip_addr)
        found.update(ws_tls=True, ws_cert=str(crt), ws_key=str(key))
    return found


class MediaRelay:
    """rtpengine as a child of the PBX: started before the edge, restarted when it dies."""

    def __init__(self, opts, edge_cfg):
        interface = opts.sip_addr
        if interface == "0.0.0.0":
            raise EdgeError("browser phones need one SIP address for their media, not 0.0.0.0: "
                            "pass --sip-addr with the box's LAN address")
        self.rtp = RtpEngine(RtpEngineConfig(edge_cfg.run_dir, interface=interface,
                                             ng_port=edge_cfg.rtpengine_port,
                                             ports=tuple(opts.browser_phone_rtp_ports)))
        self._last_start = 0.0
        self.certs = CertFollower(edge_cfg) if edge_cfg.ws_tls else None

    def start(self) -> "MediaRelay":
        self._last_start = time.monotonic()
        self.rtp.start()
        return self

    def check(self) -> bool:
        """Call from the supervision loop: restarts a dead relay (at most every 5 s); False while down.
        Also gives the edge's wss a certificate the administrator changed (CertFollower)."""
        if self.certs is not None:
            self.certs.check()
        if self.rtp.running:
            return True
        if time.monotonic() - self._last_start < RESTART_AFTER_S:
            return False
        log.error("rtpengine (browser phone media) is not running: restarting it")
        try:
            self.start()
        except EdgeError as exc:
            log.error("rtpengine restart failed: %s", str(exc).splitlines()[0])
            return False
        return True

    def stop(self) -> None:
        self.rtp.stop()


class CertFollower:
    """The edge's wss serves the web UI's active certificate (DATA/tls/uploaded.* when present, else
    box.*). When that changes (a certificate uploaded or removed on the HTTPS page, the generated one
    renewed), tls.cfg is rewritten and the running edge reloads it (RPC tls.reload): no restart,
    registered browsers stay connected."""

    def __init__(self, edge_cfg, every: float = 5.0):
        self.cfg, self.every = edge_cfg, every
        self._checked = time.monotonic()
        self.current = self._active()

    def _active(self):
        d = self.cfg.data_dir / "tls"
        for crt, key in ((d / "uploaded.crt", d / "uploaded.key"), (d / "box.crt", d / "box.key")):
            try:
                return str(crt), str(key), crt.stat().st_mtime_ns, key.stat().st_mtime_ns
            except OSError:
                continue
        return None

    def check(self, force: bool = False) -> bool:
        """True when a changed certificate was handed to the edge now."""
        if not force and time.monotonic() - self._checked < self.every:
            return False
        self._checked = time.monotonic()
        active = self._active()
        try:        # an edge restarted since writes tls.cfg from its start-up settings again
            named = f"certificate = {active[0]}\n" in self.cfg.tls_cfg_path.read_text() if active else True
        except OSError:
            named = False
        if active is None or (active == self.current and named):
            return False
        from .edge.process import write_tls_cfg
        from .edge.rpc import KamailioRpc
        write_tls_cfg(self.cfg.tls_cfg_path, active[0], active[1])
        try:
            KamailioRpc(self.cfg.rpc_fifo, self.cfg.run_dir).call("tls.reload")
        except Exception as exc:        # the edge is down or restarting: it reads tls.cfg when it starts
            log.warning("browser phones: new certificate %s not reloaded into the edge (%s): it applies "
                        "when the edge starts again", active[0], exc)
        else:
            log.info("browser phones: wss now serves %s", active[0])
        self.current = active
        return True
