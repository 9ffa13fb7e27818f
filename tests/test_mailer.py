"""Outgoing mail: the outbox on disk and its sender against a real SMTP server (aiosmtpd).

The decisions (back-off, give-up, which refusals are final) are checked with a pinned clock; the
rest runs the real sender thread against aiosmtpd on 127.0.0.1, with a back-off of a second or
two instead of 30 s so that "server down, then back" takes seconds.
"""
from __future__ import annotations

import json
import os
import time

import pytest

from firmware import mailer as rules
from firmware.config import ConfigStore
from firmware.mailer import PERMANENT, TEMPORARY, RetryPolicy
from services import cli
from services.mailer import outbox
from services.mailer.sender import MailSender
from tests.mailer_smtp import Inbox, SmtpServer, self_signed_cert

FAST = RetryPolicy(first=1.0, cap=2.0, give_up=120.0)
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 40   # any bytes: compared as they are


def wait_state(data, message_id, states, timeout=20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = outbox.status(data, message_id)
        if st["state"] in states:
            return st
        time.sleep(0.05)
    raise AssertionError(f"mail {message_id} not {states} within {timeout} s: {outbox.status(data, message_id)}")


def configure(data, port, **kw):
    settings = dict(smtp_host="127.0.0.1", smtp_port=port, smtp_tls="none", smtp_from="pbx@office.example",
                    site_name="Acme Ltd")
    settings.update(kw)
    ConfigStore(data).update_settings(**settings)


@pytest.fixture
def data(tmp_path):
    d = tmp_path / "data"
    ConfigStore(d)
    return d


@pytest.fixture
def sender(data):
    started = []

    def start(**kw):
        s = MailSender(data, policy=kw.pop("policy", FAST), timeout=5.0, **kw).start()
        started.append(s)
        return s
    yield start
    for s in started:
        s.stop()


# --- decisions, pinned clock ---

def test_back_off_doubles_from_30_s_to_one_hour_and_gives_up_after_a_day():
    policy = RetryPolicy()
    assert [policy.delay(n) for n in range(1, 10)] == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    message = {"created": 1000.0, "attempts": 0}
    change = rules.after_attempt(message, TEMPORARY, "cannot connect", 1000.0, policy)
    assert change["state"] == "retrying" and change["next_try"] == 1030.0 and change["attempts"] == 1
    late = rules.after_attempt({"created": 1000.0, "attempts": 30}, TEMPORARY, "421 busy", 1000.0 + 86000, policy)
    assert late["state"] == "failed" and late["last_error"] == "gave up after 31 attempts in 24 h: 421 busy"
    assert rules.after_attempt(message, PERMANENT, "550 no such user", 1000.0, policy)["state"] == "failed"


def test_a_day_of_retries_is_30_attempts_and_a_hand_retry_starts_the_day_again():
    policy, message, now = RetryPolicy(), {"created": 0.0, "attempts": 0}, 0.0
    while message.get("state") != "failed":
        message.update(rules.after_attempt(message, TEMPORARY, "connection refused", now, policy))
        now = message["next_try"] or now
    assert message["attempts"] == 30 and 23 * 3600 < message["updated"] < 24 * 3600
    again = rules.after_attempt({"created": 0.0, "retry_from": 90000.0, "retry_base": 30, "attempts": 30},
                                TEMPORARY, "x", 90000.0, policy)
    assert again["state"] == "retrying" and again["next_try"] == 90000.0 + 30 and again["attempts"] == 31
    assert RetryPolicy.parse("1,4,120") == RetryPolicy(1, 4, 120)
    with pytest.raises(ValueError, match="FIRST,CAP,GIVE_UP"):
        RetryPolicy.parse("fast")


def test_the_dashboard_counts_retrying_and_last_weeks_failures():
    now = 10 * 86400.0
    found = rules.summary([{"state": "retrying", "last_error": "cannot connect"},
                           {"state": "failed", "updated": now - 86400, "last_error": "550 no such user"},
                           {"state": "failed", "updated": now - 8 * 86400},
                           {"state": "sent"}, {"state": "queued"}], now)
    assert found == {"queued": 1, "retrying": 1, "failed": 1, "last_error": "cannot connect"}


def test_only_a_5xx_to_a_recipient_or_the_message_is_final():
    assert rules.classify("recipient", 550) == PERMANENT
    assert rules.classify("data", 554) == PERMANENT
    assert rules.classify("recipient", 450) == TEMPORARY
    assert rules.classify("login", 535) == TEMPORARY       # the box's password: fixed on the Settings page
    assert rules.classify("connect", None) == TEMPORARY


def test_bad_addresses_and_attachments_are_refused_with_the_reason(data):
    assert rules.parse_recipients("Anna <anna@office.example>, bob@office.example") == \
        ["anna@office.example", "bob@office.example"]
    for bad, words in (("anna", "'anna' is not an e-mail address"), ("", "no recipient"),
                       (["a@b.example", "x y@z.example"], "not an e-mail address")):
        with pytest.raises(ValueError, match=words):
            outbox.enqueue(data, to=bad, subject="s", text="t")
    with pytest.raises(ValueError, match="one line"):
        outbox.enqueue(data, to="a@office.example", subject="two\nlines", text="t")
    with pytest.raises(ValueError, match="not a MIME type"):
        outbox.enqueue(data, to="a@office.example", subject="s", text="t", attachments=[("a.wav", b"x", "wav")])
    with pytest.raises(ValueError, match="cannot read"):
        outbox.enqueue(data, to="a@office.example", subject="s", text="t",
                       attachments=[("a.wav", data / "missing.wav", "audio/wav")])
    with pytest.raises(ValueError, match="outside the data directory"):
        outbox.enqueue(data, to="a@office.example", subject="s", text="t", after_sent={"delete_file": "/etc/passwd"})
    assert outbox.messages(data) == []


# --- the real sender against a real SMTP server ---

def test_message_with_attachment_arrives_intact_and_the_file_is_deleted_after_sending(data, sender, tmp_path):
    voicemail = data / "voicemail" / "msg0001.wav"
    voicemail.parent.mkdir(parents=True)
    voicemail.write_bytes(WAV)
    with SmtpServer() as server:
        configure(data, server.port)
        sender()
        message_id = outbox.enqueue(
            data, to="Anna Smith <anna@office.example>", subject="Voicemail from 1001 (0:05) – Büro",
            text="You have a new message from Jürgen Müller.\n", html="<p>You have a <b>new</b> message.</p>",
            attachments=[("msg0001.wav", voicemail, "audio/wav")], ref="voicemail:1000/msg0001",
            after_sent={"delete_file": str(voicemail)})
        st = wait_state(data, message_id, {"sent", "failed"})
        assert st["state"] == "sent" and st["attempts"] == 1 and st["last_error"] == "" and st["sent_at"]
        mail_from, rcpts, _ = server.inbox.wait()[0]
        assert (mail_from, rcpts) == ("pbx@office.example", ["anna@office.example"])
        msg = server.inbox.parsed()
        assert msg["Subject"] == "Voicemail from 1001 (0:05) – Büro"
        assert msg["From"].addresses[0].addr_spec == "pbx@office.example"
        assert msg["From"].addresses[0].display_name == "Acme Ltd"
        assert msg["Message-ID"] == f"<{message_id}@office.example>"
        text = msg.get_body(("plain",)).get_content()
        assert text.replace("\r\n", "\n") == "You have a new message from Jürgen Müller.\n"
        assert max(server.inbox.messages[0][2]) < 128, "8-bit bytes sent to a server that may not take them"
        assert "<b>new</b>" in msg.get_body(("html",)).get_content()
        [part] = list(msg.iter_attachments())
        assert part.get_filename() == "msg0001.wav" and part.get_content_type() == "audio/wav"
        assert part.get_content() == WAV
    assert not voicemail.exists(), "after_sent delete_file was not done"
    assert [m["state"] for m in outbox.messages(data)] == ["sent"]
    assert not list((data / "mail" / "blobs").iterdir()), "a sent message's content stays on disk"


def test_starttls_with_a_self_signed_certificate_and_login(data, sender, tmp_path):
    cert, key = self_signed_cert(tmp_path)
    with SmtpServer(tls_files=(cert, key), login=True) as server:
        configure(data, server.port, smtp_tls="starttls", smtp_user="pbx", smtp_password="wrong-password")
        sender(cafile=str(cert))
        message_id = outbox.enqueue(data, to="ops@office.example", subject="TLS test", text="over TLS")
        st = wait_state(data, message_id, {"retrying", "failed"})
        assert st["state"] == "retrying" and "login as pbx refused: 535" in st["last_error"], st
        assert "check the user name and password" in st["last_error"]
        ConfigStore(data).update_settings(smtp_password="mail-secret-1")   # retried at once: no back-off wait
        st = wait_state(data, message_id, {"sent", "failed"}, timeout=10)
        assert st["state"] == "sent", st
        assert server.inbox.logins[-1] == ("pbx", "mail-secret-1")
        assert server.inbox.parsed()["Subject"] == "TLS test"


def test_tls_from_the_first_byte(data, sender, tmp_path):
    cert, key = self_signed_cert(tmp_path)
    with SmtpServer(tls_files=(cert, key), implicit_tls=True) as server:
        configure(data, server.port, smtp_tls="tls")
        sender(cafile=str(cert))
        message_id = outbox.enqueue(data, to="ops@office.example", subject="implicit TLS", text="t")
        assert wait_state(data, message_id, {"sent", "failed", "retrying"})["state"] == "sent"
        assert server.inbox.parsed()["Subject"] == "implicit TLS"
        configure(data, server.port, smtp_tls="none")      # plain text to a TLS port: retrying, and why
        message_id = outbox.enqueue(data, to="ops@office.example", subject="plain", text="t")
        st = wait_state(data, message_id, {"sent", "failed", "retrying"})
        assert st["state"] == "retrying", st
        assert st["last_error"] == (f"127.0.0.1:{server.port} did not answer within 5 s: "
                                    "are the port and the encryption right?")


def test_an_untrusted_certificate_is_refused_and_the_message_waits(data, sender, tmp_path):
    cert, key = self_signed_cert(tmp_path)
    with SmtpServer(tls_files=(cert, key)) as server:
        configure(data, server.port, smtp_tls="starttls")
        sender()                                  # no cafile: the self-signed certificate is not trusted
        message_id = outbox.enqueue(data, to="ops@office.example", subject="s", text="t")
        st = wait_state(data, message_id, {"retrying", "failed", "sent"})
        assert st["state"] == "retrying" and "CERTIFICATE_VERIFY_FAILED" in st["last_error"], st
        assert server.inbox.messages == []


def test_server_down_means_retrying_with_the_reason_then_sent_when_it_is_back(data, sender):
    server = SmtpServer()
    configure(data, server.port)
    sender()
    message_id = outbox.enqueue(data, to="anna@office.example", subject="while down", text="t")
    st = wait_state(data, message_id, {"retrying", "failed", "sent"})
    assert st["state"] == "retrying", st
    assert st["last_error"] == f"cannot connect to 127.0.0.1:{server.port}: Connection refused"
    assert st["next_try"] > time.time() - 1
    wait_until = time.monotonic() + 10
    while outbox.status(data, message_id)["attempts"] < 2 and time.monotonic() < wait_until:
        time.sleep(0.1)
    assert outbox.status(data, message_id)["attempts"] >= 2, "no second attempt after the back-off"
    assert outbox.summary(data)["retrying"] == 1
    with server:
        st = wait_state(data, message_id, {"sent", "failed"}, timeout=15)
        assert st["state"] == "sent" and st["attempts"] >= 3, st
        assert server.inbox.parsed()["Subject"] == "while down"
    assert outbox.summary(data)["retrying"] == 0


def test_a_550_fails_at_once_with_the_servers_reason(data, sender):
    inbox = Inbox(refuse={"nobody@office.example": "550 5.1.1 <nobody@office.example>: no such user"})
    with SmtpServer(inbox) as server:
        configure(data, server.port)
        sender()
        message_id = outbox.enqueue(data, to="nobody@office.example", subject="s", text="t")
        st = wait_state(data, message_id, {"failed", "sent"})
        assert st["state"] == "failed" and st["attempts"] == 1, st
        assert st["last_error"] == ("recipient refused: nobody@office.example: "
                                    "550 5.1.1 <nobody@office.example>: no such user")
        # one good and one unknown recipient: sent, and the refusal is noted
        both = outbox.enqueue(data, to=["anna@office.example", "nobody@office.example"], subject="s2", text="t")
        st = wait_state(data, both, {"failed", "sent"})
        assert st["state"] == "sent" and "not delivered to nobody@office.example: 550" in st["last_error"]
        assert server.inbox.wait(1)[0][1] == ["anna@office.example"]
    assert outbox.summary(data)["failed"] == 1


def test_the_queue_survives_a_restart_of_the_sender(data, sender):
    server = SmtpServer()
    configure(data, server.port)
    first = sender(policy=RetryPolicy(60, 60, 3600))
    waiting = outbox.enqueue(data, to="anna@office.example", subject="before the restart", text="t")
    wait_state(data, waiting, {"retrying"})
    first.stop()
    assert not first.alive
    queued = outbox.enqueue(data, to="bob@office.example", subject="queued while stopped", text="t")
    time.sleep(1.0)
    assert outbox.status(data, queued)["state"] == "queued"
    with server:
        sender()          # a new sender: the retrying one waits for its next try (60 s) ...
        wait_state(data, queued, {"sent"})
        assert outbox.status(data, waiting)["state"] == "retrying"
        assert outbox.retry(data, waiting) == "retrying"     # ... unless asked to try now (mail page)
        wait_state(data, waiting, {"sent"})
        subjects = sorted(server.inbox.parsed(i)["Subject"] for i in range(2))
        assert subjects == ["before the restart", "queued while stopped"]
    listed = outbox.messages(data)
    assert [m["id"] for m in listed] == [queued, waiting]     # newest first


def test_a_failed_message_can_be_queued_again_and_records_are_plain_json(data, sender):
    inbox = Inbox(refuse={"anna@office.example": "550 mailbox full"})
    with SmtpServer(inbox) as server:
        configure(data, server.port)
        sender()
        message_id = outbox.enqueue(data, to="anna@office.example", subject="s", text="t")
        wait_state(data, message_id, {"failed"})
        record = json.loads((data / "mail" / "done" / f"{message_id}.json").read_text())
        assert record["state"] == "failed" and record["last_error"].endswith("550 mailbox full")
        inbox.refuse.clear()
        assert outbox.retry(data, message_id) == "queued"
        st = wait_state(data, message_id, {"sent"})
        assert st["attempts"] == 2
        with pytest.raises(ValueError, match="sent already"):
            outbox.retry(data, message_id)
    with pytest.raises(KeyError):
        outbox.status(data, "20260101-000000-000-deadbeef")
    with pytest.raises(ValueError, match="not a mail message id"):
        outbox.status(data, "../../config")


def test_an_interrupted_enqueue_leaves_no_message_and_tidy_removes_its_leftovers(data):
    message_id = outbox.enqueue(data, to="anna@office.example", subject="s", text="t")
    blobs = data / "mail" / "blobs"
    (blobs / "20200101-000000-000-00000000.eml").write_bytes(b"half")   # blob written, record never was
    (data / "mail" / "queue" / ".x.json.1.tmp").write_bytes(b"{")
    old = time.time() - 7200
    for p in [blobs / "20200101-000000-000-00000000.eml", data / "mail" / "queue" / ".x.json.1.tmp"]:
        os.utime(p, (old, old))
    assert [m["id"] for m in outbox.messages(data)] == [message_id]
    assert (blobs / f"{message_id}.eml").stat().st_mode & 0o077 == 0, "a message readable by other users"
    assert outbox.tidy(data, time.time()) == 2
    assert sorted(p.name for p in blobs.iterdir()) == [f"{message_id}.eml"]


def test_pbx_mail_test_and_list(data, sender, capsys):
    with SmtpServer() as server:
        configure(data, server.port)
        sender()
        assert cli.main(["mail", "test", "anna@office.example", "--data", str(data), "--wait", "20"]) == 0
        out = capsys.readouterr().out
        assert "sent to anna@office.example" in out
        assert server.inbox.parsed()["Subject"].startswith("Test e-mail from Acme Ltd")
        assert cli.main(["mail", "list", "--data", str(data)]) == 0
        out = capsys.readouterr().out
        assert "sent" in out and "anna@office.example" in out
        assert cli.main(["mail", "list", "--data", str(data), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)[0]["state"] == "sent"
    assert cli.main(["mail", "test", "not-an-address", "--data", str(data)]) == 2
    assert "error: 'not-an-address' is not an e-mail address" in capsys.readouterr().err


def test_a_record_in_the_queue_and_in_done_is_resolved_by_which_is_newer(data):
    """A power cut between the two steps of finishing (or of a hand retry) leaves two copies."""
    sent_id = outbox.enqueue(data, to="anna@office.example", subject="finished", text="t")
    again_id = outbox.enqueue(data, to="anna@office.example", subject="queued again", text="t")
    queue, done = data / "mail" / "queue", data / "mail" / "done"
    sent = json.loads((queue / f"{sent_id}.json").read_text())
    (done / f"{sent_id}.json").write_text(json.dumps(dict(sent, state="sent", updated=sent["updated"] + 5)))
    again = json.loads((queue / f"{again_id}.json").read_text())
    (done / f"{again_id}.json").write_text(json.dumps(dict(again, state="failed", updated=again["updated"] - 5)))
    assert [r["id"] for r in outbox.pending(data)] == [again_id]
    assert outbox.status(data, sent_id)["state"] == "sent"
    assert not (done / f"{again_id}.json").exists() and outbox.status(data, again_id)["state"] == "queued"
