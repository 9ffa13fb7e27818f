"""The SIP edge: a real Kamailio on free loopback ports, driven by SIPp, sipsak and raw SIP sockets.

The raw sockets play the two sides the edge sits between: phones (any 127.x address) and the
call service (one UDP socket on cs_addr:cs_port).
"""

import hashlib
import os
import signal
import logging
import re
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from services.edge import Edge, EdgeConfig, EdgeError

logger = logging.getLogger(__name__)

SIPP_DIR = Path(__file__).parent / "sipp"
SUBSCRIBERS = {"1000": "pw1000", "1001": "pw1001", "1002": "pw1002", "1003": "pw1003"}
ATTACKER = "127.0.0.77"


# ----- helpers ----------------------------------------------------------------------------------
def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (Kamailio listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free UDP+TCP port on 127.0.0.1")


class SipMessage:
    def __init__(self, data: bytes):
        text = data.decode("utf-8", "replace")
        head, _, self.body = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        self.first_line = lines[0]
        self.headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]]

    @property
    def status(self) -> int:
        return int(self.first_line.split()[1]) if self.first_line.startswith("SIP/2.0") else 0

    @property
    def method(self) -> str:
        return self.first_line.split()[0]

    def header(self, name: str) -> str:
        return next((v for n, v in self.headers if n.lower() == name.lower()), "")

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


class SipEndpoint:
    """A bare-bones SIP UA on one UDP socket: enough to register, call and attack the edge."""

    def __init__(self, edge_port: int, ip: str = "127.0.0.1", port: int = 0, edge_ip="127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, port))
        self.ip, self.port = self.sock.getsockname()
        self.edge = (edge_ip, edge_port)

    def close(self):
        self.sock.close()

    def send(self, data: bytes, to=None):
        self.sock.sendto(data, to or self.edge)

    def recv(self, timeout: float = 2.0) -> SipMessage | None:
        self.sock.settimeout(timeout)
        try:
            return SipMessage(self.sock.recv(65535))
        except socket.timeout:
            return None

    def drain(self):
        while self.recv(0.05) is not None:
            pass

    def request(self, method: str, uri: str, user: str, *, to_user: str | None = None,
                call_id: str | None = None, cseq: int = 1, branch: str | None = None,
                to_tag: str = "", extra: list[str] = (), body: str = "") -> bytes:
        to_user = to_user if to_user is not None else user
        call_id = call_id or uuid.uuid4().hex
        branch = branch or "z9hG4bK" + uuid.uuid4().hex[:16]
        host = f"{self.edge[0]}:{self.edge[1]}"
        lines = [f"{method} {uri} SIP/2.0",
                 f"Via: SIP/2.0/UDP {self.ip}:{self.port};branch={branch};rport",
                 "Max-Forwards: 70",
                 f"From: <sip:{user}@{host}>;tag=ft{call_id[:8]}",
                 f"To: <sip:{to_user}@{host}>" + (f";tag={to_tag}" if to_tag else ""),
                 f"Call-ID: {call_id}",
                 f"CSeq: {cseq} {method}",
                 f"Contact: <sip:{user}@{self.ip}:{self.port}>",
                 *extra]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

    def final_response(self, data: bytes, timeout: float = 5.0) -> SipMessage | None:
        """Send a request and return its first final (>= 200) response, or None.

        Only a response with this request's Call-ID and CSeq counts: on a loaded machine a late
        answer to an earlier request must not be taken for this one's."""
        request = SipMessage(data)
        wanted = (request.header("Call-ID"), request.header("CSeq"))
        self.send(data)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.recv(max(0.01, deadline - time.monotonic()))
            if msg is not None and msg.status >= 200 and (msg.header("Call-ID"), msg.header("CSeq")) == wanted:
                return msg
        return None

    def register(self, user: str, password: str, *, expires: int = 300) -> SipMessage | None:
        """REGISTER, answer the 401 challenge, return the final answer."""
        uri = f"sip:{self.edge[0]}:{self.edge[1]}"
        call_id = uuid.uuid4().hex
        extra = [f"Expires: {expires}"]
        first = self.final_response(self.request("REGISTER", uri, user, call_id=call_id, extra=extra))
        if first is None or first.status != 401:
            return first
        auth = digest("Authorization", first.header("WWW-Authenticate"), "REGISTER", uri, user, password)
        return self.final_response(self.request("REGISTER", uri, user, call_id=call_id, cseq=2,
                                                extra=extra + [auth]))


class TcpSipEndpoint(SipEndpoint):
    """The same UA over one TCP connection (a phone with transport=tcp)."""

    def __init__(self, edge_port: int, ip: str = "127.0.0.1"):
        self.sock = socket.create_connection(("127.0.0.1", edge_port), timeout=2,
                                             source_address=(ip, 0))
        self.ip, self.port = self.sock.getsockname()
        self.edge = ("127.0.0.1", edge_port)
        self.buffer = b""

    def send(self, data: bytes, to=None):
        self.sock.sendall(data)

    def recv(self, timeout: float = 2.0) -> SipMessage | None:
        deadline = time.monotonic() + timeout
        while True:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if sep:
                length = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
                size = int(length.group(1)) if length else 0
                if len(rest) >= size:
                    self.buffer = rest[size:]
                    return SipMessage(head + sep + rest[:size])
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65535)
            except socket.timeout:
                return None
            if not chunk:
                return None
            self.buffer += chunk

    def request(self, *args, **kwargs) -> bytes:
        data = super().request(*args, **kwargs)
        return data.replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP", 1).replace(
            f"@{self.ip}:{self.port}>".encode(), f"@{self.ip}:{self.port};transport=tcp>".encode(), 1)


