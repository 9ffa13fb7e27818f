"""The mail sender: a thread that sends the outbox's due messages through the configured SMTP server.

It looks at DATA/mail/queue/ every half second (any process may have queued a message), sends
what is due with smtplib (plain, STARTTLS or TLS from the start; login when a user is set; a
timeout), and records the outcome with firmware.mailer's rules: sent; retrying after 30 s, 1, 2,
4 ... min, at most 1 h apart; failed at once on a 5xx to a recipient or to the message; failed
after 24 h of retrying. A change of the SMTP settings retries every waiting message at once.
Each event is one log line. `pbx run` (services/runner.py) runs one sender next to the call
service and restarts it if it dies; a lock file keeps it the only one per data directory.
"""
from __future__ import annotations

import email.utils
import fcntl
import logging
import os
import re
import smtplib
import socket
import ssl
import threading
import time
from pathlib import Path

from firmware import mailer as rules
from firmware.mailer import PERMANENT, SENT, TEMPORARY, RetryPolicy

from . import outbox

log = logging.getLogger(__name__)

BACKOFF_ENV = "PBX_MAIL_BACKOFF"   # "FIRST,CAP,GIVE_UP" seconds: short back-off for tests


def policy_from_env() -> RetryPolicy:
    text = os.environ.get(BACKOFF_ENV, "").strip()
    return RetryPolicy.parse(text) if text else RetryPolicy()


class Refused(Exception):
    """One attempt did not deliver: the stage it failed at, the SMTP code (None: no answer), why."""

    def __init__(self, stage: str, code: int | None, reason: str):
        super().__init__(reason)
        self.stage, self.code, self.reason = stage, code, reason


def _reply(code, resp) -> str:
    text = resp.decode(errors="replace") if isinstance(resp, bytes) else str(resp)
    return f"{code} {' '.join(text.split())}"


def _local_hostname() -> str:
    # smtplib's default is getfqdn(), a DNS lookup that can hang on a box without DNS
    name = socket.gethostname()
    return name if re.fullmatch(r"[A-Za-z0-9.-]{1,253}", name or "") else "pbx.localdomain"


