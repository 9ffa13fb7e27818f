"""Browser phone without a browser: the edge's secure WebSocket (RFC 7118) with the web UI's
certificate, its Origin check and digest auth over it (a small RFC 6455 client written here);
the settings refused with a message naming the fix; the /phone page's access rules, strict headers
and credentials only for the caller's own extension."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import socket
import ssl
import struct
import uuid

import pytest

from services.edge import Edge, EdgeConfig
from services.edge.config import EdgeError
from services.edge.rtpengine import RtpEngine, RtpEngineConfig
from tests.browser.webui_env import admin_client, api, make_app, user_client
from tests.pbxproc import free_port, free_rtp_range
from webui.https import certs

ORIGIN = "https://pbx.example:8443"


def rtp_ports() -> tuple[int, int]:
    return free_rtp_range(40)


# ----- a WebSocket client (RFC 6455), enough for SIP over wss ------------------------------------
class Ws:
    def __init__(self, host: str, port: int, origin: str, tls: bool = True):
        raw = socket.create_connection((host, port), timeout=5)
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            raw = ctx.wrap_socket(raw)
        self.sock = raw
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n"
                           f"Origin: {origin}\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            head += chunk
        self.status = int(head.split(b" ", 2)[1]) if head else 0
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        self.accepted = self.status == 101 and accept in head

    def send(self, text: str) -> None:
        data, mask = text.encode(), os.urandom(4)
        n = len(data)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n))
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def recv(self) -> str:
        def exact(n):
            buf = b""
            while len(buf) < n:
                chunk = self.sock.recv(n - len(buf))
                if not chunk:
                    raise ConnectionError("closed")
                buf += chunk
            return buf
        while True:
            b0, b1 = exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", exact(8))[0]
            payload = exact(n)
            if b0 & 0x0F == 0x1:
                return payload.decode()

    def close(self) -> None:
        self.sock.close()


def register(ws: Ws, user: str, realm_host: str, password: str | None) -> str:
    """REGISTER over the WebSocket (answering the challenge with `password`); the final status line."""
    call_id, tag = uuid.uuid4().hex, uuid.uuid4().hex[:8]

    def request(cseq: int, auth: str = "") -> str:
        return (f"REGISTER sip:{realm_host} SIP/2.0\r\nVia: SIP/2.0/WSS abc.invalid;branch=z9hG4bK{uuid.uuid4().hex}\r\n"
                f"Max-Forwards: 70\r\nTo: <sip:{user}@{realm_host}>\r\nFrom: <sip:{user}@{realm_host}>;tag={tag}\r\n"
                f"Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n"
                f"Contact: <sip:x1@abc.invalid;transport=ws>;expires=600\r\n{auth}Content-Length: 0\r\n\r\n")
    ws.send(request(1))
    reply = ws.recv()
    if not reply.startswith("SIP/2.0 401") or password is None:
        return reply.split("\r\n", 1)[0]
    fields = dict(re.findall(r'(\w+)="([^"]*)"', reply.split("WWW-Authenticate:", 1)[1].split("\r\n", 1)[0]))
    uri = f"sip:{realm_host}"
    ha1 = hashlib.md5(f"{user}:{fields['realm']}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"REGISTER:{uri}".encode()).hexdigest()
    cnonce = uuid.uuid4().hex[:8]
    resp = hashlib.md5(f"{ha1}:{fields['nonce']}:00000001:{cnonce}:auth:{ha2}".encode()).hexdigest()
    ws.send(request(2, f'Authorization: Digest username="{user}", realm="{fields["realm"]}", nonce="{fields["nonce"]}", '
                       f'uri="{uri}", response="{resp}", algorithm=MD5, qop=auth, nc=00000001, cnonce="{cnonce}"\r\n'))
    return ws.recv().split("\r\n", 1)[0]


@pytest.fixture
def wss_edge(tmp_path):
    data = tmp_path / "data"
    crt, key = certs.ensure_generated(data, *certs.box_names("127.0.0.1"))
    ws_port = free_port(socket.SOCK_STREAM, both=False)
    cfg = EdgeConfig(data_dir=data, sip_port=free_port(), cs_port=free_port(), ws_port=ws_port,
                     ws_tls=True, ws_cert=str(crt), ws_key=str(key), ws_origins=(ORIGIN,),
                     rtpengine_port=free_port(socket.SOCK_DGRAM, both=False))
    rtp = RtpEngine(RtpEngineConfig(cfg.run_dir, ng_port=cfg.rtpengine_port, ports=rtp_ports()))
    rtp.start()
    edge = Edge(cfg)
    edge.sync_subscribers({"201": "browser-secret-201"})
    try:
        edge.start()
        yield edge
    finally:
        edge.stop()
        rtp.stop()


def test_a_browser_registers_over_secure_websocket_with_its_extensions_password(wss_edge):
    cfg = wss_edge.cfg
    ws = Ws("127.0.0.1", cfg.ws_port, ORIGIN)
    try:
        assert ws.accepted, f"handshake answered {ws.status}"
        # the certificate is the web UI's (DATA/tls/box.crt)
        served = ssl.DER_cert_to_PEM_cert(ws.sock.getpeercert(binary_form=True))
        assert served.split() == open(cfg.ws_cert).read().split()
        assert register(ws, "201", "127.0.0.1", "wrong-password") == "SIP/2.0 401 Unauthorized"
        assert register(ws, "201", "127.0.0.1", "browser-secret-201") == "SIP/2.0 200 OK"
    finally:
        ws.close()
    regs = [r for r in wss_edge.registrations() if r["aor"] == "201"]
    # reached back over the same connection: the source address, transport wss (fix_nated_register)
    assert regs and regs[0]["transport"] == "tls" and regs[0]["received"].endswith(";transport=ws"), regs  # ws over tls


def test_a_call_from_the_call_service_reaches_the_browser_over_wss_with_dtls_srtp_media(wss_edge):
    """The call service offers plain RTP/AVP G.711; the browser gets the INVITE on its secure WebSocket
    with rtpengine's ICE + DTLS-SRTP offer (the flags measured to work with Chromium)."""
    cfg = wss_edge.cfg
    ws = Ws("127.0.0.1", cfg.ws_port, ORIGIN)
    cs = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert register(ws, "201", "127.0.0.1", "browser-secret-201") == "SIP/2.0 200 OK"
        cs.bind(("127.0.0.1", cfg.cs_port))
        cs.settimeout(5)
        sdp = ("v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=pbx\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               "m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
               "a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n")
        call_id = uuid.uuid4().hex
        cs.sendto((f"INVITE sip:201@127.0.0.1:{cfg.sip_port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{cfg.cs_port};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
                   f"Max-Forwards: 70\r\nFrom: <sip:202@127.0.0.1>;tag=cs1\r\nTo: <sip:201@127.0.0.1>\r\n"
                   f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:202@127.0.0.1:{cfg.cs_port}>\r\n"
                   f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}").encode(),
                  ("127.0.0.1", cfg.sip_port))
        invite = ws.recv()
        assert invite.startswith("INVITE sip:x1@abc.invalid") and call_id in invite
        body = invite.split("\r\n\r\n", 1)[1]
        assert re.search(r"^m=audio \d+ UDP/TLS/RTP/SAVPF 0 101", body, re.M), body
        for line in ("a=fingerprint:", "a=setup:", "a=ice-ufrag:", "a=rtcp-mux", "a=candidate:",
                     "a=rtpmap:101 telephone-event/8000"):
            assert line in body, f"{line} missing from the offer to the browser:\n{body}"
        assert "m=audio 40000" not in body and "webrtc=1" in invite   # anchored, marked for in-dialog
        # the browser is busy: its 486 reaches the call service (and rtpengine forgets the call)
        headers = [line.rstrip() + (";tag=br1" if line.startswith("To:") else "")
                   for line in re.findall(r"^(?:Via|From|To|Call-ID|CSeq): .*$", invite, re.M)]
        ws.send("SIP/2.0 486 Busy Here\r\n" + "\r\n".join(headers) + "\r\nContent-Length: 0\r\n\r\n")
        reply = cs.recv(65535).decode()
        while reply.startswith("SIP/2.0 1"):
            reply = cs.recv(65535).decode()
        assert reply.startswith("SIP/2.0 486"), reply
    finally:
        cs.close()
        ws.close()


