"""Call blocking: callers the office does not want, and outside numbers a phone may not dial.

Inbound (calls from trunks and exchange lines, before the inbound route is looked at): a block
list entry matches

    "07700900123"   that number, however the provider writes it (+447700900123, 00447700900123...)
    "0906*"         every number starting so (a prefix; compared in the same written forms)
    "anonymous"     a withheld / anonymous / unavailable caller ID

and says what the caller gets: "reject" (403 at once), "busy" (the busy tone, 486), "hangup"
(603 Decline at once), "announcement" ("this number does not accept your call", then 403) or
"voicemail" (its `destination`, e.g. "voicemail:1000"). An exact number wins over a prefix, a
longer prefix over a shorter one. `*32` blocks the last outside caller of the extension that
dials it (the call service knows who that was: services/callsvc/flows/blocking.py).

Outbound: a blocked prefix ("09" premium rate, "00" international) refuses a call from an
extension to a number starting with it, unless the extension is in the entry's `allowed` list;
the caller hears "calls to this number are not allowed from this phone" (403). Emergency numbers
and destinations the administrator configured (an inbound route to an outside number) are never
blocked. Every block is logged by the call service and recorded with the cause "blocked".
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

from firmware.config.destination import Destination, destination_errors
from firmware.config.errors import ValidationError, ValidationErrors
from firmware.config.records import Collection, RecordKind, Ref, destination_refs, register_records
from firmware.dialplan.feature_codes import CodeDef, register_code
from firmware.dialplan.inbound import e164_digits
from firmware.dialplan.plan import NOTHING_NEXT, Next, Reject

INBOUND = "blocked_callers"
OUTBOUND = "blocked_prefixes"
ANONYMOUS = "anonymous"
ACTIONS = ("reject", "busy", "hangup", "announcement", "voicemail")
ACTION_LABELS = {"reject": "Reject (403 at once)", "busy": "Busy tone", "hangup": "Hang up (decline)",
                 "announcement": "Announcement, then reject", "voicemail": "Send to a destination (voicemail)"}
BLOCK_CODE = "*32"
_NUMBER_RE = re.compile(r"\+?[0-9]{2,20}")
_PREFIX_RE = re.compile(r"\+?[0-9]{1,19}\*")
_OUT_PREFIX_RE = re.compile(r"\+?[0-9]{1,19}")
# what providers and line cards send for a withheld number
WITHHELD = {"", "anonymous", "unknown", "unavailable", "restricted", "withheld", "private", "anonymous.invalid"}
USUAL_OUTBOUND_BLOCKS = (("09", "Premium rate (09)"), ("00", "International (00)"))


def _clean(number: str) -> str:
    return re.sub(r"[\s().\-]", "", number or "")


@dataclass(frozen=True)
class BlockedCaller:
    match: str                     # "07700900123", "0906*" or "anonymous"
    action: str = "reject"
    destination: str = ""          # for "voicemail": where the call goes ("voicemail:1000")
    note: str = ""                 # who, why ("blocked by 1000 with *32")

    def __post_init__(self) -> None:
        object.__setattr__(self, "match", _clean(self.match).lower() if isinstance(self.match, str) else self.match)

    def validate(self) -> None:
        errors = []
        if not isinstance(self.match, str) or not (self.match == ANONYMOUS or _NUMBER_RE.fullmatch(self.match)
                                                   or _PREFIX_RE.fullmatch(self.match)):
            errors.append(ValidationError("match", f"{self.match!r} is not a number to block: write a number "
                                                   "(07700900123), a prefix ending in * (0906*) or 'anonymous'"))
        if self.action not in ACTIONS:
            errors.append(ValidationError("action", f"{self.action!r} is not one of {', '.join(ACTIONS)}"))
        if self.action == "voicemail":
            errors += destination_errors("destination", self.destination)
        elif self.destination:
            errors.append(ValidationError("destination", "only the 'voicemail' action sends calls somewhere; "
                                                         "clear it or choose that action"))
        if not isinstance(self.note, str) or len(self.note) > 60 or not self.note.isprintable():
            errors.append(ValidationError("note", "must be plain text of at most 60 characters"))
        if errors:
            raise ValidationErrors(errors)

    @property
    def kind(self) -> str:
        return "anonymous" if self.match == ANONYMOUS else "prefix" if self.match.endswith("*") else "number"


@dataclass(frozen=True)
class BlockedPrefix:
    prefix: str                    # "09", "00", "+"...
    label: str = ""
    allowed: tuple = ()            # extensions that may dial it all the same

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed", tuple(str(a) for a in (self.allowed or ())))
        object.__setattr__(self, "prefix", _clean(self.prefix) if isinstance(self.prefix, str) else self.prefix)

    def validate(self) -> None:
        errors = []
        if not isinstance(self.prefix, str) or not _OUT_PREFIX_RE.fullmatch(self.prefix):
            errors.append(ValidationError("prefix", f"{self.prefix!r} is not a dialling prefix: digits such as 09 "
                                                    "or 00 (an optional leading +)"))
        if not isinstance(self.label, str) or len(self.label) > 40:
            errors.append(ValidationError("label", "must be at most 40 characters"))
        if errors:
            raise ValidationErrors(errors)


register_records(RecordKind(Collection(INBOUND, BlockedCaller, key="match", noun="blocked caller"),
                            references=lambda b: destination_refs(("destination", b.destination))))
register_records(RecordKind(Collection(OUTBOUND, BlockedPrefix, key="prefix", noun="blocked prefix"),
                            references=lambda p: [Ref("allowed", "extensions", n) for n in p.allowed]))


# --- pure decisions --------------------------------------------------------------------------------------
def is_withheld(number: str) -> bool:
    return (number or "").strip().lower() in WITHHELD or not any(c.isdigit() for c in (number or ""))


def match_caller(entries: Iterable[BlockedCaller], number: str, country: str = "uk") -> BlockedCaller | None:
    """The entry that blocks a caller showing `number` ("" or 'anonymous' when withheld), or None."""
    entries = list(entries)
    if is_withheld(number):
        return next((e for e in entries if e.match == ANONYMOUS), None)
    shown = _clean(number)
    forms = {shown, shown.lstrip("+"), e164_digits(shown, country)}
    for entry in entries:
        if entry.kind == "number" and ({entry.match, entry.match.lstrip("+"), e164_digits(entry.match, country)}
                                       & forms):
            return entry
    best = None
    for entry in entries:
        if entry.kind != "prefix":
            continue
        prefix = entry.match[:-1]
        prefix_forms = {prefix, prefix.lstrip("+"), e164_digits(prefix, country)}
        if any(f.startswith(p) for f in forms for p in prefix_forms if p):
            if best is None or len(prefix) > len(best.match) - 1:
                best = entry
    return best


def match_outbound(entries: Iterable[BlockedPrefix], numbers: Iterable[str], extension: str) -> BlockedPrefix | None:
    """The longest blocked prefix any written form of the dialled number starts with, unless
    `extension` is allowed it; None when the call may go."""
    best = None
    for entry in entries:
        if any(n.startswith(entry.prefix) for n in numbers if n) and (best is None or len(entry.prefix) >
                                                                       len(best.prefix)):
            best = entry
    if best is None or extension in best.allowed:
        return None
    return best


def inbound_plan(entry: BlockedCaller, number: str, ctx):
    """What a blocked caller gets. The Reject's cause is "blocked" (the CDR's and the log's)."""
    who = number or "withheld number"
    reason = f"caller {who} blocked by the entry {entry.match!r} ({entry.action})"
    if entry.action == "busy":
        return Reject(486, "blocked", reason, tone="busy")
    if entry.action == "hangup":
        return Reject(603, "blocked", reason)
    if entry.action == "announcement":
        return Reject(403, "blocked", reason, prompt="number_blocked")
    if entry.action == "voicemail":
        from dataclasses import replace

        from firmware.dialplan.context import ADMIN
        from firmware.dialplan.router import resolve
        try:
            return resolve(Destination.parse(entry.destination), replace(ctx, dial_as=ADMIN))
        except ValueError:
            return Reject(403, "blocked", reason)
    return Reject(403, "blocked", reason)


