"""IVR menus: "press 1 for sales, 2 to leave a message, or dial the extension you know".

A menu has a number of its own (dialled from an extension like a ring group, or the destination
"ivr:500" of an inbound route, a time condition, another menu's key...), a prompt, and a
destination for each key 0-9 * # it offers. The prompt is

- text spoken by the box's TTS (espeak-ng) in the menu's language voice (en-GB or en-US),
  synthesised when the menu is saved (the web UI) or on the first call;
- an uploaded file (converted to 8 kHz mono), or
- recorded by phone: *95 + the menu number, speak after the tone, # to end.

The caller may press a key while the prompt plays. With `direct_dial` on, digits that begin an
extension's number wait for the rest (inter-digit time-out) and ring that extension. No key
within `timeout` seconds, or a key the menu does not offer, repeats the prompt (after "that is not
a valid option" / "sorry, I did not hear your choice") up to `retries` times; then the call goes to
`timeout_destination` / `invalid_destination` ("" = goodbye and hang up). A key may lead to another
menu ("ivr:501"): nested menus.

Pure: ivr_choice() decides what a collected string of digits means on a given attempt, and
wants_more_digits() whether direct dialling should wait for another digit.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from firmware.config.destination import (EXTENSION_NUMBER_RE, DestinationKind, destination_errors,
                                         register_kind)
from firmware.config.errors import ValidationError, ValidationErrors
from firmware.config.records import Collection, RecordKind, destination_refs, register_records
from firmware.dialplan.feature_codes import CodeDef, register_code
from firmware.dialplan.plan import NOTHING_NEXT, Next, Reject
from firmware.dialplan.router import DESTINATION_HANDLERS, NUMBER_HANDLERS

TABLE = "ivr_menus"
KEYS = "123456789*0#"                          # in keypad order
PROMPT_KINDS = {"tts": "Text to speech", "upload": "Uploaded file", "recorded": "Recorded by phone"}
LANGUAGES = {"en-GB": "en-gb", "en-US": "en-us"}   # menu language -> espeak-ng voice
RECORD_CODE = "*95"
TIMEOUT = (1, 30)
RETRIES = (0, 5)
MAX_TEXT = 600
MAX_DIRECT_DIGITS = 6


def _options(value) -> dict:
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items() if v}
    return {str(k): str(v) for k, v in (value or ()) if v}


@dataclass(frozen=True)
class IvrMenu:
    number: str                        # dialled like an extension; the destination "ivr:500"
    name: str                          # "Main menu"
    prompt_kind: str = "tts"           # tts | upload | recorded
    prompt_text: str = ""              # what TTS says (and the menu's description otherwise)
    language: str = "en-GB"
    options: dict = field(default_factory=dict)   # key -> destination ("1" -> "ring_group:600")
    direct_dial: bool = False          # digits beginning an extension number ring that extension
    timeout: int = 5                   # seconds to wait for a key after the prompt
    retries: int = 2                   # times the prompt is repeated after silence or a wrong key
    invalid_destination: str = ""      # after too many wrong keys ("" = goodbye, hang up)
    timeout_destination: str = ""      # after too many silences ("" = goodbye, hang up)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", _options(self.options))

    @property
    def voice(self) -> str:
        return LANGUAGES.get(self.language, "en-gb")

    def tts_key(self) -> str:
        """Names the synthesised prompt file: changes when the words or the voice change."""
        return hashlib.sha256(f"{self.voice}\n{self.prompt_text}".encode()).hexdigest()[:16]

    def validate(self) -> None:
        errors = []
        if not isinstance(self.number, str) or not EXTENSION_NUMBER_RE.fullmatch(self.number):
            errors.append(ValidationError("number", f"{self.number!r} is not a menu number: 2-6 digits "
                                                    "starting with 1-9, e.g. 500"))
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name) > 40 \
                or not self.name.isprintable():
            errors.append(ValidationError("name", "must be 1-40 printable characters, e.g. 'Main menu'"))
        if self.prompt_kind not in PROMPT_KINDS:
            errors.append(ValidationError("prompt_kind", f"{self.prompt_kind!r}: use one of "
                                                         f"{', '.join(PROMPT_KINDS)}"))
        if not isinstance(self.prompt_text, str) or len(self.prompt_text) > MAX_TEXT:
            errors.append(ValidationError("prompt_text", f"at most {MAX_TEXT} characters"))
        elif self.prompt_kind == "tts" and not self.prompt_text.strip():
            errors.append(ValidationError("prompt_text", "type what the menu says, e.g. 'For sales press 1, "
                                                         "to leave a message press 2'"))
        if self.language not in LANGUAGES:
            errors.append(ValidationError("language", f"{self.language!r}: use {' or '.join(LANGUAGES)}"))
        for key, dest in self.options.items():
            if len(key) != 1 or key not in KEYS:
                errors.append(ValidationError("options", f"{key!r} is not a key: use 0-9, * or #"))
                continue
            errors += [ValidationError(f"option_{key}", e.message) for e in
                       destination_errors(f"option_{key}", dest)]
        if not self.options and not self.direct_dial:
            errors.append(ValidationError("options", "give at least one key a destination, or switch direct "
                                                     "dialling of extensions on"))
        if not isinstance(self.direct_dial, bool):
            errors.append(ValidationError("direct_dial", "must be true or false"))
        for name, (low, high), unit in (("timeout", TIMEOUT, "seconds"), ("retries", RETRIES, "repeats")):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                errors.append(ValidationError(name, f"{value!r}: must be {low}-{high} {unit}"))
        errors += destination_errors("invalid_destination", self.invalid_destination, optional=True)
        errors += destination_errors("timeout_destination", self.timeout_destination, optional=True)
        if errors:
            raise ValidationErrors(errors)


def _references(menu: IvrMenu):
    return destination_refs(*((f"option_{k}", d) for k, d in menu.options.items()),
                            ("invalid_destination", menu.invalid_destination),
                            ("timeout_destination", menu.timeout_destination))


IVR_MENUS = register_records(RecordKind(Collection(TABLE, IvrMenu, key="number", noun="IVR menu", sort_key=int),
                                        references=_references))
register_kind(DestinationKind("ivr", "IVR menu", "500",
                              lambda t: None if EXTENSION_NUMBER_RE.fullmatch(t) else
                              f"'{t}' is not an IVR menu number (2-6 digits)", refers_to=TABLE))


# --- what the caller's digits mean ---------------------------------------------------------------
def wants_more_digits(menu: IvrMenu, digits: str, extensions) -> bool:
    """Direct dialling: should the menu wait (inter-digit time-out) for another digit after
    `digits`? Yes while some extension's number continues them."""
    if not menu.direct_dial or not digits or len(digits) >= MAX_DIRECT_DIGITS or not digits.isdigit():
        return False
    return any(n.startswith(digits) and n != digits for n in extensions)


