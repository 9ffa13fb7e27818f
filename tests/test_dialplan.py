"""Specification of the routing plan (firmware/dialplan): every rule with `now=` and no phone."""
from dataclasses import replace
from datetime import datetime, timezone

import pytest

from firmware.config import ConfigStore, ValidationError
from firmware.config.destination import DESTINATION_KINDS, Destination, destination_errors
from firmware.config.migrations import migrate
from firmware.config.model import Extension, Settings
from firmware.config.routing import InboundRoute, OutboundRoute, Trunk
from firmware.dialplan import (MAX_FORWARD_HOPS, Action, Caller, ConfigView, Decision, Dial, FeatureCode,
                               Reject, Ring, RuntimeView, TrunkAttempt, config_view, describe, route_call)
from firmware.dialplan.router import DESTINATION_HANDLERS

NOW = datetime(2026, 11, 30, 10, 0)
SECRET = "long-enough-secret"


def ext(number, name=None, **fields):
    return Extension(number, name or f"User {number}", SECRET, **fields)


def view(*extensions, routes=(), inbound=(), trunks=("carrier", "backup"), settings=None, **kw):
    return ConfigView.of(extensions or [ext("1000", "Alice"), ext("1001", "Bob"), ext("1002", "Carol")],
                         [Trunk(t, "sip.example.com", register=False) for t in trunks],
                         inbound, routes, settings, **kw)


def from_ext(number="1000"):
    return Caller("extension", number, number, "what the phone sent")


def from_trunk(number="07700900999", name="Caller"):
    return Caller("trunk", "carrier", number, name)


NATIONAL = OutboundRoute("national", "_0NXXXXXXXXX", "carrier", fallback_trunk="backup")


# Extension to extension

def test_enabled_extension_rings_with_the_configured_name_as_caller_id():
    plan = route_call("1001", from_ext("1000"), view(), NOW)
    assert isinstance(plan, Ring)
    assert (plan.extension, plan.timeout, plan.caller_id_number, plan.caller_id_name, plan.forwarded_from) == \
        ("1001", 30, "1000", "Alice", "")


def test_ring_timeout_is_the_no_answer_setting():
    plan = route_call("1001", from_ext(), view(settings=Settings(no_answer_timeout=12)), NOW)
    assert plan.timeout == 12


def test_unknown_extension_gets_404_with_not_found_prompt():
    plan = route_call("1999", from_ext(), view(), NOW)
    assert plan == Reject(404, "not_found", "no extension or outbound route for 1999", prompt="not_found")


def test_disabled_extension_gets_404_not_found():
    plan = route_call("1001", from_ext(), view(ext("1000"), ext("1001", enabled=False)), NOW)
    assert (plan.code, plan.cause, plan.prompt) == (404, "not_found", "not_found")
    assert "disabled" in plan.reason


def test_unregistered_extension_takes_the_unavailable_branch_480_with_prompt():
    plan = route_call("1001", from_ext(), view(), NOW, RuntimeView(registered=frozenset({"1000"})))
    assert (plan.code, plan.cause, plan.prompt) == (480, "unavailable", "unavailable")


def test_ring_without_forwards_ends_in_busy_tone_no_answer_480_and_unavailable_prompt():
    plan = route_call("1001", from_ext(), view(), NOW, RuntimeView(registered=frozenset({"1001"})))
    assert (plan.on.busy.code, plan.on.busy.tone) == (486, "busy")
    assert (plan.on.no_answer.code, plan.on.no_answer.cause) == (480, "no_answer")
    assert (plan.on.unavailable.code, plan.on.unavailable.prompt) == (480, "unavailable")


def test_a_removed_or_disabled_caller_cannot_call():
    plan = route_call("1001", from_ext("1003"), view(), NOW)
    assert (plan.code, plan.cause) == (403, "forbidden")


# DND and runtime busy

def test_dnd_extension_is_busy_486_with_busy_tone():
    plan = route_call("1001", from_ext(), view(ext("1000"), ext("1001", dnd=True)), NOW)
    assert (plan.code, plan.cause, plan.tone) == (486, "busy", "busy")
    assert "do-not-disturb" in plan.reason


