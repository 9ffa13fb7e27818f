"""Specification of call parking's pure part (firmware/features/parking.py): the lot, slot choice,
where an unclaimed call goes, and what dialling the park number or a slot means."""
from datetime import datetime

import pytest

from firmware.config import ConfigStore, ValidationError
from firmware.config.model import Extension
from firmware.dialplan import Caller, ConfigView, Reject, route_call
from firmware.features.parking import DEFAULT_LOT, ParkHint, ParkingLot, Retrieve, after_timeout, first_free_slot

NOW = datetime(2026, 11, 30, 10, 0)


def view(*lots):
    return ConfigView.of([Extension("1000", "Ann", "long-enough-secret")], records={"parking_lots": lots})


def test_the_default_lot_parks_on_700_in_slots_701_to_720():
    assert DEFAULT_LOT.number == "700"
    assert DEFAULT_LOT.slot_numbers() == [str(n) for n in range(701, 721)]


def test_a_call_parks_in_the_lowest_free_slot_and_none_when_the_lot_is_full():
    lot = ParkingLot(slots=3)
    assert first_free_slot(lot, set()) == "701"
    assert first_free_slot(lot, {"701", "703"}) == "702"
    assert first_free_slot(lot, {"701", "702", "703"}) is None


def test_an_unclaimed_call_rings_the_parker_then_the_return_destination():
    lot = ParkingLot(return_destination="extension:1009")
    assert after_timeout(lot, "1001") == ["extension:1001", "extension:1009"]
    assert after_timeout(lot, "1009") == ["extension:1009"]
    assert after_timeout(ParkingLot(), "") == []


def test_dialling_a_slot_retrieves_and_dialling_the_park_number_says_how_to_park():
    plan = route_call("705", Caller("extension", "1000"), view(), NOW)
    assert isinstance(plan, Retrieve) and plan.slot == "705"
    plan = route_call("700", Caller("extension", "1000"), view(), NOW)
    assert plan == ParkHint(DEFAULT_LOT)
    assert isinstance(route_call("721", Caller("extension", "1000"), view(), NOW), Reject)


def test_a_configured_lot_replaces_the_default():
    lot = ParkingLot("800", "Warehouse", "801", 5)
    assert isinstance(route_call("803", Caller("extension", "1000"), view(lot), NOW), Retrieve)
    assert route_call("701", Caller("extension", "1000"), view(lot), NOW).code == 404


@pytest.mark.parametrize("changes,field,words", [
    ({"first_slot": "700"}, "first_slot", "include the park number"),
    ({"slots": 0}, "slots", "1-100"),
    ({"timeout": 5}, "timeout", "10-3600"),
    ({"number": "07"}, "number", "2-6 digits"),
    ({"first_slot": "999990", "slots": 20}, "slots", "use fewer slots"),
    ({"return_destination": "operator"}, "return_destination", "not a destination"),
])
def test_bad_lots_are_refused_naming_the_field_and_the_fix(changes, field, words):
    with pytest.raises(ValidationError) as e:
        ParkingLot(**{**ParkingLot().__dict__, **changes}).validate()
    assert any(err.field == field and words in err.message for err in e.value.errors), e.value


def test_the_store_keeps_the_lot_and_guards_its_return_destination(tmp_path):
    store = ConfigStore(tmp_path)
    store.add_extension("1009", "Operator")
    store.add_record("parking_lots", ParkingLot(timeout=30, return_destination="extension:1009"))
    assert ConfigStore(tmp_path).record("parking_lots", "700").timeout == 30
    with pytest.raises(ValidationError, match="parking lot"):
        store.remove_extension("1009")
