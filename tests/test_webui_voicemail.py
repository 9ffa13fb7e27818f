"""Voicemail pages: the admin's mailbox list and forms, a mailbox's messages for its owner only
(play, download, mark read, delete), PIN and greeting upload checked, and the signed e-mail link."""
import io
import struct

import numpy as np
import pytest

from firmware.config import ConfigStore
from firmware.features import voicemail as vm
from services.media.wavfile import RATE, write_wav
from services.voicemail import VoicemailStore, sign_link
from tests.browser.webui_env import form_error, post, user_client


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "data"
    store = ConfigStore(path)
    store.add_extension("201", "Anna")
    store.add_extension("202", "Bob")
    return path


def tone_wav(seconds: float, rate: int = RATE) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (np.sin(2 * np.pi * 700 * t) * 8000).astype("<i2").tobytes()
    return (b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVE" + b"fmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) + b"data" + struct.pack("<I", len(pcm)) + pcm)


def leave(data, mailbox="201", caller="202"):
    store = VoicemailStore(data)
    rec = store.recording_path(mailbox)
    write_wav(rec, tone_wav(1.0)[44:])
    return store.add(mailbox, rec, caller, "Bob", 1_790_000_000.0, 1.0)


def test_the_admin_lists_every_extensions_mailbox_with_its_generated_pin(admin, data):
    leave(data)
    html = admin.get("/voicemail").text
    pin = ConfigStore(data).record(vm.TABLE, "201").generated_pin
    assert 'id="mailbox-201"' in html and 'id="mailbox-202"' in html
    assert pin in html and "1 new · 0 old" in html


def test_the_admin_sets_email_and_a_bad_address_is_refused_naming_the_field(admin, data):
    r = post(admin, "/voicemail/201/edit", {"name": "Anna", "enabled": "on", "email": "nope", "email_mode": "attach",
                                            "max_messages": "100", "max_message_seconds": "180"})
    assert r.status_code == 400 and "not an e-mail address" in form_error(r.text, "email")
    r = post(admin, "/voicemail/201/edit", {"name": "Anna", "enabled": "on", "email": "anna@example.com",
                                            "email_mode": "attach", "max_messages": "50",
                                            "max_message_seconds": "120"})
    assert r.status_code == 302
    box = ConfigStore(data).record(vm.TABLE, "201")
    assert (box.email, box.email_mode, box.max_messages, box.enabled) == ("anna@example.com", "attach", 50, True)


def test_switching_a_mailbox_off_is_kept(admin, data):
    post(admin, "/voicemail/202/edit", {"name": "Bob", "email_mode": "none", "max_messages": "100",
                                        "max_message_seconds": "180"})
    assert ConfigStore(data).record(vm.TABLE, "202").enabled is False


def test_a_group_mailbox_is_added_with_members_and_deleted(admin, data):
    r = post(admin, "/voicemail/new", {"number": "8000", "name": "Sales", "members": "201 202", "enabled": "on",
                                       "email_mode": "none", "max_messages": "100", "max_message_seconds": "180"})
    assert r.status_code == 302, r.text
    box = ConfigStore(data).record(vm.TABLE, "8000")
    assert box.group and box.members == ("201", "202") and len(box.generated_pin) == 6
    r = post(admin, "/voicemail/new", {"number": "8001", "name": "X", "members": "999", "email_mode": "none",
                                       "max_messages": "100", "max_message_seconds": "180"})
    assert r.status_code == 400 and "no extension 999" in r.text
    assert post(admin, "/voicemail/8000/delete").status_code == 302
    assert ConfigStore(data).record(vm.TABLE, "8000") is None


def test_the_owner_plays_downloads_marks_and_deletes_a_message(app, admin, data):
    msg = leave(data)
    anna = user_client(app, "201")
    page = anna.get("/voicemail/mine", follow_redirects=True).text
    assert f'id="msg-{msg.id}"' in page and "Bob" in page
    audio = anna.get(f"/voicemail/201/{msg.id}/audio")
    assert audio.status_code == 200 and audio.mimetype == "audio/wav" and audio.data[:4] == b"RIFF"
    download = anna.get(f"/voicemail/201/{msg.id}/audio?download=1")
    assert "attachment" in download.headers["Content-Disposition"]
    assert post(anna, f"/voicemail/201/{msg.id}/mark", {"status": "old"}).status_code == 302
    assert VoicemailStore(data).counts("201") == (0, 1)
    assert post(anna, f"/voicemail/201/{msg.id}/delete").status_code == 302
    assert VoicemailStore(data).messages("201") == []


def test_another_user_cannot_open_someone_elses_mailbox(app, admin, data):
    msg = leave(data)
    bob = user_client(app, "202")
    assert bob.get("/voicemail/201").status_code == 403
    assert bob.get(f"/voicemail/201/{msg.id}/audio").status_code == 403
    assert post(bob, f"/voicemail/201/{msg.id}/delete").status_code == 403
    assert bob.get("/voicemail").status_code == 403              # the admin list
    assert VoicemailStore(data).messages("201") != []


def test_the_owner_sets_a_pin_and_a_weak_one_is_refused(app, admin, data):
    anna = user_client(app, "201")
    r = post(anna, "/voicemail/201/settings", {"pin": "1111", "email_mode": "none"}, follow_redirects=True)
    assert "too easy to guess" in r.text
    assert not ConfigStore(data).record(vm.TABLE, "201").pin_hash
    post(anna, "/voicemail/201/settings", {"pin": "4826", "email_mode": "none"})
    assert vm.pin_matches(ConfigStore(data).record(vm.TABLE, "201"), "4826")


def test_a_greeting_upload_is_checked_for_type_and_length_and_converted(app, admin, data):
    anna = user_client(app, "201")
    r = post(anna, "/voicemail/201/greeting", {"kind": "busy", "file": (io.BytesIO(b"ID3notawav"), "a.mp3")},
             content_type="multipart/form-data", follow_redirects=True)
    assert "not a WAV file" in r.text
    r = post(anna, "/voicemail/201/greeting",
             {"kind": "busy", "file": (io.BytesIO(tone_wav(2.0, rate=16000)), "busy.wav")},
             content_type="multipart/form-data", follow_redirects=True)
    assert "busy greeting (2 s)" in r.text
    path = VoicemailStore(data).greeting("201", "busy")
    assert path is not None and struct.unpack("<I", path.read_bytes()[24:28])[0] == RATE
    assert anna.get("/voicemail/201/greeting/busy").status_code == 200


def test_a_signed_link_plays_one_message_without_login_and_a_forged_one_does_not(app, admin, data):
    msg = leave(data)
    token = sign_link(data, "201", msg.id)
    anyone = app.test_client()
    r = anyone.get(f"/voicemail/listen/{token}")
    assert r.status_code == 200 and r.data[:4] == b"RIFF"
    assert anyone.get(f"/voicemail/listen/{token[:-3]}abc").status_code == 403
    assert anyone.get(f"/voicemail/201/{msg.id}/audio").status_code in (302, 401)


def test_an_inbound_route_can_send_calls_to_a_mailbox_and_a_missing_one_is_refused(admin, data):
    r = post(admin, "/routes/inbound/new", {"did": "+442071234567", "destination_kind": "voicemail",
                                            "destination_voicemail": "299"})
    assert r.status_code == 400 and "no voicemail 299" in form_error(r.text, "destination")
    r = post(admin, "/routes/inbound/new", {"did": "+442071234567", "destination_kind": "voicemail",
                                            "destination_voicemail": "201"})
    assert r.status_code == 302, r.text
    assert ConfigStore(data).inbound_routes()[0].destination == "voicemail:201"
