"""Channels: one SIP dialog with its RTP leg, the unit every call flow works with (decision 010).

A channel is inbound (a phone or trunk called us: we answer its INVITE) or outbound (we called a
phone or a trunk). Flows drive it with primitives (ring, progress, answer, play, collect, hangup)
and learn what happens from its futures: `gone` resolves when the channel has ended, `final` (an
outbound channel) with the far end's final answer. Bridges join channels' media. Everything SIP
about one dialog (tags, CSeq, route set, re-INVITEs, hold, INFO digits) stays in this module.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from typing import TYPE_CHECKING

from aiosipua import SipRequest, SipResponse
from aiosipua.headers import CaseInsensitiveDict

from . import sdp
from .media import Player, RtpLeg
from .session import CHANNELS
from .sip import TIMER_B, ServerTransaction, make_response, new_tag, uri_of, user_of

if TYPE_CHECKING:
    from .b2bua import CallService
    from .session import Session

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, NOTIFY"
USER_AGENT = "OfficePBX"
HOLD_DIRECTIONS = ("sendonly", "inactive")
TRYING_AFTER = 0.2   # s: a 100 Trying only for an INVITE still unanswered by then
# Losing legs of a dial are cancelled with this (RFC 3326): phones then log no missed call.
COMPLETED_ELSEWHERE = 'SIP;cause=200;text="Call completed elsewhere"'


def phone_addresses(msg, *, vias: bool) -> frozenset[str]:
    """IPv4 addresses the signalling says the phone on a channel sends from (strict RTP sources).

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


def dtmf_from_info(req: SipRequest) -> str | None:
    """The digit of a SIP INFO (application/dtmf-relay `Signal=5`, or application/dtmf `5`)."""
    ctype = (req.headers.get_first("content-type") or "").split(";")[0].strip().lower()
    body = req.body.decode("ascii", "replace").strip() if req.body else ""
    value = ""
    if ctype == "application/dtmf-relay":
        for line in body.splitlines():
            name, _, v = line.partition("=")
            if name.strip().lower() == "signal":
                value = v.strip()
    elif ctype == "application/dtmf":
        value = body
    if len(value) == 1 and value.upper() in "0123456789*#ABCD":
        return value.upper()
    return None


