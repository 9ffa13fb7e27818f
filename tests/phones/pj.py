"""PjPhone: a pjsua2 SIP phone for tests, living in its own process (see pj_agent.py).

    with PjPhone(user="1000", secret="pw", registrar=("127.0.0.1", 5060), tone_hz=700,
                 record_dir=tmp_path) as a:
        assert a.register() == 200
        a.call("sip:1001@127.0.0.1:5060")
        a.wait_state("CONFIRMED", timeout=5)

The phone plays a continuous sine of tone_hz into every call and records what it hears
(8 kHz WAV, early media included) to `recording_path` of the current call.
"""

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

logger = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parents[2]


class PhoneError(RuntimeError):
    """A phone command failed, timed out, or the phone process died."""


class PjPhone:
    def __init__(self, user, secret="", registrar=None, local_addr="127.0.0.1", transport="udp",
                 tone_hz=None, record_dir=None, codecs=("PCMA/8000", "PCMU/8000"), log_level=3,
                 start_timeout=10.0):
        if transport not in ("udp", "tcp"):
            raise ValueError(f"PjPhone transport must be 'udp' or 'tcp', not {transport!r}")
        if record_dir is None:
            raise ValueError("PjPhone needs record_dir (e.g. pytest's tmp_path) for its recordings")
        if registrar is not None:
            registrar = (str(registrar[0]), int(registrar[1]))
        self.user = str(user)
        self.record_dir = Path(record_dir)
        self.record_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.record_dir / f"{self.user}-pjsua2.log"
        self._opts = {"user": self.user, "secret": secret, "registrar": registrar,
                      "local_addr": local_addr, "transport": transport, "tone_hz": tone_hz,
                      "record_dir": str(self.record_dir), "codecs": list(codecs),
                      "log_level": log_level}
        self._start_timeout = start_timeout
        self._cond = threading.Condition()
        self._events = []
        self._replies = {}
        self._next_id = 1
        self._proc = None
        self._reader = None
        self._dead = False
        self._current = None  # call number the call-level commands act on
        self._record_paths = {}
        self.host = self.port = self.uri = None

    # --- process ------------------------------------------------------------
    def start(self):
        self._log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONPATH=str(_REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.phones.pj_agent", json.dumps(self._opts)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, cwd=_REPO, env=env)
        self._reader = threading.Thread(target=self._read, name=f"pjphone-{self.user}", daemon=True)
        self._reader.start()
        ready = self._wait_event(lambda e: e.get("event") == "ready", self._start_timeout, "start")
        self.host, self.port, self.uri = ready["host"], ready["port"], ready["uri"]
        logger.info("phone %s up at %s (pid %d)", self.user, self.uri, self._proc.pid)
        return self

    def stop(self, timeout=5.0):
        if self._proc is None:
            return
        if self._proc.poll() is None:
            try:
                self._send({"cmd": "quit"})
                self._proc.wait(timeout)
            except (PhoneError, subprocess.TimeoutExpired, OSError):
                logger.warning("phone %s did not quit in %.0f s; killing pid %d",
                               self.user, timeout, self._proc.pid)
                self._proc.kill()
                self._proc.wait(timeout)
        for f in (self._proc.stdin, self._proc.stdout):
            f.close()
        self._reader.join(timeout)
        self._log.close()
        self._proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _read(self):
        for raw in self._proc.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                logger.warning("phone %s: bad line from agent: %r", self.user, raw)
                continue
            with self._cond:
                if "id" in msg and "event" not in msg:
                    self._replies[msg["id"]] = msg
                else:
                    msg["t"] = time.monotonic()
                    self._events.append(msg)
                    if msg.get("event") == "incoming":
                        self._current = msg["call"]
                self._cond.notify_all()
        with self._cond:
            self._dead = True
            self._cond.notify_all()

    def _died(self, what):
        tail = self.log_path.read_text(errors="replace").splitlines()[-15:]
        return PhoneError(f"phone {self.user} process exited during {what} "
                          f"(rc={self._proc.poll()}); log {self.log_path}:\n" + "\n".join(tail))

    def _send(self, msg):
        if self._proc is None:
            raise PhoneError(f"phone {self.user} is not started: use `with PjPhone(...)` or .start()")
        with self._cond:
            msg["id"] = self._next_id
            self._next_id += 1
        try:
            self._proc.stdin.write((json.dumps(msg) + "\n").encode())
            self._proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise self._died(msg["cmd"]) from None
        return msg["id"]

    def _command(self, cmd, timeout=5.0, **args):
        mid = self._send({"cmd": cmd, **args})
        deadline = time.monotonic() + timeout
        with self._cond:
            while mid not in self._replies:
                left = deadline - time.monotonic()
                if self._dead:
                    raise self._died(cmd)
                if left <= 0:
                    raise PhoneError(f"phone {self.user}: no reply to {cmd} within {timeout} s")
                self._cond.wait(left)
            reply = self._replies.pop(mid)
        if not reply["ok"]:
            raise PhoneError(f"phone {self.user}: {cmd} failed: {reply['error']}")
        return reply["result"]

    def _wait_event(self, match, timeout, what, start=0):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for e in self._events[start:]:
                    if match(e):
                        return e
                left = deadline - time.monotonic()
                if self._dead:
                    raise self._died(what)
                if left <= 0:
                    seen = [e for e in self._events if e.get("event") in ("state", "reg", "incoming")]
                    raise PhoneError(f"phone {self.user}: timeout after {timeout} s waiting for "
                                     f"{what}; events so far: {seen[-8:]}")
                self._cond.wait(left)

    # --- registration ---------------------------------------------------------
    def register(self, timeout=5.0):
        """Send REGISTER (answering digest challenges); return the final status code."""
        start = len(self._events)
        self._command("register", on=True)
        e = self._wait_event(lambda e: e.get("event") == "reg" and e["code"] >= 200, timeout,
                             "REGISTER final response", start)
        return e["code"]

    def unregister(self, timeout=5.0):
        start = len(self._events)
        self._command("register", on=False)
        e = self._wait_event(lambda e: e.get("event") == "reg" and e["code"] >= 200, timeout,
                             "un-REGISTER final response", start)
        return e["code"]

    # --- calls ----------------------------------------------------------------
    def call(self, uri, headers=None):
        """Place a call; returns at once. Follow with wait_state()."""
        r = self._command("call", uri=uri, headers=headers or {})
        with self._cond:
            self._current = r["call"]
            self._record_paths[r["call"]] = r["record_path"]

    def wait_incoming(self, timeout=5.0):
        """Wait for the next incoming call not yet waited for; it becomes the current call."""
        seen = getattr(self, "_incoming_seen", 0)
        e = self._wait_event(lambda e: e.get("event") == "incoming" and e["call"] > seen,
                             timeout, "incoming call")
        self._incoming_seen = e["call"]
        with self._cond:
            self._current = e["call"]
        return {"from": e["from"], "to": e["to"], "call_id": e["call_id"], "call": e["call"],
                "auto_answer_headers": e.get("auto_answer_headers", [])}

    def wait_state(self, state, timeout=5.0, call=None):
        """Wait until the current call (or `call`) reaches state; returns that state event."""
        number = call or self._current
        if number is None:
            raise PhoneError(f"phone {self.user}: no call to wait on; call() or wait_incoming() first")
        return self._wait_event(lambda e: e.get("event") == "state" and e["call"] == number
                                and e["state"] == state, timeout, f"call {number} {state}")

    def wait_media(self, status, timeout=5.0, call=None, after=0):
        """Wait for an audio media status (ACTIVE, LOCAL_HOLD, REMOTE_HOLD) after event index `after`."""
        number = call or self._current
        return self._wait_event(lambda e: e.get("event") == "media" and e["call"] == number
                                and e["status"] == status, timeout, f"media {status}", after)

    def answer(self, code=200, call=None):
        r = self._command("answer", code=code, call=call or self._current)
        self._record_paths[r["call"]] = r["record_path"]

    def reject(self, code=486, call=None):
        self._command("hangup", code=code, call=call or self._current)

    def hangup(self, call=None):
        self._command("hangup", call=call or self._current)

    def hold(self, call=None):
        self._command("hold", call=call or self._current)

    def unhold(self, call=None):
        self._command("unhold", call=call or self._current)

    def transfer(self, uri, call=None):
        """Blind transfer of the current call (or `call`) to uri by REFER."""
        self._command("xfer", uri=uri, call=call or self._current)

    def transfer_replaces(self, call, other):
        """Attended transfer: REFER on `call` with Replaces naming this phone's call `other`."""
        self._command("xfer_replaces", call=call, other=other)

    def wait_transfer(self, code=200, timeout=10.0, call=None):
        """Wait for the NOTIFY that reports the transfer's final status (e.g. 200)."""
        number = call or self._current
        return self._wait_event(lambda e: e.get("event") == "xfer" and e["call"] == number
                                and e["final"] and e["code"] == code, timeout, f"transfer {code}")

    @property
    def current_call(self):
        return self._current

    def send_dtmf(self, digits, call=None):
        self._command("dtmf", digits=str(digits), call=call or self._current)

    def auto_answer(self, code=200, after_ms=0, intercom_only=False):
        """Answer every later incoming call with `code` after `after_ms` (180 is sent meanwhile).
        With intercom_only, only calls with auto-answer headers (Call-Info answer-after=0 or
        Alert-Info info=alert-autoanswer), as a desk phone does for a page; the rest ring."""
        self._command("auto_answer", code=code, after_ms=after_ms, intercom_only=intercom_only)

    # --- observations ---------------------------------------------------------
    def events(self, call=None):
        """State changes of the current call (or `call`): [{"state": "EARLY", "code": 180}, ...]."""
        number = call or self._current
        with self._cond:
            return [{"state": e["state"], "code": e["code"], "reason": e["reason"]}
                    for e in self._events if e.get("event") == "state" and e["call"] == number]

    @property
    def event_count(self):
        """Index to pass as `after=` so a wait only looks at events from now on."""
        with self._cond:
            return len(self._events)

    @property
    def last_status(self):
        ev = self.events()
        return ev[-1]["code"] if ev else None

    @property
    def dtmf_received(self):
        with self._cond:
            return "".join(e["digit"] for e in self._events if e.get("event") == "dtmf")

    @property
    def recording_path(self):
        """WAV of what this phone heard in the current call (complete once DISCONNECTED)."""
        number = self._current
        if number is None:
            raise PhoneError(f"phone {self.user} has had no call yet")
        path = self._record_paths.get(number) or self.record_dir / f"{self.user}-call{number}.wav"
        return Path(path)
