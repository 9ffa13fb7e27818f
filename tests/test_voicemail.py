"""Voicemail without phones: mailboxes in the config store, the dialplan's voicemail branches,
*97 / *98, the menu's decisions, what is said, PINs, and the message store on disk."""

from dataclasses import dataclass
from datetime import datetime

import pytest

from firmware.config import ConfigStore, ValidationError, ValidationErrors
from firmware.config.model import Extension, Settings
from firmware.dialplan import Caller, ConfigView, Reject, Ring, RuntimeView, route_call
from firmware.features import voicemail as vm
from firmware.features.voicemail import Mailbox, Voicemail, VoicemailMenu
from services.media.prompts import PROMPTS
from services.media.wavfile import RATE, read_wav, write_wav
from services.voicemail import VoicemailStore, check_link, sign_link

NOW = datetime(2026, 11, 28, 14, 35)   # a Saturday


def view(*extensions, boxes=None):
    exts = [e if isinstance(e, Extension) else Extension(e, f"Ext {e}", "s" * 24) for e in extensions]
    if boxes is None:
        boxes = [Mailbox(e.number, generated_pin="123456") for e in exts]
    return ConfigView.of(exts, settings=Settings(), records={vm.TABLE: boxes})


def me(number="1000"):
    return Caller("extension", number, number=number)


# --- the dialplan --------------------------------------------------------------------------------------
def test_an_unanswered_extension_goes_to_its_voicemail_with_the_unavailable_greeting():
    plan = route_call("1001", me(), view("1000", "1001"), now=NOW)
    assert isinstance(plan, Ring)
    assert plan.on.no_answer == Voicemail("1001", "unavailable")
    assert plan.on.unavailable == Voicemail("1001", "unavailable")
    assert plan.on.busy == Voicemail("1001", "busy")


def test_dnd_and_busy_go_to_voicemail_with_the_busy_greeting():
    config = view("1000", Extension("1001", "B", "s" * 24, dnd=True))
    assert route_call("1001", me(), config, now=NOW) == Voicemail("1001", "busy")
    plan = route_call("1001", me(), view("1000", "1001"), now=NOW, runtime=RuntimeView(busy=frozenset({"1001"})))
    assert plan == Voicemail("1001", "busy")


def test_an_unregistered_extension_goes_straight_to_voicemail():
    plan = route_call("1001", me(), view("1000", "1001"), now=NOW, runtime=RuntimeView(registered=frozenset()))
    assert plan == Voicemail("1001", "unavailable")


def test_a_mailbox_switched_off_leaves_the_old_busy_and_unavailable_answers():
    config = view("1000", "1001", boxes=[Mailbox("1001", generated_pin="123456", enabled=False)])
    plan = route_call("1001", me(), config, now=NOW)
    assert isinstance(plan.on.busy, Reject) and plan.on.busy.code == 486
    assert isinstance(plan.on.no_answer, Reject) and plan.on.no_answer.code == 480


def test_a_forward_still_wins_over_voicemail():
    config = view("1000", Extension("1001", "B", "s" * 24, forward_no_answer="extension:1002"), "1002")
    plan = route_call("1001", me(), config, now=NOW)
    assert isinstance(plan.on.no_answer, Ring) and plan.on.no_answer.extension == "1002"
    assert plan.on.busy == Voicemail("1001", "busy")


def test_a_forward_to_voicemail_sends_every_call_there():
    config = view("1000", Extension("1001", "B", "s" * 24, forward_always="voicemail:1001"))
    assert route_call("1001", me(), config, now=NOW) == Voicemail("1001", "unavailable")


def test_a_group_mailbox_is_a_destination_and_a_missing_or_switched_off_one_is_not_found():
    boxes = [Mailbox("1000", generated_pin="123456"), Mailbox("8000", "Sales", group=True, members=("1000",),
                                                             generated_pin="123456"),
             Mailbox("8001", "Off", group=True, generated_pin="123456", enabled=False)]
    config = view("1000", Extension("1001", "B", "s" * 24, forward_always="voicemail:8000"), boxes=boxes)
    assert route_call("1001", me(), config, now=NOW) == Voicemail("8000", "unavailable")
    from firmware.dialplan.router import plan_for_destination
    assert plan_for_destination("voicemail:8000", me(), config, NOW) == Voicemail("8000", "unavailable")
    for missing in ("voicemail:8001", "voicemail:8999"):
        plan = plan_for_destination(missing, me(), config, NOW)
        assert isinstance(plan, Reject) and plan.cause == "not_found"


