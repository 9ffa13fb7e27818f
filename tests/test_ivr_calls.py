"""IVR menus and the dial-by-name directory end to end: pjsua2 phones dial a menu, press keys
(RFC 4733 DTMF) and the extension the menu chose rings.

Menu 500 (configured before the PBX starts, in American English; tests/browser/test_ivr_browser.py
builds one in the browser): 1 -> extension 1001, 9 -> the dial-by-name directory, 0 -> menu 501 (5 -> extension 1005),
direct dial on; one repeat; a wrong key twice -> extension 1003, silence twice -> extension 1004.
Extensions 1006 "Alice Smith" and 1007 "Alicia Jones" are found in the directory by A-L-I (254).
"""
import re
import time

import pytest

from firmware.cdr import Disposition
from firmware.features.ivr import IvrMenu
from services.media.wavfile import read_wav
from tests.pbxproc import PbxProcess
from tests.phones.audio import tone_present
from tests.phones.pj import PjPhone

pytestmark = pytest.mark.e2e
CALLER_HZ, CALLEE_HZ = 700, 1100


@pytest.fixture(scope="module")
def pbx(tmp_path_factory):
    proc = PbxProcess(tmp_path_factory.mktemp("pbx"), extensions=[str(n) for n in range(1000, 1010)],
                      settings={"no_answer_timeout": 20, "busy_tone_seconds": 1})
    proc.store.update_extension("1006", name="Alice Smith")
    proc.store.update_extension("1007", name="Alicia Jones")
    support = IvrMenu("501", "Support", prompt_text="Support menu.", options={"5": "extension:1005"})
    proc.store.add_record("ivr_menus", support)
    proc.store.add_record("ivr_menus", IvrMenu(
        "500", "Main", prompt_text="Main menu.", language="en-US",
        options={"1": "extension:1001", "9": "directory", "0": "ivr:501"},
        direct_dial=True, timeout=2, retries=1, invalid_destination="extension:1003",
        timeout_destination="extension:1004"))
    proc.store.replace_record("ivr_menus", IvrMenu(**{**support.__dict__,
                                                     "options": {"5": "extension:1005", "*": "ivr:500"}}))
    proc.start()
    yield proc
    proc.stop()


def phone(pbx, number, tmp_path, hz=CALLEE_HZ):
    return PjPhone(user=number, secret=pbx.secrets[number], registrar=pbx.registrar, tone_hz=hz,
                   record_dir=tmp_path)


def dial_menu(pbx, caller):
    assert caller.register() == 200
    caller.call(pbx.uri("500"))
    caller.wait_state("CONFIRMED", timeout=10)     # the menu answers
    time.sleep(1.0)                                # its prompt is playing


def talk_and_hang_up(caller, callee):
    callee.answer(200)
    time.sleep(2.0)
    caller.hangup()
    callee.wait_state("DISCONNECTED", timeout=8)
    assert tone_present(caller.recording_path, CALLEE_HZ, start_s=-1.5, end_s=-0.2)
    assert tone_present(callee.recording_path, CALLER_HZ, start_s=0.5)


def test_key_1_over_the_prompt_rings_the_extension_the_menu_names(pbx, tmp_path):
    with phone(pbx, "1000", tmp_path, CALLER_HZ) as a, phone(pbx, "1001", tmp_path) as b:
        assert b.register() == 200
        dial_menu(pbx, a)
        a.send_dtmf("1")
        # direct dial is on and extensions begin with 1: the menu waits its inter-digit time first
        b.wait_incoming(timeout=10)
        talk_and_hang_up(a, b)
    rec = pbx.wait_cdr(lambda r: r.src == "1000" and r.dst == "1001")
    assert rec.disposition is Disposition.ANSWERED


def test_a_wrong_key_twice_goes_to_the_menus_invalid_destination(pbx, tmp_path):
    with phone(pbx, "1002", tmp_path, CALLER_HZ) as a, phone(pbx, "1003", tmp_path) as c:
        assert c.register() == 200
        dial_menu(pbx, a)
        a.send_dtmf("7")
        time.sleep(1.0)                            # over "that is not a valid option"
        a.send_dtmf("7")
        c.wait_incoming(timeout=10)
        talk_and_hang_up(a, c)
    log = pbx.log_path.read_text()
    assert re.search(r"IVR 500 try 1: keys '7' -> retry invalid", log)
    assert re.search(r"IVR 500 try 2: keys '7' -> fail extension:1003", log)
    # the menu is in American English: "not a valid option" came from the en-US prompt set
    assert list((pbx.data / "prompts" / "en-US").glob("ivr_invalid-*.wav"))