def test_dnd_extension_goes_to_its_busy_forward():
    plan = route_call("1001", from_ext(), view(ext("1000"), ext("1001", dnd=True, forward_busy="extension:1002"),
                                               ext("1002")), NOW)
    assert isinstance(plan, Ring) and (plan.extension, plan.forwarded_from) == ("1002", "1001")


def test_extension_busy_in_runtime_goes_straight_to_its_busy_branch():
    plan = route_call("1001", from_ext(), view(), NOW, RuntimeView(busy=frozenset({"1001"})))
    assert (plan.code, plan.cause) == (486, "busy")


def test_forward_always_wins_over_dnd():
    plan = route_call("1001", from_ext(), view(ext("1000"), ext("1001", dnd=True, forward_always="extension:1002"),
                                               ext("1002")), NOW)
    assert isinstance(plan, Ring) and plan.extension == "1002"


# Forwarding

def test_forward_always_rings_the_target_and_says_whose_forward_it_was():
    config = view(ext("1000"), ext("1001", forward_always="extension:1002"), ext("1002"))
    plan = route_call("1001", from_ext(), config, NOW)
    assert isinstance(plan, Ring)
    assert (plan.extension, plan.forwarded_from, plan.caller_id_number) == ("1002", "1001", "1000")


def test_forward_busy_is_the_busy_branch_of_the_ring():
    config = view(ext("1000"), ext("1001", forward_busy="extension:1002"), ext("1002"))
    plan = route_call("1001", from_ext(), config, NOW)
    assert plan.extension == "1001"
    assert isinstance(plan.on.busy, Ring) and plan.on.busy.extension == "1002"
    assert plan.on.busy.forwarded_from == "1001"


def test_forward_no_answer_covers_rang_out_and_not_registered():
    config = view(ext("1000"), ext("1001", forward_no_answer="extension:1002"), ext("1002"))
    plan = route_call("1001", from_ext(), config, NOW)
    assert plan.on.no_answer.extension == "1002" and plan.on.unavailable.extension == "1002"
    offline = route_call("1001", from_ext(), config, NOW, RuntimeView(registered=frozenset({"1002"})))
    assert isinstance(offline, Ring) and offline.extension == "1002"


def test_forward_to_an_external_number_dials_out_with_the_forwarding_extensions_permissions():
    config = view(ext("1000"), ext("1001", forward_always="external:07700900123", external_caller_id="+442071234501"),
                  routes=[NATIONAL])
    plan = route_call("1001", from_ext(), config, NOW)
    assert plan == Dial("07700900123", (TrunkAttempt("carrier", "07700900123", "+442071234501"),
                                        TrunkAttempt("backup", "07700900123", "+442071234501")),
                        "national", forwarded_from="1001", on=plan.on)


def test_forward_through_a_route_its_owner_may_not_use_is_ignored():
    route = replace(NATIONAL, extensions=("1000",))
    config = view(ext("1000"), ext("1001", forward_always="external:07700900123"), routes=[route])
    plan = route_call("1001", from_ext(), config, NOW)
    assert isinstance(plan, Ring) and plan.extension == "1001"


def test_forward_always_loop_a_b_a_rings_what_is_left():
    config = view(ext("1000"), ext("1001", forward_always="extension:1002"),
                  ext("1002", forward_always="extension:1001"))
    plan = route_call("1001", from_ext(), config, NOW)
    assert isinstance(plan, Ring) and (plan.extension, plan.forwarded_from) == ("1002", "1001")


def test_forward_always_loop_a_b_c_a_stops_at_the_first_repeat():
    config = view(ext("1000"), ext("1001", forward_always="extension:1002"),
                  ext("1002", forward_always="extension:1003"), ext("1003", forward_always="extension:1001"))
    plan = route_call("1001", from_ext(), config, NOW)
    assert isinstance(plan, Ring) and (plan.extension, plan.forwarded_from) == ("1003", "1002")


def test_busy_forward_loop_ends_in_busy_with_the_loop_as_reason():
    config = view(ext("1000"), ext("1001", dnd=True, forward_busy="extension:1002"),
                  ext("1002", dnd=True, forward_busy="extension:1001"))
    plan = route_call("1001", from_ext(), config, NOW)
    assert (plan.code, plan.cause) == (486, "busy")
    assert "forward loop 1000 -> 1001 -> 1002 -> 1001" in plan.reason


