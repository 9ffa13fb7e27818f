"""The front panel: DAY/NIGHT button, LEDs for power, ready, day/night, voicemail and fault.

Night mode is the same setting the *33 feature code toggles (ConfigStore settings().mode), so the
button, the code and the web UI can never disagree, and the mode survives a reboot.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from gpiozero import LED, Button

logger = logging.getLogger(__name__)

MODES = ("day", "night")
BOOT_BLINK = (0.25, 0.25)      # ready LED while the services start
FAULT_BLINK = (0.1, 0.1)       # fast: catches the eye from across the office
BCM_PINS = range(2, 28)        # the 40-pin header's GPIO2..GPIO27


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

    def show_mode(self, mode: str) -> None:
        """Day/night LED: lit in night mode (like the BLF lamp of a call-flow toggle)."""
        if mode not in MODES:
            raise ValueError(f"panel mode {mode!r}: use 'day' or 'night'")
        self.day_night.value = mode == "night"

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
        for device in (self.button, self.power, self.ready, self.day_night, self.voicemail, self.fault):
            device.close()


def run_panel(store, pins: PanelPins, stop_event: threading.Event, factory=None,
              poll_interval: float = 0.2, bounce_time: float = 0.05) -> None:
    """The panel service: a press toggles the store's mode; a mode changed elsewhere (*33, web UI)
    moves the lamp within poll_interval. Returns when stop_event is set."""
    panel: FrontPanel | None = None

    def toggle() -> None:
        mode = "night" if store.settings().mode == "day" else "day"
        store.update_settings(mode=mode)
        logger.info("panel: mode is now %s", mode)
        panel.show_mode(mode)

    panel = FrontPanel(pins, toggle, factory=factory, bounce_time=bounce_time)
    try:
        panel.show_mode(store.settings().mode)
        panel.set_ready()
        store_fault = False
        while not stop_event.wait(poll_interval):
            try:
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
