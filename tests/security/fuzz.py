"""A small, seeded SIP + SDP mutation fuzzer for the security tests (issue 7).

Everything a run sends follows from one seed (`Mutator(seed)`): the same seed gives the same
sequence of fuzz messages, so a message that hurt the PBX can be produced again. What the peers
answer, and in which order, depends on timing and is not part of that promise.

Three parts:
  * `Msg` + `Mutator`: valid SIP requests (REGISTER, INVITE with SDP, OPTIONS, BYE, CANCEL, ACK,
    MESSAGE, in-dialog INFO/UPDATE/re-INVITE, ...) and SDP bodies, and the mutations applied to
    them: header deletion and duplication, huge values, bad numbers in CSeq / Content-Length /
    Max-Forwards / Expires, bad URIs and Vias, binary bytes, truncation, and SDP with host names,
    999.999.999.999, IPv6, port 0/65536, no m= line, bad c= lines, bad rtpmap, thousands of codecs.
  * `Agent`: one UDP socket with a receiver thread that plays a SIP role well enough for the
    mutated requests to get deep into the PBX: answers digest challenges (MD5 computed here),
    ACKs final answers, ACKs and hangs up answered calls, answers as a registered callee.
  * `Pacer`: a send-rate limit.

Addresses in generated messages and SDP are only the box, the LAN host, 127.0.0.1 with ports
below 1024, IP literals that cannot be sent to, and names the PBX cannot resolve without DNS
(the call service never resolves names): nothing the fuzz makes the PBX send leaves the machine.
"""

from __future__ import annotations

import hashlib
import random
import re
import socket
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace

CRLF = "\r\n"


# ----- messages ---------------------------------------------------------------------------------
@dataclass
class Msg:
    """A SIP message as start line + ordered headers + body; serialised with a fresh Content-Length
    unless a mutation owns that header (fix_length False)."""

    start: str
    headers: list[list[str]]
    body: bytes = b""
    fix_length: bool = True
    eol: str = CRLF

    def get(self, name: str) -> str:
        return next((v for n, v in self.headers if n.lower() == name.lower()), "")

    def set(self, name: str, value: str) -> None:
        for h in self.headers:
            if h[0].lower() == name.lower():
                h[1] = value
                return
        self.headers.append([name, value])

    def remove(self, name: str) -> None:
        self.headers = [h for h in self.headers if h[0].lower() != name.lower()]

    def copy(self) -> "Msg":
        return Msg(self.start, [list(h) for h in self.headers], self.body, self.fix_length, self.eol)

    def serialize(self) -> bytes:
        headers = [h for h in self.headers if not (self.fix_length and h[0].lower() == "content-length")]
        if self.fix_length:
            headers.append(["Content-Length", str(len(self.body))])
        head = self.eol.join([self.start] + [f"{n}: {v}" for n, v in headers])
        return head.encode("utf-8", "surrogateescape") + (self.eol * 2).encode() + self.body


def parse(data: bytes) -> Msg | None:
    """Lenient parse of what the PBX sends back (its answers are well-formed)."""
    text = data.decode("utf-8", "replace")
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    if not lines or not lines[0]:
        return None
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers.append([name.strip(), value.strip()])
    return Msg(lines[0], headers, body.encode())


def status_of(msg: Msg) -> int:
    if msg.start.startswith("SIP/2.0 "):
        try:
            return int(msg.start.split()[1])
        except (IndexError, ValueError):
            return 0
    return 0


def all_of(msg: Msg, name: str) -> list[str]:
    out = []
    for n, v in msg.headers:
        if n.lower() == name.lower():
            out += [part.strip() for part in re.split(r",(?![^<]*>)", v) if part.strip()]
    return out


def cseq(msg: Msg) -> tuple[int, str]:
    num, _, method = msg.get("CSeq").partition(" ")
    try:
        return int(num), method.strip()
    except ValueError:
        return 0, method.strip()


def tag(value: str) -> str:
    m = re.search(r";\s*tag=([^;>\s]+)\s*$", value.rsplit(">", 1)[-1] if ">" in value else value)
    return m.group(1) if m else ""


def uri_in(value: str) -> str:
    return value.split("<", 1)[1].split(">", 1)[0] if "<" in value else value.split(";", 1)[0].strip()


def digest(challenge: str, method: str, uri: str, user: str, password: str, nc: int = 1) -> str:
    """The Authorization / Proxy-Authorization value answering a digest challenge (RFC 2617)."""
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
    realm, nonce = params.get("realm", ""), params.get("nonce", "")
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    if "auth" in params.get("qop", ""):
        cnonce, ncs = uuid.uuid4().hex[:8], f"{nc:08x}"
        response = hashlib.md5(f"{ha1}:{nonce}:{ncs}:{cnonce}:auth:{ha2}".encode()).hexdigest()
        return (f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
                f'response="{response}", algorithm=MD5, qop=auth, nc={ncs}, cnonce="{cnonce}"')
    response = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
    return (f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
            f'response="{response}", algorithm=MD5')


# ----- building valid messages ------------------------------------------------------------------
@dataclass
class Ctx:
    """Who talks to whom: `target` is where datagrams go and what the URIs name (host:port)."""

    target: tuple[str, int]
    local: tuple[str, int]
    user: str = "1000"
    media_host: str = "127.0.0.1"      # the LAN host: RTP the PBX sends there reaches nothing

    @property
    def hostport(self) -> str:
        return f"{self.target[0]}:{self.target[1]}"


