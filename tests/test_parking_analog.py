"""Parking from an analog phone (board simulator + line gateway): flash, dial 700 (the PBX says
"hang up to park the call in 7 0 1"), hang up: the gateway transfers the held call to 700, which
parks it; a SIP phone dialling 701 then talks to the held party."""
import time

import numpy as np
import pytest

from tests.phones.audio import tone_present
from tests.test_line_gateway import (SIP_EXT, SIP_HZ, TARGET_EXT, TARGET_HZ, analog_calls, heard_fraction,  # noqa: F401
                                     line_state, lines, pbx, sip_phone, wait_for)

pytestmark = pytest.mark.e2e


def test_flash_dial_700_and_hang_up_parks_the_held_call_and_701_takes_it(pbx, lines, tmp_path):
    sim, runner = lines
    held = sip_phone(pbx, SIP_EXT, tmp_path)
    taker = sip_phone(pbx, TARGET_EXT, tmp_path, hz=TARGET_HZ)
    try:
        analog = analog_calls(sim, runner, held)
        analog.flash()
        wait_for(lambda: line_state(runner, 1) == "held", 3, "the call to be on hold")
        analog.dial("700#")
        wait_for(lambda: line_state(runner, 1) == "consult_calling", 5, "the call to 700 to ring")
        time.sleep(3.0)                                 # the hint: "hang up to park the call in 7 0 1"
        heard = analog.heard()
        analog.on_hook()                                # the gateway transfers the held call to 700
        wait_for(lambda: line_state(runner, 1) == "idle", 10, "the FXS line to be idle")
        time.sleep(1.0)
        taker.call(pbx.uri("701"))
        taker.wait_state("CONFIRMED", timeout=8)
        time.sleep(2.5)
        held.hangup()
        held.wait_state("DISCONNECTED", timeout=5)
        taker.wait_state("DISCONNECTED", timeout=5)
        assert tone_present(held.recording_path, TARGET_HZ, start_s=-2.0, end_s=-0.3), "the held party hears no one"
        assert tone_present(taker.recording_path, SIP_HZ, start_s=-2.0, end_s=-0.3), "701 does not reach the held call"
        # the last 2 s before hanging up: speech (the hint), not dial tone or silence
        last = np.frombuffer(heard[-32000:], "<i2").astype(float)
        assert np.sqrt(np.mean(last ** 2)) > 200 and heard_fraction(heard[-32000:], (350, 440)) < 0.2
    finally:
        held.stop()
        taker.stop()
