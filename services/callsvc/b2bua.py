"""The call service: SIP from the edge in, sessions of channels out (decision 010).

Every new INVITE becomes a session with the caller's inbound channel; the routing decision picks a
feature flow (services/callsvc/flows/) that drives channels with the primitives (ring, answer,
play, collect, dial, bridge, hang up). In-dialog requests go to the channel they belong to. At the
end of a session its call record is written. All SIP passes through the Kamailio edge; media is
anchored here (services/callsvc/media.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiosipua import SipRequest, SipResponse

from firmware.cdr import Disposition
from firmware.dialplan import Caller, config_view, route_call
from firmware.dialplan.router import plan_for_destination

from . import charging as call_charging
from . import hooks, moh, sdp
from .channel import Channel, EndedChannel
from .flows import plan as plan_flow
from .flows import transfer
from .flows.outside import TRUNK_HEADER
from .media import MediaCapacityError, MediaEngine
from .presence import Presence
from .session import CHANNELS, SESSIONS, Session
from .sip import ServerTransaction, SipEndpoint, make_response, new_branch, new_tag, tag_of, user_of

log = logging.getLogger(__name__)

# An answered call with no RTP in either direction for this long has lost its phones (a BYE that
# never arrived, a phone that lost power): hang it up so it stops holding ports and a CDR open.
# Calls on hold are exempt, as Asterisk's rtptimeout vs rtpholdtimeout.
# PBX_RTP_TIMEOUT (seconds) overrides it.
RTP_TIMEOUT = float(os.environ.get("PBX_RTP_TIMEOUT") or 60)
SWEEP_EVERY = min(10.0, RTP_TIMEOUT / 3)


def _run_hook(hook, what: str, *args) -> None:
    """A feature's hook failing must not stop the call service (nor the other hooks)."""
    try:
        hook(*args)
    except Exception:
        log.exception("%s hook %r failed", what, hook)


def _status_part(name: str, part, svc):
    """A feature's part of the status (queues...); a failing one is logged and shows as null."""
    try:
        return part(svc)
    except Exception:
        log.exception("status part %s failed", name)
        return None


SIP_RECEIVE_BUFFER = 4 * 1024 * 1024


