"""The front panel: DAY/NIGHT button, LEDs for power, ready, day/night, voicemail and fault.

Until the admin password is set, the day/night LED blinks the setup code and the last number of
the box's address instead (firmware/blinkcode.py; the README's first-boot section has the table).

Night mode is the same setting the *33 feature code toggles (ConfigStore settings().mode), so the
button, the code and the web UI can never disagree, and the mode survives a reboot.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from gpiozero import LED, Button

from firmware import blinkcode

logger = logging.getLogger(__name__)

MODES = ("day", "night")
BOOT_BLINK = (0.25, 0.25)      # ready LED while the services start
FAULT_BLINK = (0.1, 0.1)       # fast: catches the eye from across the office
BCM_PINS = range(2, 28)        # the 40-pin header's GPIO2..GPIO27


def setup_code_path(data_dir: str | Path) -> Path:
    """Where the web UI keeps the pending setup code (webui.wizard.setup_code.path; not imported:
    that package pulls in Flask, which the panel service has no use for)."""
    return Path(data_dir) / "webui" / "setup-code"


def read_setup_code(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text().strip().lower() or None
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class PanelPins:
    """BCM pin numbers. Defaults avoid the I2C, SPI and UART pins a HAT may need."""
    button: int = 17
    power: int = 5
    ready: int = 6
    day_night: int = 13
    voicemail: int = 19
    fault: int = 26

    @classmethod
    def from_config(cls, config: Mapping[str, object] | None) -> "PanelPins":
        """PanelPins from a config dict such as {"button": 17, "fault": 21}; missing keys keep defaults."""
        config = dict(config or {})
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(config) - set(names))
        if unknown:
            raise ValueError(f"unknown panel pin {', '.join(unknown)}: known pins are {', '.join(names)}")
        for name, value in config.items():
            if isinstance(value, bool) or not isinstance(value, int) or value not in BCM_PINS:
                raise ValueError(f"panel pin {name}={value!r}: use a BCM GPIO number 2..27")
        pins = cls(**config)
        used = [getattr(pins, n) for n in names]
        clashes = sorted({p for p in used if used.count(p) > 1})
        if clashes:
            raise ValueError(f"panel pins share GPIO {', '.join(map(str, clashes))}: give each its own pin")
        return pins


class FrontPanel:
    """The panel's devices. on_toggle() runs once per press of the DAY/NIGHT button.
    Starts in the boot pattern: power on, ready blinking, until set_ready()."""

    def __init__(self, pins: PanelPins, on_toggle: Callable[[], None], factory=None,
                 bounce_time: float = 0.05) -> None:
        self.pins = pins
        self.bounce_time = bounce_time
        self._on_toggle = on_toggle
        self._last_press = float("-inf")
        self._press_lock = threading.Lock()
        # gpiozero's bounce_time is done by the pin driver (and ignored by mock pins); the lockout in
        # _pressed() also covers drivers that do not debounce.
        self.button = Button(pins.button, pull_up=True, bounce_time=bounce_time, pin_factory=factory)
        self.power = LED(pins.power, pin_factory=factory)
        self.ready = LED(pins.ready, pin_factory=factory)
        self.day_night = LED(pins.day_night, pin_factory=factory)
        self.voicemail = LED(pins.voicemail, pin_factory=factory)
        self.fault = LED(pins.fault, pin_factory=factory)
        self._mode = "day"
        self._code_thread: threading.Thread | None = None
        self._code_stop = threading.Event()
        self.power.on()
        self.ready.blink(*BOOT_BLINK)
        self.button.when_pressed = self._pressed

    def _pressed(self) -> None:
        with self._press_lock:
            now = time.monotonic()
            if now - self._last_press < self.bounce_time:
                logger.debug("panel: button bounce ignored")
                return
            self._last_press = now
        logger.info("panel: DAY/NIGHT button pressed")
        try:
            self._on_toggle()
        except Exception as exc:       # a failed toggle shows on the fault LED instead of killing GPIO events
            logger.error("panel: day/night toggle failed: %s", exc)
            self.set_fault(True)
        finally:
            # the lockout also runs from the end of the toggle: chatter that queued up behind a slow
            # store write (an fsync on a busy SD card) is a bounce too, not a second press
            with self._press_lock:
                self._last_press = time.monotonic()

    def show_mode(self, mode: str) -> None:
        """Day/night LED: lit in night mode (like the BLF lamp of a call-flow toggle)."""
        if mode not in MODES:
            raise ValueError(f"panel mode {mode!r}: use 'day' or 'night'")
        self._mode = mode
        if self._code_thread is None:       # while the setup code blinks, the mode waits for its end
            self.day_night.value = mode == "night"

    def show_setup_code(self, code: str, address: str | None = None, time_scale: float = 1.0) -> None:
        """Blink the setup code (and the address's last octet) on the day/night lamp, round after
        round (firmware.blinkcode), until stop_setup_code(). time_scale < 1 plays it faster (tests)."""
        steps = blinkcode.pattern(code, blinkcode.last_octet(address))
        self.stop_setup_code()
        self._code_stop = threading.Event()
        self._code_thread = threading.Thread(target=self._play, args=(steps, time_scale, self._code_stop),
                                             name="panel-blink-code", daemon=True)
        self._code_thread.start()
        logger.info("panel: blinking the setup code on the day/night lamp (%.0f s a round)",
                    blinkcode.duration(steps))

    def _play(self, steps, time_scale: float, stop: threading.Event) -> None:
        self.day_night.off()                # dark first, or a lit night lamp would swallow the start flash
        if stop.wait(blinkcode.END_GAP * time_scale):
            return
        while not stop.is_set():
            for on, seconds in steps:
                self.day_night.value = on
                if stop.wait(seconds * time_scale):
                    return

    def stop_setup_code(self) -> None:
        """Back to the lamp's normal meaning (lit = night mode)."""
        thread, self._code_thread = self._code_thread, None
        if thread is None:
            return
        self._code_stop.set()
        thread.join(timeout=2)
        self.day_night.value = self._mode == "night"

    def set_ready(self) -> None:
        self.ready.on()

    def set_fault(self, fault: bool) -> None:
        if fault:
            self.fault.blink(*FAULT_BLINK)
        else:
            self.fault.off()

    def set_voicemail(self, waiting: bool) -> None:
        self.voicemail.value = bool(waiting)

    def close(self) -> None:
        self.stop_setup_code()
        for device in (self.button, self.power, self.ready, self.day_night, self.voicemail, self.fault):
            device.close()


def run_panel(store, pins: PanelPins, stop_event: threading.Event, factory=None,
              poll_interval: float = 0.2, bounce_time: float = 0.05, setup_code_file: Path | None = None,
              address: str | None = None, blink_scale: float = 1.0) -> None:
    """The panel service: a press toggles the store's mode; a mode changed elsewhere (*33, web UI)
    moves the lamp within poll_interval. While setup_code_file holds a code (no admin password yet)
    the day/night lamp blinks it and the last octet of address instead. Returns when stop_event is set."""
    panel: FrontPanel | None = None
    shown_code: str | None = None
    read_error = ""

    def follow_setup_code() -> None:
        nonlocal shown_code, read_error
        try:
            code = read_setup_code(setup_code_file)
            read_error = ""
        except OSError as exc:
            if str(exc) != read_error:      # once, not at every poll
                logger.error("panel: cannot read the setup code %s: %s", setup_code_file, exc)
            read_error, code = str(exc), None
        if code == shown_code:
            return
        if code:
            try:
                panel.show_setup_code(code, address, blink_scale)
            except ValueError as exc:
                logger.error("panel: setup code not blinked: %s", exc)
        else:
            panel.stop_setup_code()
            logger.info("panel: no setup code pending any more, the day/night lamp shows the mode")
        shown_code = code

    # A press (gpiozero's thread) and the poll below both read the mode and set the lamp: one at a
    # time, or a poll that read "day" just before a press wrote "night" turns the lamp off after
    # the press lit it, and the store (which wrote the change itself) reports nothing new to fix it.
    mode_lock = threading.Lock()

    def toggle() -> None:
        with mode_lock:
            mode = "night" if store.settings().mode == "day" else "day"
            store.update_settings(mode=mode)
            logger.info("panel: mode is now %s", mode)
            panel.show_mode(mode)

    panel = FrontPanel(pins, toggle, factory=factory, bounce_time=bounce_time)
    try:
        with mode_lock:     # the button is live: a press now must not be undone by this first read
            panel.show_mode(store.settings().mode)
        panel.set_ready()
        follow_setup_code()
        store_fault = False
        while not stop_event.wait(poll_interval):
            follow_setup_code()
            try:
                with mode_lock:
                    if store.changed() or store_fault:
                        panel.show_mode(store.settings().mode)
                if store_fault:
                    store_fault = False
                    panel.set_fault(False)
            except Exception as exc:   # a broken config file must show, and be retried, not stop the panel
                if not store_fault:
                    logger.error("panel: cannot read the mode from the config store: %s", exc)
                    store_fault = True
                    panel.set_fault(True)
    finally:
        panel.close()
