"""`pbx ha ...`: this box's failover settings, its state, and the two commands keepalived runs.

    pbx ha set --role primary --node 192.0.2.2 --peer 192.0.2.3 --vip 192.0.2.10/24 --interface eth0
    pbx ha show | status
    pbx ha check    (keepalived's health check: exit 0 = this box can serve)
    pbx ha notify   (keepalived's notify script: INSTANCE_TYPE NAME STATE PRIORITY)
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time

from firmware.config.errors import ValidationError, ValidationErrors
from firmware.ha import ROLES, HaSettings, new_secret

from . import settings as ha_settings


def add_parser(sub, common) -> None:
    h = sub.add_parser("ha", help="failover: a pair of boxes sharing a virtual address (VRRP)")
    hsub = h.add_subparsers(dest="ha_cmd", required=True)
    s = hsub.add_parser("set", parents=[common], help="set this box's failover settings")
    s.add_argument("--role", choices=ROLES)
    s.add_argument("--node", dest="node_addr", metavar="IP", help="this box's own LAN address")
    s.add_argument("--peer", dest="peer_addr", metavar="IP", help="the other box's own LAN address")
    s.add_argument("--vip", metavar="IP/PREFIX", help="the shared address phones and trunks use")
    s.add_argument("--interface", metavar="IF", help="the LAN interface (e.g. eth0)")
    s.add_argument("--router-id", dest="router_id", type=int, metavar="1-255")
    s.add_argument("--advert-ms", dest="advert_ms", type=int, metavar="MS")
    s.add_argument("--secret", help="shared by both boxes (made on the first box when left out)")
    s.add_argument("--off", action="store_true", help="switch failover off on this box")
    hsub.add_parser("show", parents=[common], help="this box's failover settings").add_argument(
        "--json", action="store_true")
    hsub.add_parser("status", parents=[common], help="role, state, last takeover").add_argument(
        "--json", action="store_true")
    hsub.add_parser("check", parents=[common], help="health check run by keepalived (exit 0: healthy)")
    n = hsub.add_parser("notify", parents=[common], help="state change, run by keepalived")
    n.add_argument("what", nargs="*", help="INSTANCE NAME STATE PRIORITY as keepalived passes them")


def cmd_ha(args) -> int:
    return {"set": _set, "show": _show, "status": _status, "check": _check, "notify": _notify}[args.ha_cmd](args)


def _set(args) -> int:
    current = ha_settings.load(args.data)
    if args.off:
        ha_settings.save(args.data, dataclasses.replace(current, enabled=False))
        print("failover off on this box (takes effect at the next start of the PBX)")
        return 0
    changes = {k: getattr(args, k) for k in ("role", "node_addr", "peer_addr", "vip", "interface",
                                            "router_id", "advert_ms", "secret") if getattr(args, k) is not None}
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
    print(f"failover on: {ha.role}, VIP {ha.vip} on {ha.interface}, peer {ha.peer_addr} "
          "(takes effect at the next start of the PBX)")
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
    doc = {"enabled": ha.enabled, "role": ha.role, "vip": ha.vip, "peer": ha.peer_addr, **st}
    if args.json:
        print(json.dumps(doc))
        return 0
    if not ha.enabled:
        print("failover off on this box")
        return 0
    since = f", since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(st['since']))}" if st.get("since") else ""
    print(f"{ha.role} box: {st.get('state', 'unknown')}{since}; VIP {ha.vip}; peer {ha.peer_addr}")
    if st.get("last_takeover"):
        print(f"last takeover: {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(st['last_takeover']))} "
              f"({st.get('takeovers', 0)} in all)")
    return 0


def _check(args) -> int:
    """Healthy = the call service answers its control socket and reports its edge running (the
    same check keepalived runs as `python -m services.ha.check DATA`)."""
    from .check import healthy
    ok, why = healthy(args.data)
    print("healthy" if ok else f"unhealthy: {why}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def _notify(args) -> int:
    state = next((w for w in args.what if w in ha_settings.STATES), None)
    if state is None:
        print(f"error: no state in {args.what!r}", file=sys.stderr)
        return 2
    doc = ha_settings.record_state(args.data, state)
    print(f"ha: now {state} (was {doc.get('previous')})", file=sys.stderr)
    return 0
