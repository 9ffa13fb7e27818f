"""BaresipPhone: a headless baresip 1.0 for tests, driven through its ctrl_tcp JSON interface.

    with BaresipPhone("1002", "pw", registrar=("127.0.0.1", 5060), workdir=tmp_path, tone_hz=900) as b:
        assert b.register() == "REGISTER_OK"
        b.dial("sip:1000@127.0.0.1:5060")
        b.wait_event("CALL_ESTABLISHED")
        ...
        b.hangup()
    b.received_wav  # what baresip heard (sndfile dump, 16-bit PCM)

Addresses stay on loopback: `net_interface 127.0.0.1` makes baresip put 127.0.0.1 in its SDP, so
no network namespace is needed. It plays a long sine WAV (aufile hangs up when the file ends, so
the file lasts longer than any test call) and dumps received audio with the sndfile module.
DTMF: baresip 1.0 sends DTMF only from keypresses on its console, so the phone runs its stdio
UI on a pseudo-terminal and `send_dtmf` types the digits there.
"""

import json
import logging
import math
import os
import socket
import struct
import subprocess
import threading
import time
import wave
from pathlib import Path

from tests.phones.sipp import free_port

logger = logging.getLogger(__name__)

MODULES = Path("/usr/lib/baresip/modules")


def write_tone_wav(path, hz, seconds, rate=8000, amplitude=0.4):
    frames = bytearray()
    step = 2 * math.pi * hz / rate
    for i in range(int(seconds * rate)):
        frames += struct.pack("<h", int(amplitude * 32767 * math.sin(step * i)) if hz else 0)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(frames))


class BaresipError(RuntimeError):
    """baresip did not start, a command failed, or an awaited event did not come."""


