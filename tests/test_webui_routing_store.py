"""Trunks, routes and whole-config backup in the config store (added for the web UI's pages and API)."""
import json
import multiprocessing

import pytest

from firmware.config import ConfigStore, ValidationError
from firmware.config.backup import parse_backup
from firmware.config.routing import host_errors, pattern_errors, pattern_matches


@pytest.fixture
def store(tmp_path):
    return ConfigStore(tmp_path)


@pytest.mark.parametrize("pattern, number, matches", [
    ("_9NXXXXXX", "92345678", True),
    ("_9NXXXXXX", "91345678", False),          # N is 2-9
    ("_9NXXXXXX", "923456789", False),         # one digit too many
    ("_0Z.", "01", False),                     # '.' needs at least one more
    ("_0Z.", "0123", True),
    ("_0Z!", "01", True),                      # '!' allows none
    ("_[13-5]X", "47", True),
    ("_[13-5]X", "27", False),
    ("_x", "7", True),                         # letters in either case, as Asterisk
    ("999", "999", True),
    ("999", "9999", False),
    ("_+44.", "+442071234567", True),
])
def test_dial_patterns_match_like_asterisk(pattern, number, matches):
    assert pattern_matches(pattern, number) is matches


@pytest.mark.parametrize("pattern, message", [
    ("", "is empty"),
    ("_", "'_' alone matches nothing"),
    ("_9.X", "must be the last character"),
    ("_9!.", "must be the last character"),
    ("_9[]", "bad character class"),
    ("_9[a-c]", "bad character class"),
    ("_9[9-1]", "runs backwards"),
    ("_9Y", "'Y' at position 3"),
    ("9X", "neither a number"),
    ("_" + "X" * 40, "at most 40"),
])
def test_bad_dial_patterns_are_refused_with_the_reason(pattern, message):
    errors = pattern_errors("pattern", pattern)
    assert len(errors) == 1 and message in errors[0].message


@pytest.mark.parametrize("host, ok", [
    ("sip.example.com", True), ("sip.example.com:5080", True), ("203.0.113.5", True),
    ("203.0.113.5:5060", True), ("[2001:db8::1]:5060", True), ("2001:db8::1", True),
    ("sip.example.com:0", False), ("sip.example.com:99999", False), ("sip.example.com:port", False),
    ("-bad.example", False), ("bad_host.example", False), ("", False), ("1.2.3.999", False),
])
def test_trunk_host_syntax(host, ok):
    assert (host_errors("host", host) == []) is ok


def test_trunk_secret_never_shows_in_repr(store):
    trunk = store.add_trunk("carrier", "sip.example.com", "acct", "Trunk-Pass-1")
    assert "Trunk-Pass-1" not in repr(trunk) and "Trunk-Pass-1" not in str(trunk)


def test_routes_must_name_existing_trunks_and_extensions(store):
    store.add_trunk("carrier", "sip.example.com", register=False)
    with pytest.raises(ValidationError, match="no trunk other"):
        store.add_outbound_route("r", "_9X.", "carrier", fallback_trunk="other")
    with pytest.raises(ValidationError, match="no extension 201"):
        store.add_inbound_route("+442071234567", "201")
    store.add_extension("201", "Ann")
    store.add_inbound_route("+442071234567", "201")
    with pytest.raises(ValidationError, match="no extension 299"):
        store.update_inbound_route("+442071234567", destination="299")
    assert store.get_inbound_route("+442071234567").destination == "extension:201"   # stored typed
    with pytest.raises(ValidationError, match="cannot be changed"):
        store.update_inbound_route("+442071234567", did="+1")
    with pytest.raises(ValidationError, match="unknown field"):
        store.update_trunk("carrier", hostname="x")


def test_outbound_route_rewrites_the_dialled_number(store):
    store.add_trunk("carrier", "sip.example.com", register=False)
    route = store.add_outbound_route("national", "_90NXXXXXXXXX", "carrier", strip=1, prepend="+44")
    assert route.dial_string("902071234567") == "+4402071234567"


def test_export_then_import_round_trips_and_a_bad_import_leaves_the_file_untouched(tmp_path, store):
    store.add_extension("201", "Ann")
    store.add_trunk("carrier", "sip.example.com", "acct", "Trunk-Pass-1", transport="tcp")
    store.add_inbound_route("+442071234567", "201", name="main line")
    store.add_outbound_route("national", "_9NXXXXXX", "carrier", strip=1)
    store.update_settings(site_name="Acme", timezone="Europe/Paris")
    doc = json.loads(json.dumps(store.export_config()))

    other = ConfigStore(tmp_path / "other")
    other.add_extension("555", "Gone after restore")
    before = other.path.read_bytes()
    for broken in (dict(doc, extensions="nope"),
                   dict(doc, trunks=[{"name": "x"}]),
                   dict(doc, settings={"site_name": "A", "colour": "blue"}),
                   dict(doc, extensions=doc["extensions"] * 2),
                   dict(doc, format="something-else")):
        with pytest.raises(ValidationError):
            other.import_config(broken)
        assert other.path.read_bytes() == before
    counts = other.import_config(doc)
    assert {k: counts.pop(k) for k in ("extensions", "trunks", "inbound_routes", "outbound_routes",
                                        "line_ports")} == {"extensions": 1, "trunks": 1, "inbound_routes": 1,
                                                           "outbound_routes": 1, "line_ports": 0}
    # the features' own tables come along, mostly empty here (an extension's mailbox is implicit)
    assert all(isinstance(n, int) for n in counts.values())
    assert json.loads(json.dumps(other.export_config()))["trunks"] == doc["trunks"]
    assert [e.number for e in other.extensions()] == ["201"]
    assert other.settings().timezone == "Europe/Paris"


def test_backup_carries_analog_line_ports_with_their_references(tmp_path, store):
    store.add_extension("201", "Ann")
    store.add_extension("290", "Analog line")
    store.add_line_port(1, "fxo", "290", destination="201")
    doc = store.export_config()
    assert doc["line_ports"] == [{"number": 1, "kind": "fxo", "extension": "290", "destination": "201", "name": "",
                                  "flash_min_ms": 100, "flash_max_ms": 700, "dialling": "dtmf",
                                  "answer": "dialled"}]
    other = ConfigStore(tmp_path / "other")
    assert other.import_config(doc)["line_ports"] == 1
    assert other.get_line_port(1).destination == "201"
    broken = dict(doc, extensions=[e for e in doc["extensions"] if e["number"] != "201"])
    with pytest.raises(ValidationError, match="no extension 201"):
        other.import_config(broken)


def test_backup_check_lists_every_problem_with_where_it_is():
    doc = {"format": "officepbx-config", "schema_version": 1,
           "extensions": [{"number": "1", "name": "A", "secret": "long-enough-secret", "enabled": True}],
           "outbound_routes": [{"name": "r", "pattern": "_9Q", "trunk": "none"}]}
    with pytest.raises(ValidationError) as info:
        parse_backup(doc)
    fields = [e.field for e in info.value.errors]
    assert fields == ["extensions[0].number", "outbound_routes[0].pattern"]


def _add_trunks(data_dir, prefix, count):
    store = ConfigStore(data_dir)
    for i in range(count):
        store.add_trunk(f"{prefix}{i}", "sip.example.com", register=False)


def test_two_processes_adding_trunks_lose_none(tmp_path):
    ConfigStore(tmp_path)
    procs = [multiprocessing.get_context("spawn").Process(target=_add_trunks, args=(tmp_path, p, 15))
             for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(ConfigStore(tmp_path).trunks()) == 30
