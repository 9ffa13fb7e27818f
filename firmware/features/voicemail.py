"""Voicemail: mailboxes, the voicemail plan steps, *97 / *98, and the menu's pure decisions.

A mailbox is `Mailbox` in the config table "mailboxes", keyed by its number: an extension's
number (its own mailbox) or, for a shared group mailbox, a number of its own with `members`
(the extensions that may open it and whose message lamps show it).

Every extension has a mailbox, on by default, without any write: a missing record *is* the
default mailbox (MailboxCollection returns one for every extension that has no stored record,
so the store, the references check, backups and the dialplan's ConfigView all see it). The
first change (a PIN, an e-mail address, "off") stores it. Until the user sets a PIN the
mailbox's PIN is a generated 6-digit one, derived from the extension's SIP secret (HMAC), so
it is stable without a write and shown to its owner on their web page; a PIN the user sets (by
phone or on the web) is kept only as a PBKDF2 hash.

An extension without a forward for busy / no answer / not registered / DND, whose mailbox is
on, sends such calls to voicemail (firmware/dialplan/extensions.py asks `extension_voicemail`),
as a real office PBX does; with the mailbox off the caller hears busy / unavailable as before.

The menu (services/callsvc/flows/voicemail.py) asks this module what a key means
(`menu_action`), which message comes next, what to say (`envelope_prompts`, `count_prompts`,
`say_number`) and whether a PIN is right or acceptable. Nothing here does I/O.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field
from datetime import datetime

from tinydb import where

from firmware.config.collection import Collection
from firmware.config.destination import EXTENSION_NUMBER_RE, DestinationKind, register_kind
from firmware.config.errors import ValidationError, ValidationErrors
from firmware.config.records import RecordKind, Ref, register_records
from firmware.dialplan.feature_codes import CodeDef, register_code
from firmware.dialplan.plan import NOTHING_NEXT, Next, Reject
from firmware.dialplan.router import DESTINATION_HANDLERS

TABLE = "mailboxes"
EMAIL_MODES = ("none", "attach", "link")
GREETINGS = ("unavailable", "busy", "name")
PIN_MIN, PIN_MAX = 4, 10
PIN_ITERATIONS = 100_000          # PBKDF2-SHA256; ~50 ms on the appliance, per PIN check
MAX_MESSAGES_LIMIT = 1000
DEFAULT_MAX_MESSAGES = 100
DEFAULT_MAX_SECONDS = 180         # per message
PIN_TRIES = 3                     # wrong PINs before the menu hangs up
_EMAIL_RE = re.compile(r"[^@\s]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}")
_PIN_RE = re.compile(r"[0-9]{%d,%d}" % (PIN_MIN, PIN_MAX))


def _tuple(value) -> tuple:
    if isinstance(value, str):
        return tuple(p.strip() for p in re.split(r"[\s,]+", value) if p.strip())
    return tuple(str(v) for v in (value or ()))


@dataclass(frozen=True)
class Mailbox:
    number: str                        # the extension's number, or the group mailbox's own number
    name: str = ""                     # shown on the web page ("Sales"); an extension's mailbox: its name
    enabled: bool = True
    group: bool = False                # a shared group mailbox (its number is not an extension)
    members: tuple = ()                # group: extensions that may open it and see its lamp
    generated_pin: str = ""            # 6 digits until the user sets a PIN; "" afterwards
    pin_hash: str = ""                 # "pbkdf2_sha256$iterations$salt$hash" once the user set one
    email: str = ""
    email_mode: str = "none"           # none | attach (the WAV) | link (signed, expiring, web UI)
    delete_after_email: bool = False   # delete the message once the e-mail was sent
    max_messages: int = DEFAULT_MAX_MESSAGES
    max_message_seconds: int = DEFAULT_MAX_SECONDS

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", _tuple(self.members))

    @property
    def pin_is_set(self) -> bool:
        return bool(self.pin_hash)

    def validate(self) -> None:
        errors = []
        if not isinstance(self.number, str) or not EXTENSION_NUMBER_RE.fullmatch(self.number):
            errors.append(ValidationError("number", f"{self.number!r} is not a mailbox number: 2-6 digits "
                                                    "starting with 1-9, e.g. 1000 or 8000"))
        if not isinstance(self.name, str) or len(self.name) > 40:
            errors.append(ValidationError("name", "must be at most 40 characters"))
        if self.group and not (self.name or "").strip():
            errors.append(ValidationError("name", "a group mailbox needs a name, e.g. 'Sales'"))
        for n in self.members:
            if not EXTENSION_NUMBER_RE.fullmatch(n):
                errors.append(ValidationError("members", f"{n!r} is not an extension number"))
        if self.members and not self.group:
            errors.append(ValidationError("members", "only a group mailbox has members; an extension's "
                                                     "mailbox belongs to its extension"))
        if self.generated_pin and not re.fullmatch(r"[0-9]{6}", self.generated_pin):
            errors.append(ValidationError("generated_pin", "must be 6 digits"))
        if self.pin_hash and not self.pin_hash.startswith("pbkdf2_sha256$"):
            errors.append(ValidationError("pin_hash", "is not a PIN hash: set the PIN with set_pin()"))
        if not self.generated_pin and not self.pin_hash:
            errors.append(ValidationError("pin", "the mailbox has no PIN: set one of 4-10 digits"))
        if self.email_mode not in EMAIL_MODES:
            errors.append(ValidationError("email_mode", f"{self.email_mode!r}: use one of {', '.join(EMAIL_MODES)}"))
        if self.email and not _EMAIL_RE.fullmatch(self.email):
            errors.append(ValidationError("email", f"{self.email!r} is not an e-mail address, e.g. anna@example.com"))
        if self.email_mode != "none" and not self.email:
            errors.append(ValidationError("email", f"e-mail mode '{self.email_mode}' needs an e-mail address"))
        if self.delete_after_email and self.email_mode == "none":
            errors.append(ValidationError("delete_after_email", "needs an e-mail mode (attach or link): "
                                                                "otherwise the message would never be kept"))
        if self.delete_after_email and self.email_mode == "link":
            errors.append(ValidationError("delete_after_email", "a link points at the message: it cannot be "
                                                                "deleted after sending; use 'attach'"))
        if not isinstance(self.max_messages, int) or not 1 <= self.max_messages <= MAX_MESSAGES_LIMIT:
            errors.append(ValidationError("max_messages", f"must be 1-{MAX_MESSAGES_LIMIT}"))
        if not isinstance(self.max_message_seconds, int) or not 10 <= self.max_message_seconds <= 600:
            errors.append(ValidationError("max_message_seconds", "must be 10-600 seconds"))
        if errors:
            raise ValidationErrors(errors)


# --- PINs ------------------------------------------------------------------------------------------
def derived_pin(secret: str, number: str) -> str:
    """The generated PIN of an extension's mailbox before its user sets one: 6 digits from an
    HMAC of the extension's SIP secret (stable, unguessable without the secret, no write needed)."""
    digest = hmac.new(secret.encode(), f"voicemail-pin:{number}".encode(), hashlib.sha256).digest()
    return f"{int.from_bytes(digest[:8], 'big') % 1_000_000:06d}"