def test_a_certificate_uploaded_on_the_https_page_is_served_on_wss_without_a_restart(wss_edge, tmp_path):
    from services.browserphone import CertFollower
    cfg = wss_edge.cfg
    follower = CertFollower(cfg)
    assert not follower.check(force=True)                     # nothing changed yet
    other_crt, other_key = certs.ensure_generated(tmp_path / "other", ["pbx.example"], ["127.0.0.1"])
    certs.install(cfg.data_dir, other_crt.read_bytes(), other_key.read_bytes())
    pid = wss_edge.pid
    assert follower.check(force=True)
    ws = Ws("127.0.0.1", cfg.ws_port, ORIGIN)
    try:
        served = ssl.DER_cert_to_PEM_cert(ws.sock.getpeercert(binary_form=True))
        assert served.split() == other_crt.read_text().split(), "wss still serves the old certificate"
        assert ws.accepted and wss_edge.pid == pid
    finally:
        ws.close()


def test_websocket_only_from_the_web_uis_origin_and_only_on_its_port(wss_edge):
    cfg = wss_edge.cfg
    for origin in ("https://evil.example", "https://pbx.example:8444", "null"):
        ws = Ws("127.0.0.1", cfg.ws_port, origin)
        assert ws.status == 403 and not ws.accepted, origin
        ws.close()
    # plain HTTP or a WebSocket on the SIP TCP port gets no handshake
    ws = Ws("127.0.0.1", cfg.sip_port, ORIGIN, tls=False)
    assert ws.status == 403
    ws.close()
    assert "websocket refused ip=127.0.0.1 origin=https://evil.example" in "\n".join(wss_edge._stderr_tail)


