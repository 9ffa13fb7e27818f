"""Words only known at call time, spoken with espeak-ng: a ring group's name ("call for Sales"),
a caller's number, a parking slot ("seven zero one").

The fixed prompts are made at build time (services/media/prompts.py); these are synthesised the
first time they are needed (about 0.2 s of espeak-ng, off the call loop) and kept, so a group's
announcement costs that once.
"""
from __future__ import annotations

import asyncio
import functools
import logging

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=128)
def _speak(text: str) -> bytes:
    from services.media.prompts import synthesize
    return synthesize(text)


def digits(number: str) -> str:
    """'701' -> '7 0 1': espeak says each digit, as people read a phone number out."""
    return " ".join(number)


async def say(text: str) -> bytes:
    """8 kHz pcm16 of `text`; b'' when espeak-ng fails (the flow goes on without the words)."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(None, _speak, text)
    except (RuntimeError, OSError) as exc:
        log.warning("cannot speak %r: %s", text, exc)
        return b""


def prompt(svc, prompt_id: str) -> bytes:
    """A build-time prompt, b'' when it is missing (logged)."""
    if svc.prompts is None:
        return b""
    try:
        return svc.prompts(prompt_id)
    except (FileNotFoundError, ValueError) as exc:
        log.warning("prompt %s: %s", prompt_id, exc)
        return b""