def pin_error(pin: str) -> str | None:
    """Why a new PIN is not acceptable, or None."""
    if not isinstance(pin, str) or not _PIN_RE.fullmatch(pin):
        return f"a PIN is {PIN_MIN}-{PIN_MAX} digits"
    if len(set(pin)) == 1:
        return "a PIN of one repeated digit is too easy to guess"
    if pin in "01234567890" or pin in "98765432109":
        return "a PIN of consecutive digits is too easy to guess"
    return None


def hash_pin(pin: str, salt: bytes | None = None, iterations: int = PIN_ITERATIONS) -> str:
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha256", pin.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${salt.hex()}${digest.hex()}"


def pin_matches(mailbox: Mailbox, entered: str) -> bool:
    """Is `entered` the mailbox's PIN (the user's own once set, else the generated one)?"""
    if mailbox.pin_hash:
        try:
            _, iterations, salt, digest = mailbox.pin_hash.split("$")
            got = hashlib.pbkdf2_hmac("sha256", entered.encode(), bytes.fromhex(salt), int(iterations))
        except ValueError:
            return False
        return hmac.compare_digest(got.hex(), digest)
    return bool(mailbox.generated_pin) and hmac.compare_digest(entered, mailbox.generated_pin)


def pin_changes(pin: str, salt: bytes | None = None) -> dict:
    """The update_record() changes that set a user's PIN (ValidationError when it is not acceptable)."""
    problem = pin_error(pin)
    if problem:
        raise ValidationError("pin", problem)
    return {"pin_hash": hash_pin(pin, salt), "generated_pin": ""}


# --- the collection: a mailbox for every extension -------------------------------------------------
def default_mailbox(ext_doc: dict) -> Mailbox:
    number = ext_doc["number"]
    return Mailbox(number, name=ext_doc.get("name", ""), generated_pin=derived_pin(ext_doc.get("secret", ""), number))


