"""The box's TLS certificate: generated on first start, replaceable by one the admin uploads.

Files in DATA/tls/ (readable by the PBX user only):
    box.crt, box.key          made here: self-signed, RSA 2048 (every desk phone can use it),
                              valid 10 years, naming the box's host name(s) and addresses;
    uploaded.crt, uploaded.key  the admin's own (a chain in PEM, then its key), preferred when present.

`context(data_dir, host)` is the ssl.SSLContext the web server serves with;
`install(data_dir, cert_pem, key_pem)` checks an upload completely before it replaces anything.

cryptography (about 14 MB in a process) is imported only to make, read or check a certificate. Each
start checks the generated one against box.json, written beside it when it was made (the SHA-256 of
box.crt, its names and its expiry), so a box whose certificate still fits serves without importing it.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509

GENERATED = ("box.crt", "box.key")
FACTS = "box.json"          # what box.crt covers, written with it (see the module's text)
RENEW_BEFORE = dt.timedelta(days=30)
UPLOADED = ("uploaded.crt", "uploaded.key")
MAX_PEM = 64 * 1024


class CertificateError(ValueError):
    """An uploaded certificate or key that cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class CertInfo:
    source: str                 # "generated" or "uploaded"
    subject: str
    names: tuple[str, ...]      # DNS names and IP addresses it is valid for
    not_after: dt.datetime
    fingerprint: str            # SHA-256, colon-separated hex: what a phone or browser shows


def tls_dir(data_dir) -> Path:
    path = Path(data_dir) / "tls"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def box_names(host: str = "") -> tuple[list[str], list[str]]:
    """The names and addresses a generated certificate should cover for a box listening on `host`."""
    hostname = socket.gethostname()
    names = list(dict.fromkeys(n for n in (hostname, f"{hostname}.local", "localhost") if n))
    addresses = ["127.0.0.1"]
    if host and host not in ("0.0.0.0", "::"):
        try:
            ipaddress.ip_address(host)
            addresses.append(host)
        except ValueError:
            names.insert(0, host)
    return names, list(dict.fromkeys(addresses))


