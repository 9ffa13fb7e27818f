"""High availability: two boxes on one LAN sharing a virtual address (VRRP), as pure decisions.

Each box keeps its own HA settings (they differ per box: its own address, its role), in
DATA/ha.json, not in the replicated configuration. Both run keepalived (VRRPv3, adverts every
0.1 s, unicast to the peer); the box holding the virtual IP (VIP) is the active PBX: phones and
trunks only ever talk to the VIP, and every service listens on it on both boxes (the standby's
kernel allows binding an address it does not hold yet: net.ipv4.ip_nonlocal_bind=1).

- The primary has the higher priority and takes the VIP back when it is healthy again;
- a health check (`pbx ha check`: the edge answers SIP, the call service answers its control
  socket) failing twice in a row drops a box to FAULT, so the peer takes over;
- split brain when only the heartbeat path is cut: the backup takes the VIP only if the peer is
  not reachable on the LAN either (the tie-breaker in `pbx ha check --tie-breaker`: the peer's
  edge answering on its own LAN address means the peer is alive, so this box stays backup).
  See docs/decisions/ for why.

`keepalived_conf(cfg, ...)` renders keepalived's configuration; nothing here runs anything.
"""
from __future__ import annotations

import ipaddress
import re
import secrets
from dataclasses import asdict, dataclass, fields

from firmware.config.errors import ValidationError, ValidationErrors

ROLES = ("primary", "backup")
SITES = ("main", "remote")   # main: the office (a VRRP pair, or one box); remote: a standby in another datacenter
PRIORITY = {"primary": 150, "backup": 100}
_IFNAME = re.compile(r"[A-Za-z0-9_.\-]{1,15}")


def new_secret() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class HaSettings:
    enabled: bool = False
    role: str = "primary"
    node_addr: str = ""          # this box's own address on the LAN (adverts come from it)
    peer_addr: str = ""          # the other box's own address
    vip: str = ""                # "192.0.2.10/24": the address phones and trunks use
    interface: str = ""          # the LAN interface carrying the VIP
    router_id: int = 51          # VRRP virtual router id: unique per LAN segment
    advert_ms: int = 100
    secret: str = ""             # shared by both boxes: authenticates replication between them
    site: str = "main"           # "remote": a standby in another datacenter (no VIP, no VRRP; see remote_active)
    remote_addr: str = ""        # on a main-site box: the remote standby's routable address ("" = none)

    @property
    def vrrp(self) -> bool:
        """A main-site box of a LAN pair (keepalived, a VIP); False for the remote standby and for a
        single office box whose only failover is the remote standby."""
        return self.site == "main" and bool(self.vip or self.peer_addr)

    def validate(self) -> None:
        if self.site not in SITES:
            raise ValidationErrors([ValidationError("site", f"{self.site!r}: use main or remote")])
        if not self.vrrp:
            return self._validate_wan()
        errors = []
        if self.role not in ROLES:
            errors.append(ValidationError("role", f"{self.role!r}: use primary or backup"))
        for name in ("node_addr", "peer_addr"):
            try:
                ipaddress.IPv4Address(getattr(self, name))
            except ValueError:
                errors.append(ValidationError(name, f"{getattr(self, name)!r} is not an IPv4 address"))
        try:
            vip = ipaddress.IPv4Interface(self.vip)
            if "/" not in self.vip:
                errors.append(ValidationError("vip", "give the prefix length too, e.g. 192.0.2.10/24"))
            elif str(vip.ip) in (self.node_addr, self.peer_addr):
                errors.append(ValidationError("vip", "the virtual address must differ from both boxes' own addresses"))
        except ValueError:
            errors.append(ValidationError("vip", f"{self.vip!r} is not an address with prefix, e.g. 192.0.2.10/24"))
        if self.node_addr and self.node_addr == self.peer_addr:
            errors.append(ValidationError("peer_addr", "the peer's address must differ from this box's"))
        if not _IFNAME.fullmatch(self.interface or ""):
            errors.append(ValidationError("interface", f"{self.interface!r} is not a network interface name (e.g. eth0)"))
        if not isinstance(self.router_id, int) or not 1 <= self.router_id <= 255:
            errors.append(ValidationError("router_id", "must be 1-255, the same on both boxes"))
        if not isinstance(self.advert_ms, int) or not 10 <= self.advert_ms <= 1000 or self.advert_ms % 10:
            errors.append(ValidationError("advert_ms", "must be 10-1000 ms in steps of 10 (VRRPv3 centiseconds)"))
        errors += self._remote_errors()
        if len(self.secret or "") < 16:
            errors.append(ValidationError("secret", "must be at least 16 characters, the same on both boxes "
                                                    "(leave it out on the first box to have one made)"))
        if errors:
            raise ValidationErrors(errors)

    def _remote_errors(self) -> list:
        if not self.remote_addr:
            return []
        try:
            ipaddress.IPv4Address(self.remote_addr)
        except ValueError:
            return [ValidationError("remote_addr", f"{self.remote_addr!r} is not an IPv4 address")]
        if self.remote_addr in (self.node_addr, self.peer_addr):
            return [ValidationError("remote_addr", "the remote standby's address must differ from the LAN boxes'")]
        return []

    def _validate_wan(self) -> None:
        """The remote standby (peer = the main site's box), or one office box with a remote standby."""
        errors = []
        names = ("node_addr", "peer_addr") if self.site == "remote" else ("node_addr",)
        for name in names:
            try:
                ipaddress.IPv4Address(getattr(self, name))
            except ValueError:
                errors.append(ValidationError(name, f"{getattr(self, name)!r} is not an IPv4 address"))
        if self.site == "remote":
            if self.node_addr and self.node_addr == self.peer_addr:
                errors.append(ValidationError("peer_addr", "the main site's address must differ from this box's"))
            if self.vip or self.remote_addr:
                errors.append(ValidationError("site", "a remote standby has no VIP and no remote of its own: "
                                                      "give --peer the main site box's routable address"))
        else:
            if not self.remote_addr:
                errors.append(ValidationError("peer_addr", "give a LAN peer with a VIP, or a remote standby "
                                                           "(--remote), or both"))
            errors += self._remote_errors()
        if len(self.secret or "") < 16:
            errors.append(ValidationError("secret", "must be at least 16 characters, the same on both boxes "
                                                    "(leave it out on the first box to have one made)"))
        if errors:
            raise ValidationErrors(errors)

    @property
    def vip_addr(self) -> str:
        """The address the PBX serves on: the VIP of a LAN pair, else the box's own address."""
        if not self.vip:
            return self.node_addr
        return str(ipaddress.IPv4Interface(self.vip).ip)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict) -> "HaSettings":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in names})