def digest(header: str, challenge: str, method: str, uri: str, user: str, password: str) -> str:
    """RFC 2617 digest response (MD5, qop=auth) to a Kamailio challenge."""
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
    realm, nonce = params["realm"], params["nonce"]
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    cnonce, nc = uuid.uuid4().hex[:8], "00000001"
    response = hashlib.md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}".encode()).hexdigest()
    return (f'{header}: Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
            f'response="{response}", algorithm=MD5, qop=auth, nc={nc}, cnonce="{cnonce}"')


def sipsak_options(port: int) -> subprocess.CompletedProcess:
    return subprocess.run(["sipsak", "-s", f"sip:127.0.0.1:{port}"], capture_output=True,
                          text=True, timeout=10)


def options_answered(edge_port: int, ip: str = "127.0.0.1") -> bool:
    phone = SipEndpoint(edge_port, ip)
    try:
        reply = phone.final_response(phone.request("OPTIONS", f"sip:127.0.0.1:{edge_port}", "probe"),
                                     timeout=1.0)
        return reply is not None and reply.status == 200
    finally:
        phone.close()


def run_sipp_register(tmp_path: Path, edge_port: int, user: str, password: str, transport: str):
    csv = tmp_path / f"users-{user}.csv"
    csv.write_text(f"SEQUENTIAL\n{user};[authentication username={user} password={password}]\n")
    return subprocess.run(
        ["sipp", "-sf", str(SIPP_DIR / "edge_register.xml"), "-inf", str(csv),
         "-t", transport, "-i", "127.0.0.1", "-p", str(free_port()), "-m", "1",
         "-timeout", "10", "-timeout_error", "-nostdin", "-trace_err",
         "-error_file", str(tmp_path / f"sipp-{user}-err.log"),
         f"127.0.0.1:{edge_port}"],
        capture_output=True, text=True, timeout=20, cwd=tmp_path)


# ----- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cs_socket():
    """The call service's UDP socket: the edge forwards every phone call here."""
    port = free_port()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    yield sock
    sock.close()


@pytest.fixture(scope="module")
def edge(tmp_path_factory, cs_socket):
    data_dir = tmp_path_factory.mktemp("edge")
    cfg = EdgeConfig(data_dir, sip_port=free_port(), cs_port=cs_socket.getsockname()[1])
    edge = Edge(cfg)
    edge.sync_subscribers(SUBSCRIBERS)
    began = time.monotonic()
    edge.start()
    logger.info("edge start took %.0f ms", (time.monotonic() - began) * 1000)
    yield edge
    edge.stop()