def test_browser_phone_settings_are_refused_with_the_fix(tmp_path):
    base = dict(data_dir=tmp_path, ws_port=8443, rtpengine_port=22222, ws_origins=("http://127.0.0.1:8080",))
    with pytest.raises(EdgeError, match="plain ws:// for browser phones only on loopback"):
        EdgeConfig(sip_addr="192.0.2.10", **base)
    with pytest.raises(EdgeError, match="ws_cert '' is not a file.*DATA/tls"):
        EdgeConfig(ws_tls=True, **base)
    with pytest.raises(EdgeError, match="ws_origins is empty"):
        EdgeConfig(**dict(base, ws_origins=()))
    with pytest.raises(EdgeError, match="'pbx.local' is not an origin"):
        EdgeConfig(**dict(base, ws_origins=("pbx.local",)))
    with pytest.raises(EdgeError, match="ws_port 5060 is the SIP port"):
        EdgeConfig(**dict(base, ws_port=5060))
    with pytest.raises(EdgeError, match="RTP ports 80-90"):
        RtpEngineConfig(tmp_path, ports=(80, 90))
    off = EdgeConfig(data_dir=tmp_path).render()
    assert "#!define WITH_WEBRTC" not in off and "listen=tls" not in off


def test_rtpengine_starts_answers_its_control_port_and_stops(tmp_path):
    rtp = RtpEngine(RtpEngineConfig(tmp_path, ng_port=free_port(socket.SOCK_DGRAM, both=False), ports=rtp_ports()))
    rtp.start()
    try:
        assert rtp.running and rtp.ping()
    finally:
        rtp.stop()
    assert not rtp.running and not rtp.ping(0.2)


# ----- the page ---------------------------------------------------------------------------------
@pytest.fixture
def web(tmp_path):
    data = tmp_path / "data"
    from firmware.config import ConfigStore
    store = ConfigStore(data)
    for n in ("201", "202"):
        store.add_extension(n, f"Desk {n}")
    app = make_app(data)
    admin = admin_client(app, data)
    return app, data, store, admin