def keepalived_conf(ha: HaSettings, *, check_cmd: str, notify_cmd: str, run_dir: str,
                    yield_file: str | None = None, notify_fifo: str | None = None) -> str:
    """keepalived.conf for this box. Both boxes start as BACKUP and the higher priority wins the
    election; a failing check puts a box in FAULT (it gives up the VIP at once), and so does a
    non-zero value in `yield_file` (the tie-breaker's verdict, see `should_yield`: keepalived
    watches the file with inotify, so it acts at once, not at the next check)."""
    ha.validate()
    advert = f"{ha.advert_ms / 1000:.2f}".rstrip("0").rstrip(".")
    track_file = track_block = fifo = ""
    if notify_fifo and not any(c.isspace() or c == '"' for c in notify_fifo):
        # the same changes as the notify script, in order and at once (`pbx run` reads it)
        fifo = f"\n    vrrp_notify_fifo {notify_fifo}"
    if yield_file:
        track_file = f"""
track_file pbx_yield {{
    file "{yield_file}"
    weight 0
    init_file 0 overwrite
}}
"""
        track_block = """    track_file {
        pbx_yield
    }
"""
    return f"""# made by the Office PBX from DATA/ha.json ({ha.role}); changes here are overwritten
global_defs {{
    router_id pbx-{ha.role}
    vrrp_version 3
    script_user root
    enable_script_security
    vrrp_garp_master_delay 1
    vrrp_garp_master_repeat 3
    vrrp_garp_master_refresh 10
    vrrp_no_swap{fifo}
}}

vrrp_script pbx_healthy {{
    script "{check_cmd}"
    interval 1
    timeout 3
    fall 2
    rise 2
}}
{track_file}
vrrp_instance PBX {{
    state BACKUP
    preempt_delay 3
    interface {ha.interface}
    virtual_router_id {ha.router_id}
    priority {PRIORITY[ha.role]}
    advert_int {advert}
    unicast_src_ip {ha.node_addr}
    unicast_peer {{
        {ha.peer_addr}
    }}
    virtual_ipaddress {{
        {ha.vip} dev {ha.interface}
    }}
    track_interface {{
        {ha.interface}
    }}
    track_script {{
        pbx_healthy
    }}
{track_block}    notify "{notify_cmd}"
}}
"""