@pytest.fixture
def phone(edge):
    endpoint = SipEndpoint(edge.cfg.sip_port)
    yield endpoint
    endpoint.close()


@pytest.fixture
def cs(edge, cs_socket):
    """The call service side, as a SipEndpoint on the CS socket, drained of earlier traffic."""
    endpoint = SipEndpoint.__new__(SipEndpoint)
    endpoint.sock = cs_socket
    endpoint.ip, endpoint.port = cs_socket.getsockname()
    endpoint.edge = ("127.0.0.1", edge.cfg.sip_port)
    endpoint.drain()
    return endpoint


# ----- keepalive and registration ---------------------------------------------------------------
def test_options_to_the_box_is_answered_200(edge):
    result = sipsak_options(edge.cfg.sip_port)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("transport,sipp_transport", [("udp", "u1"), ("tcp", "t1")])
def test_phone_registers_with_digest_auth_and_is_listed(edge, tmp_path, transport, sipp_transport):
    user = "1000" if transport == "udp" else "1001"
    result = run_sipp_register(tmp_path, edge.cfg.sip_port, user, SUBSCRIBERS[user], sipp_transport)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    mine = [r for r in edge.registrations() if r["aor"] == user and r["transport"] == transport]
    assert mine, edge.registrations()
    assert mine[0]["user_agent"] == "sipp-edge-test"
    assert 0 < mine[0]["expires"] <= 300
    assert mine[0]["contact"].startswith(f"sip:{user}@127.0.0.1:")


def test_wrong_password_and_unknown_user_get_identical_challenges(edge, phone):
    uri = f"sip:127.0.0.1:{edge.cfg.sip_port}"
    first = phone.final_response(phone.request("REGISTER", uri, "1002"))
    assert first.status == 401
    challenge = first.header("WWW-Authenticate")

    def answer(user, password, branch):
        # identical requests apart from the credentials (and the Via branch: a reused branch would
        # make the second a retransmission of the first): the answers may differ only in what
        # follows from those (Via branch, To tag) and in the nonce
        auth = digest("Authorization", challenge, "REGISTER", uri, user, password)
        request = phone.request("REGISTER", uri, "1002", call_id="same-call-id", cseq=2,
                                branch=branch, extra=[auth])
        return phone.final_response(request)

    wrong_password = answer("1002", "not-the-password", "z9hG4bKfirstbranch")
    unknown_user = answer("9999", "pw9999", "z9hG4bKotherbranch")

    def without_nonce(msg):
        # Kamailio's stateless To tag hashes the request's Via, so it follows the branch too
        normal = ((r'nonce="[^"]*"', 'nonce=""'), (r'branch=z9hG4bK\w+', 'branch='), (r';tag=[\w.]+', ';tag='))
        out = []
        for n, v in msg.headers:
            for pattern, repl in normal:
                v = re.sub(pattern, repl, v)
            out.append((n, v))
        return out

    assert wrong_password.first_line == unknown_user.first_line == "SIP/2.0 401 Unauthorized"
    assert without_nonce(wrong_password) == without_nonce(unknown_user)
    assert 'nonce="' in unknown_user.header("WWW-Authenticate")
    edge.unban("127.0.0.1")  # forget the two counted failures


def test_subscriber_added_while_running_registers_at_once_and_removed_one_is_refused(edge, phone):
    edge.sync_subscribers({**SUBSCRIBERS, "2000": "pw2000"})
    assert phone.register("2000", "pw2000").status == 200

    edge.sync_subscribers(SUBSCRIBERS)
    refused = phone.register("2000", "pw2000")
    assert refused.status == 401
    edge.unban("127.0.0.1")


def test_request_out_of_hops_gets_483(edge, phone):
    request = phone.request("INVITE", f"sip:2000@127.0.0.1:{edge.cfg.sip_port}", "1000",
                            to_user="2000", body=SDP).replace(b"Max-Forwards: 70", b"Max-Forwards: 0")
    assert phone.final_response(request).first_line == "SIP/2.0 483 Too Many Hops"


