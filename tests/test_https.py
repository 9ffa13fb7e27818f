"""HTTPS for the web UI: the box's own certificate, a redirect from plain HTTP, and an uploaded
certificate that replaces it for new connections without a restart (issue 17, item 1).

The web process is the real one (`python -m webui --https on`); clients verify the certificate
against what the box serves, as a browser would after the user trusted it once.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import io
import ipaddress
import socket
import ssl
import subprocess
import sys
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.browser.webui_env import admin_client, make_app, post
from tests.pbxproc import ROOT, free_port
from webui.https import certs
from webui.server import wants_tls


def _self_signed(name: str, *, days: int = 30, start_days: int = -1, key=None):
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now + dt.timedelta(days=start_days))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _served_cert(port: int) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.getpeercert(binary_form=True)


# ----- the certificate itself ---------------------------------------------------------------------
def test_first_start_generates_a_certificate_for_the_box_names_readable_by_the_pbx_only(tmp_path):
    crt, key = certs.ensure_generated(tmp_path, ["pbx.example.lan", "localhost"], ["127.0.0.1", "192.0.2.5"])
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"pbx.example.lan", "localhost"}
    assert {str(a) for a in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "192.0.2.5"}
    assert cert.not_valid_after_utc > dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3000)
    assert key.stat().st_mode & 0o777 == 0o600
    first = crt.read_bytes()
    again, _ = certs.ensure_generated(tmp_path, ["pbx.example.lan"], ["127.0.0.1"])
    assert again.read_bytes() == first                   # covered already: not made again
    moved, _ = certs.ensure_generated(tmp_path, ["pbx.example.lan"], ["198.51.100.9"])
    assert moved.read_bytes() != first                   # a new address: a new certificate


def test_a_start_with_a_fitting_certificate_does_not_import_cryptography(tmp_path):
    """box.json (the hash, names and expiry of box.crt) answers the start's check; a box.json that
    does not match the certificate's bytes is not trusted: the certificate itself is read."""
    crt, _ = certs.ensure_generated(tmp_path, ["pbx.example.lan"], ["127.0.0.1"])
    facts = tmp_path / "tls" / certs.FACTS
    assert facts.stat().st_mode & 0o777 == 0o600
    probe = ("import sys; from webui.https import certs; "
             f"certs.ensure_generated({str(tmp_path)!r}, ['pbx.example.lan'], ['127.0.0.1']); "
             "print('cryptography' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    first = crt.read_bytes()
    facts.write_text(facts.read_text().replace('"names": [', '"names": ["198.51.100.9", '))
    crt.write_bytes(first + b"\n")                       # same certificate, other bytes: facts ignored
    again, _ = certs.ensure_generated(tmp_path, ["pbx.example.lan"], ["198.51.100.9"])
    assert again.read_bytes() not in (first, first + b"\n")   # read for real: the address is not in it


@pytest.mark.parametrize("case,match", [
    ("garbage", "not a PEM certificate"),
    ("other_key", "does not belong"),
    ("expired", "expired"),
    ("future", "not valid before"),
    ("encrypted", "protected by a password"),
])
def test_a_bad_upload_is_refused_with_the_reason_and_the_current_certificate_stays(tmp_path, case, match):
    before = certs.info(tmp_path)
    cert, key = _self_signed("pbx.example.lan")
    if case == "garbage":
        cert = b"hello"
    elif case == "other_key":
        _, key = _self_signed("other")
    elif case == "expired":
        cert, key = _self_signed("pbx.example.lan", days=-1, start_days=-10)
    elif case == "future":
        cert, key = _self_signed("pbx.example.lan", start_days=5, days=50)
    elif case == "encrypted":
        k = serialization.load_pem_private_key(key, None)
        key = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.BestAvailableEncryption(b"pw"))
    with pytest.raises(certs.CertificateError, match=match):
        certs.install(tmp_path, cert, key)
    assert certs.info(tmp_path) == before


def test_auto_serves_https_except_on_loopback():
    assert wants_tls("auto", "192.0.2.10") and wants_tls("auto", "0.0.0.0")
    assert not wants_tls("auto", "127.0.0.1") and not wants_tls("auto", "localhost")
    assert wants_tls("on", "127.0.0.1") and not wants_tls("off", "192.0.2.10")


