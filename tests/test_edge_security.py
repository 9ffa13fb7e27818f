"""Issue 7 (security and robustness) at the SIP edge: attacks from hosts on the office LAN.

Every attacker, victim and office host is a network namespace (tests/lanhost.py) joined to the box by
a veth pair, so their packets arrive from LAN addresses, never from 127.0.0.1. The PBX is the real
one (`pbx run`: Kamailio edge + call service, tests/pbxproc.py); the TCP exhaustion test runs the
edge alone (Edge + EdgeConfig, as tests/test_edge.py does) because it needs a lower connection limit.

    A  attacker      relay attempts, spoofing, brute force, the RFC 4475 torture corpus
    V  victim        a phone whose source address A forges
    T  trusted LAN   an office network behind one address (configured trusted network)
    K  trunk         the SIP provider of a configured trunk
    U  untrusted     a flooding host
"""

from __future__ import annotations

import socket
import struct
import time
import uuid
from pathlib import Path

import pytest

from services.edge import Edge, EdgeConfig
from tests.lanhost import LanHost
from tests.pbxproc import PbxProcess, free_port
from tests.test_edge import SDP, SipEndpoint, SipMessage, TcpSipEndpoint, digest

pytestmark = pytest.mark.e2e

EXTS = [str(n) for n in range(2000, 2012)]
RFC4475 = Path(__file__).parent / "rfc4475"


# ----- helpers ----------------------------------------------------------------------------------
class LanPhone(SipEndpoint):
    """A raw SIP UA on a UDP socket inside a LAN host's namespace."""

    def __init__(self, lan: LanHost, edge: tuple[str, int]):
        self.sock = lan.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((lan.host_addr, 0))
        self.ip, self.port = self.sock.getsockname()
        self.edge = edge


class LanTcpPhone(TcpSipEndpoint):
    def __init__(self, lan: LanHost, edge: tuple[str, int], timeout: float = 2.0):
        self.sock = lan.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.bind((lan.host_addr, 0))
        self.sock.connect(edge)
        self.ip, self.port = self.sock.getsockname()
        self.edge = edge
        self.buffer = b""


def edge_ctl(pbx: PbxProcess) -> Edge:
    """The running PBX's edge, for its control FIFO only (bans, unban, registrations)."""
    return Edge(EdgeConfig(pbx.data, sip_addr=pbx.addr, sip_port=pbx.sip_port))


def spoofed_udp(raw: socket.socket, src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> None:
    """One UDP datagram with a forged source address (raw socket, IP header written here)."""
    udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload  # checksum 0: none
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
                     socket.inet_aton(src[0]), socket.inet_aton(dst[0]))  # kernel fills the checksum
    raw.sendto(ip + udp, (dst[0], 0))


def any_answer(sock: socket.socket, timeout: float) -> bytes | None:
    sock.settimeout(timeout)
    try:
        return sock.recv(65535)
    except (socket.timeout, ConnectionRefusedError):
        return None


# ----- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lans():
    hosts = {name: LanHost() for name in "AVTKU"}
    try:
        for h in hosts.values():
            h.start()
        yield hosts
    finally:
        for h in hosts.values():
            h.stop()


@pytest.fixture(scope="module")
def box(tmp_path_factory, lans):
    data = tmp_path_factory.mktemp("pbx")
    pbx = PbxProcess(data, extensions=EXTS, addr=lans["A"].box_addr,
                     settings={"trusted_networks": [f"{lans['T'].host_addr}/30"]})
    pbx.store.add_trunk("provider", lans["K"].host_addr, register=False)
    # one box address for all LAN hosts: the others reach it through their own veth (routes below)
    for name in "VTKU":
        lan = lans[name]
        lan.exec_ip("route", "add", f"{lans['A'].box_addr}/32", "via", lan.box_addr)
    pbx.start()
    yield pbx
    pbx.stop()


@pytest.fixture
def attacker(lans, box):
    phone = LanPhone(lans["A"], box.registrar)
    yield phone
    phone.close()


