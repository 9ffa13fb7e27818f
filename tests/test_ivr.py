"""Specification of the pure parts of IVR menus, the dial-by-name directory and the recordings'
retention limit (firmware/features/ivr.py, directory.py, recording.py), and of the prompt files
the administrator makes (services/media/prompt_files.py)."""
from datetime import datetime

import pytest

from firmware.config import ConfigStore, ValidationError
from firmware.config.model import Extension
from firmware.dialplan import Caller, ConfigView, Reject, describe, route_call
from firmware.dialplan.router import plan_for_destination
from firmware.features.directory import Directory, directory_matches, keys_for
from firmware.features.ivr import Ivr, IvrMenu, RecordIvrPrompt, ivr_choice, menu_tree, wants_more_digits
from firmware.features.recording import DAY, RecordingFile, to_delete

NOW = datetime(2026, 11, 30, 10, 0)
SECRET = "long-enough-secret"
EXTENSIONS = ("1000", "1001", "1002", "2000")


def menu(**kw):
    base = dict(number="500", name="Main", prompt_text="For sales press 1, for a message press 2.",
                options={"1": "extension:1001", "2": "extension:1002", "0": "ivr:501"}, retries=2)
    return IvrMenu(**{**base, **kw})


def view(*menus, names=None):
    names = names or {}
    exts = [Extension(n, names.get(n, f"User {n}"), SECRET) for n in EXTENSIONS]
    return ConfigView.of(exts, [], (), (), records={"ivr_menus": menus})


# What the caller's keys mean

def test_a_key_the_menu_offers_goes_to_its_destination():
    assert ivr_choice(menu(), "1", 1) == ("goto", "extension:1001")
    assert ivr_choice(menu(), "0", 3) == ("goto", "ivr:501")      # even on the last try


def test_a_wrong_key_repeats_the_prompt_until_the_tries_run_out_then_the_invalid_destination():
    m = menu(invalid_destination="extension:2000", timeout_destination="extension:1000")
    assert ivr_choice(m, "7", 1) == ("retry", "invalid")
    assert ivr_choice(m, "7", 2) == ("retry", "invalid")
    assert ivr_choice(m, "7", 3) == ("fail", "extension:2000")


def test_silence_repeats_the_prompt_then_goes_to_the_timeout_destination():
    m = menu(invalid_destination="extension:2000", timeout_destination="extension:1000", retries=1)
    assert ivr_choice(m, "", 1) == ("retry", "timeout")
    assert ivr_choice(m, "", 2) == ("fail", "extension:1000")


def test_no_fail_destination_means_hang_up():
    assert ivr_choice(menu(retries=0), "9", 1) == ("fail", "")


def test_direct_dial_rings_a_dialled_extension_only_when_switched_on():
    assert ivr_choice(menu(direct_dial=True), "1002", 1, EXTENSIONS) == ("goto", "extension:1002")
    assert ivr_choice(menu(direct_dial=False), "1002", 1, EXTENSIONS) == ("retry", "invalid")
    assert ivr_choice(menu(direct_dial=True), "1009", 1, EXTENSIONS) == ("retry", "invalid")


def test_direct_dial_waits_for_more_digits_while_an_extension_number_continues_them():
    m = menu(direct_dial=True)
    assert wants_more_digits(m, "1", EXTENSIONS)          # 1 is a key, but also 1000...
    assert wants_more_digits(m, "100", EXTENSIONS)
    assert not wants_more_digits(m, "1002", EXTENSIONS)   # complete
    assert not wants_more_digits(m, "5", EXTENSIONS)      # no extension starts with 5
    assert not wants_more_digits(m, "*", EXTENSIONS)
    assert not wants_more_digits(menu(direct_dial=False), "1", EXTENSIONS)


# The record

