"""Specification of an extension's BLF state (firmware/features/blf.py) from its live legs."""
from firmware.features.blf import Leg, dialog_state


def test_no_live_leg_is_idle():
    assert dialog_state([]) == "terminated"
    assert dialog_state([Leg(False, "gone")]) == "terminated"


def test_being_rung_flashes():
    assert dialog_state([Leg(False, "ringing")]) == "early"
    assert dialog_state([Leg(False, "early"), Leg(False, "gone")]) == "early"


def test_on_a_call_or_calling_out_is_lit_and_beats_ringing():
    assert dialog_state([Leg(False, "up")]) == "confirmed"
    assert dialog_state([Leg(True, "down")]) == "confirmed"           # dialling out
    assert dialog_state([Leg(False, "ringing"), Leg(True, "up")]) == "confirmed"   # call waiting
