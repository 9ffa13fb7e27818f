"""Paging and intercom: calls a phone answers by itself.

A paging group has a number (dialled like an extension, or an inbound route's "paging:500") and
member extensions. Paging calls every member at once with the auto-answer headers below; the
phones answer on their speaker and hear the pager, one way: the pager hears nothing from them,
and members who answer late join the page as they answer. Intercom (`*80NUM`) calls one
extension the same way, two-way.

Auto-answer headers (what each phone family honours):
- `Call-Info: <sip:HOST>;answer-after=0`: Yealink, Grandstream, Snom, Cisco SPA/MPP, Mitel/Aastra
  (the BroadSoft convention; FreePBX's paging module sends it to every phone);
- `Alert-Info: <http://www.notused.com>;info=alert-autoanswer;delay=0`: Yealink, Grandstream,
  Snom, Unify OpenStage;
- `Alert-Info: Ring Answer`: Poly/Polycom phones whose `voIpProt.SIP.alertInfo` maps it to the
  auto-answer ring class (as FreePBX provisions them), Digium/Sangoma phones.
A phone that honours none of them rings normally, and joins the page when someone answers it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from firmware.config.collection import Collection
from firmware.config.destination import EXTENSION_NUMBER_RE, DestinationKind, register_kind
from firmware.config.errors import ValidationError, ValidationErrors
from firmware.config.records import RecordKind, Ref, register_records
from firmware.dialplan.context import Context
from firmware.dialplan.feature_codes import CodeDef, register_code
from firmware.dialplan.plan import NOTHING_NEXT, Next, Plan, Reject
from firmware.dialplan.router import DESTINATION_HANDLERS, NUMBER_HANDLERS

TABLE = "paging_groups"
INTERCOM_CODE = "*80"
MAX_MEMBERS = 60
RING_S = (2, 60)


def auto_answer_headers(host: str) -> tuple[tuple[str, str], ...]:
    """The headers that make the phones of the families above answer by themselves."""
    return (("Call-Info", f"<sip:{host}>;answer-after=0"),
            ("Alert-Info", "<http://www.notused.com>;info=alert-autoanswer;delay=0"),
            ("Alert-Info", "Ring Answer"))


@dataclass(frozen=True)
class PagingGroup:
    number: str                       # dialled like an extension; the destination "paging:500"
    name: str
    members: tuple[str, ...] = ()     # extension numbers
    ring_time: int = 10               # how long a member that does not answer by itself rings

    def __post_init__(self) -> None:
        if isinstance(self.members, list):
            object.__setattr__(self, "members", tuple(self.members))

    def validate(self) -> None:
        errors = []
        if not isinstance(self.number, str) or not EXTENSION_NUMBER_RE.fullmatch(self.number):
            errors.append(ValidationError("number", f"{self.number!r} is not a paging group number: 2-6 "
                                                    "digits starting with 1-9, e.g. 500"))
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name) > 40 \
                or not self.name.isprintable():
            errors.append(ValidationError("name", "must be 1-40 printable characters, e.g. 'Warehouse'"))
        if not isinstance(self.members, tuple) or not self.members:
            errors.append(ValidationError("members", "a paging group needs at least one extension, e.g. 1001 1002"))
        else:
            bad = [m for m in self.members if not isinstance(m, str) or not EXTENSION_NUMBER_RE.fullmatch(m)]
            if bad:
                errors.append(ValidationError("members", f"{', '.join(map(str, bad))}: not extension numbers"))
            if len(set(self.members)) != len(self.members):
                errors.append(ValidationError("members", "an extension is listed twice"))
            if len(self.members) > MAX_MEMBERS:
                errors.append(ValidationError("members", f"{len(self.members)} members; at most {MAX_MEMBERS}"))
        if not isinstance(self.ring_time, int) or isinstance(self.ring_time, bool) or \
                not RING_S[0] <= self.ring_time <= RING_S[1]:
            errors.append(ValidationError("ring_time", f"{self.ring_time!r}: {RING_S[0]}-{RING_S[1]} seconds"))
        if errors:
            raise ValidationErrors(errors)


GROUPS = register_records(RecordKind(
    Collection(TABLE, PagingGroup, key="number", noun="paging group", sort_key=int),
    references=lambda g: [Ref("members", "extensions", n) for n in g.members]))
register_kind(DestinationKind("paging", "Paging group", "500",
                              lambda t: None if EXTENSION_NUMBER_RE.fullmatch(t) else
                              f"'{t}' is not a paging group number (2-6 digits)", refers_to=TABLE))


# --- the plan steps ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Page:
    """Page `members` (extensions) for the caller: they answer by themselves and hear it, one way."""
    group: str
    name: str
    members: tuple[str, ...]
    ring_time: int
    caller_id_number: str
    caller_id_name: str
    on: Next = field(default=NOTHING_NEXT, kw_only=True)

    def describe(self) -> str:
        return f"page {self.group} ({self.name}) [{','.join(self.members)}]"


@dataclass(frozen=True)
class Intercom:
    """Call `extension` with auto-answer, two-way (`*80NUM`)."""
    extension: str
    caller_id_number: str
    caller_id_name: str
    timeout: int = 20
    on: Next = field(default=NOTHING_NEXT, kw_only=True)

    def describe(self) -> str:
        return f"intercom {self.extension}"


def _caller_id(ctx: Context) -> tuple[str, str]:
    caller = ctx.caller
    if caller.kind == "extension":
        ext = ctx.config.extensions.get(caller.id)
        return caller.id, (ext.name if ext is not None else caller.name)
    return caller.number, caller.name


def plan_page(number: str, ctx: Context) -> Plan:
    group = ctx.config.table(TABLE).get(number)
    if group is None:
        return Reject(404, "not_found", f"no paging group {number}", prompt="not_found")
    me = ctx.caller.id if ctx.caller.kind == "extension" else ""
    members = tuple(m for m in group.members if m != me and (ext := ctx.config.extensions.get(m)) is not None
                    and ext.enabled and not ext.dnd)
    if not members:
        return Reject(480, "unavailable", f"paging group {number}: no member to page (all disabled, on "
                                          "do-not-disturb, or the caller itself)", tone="congestion")
    number_, name = _caller_id(ctx)
    return Page(group.number, group.name, members, group.ring_time, number_, f"Page: {name or number_}")


def plan_intercom(parsed, ctx: Context) -> Plan:
    target = parsed.argument
    ext = ctx.config.extensions.get(target)
    if ext is None or not ext.enabled:
        return Reject(404, "not_found", f"no extension {target} for intercom", prompt="not_found")
    if ctx.caller.kind == "extension" and target == ctx.caller.id:
        return Reject(404, "not_found", "an extension cannot intercom itself", prompt="not_found")
    if ext.dnd:
        return Reject(486, "busy", f"extension {target} is on do-not-disturb", tone="busy")
    number, name = _caller_id(ctx)
    return Intercom(target, number, f"Intercom: {name or number}")


def _dialled(dialled: str, ctx: Context) -> Plan | None:
    if dialled in ctx.config.table(TABLE):
        return plan_page(dialled, ctx)
    return None


DESTINATION_HANDLERS["paging"] = lambda dest, ctx: plan_page(dest.target, ctx)
NUMBER_HANDLERS.append(_dialled)
register_code(CodeDef(INTERCOM_CODE, "intercom", "Intercom to extension NUM (it answers by itself, two-way)",
                      takes_number=True, plan=plan_intercom, group="Paging"))