# ----- item 1: no open relay --------------------------------------------------------------------
@pytest.mark.parametrize("method", ["INVITE", "BYE", "MESSAGE"])
@pytest.mark.parametrize("shape", ["route-to-victim", "our-route-then-ruri-victim"])
def test_in_dialog_looking_request_from_the_lan_is_not_relayed_anywhere(box, attacker, method, shape):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as victim:
        victim.bind((box.addr, 0))
        vip, vport = victim.getsockname()
        edge = f"{box.addr}:{box.sip_port}"
        if shape == "route-to-victim":
            uri, route = f"sip:someone@{vip}:{vport}", f"Route: <sip:{vip}:{vport};lr>"
        else:
            uri, route = f"sip:someone@{vip}:{vport}", f"Route: <sip:{edge};lr;ftag=x>"
        request = attacker.request(method, uri, "2000", to_user="someone", to_tag="victim-tag",
                                   extra=[route], body=SDP if method == "INVITE" else "")
        reply = attacker.final_response(request, timeout=3.0)
        leaked = any_answer(victim, 1.0)
        assert leaked is None, f"the edge relayed a {method} to {vip}:{vport}: {leaked[:120]!r}"
        assert reply is not None and reply.status in (403, 404), reply and reply.first_line


def test_calls_in_dialog_requests_still_work(box, tmp_path):
    """A real call: the hold re-INVITE, the unhold re-INVITE and the BYE pass the edge."""
    from tests.phones.pj import PjPhone
    a = PjPhone(user="2001", secret=box.secrets["2001"], registrar=box.registrar, tone_hz=700,
                record_dir=tmp_path)
    b = PjPhone(user="2002", secret=box.secrets["2002"], registrar=box.registrar, tone_hz=1100,
                record_dir=tmp_path)
    with a, b:
        assert a.register() == 200 and b.register() == 200
        b.auto_answer(200)
        a.call(box.uri("2002"))
        a.wait_state("CONFIRMED", timeout=5)
        b.wait_state("CONFIRMED", timeout=5)
        # the caller's re-INVITEs (through the edge to the call service) are answered: its media
        # state follows only an answered offer (whether the CS passes hold on is not the edge's part)
        mark = a.event_count
        a.hold()
        a.wait_media("LOCAL_HOLD", timeout=5, after=mark)
        mark = a.event_count
        a.unhold()
        a.wait_media("ACTIVE", timeout=5, after=mark)
        a.hangup()
        a.wait_state("DISCONNECTED", timeout=5)
        b.wait_state("DISCONNECTED", timeout=5)


# ----- item 5: spoofed wrong passwords do not ban the victim -------------------------------------
def test_spoofed_wrong_passwords_do_not_ban_the_victim_but_a_real_brute_forcer_is_banned(box, lans, attacker):
    ctl = edge_ctl(box)
    A, V = lans["A"], lans["V"]
    uri = f"sip:{box.addr}:{box.sip_port}"
    # a nonce the attacker really got (for its own address)
    first = attacker.final_response(attacker.request("REGISTER", uri, "2003"))
    assert first.status == 401
    harvested = first.header("WWW-Authenticate")
    raw = A.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    victim_src = (V.host_addr, 5060)
    try:
        for n in range(30):
            challenge = harvested if n % 2 else harvested.replace('nonce="', 'nonce="00ff')
            auth = digest("Authorization", challenge, "REGISTER", uri, "2003", f"guess{n}")
            forged = SipEndpoint.__new__(SipEndpoint)
            forged.ip, forged.port, forged.edge = victim_src[0], victim_src[1], box.registrar
            spoofed_udp(raw, victim_src, box.registrar,
                        forged.request("REGISTER", uri, "2003", cseq=2 + n, extra=[auth]))
            time.sleep(0.02)
    finally:
        raw.close()
    time.sleep(0.3)
    assert V.host_addr not in ctl.bans(), "30 forged packets banned the victim"
    victim = LanPhone(V, box.registrar)
    try:
        reply = victim.register("2004", box.secrets["2004"])
        assert reply is not None and reply.status == 200
    finally:
        victim.close()

    # the attacker itself, who sees every challenge, is banned within 10-12 wrong passwords
    tries = 0
    try:
        for tries in range(1, 13):
            reply = attacker.register("2003", f"brute{tries}")
            if reply is None:
                break
        assert A.host_addr in ctl.bans(), f"no ban after {tries} wrong passwords"
        assert 10 <= tries <= 12, tries
        print(f"brute forcer banned after {tries} tries")
    finally:
        ctl.unban(A.host_addr)


