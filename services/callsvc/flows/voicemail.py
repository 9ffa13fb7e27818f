"""Voicemail in a call: leaving a message, and the mailbox menu (*97, *98, `*` in a greeting).

    deposit:  answer; the mailbox's greeting (recorded, uploaded, or spoken: "the person at
              extension 1 0 0 0 is not available..."), `*` opens the mailbox menu, `#` skips to
              the tone; a beep; record until `#`, silence or the mailbox's limit; saved as a WAV
              with its index row (services/voicemail.py); the lamps and the e-mail follow.
    menu:     which mailbox (*98), the PIN (3 tries), "you have 1 new message"; 1 listen (new first,
              each with its envelope: number, caller, day, date and time), then 1 replay, 2 call
              back, 4 previous, 5 envelope, 6 next, 7 delete, 9 save, # main menu; 0 options:
              record the unavailable / busy greeting or the name, change the PIN.

What each key means and what is said is decided in firmware/features/voicemail.py; this module
only plays, collects and records (the channel primitives) and writes (the message store, the
config store off the call loop). Message-waiting lamps: svc.presence.publish_mwi for every phone
that shows the mailbox (its extension, or a group mailbox's members), after each deposit, listen
and delete, and for every mailbox when the service starts. E-mail: services/mailer's outbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from firmware.cdr import Disposition
from firmware.config.errors import ValidationError, ValidationErrors
from firmware.dialplan import route_call
from firmware.features import voicemail as vm
from firmware.features.voicemail import Voicemail, VoicemailMenu
from services.media.wavfile import RATE, read_wav, write_wav
from services.voicemail import VoicemailStore, link_base, sign_link, LINK_HOURS

from .. import hooks
from ..channel import Channel
from ..media import Player
from . import announce
from .plan import runs

log = logging.getLogger(__name__)

SILENCE_S = 5.0            # quiet after speech ends a message (the caller just stopped talking)
MIN_MESSAGE_S = 1.0        # shorter than this (a hang-up at the tone) is not a message
MIN_GREETING_S = 0.5
KEY_TIMEOUT_S = 8.0
PIN_TIMEOUT_S = 10.0
HOUSEKEEPING_S = 3.0       # how often delete-after-e-mail and the web UI's changes are looked at
_ALL_KEYS = "0123456789*#"


def _beep() -> bytes:
    t = np.arange(int(0.4 * RATE)) / RATE
    return (np.sin(2 * np.pi * 1000 * t) * 0.3 * 32767).astype("<i2").tobytes()


BEEP = _beep()


def _store(svc) -> VoicemailStore:
    store = getattr(svc, "_voicemail_store", None)
    if store is None:
        store = svc._voicemail_store = VoicemailStore(svc.store.data_dir)
    return store


def _mailbox(svc, number: str):
    svc.refresh_config()
    return svc.view.table(vm.TABLE).get(number)


async def _off_loop(fn, *args):
    """Disk and config writes (fsync) run in a worker thread, never on the call loop."""
    return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args))


# --- what the caller hears ---------------------------------------------------------------------------
_GAP = b"\x00\x00" * int(0.12 * RATE)


def _trimmed(pcm: bytes) -> bytes:
    """A prompt without its lead-in and tail silence, so words joined into a sentence ("one zero
    zero zero") follow each other as speech does."""
    x = np.frombuffer(pcm, "<i2")
    loud = np.flatnonzero(np.abs(x) > 200)
    if loud.size == 0:
        return pcm
    margin = int(0.03 * RATE)
    return x[max(loud[0] - margin, 0):loud[-1] + margin].tobytes()


def _pcm(svc, parts) -> bytes:
    """Prompt ids and WAV paths, one after another, as one piece of audio."""
    out = [b"\x00\x00" * int(0.2 * RATE)]
    for part in parts:
        if isinstance(part, Path):
            out.append(read_wav(part))
        elif svc.prompts is not None:
            out.append(_trimmed(svc.prompts(part)) + _GAP)
    return b"".join(out)


async def _say(svc, caller: Channel, parts, stop: str = "") -> str | None:
    """Play prompts (and files); returns the key that interrupted them, if any."""
    pcm = _pcm(svc, parts)
    if not pcm or caller.is_gone:
        return None
    return await caller.play(Player(pcm=pcm), stop_on_digits=stop)


async def _next_key(caller: Channel, timeout: float = KEY_TIMEOUT_S) -> str | None:
    try:
        return await asyncio.wait_for(caller.digits.get(), timeout)
    except asyncio.TimeoutError:
        return None


async def _ask(svc, caller: Channel, parts, keys: str = _ALL_KEYS, timeout: float = KEY_TIMEOUT_S) -> str | None:
    """Say `parts` (a key interrupts them) and wait for one key."""
    key = await _say(svc, caller, parts, stop=keys)
    return key if key is not None else await _next_key(caller, timeout)


async def _collect(svc, caller: Channel, prompt: str, max_digits: int) -> str:
    """A number ended by # (or a pause): the prompt stops at the first key, which counts."""
    first = await _say(svc, caller, [prompt], stop=_ALL_KEYS)
    if first == "#":
        return ""
    got = first or ""
    rest = await caller.collect(max_digits - len(got), timeout=PIN_TIMEOUT_S if not got else 4.0,
                                inter_digit=4.0, terminator="#")
    return got + rest


async def _goodbye(svc, caller: Channel) -> None:
    await _say(svc, caller, ["vm_goodbye"])
    await caller.hangup("voicemail done")


def _answer(caller: Channel, what: str) -> None:
    session = caller.session
    caller.answer()
    if session.state != "answered":
        session.state = "answered"
        session.answer = caller.answered_at
        session.fail(Disposition.ANSWERED, what)


# --- lamps ---------------------------------------------------------------------------------------------
class _Lamps:
    """What the housekeeping last worked every lamp out from (config generation, counts), and how
    many single mailboxes' lamps were published since (a deposit, a message heard or deleted by
    phone)."""
    def __init__(self):
        self.worked_from = None
        self.changes = 0


def _lamps(svc) -> _Lamps:
    lamps = getattr(svc, "_voicemail_lamps", None)
    if lamps is None:
        lamps = svc._voicemail_lamps = _Lamps()
    return lamps


def publish_lamps(svc, mailbox: str | None = None, counts: dict[str, tuple[int, int]] | None = None) -> None:
    """MWI for every phone that shows `mailbox` (None: every mailbox), from the stored counts
    (`counts`: all_counts() already read)."""
    presence = getattr(svc, "presence", None)
    if presence is None:
        return
    svc.refresh_config()
    boxes = svc.view.table(vm.TABLE)
    if counts is None:
        counts = _store(svc).all_counts()
    lamps = None
    if mailbox is not None:
        lamps = vm.lamps_to_update(boxes, mailbox)
        state = _lamps(svc)
        state.worked_from, state.changes = None, state.changes + 1
    for lamp, (new, old) in vm.lamps_with_counts(boxes, counts, lamps).items():
        presence.publish_mwi(lamp, new, old)


# --- leaving a message ---------------------------------------------------------------------------------
@runs(Voicemail)
async def deposit(svc, caller: Channel, step: Voicemail):
    box = _mailbox(svc, step.mailbox)
    session = caller.session
    if box is None or not box.enabled:
        await announce.fail(svc, caller, 404, Disposition.FAILED, f"404 no mailbox {step.mailbox}",
                            prompt="not_found")
        return None
    store = _store(svc)
    _answer(caller, f"voicemail {box.number}")
    caller.log("voicemail", mailbox=box.number, greeting=step.greeting)
    new, old = await _off_loop(store.counts, box.number)
    if vm.is_full(box, new + old):
        log.info("call %d: mailbox %s is full (%d messages)", session.n, box.number, new + old)
        await _say(svc, caller, ["vm_mailbox_full"])
        await caller.hangup("mailbox full")
        return None
    greeting = store.greeting(box.number, step.greeting)
    if greeting is not None:
        parts = [greeting]
    else:
        name = store.greeting(box.number, "name")
        parts = [name if p == "name" else p for p in vm.greeting_prompts(box, step.greeting, name is not None)]
    key = await _say(svc, caller, parts, stop="".join(vm.GREETING_KEYS))
    if vm.menu_action(vm.GREETING_KEYS, key) == "menu":
        return VoicemailMenu(box.number, session.who.id if session.who else "")
    if caller.is_gone:
        return None
    await caller.play(Player(pcm=BEEP))
    received = time.time()
    path = store.recording_path(box.number)
    log.info("call %d: recording a message for mailbox %s", session.n, box.number)
    ended_by = await caller.record(path, max_s=box.max_message_seconds, silence_s=SILENCE_S, stop_on_digits="#")
    if ended_by is None and not caller.is_gone:
        await _off_loop(_cut_silence, path, box.max_message_seconds)
    seconds = _seconds(path)
    if seconds < MIN_MESSAGE_S:
        path.unlink(missing_ok=True)
        log.info("call %d: no message for %s (%.1f s recorded)", session.n, box.number, seconds)
        if not caller.is_gone:
            await _goodbye(svc, caller)
        return None
    who = session.who
    number = who.number if who is not None else caller.number
    msg = await _off_loop(store.add, box.number, path, number, caller.name, received, seconds)
    ended = "#" if ended_by else "a hang-up" if caller.is_gone else "silence or the time limit"
    log.info("call %d: message %d for mailbox %s ended by %s", session.n, msg.id, box.number, ended)
    caller.log("voicemail_message", mailbox=box.number, id=msg.id, seconds=round(seconds, 1))
    publish_lamps(svc, box.number)
    try:
        await _off_loop(send_email, svc, box, msg)
    except Exception:  # the message is saved; a mail problem must not lose it or the call
        log.exception("voicemail %s: e-mail of message %d not queued", box.number, msg.id)
    if not caller.is_gone:
        await _say(svc, caller, ["vm_message_saved"])
        await caller.hangup("voicemail done")
    return None


def _cut_silence(path: Path, max_s: float) -> None:
    """A message ended by silence keeps SILENCE_S of it at its end: cut it (not one that ran to
    the time limit, which may end mid-word)."""
    try:
        pcm = read_wav(path)
    except (OSError, ValueError):
        return
    if len(pcm) / 2 / RATE < max_s - 0.5:
        keep = max(len(pcm) - int((SILENCE_S - 0.5) * RATE) * 2, 0)
        write_wav(path, pcm[:keep])


def _seconds(path: Path) -> float:
    try:
        return len(read_wav(path)) / 2 / RATE
    except (OSError, ValueError):
        return 0.0


# --- e-mail --------------------------------------------------------------------------------------------
def send_email(svc, box, msg) -> str | None:
    """Queue the message's e-mail as the mailbox asks (attachment or link); returns the outbox id."""
    if box.email_mode == "none" or not box.email:
        return None
    from services.mailer import outbox
    data_dir = svc.store.data_dir
    store = _store(svc)
    received = datetime.fromtimestamp(msg.received, svc.now().tzinfo)
    link, attachments = "", []
    if box.email_mode == "link":
        token = sign_link(data_dir, msg.mailbox, msg.id)
        link = f"{link_base(data_dir, svc.sip_addr)}voicemail/listen/{token}"
    else:
        attachments = [(f"voicemail-{msg.mailbox}-{msg.id}.wav", store.file_of(msg), "audio/wav")]
    mail_id = outbox.enqueue(data_dir, to=box.email,
                             subject=vm.email_subject(box, msg.caller_number, msg.caller_name, msg.duration),
                             text=vm.email_text(box, msg.caller_number, msg.caller_name, received, msg.duration,
                                                link=link, link_hours=LINK_HOURS),
                             attachments=attachments, ref=f"voicemail:{msg.mailbox}/{msg.id}")
    store.set_email(msg.id, mail_id)
    return mail_id


def delete_sent(svc) -> list[str]:
    """Delete the messages of delete-after-e-mail mailboxes whose e-mail was sent; returns the
    mailboxes that changed."""
    from services.mailer import outbox
    store = _store(svc)
    boxes = svc.view.table(vm.TABLE)
    changed = []
    for msg in store.with_email():
        box = boxes.get(msg.mailbox)
        if box is None or not box.delete_after_email:
            continue
        try:
            state = outbox.status(svc.store.data_dir, msg.email_id)["state"]
        except (KeyError, ValueError):
            continue
        if state == "sent" and store.delete(msg.mailbox, msg.id):
            log.info("voicemail %s: message %d deleted after its e-mail was sent", msg.mailbox, msg.id)
            changed.append(msg.mailbox)
    return changed


def _tidy_store(svc) -> dict[str, tuple[int, int]]:
    """delete_sent, then the counts of every mailbox (worker thread: both read SQLite)."""
    delete_sent(svc)
    return _store(svc).all_counts()


async def _housekeeping(svc) -> None:
    """Every few seconds: delete the messages whose e-mail was sent (delete-after-e-mail), and
    bring the lamps up to date with changes made elsewhere (the web UI marks and deletes
    messages). Every lamp is worked out again only when the counts or the config changed since
    the last time, or a mailbox's lamps were published meanwhile: on a 1,400-extension box that
    is a few milliseconds of the call loop, not worth spending every 3 s."""
    lamps = _lamps(svc)
    while True:
        await asyncio.sleep(HOUSEKEEPING_S)
        try:
            changes = lamps.changes
            counts = await _off_loop(_tidy_store, svc)
            if lamps.changes != changes:
                continue    # a lamp was published while the counts were read: they may be older
            svc.refresh_config()
            now = (svc.view.generation, counts)
            if now != lamps.worked_from:
                publish_lamps(svc, counts=counts)
                lamps.worked_from = now
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("voicemail: housekeeping failed")


# --- the mailbox menu ----------------------------------------------------------------------------------
@runs(VoicemailMenu)
async def menu(svc, caller: Channel, step: VoicemailMenu):
    _answer(caller, f"voicemail menu {step.mailbox or ''}".strip())
    number = step.mailbox
    if not number:
        number = await _collect(svc, caller, "vm_enter_mailbox", 6)
    box = _mailbox(svc, number) if number else None
    if box is None or not box.enabled:
        log.info("call %d: voicemail menu: no mailbox %r", caller.session.n, number)
        await _say(svc, caller, ["vm_no_mailbox"])
        await _goodbye(svc, caller)
        return None
    for _ in range(vm.PIN_TRIES):
        pin = await _collect(svc, caller, "vm_enter_pin", vm.PIN_MAX)
        if caller.is_gone:
            return None
        if pin and await _off_loop(vm.pin_matches, box, pin):
            break
        log.info("call %d: wrong PIN for mailbox %s", caller.session.n, box.number)
        await _say(svc, caller, ["vm_wrong_pin"])
    else:
        await _goodbye(svc, caller)
        return None
    log.info("call %d: mailbox %s opened by %s", caller.session.n, box.number, step.caller or caller.number)
    caller.log("voicemail_menu", mailbox=box.number)
    intro = True
    timeouts = 0
    while not caller.is_gone:
        new, old = await _off_loop(_store(svc).counts, box.number)
        parts = (vm.count_prompts(new, old) if intro else []) + ["vm_main_menu"]
        intro = False
        action = vm.menu_action(vm.MAIN_MENU, await _ask(svc, caller, parts))
        timeouts = timeouts + 1 if action == "timeout" else 0
        if action == "listen":
            plan = await listen(svc, caller, box.number)
            if plan is not None:
                return plan
        elif action == "options":
            box = await options(svc, caller, box.number) or box
        elif action == "exit" or timeouts >= 2:
            await _goodbye(svc, caller)
            return None
        elif action == "repeat":
            intro = True
        elif action == "invalid":
            await _say(svc, caller, ["vm_invalid"])
    return None


async def listen(svc, caller: Channel, mailbox: str):
    """Play the messages; returns a plan when the user calls a caller back."""
    store = _store(svc)
    messages = vm.listening_order(await _off_loop(store.messages, mailbox))
    if not messages:
        await _say(svc, caller, ["vm_no_messages"])
        return None
    tz = svc.now().tzinfo
    index: int | None = 0
    play_message = True
    while index is not None and not caller.is_gone:
        msg = messages[index]
        key = None
        if play_message:
            envelope = vm.envelope_prompts(index + 1, msg.caller_number, datetime.fromtimestamp(msg.received, tz))
            key = await _say(svc, caller, envelope + [store.file_of(msg)], stop=_ALL_KEYS)
            if msg.status == "new":
                await _off_loop(store.mark, mailbox, msg.id, "old")
                publish_lamps(svc, mailbox)
        if key is None:
            key = await _ask(svc, caller, ["vm_message_menu"])
        action = vm.menu_action(vm.MESSAGE_MENU, key)
        play_message = action in ("replay", "envelope", "previous", "next", "delete", "save")
        if action == "delete":
            await _off_loop(store.delete, mailbox, msg.id)
            publish_lamps(svc, mailbox)
            await _say(svc, caller, ["vm_deleted"])
            nxt = vm.next_index("delete", index, len(messages))
            messages.pop(index)
            index = nxt
        elif action == "save":
            await _say(svc, caller, ["vm_saved"])
            index = vm.next_index("save", index, len(messages))
        elif action in ("replay", "next", "previous", "envelope"):
            if action == "previous" and index == 0:
                await _say(svc, caller, ["vm_first"])
            index = vm.next_index(action, index, len(messages))
        elif action == "call_back":
            number = vm.callback_number(msg.caller_number)
            who = caller.session.who
            if number is None or who is None or who.kind != "extension":   # only a phone of ours dials out
                await _say(svc, caller, ["vm_invalid"])
                continue
            log.info("call %d: calling back %s from mailbox %s", caller.session.n, number, mailbox)
            return route_call(number, caller.session.who, svc.view, now=svc.now())
        elif action in ("main", "timeout"):
            return None
        else:  # help, invalid
            if action == "invalid":
                await _say(svc, caller, ["vm_invalid"])
        if index is None:
            await _say(svc, caller, ["vm_no_more"])
    return None


async def options(svc, caller: Channel, mailbox: str):
    """Greetings and PIN; returns the mailbox as changed (or None)."""
    changed = None
    while not caller.is_gone:
        action = vm.menu_action(vm.OPTIONS_MENU, await _ask(svc, caller, ["vm_options_menu"]))
        if action.startswith("record_"):
            await record_greeting(svc, caller, mailbox, action[len("record_"):])
        elif action == "change_pin":
            changed = await change_pin(svc, caller, mailbox) or changed
        elif action in ("main", "timeout"):
            return changed
        else:
            await _say(svc, caller, ["vm_invalid"])
    return changed


async def record_greeting(svc, caller: Channel, mailbox: str, kind: str) -> None:
    store = _store(svc)
    await _say(svc, caller, ["vm_record_after_tone"])
    await caller.play(Player(pcm=BEEP))
    path = store.recording_path(mailbox)
    log.info("call %d: recording the %s greeting of mailbox %s", caller.session.n, kind, mailbox)
    await caller.record(path, max_s=60, silence_s=SILENCE_S, stop_on_digits="#")
    if _seconds(path) < MIN_GREETING_S:
        path.unlink(missing_ok=True)
        await _say(svc, caller, ["vm_invalid"])
        return
    path.replace(store.greeting_path(mailbox, kind))
    log.info("voicemail %s: %s greeting recorded by phone", mailbox, kind)
    await _say(svc, caller, ["vm_greeting_saved"])


async def change_pin(svc, caller: Channel, mailbox: str):
    pin = await _collect(svc, caller, "vm_new_pin", vm.PIN_MAX)
    again = await _collect(svc, caller, "vm_new_pin_again", vm.PIN_MAX)
    if pin != again or vm.pin_error(pin):
        await _say(svc, caller, ["vm_pin_not_changed"])
        return None
    try:
        box = await _off_loop(lambda: svc.store.update_record(vm.TABLE, mailbox, **vm.pin_changes(pin)))
    except (ValidationError, ValidationErrors) as exc:
        log.info("voicemail %s: PIN not changed: %s", mailbox, exc)
        await _say(svc, caller, ["vm_pin_not_changed"])
        return None
    svc.refresh_config()
    log.info("voicemail %s: PIN changed by phone", mailbox)
    await _say(svc, caller, ["vm_pin_changed"])
    return box


# --- the service's start -------------------------------------------------------------------------------
def _on_start(svc) -> None:
    counts = _store(svc).all_counts()
    publish_lamps(svc, counts=counts)
    _lamps(svc).worked_from = (svc.view.generation, counts)
    svc.spawn(_housekeeping(svc))


hooks.ON_START.append(_on_start)
