"""Voicemail end to end (issue 10 "Done when"): a pjsua2 caller leaves a message at an unanswered
extension, the owner's message lamp (a raw SIP subscriber, RFC 3842 through the Kamailio edge)
lights with 1 new message, the owner dials *97, enters the PIN, hears the envelope and the
message (its tone decoded at the phone), deletes it, and the lamp goes off. The e-mail of a
message reaches a real SMTP server (aiosmtpd) with the WAV attached, after retrying while the
server was down; the mailbox page shows "retrying", then "sent"."""

import re
import threading
import time

import pytest

from firmware.cdr import Disposition
from firmware.config import ConfigStore
from firmware.features import voicemail as vm
from tests.pbxproc import PbxProcess
from tests.phones.audio import read_wav, tone_fraction
from tests.phones.raw import RawPhone
from tests.test_calls import CALLER_HZ, phone, registered
from services.mailer import outbox
from services.voicemail import VoicemailStore
from tests.browser.webui_env import ADMIN_PASSWORD, login, make_app
from tests.mailer_smtp import SmtpServer

pytestmark = pytest.mark.e2e
OWNER_HZ = 1500
EXTENSIONS = ["2000", "2001", "2002", "2003", "2004", "2005", "2006"]


@pytest.fixture(scope="module")
def smtp():
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def vpbx(tmp_path_factory, smtp):
    """A PBX whose extensions have their mailboxes on (the product default), mailing through `smtp`."""
    proc = PbxProcess(tmp_path_factory.mktemp("voicemail"), extensions=EXTENSIONS, voicemail=True,
                      settings={"busy_tone_seconds": 1, "no_answer_timeout": 5, "smtp_host": "127.0.0.1",
                                "smtp_port": smtp.port, "smtp_tls": "none", "smtp_from": "pbx@office.example"},
                      env={"PBX_MAIL_BACKOFF": "1,2,300"})
    proc.start()
    yield proc
    proc.stop()


def wait_for(check, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"no {what} within {timeout} s")


class Lamp:
    """A phone's message-waiting lamp: a raw SIP subscriber to its own mailbox through the edge,
    answering every NOTIFY at once (as a phone does; an unanswered NOTIFY ends the subscription)."""

    def __init__(self, pbx, extension):
        self.phone = RawPhone(extension, pbx.secrets[extension], pbx.registrar)
        status, self.dialog = self.phone.subscribe(extension, "message-summary")
        assert status in (200, 202), f"SUBSCRIBE answered {status}"
        self.bodies = []
        self.running = True
        self.thread = threading.Thread(target=self._answer, daemon=True)
        self.thread.start()

    def _answer(self):
        while self.running:
            msg = self.phone.next_notify(self.dialog, timeout=0.3)
            if msg is not None:
                self.bodies.append(msg.body)

    def wait(self, text, timeout=15, after=0):
        """The newest NOTIFY body from the `after`-th on that contains `text`."""
        return wait_for(lambda: next((b for b in reversed(self.bodies[after:]) if text in b), None), timeout,
                        f"MWI NOTIFY with {text!r} (got {self.bodies})")

    def close(self):
        self.running = False
        self.thread.join(2)
        self.phone.close()


def web_client(pbx, log_in=True):
    """The web UI (in this process) on the PBX's data directory, past its first-boot setup."""
    app = make_app(pbx.data)
    accounts = app.extensions["pbx.accounts"]
    if not accounts.has_admin():
        accounts.create("admin", ADMIN_PASSWORD, "admin")
    client = app.test_client()
    if log_in:
        login(client, "admin", ADMIN_PASSWORD)
    return client


def log_lines(pbx, text):
    return [line for line in pbx.log_path.read_text(errors="replace").splitlines() if text in line]