def test_extension_cannot_register_another_extension(edge, phone):
    uri = f"sip:127.0.0.1:{edge.cfg.sip_port}"
    first = phone.final_response(phone.request("REGISTER", uri, "1003", to_user="1002"))
    auth = digest("Authorization", first.header("WWW-Authenticate"), "REGISTER", uri, "1003", "pw1003")
    second = phone.final_response(phone.request("REGISTER", uri, "1003", to_user="1002", cseq=2,
                                                extra=[auth]))
    assert second.status == 403


# ----- calls: phone -> call service and call service -> phone ----------------------------------
SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio 40000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n")


def response_to(request: SipMessage, status: str, to_tag: str = "cs-tag", contact: str = "") -> bytes:
    """A UAS response: Vias, From, To (+tag), Call-ID, CSeq and Record-Route copied (RFC 3261 12.1.1)."""
    lines = [f"SIP/2.0 {status}"]
    lines += [f"Via: {v}" for v in request.all("Via")]
    lines += [f"Record-Route: {r}" for r in request.all("Record-Route")]
    to = request.header("To")
    lines += [f"From: {request.header('From')}",
              f"To: {to if ';tag=' in to else to + ';tag=' + to_tag}",
              f"Call-ID: {request.header('Call-ID')}",
              f"CSeq: {request.header('CSeq')}"]
    if contact:
        lines.append(f"Contact: <{contact}>")
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def wait_for_request(endpoint: SipEndpoint, method: str, timeout: float = 3.0):
    """Next request of this method on the socket, and who sent it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        endpoint.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data, source = endpoint.sock.recvfrom(65535)
        except socket.timeout:
            break
        msg = SipMessage(data)
        if msg.first_line.startswith(method + " "):
            return msg, source
    return None, None


def test_invite_from_phone_is_challenged_then_relayed_to_the_call_service(edge, phone, cs):
    assert phone.register("1000", "pw1000").status == 200
    uri = f"sip:2000@127.0.0.1:{edge.cfg.sip_port}"
    call_id = uuid.uuid4().hex
    challenge = phone.final_response(phone.request("INVITE", uri, "1000", to_user="2000",
                                                   call_id=call_id, body=SDP))
    assert challenge.status == 407
    auth = digest("Proxy-Authorization", challenge.header("Proxy-Authenticate"), "INVITE", uri,
                  "1000", "pw1000")
    phone.send(phone.request("INVITE", uri, "1000", to_user="2000", call_id=call_id, cseq=2,
                             extra=[auth], body=SDP))

    invite, source = wait_for_request(cs, "INVITE")
    assert invite is not None, "the INVITE never reached the call service"
    assert source == ("127.0.0.1", edge.cfg.sip_port)
    assert f"127.0.0.1:{edge.cfg.sip_port}" in invite.all("Via")[0]
    assert len(invite.all("Via")) == 2
    assert any(f"127.0.0.1:{edge.cfg.sip_port};lr" in rr for rr in invite.all("Record-Route"))
    assert not invite.header("Proxy-Authorization"), "credentials must not leak to the CS"

    # the CS answers; the ACK and BYE of the phone follow the Record-Route set back to it
    cs.send(response_to(invite, "200 OK", contact=f"sip:cs@127.0.0.1:{cs.port}"), source)
    ok = phone.recv()
    while ok is not None and ok.status < 200:
        ok = phone.recv()
    assert ok.status == 200
    route = [f"Route: {rr}" for rr in reversed(ok.all("Record-Route"))]
    in_dialog = dict(to_user="2000", call_id=call_id, to_tag="cs-tag")
    phone.send(phone.request("ACK", f"sip:cs@127.0.0.1:{cs.port}", "1000", cseq=2, extra=route,
                             **in_dialog))
    ack, _ = wait_for_request(cs, "ACK")
    assert ack is not None and ack.header("Call-ID") == call_id

    phone.send(phone.request("BYE", f"sip:cs@127.0.0.1:{cs.port}", "1000", cseq=3, extra=route,
                             **in_dialog))
    bye, source = wait_for_request(cs, "BYE")
    assert bye is not None and bye.header("Call-ID") == call_id
    cs.send(response_to(bye, "200 OK"), source)
    assert phone.recv().status == 200


def test_a_phone_may_only_call_as_itself(edge, phone):
    uri = f"sip:2000@127.0.0.1:{edge.cfg.sip_port}"
    challenge = phone.final_response(phone.request("INVITE", uri, "1001", to_user="2000", body=SDP))
    auth = digest("Proxy-Authorization", challenge.header("Proxy-Authenticate"), "INVITE", uri,
                  "1000", "pw1000")
    spoofed = phone.final_response(phone.request("INVITE", uri, "1001", to_user="2000", cseq=2,
                                                 extra=[auth], body=SDP))
    assert spoofed.status == 403


def test_invite_from_the_call_service_reaches_the_registered_phone(edge, cs):
    desk = SipEndpoint(edge.cfg.sip_port)
    try:
        assert desk.register("1002", "pw1002").status == 200
        cs.send(cs.request("INVITE", f"sip:1002@127.0.0.1:{edge.cfg.sip_port}", "2000",
                           to_user="1002", body=SDP))
        invite, source = wait_for_request(desk, "INVITE")
        assert invite is not None, "the phone never got the INVITE"
        assert source == ("127.0.0.1", edge.cfg.sip_port)
        assert invite.first_line == f"INVITE sip:1002@127.0.0.1:{desk.port} SIP/2.0"
        assert any(f"127.0.0.1:{edge.cfg.sip_port};lr" in rr for rr in invite.all("Record-Route"))

        desk.send(response_to(invite, "486 Busy Here", to_tag="desk"), source)
        busy = cs.recv()
        while busy is not None and busy.status < 200:
            busy = cs.recv()
        assert busy.status == 486
    finally:
        desk.close()


def test_invite_from_the_call_service_reaches_a_phone_over_its_tcp_connection(edge, cs):
    desk = TcpSipEndpoint(edge.cfg.sip_port)
    try:
        assert desk.register("1001", "pw1001").status == 200
        assert any(r["aor"] == "1001" and r["transport"] == "tcp" for r in edge.registrations())
        cs.send(cs.request("INVITE", f"sip:1001@127.0.0.1:{edge.cfg.sip_port}", "2000",
                           to_user="1001", body=SDP))
        invite = desk.recv()
        while invite is not None and invite.first_line.startswith("SIP/2.0"):
            invite = desk.recv()
        assert invite is not None and invite.method == "INVITE"
        assert invite.all("Via")[0].startswith("SIP/2.0/TCP")
        desk.send(response_to(invite, "486 Busy Here", to_tag="desk"))
        busy = cs.recv()
        while busy is not None and busy.status < 200:
            busy = cs.recv()
        assert busy.status == 486
    finally:
        desk.close()


def test_invite_from_the_call_service_to_an_unregistered_extension_gets_480(edge, cs):
    reply = cs.final_response(cs.request("INVITE", f"sip:1003@127.0.0.1:{edge.cfg.sip_port}",
                                         "2000", to_user="1003", body=SDP))
    assert reply.first_line == "SIP/2.0 480 Temporarily Unavailable"


# ----- attacks ----------------------------------------------------------------------------------
def test_eleven_wrong_passwords_ban_the_source_ip_until_unbanned(edge):
    attacker = SipEndpoint(edge.cfg.sip_port, ip=ATTACKER)
    try:
        for attempt in range(1, 12):
            reply = attacker.register("1000", f"guess{attempt}")
            if attempt <= 10:
                assert reply.status == 401, f"attempt {attempt}: {reply and reply.first_line}"
        assert ATTACKER in edge.bans()
        assert not options_answered(edge.cfg.sip_port, ATTACKER), "a banned IP must get no answer"
        assert attacker.register("1000", "pw1000") is None, "not even with the right password"
        assert options_answered(edge.cfg.sip_port, "127.0.0.1"), "other IPs are not affected"

        edge.unban(ATTACKER)
        assert ATTACKER not in edge.bans()
        assert options_answered(edge.cfg.sip_port, ATTACKER)
        assert attacker.register("1000", "pw1000").status == 200
    finally:
        attacker.close()
        edge.unban(ATTACKER)


def test_malformed_junk_does_not_kill_kamailio(edge):
    pid = edge.pid
    junk = [
        bytes(range(256)) * 4,
        b"\x00" * 1000,
        b"INVITE sip:1000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\nFrom: <sip:",
        b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKy\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:b@c>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n"
        b"Content-Length: 99999\r\n\r\nshort",
        b"REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKz\r\n"
        b"Content-Length: -5\r\nCSeq: nonsense\r\n\r\n",
        b"SIP/2.0 200 OK\r\nVia: garbage\r\n\r\n",
        b"A" * 65507,
        b"INVITE sip:1000@127.0.0.1 SIP/2.0\r\n" + b"Via: SIP/2.0/UDP 127.0.0.1:9\r\n" * 2000,
    ]
    sender = SipEndpoint(edge.cfg.sip_port, ip="127.0.0.5")
    try:
        for datagram in junk:
            sender.send(datagram)
    finally:
        sender.close()
    with socket.create_connection(("127.0.0.1", edge.cfg.sip_port), timeout=2) as tcp:
        tcp.sendall(junk[0] + junk[3] + b"\r\n\r\n" * 100)
    time.sleep(0.3)
    assert edge.running and edge.pid == pid
    assert options_answered(edge.cfg.sip_port)


def test_request_flood_bans_the_source_but_not_a_trusted_address(tmp_path):
    cfg = EdgeConfig(tmp_path, sip_port=free_port(), cs_port=free_port(), flood_limit=(20, 2),
                     trusted=("127.0.0.88",))
    edge = Edge(cfg)
    edge.sync_subscribers(SUBSCRIBERS)
    edge.start()
    try:
        for ip in ("127.0.0.87", "127.0.0.88"):
            flooder = SipEndpoint(cfg.sip_port, ip=ip)
            try:
                for _ in range(60):
                    flooder.send(flooder.request("OPTIONS", f"sip:127.0.0.1:{cfg.sip_port}", "scan"))
            finally:
                flooder.close()
        time.sleep(0.2)
        assert edge.bans() == ["127.0.0.87"]
        assert not options_answered(cfg.sip_port, "127.0.0.87")
        assert options_answered(cfg.sip_port, "127.0.0.88")
    finally:
        edge.stop()


def test_phones_and_the_call_service_may_use_the_sip_domain(tmp_path):
    cs_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    cs_sock.bind(("127.0.0.1", 0))
    cfg = EdgeConfig(tmp_path, sip_port=free_port(), cs_port=cs_sock.getsockname()[1],
                     domain="pbx.example.test")
    edge = Edge(cfg)
    edge.sync_subscribers(SUBSCRIBERS)
    edge.start()
    phone = SipEndpoint(cfg.sip_port)
    try:
        uri = "sip:pbx.example.test"
        first = phone.final_response(phone.request("REGISTER", uri, "1000"))
        assert 'realm="pbx.example.test"' in first.header("WWW-Authenticate")
        auth = digest("Authorization", first.header("WWW-Authenticate"), "REGISTER", uri, "1000", "pw1000")
        assert phone.final_response(phone.request("REGISTER", uri, "1000", cseq=2, extra=[auth])).status == 200

        cs = SipEndpoint(cfg.sip_port)
        cs.sock.close()
        cs.sock, (cs.ip, cs.port) = cs_sock, cs_sock.getsockname()
        cs.send(cs.request("INVITE", "sip:1000@pbx.example.test", "2000", to_user="1000", body=SDP))
        invite, _ = wait_for_request(phone, "INVITE")
        assert invite is not None and invite.first_line.startswith(f"INVITE sip:1000@127.0.0.1:{phone.port}")
        reply = cs.final_response(cs.request("INVITE", "sip:1000@elsewhere.example", "2000",
                                             to_user="1000", body=SDP))
        assert reply.status == 404, "the edge routes only its own domain for the CS"
    finally:
        phone.close()
        cs_sock.close()
        edge.stop()


# ----- process management -----------------------------------------------------------------------
def test_start_on_a_port_in_use_names_the_port(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        port = squatter.getsockname()[1]
        edge = Edge(EdgeConfig(tmp_path, sip_port=port, cs_port=free_port()))
        with pytest.raises(EdgeError, match=f"port {port} on 127.0.0.1 is already in use"):
            edge.start(timeout=5)
        assert not edge.running and edge.pid is None


def test_stop_is_idempotent_and_the_edge_restarts_with_its_subscribers(tmp_path):
    edge = Edge(EdgeConfig(tmp_path, sip_port=free_port(), cs_port=free_port()))
    edge.stop()
    edge.sync_subscribers({"1000": "pw1000"})
    edge.start()
    pid = edge.pid
    edge.stop()
    edge.stop()
    assert not edge.running and edge.pid is None and not Path(f"/proc/{pid}").exists()
    edge.start()
    try:
        phone = SipEndpoint(edge.cfg.sip_port)
        assert phone.register("1000", "pw1000").status == 200
        phone.close()
    finally:
        edge.stop()


@pytest.mark.parametrize("settings,named", [
    ({"sip_addr": "pbx.local"}, "sip_addr"),
    ({"sip_port": 70000}, "sip_port"),
    ({"cs_port": 5060}, "give the call service its own port"),
    ({"trusted": ("10.0.0.300",)}, "trusted entry"),
    ({"flood_limit": (0, 2)}, "flood_limit"),
    ({"domain": "bad domain!"}, "domain"),
    ({"children": 0}, "children"),
])
def test_bad_settings_are_refused_with_the_setting_named(tmp_path, settings, named):
    with pytest.raises(EdgeError, match=re.escape(named)):
        EdgeConfig(tmp_path, **settings)


@pytest.mark.parametrize("subscribers,named", [
    ({"10 00": "pw"}, "extension '10 00'"),
    ({"1000": ""}, "password of extension 1000"),
    ({"1000": "pw\n"}, "control characters"),
    ([("1000", "pw")], "mapping"),
])
def test_bad_subscribers_are_refused_and_the_old_set_kept(edge, subscribers, named):
    with pytest.raises(EdgeError, match=re.escape(named)):
        edge.sync_subscribers(subscribers)
    phone = SipEndpoint(edge.cfg.sip_port)
    try:
        assert phone.register("1003", "pw1003").status == 200
    finally:
        phone.close()


def test_unban_of_a_non_address_is_refused(edge):
    with pytest.raises(EdgeError, match="not an IPv4 address"):
        edge.unban("everyone")


def test_a_crashed_edge_is_restarted_by_start(tmp_path):
    edge = Edge(EdgeConfig(tmp_path, sip_port=free_port(), cs_port=free_port()))
    edge.start()
    try:
        crashed = edge.pid
        os.kill(crashed, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while edge.running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not edge.running
        edge.start()  # the children of the killed main process still hold the port: cleaned up first
        assert edge.running and edge.pid != crashed
        assert options_answered(edge.cfg.sip_port)
    finally:
        edge.stop()


def test_a_pid_file_left_by_a_power_cut_naming_another_process_does_not_stop_the_edge(tmp_path):
    """After a power cut DATA/edge/kamailio.pid survives, and its number may belong to another
    process by the next boot: Kamailio refuses to start on a live pid in its pid file."""
    cfg = EdgeConfig(tmp_path / "data", sip_port=free_port(), cs_port=free_port())
    cfg.run_dir.mkdir(parents=True)
    cfg.pid_path.write_text(f"{os.getpid()}\n")          # alive, and not a Kamailio
    edge = Edge(cfg)
    edge.sync_subscribers(SUBSCRIBERS)
    try:
        edge.start()
        assert edge.running
    finally:
        edge.stop()
