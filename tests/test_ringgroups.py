"""Specification of ring groups' pure part (firmware/features/ringgroups.py): the record, who rings
when per strategy, and the plan a dialled group number or a "ring_group:N" destination becomes."""
import random
from datetime import datetime

import pytest

from firmware.config import ConfigStore, ValidationError
from firmware.config.model import Extension
from firmware.config.routing import OutboundRoute, Trunk
from firmware.dialplan import Caller, ConfigView, Dial, Reject, Ring, describe, route_call
from firmware.dialplan.router import plan_for_destination
from firmware.features.ringgroups import Member, RingGroup, RingGroupCall, parse_member, ring_order

NOW = datetime(2026, 11, 30, 10, 0)
SECRET = "long-enough-secret"
MOBILES = OutboundRoute("mobiles", "_07X.", "carrier", extensions=("1009",))


def group(strategy="ring_all", members=("extension:1001", "extension:1002", "extension:1003"), **kw):
    return RingGroup("600", "Sales", strategy, tuple(Member(m, 20) for m in members), **kw)


def view(*groups, dnd=()):
    exts = [Extension(n, f"User {n}", SECRET, dnd=n in dnd) for n in ("1000", "1001", "1002", "1003", "1009")]
    return ConfigView.of(exts, [Trunk("carrier", "sip.example.com", register=False)], (), (MOBILES,),
                         records={"ring_groups": groups})


def numbers(rounds):
    return [[m.number for m in r] for r in rounds]


# Who rings when

def test_ring_all_rings_every_member_in_one_round():
    assert numbers(ring_order(group("ring_all"))) == [["1001", "1002", "1003"]]


def test_hunt_rings_members_one_after_another_in_the_listed_order():
    assert numbers(ring_order(group("hunt"), last_answered="extension:1002")) == [["1001"], ["1002"], ["1003"]]


def test_memory_hunt_starts_with_whoever_answered_the_last_call():
    assert numbers(ring_order(group("memory_hunt"), last_answered="extension:1002")) == [["1002"], ["1003"], ["1001"]]
    assert numbers(ring_order(group("memory_hunt"))) == [["1001"], ["1002"], ["1003"]]


def test_round_robin_starts_with_the_member_after_the_last_one_who_answered():
    assert numbers(ring_order(group("round_robin"), last_answered="extension:1003")) == [["1001"], ["1002"], ["1003"]]
    assert numbers(ring_order(group("round_robin"), last_answered="extension:1001")) == [["1002"], ["1003"], ["1001"]]


def test_a_last_answered_member_no_longer_in_the_group_starts_from_the_top():
    assert numbers(ring_order(group("round_robin"), last_answered="extension:1999")) == [["1001"], ["1002"], ["1003"]]


def test_random_rings_everyone_once_in_the_order_its_generator_picks():
    rounds = numbers(ring_order(group("random"), rng=random.Random(7)))
    expected = ["1001", "1002", "1003"]
    random.Random(7).shuffle(expected)
    assert rounds == [[n] for n in expected]


def test_first_available_skips_members_on_a_call_but_never_an_outside_number():
    g = group("first_available", ("extension:1001", "extension:1002", "external:07700900123"))
    assert numbers(ring_order(g, busy=frozenset({"1001"}))) == [["1002"], ["07700900123"]]


# The record

def test_a_member_is_an_extension_or_an_outside_number_with_its_ring_time():
    assert parse_member("1001") == Member("extension:1001", 20)
    assert parse_member("07700 900123 30".replace(" 900", "900")) == Member("external:07700900123", 30)
    assert parse_member("1001 25", extensions={"1000"}) == Member("external:1001", 25)
    with pytest.raises(ValueError, match="not a whole number"):
        parse_member("1001 soon")