def test_silence_repeats_the_menu_then_goes_to_its_timeout_destination(pbx, tmp_path):
    with phone(pbx, "1005", tmp_path, CALLER_HZ) as a, phone(pbx, "1004", tmp_path) as d:
        assert d.register() == 200
        dial_menu(pbx, a)
        started = time.monotonic()
        d.wait_incoming(timeout=30)
        # prompt, 2 s, "did not hear your choice", prompt again, 2 s
        assert time.monotonic() - started > 5
        talk_and_hang_up(a, d)
    log = pbx.log_path.read_text()
    assert re.search(r"IVR 500 try 1: keys 'none' -> retry timeout", log)
    assert re.search(r"IVR 500 try 2: keys 'none' -> fail extension:1004", log)


def test_direct_dial_of_an_extension_number_rings_it(pbx, tmp_path):
    with phone(pbx, "1008", tmp_path, CALLER_HZ) as a, phone(pbx, "1009", tmp_path) as e:
        assert e.register() == 200
        dial_menu(pbx, a)
        a.send_dtmf("1009")
        e.wait_incoming(timeout=10)
        talk_and_hang_up(a, e)


def test_a_key_leading_to_another_menu_plays_that_menu_whose_key_rings_its_extension(pbx, tmp_path):
    with phone(pbx, "1002", tmp_path, CALLER_HZ) as a, phone(pbx, "1005", tmp_path) as f:
        assert f.register() == 200
        dial_menu(pbx, a)
        a.send_dtmf("0")
        time.sleep(1.5)                            # "Support menu."
        a.send_dtmf("5")
        f.wait_incoming(timeout=10)
        talk_and_hang_up(a, f)
    log = pbx.log_path.read_text()
    assert re.search(r"IVR 500 try 1: keys '0' -> goto ivr:501", log)
    assert re.search(r"IVR 501 try 1: keys '5' -> goto extension:1005", log)


def test_dial_by_name_connects_to_the_chosen_match(pbx, tmp_path):
    with phone(pbx, "1000", tmp_path, CALLER_HZ) as a, phone(pbx, "1006", tmp_path) as alice, \
            phone(pbx, "1007", tmp_path) as alicia:
        assert alice.register() == 200 and alicia.register() == 200
        dial_menu(pbx, a)
        a.send_dtmf("9")
        time.sleep(1.5)                            # "enter the first three letters..."
        a.send_dtmf("254")
        time.sleep(1.0)                            # "press 1 for Alice Smith, press 2 for Alicia Jones"
        a.send_dtmf("2")
        alicia.wait_incoming(timeout=15)
        talk_and_hang_up(a, alicia)
    assert not alice.events()                      # Alice's phone never rang
    log = pbx.log_path.read_text()
    assert "directory try 1: keys '254' match 1006 Alice Smith, 1007 Alicia Jones" in log


def test_star_95_records_the_menu_prompt_by_phone(pbx, tmp_path):
    with phone(pbx, "1002", tmp_path, CALLER_HZ) as a:
        assert a.register() == 200
        a.call(pbx.uri("*95500"))
        a.wait_state("CONFIRMED", timeout=10)
        deadline = time.monotonic() + 20                # "record the menu prompt after the tone", beep
        while "records the prompt of IVR menu 500" not in pbx.log_path.read_text():
            assert time.monotonic() < deadline, "the PBX never started recording the prompt"
            time.sleep(0.1)
        time.sleep(2.0)                             # the phone's 700 Hz tone is the new prompt
        a.send_dtmf("#")
        a.wait_state("DISCONNECTED", timeout=15)
    path = pbx.data / "prompts" / "ivr" / "500" / "recorded.wav"
    assert path.is_file()
    assert len(read_wav(path)) / 16000 > 1.0
    assert tone_present(path, CALLER_HZ)
    from firmware.config import ConfigStore
    assert ConfigStore(pbx.data).record("ivr_menus", "500").prompt_kind == "recorded"


def test_a_replaced_system_prompt_is_what_callers_hear(pbx, tmp_path):
    import numpy as np
    from services.media.prompt_files import custom_path
    from services.media.wavfile import write_wav
    custom = custom_path(pbx.data, "not_found")
    custom.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(3 * 8000) / 8000
    write_wav(custom, (np.sin(2 * np.pi * 1500 * t) * 8000).astype("<i2").tobytes())
    try:
        with phone(pbx, "1003", tmp_path, CALLER_HZ) as a:
            assert a.register() == 200
            a.call(pbx.uri("4999"))                  # no such number: the not_found announcement
            a.wait_state("DISCONNECTED", timeout=15)
            assert tone_present(a.recording_path, 1500, start_s=0.5, end_s=2.5)
    finally:
        custom.unlink()