class MailboxCollection(Collection):
    """Stored mailboxes plus the default mailbox of every extension without a stored one.

    A stored extension mailbox whose extension was removed is ignored (and purged on the next
    mailbox write), so a re-used number does not inherit the previous owner's PIN and e-mail."""

    def _extensions(self, db) -> dict[str, dict]:
        return {d["number"]: d for d in db.table("extensions").all()}

    def all(self, db):
        exts = self._extensions(db)
        stored = [m for m in super().all(db) if m.group or m.number in exts]
        have = {m.number for m in stored}
        defaults = [default_mailbox(d) for n, d in exts.items() if n not in have]
        return sorted(stored + defaults, key=lambda m: (len(m.number), m.number))

    def _stored(self, db, key):
        return super().get(db, key)

    def get(self, db, key_value):
        stored = self._stored(db, key_value)
        ext = db.table("extensions").get(where("number") == key_value)
        if stored is not None and (stored.group or ext is not None):
            return stored
        return default_mailbox(ext) if ext is not None else None

    def _purge(self, db) -> None:
        exts = self._extensions(db)
        db.table(self.table).remove(lambda d: not d.get("group") and d.get("number") not in exts)

    def insert(self, db, record) -> None:
        is_extension = db.table("extensions").get(where("number") == record.number) is not None
        if record.group and is_extension:
            raise ValidationError("number", f"{record.number} is an extension (which has its own mailbox): "
                                            "give the group mailbox a number no extension uses")
        if not record.group and not is_extension:
            raise ValidationError("number", f"no extension {record.number}: a mailbox of its own number "
                                            "is a group mailbox (tick 'group mailbox')")
        self._purge(db)
        if self._stored(db, record.number) is not None:
            raise ValidationError("number", f"mailbox {record.number} already exists")
        db.table(self.table).insert(dataclasses.asdict(record))

    def replace(self, db, record) -> None:
        self.require(db, record.number)
        self._purge(db)
        if self._stored(db, record.number) is None:
            db.table(self.table).insert(dataclasses.asdict(record))   # the first change stores it
        else:
            Collection.replace(self, db, record)

    def remove(self, db, key_value) -> None:
        box = self.require(db, key_value)
        if not box.group:
            raise ValidationError("number", f"mailbox {key_value} is extension {key_value}'s own: switch it "
                                            "off instead of deleting it")
        Collection.remove(self, db, key_value)


def _references(box: Mailbox):
    return [Ref("members", "extensions", n) for n in box.members]


MAILBOXES = register_records(RecordKind(
    MailboxCollection(TABLE, Mailbox, key="number", noun="mailbox", sort_key=lambda n: (len(n), n)),
    references=_references))

register_kind(DestinationKind(
    "voicemail", "Voicemail", "1000",
    lambda t: None if EXTENSION_NUMBER_RE.fullmatch(t) else f"'{t}' is not a mailbox number",
    refers_to=TABLE, forwardable=True))


# --- plan steps --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Voicemail:
    """Answer and take a message for `mailbox`, greeting the caller with its `greeting`
    ("unavailable" or "busy")."""
    mailbox: str
    greeting: str = "unavailable"
    on: Next = field(default=NOTHING_NEXT, kw_only=True)

    def describe(self) -> str:
        return f"voicemail {self.mailbox} ({self.greeting} greeting)"


@dataclass(frozen=True)
class VoicemailMenu:
    """The mailbox menu for `caller` (an extension): `mailbox` "" asks which mailbox (*98)."""
    mailbox: str
    caller: str
    on: Next = field(default=NOTHING_NEXT, kw_only=True)

    def describe(self) -> str:
        return f"voicemail menu {self.mailbox or '(asks for the mailbox)'} for {self.caller}"


def plan_voicemail(number: str, ctx, greeting: str = "unavailable"):
    box = ctx.config.table(TABLE).get(number)
    if box is None or not box.enabled:
        return Reject(404, "not_found", f"no mailbox {number}, or it is switched off", prompt="not_found")
    return Voicemail(number, greeting)


def extension_voicemail(number: str, ctx, greeting: str):
    """The voicemail step for an unanswered call to extension `number`, or None when its mailbox
    is off (the dialplan then rejects the call as before)."""
    box = ctx.config.table(TABLE).get(number)
    if box is None or not box.enabled:
        return None
    return Voicemail(number, greeting)


DESTINATION_HANDLERS["voicemail"] = lambda dest, ctx: plan_voicemail(dest.target, ctx)


def _own_mailbox(parsed, ctx):
    me = ctx.caller.id
    box = ctx.config.table(TABLE).get(me)
    if box is None or not box.enabled:
        return Reject(404, "not_found", f"extension {me} has no mailbox switched on", prompt="not_found")
    return VoicemailMenu(me, me)