def request(ctx: Ctx, method: str, *, to_user: str, call_id: str | None = None, num: int = 1,
            from_tag: str | None = None, to_tag: str = "", ruri: str | None = None,
            body: bytes = b"", branch: str | None = None, extra=()) -> Msg:
    call_id = call_id or uuid.uuid4().hex
    branch = branch or "z9hG4bK" + uuid.uuid4().hex[:16]
    h = ctx.hostport
    headers = [
        ["Via", f"SIP/2.0/UDP {ctx.local[0]}:{ctx.local[1]};branch={branch};rport"],
        ["Max-Forwards", "70"],
        ["From", f'"Fuzz {ctx.user}" <sip:{ctx.user}@{h}>;tag={from_tag or uuid.uuid4().hex[:10]}'],
        ["To", f"<sip:{to_user}@{h}>" + (f";tag={to_tag}" if to_tag else "")],
        ["Call-ID", call_id],
        ["CSeq", f"{num} {method}"],
        ["Contact", f"<sip:{ctx.user}@{ctx.local[0]}:{ctx.local[1]}>"],
        ["User-Agent", "pbx-security-fuzz"],
        *[list(e) for e in extra],
    ]
    if method == "REGISTER":
        headers.append(["Expires", "300"])
    if body:
        headers.append(["Content-Type", "application/sdp" if body.startswith(b"v=") else "text/plain"])
    uri = ruri or (f"sip:{h}" if method == "REGISTER" else f"sip:{to_user}@{h}")
    return Msg(f"{method} {uri} SIP/2.0", headers, body)


def sdp_lines(host: str, port: int, pts=(8, 0, 101)) -> list[str]:
    lines = ["v=0", f"o=fuzz 1 1 IN IP4 {host}", "s=-", f"c=IN IP4 {host}", "t=0 0",
             f"m=audio {port} RTP/AVP {' '.join(map(str, pts))}"]
    names = {0: "PCMU/8000", 8: "PCMA/8000", 101: "telephone-event/8000"}
    lines += [f"a=rtpmap:{pt} {names[pt]}" for pt in pts if pt in names]
    if 101 in pts:
        lines.append("a=fmtp:101 0-16")
    lines += ["a=ptime:20", "a=sendrecv"]
    return lines


def response(req: Msg, code: int, reason: str, to_tag: str = "", contact: str = "",
             body: bytes = b"") -> Msg:
    headers = [["Via", v] for v in all_of(req, "Via")]
    headers += [["Record-Route", r] for r in all_of(req, "Record-Route")]
    to = req.get("To")
    if to_tag and not tag(to):
        to = f"{to};tag={to_tag}"
    headers += [["From", req.get("From")], ["To", to], ["Call-ID", req.get("Call-ID")],
                ["CSeq", req.get("CSeq")]]
    if contact:
        headers.append(["Contact", f"<{contact}>"])
    if body:
        headers.append(["Content-Type", "application/sdp"])
    return Msg(f"SIP/2.0 {code} {reason}", headers, body)


# ----- mutations ------------------------------------------------------------------------------
BAD_NUMBERS = ["-1", "0", "abc", "", " ", "4294967295", "4294967296", "18446744073709551617",
               "99999999999999999999999999", "1.5", "0x10", "1e9", "+5", "--1", "\x00", "１２"]
BAD_URIS = ["sip:", "sip:@", "sip:1000@", "sip:@@@", "sip:1000@999.999.999.999", "sip:1000@[::1]",
            "sip:1000@[::1", "tel:+15551234", "sips:1000@127.0.0.1", "sip:%00%ff@127.0.0.1",
            "<sip:1000@127.0.0.1>", "sip:1000@127.0.0.1:99999", "sip:1000@127.0.0.1:-1",
            "sip:1000@127.0.0.1;transport=xyz;lr;lr;lr", "http://127.0.0.1/", "sip:" + "9" * 3000 + "@127.0.0.1",
            "sip:1000@pbx.invalid", "sip:1000@bad_host!", "*", "sip:1000@127.0.0.1?Route=%3Csip:x%3E",
            "sip:1000:secret@127.0.0.1", "sip:1000@127.0.0.1:0", "SIP:1000@127.0.0.1", "sip:1000 @127.0.0.1"]
BAD_VIAS = ["SIP/2.0/UDP", "SIP/2.0/XYZ 127.0.0.1:5060;branch=z9hG4bKx", "garbage", "",
            "SIP/2.0/UDP 127.0.0.1:0;branch=", "SIP/2.0/UDP 999.999.999.999:5060;branch=z9hG4bKbad",
            "SIP/2.0/UDP [::1]:5060;branch=z9hG4bKv6", "SIP/2.0/UDP 127.0.0.1:5060",
            "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK" + "b" * 5000, "SIP/3.0/UDP 127.0.0.1;branch=z9hG4bKv3",
            "SIP/2.0/UDP 127.0.0.1:5060;rport=abc;received=999.1.1.1;branch=z9hG4bKr",
            "SIP/2.0/UDP 127.0.0.1:99999;branch=z9hG4bKp", "SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKt",
            "SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKa, SIP/2.0/UDP ,,,", "SIP/2.0/UDP ;;;;;"]
BAD_NAME_ADDRS = ["<sip:1000@127.0.0.1", "sip:1000@127.0.0.1>", '"unbalanced <sip:1000@127.0.0.1>;tag=1',
                  "<>", "<sip:>;tag=", "<sip:1000@127.0.0.1>;tag=a;tag=b", ";tag=only", "\x00",
                  "<sip:1000@127.0.0.1>;tag=" + "t" * 4000, "<tel:123>;tag=1", "Anonymous <sip:@>;tag=x"]
METHODS = ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "MESSAGE", "INFO", "UPDATE",
           "PRACK", "SUBSCRIBE", "NOTIFY", "REFER", "PUBLISH", "FOO", "invite", "INVITE INVITE", ""]
SDP_HOSTS_BAD = ["pbx.invalid", "localhost", "999.999.999.999", "::1", "2001:db8::1",
                 "256.1.1.1", "1.2.3", "127.0.0.1.1", "", " ", "0.0.0.0", "\x00", "a" * 300]


