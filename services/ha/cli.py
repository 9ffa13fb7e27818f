"""`pbx ha ...`: this box's failover settings, its state, and the two commands keepalived runs.

    pbx ha set --role primary --node 192.0.2.2 --peer 192.0.2.3 --vip 192.0.2.10/24 --interface eth0
    pbx ha set --node 203.0.113.7 --peer 198.51.100.2 --site remote --secret ...   (the remote standby)
    pbx ha set ... --remote 203.0.113.7          (a main-site box: its remote standby)
    pbx ha show | status

keepalived itself runs `python -m services.ha.check DATA` (health) and `python -m
services.ha.notify DATA ...` (state changes): standard-library modules that start in milliseconds.
"""
from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import sys
import time

from firmware.config.errors import ValidationError, ValidationErrors
from firmware.ha import ROLES, SITES, HaSettings, new_secret

from . import settings as ha_settings


def _address(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:60]!r} is not an IPv4 address (e.g. 192.168.1.2)") from None


def _address_or_none(text: str) -> str:
    return "" if text == "none" else _address(text)


def _vip(text: str) -> str:
    try:
        if "/" not in text:
            raise ValueError
        return str(ipaddress.IPv4Interface(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:60]!r} is not an address with its prefix length "
                                         "(e.g. 192.168.1.10/24)") from None


def _secret(text: str) -> str:
    if len(text) < 16 or len(text) > 128 or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError("the shared secret is 16-128 characters without spaces "
                                         "(copy it from the first box's `pbx ha set` output)")
    return text


def add_parser(sub, common) -> None:
    from ..cli import _whole
    h = sub.add_parser("ha", help="failover: a pair of boxes sharing a virtual address (VRRP)")
    hsub = h.add_subparsers(dest="ha_cmd", required=True)
    s = hsub.add_parser("set", parents=[common], help="set this box's failover settings")
    s.add_argument("--role", choices=ROLES)
    s.add_argument("--node", dest="node_addr", type=_address, metavar="IP", help="this box's own LAN address")
    s.add_argument("--peer", dest="peer_addr", type=_address, metavar="IP", help="the other box's own LAN address")
    s.add_argument("--vip", type=_vip, metavar="IP/PREFIX", help="the shared address phones and trunks use")
    s.add_argument("--interface", metavar="IF", help="the LAN interface (e.g. eth0)")
    s.add_argument("--router-id", dest="router_id", type=_whole(1, 255), metavar="1-255")
    s.add_argument("--advert-ms", dest="advert_ms", type=_whole(10, 1000), metavar="MS")
    s.add_argument("--secret", type=_secret, help="shared by both boxes (made on the first box when left out)")
    s.add_argument("--site", choices=SITES, help="remote: this box is the standby in another datacenter "
                   "(no VIP; --peer is the main site box's routable address)")
    s.add_argument("--remote", dest="remote_addr", type=_address_or_none, metavar="IP|none",
                   help="on a main-site box: the remote standby's routable address")
    s.add_argument("--off", action="store_true", help="switch failover off on this box")
    hsub.add_parser("show", parents=[common], help="this box's failover settings").add_argument(
        "--json", action="store_true")
    hsub.add_parser("status", parents=[common], help="role, state, last takeover").add_argument(
        "--json", action="store_true")


def cmd_ha(args) -> int:
    from firmware.config.store import open_data_dir
    open_data_dir(args.data, create=False)     # a mistyped --data must not become a new box
    return {"set": _set, "show": _show, "status": _status}[args.ha_cmd](args)


def _set(args) -> int:
    current = ha_settings.load(args.data)
    changes = {k: getattr(args, k) for k in ("role", "node_addr", "peer_addr", "vip", "interface",
                                            "router_id", "advert_ms", "secret", "site", "remote_addr")
               if getattr(args, k) is not None}
    if args.off:
        if changes:
            print("error: --off takes no other option (switch failover off first, change settings later)",
                  file=sys.stderr)
            return 2
        ha_settings.save(args.data, dataclasses.replace(current, enabled=False))
        print("failover off on this box (takes effect at the next start of the PBX)")
        return 0
    ha = dataclasses.replace(current, enabled=True, **changes)
    made_secret = False
    if not ha.secret:
        ha = dataclasses.replace(ha, secret=new_secret())
        made_secret = True
    try:
        ha_settings.save(args.data, ha)
    except ValidationErrors as e:
        for err in e.errors:
            print(f"error: --{err.field.replace('_addr', '').replace('_', '-')}: {err.message}", file=sys.stderr)
        return 2
    if ha.site == "remote":
        print(f"failover on: remote standby at {ha.node_addr}, main site {ha.peer_addr} "
              "(takes effect at the next start of the PBX)")
    elif not ha.vrrp:
        print(f"failover on: office box {ha.node_addr}, remote standby {ha.remote_addr} "
              "(takes effect at the next start of the PBX)")
    else:
        print(f"failover on: {ha.role}, VIP {ha.vip} on {ha.interface}, peer {ha.peer_addr}"
              + (f", remote standby {ha.remote_addr}" if ha.remote_addr else "")
              + " (takes effect at the next start of the PBX)")
    if made_secret:
        print(f"shared secret (give it to the other box with --secret): {ha.secret}")
    return 0


def _show(args) -> int:
    ha = ha_settings.load(args.data)
    doc = {k: v for k, v in ha.to_json().items() if k != "secret"}
    if args.json:
        print(json.dumps(doc))
    else:
        for k, v in doc.items():
            print(f"{k}: {v}")
    return 0


def _status(args) -> int:
    ha = ha_settings.load(args.data)
    st = ha_settings.state(args.data)
    live = _live(args.data) if ha.enabled else None
    doc = {"enabled": ha.enabled, "role": ha.role, "site": ha.site, "vip": ha.vip,
           "peer": ha.peer_addr or ha.remote_addr, "remote": ha.remote_addr, **st, "live": live}
    if args.json:
        print(json.dumps(doc))
        return 0
    if not ha.enabled:
        print("failover off on this box")
        return 0
    since = f", since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(st['since']))}" if st.get("since") else ""
    if ha.site == "remote":
        print(f"remote standby: {st.get('state', 'unknown')}{since}; main site {ha.peer_addr}")
    elif not ha.vrrp:
        print(f"office box: {st.get('state', 'unknown')}{since}; remote standby {ha.remote_addr}")
    else:
        print(f"{ha.role} box: {st.get('state', 'unknown')}{since}; VIP {ha.vip}; peer {ha.peer_addr}"
              + (f"; remote standby {ha.remote_addr}" if ha.remote_addr else ""))
    if live is None:
        print("the PBX is not running here: no peer health or replication to show")
    else:
        from firmware.ha import status_summary
        summary = status_summary(live, time.time(),
                                 lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)))
        print(summary["peer"])
        for label, text, ok in summary["rows"]:
            print(f"{label}: {text}{'' if ok else '  (!)'}")
        print(f"this box {summary['takeover']}")
    if st.get("last_takeover"):
        print(f"last takeover: {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(st['last_takeover']))} "
              f"({st.get('takeovers', 0)} in all)")
    return 0


def _live(data) -> dict | None:
    """The running PBX's failover status (peer health, replication lag, last takeover's gap)."""
    from services.control import ControlError, query
    try:
        return query(str(data), "ha", timeout=3.0) or None
    except ControlError:
        return None
