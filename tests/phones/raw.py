"""A raw SIP phone for attack tests: every header and every SDP byte is the test's to choose.

pjsua2, baresip and SIPp are the real phones of the suite; they refuse to send what an attacker
sends (an SDP naming a host, a re-INVITE aimed at the PBX's own port, a 300-character Call-ID).
This phone speaks just enough SIP over UDP for that: REGISTER and INVITE with digest auth (RFC 2617
MD5, as the edge challenges), ACK, BYE, re-INVITE, and answering an incoming INVITE. Its socket may
come from a LanHost (tests/lanhost.py), so its packets arrive from a LAN address.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import socket
import struct
import time


def sdp_body(ip: str, port: int, pts=(0, 101), direction: str = "sendrecv", ip_kind: str = "IP4",
             dtmf_pt: int = 101) -> str:
    """An SDP offer/answer; pts lists payload types, dtmf_pt is the one that means telephone-event."""
    lines = ["v=0", f"o=raw 1 1 IN {ip_kind} {ip}", "s=raw", f"c=IN {ip_kind} {ip}", "t=0 0",
             f"m=audio {port} RTP/AVP {' '.join(str(p) for p in pts)}"]
    names = {0: "PCMU/8000", 8: "PCMA/8000", dtmf_pt: "telephone-event/8000"}
    lines += [f"a=rtpmap:{p} {names[p]}" for p in pts if p in names]
    lines.append(f"a={direction}")
    return "\r\n".join(lines) + "\r\n"


def rtp_packet(payload: bytes, seq: int, pt: int = 0, ts: int | None = None, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF,
                       (seq * 160 if ts is None else ts) & 0xFFFFFFFF, 0x1234) + payload


def udp_socket(ip: str = "127.0.0.1") -> socket.socket:
    """A non-blocking UDP socket on ip: a raw phone's RTP port."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, 0))
    s.setblocking(False)
    return s


def drain(sock: socket.socket) -> list[bytes]:
    """Every datagram waiting on a non-blocking socket."""
    got = []
    while True:
        try:
            got.append(sock.recvfrom(2048)[0])
        except (BlockingIOError, socket.timeout):
            return got


def sdp_address(body: str) -> tuple[str, int]:
    ip = re.search(r"^c=IN IP4 (\S+)", body, re.M).group(1)
    port = int(re.search(r"^m=audio (\d+)", body, re.M).group(1))
    return ip, port


class Message:
    def __init__(self, data: bytes):
        self.raw = data
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("utf-8", "replace").split("\r\n")
        self.start = lines[0]
        self.headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers.append((name.strip().lower(), value.strip()))
        self.body = body.decode("utf-8", "replace")

    @property
    def is_response(self) -> bool:
        return self.start.startswith("SIP/2.0 ")

    @property
    def status(self) -> int:
        return int(self.start.split()[1]) if self.is_response else 0

    @property
    def method(self) -> str:
        return self.start.split()[0] if not self.is_response else self.header("cseq").split()[-1]

    def header(self, name: str) -> str:
        for n, v in self.headers:
            if n == name:
                return v
        return ""

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]


class Dialog:
    def __init__(self, call_id, local, remote, target, routes, cseq):
        self.call_id, self.local, self.remote, self.target = call_id, local, remote, target
        self.routes, self.cseq = routes, cseq


