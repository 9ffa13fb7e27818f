"""The box's self-test call: a real call through the edge to the echo test (*43), audio checked.

Placed after an update, before the new slot is blessed (services/update.py `health`), and by hand
with `pbx update selftest`. It signs in as one of the box's own SIP extensions (the check runs as
root on the box, which holds every secret anyway; the call shows in that extension's call log as
"PBX self-test"), INVITEs the echo test over UDP to the edge, sends 2 s of G.711 audio with a
pattern of its own, and passes only when that pattern comes back from the call service's RTP port,
then hangs up with a BYE that must be answered 200. So it proves what a user needs: the edge
authenticates and routes, the call service answers and runs a plan, media flows both ways.

Written here rather than with pjsua2: the image's venv has no pjsua2 (a test-only package), and a
self-test needs one INVITE, one ACK, one BYE and RTP of a known pattern, not a phone.
"""
from __future__ import annotations

import json
import re
import secrets
import select
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from aiosipua import SipMessage, SipResponse

from firmware.config.store import CONFIG_FILE
from firmware.features.echotest import ECHO_CODE
from services.callsvc import sdp
from services.callsvc.digest import authorization

FRAMES_NEEDED = 10          # echoed frames of our own pattern that make a pass (0.2 s of audio)
SEND_S = 2.0                # audio sent after the answer (the echo starts after the ~4 s prompt)
PROMPT_WAIT_S = 12.0        # how long the echo may take to start: the spoken prompt comes first


class SelfTestError(RuntimeError):
    """The self-test call failed; the message says at which step and what came back."""


@dataclass
class SelfTestResult:
    user: str
    setup_ms: float         # INVITE to 200 OK
    echo_ms: float          # 200 OK to the first echoed frame of our pattern
    echoed: int             # frames of our pattern that came back
    bye: int                # the BYE's final status

    def summary(self) -> str:
        return (f"echo call as {self.user}: answered in {self.setup_ms:.0f} ms, own audio back after "
                f"{self.echo_ms:.0f} ms ({self.echoed} frames), BYE {self.bye}")


def _frame(n: int) -> bytes:
    """160 bytes of G.711 u-law that say which frame they are. 0x7F/0xFF (the two zeros) are left
    out: a decode and encode round trip turns one into the other."""
    return bytes((b % 0x7E) + 1 for b in struct.pack("!I", n) * 40)