class Mutator:
    """Mutations driven by one seeded RNG: the same seed, the same messages."""

    def __init__(self, seed: int):
        self.seed = seed
        self.rng = random.Random(seed)
        self.used = Counter()  # which mutations ran (reported at the end)

    # -- SDP -----------------------------------------------------------------------------------
    def sdp(self, host: str, port: int, n: int | None = None) -> bytes:
        """An SDP offer/answer with 0..3 mutations (n forces the count)."""
        r = self.rng
        lines = sdp_lines(host, port, r.choice([(8, 0, 101), (0,), (8,), (0, 8), (8, 101)]))
        eol = CRLF
        n = r.choice([0, 1, 1, 1, 2, 2, 3]) if n is None else n
        tail = b""
        for _ in range(n):
            kind = r.choice(["c_host", "c_host", "c_line", "m_port", "m_port", "no_m", "m_line",
                             "codecs", "rtpmap", "rtpmap", "attrs", "del_line", "dup_line", "binary",
                             "truncate", "huge", "eol", "two_m", "session_only_c", "v_o_t"])
            self.used["sdp:" + kind] += 1
            if kind == "c_host":
                bad = r.choice(SDP_HOSTS_BAD)
                fam = "IP6" if ":" in bad and r.random() < 0.7 else "IP4"
                lines = [f"c=IN {fam} {bad}" if x.startswith("c=") else x for x in lines]
            elif kind == "c_line":
                bad = r.choice(["c=IN IP4", "c=", "c=XX YY ZZ", "c=IN IP4 127.0.0.1/127/3",
                                "c=IN IP4 127.0.0.1 extra", "c=IN IP7 127.0.0.1", "c=IN IP4 127.0.0.1/300",
                                f"c=IN IP4 {host}\x00", "c=IN  IP4  127.0.0.1", "c=in ip4 127.0.0.1"])
                lines = [bad if x.startswith("c=") else x for x in lines]
            elif kind == "m_port":
                p = r.choice(["0", "65536", "65535", "-1", "99999999999", "abc", "", "1", "9",
                              f"{port}/2", f"{port}/0", "0x1f40", "4294967296", " 40000"])
                lines = [re.sub(r"^m=audio \S*", f"m=audio {p}", x) if x.startswith("m=") else x
                         for x in lines]
            elif kind == "no_m":
                lines = [x for x in lines if not x.startswith("m=")]
            elif kind == "m_line":
                bad = r.choice(["m=audio", "m=", f"m=audio {port}", f"m=audio {port} RTP/SAVP 8",
                                f"m=audio {port} UDP/TLS/RTP/SAVPF 8", f"m=video {port} RTP/AVP 96",
                                f"m=audio {port} RTP/AVP", f"m=audio {port} RTP/AVP 8 8 8 8",
                                f"m=audio {port} RTP/AVP -1 300 abc 127", f"m=image {port} udptl t38",
                                f"m=audio {port} RTP/AVP 8 " + "x" * 2000])
                lines = [bad if x.startswith("m=") else x for x in lines]
            elif kind == "codecs":
                count = r.choice([200, 1000, 3000, 6000])
                pts = " ".join(str(r.choice([r.randrange(128), 0, 8, 101, 96])) for _ in range(count))
                lines = [f"m=audio {port} RTP/AVP {pts}" if x.startswith("m=") else x for x in lines]
                if r.random() < 0.5:
                    lines += [f"a=rtpmap:{r.randrange(96, 128)} X{i}/8000" for i in range(min(count, 2000))]
            elif kind == "rtpmap":
                lines.append(r.choice(["a=rtpmap:8", "a=rtpmap:abc PCMA/8000", "a=rtpmap:8 PCMA/abc",
                                       "a=rtpmap:8 PCMA", "a=rtpmap:0 PCMA/8000", "a=rtpmap:8 PCMU/8000",
                                       "a=rtpmap:101 telephone-event/0", "a=rtpmap:101 telephone-event",
                                       "a=rtpmap:99999999999 PCMU/8000", "a=rtpmap:-1 PCMU/8000",
                                       "a=rtpmap:8 PCMA/8000/-1", "a=rtpmap:8 PCMA/99999999999999999999",
                                       "a=rtpmap: ", "a=rtpmap:8 /8000", "a=fmtp:101 " + "0-" * 2000,
                                       "a=rtpmap:101 TELEPHONE-EVENT/8000/1/2/3", "a=rtpmap:127 PCMU/8000"]))
                if r.random() < 0.3:
                    lines = [re.sub(r" 101$", " 101 127", x) if x.startswith("m=") else x for x in lines]
            elif kind == "attrs":
                lines += r.sample(["a=sendonly", "a=recvonly", "a=inactive", "a=sendrecv", "a=ptime:0",
                                   "a=ptime:-1", "a=ptime:99999999999", "a=maxptime:abc", "a=rtcp:0",
                                   "a=rtcp:65536 IN IP4 999.999.999.999", "a=rtcp-mux", "a=", "a=:",
                                   "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + "A" * 40,
                                   "a=candidate:1 1 UDP 1 127.0.0.1 9 typ host"], r.randint(1, 4))
            elif kind == "del_line" and lines:
                del lines[r.randrange(len(lines))]
            elif kind == "dup_line" and lines:
                i = r.randrange(len(lines))
                lines[i:i] = [lines[i]] * r.choice([2, 10, 500])
            elif kind == "binary":
                i = r.randrange(len(lines) + 1)
                lines.insert(i, bytes(r.randrange(256) for _ in range(r.randint(1, 40))).decode("latin-1"))
            elif kind == "truncate":
                tail = b"TRUNCATE"
            elif kind == "huge":
                lines.append("a=x-huge:" + "H" * r.choice([1000, 10000, 40000]))
            elif kind == "eol":
                eol = r.choice(["\n", "\r", "\r\n\r\n", "\n\r"])
            elif kind == "two_m":
                lines += [f"m=audio {r.choice([0, port + 2, 9])} RTP/AVP 0", "c=IN IP4 ::1",
                          f"m=audio {port} RTP/AVP 8"]
            elif kind == "session_only_c":
                lines = [x for x in lines if not x.startswith("c=")]
                if r.random() < 0.5:
                    lines.append(f"c=IN IP4 {host}")  # c= after m=: media level only
            elif kind == "v_o_t":
                lines = [x for x in lines if x[:2] not in ("v=", "o=", "t=", "s=")] + ["v=9", "o=", "t=x y"]
        body = (eol.join(lines) + eol).encode("latin-1")
        if tail:
            body = body[:self.rng.randrange(1, len(body))]
        return body

    # -- SIP -------------------------------------------------------------------------------------
    def sip(self, msg: Msg, level: str = "any") -> Msg:
        """Mutate headers/start line. level 'mild' keeps the request routable through the edge
        (the edge checks From, To, Call-ID, CSeq, Via and the credentials)."""
        r = self.rng
        msg = msg.copy()
        mild = ["dup_header", "huge_value", "junk_header", "expires", "compact", "case", "spaces",
                "max_forwards_ok", "folding", "many_headers", "content_type"]
        wild = mild + ["delete", "delete", "cseq", "cseq", "content_length", "content_length",
                       "max_forwards", "uri", "uri", "via", "via", "name_addr", "method", "version",
                       "call_id", "to_tag", "no_colon", "eol", "nul"]
        n = r.choice([1, 1, 1, 2, 2, 3]) if level != "none" else 0
        for _ in range(n):
            kind = r.choice(mild if level == "mild" else wild)
            self.used["sip:" + kind] += 1
            names = [h[0] for h in msg.headers]
            if kind == "delete" and msg.headers:
                del msg.headers[r.randrange(len(msg.headers))]
            elif kind == "dup_header" and msg.headers:
                h = r.choice([h for h in msg.headers if h[0].lower() not in ("proxy-authorization", "authorization")]
                             or msg.headers)
                i = msg.headers.index(h)
                msg.headers[i:i] = [list(h) for _ in range(r.choice([1, 3, 50]))]
            elif kind == "huge_value":
                name = r.choice(["Subject", "User-Agent", "X-Fuzz", "Contact", "Allow", "Supported"]
                                if level == "mild" else names + ["Subject"])
                filler = r.choice(["A", "%", ",", ";", "<", "\"", "\\"]) * r.choice([300, 4000, 30000])
                if name == "Contact":
                    msg.set(name, f"<sip:x{filler[:2000]}@127.0.0.1:9>")
                else:
                    msg.set(name, filler)
            elif kind == "junk_header":
                msg.headers.insert(r.randrange(len(msg.headers) + 1),
                                   [r.choice(["X-" + "Y" * r.choice([1, 500]), "Require", "Proxy-Require",
                                              "Supported", "Session-Expires", "Min-SE", "P-Asserted-Identity",
                                              "Diversion", "Replaces", "Refer-To", "Event", "RAck", "RSeq",
                                              "Privacy", "Reason"]),
                                    r.choice(["100rel", "timer", "abc", "-1", "<sip:evil@127.0.0.1:9>",
                                              "x;y=z", "", "1 1 INVITE", "a" * 700, "precondition"])])
            elif kind == "expires":
                msg.set("Expires", r.choice(BAD_NUMBERS + ["0", "1", "3600", "4294967295"]))
            elif kind == "compact":
                compact = {"via": "v", "from": "f", "to": "t", "call-id": "i", "contact": "m",
                           "content-type": "c", "subject": "s", "supported": "k"}
                for h in msg.headers:
                    if h[0].lower() in compact and r.random() < 0.6:
                        h[0] = compact[h[0].lower()]
            elif kind == "case":
                for h in msg.headers:
                    if r.random() < 0.5:
                        h[0] = r.choice([h[0].upper(), h[0].lower(), h[0].swapcase()])
            elif kind == "spaces" and msg.headers:
                h = r.choice(msg.headers)
                h[0] = h[0] + r.choice(["", " ", "\t", "  "])
                h[1] = r.choice([" ", "\t", "   "]) + h[1] + r.choice(["", " ", "\t"])
            elif kind == "max_forwards_ok":
                msg.set("Max-Forwards", r.choice(["1", "69", "255", "070"]))
            elif kind == "folding" and msg.headers:
                h = r.choice([h for h in msg.headers if h[0].lower() in ("subject", "user-agent", "contact")]
                             or msg.headers[-1:])
                h[1] = h[1] + "\r\n  folded-continuation"
            elif kind == "many_headers":
                msg.headers += [[f"X-N{i}", str(i)] for i in range(r.choice([100, 1000]))]
            elif kind == "content_type":
                msg.set("Content-Type", r.choice(["application/sdp; charset=xyz", "text/plain",
                                                  "multipart/mixed;boundary=x", "", "application/SDP",
                                                  "application/sdp;" + "p=1;" * 200]))
            elif kind == "cseq":
                num, method = cseq(msg)
                msg.set("CSeq", r.choice([f"{r.choice(BAD_NUMBERS)} {method}", f"{num}", f"{num} BYE",
                                          f"{num} {method} extra", f"{num}  {method}", method,
                                          f"{num} " + "M" * 3000, f"2147483648 {method}"]))
            elif kind == "content_length":
                msg.fix_length = False
                msg.remove("Content-Length")
                choices = BAD_NUMBERS + [str(len(msg.body) + r.choice([1, 100, 70000])),
                                         str(max(0, len(msg.body) - 1))]
                msg.headers.append(["Content-Length", r.choice(choices)])
                if r.random() < 0.2:
                    msg.headers.append(["l", r.choice(choices)])
            elif kind == "max_forwards":
                msg.set("Max-Forwards", r.choice(BAD_NUMBERS + ["0", "256", "9999999999"]))
            elif kind == "uri":
                method, _, rest = msg.start.partition(" ")
                msg.start = f"{method} {r.choice(BAD_URIS)} SIP/2.0"
            elif kind == "via":
                vias = [i for i, h in enumerate(msg.headers) if h[0].lower() in ("via", "v")]
                bad = r.choice(BAD_VIAS)
                if vias and r.random() < 0.6:
                    msg.headers[vias[0]][1] = bad
                else:
                    msg.headers.insert(0, ["Via", bad])
            elif kind == "name_addr":
                msg.set(r.choice(["From", "To", "Contact", "Route", "Record-Route"]), r.choice(BAD_NAME_ADDRS))
            elif kind == "method":
                _, _, rest = msg.start.partition(" ")
                msg.start = f"{r.choice(METHODS)} {rest}"
            elif kind == "version":
                uri = msg.start.split(" ")[1] if msg.start.count(" ") >= 2 else "sip:x"
                msg.start = r.choice([f"{msg.start.split(' ')[0]} {uri} SIP/3.0",
                                      f"{msg.start.split(' ')[0]} {uri}", f"{msg.start.split(' ')[0]}  {uri}  SIP/2.0",
                                      f"{msg.start.split(' ')[0]} {uri} sip/2.0", f" {msg.start}",
                                      "SIP/2.0 200 OK", "SIP/2.0 99999 X", "SIP/2.0 abc"])
            elif kind == "call_id":
                msg.set("Call-ID", r.choice(["", " ", "@", "x" * 5000, "a b c", "\x7f", "é" * 20]))
            elif kind == "to_tag":
                msg.set("To", msg.get("To") + f";tag={r.choice(['x', '', 'deadbeef', 'a' * 200])}")
            elif kind == "no_colon" and msg.headers:
                h = r.choice(msg.headers)
                h[0], h[1] = f"{h[0]} {h[1]}", ""
            elif kind == "eol":
                msg.eol = r.choice(["\n", "\r", "\n\r"])
            elif kind == "nul" and msg.headers:
                h = r.choice(msg.headers)
                i = r.randrange(len(h[1]) + 1)
                h[1] = h[1][:i] + r.choice(["\x00", "\xff", "\x1b[2J", "\r", "\n"]) + h[1][i:]
        return msg

    def bytes_(self, data: bytes) -> bytes:
        """Byte-level damage: truncation, bit flips, inserted binary, junk in front."""
        r = self.rng
        kind = r.choice(["truncate", "truncate", "flip", "insert", "prefix", "tcp_frames"])
        self.used["bytes:" + kind] += 1
        if kind == "truncate" and len(data) > 2:
            return data[:r.randrange(1, len(data))]
        if kind == "flip":
            b = bytearray(data)
            for _ in range(r.randint(1, 20)):
                i = r.randrange(len(b))
                b[i] ^= 1 << r.randrange(8)
            return bytes(b)
        if kind == "insert":
            i = r.randrange(len(data) + 1)
            return data[:i] + bytes(r.randrange(256) for _ in range(r.randint(1, 200))) + data[i:]
        if kind == "prefix":
            return r.choice([b"\r\n", b"\x00\x00", b"\xef\xbb\xbf", b"   "]) + data
        return data + data[:r.randrange(len(data))]  # two messages, the second cut short

    def raw_junk(self) -> bytes:
        r = self.rng
        self.used["raw"] += 1
        return r.choice([
            lambda: bytes(r.randrange(256) for _ in range(r.randint(1, 1400))),
            lambda: b"\x00" * r.randint(1, 3000),
            lambda: b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKs\r\n"
                    b"CSeq: 1 INVITE\r\nCall-ID: stray\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:b@c>;tag=2\r\n\r\n",
            lambda: b"\r\n\r\n",
            lambda: b"\r\n",
            lambda: b"INVITE " + b"A" * r.choice([100, 10000, 60000]),
            lambda: b"OPTIONS sip:x SIP/2.0\r\n" + b"Via: SIP/2.0/UDP 127.0.0.1:9\r\n" * r.choice([100, 1500]) + b"\r\n",
        ])()