def test_wrong_passwords_over_tcp_ban_the_source(box, lans):
    ctl = edge_ctl(box)
    A = lans["A"]
    tries = 0
    try:
        for tries in range(1, 13):
            try:
                phone = LanTcpPhone(A, box.registrar)
            except OSError:
                break
            try:
                reply = phone.register("2003", f"tcp{tries}")
            finally:
                phone.close()
            if reply is None:
                break
        assert A.host_addr in ctl.bans(), f"no ban after {tries} wrong passwords over TCP"
        assert tries <= 12
    finally:
        ctl.unban(A.host_addr)


# ----- item 16: trusted networks and trunks are not banned for volume; per-account limit ---------
def _flood(lan: LanHost, box: PbxProcess, count: int) -> None:
    phone = LanPhone(lan, box.registrar)
    try:
        for _ in range(count):
            phone.send(phone.request("OPTIONS", f"sip:{box.addr}:{box.sip_port}", "scan"))
    finally:
        phone.close()


def test_trusted_network_and_trunk_above_the_flood_limit_are_not_banned_others_are(box, lans):
    ctl = edge_ctl(box)
    try:
        # limit: 100 requests / 2 s per address. On a loaded machine the edge may work through a
        # burst more slowly than it arrived, so the flood is repeated (at most 3 rounds) until the
        # untrusted flooder's ban shows; the trusted ones get every round too
        bans: list = []
        for _ in range(3):
            for name in "TKU":
                _flood(lans[name], box, 250)
            deadline = time.monotonic() + 3.0
            while lans["U"].host_addr not in (bans := ctl.bans()) and time.monotonic() < deadline:
                time.sleep(0.1)
            if lans["U"].host_addr in bans:
                break
        time.sleep(0.3)
        bans = ctl.bans()
        assert lans["U"].host_addr in bans, "the untrusted flooder was not banned"
        assert lans["T"].host_addr not in bans, "a trusted office network was banned"
        assert lans["K"].host_addr not in bans, "a trunk was banned"
        office = LanPhone(lans["T"], box.registrar)
        try:
            assert office.register("2005", box.secrets["2005"]).status == 200
        finally:
            office.close()
    finally:
        ctl.unban(lans["U"].host_addr)


def test_one_account_is_rate_limited_even_from_a_trusted_network(box, lans):
    office = LanPhone(lans["T"], box.registrar)
    statuses = []
    try:
        for _ in range(30):
            reply = office.register("2006", box.secrets["2006"])
            statuses.append(reply.status if reply else None)
        other = office.register("2007", box.secrets["2007"])
    finally:
        office.close()
    assert statuses[:10] == [200] * 10, statuses
    assert 503 in statuses, f"30 REGISTERs of one account in a row were all accepted: {statuses}"
    assert other is not None and other.status == 200, "another account must not be limited"


# ----- item 15: RFC 4475 torture messages ----------------------------------------------------------
VALID_REQUESTS = ["wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "dblreq",
                  "semiuri", "transports", "mpart01", "badbranch", "unkscm", "novelsc", "unksm2",
                  "bext01", "invut", "regaut01", "zeromf", "cparam01", "cparam02", "regescrt",
                  "sdp01", "inv2543"]
INVALID_REQUESTS = ["badinv01", "clerr", "ncl", "scalar02", "quotbal", "ltgtruri", "lwsruri",
                    "lwsstart", "trws", "escruri", "baddate", "regbadct", "badaspec", "baddn",
                    "badvers", "mismatch01", "mismatch02", "insuf", "multi01", "mcl01"]
RESPONSES = ["unreason", "noreason", "scalarlg", "bigcode", "bcast"]
# Valid, but Kamailio 5.6's core parser refuses them before the routing script runs, so no answer
# can be built (measured: "bad cseq" for the folded CSeq of wsinv; "invalid header name" for the
# extension header names of intmeth and esc02, after which sanity's 400 cannot be built either).
KAMAILIO_PARSER_REFUSES = ["wsinv", "intmeth", "esc02"]


def test_rfc4475_corpus_is_complete():
    names = sorted(p.stem for p in RFC4475.glob("*.dat"))
    assert names == sorted(VALID_REQUESTS + INVALID_REQUESTS + RESPONSES)


