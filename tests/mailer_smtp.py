"""A real SMTP server for the mailer's tests: aiosmtpd on 127.0.0.1, optionally with STARTTLS
(a self-signed certificate made with the openssl CLI) and login; messages kept as bytes."""
from __future__ import annotations

import email
import email.policy
import socket
import ssl
import subprocess
import time
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from tests.pbxproc import free_port


class Inbox:
    """aiosmtpd handler: keeps each message; refuses RCPT TO for the addresses in `refuse`."""

    def __init__(self, refuse=()):
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.refuse = {a.lower(): reply for a, reply in dict(refuse).items()}
        self.logins: list[tuple[str, str]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower() in self.refuse:
            return self.refuse[address.lower()]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 queued"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        user = auth_data.login.decode()
        password = auth_data.password.decode()
        self.logins.append((user, password))
        return AuthResult(success=(user, password) == ("pbx", "mail-secret-1"), handled=False)

    def parsed(self, i: int = -1):
        return email.message_from_bytes(self.messages[i][2], policy=email.policy.default)

    def wait(self, count: int = 1, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.messages) >= count:
                return self.messages
            time.sleep(0.05)
        raise AssertionError(f"{len(self.messages)} message(s) arrived within {timeout} s, expected {count}")


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for IP 127.0.0.1 and its key (openssl CLI, EC key: made in milliseconds)."""
    cert, key = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=30)
    return cert, key


class SmtpServer:
    """aiosmtpd on 127.0.0.1:port; stop() and start() again on the same port (server down, back up)."""

    def __init__(self, inbox: Inbox | None = None, port: int | None = None, tls_files=None, login=False,
                 implicit_tls=False):
        self.inbox = inbox or Inbox()
        self.implicit_tls = implicit_tls      # TLS from the first byte (port 465 style), not STARTTLS
        self.port = port or free_port(socket.SOCK_STREAM, both=False)
        self.tls_files = tls_files
        self.login = login
        self.controller: Controller | None = None

    def start(self) -> "SmtpServer":
        kw = {}
        if self.tls_files:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(*map(str, self.tls_files))
            kw.update(ssl_context=ctx) if self.implicit_tls else kw.update(tls_context=ctx, require_starttls=True)
        if self.login:
            kw.update(authenticator=self.inbox.authenticate, auth_required=True)
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, ready_timeout=10, **kw)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
