"""The line gateway's SIP user agent: one UDP socket toward the Kamailio edge, one account per port.

Like an ATA (decision 007), each port is a SIP phone: it REGISTERs as its account with digest
auth, places calls (INVITE, answering the edge's 407 challenge) and takes calls for its account.
Transactions and retransmissions are the call service's SipEndpoint (services/callsvc/sip.py: a
UDP peer of one stateful proxy); digest answers are aiosipua's. What lives here is the dialog
layer of a phone: From/To tags, route sets, CSeq, ACK, CANCEL and BYE (RFC 3261 sections 12-15).
"""
from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import quote

from aiosipua import SipRequest, SipResponse
from aiosipua.auth import SipDigestAuth, answer_challenge
from aiosipua.headers import CaseInsensitiveDict

from services.callsvc.sip import (ServerTransaction, SipEndpoint, make_response, new_branch, new_tag, tag_of,
                                  uri_of, user_of)

logger = logging.getLogger(__name__)

USER_AGENT = "OfficePBX-LineGateway"
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, NOTIFY"
REGISTER_EXPIRES = 300
REFRESH_FRACTION = 0.8
RETRY_BACKOFF = (2.0, 60.0)        # failed registrations: doubling, capped so a bad secret stays polite
RINGING_LIMIT_S = 300.0            # an INVITE that got a provisional may ring this long (timer C)
_EXPIRES_RE = re.compile(r"expires\s*=\s*(\d+)", re.I)


@dataclass
class Account:
    """A port's SIP identity: the extension number and its digest secret."""
    user: str
    secret: str = field(repr=False)


@dataclass
class Dialog:
    call_id: str
    local: str                       # our From/To header value, with our tag
    remote: str = ""                 # theirs, with their tag once known
    target: str = ""                 # their Contact URI
    routes: list[str] = field(default_factory=list)
    local_cseq: int = 1