@pytest.mark.parametrize("changes,field,words", [
    ({"strategy": "loudest"}, "strategy", "not a strategy"),
    ({"members": ()}, "members", "at least one member"),
    ({"members": (Member("extension:1001", 2),)}, "members", "ring time 2"),
    ({"members": (Member("extension:1001"), Member("extension:1001"))}, "members", "listed twice"),
    ({"timeout": 0}, "timeout", "5-600"),
    ({"waiting": "silence"}, "waiting", "ringback or music"),
    ({"no_answer": "ring_group:600"}, "no_answer", "back to itself"),
    ({"no_answer": "1001"}, "no_answer", "extension:1001"),
])
def test_bad_values_are_refused_naming_the_field_and_the_fix(changes, field, words):
    with pytest.raises(ValidationError) as e:
        RingGroup(**{**group().__dict__, **changes}).validate()
    assert any(err.field == field and words in err.message for err in e.value.errors), e.value


def test_the_store_keeps_groups_checks_members_exist_and_guards_them(tmp_path):
    store = ConfigStore(tmp_path)
    for n in ("1001", "1002"):
        store.add_extension(n, f"User {n}")
    with pytest.raises(ValidationError, match="no extension 1003"):
        store.add_record("ring_groups", group())
    store.add_record("ring_groups", group(members=("extension:1001", "external:07700900123"),
                                         no_answer="extension:1002"))
    again = ConfigStore(tmp_path).record("ring_groups", "600")
    assert again.members == (Member("extension:1001", 20), Member("external:07700900123", 20))
    with pytest.raises(ValidationError, match="ring group"):
        store.remove_extension("1002")           # the group's no-answer destination
    store.add_record("ring_groups", RingGroup("601", "Support", members=(Member("extension:1001"),),
                                              no_answer="ring_group:600"))
    with pytest.raises(ValidationError, match="used by ring group"):
        store.remove_record("ring_groups", "600")


# The plan

def test_dialling_a_group_number_rings_the_group_with_the_prefixed_caller_name():
    g = group(caller_id_prefix="Sales: ")
    plan = route_call("600", Caller("extension", "1000", "1000", "x"), view(g), NOW)
    assert isinstance(plan, RingGroupCall)
    assert (plan.group, plan.caller_id_number, plan.caller_id_name) == (g, "1000", "Sales: User 1000")
    assert "ring group 600 ring_all [1001,1002,1003] 60s" in describe(plan)


def test_members_on_dnd_and_the_caller_itself_are_skipped():
    plan = route_call("600", Caller("extension", "1001", "1001", ""), view(group(), dnd=("1002",)), NOW)
    assert set(plan.skip) == {"1001", "1002"}


def test_an_outside_member_goes_out_on_its_route_whatever_the_callers_permissions():
    g = group(members=("extension:1001", "external:07700900123"))
    plan = route_call("600", Caller("extension", "1000", "1000", ""), view(g), NOW)
    out = plan.outside_plan("external:07700900123")
    assert isinstance(out, Dial) and out.attempts[0].trunk == "carrier"


def test_nobody_answering_goes_to_the_no_answer_destination():
    g = group(no_answer="extension:1003")
    plan = plan_for_destination("ring_group:600", Caller("trunk", "carrier", "07700900999", "Ann"), view(g), NOW)
    assert isinstance(plan, RingGroupCall) and plan.caller_id_name == "Ann"
    assert isinstance(plan.on.no_answer, Ring) and plan.on.no_answer.extension == "1003"
    assert plan.on.no_answer == plan.on.busy == plan.on.unavailable


def test_a_group_that_overflows_into_itself_through_another_stops_instead_of_looping():
    a = RingGroup("600", "A", members=(Member("extension:1001"),), no_answer="ring_group:601")
    b = RingGroup("601", "B", members=(Member("extension:1002"),), no_answer="ring_group:600")
    plan = route_call("600", Caller("extension", "1000", "1000", ""), view(a, b), NOW)
    assert isinstance(plan.on.no_answer, RingGroupCall)
    assert isinstance(plan.on.no_answer.on.no_answer, Reject) and plan.on.no_answer.on.no_answer.code == 482


def test_without_a_no_answer_destination_the_caller_hears_nobody_answered():
    plan = route_call("600", Caller("extension", "1000", "1000", ""), view(group()), NOW)
    assert isinstance(plan.on.no_answer, Reject) and plan.on.no_answer.code == 480
