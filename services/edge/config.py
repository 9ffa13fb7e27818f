"""EdgeConfig: the settings of the SIP edge, checked, and the kamailio.cfg they render to."""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

TEMPLATE = Path(__file__).with_name("kamailio.cfg.tmpl")

# AF_UNIX socket paths are limited to 108 bytes (sun_path) on Linux.
_SUN_PATH_MAX = 104  # Kamailio ctl refuses longer unix socket paths (sun_path is 108, it keeps a margin)
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
MAX_EXPIRES = 3600  # registrar max_expires in the template
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


class EdgeError(Exception):
    """The SIP edge cannot do what was asked; the message names the cause and the fix."""


@dataclass(frozen=True)
class EdgeConfig:
    data_dir: Path
    sip_addr: str = "127.0.0.1"
    sip_port: int = 5060
    cs_addr: str = "127.0.0.1"
    cs_port: int = 5080
    domain: str = ""
    trusted: tuple[str, ...] = ()
    flood_limit: tuple[int, int] = (100, 2)  # requests, seconds (pike); trusted networks and trunks are exempt
    # REGISTER + INVITE per authenticated account (requests, seconds), from any address
    account_limit: tuple[int, int] = (20, 10)
    auth_fail_limit: int = 10  # wrong credentials per IP in 60 s before a ban
    ban_seconds: int = 300
    children: int = 4
    tcp_children: int = 2
    # Kamailio's shared memory pool (MB), where tm keeps every transaction until its wait timer ends:
    # the bench exhausted the default 64 MB at 200 call setups/s. Pages are touched only when used.
    shm_mb: int = 256
    # TCP: a connection that has not authenticated is closed after this many idle seconds; a successful
    # REGISTER or INVITE over it keeps it for a registration's lifetime (max_expires + 60 s).
    tcp_idle_seconds: int = 30
    tcp_max_connections: int = 4096
    # registrations are written back to location.sqlite this often (and at shutdown)
    ul_sync_seconds: int = 10
    # Trunk registrations: the expiry we ask for, how often the uac module looks at them (a
    # registration is refreshed when it has this + 3 s or less left), and the back-off of a
    # failed one: retried after base, 2 x base, 4 x base ... at most max seconds.
    trunk_expires: int = 600
    trunk_timer_seconds: int = 5
    trunk_retry_seconds: int = 30
    trunk_retry_max_seconds: int = 600
    # Browser phones (SIP over WebSocket, RFC 7118; docs/decisions/018-browser-phone.md): 0 = off.
    # ws_tls: wss with the web UI's certificate files (ws_cert, ws_key), else plain ws (loopback only);
    # ws_origins: the only Origin headers a WebSocket handshake may carry (the box's own web UI);
    # rtpengine_port: the media relay's control port on 127.0.0.1 (calls with a browser leg only).
    ws_port: int = 0
    ws_tls: bool = False
    ws_cert: str = ""
    ws_key: str = ""
    ws_origins: tuple[str, ...] = ()
    rtpengine_port: int = 0
    # Failover pair (services/ha): sip_addr is the virtual IP, which only the active box holds;
    # node_addr is this box's own address, listened on too (after the VIP, so the VIP stays the
    # socket requests are sent from), for the start-up probe and the peer's split-brain check.
    node_addr: str = ""
    dmq_peer: str = ""       # the peer box's own address: registrations and bans replicated (DMQ)
    auth_secret: str = ""    # the nonce secret, the same on both boxes of a pair
    # Scale-out (docs/decisions/025-scale-out-dispatcher.md): the UDP ports of call services 2..N on
    # cs_addr. Empty (one call service): the config is the same as without this setting. Else the
    # dispatcher module spreads new calls to extensions over all of them (Call-ID hash, OPTIONS probes)
    # and sends every other new request to call service 1 while it answers.
    more_call_services: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "trusted", tuple(self.trusted))
        _check_ipv4("sip_addr", self.sip_addr)
        _check_ipv4("cs_addr", self.cs_addr)
        _check_port("sip_port", self.sip_port)
        _check_port("cs_port", self.cs_port)
        if (self.sip_addr, self.sip_port) == (self.cs_addr, self.cs_port):
            raise EdgeError(
                f"sip_addr:sip_port and cs_addr:cs_port are both {self.sip_addr}:{self.sip_port}: "
                "give the call service its own port (default 5080)")
        if self.domain and not _HOSTNAME.match(self.domain):
            raise EdgeError(f"domain {self.domain!r} is not a host name or IPv4 address: "
                            "use e.g. 'pbx.example.com' or leave it empty")
        for net in self.trusted:
            try:
                ipaddress.IPv4Network(net, strict=False)
            except ValueError:
                raise EdgeError(f"trusted entry {net!r} is not an IPv4 address or network: "
                                "use e.g. '192.0.2.10' or '192.0.2.0/24'") from None
        for name, example in (("flood_limit", "(100, 2)"), ("account_limit", "(20, 10)")):
            value = tuple(getattr(self, name))
            object.__setattr__(self, name, value)
            if len(value) != 2 or not all(_is_int(v) and v > 0 for v in value):
                raise EdgeError(f"{name} {value!r} must be (requests, seconds), "
                                f"two positive integers, e.g. {example}")
        for name in ("auth_fail_limit", "ban_seconds", "children", "tcp_children", "shm_mb",
                     "tcp_idle_seconds", "tcp_max_connections", "ul_sync_seconds", "trunk_expires",
                     "trunk_timer_seconds", "trunk_retry_seconds", "trunk_retry_max_seconds"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise EdgeError(f"{name}={value!r} must be a positive integer")
        _check_webrtc(self)
        object.__setattr__(self, "more_call_services", tuple(self.more_call_services))
        for port in self.more_call_services:
            _check_port("more_call_services", port)
        ports = (self.cs_port, *self.more_call_services)
        if len(set(ports)) != len(ports) or (self.cs_addr == self.sip_addr and self.sip_port in ports):
            raise EdgeError(f"call service ports {list(ports)} on {self.cs_addr} must differ from each other "
                            f"and from the SIP port {self.sip_port}: give each call service its own port")
        if len(str(self.ctl_socket)) > _SUN_PATH_MAX:
            raise EdgeError(f"data_dir {self.data_dir} is too deep for a control socket "
                            f"({len(str(self.ctl_socket))} > {_SUN_PATH_MAX} bytes): "
                            "use a shorter path")

    # Runtime files, all under data_dir/edge/.
    @property
    def run_dir(self) -> Path:
        return self.data_dir / "edge"

    @property
    def cfg_path(self) -> Path:
        return self.run_dir / "kamailio.cfg"

    @property
    def db_path(self) -> Path:
        return self.run_dir / "subscribers.sqlite"

    @property
    def location_db_path(self) -> Path:
        return self.run_dir / "location.sqlite"

    @property
    def presence_db_path(self) -> Path:
        return self.run_dir / "presence.sqlite"

    @property
    def trunks_db_path(self) -> Path:
        return self.run_dir / "trunks.sqlite"

    @property
    def pid_path(self) -> Path:
        return self.run_dir / "kamailio.pid"

    @property
    def rpc_fifo(self) -> Path:
        return self.run_dir / "kamailio_rpc.fifo"

    @property
    def ctl_socket(self) -> Path:
        return self.run_dir / "kamailio_ctl.sock"

    @property
    def realm(self) -> str:
        return self.domain or self.sip_addr

    @property
    def probe_addr(self) -> tuple[str, int]:
        if self.node_addr:        # the VIP may be the peer's right now
            return self.node_addr, self.sip_port
        host = "127.0.0.1" if self.sip_addr == "0.0.0.0" else self.sip_addr
        return host, self.sip_port

    @property
    def webrtc_info_path(self) -> Path:
        """Where the browser phone page learns the WebSocket port (written by Edge.start)."""
        return self.run_dir / "webrtc.json"

    @property
    def tls_cfg_path(self) -> Path:
        return self.run_dir / "tls.cfg"

    @property
    def dispatcher_list_path(self) -> Path:
        return self.run_dir / "dispatcher.list"

    @property
    def call_services(self) -> list[tuple[str, int]]:
        """Every call service the edge sends calls to, call service 1 first."""
        return [(self.cs_addr, self.cs_port)] + [(self.cs_addr, p) for p in self.more_call_services]

    def dispatcher_list(self) -> str:
        """The dispatcher module's destinations (written next to kamailio.cfg by Edge.start): one set,
        every call service once (so each is probed once), call service 1 at the highest priority. New
        calls to extensions: a Call-ID hash over the set (algorithm 0, priority ignored); every other
        new request: the highest priority that answers (algorithm 8), call service 1 while it is up."""
        n = len(self.call_services)
        lines = ["# setid destination flags priority (generated by services/edge/config.py)"]
        lines += [f"1 sip:{a}:{p};transport=udp 0 {n - i}" for i, (a, p) in enumerate(self.call_services)]
        return "\n".join(lines) + "\n"

    def _call_service_values(self) -> dict:
        """The template's call-service tests: with one call service exactly the text of before."""
        if not self.more_call_services:
            return {
                "from_cs_test": f'$si == "{self.cs_addr}" && $sp == {self.cs_port} && $pr == "udp"',
                "cs_hop_test": f'$nh(d) == "{self.cs_addr}" && $nh(p) == {self.cs_port}',
                "to_cs_target": f'$du = "sip:{self.cs_addr}:{self.cs_port};transport=udp";',
                "dispatcher_cfg": "",
            }
        sp = " || ".join(f"$sp == {p}" for _, p in self.call_services)
        nhp = " || ".join(f"$nh(p) == {p}" for _, p in self.call_services)
        return {
            "from_cs_test": f'$si == "{self.cs_addr}" && ({sp}) && $pr == "udp"',
            "cs_hop_test": f'$nh(d) == "{self.cs_addr}" && ({nhp})',
            "to_cs_target": "route(CS_PICK);",
            "dispatcher_cfg": _DISPATCHER_CFG.replace("{{dispatcher_list}}", str(self.dispatcher_list_path)),
        }

    def render(self) -> str:
        """The kamailio.cfg text for these settings."""
        defines = []
        if self.ws_port:
            defines.append("#!define WITH_WEBRTC")
            if self.ws_tls:
                defines.append("#!define WITH_WSS")
        if self.dmq_peer and self.node_addr:
            defines.append("#!define WITH_DMQ")
        domain_alias = domain_match = ""
        if self.domain:
            defines.append("#!define WITH_DOMAIN")
            domain_match = f' || $rd == "{self.domain}"'
            # A host name cannot collide with the CS address; an IP carries
            # the port so that the CS on the same IP stays "not myself".
            domain_alias = (f"{self.domain}:{self.sip_port}" if _is_ipv4(self.domain)
                            else self.domain)
        values = {
            "defines": "\n".join(defines),
            "sip_addr": self.sip_addr,
            "sip_port": self.sip_port,
            "node_addr": self.node_addr,
            "dmq_peer": self.dmq_peer,
            "auth_secret": self.auth_secret,
            "node_listen": (f"listen=udp:{self.node_addr}:{self.sip_port}\n"
                            f"listen=tcp:{self.node_addr}:{self.sip_port}\n") if self.node_addr else "",
            "cs_addr": self.cs_addr,
            "cs_port": self.cs_port,
            "domain_alias": domain_alias,
            "domain_match": domain_match,
            "realm": self.realm,
            "flood_requests": self.flood_limit[0],
            "flood_seconds": self.flood_limit[1],
            "auth_fail_limit": self.auth_fail_limit,
            "account_requests": self.account_limit[0],
            "account_seconds": self.account_limit[1],
            "tcp_idle_seconds": self.tcp_idle_seconds,
            "tcp_max_connections": self.tcp_max_connections,
            "max_expires": MAX_EXPIRES,
            "tcp_auth_lifetime": MAX_EXPIRES + 60,
            "ul_sync_seconds": self.ul_sync_seconds,
            "location_db": self.location_db_path,
            "trunks_db": self.trunks_db_path,
            "presence_db": self.presence_db_path,
            "presence_domain": self.realm,
            "trunk_timer": self.trunk_timer_seconds,
            "ban_seconds": self.ban_seconds,
            "children": self.children,
            "tcp_children": self.tcp_children,
            "db_path": self.db_path,
            "rpc_fifo": self.rpc_fifo,
            "run_dir": self.run_dir,
            "ctl_socket": self.ctl_socket,
            "ws_port": self.ws_port,
            "ws_proto": "tls" if self.ws_tls else "tcp",
            "tls_cfg": self.tls_cfg_path,
            "ws_origin_match": " || ".join(f'$hdr(Origin) == "{o}"' for o in self.ws_origins) or "0",
            "rtpengine_port": self.rtpengine_port,
            **self._call_service_values(),
        }

        def fill(match: re.Match) -> str:
            return str(values[match.group(1)])

        return _PLACEHOLDER.sub(fill, TEMPLATE.read_text())


# More than one call service (docs/decisions/025-scale-out-dispatcher.md). Placed before the routing
# logic; route(CS_PICK) takes the place of TO_CS's fixed $du.
_DISPATCHER_CFG = """# ----- more than one call service (docs/decisions/025-scale-out-dispatcher.md).
# A new call to an extension goes to one of them by a hash of its Call-ID
# (algorithm 0); every other new request (feature codes, parking, conferences,
# queues, paging, groups, outside numbers, trunk calls...) to call service 1
# while it answers (algorithm 8: the highest priority, service 1's), since
# those features keep their state in that process's memory.
# In-dialog requests follow the Record-Route / Contact of the service that owns
# the dialog. Every call service is probed with OPTIONS each second: one that
# stops answering is skipped until it answers again; a new INVITE it does not
# answer within 2 s is sent to the next one.
loadmodule "dispatcher.so"
modparam("dispatcher", "list_file", "{{dispatcher_list}}")
# 2: failover (ds_next_dst, ds_mark_dst) over the set ds_select_dst chose from
modparam("dispatcher", "flags", 2)
modparam("dispatcher", "ds_ping_method", "OPTIONS")
modparam("dispatcher", "ds_ping_from", "sip:edge@127.0.0.1")
modparam("dispatcher", "ds_ping_interval", 1)
modparam("dispatcher", "ds_probing_mode", 1)
modparam("dispatcher", "ds_probing_threshold", 1)
modparam("dispatcher", "ds_inactive_threshold", 1)
modparam("dispatcher", "ds_ping_reply_codes", "class=2")

route[CS_PICK] {
	$var(ds_alg) = 8;
	if (is_method("INVITE") && !has_totag() && $rU =~ "^[0-9]+$"
			&& is_subscriber("$ru", "subscriber", "2")) {
		$var(ds_alg) = 0;
	}
	if (!ds_select_dst("1", "$var(ds_alg)")) {
		xlog("L_ERR", "edge: no call service answers: $rm from $si refused call-id=$ci\\n");
		sl_send_reply("503", "No Call Service");
		exit;
	}
	if (is_method("INVITE")) {
		t_set_fr(0, 2000);
		t_on_failure("CS_FAILOVER");
	}
}

# one log line when the probes find a call service down or back up ($ru: the
# probe's destination; a service CS_FAILOVER marks down ($du set) is logged there)
event_route[dispatcher:dst-down] {
	if ($du == $null) {
		xlog("L_WARN", "edge: call service $ru down (no answer to the OPTIONS probe): new calls skip it\\n");
	}
}
event_route[dispatcher:dst-up] {
	xlog("L_NOTICE", "edge: call service $ru up again: new calls reach it\\n");
}

# A call service that did not answer a new INVITE at all within 2 s: marked down
# (the probes bring it back) and the call goes to the next one in the set.
failure_route[CS_FAILOVER] {
	if (t_is_canceled() || !t_branch_timeout() || t_branch_replied()) exit;
	xlog("L_WARN", "edge: call service $du did not answer $rm call-id=$ci: trying the next one\\n");
	ds_mark_dst("ip");
	if (ds_next_dst()) {
		t_set_fr(0, 2000);
		t_on_failure("CS_FAILOVER");
		route(RELAY);
	}
}

"""

_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")


def _check_webrtc(cfg: "EdgeConfig") -> None:
    object.__setattr__(cfg, "ws_origins", tuple(cfg.ws_origins))
    if not cfg.ws_port:
        return
    _check_port("ws_port", cfg.ws_port)
    _check_port("rtpengine_port", cfg.rtpengine_port)
    if cfg.ws_port == cfg.sip_port:
        raise EdgeError(f"ws_port {cfg.ws_port} is the SIP port: give browser phones their own port "
                        "(default 8443)")
    if cfg.ws_tls:
        for name in ("ws_cert", "ws_key"):
            path = getattr(cfg, name)
            if not path or not Path(path).is_file():
                raise EdgeError(f"{name} {path!r} is not a file: secure WebSocket (wss) uses the web UI's "
                                "certificate in DATA/tls/ (it is made when the web UI starts over HTTPS)")
    elif not cfg.sip_addr.startswith("127."):
        raise EdgeError(f"plain ws:// for browser phones only on loopback, not on {cfg.sip_addr}: browsers "
                        "need wss (ws_tls=True with the box's certificate)")
    if not cfg.ws_origins:
        raise EdgeError("ws_origins is empty: name the web UI's origin(s), e.g. 'https://pbx.local'")
    for origin in cfg.ws_origins:
        if not _ORIGIN.match(origin):
            raise EdgeError(f"ws_origins entry {origin!r} is not an origin: use e.g. 'https://192.0.2.10:8443'")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _check_ipv4(name: str, value: str) -> None:
    if not isinstance(value, str) or not _is_ipv4(value):
        raise EdgeError(f"{name}={value!r} is not an IPv4 address: use e.g. '127.0.0.1'")


def _check_port(name: str, value: int) -> None:
    if not _is_int(value) or not 1 <= value <= 65535:
        raise EdgeError(f"{name}={value!r} is not a port number (1-65535)")