def ivr_choice(menu: IvrMenu, digits: str, attempt: int, extensions=()) -> tuple[str, str]:
    """What the caller's `digits` ("" = nothing within the time-out) mean on try `attempt` (1 =
    the first time the prompt played):

        ("goto", destination)   a key's destination, or "extension:N" dialled directly;
        ("retry", why)          play the prompt again after `why` ("invalid" or "timeout");
        ("fail", destination)   out of tries: the menu's invalid / timeout destination ("" = hang up).
    """
    if digits in menu.options:
        return "goto", menu.options[digits]
    if menu.direct_dial and digits in extensions:
        return "goto", f"extension:{digits}"
    why = "timeout" if not digits else "invalid"
    if attempt <= menu.retries:
        return "retry", why
    return "fail", menu.timeout_destination if why == "timeout" else menu.invalid_destination


def option_keys(menu: IvrMenu) -> list[str]:
    return [k for k in KEYS if k in menu.options]


# --- the plan steps -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ivr:
    """Answer, play the menu, act on the caller's keys. `extensions`: what direct dialling may ring."""
    menu: IvrMenu
    extensions: tuple = ()
    on: Next = field(default=NOTHING_NEXT, kw_only=True)

    def describe(self) -> str:
        keys = ",".join(f"{k}>{d}" for k, d in self.menu.options.items())
        return f"ivr {self.menu.number} '{self.menu.name}' [{keys}]" + (" +direct dial" if self.menu.direct_dial else "")


