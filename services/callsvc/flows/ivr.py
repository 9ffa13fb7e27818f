"""IVR menus on a call: answer, play the menu while listening for keys, go where the key says.

    answer -> prompt (a key stops it) -> [direct dial: the rest of the extension's number]
           -> key's destination | "not a valid option" / "did not hear your choice" + prompt again
           -> after the last try: the menu's invalid / timeout destination, or goodbye

What a key means is firmware's decision (firmware/features/ivr.py ivr_choice); the flow returns
the destination's plan (svc.plan_for) and the plan runner carries on with it, so a key leading to
another menu, a ring group or a mailbox needs nothing here. The caller, already answered, hears
ringback while an extension or ring group rings.

Also *95<menu>: record the menu's prompt by phone (after the tone, # to end).
"""
from __future__ import annotations

import asyncio
import logging
import os
import tempfile

import numpy as np

from firmware.dialplan import Ring
from firmware.dsp.tones import ToneGenerator, tone
from firmware.features import ivr as model
from firmware.features.ivr import Ivr, RecordIvrPrompt, ivr_choice, wants_more_digits
from services.media import prompt_files
from services.media.prompts import synthesize
from services.media.wavfile import RATE, read_wav

from ..channel import Channel
from ..media import Player
from .plan import runs
from .speech import prompt

log = logging.getLogger(__name__)

INTER_DIGIT = 2.5         # direct dialling: the next digit of an extension number within this time
RECORD_MAX_S = 180
MIN_RECORDING_S = 0.5


def answer(caller: Channel) -> None:
    session = caller.session
    caller.answer()
    if session.state != "answered":
        session.state = "answered"
        session.answer = caller.answered_at


def flush_digits(caller: Channel) -> None:
    while not caller.digits.empty():
        caller.digits.get_nowait()


async def phrase(svc, prompt_id: str, language: str) -> bytes:
    """A system prompt from the menu's language set (services/media/prompt_files.py): the
    administrator's replacement, else the box's own, spoken in that language's voice."""
    if language == prompt_files.DEFAULT_LANGUAGE:
        return prompt(svc, prompt_id)
    try:
        return await asyncio.get_running_loop().run_in_executor(
            None, prompt_files.language_prompt, svc.store.data_dir, prompt_id, language)
    except (RuntimeError, OSError, ValueError) as exc:
        log.warning("prompt %s in %s unusable: %s", prompt_id, language, exc)
        return prompt(svc, prompt_id)


def _load_menu_prompt(data_dir, menu) -> bytes:
    path = prompt_files.menu_prompt_path(data_dir, menu)
    if menu.prompt_kind == "tts" and not path.is_file() and menu.prompt_text.strip():
        path = prompt_files.generate_menu_tts(data_dir, menu)
    if path.is_file():
        return prompt_files.read_cached(path)
    if menu.prompt_text.strip():       # an upload or recording that is not there: say the text
        log.warning("IVR menu %s: %s is missing: speaking the menu's text instead", menu.number, path)
        return synthesize(menu.prompt_text, voice=menu.voice)
    log.warning("IVR menu %s has no prompt (%s is missing): waiting for keys in silence", menu.number, path)
    return b""


async def menu_prompt(svc, menu) -> bytes:
    try:
        return await asyncio.get_running_loop().run_in_executor(None, _load_menu_prompt, svc.store.data_dir, menu)
    except (RuntimeError, OSError, ValueError) as exc:
        log.warning("IVR menu %s: prompt unusable: %s", menu.number, exc)
        return b""


def go(svc, caller: Channel, destination: str):
    """The plan of `destination`; the answered caller hears ringback while a phone rings."""
    plan = svc.plan_for(caller.session, destination)
    rings = isinstance(plan, Ring) or getattr(getattr(plan, "group", None), "waiting", "") == "ringback"
    if rings and caller.rtp is not None and not caller.is_gone:
        svc.media.play(caller.rtp, Player(tone=ToneGenerator(tone(svc.settings.country, "ringback"))))
    return plan


async def goodbye(svc, caller: Channel, language: str) -> None:
    if not caller.is_gone:
        await caller.play(Player(pcm=await phrase(svc, "ivr_goodbye", language)))
    if not caller.is_gone:
        await caller.hangup("ivr done")


