"""Specification of the configuration store (firmware/config)."""
import json
import logging
import os
import random
import select
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from firmware.config import (ConfigFileError, ConfigStore, Extension, SchemaVersionError, Settings,
                             ValidationError, ValidationErrors)
from firmware.config.migrations import SCHEMA_VERSION, migrate

REPO = Path(__file__).resolve().parents[1]


def child(code: str, *args: str) -> subprocess.Popen:
    """Another process using the store, as the CLI or the web UI would."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def read_line(proc: subprocess.Popen, timeout: float = 20.0) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"child printed nothing within {timeout} s"
    return proc.stdout.readline().strip()


def raw(store: ConfigStore) -> dict:
    return json.loads(store.path.read_text())


# Opening

def test_new_store_creates_config_json_at_current_schema_version(tmp_path):
    store = ConfigStore(tmp_path / "data")
    assert store.path == tmp_path / "data" / "config.json"
    assert raw(store)["meta"]["1"]["schema_version"] == SCHEMA_VERSION
    assert store.extensions() == []
    assert store.settings() == Settings()


def test_config_file_is_readable_by_owner_only_because_it_holds_secrets(tmp_path):
    store = ConfigStore(tmp_path)
    store.add_extension("1000", "Alice")
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def test_file_from_newer_firmware_refuses_to_open_with_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"meta": {"1": {"schema_version": SCHEMA_VERSION + 1}}}))
    with pytest.raises(SchemaVersionError, match=rf"schema version {SCHEMA_VERSION + 1} .*knows up to "
                                                 rf"{SCHEMA_VERSION}.*update the firmware"):
        ConfigStore(tmp_path)


def test_version_0_file_is_migrated_on_open_keeping_its_extensions(tmp_path):
    legacy = {"extensions": {"1": {"number": "1000", "name": "Alice", "secret": "s3cret-s3cret", "enabled": True}}}
    (tmp_path / "config.json").write_text(json.dumps(legacy))
    store = ConfigStore(tmp_path)
    assert [e.number for e in store.extensions()] == ["1000"]
    assert raw(store)["meta"]["1"]["schema_version"] == SCHEMA_VERSION


def test_migrations_run_in_order_from_the_recorded_version():
    def add_trunks(tables):
        tables["trunks"] = {}
        return tables

    def rename_mode(tables):
        tables["settings"]["1"]["mode"] = tables["settings"]["1"].pop("day_night")
        return tables

    at_v1 = {"meta": {"1": {"schema_version": 1}}, "settings": {"1": {"day_night": "night"}}}
    upgraded = migrate(at_v1, [lambda t: pytest.fail("step 0 must not rerun"), add_trunks, rename_mode])
    assert upgraded["meta"]["1"]["schema_version"] == 3
    assert upgraded["trunks"] == {} and upgraded["settings"]["1"] == {"mode": "night"}


def test_corrupt_config_file_gives_error_naming_file_and_fix(tmp_path):
    (tmp_path / "config.json").write_text('{"extensions": {"1": {"number": "10')
    with pytest.raises(ConfigFileError, match=r"config.json is not valid JSON.*restore it from a backup"):
        ConfigStore(tmp_path)


def test_temp_file_left_by_a_killed_writer_is_removed_on_open(tmp_path):
    ConfigStore(tmp_path)
    leftover = tmp_path / ".config.json.abc123.tmp"
    leftover.write_text('{"half": ')
    ConfigStore(tmp_path)
    assert not leftover.exists()


# Extensions

def test_added_extensions_are_listed_in_number_order_and_survive_reopen(tmp_path):
    store = ConfigStore(tmp_path)
    store.add_extension("1001", "Bob", "correct-horse-1")
    store.add_extension("201", "Reception", "correct-horse-2")
    store.add_extension("1000", "Alice", "correct-horse-3")
    reopened = ConfigStore(tmp_path)
    assert [e.number for e in reopened.extensions()] == ["201", "1000", "1001"]
    assert reopened.get_extension("1001") == Extension("1001", "Bob", "correct-horse-1", True)
    assert reopened.get_extension("1002") is None


def test_extension_without_secret_gets_generated_24_character_secret(tmp_path):
    store = ConfigStore(tmp_path)
    a = store.add_extension("1000", "Alice")
    b = store.add_extension("1001", "Bob")
    assert len(a.secret) == 24 and a.secret != b.secret
    assert set(a.secret) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert store.get_extension("1000").secret == a.secret


@pytest.mark.parametrize("secret, message", [
    ("short-pw", "use at least 12"),
    ("123456789012", "must not be all digits"),
    ("has spaces in it", "must not contain spaces"),
])
def test_weak_secret_is_refused(tmp_path, secret, message):
    store = ConfigStore(tmp_path)
    with pytest.raises(ValidationError, match=message) as exc:
        store.add_extension("1000", "Alice", secret)
    assert exc.value.field == "secret"
    assert store.extensions() == []


def test_secret_equal_to_the_number_is_refused(tmp_path):
    store = ConfigStore(tmp_path)
    with pytest.raises(ValidationError, match="must not be the extension number"):
        store.add_extension("123456", "Alice", "123456")
    ext = store.add_extension("1000", "Alice", "a-fine-secret-1000")
    with pytest.raises(ValidationError, match="must not be the extension number"):
        store.update_extension(ext.number, secret="1000")


@pytest.mark.parametrize("number", ["1", "1234567", "0100", "*33", "10a0", "", " 1000", 1000])
def test_number_must_be_2_to_6_digits_not_starting_with_0_or_star(tmp_path, number):
    store = ConfigStore(tmp_path)
    with pytest.raises(ValidationError) as exc:
        store.add_extension(number, "Alice")
    assert exc.value.field == "number"
    assert "2-6 digits" in exc.value.message


@pytest.mark.parametrize("number", ["10", "999999", "1000"])
def test_two_to_six_digit_numbers_are_accepted(tmp_path, number):
    assert ConfigStore(tmp_path).add_extension(number, "Desk").number == number


def test_duplicate_extension_is_refused_naming_the_number(tmp_path):
    store = ConfigStore(tmp_path)
    store.add_extension("1000", "Alice")
    with pytest.raises(ValidationError) as exc:
        store.add_extension("1000", "Another Alice")
    assert (exc.value.field, exc.value.message) == ("number", "extension 1000 already exists")
    assert store.get_extension("1000").name == "Alice"


def test_every_bad_field_of_an_extension_is_reported_at_once(tmp_path):
    store = ConfigStore(tmp_path)
    with pytest.raises(ValidationErrors) as exc:
        store.add_extension("0", "", "pw")
    assert [e.field for e in exc.value.errors] == ["number", "name", "secret"]
    assert len(exc.value) == 3


@pytest.mark.parametrize("name, message", [
    ("", "must not be empty"), ("   ", "must not be empty"), ("x" * 41, "at most 40"),
    ("Bell\x07", "control"), ("Two\nlines", "control"),
])
def test_bad_names_are_refused(tmp_path, name, message):
    with pytest.raises(ValidationError, match=message) as exc:
        ConfigStore(tmp_path).add_extension("1000", name)
    assert exc.value.field == "name"


def test_names_are_stored_without_surrounding_blanks_and_may_use_any_script(tmp_path):
    store = ConfigStore(tmp_path)
    assert store.add_extension("1000", "  Zoë Łukasz  ").name == "Zoë Łukasz"
    assert store.add_extension("1001", "x" * 40).name == "x" * 40


def test_update_extension_changes_only_the_given_fields(tmp_path):
    store = ConfigStore(tmp_path)
    before = store.add_extension("1000", "Alice")
    after = store.update_extension("1000", name="Alice Smith")
    assert after == Extension("1000", "Alice Smith", before.secret, True)
    assert store.update_extension("1000", enabled=False).enabled is False
    assert store.update_extension("1000", secret="new-secret-value").secret == "new-secret-value"
    assert ConfigStore(tmp_path).get_extension("1000") == Extension("1000", "Alice Smith", "new-secret-value", False)


def test_update_of_unknown_extension_is_refused(tmp_path):
    with pytest.raises(ValidationError, match="no extension 1234"):
        ConfigStore(tmp_path).update_extension("1234", name="Nobody")


def test_regenerate_secret_replaces_the_secret(tmp_path):
    store = ConfigStore(tmp_path)
    old = store.add_extension("1000", "Alice")
    new = store.regenerate_secret("1000")
    assert new.secret != old.secret and len(new.secret) == 24
    assert store.get_extension("1000").secret == new.secret


def test_remove_extension_and_unknown_one_is_refused(tmp_path):
    store = ConfigStore(tmp_path)
    store.add_extension("1000", "Alice")
    store.remove_extension("1000")
    assert store.extensions() == []
    with pytest.raises(ValidationError) as exc:
        store.remove_extension("1234")
    assert (exc.value.field, exc.value.message) == ("number", "no extension 1234")


def test_secret_never_appears_in_repr_or_log_lines(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    store = ConfigStore(tmp_path)
    ext = store.add_extension("1000", "Alice", "very-secret-word")
    store.update_extension("1000", secret="other-secret-word")
    regenerated = store.regenerate_secret("1000")
    assert "very-secret-word" not in repr(ext) and "very-secret-word" not in str(ext)
    assert "secret='***'" in repr(ext)
    for secret in ("very-secret-word", "other-secret-word", regenerated.secret):
        assert secret not in caplog.text
    assert "extension 1000 added" in caplog.text


# Settings

def test_settings_start_at_documented_defaults(tmp_path):
    assert ConfigStore(tmp_path).settings() == Settings(
        site_name="Office PBX", country="uk", no_answer_timeout=30, busy_tone_seconds=4,
        timezone="UTC", sip_domain="", mode="day")


def test_update_settings_persists_valid_changes(tmp_path):
    store = ConfigStore(tmp_path)
    store.update_settings(mode="night", timezone="Europe/London", country="us", sip_domain="pbx.example.com")
    s = ConfigStore(tmp_path).settings()
    assert (s.mode, s.timezone, s.country, s.sip_domain) == ("night", "Europe/London", "us", "pbx.example.com")
    assert store.update_settings(sip_domain="192.168.1.10").sip_domain == "192.168.1.10"


def test_update_settings_is_all_or_nothing_and_reports_every_bad_value(tmp_path):
    store = ConfigStore(tmp_path)
    with pytest.raises(ValidationErrors) as exc:
        store.update_settings(mode="night", no_answer_timeout=4, busy_tone_seconds=31,
                              timezone="Mars/Olympus", country="fr", sip_domain="bad domain!")
    assert [e.field for e in exc.value] == ["country", "no_answer_timeout", "busy_tone_seconds", "timezone",
                                            "sip_domain"]
    assert "choose 5 to 300 seconds" in str(exc.value)
    assert store.settings().mode == "day"
    assert ConfigStore(tmp_path).settings() == Settings()


@pytest.mark.parametrize("changes, field", [
    ({"no_answer_timeout": "30"}, "no_answer_timeout"), ({"no_answer_timeout": True}, "no_answer_timeout"),
    ({"mode": "evening"}, "mode"), ({"site_name": ""}, "site_name"), ({"timezone": ""}, "timezone"),
])
def test_settings_of_wrong_type_or_range_are_refused(tmp_path, changes, field):
    with pytest.raises(ValidationError) as exc:
        ConfigStore(tmp_path).update_settings(**changes)
    assert exc.value.field == field


def test_unknown_setting_is_refused_listing_the_known_ones(tmp_path):
    with pytest.raises(ValidationError, match="unknown setting; known settings: site_name, country") as exc:
        ConfigStore(tmp_path).update_settings(colour="blue")
    assert exc.value.field == "colour"


# Sharing the file between processes

def test_changed_is_true_once_after_another_store_writes(tmp_path):
    running = ConfigStore(tmp_path)
    cli = ConfigStore(tmp_path)
    assert running.changed() is False
    generation = running.generation
    cli.add_extension("1000", "Alice")
    assert running.changed() is True
    assert running.changed() is False
    assert running.generation == generation + 1
    assert running.get_extension("1000").name == "Alice"


def test_own_writes_bump_generation_but_do_not_count_as_external_change(tmp_path):
    store = ConfigStore(tmp_path)
    generation = store.generation
    store.add_extension("1000", "Alice")
    store.update_settings(mode="night")
    assert store.generation == generation + 2
    assert store.changed() is False


def test_reads_see_another_process_write_without_calling_changed(tmp_path):
    webui, cli = ConfigStore(tmp_path), ConfigStore(tmp_path)
    cli.update_settings(mode="night")
    assert webui.settings().mode == "night"
    assert webui.changed() is True


def test_write_from_a_stale_store_keeps_the_other_stores_write(tmp_path):
    a, b = ConfigStore(tmp_path), ConfigStore(tmp_path)
    a.extensions()
    b.add_extension("1000", "Alice")
    a.add_extension("1001", "Bob")         # a has not looked since b wrote
    assert [e.number for e in ConfigStore(tmp_path).extensions()] == ["1000", "1001"]


def test_two_processes_adding_at_once_lose_no_extension(tmp_path):
    code = """
        import sys
        from firmware.config import ConfigStore
        store = ConfigStore(sys.argv[1])
        print("ready", flush=True)
        sys.stdin.readline()
        for n in range(int(sys.argv[2]), int(sys.argv[2]) + 15):
            store.add_extension(str(n), f"Desk {n}")
        print("done", flush=True)
    """
    ConfigStore(tmp_path)
    procs = [child(code, str(tmp_path), "1000"), child(code, str(tmp_path), "2000")]
    try:
        for p in procs:
            assert read_line(p) == "ready"
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            assert read_line(p) == "done", p.stderr.read()
    finally:
        for p in procs:
            p.kill()
            p.communicate(timeout=10)
    numbers = [e.number for e in ConfigStore(tmp_path).extensions()]
    assert numbers == [str(n) for n in range(1000, 1015)] + [str(n) for n in range(2000, 2015)]


def test_threads_sharing_one_store_lose_no_extension(tmp_path):
    store = ConfigStore(tmp_path)
    errors = []

    def add(first):
        try:
            for n in range(first, first + 10):
                store.add_extension(str(n), "Desk")
        except Exception as e:      # surfaced by the assert below
            errors.append(e)

    threads = [threading.Thread(target=add, args=(first,)) for first in (1000, 2000, 3000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == [] and len(ConfigStore(tmp_path).extensions()) == 30


def test_kill_9_mid_write_leaves_either_the_old_or_the_new_state(tmp_path):
    writer = """
        import sys
        from firmware.config import ConfigStore
        store = ConfigStore(sys.argv[1])
        n = int(sys.argv[2])
        print("ready", flush=True)
        while True:
            store.update_settings(site_name=f"state {n}")
            print(n, flush=True)
            n += 1
    """
    store = ConfigStore(tmp_path)
    for n in range(100, 300):            # a realistic file size: 200 extensions
        store.add_extension(str(n), f"Desk {n}")
    store.update_settings(site_name="state 0")
    rng = random.Random(2024)
    state, start, writes_seen = "state 0", 1, 0
    for _ in range(20):
        proc = child(writer, str(tmp_path), str(start))
        try:
            assert read_line(proc) == "ready", proc.stderr.read()
            time.sleep(rng.uniform(0.0, 0.05))
        finally:
            proc.send_signal(signal.SIGKILL)
            out, _ = proc.communicate(timeout=10)
        confirmed = [int(line) for line in out.split()]
        writes_seen += len(confirmed)
        if confirmed:
            allowed = {f"state {confirmed[-1]}", f"state {confirmed[-1] + 1}"}
        else:
            allowed = {state, f"state {start}"}
        site_name = json.loads(store.path.read_text())["settings"]["1"]["site_name"]
        assert site_name in allowed
        reopened = ConfigStore(tmp_path)
        assert reopened.settings().site_name == site_name
        assert len(reopened.extensions()) == 200
        state, start = site_name, (confirmed[-1] if confirmed else start) + 2
    assert writes_seen > 20                 # the kills really landed among writes
    assert list(tmp_path.glob(".config.json.*.tmp")) == []


def test_extension_that_an_inbound_route_rings_cannot_be_removed(tmp_path):
    store = ConfigStore(tmp_path)
    store.add_extension("1000", "Reception")
    store.add_inbound_route("442071234567", "1000")
    with pytest.raises(ValidationError, match="inbound route"):
        store.remove_extension("1000")
    assert store.get_extension("1000") is not None
    store.remove_inbound_route("442071234567")
    store.remove_extension("1000")
    assert store.get_extension("1000") is None


def test_an_outbound_route_may_name_an_fxo_line_which_then_cannot_be_removed(tmp_path):
    store = ConfigStore(tmp_path)
    store.add_extension("1000", "Reception")
    store.add_extension("1090", "Exchange line")
    with pytest.raises(ValidationErrors) as e:
        store.add_outbound_route("pstn", "_9X.", "line:3", strip=1)
    assert "line:N" in str(e.value)
    store.add_line_port(3, "fxo", "1090", "1000")
    store.add_outbound_route("pstn", "_9X.", "line:3", strip=1)
    with pytest.raises(ValidationError) as e:
        store.remove_line_port(3)
    assert "pstn" in str(e.value)
