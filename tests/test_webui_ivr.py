"""IVR menu and System prompts pages: forms checked field by field, uploads converted or refused
with the reason, the menu's tree, a replaced system prompt and its revert."""
import io

import numpy as np
import pytest

from firmware.config import ConfigStore
from firmware.features.ivr import TABLE
from services.media import prompt_files
from services.media.wavfile import read_wav
from tests.browser.webui_env import form_error, post


@pytest.fixture
def store(data):
    s = ConfigStore(data)
    s.add_extension("201", "Reception")
    s.add_extension("202", "Accounts")
    return s


def wav_16k_stereo(seconds=1.0, hz=600) -> bytes:
    """A WAV as people upload it: 16 kHz stereo (the page converts it to 8 kHz mono)."""
    import struct
    t = np.arange(int(16000 * seconds)) / 16000
    x = (np.sin(2 * np.pi * hz * t) * 10000).astype("<i2")
    frames = np.repeat(x, 2).tobytes()
    return (b"RIFF" + struct.pack("<I", 36 + len(frames)) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 2, 16000,
                                                                                          64000, 4, 16)
            + b"data" + struct.pack("<I", len(frames)) + frames)


FORM = {"number": "500", "name": "Main", "prompt_kind": "tts", "language": "en-US",
        "prompt_text": "For reception press 1, for accounts press 2.", "timeout": "5", "retries": "2",
        "option_1_kind": "extension", "option_1_extension": "201",
        "option_2_kind": "extension", "option_2_extension": "202",
        "invalid_destination_kind": "", "timeout_destination_kind": "extension",
        "timeout_destination_extension": "201"}


def test_new_menu_is_stored_spoken_in_its_language_and_shown_as_a_tree(admin, store, data):
    r = post(admin, "/ivr/new", FORM)
    assert r.status_code == 302, r.text
    menu = store.record(TABLE, "500")
    assert menu.options == {"1": "extension:201", "2": "extension:202"}
    assert (menu.language, menu.timeout_destination, menu.invalid_destination) == ("en-US", "extension:201", "")
    tts = prompt_files.menu_tts_path(data, menu)
    assert tts.is_file() and len(read_wav(tts)) > 16000       # spoken when saved, not at the first call
    page = admin.get("/ivr/500").text
    assert "1 → extension 201 (Reception)" in page and "no key → extension 201 (Reception)" in page
    audio = admin.get("/ivr/500/prompt")
    assert audio.status_code == 200 and audio.data[:4] == b"RIFF"
    assert "Main" in admin.get("/ivr").text


def test_nested_menus_are_expanded_in_the_tree(admin, store):
    assert post(admin, "/ivr/new", FORM).status_code == 302
    sub = dict(FORM, number="501", name="Support", option_9_kind="ivr", option_9_ivr="500")
    assert post(admin, "/ivr/new", sub).status_code == 302
    main = dict(FORM, option_3_kind="ivr", option_3_ivr="501")
    del main["number"]
    assert post(admin, "/ivr/500", main).status_code == 302
    page = admin.get("/ivr/500").text
    assert "3 → IVR menu 501 (Support)" in page
    assert "9 → IVR menu 500 (Main)" in page and "(shown above)" in page


def test_the_form_names_each_bad_field_and_writes_nothing(admin, store):
    bad = dict(FORM, number="5", option_1_extension="", prompt_text="", timeout="soon",
               option_4_kind="ring_group", option_4_ring_group="699")
    r = post(admin, "/ivr/new", bad)
    assert r.status_code == 400
    assert "choose the extension" in form_error(r.text, "option_1")
    assert "not a whole number" in form_error(r.text, "timeout")
    assert store.records(TABLE) == []
    r = post(admin, "/ivr/new", dict(FORM, option_4_kind="ring_group", option_4_ring_group="699"))
    assert r.status_code == 400 and "no ring group 699" in form_error(r.text, "option_4")


def test_an_uploaded_prompt_is_converted_to_8khz_mono(admin, store, data):
    form = dict(FORM, prompt_kind="upload", prompt_file=(io.BytesIO(wav_16k_stereo()), "welcome.wav"))
    r = post(admin, "/ivr/new", form, content_type="multipart/form-data")
    assert r.status_code == 302, r.text
    assert store.record(TABLE, "500").prompt_kind == "upload"
    pcm = read_wav(prompt_files.ivr_dir(data, "500") / "upload.wav")
    assert 0.9 < len(pcm) / 16000 < 1.1


def test_an_upload_that_is_not_audio_is_refused_with_the_reason(admin, store):
    form = dict(FORM, prompt_file=(io.BytesIO(b"MZ not audio" * 100), "welcome.mp3"))
    r = post(admin, "/ivr/new", form, content_type="multipart/form-data")
    assert r.status_code == 400
    assert "not audio this box can read" in form_error(r.text, "prompt_file")
    form = dict(FORM, prompt_file=(io.BytesIO(b"x" * 100), "welcome.exe"))
    r = post(admin, "/ivr/new", form, content_type="multipart/form-data")
    assert "not a sound file" in form_error(r.text, "prompt_file")
    assert store.records(TABLE) == []