class Channel:
    """One SIP dialog (and its RTP leg) that a flow owns or a bridge holds."""

    ids = itertools.count(1)

    def __init__(self, svc: "CallService", session: "Session", call_id: str, inbound: bool):
        CHANNELS.born()
        self.svc = svc
        self.session = session           # the call this channel was born for
        self.sessions = [session]        # every call whose log it is in (a pickup, a transfer)
        self.cel: dict = {}              # its chan_start data (firmware/cel.py)
        self.n = next(Channel.ids)
        self.call_id = call_id
        self.inbound = inbound
        self.local = ""              # our From/To header value, with our tag
        self.remote = ""             # theirs, with their tag once known
        self.target = ""             # their Contact URI
        self.routes: list[str] = []
        self.local_cseq = 0
        self.local_tag = new_tag()
        self.rtp: RtpLeg | None = None
        self.offer: sdp.MediaOffer | None = None  # what the phone offered (inbound) or answered
        self.codec = "PCMU"
        self.dtmf_pt: int | None = None
        self.sdp_id = secrets.randbits(31)
        self.sdp_version = 0
        self.state = "down"          # down, ringing, early, up, gone
        self.held = False            # the phone put the call on hold (sendonly / inactive)
        self.confirmed = False       # a dialog exists: a BYE may be sent
        self.sources: frozenset[str] = frozenset()
        self.number = ""             # the far end's number (caller ID, or what we dialled)
        self.name = ""
        self.answered_at: float | None = None
        self.hangup_by = ""          # "remote" when the far end ended it
        self.cause = ""
        self.gone: asyncio.Future[str] = svc.loop.create_future()
        self.digits: asyncio.Queue[str] = asyncio.Queue()
        self.dtmf_log = ""
        self.bridge = None           # the Bridge this channel is in, if any
        self.on_hold_change = None   # callable(channel) set by the bridge
        # inbound: the INVITE we answer; outbound: the INVITE we sent
        self.invite: SipRequest | None = None
        self.tx: ServerTransaction | None = None
        self.client_tx = None
        self.provisional = False
        self.cancel_reason = ""
        self.final_status = 0
        self.on_ringing = None       # callable(channel), outbound
        self.on_progress = None      # callable(channel), outbound: 183 with SDP (early media)
        self.reinvite_tx: ServerTransaction | None = None
        self.ack: SipRequest | None = None      # the ACK of our INVITE's 2xx, sent again as it was
        self.credentials: tuple[str, str] | None = None  # (user, password) for a provider's challenge
        self.trunk = ""              # the trunk this outbound channel goes out on

    def __repr__(self) -> str:
        return f"<Channel {self.n} {'in' if self.inbound else 'out'} {self.number} {self.state}>"

    def __del__(self):
        CHANNELS.died()

    @property
    def is_gone(self) -> bool:
        return self.gone.done()

    # --- SIP plumbing ----------------------------------------------------------------------------
    def _respond(self, tx: ServerTransaction, code: int, *, body: bytes = b"", dialog: bool = False,
                 reason: str = "", extra=()) -> None:
        headers = list(extra)
        if dialog:
            for rr in tx.request.headers.get("record-route"):
                headers.append(("Record-Route", rr))
            headers.append(("Contact", self.svc.contact))
        if code >= 200 or dialog:
            headers.append(("Allow", ALLOW))
        headers.append(("Server", USER_AGENT))
        tag = self.local_tag if tx is self.tx else ""
        self.svc.endpoint.respond(tx, make_response(tx.request, code, tag, reason=reason, extra=headers,
                                                    body=body))

    def in_dialog(self, method: str, body: bytes = b"", cseq: int | None = None,
                  extra=()) -> SipRequest:
        h = CaseInsensitiveDict()
        h.append("Via", self.svc.via())
        for r in self.routes:
            h.append("Route", r)
        h.append("Max-Forwards", "70")
        h.append("From", self.local)
        h.append("To", self.remote)
        h.append("Call-ID", self.call_id)
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        h.append("CSeq", f"{cseq} {method}")
        if method in ("INVITE", "UPDATE"):
            h.append("Contact", self.svc.contact)
        for name, value in extra:
            h.append(name, value)
        h.append("User-Agent", USER_AGENT)
        if body:
            h.append("Content-Type", "application/sdp")
        return SipRequest(headers=h, body=body, method=method, uri=self.target)

    def our_sdp(self, direction: str = "sendrecv") -> bytes:
        self.sdp_version += 1
        return sdp.build(self.svc.sip_addr, self.rtp.port, [self.codec], self.dtmf_pt, direction,
                         self.sdp_id, self.sdp_version)

    def _media_from(self, offer: sdp.MediaOffer) -> None:
        """Point the RTP leg at what the phone's SDP says (validated: never at the PBX itself)."""
        if self.svc.is_us(offer.address):
            raise sdp.SdpError("media address is the PBX itself")
        self.rtp.set_remote(offer.address, self.sources)

    def _on_dtmf(self, digit: str) -> None:
        self.dtmf_log += digit
        self.digits.put_nowait(digit)
        self.log("dtmf", digit=digit)
        log.info("call %s: DTMF %s from %s", self.session.n, digit, self.number)
        if self.bridge is not None:
            self.bridge.on_dtmf(self, digit)

    def log(self, what: str, /, **data) -> None:
        """An event of this channel, in the log of every call it is part of."""
        for session in self.sessions:
            session.event(what, self, **data)

    def _set_codec(self, codec: str, dtmf_pt: int | None) -> None:
        self.codec, self.dtmf_pt = codec, dtmf_pt
        self.rtp.set_codec(codec, dtmf_pt)
        self.rtp.watch_dtmf(dtmf_pt, self._on_dtmf)

    # --- inbound: the phone called us --------------------------------------------------------------
    @classmethod
    def from_invite(cls, svc, session, invite: SipRequest, tx: ServerTransaction) -> "Channel":
        ch = cls(svc, session, invite.headers.get_first("call-id"), inbound=True)
        ch.invite, ch.tx = invite, tx
        ch.local = f"{invite.headers.get_first('to')};tag={ch.local_tag}"
        ch.remote = invite.headers.get_first("from")
        ch.target = uri_of(invite.headers.get_first("contact") or invite.headers.get_first("from"))
        ch.routes = list(invite.headers.get("record-route"))
        ch.number = user_of(ch.remote)
        caller = ch.remote
        ch.name = caller.split("<", 1)[0].strip().strip('"') if "<" in caller else ""
        ch.sources = phone_addresses(invite, vias=True)
        return ch

    async def accept_offer(self) -> None:
        """Read the caller's SDP and open our RTP leg (raises sdp.SdpError for an unusable offer)."""
        self.svc.loop.call_later(TRYING_AFTER, self._trying)
        offer = sdp.parse(self.invite.body)
        if not offer.codecs:
            raise sdp.SdpError("no G.711 codec offered")
        if self.svc.is_us(offer.address):
            raise sdp.SdpError("media address is the PBX itself")
        self.offer = offer
        self.rtp = await self.svc.media.open_leg()
        if self.is_gone:  # the caller cancelled while the socket opened
            self.svc.media.close_leg(self.rtp)
            return
        self.rtp.set_remote(offer.address, self.sources)
        self._set_codec(offer.codecs[0][0], offer.dtmf_pt)

    def _trying(self) -> None:
        """100 Trying when nothing else answered the INVITE yet (RFC 3261 8.2.6.1: after 200 ms). The
        edge has sent its own 100 to the phone; ours only stops the edge resending the INVITE (at
        500 ms). Most calls ring within a few ms: one datagram less per call at both ends."""
        if self.tx.last is None:
            self.svc.endpoint.respond(self.tx, make_response(self.tx.request, 100))

    def prefer_codec(self, codec: str) -> None:
        """Answer with codec if the caller offered it (a bridge then relays without transcoding)."""
        if self.state in ("down", "ringing") and self.offer is not None and any(
                name == codec for name, _ in self.offer.codecs):
            self._set_codec(codec, self.dtmf_pt)

    def ring(self) -> None:
        if self.inbound and self.state == "down":
            self._respond(self.tx, 180, dialog=True)
            self.state = "ringing"

    def progress(self) -> None:
        """183 with our SDP: the caller hears what we play (or bridge) before any answer."""
        if self.inbound and self.state in ("down", "ringing"):
            self._respond(self.tx, 183, dialog=True, body=self.our_sdp())
            self.state = "early"

    def answer(self) -> None:
        if not self.inbound or self.state in ("up", "gone"):
            return
        self.state = "up"
        self.confirmed = True
        self.answered_at = time.time()
        self._respond(self.tx, 200, dialog=True, body=self.our_sdp())
        self.log("answer")

    def reject(self, code: int, reason: str = "", extra=()) -> None:
        """A final error answer to the caller's INVITE; the channel is gone."""
        if self.inbound and self.state not in ("up", "gone"):
            self._respond(self.tx, code, reason=reason, extra=extra)
            self.final_status = code
            self._end(f"{code}")

    # --- outbound: we call a phone or a trunk ----------------------------------------------------
    @classmethod
    async def originate(cls, svc, session, uri: str, *, number: str, caller_number: str,
                        caller_name: str = "", codecs=("PCMU", "PCMA"), dtmf_pt: int | None = 101,
                        headers=(), cel=None) -> "Channel":
        """Open an RTP leg and send an INVITE to uri (through the edge); does not wait."""
        ch = cls(svc, session, secrets.token_hex(12) + "@pbx", inbound=False)
        ch.number = number
        ch.rtp = await svc.media.open_leg()
        ch.codec, ch.dtmf_pt = codecs[0], dtmf_pt
        ch.rtp.set_codec(ch.codec, dtmf_pt)
        edge = f"{svc.edge[0]}:{svc.edge[1]}"
        display = caller_name.replace('"', "").replace("\\", "")
        shown = f'"{display}" ' if display else ""
        ch.local = f"{shown}<sip:{caller_number}@{edge}>;tag={ch.local_tag}"
        ch.remote = f"<{uri}>"
        ch.target = uri
        ch.local_cseq = 1
        body = sdp.build(svc.sip_addr, ch.rtp.port, list(dict.fromkeys(codecs)), dtmf_pt, "sendrecv",
                         ch.sdp_id, 1)
        h = CaseInsensitiveDict()
        h.append("Via", svc.via())
        h.append("Max-Forwards", "70")
        h.append("From", ch.local)
        h.append("To", ch.remote)
        h.append("Call-ID", ch.call_id)
        h.append("CSeq", "1 INVITE")
        h.append("Contact", svc.contact)
        h.append("Allow", ALLOW)
        for name, value in headers:
            h.append(name, value)
        h.append("User-Agent", USER_AGENT)
        h.append("Content-Type", "application/sdp")
        ch.invite = SipRequest(headers=h, body=body, method="INVITE", uri=uri)
        svc.register_channel(ch)
        ch.state = "ringing"
        ch.client_tx = svc.endpoint.request(ch.invite, ch._on_provisional)
        session.start_channel(ch, number=number, direction="out", call_id=ch.call_id, **(cel or {}))
        return ch

    def _on_provisional(self, resp: SipResponse) -> None:
        self.provisional = True
        if self.cancel_reason:
            self._send_cancel()
            return
        if resp.status_code == 183 and resp.body and self.state != "early":
            try:
                offer = sdp.parse(resp.body)
                self.remote = resp.headers.get_first("to")
                self.sources = phone_addresses(resp, vias=False)
                self._media_from(offer)
                self._set_codec(offer.codecs[0][0] if offer.codecs else self.codec, offer.dtmf_pt)
                self.state = "early"
                if self.on_progress is not None:
                    self.on_progress(self)
                return
            except sdp.SdpError as exc:
                log.info("call %s: early media from %s ignored: %s", self.session.n, self.number, exc)
        if resp.status_code in (180, 183) and self.on_ringing is not None:
            self.on_ringing(self)

    async def wait_answer(self) -> int:
        """The far end's final status; on 2xx the dialog is confirmed and media set up."""
        resp = await self.client_tx.final
        if resp.status_code in (401, 407) and self.credentials is not None and not self.cancel_reason:
            resp = await self._authenticate(resp)
        self.final_status = resp.status_code
        if not 200 <= resp.status_code < 300:
            self._ack_non_2xx(resp)
            self._end(f"{resp.status_code} {resp.reason_phrase}")
            return resp.status_code
        self.remote = resp.headers.get_first("to")
        self.target = uri_of(resp.headers.get_first("contact") or self.target)
        self.routes = list(reversed(resp.headers.get("record-route")))
        self.confirmed = True
        self.ack = self.in_dialog("ACK", cseq=1)
        self.svc.endpoint.send_stateless(self.ack)
        if self.is_gone or self.cancel_reason:
            # the caller left (or another target won) just as this one answered
            await self.hangup(self.cancel_reason and "completed elsewhere" or "caller gone")
            return 487
        try:
            answer = sdp.parse(resp.body)
            self.sources = phone_addresses(resp, vias=False)
            self._media_from(answer)
        except sdp.SdpError as exc:
            log.warning("call %s: %s answered with bad SDP (%s)", self.session.n, self.number, exc)
            await self.hangup("bad sdp")
            self.final_status = 488
            return 488
        self._set_codec(answer.codecs[0][0] if answer.codecs else self.codec,
                        answer.dtmf_pt if self.dtmf_pt is not None else None)
        self.state = "up"
        self.answered_at = time.time()
        self.log("answer")
        return resp.status_code

    async def _authenticate(self, challenge: SipResponse) -> SipResponse:
        """A provider challenged our INVITE: ACK it, send it again with the trunk's credentials."""
        from .digest import authorization
        self._ack_non_2xx(challenge)
        header = "WWW-Authenticate" if challenge.status_code == 401 else "Proxy-Authenticate"
        answer = "Authorization" if challenge.status_code == 401 else "Proxy-Authorization"
        try:
            value = authorization(challenge.headers.get_first(header) or "", "INVITE", self.invite.uri,
                                  *self.credentials)
        except (ValueError, KeyError) as exc:
            log.warning("call %s: trunk %s challenge not answerable: %s", self.session.n, self.trunk, exc)
            return challenge
        self.credentials = None  # one try: a second challenge means wrong credentials
        new = CaseInsensitiveDict()
        new.append("Via", self.svc.via())
        for name, values in self.invite.headers.items():
            if name.lower() in ("via", "cseq", "authorization", "proxy-authorization"):
                continue
            for v in values:
                new.append(name, v)
        self.local_cseq = 2
        new.append("CSeq", "2 INVITE")
        new.append(answer, value)
        self.invite = SipRequest(headers=new, body=self.invite.body, method="INVITE", uri=self.invite.uri)
        self.provisional = False
        self.client_tx = self.svc.endpoint.request(self.invite, self._on_provisional)
        return await self.client_tx.final

    def cancel(self, reason: str = "") -> None:
        """Stop ringing (CANCEL once a provisional came, RFC 3261 9.1); reason e.g. COMPLETED_ELSEWHERE."""
        if self.inbound or self.state not in ("ringing", "early"):
            return
        self.cancel_reason = reason or "cancelled"
        # the INVITE transaction must still end if the phone never answers our CANCEL with 487
        self.client_tx.deadline = self.svc.loop.time() + TIMER_B
        if self.provisional and not self.client_tx.final.done():
            self._send_cancel()

    def _send_cancel(self) -> None:
        inv = self.invite
        h = CaseInsensitiveDict()
        h.append("Via", inv.headers.get_first("via"))
        h.append("Max-Forwards", "70")
        for name in ("From", "To", "Call-ID"):
            h.append(name, inv.headers.get_first(name))
        h.append("CSeq", "1 CANCEL")
        if self.cancel_reason.startswith("SIP;"):
            h.append("Reason", self.cancel_reason)
        self.svc.endpoint.request(SipRequest(headers=h, method="CANCEL", uri=inv.uri))

    def _ack_non_2xx(self, resp: SipResponse) -> None:
        inv = self.invite
        h = CaseInsensitiveDict()
        h.append("Via", inv.headers.get_first("via"))
        h.append("Max-Forwards", "70")
        h.append("From", inv.headers.get_first("from"))
        h.append("To", resp.headers.get_first("to"))
        h.append("Call-ID", inv.headers.get_first("call-id"))
        h.append("CSeq", "1 ACK")
        self.svc.endpoint.send_stateless(SipRequest(headers=h, method="ACK", uri=inv.uri))

    def resend_ack(self, cseq: int) -> None:
        """A retransmitted 2xx: the ACK again, byte for byte (RFC 3261 13.2.2.4). A fresh one, with a
        new Via branch, is a new request to the phone: SIPp aborts the call on it ("expected BYE, got
        ACK"), as it did at 300 setups/s when an ACK took longer than the callee's 500 ms timer."""
        if not self.inbound and self.confirmed:
            ack = self.ack if self.ack is not None and cseq == 1 else self.in_dialog("ACK", cseq=cseq)
            self.svc.endpoint.send_stateless(ack)

    # --- media primitives ----------------------------------------------------------------------------
    async def play(self, player: Player, stop_on_digits: str = "") -> str | None:
        """Play to the phone until the player ends, the channel goes, or a digit in stop_on_digits."""
        if self.rtp is None or self.is_gone:
            return None
        self.svc.media.play(self.rtp, player)
        waiters = {asyncio.ensure_future(asyncio.shield(player.done)), asyncio.ensure_future(asyncio.shield(self.gone))}
        digit_task = asyncio.ensure_future(self._digit_in(stop_on_digits)) if stop_on_digits else None
        if digit_task is not None:
            waiters.add(digit_task)
        done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        self.svc.media.stop(self.rtp)
        if digit_task is not None and digit_task in done:
            return digit_task.result()
        return None

    async def record(self, path, max_s: float = 120.0, silence_s: float | None = None,
                     stop_on_digits: str = "#") -> str | None:
        """Record what the phone says to a WAV file until max_s, silence_s of quiet (after some
        speech), a digit in stop_on_digits or the hang-up; returns the digit that ended it, if any."""
        from services.media.wavfile import WavWriter
        if self.rtp is None or self.is_gone:
            return None
        take = _Take(WavWriter(path), self.svc.loop)
        self.rtp.record_to(take)
        waiters = {asyncio.ensure_future(asyncio.shield(self.gone)), asyncio.ensure_future(asyncio.sleep(max_s))}
        digit_task = asyncio.ensure_future(self._digit_in(stop_on_digits)) if stop_on_digits else None
        if digit_task is not None:
            waiters.add(digit_task)
        if silence_s:
            waiters.add(asyncio.ensure_future(take.quiet_for(silence_s)))
        try:
            done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            return digit_task.result() if digit_task is not None and digit_task in done else None
        finally:
            if self.rtp is not None:
                self.rtp.record_to(None)
            take.close()

    async def _digit_in(self, allowed: str) -> str:
        while True:
            digit = await self.digits.get()
            if digit in allowed:
                return digit

    async def collect(self, max_digits: int, timeout: float = 5.0, inter_digit: float = 3.0,
                      terminator: str = "#") -> str:
        """Collect up to max_digits; the first waits timeout, each next inter_digit; ends on terminator."""
        got = ""
        wait = timeout
        while len(got) < max_digits and not self.is_gone:
            try:
                digit = await asyncio.wait_for(self.digits.get(), wait)
            except asyncio.TimeoutError:
                break
            if digit == terminator:
                break
            got += digit
            wait = inter_digit
        return got

    # --- in-dialog requests ----------------------------------------------------------------------------
    def on_request(self, req: SipRequest, tx: ServerTransaction | None) -> None:
        method = req.method.upper()
        if method == "ACK":
            if self.inbound:
                self.svc.endpoint.ack_received(self.tx if self.tx.last and self.tx.last.startswith(b"SIP/2.0 2")
                                               else None)
            if self.reinvite_tx is not None:
                self.svc.endpoint.ack_received(self.reinvite_tx)
                self.reinvite_tx = None
        elif method == "BYE":
            self._respond(tx, 200)
            if not self.is_gone:
                log.info("call %s: %s hung up", self.session.n, self.number)
                self.hangup_by = "remote"
                self.confirmed = False
                self._end("bye")
        elif method in ("INVITE", "UPDATE"):
            self._on_offer(req, tx, method)
        elif method == "INFO":
            digit = dtmf_from_info(req)
            self._respond(tx, 200)
            if digit is not None:
                self._on_dtmf(digit)
                if self.bridge is not None:
                    self.bridge.relay_digit(self, digit)
        elif method == "REFER":
            self.svc.on_refer(self, req, tx)
        elif method in ("OPTIONS", "NOTIFY"):
            self._respond(tx, 200)
        else:
            self._respond(tx, 501)

    def _on_offer(self, req: SipRequest, tx: ServerTransaction, method: str) -> None:
        """A re-INVITE or UPDATE from the phone: we answer it ourselves (media is anchored here).

        Hold (sendonly / inactive) is answered recvonly / inactive and the bridge plays music to
        the other party; a new address or codec just moves this leg; nothing is passed on.
        """
        if self.state != "up" or self.rtp is None:
            self._respond(tx, 491 if not self.is_gone else 481)
            return
        if not req.body:
            # an offerless re-INVITE: we offer in the 200 and take the answer from the ACK
            self._respond(tx, 200, dialog=True, body=self.our_sdp())
            if method == "INVITE":
                self.reinvite_tx = tx
            return
        try:
            offer = sdp.parse(req.body)
            if not offer.codecs:
                raise sdp.SdpError("no G.711 codec offered")
            if offer.address is not None:
                self._media_from(offer)
        except sdp.SdpError as exc:
            log.info("call %s: %s re-offer refused: %s", self.session.n, self.number, exc)
            self._respond(tx, 488, reason=f"Not Acceptable Here ({exc})")
            return
        codec = self.codec if any(c == self.codec for c, _ in offer.codecs) else offer.codecs[0][0]
        self._set_codec(codec, offer.dtmf_pt if offer.dtmf_pt is not None else self.dtmf_pt)
        held = offer.direction in HOLD_DIRECTIONS or offer.address is None
        direction = sdp.answer_direction(offer.direction) if held else "sendrecv"
        if offer.address is None and offer.direction == "sendrecv":
            direction = "inactive"  # c=0.0.0.0: RFC 2543 hold
        self._respond(tx, 200, dialog=True, body=self.our_sdp(direction))
        if method == "INVITE":
            self.reinvite_tx = tx
        if held != self.held:
            self.held = held
            self.log("hold" if held else "unhold")
            log.info("call %s: %s %s", self.session.n, self.number, "holds" if held else "resumes")
            if self.on_hold_change is not None:
                self.on_hold_change(self)

    def on_cancel(self) -> None:
        """The caller cancelled its INVITE before we answered (the service already sent 200/CANCEL)."""
        if self.inbound and self.state not in ("up", "gone"):
            self.hangup_by = "remote"
            self._respond(self.tx, 487)
            self.final_status = 487
            self._end("cancel")

    # --- the end ------------------------------------------------------------------------------------
    def _end(self, cause: str) -> None:
        if self.is_gone:
            return
        self.state = "gone"
        self.cause = cause
        self.gone.set_result(cause)
        # the dial's and the bridge's callbacks are closures over this channel: cycles, dropped now
        self.on_ringing = self.on_progress = self.on_hold_change = None
        if self.bridge is not None:
            self.bridge.remove(self)  # its on_leave sees this channel gone
        media = {}
        if self.rtp is not None:
            self.svc.media.close_leg(self.rtp)
            # what the phone sent: packets through our socket plus those the kernel forwarded
            media = {"rtp_in": self.rtp.packets_in, "rtp_kernel": self.rtp.kernel_rx}
        self.log("hangup", cause=cause, by=self.hangup_by or "pbx", status=self.final_status, **media)
        self.svc.channel_ended(self)
        for session in self.sessions:
            session.channel_gone()

    async def hangup(self, cause: str = "normal", code: int = 480, reason: str = "") -> None:
        """End the channel from our side: BYE when answered, CANCEL while ringing, else a final error."""
        if self.is_gone:
            if self.confirmed:  # ended locally earlier but the BYE is still owed
                await self._bye()
            return
        if not self.inbound and self.state in ("ringing", "early") and not self.confirmed:
            self.cancel(reason or cause)
            self._end(cause)
            return
        if self.inbound and not self.confirmed:
            self.reject(code, reason)
            return
        self._end(cause)
        await self._bye()

    async def _bye(self) -> None:
        if not self.confirmed:
            return
        self.confirmed = False
        if self.is_gone:
            self.svc.retire(self)
        # no timer of our own: the transaction ends with a 408 of its own after TIMER_B (32 s)
        resp = await self.svc.endpoint.request(self.in_dialog("BYE")).final
        if resp.status_code == 408:
            log.warning("BYE on %s got no answer", self.call_id)
        elif resp.status_code >= 300:
            log.info("BYE on %s answered %d", self.call_id, resp.status_code)


