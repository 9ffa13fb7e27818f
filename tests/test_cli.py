"""The `pbx` command as an administrator uses it: extensions, status, call records."""

import json
import subprocess
import sys
import time

import pytest

from tests.phones.pj import PjPhone

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def pbx_cmd(*args, data):
    return subprocess.run([sys.executable, "-m", "services.cli", *args, "--data", str(data)],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)


def test_ext_add_generates_a_strong_secret_and_list_and_rm_work(tmp_path):
    r = pbx_cmd("ext", "add", "2000", "--name", "Front desk", data=tmp_path)
    assert r.returncode == 0, r.stderr
    secret = r.stdout.split("secret:")[1].strip()
    assert len(secret) >= 20 and not secret.isdigit()
    assert secret not in r.stderr  # never in the log lines
    listed = pbx_cmd("ext", "list", data=tmp_path).stdout
    assert "2000" in listed and "Front desk" in listed and secret not in listed
    assert secret in pbx_cmd("ext", "list", "--secrets", data=tmp_path).stdout
    assert pbx_cmd("ext", "rm", "2000", data=tmp_path).returncode == 0
    assert "2000" not in pbx_cmd("ext", "list", data=tmp_path).stdout


@pytest.mark.parametrize("args, message", [
    (("ext", "add", "12a", "--name", "X"), "number"),
    (("ext", "add", "2001", "--name", "X", "--secret", "short"), "secret"),
    (("ext", "rm", "4321"), "no extension 4321"),
])
def test_bad_extension_input_is_refused_with_the_reason(tmp_path, args, message):
    from firmware.config import ConfigStore
    ConfigStore(tmp_path)   # an existing PBX's data: `ext rm` refuses a directory without one
    r = pbx_cmd(*args, data=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


def test_duplicate_extension_is_refused_and_the_first_one_kept(tmp_path):
    first = pbx_cmd("ext", "add", "2002", "--name", "First", data=tmp_path)
    assert first.returncode == 0
    again = pbx_cmd("ext", "add", "2002", "--name", "Second", data=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert "First" in pbx_cmd("ext", "list", data=tmp_path).stdout


def test_ext_set_changes_dnd_forwards_and_caller_id_with_one_error_line_per_mistake(tmp_path):
    from firmware.config import ConfigStore
    for number in ("1000", "1001"):
        assert pbx_cmd("ext", "add", number, "--name", "X", data=tmp_path).returncode == 0
    r = pbx_cmd("ext", "set", "1000", "--dnd", "on", "--forward-busy", "1001",
                "--forward-no-answer", "extension:1001", "--caller-id", "+442071234567", data=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "dnd on" in r.stdout and "forward_busy extension:1001" in r.stdout
    ext = ConfigStore(tmp_path).get_extension("1000")
    assert (ext.dnd, ext.forward_busy, ext.forward_no_answer, ext.external_caller_id) == (
        True, "extension:1001", "extension:1001", "+442071234567")
    r = pbx_cmd("ext", "set", "1000", "--forward-always", "external:12ab", "--forward-busy", "1000",
                "--caller-id", "x", data=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 3 and "forward_always: '12ab' is not a phone number" in lines[0]
    assert any("to itself" in line for line in lines) and any("external_caller_id" in line for line in lines)
    r = pbx_cmd("ext", "set", "1000", "--dnd", "off", "--forward-busy", "none", "--caller-id", "none", data=tmp_path)
    assert r.returncode == 0, r.stderr
    ext = ConfigStore(tmp_path).get_extension("1000")
    assert (ext.dnd, ext.forward_busy, ext.forward_no_answer, ext.external_caller_id) == (
        False, "", "extension:1001", "")
    assert pbx_cmd("ext", "set", "1000", "--dnd", "maybe", data=tmp_path).returncode == 2
    assert pbx_cmd("ext", "set", "1000", data=tmp_path).returncode == 2
    r = pbx_cmd("ext", "set", "4321", "--dnd", "on", data=tmp_path)
    assert r.returncode == 2 and "no extension 4321" in r.stderr


def test_status_says_plainly_when_the_pbx_is_not_running(tmp_path):
    assert pbx_cmd("ext", "add", "2000", "--name", "Front desk", data=tmp_path).returncode == 0
    r = pbx_cmd("status", data=tmp_path)
    assert r.returncode == 1 and "not running" in r.stderr and r.stderr.startswith("error:")
    j = pbx_cmd("status", "--json", data=tmp_path)
    assert json.loads(j.stdout)["running"] is False


@pytest.mark.e2e
def test_status_and_cdr_show_a_registered_phone_and_its_call(pbx, tmp_path):
    with PjPhone(user="1037", secret=pbx.secrets["1037"], registrar=pbx.registrar, tone_hz=700,
                 record_dir=tmp_path) as a, \
            PjPhone(user="1038", secret=pbx.secrets["1038"], registrar=pbx.registrar, tone_hz=900,
                    record_dir=tmp_path) as b:
        assert a.register() == 200 and b.register() == 200
        st = json.loads(pbx_cmd("status", "--json", data=pbx.data).stdout)
        assert st["running"] and {"1037", "1038"} <= {r["aor"] for r in st["registrations"]}
        b.auto_answer(200)
        a.call(pbx.uri("1038"))
        a.wait_state("CONFIRMED", timeout=5)
        st = json.loads(pbx_cmd("status", "--json", data=pbx.data).stdout)
        assert [(c["src"], c["dst"]) for c in st["calls"]] == [("1037", "1038")]
        human = pbx_cmd("status", data=pbx.data).stdout
        assert "1037 -> 1038" in human
        time.sleep(1.2)
        a.hangup()
        b.wait_state("DISCONNECTED", timeout=5)
    pbx.wait_cdr(lambda r: r.src == "1037")
    rows = json.loads(pbx_cmd("cdr", "--json", "--last", "5", data=pbx.data).stdout)
    row = next(r for r in rows if r["src"] == "1037")
    assert row["dst"] == "1038" and row["disposition"] == "ANSWERED" and row["billsec"] >= 1
    table = pbx_cmd("cdr", "--last", "5", data=pbx.data).stdout
    assert "1037" in table and "ANSWERED" in table


def test_line_ports_are_configured_from_the_command_line_with_clear_refusals(tmp_path):
    for number in ("1050", "1090", "1000"):
        assert pbx_cmd("ext", "add", number, "--name", f"Ext {number}", data=tmp_path).returncode == 0
    assert pbx_cmd("line", "add", "1", "--kind", "fxs", "--extension", "1050", data=tmp_path).returncode == 0
    ok = pbx_cmd("line", "add", "3", "--kind", "fxo", "--extension", "1090", "--destination", "1000",
                 data=tmp_path)
    assert ok.returncode == 0 and "rings 1000" in ok.stdout
    listed = pbx_cmd("line", "list", data=tmp_path).stdout
    assert "1050" in listed and "1090 -> 1000" in listed
    bad = pbx_cmd("line", "add", "2", "--kind", "fxs", "--extension", "4444", data=tmp_path)
    assert bad.returncode == 2 and "4444" in bad.stderr and "Traceback" not in bad.stderr
    in_use = pbx_cmd("ext", "rm", "1050", data=tmp_path)
    assert in_use.returncode == 2 and "line port" in in_use.stderr
    assert pbx_cmd("line", "rm", "1", data=tmp_path).returncode == 0
    assert "1050" not in pbx_cmd("line", "list", data=tmp_path).stdout