def test_a_forward_never_rings_the_caller_back():
    config = view(ext("1000"), ext("1001", forward_always="extension:1000"))
    plan = route_call("1001", from_ext("1000"), config, NOW)
    assert isinstance(plan, Ring) and plan.extension == "1001"


def test_forward_chain_stops_after_the_maximum_number_of_hops():
    numbers = [str(2000 + i) for i in range(MAX_FORWARD_HOPS + 3)]
    chain = [ext(n, forward_always=f"extension:{nxt}") for n, nxt in zip(numbers, numbers[1:])]
    config = view(ext("1000"), *chain, ext(numbers[-1]))
    plan = route_call(numbers[0], from_ext(), config, NOW)
    assert isinstance(plan, Ring) and plan.extension == numbers[MAX_FORWARD_HOPS]


def test_forward_to_a_disabled_extension_is_ignored():
    config = view(ext("1000"), ext("1001", forward_always="extension:1002"), ext("1002", enabled=False))
    plan = route_call("1001", from_ext(), config, NOW)
    assert isinstance(plan, Ring) and plan.extension == "1001"


def test_forward_to_busy_dnd_target_gives_the_targets_busy():
    config = view(ext("1000"), ext("1001", forward_always="extension:1002"), ext("1002", dnd=True))
    plan = route_call("1001", from_ext(), config, NOW)
    assert (plan.code, plan.cause) == (486, "busy")


def test_forward_to_an_emergency_number_is_never_followed():
    config = view(ext("1000"), ext("1001", forward_always="external:999"), routes=[NATIONAL])
    plan = route_call("1001", from_ext(), config, NOW)
    assert isinstance(plan, Ring) and plan.extension == "1001"


# Feature codes

@pytest.mark.parametrize("dialled, action, argument", [
    ("*78", "dnd", "on"),
    ("*79", "dnd", "off"),
    ("*72" + "1002", "forward_always", "extension:1002"),
    ("*73", "forward_always", ""),
    ("*90" + "1002", "forward_busy", "extension:1002"),
    ("*91", "forward_busy", ""),
    ("*52" + "07700900123", "forward_no_answer", "external:07700900123"),
    ("*53", "forward_no_answer", ""),
    ("*8", "pickup", ""),
    ("**1002", "pickup", "1002"),
])
def test_feature_codes_are_parsed_for_the_call_service_to_carry_out(dialled, action, argument):
    plan = route_call(dialled, from_ext("1000"), view(routes=[NATIONAL]), NOW)
    assert isinstance(plan, FeatureCode)
    assert (plan.action, plan.argument, plan.extension) == (action, argument, "1000")


def test_feature_code_changes_are_update_extension_arguments():
    config = view(routes=[NATIONAL])
    assert route_call("*78", from_ext(), config, NOW).changes() == {"dnd": True}
    assert route_call("*721002", from_ext(), config, NOW).changes() == {"forward_always": "extension:1002"}
    assert route_call("*73", from_ext(), config, NOW).changes() == {"forward_always": ""}
    assert route_call("*8", from_ext(), config, NOW).changes() == {}


@pytest.mark.parametrize("dialled, code", [
    ("*77", 404),                # no such code
    ("*72", 404),                # forward without a number
    ("*721000", 404),            # to oneself
    ("*7207700900123", 404),     # no route for it
    ("**1999", 404),             # pick up from nobody
    ("*72999", 403),             # never forward to the emergency services
])
def test_feature_codes_that_cannot_work_are_refused(dialled, code):
    plan = route_call(dialled, from_ext("1000"), view(), NOW)
    assert isinstance(plan, Reject) and plan.code == code


def test_forward_code_to_a_number_the_extension_may_not_dial_is_forbidden():
    config = view(routes=[replace(NATIONAL, extensions=("1001",))])
    plan = route_call("*7207700900123", from_ext("1000"), config, NOW)
    assert (plan.code, plan.cause) == (403, "forbidden")


def test_feature_codes_from_a_trunk_are_not_feature_codes():
    plan = route_call("*78", from_trunk(), view(), NOW)
    assert (plan.code, plan.cause) == (404, "not_found")