class RawPhone:
    def __init__(self, user: str, secret: str, edge: tuple[str, int], sock: socket.socket | None = None,
                 ip: str = "127.0.0.1"):
        self.user, self.secret, self.edge = user, secret, edge
        self.sock = sock or socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if self.sock.getsockname()[1] == 0:
            self.sock.bind((ip, 0))
        self.ip, self.port = self.sock.getsockname()
        self.backlog: list[Message] = []

    def close(self) -> None:
        self.sock.close()

    # --- wire ---------------------------------------------------------------------------------
    def send(self, text: str) -> None:
        self.sock.sendto(text.encode(), self.edge)

    def recv(self, timeout: float = 3.0, match=None) -> Message | None:
        for i, msg in enumerate(self.backlog):
            if match is None or match(msg):
                return self.backlog.pop(i)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, _ = self.sock.recvfrom(65535)
            except (socket.timeout, BlockingIOError):
                return None
            if len(data) < 8:
                continue
            msg = Message(data)
            if match is None or match(msg):
                return msg
            self.backlog.append(msg)
        return None

    def _via(self) -> str:
        return f"SIP/2.0/UDP {self.ip}:{self.port};rport;branch=z9hG4bK{secrets.token_hex(8)}"

    def _request(self, method, uri, call_id, from_, to, cseq, *, body="", extra=(), routes=()) -> str:
        lines = [f"{method} {uri} SIP/2.0", f"Via: {self._via()}", "Max-Forwards: 70",
                 *[f"Route: {r}" for r in routes],
                 f"From: {from_}", f"To: {to}", f"Call-ID: {call_id}", f"CSeq: {cseq} {method}",
                 f"Contact: <sip:{self.user}@{self.ip}:{self.port}>", *extra]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return "\r\n".join(lines) + "\r\n\r\n" + body

    def _authorization(self, challenge: Message, method: str, uri: str) -> str:
        name = "authorization" if challenge.status == 401 else "proxy-authorization"
        value = challenge.header("www-authenticate" if challenge.status == 401 else "proxy-authenticate")
        params = dict(re.findall(r'(\w+)="?([^",]*)"?', value))
        ha1 = hashlib.md5(f"{self.user}:{params['realm']}:{self.secret}".encode()).hexdigest()
        ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
        header = (f'Digest username="{self.user}", realm="{params["realm"]}", nonce="{params["nonce"]}", '
                  f'uri="{uri}", algorithm=MD5')
        if "qop" in params:
            cnonce = secrets.token_hex(8)
            resp = hashlib.md5(f"{ha1}:{params['nonce']}:00000001:{cnonce}:auth:{ha2}".encode()).hexdigest()
            header += f', qop=auth, nc=00000001, cnonce="{cnonce}", response="{resp}"'
        else:
            resp = hashlib.md5(f"{ha1}:{params['nonce']}:{ha2}".encode()).hexdigest()
            header += f', response="{resp}"'
        return f"{name.title()}: {header}"

    def _final(self, call_id: str, cseq: int, timeout: float) -> Message | None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self.recv(left, lambda m: m.is_response and m.header("call-id") == call_id
                            and m.header("cseq").split()[0] == str(cseq))
            if msg is None or msg.status >= 200:
                return msg
            self.provisional.append(msg)
        return None

    # --- what a phone does ----------------------------------------------------------------------
    def register(self, timeout: float = 3.0) -> int:
        host = f"{self.edge[0]}:{self.edge[1]}"
        uri, call_id, tag = f"sip:{host}", secrets.token_hex(8), secrets.token_hex(4)
        aor = f"<sip:{self.user}@{host}>"
        extra = ["Expires: 300"]
        self.provisional = []
        for cseq in (1, 2):
            self.send(self._request("REGISTER", uri, call_id, f"{aor};tag={tag}", aor, cseq, extra=extra))
            resp = self._final(call_id, cseq, timeout)
            if resp is None or resp.status not in (401, 407) or cseq == 2:
                return resp.status if resp else 0
            extra = ["Expires: 300", self._authorization(resp, "REGISTER", uri)]
        return 0

    def invite(self, number: str, body: str, *, call_id: str | None = None, uri: str | None = None,
               timeout: float = 8.0) -> tuple[int, Dialog | None, Message | None]:
        """INVITE number (or uri); ACK the final answer. Returns (status, dialog if 2xx, answer)."""
        host = f"{self.edge[0]}:{self.edge[1]}"
        uri = uri or f"sip:{number}@{host}"
        call_id = call_id or secrets.token_hex(10)
        from_ = f"<sip:{self.user}@{host}>;tag={secrets.token_hex(4)}"
        to = f"<{uri}>"
        extra = []
        self.provisional = []
        for cseq in (1, 2):
            self.send(self._request("INVITE", uri, call_id, from_, to, cseq, body=body, extra=extra))
            resp = self._final(call_id, cseq, timeout)
            if resp is None:
                return 0, None, None
            if resp.status in (401, 407) and cseq == 1:
                self._ack(uri, call_id, from_, resp.header("to"), cseq, via_of=resp)
                extra = [self._authorization(resp, "INVITE", uri)]
                continue
            break
        if resp.status >= 300:
            self._ack(uri, call_id, from_, resp.header("to"), cseq, via_of=resp)
            return resp.status, None, resp
        target = re.search(r"<([^>]+)>", resp.header("contact")).group(1)
        routes = list(reversed(resp.all("record-route")))
        dialog = Dialog(call_id, from_, resp.header("to"), target, routes, cseq)
        self.send(self._request("ACK", target, call_id, from_, dialog.remote, cseq, routes=routes))
        return resp.status, dialog, resp

    def _ack(self, uri, call_id, from_, to, cseq, via_of: Message) -> None:
        # the ACK of a non-2xx answer belongs to the INVITE transaction: same Via branch
        lines = [f"ACK {uri} SIP/2.0", f"Via: {via_of.header('via')}", "Max-Forwards: 70",
                 f"From: {from_}", f"To: {to}", f"Call-ID: {call_id}", f"CSeq: {cseq} ACK",
                 "Content-Length: 0"]
        self.send("\r\n".join(lines) + "\r\n\r\n")

    def in_dialog(self, dialog: Dialog, method: str, body: str = "", timeout: float = 8.0) -> int:
        dialog.cseq += 1
        self.provisional = []
        self.send(self._request(method, dialog.target, dialog.call_id, dialog.local, dialog.remote,
                                dialog.cseq, body=body, routes=dialog.routes))
        resp = self._final(dialog.call_id, dialog.cseq, timeout)
        if resp is None:
            return 0
        if method == "INVITE":
            if resp.status < 300:
                self.send(self._request("ACK", dialog.target, dialog.call_id, dialog.local, dialog.remote,
                                        dialog.cseq, routes=dialog.routes))
            else:
                self._ack(dialog.target, dialog.call_id, dialog.local, resp.header("to"), dialog.cseq,
                          via_of=resp)
        return resp.status

    def bye(self, dialog: Dialog) -> int:
        return self.in_dialog(dialog, "BYE")

    # --- lamps: MWI (message-summary) and BLF (dialog) subscriptions ------------------------------
    def subscribe(self, resource: str, event: str, expires: int = 600,
                  timeout: float = 5.0) -> tuple[int, Dialog | None]:
        """SUBSCRIBE to `resource` ("1000", "*33") for `event`, answering the digest challenge.
        Returns (status, dialog); the NOTIFYs that follow are read with next_notify()."""
        host = f"{self.edge[0]}:{self.edge[1]}"
        uri = f"sip:{resource}@{host}"
        call_id = secrets.token_hex(10)
        from_ = f"<sip:{self.user}@{host}>;tag={secrets.token_hex(4)}"
        accept = {"message-summary": "application/simple-message-summary",
                  "dialog": "application/dialog-info+xml"}.get(event, "*/*")
        extra = [f"Event: {event}", f"Expires: {expires}", f"Accept: {accept}"]
        self.provisional = []
        for cseq in (1, 2):
            self.send(self._request("SUBSCRIBE", uri, call_id, from_, f"<{uri}>", cseq, extra=extra))
            resp = self._final(call_id, cseq, timeout)
            if resp is None:
                return 0, None
            if resp.status in (401, 407) and cseq == 1:
                extra = extra + [self._authorization(resp, "SUBSCRIBE", uri)]
                continue
            break
        if resp.status >= 300:
            return resp.status, None
        target = re.search(r"<([^>]+)>", resp.header("contact")).group(1)
        return resp.status, Dialog(call_id, from_, resp.header("to"), target,
                                   list(reversed(resp.all("record-route"))), cseq)

    def next_notify(self, dialog: Dialog | None = None, timeout: float = 5.0, match=None) -> Message | None:
        """The next NOTIFY (of `dialog` when given) whose body satisfies match(body); each NOTIFY
        read is answered 200, as a phone does."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self.recv(left, lambda m: not m.is_response and m.method == "NOTIFY"
                            and (dialog is None or m.header("call-id") == dialog.call_id))
            if msg is None:
                return None
            self.reply(msg, 200)
            if match is None or match(msg.body):
                return msg
        return None

    # --- being called ----------------------------------------------------------------------------
    def wait_request(self, method: str, timeout: float = 5.0) -> Message | None:
        return self.recv(timeout, lambda m: not m.is_response and m.method == method)

    def reply(self, req: Message, status: int, reason: str = "OK", body: str = "", tag: str = "") -> str:
        to = req.header("to")
        if tag and ";tag=" not in to:
            to = f"{to};tag={tag}"
        lines = [f"SIP/2.0 {status} {reason}", *[f"Via: {v}" for v in req.all("via")],
                 *[f"Record-Route: {r}" for r in req.all("record-route")],
                 f"From: {req.header('from')}", f"To: {to}", f"Call-ID: {req.header('call-id')}",
                 f"CSeq: {req.header('cseq')}", f"Contact: <sip:{self.user}@{self.ip}:{self.port}>"]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        self.send("\r\n".join(lines) + "\r\n\r\n" + body)
        return to

    def answer(self, req: Message, body: str) -> Dialog:
        """Answer an incoming INVITE with 200 and body; wait for the ACK."""
        to = self.reply(req, 200, "OK", body, tag=secrets.token_hex(4))
        self.wait_request("ACK", timeout=3)
        target = re.search(r"<([^>]+)>", req.header("contact")).group(1)
        cseq = int(req.header("cseq").split()[0])
        return Dialog(req.header("call-id"), to, req.header("from"), target, req.all("record-route"), cseq)


# --- calls between raw phones through a running PBX (tests/pbxproc.py) -------------------------------
def registered(pbx, number: str, **kw) -> RawPhone:
    """A raw phone for extension number, registered at the PBX's edge."""
    phone = RawPhone(number, pbx.secrets[number], pbx.registrar, **kw)
    assert phone.register() == 200
    return phone