@dataclass(frozen=True)
class RecordIvrPrompt:
    """*95N: `extension` records the prompt of menu `menu` (tone, speak, # to end)."""
    menu: str
    extension: str
    on: Next = field(default=NOTHING_NEXT, kw_only=True)

    def describe(self) -> str:
        return f"record the prompt of IVR menu {self.menu} by {self.extension}"


def plan_menu(number: str, ctx):
    menu = ctx.config.table(TABLE).get(number)
    if menu is None:
        return Reject(404, "not_found", f"no IVR menu {number}", prompt="not_found")
    extensions = tuple(sorted(n for n, e in ctx.config.extensions.items() if e.enabled)) if menu.direct_dial else ()
    return Ivr(menu, extensions)


def _dialled(dialled: str, ctx):
    if dialled in ctx.config.table(TABLE):
        return plan_menu(dialled, ctx)
    return None


def _record_code(parsed, ctx):
    number = parsed.argument
    if number not in ctx.config.table(TABLE):
        return Reject(404, "not_found", f"no IVR menu {number} to record a prompt for (dialled "
                                        f"{RECORD_CODE}{number})", prompt="not_found")
    return RecordIvrPrompt(number, ctx.caller.id)


DESTINATION_HANDLERS["ivr"] = lambda dest, ctx: plan_menu(dest.target, ctx)
NUMBER_HANDLERS.append(_dialled)
register_code(CodeDef(RECORD_CODE, "ivr_record", "Record the prompt of IVR menu NUM (# to end)",
                      takes_number=True, plan=_record_code, group="IVR"))


# --- the tree the web page shows -------------------------------------------------------------------
@dataclass(frozen=True)
class TreeNode:
    label: str                   # "1 → ring group 600"
    destination: str
    menu: "IvrMenu | None" = None   # set when the destination is another menu (expanded)
    children: tuple = ()
    note: str = ""               # "already shown above" for a loop


def menu_tree(menu: IvrMenu, menus: dict, label_of=lambda d: d, _path=()) -> TreeNode:
    """The menu with every key, nested menus expanded (a menu already on the path is not
    expanded again: a "back to the main menu" key)."""
    path = _path + (menu.number,)
    children = []
    entries = [(k, menu.options[k]) for k in option_keys(menu)]
    if menu.direct_dial:
        entries.append(("extension number", "direct dial"))
    entries += [("wrong key", menu.invalid_destination or "hangup"),
                ("no key", menu.timeout_destination or "hangup")]
    for key, dest in entries:
        text = f"{key} → {'any extension' if dest == 'direct dial' else label_of(dest)}"
        target = dest.partition(":")[2] if dest.startswith("ivr:") else ""
        sub = menus.get(target) if target else None
        if sub is not None and target not in path:
            node = menu_tree(sub, menus, label_of, path)
            children.append(TreeNode(text, dest, sub, node.children))
        else:
            children.append(TreeNode(text, dest, None, (), "(shown above)" if target in path else ""))
    return TreeNode(f"{menu.number} {menu.name}", f"ivr:{menu.number}", menu, tuple(children))



__all__ = ["IvrMenu", "Ivr", "RecordIvrPrompt", "ivr_choice", "wants_more_digits", "menu_tree", "TABLE",
           "LANGUAGES", "KEYS", "PROMPT_KINDS"]