# Outbound

def test_outbound_route_applies_strip_and_prepend_and_lists_trunks_in_order():
    route = OutboundRoute("out", "_90XXXXXXXXXX", "carrier", fallback_trunk="backup", strip=2, prepend="+44")
    plan = route_call("907700900123", from_ext(), view(routes=[route]), NOW)
    assert isinstance(plan, Dial)
    assert [(a.trunk, a.number_as_sent) for a in plan.attempts] == [("carrier", "+447700900123"),
                                                                     ("backup", "+447700900123")]
    assert (plan.number, plan.route, plan.emergency) == ("907700900123", "out", False)


def test_dial_failure_branches_give_busy_tone_no_answer_and_congestion():
    plan = route_call("07700900123", from_ext(), view(routes=[NATIONAL]), NOW)
    assert (plan.on.busy.code, plan.on.busy.tone) == (486, "busy")
    assert plan.on.no_answer.cause == "no_answer"
    assert (plan.on.unavailable.cause, plan.on.unavailable.tone) == ("unavailable", "congestion")


def test_routes_are_tried_in_order_and_the_first_allowed_match_wins():
    mobile = OutboundRoute("10-mobile", "_07XXXXXXXXX", "backup", extensions=("1001",))
    plan = route_call("07700900123", from_ext("1000"), view(routes=[mobile, NATIONAL]), NOW)
    assert plan.route == "national"
    plan = route_call("07700900123", from_ext("1001"), view(routes=[mobile, NATIONAL]), NOW)
    assert plan.route == "10-mobile"


def test_extension_not_on_a_routes_list_gets_403_forbidden():
    config = view(routes=[replace(NATIONAL, extensions=("1001",))])
    plan = route_call("07700900123", from_ext("1000"), config, NOW)
    assert (plan.code, plan.cause) == (403, "forbidden")
    assert isinstance(route_call("07700900123", from_ext("1001"), config, NOW), Dial)


def test_number_no_route_matches_gets_404():
    plan = route_call("0044123", from_ext(), view(routes=[NATIONAL]), NOW)
    assert (plan.code, plan.cause) == (404, "not_found")


def test_extension_caller_id_wins_over_the_routes():
    config = view(ext("1000", external_caller_id="+442071234500"), ext("1001"),
                  routes=[replace(NATIONAL, caller_id="+442071234999")])
    assert route_call("07700900123", from_ext("1000"), config, NOW).attempts[0].caller_id == "+442071234500"
    assert route_call("07700900123", from_ext("1001"), config, NOW).attempts[0].caller_id == "+442071234999"


def test_missing_trunks_are_left_out_of_the_attempts():
    plan = route_call("07700900123", from_ext(), view(routes=[NATIONAL], trunks=("backup",)), NOW)
    assert [a.trunk for a in plan.attempts] == ["backup"]


# Emergency numbers

@pytest.mark.parametrize("number", ["999", "112", "911"])
def test_emergency_numbers_are_allowed_for_an_extension_no_route_allows(number):
    route = OutboundRoute("emergency", "_[19][19][12]", "carrier", extensions=("1001",))
    plan = route_call(number, from_ext("1000"), view(routes=[route]), NOW)
    assert isinstance(plan, Dial) and plan.emergency and plan.attempts[0].number_as_sent == number


def test_emergency_number_goes_out_on_every_trunk_when_no_route_matches():
    plan = route_call("999", from_ext(), view(routes=[NATIONAL]), NOW)
    assert plan.emergency and plan.route == ""
    assert [(a.trunk, a.number_as_sent) for a in plan.attempts] == [("carrier", "999"), ("backup", "999")]


def test_emergency_number_wins_over_an_extension_with_that_number():
    plan = route_call("999", from_ext(), view(ext("1000"), ext("999")), NOW)
    assert isinstance(plan, Dial) and plan.emergency


def test_emergency_after_an_outside_line_prefix_is_sent_bare_and_never_blocked():
    route = OutboundRoute("outside", "_9X.", "carrier", strip=1, prepend="+44", extensions=("1001",))
    plan = route_call("9999", from_ext("1000"), view(routes=[route]), NOW)
    assert plan.emergency and plan.attempts[0].number_as_sent == "999"