def _any_mailbox(parsed, ctx):
    return VoicemailMenu(parsed.argument, ctx.caller.id)


register_code(CodeDef("*97", "voicemail", "Listen to your voicemail", plan=_own_mailbox, group="Voicemail"))
register_code(CodeDef("*98", "voicemail", "Listen to a mailbox (asks for its number, or *98NUM)",
                      takes_number=True, number_optional=True, plan=_any_mailbox, group="Voicemail"))


# --- the menu's decisions ---------------------------------------------------------------------------
MAIN_MENU = {"1": "listen", "0": "options", "#": "exit", "*": "repeat"}
MESSAGE_MENU = {"1": "replay", "2": "call_back", "4": "previous", "5": "envelope", "6": "next",
                "7": "delete", "9": "save", "#": "main", "*": "help"}
OPTIONS_MENU = {"1": "record_unavailable", "2": "record_busy", "3": "record_name", "4": "change_pin",
                "*": "main", "#": "main"}
# during the greeting: * opens this mailbox's menu (PIN asked), # skips to the tone
GREETING_KEYS = {"*": "menu", "#": "skip"}


def menu_action(menu: dict[str, str], key: str | None) -> str:
    """What `key` does in `menu`: an action name, "timeout" for no key, "invalid" otherwise."""
    if not key:
        return "timeout"
    return menu.get(key, "invalid")


def listening_order(messages) -> list:
    """Messages in the order the menu plays them: new ones first, oldest first, then old ones, oldest
    first. Each message has `.status` ("new"/"old") and `.received` (a timestamp)."""
    new = sorted((m for m in messages if m.status == "new"), key=lambda m: (m.received, m.id))
    old = sorted((m for m in messages if m.status != "new"), key=lambda m: (m.received, m.id))
    return new + old


def next_index(action: str, index: int, count: int) -> int | None:
    """Which message plays after `action` on message `index` of `count`; None: no more messages.
    After a delete the list is one shorter, so the same index is the next message."""
    if action in ("replay", "envelope"):
        return index
    if action == "previous":
        return max(index - 1, 0)
    if action == "delete":
        return index if index < count - 1 else None
    if action in ("next", "save"):
        return index + 1 if index + 1 < count else None
    return index


def is_full(box: Mailbox, message_count: int) -> bool:
    return message_count >= box.max_messages


def callback_number(caller_number: str) -> str | None:
    """The number "call back" dials: digits (a leading + kept) of a caller that left its number."""
    return caller_number if re.fullmatch(r"\+?[0-9]{2,20}", caller_number or "") else None


def lamps_to_update(boxes, mailbox: str | None) -> list[str]:
    """The message-waiting lamps (resources a phone subscribes to) that show `mailbox`: its own
    number, and a group mailbox's members too (their lamps add the group's messages to their own).
    None: every lamp."""
    if mailbox is None:
        return sorted(boxes, key=lambda n: (len(n), n))
    box = boxes.get(mailbox)
    return [mailbox] + list(box.members) if box is not None and box.group else [mailbox]


def lamps_with_counts(boxes, counts: dict[str, tuple[int, int]],
                      lamps: list[str] | None = None) -> dict[str, tuple[int, int]]:
    """{lamp: (new, old)} for `lamps` (None: every mailbox's lamp, in lamps_to_update's order): an
    extension's own messages plus those of the group mailboxes it is a member of; a group
    mailbox's own lamp shows the group's messages. One walk over the mailboxes for all lamps:
    working each lamp out alone walked them all once per lamp, 2 million steps on a
    1,400-extension box, a 50 ms stall of the call loop every 3 s (issue 16)."""
    if lamps is None:
        lamps = lamps_to_update(boxes, None)
    out = {lamp: counts.get(lamp, (0, 0)) for lamp in lamps}
    for group in boxes.values():
        if not group.group:
            continue
        n, o = counts.get(group.number, (0, 0))
        if not (n or o):
            continue
        for member in set(group.members):
            box = boxes.get(member)
            if member in out and not (box is not None and box.group):
                new, old = out[member]
                out[member] = (new + n, old + o)
    return out


# --- what to say ------------------------------------------------------------------------------------
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
                "nineteen")
TENS_WORDS = {20: "twenty", 30: "thirty", 40: "forty", 50: "fifty", 60: "sixty", 70: "seventy", 80: "eighty",
              90: "ninety"}
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")


