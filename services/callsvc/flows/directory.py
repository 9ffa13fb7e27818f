"""The dial-by-name directory on a call.

    answer -> "enter the first three letters of the name" -> 3 keys
           -> "press 1 for <Alice Smith>, press 2 for <Alicia Jones>" -> a key -> ring that extension
           -> nobody matches / a wrong key: try again (3 tries), then goodbye

Who matches is firmware's decision (firmware/features/directory.py directory_matches). A name is
the one the person recorded for their mailbox when there is one, else the extension's name spoken
by TTS (made once, kept in DATA/prompts/names/).
"""
from __future__ import annotations

import asyncio
import logging

from firmware.features.directory import LETTERS, Directory, directory_matches
from services.media import prompt_files

from ..channel import Channel
from ..media import Player
from .ivr import answer, flush_digits, go, goodbye
from .plan import runs
from .speech import prompt, say

log = logging.getLogger(__name__)

TRIES = 3
FIRST_KEY_S = 8.0
NEXT_KEY_S = 4.0
CHOICE_S = 6.0


async def _listing(svc, matches) -> bytes:
    loop = asyncio.get_running_loop()
    pcm = b""
    for i, (number, name) in enumerate(matches, 1):
        try:
            spoken = await loop.run_in_executor(None, prompt_files.spoken_name, svc.store.data_dir, number, name)
        except (RuntimeError, OSError, ValueError) as exc:
            log.warning("directory: cannot speak the name of %s: %s", number, exc)
            spoken = await say(f"extension {' '.join(number)}")
        pcm += await say(f"Press {i} for") + spoken
    return pcm


@runs(Directory)
async def run_directory(svc, caller: Channel, step: Directory):
    session = caller.session
    answer(caller)
    caller.log("directory", names=len(step.entries))
    for attempt in range(1, TRIES + 1):
        if caller.is_gone:
            return None
        flush_digits(caller)
        first = await caller.play(Player(pcm=prompt(svc, "directory_intro")), stop_on_digits="0123456789*#")
        keys = (first or "") + await caller.collect(LETTERS - bool(first), timeout=FIRST_KEY_S,
                                                    inter_digit=NEXT_KEY_S, terminator="#")
        if caller.is_gone:
            return None
        matches = directory_matches(step.entries, keys)
        log.info("call %d: directory try %d: keys %r match %s", session.n, attempt, keys,
                 ", ".join(f"{n} {name}" for n, name in matches) or "nobody")
        if not matches:
            await caller.play(Player(pcm=prompt(svc, "directory_no_match")))
            continue
        listing = await _listing(svc, matches)
        choice = await caller.play(Player(pcm=listing), stop_on_digits="123456789")
        if choice is None and not caller.is_gone:
            choice = (await caller.collect(1, timeout=CHOICE_S, terminator=""))[:1]
        if choice and choice.isdigit() and 1 <= int(choice) <= len(matches):
            number, name = matches[int(choice) - 1]
            log.info("call %d: directory: %s chosen, ringing %s", session.n, name, number)
            caller.log("directory_choice", keys=keys, extension=number)
            return go(svc, caller, f"extension:{number}")
        if not caller.is_gone:
            await caller.play(Player(pcm=prompt(svc, "ivr_invalid")))
    await goodbye(svc, caller, "en-GB")
    return None