def test_star97_opens_the_callers_own_mailbox_and_star98_asks_or_takes_the_number():
    config = view("1000", "1001")
    assert route_call("*97", me(), config, now=NOW) == VoicemailMenu("1000", "1000")
    assert route_call("*98", me(), config, now=NOW) == VoicemailMenu("", "1000")
    assert route_call("*981001", me(), config, now=NOW) == VoicemailMenu("1001", "1000")


def test_star97_without_a_mailbox_on_is_not_found():
    config = view("1000", boxes=[Mailbox("1000", generated_pin="123456", enabled=False)])
    plan = route_call("*97", me(), config, now=NOW)
    assert isinstance(plan, Reject) and plan.cause == "not_found"


# --- the config store ----------------------------------------------------------------------------------
def test_every_extension_has_a_mailbox_on_by_default_with_a_generated_pin(tmp_path):
    store = ConfigStore(tmp_path)
    ext = store.add_extension("1000", "Anna")
    box = store.record(vm.TABLE, "1000")
    assert box.enabled and box.name == "Anna" and not box.group
    assert box.generated_pin == vm.derived_pin(ext.secret, "1000") and len(box.generated_pin) == 6
    assert vm.pin_matches(box, box.generated_pin) and not vm.pin_matches(box, "000000")
    assert [b.number for b in store.records(vm.TABLE)] == ["1000"]
    # stable until changed: a second read gives the same PIN
    assert ConfigStore(tmp_path).record(vm.TABLE, "1000").generated_pin == box.generated_pin


def test_the_users_pin_is_stored_hashed_and_replaces_the_generated_one(tmp_path):
    store = ConfigStore(tmp_path)
    store.add_extension("1000", "Anna")
    store.update_record(vm.TABLE, "1000", **vm.pin_changes("4826"))
    box = store.record(vm.TABLE, "1000")
    assert box.generated_pin == "" and box.pin_hash.startswith("pbkdf2_sha256$") and "4826" not in box.pin_hash
    assert vm.pin_matches(box, "4826") and not vm.pin_matches(box, "4827")


@pytest.mark.parametrize("pin", ["12", "12345678901", "12a4", "1111", "1234", "9876"])
def test_weak_or_malformed_pins_are_refused_with_the_reason(pin):
    with pytest.raises(ValidationError, match="PIN"):
        vm.pin_changes(pin)


def test_a_voicemail_destination_must_name_an_existing_mailbox(tmp_path):
    store = ConfigStore(tmp_path)
    store.add_extension("1000", "Anna")
    store.update_extension("1000", forward_busy="voicemail:1000")
    with pytest.raises(ValidationErrors, match="no voicemail 1999"):
        store.update_extension("1000", forward_busy="voicemail:1999")


def test_a_group_mailbox_has_its_own_number_and_members_that_exist(tmp_path):
    store = ConfigStore(tmp_path)
    store.add_extension("1000", "Anna")
    store.add_extension("1001", "Bob")
    store.add_record(vm.TABLE, Mailbox("8000", "Sales", group=True, members=("1000", "1001"), generated_pin="123456"))
    assert store.record(vm.TABLE, "8000").members == ("1000", "1001")
    with pytest.raises(ValidationError, match="is an extension"):
        store.add_record(vm.TABLE, Mailbox("1001", "X", group=True, generated_pin="123456"))
    with pytest.raises(ValidationErrors, match="no extension 1002"):
        store.add_record(vm.TABLE, Mailbox("8001", "Y", group=True, members=("1002",), generated_pin="123456"))
    with pytest.raises(ValidationError, match="used by mailbox"):
        store.remove_extension("1001")
    with pytest.raises(ValidationError, match="switch it off"):
        store.remove_record(vm.TABLE, "1000")
    store.remove_record(vm.TABLE, "8000")
    assert store.record(vm.TABLE, "8000") is None


