"""What a new office manager trips over on the command line (issue 9).

Every mistake - a bad value, an unusable or mistyped --data, a PBX started twice - ends in one
`error:` line naming the thing and the fix and a non-zero exit, never a traceback; read-only
commands never create a data directory; `pbx cdr` stays a table with long numbers; secrets may
start with '-'.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from firmware.config import ConfigStore
from services import cli

ROOT = Path(__file__).resolve().parent.parent

# Leaves of the `pbx` command tree that may make a new data directory; every other one
# (a new subcommand too, until it is listed here) must refuse a --data without PBX data in it.
CREATES_DATA = {("run",), ("service",), ("ext", "add")}

# A valid value per (command path, dest), else per dest: the baseline each bad value replaces.
SAMPLES = {
    (("ext", "add"), "number"): "2099",
    (("ext", "rm"), "number"): "2001",
    (("line", "add"), "number"): "2",
    (("line", "add"), "extension"): "2001",
    (("line", "rm"), "number"): "1",
    (("rating", "import"), "file"): "example",
    (("cdr", "rerate"), "since"): "2026-01-01",
    (("mail", "test"), "address"): "you@example.com",
    (("codes", "set"), "code"): "*78",
    (("update", "install"), "bundle"): "{file}",   # rauc itself is not called here (no_runner)
    "name": "Test",
    "number": "2000",
    "extension": "2000",
}


def leaves(parser: argparse.ArgumentParser, path: tuple = ()):
    """(path, parser) of every runnable subcommand, found by walking the argparse tree."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, sub in subs[0].choices.items():
        yield from leaves(sub, path + (name,))


def takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0 and not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))


def sample(path, action) -> str:
    if action.choices:
        return str(list(action.choices)[0])
    if (path, action.dest) in SAMPLES:
        return SAMPLES[(path, action.dest)]
    if action.dest in SAMPLES:
        return SAMPLES[action.dest]
    return "1" if action.type is int else "x"


def bad_values(path, action) -> list[str]:
    if action.dest == "data":
        bad = ["{file}", "/proc/pbx-test/data", "/proc/self", "x" * 300]
        return bad if path in CREATES_DATA else bad + ["{missing}"]
    if action.choices:
        return ["bogus", ""]
    if action.type is not None:      # numbers, ports, ranges, addresses, devices
        return ["abc", "-1", "99999999", "", "x" * 300]
    # plain text: empty where something is needed, and far too long everywhere
    return (["", "x" * 300] if action.default not in ("", None) or action.required
            or not action.option_strings else ["x" * 300]) + (["-", "--"] if not action.option_strings else [])


# Subcommands that need one of several optional options to have anything to do.
ONE_OF = {("ext", "set"): ("name", ["--name", "Test"]), ("ha", "set"): ("off", ["--off"]),
          ("codes", "set"): ("enabled", ["--off"]),
          ("mail", "test"): ("wait", ["--wait", "0"])}     # queue it, do not wait for a sender


def baseline(path, parser, skip_dest=None) -> list[str]:
    argv = list(path)
    dest, extra = ONE_OF.get(path, (None, []))
    if dest != skip_dest:
        argv += extra
    for action in parser._actions:
        if not takes_value(action) or action.dest == skip_dest or action.dest == "data":
            continue
        if not action.option_strings:
            argv.append(sample(path, action))
        elif action.required:
            argv += [action.option_strings[0], sample(path, action)]
    return argv


def cases():
    for path, parser in leaves(cli.build_parser()):
        name = " ".join(path)
        yield pytest.param(path, baseline(path, parser) + ["--no-such-option"], id=f"{name}--unknown-option")
        yield pytest.param(path, baseline(path, parser) + ["unexpected-extra"], id=f"{name}-extra-argument")
        for action in parser._actions:
            if not takes_value(action):
                continue
            if action.required or not action.option_strings:   # leaving it out is an error too
                yield pytest.param(path, baseline(path, parser, skip_dest=action.dest),
                                   id=f"{name}-{action.dest}-missing")
            for i, bad in enumerate(bad_values(path, action)):
                argv = baseline(path, parser, skip_dest=action.dest)
                if action.option_strings:
                    argv += [action.option_strings[0], bad]
                else:
                    positionals = [a for a in parser._actions if takes_value(a) and not a.option_strings]
                    at = len(path) + positionals.index(action)
                    argv.insert(at, bad)
                yield pytest.param(path, argv, id=f"{name}-{action.dest}-bad{i}")


