"""Media engine: RTP endpoints anchored at the PBX, relay between legs, playback, DTMF, recording.

Every call leg gets one UDP socket from the RTP port range. When two legs are bridged, a packet
arriving on one leg's socket goes straight out of the other leg's socket: one Python callback per
packet and no copy (a uvloop relay measured 0.028 % of a core per bridged call, see the notes).
Anything else per packet (DTMF, recording) runs only when switched on for that leg.
Where the box allows it, a two-party G.711 bridge that needs nothing from its audio is forwarded by
the kernel instead, with no packet reaching these sockets (kernelpath.py, decision 022).
Playback of prompts and tones runs on one shared 20 ms tick for all legs, not a timer per call.

Strict sources (issue 7, "RTP bleed"): a leg accepts packets only from its phone. Until the first
packet it may latch to a source whose IP the signalling named (the SDP address, the phone's Via
`received` or Contact, which covers a phone behind NAT whose port differs from its SDP); once
latched, only that exact address:port is heard. Everything else is dropped and counted, never
forwarded, and a leg never hears another leg of this box (a re-INVITE aimed at our own port would
otherwise loop packets at full CPU).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import socket
import struct
from collections.abc import Callable

import numpy as np

from firmware.dsp import g711
from firmware.dsp.rfc4733 import EventReceiver, pack_event
from firmware.dsp.tones import ToneGenerator

from .kernelpath import KernelPath

log = logging.getLogger(__name__)

FRAME = 160  # samples per 20 ms at 8 kHz
PT = {"PCMU": 0, "PCMA": 8}


class MediaCapacityError(RuntimeError):
    """No RTP port left: the box is at its call capacity (answer 503, not a crash)."""


class PortPool:
    """Even RTP ports from a range; odd ports stay free for RTCP by convention."""

    def __init__(self, first: int, last: int):
        if first >= last or first < 1024 or last > 65535:
            raise ValueError(f"RTP port range {first}-{last} is invalid: use e.g. 10000-20000")
        self.free = list(range(first + (first & 1), last, 2))
        self.first, self.last = first, last

    def take(self) -> int:
        if not self.free:
            raise MediaCapacityError(f"RTP port range {self.first}-{self.last} exhausted: widen --rtp-ports")
        return self.free.pop(0)

    def give(self, port: int) -> None:
        self.free.append(port)


class Player:
    """A source of 20 ms linear frames: a prompt (bytes) or a tone generator; loops if asked."""

    __slots__ = ("pcm", "pos", "tone", "loop", "until", "done")

    def __init__(self, pcm: bytes | None = None, tone: ToneGenerator | None = None,
                 loop: bool = False, seconds: float | None = None):
        self.pcm, self.pos, self.tone, self.loop = pcm, 0, tone, loop
        self.until = None if seconds is None else int(seconds * 50)  # frames left
        self.done = asyncio.get_running_loop().create_future()

    def next_frame(self) -> bytes | None:
        if self.until is not None:
            if self.until <= 0:
                return None
            self.until -= 1
        if self.tone is not None:
            return self.tone.frame(FRAME)
        if self.pos >= len(self.pcm):
            if not self.loop or not self.pcm:
                return None
            self.pos = 0
        chunk = self.pcm[self.pos:self.pos + 2 * FRAME]
        self.pos += 2 * FRAME
        if len(chunk) < 2 * FRAME:
            chunk += b"\x00" * (2 * FRAME - len(chunk))
        return chunk


class SharedFrame(bytes):
    """A 20 ms linear frame that many legs send in one tick (music on hold, a page): each codec's
    payload is encoded once, not once per leg."""

    def __init__(self, pcm: bytes = b""):
        self._payloads: dict[str, bytes] = {}

    def payload(self, codec: str) -> bytes:
        payload = self._payloads.get(codec)
        if payload is None:
            payload = self._payloads[codec] = g711.encoder(codec)(self)
        return payload


class RtpLeg(asyncio.DatagramProtocol):
    """One leg's RTP socket. `peer` is the bridged leg (packets go out of its socket).

    While bridged, `datagram_received` takes the fast path: forward to the peer with a bound
    `sendto` and a destination precomputed by `_refresh`, plus one byte test for RFC 4733 events.
    Everything else (latching, recording, a peer that is hearing a prompt) takes the slow path.
    """

    def __init__(self, engine: "MediaEngine", port: int):
        self.engine = engine
        self.port = port
        self.transport: asyncio.DatagramTransport | None = None
        self.remote: tuple[str, int] | None = None
        self.latched = False
        self.peer: RtpLeg | None = None
        self.codec = "PCMU"
        self.dtmf_pt: int | None = None
        self.on_dtmf: Callable[[str], None] | None = None
        self._dtmf = EventReceiver()
        self.recorder = None
        self.player: Player | None = None
        self.ssrc = secrets.randbits(32)
        self.seq = secrets.randbits(16)
        self.ts = secrets.randbits(32)
        self.rx = 0  # packets received: the inactivity check reads it
        self.sources: frozenset[str] = frozenset()  # IPs the signalling named for this phone
        self.dropped = 0  # packets from sources that are not this leg's phone
        self.out_send = None  # fast path: the peer's transport.sendto, or None
        self.out_addr: tuple[str, int] | None = None
        self.mixer: "Mixer | None" = None  # in a bridge of three or more: audio goes to the mixer
        self.muted = False  # in a mixer: this phone is not heard (a conference member on mute)
        self.kernel = False  # its flow is forwarded by the kernel (kernelpath.py), not by this socket
        self.kernel_rx = 0   # packets the kernel forwarded for this leg (read by KernelPath.poll)
        self.kernel_base = 0  # of those, the ones of earlier spells in the kernel

    def connection_made(self, transport):
        self.transport = transport

    def error_received(self, exc):
        pass  # ICMP unreachable while a phone restarts its socket; RTP is best effort

    def set_remote(self, addr: tuple[str, int] | None, sources=()) -> None:
        """Send to addr (from SDP); hear only the phone: addr's IP or the signalled IPs in sources."""
        if addr is not None and (addr[1] == 0 or self.engine.owns(addr)):
            addr = None  # port 0: stream disabled (RFC 3264); our own port: a loop, never
        self.remote = addr
        self.sources = frozenset(sources) | ({addr[0]} if addr is not None else frozenset())
        self.latched = False
        self._refresh_both()

    def watch_dtmf(self, payload_type: int | None, callback: Callable[[str], None] | None) -> None:
        self.dtmf_pt, self.on_dtmf = (payload_type, callback) if callback else (None, None)

    def record_to(self, writer) -> None:
        self.recorder = writer
        self._refresh()

    def _refresh(self) -> None:
        p = self.peer
        # The fast path forwards packets untouched: only when both phones speak the same codec
        # and number their DTMF events alike; otherwise the slow path transcodes / renumbers.
        if (p is not None and p.remote is not None and p.player is None and p.transport is not None
                and self.recorder is None and self.latched and self.codec == p.codec
                and self.dtmf_pt == p.dtmf_pt and self.mixer is None):
            self.out_send, self.out_addr = p.transport.sendto, p.remote
        else:
            self.out_send = None
        kernel = self.engine.kernel
        if kernel is not None:
            want = p is not None and kernel.qualifies(self, p)
            if self.kernel and not (want and kernel.partner(self) is p):
                kernel.take_back(self)
            if want and not self.kernel:
                kernel.offload(self, p)

    @property
    def packets_in(self) -> int:
        """Packets from this leg's phone: through the socket and forwarded by the kernel."""
        return self.rx + self.kernel_rx

    def set_codec(self, codec: str, dtmf_pt: int | None) -> None:
        """What the phone on this leg speaks: its audio codec and its telephone-event payload type."""
        self.codec, self.dtmf_pt = codec, dtmf_pt
        self._refresh_both()

    def _refresh_both(self) -> None:
        self._refresh()
        if self.peer is not None:
            self.peer._refresh()

    def datagram_received(self, data, addr):
        send = self.out_send
        if send is not None and addr == self.remote:
            self.rx += 1
            send(data, self.out_addr)
            try:
                if data[1] & 0x7F == self.dtmf_pt:
                    self._on_event(data)
            except IndexError:
                pass  # a runt datagram: forwarded as it came, nothing to look at
            return
        self._slow_path(data, addr)

    def _slow_path(self, data: bytes, addr) -> None:
        if addr != self.remote and not self._may_latch(addr):
            self.dropped += 1  # not this call's media: it keeps no call alive either
            if self.dropped in (1, 1000) or self.dropped % 100000 == 0:
                log.warning("rtp port %d: %d packets dropped from %s:%d, not this leg's phone",
                            self.port, self.dropped, addr[0], addr[1])
            return
        self.rx += 1
        if not self.latched:
            # symmetric RTP: send to where the phone really sends from (NAT), and hear only that
            if addr != self.remote:
                log.info("rtp port %d latched to %s:%d (signalled %s)", self.port, addr[0], addr[1],
                         "%s:%d" % self.remote if self.remote else "no address")
            self.remote = addr
            self.latched = True
            self._refresh_both()
        if len(data) < 12:
            return
        pt = data[1] & 0x7F
        head = 12 + 4 * (data[0] & 0x0F)
        peer = self.peer
        if pt == self.dtmf_pt:
            self._on_event(data)
            if peer is not None and peer.dtmf_pt is not None and peer.dtmf_pt != pt:
                data = bytes((data[0], (data[1] & 0x80) | peer.dtmf_pt)) + data[2:]
            elif peer is not None and peer.dtmf_pt is None:
                return  # the other phone takes no RFC 4733 events: the digit was detected here
        elif pt == PT.get(self.codec):
            if self.recorder is not None:
                self.recorder.write(g711.decoder(self.codec)(data[head:]))
            if self.mixer is not None:
                self.mixer.feed(self, g711.decoder(self.codec)(data[head:]))
                return
            if peer is not None and peer.codec != self.codec:
                pcm = g711.decoder(self.codec)(data[head:])
                data = (bytes((data[0], (data[1] & 0x80) | PT[peer.codec])) + data[2:head]
                        + g711.encoder(peer.codec)(pcm))
        if peer is not None and peer.remote is not None and peer.player is None:
            peer.transport.sendto(data, peer.remote)

    def _may_latch(self, addr) -> bool:
        """Before the first packet, a source on a signalled IP may become the phone's address."""
        return not self.latched and addr[0] in self.sources and not self.engine.owns(addr)

    def _on_event(self, data: bytes) -> None:
        cc = data[0] & 0x0F
        digit = self._dtmf.feed(int.from_bytes(data[4:8], "big"), data[12 + 4 * cc:])
        if digit is not None and self.on_dtmf is not None:
            self.on_dtmf(digit)

    def send_dtmf(self, digit: str, ms: int = 100) -> None:
        """Send one DTMF digit to this leg's phone as RFC 4733 events (start, updates, 3 x end)."""
        if self.remote is None or self.transport is None or self.dtmf_pt is None:
            return
        ts, units = self.ts, ms * 8
        for i, duration in enumerate([*range(160, units, 160), units, units, units]):
            end = duration == units
            marker = 0x80 if i == 0 else 0
            header = struct.pack("!BBHII", 0x80, marker | self.dtmf_pt, self.seq, ts, self.ssrc)
            self.seq = (self.seq + 1) & 0xFFFF
            self.transport.sendto(header + pack_event(digit, end, duration=duration), self.remote)
        self.ts = (ts + units) & 0xFFFFFFFF

    def send_frame(self, pcm: bytes) -> None:
        if self.remote is None or self.transport is None:
            return
        payload = pcm.payload(self.codec) if type(pcm) is SharedFrame else g711.encoder(self.codec)(pcm)
        header = struct.pack("!BBHII", 0x80, PT[self.codec], self.seq, self.ts, self.ssrc)
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + FRAME) & 0xFFFFFFFF
        self.transport.sendto(header + payload, self.remote)


