"""The setup code and the box's address as a blink code on one LED, for a box without a screen.

pattern(code, octet) is the LED's on/off timeline for one round; the panel plays it in a loop while
the setup code is pending. Read it like this (the README's first-boot section has the same table):

    start       one long flash (3 s), then dark
    1..9        that many short blinks (0.3 s on, 0.3 s off)
    0           ten short blinks
    a..f        one medium flash (1 s), then 1..6 short blinks (a = 1, b = 2 ... f = 6)
    next char   1.5 s dark between two characters
    address     a flicker (5 fast flashes), then the last number of the box's IPv4 address,
                digit by digit as above (e.g. 192.168.1.42 -> 4, 2)
    repeat      3 s dark, then the start flash again

Every step is (on, seconds); consecutive steps never repeat a state, so one step is one change
of the pin.
"""
from __future__ import annotations

import ipaddress

START_ON = 3.0
SHORT_ON = 0.3
SHORT_OFF = 0.3
LETTER_ON = 1.0          # the medium flash that says "a letter follows"
CHAR_GAP = 1.5           # dark between two characters (and after the start flash)
FLICKER = (0.08, 0.08)   # the separator before the address: on, off
FLICKER_COUNT = 5
END_GAP = 3.0            # dark before the round repeats

HEX = "0123456789abcdef"

Step = tuple[bool, float]


def char_steps(char: str) -> list[Step]:
    """One character of the code (0-9, a-f) as blinks, without the dark gap after it."""
    c = char.lower()
    if len(c) != 1 or c not in HEX:
        raise ValueError(f"blink code character {char!r}: only 0-9 and a-f can be blinked")
    value = HEX.index(c)
    steps: list[Step] = []
    if value >= 10:
        steps += [(True, LETTER_ON), (False, SHORT_OFF)]
        shorts = value - 9
    else:
        shorts = value or 10
    for _ in range(shorts):
        steps += [(True, SHORT_ON), (False, SHORT_OFF)]
    return steps[:-1]


def last_octet(address: str | None) -> int | None:
    """The last number of an IPv4 address worth showing; None for no address, IPv6, loopback,
    unspecified or a host name (the console shows those)."""
    try:
        ip = ipaddress.ip_address((address or "").strip())
    except ValueError:
        return None
    if ip.version != 4 or ip.is_loopback or ip.is_unspecified:
        return None
    return int(str(ip).rsplit(".", 1)[1])


def pattern(code: str, octet: int | None = None) -> list[Step]:
    """One round: start flash, the code character by character, then (if octet is not None) the
    flicker and the octet's decimal digits, then the dark gap before the next round."""
    code = (code or "").strip().lower()
    if not code:
        raise ValueError("blink code: the setup code is empty")
    if octet is not None and not 0 <= octet <= 255:
        raise ValueError(f"blink code address octet {octet}: use 0..255")
    steps: list[Step] = [(True, START_ON), (False, CHAR_GAP)]
    for i, char in enumerate(code):
        if i:
            steps.append((False, CHAR_GAP))
        steps += char_steps(char)
    if octet is not None:
        steps.append((False, CHAR_GAP))
        for _ in range(FLICKER_COUNT):
            steps += [(True, FLICKER[0]), (False, FLICKER[1])]
        steps[-1] = (False, CHAR_GAP)
        for i, digit in enumerate(str(octet)):
            if i:
                steps.append((False, CHAR_GAP))
            steps += char_steps(digit)
    steps.append((False, END_GAP))
    return _merge(steps)


def _merge(steps: list[Step]) -> list[Step]:
    merged: list[Step] = []
    for on, seconds in steps:
        if merged and merged[-1][0] == on:
            merged[-1] = (on, merged[-1][1] + seconds)
        else:
            merged.append((on, seconds))
    return merged


def duration(steps: list[Step]) -> float:
    return sum(seconds for _, seconds in steps)