@pytest.fixture
def pbx_data(tmp_path):
    """A PBX data directory with extensions 2000 and 2001 and line port 1 (fxs, 2000)."""
    data = tmp_path / "data"
    store = ConfigStore(data)
    store.add_extension("2000", "Front desk")
    store.add_extension("2001", "Back office")
    store.add_line_port(1, "fxs", "2000")
    store.update_settings(smtp_host="127.0.0.1", smtp_from="pbx@example.com")   # `pbx mail test` needs one
    (tmp_path / "a-file").write_text("not a directory\n")
    return data


@pytest.fixture
def no_runner(monkeypatch):
    """Nothing really starts in-process: `pbx run` / `pbx service` return at once, `pbx status`
    sees a PBX that answers. A bad value must be refused before any of that."""
    import services.control
    import services.runner
    import services.webservice

    def started(*_a, **_k):
        return 0

    def status(*_a, **_k):
        return {"version": "test", "uptime": 1.0, "sip_addr": "127.0.0.1", "sip_port": 5060,
                "registrations": [], "calls": []}
    monkeypatch.setattr(services.runner, "run", started)
    monkeypatch.setattr(services.runner, "port_in_use", lambda *_a: None)   # `service web` on 8080
    monkeypatch.setattr(services.webservice, "serve", started)
    monkeypatch.setattr(services.control, "query", status)
    # `pbx update` drives rauc on the appliance: here only its argument handling is walked
    import services.update
    monkeypatch.setattr(services.update.os, "geteuid", lambda: 0)
    monkeypatch.setattr(services.update, "install",
                        lambda source, *_a, **_k: "installed" if Path(source).is_file() else
                        (_ for _ in ()).throw(services.update.UpdateError(f"{source}: no such file")))
    monkeypatch.setattr(services.update, "rauc_status", lambda: {"booted": "A", "slots": []})
    # `pbx update selftest` would call the edge (tests/test_selftest.py places that call for real)
    import services.selftest
    monkeypatch.setattr(services.selftest, "echo_call",
                        lambda host, port, user, secret, timeout=30.0: services.selftest.SelfTestResult(
                            user, 1.0, 1.0, 10, 200))


def call(argv, capsys) -> tuple[int, str, str]:
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def fill(argv, data: Path) -> list[str]:
    extra = [] if "--data" in argv else ["--data", str(data)]
    subst = {"{file}": str(data.parent / "a-file"), "{missing}": str(data.parent / "typo")}
    argv = [subst.get(a, a) for a in argv]
    return argv + extra


def assert_one_error_line(code, out, err, argv):
    what = f"pbx {' '.join(argv)!r}:\nexit {code}\nstdout: {out}\nstderr: {err}"
    assert code != 0, what
    assert "Traceback" not in out + err, what
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, what
    assert "usage:" not in err, what


@pytest.mark.parametrize("path", [path for path, _ in leaves(cli.build_parser())], ids=" ".join)
def test_every_subcommand_runs_with_its_baseline_values(pbx_data, capsys, no_runner, path):
    """The walk below only means something if the values it starts from are good ones."""
    parser = dict(leaves(cli.build_parser()))[path]
    argv = fill(baseline(path, parser), pbx_data)
    code, out, err = call(argv, capsys)
    assert code == 0, f"pbx {' '.join(argv)} -> {code}\n{out}{err}"


@pytest.mark.parametrize("path, argv", list(cases()))
def test_every_subcommand_refuses_bad_values_with_one_error_line(pbx_data, capsys, no_runner, path, argv):
    argv = fill(argv, pbx_data)
    code, out, err = call(argv, capsys)
    assert_one_error_line(code, out, err, argv)
    assert not (pbx_data.parent / "typo").exists()