# ----- sending -----------------------------------------------------------------------------------
class Pacer:
    """At most `rate` sends per second on average (sleeps in small slices)."""

    def __init__(self, rate: float):
        self.rate, self.n, self.t0 = rate, 0, time.monotonic()

    def wait(self) -> None:
        self.n += 1
        due = self.t0 + self.n / self.rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)


@dataclass
class Dialog:
    ruri: str
    ctx: Ctx
    call_id: str = ""
    from_hdr: str = ""
    to_hdr: str = ""
    num: int = 1
    remote_target: str = ""
    routes: list[str] = field(default_factory=list)
    msg: Msg | None = None          # the INVITE as sent (to answer a challenge with)
    user: str = ""
    secret: str = ""
    challenged: bool = False
    established: bool = False


class Agent:
    """One UDP socket and a receiver thread. Roles:
    caller: follows up on its INVITEs (challenge -> credentials, final -> ACK, 2xx -> ACK,
            in-dialog fuzz, junk RTP, BYE); callee: answers what the edge brings it."""

    def __init__(self, sock: socket.socket, ctx: Ctx, *, secret: str = "", mutator: Mutator | None = None,
                 role: str = "caller", rng_seed: int = 0, rtp_sock: socket.socket | None = None,
                 in_dialog_fuzz: bool = True, answer: int | None = None):
        self.sock, self.ctx, self.secret = sock, ctx, secret
        self.answer = answer                    # callee: always this final answer (else random)
        self.mutator = mutator
        self.role = role
        self.rng = random.Random(rng_seed)      # the callee's choices: separate from the mutator's
        self.rtp_sock = rtp_sock
        self.in_dialog_fuzz = in_dialog_fuzz
        self.lock = threading.Lock()
        self.dialogs: dict[str, Dialog] = {}
        self.sent_ids: set[str] = set()
        self.cancelled_ids: set[str] = set()
        self.answered_ids: set[str] = set()
        self.codes = Counter()
        self.fuzz_sent = 0
        self.helper_sent = 0
        self.established = 0
        self.challenge: str = ""
        self.nc = 0
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"fuzz-{role}", daemon=True)
        self.replies: list[Msg] = []      # kept only while `keep_replies` is set (setup steps)
        self.keep_replies = False
        self.errors: list[str] = []
        self.log = None                   # file object: every fuzz message, for reproduction

    # -- plumbing -------------------------------------------------------------------------------
    def start(self) -> "Agent":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_flag.set()
        self.thread.join(5)

    def _send(self, data: bytes, fuzz: bool) -> None:
        try:
            self.sock.sendto(data, self.ctx.target)
        except OSError:
            return  # e.g. a datagram above the 64 KiB limit: nothing was sent
        with self.lock:
            if fuzz:
                self.fuzz_sent += 1
            else:
                self.helper_sent += 1

    def send_fuzz(self, data: bytes, call_id: str = "") -> None:
        if call_id:
            with self.lock:
                self.sent_ids.add(call_id)
        if self.log is not None:
            self.log.write(f"--- {self.role} #{self.fuzz_sent} to {self.ctx.target} call-id={call_id!r}\n")
            self.log.write(repr(data[:3000]) + "\n")
        self._send(data, True)

    def _run(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop_flag.is_set():
            try:
                data, src = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            msg = parse(data)
            if msg is None:
                continue
            try:
                if msg.start.startswith("SIP/2.0"):
                    self._on_response(msg)
                else:
                    self._on_request(msg, src)
            except Exception as exc:  # the fuzzer must keep going; the test reports these
                self.errors.append(f"{type(exc).__name__}: {exc}")

    # -- setup helpers (synchronous) ------------------------------------------------------------
    def transact(self, msg: Msg, timeout: float = 3.0) -> Msg | None:
        """Send one request, wait for its final answer (used to register)."""
        call_id, want = msg.get("Call-ID"), msg.get("CSeq")
        with self.lock:
            self.replies = []
            self.keep_replies = True
        self._send(msg.serialize(), False)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                with self.lock:
                    for r in self.replies:
                        if r.get("Call-ID") == call_id and r.get("CSeq") == want and status_of(r) >= 200:
                            return r
                time.sleep(0.01)
            return None
        finally:
            with self.lock:
                self.keep_replies = False

    def register(self, expires: int = 300) -> int:
        ctx = self.ctx
        call_id = uuid.uuid4().hex
        first = self.transact(request(ctx, "REGISTER", to_user=ctx.user, call_id=call_id,
                                      extra=[("Expires", str(expires))]))
        if first is None or status_of(first) != 401:
            return status_of(first) if first else 0
        auth = digest(first.get("WWW-Authenticate"), "REGISTER", f"sip:{ctx.hostport}", ctx.user, self.secret)
        second = self.transact(request(ctx, "REGISTER", to_user=ctx.user, call_id=call_id, num=2,
                                       extra=[("Expires", str(expires)), ("Authorization", auth)]))
        return status_of(second) if second else 0

    # -- caller side ----------------------------------------------------------------------------
    def invite(self, to_user: str, body: bytes, mut: Mutator | None = None, sip_level: str = "mild",
               authenticate: bool = True, account: tuple[str, str] | None = None) -> None:
        """A new call with this SDP; with credentials if a challenge is known (else on the 407).
        `account` (user, secret) calls as another extension than the agent's own: the edge limits
        INVITEs per account, so a fast fuzz spreads its calls over many."""
        user, secret = account or (self.ctx.user, self.secret)
        ctx = replace(self.ctx, user=user)
        ruri = f"sip:{to_user}@{ctx.hostport}"
        msg = request(ctx, "INVITE", to_user=to_user, body=body)
        d = Dialog(ruri=ruri, ctx=ctx, from_hdr=msg.get("From"), to_hdr=msg.get("To"), user=user, secret=secret)
        if authenticate and self.challenge:
            msg.headers.append(["Proxy-Authorization", self._credentials("INVITE", ruri, user, secret)])
        if sip_level != "none" and mut is not None:
            msg = mut.sip(msg, sip_level)
        d.msg = msg
        call_id = msg.get("Call-ID") or msg.get("i")
        d.call_id = call_id
        with self.lock:
            self.dialogs[call_id] = d
        self.send_fuzz(msg.serialize(), call_id)

    def cancel_last(self) -> None:
        """CANCEL the newest INVITE (same branch): races the call setup."""
        with self.lock:
            if not self.dialogs:
                return
            call_id, d = next(reversed(self.dialogs.items()))
        if d.msg is None or d.established:
            return
        via = d.msg.get("Via")
        num, _ = cseq(d.msg)
        with self.lock:
            self.cancelled_ids.add(call_id)
        c = Msg(f"CANCEL {d.ruri} SIP/2.0", [["Via", via], ["Max-Forwards", "70"], ["From", d.msg.get("From")],
                                             ["To", d.msg.get("To")], ["Call-ID", call_id], ["CSeq", f"{num} CANCEL"]])
        self.send_fuzz(c.serialize(), call_id)

    def _credentials(self, method: str, uri: str, user: str = "", secret: str = "") -> str:
        with self.lock:
            self.nc += 1
            nc = self.nc
        return digest(self.challenge, method, uri, user or self.ctx.user, secret or self.secret, nc)

    def _on_response(self, msg: Msg) -> None:
        code = status_of(msg)
        call_id = msg.get("Call-ID")
        num, method = cseq(msg)
        with self.lock:
            self.codes[code] += 1
            if call_id in self.sent_ids:
                self.answered_ids.add(call_id)
            if self.keep_replies:
                self.replies.append(msg)
            d = self.dialogs.get(call_id)
        if code in (401, 407):
            challenge = msg.get("Proxy-Authenticate") or msg.get("WWW-Authenticate")
            if challenge:
                self.challenge = challenge
        if method != "INVITE" or d is None or self.role != "caller":
            return
        if code in (401, 407) and not d.challenged and d.msg is not None and d.secret:
            d.challenged = True   # answer the challenge once, with the same (mutated) request
            retry = d.msg.copy()
            retry.remove("Proxy-Authorization")
            retry.headers.append(["Proxy-Authorization", self._credentials("INVITE", d.ruri, d.user, d.secret)])
            n, m = cseq(retry)
            if retry.get("CSeq"):
                retry.set("CSeq", f"{n + 1} {m or 'INVITE'}")
            retry.set("Via", f"SIP/2.0/UDP {self.ctx.local[0]}:{self.ctx.local[1]};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport")
            d.msg = retry
            d.num = n + 1
            self._send(retry.serialize(), False)
            self._ack_non_2xx(msg, d)
            return
        if code >= 300:
            self._ack_non_2xx(msg, d)
        elif 200 <= code < 300:
            self._on_2xx(msg, d, num)
        elif code == 183 and msg.body:
            self._junk_rtp(msg.body, 3)

    def _ack_non_2xx(self, resp: Msg, d: Dialog) -> None:
        num, _ = cseq(resp)
        via = all_of(resp, "Via")
        if not via:
            return
        ack = Msg(f"ACK {d.ruri} SIP/2.0", [["Via", via[0]], ["Max-Forwards", "70"], ["From", resp.get("From")],
                                            ["To", resp.get("To")], ["Call-ID", resp.get("Call-ID")],
                                            ["CSeq", f"{num} ACK"]])
        self._send(ack.serialize(), False)

    def _in_dialog(self, d: Dialog, method: str, num: int | None = None, body: bytes = b"") -> Msg:
        if num is None:
            d.num += 1
            num = d.num
        headers = [["Via", f"SIP/2.0/UDP {self.ctx.local[0]}:{self.ctx.local[1]};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport"],
                   ["Max-Forwards", "70"]]
        headers += [["Route", r] for r in d.routes]
        headers += [["From", d.from_hdr], ["To", d.to_hdr], ["Call-ID", d.call_id], ["CSeq", f"{num} {method}"],
                    ["Contact", f"<sip:{d.user or self.ctx.user}@{self.ctx.local[0]}:{self.ctx.local[1]}>"]]
        if body:
            headers.append(["Content-Type", "application/sdp"])
        return Msg(f"{method} {d.remote_target} SIP/2.0", headers, body)

    def _on_2xx(self, resp: Msg, d: Dialog, num: int) -> None:
        first = not d.established
        if first:
            d.established = True
            d.call_id = resp.get("Call-ID")
            d.to_hdr = resp.get("To")
            d.routes = list(reversed(all_of(resp, "Record-Route")))
            d.remote_target = uri_in(resp.get("Contact") or d.ruri)
            with self.lock:
                self.established += 1
        self._send(self._in_dialog(d, "ACK", num=num).serialize(), False)
        if not first:
            return
        if resp.body:
            self._junk_rtp(resp.body, 5)
        if self.in_dialog_fuzz and self.mutator is not None:
            self._fuzz_in_dialog(d)
        self._send(self._in_dialog(d, "BYE").serialize(), False)

    def _fuzz_in_dialog(self, d: Dialog) -> None:
        """A few mutated in-dialog requests. They run on the receiver thread with the agent's own
        mutator, so the main sequence stays the seed's whatever the timing."""
        m = self.mutator
        for _ in range(m.rng.choice([1, 1, 2, 3])):
            method = m.rng.choice(["INVITE", "INVITE", "INFO", "UPDATE", "OPTIONS", "MESSAGE",
                                   "NOTIFY", "REFER", "PRACK", "FOO", "BYE"])
            body = (m.sdp(self.ctx.media_host, 4000 + 2 * m.rng.randrange(1000)) if method in ("INVITE", "UPDATE")
                    else b"Signal=5\r\nDuration=160\r\n" if method == "INFO" else b"")
            msg = self._in_dialog(d, method, body=body)
            if m.rng.random() < 0.5:
                msg = m.sip(msg, "mild")
            self.send_fuzz(msg.serialize(), d.call_id)

    def _junk_rtp(self, sdp_body: bytes, count: int) -> None:
        """RTP-ish datagrams at the PBX's media port: runts, bad versions, DTMF payload types."""
        if self.rtp_sock is None:
            return
        text = sdp_body.decode("latin-1")
        c = re.search(r"c=IN IP4 ([\d.]+)", text)
        m = re.search(r"m=audio (\d+)", text)
        if not (c and m):
            return
        dest = (c.group(1), int(m.group(1)))
        for i in range(count):
            kind = self.rng.randrange(5)
            if kind == 0:
                pkt = bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(1, 12)))
            elif kind == 1:  # RFC 4733 event with a CSRC count pointing past the end
                pkt = bytes([0x8F, 101, 0, i]) + b"\x00" * 8 + b"\x05"
            elif kind == 2:
                pkt = bytes([0x80, 0x80 | 101, 0, i, 0, 0, 0, 160, 1, 2, 3, 4, 5, 0x80, 0, 160])
            else:
                pkt = bytes([0x80, self.rng.choice([0, 8, 18, 127]), 0, i]) + bytes(8) + bytes(
                    self.rng.randrange(256) for _ in range(self.rng.choice([0, 160, 1400])))
            try:
                self.rtp_sock.sendto(pkt, dest)
            except OSError:
                pass

    # -- callee side ----------------------------------------------------------------------------
    def _on_request(self, req: Msg, src) -> None:
        method = req.start.split(" ", 1)[0]
        if method == "ACK":
            return
        to_tag = tag(req.get("To"))
        if method == "INVITE" and not to_tag:
            r = self.rng.random()
            contact = f"sip:{self.ctx.user}@{self.ctx.local[0]}:{self.ctx.local[1]}"
            my_tag = uuid.uuid4().hex[:8]
            if self.answer is not None:
                out = [response(req, 180, "Ringing", my_tag, contact),
                       response(req, self.answer, "Fixed Answer", my_tag, contact,
                                b"" if self.answer >= 300 else self.mutator.sdp(self.ctx.media_host, 4000, n=0))]
            elif r < 0.45:
                out = [response(req, 486, "Busy Here", my_tag)]
            elif r < 0.85:
                body = self.mutator.sdp(self.ctx.media_host, 4000 + 2 * self.rng.randrange(1000))
                out = [response(req, 180, "Ringing", my_tag, contact),
                       response(req, 200, "OK", my_tag, contact, body)]
            else:
                code = self.rng.choice([403, 404, 480, 500, 503, 603, 699])
                out = [response(req, 183, "Session Progress", my_tag, contact,
                                self.mutator.sdp(self.ctx.media_host, 4002)),
                       response(req, code, "Nope", my_tag)]
        elif method == "INVITE":
            body = self.mutator.sdp(self.ctx.media_host, 4000 + 2 * self.rng.randrange(1000), n=0)
            out = [response(req, 200, "OK", "", f"sip:{self.ctx.user}@{self.ctx.local[0]}:{self.ctx.local[1]}", body)]
        else:
            out = [response(req, 200, "OK", uuid.uuid4().hex[:8] if not to_tag else "")]
        for o in out:
            try:
                self.sock.sendto(o.serialize(), src)
            except OSError:
                pass
            with self.lock:
                self.helper_sent += 1

    # -- summary ---------------------------------------------------------------------------------
    def stats(self) -> dict:
        with self.lock:
            return {"fuzz_sent": self.fuzz_sent, "helper_sent": self.helper_sent,
                    "call_ids": len(self.sent_ids), "answered_call_ids": len(self.answered_ids),
                    "answers": sum(self.codes.values()), "established": self.established,
                    "codes": dict(sorted(self.codes.items())), "errors": self.errors[:5]}