def test_emergency_call_shows_the_extensions_own_number():
    plan = route_call("112", from_ext("1000"), view(ext("1000", external_caller_id="+442071234500")), NOW)
    assert plan.attempts[0].caller_id == "+442071234500"


def test_emergency_call_without_any_trunk_is_unavailable():
    plan = route_call("999", from_ext(), view(trunks=()), NOW)
    assert (plan.code, plan.cause) == (480, "unavailable")


# No open relay

@pytest.mark.parametrize("dialled", ["07700900123", "907700900123", "999", "1001", "*72070"])
def test_a_trunk_caller_never_reaches_an_outbound_route(dialled):
    route = OutboundRoute("all", "_X.", "carrier")
    plan = route_call(dialled, from_trunk(), view(routes=[route]), NOW)
    assert isinstance(plan, Reject) and plan.code == 404


def test_an_analog_line_caller_reaches_only_extensions():
    line = Caller("line", "1", "07700900999", "")
    route = OutboundRoute("all", "_X.", "carrier")
    assert isinstance(route_call("1001", line, view(routes=[route]), NOW), Ring)
    assert route_call("07700900123", line, view(routes=[route]), NOW).code == 404


def test_a_trunk_caller_sent_to_extension_shows_the_received_caller_id():
    config = view(inbound=[InboundRoute("+442071234567", "extension:1001")])
    plan = route_call("+442071234567", from_trunk("07700900999", "Mum"), config, NOW)
    assert (plan.extension, plan.caller_id_number, plan.caller_id_name) == ("1001", "07700900999", "Mum")


# Inbound

def test_did_matches_with_or_without_a_leading_plus():
    config = view(inbound=[InboundRoute("+442071234567", "extension:1001")])
    assert route_call("442071234567", from_trunk(), config, NOW).extension == "1001"
    config = view(inbound=[InboundRoute("442071234567", "extension:1001")])
    assert route_call("+442071234567", from_trunk(), config, NOW).extension == "1001"


@pytest.mark.parametrize("sent", ["02071234567", "00442071234567", "+442071234567", "442071234567"])
def test_did_matches_national_and_e164_forms_when_the_route_says_so(sent):
    config = view(inbound=[InboundRoute("+442071234567", "extension:1001", match_national=True)])
    assert route_call(sent, from_trunk(), config, NOW).extension == "1001"


def test_did_national_form_does_not_match_unless_the_route_says_so():
    config = view(inbound=[InboundRoute("+442071234567", "extension:1001")])
    assert route_call("02071234567", from_trunk(), config, NOW).code == 404


def test_us_national_form_matches_in_a_us_office():
    config = view(inbound=[InboundRoute("+12125550100", "extension:1001", match_national=True)],
                  settings=Settings(country="us"))
    assert route_call("2125550100", from_trunk(), config, NOW).extension == "1001"


def test_exact_did_match_wins_over_a_looser_one():
    config = view(inbound=[InboundRoute("442071234567", "extension:1001"),
                           InboundRoute("+442071234567", "extension:1002")])
    assert route_call("+442071234567", from_trunk(), config, NOW).extension == "1002"


def test_unknown_did_gets_404():
    config = view(inbound=[InboundRoute("+442071234567", "extension:1001")])
    assert route_call("+442071234568", from_trunk(), config, NOW) == Reject(
        404, "not_found", "no inbound route for '+442071234568' (trunk carrier)", prompt="not_found")


def test_inbound_route_to_an_external_number_dials_out_for_the_administrator():
    config = view(inbound=[InboundRoute("+442071234567", "external:07700900123")],
                  routes=[replace(NATIONAL, extensions=("1001",), caller_id="+442071234567")])
    plan = route_call("+442071234567", from_trunk(), config, NOW)
    assert isinstance(plan, Dial) and plan.attempts[0].caller_id == "+442071234567"


def test_inbound_route_to_hangup_declines_the_call():
    config = view(inbound=[InboundRoute("+442071234567", "hangup")])
    assert route_call("+442071234567", from_trunk(), config, NOW).code == 603