class _Ua:
    def __init__(self, host: str, port: int, user: str, secret: str):
        self.edge = (host, port)
        self.user = user
        bind = "127.0.0.1" if host.startswith("127.") else ""
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind((bind, 0))
        self.sip.connect(self.edge)
        self.local = self.sip.getsockname()
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind((self.local[0], 0))
        self.call_id = f"{secrets.token_hex(10)}@pbx-selftest"
        self.tag = secrets.token_hex(4)
        self.uri = f"sip:{ECHO_CODE}@{host}:{port}"
        self.from_ = f'"PBX self-test" <sip:{user}@{host}:{port}>;tag={self.tag}'
        self.to = f"<{self.uri}>"

    def close(self) -> None:
        self.sip.close()
        self.rtp.close()

    def request(self, method: str, uri: str, *, cseq: int, to: str, routes=(), extra=(), body: bytes = b"",
                branch: str | None = None) -> str:
        branch = branch or "z9hG4bK" + secrets.token_hex(8)
        lines = [f"{method} {uri} SIP/2.0",
                 f"Via: SIP/2.0/UDP {self.local[0]}:{self.local[1]};branch={branch};rport",
                 "Max-Forwards: 70", f"From: {self.from_}", f"To: {to}", f"Call-ID: {self.call_id}",
                 f"CSeq: {cseq} {method}", f"Contact: <sip:{self.user}@{self.local[0]}:{self.local[1]}>",
                 "User-Agent: pbx-selftest", *[f"Route: {r}" for r in routes], *extra]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        self.sip.send(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return branch

    def final(self, cseq: int, method: str, timeout: float) -> SipResponse:
        """The final response to our request cseq; requests from the edge are answered on the way."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.sip], [], [], left)
            if not ready:
                break
            try:
                data = self.sip.recv(65535)
            except ConnectionRefusedError as exc:
                raise SelfTestError(f"nothing answers SIP at {self.edge[0]}:{self.edge[1]} (ICMP port "
                                    f"unreachable on the {method}): is the edge running?") from exc
            try:
                msg = SipMessage.parse(data)
            except Exception:           # noqa: BLE001  (a datagram we cannot read: not ours)
                continue
            if not isinstance(msg, SipResponse):
                self._answer(msg)
                continue
            got = msg.headers.get_first("cseq") or ""
            if msg.headers.get_first("call-id") != self.call_id or got.split() != [str(cseq), method]:
                continue
            if msg.status_code >= 200:
                return msg
        raise SelfTestError(f"no final answer to the {method} within {timeout:.0f} s from the edge at "
                            f"{self.edge[0]}:{self.edge[1]}")

    def _answer(self, req) -> None:
        """A request from the far end (OPTIONS, an early BYE): answer 200; a BYE fails the test."""
        head = ["SIP/2.0 200 OK"]
        for name in ("via", "from", "to", "call-id", "cseq"):
            for value in req.headers.get(name):
                head.append(f"{name.title() if name != 'call-id' else 'Call-ID'}: {value}")
        head.append("Content-Length: 0")
        self.sip.send(("\r\n".join(head) + "\r\n\r\n").encode())
        if req.method == "BYE":
            raise SelfTestError("the PBX hung up the echo test before our audio came back")


def _ack_failure(ua: _Ua, resp: SipResponse, cseq: int, branch: str) -> None:
    ua.request("ACK", ua.uri, cseq=cseq, to=resp.headers.get_first("to"), branch=branch)


def echo_call(host: str, port: int, user: str, secret: str, timeout: float = 30.0) -> SelfTestResult:
    """One call to the echo test as `user`; raises SelfTestError naming the step that failed."""
    ua = _Ua(host, port, user, secret)
    try:
        rtp_port = ua.rtp.getsockname()[1]
        offer = sdp.build(ua.local[0], rtp_port, ["PCMU"], 101)
        start = time.monotonic()
        extra: list[str] = []
        for cseq in (1, 2):
            branch = ua.request("INVITE", ua.uri, cseq=cseq, to=ua.to, extra=extra, body=offer)
            resp = ua.final(cseq, "INVITE", 10.0)
            if resp.status_code in (401, 407) and cseq == 1:
                _ack_failure(ua, resp, cseq, branch)
                name = "www-authenticate" if resp.status_code == 401 else "proxy-authenticate"
                header = "Authorization" if resp.status_code == 401 else "Proxy-Authorization"
                extra = [f"{header}: {authorization(resp.headers.get_first(name), 'INVITE', ua.uri, user, secret)}"]
                continue
            break
        if resp.status_code >= 300:
            _ack_failure(ua, resp, cseq, branch)
            raise SelfTestError(f"the edge answered the echo test call as {user} with "
                                f"{resp.status_code} {resp.reason_phrase}")
        setup_ms = (time.monotonic() - start) * 1000
        answered = time.monotonic()
        to = resp.headers.get_first("to")
        contact = re.search(r"<([^>]+)>", resp.headers.get_first("contact") or "")
        target = contact.group(1) if contact else ua.uri
        routes = list(reversed(resp.headers.get("record-route")))
        ua.request("ACK", target, cseq=cseq, to=to, routes=routes)
        try:
            media = sdp.parse(resp.body if isinstance(resp.body, bytes) else str(resp.body or "").encode())
        except ValueError as exc:
            raise SelfTestError(f"the answer's SDP cannot be read: {exc}") from exc
        if media.address is None:
            raise SelfTestError("the answer's SDP has no audio address")
        echoed, first_echo = _talk(ua, media.address, min(timeout, PROMPT_WAIT_S + SEND_S))
        cseq += 1
        ua.request("BYE", target, cseq=cseq, to=to, routes=routes)
        bye = ua.final(cseq, "BYE", 8.0).status_code
        if echoed < FRAMES_NEEDED:
            raise SelfTestError(f"the echo test answered but {echoed} of our audio frames came back "
                                f"from {media.address[0]}:{media.address[1]} (need {FRAMES_NEEDED}): "
                                "media does not flow")
        if bye != 200:
            raise SelfTestError(f"the BYE ending the echo test got {bye}, not 200")
        return SelfTestResult(user, setup_ms, (first_echo - answered) * 1000, echoed, bye)
    finally:
        ua.close()


def _talk(ua: _Ua, remote: tuple[str, int], limit_s: float) -> tuple[int, float]:
    """Send frames every 20 ms until FRAMES_NEEDED of them came back or limit_s; (echoed, when first)."""
    sent: set[bytes] = set()
    echoed, first, n = 0, 0.0, 0
    ssrc, seq, ts = secrets.randbits(32), secrets.randbits(16), secrets.randbits(32)
    end = time.monotonic() + limit_s
    next_send = time.monotonic()
    while time.monotonic() < end and echoed < FRAMES_NEEDED:
        now = time.monotonic()
        if now >= next_send:
            payload = _frame(n)
            sent.add(payload)
            ua.rtp.sendto(struct.pack("!BBHII", 0x80, 0, (seq + n) & 0xFFFF, (ts + 160 * n) & 0xFFFFFFFF, ssrc)
                          + payload, remote)
            n += 1
            next_send += 0.02
        ready, _, _ = select.select([ua.rtp, ua.sip], [], [], max(0.0, next_send - time.monotonic()))
        if ua.sip in ready:
            data = ua.sip.recv(65535)
            try:
                msg = SipMessage.parse(data)
            except Exception:           # noqa: BLE001
                msg = None
            if msg is not None and not isinstance(msg, SipResponse):
                ua._answer(msg)
        if ua.rtp in ready:
            data = ua.rtp.recv(2048)
            if len(data) >= 12 and data[1] & 0x7F == 0 and data[12 + 4 * (data[0] & 0x0F):] in sent:
                echoed += 1
                first = first or time.monotonic()
    return echoed, first


def pick_extension(data_dir: Path) -> tuple[str, str] | None:
    """(number, secret) of an enabled extension of the box to place the self-test call as, or None
    when there is none yet (a box before its setup): the lowest number, for a stable choice.

    Reads config.json directly, read-only: the update check runs as root, and opening the
    ConfigStore would create its lock file (or migrate the file) as root in the data directory
    the services own as user pbx. The services have migrated it before they were READY."""
    path = Path(data_dir) / CONFIG_FILE
    try:
        tables = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise SelfTestError(f"cannot read {path}: {exc}") from exc
    found = sorted((str(doc.get("number", "")), str(doc.get("secret", "")))
                   for doc in (tables.get("extensions") or {}).values()
                   if isinstance(doc, dict) and doc.get("enabled", True) and doc.get("secret"))
    return found[0] if found else None