def test_rfc4475_valid_requests_are_answered_and_nothing_kills_the_edge(box, lans):
    ctl = edge_ctl(box)
    pid_before = int((box.data / "edge" / "kamailio.pid").read_text())
    sock = lans["A"].socket()
    sock.bind((lans["A"].host_addr, 0))
    unanswered, answers = [], {}
    try:
        for name in VALID_REQUESTS + INVALID_REQUESTS + RESPONSES:
            sock.sendto((RFC4475 / f"{name}.dat").read_bytes(), box.registrar)
            reply = any_answer(sock, 1.5)
            # a provisional answer first: wait for the final one
            while reply is not None and SipMessage(reply).status and SipMessage(reply).status < 200:
                reply = any_answer(sock, 1.5) or reply
                if SipMessage(reply).status < 200:
                    break
            answers[name] = SipMessage(reply).first_line if reply else None
            if name in VALID_REQUESTS and name not in KAMAILIO_PARSER_REFUSES and reply is None:
                unanswered.append(name)
            while any_answer(sock, 0.05) is not None:
                pass
    finally:
        sock.close()
    print("\n".join(f"{n}: {a}" for n, a in answers.items()))
    assert not unanswered, f"valid RFC 4475 requests dropped: {unanswered}"
    for name in INVALID_REQUESTS:
        a = answers[name]
        assert a is None or a.startswith("SIP/2.0 4"), f"{name}: {a}"
    for name in RESPONSES:
        assert answers[name] is None, f"a stray response {name} was answered: {answers[name]}"
    assert int((box.data / "edge" / "kamailio.pid").read_text()) == pid_before
    assert lans["A"].host_addr not in ctl.bans()
    phone = LanPhone(lans["A"], box.registrar)
    try:
        assert phone.register("2008", box.secrets["2008"]).status == 200
    finally:
        phone.close()


# ----- item 8: idle TCP connections cannot lock phones out ---------------------------------------
def test_idle_tcp_connections_are_closed_and_a_tcp_phone_still_registers(tmp_path, lans):
    lan = lans["A"]
    cfg = EdgeConfig(tmp_path, sip_addr=lan.box_addr, sip_port=free_port(), cs_port=free_port(),
                     tcp_max_connections=300, tcp_idle_seconds=5)
    edge = Edge(cfg)
    edge.sync_subscribers({"3000": "pw3000"})
    edge.start()
    idle = []
    try:
        for _ in range(300):
            s = lan.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(2)
            try:
                s.connect((cfg.sip_addr, cfg.sip_port))
            except OSError:
                s.close()
                break
            idle.append(s)
        assert len(idle) >= 250
        began = time.monotonic()
        registered = None
        while time.monotonic() - began < 15 and registered is None:
            try:
                phone = LanTcpPhone(lan, (cfg.sip_addr, cfg.sip_port), timeout=1)
                try:
                    reply = phone.register("3000", "pw3000")
                    if reply is not None and reply.status == 200:
                        registered = time.monotonic() - began
                finally:
                    phone.close()
            except OSError:
                pass
            if registered is None:
                time.sleep(0.5)
        assert registered is not None, "a TCP phone could not register for 15 s"
        print(f"TCP phone registered {registered:.1f} s after 300 idle connections")
        closed = 0
        for s in idle:
            s.settimeout(0.05)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except socket.timeout:
                pass
            except OSError:
                closed += 1
        assert closed >= 250, f"only {closed} of {len(idle)} idle connections were closed by the edge"
    finally:
        for s in idle:
            s.close()
        edge.stop()


# ----- item 17: registrations survive an edge restart ----------------------------------------------
def test_registration_survives_a_restart_and_the_phone_still_rings(box, tmp_path):
    from tests.phones.pj import PjPhone
    desk = PjPhone(user="2010", secret=box.secrets["2010"], registrar=box.registrar, tone_hz=700,
                   record_dir=tmp_path)
    caller = PjPhone(user="2011", secret=box.secrets["2011"], registrar=box.registrar, tone_hz=1100,
                     record_dir=tmp_path)
    with desk, caller:
        assert desk.register() == 200
        box.stop()
        box.start()
        assert any(r["aor"] == "2010" for r in edge_ctl(box).registrations()), \
            "the registration was lost with the restart"
        assert caller.register() == 200
        caller.call(box.uri("2010"))
        incoming = desk.wait_incoming(timeout=8)
        assert incoming["from"].find("2011") >= 0
        desk.answer(200)
        caller.wait_state("CONFIRMED", timeout=5)
        caller.hangup()
        desk.wait_state("DISCONNECTED", timeout=5)
