"""Media engine: RTP endpoints anchored at the PBX, relay between legs, playback, DTMF, recording.

Every call leg gets one UDP socket from the RTP port range. When two legs are bridged, a packet
arriving on one leg's socket goes straight out of the other leg's socket: one Python callback per
packet and no copy (a uvloop relay measured 0.028 % of a core per bridged call, see the notes).
Anything else per packet (DTMF, recording) runs only when switched on for that leg.
Playback of prompts and tones runs on one shared 20 ms tick for all legs, not a timer per call.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import struct
from collections.abc import Callable

from firmware.dsp import g711
from firmware.dsp.rfc4733 import EventReceiver
from firmware.dsp.tones import ToneGenerator

log = logging.getLogger(__name__)

FRAME = 160  # samples per 20 ms at 8 kHz
PT = {"PCMU": 0, "PCMA": 8}


class PortPool:
    """Even RTP ports from a range; odd ports stay free for RTCP by convention."""

    def __init__(self, first: int, last: int):
        if first >= last or first < 1024 or last > 65535:
            raise ValueError(f"RTP port range {first}-{last} is invalid: use e.g. 10000-20000")
        self.free = list(range(first + (first & 1), last, 2))
        self.first, self.last = first, last

    def take(self) -> int:
        if not self.free:
            raise RuntimeError(f"RTP port range {self.first}-{self.last} exhausted: widen --rtp-ports")
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


class RtpLeg(asyncio.DatagramProtocol):
    """One leg's RTP socket. `peer` is the bridged leg (packets go out of its socket)."""

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
        self.rx = 0
        self.tx = 0
        self._inspect = False  # DTMF or recording on: look inside packets

    def connection_made(self, transport):
        self.transport = transport

    def error_received(self, exc):
        pass  # ICMP unreachable while a phone restarts its socket; RTP is best effort

    def set_remote(self, addr: tuple[str, int] | None) -> None:
        if addr is not None and addr[1] == 0:
            addr = None  # port 0: stream disabled (RFC 3264)
        self.remote = addr
        self.latched = False

    def watch_dtmf(self, payload_type: int | None, callback: Callable[[str], None] | None) -> None:
        self.dtmf_pt, self.on_dtmf = payload_type, callback
        self._update_inspect()

    def record_to(self, writer) -> None:
        self.recorder = writer
        self._update_inspect()

    def _update_inspect(self) -> None:
        self._inspect = (self.dtmf_pt is not None and self.on_dtmf is not None) or self.recorder is not None

    def datagram_received(self, data, addr):
        self.rx += 1
        if not self.latched:
            # symmetric RTP: answer to where the phone really sends from (NAT), once
            self.remote = addr
            self.latched = True
        if self._inspect and len(data) >= 12:
            self._look_inside(data)
        peer = self.peer
        if peer is not None and peer.remote is not None and peer.player is None:
            peer.transport.sendto(data, peer.remote)
            peer.tx += 1

    def _look_inside(self, data: bytes) -> None:
        pt = data[1] & 0x7F
        if pt == self.dtmf_pt:
            ts = int.from_bytes(data[4:8], "big")
            cc = data[0] & 0x0F
            digit = self._dtmf.feed(ts, data[12 + 4 * cc:])
            if digit is not None and self.on_dtmf is not None:
                self.on_dtmf(digit)
        elif self.recorder is not None and pt == PT.get(self.codec):
            cc = data[0] & 0x0F
            self.recorder.write(g711.decoder(self.codec)(data[12 + 4 * cc:]))

    def send_frame(self, pcm: bytes) -> None:
        if self.remote is None or self.transport is None:
            return
        payload = g711.encoder(self.codec)(pcm)
        header = struct.pack("!BBHII", 0x80, PT[self.codec], self.seq, self.ts, self.ssrc)
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + FRAME) & 0xFFFFFFFF
        self.transport.sendto(header + payload, self.remote)
        self.tx += 1


class MediaEngine:
    """Owns the RTP sockets of all calls and the shared playback tick."""

    def __init__(self, address: str, ports: tuple[int, int]):
        self.address = address
        self.pool = PortPool(*ports)
        self.loop = asyncio.get_event_loop()
        self.playing: set[RtpLeg] = set()
        self._tick: asyncio.TimerHandle | None = None
        self._next = 0.0
        self.legs = 0

    async def open_leg(self) -> RtpLeg:
        for _ in range(len(self.pool.free)):
            port = self.pool.take()
            try:
                _, leg = await self.loop.create_datagram_endpoint(
                    lambda: RtpLeg(self, port), local_addr=(self.address, port))
                self.legs += 1
                return leg
            except OSError as exc:
                log.warning("RTP port %s:%d unusable (%s); trying the next", self.address, port, exc)
                self.pool.give(port)
        raise RuntimeError(f"no free RTP port on {self.address} in {self.pool.first}-{self.pool.last}")

    def close_leg(self, leg: RtpLeg) -> None:
        self.stop(leg)
        if leg.recorder is not None:
            leg.recorder.close()
            leg.recorder = None
        if leg.transport is not None:
            leg.transport.close()
            leg.transport = None
            self.pool.give(leg.port)
            self.legs -= 1
        leg.peer = None

    @staticmethod
    def bridge(a: RtpLeg, b: RtpLeg) -> None:
        a.peer, b.peer = b, a

    @staticmethod
    def unbridge(a: RtpLeg, b: RtpLeg) -> None:
        a.peer = b.peer = None

    def play(self, leg: RtpLeg, player: Player) -> Player:
        """Play into leg (what the phone on that leg hears) until the player ends or stop()."""
        self.stop(leg)
        leg.player = player
        self.playing.add(leg)
        if self._tick is None:
            self._next = self.loop.time()
            self._on_tick()
        return player

    def stop(self, leg: RtpLeg) -> None:
        player = leg.player
        if player is not None:
            leg.player = None
            self.playing.discard(leg)
            if not player.done.done():
                player.done.set_result(None)

    def _on_tick(self) -> None:
        for leg in list(self.playing):
            frame = leg.player.next_frame()
            if frame is None:
                self.stop(leg)
            else:
                leg.send_frame(frame)
        if not self.playing:
            self._tick = None
            return
        # one shared clock: schedule from the ideal time, not from now, so pacing does not drift
        self._next += 0.02
        self._tick = self.loop.call_at(max(self._next, self.loop.time()), self._on_tick)

    def close(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None


def rtp_ports_from(spec: str) -> tuple[int, int]:
    try:
        first, last = (int(x) for x in spec.split("-", 1))
    except ValueError:
        raise ValueError(f"--rtp-ports {spec!r} is not a range like 10000-20000") from None
    PortPool(first, last)  # validates
    return first, last