def leave_message(pbx, tmp_path, caller, mailbox, seconds=5.0, skip_greeting=False, box=None):
    """`caller` calls `mailbox`'s extension, nobody answers, it talks (its tone) for `seconds`
    after the beep and presses #. With skip_greeting it presses # during the greeting. `box`:
    the mailbox that takes it when the extension sends its calls to another one."""
    box = box or mailbox
    before = len(log_lines(pbx, f"recording a message for mailbox {box}"))
    with phone(pbx, caller, tmp_path, CALLER_HZ) as a:
        registered(a)
        a.call(pbx.uri(mailbox))
        a.wait_state("CONFIRMED", timeout=20)
        if skip_greeting:
            time.sleep(1)
            a.send_dtmf("#")
        wait_for(lambda: len(log_lines(pbx, f"recording a message for mailbox {box}")) > before, 30,
                 "recording start in the PBX log")
        time.sleep(seconds)
        a.send_dtmf("#")
        a.wait_state("DISCONNECTED", timeout=20)        # "your message has been saved. Goodbye."


def test_a_message_lights_the_lamp_is_heard_with_star97_and_deleted(vpbx, tmp_path):
    lamp = Lamp(vpbx, "2001")
    try:
        lamp.wait("Messages-Waiting: no")              # the initial NOTIFY: nothing waiting
        with phone(vpbx, "2001", tmp_path, OWNER_HZ) as owner_phone:
            registered(owner_phone)                    # rings, and nobody answers it
            leave_message(vpbx, tmp_path, "2000", "2001")
            owner_phone.wait_incoming(timeout=1)
        store = VoicemailStore(vpbx.data)
        [msg] = store.messages("2001")
        assert msg.caller_number == "2000" and msg.status == "new"
        rec = vpbx.wait_cdr(lambda r: r.src == "2000" and r.dst == "2001")
        assert rec.disposition is Disposition.ANSWERED and 4 <= rec.billsec
        assert 4.0 <= msg.duration <= 8.0, msg.duration
        assert tone_fraction(store.file_of(msg), CALLER_HZ) > 0.8
        assert "Voice-Message: 1/0" in lamp.wait("Messages-Waiting: yes")

        pin = ConfigStore(vpbx.data).record(vm.TABLE, "2001").generated_pin
        with phone(vpbx, "2001", tmp_path, OWNER_HZ) as b:
            registered(b)
            b.call(vpbx.uri("*97"))
            b.wait_state("CONFIRMED", timeout=10)
            time.sleep(1)
            b.send_dtmf(pin + "#1")                    # the PIN, then 1: listen
            wait_for(lambda: store.get("2001", msg.id).status == "old", 60, "the message played to its end")
            # heard: the lamp goes off (0 new, 1 old)
            assert "Messages-Waiting: no" in lamp.wait("Voice-Message: 0/1")
            seen = len(lamp.bodies)
            b.send_dtmf("7")                           # delete
            assert "Messages-Waiting: no" in lamp.wait("Voice-Message: 0/0", after=seen)
            assert store.messages("2001") == []
            time.sleep(1)
            b.hangup()
            b.wait_state("DISCONNECTED", timeout=10)
            heard = b.recording_path
        # the message is the caller's 700 Hz: at least 4 s of it at the owner's phone, after the
        # envelope (speech) came first
        samples, rate = read_wav(heard)
        seconds = tone_fraction(heard, CALLER_HZ) * len(samples) / rate
        assert seconds >= 4.0, f"heard {seconds:.1f} s of the message"
        assert tone_fraction(heard, CALLER_HZ, end_s=4.0) < 0.1, "the message came before the envelope"
        assert tone_fraction(heard, OWNER_HZ) < 0.05, "the owner hears itself"
    finally:
        lamp.close()


def test_a_wrong_pin_three_times_hangs_up_and_opens_nothing(vpbx, tmp_path):
    with phone(vpbx, "2002", tmp_path, OWNER_HZ) as b:
        registered(b)
        b.call(vpbx.uri("*97"))
        b.wait_state("CONFIRMED", timeout=10)
        b.send_dtmf("0000#0000#0000#")
        b.wait_state("DISCONNECTED", timeout=40)
    assert len(log_lines(vpbx, "wrong PIN for mailbox 2002")) == 3
    assert not log_lines(vpbx, "mailbox 2002 opened")