class SipCall:
    """One call of one account, either direction. Callbacks run on the UA's event loop:
    on_progress(response) for 1xx, on_bye() when the far end hangs up, on_cancel() when an
    incoming call is withdrawn, on_reinvite(request) for a session change, on_notify(request) for
    an in-dialog NOTIFY (the progress of a REFER we sent)."""

    def __init__(self, ua: "GatewayUA", account: Account, incoming: bool, dialog: Dialog) -> None:
        self.ua = ua
        self.account = account
        self.incoming = incoming
        self.dialog = dialog
        self.state = "early"              # early, confirmed, ended
        self.invite: SipRequest | None = None
        self.invite_tx: ServerTransaction | None = None
        self.reinvite_tx: ServerTransaction | None = None
        self._client_tx = None
        self._provisional = False
        self._cancel_wanted = False
        self.on_progress: Callable[[SipResponse], None] | None = None
        self.on_bye: Callable[[], None] | None = None
        self.on_cancel: Callable[[], None] | None = None
        self.on_reinvite: Callable[[SipRequest], bytes | None] | None = None
        self.on_notify: Callable[[SipRequest], None] | None = None
        self._session_lock = asyncio.Lock()

    @property
    def call_id(self) -> str:
        return self.dialog.call_id

    # --- outgoing ------------------------------------------------------------------------------
    async def dial(self, number: str, sdp_body: bytes, display: str | None = None) -> SipResponse:
        """Send the INVITE (answering one auth challenge); returns the final response. A 2xx is
        ACKed and confirms the dialog; anything else ends the call."""
        ua = self.ua
        uri = f"sip:{number}@{ua.domain}"
        self.dialog.remote = f"<{uri}>"
        self.dialog.target = uri
        shown = f'"{_quote(display)}" ' if display else ""
        self.dialog.local = f"{shown}<sip:{self.account.user}@{ua.domain}>;tag={new_tag()}"
        auth_header = None
        for attempt in range(2):
            invite = ua.request("INVITE", self.dialog, uri, body=sdp_body, cseq=self.dialog.local_cseq,
                                extra=[auth_header] if auth_header else [])
            self.invite = invite
            self._provisional = False
            tx = ua.endpoint.request(invite, self._on_provisional)
            self._client_tx = tx
            resp = await tx.final
            if 200 <= resp.status_code < 300:
                self._confirm(resp)
                return resp
            ua.ack_non_2xx(invite, resp)
            if resp.status_code in (401, 407) and attempt == 0 and not self._cancel_wanted:
                auth_header = answer_challenge(SipDigestAuth(self.account.user, self.account.secret), resp,
                                               resp.status_code, "INVITE", uri)
                if auth_header is not None:
                    self.dialog.local_cseq += 1
                    continue
            break
        self.state = "ended"
        ua.forget(self)
        return resp

    def _on_provisional(self, resp: SipResponse) -> None:
        self._provisional = True
        tx = self._client_tx
        if tx is not None:
            # The edge's 64*T1 would end a ringing call after 32 s; the call service owns no-answer.
            tx.deadline = self.ua.loop.time() + RINGING_LIMIT_S
        if self._cancel_wanted:
            self._send_cancel()
            return
        if self.on_progress is not None and resp.status_code > 100:
            self.on_progress(resp)

    def _confirm(self, resp: SipResponse) -> None:
        d = self.dialog
        d.remote = resp.headers.get_first("to")
        d.target = uri_of(resp.headers.get_first("contact") or d.target)
        d.routes = list(reversed(resp.headers.get("record-route")))
        self.state = "confirmed"
        self.ua.send_ack(self, int(resp.headers.get_first("cseq").split()[0]))
        if self._cancel_wanted:
            # The phone hung up while the far end answered: end it properly.
            asyncio.ensure_future(self.hangup())

    def cancel(self) -> None:
        """Withdraw an outgoing call that is not answered yet (CANCEL needs a provisional first)."""
        if self.incoming or self.state != "early":
            return
        self._cancel_wanted = True
        if self._provisional:
            self._send_cancel()

    def _send_cancel(self) -> None:
        invite = self.invite
        if invite is None or self._client_tx is None or self._client_tx.final.done():
            return
        h = CaseInsensitiveDict()
        h.append("Via", invite.headers.get_first("via"))
        h.append("Max-Forwards", "70")
        for name in ("From", "To", "Call-ID"):
            h.append(name, invite.headers.get_first(name))
        h.append("CSeq", f"{invite.headers.get_first('cseq').split()[0]} CANCEL")
        h.append("User-Agent", USER_AGENT)
        self.ua.endpoint.request(SipRequest(headers=h, method="CANCEL", uri=invite.uri))

    # --- incoming ------------------------------------------------------------------------------
    def ringing(self) -> None:
        if self.state == "early" and self.invite_tx is not None:
            self.ua.respond(self.invite_tx, 180, self, dialog=True)

    def progress(self, sdp_body: bytes) -> None:
        """183 Session Progress with our SDP: the caller hears our audio before the answer."""
        if self.state == "early" and self.invite_tx is not None:
            self.ua.respond(self.invite_tx, 183, self, dialog=True, body=sdp_body)

    def answer(self, sdp_body: bytes) -> None:
        if self.state != "early" or self.invite_tx is None:
            return
        self.state = "confirmed"
        self.ua.respond(self.invite_tx, 200, self, dialog=True, body=sdp_body)

    def reject(self, code: int, reason: str = "") -> None:
        if self.state != "early" or self.invite_tx is None:
            return
        self.state = "ended"
        self.ua.respond(self.invite_tx, code, self, reason=reason)
        self.ua.forget(self)

    # --- both ----------------------------------------------------------------------------------
    async def reinvite(self, sdp_body: bytes) -> SipResponse | None:
        """A new offer in the dialog (hold: sendonly, resume: sendrecv); the final response, or
        None when the call is not up. Offers go one at a time (a second would meet 491)."""
        async with self._session_lock:
            if self.state != "confirmed":
                return None
            self.dialog.local_cseq += 1
            cseq = self.dialog.local_cseq
            req = self.ua.request("INVITE", self.dialog, self.dialog.target, body=sdp_body, cseq=cseq)
            resp = await self.ua.endpoint.request(req).final
            if 200 <= resp.status_code < 300:
                self.ua.send_ack(self, cseq)
            else:
                self.ua.ack_non_2xx(req, resp)
            return resp

    async def refer(self, refer_to: str) -> SipResponse | None:
        """Send REFER (RFC 3515) naming refer_to; the final response (202 when accepted). The
        progress arrives later as NOTIFY with a message/sipfrag body (on_notify)."""
        if self.state != "confirmed":
            return None
        self.dialog.local_cseq += 1
        req = self.ua.request("REFER", self.dialog, self.dialog.target, cseq=self.dialog.local_cseq,
                              extra=[("Refer-To", refer_to),
                                     ("Referred-By", f"<sip:{self.account.user}@{self.ua.domain}>")])
        return await self.ua.endpoint.request(req).final

    def replaces(self) -> str:
        """This dialog as the Replaces parameter of a Refer-To URI (RFC 3891), URI-escaped:
        call-id;to-tag=<the far end's tag>;from-tag=<ours>."""
        value = f"{self.call_id};to-tag={tag_of(self.dialog.remote)};from-tag={tag_of(self.dialog.local)}"
        return quote(value, safe="")

    async def hangup(self) -> None:
        """BYE a confirmed call, CANCEL an outgoing early one, 480 an incoming early one."""
        if self.state == "early":
            if self.incoming:
                self.reject(480, "Temporarily Unavailable (hung up)")
            else:
                self.cancel()
            return
        if self.state != "confirmed":
            return
        self.state = "ended"
        self.dialog.local_cseq += 1
        bye = self.ua.request("BYE", self.dialog, self.dialog.target, cseq=self.dialog.local_cseq)
        try:
            resp = await asyncio.wait_for(self.ua.endpoint.request(bye).final, 35)
            if resp.status_code >= 300:
                logger.info("%s: BYE answered %d %s", self.account.user, resp.status_code, resp.reason_phrase)
        except asyncio.TimeoutError:
            logger.warning("%s: BYE got no answer", self.account.user)
        finally:
            self.ua.forget(self)