def test_inbound_route_to_extension_follows_its_forwards():
    config = view(ext("1001", forward_always="external:07700900123"),
                  inbound=[InboundRoute("+442071234567", "extension:1001")], routes=[NATIONAL])
    plan = route_call("+442071234567", from_trunk(), config, NOW)
    assert isinstance(plan, Dial) and plan.forwarded_from == "1001"


# Destinations

@pytest.mark.parametrize("text, dest", [
    ("extension:1000", Destination("extension", "1000")),
    ("external:+447700900123", Destination("external", "+447700900123")),
    ("hangup", Destination("hangup")),
])
def test_destinations_round_trip_through_their_string_form(text, dest):
    assert Destination.parse(text) == dest and str(dest) == text


@pytest.mark.parametrize("text, hint", [
    ("1000", "write 'extension:1000' for the extension or 'external:1000'"),
    ("extension:", "needs a target: write e.g. 'extension:1000'"),
    ("extension:0123", "not an extension number"),
    ("external:07700 900123", "not a phone number"),
    ("hangup:now", "takes no target"),
    ("fax:1000", "write kind:target, one of 'extension:1000'"),
    ("", "is empty"),
])
def test_bad_destinations_are_refused_with_how_to_write_them(text, hint):
    with pytest.raises(ValueError, match=hint):
        Destination.parse(text)


def test_every_destination_kind_has_a_dialplan_handler():
    assert set(DESTINATION_KINDS) <= set(DESTINATION_HANDLERS)


def test_hangup_is_not_a_forward_destination():
    assert destination_errors("forward_busy", "hangup", forward=True)[0].field == "forward_busy"


# Config store: the new fields

@pytest.fixture
def store(tmp_path):
    s = ConfigStore(tmp_path)
    s.add_extension("1000", "Alice")
    s.add_extension("1001", "Bob")
    return s


def test_store_keeps_dnd_forwards_and_caller_id_and_takes_a_bare_number_as_an_extension(store):
    store.update_extension("1000", dnd=True, forward_busy="1001", forward_no_answer="external:07700900123",
                           external_caller_id="+442071234500")
    alice = store.get_extension("1000")
    assert (alice.dnd, alice.forward_busy, alice.forward_no_answer, alice.external_caller_id) == \
        (True, "extension:1001", "external:07700900123", "+442071234500")
    assert store.update_extension("1000", forward_busy="").forward_busy == ""


@pytest.mark.parametrize("changes, field, message", [
    ({"forward_always": "1999"}, "forward_always", "no extension 1999"),
    ({"forward_always": "1000"}, "forward_always", "to itself"),
    ({"forward_busy": "hangup"}, "forward_busy", "cannot be forwarded"),
    ({"forward_no_answer": "07700900123"}, "forward_no_answer", "'external:07700900123'"),
    ({"external_caller_id": "020 7123"}, "external_caller_id", "not a phone number"),
    ({"dnd": "yes"}, "dnd", "true or false"),
])
def test_bad_extension_call_handling_is_refused_naming_the_field_and_fix(store, changes, field, message):
    with pytest.raises(ValidationError) as info:
        store.update_extension("1000", **changes)
    errors = getattr(info.value, "errors", [info.value])
    assert errors[0].field == field and message in errors[0].message


def test_extension_that_a_forward_or_route_names_cannot_be_removed(store):
    store.update_extension("1000", forward_always="1001")
    with pytest.raises(ValidationError, match="forward target of extension"):
        store.remove_extension("1001")
    store.update_extension("1000", forward_always="")
    store.add_trunk("carrier", "sip.example.com", register=False)
    store.add_outbound_route("national", "_0X.", "carrier", extensions=["1001"])
    with pytest.raises(ValidationError, match="allowed on outbound route"):
        store.remove_extension("1001")
    assert store.get_outbound_route("national").extensions == ("1001",)


def test_outbound_route_permission_list_names_existing_extensions(store):
    store.add_trunk("carrier", "sip.example.com", register=False)
    with pytest.raises(ValidationError, match="no extension 1999"):
        store.add_outbound_route("national", "_0X.", "carrier", extensions=["1999"])
    with pytest.raises(ValidationError, match="not an extension number"):
        store.add_outbound_route("national", "_0X.", "carrier", extensions=["abc"])