def _grow_receive_buffer(sock) -> None:
    """A receive buffer for bursts: the kernel's default (208 KB) holds only ~100 datagrams on
    loopback (each is charged its whole buffer), so a pause of the loop of a few tens of ms at
    500 setups/s overflowed it: thousands of SIP messages dropped, calls timed out by the edge
    (issue 16). The kernel caps the size at net.core.rmem_max: the appliance raises that
    (systemd/60-pbx.conf); elsewhere a smaller buffer is logged once, with the fix."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SIP_RECEIVE_BUFFER)
        got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2   # the kernel reports it doubled
    except OSError as exc:
        log.warning("SIP receive buffer left at the default: %s", exc)
        return
    if got < SIP_RECEIVE_BUFFER:
        log.info("SIP receive buffer %d KB, not %d KB: the kernel caps it (sysctl net.core.rmem_max=%d "
                 "raises the cap; systemd/60-pbx.conf on the appliance)", got // 1024,
                 SIP_RECEIVE_BUFFER // 1024, SIP_RECEIVE_BUFFER)


class CallService:
    """Owns the SIP endpoint, the media engine, the sessions and their channels."""

    def __init__(self, *, store, cdr_sink, media: MediaEngine, sip_addr: str, edge: tuple[str, int],
                 listen: tuple[str, int], prompts=None, recordings_dir=None):
        self.store = store
        self.cdr_sink = cdr_sink            # callable(CallRecord), must not block
        self.media = media
        self.sip_addr = sip_addr            # address phones see in our SDP
        self.edge = edge
        self.listen = listen
        self.prompts = prompts              # callable(prompt_id) -> pcm16 bytes
        self.recordings_dir = recordings_dir  # Path: where record_calls puts its WAVs
        self.endpoint: SipEndpoint | None = None
        self.calls: dict[str, Session] = {}       # live sessions by linkedid
        self.channels: dict[str, Channel] = {}    # by Call-ID, kept a little after they end
        self.completed = 0
        self.loop = asyncio.get_event_loop()
        self._extensions: dict = {}
        self.view = None                          # the routing plan's ConfigView, per config generation
        self.ringing: dict[str, Session] = {}     # extension -> the session ringing it (for pickup)
        self._tasks: set[asyncio.Task] = set()
        self._settings = None
        self._generation = -1
        self.in_call_codes = transfer.InCallCodes(self)  # `##` / `*2` while bridged
        self.moh = moh.MohService(self)  # music on hold: listen(channel, class) / unlisten(channel)
        self.presence = Presence(self)            # MWI and BLF lamps, published to the edge

    def spawn(self, coro) -> asyncio.Task:
        """Run a flow in the background; the loop keeps only weak references to tasks, so a flow
        nobody holds could be collected mid-call: the service holds each until it ends."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        transport, self.endpoint = await self.loop.create_datagram_endpoint(
            lambda: SipEndpoint(self.edge, self._on_request), local_addr=self.listen)
        _grow_receive_buffer(transport.get_extra_info("socket"))
        self.endpoint.on_stray_2xx = self._on_stray_2xx
        self.endpoint.on_ack_timeout = self._on_ack_timeout
        self._forget_later = self._forget          # bound once: the linger queue holds one per call
        self.contact = f"<sip:pbx@{self.listen[0]}:{self.endpoint.local[1]}>"
        self.refresh_config()
        self._sweeper = self.loop.call_later(SWEEP_EVERY, self._sweep)
        self.presence.start()
        for hook in hooks.ON_START:
            _run_hook(hook, "start", self)
        log.info("call service listening on udp %s:%d, edge %s:%d", *self.endpoint.local, *self.edge)

    def _sweep(self) -> None:
        """Hang up answered calls in which one answered phone has sent no RTP for RTP_TIMEOUT (a
        call on hold exempt), as Asterisk's rtptimeout does per channel: a phone that vanished
        without a BYE ends the call even while the other keeps sending."""
        now = self.loop.time()
        for session in list(self.calls.values()):
            live = [ch for ch in session.channels if not ch.is_gone and ch.rtp is not None]
            if session.state != "answered" or len(live) < 2:
                continue
            seen = session.media_seen if isinstance(session.media_seen, dict) else {}
            # packets_in: the kernel's count too, for a bridge it forwards (kernelpath.py)
            seen = {ch.n: (ch.rtp.packets_in, now) if ch.n not in seen or seen[ch.n][0] != ch.rtp.packets_in
                    else seen[ch.n] for ch in live if ch.state == "up"}
            session.media_seen = seen
            silent = max((now - t for _, t in seen.values()), default=0.0)
            if silent > RTP_TIMEOUT and not any(ch.held for ch in live):
                log.warning("call %d %s -> %s: no RTP from a phone for %.0f s: hanging up", session.n,
                            session.src, session.dst, silent)
                session.hangup_by = "rtp timeout"
                session.fail(Disposition.ANSWERED, "rtp timeout")
                self.spawn(self.hangup_session(session, "rtp timeout"))
        self._sweeper = self.loop.call_later(SWEEP_EVERY, self._sweep)

    async def stop(self) -> None:
        if getattr(self, "_sweeper", None) is not None:
            self._sweeper.cancel()
        self.presence.stop()
        # Hang every call up at once and give the BYEs a moment, not their full 32 s time-out:
        # a service stop must finish well inside systemd's (and the tests') stop timeout.
        hangups = [self.hangup_session(s, "shutdown") for s in list(self.calls.values())]
        if hangups:
            log.info("shutdown: hanging up %d calls", len(hangups))
            done, pending = await asyncio.wait([asyncio.ensure_future(h) for h in hangups], timeout=3)
            for task in pending:
                task.cancel()
        if self.endpoint is not None:
            self.endpoint.close()
        self.media.close()

    def refresh_config(self) -> None:
        if self.store.generation != self._generation or self._settings is None:
            self.view = config_view(self.store)
            self._extensions = dict(self.view.extensions)
            self._settings = self.view.settings
            first = self._generation < 0
            self._generation = self.view.generation
            if not first:
                for hook in hooks.ON_CONFIG_CHANGE:
                    _run_hook(hook, "config change", self, self.view)

    @property
    def settings(self):
        return self._settings

    def status(self) -> dict:
        return {"calls": [call_charging.describe(self, s) for s in self.calls.values()], "completed": self.completed,
                "sip": dict(self.endpoint.stats) if self.endpoint else {}, "rtp_legs": self.media.legs,
                "tables": self.tables(), "python_blocks": sys.getallocatedblocks(),
                "memory": {"sessions": SESSIONS.alive, "channels": CHANNELS.alive,
                           "sessions_freed_by_collector": SESSIONS.by_collector,
                           "channels_freed_by_collector": CHANNELS.by_collector},
                **{name: _status_part(name, part, self) for name, part in hooks.ON_STATUS.items()}}

    def tables(self) -> dict:
        """Sizes of the per-call tables: all fall back to 0 a little after the last call ends (the
        soak bench, tests/bench/soak.py, checks that nothing is left after 100,000 calls)."""
        ep = self.endpoint
        return {"sessions": len(self.calls), "channels": len(self.channels), "ringing": len(self.ringing),
                "server_tx": len(ep.server_tx) if ep else 0, "client_tx": len(ep.client_tx) if ep else 0}

    # --- what channels need from the service ------------------------------------------------------
    def via(self) -> str:
        return f"SIP/2.0/UDP {self.listen[0]}:{self.endpoint.local[1]};branch={new_branch()};rport"

    def is_us(self, addr: tuple[str, int] | None) -> bool:
        """An SDP address pointing back at this box: our RTP ports, the edge's or our SIP port."""
        return self.media.owns_address(addr, (self.edge[1], self.endpoint.local[1]))

    def extension(self, number: str):
        """The enabled extension with this number, or None."""
        ext = self._extensions.get(number)
        return ext if ext is not None and getattr(ext, "enabled", True) else None

    def trunk(self, name: str):
        return self.view.trunks.get(name)

    def on_refer(self, ch: Channel, req: SipRequest, tx: ServerTransaction) -> None:
        transfer.on_refer(self, ch, req, tx)

    def register_channel(self, ch: Channel) -> None:
        self.channels[ch.call_id] = ch

    def channel_ended(self, ch: Channel) -> None:
        # kept a little so late retransmissions and BYEs still find their dialog: as an EndedChannel,
        # which answers them without keeping the call in memory (unless it still owes its BYE: then
        # Channel._bye retires it once sent). The clean-up names the Call-ID, not the channel, for
        # the same reason.
        self.retire(ch)
        self.endpoint.linger.add(self._forget_later, ch.call_id)

    def retire(self, ch: Channel) -> None:
        if self.channels.get(ch.call_id) is ch and ch.is_gone and not ch.confirmed:
            self.channels[ch.call_id] = EndedChannel(ch)

    def _forget(self, call_id: str) -> None:
        ch = self.channels.get(call_id)
        if ch is None or not ch.is_gone:  # a new dialog with the same Call-ID is not ours to end
            return
        if ch.confirmed:  # its BYE is still under way
            self.endpoint.linger.add(self._forget_later, call_id)
        else:
            del self.channels[call_id]

    def start_recording(self, session: Session, *channels: Channel) -> None:
        """One mono WAV per party: what the caller said and what the callee said."""
        from services.media.wavfile import WavWriter
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(session.start))
        day = self.recordings_dir / stamp[:8]
        day.mkdir(parents=True, exist_ok=True)
        for ch, who in zip(channels, ("caller", "callee")):
            path = day / f"{stamp}-{session.src}-{session.dst}-{session.n}-{who}.wav"
            ch.rtp.record_to(WavWriter(path))
            session.recordings.append(str(path))
            ch.log("recording", path=str(path))
        log.info("call %d: recording to %s", session.n, ", ".join(session.recordings))

    # --- request dispatch ----------------------------------------------------------------------
    def _on_request(self, req: SipRequest, tx: ServerTransaction | None) -> None:
        method = req.method.upper()
        call_id = req.headers.get_first("call-id")
        to_tag = tag_of(req.headers.get_first("to"))
        if method == "INVITE" and not to_tag:
            if call_id in self.channels:
                self.endpoint.respond(tx, make_response(req, 482, new_tag(), reason="Loop Detected"))
                return
            self.refresh_config()
            self._new_call(req, tx)
            return
        if method == "CANCEL":
            self._on_cancel(req, tx)
            return
        if method == "OPTIONS" and not to_tag:
            self.endpoint.respond(tx, make_response(req, 200, new_tag(), extra=[("Accept", "application/sdp")]))
            return
        ch = self.channels.get(call_id)
        if ch is None:
            if method != "ACK":
                self.endpoint.respond(tx, make_response(req, 481, new_tag() if not to_tag else ""))
            return
        ch.on_request(req, tx)

    def _on_cancel(self, req: SipRequest, tx: ServerTransaction) -> None:
        inv_tx = self.endpoint.invite_for_cancel(req)
        ch = self.channels.get(req.headers.get_first("call-id"))
        if inv_tx is None or ch is None or ch.tx is not inv_tx:
            self.endpoint.respond(tx, make_response(req, 481))
            return
        self.endpoint.respond(tx, make_response(req, 200))
        if ch.state not in ("up", "gone"):
            log.info("call %d %s -> %s cancelled by the caller", ch.session.n, ch.session.src, ch.session.dst)
            ch.on_cancel()

    def _on_stray_2xx(self, resp: SipResponse) -> None:
        ch = self.channels.get(resp.headers.get_first("call-id"))
        if ch is not None:
            ch.resend_ack(int(resp.headers.get_first("cseq").split()[0]))

    def _on_ack_timeout(self, tx: ServerTransaction) -> None:
        ch = self.channels.get(tx.request.headers.get_first("call-id"))
        if ch is not None and not ch.is_gone:
            session = ch.session
            log.warning("call %d %s -> %s: caller never ACKed our 200: hanging up", session.n,
                        session.src, session.dst)
            session.hangup_by = "no ack"
            self.spawn(self.hangup_session(session, "no ack"))

    # --- a new call ----------------------------------------------------------------------------------
    def _new_call(self, invite: SipRequest, tx: ServerTransaction) -> None:
        src = user_of(invite.headers.get_first("from"))
        dst = user_of(invite.uri) or user_of(invite.headers.get_first("to"))
        session = Session(self, invite.headers.get_first("call-id"), src, dst)
        caller = Channel.from_invite(self, session, invite, tx)
        session.caller = caller
        session.who = self._who(session, caller)
        session.start_channel(caller, number=src, direction="in", call_id=caller.call_id,
                              kind=session.who.kind, dialled=dst,
                              trunk=session.who.id if session.who.kind == "trunk" else "")
        self.calls[session.linkedid] = session
        self.register_channel(caller)
        self.spawn(self._run(session, caller))

    async def _run(self, session: Session, caller: Channel) -> None:
        try:
            try:
                await caller.accept_offer()
            except sdp.SdpError as exc:
                log.info("call %d from %s refused: %s", session.n, session.src, exc)
                session.fail(Disposition.FAILED, f"488 {exc}")
                extra = [("Warning", '305 pbx "only PCMU and PCMA are supported"')] \
                    if "codec" in str(exc) else []
                caller.reject(488, f"Not Acceptable Here ({exc})", extra=extra)
                return
            if caller.is_gone:
                session.fail(Disposition.CANCELLED, "caller cancelled")
                return
            await self._route(session, caller)
        except MediaCapacityError as exc:
            log.warning("call %d %s -> %s refused: %s", session.n, session.src, session.dst, exc)
            # 480 + Retry-After, not 503: a proxy turns a 503 into 500 on its way upstream
            # (RFC 3261 16.7 step 6), and the caller would see "Server Internal Error".
            session.fail(Disposition.FAILED, "480 no free RTP port (at capacity)")
            caller.reject(480, "Temporarily Unavailable (PBX at capacity)",
                          extra=[("Retry-After", "5"), ("Warning", '399 pbx "no free media port: PBX at capacity"')])
        except Exception:
            log.exception("call %d (%s -> %s) failed", session.n, session.src, session.dst)
            session.fail(Disposition.FAILED, "500 internal error")
            caller.reject(500)
        finally:
            await self.hangup_session(session, session.hangup_by)

    def _who(self, session: Session, caller: Channel) -> Caller:
        """Who is calling, for the routing plan: an extension, a trunk or an analog exchange line."""
        trunk = caller.invite.headers.get_first(TRUNK_HEADER.lower())
        line = next((p for p in self.view.lines.values() if p.extension == session.src), None)
        if trunk:  # only the edge sends to us, and it sets this only for calls from a trunk
            caller.trunk = trunk
            return Caller("trunk", trunk, number=session.src, name=caller.name)
        if line is not None:
            # an exchange line's call: the line gateway puts the PSTN caller's number in the display
            # name (decision 007); the callee sees that, not the port account's configured name
            shown = caller.name.strip()
            return Caller("line", str(line.number), number=shown if shown.lstrip("+").isdigit() else "",
                          name=shown)
        return Caller("extension", session.src, number=session.src, name=caller.name)

    def now(self) -> datetime:
        """The time in the box's time zone (what time conditions and rates are judged by)."""
        try:
            zone = ZoneInfo(self.settings.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            zone = ZoneInfo("UTC")
        return datetime.now(zone)

    async def _route(self, session: Session, caller: Channel) -> None:
        """Ask the routing plan what the dialled number means for this caller, and carry it out."""
        plan = route_call(session.dst, session.who, self.view, now=self.now(), runtime=call_charging.runtime(self))
        await plan_flow.run(self, caller, plan)

    def plan_for(self, session: Session, destination: str):
        """The plan for sending this call on to a configured destination string ("ivr:1", an IVR
        key's target, a parked call's timeout...): a flow returns it to carry on with it."""
        return plan_for_destination(destination, session.who, self.view, self.now(), call_charging.runtime(self))

    async def hangup_session(self, session: Session, by: str = "") -> None:
        """End every channel of the session and write its call record (once)."""
        if session.end is not None:
            return
        session.end = time.time()
        if by:
            session.hangup_by = by
        session.state = "ended"
        # start every hang-up now (each ends its channel at once), then write the record while
        # the BYEs are on their way: a phone slow to answer a BYE must not delay the CDR
        byes = [asyncio.ensure_future(ch.hangup(by or "normal")) for ch in session.channels
                if not ch.is_gone or ch.confirmed]
        self.calls.pop(session.linkedid, None)
        self.completed += 1
        await asyncio.sleep(0)
        try:
            for record in call_charging.rate(self, session.records()):
                self.cdr_sink(record)
        except Exception:
            # a record that cannot be written must not keep the call from ending (issue 7)
            log.exception("call %d %s -> %s: no CDR written", session.n, session.src, session.dst)
        for result in await asyncio.gather(*byes, return_exceptions=True):
            if isinstance(result, Exception):
                log.warning("call %d: hang-up failed: %r", session.n, result)
        session.release()
