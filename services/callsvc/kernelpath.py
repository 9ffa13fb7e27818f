"""The kernel media path: a plain two-party bridge's RTP forwarded by the kernel, not by Python.

Decision 008 measured why a relay in user space cannot get much below 0.12 % of a core per call:
three quarters of a relayed packet's cost is the socket path (recvmsg + sendmsg). Here, once both
phones of a bridge have latched and the bridge needs nothing from the audio (no prompt, recording,
mixing or transcoding), its two flows are handed to nftables. A chain on the ingress hook of the LAN
interface rewrites each packet and sends it straight back out to the other phone (`fwd`), before
the IP stack: no socket, no routing decision, no forwarding (decision 022):

    phone A (ipA:pA) -> box:portA   becomes   box:portB -> phone B (ipB:pB)   and the other way round

Stateless: `(saddr, sport, dport)` -> a per-flow mark, then saddr set to the box, daddr, sport and
dport set from three maps keyed by the mark; `fwd` hands the packet to the neighbour: the phone, or
for a phone beyond a router (a carrier) the gateway the routing table names, from a fourth map.
RFC 4733 events (payload types 96-127) are not rewritten: they reach the leg's socket as before, so
DTMF features hear them and the user-space relay forwards them on. Only PCMU/PCMA (payload types 0
and 8) bridges qualify, so the test on the payload type cannot catch audio.

A feature that needs the media (a transfer, hold music, recording, a conference) changes the legs,
their `_refresh` sees it, and the flows are taken back before the next packet: the elements are
deleted and packets reach the sockets again. The per-flow counters of the kernel feed the RTP
timeout (`Leg.kernel_rx`) and the call record's media statistics.

The table is made with `flags owner`: it belongs to this process's netlink socket and the kernel
deletes it with the process, even after SIGKILL. Without CAP_NET_ADMIN, without libnftables, with
media on a loopback address or on an address no interface reaches, `start` logs the reason once and
returns None: the user-space relay carries every call as before. A phone the box reaches through
another interface than the media address's stays in user space.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
import time

from . import hooks
from .nftables import Nft, NftError

log = logging.getLogger("pbx.media.kernel")

_ELEMENT = re.compile(r"(\d+\.\d+\.\d+\.\d+) \. (\d+) \. (\d+) counter packets (\d+)")
MARK = 0x50420000            # "PB" in the upper 16 bits; the lower 15: the flow's number
VIA_GATEWAY = 0x8000         # and this bit: the flow's next hop is a gateway (map next_hop), not the phone
MAX_FLOWS = 0x7FFF
POLL_EVERY = 1.0             # s between reads of the flows' packet counters (RTP timeout, CDR)
QUALIFYING_CODECS = ("PCMU", "PCMA")   # static payload types 0 and 8: below the events' 96-127
ROUTES = "/proc/net/route"
ROUTES_TTL = 1.0             # s a read of the routing table is used for (it changes rarely)
RTF_UP, RTF_GATEWAY, RTF_REJECT = 0x1, 0x2, 0x200


def table_text(name: str, address: str, ports: tuple[int, int], device: str) -> str:
    return f"""table netdev {name} {{
  flags owner
  map flows {{
    type ipv4_addr . inet_service . inet_service : mark
    counter
  }}
  map peer_addr {{
    type mark : ipv4_addr
  }}
  map peer_port {{
    type mark : inet_service
  }}
  map out_port {{
    type mark : inet_service
  }}
  map next_hop {{
    type mark : ipv4_addr
  }}
  chain ingress {{
    type filter hook ingress device "{device}" priority 0; policy accept;
    ip daddr {address} udp dport {ports[0]}-{ports[1]} jump media
  }}
  chain media {{
    @th,73,7 >= 96 return
    meta mark set ip saddr . udp sport . udp dport map @flows goto rewrite
  }}
  chain rewrite {{
    ip saddr set {address} ip daddr set meta mark map @peer_addr udp sport set meta mark map @out_port udp dport set meta mark map @peer_port
    meta mark & 0x{VIA_GATEWAY:04x} == 0x{VIA_GATEWAY:04x} fwd ip to meta mark map @next_hop device "{device}"
    fwd ip to ip daddr device "{device}"
  }}
}}
"""


def read_routes(path: str = ROUTES) -> list[tuple[int, int, int, str, str | None]]:
    """The main IPv4 routing table: (prefix length, metric, network, interface, gateway or None),
    longest prefix first. Policy routing (`ip rule`) is not read: the appliance has none."""
    routes = []
    try:
        with open(path) as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) < 8:
            continue
        iface, dest, gw, flags, metric, mask = fields[0], fields[1], fields[2], int(fields[3], 16), int(fields[6]), fields[7]
        if not flags & RTF_UP or flags & RTF_REJECT:
            continue
        net, netmask = (int.from_bytes(bytes.fromhex(x), "little") for x in (dest, mask))
        gateway = str(ipaddress.IPv4Address(int.from_bytes(bytes.fromhex(gw), "little"))) if flags & RTF_GATEWAY else None
        routes.append((bin(netmask).count("1"), metric, net, iface, gateway))
    routes.sort(key=lambda r: (-r[0], r[1]))
    return routes


def route_to(ip: str, routes) -> tuple[str, str | None] | None:
    """(interface, gateway or None when `ip` is on that interface's link) for `ip`, or None."""
    addr = int(ipaddress.IPv4Address(ip))
    for length, _, net, iface, gateway in routes:
        mask = (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF
        if addr & mask == net & mask:
            return iface, gateway
    return None


def why_not(address: str, routes_file: str = ROUTES) -> str | None:
    """The reason the kernel path cannot run for media on `address`, or None."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"media address {address!r} is not an IP address"
    if ip.version != 4:
        return "media address is IPv6 (the kernel path handles IPv4)"
    if ip.is_loopback or ip.is_unspecified:
        return f"media on {address}: phones on this machine reach it through the local path, not a network interface"
    route = route_to(address, read_routes(routes_file))
    if route is None or route[1] is not None:
        return (f"no interface has {address} on its link (routing table {routes_file}): give the "
                f"LAN interface an address in the media address's subnet")
    return None


class KernelPath:
    """The nftables table of one call service and the flows it holds, keyed by leg."""

    def __init__(self, nft: Nft, name: str, address: str, ports: tuple[int, int], device: str):
        self.nft, self.name, self.address, self.ports, self.device = nft, name, address, ports, device
        self.flows: dict[object, tuple[str, int, object]] = {}  # leg -> (flow key text, mark, partner)
        self._routes: list = []
        self._routes_at = -ROUTES_TTL
        self._local: dict[str, bool] = {}   # ip -> it is one of this box's addresses (with the routes)
        self._free = list(range(MAX_FLOWS, 0, -1))
        self.loop = None                 # the call service's loop: counters are read beside it
        self._reader: Nft | None = None  # a second context for reading counters in a worker thread
        self._poll: object = None        # the pending poll (timer or read), None when idle
        self._spell: dict[object, int] = {}   # leg -> the number of its current spell in the kernel
        self._spells = 0
        self.offloaded = 0                                   # bridges handed to the kernel so far
        self.failed = 0

    @classmethod
    def start(cls, address: str, ports: tuple[int, int], mode: str = "auto", loop=None) -> "KernelPath | None":
        if mode == "off":
            log.info("kernel media path off (--kernel-media off): the user-space relay carries media")
            return None
        reason = why_not(address)
        nft = None
        if reason is None:
            name = f"pbx_media_{os.getpid()}"
            device = route_to(address, read_routes())[0]
            try:
                nft = Nft()
                nft.run(table_text(name, address, ports, device))
            except NftError as exc:
                if nft is not None:
                    nft.close()
                reason = f"nftables refused the table: {exc} (the call service needs CAP_NET_ADMIN)"
        if reason is not None:
            # on loopback (a developer's `make run`) this is expected, not a warning
            level = logging.INFO if address.startswith("127.") else logging.WARNING
            log.log(level, "kernel media path off: %s; the user-space relay carries media", reason)
            return None
        log.info("kernel media path on: table netdev %s, bridged G.711 calls on %s:%d-%d (%s) forwarded "
                 "by the kernel", name, address, *ports, device)
        path = cls(nft, name, address, ports, device)
        path.loop = loop
        return path

    # --- which bridges qualify ----------------------------------------------------------------
    def qualifies(self, a, b) -> bool:
        """Both legs forward untouched (their fast paths are set), speak G.711 and their phones
        are elsewhere on the network (not this box: a local socket would see the wrong source),
        reached through the interface the media address is on."""
        for leg in (a, b):
            if leg.out_send is None or leg.remote is None or leg.codec not in QUALIFYING_CODECS:
                return False
            if leg.dtmf_pt is not None and not 96 <= leg.dtmf_pt <= 127:
                return False
            ip = leg.remote[0]
            if ip == self.address or ip.startswith("127.") or ":" in ip:
                return False
            route = self._route(ip)
            if route is None or route[0] != self.device or self._is_local(ip):
                return False
        return True

    def _route(self, ip: str) -> tuple[str, str | None] | None:
        now = time.monotonic()
        if now - self._routes_at >= ROUTES_TTL:
            self._routes, self._routes_at = read_routes(), now
            self._local.clear()
        return route_to(ip, self._routes)

    def _is_local(self, ip: str) -> bool:
        """A phone on another of this box's addresses talks to us over loopback, never through
        the interface's ingress, and a packet sent to it as a neighbour would be lost."""
        if ip not in self._local:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                try:
                    probe.bind((ip, 0))
                    self._local[ip] = True
                except OSError:
                    self._local[ip] = False
        return self._local[ip]

    def partner(self, leg):
        """The leg whose flow is paired with leg's in the kernel, or None."""
        flow = self.flows.get(leg)
        return flow[2] if flow is not None else None

    # --- handing over and taking back ---------------------------------------------------------
    def offload(self, a, b) -> bool:
        """Give the bridge a <-> b to the kernel. False (logged) if nftables refused."""
        if a in self.flows or b in self.flows:
            return True
        if len(self._free) < 2:
            return False
        ida, idb = self._free.pop(), self._free.pop()
        keys = {a: self._key(a), b: self._key(b)}
        cmd = []
        marks = {}
        for leg, peer, fid in ((a, b, ida), (b, a, idb)):
            route = self._route(peer.remote[0])
            gateway = route[1] if route is not None else None
            marks[leg] = mark = MARK | fid | (VIA_GATEWAY if gateway else 0)
            cmd.append(f"add element netdev {self.name} flows {{ {keys[leg]} : {mark} }}")
            cmd.append(f"add element netdev {self.name} peer_addr {{ {mark} : {peer.remote[0]} }}")
            cmd.append(f"add element netdev {self.name} peer_port {{ {mark} : {peer.remote[1]} }}")
            cmd.append(f"add element netdev {self.name} out_port {{ {mark} : {peer.port} }}")
            if gateway:
                cmd.append(f"add element netdev {self.name} next_hop {{ {mark} : {gateway} }}")
        try:
            self.nft.run("\n".join(cmd))
        except NftError as exc:
            self._free += [ida, idb]
            self.failed += 1
            if self.failed in (1, 100) or self.failed % 10000 == 0:
                log.warning("kernel media path: bridge of rtp ports %d and %d stays in user space: %s "
                            "(%d so far)", a.port, b.port, exc, self.failed)
            return False
        self.flows[a], self.flows[b] = (keys[a], marks[a], b), (keys[b], marks[b], a)
        for leg in (a, b):
            self._spells += 1
            self._spell[leg] = self._spells
        a.kernel = b.kernel = True
        self._schedule_poll()
        self.offloaded += 1
        log.debug("rtp ports %d <-> %d forwarded by the kernel", a.port, b.port)
        return True

    def take_back(self, leg) -> None:
        """The flows of leg and of its partner back to the sockets (a feature needs the media, or
        hang-up); their kernel packet counts are kept in `kernel_rx`."""
        if leg not in self.flows:
            return
        legs = [leg] + [x for x in (self.flows[leg][2],) if x in self.flows]
        cmd = []
        for x in legs:
            key, mark, _ = self.flows.pop(x)
            self._spell.pop(x, None)
            x.kernel = False
            # counted up to the last poll (at most POLL_EVERY ago): reading the counter here would
            # read the whole map (nftables 1.0.6), milliseconds on the loop at hundreds of calls
            x.kernel_base = x.kernel_rx
            cmd += [f"delete element netdev {self.name} flows {{ {key} }}",
                    f"delete element netdev {self.name} peer_addr {{ {mark} }}",
                    f"delete element netdev {self.name} peer_port {{ {mark} }}",
                    f"delete element netdev {self.name} out_port {{ {mark} }}"]
            if mark & VIA_GATEWAY:
                cmd.append(f"delete element netdev {self.name} next_hop {{ {mark} }}")
            self._free.append(mark & MAX_FLOWS)
        try:
            self.nft.run("\n".join(cmd))
        except NftError as exc:
            log.error("kernel media path: flows of rtp port %d not removed: %s", leg.port, exc)
        log.debug("rtp port %d back in user space", leg.port)

    # --- counters: read in a worker thread every POLL_EVERY while flows are in the kernel ----------
    def _schedule_poll(self) -> None:
        if self._poll is None and self.loop is not None and self.flows:
            self._poll = self.loop.call_later(POLL_EVERY, self._start_poll)

    def _start_poll(self) -> None:
        spells = dict(self._spell)
        future = self.loop.run_in_executor(None, self._read_counts)
        self._poll = future
        future.add_done_callback(lambda f: self._apply(f, spells))

    def _apply(self, future, spells: dict) -> None:
        self._poll = None
        counts = None if future.cancelled() or future.exception() is not None else future.result()
        if counts is not None:
            for leg, (key, _, _) in self.flows.items():
                # a leg taken back and handed over again since the read began has a new counter
                if spells.get(leg) == self._spell.get(leg) and key in counts:
                    leg.kernel_rx = leg.kernel_base + counts[key]
        self._schedule_poll()

    def _read_counts(self) -> dict[str, int] | None:
        """{flow key text: packets} of every flow (worker thread: its own libnftables context).
        nft's text output is parsed: its JSON output of `get element` is empty in nftables 1.0.6."""
        try:
            if self._reader is None:
                self._reader = Nft()
            text = self._reader.run(f"list map netdev {self.name} flows")
        except NftError as exc:
            log.warning("kernel media path: counters not read: %s", exc)
            return None
        return {f"{ip} . {port} . {ours}": int(packets) for ip, port, ours, packets in _ELEMENT.findall(text)}

    def _key(self, leg) -> str:
        return f"{leg.remote[0]} . {leg.remote[1]} . {leg.port}"

    def close(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        for leg in list(self.flows):
            leg.kernel = False
        self.flows.clear()
        try:
            self.nft.run(f"delete table netdev {self.name}")
        except NftError:
            pass
        self.nft.close()


def status(svc) -> dict:
    """`pbx status --json`: whether bridged media runs in the kernel, and how much of it does now."""
    kernel = svc.media.kernel
    if kernel is None:
        return {"on": False}
    return {"on": True, "table": kernel.name, "bridges": len(kernel.flows) // 2,
            "offloaded": kernel.offloaded, "refused": kernel.failed}


hooks.ON_STATUS["kernel_media"] = status
