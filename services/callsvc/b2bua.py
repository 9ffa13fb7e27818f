"""The B2BUA: every call is two SIP dialogs (leg a: caller, leg b: callee) with media anchored here.

Flow of an extension-to-extension call (all SIP passes through the Kamailio edge):
  a: INVITE -> 100 -> dialplan -> b: INVITE -> 180 -> a: 180 -> b: 200 -> ACK, a: 200 -> ACK -> bridged.
Failures are turned into what a caller of an office PBX expects: busy tone then 486, a spoken
announcement then 404/480, 480 after the no-answer time. Each finished call writes one CDR row.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import time
from dataclasses import dataclass, field

from aiosipua import SipRequest, SipResponse
from aiosipua.headers import CaseInsensitiveDict

from firmware.cdr import CallRecord, Disposition, cdr_text
from firmware.dialplan import Action, route_call
from firmware.dsp.tones import ToneGenerator, tone

from . import sdp
from .media import MediaCapacityError, MediaEngine, Player, RtpLeg
from .sip import (LINGER, ServerTransaction, SipEndpoint, make_response, new_branch, new_tag, tag_of,
                  uri_of, user_of)

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE"
# An answered call with no RTP in either direction for this long has lost its phones (a BYE that
# never arrived, a phone that lost power): hang it up so it stops holding ports and a CDR open.
# Calls on hold (sendonly/inactive) are exempt, as Asterisk's rtptimeout vs rtpholdtimeout.
# PBX_RTP_TIMEOUT (seconds) overrides it.
RTP_TIMEOUT = float(os.environ.get("PBX_RTP_TIMEOUT") or 60)
SWEEP_EVERY = min(10.0, RTP_TIMEOUT / 3)
USER_AGENT = "OfficePBX"


def phone_addresses(msg, *, vias: bool) -> frozenset[str]:
    """IPv4 addresses the signalling says the phone on a leg sends from (strict RTP sources).

    The phone's own Via (below the edge's) with its `received` parameter, and its Contact with the
    `;alias=ip~port~proto` the edge stamps on phones behind NAT or on TCP.
    """
    hosts = []
    if vias:
        for via in msg.headers.get("via")[1:]:
            sent_by, _, params = via.partition(";")
            hosts.append(sent_by.split()[-1].rsplit(":", 1)[0] if sent_by.split() else "")
            for param in params.split(";"):
                name, _, value = param.strip().partition("=")
                if name.lower() == "received":
                    hosts.append(value)
    contact = msg.headers.get_first("contact")
    if contact:
        uri = uri_of(contact)
        hostport = uri.split("@", 1)[-1].split(";", 1)[0]
        hosts.append(hostport.rsplit(":", 1)[0])
        for param in uri.split(";")[1:]:
            name, _, value = param.partition("=")
            if name.lower() == "alias":
                hosts.append(value.split("~", 1)[0])
    found = set()
    for host in hosts:
        try:
            found.add(sdp.unicast_ipv4(host.strip()))
        except sdp.SdpError:
            pass
    return frozenset(found)


@dataclass
class Leg:
    side: str                       # "a" (caller) or "b" (callee)
    call_id: str
    local: str = ""                 # our From/To header value, with our tag
    remote: str = ""                # their From/To header value, with their tag once known
    target: str = ""                # their Contact URI
    routes: list[str] = field(default_factory=list)
    local_cseq: int = 0
    rtp: RtpLeg | None = None
    codec: str = "PCMU"
    dtmf_pt: int | None = None
    sdp_id: int = field(default_factory=lambda: secrets.randbits(31))
    sdp_version: int = 0
    direction: str = "sendrecv"
    confirmed: bool = False
    reinvite_pending: bool = False
    local_tag: str = ""
    reinvite_tx: ServerTransaction | None = None
    sources: frozenset[str] = frozenset()  # where the phone's RTP may come from, besides its SDP

    def our_sdp(self, address: str, direction: str | None = None) -> bytes:
        self.sdp_version += 1
        return sdp.build(address, self.rtp.port, [self.codec], self.dtmf_pt,
                         direction or self.direction, self.sdp_id, self.sdp_version)


class Call:
    """State of one call from the caller's INVITE to the CDR."""

    ids = itertools.count(1)

    def __init__(self, invite: SipRequest, tx: ServerTransaction):
        self.n = next(Call.ids)
        self.invite = invite
        self.tx = tx
        self.src = user_of(invite.headers.get_first("from"))
        self.dst = user_of(invite.uri) or user_of(invite.headers.get_first("to"))
        self.start = time.time()
        self.answer: float | None = None
        self.end: float | None = None
        self.state = "setup"       # setup, ringing, announcing, answered, ended
        self.a = Leg("a", invite.headers.get_first("call-id"))
        self.b: Leg | None = None
        self.b_invite: SipRequest | None = None
        self.b_tx = None
        self.b_provisional = False
        self.cancelled = False
        self.disposition: Disposition | None = None
        self.cause = ""
        self.hangup_by = ""
        self.final_b = 0
        self.dtmf = ""
        self.recordings: list[str] = []
        self.no_answer: asyncio.TimerHandle | None = None
        self.media_seen = (0, 0, 0.0)  # (rx a, rx b, when they last moved)

    def describe(self) -> dict:
        return {"call_id": self.a.call_id, "src": self.src, "dst": self.dst, "state": self.state,
                "start": self.start, "answer": self.answer,
                "codec": self.a.codec if self.a.rtp else None}