class EndedChannel:
    """What stays of an ended channel while it lingers in the service's table (LINGER, 8 s), so that
    late requests naming its Call-ID (a BYE that crossed ours, an ACK, an INFO, a re-INVITE) are
    answered as a gone Channel answers them, without its call.

    Keeping the Channel itself kept its whole call alive for those 8 s: the session and its event
    log, the other party's channel, the RTP leg, the parsed SIP messages, about 200 objects. At 300
    setups/s that was 2,400 ended calls and 470,000 objects, which the cyclic collector walked in
    stalls of 250-500 ms (issue 16). Only a channel that still owes its BYE (`confirmed`) stays whole.
    """

    __slots__ = ("svc", "call_id", "inbound", "tx", "reinvite_tx", "local_tag")
    is_gone = True
    confirmed = False
    state = "gone"
    bridge = None

    def __init__(self, ch: Channel):
        self.svc, self.call_id, self.inbound = ch.svc, ch.call_id, ch.inbound
        self.tx, self.reinvite_tx, self.local_tag = ch.tx, ch.reinvite_tx, ch.local_tag

    def __repr__(self) -> str:
        return f"<EndedChannel {self.call_id}>"

    _respond = Channel._respond

    def on_request(self, req: SipRequest, tx: ServerTransaction | None) -> None:
        method = req.method.upper()
        if method == "ACK":
            if self.inbound and self.tx is not None:
                last = self.tx.last
                self.svc.endpoint.ack_received(self.tx if last and last.startswith(b"SIP/2.0 2") else None)
            if self.reinvite_tx is not None:
                self.svc.endpoint.ack_received(self.reinvite_tx)
                self.reinvite_tx = None
        elif method in ("BYE", "INFO", "OPTIONS", "NOTIFY"):
            self._respond(tx, 200)
        elif method in ("INVITE", "UPDATE"):
            self._respond(tx, 481)
        elif method == "REFER":
            self.svc.on_refer(self, req, tx)     # answered "nothing to transfer", as for a gone Channel
        else:
            self._respond(tx, 501)

    def resend_ack(self, cseq: int) -> None:
        """Nothing: a Channel ACKs a retransmitted 2xx only while `confirmed`, which an ended one is not."""


class _Take:
    """A recording in progress: writes the phone's audio and notices when it has gone quiet."""

    QUIET_RMS = 300.0   # about -40 dBm0: below speech, above a line's idle noise

    def __init__(self, writer, loop):
        self.writer, self.loop = writer, loop
        self.spoke = False
        self.last_loud = loop.time()

    def write(self, pcm: bytes) -> None:
        import numpy as np
        self.writer.write(pcm)
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
        if samples.size and float(np.sqrt(np.mean(samples ** 2))) > self.QUIET_RMS:
            self.spoke, self.last_loud = True, self.loop.time()

    async def quiet_for(self, seconds: float) -> None:
        while not (self.spoke and self.loop.time() - self.last_loud >= seconds):
            await asyncio.sleep(0.1)

    def close(self) -> None:
        self.writer.close()