# ----- the three fuzz phases ----------------------------------------------------------------------
OOD_METHODS = ["REGISTER", "INVITE", "OPTIONS", "BYE", "CANCEL", "ACK", "MESSAGE", "INFO", "UPDATE",
               "SUBSCRIBE", "NOTIFY", "PRACK", "REFER", "PUBLISH"]


def any_message(mut: Mutator, ctx: Ctx, users: list[str]) -> tuple[bytes, str]:
    """One fully mutated message of any kind (or raw junk), and its Call-ID if it has one."""
    r = mut.rng
    if r.random() < 0.08:
        return mut.raw_junk(), ""
    method = r.choice(OOD_METHODS)
    in_dialog = method in ("BYE", "ACK", "INFO", "UPDATE", "NOTIFY", "PRACK") or r.random() < 0.15
    body = b""
    if method in ("INVITE", "UPDATE", "ACK", "PRACK") and r.random() < 0.8:
        body = mut.sdp(ctx.media_host, 4000 + 2 * r.randrange(1000))
    elif method in ("MESSAGE", "INFO", "NOTIFY", "PUBLISH"):
        body = r.choice([b"hello", b"Signal=1\r\nDuration=100\r\n", b"\xff\xfe" * 50, b""])
    msg = request(ctx, method, to_user=r.choice(users), body=body,
                  to_tag=uuid.uuid4().hex[:8] if in_dialog else "")
    msg = mut.sip(msg, "any")
    call_id = msg.get("Call-ID") or msg.get("i")
    data = msg.serialize()
    if r.random() < 0.2:
        data = mut.bytes_(data)
    return data, call_id


