"""Line-board simulator: speaks protocol v1 on a pty and carries each port's audio through the ALSA
`file` plugin on named pipes, with a scriptable analog phone (FXS) or PSTN line (FXO) per port.

    python -m hw.lines.simulator --ports fxs:2,fxo:1 [--dir DIR] [--country uk]

prints the serial device path on the first line and the ALSA_CONFIG_PATH to export on the second,
then reads script commands on stdin (`help` lists them). Tests use BoardSimulator directly.

Audio: for port N the simulator makes pipes capN (what the line sends to the host) and playN (what
the host plays) and an asoundrc defining ALSA device lineN over them. Each 20 ms it puts one frame
of the port's script (or silence) into capN, but only while fewer than two frames wait there: the
host's reads then pace the stream like a real card, and nothing piles up while nobody listens.
"""
from __future__ import annotations

import argparse
import array
import collections
import fcntl
import heapq
import itertools
import logging
import os
import select
import shutil
import signal
import sys
import tempfile
import termios
import threading
import time
import tty

from firmware.dsp.callerid import CallerId, caller_id_audio, caller_id_plan, decode_caller_id, ring_cadence
from firmware.dsp.detect import DtmfDetector, dtmf_samples
from firmware.dsp.tones import ToneGenerator, tone
from hw.lines.protocol import SEQ_MODULO, VERSION, Frame, FrameDecoder, encode

logger = logging.getLogger(__name__)

FRAME_BYTES = 320
TICK_S = 0.02
HEARD_LIMIT = 60 * 8000 * 2          # keep the last minute of what the host played
F_SETPIPE_SZ = 1031                  # fcntl.F_SETPIPE_SZ (Linux), not exported by Python 3.11
MODEL = "SIM-LINE"
FIRMWARE = "1.0"
MAX_INCOMING_RINGS = 10
FLASH_MS = (100, 700)               # a board's default flash window (FLASHTIME changes it per port)
PULSE_MS = 100                      # 10 pulses a second
PULSE_GAP_MS = 700                  # between pulse-dialled digits
RINGBACK_AFTER_S = 2.0              # the exchange rings the number this long after the last digit


_DEFERRED = object()                 # a command whose ACK comes when the board has done it


class SimulatorError(RuntimeError):
    """A script step that the simulated phone or line cannot do in its current state."""