# ----- the tie-breaker: two masters when only the adverts are lost --------------------------------
YIELD_ADVERTS_LOST_S = 0.3   # the peer's heartbeats went on this long after its last advert (both
                             # come every 0.1 s: when the peer dies they stop within 0.1 s of each other;
                             # 0.2 s made a backup on a machine at load 12 stand back for a moment when
                             # keepalived's adverts came late)
YIELD_PEER_HEARD_S = 0.35    # ... and the last one (every 0.1 s, services/ha/replication.py) is this fresh


def loses_election(my_role: str, my_addr: str, peer_role: str | None, peer_addr: str) -> bool:
    """Would this box lose a VRRP election to the peer? Higher priority wins, then the higher
    address (as VRRP decides a tie)."""
    mine, theirs = PRIORITY.get(my_role, 0), PRIORITY.get(peer_role or "", 0)
    if mine != theirs:
        return mine < theirs
    return ipaddress.IPv4Address(my_addr) < ipaddress.IPv4Address(peer_addr)


def should_yield(*, peer_state: str | None, peer_heard_age: float | None, advert_age: float | None,
                 loses: bool) -> bool:
    """VRRP alone makes a second master whenever the peer's adverts stop arriving, even when the
    peer is alive and serving (adverts dropped on the way, one direction of a link failing). The
    boxes also hear each other's heartbeats (another protocol, another port): a box that would
    lose the election yields (FAULT: it drops or never takes the VIP) while the peer's heartbeat
    says MASTER and keeps coming while its adverts do not. When the peer dies, both stop at the
    same moment: no yield, the takeover is plain VRRP's. It takes over as usual once the
    heartbeats stop too (the peer is gone) or the adverts come back (plain VRRP again).
    Ages are seconds since the last one heard (None: never heard); the advert's age counts from
    the later of its last advert and the moment its heartbeats began to say MASTER."""
    if not loses or peer_state != "MASTER":
        return False
    if peer_heard_age is None or peer_heard_age > YIELD_PEER_HEARD_S:
        return False
    return advert_age is None or advert_age - peer_heard_age > YIELD_ADVERTS_LOST_S


# ----- the remote standby: takeover without VRRP --------------------------------------------------
# The remote box hears the main site's sealed heartbeats (every 0.1 s over the WAN). Measured over
# netem 40 ms each way with 1 % loss (tests/test_ha_remote.py, make ha-bench): losing 20
# heartbeats in a row at 1 % independent loss does not happen; a 1 s burst of loss does not
# make it flap either.
REMOTE_TAKEOVER_S = 2.0      # no heartbeat of an active main-site box for this long: the remote box takes over
REMOTE_STEADY_GAP_S = 1.0    # a run of the main site's heartbeats broken by a gap this long starts again
REMOTE_HANDBACK_S = 5.0      # ... and an unbroken run this long gives the work back to the main site


def remote_active(*, active: bool, now: float, started: float, master_heard: float | None,
                  master_since: float | None) -> bool:
    """Should the remote standby be the active PBX (register the trunks, serve calls)?

    `master_heard`: when the last heartbeat from an active (MASTER) main-site box came (None:
    none since this box started at `started`); `master_since`: when the current unbroken run of
    them began. Takes over REMOTE_TAKEOVER_S after the last one (or after its own start when it
    never heard one); gives back once they came steadily for REMOTE_HANDBACK_S, so one
    heartbeat getting through a failing WAN does not move the trunks back and forth."""
    if not active:
        last = master_heard if master_heard is not None else started
        return now - last >= REMOTE_TAKEOVER_S
    if master_heard is None or master_since is None or now - master_heard > REMOTE_STEADY_GAP_S:
        return True
    return now - master_since < REMOTE_HANDBACK_S


# ----- status, as people read it (pbx ha status, the dashboard card, the Failover page) --------------
PEER_LOST_S = 1.0            # no heartbeat for this long: the peer is unreachable
LAG_WARN_S = 5.0             # the active box's last acknowledged shipment older than this: warn
STATE_WORDS = {"MASTER": "active", "BACKUP": "standby", "FAULT": "faulty (health check failing)",
               "STOP": "stopped", "unknown": "not started", "unreachable": "unreachable"}
_SHIPMENTS = (("config", "Configuration"), ("cdr", "Call records"), ("file", "Voicemail and recordings"),
              ("voicemail_index", "Voicemail index"))


def _ago(now: float, then: float | None) -> str:
    if not then:
        return "never"
    age = max(0.0, now - then)
    if age < 10:
        return f"{age:.1f} s ago"
    if age < 120:
        return f"{age:.0f} s ago"
    if age < 7200:
        return f"{age / 60:.0f} min ago"
    return f"{age / 3600:.0f} h ago"