class CallService:
    """Owns the SIP endpoint, the media engine and the calls."""

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
        self.calls: dict[str, Call] = {}    # by leg a Call-ID
        self.legs: dict[str, tuple[Call, Leg]] = {}  # by any leg's Call-ID
        self.completed = 0
        self.loop = asyncio.get_event_loop()
        self._extensions: dict = {}
        self._tasks: set[asyncio.Task] = set()
        self._settings = None
        self._generation = -1

    def _spawn(self, coro) -> asyncio.Task:
        """Run a call flow in the background; the loop keeps only weak references to tasks, so a
        flow nobody holds could be collected mid-call: the service holds each until it ends."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        _, self.endpoint = await self.loop.create_datagram_endpoint(
            lambda: SipEndpoint(self.edge, self._on_request), local_addr=self.listen)
        self.endpoint.on_stray_2xx = self._on_stray_2xx
        self.endpoint.on_ack_timeout = self._on_ack_timeout
        self.contact = f"<sip:pbx@{self.listen[0]}:{self.endpoint.local[1]}>"
        self.refresh_config()
        self._sweeper = self.loop.call_later(SWEEP_EVERY, self._sweep)
        log.info("call service listening on udp %s:%d, edge %s:%d", *self.endpoint.local, *self.edge)

    def _sweep(self) -> None:
        now = self.loop.time()
        for call in list(self.calls.values()):
            if call.state != "answered" or call.b is None:
                continue
            a, b = call.a, call.b
            rx_a, rx_b, since = call.media_seen
            if (a.rtp.rx, b.rtp.rx) != (rx_a, rx_b) or not since:
                call.media_seen = (a.rtp.rx, b.rtp.rx, now)
            elif now - since > RTP_TIMEOUT and "sendrecv" == a.direction == b.direction:
                log.warning("call %d %s -> %s: no RTP for %.0f s: hanging up", call.n, call.src,
                            call.dst, now - since)
                call.hangup_by = "rtp timeout"
                self._spawn(self._hangup_all(call, "rtp timeout"))
        self._sweeper = self.loop.call_later(SWEEP_EVERY, self._sweep)

    async def stop(self) -> None:
        if getattr(self, "_sweeper", None) is not None:
            self._sweeper.cancel()
        # Hang every call up at once and give the BYEs a moment, not their full 32 s time-out:
        # a service stop must finish well inside systemd's (and the tests') stop timeout.
        hangups = [self._hangup_all(call, "shutdown") for call in list(self.calls.values())]
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
            self._extensions = {e.number: e for e in self.store.extensions()}
            self._settings = self.store.settings()
            self._generation = self.store.generation

    @property
    def settings(self):
        return self._settings

    def status(self) -> dict:
        return {"calls": [c.describe() for c in self.calls.values()], "completed": self.completed,
                "sip": dict(self.endpoint.stats) if self.endpoint else {}, "rtp_legs": self.media.legs}

    def _is_us(self, addr: tuple[str, int] | None) -> bool:
        """An SDP address pointing back at this box: our RTP ports, the edge's or our SIP port."""
        return self.media.owns_address(addr, (self.edge[1], self.endpoint.local[1]))

    # --- SIP message building -----------------------------------------------------------------
    def _via(self) -> str:
        return f"SIP/2.0/UDP {self.listen[0]}:{self.endpoint.local[1]};branch={new_branch()};rport"

    def _in_dialog(self, leg: Leg, method: str, body: bytes = b"", cseq: int | None = None,
                   branch_via: str | None = None) -> SipRequest:
        h = CaseInsensitiveDict()
        h.append("Via", branch_via or self._via())
        for r in leg.routes:
            h.append("Route", r)
        h.append("Max-Forwards", "70")
        h.append("From", leg.local)
        h.append("To", leg.remote)
        h.append("Call-ID", leg.call_id)
        if cseq is None:
            leg.local_cseq += 1
            cseq = leg.local_cseq
        h.append("CSeq", f"{cseq} {method}")
        if method in ("INVITE", "UPDATE"):
            h.append("Contact", self.contact)
        h.append("User-Agent", USER_AGENT)
        if body:
            h.append("Content-Type", "application/sdp")
        return SipRequest(headers=h, body=body, method=method, uri=leg.target)

    def _respond(self, tx: ServerTransaction, code: int, to_tag: str = "", *, body: bytes = b"",
                 dialog: bool = False, reason: str = "", extra=()) -> None:
        headers = list(extra)
        if dialog:
            for rr in tx.request.headers.get("record-route"):
                headers.append(("Record-Route", rr))
            headers.append(("Contact", self.contact))
        if code >= 200 or dialog:
            headers.append(("Allow", ALLOW))
        headers.append(("Server", USER_AGENT))
        self.endpoint.respond(tx, make_response(tx.request, code, to_tag, reason=reason,
                                                extra=headers, body=body))

    # --- request dispatch ----------------------------------------------------------------------
    def _on_request(self, req: SipRequest, tx: ServerTransaction | None) -> None:
        method = req.method.upper()
        call_id = req.headers.get_first("call-id")
        to_tag = tag_of(req.headers.get_first("to"))
        if method == "INVITE" and not to_tag:
            self.refresh_config()
            call = Call(req, tx)
            if call.a.call_id in self.calls:
                self._respond(tx, 482, new_tag(), reason="Loop Detected")
                return
            self.calls[call.a.call_id] = call
            self.legs[call.a.call_id] = (call, call.a)
            self._spawn(self._run_call(call))
            return
        if method == "CANCEL":
            self._on_cancel(req, tx)
            return
        if method == "OPTIONS" and not to_tag:
            self._respond(tx, 200, new_tag(), extra=[("Accept", "application/sdp")])
            return
        found = self.legs.get(call_id)
        if found is None:
            if method != "ACK":
                self._respond(tx, 481, new_tag() if not to_tag else "")
            return
        call, leg = found
        if method == "ACK":
            self._on_ack(call, leg, req)
        elif method == "BYE":
            self._respond(tx, 200)
            self._spawn(self._on_bye(call, leg))
        elif method == "INVITE":
            self._spawn(self._on_reinvite(call, leg, req, tx))
        elif method in ("INFO", "UPDATE", "OPTIONS", "NOTIFY"):
            if method == "UPDATE" and req.body:
                self._respond(tx, 488, reason="Not Acceptable Here (UPDATE with SDP)")
            else:
                self._respond(tx, 200)
        else:
            self._respond(tx, 501)

    # --- a new call ------------------------------------------------------------------------------
    async def _run_call(self, call: Call) -> None:
        try:
            await self._setup(call)
        except MediaCapacityError as exc:
            log.warning("call %d %s -> %s refused: %s", call.n, call.src, call.dst, exc)
            # 480 + Retry-After, not 503: a proxy turns a 503 into 500 on its way upstream
            # (RFC 3261 16.7 step 6), and the caller would see "Server Internal Error".
            if call.state not in ("answered", "ended"):
                self._final_to_a(call, 480, Disposition.FAILED, "480 no free RTP port (at capacity)",
                                 reason="Temporarily Unavailable (PBX at capacity)",
                                 extra=[("Retry-After", "5"),
                                        ("Warning", '399 pbx "no free media port: PBX at capacity"')])
            await self._hangup_all(call, "")
        except Exception:
            log.exception("call %d (%s -> %s) failed", call.n, call.src, call.dst)
            if call.state not in ("answered", "ended"):
                self._final_to_a(call, 500, Disposition.FAILED, "500 internal error")
            await self._hangup_all(call, "error")

    async def _setup(self, call: Call) -> None:
        a = call.a
        self._respond(call.tx, 100)
        a.local = call.invite.headers.get_first("to")
        a.remote = call.invite.headers.get_first("from")
        a.target = uri_of(call.invite.headers.get_first("contact") or call.invite.headers.get_first("from"))
        a.routes = list(call.invite.headers.get("record-route"))
        a.local_tag = new_tag()
        a.local = f"{a.local};tag={a.local_tag}"
        try:
            offer = sdp.parse(call.invite.body)
        except sdp.SdpError as exc:
            log.info("call %d from %s refused: %s", call.n, call.src, exc)
            self._final_to_a(call, 488, Disposition.FAILED, f"488 {exc}")
            await self._hangup_all(call, "")
            return
        if not offer.codecs:
            self._final_to_a(call, 488, Disposition.FAILED, "488 no G.711 codec offered",
                             extra=[("Warning", '305 pbx "only PCMU and PCMA are supported"')])
            await self._hangup_all(call, "")
            return
        if self._is_us(offer.address):
            self._final_to_a(call, 488, Disposition.FAILED, "488 media address is the PBX itself",
                             reason="Not Acceptable Here (media address is the PBX itself)")
            await self._hangup_all(call, "")
            return
        a.rtp = await self.media.open_leg()
        if call.end is not None:  # the caller cancelled while the socket opened: already torn down
            self.media.close_leg(a.rtp)
            return
        a.sources = phone_addresses(call.invite, vias=True)
        a.rtp.set_remote(offer.address, a.sources)
        a.codec = offer.codecs[0][0]
        a.rtp.codec = a.codec
        a.dtmf_pt = offer.dtmf_pt
        a.rtp.watch_dtmf(offer.dtmf_pt, lambda d: self._on_dtmf(call, "a", d))
        decision = route_call(call.dst, call.src, self._extensions)
        log.info("call %d %s -> %s: %s %s", call.n, call.src, call.dst, decision.action.value,
                 decision.reason)
        if call.cancelled:
            await self._hangup_all(call, call.hangup_by)
            return
        if decision.action is Action.NOT_FOUND:
            await self._announce_then_fail(call, 404, Disposition.FAILED, f"404 {decision.reason}",
                                           prompt="not_found")
            return
        await self._dial_extension(call, decision.target, offer)

    async def _dial_extension(self, call: Call, ext: str, offer: sdp.MediaOffer) -> None:
        b = Leg("b", secrets.token_hex(12) + "@pbx")
        call.b = b
        self.legs[b.call_id] = (call, b)
        b.rtp = await self.media.open_leg()
        if call.cancelled:  # the caller cancelled while the socket opened: nothing sent to b yet
            await self._hangup_all(call, call.hangup_by)
            return
        b.dtmf_pt = offer.dtmf_pt
        edge_host = f"{self.edge[0]}:{self.edge[1]}"
        caller = call.invite.headers.get_first("from")
        display = caller.split("<", 1)[0].strip() if "<" in caller else ""
        b.local = f"{display + ' ' if display else ''}<sip:{call.src}@{edge_host}>;tag={new_tag()}"
        b.remote = f"<sip:{ext}@{edge_host}>"
        b.target = f"sip:{ext}@{edge_host}"
        b.local_cseq = 1
        codecs = [name for name, _ in offer.codecs]
        body = sdp.build(self.sip_addr, b.rtp.port, list(dict.fromkeys(codecs)), offer.dtmf_pt,
                         "sendrecv", b.sdp_id, 1)
        h = CaseInsensitiveDict()
        h.append("Via", self._via())
        h.append("Max-Forwards", "70")
        h.append("From", b.local)
        h.append("To", b.remote)
        h.append("Call-ID", b.call_id)
        h.append("CSeq", "1 INVITE")
        h.append("Contact", self.contact)
        h.append("Allow", ALLOW)
        h.append("User-Agent", USER_AGENT)
        h.append("Content-Type", "application/sdp")
        invite = SipRequest(headers=h, body=body, method="INVITE", uri=b.target)
        call.b_invite = invite
        call.state = "ringing"
        call.b_tx = self.endpoint.request(invite, lambda r: self._on_b_provisional(call, r))
        timeout = self.settings.no_answer_timeout
        call.no_answer = self.loop.call_later(timeout, self._on_no_answer, call)
        resp = await call.b_tx.final
        if call.no_answer is not None:
            call.no_answer.cancel()
        call.final_b = resp.status_code
        if 200 <= resp.status_code < 300:
            await self._on_b_answered(call, resp)
            return
        self._ack_non_2xx(call, resp)
        if call.cancelled or call.state == "ended":
            # the caller gave up or the no-answer timer already answered the caller
            await self._hangup_all(call, call.hangup_by)
            return
        code = resp.status_code
        if code in (486, 600, 603):
            await self._announce_then_fail(call, 486, Disposition.BUSY, f"{code} {resp.reason_phrase}",
                                           tone_name="busy")
        elif code in (404, 480, 410):
            await self._announce_then_fail(call, 480, Disposition.FAILED,
                                           f"{code} {resp.reason_phrase}", prompt="unavailable")
        elif code == 408:
            self._final_to_a(call, 480, Disposition.NO_ANSWER, "408 callee did not answer")
            await self._hangup_all(call, "")
        else:
            await self._announce_then_fail(call, code if code < 700 else 500, Disposition.FAILED,
                                           f"{code} {resp.reason_phrase}", tone_name="congestion")

    def _on_b_provisional(self, call: Call, resp: SipResponse) -> None:
        call.b_provisional = True
        if call.cancelled:
            self._cancel_b(call)
            return
        if call.state == "ringing" and resp.status_code in (180, 183):
            self._respond(call.tx, 180, call.a.local_tag, dialog=True)

    def _on_no_answer(self, call: Call) -> None:
        call.no_answer = None
        if call.state != "ringing":
            return
        log.info("call %d %s -> %s: no answer after %ss", call.n, call.src, call.dst,
                 self.settings.no_answer_timeout)
        self._final_to_a(call, 480, Disposition.NO_ANSWER, "no answer",
                         reason="Temporarily Unavailable (no answer)")
        self._cancel_b(call)
        self._spawn(self._hangup_all(call, ""))

    async def _on_b_answered(self, call: Call, resp: SipResponse) -> None:
        a, b = call.a, call.b
        b.remote = resp.headers.get_first("to")
        b.target = uri_of(resp.headers.get_first("contact") or b.target)
        b.routes = list(reversed(resp.headers.get("record-route")))
        b.confirmed = True
        self._send_ack(call, b, 1)
        if call.cancelled or call.state == "ended":
            # the caller left while the callee answered (race): hang the callee up
            await self._hangup_all(call, call.hangup_by)
            return
        try:
            answer = sdp.parse(resp.body)
        except sdp.SdpError as exc:
            log.warning("call %d: callee %s answered with bad SDP (%s)", call.n, call.dst, exc)
            await self._bye(b)
            self._final_to_a(call, 488, Disposition.FAILED, f"callee SDP: {exc}")
            await self._hangup_all(call, "")
            return
        if self._is_us(answer.address):
            log.warning("call %d: callee %s answered with the PBX's own media port", call.n, call.dst)
            await self._bye(b)
            self._final_to_a(call, 488, Disposition.FAILED, "callee SDP: media address is the PBX itself")
            await self._hangup_all(call, "")
            return
        b.sources = phone_addresses(resp, vias=False)
        b.rtp.set_remote(answer.address, b.sources)
        b.codec = answer.codecs[0][0] if answer.codecs else a.codec
        b.rtp.codec = b.codec
        b.dtmf_pt = answer.dtmf_pt if a.dtmf_pt is not None else None
        b.rtp.watch_dtmf(b.dtmf_pt, lambda d: self._on_dtmf(call, "b", d))
        a.codec = b.codec  # one codec end to end: a pure relay, no transcoding
        a.rtp.codec = a.codec
        if b.dtmf_pt is None:
            a.dtmf_pt = None
        self.media.stop(a.rtp)
        self.media.bridge(a.rtp, b.rtp)
        if self.settings.record_calls and self.recordings_dir is not None:
            self._start_recording(call)
        call.state = "answered"
        call.answer = time.time()
        a.confirmed = True
        self._respond(call.tx, 200, a.local_tag, dialog=True, body=a.our_sdp(self.sip_addr))
        log.info("call %d %s -> %s answered (%s)", call.n, call.src, call.dst, a.codec)

    def _start_recording(self, call: Call) -> None:
        """One mono WAV per direction: what the caller said and what the callee said."""
        from services.media.wavfile import WavWriter
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(call.start))
        day = self.recordings_dir / stamp[:8]
        day.mkdir(parents=True, exist_ok=True)
        for leg, who in ((call.a, "caller"), (call.b, "callee")):
            path = day / f"{stamp}-{call.src}-{call.dst}-{call.n}-{who}.wav"
            leg.rtp.record_to(WavWriter(path))
            call.recordings.append(str(path))
        log.info("call %d: recording to %s", call.n, ", ".join(call.recordings))

    def _send_ack(self, call: Call, leg: Leg, cseq: int) -> None:
        self.endpoint.send_stateless(self._in_dialog(leg, "ACK", cseq=cseq))

    def _on_stray_2xx(self, resp: SipResponse) -> None:
        found = self.legs.get(resp.headers.get_first("call-id"))
        if found and found[1].side == "b" and found[1].confirmed:
            self._send_ack(found[0], found[1], int(resp.headers.get_first("cseq").split()[0]))

    def _on_ack_timeout(self, tx: ServerTransaction) -> None:
        found = self.legs.get(tx.request.headers.get_first("call-id"))
        if found is not None and found[0].end is None:
            call = found[0]
            log.warning("call %d %s -> %s: caller never ACKed our 200: hanging up", call.n, call.src,
                        call.dst)
            call.hangup_by = "no ack"
            self._spawn(self._hangup_all(call, "no ack"))

    def _ack_non_2xx(self, call: Call, resp: SipResponse) -> None:
        inv = call.b_invite
        h = CaseInsensitiveDict()
        h.append("Via", inv.headers.get_first("via"))
        h.append("Max-Forwards", "70")
        h.append("From", inv.headers.get_first("from"))
        h.append("To", resp.headers.get_first("to"))
        h.append("Call-ID", inv.headers.get_first("call-id"))
        h.append("CSeq", "1 ACK")
        self.endpoint.send_stateless(SipRequest(headers=h, method="ACK", uri=inv.uri))

    def _cancel_b(self, call: Call) -> None:
        inv = call.b_invite
        if inv is None or call.b_tx is None or call.b_tx.final.done():
            return
        if not call.b_provisional:
            return  # section 9.1: CANCEL only after a provisional; _on_b_provisional sends it then
        h = CaseInsensitiveDict()
        h.append("Via", inv.headers.get_first("via"))
        h.append("Max-Forwards", "70")
        for name in ("From", "To", "Call-ID"):
            h.append(name, inv.headers.get_first(name))
        h.append("CSeq", "1 CANCEL")
        self.endpoint.request(SipRequest(headers=h, method="CANCEL", uri=inv.uri))

    # --- failures the caller hears ----------------------------------------------------------------
    async def _announce_then_fail(self, call: Call, code: int, disposition: Disposition, cause: str,
                                  prompt: str | None = None, tone_name: str | None = None) -> None:
        seconds = self.settings.busy_tone_seconds
        a = call.a
        if seconds > 0 and a.rtp is not None and a.rtp.remote is not None:
            call.state = "announcing"
            self._respond(call.tx, 183, a.local_tag, dialog=True, body=a.our_sdp(self.sip_addr))
            if prompt and self.prompts is not None:
                pcm = self.prompts(prompt)
                player = Player(pcm=pcm, seconds=max(seconds, len(pcm) / 16000))
            else:
                gen = ToneGenerator(tone(self.settings.country, tone_name or "congestion"))
                player = Player(tone=gen, seconds=seconds)
            await self.media.play(a.rtp, player).done
        if call.cancelled or call.state == "ended":
            return
        self._final_to_a(call, code, disposition, cause)
        await self._hangup_all(call, "")

    def _final_to_a(self, call: Call, code: int, disposition: Disposition, cause: str,
                    reason: str = "", extra=()) -> None:
        if call.state == "ended":
            return
        self._respond(call.tx, code, call.a.local_tag or new_tag(),
                      reason=reason, extra=extra)
        call.disposition = disposition
        call.cause = cause
        call.state = "ended"

    # --- in-dialog events --------------------------------------------------------------------------
    def _on_cancel(self, req: SipRequest, tx: ServerTransaction) -> None:
        inv_tx = self.endpoint.invite_for_cancel(req)
        call = self.calls.get(req.headers.get_first("call-id"))
        if inv_tx is None or call is None or call.tx is not inv_tx:
            self._respond(tx, 481)
            return
        self._respond(tx, 200)
        if call.state in ("answered", "ended"):
            return
        call.cancelled = True
        call.hangup_by = "caller"
        log.info("call %d %s -> %s cancelled by the caller", call.n, call.src, call.dst)
        self._final_to_a(call, 487, Disposition.CANCELLED, "caller cancelled")
        if call.a.rtp is not None:
            self.media.stop(call.a.rtp)
        self._cancel_b(call)
        if call.b is None:
            self._spawn(self._hangup_all(call, ""))

    def _on_ack(self, call: Call, leg: Leg, req: SipRequest) -> None:
        if leg.side == "a":
            self.endpoint.ack_received(call.tx if call.tx.last and call.tx.last.startswith(b"SIP/2.0 2")
                                       else None)
        if leg.reinvite_tx is not None:
            self.endpoint.ack_received(leg.reinvite_tx)
            leg.reinvite_tx = None

    async def _on_bye(self, call: Call, leg: Leg) -> None:
        if call.state == "ended" and call.end is not None:
            return
        call.hangup_by = "caller" if leg.side == "a" else "callee"
        log.info("call %d %s -> %s hung up by the %s", call.n, call.src, call.dst, call.hangup_by)
        leg.confirmed = False
        if call.state != "answered":
            # BYE before our final answer on leg a cannot happen; on leg b during setup: treat as gone
            call.cancelled = True
        call.state = "ended"
        await self._hangup_all(call, call.hangup_by)

    async def _on_reinvite(self, call: Call, leg: Leg, req: SipRequest, tx: ServerTransaction) -> None:
        other = call.b if leg.side == "a" else call.a
        if call.state != "answered" or other is None or not other.confirmed:
            self._respond(tx, 491 if call.state != "ended" else 481)
            return
        if leg.reinvite_pending or other.reinvite_pending:
            self._respond(tx, 491)
            return
        direction = None
        if req.body:
            try:
                offer = sdp.parse(req.body)
                if self._is_us(offer.address):
                    raise sdp.SdpError("media address is the PBX itself")
            except sdp.SdpError as exc:
                log.info("call %d: %s re-INVITE refused: %s", call.n, leg.side, exc)
                self._respond(tx, 488, reason=f"Not Acceptable Here ({exc})")
                return
            if offer.address is not None:
                leg.rtp.set_remote(offer.address, leg.sources)
            direction = offer.direction
        leg.reinvite_pending = True
        try:
            out = self._in_dialog(other, "INVITE", other.our_sdp(self.sip_addr, direction or "sendrecv"))
            resp = await self.endpoint.request(out).final
            if 200 <= resp.status_code < 300:
                self._send_ack(call, other, int(out.headers.get_first("cseq").split()[0]))
                answer_dir = "sendrecv"
                if resp.body:
                    try:
                        ans = sdp.parse(resp.body)
                        if ans.address is not None and not self._is_us(ans.address):
                            other.rtp.set_remote(ans.address, other.sources)
                        answer_dir = ans.direction
                    except sdp.SdpError:
                        pass
                leg.direction = answer_dir
                leg.reinvite_tx = tx
                self._respond(tx, 200, body=leg.our_sdp(self.sip_addr, answer_dir), dialog=True)
                log.info("call %d: %s re-INVITE passed through (%s)", call.n, leg.side,
                         direction or "no sdp")
            else:
                self._respond(tx, resp.status_code, reason=resp.reason_phrase)
        finally:
            leg.reinvite_pending = False

    def _on_dtmf(self, call: Call, side: str, digit: str) -> None:
        call.dtmf += digit
        log.info("call %d: DTMF %s from %s", call.n, digit, call.src if side == "a" else call.dst)

    # --- teardown -------------------------------------------------------------------------------------
    async def _bye(self, leg: Leg) -> None:
        if not leg.confirmed:
            return
        leg.confirmed = False
        try:
            resp = await asyncio.wait_for(self.endpoint.request(self._in_dialog(leg, "BYE")).final, 40)
            if resp.status_code >= 300:
                log.info("BYE on %s answered %d", leg.call_id, resp.status_code)
        except asyncio.TimeoutError:
            log.warning("BYE on %s got no answer", leg.call_id)

    async def _hangup_all(self, call: Call, by: str) -> None:
        if call.end is not None:
            return
        call.end = time.time()
        if call.state == "ringing":
            call.cancelled = True
        if call.no_answer is not None:
            call.no_answer.cancel()
        if call.b is not None and call.b_tx is not None and not call.b_tx.final.done():
            self._cancel_b(call)
        if call.disposition is None:
            call.disposition = Disposition.ANSWERED if call.answer else Disposition.FAILED
        call.state = "ended"
        byes = [self._bye(leg) for leg in (call.a, call.b) if leg is not None and leg.confirmed]
        for leg in (call.a, call.b):
            if leg is not None and leg.rtp is not None:
                self.media.close_leg(leg.rtp)
        self.calls.pop(call.a.call_id, None)
        self.completed += 1
        try:
            self._write_cdr(call)
        except Exception:
            # a record that cannot be written must not keep the BYEs from going out (issue 7)
            log.exception("call %d %s -> %s: no CDR written", call.n, call.src, call.dst)
        if byes:
            await asyncio.gather(*byes, return_exceptions=True)
        # keep the leg map a little so late retransmissions find their dialog
        self.loop.call_later(LINGER, self._forget, call)

    def _forget(self, call: Call) -> None:
        self.legs.pop(call.a.call_id, None)
        if call.b is not None:
            self.legs.pop(call.b.call_id, None)

    def _write_cdr(self, call: Call) -> None:
        legs = [{"leg": "a", "peer": call.src, "call_id": call.a.call_id, "codec": call.a.codec,
                 "hangup_by": call.hangup_by}]
        if call.b is not None:
            legs.append({"leg": "b", "peer": call.dst, "call_id": call.b.call_id, "codec": call.b.codec,
                         "final": call.final_b})
        if call.dtmf:
            legs[0]["dtmf"] = call.dtmf
        for leg, path in zip(legs, call.recordings):
            leg["recording"] = path
        rec = CallRecord(call_id=cdr_text(call.a.call_id), src=cdr_text(call.src, "anonymous"),
                         dst=cdr_text(call.dst, "(none)"), start=call.start,
                         answer=call.answer, end=call.end, disposition=call.disposition, legs=legs,
                         cause=call.cause or (f"hangup by {call.hangup_by}" if call.hangup_by else ""))
        self.cdr_sink(rec)