def test_an_extension_mailbox_is_stored_on_its_first_change_and_forgotten_with_its_extension(tmp_path):
    store = ConfigStore(tmp_path)
    store.add_extension("1000", "Anna")
    store.add_extension("1001", "Bob")
    store.update_record(vm.TABLE, "1000", email="anna@example.com", email_mode="attach")
    assert store.record(vm.TABLE, "1000").email == "anna@example.com"
    store.remove_extension("1000")
    assert store.record(vm.TABLE, "1000") is None
    assert [b.number for b in store.records(vm.TABLE)] == ["1001"]
    # the stale record is purged by the next mailbox write (a known gap: a number re-used before
    # any mailbox write would find it again)
    store.update_record(vm.TABLE, "1001", name="Bob")
    ext = store.add_extension("1000", "Someone else")
    box = store.record(vm.TABLE, "1000")
    assert box.email == "" and box.generated_pin == vm.derived_pin(ext.secret, "1000")


@pytest.mark.parametrize("changes, field", [
    ({"email_mode": "attach"}, "email"),
    ({"email": "not-an-address", "email_mode": "attach"}, "email"),
    ({"email_mode": "fax"}, "email_mode"),
    ({"delete_after_email": True}, "delete_after_email"),
    ({"email": "a@example.com", "email_mode": "link", "delete_after_email": True}, "delete_after_email"),
    ({"max_messages": 0}, "max_messages"),
    ({"max_message_seconds": 5}, "max_message_seconds"),
    ({"members": ("1001",)}, "members"),
])
def test_bad_mailbox_settings_are_refused_naming_the_field(tmp_path, changes, field):
    store = ConfigStore(tmp_path)
    store.add_extension("1000", "Anna")
    with pytest.raises(ValidationErrors) as exc:
        store.update_record(vm.TABLE, "1000", **changes)
    assert field in str(exc.value)


def test_a_backup_restores_the_mailboxes(tmp_path):
    store = ConfigStore(tmp_path / "a")
    store.add_extension("1000", "Anna")
    store.update_record(vm.TABLE, "1000", **vm.pin_changes("4826"))
    doc = store.export_config()
    other = ConfigStore(tmp_path / "b")
    other.import_config(doc)
    assert vm.pin_matches(other.record(vm.TABLE, "1000"), "4826")


# --- the menu ----------------------------------------------------------------------------------------
def test_menu_keys_map_to_actions_and_anything_else_is_invalid_or_a_timeout():
    assert vm.menu_action(vm.MAIN_MENU, "1") == "listen"
    assert vm.menu_action(vm.MAIN_MENU, "0") == "options"
    assert vm.menu_action(vm.MAIN_MENU, "#") == "exit"
    assert vm.menu_action(vm.MAIN_MENU, "5") == "invalid"
    assert vm.menu_action(vm.MAIN_MENU, None) == "timeout"
    assert [vm.menu_action(vm.MESSAGE_MENU, k) for k in "1245679#"] == [
        "replay", "call_back", "previous", "envelope", "next", "delete", "save", "main"]
    assert [vm.menu_action(vm.OPTIONS_MENU, k) for k in "1234*"] == [
        "record_unavailable", "record_busy", "record_name", "change_pin", "main"]
    assert vm.menu_action(vm.GREETING_KEYS, "*") == "menu" and vm.menu_action(vm.GREETING_KEYS, "#") == "skip"


@dataclass
class Msg:
    id: int
    status: str
    received: float


def test_new_messages_play_first_oldest_first_then_old_ones():
    msgs = [Msg(1, "old", 10), Msg(2, "new", 30), Msg(3, "new", 20), Msg(4, "old", 5)]
    assert [m.id for m in vm.listening_order(msgs)] == [3, 2, 4, 1]


def test_which_message_comes_next():
    assert vm.next_index("next", 0, 3) == 1
    assert vm.next_index("next", 2, 3) is None
    assert vm.next_index("save", 1, 3) == 2
    assert vm.next_index("delete", 0, 3) == 0          # the list is one shorter: same place
    assert vm.next_index("delete", 2, 3) is None
    assert vm.next_index("replay", 1, 3) == 1
    assert vm.next_index("previous", 0, 3) == 0 and vm.next_index("previous", 2, 3) == 1


def test_a_mailbox_is_full_at_its_limit():
    box = Mailbox("1000", generated_pin="123456", max_messages=2)
    assert not vm.is_full(box, 1) and vm.is_full(box, 2)


def test_call_back_needs_a_number():
    assert vm.callback_number("1000") == "1000"
    assert vm.callback_number("+447700900123") == "+447700900123"
    assert vm.callback_number("") is None and vm.callback_number("anonymous") is None