def test_a_message_is_emailed_with_its_wav_after_the_smtp_server_comes_back(vpbx, smtp, tmp_path):
    ConfigStore(vpbx.data).update_record(vm.TABLE, "2003", email="anna@office.example", email_mode="attach")
    smtp.stop()                                          # the mail server is down
    try:
        leave_message(vpbx, tmp_path, "2002", "2003", seconds=3.0, skip_greeting=True)
        store = VoicemailStore(vpbx.data)
        [msg] = store.messages("2003")
        assert msg.email_id
        wait_for(lambda: outbox.status(vpbx.data, msg.email_id)["state"] == "retrying", 30, "a retrying e-mail")
        web = web_client(vpbx)
        page = web.get("/voicemail/2003").text
        assert "retrying" in page
    finally:
        smtp.start()                                     # back up, on the same port
    wait_for(lambda: outbox.status(vpbx.data, msg.email_id)["state"] == "sent", 60, "the e-mail sent")
    mail = smtp.inbox.parsed(-1)
    assert mail["To"] == "anna@office.example" and "New voicemail for 2003 from 2002" in mail["Subject"]
    [wav] = [part for part in mail.iter_attachments()]
    assert wav.get_content_type() == "audio/wav" and wav.get_filename() == f"voicemail-2003-{msg.id}.wav"
    assert wav.get_content() == store.file_of(msg).read_bytes()
    assert "sent" in web.get("/voicemail/2003").text


def test_delete_after_email_removes_the_message_once_it_was_sent(vpbx, smtp, tmp_path):
    ConfigStore(vpbx.data).update_record(vm.TABLE, "2000", email="bob@office.example", email_mode="attach",
                                         delete_after_email=True)
    before = len(smtp.inbox.messages)
    lamp = Lamp(vpbx, "2000")
    try:
        lamp.wait("Voice-Message: 0/0")
        leave_message(vpbx, tmp_path, "2002", "2000", seconds=2.0, skip_greeting=True)
        lamp.wait("Voice-Message: 1/0")
        smtp.inbox.wait(before + 1)
        assert "2000" in smtp.inbox.parsed(-1)["Subject"]
        store = VoicemailStore(vpbx.data)
        wait_for(lambda: store.messages("2000") == [], 20, "the message deleted after its e-mail")
        # the housekeeping that deleted it sees the counts change and puts the lamp out
        seen = next(i for i, body in enumerate(lamp.bodies) if "Voice-Message: 1/0" in body)
        lamp.wait("Voice-Message: 0/0", after=seen + 1)
    finally:
        lamp.close()


def test_star_during_the_greeting_opens_the_menu_where_pin_and_greeting_are_changed_by_phone(vpbx, tmp_path):
    pin = ConfigStore(vpbx.data).record(vm.TABLE, "2004").generated_pin
    with phone(vpbx, "2000", tmp_path, CALLER_HZ) as a:
        registered(a)
        a.call(vpbx.uri("2004"))                       # not registered: voicemail at once
        a.wait_state("CONFIRMED", timeout=20)
        time.sleep(1)
        a.send_dtmf("*")                               # during the greeting: the mailbox menu
        time.sleep(1)
        a.send_dtmf(pin + "#04" + "4826#4826#")        # PIN; options; change PIN, twice
        wait_for(lambda: vm.pin_matches(ConfigStore(vpbx.data).record(vm.TABLE, "2004"), "4826"), 60,
                 "the new PIN stored")
        a.send_dtmf("1")                               # record the unavailable greeting
        wait_for(lambda: log_lines(vpbx, "recording the unavailable greeting of mailbox 2004"), 30,
                 "the greeting recording")
        time.sleep(3)
        a.send_dtmf("#")
        store = VoicemailStore(vpbx.data)
        greeting = wait_for(lambda: store.greeting("2004", "unavailable"), 15, "the greeting stored")
        a.hangup()
    assert log_lines(vpbx, "mailbox 2004 opened by")
    assert not store.messages("2004")                  # no message was recorded
    assert tone_fraction(greeting, CALLER_HZ) > 0.8    # the greeting is what the phone sent