def test_inbound_route_takes_any_destination_kind(store):
    assert store.add_inbound_route("+442071234567", "external:07700900123").destination == "external:07700900123"
    assert store.add_inbound_route("+442071234568", "hangup").destination == "hangup"
    with pytest.raises(ValidationError, match="'extension:07700900123' for the extension or 'external"):
        store.add_inbound_route("+442071234569", "07700900123")


def test_schema_1_inbound_routes_are_migrated_to_typed_destinations():
    v1 = {"meta": {"1": {"schema_version": 1}},
          "inbound_routes": {"1": {"did": "+442071234567", "destination": "1000", "name": ""}}}
    assert migrate(v1)["inbound_routes"]["1"]["destination"] == "extension:1000"


def test_a_schema_1_backup_restores_with_typed_destinations(tmp_path, store):
    doc = store.export_config()
    doc["schema_version"] = 1
    doc["inbound_routes"] = [{"did": "+442071234567", "destination": "1001", "name": "main"}]
    other = ConfigStore(tmp_path / "other")
    other.import_config(doc)
    assert other.get_inbound_route("+442071234567").destination == "extension:1001"


def test_config_view_is_a_snapshot_of_the_store(store):
    store.update_extension("1001", forward_always="1000")
    config = config_view(store)
    assert config.generation == store.generation
    assert route_call("1001", Caller("extension", "1000"), config, NOW).extension == "1001"   # 1000 is the caller
    with pytest.raises(TypeError):
        config.extensions["1002"] = None


# The old call shape, until the call service runs plans

def test_old_call_shape_still_returns_a_decision():
    assert route_call("1001", "1000", {"1001": ext("1001")}) == Decision(Action.EXTENSION, "1001")
    assert route_call("1999", "1000", {}).action is Action.NOT_FOUND


def test_describe_gives_one_log_line():
    config = view(ext("1000"), ext("1001", forward_busy="external:07700900123"), routes=[NATIONAL])
    line = describe(route_call("1001", from_ext(), config, NOW))
    assert line.startswith("ring 1001 30s [busy: dial 07700900123 via national")


def test_a_bare_extension_number_is_read_as_that_extension_everywhere():
    assert InboundRoute("+442071234567", "1000").destination == "extension:1000"
    assert ext("1000", forward_busy="1001").forward_busy == "extension:1001"
    assert Destination.parse("external:07700900123").label == "external number 07700900123"
    assert Destination.parse("hangup").label == "hang up"


def test_store_lists_the_inbound_routes_to_an_extension(store):
    store.add_inbound_route("+442071234567", "1001")
    assert [r.did for r in store.inbound_routes_to("1001")] == ["+442071234567"]
    assert store.inbound_routes_to("extension:1000") == []


def test_an_outbound_route_may_go_out_on_an_analog_exchange_line():
    from firmware.config.lines import LinePortConfig
    from firmware.config.model import Extension
    from firmware.config.routing import OutboundRoute
    from firmware.dialplan import Caller, ConfigView, Dial, route_call
    view = ConfigView.of(extensions=[Extension("1000", "A", "s" * 16)],
                         outbound_routes=[OutboundRoute("pstn", "_9X.", "line:3", strip=1)],
                         line_ports=[LinePortConfig(3, "fxo", "1090", "1000")])
    plan = route_call("901632960000", Caller("extension", "1000"), view, now=datetime.now(timezone.utc))
    assert isinstance(plan, Dial) and [(a.trunk, a.number_as_sent) for a in plan.attempts] == [("line:3", "01632960000")]


def test_an_emergency_call_no_route_matches_goes_out_on_a_line_when_there_is_no_sip_trunk():
    from firmware.config.lines import LinePortConfig
    from firmware.config.model import Extension
    from firmware.dialplan import Caller, ConfigView, Dial, route_call
    view = ConfigView.of(extensions=[Extension("1000", "A", "s" * 16)],
                         line_ports=[LinePortConfig(3, "fxo", "1090", "1000")])
    plan = route_call("999", Caller("extension", "1000"), view, now=datetime.now(timezone.utc))
    assert isinstance(plan, Dial) and plan.emergency and [a.trunk for a in plan.attempts] == ["line:3"]