def test_a_group_mailbox_lights_its_members_lamps_with_their_own_messages_added():
    boxes = {"1000": Mailbox("1000", generated_pin="123456"), "1001": Mailbox("1001", generated_pin="123456"),
             "8000": Mailbox("8000", "Sales", group=True, members=("1000",), generated_pin="123456")}
    counts = {"1000": (1, 2), "8000": (3, 0)}
    assert vm.lamps_to_update(boxes, "8000") == ["8000", "1000"]
    assert vm.lamps_to_update(boxes, "1001") == ["1001"]
    assert vm.lamps_with_counts(boxes, counts) == {"1000": (4, 2), "1001": (0, 0), "8000": (3, 0)}
    assert vm.lamps_with_counts(boxes, counts, ["1001"]) == {"1001": (0, 0)}


def test_lamps_add_every_group_a_member_is_in_once_and_groups_show_only_their_own():
    pin = dict(generated_pin="123456")
    boxes = {n: Mailbox(n, **pin) for n in ("1000", "1001", "1002", "1003")}
    boxes["8000"] = Mailbox("8000", "Sales", group=True, members=("1000", "1001", "1001", "9999"), **pin)
    boxes["8001"] = Mailbox("8001", "Support", group=True, members=("1001", "8000"), **pin)
    boxes["8002"] = Mailbox("8002", "Empty", group=True, members=("1002",), **pin)
    counts = {"1000": (1, 2), "1001": (0, 5), "8000": (3, 0), "8001": (2, 7), "9999": (4, 4)}
    every = vm.lamps_with_counts(boxes, counts)
    assert list(every) == vm.lamps_to_update(boxes, None)
    assert every == {"1000": (4, 2), "1001": (5, 12), "1002": (0, 0), "1003": (0, 0),
                     "8000": (3, 0), "8001": (2, 7), "8002": (0, 0)}
    # a member without a mailbox of its own still shows its groups' messages on its lamp
    assert vm.lamps_with_counts(boxes, counts, vm.lamps_to_update(boxes, "8000")) == {
        "8000": (3, 0), "1000": (4, 2), "1001": (5, 12), "9999": (7, 4)}


# --- what is said --------------------------------------------------------------------------------------
def test_numbers_times_and_the_envelope_are_spoken_from_prompts_that_exist():
    assert vm.say_number(7) == ["n7"]
    assert vm.say_number(42) == ["n40", "n2"]
    assert vm.say_number(30) == ["n30"]
    assert vm.say_number(105) == ["n1", "n_hundred", "vm_and", "n5"]
    assert vm.say_time(14, 5) == ["n14", "vm_oh", "n5"]
    assert vm.say_time(9, 0) == ["n9", "vm_oclock"]
    envelope = vm.envelope_prompts(1, "1000", NOW)
    assert envelope == ["vm_message", "n1", "vm_from", "n1", "n0", "n0", "n0", "vm_received", "day_saturday",
                        "n20", "n8", "month_11", "vm_at", "n14", "n30", "n5"]
    assert vm.envelope_prompts(2, "", NOW)[3] == "vm_unknown_caller"
    said = set(envelope) | set(vm.count_prompts(1, 2)) | set(vm.count_prompts(0, 0)) | set(vm.say_number(999))
    said |= {p for n in range(1000) for p in vm.say_number(n)}
    said |= {f"day_{d}" for d in vm.WEEKDAYS} | {f"month_{m}" for m in range(1, 13)}
    assert said <= set(PROMPTS), sorted(said - set(PROMPTS))


def test_counts_are_said_in_words():
    assert vm.count_prompts(1, 0) == ["vm_you_have", "n1", "vm_new_message"]
    assert vm.count_prompts(2, 1) == ["vm_you_have", "n2", "vm_new_messages", "vm_and", "n1", "vm_old_message"]
    assert vm.count_prompts(0, 0) == ["vm_no_messages"]


