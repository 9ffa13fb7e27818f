"""Call blocking: the block list, the barred prefixes and *32, as pure routing decisions."""
from datetime import datetime

import pytest

from firmware.config import ConfigStore, ValidationError
from firmware.config.model import Extension, Settings
from firmware.config.routing import InboundRoute, OutboundRoute, Trunk
from firmware.dialplan import Caller, ConfigView, Dial, Reject, Ring, route_call
from firmware.dialplan.feature_codes import FEATURE_CODES
from firmware.features.blocking import (INBOUND, OUTBOUND, BlockedCaller, BlockedPrefix, BlockLastCaller,
                                        match_caller, match_outbound)

NOW = datetime(2026, 12, 1, 10, 0)
SECRET = "long-enough-secret"
ROUTE = OutboundRoute("out", "_0.", "carrier")


def view(callers=(), prefixes=()):
    exts = [Extension(n, f"User {n}", SECRET) for n in ("1000", "1001")]
    return ConfigView.of(exts, [Trunk("carrier", "sip.example.com", register=False)],
                         [InboundRoute("02071234567", "extension:1000")], [ROUTE], Settings(),
                         records={INBOUND: callers, OUTBOUND: prefixes})


def from_trunk(number):
    return Caller("trunk", "carrier", number, "")


def test_a_blocked_number_matches_however_the_provider_writes_it():
    entries = [BlockedCaller("07700 900123", "busy")]
    for shown in ("07700900123", "+447700900123", "447700900123", "00447700900123"):
        assert match_caller(entries, shown) is entries[0], shown
    assert match_caller(entries, "07700900124") is None


def test_exact_number_wins_over_prefix_and_longer_prefix_over_shorter():
    entries = [BlockedCaller("09*", "reject"), BlockedCaller("0906*", "busy"), BlockedCaller("09061234567", "hangup")]
    assert match_caller(entries, "09061234567").action == "hangup"
    assert match_caller(entries, "+449069999999").action == "busy"
    assert match_caller(entries, "09111111111").action == "reject"


@pytest.mark.parametrize("shown", ["", "anonymous", "Anonymous", "unavailable", "Restricted", "withheld"])
def test_withheld_callers_match_the_anonymous_entry(shown):
    assert match_caller([BlockedCaller("anonymous", "announcement")], shown).action == "announcement"
    assert match_caller([BlockedCaller("07700900123")], shown) is None


@pytest.mark.parametrize("action,expected", [
    ("reject", Reject(403, "blocked", "caller 07700900123 blocked by the entry '07700900123' (reject)")),
    ("busy", Reject(486, "blocked", "caller 07700900123 blocked by the entry '07700900123' (busy)", tone="busy")),
    ("hangup", Reject(603, "blocked", "caller 07700900123 blocked by the entry '07700900123' (hangup)")),
    ("announcement", Reject(403, "blocked", "caller 07700900123 blocked by the entry '07700900123' (announcement)",
                            prompt="number_blocked")),
])
def test_each_action_is_the_answer_a_blocked_caller_gets_before_the_inbound_route(action, expected):
    plan = route_call("02071234567", from_trunk("07700900123"), view([BlockedCaller("07700900123", action)]), NOW)
    assert plan == expected
    assert isinstance(route_call("02071234567", from_trunk("07700900999"),
                                 view([BlockedCaller("07700900123", action)]), NOW), Ring)


def test_voicemail_action_sends_the_blocked_caller_to_its_destination():
    plan = route_call("02071234567", from_trunk("07700900123"),
                      view([BlockedCaller("07700900123", "voicemail", destination="extension:1001")]), NOW)
    assert isinstance(plan, Ring) and plan.extension == "1001"


def test_exchange_line_callers_are_screened_and_extensions_are_not():
    config = view([BlockedCaller("anonymous", "hangup")])
    assert route_call("1000", Caller("line", "1", "", ""), config, NOW).cause == "blocked"
    assert isinstance(route_call("1001", Caller("extension", "1000", "", ""), config, NOW), Ring)


def test_barred_prefixes_refuse_premium_and_international_unless_the_extension_is_allowed():
    config = view(prefixes=[BlockedPrefix("09", "Premium rate"), BlockedPrefix("00", "International", ("1001",))])
    plan = route_call("09061234567", Caller("extension", "1000"), config, NOW)
    assert isinstance(plan, Reject) and (plan.code, plan.cause, plan.prompt) == (403, "blocked", "call_blocked")
    assert "prefix 09 (Premium rate)" in plan.reason
    assert route_call("0033123456789", Caller("extension", "1000"), config, NOW).cause == "blocked"
    assert isinstance(route_call("0033123456789", Caller("extension", "1001"), config, NOW), Dial)
    assert isinstance(route_call("02079460000", Caller("extension", "1000"), config, NOW), Dial)
    assert isinstance(route_call("999", Caller("extension", "1000"), view(prefixes=[BlockedPrefix("9")]), NOW), Dial)


def test_match_outbound_takes_the_longest_prefix():
    entries = [BlockedPrefix("0", "all"), BlockedPrefix("09", "premium", ("1000",))]
    assert match_outbound(entries, ("0906",), "1000") is None       # allowed the longer, more specific one
    assert match_outbound(entries, ("0206",), "1000").prefix == "0"


def test_star32_is_a_registered_code_that_blocks_the_last_caller():
    assert FEATURE_CODES["*32"].group == "Call blocking"
    assert route_call("*32", Caller("extension", "1000"), view(), NOW) == BlockLastCaller("1000")


@pytest.mark.parametrize("record,message", [
    (BlockedCaller("abc"), "is not a number to block"),
    (BlockedCaller("0906*12"), "is not a number to block"),
    (BlockedCaller("07700900123", "ignore"), "not one of reject"),
    (BlockedCaller("07700900123", "voicemail"), "is empty"),
    (BlockedCaller("07700900123", "busy", destination="extension:1000"), "only the 'voicemail' action"),
    (BlockedPrefix("9a"), "is not a dialling prefix"),
])
def test_bad_entries_say_what_to_write(record, message):
    with pytest.raises(ValidationError) as e:
        record.validate()
    assert message in str(e.value)


def test_store_keeps_entries_and_checks_allowed_extensions(tmp_path):
    store = ConfigStore(tmp_path)
    store.add_extension("1000", "Alice")
    store.add_record(INBOUND, BlockedCaller("07700 900123", "busy", note="sales calls"))
    assert store.record(INBOUND, "07700900123").note == "sales calls"
    with pytest.raises(ValidationError, match="no extension 1999"):
        store.add_record(OUTBOUND, BlockedPrefix("00", "International", ("1999",)))
    store.add_record(OUTBOUND, BlockedPrefix("00", "International", ("1000",)))
    with pytest.raises(ValidationError, match="blocked prefix"):
        store.remove_extension("1000")