class GatewayUA:
    """The SIP side of the gateway: registrations and calls of every port's account.

    on_invite(account, call) is called for a new incoming INVITE; the handler answers through
    the SipCall (ringing/answer/reject)."""

    def __init__(self, edge: tuple[str, int], local_addr: str = "127.0.0.1", domain: str = "") -> None:
        self.edge = edge
        self.local_addr = local_addr
        self.domain = domain or f"{edge[0]}:{edge[1]}"
        self.endpoint: SipEndpoint | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.accounts: dict[str, Account] = {}
        self.registrations: dict[str, "Registration"] = {}
        self.calls: dict[str, SipCall] = {}
        self.on_invite: Callable[[Account, SipCall], None] | None = None

    async def start(self) -> "GatewayUA":
        self.loop = asyncio.get_running_loop()
        _, self.endpoint = await self.loop.create_datagram_endpoint(
            lambda: SipEndpoint(self.edge, self._on_request), local_addr=(self.local_addr, 0))
        self.endpoint.on_stray_2xx = self._on_stray_2xx
        logger.info("line gateway SIP on udp %s:%d, edge %s:%d", *self.endpoint.local, *self.edge)
        return self

    @property
    def contact_host(self) -> str:
        return f"{self.endpoint.local[0]}:{self.endpoint.local[1]}"

    def contact(self, user: str) -> str:
        return f"<sip:{user}@{self.contact_host}>"

    async def close(self) -> None:
        for call in list(self.calls.values()):
            await call.hangup()
        await asyncio.gather(*(r.stop() for r in self.registrations.values()), return_exceptions=True)
        self.registrations.clear()
        if self.endpoint is not None:
            self.endpoint.close()

    # --- accounts ------------------------------------------------------------------------------
    def add_account(self, account: Account) -> "Registration":
        """Register the account now and keep it registered."""
        self.accounts[account.user] = account
        reg = Registration(self, account)
        self.registrations[account.user] = reg
        reg.start()
        return reg

    async def remove_account(self, user: str) -> None:
        self.accounts.pop(user, None)
        reg = self.registrations.pop(user, None)
        if reg is not None:
            await reg.stop()

    def registered(self, user: str) -> bool:
        reg = self.registrations.get(user)
        return reg is not None and reg.registered

    def new_call(self, account: Account) -> SipCall:
        call = SipCall(self, account, incoming=False, dialog=Dialog(call_id=f"{new_tag()}{new_tag()}@linegw",
                                                                    local=""))
        self.calls[call.call_id] = call
        return call

    def forget(self, call: SipCall) -> None:
        # Kept a while so that late retransmissions (BYE, 2xx) still find their dialog.
        self.loop.call_later(32, self._drop, call)

    def _drop(self, call: SipCall) -> None:
        if self.calls.get(call.call_id) is call:
            del self.calls[call.call_id]

    # --- message building ------------------------------------------------------------------------
    def via(self) -> str:
        return f"SIP/2.0/UDP {self.contact_host};branch={new_branch()};rport"

    def request(self, method: str, dialog: Dialog, uri: str, *, body: bytes = b"", cseq: int,
                extra: list[tuple[str, str]] = ()) -> SipRequest:
        h = CaseInsensitiveDict()
        h.append("Via", self.via())
        for route in dialog.routes:
            h.append("Route", route)
        h.append("Max-Forwards", "70")
        h.append("From", dialog.local)
        h.append("To", dialog.remote)
        h.append("Call-ID", dialog.call_id)
        h.append("CSeq", f"{cseq} {method}")
        if method in ("INVITE", "REGISTER", "REFER"):
            h.append("Contact", self.contact(user_of(dialog.local)))
        if method == "INVITE":
            h.append("Allow", ALLOW)
        for name, value in extra:
            h.append(name, value)
        h.append("User-Agent", USER_AGENT)
        if body:
            h.append("Content-Type", "application/sdp")
        return SipRequest(headers=h, body=body, method=method, uri=uri)

    def send_ack(self, call: SipCall, cseq: int) -> None:
        self.endpoint.send_stateless(self.request("ACK", call.dialog, call.dialog.target, cseq=cseq))

    def ack_non_2xx(self, invite: SipRequest, resp: SipResponse) -> None:
        """ACK for a failure response: same branch as the INVITE (section 17.1.1.3)."""
        h = CaseInsensitiveDict()
        h.append("Via", invite.headers.get_first("via"))
        for route in invite.headers.get("route"):
            h.append("Route", route)
        h.append("Max-Forwards", "70")
        h.append("From", invite.headers.get_first("from"))
        h.append("To", resp.headers.get_first("to"))
        h.append("Call-ID", invite.headers.get_first("call-id"))
        h.append("CSeq", f"{invite.headers.get_first('cseq').split()[0]} ACK")
        self.endpoint.send_stateless(SipRequest(headers=h, method="ACK", uri=invite.uri))

    def respond(self, tx: ServerTransaction, code: int, call: SipCall | None = None, *, dialog: bool = False,
                body: bytes = b"", reason: str = "") -> None:
        extra = []
        if dialog and call is not None:
            for rr in tx.request.headers.get("record-route"):
                extra.append(("Record-Route", rr))
            extra.append(("Contact", self.contact(call.account.user)))
        if code >= 200:
            extra.append(("Allow", ALLOW))
        extra.append(("Server", USER_AGENT))
        to_tag = tag_of(call.dialog.local) if call is not None else (new_tag() if code > 100 else "")
        self.endpoint.respond(tx, make_response(tx.request, code, to_tag, reason=reason, extra=extra, body=body))

    # --- incoming requests -----------------------------------------------------------------------
    def _on_request(self, req: SipRequest, tx: ServerTransaction | None) -> None:
        method = req.method.upper()
        call = self.calls.get(req.headers.get_first("call-id"))
        to_tag = tag_of(req.headers.get_first("to"))
        if method == "INVITE" and not to_tag:
            self._on_invite(req, tx)
        elif method == "CANCEL":
            self._on_cancel(req, tx)
        elif method == "ACK":
            if call is not None and call.invite_tx is not None:
                self.endpoint.ack_received(call.invite_tx)
                call.invite_tx = None
            if call is not None and call.reinvite_tx is not None:
                self.endpoint.ack_received(call.reinvite_tx)
                call.reinvite_tx = None
        elif method == "OPTIONS":
            self.respond(tx, 200)
        elif call is None:
            self.respond(tx, 481)
        elif method == "BYE":
            self.respond(tx, 200)
            if call.state != "ended":
                call.state = "ended"
                self.forget(call)
                if call.on_bye is not None:
                    call.on_bye()
        elif method == "INVITE":
            body = call.on_reinvite(req) if call.on_reinvite is not None and call.state == "confirmed" else None
            if body is None:
                self.respond(tx, 488 if call.state == "confirmed" else 491)
            else:
                call.reinvite_tx = tx
                self.respond(tx, 200, call, dialog=True, body=body)
        elif method == "NOTIFY":
            self.respond(tx, 200)
            if call.on_notify is not None:
                call.on_notify(req)
        elif method in ("INFO", "UPDATE") and not req.body:
            self.respond(tx, 200)
        else:
            self.respond(tx, 501)

    def _on_invite(self, req: SipRequest, tx: ServerTransaction) -> None:
        user = user_of(req.uri) or user_of(req.headers.get_first("to"))
        account = self.accounts.get(user)
        if account is None:
            self.respond(tx, 404, reason=f"Not Found (no line port registers as {user or 'that user'})")
            return
        call_id = req.headers.get_first("call-id")
        if call_id in self.calls:
            self.respond(tx, 482, reason="Loop Detected")
            return
        self.respond(tx, 100)
        dialog = Dialog(call_id=call_id, local=f"{req.headers.get_first('to')};tag={new_tag()}",
                        remote=req.headers.get_first("from"),
                        target=uri_of(req.headers.get_first("contact") or req.headers.get_first("from")),
                        routes=list(req.headers.get("record-route")))
        call = SipCall(self, account, incoming=True, dialog=dialog)
        call.invite = req
        call.invite_tx = tx
        self.calls[call_id] = call
        if self.on_invite is None:
            call.reject(480)
            return
        self.on_invite(account, call)

    def _on_cancel(self, req: SipRequest, tx: ServerTransaction) -> None:
        inv_tx = self.endpoint.invite_for_cancel(req)
        call = self.calls.get(req.headers.get_first("call-id"))
        if inv_tx is None or call is None or call.invite_tx is not inv_tx:
            self.respond(tx, 481)
            return
        self.respond(tx, 200)
        if call.state == "early":
            call.reject(487)
            if call.on_cancel is not None:
                call.on_cancel()

    def _on_stray_2xx(self, resp: SipResponse) -> None:
        call = self.calls.get(resp.headers.get_first("call-id"))
        if call is not None and not call.incoming and call.state == "confirmed":
            self.send_ack(call, int(resp.headers.get_first("cseq").split()[0]))