def test_a_full_mailbox_says_so_and_star98_opens_it_and_calls_the_caller_back(vpbx, tmp_path):
    ConfigStore(vpbx.data).update_record(vm.TABLE, "2005", max_messages=1)
    leave_message(vpbx, tmp_path, "2002", "2005", seconds=2.0, skip_greeting=True)
    assert len(VoicemailStore(vpbx.data).messages("2005")) == 1
    with phone(vpbx, "2000", tmp_path, CALLER_HZ) as a:
        registered(a)
        a.call(vpbx.uri("2005"))
        a.wait_state("CONFIRMED", timeout=20)
        a.wait_state("DISCONNECTED", timeout=20)       # "this mailbox is full... Goodbye"
    assert log_lines(vpbx, "mailbox 2005 is full (1 messages)")
    assert len(VoicemailStore(vpbx.data).messages("2005")) == 1
    pin = ConfigStore(vpbx.data).record(vm.TABLE, "2005").generated_pin
    with phone(vpbx, "2000", tmp_path, CALLER_HZ) as a, phone(vpbx, "2002", tmp_path, OWNER_HZ) as c:
        registered(a), registered(c)
        c.auto_answer(200)
        a.call(vpbx.uri("*98"))
        a.wait_state("CONFIRMED", timeout=10)
        time.sleep(1)
        a.send_dtmf("2005#" + pin + "#12")             # which mailbox, PIN, listen, call the caller back
        incoming = c.wait_incoming(timeout=30)
        assert "2000" in incoming["from"]
        c.wait_state("CONFIRMED", timeout=10)
        time.sleep(2)
        a.hangup()
        c.wait_state("DISCONNECTED", timeout=10)
        assert tone_fraction(c.recording_path, CALLER_HZ) > 0.3    # the owner talks to the caller
    assert log_lines(vpbx, "mailbox 2005 opened by 2000")
    assert log_lines(vpbx, "calling back 2002 from mailbox 2005")


def test_a_link_in_the_email_plays_the_message_without_a_login(vpbx, smtp, tmp_path):
    ConfigStore(vpbx.data).update_record(vm.TABLE, "2003", email="anna@office.example", email_mode="link")
    before = len(smtp.inbox.messages)
    leave_message(vpbx, tmp_path, "2002", "2003", seconds=2.0, skip_greeting=True)
    smtp.inbox.wait(before + 1)
    mail = smtp.inbox.parsed(-1)
    assert not list(mail.iter_attachments())
    link = re.search(r"(/voicemail/listen/\S+)", mail.get_body().get_content()).group(1)
    r = web_client(vpbx, log_in=False).get(link)         # nobody logged in
    newest = VoicemailStore(vpbx.data).messages("2003")[0]
    assert r.status_code == 200 and r.data == VoicemailStore(vpbx.data).file_of(newest).read_bytes()


def test_an_extension_on_dnd_sends_callers_to_its_busy_greeting(vpbx, tmp_path):
    ConfigStore(vpbx.data).update_extension("2002", dnd=True)
    time.sleep(1)                                      # the call service re-reads the config twice a second
    try:
        with phone(vpbx, "2000", tmp_path, CALLER_HZ) as a:
            registered(a)
            a.call(vpbx.uri("2002"))
            a.wait_state("CONFIRMED", timeout=10)          # voicemail answers at once: no ringing
            time.sleep(1)
            a.hangup()
        assert log_lines(vpbx, "2000 -> 2002: voicemail 2002 (busy greeting)")
    finally:
        ConfigStore(vpbx.data).update_extension("2002", dnd=False)


def test_a_group_mailbox_takes_a_message_and_lights_its_members_lamps(vpbx, tmp_path):
    store = ConfigStore(vpbx.data)
    store.add_record(vm.TABLE, vm.Mailbox("8000", "Sales", group=True, members=("2006",), generated_pin="246810"))
    store.update_extension("2005", forward_always="voicemail:8000")    # the sales line goes to the group
    time.sleep(1)                                      # the call service re-reads the config twice a second
    lamp = Lamp(vpbx, "2006")
    try:
        lamp.wait("Voice-Message: 0/0")
        seen = len(lamp.bodies)
        leave_message(vpbx, tmp_path, "2000", "2005", seconds=2.0, skip_greeting=True, box="8000")
        [msg] = VoicemailStore(vpbx.data).messages("8000")
        assert msg.caller_number == "2000"
        assert "Messages-Waiting: yes" in lamp.wait("Voice-Message: 1/0", after=seen)
    finally:
        lamp.close()
        store.update_extension("2005", forward_always="")
    assert log_lines(vpbx, "2000 -> 2005: voicemail 8000 (unavailable greeting)")