def pbx(*args, cwd=ROOT, env=None):
    env = dict(os.environ if env is None else env, PYTHONPATH=str(ROOT))   # this tree's code from any cwd
    return subprocess.run([sys.executable, "-m", "services.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def only_line(r) -> str:
    """The whole stderr of a failed command: exactly one `error:` line, nothing else."""
    assert r.returncode != 0, r
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    return lines[0]


def test_cdr_last_minus_one_is_one_error_line(pbx_data):
    line = only_line(pbx("cdr", "--last", "-1", "--data", pbx_data))
    assert "--last" in line and "1" in line


@pytest.mark.parametrize("where, says", [
    ("a-file", "not a directory"),
    ("/proc/pbx-test/data", "cannot create data directory"),
    ("/proc/self", "cannot write"),
])
def test_an_unusable_data_directory_is_named_with_the_fix(pbx_data, where, says):
    data = pbx_data.parent / where
    line = only_line(pbx("ext", "add", "2050", "--name", "X", "--data", data))
    assert says in line and str(data) in line and "--data" in line, line
    if where == "a-file":
        assert says in only_line(pbx("ext", "list", "--data", data))


@pytest.mark.parametrize("argv", [("ext", "list"), ("status",), ("status", "--json"), ("cdr",), ("cdr", "--json"),
                                  ("line", "list"), ("ext", "rm", "2000"), ("line", "rm", "1")])
def test_read_only_commands_never_create_a_data_directory(tmp_path, argv):
    r = pbx(*argv, "--data", "typo", cwd=tmp_path)
    line = only_line(r)
    assert "no PBX data" in line and str(tmp_path / "typo") in line and "pbx run --data" in line, line
    assert not (tmp_path / "typo").exists()
    assert not list(tmp_path.iterdir())


def test_the_default_data_directory_is_not_created_by_a_read_only_command(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PBX_DATA"}
    only_line(pbx("ext", "list", cwd=tmp_path, env=env))
    assert not (tmp_path / "var").exists()


def test_cdr_table_stays_aligned_with_long_numbers(pbx_data):
    from firmware.cdr import CallRecord, CdrStore
    now = time.time() - 100
    store = CdrStore(pbx_data)
    store.write(CallRecord("a", "2000", "2001", now, now + 1, now + 31, "ANSWERED", cause="200 OK"))
    store.write(CallRecord("b", "+4420712345678901", "004930123456789012", now + 40, None, now + 45,
                           "NO ANSWER", cause="408 Request Timeout"))
    store.write(CallRecord("c", "sip-trunk-provider-long-name", "1", now + 50, now + 51, now + 1051,
                           "ANSWERED", cause="200 OK"))
    store.close()
    r = pbx("cdr", "--data", pbx_data)
    assert r.returncode == 0, r.stderr
    header, *rows = r.stdout.splitlines()
    assert len(rows) == 3
    # every column starts where its header starts (left-aligned) or ends where it ends (numbers)
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    assert names == ["start", "src", "dst", "disposition", "dur", "bill", "cause"], header
    for row in rows:
        cells = dict(zip(names, starts))
        for name in ("src", "dst", "disposition"):
            at = cells[name]
            assert row[at] != " " and row[at - 1] == " ", f"{name} misaligned:\n{r.stdout}"
        for name in ("dur", "bill"):
            end = header.index(name) + len(name)
            assert row[end - 1] != " " and row[end] == " ", f"{name} misaligned:\n{r.stdout}"
        assert row[cells["cause"]] != " ", r.stdout
    assert "+4420712345678901" in r.stdout and "sip-trunk-provider-long-name" in r.stdout


def test_generated_secrets_never_start_with_a_dash():
    from firmware.config.model import generate_secret
    # 1 in 64 token_urlsafe strings starts with '-': thousands of draws find one for sure
    assert not [s for s in (generate_secret() for _ in range(5000)) if s.startswith("-")]


def test_generated_secrets_never_start_with_0x(monkeypatch):
    """SIPp takes a password starting with 0x for a hex key: such an extension could never
    register or call from it (it cost the soak 31 calls in every 10,000)."""
    from firmware.config import model
    drawn = iter(["0xYupMhPmAIicfnhqrB4lOpf", "0XYupMhPmAIicfnhqrB4lOpf", "AxYupMhPmAIicfnhqrB4lOpf"])
    monkeypatch.setattr(model.secrets, "token_urlsafe", lambda n: next(drawn))
    assert model.generate_secret() == "AxYupMhPmAIicfnhqrB4lOpf"


@pytest.mark.parametrize("spelling", ["joined", "separate"])
def test_secret_may_start_with_a_dash(pbx_data, spelling):
    secret = "-abc-Def-123456"
    args = [f"--secret={secret}"] if spelling == "joined" else ["--secret", secret]
    r = pbx("ext", "add", "2077", "--name", "Dash", *args, "--data", pbx_data)
    assert r.returncode == 0, r.stderr
    assert ConfigStore(pbx_data).get_extension("2077").secret == secret


# ----- a second `pbx run`, taken ports, children that never come up -------------------------

def run_until_exit(pbx_proc, timeout: float) -> int | None:
    try:
        return pbx_proc.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def start_expecting_failure(pbx_proc, timeout: float = 15.0) -> tuple[int | None, str, float]:
    """`pbx run` as PbxProcess starts it, waited for until it exits (not until it answers: on a
    data directory in use the running PBX would answer)."""
    cmd = [sys.executable, "-m", "services.cli", "run", "--data", str(pbx_proc.data),
           "--sip-addr", pbx_proc.addr, "--sip-port", str(pbx_proc.sip_port),
           "--web-port", str(pbx_proc.web_port), "--rtp-ports", f"{pbx_proc.rtp[0]}-{pbx_proc.rtp[1]}"]
    if not pbx_proc.web:
        cmd.append("--no-web")
    t0 = time.monotonic()
    with open(pbx_proc.log_path, "ab") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(15)
            code = None
    return code, pbx_proc.log_path.read_text(errors="replace"), time.monotonic() - t0


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


@pytest.mark.e2e
def test_a_second_pbx_run_on_the_same_data_and_ports_fails_at_once(tmp_path):
    from tests.pbxproc import PbxProcess
    first = PbxProcess(tmp_path / "pbx", extensions=["1000"], web=True)
    second = PbxProcess(tmp_path / "pbx", web=True)
    second.sip_port, second.web_port, second.rtp = first.sip_port, first.web_port, first.rtp
    second.log_path = tmp_path / "second.log"
    try:
        first.start()
        code, log, took = start_expecting_failure(second)
        assert code == 1, log
        assert took < 10, log
        lines = error_lines(second.log_path.read_text())
        assert len(lines) == 1, second.log_path.read_text()
        assert "already running" in lines[0] and str(first.data) in lines[0], lines[0]
        assert "PBX ready" not in second.log_path.read_text()
        # the first one is untouched: still answering, its edge never restarted
        assert first.status()["sip_port"] == first.sip_port
        time.sleep(1.5)
        assert first.proc.poll() is None
        first_log = first.log_tail(2000)
        assert not re.search(r"retrying|exited|leftover", first_log), first_log
    finally:
        second.stop()
        first.stop()


@pytest.mark.e2e
def test_pbx_run_with_the_sip_port_taken_fails_at_once_naming_it(tmp_path):
    from tests.pbxproc import PbxProcess
    pbx_proc = PbxProcess(tmp_path / "pbx")
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind(("127.0.0.1", pbx_proc.sip_port))
    try:
        code, log, took = start_expecting_failure(pbx_proc)
        assert code == 1 and took < 10, log
        lines = error_lines(pbx_proc.log_path.read_text())
        assert len(lines) == 1, pbx_proc.log_path.read_text()
        assert str(pbx_proc.sip_port) in lines[0] and "--sip-port" in lines[0], lines[0]
        assert "PBX ready" not in pbx_proc.log_path.read_text()
    finally:
        squatter.close()
        pbx_proc.stop()


@pytest.mark.e2e
def test_pbx_run_with_the_web_port_taken_fails_at_once_naming_it(tmp_path):
    from tests.pbxproc import PbxProcess
    pbx_proc = PbxProcess(tmp_path / "pbx", web=True)
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", pbx_proc.web_port))
    squatter.listen()
    try:
        code, log, took = start_expecting_failure(pbx_proc)
        assert code == 1 and took < 10, log
        text = pbx_proc.log_path.read_text()
        lines = error_lines(text)
        assert len(lines) == 1, text
        assert f"port {pbx_proc.web_port}" in lines[0] and "--web-port" in lines[0], lines[0]
        assert "PBX ready" not in text and "retrying" not in text, text
    finally:
        squatter.close()
        pbx_proc.stop()


@pytest.mark.e2e
def test_a_child_that_keeps_failing_is_given_up_with_one_error_line(tmp_path):
    """The web UI dies later and cannot start again (its session key is unreadable): restarted
    with back-off, given up after 5. (Its port cannot be taken meanwhile: pbx run holds it.)"""
    from tests.pbxproc import PbxProcess
    from tests.test_runner_supervision import descendants, wait_for, web_up
    pbx_proc = PbxProcess(tmp_path / "pbx", web=True)
    try:
        pbx_proc.start()
        wait_for(lambda: web_up(pbx_proc.web_port), 20, "the web UI to serve")
        web = [p for p, c in descendants(pbx_proc.proc.pid).items() if "webui" in c]
        assert web
        key = pbx_proc.data / "webui" / "secret-key"
        key.unlink()
        key.mkdir()                  # a directory: even root cannot read it as the key
        t0 = time.monotonic()
        for pid in web:
            os.kill(pid, signal.SIGKILL)
        code = run_until_exit(pbx_proc, 30)
        took = time.monotonic() - t0
        text = pbx_proc.log_path.read_text()
        assert code == 1, text
        assert 5 < took < 25, (took, text)       # 0.5 + 1 + 2 + 4 s of back-off, not a tight loop
        attempts = [line for line in text.splitlines() if "services.runner" in line and "web UI" in line]
        assert 4 <= len(attempts) <= 6, "\n".join(attempts)
        lines = error_lines(text)
        assert len(lines) == 1, text
        assert "web UI" in lines[0] and "exited with code 1" in lines[0] and "gave up" in lines[0], lines[0]
    finally:
        pbx_proc.stop()