class Mixer:
    """Mix-minus for a bridge of three or more legs, on the shared 20 ms tick.

    Each leg's decoded audio waits in a short queue (a little jitter is absorbed, a burst does not
    pile up); every tick each leg is sent the sum of everybody else's frame, encoded in its own
    codec. Measured for the design (call-control.md): 16-33 us per tick for 3-30 members.
    """

    QUEUE = 3  # frames kept per leg: 60 ms

    def __init__(self, legs):
        self.inbox: dict[RtpLeg, collections.deque] = {leg: collections.deque(maxlen=self.QUEUE) for leg in legs}

    def feed(self, leg: "RtpLeg", pcm: bytes) -> None:
        queue = self.inbox.get(leg)
        if queue is not None and len(pcm) == 2 * FRAME and not leg.muted:
            queue.append(np.frombuffer(pcm, dtype="<i2").astype(np.int32))

    def tick(self) -> None:
        frames = {leg: (q.popleft() if q else None) for leg, q in self.inbox.items()}
        heard = [f for f in frames.values() if f is not None]
        total = np.sum(heard, axis=0) if heard else np.zeros(FRAME, dtype=np.int32)
        for leg, own in frames.items():
            if leg.player is not None:
                continue  # hearing a prompt or music instead
            mix = total - own if own is not None else total
            leg.send_frame(np.clip(mix, -32768, 32767).astype("<i2").tobytes())


