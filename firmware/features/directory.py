"""Dial-by-name directory: the caller keys the first letters of a name, hears who matches and
presses that person's number in the list ("press 1 for Alice Smith, 2 for Alicia Jones").

The destination "directory" (an IVR key, an inbound route...) lists the enabled extensions that
have a name. A name matches when its first name or any later word begins with the letters of the
keys pressed (2 = ABC, 3 = DEF ... 7 = PQRS, 9 = WXYZ; the ITU E.161 keypad). Pure: the call
service speaks the matches (a recorded name from the voicemail box when there is one, else TTS).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from firmware.config.destination import DestinationKind, register_kind
from firmware.dialplan.plan import NOTHING_NEXT, Next, Reject
from firmware.dialplan.router import DESTINATION_HANDLERS

KEYPAD = {"2": "ABC", "3": "DEF", "4": "GHI", "5": "JKL", "6": "MNO", "7": "PQRS", "8": "TUV", "9": "WXYZ"}
LETTER_KEY = {letter: key for key, letters in KEYPAD.items() for letter in letters}
LETTERS = 3            # how many keys the caller presses
MAX_MATCHES = 8        # "press 1..8": the list a caller can still remember


def key_of(letter: str) -> str:
    """The keypad key of a letter ('' for anything else: digits, punctuation, accents)."""
    return LETTER_KEY.get(letter.upper(), "")


def keys_for(word: str) -> str:
    """'Alice' -> '25423'."""
    return "".join(key_of(c) for c in word if key_of(c))


def directory_matches(entries, digits: str, limit: int = MAX_MATCHES) -> list[tuple[str, str]]:
    """The (number, name) entries whose name has a word starting with the letters of `digits`,
    sorted by name then number; at most `limit`. Keys 0, 1, * and # match nothing."""
    if not digits or any(d not in KEYPAD for d in digits):
        return []
    found = []
    for number, name in entries:
        words = name.replace("-", " ").split()
        if any(keys_for(w).startswith(digits) for w in words):
            found.append((number, name))
    return sorted(found, key=lambda e: (e[1].lower(), e[0]))[:limit]


@dataclass(frozen=True)
class Directory:
    """Answer and run the dial-by-name directory over `entries` ((number, name), ...)."""
    entries: tuple = ()
    on: Next = field(default=NOTHING_NEXT, kw_only=True)

    def describe(self) -> str:
        return f"dial-by-name directory ({len(self.entries)} names)"


def plan_directory(ctx):
    entries = tuple((n, e.name) for n, e in sorted(ctx.config.extensions.items())
                    if e.enabled and e.name.strip())
    if not entries:
        return Reject(404, "not_found", "the directory has no names: give the extensions names", prompt="not_found")
    return Directory(entries)


register_kind(DestinationKind("directory", "Dial-by-name directory"))
DESTINATION_HANDLERS["directory"] = lambda dest, ctx: plan_directory(ctx)