class SimPort:
    def __init__(self, board: "BoardSimulator", number: int, kind: str) -> None:
        self.board = board
        self.number = number
        self.kind = kind
        self.state = "onhook" if kind == "fxs" else "idle"
        self.capture_path = os.path.join(board.directory, f"cap{number}")
        self.playback_path = os.path.join(board.directory, f"play{number}")
        self._script: collections.deque[bytes] = collections.deque()
        self._pending = b""
        self._source: ToneGenerator | None = None     # continuous audio (busy tone) after the script
        self._heard = bytearray()
        self._cap_fd = self._play_fd = -1

    # pipes ------------------------------------------------------------------------------------
    def _open_pipes(self) -> None:
        for path in (self.capture_path, self.playback_path):
            if not os.path.exists(path):
                os.mkfifo(path, 0o600)
        # O_RDWR on a FIFO never blocks and keeps the pipe alive, so ALSA's open() never waits on us.
        self._cap_fd = os.open(self.capture_path, os.O_RDWR | os.O_NONBLOCK)
        self._play_fd = os.open(self.playback_path, os.O_RDWR | os.O_NONBLOCK)
        for fd in (self._cap_fd, self._play_fd):
            try:
                fcntl.fcntl(fd, F_SETPIPE_SZ, 4096)     # 128 ms: bounds the latency of a stale pipe
            except OSError:
                pass

    def _close_pipes(self) -> None:
        for fd in (self._cap_fd, self._play_fd):
            if fd >= 0:
                os.close(fd)
        self._cap_fd = self._play_fd = -1

    def _tick(self) -> None:
        queued = array.array("i", [0])
        fcntl.ioctl(self._cap_fd, termios.FIONREAD, queued)
        if queued[0] < 2 * FRAME_BYTES:
            try:
                os.write(self._cap_fd, self._next_frame())
            except BlockingIOError:
                pass
        while True:
            try:
                data = os.read(self._play_fd, 65536)
            except BlockingIOError:
                break
            if not data:
                break
            with self.board._lock:
                self._heard += data
                if len(self._heard) > HEARD_LIMIT:
                    del self._heard[: len(self._heard) - HEARD_LIMIT]
            self._heard_audio(data)
        self._exchange_tick()

    def _heard_audio(self, data: bytes) -> None:
        """What the host played (the exchange listens for DTMF on an outgoing call)."""

    def _exchange_tick(self) -> None:
        pass

    def _next_frame(self) -> bytes:
        with self.board._lock:
            data = self._pending
            while len(data) < FRAME_BYTES and self._script:
                data += self._script.popleft()
            if len(data) >= FRAME_BYTES:
                self._pending = data[FRAME_BYTES:]
                return data[:FRAME_BYTES]
            self._pending = b""
            if self._source is not None:
                return data + self._source.frame((FRAME_BYTES - len(data)) // 2)
            return data + bytes(FRAME_BYTES - len(data))

    # script -------------------------------------------------------------------------------------
    def send_audio(self, pcm16le: bytes) -> None:
        """Queue audio that the phone/line sends toward the host."""
        with self.board._lock:
            self._script.append(bytes(pcm16le))

    def clear_audio(self) -> None:
        """Drop audio queued by send_audio() that has not been sent yet."""
        with self.board._lock:
            self._script.clear()
            self._pending = b""

    def heard(self, clear: bool = False) -> bytes:
        """Everything the host played to this port (the last minute)."""
        with self.board._lock:
            data = bytes(self._heard)
            if clear:
                self._heard.clear()
        return data

    def wait_state(self, state: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state == state:
                return True
            time.sleep(0.01)
        return self.state == state


class SimPhone(SimPort):
    """An analog phone on an FXS port."""

    def __init__(self, board: "BoardSimulator", number: int) -> None:
        super().__init__(board, number, "fxs")
        self.rings = 0
        self.polarity = "normal"
        self.flash_ms = FLASH_MS

    def off_hook(self) -> None:
        with self.board._lock:
            if self.state == "offhook":
                raise SimulatorError(f"phone on port {self.number} is already off-hook")
            self.board._cancel(self.number)
            self.state = "offhook"
        self.board._event("HOOK", self.number, "off")

    def on_hook(self) -> None:
        with self.board._lock:
            if self.state != "offhook":
                raise SimulatorError(f"phone on port {self.number} is not off-hook")
            self.state = "onhook"
        self.board._event("HOOK", self.number, "on")

    def flash(self, ms: int = 300) -> None:
        """Press the hook switch for ms and let go (returns after that). The board reports a
        flash if ms lies in its window (FLASHTIME, default 100-700 ms), on-hook then off-hook if
        longer, and nothing if shorter (a bounce)."""
        if self.state != "offhook":
            raise SimulatorError(f"phone on port {self.number} must be off-hook to flash")
        lo, hi = self.flash_ms
        if ms < lo:
            time.sleep(ms / 1000)
            return
        if ms <= hi:
            time.sleep(ms / 1000)
            self.board._event("HOOK", self.number, "flash")
            return
        time.sleep(hi / 1000)
        with self.board._lock:
            self.state = "onhook"
        self.board._event("HOOK", self.number, "on")
        time.sleep((ms - hi) / 1000)
        self.off_hook()

    def dial(self, digits: str, on_ms: int = 80, off_ms: int = 80) -> None:
        """Key digits: DTMF audio into the port's capture stream."""
        if self.state != "offhook":
            raise SimulatorError(f"phone on port {self.number} must be off-hook to dial {digits!r}")
        self.send_audio(dtmf_samples(digits, on_ms=on_ms, off_ms=off_ms))

    def caller_id(self, standard: str | None = None) -> CallerId:
        """Decode the caller ID the host sent (as a CID phone display would)."""
        return decode_caller_id(self.heard(), standard or caller_id_plan(self.board.country).fsk)


class SimLine(SimPort):
    """A PSTN line on an FXO port: the exchange side."""

    def __init__(self, board: "BoardSimulator", number: int) -> None:
        super().__init__(board, number, "fxo")
        self.dialled = ""                # what the host dialled on an outgoing call (DTMF or pulses)
        self.outgoing = False
        self.answered = False
        self._detector: DtmfDetector | None = None
        self._last_digit = 0.0

    def _seized(self, was: str) -> None:
        """SEIZE: answering a ringing line, or (idle) starting a call out: the exchange's dial tone."""
        self.outgoing = was == "idle"
        self.answered = False
        if self.outgoing:
            self.dialled = ""
            self._detector = DtmfDetector()
            self._source = ToneGenerator(tone(self.board.country, "dial"))

    def _released(self) -> None:
        self.outgoing = self.answered = False
        self._detector = None
        self._source = None

    def _digit(self, digit: str) -> None:
        """A digit reached the exchange: dial tone stops; ringback once the number looks complete."""
        with self.board._lock:
            if not self.outgoing or self.answered:
                return
            self.dialled += digit
            self._last_digit = time.monotonic()
            self._source = None

    def _heard_audio(self, data: bytes) -> None:
        detector = self._detector
        if detector is None or not self.outgoing or self.answered:
            return
        for digit in detector.feed(data[: len(data) - len(data) % 2]):
            self._digit(digit)

    def _exchange_tick(self) -> None:
        with self.board._lock:
            if (self.outgoing and not self.answered and self.dialled and self._source is None
                    and time.monotonic() - self._last_digit > RINGBACK_AFTER_S):
                self._source = ToneGenerator(tone(self.board.country, "ringback"))

    def answer(self, reversal: bool = True) -> None:
        """The called party answers an outgoing call: ringback stops; with reversal the exchange
        reverses the line polarity (answer supervision, LOOP rev)."""
        with self.board._lock:
            if self.state != "seized" or not self.outgoing:
                raise SimulatorError(f"line on port {self.number} has no outgoing call to answer (state {self.state})")
            self.answered = True
            self._source = None
        if reversal:
            self.board._event("LOOP", self.number, "rev")

    def incoming_call(self, number: str | None = None, name: str | None = None,
                      cadence: tuple[int, ...] | None = None, when: str = "11251430") -> None:
        """Ring the host with caller ID the country's way: UK reversal + V.23 before the first
        ring, US Bell 202 after it. Ringing stops when the host seizes, or after 10 rings."""
        with self.board._lock:
            if self.state != "idle":
                raise SimulatorError(f"line on port {self.number} is {self.state}, not idle")
            self.state = "ringing"
        country = self.board.country
        plan = caller_id_plan(country)
        cadence = tuple(cadence or ring_cadence(country))
        cid = CallerId(number=number, name=name, when=when, number_absent=None if number else "P")
        audio = caller_id_audio(cid, plan)
        at = 0.0
        if plan.before_ring:
            self.board._event("LOOP", self.number, "rev")
            self.send_audio(bytes(FRAME_BYTES * 5) + audio)
            at = len(audio) / 16000 + 0.3
        for ring in range(MAX_INCOMING_RINGS):
            for i in range(0, len(cadence), 2):
                self.board._schedule(at, self.number, self._ring_burst, True)
                at += cadence[i] / 1000
                self.board._schedule(at, self.number, self._ring_burst, False)
                if ring == 0 and i == 0 and not plan.before_ring:
                    self.board._schedule(at + 0.5, self.number, self.send_audio, audio)
                at += cadence[i + 1] / 1000
        self.board._schedule(at, self.number, self._give_up)

    def _ring_burst(self, on: bool) -> None:
        if self.state == "ringing":
            self.board._event("RING", self.number, "on" if on else "off")

    def _give_up(self) -> None:
        if self.state == "ringing":
            self.state = "idle"

    def far_end_hangup(self, how: str = "loop") -> None:
        """The remote party hangs up: 'loop' drops loop current, 'busy' sends the country's busy tone."""
        if self.state != "seized":
            raise SimulatorError(f"line on port {self.number} has no call to hang up (state {self.state})")
        if how == "loop":
            self.board._event("LOOP", self.number, "drop")
        elif how == "busy":
            with self.board._lock:
                self._source = ToneGenerator(tone(self.board.country, "busy"))
        else:
            raise SimulatorError(f"far_end_hangup how={how!r}: use 'loop' or 'busy'")


class BoardSimulator:
    """A line board on a pty. `tty` is a stable symlink to the current pty: unplug()/plug() swap the
    pty underneath, like a USB board re-enumerating. Ports: [SimPhone | SimLine] in order."""

    def __init__(self, ports: str = "fxs:2,fxo:1", *, directory: str | None = None, country: str = "uk") -> None:
        self.country = country
        self._own_dir = directory is None
        self.directory = directory or tempfile.mkdtemp(prefix="linesim-")
        os.makedirs(self.directory, exist_ok=True)
        self.tty = os.path.join(self.directory, "tty")
        self.alsa_config = os.path.join(self.directory, "asoundrc")
        self.ports: list[SimPort] = []
        for kind, count in _parse_ports(ports):
            for _ in range(count):
                cls = SimPhone if kind == "fxs" else SimLine
                self.ports.append(cls(self, len(self.ports)))
        self.commands: list[Frame] = []                 # every command the host sent, for tests
        self._lock = threading.RLock()
        self._write_lock = threading.Lock()
        self._timers: list = []
        self._timer_ids = itertools.count()
        self._seq = 0
        self._master = -1
        self._slave = -1
        self._decoder = FrameDecoder()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # lifecycle ---------------------------------------------------------------------------------
    @property
    def alsa_config_path(self) -> str:
        """Value for ALSA_CONFIG_PATH: the system config first (it defines the "null" slave)."""
        system = "/usr/share/alsa/alsa.conf"
        return f"{system}:{self.alsa_config}" if os.path.exists(system) else self.alsa_config

    def device(self, number: int) -> str:
        return f"line{number}"

    def start(self) -> "BoardSimulator":
        with open(self.alsa_config, "w") as f:
            for port in self.ports:
                f.write(_asoundrc_entry(self.device(port.number), port.capture_path, port.playback_path))
        for port in self.ports:
            port._open_pipes()
        self.plug()
        self._thread = threading.Thread(target=self._run, name="linesim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.unplug()
        for port in self.ports:
            port._close_pipes()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "BoardSimulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def plug(self) -> None:
        """Attach a fresh pty behind `tty` and announce BOOT, as a board powering up."""
        with self._write_lock:
            master, slave = os.openpty()
            tty.setraw(slave)
            tty.setraw(master)
            os.set_blocking(master, False)
            tmp = self.tty + ".new"
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(os.ttyname(slave), tmp)
            os.replace(tmp, self.tty)
            self._master, self._slave = master, slave
            self._decoder = FrameDecoder()
        self._event("BOOT", VERSION, MODEL, FIRMWARE, len(self.ports))

    def unplug(self) -> None:
        """The board vanishes: its device name goes, the pty closes and the host's reads fail.

        The name goes first, as /dev/ttyUSB0 does with a USB board: the kernel hands the freed
        pty number to the next openpty() (another simulator), and a host retrying the old name
        would otherwise open that one and talk to somebody else's board."""
        with self._write_lock:
            try:
                os.unlink(self.tty)
            except FileNotFoundError:
                pass
            for fd in (self._master, self._slave):
                if fd >= 0:
                    os.close(fd)
            self._master = self._slave = -1

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (tests send garbage with this)."""
        with self._write_lock:
            if self._master >= 0:
                os.write(self._master, data)

    # protocol ----------------------------------------------------------------------------------
    def _emit(self, cmd: str, *args: object) -> None:
        with self._write_lock:
            if self._master < 0:
                return
            frame = encode(self._seq, cmd, *args)
            self._seq = (self._seq + 1) % SEQ_MODULO
            try:
                os.write(self._master, frame)
            except OSError as exc:
                logger.debug("line simulator: write failed: %s", exc)

    def _event(self, cmd: str, *args: object) -> None:
        logger.debug("line simulator: event %s %s", cmd, args)
        self._emit(cmd, *args)

    def _handle(self, frame: Frame) -> None:
        self.commands.append(frame)
        seq, cmd, args = frame.seq, frame.cmd, frame.args
        try:
            result = self._command(cmd, args)
        except SimulatorError as exc:
            self._emit("NAK", seq, str(exc))
            return
        if result and result[0] is _DEFERRED:
            self._schedule(result[1], -1, self._emit, "ACK", seq)   # port -1: no port's cancel drops it
            return
        self._emit("ACK", seq, *result)

    def _command(self, cmd: str, args: tuple[str, ...]) -> tuple:
        if cmd == "HELLO":
            if not args or args[0] != str(VERSION):
                raise SimulatorError("version")
            return (VERSION, MODEL, FIRMWARE, len(self.ports))
        if cmd == "PING":
            return ()
        if cmd == "STATUS":
            for port in self.ports:
                self._emit("PORT", port.number, port.kind, port.state)
            return ()
        if cmd not in ("RING", "STOPRING", "SEIZE", "RELEASE", "POLARITY", "FLASHTIME", "DIAL"):
            raise SimulatorError("badcmd")
        if not args or not args[0].isdigit() or int(args[0]) >= len(self.ports):
            raise SimulatorError("badport")
        port = self.ports[int(args[0])]
        want = "fxs" if cmd in ("RING", "STOPRING", "POLARITY", "FLASHTIME") else "fxo"
        if port.kind != want:
            raise SimulatorError("wrongkind")
        with self._lock:
            if cmd == "RING":
                cadence = _parse_cadence(args[1] if len(args) > 1 else "")
                if port.state == "offhook":
                    raise SimulatorError("busy")
                self._cancel(port.number)
                port.state = "ringing"
                self._ring_fxs(port, cadence, 0.0)
            elif cmd == "STOPRING":
                self._cancel(port.number)
                if port.state == "ringing":
                    port.state = "onhook"
            elif cmd == "POLARITY":
                if len(args) < 2 or args[1] not in ("normal", "reverse"):
                    raise SimulatorError("badarg")
                port.polarity = args[1]
            elif cmd == "FLASHTIME":
                times = args[1:3]
                if len(times) != 2 or not all(t.isdigit() for t in times) or not 0 < int(times[0]) < int(times[1]):
                    raise SimulatorError("badarg")
                port.flash_ms = (int(times[0]), int(times[1]))
            elif cmd == "SEIZE":
                self._cancel(port.number)
                port._seized(port.state)           # fresh exchange state before the state says so
                port.state = "seized"
            elif cmd == "RELEASE":
                self._cancel(port.number)
                port.state = "idle"
                port._released()
            elif cmd == "DIAL":
                if len(args) < 2 or not args[1].isdigit():
                    raise SimulatorError("badarg")
                if port.state != "seized":
                    raise SimulatorError("notseized")
                return self._pulse_dial(port, args[1])
        return ()

    def _pulse_dial(self, line: "SimLine", digits: str) -> tuple:
        """Loop-disconnect dialling: each digit is its pulses, then the inter-digit pause. The ACK
        goes when the last digit is done (returned as a delay for _handle)."""
        with self._lock:
            line._source = None                      # the first break stops the dial tone
        at = 0.0
        for digit in digits:
            at += (10 if digit == "0" else int(digit)) * PULSE_MS / 1000
            self._schedule(at, line.number, line._digit, digit)
            at += PULSE_GAP_MS / 1000
        return (_DEFERRED, at - PULSE_GAP_MS / 1000)

    def _ring_fxs(self, phone: SimPhone, cadence: tuple[int, ...], at: float) -> None:
        # One cycle at a time, re-armed at its end: ringing goes on until trip or STOPRING.
        for i in range(0, len(cadence), 2):
            self._schedule(at, phone.number, self._fxs_burst, phone, True)
            at += cadence[i] / 1000
            self._schedule(at, phone.number, self._fxs_burst, phone, False)
            at += cadence[i + 1] / 1000
        self._schedule(at, phone.number, self._ring_fxs, phone, cadence, 0.0)

    def _fxs_burst(self, phone: SimPhone, on: bool) -> None:
        if phone.state == "ringing":
            phone.rings += on
            self._event("RING", phone.number, "on" if on else "off")

    # timers and the loop -----------------------------------------------------------------------
    def _schedule(self, delay: float, port: int, func, *args) -> None:
        with self._lock:
            heapq.heappush(self._timers, (time.monotonic() + delay, next(self._timer_ids), port, func, args))

    def _cancel(self, port: int) -> None:
        with self._lock:
            self._timers = [t for t in self._timers if t[2] != port]
            heapq.heapify(self._timers)

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            timeout = max(0.0, next_tick - time.monotonic())
            master = self._master
            if master >= 0:
                try:
                    readable, _, _ = select.select([master], [], [], timeout)
                    if readable:
                        for frame in self._decoder.feed(os.read(master, 4096)):
                            self._handle(frame)
                except OSError:
                    # EIO while no host holds the slave open (or after unplug): nothing to read.
                    time.sleep(timeout)
            else:
                time.sleep(timeout)
            now = time.monotonic()
            while True:
                with self._lock:
                    if not self._timers or self._timers[0][0] > now:
                        break
                    _, _, _, func, args = heapq.heappop(self._timers)
                func(*args)
            if now >= next_tick:
                for port in self.ports:
                    port._tick()
                next_tick += TICK_S
                if next_tick < now:
                    next_tick = now + TICK_S


def _parse_ports(spec: str) -> list[tuple[str, int]]:
    out = []
    for part in spec.split(","):
        kind, _, count = part.strip().partition(":")
        if kind not in ("fxs", "fxo") or not (count or "1").isdigit():
            raise ValueError(f"bad port spec {part!r}: use e.g. --ports fxs:2,fxo:1")
        out.append((kind, int(count or 1)))
    return out


def _parse_cadence(text: str) -> tuple[int, ...]:
    try:
        cadence = tuple(int(x) for x in text.split("-"))
    except ValueError:
        raise SimulatorError("badarg") from None
    if not cadence or len(cadence) % 2 or any(ms <= 0 or ms > 10000 for ms in cadence):
        raise SimulatorError("badarg")
    return cadence


def _asoundrc_entry(name: str, capture: str, playback: str) -> str:
    return (f'pcm.{name} {{\n  type asym\n'
            f'  playback.pcm {{ type file slave.pcm "null" file "{playback}" format "raw" }}\n'
            f'  capture.pcm {{ type file slave.pcm "null" file "/dev/null" infile "{capture}" format "raw" }}\n'
            f'}}\n')


HELP = """commands: offhook P | onhook P | flash P [MS] | dial P DIGITS | call P [NUMBER [NAME...]] |
answer P [noreversal] | hangup P [loop|busy] | unplug | plug | status | quit"""


def _script(sim: BoardSimulator, line: str) -> str:
    words = line.split()
    if not words:
        return ""
    cmd, args = words[0], words[1:]
    if cmd == "help":
        return HELP
    if cmd == "status":
        return " ".join(f"{p.number}:{p.kind}:{p.state}" for p in sim.ports)
    if cmd in ("unplug", "plug"):
        getattr(sim, cmd)()
        return "ok"
    if not args or not args[0].isdigit() or int(args[0]) >= len(sim.ports):
        return f"error: {cmd} needs a port number 0..{len(sim.ports) - 1}"
    port = sim.ports[int(args[0])]
    actions = {"offhook": "off_hook", "onhook": "on_hook", "flash": "flash"}
    if cmd == "flash" and isinstance(port, SimPhone):
        port.flash(int(args[1]) if len(args) > 1 and args[1].isdigit() else 300)
    elif cmd == "answer" and isinstance(port, SimLine):
        port.answer(reversal=not (len(args) > 1 and args[1] == "noreversal"))
    elif cmd in actions and isinstance(port, SimPhone):
        getattr(port, actions[cmd])()
    elif cmd == "dial" and isinstance(port, SimPhone) and len(args) > 1:
        port.dial(args[1])
    elif cmd == "call" and isinstance(port, SimLine):
        port.incoming_call(args[1] if len(args) > 1 else None, " ".join(args[2:]) or None)
    elif cmd == "hangup" and isinstance(port, SimLine):
        port.far_end_hangup(args[1] if len(args) > 1 else "loop")
    else:
        return f"error: {line.strip()!r} does not apply to port {port.number} ({port.kind}); {HELP}"
    return "ok"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hw.lines.simulator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ports", default="fxs:2,fxo:1", help="port kinds and counts, e.g. fxs:2,fxo:1")
    parser.add_argument("--dir", help="directory for the tty link, pipes and asoundrc (default: a temp dir)")
    parser.add_argument("--country", default="uk", choices=["uk", "us"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    # SIGTERM (make, systemd) unwinds through the finally below, which removes the pipes and link.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        sim = BoardSimulator(args.ports, directory=args.dir, country=args.country).start()
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(sim.tty, flush=True)
    print(f"ALSA_CONFIG_PATH={sim.alsa_config_path}", flush=True)
    try:
        for line in sys.stdin:
            if line.strip() == "quit":
                break
            try:
                reply = _script(sim, line)
            except SimulatorError as exc:
                reply = f"error: {exc}"
            if reply:
                print(reply, flush=True)
        else:
            # stdin closed (run under make/systemd): keep serving until killed.
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