@pytest.mark.parametrize("changes, field, words", [
    ({"number": "5"}, "number", "2-6 digits"),
    ({"name": ""}, "name", "1-40"),
    ({"prompt_kind": "video"}, "prompt_kind", "tts"),
    ({"prompt_text": "  "}, "prompt_text", "type what the menu says"),
    ({"language": "fr-FR"}, "language", "en-GB or en-US"),
    ({"options": {"A": "extension:1001"}}, "options", "0-9, * or #"),
    ({"options": {"1": "1001"}}, "option_1", "extension:1001"),
    ({"options": {}}, "options", "at least one key"),
    ({"timeout": 0}, "timeout", "1-30 seconds"),
    ({"retries": 9}, "retries", "0-5"),
    ({"invalid_destination": "nowhere"}, "invalid_destination", "not a destination"),
])
def test_bad_values_are_refused_naming_the_field_and_the_fix(changes, field, words):
    with pytest.raises(ValidationError) as e:
        menu(**changes).validate()
    assert any(err.field == field and words in err.message for err in e.value.errors), e.value


def test_an_uploaded_or_recorded_prompt_needs_no_text():
    menu(prompt_kind="upload", prompt_text="").validate()
    menu(prompt_kind="recorded", prompt_text="").validate()


def test_the_store_checks_that_every_key_target_exists_and_guards_them(tmp_path):
    store = ConfigStore(tmp_path)
    for n in ("1001", "1002"):
        store.add_extension(n, f"User {n}")
    with pytest.raises(ValidationError, match="no IVR menu 501"):
        store.add_record("ivr_menus", menu())
    store.add_record("ivr_menus", menu(options={"1": "extension:1001", "2": "extension:1002"}))
    store.add_record("ivr_menus", menu(number="501", name="Sub", options={"9": "ivr:500"}))
    store.replace_record("ivr_menus", menu())                 # 0 -> the sub-menu, now it exists
    with pytest.raises(ValidationError, match="IVR menu"):
        store.remove_extension("1002")
    with pytest.raises(ValidationError, match="used by IVR menu"):
        store.remove_record("ivr_menus", "501")
    assert ConfigStore(tmp_path).record("ivr_menus", "500").options["0"] == "ivr:501"


# The plan

def test_dialling_a_menu_number_or_its_destination_plays_the_menu():
    m = menu(direct_dial=True)
    plan = route_call("500", Caller("extension", "1000", "1000", ""), view(m), NOW)
    assert isinstance(plan, Ivr) and plan.menu == m
    assert set(plan.extensions) == set(EXTENSIONS)
    assert "ivr 500 'Main'" in describe(plan)
    plan = plan_for_destination("ivr:500", Caller("trunk", "carrier", "0123", ""), view(m), NOW)
    assert isinstance(plan, Ivr)
    assert isinstance(plan_for_destination("ivr:599", Caller("extension", "1000"), view(m), NOW), Reject)


def test_star_95_and_a_menu_number_records_its_prompt():
    plan = route_call("*95500", Caller("extension", "1001", "1001", ""), view(menu()), NOW)
    assert plan == RecordIvrPrompt("500", "1001")
    assert isinstance(route_call("*95599", Caller("extension", "1001"), view(menu()), NOW), Reject)


def test_the_tree_expands_nested_menus_once():
    main = menu()
    sub = menu(number="501", name="Support", options={"1": "extension:2000", "9": "ivr:500"})
    tree = menu_tree(main, {"500": main, "501": sub})
    labels = [c.label for c in tree.children]
    assert labels[:3] == ["1 → extension:1001", "2 → extension:1002", "0 → ivr:501"]
    nested = tree.children[2]
    assert nested.menu == sub
    assert [c.label for c in nested.children][:2] == ["1 → extension:2000", "9 → ivr:500"]
    assert nested.children[1].note == "(shown above)" and not nested.children[1].children


# Dial by name

ENTRIES = (("1001", "Alice Smith"), ("1002", "Alicia Jones"), ("1003", "Bob Allen"), ("1004", "Carol Bell"))


def test_letters_are_keyed_as_on_a_phone_keypad():
    assert keys_for("Alice") == "25423"
    assert keys_for("O'Brien") == "627436"


