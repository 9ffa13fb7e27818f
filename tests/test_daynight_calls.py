"""Day/night toggles end to end: a pjsua2 phone dials *33 (and *33N with its PIN), the state is
stored where the front panel reads it, and a BLF watcher SUBSCRIBEd to *33 with Event: dialog
through the Kamailio edge (SIPp, and a raw SIP UA that reads every NOTIFY) sees its lamp go on at
night and off by day, also when another process (the panel, the web UI) changes the mode."""

import time

import pytest

from firmware.config import ConfigStore
from firmware.features.daynight import TABLE, CallFlowToggle
from tests.phones.raw import RawPhone
from tests.phones.sipp import Sipp
from tests.test_calls import CALLER_HZ, phone, registered

pytestmark = pytest.mark.e2e
LIT, OFF = "<state>confirmed</state>", "<state>terminated</state>"


def dial(pbx, p, code, digits="", timeout=20):
    p.call(pbx.uri(code))
    if digits:
        p.wait_state("CONFIRMED", timeout=5)
        time.sleep(1.0)                         # the PIN prompt starts
        p.send_dtmf(digits)
    p.wait_state("DISCONNECTED", timeout=timeout)
    return p.events()


def watcher(pbx, user, resource):
    w = RawPhone(user, pbx.secrets[user], pbx.registrar)
    assert w.register() == 200
    status, dialog = w.subscribe(resource, "dialog")
    assert status in (200, 202)
    return w, dialog


def test_star33_toggles_night_mode_and_the_blf_key_on_star33_follows(pbx, tmp_path):
    store = ConfigStore(pbx.data)
    w, dialog = watcher(pbx, "1001", "*33")
    try:
        first = w.next_notify(dialog, timeout=5)
        assert first is not None and LIT not in first.body          # day: the lamp is off
        with phone(pbx, "1000", tmp_path, CALLER_HZ) as a:
            registered(a)
            events = dial(pbx, a, "*33")
            assert any(e["state"] == "CONFIRMED" for e in events)   # answered to say "night mode on"
            assert store.settings().mode == "night"
            assert w.next_notify(dialog, timeout=10, match=lambda b: LIT in b) is not None
            dial(pbx, a, "*33")
            assert store.settings().mode == "day"
            assert w.next_notify(dialog, timeout=10, match=lambda b: OFF in b) is not None
        # the front panel's button (or the web UI) writes the same setting from another process
        store.update_settings(mode="night")
        assert w.next_notify(dialog, timeout=10, match=lambda b: LIT in b) is not None
        store.update_settings(mode="day")
        assert w.next_notify(dialog, timeout=10, match=lambda b: OFF in b) is not None
    finally:
        w.close()
    rec = pbx.wait_cdr(lambda r: r.src == "1000" and r.dst == "*33")
    assert rec is not None


def test_a_second_toggle_with_a_pin_is_dialled_as_star33n_and_lights_its_own_key(pbx, tmp_path):
    store = ConfigStore(pbx.data)
    store.add_record(TABLE, CallFlowToggle("2", "Sales", "extension:1003", "extension:1004", pin="4321"))
    time.sleep(1.0)                                                  # the call service sees the new toggle
    w, dialog = watcher(pbx, "1005", "*332")
    try:
        w.next_notify(dialog, timeout=5)
        with phone(pbx, "1002", tmp_path, CALLER_HZ) as a:
            registered(a)
            a.call(pbx.uri("*332"))
            a.wait_state("CONFIRMED", timeout=5)
            time.sleep(1.0)
            a.send_dtmf("9999#")                                     # a wrong PIN: asked again
            time.sleep(4.0)
            a.hangup()
            a.wait_state("DISCONNECTED", timeout=5)
            assert store.record(TABLE, "2").state == "day"
            dial(pbx, a, "*332", digits="4321#")
            assert store.record(TABLE, "2").state == "night"
            assert store.settings().mode == "day"                    # toggle 1 is untouched
            assert w.next_notify(dialog, timeout=10, match=lambda b: LIT in b) is not None
    finally:
        w.close()


def test_a_sipp_blf_subscriber_on_star33_sees_the_lamp_go_on_and_off_as_a_phone_dials_it(pbx, tmp_path):
    store = ConfigStore(pbx.data)
    assert store.settings().mode == "day"
    blf = Sipp("uac_subscribe_dialog.xml", pbx.registrar, service="*33", users=[("1006", pbx.secrets["1006"])],
               workdir=tmp_path, timeout=40).start()
    try:
        time.sleep(2.0)                                   # subscribed, the initial NOTIFY (off) taken
        with phone(pbx, "1007", tmp_path, CALLER_HZ) as a:
            registered(a)
            dial(pbx, a, "*33")
            assert store.settings().mode == "night"
            time.sleep(1.0)
            dial(pbx, a, "*33")
            assert store.settings().mode == "day"
        result = blf.wait(30)
    finally:
        blf.stop()
    assert result.ok, result.log_tail()
    assert result.requests.get("NOTIFY", 0) >= 3            # initial, lit, off