def deliver(settings, recipients: list[str], data: bytes, timeout: float, cafile: str | None = None) -> dict:
    """Send `data` to `recipients` with the SMTP settings; the recipients the server refused while
    it took the message for the others ({address: reason}); Refused when nobody got it."""
    host, port, mode = settings.smtp_host, settings.smtp_port, settings.smtp_tls
    where = f"{host}:{port}"
    if not host:
        raise Refused("connect", None, "no mail server is set: fill in Outgoing mail on the Settings page")
    if not settings.smtp_from:
        raise Refused("connect", None, "no sender address is set: fill it in on the Settings page")
    context = ssl.create_default_context(cafile=cafile)
    smtp = None
    stage = "connect"
    try:
        if mode == "tls":
            smtp = smtplib.SMTP_SSL(host, port, local_hostname=_local_hostname(), timeout=timeout, context=context)
        else:
            smtp = smtplib.SMTP(host, port, local_hostname=_local_hostname(), timeout=timeout)
            if mode == "starttls":
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    raise Refused("connect", None, f"{where} does not offer STARTTLS: choose another "
                                                   "encryption or port on the Settings page")
                smtp.starttls(context=context)
                smtp.ehlo()
        if settings.smtp_user:
            stage = "login"
            smtp.login(settings.smtp_user, settings.smtp_password)
        stage = "sender"
        refused = smtp.sendmail(settings.smtp_from, recipients, data)
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            pass       # the message was taken; a rude goodbye changes nothing
        return {addr: _reply(*answer) for addr, answer in refused.items()}
    except Refused:
        raise
    except smtplib.SMTPAuthenticationError as exc:
        raise Refused("login", exc.smtp_code, f"login as {settings.smtp_user} refused: "
                      f"{_reply(exc.smtp_code, exc.smtp_error)}: check the user name and password "
                      "on the Settings page") from None
    except smtplib.SMTPRecipientsRefused as exc:
        answers = exc.recipients
        codes = [code for code, _ in answers.values()]
        code = max(codes) if all(c >= 500 for c in codes) else min(codes)
        raise Refused("recipient", code, "recipient refused: " + "; ".join(
            f"{addr}: {_reply(*answer)}" for addr, answer in answers.items())) from None
    except smtplib.SMTPSenderRefused as exc:
        raise Refused("sender", exc.smtp_code, f"sender address {settings.smtp_from} refused: "
                      f"{_reply(exc.smtp_code, exc.smtp_error)}: check the sender address on the "
                      "Settings page") from None
    except smtplib.SMTPDataError as exc:
        raise Refused("data", exc.smtp_code, f"message refused: {_reply(exc.smtp_code, exc.smtp_error)}") \
            from None
    except smtplib.SMTPNotSupportedError as exc:
        raise Refused(stage, None, f"{where}: {exc}") from None
    except smtplib.SMTPResponseException as exc:
        raise Refused(stage, exc.smtp_code, f"{where} answered {_reply(exc.smtp_code, exc.smtp_error)}") \
            from None
    except smtplib.SMTPServerDisconnected as exc:
        if "timed out" in str(exc):     # smtplib's words for a reply that never came
            raise Refused(stage, None, _silent(where, timeout, stage)) from None
        raise Refused(stage, None, f"{where} closed the connection: {exc or 'no reason given'}") from None
    except ssl.SSLError as exc:
        raise Refused(stage, None, f"TLS with {where} failed: {exc.reason or exc}"
                      + (": is the port right for this encryption?" if "WRONG_VERSION" in str(exc) else ""))\
            from None
    except (socket.timeout, TimeoutError):
        raise Refused(stage, None, _silent(where, timeout, stage)) from None
    except OSError as exc:
        raise Refused(stage, None, f"cannot connect to {where}: {exc.strerror or exc}") from None
    finally:
        if smtp is not None:
            try:
                smtp.close()
            except OSError:
                pass


def _silent(where: str, timeout: float, stage: str) -> str:
    hint = ": are the port and the encryption right?" if stage == "connect" else ""
    return f"{where} did not answer within {timeout:g} s{hint}"


def _headers(settings, message_id: str) -> bytes:
    """From and Message-ID, taken from the settings when the message goes out."""
    domain = settings.smtp_from.rpartition("@")[2] or "pbx.localdomain"
    sender = email.utils.formataddr((settings.site_name, settings.smtp_from))
    from email.header import Header
    if not sender.isascii():
        sender = email.utils.formataddr((str(Header(settings.site_name, "utf-8")), settings.smtp_from))
    return f"From: {sender}\r\nMessage-ID: <{message_id}@{domain}>\r\n".encode("ascii")