def test_the_first_three_letters_of_a_first_or_last_name_match():
    assert directory_matches(ENTRIES, "254") == [("1001", "Alice Smith"), ("1002", "Alicia Jones")]
    assert directory_matches(ENTRIES, "255") == [("1003", "Bob Allen")]        # ALL-en
    assert directory_matches(ENTRIES, "235") == [("1004", "Carol Bell")]       # BEL-l
    assert directory_matches(ENTRIES, "999") == []
    assert directory_matches(ENTRIES, "1*#") == []
    assert len(directory_matches(ENTRIES * 5, "2", limit=8)) == 8


def test_the_directory_destination_lists_named_enabled_extensions():
    plan = plan_for_destination("directory", Caller("trunk", "carrier", "0123", ""),
                                view(names={"1000": "Alice Smith", "1001": " "}), NOW)
    assert isinstance(plan, Directory)
    assert ("1000", "Alice Smith") in plan.entries and all(n != "1001" for n, _ in plan.entries)


# Retention of recordings

def test_recordings_past_the_age_limit_go():
    now = 1_800_000_000.0
    files = [RecordingFile("old", now - 10 * DAY, 100), RecordingFile("new", now - DAY, 100)]
    assert to_delete(files, now, 7, 0, 1000, 200) == ["old"]
    assert to_delete(files, now, 0, 0, 1000, 200) == []


def test_the_oldest_recordings_go_while_the_disk_is_fuller_than_the_limit():
    now = 1_800_000_000.0
    files = [RecordingFile(f"f{i}", now - i * 60, 100) for i in range(5)]     # f4 is the oldest
    # 1000 bytes disk, 950 used, limit 70 %: 250 bytes must go -> the three oldest
    assert to_delete(files, now, 0, 70, 1000, 950) == ["f4", "f3", "f2"]
    assert to_delete(files, now, 0, 99, 1000, 950) == []


# Prompt files

def test_an_uploaded_system_prompt_replaces_the_built_in_one_until_it_is_removed(tmp_path):
    from services.media.prompt_files import PromptLoader, custom_path
    from services.media.prompts import load_prompt
    from services.media.wavfile import write_wav
    loader = PromptLoader(tmp_path)
    assert loader("busy") == load_prompt("busy")
    path = custom_path(tmp_path, "busy")
    path.parent.mkdir(parents=True)
    write_wav(path, b"\x01\x00" * 800)
    assert loader("busy") == b"\x01\x00" * 800
    path.unlink()
    assert loader("busy") == load_prompt("busy")
    with pytest.raises(ValueError, match="unknown prompt"):
        custom_path(tmp_path, "../../etc/passwd")


def test_an_upload_that_is_not_audio_is_refused_with_the_reason(tmp_path):
    from services.media.prompt_files import ConversionError, convert, upload_error
    assert "not a sound file" in upload_error("menu.exe", 10)
    assert "limit is 10 MB" in upload_error("menu.mp3", 11 * 1024 * 1024)
    bogus = tmp_path / "menu.mp3"
    bogus.write_bytes(b"this is not audio at all" * 100)
    with pytest.raises(ConversionError, match="not audio"):
        convert(bogus, tmp_path / "out.wav", label="menu.mp3")
    assert not (tmp_path / "out.wav").exists()


def test_the_directory_says_the_name_the_person_recorded_else_speaks_it_once(tmp_path):
    from services.media.prompt_files import name_tts_path, spoken_name, voicemail_name_path
    from services.media.wavfile import write_wav
    spoken = spoken_name(tmp_path, "1001", "Alice Smith")
    cached = name_tts_path(tmp_path, "1001", "Alice Smith")
    assert cached.is_file() and len(spoken) > 8000            # TTS, kept in DATA/prompts/names/
    assert spoken_name(tmp_path, "1001", "Alice Smith") == spoken
    recorded = voicemail_name_path(tmp_path, "1001")
    recorded.parent.mkdir(parents=True)
    write_wav(recorded, b"\x02\x00" * 4000)
    assert spoken_name(tmp_path, "1001", "Alice Smith") == b"\x02\x00" * 4000