@runs(Ivr)
async def run_menu(svc, caller: Channel, step: Ivr):
    menu = step.menu
    session = caller.session
    answer(caller)
    caller.log("ivr", menu=menu.number)
    flush_digits(caller)          # keys pressed before the menu began are not meant for it
    pcm = await menu_prompt(svc, menu)
    keys = model.KEYS
    attempt = 1
    pending = None                # a key pressed over "that is not a valid option" counts
    while not caller.is_gone:
        digit, pending = pending, None
        if digit is None and pcm:
            digit = await caller.play(Player(pcm=pcm), stop_on_digits=keys)
        if digit is None and not caller.is_gone:
            digit = (await caller.collect(1, timeout=menu.timeout, terminator=""))[:1]
        digits = digit or ""
        while wants_more_digits(menu, digits, step.extensions) and not caller.is_gone:
            more = await caller.collect(1, timeout=INTER_DIGIT, terminator="#")
            if not more:
                break
            digits += more
        if caller.is_gone:
            return None
        verdict, what = ivr_choice(menu, digits, attempt, step.extensions)
        log.info("call %d: IVR %s try %d: keys %r -> %s %s", session.n, menu.number, attempt, digits or "none",
                 verdict, what or "(hang up)")
        caller.log("ivr_choice", menu=menu.number, digits=digits, verdict=verdict, destination=what)
        if verdict == "goto":
            return go(svc, caller, what)
        if verdict == "fail":
            if what:
                return go(svc, caller, what)
            await goodbye(svc, caller, menu.language)
            return None
        pending = await caller.play(Player(pcm=await phrase(svc, f"ivr_{what}", menu.language)), stop_on_digits=keys)
        attempt += 1
    return None


def _beep() -> bytes:
    t = np.arange(int(0.35 * RATE)) / RATE
    return (np.sin(2 * np.pi * 1000 * t) * 8000).astype("<i2").tobytes()


def _save_recording(store, data_dir, menu_number: str, tmp: str) -> float:
    """Keep a recorded prompt as the menu's (enough audio), switch the menu to it; its length."""
    seconds = len(read_wav(tmp)) / 2 / RATE
    if seconds < MIN_RECORDING_S:
        return seconds
    dst = prompt_files.ivr_dir(data_dir, menu_number) / "recorded.wav"
    os.chmod(tmp, 0o644)
    os.replace(tmp, dst)
    store.update_record(model.TABLE, menu_number, prompt_kind="recorded")
    return seconds


@runs(RecordIvrPrompt)
async def run_record(svc, caller: Channel, step: RecordIvrPrompt):
    session = caller.session
    answer(caller)
    data_dir = svc.store.data_dir
    folder = prompt_files.ivr_dir(data_dir, step.menu)
    folder.mkdir(parents=True, exist_ok=True)
    await caller.play(Player(pcm=prompt(svc, "ivr_record_prompt") + _beep()))
    fd, tmp = tempfile.mkstemp(prefix=".recording-", suffix=".wav", dir=folder)
    os.close(fd)
    try:
        log.info("call %d: %s records the prompt of IVR menu %s (# ends it)", session.n, step.extension, step.menu)
        await caller.record(tmp, max_s=RECORD_MAX_S, stop_on_digits="#")
        loop = asyncio.get_running_loop()
        seconds = await loop.run_in_executor(None, _save_recording, svc.store, data_dir, step.menu, tmp)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    if seconds < MIN_RECORDING_S:
        log.info("call %d: %s recorded only %.1f s for IVR menu %s: not kept", session.n, step.extension,
                 seconds, step.menu)
        if not caller.is_gone:
            await caller.hangup("nothing recorded")
        return None
    svc.refresh_config()
    log.info("call %d: %s recorded the prompt of IVR menu %s (%.1f s)", session.n, step.extension, step.menu, seconds)
    caller.log("feature", code=f"{model.RECORD_CODE}{step.menu}", action="ivr_record", argument=step.menu)
    if not caller.is_gone:
        await caller.play(Player(pcm=prompt(svc, "ivr_prompt_saved")))
    if not caller.is_gone:
        await caller.hangup("feature done")
    return None