class MediaEngine:
    """Owns the RTP sockets of all calls and the shared playback tick."""

    def __init__(self, address: str, ports: tuple[int, int], kernel_media: str = "off"):
        self.address = address
        self.pool = PortPool(*ports)
        self.loop = asyncio.get_event_loop()
        # bridged G.711 calls forwarded by nftables ("auto": when this box allows it; kernelpath.py)
        self.kernel = KernelPath.start(address, ports, kernel_media, self.loop) if kernel_media != "off" else None
        self.playing: set[RtpLeg] = set()
        self.mixers: set[Mixer] = set()
        self.open_ports: set[int] = set()
        self._tick: asyncio.TimerHandle | None = None
        self._next = 0.0
        self.legs = 0
        self.ticks = 0  # 20 ms ticks so far: a shared source (music on hold) advances once per tick

    async def open_leg(self) -> RtpLeg:
        for _ in range(len(self.pool.free)):
            port = self.pool.take()
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                # bound here and handed over: with local_addr uvloop resolves the address for
                # every leg (33 instead of 20 us of CPU per leg, issue 16)
                sock.setblocking(False)
                sock.bind((self.address, port))
                _, leg = await self.loop.create_datagram_endpoint(lambda: RtpLeg(self, port), sock=sock)
                self.legs += 1
                self.open_ports.add(port)
                return leg
            except OSError as exc:
                sock.close()
                log.warning("RTP port %s:%d unusable (%s); trying the next", self.address, port, exc)
                self.pool.give(port)
        raise MediaCapacityError(f"no free RTP port on {self.address} in {self.pool.first}-{self.pool.last}")

    def close_leg(self, leg: RtpLeg) -> None:
        if leg.kernel:
            self.kernel.take_back(leg)
        self.stop(leg)
        if leg.recorder is not None:
            leg.recorder.close()
            leg.recorder = None
        if leg.transport is not None:
            leg.transport.close()
            leg.transport = None
            self.open_ports.discard(leg.port)
            self.pool.give(leg.port)
            self.legs -= 1
        if leg.peer is not None:
            leg.peer.peer = None
            leg.peer._refresh()
        leg.peer = None
        leg.out_send = None
        leg.on_dtmf = None      # the channel's bound method: a cycle that would wait for the collector
        if leg.mixer is not None:
            leg.mixer.inbox.pop(leg, None)
            leg.mixer = None

    def owns(self, addr: tuple[str, int]) -> bool:
        """addr is one of this box's open RTP ports: media sent there would loop back into us."""
        return addr[1] in self.open_ports and addr[0] in (self.address, "0.0.0.0")

    def owns_address(self, addr: tuple[str, int] | None, service_ports=()) -> bool:
        """An SDP address that must be refused: one of our open RTP ports, or a service port of
        this box (SIP), on our own address. RTP aimed there would loop or flood the box itself."""
        return addr is not None and (self.owns(addr) or (
            addr[0] in (self.address, "0.0.0.0") and addr[1] in service_ports))

    @staticmethod
    def bridge(a: RtpLeg, b: RtpLeg) -> None:
        a.peer, b.peer = b, a
        a._refresh_both()

    @staticmethod
    def unbridge(a: RtpLeg, b: RtpLeg) -> None:
        a.peer = b.peer = None
        a._refresh_both()
        b._refresh_both()

    def mix(self, legs) -> Mixer:
        """Join three or more legs: each hears the others mixed (no relay between them)."""
        mixer = Mixer(legs)
        for leg in legs:
            leg.peer = None
            leg.mixer = mixer
            leg._refresh()
        self.mixers.add(mixer)
        self._start_tick()
        return mixer

    def unmix(self, mixer: Mixer) -> None:
        self.mixers.discard(mixer)
        for leg in mixer.inbox:
            if leg.mixer is mixer:
                leg.mixer = None
                leg._refresh()

    def play(self, leg: RtpLeg, player: Player) -> Player:
        """Play into leg (what the phone on that leg hears) until the player ends or stop()."""
        self.stop(leg)
        leg.player = player
        leg._refresh_both()
        self.playing.add(leg)
        self._start_tick()
        return player

    def _start_tick(self) -> None:
        if self._tick is None:
            self._next = self.loop.time()
            self._on_tick()

    def stop(self, leg: RtpLeg) -> None:
        player = leg.player
        if player is not None:
            leg.player = None
            leg._refresh_both()
            self.playing.discard(leg)
            if not player.done.done():
                player.done.set_result(None)

    def _on_tick(self) -> None:
        self.ticks += 1
        for leg in list(self.playing):
            try:
                frame = leg.player.next_frame()
                if frame is None:
                    self.stop(leg)
                else:
                    leg.send_frame(frame)
            except Exception as exc:
                # One leg's failure must not stop every other call's prompts and tones (issue 7).
                log.warning("rtp port %d: playback stopped: %s: %s", leg.port, type(exc).__name__, exc)
                self.stop(leg)
        for mixer in list(self.mixers):
            try:
                mixer.tick()
            except Exception as exc:
                log.warning("mixer stopped: %s: %s", type(exc).__name__, exc)
                self.unmix(mixer)
        if not self.playing and not self.mixers:
            self._tick = None
            return
        # one shared clock: schedule from the ideal time, not from now, so pacing does not drift
        self._next += 0.02
        self._tick = self.loop.call_at(max(self._next, self.loop.time()), self._on_tick)

    def close(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        if self.kernel is not None:
            self.kernel.close()
            self.kernel = None


def rtp_ports_from(spec: str) -> tuple[int, int]:
    try:
        first, last = (int(x) for x in spec.split("-", 1))
    except ValueError:
        raise ValueError(f"--rtp-ports {spec!r} is not a range like 10000-20000") from None
    PortPool(first, last)  # validates
    return first, last


