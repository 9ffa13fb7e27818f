"""The setup-code blink pattern (firmware/blinkcode.py): exact timeline for a known code, every
character readable back, clear refusals. tests/test_panel.py plays it on a mock pin."""
import pytest

from firmware import blinkcode
from firmware.blinkcode import CHAR_GAP, END_GAP, LETTER_ON, SHORT_OFF, SHORT_ON, START_ON


def read_back(steps):
    """What a person counting the blinks writes down: (code, octet or None). Durations are judged
    against the midpoints of the pattern's timings, so a test can feed it a played pin's history."""
    chars, current, groups, flicker = [], None, [], 0

    def close_char():
        nonlocal current
        if current is not None:
            letter, shorts = current
            chars.append("abcdef"[shorts - 1] if letter else "0123456789"[shorts % 10])
        current = None

    for on, seconds in steps:
        if on and seconds > (START_ON + LETTER_ON) / 2:
            continue                                    # start of a round
        if on and seconds > (LETTER_ON + SHORT_ON) / 2:
            current = (True, 0)
        elif on and seconds > (SHORT_ON + 0.08) / 2:
            current = (current[0], current[1] + 1) if current else (False, 1)
        elif on:
            flicker += 1
            if flicker == 1:
                close_char()
                groups.append("".join(chars))
                chars.clear()
        elif seconds > (CHAR_GAP + SHORT_OFF) / 2:
            close_char()
    close_char()
    groups.append("".join(chars))
    code = groups[0]
    octet = int(groups[1]) if len(groups) > 1 else None
    return code, octet


def test_known_code_and_octet_give_the_documented_timeline():
    steps = blinkcode.pattern("2a0", 17)
    s, l, gap = (True, SHORT_ON), (True, LETTER_ON), (False, CHAR_GAP)
    off = (False, SHORT_OFF)
    flick = [(True, 0.08), (False, 0.08)] * 4 + [(True, 0.08)]
    expected = ([(True, START_ON), gap, s, off, s, gap, l, off, s, gap] + [s, off] * 9 + [s, gap]
                + flick + [gap, s, gap] + [s, off] * 6 + [s, (False, END_GAP)])
    assert steps == expected
    assert all(a[0] != b[0] for a, b in zip(steps, steps[1:]))        # every step is one pin change
    assert read_back(steps) == ("2a0", 17)


@pytest.mark.parametrize("code", ["0123456789abcdef", "9f3c01be", "00"])
def test_every_character_reads_back(code):
    assert read_back(blinkcode.pattern(code)) == (code, None)
    assert read_back(blinkcode.pattern(code, 205)) == (code, 205)


def test_a_real_setup_code_round_is_under_two_minutes():
    import secrets
    worst = blinkcode.duration(blinkcode.pattern("0" * 8, 200))
    assert worst < 120
    assert blinkcode.duration(blinkcode.pattern(secrets.token_hex(4), 42)) <= worst


def test_last_octet_only_for_a_usable_ipv4_address():
    assert blinkcode.last_octet("192.168.1.42") == 42
    assert blinkcode.last_octet(" 10.0.0.7 ") == 7
    for none in (None, "", "127.0.0.1", "0.0.0.0", "fe80::1", "pbx.local"):
        assert blinkcode.last_octet(none) is None


def test_refusals_name_the_problem():
    with pytest.raises(ValueError, match="'g'.*0-9 and a-f"):
        blinkcode.pattern("1g")
    with pytest.raises(ValueError, match="empty"):
        blinkcode.pattern("  ")
    with pytest.raises(ValueError, match="octet 300"):
        blinkcode.pattern("1", 300)
