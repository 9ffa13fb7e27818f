"""SIP transport and transactions of the call service (RFC 3261 sections 17 and 18, UDP only).

The call service talks to exactly one peer: the Kamailio edge on loopback. Kamailio's tm module
retransmits towards phones and absorbs their retransmissions, so this layer keeps only what a UDP
peer of a stateful proxy still needs: answering request retransmissions with the last response,
retransmitting our own requests until a response (timers A/E), 2xx retransmission until the ACK
(section 13.3.1.4) and transaction time-outs (timers B/F). Message parsing is aiosipua's.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import Callable

from aiosipua import SipMessage, SipRequest, SipResponse
from aiosipua import headers as _aiosipua_headers
from aiosipua import message as _aiosipua_message
from aiosipua.headers import CaseInsensitiveDict

log = logging.getLogger(__name__)

_split_quoted = _aiosipua_message._split_multi_value


def split_multi_value(value: str) -> list[str]:
    """aiosipua's header-list split, with a fast path for values without <...> or "...".

    aiosipua walks every character of every Via, Contact, Record-Route, Allow and Supported value
    to keep commas inside brackets and quotes; most values have neither, and there str.split is
    the same answer (tests/test_sip_layer.py checks both agree). Profiling a 150 setups/s load put
    the character walk at 3-4 % of the call service's CPU; at 250/s the values with <...> but a
    single entry (Contact, each Record-Route) were still 2.6 %: a value without a comma is whole.
    aiosipua is pinned <0.8 in pyproject.
    """
    if "," not in value:  # one value (a Contact, a Record-Route): nothing to split
        value = value.strip()
        return [value] if value else []
    if '"' in value or "<" in value:
        return _split_quoted(value)
    parts = [part.strip() for part in value.split(",")]
    if not parts[-1]:
        parts.pop()
    return parts


_aiosipua_message._split_multi_value = split_multi_value

_COMPACT = _aiosipua_headers.COMPACT_HEADERS
_MULTI = _aiosipua_headers.MULTI_INSTANCE_HEADERS
_MAX_HEADERS = _aiosipua_message.MAX_HEADERS
_pretty_names: dict[str, str] = {}


def parse(data: bytes) -> SipMessage:
    """aiosipua's `SipMessage.parse`, the same message, in a little over half the time.

    Every datagram from the edge is parsed: aiosipua's parser (pure Python, a checked `append`
    per header value, line-ending normalisation and unfolding for every message) was 10-12 % of
    the call service at 300 setups/s (issue 16). Messages from Kamailio have CRLF line ends and no
    folded lines; for those the headers go straight into aiosipua's CaseInsensitiveDict (its
    `_store`/`_original`; aiosipua is pinned <0.8). The injection check of `append` has nothing to
    find in a value cut out of a line. Anything else (bare LF or CR, folded lines, no blank line)
    is parsed by aiosipua itself. tests/test_sip_layer.py checks both give the same message, and
    the same bytes back, for every shape.
    """
    head, sep, body = data.partition(b"\r\n\r\n")
    text = head.decode("utf-8", errors="replace")
    if (not sep or "\r\n " in text or "\r\n\t" in text
            or not text.count("\n") == text.count("\r") == text.count("\r\n")):
        return SipMessage.parse(data)
    lines = text.split("\r\n")
    start = lines[0].strip()
    if not start:
        raise ValueError("Missing start line")
    if len(lines) - 1 > _MAX_HEADERS:
        raise ValueError(f"Too many headers ({len(lines) - 1} > {_MAX_HEADERS})")
    store: dict[str, list[str]] = {}
    original: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            continue
        name = name.strip()
        key = name.lower()
        full = _COMPACT.get(key)
        if full is not None:
            name = key = full
        value = value.strip()
        if key in _MULTI:
            values = split_multi_value(value)
            if not values:
                continue
        else:
            values = [value]
        have = store.get(key)
        if have is None:
            store[key] = values
            original[key] = name
        else:
            have.extend(values)
    headers = CaseInsensitiveDict()
    headers._store, headers._original = store, original
    body = _aiosipua_message._reconcile_content_length(headers, body)
    if start.startswith("SIP/"):
        parts = start.split(None, 2)
        return SipResponse(headers=headers, body=body, status_code=int(parts[1]) if len(parts) > 1 else 0,
                           reason_phrase=parts[2] if len(parts) > 2 else "")
    parts = start.split(None, 2)
    if len(parts) < 3:
        raise ValueError(f"Malformed request line: {start!r}")
    return SipRequest(headers=headers, body=body, method=parts[0], uri=parts[1])


def encode(msg: SipMessage) -> bytes:
    """`bytes(msg)` of aiosipua (exact Content-Length, canonical header names), without its
    per-header name lookups (the canonical spelling of each name is kept once found): half the time."""
    h = msg.headers
    h._store["content-length"] = [str(len(msg.body))]
    h._original["content-length"] = "Content-Length"
    out = [msg._start_line()]
    for key, values in h._store.items():
        name = h._original[key]
        pretty = _pretty_names.get(name)
        if pretty is None:
            pretty = _aiosipua_headers.prettify_header_name(name)
            if len(_pretty_names) < 1024:     # bounded: names a phone made up reach us too
                _pretty_names[name] = pretty
        for value in values:
            out.append(f"{pretty}: {value}")
    out.append("\r\n")
    return "\r\n".join(out).encode("utf-8") + msg.body

T1 = 0.5
T2 = 4.0
TIMER_B = 64 * T1
# How long a finished transaction is kept to absorb retransmissions. RFC 3261 keeps them 64*T1
# (32 s) for a peer across a lossy network; our only peer is Kamailio on loopback, whose tm resends
# at T1, 2*T1, 4*T1 at most before our reply reaches it. 32 s would hold ~25,000 transactions at
# 200 call setups/s; 8 s covers the retransmission schedule and keeps memory flat under load.
LINGER = 16 * T1
MAX_DATAGRAM = 65535
REQUIRED = ("via", "from", "to", "call-id", "cseq")

REASONS = {
    100: "Trying", 180: "Ringing", 183: "Session Progress", 200: "OK", 400: "Bad Request",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 415: "Unsupported Media Type",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist", 486: "Busy Here",
    487: "Request Terminated", 488: "Not Acceptable Here", 491: "Request Pending",
    500: "Server Internal Error", 501: "Not Implemented", 503: "Service Unavailable",
}


class Lingering:
    """Clean-ups due a fixed delay (LINGER) after something ended: the end of a finished transaction's
    wait for retransmissions, of an ended dialog's. They come in time order, so one deque swept once
    a second holds them, instead of a loop timer each: uvloop's call_later costs a TimerHandle, a
    libuv timer and a copy of the context apiece, and at 300 setups/s about 9,000 of them were
    pending at any moment, which the cyclic collector walked too (issue 16). Due ones run up to
    SWEEP_S late; nothing runs while the deque is empty.
    """

    SWEEP_S = 1.0

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float):
        self.loop, self.delay = loop, delay
        self._due: deque[tuple[float, Callable, object]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._due)

    def add(self, fn: Callable[[object], None], arg) -> None:
        """fn(arg) in `delay` seconds (pass a method bound once, not `self.method` each time: the
        bound method is an object too)."""
        self._due.append((self.loop.time() + self.delay, fn, arg))
        if self._timer is None:
            self._timer = self.loop.call_later(self.delay, self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        now = self.loop.time()
        due = self._due
        while due and due[0][0] <= now:
            _, fn, arg = due.popleft()
            try:
                fn(arg)
            except Exception:
                log.exception("clean-up %r failed", fn)
        if due:
            self._timer = self.loop.call_at(max(due[0][0], now + self.SWEEP_S), self._sweep)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due.clear()


def new_tag() -> str:
    return secrets.token_hex(6)


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


def top_branch(msg: SipMessage) -> str:
    via = msg.headers.get_first("via") or ""
    for part in via.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.lower() == "branch":
            return value
    return ""


MAGIC_COOKIE = "z9hG4bK"


def transaction_key(msg: SipMessage, method: str) -> tuple[str, str]:
    """The key of the server transaction msg belongs to (RFC 3261 17.2.3).

    An RFC 3261 peer's top Via branch starts with the magic cookie and is unique per transaction.
    An RFC 2543 peer's branch (or none at all) is not: there the transaction is the top Via, the
    Call-ID, the From tag and the CSeq number together (without the To tag, which the ACK of a
    non-2xx answer carries and the INVITE did not), so two such requests are never merged.
    """
    branch = top_branch(msg)
    if branch.startswith(MAGIC_COOKIE):
        return branch, method
    h = msg.headers
    return ("rfc2543|" + "|".join((h.get_first("via") or "", h.get_first("call-id") or "",
                                   tag_of(h.get_first("from")), str(cseq_of(msg)[0]))), method)


def cseq_of(msg: SipMessage) -> tuple[int, str]:
    num, _, method = (msg.headers.get_first("cseq") or "").strip().partition(" ")
    return int(num), method.strip().upper()


def tag_of(header_value: str | None) -> str:
    if not header_value:
        return ""
    # the tag parameter sits after the closing '>' of a name-addr (or after the URI otherwise)
    params = header_value.rsplit(">", 1)[-1] if ">" in header_value else header_value
    for part in params.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.lower() == "tag":
            return value
    return ""


def uri_of(header_value: str) -> str:
    """The URI inside a name-addr (<sip:...>) or the addr-spec itself."""
    if "<" in header_value:
        return header_value.split("<", 1)[1].split(">", 1)[0]
    return header_value.split(";", 1)[0].strip()


def user_of(uri_or_header: str) -> str:
    uri = uri_of(uri_or_header)
    _, _, rest = uri.partition(":")
    if "@" not in rest:
        return ""
    return rest.split("@", 1)[0].split(";", 1)[0]


def make_response(req: SipRequest, code: int, to_tag: str = "", *, reason: str = "",
                  extra: list[tuple[str, str]] = (), body: bytes = b"",
                  content_type: str = "") -> SipResponse:
    """A response to req (section 8.2.6): Via, From, To, Call-ID, CSeq copied; To tag added."""
    h = CaseInsensitiveDict()
    for via in req.headers.get("via"):
        h.append("Via", via)
    h.append("From", req.headers.get_first("from"))
    to = req.headers.get_first("to")
    if to_tag and not tag_of(to):
        to = f"{to};tag={to_tag}"
    h.append("To", to)
    h.append("Call-ID", req.headers.get_first("call-id"))
    h.append("CSeq", req.headers.get_first("cseq"))
    for name, value in extra:
        h.append(name, value)
    if body:
        h.append("Content-Type", content_type or "application/sdp")
    return SipResponse(headers=h, body=body, status_code=code,
                       reason_phrase=reason or REASONS.get(code, "Unknown"))


class ServerTransaction:
    """A request we received; remembers the last response to answer retransmissions.

    Once it is finished (final response sent; for an INVITE's 2xx, ACKed) it lingers LINGER seconds
    with `request` None: answering a retransmission needs only `last`, and the parsed request would
    keep ~40 objects per transaction alive for the collector to walk (issue 16)."""

    __slots__ = ("request", "addr", "last", "key", "ack_waiter", "_retrans")

    def __init__(self, request: SipRequest, addr: tuple[str, int], key: tuple[str, str]):
        self.request = request
        self.addr = addr
        self.last: bytes | None = None
        self.key = key
        self.ack_waiter: asyncio.TimerHandle | None = None
        self._retrans = T1


class ClientTransaction:
    """A request we sent; resolves `final` with the final response, calls on_provisional for 1xx."""

    __slots__ = ("request", "data", "key", "final", "on_provisional", "timer", "interval",
                 "deadline", "got_response", "is_invite")

    def __init__(self, request: SipRequest, key: tuple[str, str],
                 on_provisional: Callable[[SipResponse], None] | None):
        loop = asyncio.get_running_loop()
        self.request = request
        self.data = encode(request)
        self.key = key
        self.final: asyncio.Future[SipResponse] = loop.create_future()
        self.on_provisional = on_provisional
        self.timer: asyncio.TimerHandle | None = None
        self.interval = T1
        self.deadline = loop.time() + TIMER_B
        self.got_response = False
        self.is_invite = request.method == "INVITE"


class SipEndpoint(asyncio.DatagramProtocol):
    """UDP socket of the call service with its transaction tables.

    on_request(request, server_tx) is called once per new request (retransmissions are absorbed);
    ACKs for 2xx and in-dialog requests go to the same callback (their tx is None for ACK).
    """

    def __init__(self, peer: tuple[str, int], on_request: Callable[[SipRequest, ServerTransaction | None], None]):
        self.peer = peer
        self.on_request = on_request
        self.transport: asyncio.DatagramTransport | None = None
        self.local: tuple[str, int] = ("0.0.0.0", 0)
        self.server_tx: dict[tuple[str, str], ServerTransaction] = {}
        self.client_tx: dict[tuple[str, str], ClientTransaction] = {}
        self.stats = {"rx": 0, "tx": 0, "bad": 0, "foreign": 0}
        self.loop = asyncio.get_event_loop()
        self.linger = Lingering(self.loop, LINGER)
        self._forget_stx, self._forget_ctx = self._forget_server_tx, self._forget_client_tx

    # --- transport ---------------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        self.local = transport.get_extra_info("sockname")[:2]

    def error_received(self, exc):  # ICMP port unreachable from a vanished peer: nothing to do
        log.debug("sip socket error: %s", exc)

    def send(self, data: bytes, addr: tuple[str, int] | None = None) -> None:
        self.stats["tx"] += 1
        self.transport.sendto(data, addr or self.peer)

    def datagram_received(self, data: bytes, addr):
        self.stats["rx"] += 1
        if addr[1] != self.peer[1] or (addr[0] != self.peer[0] and self.peer[0] != "0.0.0.0"):
            # Only the edge talks to us: it authenticates phones, bans scanners and guards trunks.
            # Anything else on this box (or a packet aimed at our port) is dropped unanswered (issue 7).
            self.stats["foreign"] += 1
            if self.stats["foreign"] in (1, 100) or self.stats["foreign"] % 10000 == 0:
                log.warning("SIP from %s:%s ignored: only the edge %s:%s may send to this port "
                            "(%d such datagrams)", addr[0], addr[1], *self.peer, self.stats["foreign"])
            return
        if len(data) < 4 or data in (b"\r\n\r\n", b"\r\n"):
            return  # keepalive
        try:
            msg = parse(data)
            missing = [h for h in REQUIRED if not msg.headers.get_first(h)]
            if missing:
                raise ValueError("missing " + ", ".join(missing))
            cseq_of(msg)
        except Exception as exc:  # malformed SIP: answer 400 when we can address it, never crash
            self.stats["bad"] += 1
            log.warning("malformed SIP from %s:%s dropped: %s", addr[0], addr[1], str(exc)[:120])
            self._reply_bad_request(data, addr, str(exc))
            return
        try:
            if isinstance(msg, SipResponse):
                self._on_response(msg)
            else:
                self._on_request(msg, addr)
        except Exception:
            log.exception("error handling %s from %s:%s", _describe(msg), addr[0], addr[1])

    def _reply_bad_request(self, data: bytes, addr, why: str) -> None:
        # Only when the start line says request and the headers needed to route a reply parse.
        if data[:4] == b"SIP/" or b"\r\n" not in data:
            return
        try:
            head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
            req = SipMessage.parse(head.encode() + b"\r\n\r\n")
            if isinstance(req, SipResponse) or req.method == "ACK" or not req.headers.get("via"):
                return
            for h in ("from", "to", "call-id", "cseq"):
                if not req.headers.get_first(h):
                    return
            resp = make_response(req, 400, new_tag(), reason="Bad Request")
            self.send(encode(resp), addr)
        except Exception:
            return

    # --- requests ----------------------------------------------------------------------------
    def _on_request(self, req: SipRequest, addr) -> None:
        method = req.method.upper()
        if method == "ACK":
            tx = self.server_tx.get(transaction_key(req, "INVITE"))
            if tx is not None and tx.last is not None and not tx.last.startswith(b"SIP/2.0 2"):
                return  # ACK for our non-2xx final: absorbed by the transaction
            self.on_request(req, None)
            return
        key = transaction_key(req, method)
        tx = self.server_tx.get(key)
        if tx is not None:  # retransmission
            if tx.last is not None:
                self.send(tx.last, tx.addr)
            return
        tx = ServerTransaction(req, addr, key)
        self.server_tx[key] = tx
        self.on_request(req, tx)

    def invite_for_cancel(self, cancel: SipRequest) -> ServerTransaction | None:
        """The INVITE server transaction a CANCEL targets: same top Via branch (section 9.2)."""
        return self.server_tx.get(transaction_key(cancel, "INVITE"))

    def respond(self, tx: ServerTransaction, resp: SipResponse) -> None:
        data = encode(resp)
        tx.last = data
        self.send(data, tx.addr)
        code = resp.status_code
        if code < 200:
            return
        if tx.key[1] == "INVITE" and code < 300:
            tx._retrans = T1
            tx.ack_waiter = self.loop.call_later(T1, self._retransmit_2xx, tx, self.loop.time() + TIMER_B)
        else:
            if tx.key[1] != "INVITE":
                tx.request = None    # lingering only answers retransmissions, with tx.last
            self.linger.add(self._forget_stx, tx)

    def _retransmit_2xx(self, tx: ServerTransaction, give_up: float) -> None:
        if self.loop.time() >= give_up:
            tx.ack_waiter = None
            self.server_tx.pop(tx.key, None)
            log.warning("no ACK for 2xx of %s", tx.request.headers.get_first("call-id"))
            self.on_ack_timeout(tx)
            return
        self.send(tx.last, tx.addr)
        tx._retrans = min(tx._retrans * 2, T2)
        tx.ack_waiter = self.loop.call_later(tx._retrans, self._retransmit_2xx, tx, give_up)

    def ack_received(self, tx: ServerTransaction | None) -> None:
        if tx is None:
            return
        if tx.ack_waiter is not None:
            tx.ack_waiter.cancel()
            tx.ack_waiter = None
        tx.request = None
        self.linger.add(self._forget_stx, tx)

    # --- client side ---------------------------------------------------------------------------
    def request(self, req: SipRequest, on_provisional=None) -> ClientTransaction:
        """Send req (which carries its own top Via with a fresh branch) as a client transaction."""
        tx = ClientTransaction(req, (top_branch(req), req.method.upper()), on_provisional)
        self.client_tx[tx.key] = tx
        self.send(tx.data)
        tx.timer = self.loop.call_later(T1, self._retransmit, tx)
        return tx

    def send_stateless(self, req: SipRequest) -> None:
        """ACK for a 2xx: end to end, no transaction (section 13.2.2.4)."""
        self.send(encode(req))

    def _retransmit(self, tx: ClientTransaction) -> None:
        if tx.final.done():
            return
        if self.loop.time() >= tx.deadline:
            self.client_tx.pop(tx.key, None)
            tx.final.set_result(make_response(tx.request, 408, reason="Request Timeout (no answer from edge)"))
            return
        if not (tx.is_invite and tx.got_response):
            self.send(tx.data)
            tx.interval = tx.interval * 2 if tx.is_invite else min(tx.interval * 2, T2)
        tx.timer = self.loop.call_later(tx.interval, self._retransmit, tx)

    def _on_response(self, resp: SipResponse) -> None:
        num, method = cseq_of(resp)
        tx = self.client_tx.get((top_branch(resp), method))
        if tx is None:
            if method == "INVITE" and 200 <= resp.status_code < 300:
                self.on_stray_2xx(resp)
            return
        tx.got_response = True
        if resp.status_code < 200:
            if tx.is_invite:
                # Timer B guards an INVITE only until a provisional (RFC 3261 17.1.1.2): a phone that
                # rings longer than 32 s is the caller's and the flows' business, not a time-out.
                tx.deadline = float("inf")
            if tx.on_provisional is not None:
                tx.on_provisional(resp)
            return
        if tx.timer is not None:
            tx.timer.cancel()
        if not tx.final.done():
            tx.final.set_result(resp)
            # a finished transaction lingers only to catch 2xx retransmissions: it lets go of the
            # request and of the channel behind on_provisional, so an ended call is freed at once
            # (by reference counting) instead of LINGER later by the cyclic collector (issue 16)
            tx.request = tx.on_provisional = None
            tx.data = b""
            # keep INVITE transactions a while to catch 2xx retransmissions (we re-ACK them)
            if tx.is_invite:
                self.linger.add(self._forget_ctx, tx)
            else:
                self.client_tx.pop(tx.key, None)
        elif method == "INVITE" and resp.status_code < 300:
            self.on_stray_2xx(resp)

    def _forget_server_tx(self, tx: ServerTransaction) -> None:
        if self.server_tx.get(tx.key) is tx:
            del self.server_tx[tx.key]

    def _forget_client_tx(self, tx: ClientTransaction) -> None:
        if self.client_tx.get(tx.key) is tx:
            del self.client_tx[tx.key]

    def on_ack_timeout(self, tx: ServerTransaction) -> None:
        """Our 2xx was never ACKed (section 13.3.1.4): the call layer ends the dialog (set by the B2BUA)."""

    def on_stray_2xx(self, resp: SipResponse) -> None:
        """A retransmitted 2xx to an INVITE: the call layer re-sends its ACK (set by the B2BUA)."""

    def close(self) -> None:
        for tx in self.client_tx.values():
            if tx.timer is not None:
                tx.timer.cancel()
        for tx in self.server_tx.values():
            if tx.ack_waiter is not None:
                tx.ack_waiter.cancel()
        self.linger.close()
        if self.transport is not None:
            self.transport.close()


def _describe(msg: SipMessage) -> str:
    if isinstance(msg, SipResponse):
        return f"response {msg.status_code}"
    return f"{msg.method} request"