def _on(data, tls=False, port=8443):
    (data / "edge").mkdir(parents=True, exist_ok=True)
    (data / "edge" / "webrtc.json").write_text(json.dumps({"port": port, "tls": tls}))


def test_a_user_gets_their_own_extensions_credentials_and_nobody_elses(web):
    app, data, store, _ = web
    _on(data)
    user = user_client(app, "201")
    page = user.get("/phone?ext=202")          # the URL cannot choose another extension
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'data-ext="201"' in html and store.get_extension("201").secret not in html
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "connect-src 'self' ws://localhost:8443" in csp
    assert "'unsafe-inline'" not in csp
    assert "microphone=(self)" in page.headers["Permissions-Policy"]
    r = api(user, "POST", "/phone/credentials", data={"ext": "201"})
    assert r.status_code == 200
    assert r.json == {"ws_url": "ws://localhost:8443", "uri": "sip:201@localhost", "user": "201",
                      "password": store.get_extension("201").secret, "name": "Desk 201"}
    assert api(user, "POST", "/phone/credentials", data={"ext": "202"}).status_code == 403
    # without the form token (another site's page posting with the user's cookie): refused
    assert user.post("/phone/credentials", data={"ext": "201"}).status_code == 400
    # the user's own page links to it; other pages keep the microphone off
    assert 'id="browser-phone-link"' in user.get("/me").get_data(as_text=True)
    assert "microphone=()" in user.get("/me").headers["Permissions-Policy"]


def test_an_administrator_chooses_the_extension_and_wss_follows_https(web):
    app, data, store, admin = web
    _on(data, tls=True, port=9443)
    html = admin.get("/phone?ext=202").get_data(as_text=True)
    assert 'data-ext="202"' in html and 'id="choose-ext"' in html
    r = api(admin, "POST", "/phone/credentials", data={"ext": "202"})
    assert r.json["ws_url"] == "wss://localhost:9443" and r.json["password"] == store.get_extension("202").secret
    assert admin.get("/phone?ext=999").status_code == 404
    assert "Browser phone" in admin.get("/dashboard").get_data(as_text=True)


def test_the_page_says_how_to_switch_browser_phones_on(web):
    app, data, store, admin = web
    html = admin.get("/phone?ext=201").get_data(as_text=True)
    assert 'id="phone-off"' in html and "--browser-phone-port" in html and "phone.js" not in html
    r = api(admin, "POST", "/phone/credentials", data={"ext": "201"})
    assert r.status_code == 503 and "--browser-phone-port" in r.json["error"]


# ----- pbx run ----------------------------------------------------------------------------------
def _rtpengines(pbx) -> list[int]:
    from tests.bench.procstat import comm, descendants
    return [p for p in descendants(pbx.proc.pid) if comm(p) == "rtpengine"]


def test_pbx_run_starts_rtpengine_only_for_browser_phones_and_restarts_it_when_it_dies(tmp_path):
    import signal
    import time

    from tests.pbxproc import PbxProcess
    plain = PbxProcess(tmp_path / "plain", args=["--no-lines"]).start()
    try:
        assert _rtpengines(plain) == [] and not (tmp_path / "plain" / "edge" / "webrtc.json").exists()
    finally:
        plain.stop()
    lo, hi = free_rtp_range(40)
    port = free_port(socket.SOCK_STREAM, both=False)
    pbx = PbxProcess(tmp_path / "data", args=["--no-lines", "--browser-phone-port", str(port),
                                              "--browser-phone-rtp-ports", f"{lo}-{hi}"]).start()
    try:
        assert json.loads((tmp_path / "data" / "edge" / "webrtc.json").read_text()) == {"port": port, "tls": False}
        [first] = _rtpengines(pbx)
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and [p for p in _rtpengines(pbx) if p != first] == []:
            time.sleep(0.2)
        assert [p for p in _rtpengines(pbx) if p != first], f"rtpengine not restarted:\n{pbx.log_tail()}"
        assert "rtpengine (browser phone media) is not running: restarting it" in pbx.log_tail(200)
    finally:
        pbx.stop()