def test_the_default_greeting_says_the_number_or_the_recorded_name():
    box = Mailbox("1000", generated_pin="123456")
    assert vm.greeting_prompts(box, "busy", False) == ["vm_greeting_extension", "n1", "n0", "n0", "n0",
                                                       "vm_greeting_busy"]
    assert vm.greeting_prompts(box, "unavailable", True) == ["name", "vm_greeting_unavailable"]
    group = Mailbox("8000", "Sales", group=True, generated_pin="123456")
    assert vm.greeting_prompts(group, "unavailable", False) == ["vm_greeting_mailbox", "n8", "n0", "n0", "n0",
                                                                "vm_leave_message"]
    assert vm.greeting_prompts(group, "busy", True) == ["vm_greeting_mailbox", "name", "vm_leave_message"]
    assert {p for p in vm.greeting_prompts(group, "busy", False) + vm.greeting_prompts(box, "busy", False)
            if not p.startswith("n")} <= set(PROMPTS)


def test_the_email_says_who_when_and_how_long():
    box = Mailbox("1000", "Anna", generated_pin="123456", email="anna@example.com", email_mode="attach")
    assert vm.email_subject(box, "1001", "Bob", 5.2) == "New voicemail for 1000 from Bob (1001) (5 s)"
    text = vm.email_text(box, "1001", "Bob", NOW, 5.2, link="https://pbx/voicemail/listen/x", link_hours=168)
    assert "Saturday 28 November 2026 14:35" in text and "https://pbx/voicemail/listen/x" in text


# --- the message store ---------------------------------------------------------------------------------
def _tone(seconds: float) -> bytes:
    import numpy as np
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * 700 * t) * 8000).astype("<i2").tobytes()


def test_messages_are_indexed_counted_marked_and_deleted(tmp_path):
    store = VoicemailStore(tmp_path)
    rec = store.recording_path("1000")
    write_wav(rec, _tone(1.0))
    msg = store.add("1000", rec, "1001", "Bob", 1000.0, 1.0)
    assert store.file_of(msg).name == f"msg-{msg.id}.wav" and store.file_of(msg).is_file() and not rec.exists()
    assert store.counts("1000") == (1, 0)
    store.mark("1000", msg.id, "old")
    assert store.counts("1000") == (0, 1) and store.all_counts() == {"1000": (0, 1)}
    assert store.get("1001", msg.id) is None            # another mailbox's id is not found
    assert store.delete("1000", msg.id) and not store.file_of(msg).exists()
    assert store.counts("1000") == (0, 0)


def test_an_uploaded_greeting_is_checked_and_converted(tmp_path):
    store = VoicemailStore(tmp_path)
    with pytest.raises(ValueError, match="not a WAV"):
        store.save_greeting("1000", "busy", b"ID3 this is an mp3")
    with pytest.raises(ValueError, match="shorter"):
        store.save_greeting("1000", "busy", _wav_bytes(_tone(0.1)))
    assert store.save_greeting("1000", "busy", _wav_bytes(_tone(2.0))) == pytest.approx(2.0)
    assert store.greeting("1000", "busy") is not None and store.greeting("1000", "unavailable") is None
    with pytest.raises(ValueError, match="greeting"):
        store.greeting_path("1000", "evening")
    with pytest.raises(ValueError, match="mailbox number"):
        store.box_dir("../etc")


def _wav_bytes(pcm: bytes) -> bytes:
    import struct
    return (b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVE" + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, RATE,
            RATE * 2, 2, 16) + b"data" + struct.pack("<I", len(pcm)) + pcm)


def test_a_link_token_names_one_message_and_expires(tmp_path):
    token = sign_link(tmp_path, "1000", 7)           # makes the web UI's key when it has not started yet
    assert len((tmp_path / "webui" / "secret-key").read_bytes()) == 32
    assert check_link(tmp_path, token) == ("1000", 7)
    with pytest.raises(ValueError, match="not valid"):
        check_link(tmp_path, token[:-2] + "xx")
    with pytest.raises(ValueError, match="expired"):
        check_link(tmp_path, token, max_age_s=-1)


def test_a_message_ended_by_silence_loses_that_silence_but_one_at_the_time_limit_is_kept_whole(tmp_path):
    from services.callsvc.flows.voicemail import SILENCE_S, _cut_silence
    path = tmp_path / "m.wav"
    write_wav(path, _tone(3.0) + b"\x00\x00" * int(SILENCE_S * RATE))
    _cut_silence(path, 180)
    assert abs(len(read_wav(path)) / 2 / RATE - 3.5) < 0.01
    write_wav(path, _tone(10.0))
    _cut_silence(path, 10)
    assert len(read_wav(path)) / 2 / RATE == 10.0
