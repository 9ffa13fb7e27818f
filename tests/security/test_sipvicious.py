"""SIPVicious, the scanner kit real attackers point at PBXs, run from a LAN host against the box.

svmap may find the box (it answers SIP: that is its job), but svwar must not learn which
extensions exist, and svcrack must crack nothing and be banned after ten wrong passwords.
"""

import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.lanhost import LanHost
from tests.pbxproc import PbxProcess
from tests.security.helpers import edge_of

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
EXTENSIONS = [str(n) for n in range(1000, 1011)]
# 50 passwords of the kind svcrack users feed it; the real secrets are long random strings
WORDS = ["1234", "12345", "123456", "1234567", "12345678", "password", "pass", "secret", "admin", "root",
         "1000", "10001000", "0000", "1111", "2222", "9999", "qwerty", "letmein", "welcome", "voip",
         "sip", "asterisk", "freepbx", "pbx", "phone", "abc123", "test", "test123", "guest", "user",
         "changeme", "default", "office", "polycom", "yealink", "cisco", "snom", "grandstream", "linksys",
         "password1", "pass123", "000000", "111111", "654321", "123123", "iloveyou", "dragon", "monkey",
         "master", "sunshine"]


def tool(name):
    return str(BIN / f"sipvicious_{name}")


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sipvicious")
    with LanHost() as lan:
        pbx = PbxProcess(tmp / "pbx", extensions=EXTENSIONS, addr=lan.box_addr)
        pbx.start()
        try:
            yield lan, pbx, edge_of(pbx), tmp
        finally:
            pbx.stop()


@pytest.fixture
def clean(target):
    lan, pbx, edge, _ = target
    edge.unban(lan.host_addr)
    yield target
    edge.unban(lan.host_addr)


def probe(lan, pbx, method, user):
    """The status line the box gives a LAN host for METHOD to USER (None: no answer)."""
    sock = lan.socket()
    try:
        sock.bind((lan.host_addr, 0))
        sock.settimeout(2)
        host = f"{pbx.addr}:{pbx.sip_port}"
        port = sock.getsockname()[1]
        call_id = uuid.uuid4().hex
        ruri = f"sip:{host}" if method == "REGISTER" else f"sip:{user}@{host}"
        msg = (f"{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {lan.host_addr}:{port};branch=z9hG4bK{call_id[:12]};rport\r\n"
               f"Max-Forwards: 70\r\nFrom: <sip:{user}@{host}>;tag=p{call_id[:6]}\r\nTo: <sip:{user}@{host}>\r\n"
               f"Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nContact: <sip:{user}@{lan.host_addr}:{port}>\r\n"
               f"Content-Length: 0\r\n\r\n")
        sock.sendto(msg.encode(), (pbx.addr, pbx.sip_port))
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65535).decode(errors="replace")
            except socket.timeout:
                return None
            if call_id in data and not data.startswith("SIP/2.0 1"):
                return data.split("\r\n", 1)[0]
        return None
    finally:
        sock.close()


def test_svmap_finds_the_box(clean):
    lan, pbx, edge, _ = clean
    r = lan.run([tool("svmap"), pbx.addr, "-p", str(pbx.sip_port)], timeout=30)
    out = r.stdout + r.stderr
    print(out)
    assert f"{pbx.addr}:{pbx.sip_port}" in out, out


@pytest.mark.parametrize("method", ["REGISTER", "INVITE", "OPTIONS"])
def test_svwar_finds_no_extension_although_they_exist(clean, method):
    lan, pbx, edge, _ = clean
    # the reason it cannot: an existing and a made-up extension get the same answer
    assert probe(lan, pbx, method, "1000") == probe(lan, pbx, method, "1999") is not None
    r = lan.run([tool("svwar"), "-e990-1050", "-m", method, "--force", "--maximumtime=3",
                 "-p", str(pbx.sip_port), pbx.addr], timeout=60)
    out = r.stdout + r.stderr
    print(out)
    found = sorted(set(re.findall(r"^\|\s*(\d+)\s*\|", r.stdout, re.M)))
    assert found == [], f"svwar {method} enumerated extensions {found}:\n{out}"
    assert "found nothing" in out, out


@pytest.mark.parametrize("reuse_nonce", [False, True], ids=["fresh-nonce", "reused-nonce"])
def test_svcrack_cracks_nothing_and_is_banned_within_eleven_tries(clean, reuse_nonce):
    lan, pbx, edge, tmp = clean
    secret = pbx.secrets["1000"]
    assert secret not in WORDS
    words = tmp / "words.txt"
    words.write_text("\n".join(WORDS) + "\n")
    log_start = pbx.log_path.stat().st_size
    began = time.monotonic()
    r = lan.run([tool("svcrack"), "-u", "1000", "-d", str(words), "--maximumtime=3",
                 *(["-n"] if reuse_nonce else []), "-p", str(pbx.sip_port), pbx.addr], timeout=90)
    took = time.monotonic() - began
    out = r.stdout + r.stderr
    with open(pbx.log_path, "rb") as f:
        f.seek(log_start)
        log = f.read().decode(errors="replace")
    host = re.escape(lan.host_addr)
    failures = [int(n) for n in re.findall(rf"auth failure ip={host} .*count=(\d+)", log)]
    bans = re.findall(rf"ban ip={host} reason=(\S+)", log)
    print(out, f"\nsvcrack ran {took:.1f}s; auth failures counted: {len(failures)}; bans: {bans}")
    assert secret not in out and "found nothing" in out, out
    assert lan.host_addr in edge.bans(), "svcrack was not banned"
    assert bans and bans[0] == "auth", f"banned for {bans}, expected the auth-failure ban"
    assert 10 <= len(failures) <= 12, f"{len(failures)} wrong passwords were tried before the ban"
    assert probe(lan, pbx, "OPTIONS", "1000") is None, "a banned LAN host still gets answers"