class BaresipPhone:
    def __init__(self, user, secret="", registrar=None, *, workdir, tone_hz=900, transport="udp",
                 auto_answer=True, tone_seconds=120, start_timeout=5.0):
        if transport not in ("udp", "tcp"):
            raise ValueError(f"BaresipPhone transport must be 'udp' or 'tcp', not {transport!r}")
        self.user = str(user)
        self.secret = secret
        self.registrar = (str(registrar[0]), int(registrar[1])) if registrar else None
        self.transport = transport
        self.port = free_port(transport)
        self.ctrl_port = free_port("tcp")
        self.dir = Path(workdir) / f"baresip-{self.user}-{self.port}"
        self.snd_dir = self.dir / "snd"
        self.uri = f"sip:{self.user}@127.0.0.1:{self.port}" + (";transport=tcp" if transport == "tcp" else "")
        self._start_timeout = start_timeout
        self._events = []
        self._responses = []
        self._cond = threading.Condition()
        self._proc = None
        self._sock = None
        self._write_config(tone_hz, tone_seconds, auto_answer)

    def _write_config(self, tone_hz, tone_seconds, auto_answer):
        self.snd_dir.mkdir(parents=True, exist_ok=True)
        tone = self.dir / "tone.wav"
        write_tone_wav(tone, tone_hz or 0, tone_seconds)
        (self.dir / "config").write_text("\n".join([
            "poll_method epoll",
            f"sip_listen 127.0.0.1:{self.port}",
            "net_interface 127.0.0.1",  # SDP and SIP stay on loopback
            "audio_player alsa,null",
            f"audio_source aufile,{tone}",
            "audio_alert alsa,null",
            "audio_srate 8000",
            "audio_channels 1",
            f"module_path {MODULES}",
            "module g711.so",
            "module aufile.so",
            "module alsa.so",
            "module sndfile.so",
            "module stdio.so",  # console keys: the only way baresip 1.0 sends DTMF
            "module_app account.so",
            "module_app menu.so",  # dial, accept, hangup, quit commands
            "module_app ctrl_tcp.so",
            f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}",
            f"snd_path {self.snd_dir}",
            "",
        ]))
        params = [f"answermode={'auto' if auto_answer else 'manual'}", "audio_codecs=PCMA,PCMU"]
        if self.registrar:
            host, port = self.registrar
            aor = f"<sip:{self.user}@{host}:{port};transport={self.transport}>"
            # Added by register() with `uanew`, so its REGISTER events reach our ctrl_tcp link
            # (baresip 1.0 has no register command, and registers file accounts before we connect).
            self._ua_line = aor + ";" + ";".join(params + [f"auth_pass={self.secret}", "regint=600"])
            (self.dir / "accounts").write_text("")
        else:
            aor = f"<sip:{self.user}@127.0.0.1:{self.port}>"
            (self.dir / "accounts").write_text(aor + ";" + ";".join(params + ["regint=0"]) + "\n")

    # --- process ------------------------------------------------------------
    def start(self):
        self._log = open(self.dir / "baresip.log", "wb")
        self._keys, console = os.openpty()
        self._proc = subprocess.Popen(["baresip", "-f", str(self.dir)], cwd=self.dir,
                                      stdin=console, stdout=self._log, stderr=subprocess.STDOUT)
        os.close(console)
        deadline = time.monotonic() + self._start_timeout
        while True:
            try:
                self._sock = socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=1)
                break
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise BaresipError(f"baresip {self.user} did not open ctrl_tcp on "
                                       f"{self.ctrl_port}: {self.log_tail()}") from None
                time.sleep(0.05)
        self._reader = threading.Thread(target=self._read, name=f"baresip-{self.user}", daemon=True)
        self._reader.start()
        logger.info("baresip %s up at %s (pid %d)", self.user, self.uri, self._proc.pid)
        return self

    def stop(self, timeout=2.0):
        # quit un-REGISTERs first; a registrar that is already gone would hold it for seconds.
        if self._proc is None:
            return
        if self._proc.poll() is None:
            try:
                self._send("quit")
            except OSError:
                pass
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("baresip %s did not quit; killing pid %d", self.user, self._proc.pid)
                self._proc.kill()
                self._proc.wait(timeout)
        if self._sock is not None:
            self._sock.close()
        os.close(self._keys)
        self._log.close()
        self._proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def log_tail(self, lines=15):
        return "\n".join((self.dir / "baresip.log").read_text(errors="replace").splitlines()[-lines:])

    # --- ctrl_tcp: netstrings carrying JSON -----------------------------------
    def _read(self):
        buf = b""
        self._sock.settimeout(None)
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:
                break
            if not data:
                break
            buf += data
            while b":" in buf:
                head, rest = buf.split(b":", 1)
                n = int(head)
                if len(rest) < n + 1:
                    break
                msg, buf = json.loads(rest[:n]), rest[n + 1:]
                with self._cond:
                    (self._events if msg.get("event") else self._responses).append(msg)
                    self._cond.notify_all()

    def _send(self, command, params=""):
        body = json.dumps({"command": command, "params": params, "token": command}).encode()
        self._sock.sendall(str(len(body)).encode() + b":" + body + b",")

    def command(self, command, params="", timeout=3.0):
        start = len(self._responses)
        self._send(command, params)
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._responses) <= start:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BaresipError(f"baresip {self.user}: no response to {command}")
                self._cond.wait(left)
            resp = self._responses[start]
        if not resp.get("ok"):
            raise BaresipError(f"baresip {self.user}: {command} {params} failed: {resp.get('data')}")
        return resp.get("data")

    # --- phone API ------------------------------------------------------------
    def register(self, timeout=5.0):
        """Create the registering account now; returns "REGISTER_OK" or "REGISTER_FAIL"."""
        if not self.registrar:
            raise BaresipError(f"baresip {self.user} has no registrar: pass registrar=(host, port)")
        start = len(self._events)
        self.command("uanew", self._ua_line)
        return self.wait_event(("REGISTER_OK", "REGISTER_FAIL"), timeout, after=start)["type"]

    def dial(self, uri):
        self.command("dial", uri)

    def answer(self):
        self.command("accept")

    def hangup(self):
        self.command("hangup")

    def send_dtmf(self, digits, gap=0.25):
        """Press digits on baresip's console during a call: it sends them as RFC 4733 events."""
        for digit in str(digits):
            os.write(self._keys, digit.encode())
            time.sleep(gap)

    def wait_event(self, types, timeout=5.0, after=0):
        """Wait for a ctrl_tcp event of type(s), e.g. CALL_ESTABLISHED, CALL_CLOSED, CALL_INCOMING."""
        types = (types,) if isinstance(types, str) else tuple(types)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for e in self._events[after:]:
                    if e.get("type") in types:
                        return e
                left = deadline - time.monotonic()
                if left <= 0 or (self._proc and self._proc.poll() is not None):
                    seen = [e.get("type") for e in self._events]
                    raise BaresipError(f"baresip {self.user}: no {types} within {timeout} s; "
                                       f"events: {seen}; log:\n{self.log_tail()}")
                self._cond.wait(min(left, 0.2))

    @property
    def events(self):
        with self._cond:
            return list(self._events)

    @property
    def received_wav(self):
        """The newest rx dump (what baresip heard); complete once the call has closed."""
        # baresip 1.0 builds the dump name in a fixed-size buffer: under a long snd_path the ".wav"
        # is cut off, so match the stem (the content is a WAV either way)
        dumps = sorted(self.snd_dir.glob("*-dec*"), key=lambda p: p.stat().st_mtime)
        if not dumps:
            raise BaresipError(f"baresip {self.user}: no received audio in {self.snd_dir} "
                               f"(files: {[p.name for p in self.snd_dir.iterdir()]})")
        return dumps[-1]