def number_prompts() -> dict[str, str]:
    """The prompt texts numbers and dates are built from (services/media/prompts.py adds them)."""
    texts = {f"n{i}": w for i, w in enumerate(NUMBER_WORDS)}
    texts.update({f"n{t}": w for t, w in TENS_WORDS.items()})
    texts["n_hundred"] = "hundred"
    texts.update({f"day_{d}": d.capitalize() for d in WEEKDAYS})
    texts.update({f"month_{i + 1}": m.capitalize() for i, m in enumerate(MONTHS)})
    return texts


def say_number(n: int) -> list[str]:
    """Prompt ids speaking 0-999: 42 -> ["n40", "n2"], 105 -> ["n1", "n_hundred", "n_and", "n5"]."""
    if not 0 <= n <= 999:
        raise ValueError(f"{n} cannot be spoken: 0-999 only")
    if n < 20:
        return [f"n{n}"]
    if n < 100:
        tens, rest = divmod(n, 10)
        return [f"n{tens * 10}"] + ([f"n{rest}"] if rest else [])
    hundreds, rest = divmod(n, 100)
    return [f"n{hundreds}", "n_hundred"] + (["vm_and"] + say_number(rest) if rest else [])


def say_digits(number: str) -> list[str]:
    """A phone number digit by digit: "1000" -> ["n1", "n0", "n0", "n0"] ('+' and others skipped)."""
    return [f"n{d}" for d in number if d.isdigit()]


def say_time(hour: int, minute: int) -> list[str]:
    """24-hour clock, as said in Britain: 14:05 "fourteen oh five", 9:00 "nine o'clock"."""
    words = say_number(hour)
    if minute == 0:
        return words + ["vm_oclock"]
    if minute < 10:
        return words + ["vm_oh", f"n{minute}"]
    return words + say_number(minute)


def envelope_prompts(position: int, caller_number: str, received: datetime) -> list[str]:
    """ "Message 1, from 1 0 0 0, received Saturday 28 November at 14 35"."""
    caller = say_digits(caller_number) or ["vm_unknown_caller"]
    return (["vm_message"] + say_number(position) + ["vm_from"] + caller + ["vm_received",
            f"day_{WEEKDAYS[received.weekday()]}"] + say_number(received.day)
            + [f"month_{received.month}", "vm_at"] + say_time(received.hour, received.minute))


def count_prompts(new: int, old: int) -> list[str]:
    """ "You have 1 new message and 2 old messages" (or "You have no messages")."""
    if new == 0 and old == 0:
        return ["vm_no_messages"]
    said = ["vm_you_have"]
    if new:
        said += say_number(min(new, 999)) + ["vm_new_message" if new == 1 else "vm_new_messages"]
    if new and old:
        said.append("vm_and")
    if old:
        said += say_number(min(old, 999)) + ["vm_old_message" if old == 1 else "vm_old_messages"]
    return said


def greeting_prompts(box: Mailbox, kind: str, has_name_recording: bool) -> list[str]:
    """The spoken default greeting when no recorded one exists. "name" stands for the recorded
    name; without one the mailbox number is said digit by digit."""
    if box.group:    # nobody in particular is busy: "you have reached mailbox 8 0 0 0 (Sales)"
        return ["vm_greeting_mailbox"] + (["name"] if has_name_recording else say_digits(box.number)) \
            + ["vm_leave_message"]
    who = ["name"] if has_name_recording else ["vm_greeting_extension"] + say_digits(box.number)
    return who + ["vm_greeting_busy" if kind == "busy" else "vm_greeting_unavailable"]


# --- e-mail -----------------------------------------------------------------------------------------
def email_subject(box: Mailbox, caller_number: str, caller_name: str, duration_s: float) -> str:
    who = f"{caller_name} ({caller_number})" if caller_name and caller_number else caller_number or caller_name \
        or "an unknown caller"
    return f"New voicemail for {box.number} from {who} ({round(duration_s)} s)"


def email_text(box: Mailbox, caller_number: str, caller_name: str, received: datetime, duration_s: float,
               link: str = "", link_hours: int = 0) -> str:
    who = caller_name and f"{caller_name} <{caller_number or 'unknown number'}>" or caller_number or "unknown"
    lines = [f"Mailbox: {box.number}" + (f" ({box.name})" if box.name else ""),
             f"From: {who}",
             f"Received: {received:%A %d %B %Y %H:%M}",
             f"Length: {round(duration_s)} seconds", ""]
    if link:
        lines += [f"Listen: {link}", f"(the link works for {link_hours} hours)"]
    else:
        lines.append("The message is attached as a WAV file.")
    lines += ["", "Dial *97 from your phone to hear your messages."]
    return "\n".join(lines) + "\n"
