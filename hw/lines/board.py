"""LineBoard: the host side of the line-board protocol over a serial port (pyserial).

One reader thread owns the serial port: it connects, says HELLO, syncs port states with STATUS,
then turns board frames into port events. Handlers run on a separate dispatch thread, so a handler
may call board commands (which wait for the reader) without deadlocking. A vanished port or a
stream of garbage closes the connection and retries with exponential backoff; nothing raises
out of the threads.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable

import serial

from hw.lines.port import LinePort
from hw.lines.protocol import SEQ_MODULO, VERSION, Frame, FrameDecoder, encode

logger = logging.getLogger(__name__)

# Consecutive unreadable lines after which the other end is not a line board (or not at our baud rate).
GARBAGE_LIMIT = 16
EVENTS = ("off_hook", "on_hook", "flash", "ring_start", "ring_stop", "digit", "caller_id", "disconnect",
          "polarity_reversal")


class LineBoardError(RuntimeError):
    """A command the board refused (NAK) or did not answer, or no board connected."""


class _Pending:
    def __init__(self, on_reply: Callable[[Frame], None] | None = None) -> None:
        self.done = threading.Event()
        self.reply: Frame | None = None
        self.on_reply = on_reply


class LineBoard:
    """Analog line-interface board on `port_url` (a device path, a pty, or a pyserial URL).

    Events are callables taking the LinePort (digit, caller_id and disconnect also get the digit,
    the CallerId and the reason): when_off_hook, when_on_hook, when_flash, when_ring_start,
    when_ring_stop, when_digit, when_caller_id, when_disconnect, when_polarity_reversal; plus
    when_connected(board) and when_disconnected(board). LinePorts carry the same handlers."""

    def __init__(self, port_url: str, *, country: str = "uk", audio_device: str = "line{port}",
                 baudrate: int = 115200, reply_timeout: float = 1.0, backoff: tuple[float, float] = (0.1, 5.0),
                 max_attempts: int | None = None) -> None:
        self.port_url = port_url
        self.country = country
        self.audio_device = audio_device
        self.baudrate = baudrate
        self.reply_timeout = reply_timeout
        self.backoff = backoff
        self.max_attempts = max_attempts
        self.ports: dict[int, LinePort] = {}
        self.model = self.firmware = None
        self.attempts = 0
        self.garbage = 0
        for name in EVENTS:
            setattr(self, f"when_{name}", None)
        self.when_connected: Callable[["LineBoard"], None] | None = None
        self.when_disconnected: Callable[["LineBoard"], None] | None = None
        self._serial: serial.SerialBase | None = None
        self._write_lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._seq = 0
        self._board_seq: int | None = None
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._events: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._run, name="lineboard-reader", daemon=True)
        self._dispatcher = threading.Thread(target=self._dispatch, name="lineboard-events", daemon=True)

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> "LineBoard":
        self._dispatcher.start()
        self._reader.start()
        return self

    def close(self) -> None:
        self._stop.set()
        for port in list(self.ports.values()):
            port.close_audio()
        if self._reader.is_alive():
            self._reader.join(timeout=2)
        self._events.put(None)
        if self._dispatcher.is_alive():
            self._dispatcher.join(timeout=2)

    def __enter__(self) -> "LineBoard":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    # --- commands -----------------------------------------------------------------------------

    def command(self, cmd: str, *args: object, timeout: float | None = None) -> tuple[str, ...]:
        """Send a command and wait for its ACK; returns the ACK's result fields."""
        if not self._connected.is_set():
            raise LineBoardError(f"line board at {self.port_url} is not connected: command {cmd} not sent")
        pending = self._send(cmd, *args)
        if not pending.done.wait(self.reply_timeout if timeout is None else timeout):
            raise LineBoardError(f"line board at {self.port_url} did not answer {cmd} "
                                 f"within {self.reply_timeout if timeout is None else timeout} s")
        reply = pending.reply
        if reply is None:
            raise LineBoardError(f"line board at {self.port_url} disconnected before answering {cmd}")
        if reply.cmd == "NAK":
            reason = reply.args[1] if len(reply.args) > 1 else "unknown"
            raise LineBoardError(f"line board refused {cmd} {' '.join(map(str, args))}: {reason}")
        return reply.args[1:]

    def ping(self) -> float:
        """Round-trip time of a PING in seconds."""
        start = time.monotonic()
        self.command("PING")
        return time.monotonic() - start

    def _send(self, cmd: str, *args: object, on_reply: Callable[[Frame], None] | None = None) -> _Pending:
        pending = _Pending(on_reply)
        with self._write_lock:
            seq = self._seq
            self._seq = (self._seq + 1) % SEQ_MODULO
            self._pending[seq] = pending
            ser = self._serial
            if ser is None:
                self._pending.pop(seq, None)
                pending.done.set()
                return pending
            try:
                ser.write(encode(seq, cmd, *args))
            except (serial.SerialException, OSError) as exc:
                logger.warning("line board at %s: write of %s failed: %s", self.port_url, cmd, exc)
                self._pending.pop(seq, None)
                pending.done.set()
        return pending

    # --- reader thread ------------------------------------------------------------------------

    def _run(self) -> None:
        delay = self.backoff[0]
        while not self._stop.is_set():
            if self.max_attempts is not None and self.attempts >= self.max_attempts:
                logger.error("line board at %s: giving up after %d attempts", self.port_url, self.attempts)
                return
            self.attempts += 1
            try:
                ser = serial.serial_for_url(self.port_url, baudrate=self.baudrate, timeout=0.05)
            except (serial.SerialException, OSError, ValueError) as exc:
                logger.warning("line board at %s unavailable (%s); retry in %.1f s", self.port_url, exc, delay)
            else:
                healthy = self._session(ser)
                if healthy:
                    delay = self.backoff[0]
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, self.backoff[1])

    def _session(self, ser: serial.SerialBase) -> bool:
        """Talk to one opened port until it fails. True if the board was synced at some point."""
        decoder = FrameDecoder()
        synced = False
        with self._write_lock:
            self._serial = ser
        self._board_seq = None
        hello_sent = time.monotonic()
        self._send("HELLO", VERSION, on_reply=self._on_hello)
        try:
            bad_run = 0
            while not self._stop.is_set():
                # read(n) waits for all n bytes or the timeout: take one, then what is already there.
                data = ser.read(1)
                if data and ser.in_waiting:
                    data += ser.read(ser.in_waiting)
                if not data:
                    if not self._connected.is_set() and time.monotonic() - hello_sent > 3 * self.reply_timeout:
                        logger.warning("line board at %s: no answer to HELLO; reconnecting", self.port_url)
                        return synced
                    continue
                before = decoder.garbage
                frames = decoder.feed(data)
                skipped = decoder.garbage - before
                self.garbage += skipped
                bad_run = 0 if frames else bad_run + skipped
                if bad_run > GARBAGE_LIMIT:
                    logger.warning("line board at %s sends garbage (%d unreadable lines: wrong device or baud "
                                   "rate?); reconnecting", self.port_url, bad_run)
                    return synced
                for frame in frames:
                    self._handle(frame)
                synced = synced or self._connected.is_set()
        except (serial.SerialException, OSError) as exc:
            logger.warning("line board at %s disconnected: %s", self.port_url, exc)
        finally:
            with self._write_lock:
                self._serial = None
                pending, self._pending = self._pending, {}
            for p in pending.values():
                p.done.set()
            try:
                ser.close()
            except (serial.SerialException, OSError):
                pass
            if self._connected.is_set():
                self._connected.clear()
                self._queue_call(self.when_disconnected, self)
        return synced

    def _on_hello(self, reply: Frame) -> None:
        if reply.cmd != "ACK" or len(reply.args) < 5:
            logger.error("line board at %s refused protocol v%d: %s", self.port_url, VERSION, reply.args)
            return
        _, version, self.model, self.firmware, _nports = reply.args[:5]
        logger.info("line board at %s: %s firmware %s, protocol v%s", self.port_url, self.model,
                    self.firmware, version)
        self._send("STATUS", on_reply=self._on_status)

    def _on_status(self, reply: Frame) -> None:
        if reply.cmd == "ACK" and not self._connected.is_set():
            self._connected.set()
            logger.info("line board at %s ready: %s", self.port_url,
                        ", ".join(f"{p.number}:{p.kind}:{p.state}" for p in self.ports.values()))
            self._queue_call(self.when_connected, self)

    def _handle(self, frame: Frame) -> None:
        if self._board_seq is not None and frame.seq != (self._board_seq + 1) % SEQ_MODULO:
            lost = (frame.seq - self._board_seq - 1) % SEQ_MODULO
            logger.warning("line board at %s: %d frame(s) lost before seq %d", self.port_url, lost, frame.seq)
        self._board_seq = frame.seq
        if frame.cmd in ("ACK", "NAK"):
            seq = int(frame.args[0]) if frame.args and frame.args[0].isdigit() else -1
            with self._write_lock:
                pending = self._pending.pop(seq, None)
            if pending is None:
                logger.warning("line board at %s: %s for unknown seq %s", self.port_url, frame.cmd, seq)
                return
            pending.reply = frame
            if pending.on_reply is not None:
                pending.on_reply(frame)
            pending.done.set()
            return
        try:
            self._event(frame)
        except (ValueError, IndexError, KeyError) as exc:
            logger.warning("line board at %s: malformed %s event %s: %s", self.port_url, frame.cmd, frame.args, exc)

    def _event(self, frame: Frame) -> None:
        cmd, args = frame.cmd, frame.args
        if cmd == "BOOT":
            # The board restarted under us: its states are fresh, so sync again.
            logger.warning("line board at %s rebooted (%s); resyncing", self.port_url, ",".join(args))
            self._connected.clear()
            self._send("HELLO", VERSION, on_reply=self._on_hello)
            return
        if cmd == "PORT":
            number, kind, state = int(args[0]), args[1], args[2]
            port = self.ports.get(number)
            if port is None or port.kind != kind:
                port = self.ports[number] = LinePort(self, number, kind)
            port.state = state
            return
        port = self.ports[int(args[0])]
        value = args[1]
        logger.info("line %d (%s): %s %s", port.number, port.kind, cmd, value)
        if cmd == "HOOK":
            name = {"off": "off_hook", "on": "on_hook", "flash": "flash"}[value]
            port.state = {"off": "offhook", "on": "onhook"}.get(value, port.state)
            port.emit(name)
        elif cmd == "RING":
            if value == "on":
                port.state = "ringing"
                port.emit("ring_start")
            else:
                port.emit("ring_stop")
        elif cmd == "LOOP":
            if value == "drop":
                port.emit("disconnect", "loop")
            elif value == "rev":
                port.emit("polarity_reversal")
        else:
            logger.warning("line board at %s: unknown event %s", self.port_url, cmd)

    # --- event dispatch -----------------------------------------------------------------------

    def _queue_call(self, handler: Callable | None, *args) -> None:
        if handler is not None:
            self._events.put((handler, args))

    def _dispatch(self) -> None:
        while True:
            item = self._events.get()
            if item is None:
                return
            handler, args = item
            try:
                handler(*args)
            except Exception:
                # A faulty handler must not stop the events of every other port.
                logger.exception("line board event handler %r failed", handler)