class MailSender:
    """The sender thread. start(), stop(); `alive` tells the supervisor whether it still runs."""

    POLL_S = 0.5
    TIDY_S = 3600.0

    def __init__(self, data_dir, policy: RetryPolicy | None = None, timeout: float = 30.0,
                 cafile: str | None = None, poll: float | None = None):
        self.data_dir = Path(data_dir)
        self.policy = policy or policy_from_env()
        self.timeout = timeout
        self.cafile = cafile              # extra CA certificates (tests: a self-signed server)
        self.poll = self.POLL_S if poll is None else poll
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        self._fingerprint = None
        self._tidied = 0.0

    # --- lifecycle ---
    def start(self) -> "MailSender":
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="mail-sender", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)   # an SMTP exchange in flight ends at its own timeout

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def poke(self) -> None:
        """Look at the queue now (a message was queued in this process)."""
        self._wake.set()

    def _take_lock(self) -> bool:
        root = outbox.mail_dir(self.data_dir)
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / "sender.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def _run(self) -> None:
        from firmware.config import ConfigStore
        warned = False
        while not self._take_lock():
            if not warned:
                log.warning("mail sender waits: another sender has %s/sender.lock", outbox.mail_dir(self.data_dir))
                warned = True
            if self._stop.wait(1.0):
                return
        log.info("mail sender started (back-off %g s doubling to %g s, give up after %g s)",
                 self.policy.first, self.policy.cap, self.policy.give_up)
        try:
            store = ConfigStore(self.data_dir)
            while not self._stop.is_set():
                try:
                    self.run_once(store.settings())
                except Exception:
                    log.exception("mail sender: unexpected failure; going on in 5 s")
                    self._stop.wait(5.0)
                self._wake.wait(self.poll)
                self._wake.clear()
        finally:
            os.close(self._lock_fd)
            self._lock_fd = None
            log.info("mail sender stopped")

    # --- one round ---
    def run_once(self, settings, now: float | None = None) -> int:
        """Send every due message once; returns how many were tried."""
        now = time.time() if now is None else now
        fingerprint = (settings.smtp_host, settings.smtp_port, settings.smtp_tls, settings.smtp_user,
                       settings.smtp_password, settings.smtp_from)
        settings_changed = self._fingerprint is not None and fingerprint != self._fingerprint
        self._fingerprint = fingerprint
        records = outbox.pending(self.data_dir)
        if settings_changed and any(r["state"] == "retrying" for r in records):
            log.info("mail settings changed: retrying the waiting messages now")
        due = [r for r in records
               if r.get("poke") or (settings_changed and r["state"] == "retrying") or (r.get("next_try") or 0) <= now]
        due.sort(key=lambda r: (r.get("next_try") or 0, r.get("created") or 0))
        for record in due:
            if self._stop.is_set():
                break
            if record.get("poke"):
                log.info("mail %s: retry now, asked by hand", record["id"])
            self.attempt(record, settings)
        if now - self._tidied > self.TIDY_S:
            self._tidied = now
            removed = outbox.tidy(self.data_dir, now)
            if removed:
                log.info("mail: %d old records and leftovers removed", removed)
        return len(due)

    def attempt(self, record: dict, settings) -> dict:
        """Try one message; store and return its new record."""
        message_id = record["id"]
        try:
            data = _headers(settings, message_id) + outbox.message_bytes(self.data_dir, message_id)
        except FileNotFoundError:
            outcome, reason = PERMANENT, "the message's content is missing from the outbox"
        except (UnicodeError, ValueError) as exc:
            outcome, reason = TEMPORARY, f"sender name or address cannot go in a header: {exc}"
        else:
            try:
                refused = deliver(settings, record["to"], data, self.timeout, self.cafile)
                outcome = SENT
                reason = "; ".join(f"not delivered to {a}: {r}" for a, r in refused.items())
            except Refused as exc:
                outcome, reason = rules.classify(exc.stage, exc.code), exc.reason
        now = time.time()
        record = {**record, **rules.after_attempt(record, outcome, reason, now, self.policy)}
        state = record["state"]
        if state in rules.PENDING:
            outbox.save(self.data_dir, record)
            log.warning("mail %s to %s: attempt %d failed, retrying in %.0f s: %s", message_id,
                        ", ".join(record["to"]), record["attempts"], record["next_try"] - now, reason)
            return record
        outbox.finish(self.data_dir, record)
        if state == "failed":
            log.error("mail %s to %s failed after %d attempt(s): %s", message_id, ", ".join(record["to"]),
                      record["attempts"], record["last_error"])
            return record
        log.info("mail %s sent to %s via %s:%s (attempt %d)%s", message_id, ", ".join(record["to"]),
                 settings.smtp_host, settings.smtp_port, record["attempts"], f"; {reason}" if reason else "")
        self._after_sent(record)
        return record

    def _after_sent(self, record: dict) -> None:
        action = record.get("after_sent") or {}
        if action.get("delete_file"):
            try:
                os.unlink(action["delete_file"])
                log.info("mail %s: deleted %s after sending", record["id"], action["delete_file"])
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("mail %s: cannot delete %s after sending: %s", record["id"],
                            action["delete_file"], exc.strerror)
        for callback in outbox.sent_callbacks():
            try:
                callback(dict(record))
            except Exception:
                log.exception("mail %s: on_sent callback %r failed", record["id"], callback)
