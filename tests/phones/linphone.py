"""linphone-daemon (Debian linphone-cli 5.1) as a test phone: a real, independent SIP stack (belle-sip).

The daemon is driven over its unix command socket (--pipe NAME -> /tmp/NAME, one client at a time):
`register`, `call`, `call-pause`, `call-resume`, `terminate`, and call state events read with
`pop-event`. It registers and places calls; it rejects incoming calls (503) in this setup, so use it
as the caller. No sound card is needed (calls run with no audio device).

Pitfalls found here:
- the core does not start (no SIP socket, every call "Call creation failed") unless its database
  directory $HOME/.local/share/linphone exists: each phone gets its own HOME under its work dir;
- the [sip] sip_port of the config file is not applied: the port is set with `port sip N udp`.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

from tests.pbxproc import free_port

DAEMON = shutil.which("linphone-daemon")


class LinphoneError(RuntimeError):
    pass


class LinphonePhone:
    def __init__(self, workdir: Path, rtp_ports: tuple[int, int] = (41000, 41998)):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.home = self.dir / "home"
        (self.home / ".local/share/linphone").mkdir(parents=True, exist_ok=True)
        self.rc = self.dir / "linphonerc"
        self.rc.write_text("[sip]\nsip_tcp_port=0\nsip_tls_port=0\n"
                           f"[rtp]\naudio_rtp_port={rtp_ports[0]}-{rtp_ports[1]}\n"
                           "[video]\nautomatically_initiate=0\nautomatically_accept=0\n")
        self.log = self.dir / "linphone.log"
        self.pipe = f"lptest-{uuid.uuid4().hex[:10]}"
        self.sip_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.events: list[str] = []  # call state events seen so far (LinphoneCall...)

    # --- process -----------------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> "LinphonePhone":
        if DAEMON is None:
            raise LinphoneError("linphone-daemon is not installed (apt-get install linphone-cli)")
        env = dict(os.environ, HOME=str(self.home))
        self.proc = subprocess.Popen([DAEMON, "--pipe", self.pipe, "--config", str(self.rc),
                                      "--log", str(self.log), "--disable-stats-events"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env=env)
        path = f"/tmp/{self.pipe}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LinphoneError(f"linphone-daemon exited with {self.proc.returncode}: see {self.log}")
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                self.sock = None
                time.sleep(0.1)
        if self.sock is None:
            self.stop()
            raise LinphoneError(f"linphone-daemon command socket {path} did not appear")
        self.command(f"port sip {self.sip_port} udp")
        return self

    def stop(self) -> None:
        if self.sock is not None:
            try:
                self.sock.sendall(b"quit\n")
            except OSError:
                pass
            self.sock.close()
            self.sock = None
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None
        try:
            os.unlink(f"/tmp/{self.pipe}")
        except FileNotFoundError:
            pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- commands ----------------------------------------------------------------------------------
    def command(self, text: str, timeout: float = 5.0) -> str:
        """Send one command; its answer (the daemon writes it at once, in one or a few chunks)."""
        self.sock.sendall(text.encode() + b"\n")
        self.sock.settimeout(timeout)
        out = self.sock.recv(65535)
        self.sock.settimeout(0.1)
        try:
            while chunk := self.sock.recv(65535):
                out += chunk
        except socket.timeout:
            pass
        answer = out.decode("utf-8", "replace")
        if not answer.startswith("Status: Ok"):
            raise LinphoneError(f"{text!r}: {answer.strip()}")
        return answer

    def register(self, user: str, secret: str, registrar: tuple[str, int], timeout: float = 8.0) -> str:
        host = f"{registrar[0]}:{registrar[1]}"
        self.command(f"register sip:{user}@{host} sip:{host} {secret} {user} NULL")
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = re.search(r"State: (\S+)", self.command("register-status ALL")) or ""
            state = state and state.group(1)
            if state in ("LinphoneRegistrationOk", "LinphoneRegistrationFailed"):
                break
            time.sleep(0.1)
        return state

    def call(self, uri: str) -> None:
        self.command(f"call {uri}")

    def pause(self) -> None:
        self.command("call-pause")

    def resume(self) -> None:
        self.command("call-resume")

    def terminate(self) -> None:
        self.command("terminate")

    def poll_events(self) -> list[str]:
        while True:
            answer = self.command("pop-event")
            found = re.findall(r"Event: (LinphoneCall\w+)", answer)
            self.events += found
            if not re.search(r"Event-type:", answer):
                return self.events

    def wait_event(self, event: str, timeout: float = 8.0, after: int = 0) -> bool:
        """True once call state event (e.g. LinphoneCallStreamsRunning) is among events[after:]."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if event in self.poll_events()[after:]:
                return True
            time.sleep(0.1)
        return False