# ----- the running web UI --------------------------------------------------------------------------
@pytest.fixture(params=["bound", "handed-over"])
def https_ui(tmp_path, request):
    """The UI binding its ports itself, or serving on listening sockets handed over to it
    (--listen-fd, as `pbx run` and pbx-web.socket do: decision 026); the ports it is told
    (--port, --redirect-port) are then not the ones it serves on."""
    data = tmp_path / "data"
    log = open(tmp_path / "web.log", "w")
    held = []
    if request.param == "bound":
        port, redirect = free_port(), free_port()
        args, fds = ["--port", str(port), "--redirect-port", str(redirect)], ()
    else:
        for _ in range(2):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen(16)
            held.append(s)
        port, redirect = (s.getsockname()[1] for s in held)
        fds = tuple(s.fileno() for s in held)
        args = ["--port", "443", "--redirect-port", "80", "--listen-fd", str(fds[0]), "--listen-fd", str(fds[1])]
    proc = subprocess.Popen([sys.executable, "-m", "webui", "--data", str(data), "--host", "127.0.0.1",
                             "--https", "on", *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            pass_fds=fds)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            _served_cert(port)
            break
        except OSError:
            assert proc.poll() is None, (tmp_path / "web.log").read_text()
            time.sleep(0.1)
    yield data, port, redirect
    proc.terminate()
    proc.wait(10)
    log.close()
    for s in held:
        s.close()


def test_the_ui_is_served_over_https_with_the_box_certificate_and_http_redirects(https_ui):
    data, port, redirect = https_ui
    crt = data / "tls" / "box.crt"
    ctx = ssl.create_default_context(cafile=str(crt))      # the user trusted the box's certificate
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    conn.request("GET", "/login")
    resp = conn.getresponse()
    assert resp.status in (200, 302)
    assert "max-age" in (resp.getheader("Strict-Transport-Security") or "")
    conn.close()
    plain = http.client.HTTPConnection("127.0.0.1", redirect, timeout=5)
    plain.request("GET", "/cdr?page=2", headers={"Host": f"127.0.0.1:{redirect}"})
    moved = plain.getresponse()
    assert moved.status == 308
    assert moved.getheader("Location") == f"https://127.0.0.1:{port}/cdr?page=2"


def test_an_uploaded_certificate_is_served_to_new_connections_without_a_restart(https_ui, tmp_path):
    data, port, _ = https_ui
    before = _served_cert(port)
    cert, key = _self_signed("pbx.example.lan")
    # the upload goes through the page (admin login, CSRF) on the box's data directory; the
    # running server notices the new files and serves them to the next connection
    app = make_app(data)
    admin = admin_client(app, data)
    r = post(admin, "/https/upload", {"certificate": (io.BytesIO(cert), "box.pem"),
                                      "private_key": (io.BytesIO(key), "box.key")},
             content_type="multipart/form-data")
    assert r.status_code == 302, r.text
    page = admin.get("/https").text
    assert "uploaded by an administrator" in page and "pbx.example.lan" in page
    deadline = time.monotonic() + 10
    while (served := _served_cert(port)) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert hashlib.sha256(served).digest() == x509.load_pem_x509_certificate(cert).fingerprint(hashes.SHA256())
    r = post(admin, "/https/revert")
    assert r.status_code == 302
    deadline = time.monotonic() + 10
    while (served := _served_cert(port)) != before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert served == before


def test_https_page_refuses_a_mismatched_key_and_says_why(tmp_path):
    data = tmp_path / "data"
    admin = admin_client(make_app(data), data)
    cert, _ = _self_signed("pbx.example.lan")
    _, other_key = _self_signed("other")
    r = post(admin, "/https/upload", {"certificate": (io.BytesIO(cert), "box.pem"),
                                      "private_key": (io.BytesIO(other_key), "box.key")},
             content_type="multipart/form-data")
    assert r.status_code == 400 and "does not belong to the certificate" in r.text
    assert "made by this box" in admin.get("/https").text