def screen_inbound(dialled: str, ctx):
    """The router's hook for calls from trunks and lines: a plan when the caller is blocked."""
    entries = ctx.config.table(INBOUND).values()
    if not entries:
        return None
    entry = match_caller(entries, ctx.caller.number, ctx.config.settings.country)
    return inbound_plan(entry, ctx.caller.number, ctx) if entry is not None else None


def screen_outbound(number: str, sent: str, ctx):
    """dial_out's hook: a Reject when the dialling extension may not call `number` (`sent`: as the
    route sends it). Administrator-configured destinations pass."""
    from firmware.dialplan.context import ADMIN
    entries = ctx.config.table(OUTBOUND).values()
    if not entries or ctx.dial_as == ADMIN:
        return None
    entry = match_outbound(entries, (number, sent), ctx.dial_as)
    if entry is None:
        return None
    return Reject(403, "blocked", f"extension {ctx.dial_as} may not dial {number}: prefix {entry.prefix} "
                                  f"({entry.label or 'blocked'}) is blocked", prompt="call_blocked")


# --- *32 ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BlockLastCaller:
    """*32: add the last outside caller of `extension` to the block list (the call service knows
    who that was) and confirm it."""
    extension: str
    on: Next = field(default=NOTHING_NEXT, kw_only=True)

    def describe(self) -> str:
        return f"block the last caller of {self.extension}"


register_code(CodeDef(BLOCK_CODE, "block_last", "Block the last outside caller", group="Call blocking",
                      plan=lambda parsed, ctx: BlockLastCaller(ctx.caller.id)))


def _register_hooks() -> None:
    from firmware.dialplan import outbound, router
    if screen_inbound not in router.INBOUND_SCREENS:
        router.INBOUND_SCREENS.append(screen_inbound)
    if screen_outbound not in outbound.DIAL_OUT_CHECKS:
        outbound.DIAL_OUT_CHECKS.append(screen_outbound)


_register_hooks()