def run_edge_unauthenticated(agent: Agent, mut: Mutator, count: int, rate: float, users: list[str]) -> None:
    """(a) Anything, without credentials, at the edge."""
    pacer = Pacer(rate)
    for _ in range(count):
        data, call_id = any_message(mut, agent.ctx, users)
        agent.send_fuzz(data, call_id)
        pacer.wait()


def run_authenticated(caller: Agent, mut: Mutator, count: int, rate: float, callee: str,
                      unregistered: str, users: list[str], accounts: list[tuple[str, str]] = ()) -> None:
    """(b) As extensions with digest credentials: mutated INVITE SDP reaches the call service, which
    rings the fuzz callee (it answers busy, or 200 with a mutated SDP answer). INVITEs rotate over
    `accounts` (user, secret) to stay under the edge's per-account call rate."""
    pacer = Pacer(rate)
    r = mut.rng
    ctx = caller.ctx
    n = 0
    while caller.fuzz_sent < count:
        x = r.random()
        if x < 0.55:
            to = r.choices([callee, "1999", unregistered], weights=[7, 1.5, 1.5])[0]
            body = mut.sdp(ctx.media_host, 4000 + 2 * r.randrange(1000))
            account = accounts[n % len(accounts)] if accounts else None
            n += 1
            caller.invite(to, body, mut, sip_level="mild" if r.random() < 0.3 else "none", account=account)
        elif x < 0.63:
            caller.cancel_last()
        elif x < 0.83:
            method = r.choice(["OPTIONS", "MESSAGE", "INFO", "SUBSCRIBE", "NOTIFY", "UPDATE", "PUBLISH"])
            to = r.choice(users)
            ruri = f"sip:{to}@{ctx.hostport}"
            msg = request(ctx, method, to_user=to, body=b"hi" if method == "MESSAGE" else b"")
            if caller.challenge:
                msg.headers.append(["Proxy-Authorization", caller._credentials(method, ruri)])
            msg = mut.sip(msg, "mild")
            caller.send_fuzz(msg.serialize(), msg.get("Call-ID"))
        else:
            data, call_id = any_message(mut, ctx, users)
            caller.send_fuzz(data, call_id)
        pacer.wait()


def run_call_service_direct(caller: Agent, mut: Mutator, count: int, rate: float, callee: str,
                            users: list[str]) -> None:
    """(c) Straight at the call service's own UDP port, past the edge."""
    pacer = Pacer(rate)
    r = mut.rng
    ctx = caller.ctx
    while caller.fuzz_sent < count:
        x = r.random()
        if x < 0.4:
            to = r.choices([callee, "1999"], weights=[8, 2])[0]
            caller.invite(to, mut.sdp(ctx.media_host, 4000 + 2 * r.randrange(1000)), mut,
                          sip_level="mild" if r.random() < 0.3 else "none", authenticate=False)
        elif x < 0.45:
            caller.cancel_last()
        else:
            data, call_id = any_message(mut, ctx, users)
            caller.send_fuzz(data, call_id)
        pacer.wait()
