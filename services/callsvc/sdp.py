"""SDP offer/answer for anchored media (RFC 3264): G.711 mu-law/a-law plus RFC 4733 events.

Parsing is aiosipua's; what we send is always our own small SDP with the PBX's address and port.
"""

from __future__ import annotations

import functools
import ipaddress
import secrets
from dataclasses import dataclass

from aiosipua import parse_sdp

STATIC = {0: "PCMU", 8: "PCMA"}
SUPPORTED = ("PCMU", "PCMA")


class SdpError(ValueError):
    pass


@dataclass
class MediaOffer:
    address: tuple[str, int] | None   # where the remote wants RTP; None when port 0 / no audio
    codecs: list[tuple[str, int]]      # supported codecs in the remote's order: (name, payload type)
    dtmf_pt: int | None                # telephone-event payload type, if offered
    direction: str                     # sendrecv | sendonly | recvonly | inactive


def parse(body: bytes) -> MediaOffer:
    if not body:
        raise SdpError("no SDP body")
    try:
        sdp = parse_sdp(body.decode("utf-8", "replace"))
    except Exception as exc:
        raise SdpError(f"unparsable SDP: {exc}") from None
    audio = sdp.audio
    if audio is None:
        raise SdpError("SDP has no audio stream")
    names: dict[int, str] = {}
    for fmt in audio.formats:
        if fmt.isdigit() and int(fmt) in STATIC:
            names[int(fmt)] = STATIC[int(fmt)]
    dtmf = None
    for codec in audio.codecs:
        name = codec.encoding_name.upper()
        if name in SUPPORTED and codec.clock_rate == 8000:
            names[codec.payload_type] = name
        elif name == "TELEPHONE-EVENT" and codec.clock_rate == 8000:
            dtmf = codec.payload_type
    codecs = [(names[int(f)], int(f)) for f in audio.formats if f.isdigit() and int(f) in names]
    addr = sdp.rtp_address
    if addr is not None and (audio.port == 0 or addr[0] in ("0.0.0.0", "")):
        # 0.0.0.0 is the RFC 2543 way to say hold; keep the port so we know where to resume
        addr = None if audio.port == 0 else addr
    if addr is not None:
        addr = (unicast_ipv4(addr[0]), addr[1])
        if not 0 < addr[1] < 65536:
            raise SdpError(f"media port {addr[1]} is out of range")
    return MediaOffer(address=addr, codecs=codecs, dtmf_pt=dtmf, direction=audio.direction)


@functools.lru_cache(maxsize=1024)
def unicast_ipv4(host: str) -> str:
    """The SDP connection address as an IPv4 unicast literal, or SdpError.

    Our RTP sockets are IPv4 and we never resolve names on the media path: a host name, an IPv6
    address or a malformed literal would make every sendto to it fail (issue 7: one such SDP once
    stopped the shared playback tick). Multicast, broadcast and reserved addresses carry no phone.
    The answers for the phones' few addresses are kept (ipaddress was ~2 % of the call service at
    300 setups/s, issue 16); a refusal is not, so it is checked afresh each time.
    """
    try:
        ip = ipaddress.IPv4Address(host)
    except ValueError:
        kind = "an IPv6 address" if ":" in host else "not an IPv4 address"
        raise SdpError(f"media address {host[:64]!r} is {kind}: only IPv4 unicast is supported") from None
    if ip.is_multicast or ip.is_reserved or ip.is_unspecified or ip == ipaddress.IPv4Address("255.255.255.255"):
        raise SdpError(f"media address {host} is not a unicast address")
    return str(ip)


def build(address: str, port: int, codecs: list[str], dtmf_pt: int | None,
          direction: str = "sendrecv", session_id: int | None = None, version: int = 1) -> bytes:
    sid = session_id if session_id is not None else secrets.randbits(31)
    pts = [str({"PCMU": 0, "PCMA": 8}[c]) for c in codecs]
    lines = [
        "v=0",
        f"o=pbx {sid} {version} IN IP4 {address}",
        "s=pbx",
        f"c=IN IP4 {address}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(pts + ([str(dtmf_pt)] if dtmf_pt is not None else []))}",
    ]
    for c in codecs:
        lines.append(f"a=rtpmap:{ {'PCMU': 0, 'PCMA': 8}[c]} {c}/8000")
    if dtmf_pt is not None:
        lines.append(f"a=rtpmap:{dtmf_pt} telephone-event/8000")
        lines.append(f"a=fmtp:{dtmf_pt} 0-16")
    lines.append("a=ptime:20")
    lines.append(f"a={direction}")
    return ("\r\n".join(lines) + "\r\n").encode()


def answer_direction(offered: str) -> str:
    return {"sendonly": "recvonly", "recvonly": "sendonly"}.get(offered, offered)