def status_summary(doc: dict | None, now: float, fmt_time=None) -> dict:
    """What the failover status says, from the running PBX's "ha" status (services/ha/
    replication.py Replicator.status()). `fmt_time(epoch) -> str` formats the takeover's time.

    Returns {"on", "state", "state_word", "ok", "headline", "peer", "peer_short" (without the
    heartbeat's age), "peer_ok", "rows": [(label,
    text, ok)], "takeover"}: ok is False when the peer is unreachable, the box is faulty, or the
    active box has not had an acknowledgement from the standby for LAG_WARN_S."""
    if not doc:
        return {"on": False, "state": None, "state_word": "off", "ok": True, "headline": "failover off on this box",
                "peer": "", "peer_short": "", "peer_ok": True, "rows": [], "takeover": ""}
    fmt_time = fmt_time or (lambda t: f"{t:.0f}")
    state = doc.get("state") or "unknown"
    active = state == "MASTER"
    peer_state = doc.get("peer_state") or "unreachable"
    heard = doc.get("peer_heard_s")
    peer_ok = peer_state != "unreachable" and heard is not None and heard < PEER_LOST_S
    peer_short = (f"peer {doc.get('peer')} is {STATE_WORDS.get(peer_state, peer_state)}" if peer_ok
                  else f"peer {doc.get('peer')} unreachable")
    if peer_ok:
        peer = f"{peer_short} (heard {heard * 1000:.0f} ms ago)"
    elif heard is not None:
        peer = f"peer {doc.get('peer')} unreachable: last heard {heard:.0f} s ago"
    else:
        peer = f"peer {doc.get('peer')} unreachable: never heard since this box started"
    rep = doc.get("replication") or {}
    rows = []
    for key, label in _SHIPMENTS:
        if active:
            when = rep.get(f"{key}_acked")
            ok = key != "config" or (when is not None and now - when < LAG_WARN_S)
            text = (f"acknowledged by the standby {_ago(now, when)}" if when
                    else "nothing acknowledged by the standby since this box started")
            if key == "file" and doc.get("files_pending"):
                text += f"; {doc['files_pending']} file(s) waiting"
        else:
            when = rep.get(f"{key}_received")
            ok = True
            text = (f"received from the active box {_ago(now, when)}" if when
                    else "nothing received from the active box since this box started")
        rows.append((label, text, ok))
    last = doc.get("last_takeover") or {}
    if last.get("at"):
        gap = last.get("gap_s")
        takeover = (f"took over at {fmt_time(last['at'])}, "
                    + (f"{gap * 1000:.0f} ms after the peer's last heartbeat" if gap is not None
                       else "with no heartbeat of the peer heard before"))
    elif doc.get("takeovers"):
        takeover = f"{doc['takeovers']} takeover(s), the last before this start of the PBX"
    else:
        takeover = "no takeover by this box yet"
    word = STATE_WORDS.get(state, state)
    if state == "FAULT" and doc.get("yielding"):
        word = "standing back (the peer is active but its adverts do not arrive)"
    remote = doc.get("remote")
    if remote:                # a main-site box of a pair: its link to the remote standby
        r_heard = remote.get("peer_heard_s")
        r_ok = r_heard is not None and r_heard < PEER_LOST_S
        r_text = (f"{remote.get('peer')} is {STATE_WORDS.get(remote.get('peer_state'), remote.get('peer_state'))}"
                  if r_ok else f"{remote.get('peer')} unreachable")
        if active:
            r_text += f"; configuration acknowledged {_ago(now, (remote.get('replication') or {}).get('config_acked'))}"
        rows.append(("Remote standby", r_text, r_ok))
    ok = peer_ok and state in ("MASTER", "BACKUP") and all(r[2] for r in rows)
    if doc.get("site") == "remote":
        headline = (f"remote standby, {'active: it registers the trunks and serves calls' if active else word}; "
                    f"main site {doc.get('peer', '')}")
    elif not doc.get("vip"):
        headline = f"office box, {word}; remote standby {doc.get('peer', '')}"
    else:
        headline = f"{doc.get('role', '')} box, {word}; VIP {doc.get('vip', '')}"
    return {"on": True, "state": state, "state_word": word, "ok": ok,
            "headline": headline,
            "peer": peer, "peer_short": peer_short, "peer_ok": peer_ok, "rows": rows, "takeover": takeover}
