"""Specification of Follow Me's pure part (firmware/features/followme.py): the record, the plan a
call to an extension with Follow Me on becomes, and what *21 does."""
from datetime import datetime

import pytest

from firmware.config import ConfigStore, ValidationError
from firmware.config.model import Extension
from firmware.config.routing import OutboundRoute, Trunk
from firmware.dialplan import Caller, ConfigView, Dial, Ring, route_call
from firmware.features.followme import FollowMe, FollowMeCall, FollowMeToggle, Leg, parse_leg, toggled

NOW = datetime(2026, 11, 30, 10, 0)
SECRET = "long-enough-secret"
MOBILES = OutboundRoute("mobiles", "_07X.", "carrier", extensions=("1001",))


def view(*fms, forward=""):
    exts = [Extension("1000", "Ann", SECRET), Extension("1001", "Bob", SECRET, forward_no_answer=forward),
            Extension("1002", "Cy", SECRET)]
    return ConfigView.of(exts, [Trunk("carrier", "sip.example.com", register=False)], (), (MOBILES,),
                         records={"follow_me": fms})


def bob(**kw):
    return FollowMe("1001", **{"enabled": True, "destinations": (Leg("extension:1001", 0, 10),
                                                                  Leg("external:07700900123", 5, 20)), **kw})


def test_a_leg_is_written_as_number_ring_time_and_delay():
    assert parse_leg("07700900123 25 5") == Leg("external:07700900123", 5, 25)
    assert parse_leg("1002") == Leg("extension:1002", 0, 20)
    with pytest.raises(ValueError, match="ring time and delay"):
        parse_leg("1002 soon")


def test_a_call_to_an_extension_with_follow_me_on_rings_its_list_and_keeps_its_no_answer_handling():
    plan = route_call("1001", Caller("extension", "1000", "1000"), view(bob(), forward="extension:1002"), NOW)
    assert isinstance(plan, FollowMeCall)
    assert [leg.destination for leg, _ in plan.legs] == ["extension:1001", "external:07700900123"]
    assert isinstance(plan.legs[1][1], Dial) and plan.legs[1][1].forwarded_from == "1001"
    assert isinstance(plan.on.no_answer, Ring) and plan.on.no_answer.extension == "1002"
    assert (plan.caller_id_number, plan.caller_id_name) == ("1000", "Ann")


def test_follow_me_off_rings_the_desk_as_usual():
    assert isinstance(route_call("1001", Caller("extension", "1000"), view(bob(enabled=False)), NOW), Ring)


def test_outside_legs_use_the_extensions_own_permissions():
    # 1000 may not use the mobiles route: its Follow Me mobile is left out, the desk still rings
    fm = FollowMe("1000", True, (Leg("external:07700900123"),))
    assert isinstance(route_call("1000", Caller("extension", "1002"), view(fm), NOW), Ring)


def test_a_leg_back_to_the_caller_is_left_out():
    fm = bob(destinations=(Leg("extension:1000"), Leg("extension:1002")))
    plan = route_call("1001", Caller("extension", "1000"), view(fm), NOW)
    assert [leg.number for leg, _ in plan.legs] == ["1002"]


def test_star_21_toggles_follow_me_and_refuses_with_nothing_to_follow():
    assert isinstance(route_call("*21", Caller("extension", "1001"), view(bob()), NOW), FollowMeToggle)
    assert toggled(bob(enabled=False)) is True
    assert toggled(bob()) is False
    assert toggled(None) is None
    assert toggled(FollowMe("1001")) is None


@pytest.mark.parametrize("changes,words", [
    ({"announce": "song"}, "'name'"),
    ({"destinations": ()}, "at least one phone"),
    ({"destinations": (Leg("external:0770", 0, 2),)}, "ring time 2"),
    ({"destinations": (Leg("external:07700900123", 500, 20),)}, "delay 500"),
    ({"destinations": (Leg("voicemail:1001"),)}, "neither an extension"),
])
def test_bad_settings_are_refused_with_the_fix(changes, words):
    with pytest.raises(ValidationError) as e:
        bob(**changes).validate()
    assert any(words in err.message for err in e.value.errors), e.value


def test_the_store_keeps_follow_me_per_extension(tmp_path):
    store = ConfigStore(tmp_path)
    store.add_extension("1001", "Bob")
    with pytest.raises(ValidationError, match="no extension 1003"):
        store.add_record("follow_me", bob(destinations=(Leg("extension:1003"),)))
    store.add_record("follow_me", bob(destinations=("1001 10", "07700900123 20 5")))
    assert ConfigStore(tmp_path).record("follow_me", "1001").destinations[1] == Leg("external:07700900123", 5, 20)
    with pytest.raises(ValidationError, match="Follow Me"):
        store.remove_extension("1001")


def test_when_no_phone_answers_the_call_goes_to_the_extensions_voicemail():
    from firmware.features.voicemail import Mailbox, Voicemail
    exts = [Extension("1000", "Ann", SECRET), Extension("1001", "Bob", SECRET)]
    config = ConfigView.of(exts, [Trunk("carrier", "sip.example.com", register=False)], (), (MOBILES,),
                           records={"follow_me": [bob()], "mailboxes": [Mailbox("1001")]})
    plan = route_call("1001", Caller("extension", "1000", "1000"), config, NOW)
    assert isinstance(plan, FollowMeCall)
    assert plan.on.no_answer == Voicemail("1001", "unavailable")