def ensure_generated(data_dir, names: list[str], addresses: list[str]) -> tuple[Path, Path]:
    """The generated certificate, made now if missing or if it does not cover `names`/`addresses`."""
    d = tls_dir(data_dir)
    crt, key = d / GENERATED[0], d / GENERATED[1]
    wanted = set(names) | set(addresses)
    if crt.exists() and key.exists():
        pem = crt.read_bytes()
        facts = _read_facts(d / FACTS, pem) or _facts_of(pem, d / FACTS)
        if facts is not None and wanted <= facts[0] and facts[1] > _now() + RENEW_BEFORE:
            return crt, key
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "pbx"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Office PBX (self-signed)")])
    san = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(private.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(private, hashes.SHA256()))
    _write(key, private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    _write(crt, pem)
    _write_facts(d / FACTS, pem, set(_names_of(cert)), cert.not_valid_after_utc)
    return crt, key


def _read_facts(path: Path, pem: bytes) -> tuple[set[str], dt.datetime] | None:
    """(names, expiry) of box.crt from box.json, or None when that file is missing, unreadable or
    written for other certificate bytes (then the certificate itself is read)."""
    try:
        facts = json.loads(path.read_text())
        if facts["sha256"] != hashlib.sha256(pem).hexdigest():
            return None
        return set(facts["names"]), dt.datetime.fromisoformat(facts["not_after"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _facts_of(pem: bytes, path: Path) -> tuple[set[str], dt.datetime] | None:
    """(names, expiry) read from the certificate itself (and kept in box.json); None: unreadable."""
    from cryptography import x509
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None
    names, not_after = set(_names_of(cert)), cert.not_valid_after_utc
    _write_facts(path, pem, names, not_after)
    return names, not_after


def _write_facts(path: Path, pem: bytes, names: set[str], not_after: dt.datetime) -> None:
    _write(path, json.dumps({"sha256": hashlib.sha256(pem).hexdigest(), "names": sorted(names),
                             "not_after": not_after.isoformat()}).encode())


def active_files(data_dir, host: str = "") -> tuple[Path, Path, str]:
    """(certificate, key, "uploaded"|"generated") the web server should use."""
    d = tls_dir(data_dir)
    crt, key = d / UPLOADED[0], d / UPLOADED[1]
    if crt.exists() and key.exists():
        return crt, key, "uploaded"
    crt, key = ensure_generated(data_dir, *box_names(host))
    return crt, key, "generated"


def context(data_dir, host: str = "") -> ssl.SSLContext:
    """A server SSLContext (TLS 1.2+) with the active certificate loaded."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    crt, key, _ = active_files(data_dir, host)
    ctx.load_cert_chain(crt, key)
    return ctx


def info(data_dir, host: str = "") -> CertInfo:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    crt, _, source = active_files(data_dir, host)
    cert = x509.load_pem_x509_certificates(crt.read_bytes())[0]
    return CertInfo(source, cert.subject.rfc4514_string(), tuple(_names_of(cert)), cert.not_valid_after_utc,
                    ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256())))


def install(data_dir, cert_pem: bytes, key_pem: bytes) -> CertInfo:
    """Check an uploaded certificate (chain) and key, then make them the active ones.

    Refused with CertificateError: not PEM, more than 64 kB, a key that does not belong to the
    certificate, an encrypted key, an expired or not yet valid certificate."""
    if len(cert_pem) > MAX_PEM or len(key_pem) > MAX_PEM:
        raise CertificateError(f"a certificate or key file is larger than {MAX_PEM // 1024} kB: upload the PEM "
                               "files themselves")
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise CertificateError("the certificate is not a PEM certificate (-----BEGIN CERTIFICATE-----); "
                               "convert a .der/.pfx file with openssl first") from None
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise CertificateError("the private key is protected by a password: upload it unencrypted "
                               "(openssl pkey -in key.pem -out plain.pem)") from None
    except ValueError:
        raise CertificateError("the private key is not a PEM private key (-----BEGIN PRIVATE KEY-----)") from None
    if not isinstance(private, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise CertificateError("the private key must be RSA or ECDSA")
    leaf = chain[0]
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if (leaf.public_key().public_bytes(serialization.Encoding.DER, pub)
            != private.public_key().public_bytes(serialization.Encoding.DER, pub)):
        raise CertificateError("the private key does not belong to the certificate (the first certificate in "
                               "the file must be the box's own, then its intermediates)")
    now = _now()
    if leaf.not_valid_after_utc <= now:
        raise CertificateError(f"the certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d}")
    if leaf.not_valid_before_utc > now:
        raise CertificateError(f"the certificate is not valid before {leaf.not_valid_before_utc:%Y-%m-%d}: "
                               "check the box's clock or the certificate")
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)     # what the server will do with them
    d = tls_dir(data_dir)
    tmp_crt, tmp_key = d / "upload-check.crt", d / "upload-check.key"
    _write(tmp_crt, cert_pem)
    _write(tmp_key, key_pem)
    try:
        probe.load_cert_chain(tmp_crt, tmp_key)
    except ssl.SSLError as exc:
        raise CertificateError(f"the certificate and key cannot be used together: {exc.reason or exc}") from None
    finally:
        tmp_crt.unlink(missing_ok=True)
        tmp_key.unlink(missing_ok=True)
    # key first: a crash between the two renames leaves a new key with no uploaded.crt (the
    # generated pair is used) rather than a certificate with the old key
    _write(d / UPLOADED[1], key_pem)
    _write(d / UPLOADED[0], cert_pem)
    return info(data_dir)


def remove_uploaded(data_dir) -> None:
    d = tls_dir(data_dir)
    (d / UPLOADED[0]).unlink(missing_ok=True)
    (d / UPLOADED[1]).unlink(missing_ok=True)


def _names_of(cert: x509.Certificate) -> list[str]:
    from cryptography import x509
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.DNSName) + [str(a) for a in san.get_values_for_type(x509.IPAddress)]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _write(path: Path, data: bytes) -> None:
    """Atomically, readable by the owner only."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