class Registration:
    """Keeps one account registered at the edge: refresh before expiry, back off after failures."""

    def __init__(self, ua: GatewayUA, account: Account) -> None:
        self.ua = ua
        self.account = account
        self.registered = False
        self.last_status = 0
        self.dialog = Dialog(call_id=f"{new_tag()}{new_tag()}@linegw",
                             local=f"<sip:{account.user}@{ua.domain}>;tag={new_tag()}",
                             remote=f"<sip:{account.user}@{ua.domain}>", local_cseq=0)
        self._task: asyncio.Task | None = None
        self._changed = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Stop refreshing and remove the binding (Expires: 0), waiting briefly for the answer."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        if self.registered:
            self.registered = False
            try:
                await asyncio.wait_for(self._register(0), 2.0)
            except (asyncio.TimeoutError, OSError):
                pass

    async def wait(self, timeout: float) -> bool:
        deadline = self.ua.loop.time() + timeout
        while not self.registered and self.ua.loop.time() < deadline:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), deadline - self.ua.loop.time())
            except asyncio.TimeoutError:
                break
        return self.registered

    async def _run(self) -> None:
        delay = RETRY_BACKOFF[0]
        while True:
            try:
                resp = await self._register(REGISTER_EXPIRES)
            except OSError as exc:
                resp = None
                logger.warning("line account %s: REGISTER could not be sent: %s", self.account.user, exc)
            if resp is not None and 200 <= resp.status_code < 300:
                granted = _granted_expires(resp, self.account.user)
                if not self.registered:
                    logger.info("line account %s registered at the edge for %d s", self.account.user, granted)
                self.registered = True
                self._changed.set()
                delay = RETRY_BACKOFF[0]
                await asyncio.sleep(max(granted * REFRESH_FRACTION, 5.0))
                continue
            self.registered = False
            self._changed.set()
            code = resp.status_code if resp is not None else 0
            hint = (": the edge refused the extension's secret; check it in the config store"
                    if code in (401, 403, 407) else "")
            logger.warning("line account %s: registration failed (%s%s); retry in %.0f s", self.account.user,
                           f"{code} {resp.reason_phrase}" if resp is not None else "not sent", hint, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_BACKOFF[1])

    async def _register(self, expires: int) -> SipResponse:
        uri = f"sip:{self.ua.domain}"
        auth_header = None
        for attempt in range(2):
            self.dialog.local_cseq += 1
            req = self.ua.request("REGISTER", self.dialog, uri, cseq=self.dialog.local_cseq,
                                  extra=[("Expires", str(expires))] + ([auth_header] if auth_header else []))
            resp = await self.ua.endpoint.request(req).final
            self.last_status = resp.status_code
            if resp.status_code in (401, 407) and attempt == 0:
                auth_header = answer_challenge(SipDigestAuth(self.account.user, self.account.secret), resp,
                                               resp.status_code, "REGISTER", uri)
                if auth_header is not None:
                    continue
            return resp
        return resp


def _granted_expires(resp: SipResponse, user: str) -> int:
    for contact in resp.headers.get("contact"):
        if f"sip:{user}@" in contact:
            match = _EXPIRES_RE.search(contact.rsplit(">", 1)[-1])
            if match:
                return int(match.group(1))
    header = resp.headers.get_first("expires")
    return int(header) if header and header.strip().isdigit() else REGISTER_EXPIRES


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