def raw_call(pbx, a: RawPhone, b: RawPhone, a_rtp: socket.socket, b_rtp: socket.socket, *,
             offer: str | None = None, answer: str | None = None, **invite_kw):
    """a calls b, b answers: (a's dialog, PBX RTP address facing a, facing b, b's dialog).

    offer / answer are the two phones' SDP (default: PCMU + telephone-event 101 on their RTP sockets).
    """
    import threading
    seen = {}

    def callee():
        req = b.wait_request("INVITE", 8)
        if req is not None:
            seen["pbx_b"] = sdp_address(req.body)
            seen["offer_to_b"] = req.body
            seen["dialog"] = b.answer(req, answer or sdp_body("127.0.0.1", b_rtp.getsockname()[1]))

    t = threading.Thread(target=callee)
    t.start()
    status, dialog, resp = a.invite(b.user, offer or sdp_body("127.0.0.1", a_rtp.getsockname()[1]),
                                    **invite_kw)
    t.join(10)
    assert status == 200, f"call {a.user} -> {b.user}: {status}\n{pbx.log_tail()}"
    return dialog, sdp_address(resp.body), seen["pbx_b"], seen["dialog"]


def wait_idle(pbx, timeout: float = 10.0) -> dict:
    """Wait until the PBX has no call and no RTP leg left; its status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = pbx.status()
        if not st["calls"] and st["rtp_legs"] == 0:
            return st
        time.sleep(0.1)
    raise AssertionError(f"calls left over: {pbx.status()}")
