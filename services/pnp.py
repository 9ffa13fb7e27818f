"""SIP plug-and-play: desk phones asking the LAN for their provisioning address.

A factory-fresh Snom, Yealink, Grandstream or Fanvil phone sends
    SUBSCRIBE sip:MAC%3a<mac>@224.0.1.75 SIP/2.0   Event: ua-profile;profile-type="device";...
to the multicast group 224.0.1.75:5060. The first server to answer 200 and then NOTIFY
(Content-Type: application/url, the URL as body) tells it where to fetch its configuration.

This responder answers only enrolled and approved phones (firmware/features/provisioning.py
pnp_answer): a phone nobody enrolled gets no answer, so it cannot be configured by this box by
accident, and a LAN host naming someone else's MAC learns nothing unless that MAC was enrolled
(which is why the answer is the phone's own URL and credentials, rotated by "re-provision").
A MAC it does not know is listed as discovered (not approved) for the admin to accept.

It binds the group address itself (not 0.0.0.0), so it shares port 5060 with the SIP edge,
which is bound to the box's unicast address.
"""
from __future__ import annotations

import asyncio
import logging
import re
import secrets
import socket
import struct

from firmware.features import provisioning as prov

log = logging.getLogger(__name__)

PNP_PORT = 5060
MAX_DISCOVERED = 50


def _header(text: str, name: str) -> str:
    m = re.search(rf"^{name}\s*:\s*(.*)$", text, re.I | re.M)
    return m.group(1).strip() if m else ""


def _mac_from_event(event: str) -> str | None:
    m = re.search(r'mac="?([0-9a-fA-F:.\-]{12,17})', event)
    if not m:
        return None
    try:
        return prov.normalize_mac(m.group(1))
    except ValueError:
        return None


class PnpResponder(asyncio.DatagramProtocol):
    def __init__(self, store, base_url, interface_addr: str = "0.0.0.0", vendor_of=None):
        """`store`: the ConfigStore; `base_url()`: the box's https://address[:port] now."""
        self.store = store
        self.base_url = base_url
        self.interface_addr = interface_addr
        self.transport = None
        self.answered = 0

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            text = data.decode("utf-8", "replace")
            first = text.split("\r\n", 1)[0]
            if not first.startswith("SUBSCRIBE ") or "ua-profile" not in _header(text, "Event"):
                return
            self._subscribe(text, first.split()[1], addr)
        except Exception:   # a malformed datagram from the LAN must never stop the responder
            log.exception("pnp: datagram from %s:%d not handled", *addr)

    def _subscribe(self, text: str, uri: str, addr) -> None:
        event = _header(text, "Event")
        mac = prov.pnp_mac(uri, _header(text, "From")) or _mac_from_event(event)
        phones = {p.mac: p for p in self.store.records(prov.TABLE)}
        url = prov.pnp_answer(mac, phones, self.base_url())
        if url is None:
            log.info("pnp: request from %s:%d for %s not answered (%s)", *addr, mac or "no MAC",
                     "not approved" if mac in phones else "not enrolled")
            if mac and mac not in phones:
                self._discovered(mac, event, _header(text, "User-Agent"))
            return
        self._reply(text, addr)
        self._notify(text, addr, url)
        self.answered += 1
        log.info("pnp: phone %s at %s:%d sent its provisioning address", mac, *addr)

    def _discovered(self, mac: str, event: str, user_agent: str) -> None:
        """List an unknown phone for the admin (never approved here; bounded in number)."""
        vendor = next((v for v in prov.VENDORS if v in (event + user_agent).lower()), "")
        if not vendor or len([p for p in self.store.records(prov.TABLE) if not p.approved]) >= MAX_DISCOVERED:
            return
        extensions = self.store.extensions()
        if not extensions:
            return
        try:
            self.store.add_record(prov.TABLE, prov.Phone(mac=mac, vendor=vendor, extension=extensions[0].number,
                                                         label="discovered", approved=False))
            log.info("pnp: phone %s (%s) discovered: approve it on the Phones page", mac, vendor)
        except Exception as exc:     # raced with another request for the same MAC
            log.debug("pnp: %s not listed: %s", mac, exc)

    def _reply(self, req: str, addr) -> None:
        lines = ["SIP/2.0 200 OK"] + [f"Via: {v}" for v in re.findall(r"^Via\s*:\s*(.*)$", req, re.I | re.M)]
        to = _header(req, "To")
        if ";tag=" not in to:
            to += f";tag={secrets.token_hex(4)}"
        self._to_tag = to
        lines += [f"From: {_header(req, 'From')}", f"To: {to}", f"Call-ID: {_header(req, 'Call-ID')}",
                  f"CSeq: {_header(req, 'CSeq')}", "Expires: 0", "Content-Length: 0"]
        self.transport.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), addr)

    def _notify(self, req: str, addr, url: str) -> None:
        contact = re.search(r"<([^>]+)>", _header(req, "Contact") or "")
        target = contact.group(1) if contact else f"sip:{addr[0]}:{addr[1]}"
        local = self.transport.get_extra_info("sockname")
        body = url.encode()
        lines = [f"NOTIFY {target} SIP/2.0",
                 f"Via: SIP/2.0/UDP {self.interface_addr}:{local[1]};branch=z9hG4bK{secrets.token_hex(8)};rport",
                 "Max-Forwards: 70", f"From: {self._to_tag}", f"To: {_header(req, 'From')}",
                 f"Call-ID: {_header(req, 'Call-ID')}", "CSeq: 1 NOTIFY", f"Event: {_header(req, 'Event')}",
                 "Subscription-State: terminated;reason=timeout", "Content-Type: application/url",
                 f"Content-Length: {len(body)}"]
        self.transport.sendto(("\r\n".join(lines) + "\r\n\r\n").encode() + body, addr)


async def start(store, base_url, interface_addr: str, port: int = PNP_PORT):
    """Join 224.0.1.75 on the interface with `interface_addr` and answer PnP requests."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((prov.PNP_GROUP, port))
    mreq = struct.pack("4s4s", socket.inet_aton(prov.PNP_GROUP), socket.inet_aton(interface_addr))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface_addr))
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: PnpResponder(store, base_url, interface_addr), sock=sock)
    log.info("pnp: answering plug-and-play requests on %s:%d via %s", prov.PNP_GROUP, port, interface_addr)
    return transport, protocol