def test_deleting_a_menu_another_menu_uses_is_refused(admin, store):
    assert post(admin, "/ivr/new", FORM).status_code == 302
    assert post(admin, "/ivr/new", dict(FORM, number="501", option_9_kind="ivr", option_9_ivr="500")).status_code == 302
    r = post(admin, "/ivr/500/delete")
    assert r.status_code == 302 and store.record(TABLE, "500") is not None
    assert post(admin, "/ivr/501/delete").status_code == 302
    assert post(admin, "/ivr/500/delete").status_code == 302
    assert store.records(TABLE) == []


def test_pages_need_an_admin(app):
    client = app.test_client()
    for url in ("/ivr", "/ivr/new", "/prompts", "/prompts/busy/audio"):
        assert client.get(url).status_code in (302, 401, 403)


def test_a_system_prompt_is_replaced_by_an_upload_and_reverted(admin, data):
    page = admin.get("/prompts").text
    assert "not_found" in page and "The number you have dialled is not recognised" in page
    assert admin.get("/prompts/busy/audio").status_code == 200
    r = post(admin, "/prompts/busy/upload", {"file": (io.BytesIO(wav_16k_stereo(2.0)), "busy.wav")},
             content_type="multipart/form-data")
    assert r.status_code == 302
    custom = prompt_files.custom_path(data, "busy")
    assert 1.9 < len(read_wav(custom)) / 16000 < 2.1
    assert prompt_files.PromptLoader(data)("busy") == read_wav(custom)     # what calls play now
    assert "played instead" in admin.get("/prompts").text
    assert admin.get("/prompts/busy/audio?which=custom").status_code == 200
    r = post(admin, "/prompts/busy/upload", {"file": (io.BytesIO(b"junk" * 50), "busy.mp3")},
             content_type="multipart/form-data")
    assert "not audio this box can read" in admin.get("/prompts").text     # the flash names the reason
    assert custom.is_file()                                               # the earlier upload stays
    assert post(admin, "/prompts/busy/revert").status_code == 302
    assert not custom.exists()
    assert admin.get("/prompts/nonsense/audio").status_code == 404


def test_the_settings_page_sets_the_recordings_disk_limit(admin, data):
    from tests.test_webui_settings import GOOD
    r = post(admin, "/settings", dict(GOOD, recording_max_disk_percent="80", recording_retention_days="30"))
    assert r.status_code == 302, r.text
    settings = ConfigStore(data).settings()
    assert (settings.recording_max_disk_percent, settings.recording_retention_days) == (80, 30)
    r = post(admin, "/settings", dict(GOOD, recording_max_disk_percent="150"))
    assert r.status_code == 400 and "choose 0 to 99 percent" in form_error(r.text, "recording_max_disk_percent")
    assert "more than 80% full" in admin.get("/recordings").text


def test_the_en_us_prompt_set_is_spoken_on_first_use_and_replaced_on_its_own(admin, data):
    page = admin.get("/prompts?lang=en-US").text
    assert "IVR menus in en-US" in page
    r = admin.get("/prompts/ivr_invalid/audio?lang=en-US")
    assert r.status_code == 200 and r.data[:4] == b"RIFF"
    assert list((data / "prompts" / "en-US").glob("ivr_invalid-*.wav"))
    r = post(admin, "/prompts/ivr_invalid/upload?lang=en-US",
             {"file": (io.BytesIO(wav_16k_stereo(1.0)), "invalid.wav")}, content_type="multipart/form-data")
    assert r.status_code == 302 and "lang=en-US" in r.location
    us = prompt_files.custom_path(data, "ivr_invalid", "en-US")
    assert us.is_file() and not prompt_files.custom_path(data, "ivr_invalid").exists()
    assert prompt_files.language_prompt(data, "ivr_invalid", "en-US") == read_wav(us)
    assert prompt_files.language_prompt(data, "ivr_invalid", "en-GB") != read_wav(us)
    assert "1 replaced in en-US" in admin.get("/prompts?lang=en-US").text
    assert "0 replaced in en-GB" in admin.get("/prompts").text


def test_a_menu_number_an_extension_or_ring_group_answers_to_is_refused(admin, store):
    from firmware.features.ringgroups import Member, RingGroup
    store.add_record("ring_groups", RingGroup("600", "Sales", members=(Member("extension:201"),)))
    for number, what in (("201", "extension 201"), ("600", "ring group 600")):
        r = post(admin, "/ivr/new", dict(FORM, number=number))
        assert r.status_code == 400 and f"already {what}'s number" in form_error(r.text, "number")
    assert store.records(TABLE) == []
