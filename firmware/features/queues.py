"""Call queues: "hold callers in line until one of the sales agents is free".

A queue has a number of its own (dialled like an extension, or the destination "queue:500"),
static members (extensions with a penalty) and dynamic agents who log in and out from their
phone (*45QUEUE / *46QUEUE) or their web page, and pause with *47 (*47N: with reason code N).
Callers are answered, hear music and "you are caller number 2" and wait; the queue offers the
caller at the head of the line to its agents in the order its strategy says:

- ring_all: every available agent of the best penalty at once, the first to answer wins;
- least_recent: the agent whose last queue call ended longest ago;
- fewest_calls: the agent who has taken the fewest calls;
- round_robin_memory: the agent after the one who answered the queue's last call;
- linear: always in the listed order (static members, then dynamic agents by number);
- random: any available agent;
- weighted_random: random, where a lower penalty weighs more.

As FreeSWITCH's mod_callcenter, a strategy is an ordering (an ORDER BY over the agents), here a
pure function `order_agents(queue, agents, now, rng)` of the agents' states; the penalty groups
first (a higher penalty is offered calls only when every lower one is unavailable) except in
weighted_random. An agent's state is a pure state machine too (`AgentState` and the transitions
below): available, ringing, on a call, in wrap-up until T, paused with a reason, logged out;
`max_no_answer` unanswered offers in a row pause the agent.

Everything here is pure: the call service (services/callsvc/flows/queues.py) keeps the live
state, the clock and the random generator, and writes the queue log (firmware/queue_log.py).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping

from firmware.config.destination import (EXTENSION_NUMBER_RE, Destination, DestinationKind, destination_errors,
                                         register_kind)
from firmware.config.errors import ValidationError, ValidationErrors
from firmware.config.records import Collection, RecordKind, Ref, destination_refs, pairs_of, register_records
from firmware.dialplan.context import ADMIN, Context
from firmware.dialplan.feature_codes import CodeDef, register_code
from firmware.dialplan.plan import NOTHING_NEXT, Next, Plan, Reject
from firmware.dialplan.router import DESTINATION_HANDLERS, NUMBER_HANDLERS, resolve

TABLE = "queues"
AGENTS_TABLE = "queue_agents"
STRATEGIES = ("ring_all", "least_recent", "fewest_calls", "round_robin_memory", "linear", "random",
              "weighted_random")
STRATEGY_LABELS = {"ring_all": "Ring all", "least_recent": "Least recent", "fewest_calls": "Fewest calls",
                   "round_robin_memory": "Round robin with memory", "linear": "Linear (in order)",
                   "random": "Random", "weighted_random": "Weighted random (by penalty)"}
LOGIN_CODE, LOGOUT_CODE, PAUSE_CODE = "*45", "*46", "*47"
# *47N pauses with reason code N (what the wallboard and the queue log show)
PAUSE_REASONS = {"": "paused", "1": "break", "2": "lunch", "3": "meeting", "4": "training", "5": "admin work",
                 "9": "no answer"}
AGENT_TIMEOUT_RANGE = (5, 120)
RETRY_RANGE = (0, 60)
WRAP_UP_RANGE = (0, 600)
MAX_WAIT_RANGE = (0, 7200)          # 0 = no limit
MAX_CALLERS_RANGE = (0, 500)        # 0 = no limit
ANNOUNCE_EVERY_RANGE = (0, 600)     # 0 = never
PENALTY_RANGE = (0, 99)
MAX_MEMBERS = 64
EXIT_KEYS = "0123456789*#"
_PREFIX_MAX = 20
_TEXT_MAX = 300


@dataclass(frozen=True)
class QueueMember:
    """A static member: always in the queue (may still pause); lower penalty = offered first."""
    extension: str
    penalty: int = 0


def _members(value) -> tuple[QueueMember, ...]:
    return pairs_of(value, QueueMember, "extension", "penalty")


def parse_member(text: str) -> QueueMember:
    """'1001' or '1001 2' (extension and penalty) -> QueueMember; ValueError says how to write it."""
    parts = text.replace(",", " ").split()
    if not parts or len(parts) > 2:
        raise ValueError(f"{text!r}: write an extension and optionally its penalty, e.g. '1001 0'")
    if len(parts) == 2 and not parts[1].isdigit():
        raise ValueError(f"{text!r}: the penalty {parts[1]!r} is not a whole number (0 = offered first)")
    return QueueMember(parts[0], int(parts[1]) if len(parts) == 2 else 0)


def _int_in(errors, name, value, bounds, what):
    if not isinstance(value, int) or isinstance(value, bool) or not bounds[0] <= value <= bounds[1]:
        errors.append(ValidationError(name, f"{value!r}: {what} must be {bounds[0]}-{bounds[1]}"))


def _text(errors, name, value, limit, example):
    if not isinstance(value, str) or len(value) > limit or not value.isprintable():
        errors.append(ValidationError(name, f"at most {limit} printable characters, e.g. {example!r}"))


@dataclass(frozen=True)
class Queue:
    number: str                          # dialled like an extension; the destination "queue:500"
    name: str                            # "Sales"
    strategy: str = "ring_all"
    members: tuple = ()                  # static QueueMembers
    agent_timeout: int = 15              # how long one agent rings, seconds
    retry: int = 5                       # pause before offering the caller again
    wrap_up: int = 10                    # an agent gets no call for this long after one ends
    max_no_answer: int = 3               # unanswered offers in a row that pause an agent (0 = never)
    max_wait: int = 0                    # seconds before max_wait_destination (0 = no limit)
    max_wait_destination: str = ""       # "" = hang up
    max_callers: int = 0                 # callers waiting at most (0 = no limit)
    max_callers_destination: str = ""    # where the one too many goes ("" = busy)
    join_empty: bool = True              # may a caller join when no agent is logged in?
    leave_when_empty: bool = False       # do waiting callers leave when the last agent logs out?
    empty_destination: str = ""          # where they go then ("" = hang up)
    music_class: str = ""                # music on hold class ("" = the caller's route's class, else the default)
    announce_position: bool = True       # "you are caller number 2" ...
    announce_wait: bool = True           # ... "your estimated wait is about 3 minutes"
    announce_every: int = 30             # repeat it every N s (0 = once, on entry)
    periodic_announcement: str = ""      # words spoken every periodic_every s ("" = none)
    periodic_every: int = 60
    exit_key: str = ""                   # a key that leaves the queue ("1"), to exit_destination
    exit_destination: str = ""
    caller_id_prefix: str = ""           # "Sales: " before the caller's name on the agent's phone
    announce_to_agent: bool = True       # the agent hears "call from <queue name>" on answering
    service_level: int = 20              # answered within this many seconds counts as in service level

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", _members(self.members))

    def validate(self) -> None:
        errors: list[ValidationError] = []
        if not isinstance(self.number, str) or not EXTENSION_NUMBER_RE.fullmatch(self.number):
            errors.append(ValidationError("number", f"{self.number!r} is not a queue number: 2-6 digits starting "
                                                    "with 1-9, e.g. 500"))
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name) > 40 \
                or not self.name.isprintable():
            errors.append(ValidationError("name", "must be 1-40 printable characters, e.g. 'Sales'"))
        if self.strategy not in STRATEGIES:
            errors.append(ValidationError("strategy", f"{self.strategy!r} is not a strategy: use one of "
                                                      f"{', '.join(STRATEGIES)}"))
        if len(self.members) > MAX_MEMBERS:
            errors.append(ValidationError("members", f"{len(self.members)} members; at most {MAX_MEMBERS}"))
        seen = set()
        for m in self.members:
            if not isinstance(m.extension, str) or not EXTENSION_NUMBER_RE.fullmatch(m.extension):
                errors.append(ValidationError("members", f"member {m.extension!r} is not an extension number"))
            if m.extension in seen:
                errors.append(ValidationError("members", f"member {m.extension} is listed twice"))
            seen.add(m.extension)
            _int_in(errors, "members", m.penalty, PENALTY_RANGE, f"member {m.extension}'s penalty")
        _int_in(errors, "agent_timeout", self.agent_timeout, AGENT_TIMEOUT_RANGE, "the agent ring time (s)")
        _int_in(errors, "retry", self.retry, RETRY_RANGE, "the retry delay (s)")
        _int_in(errors, "wrap_up", self.wrap_up, WRAP_UP_RANGE, "the wrap-up time (s)")
        _int_in(errors, "max_no_answer", self.max_no_answer, (0, 20), "unanswered offers before a pause")
        _int_in(errors, "max_wait", self.max_wait, MAX_WAIT_RANGE, "the longest wait (s, 0 = no limit)")
        _int_in(errors, "max_callers", self.max_callers, MAX_CALLERS_RANGE, "the most callers waiting (0 = no limit)")
        _int_in(errors, "announce_every", self.announce_every, ANNOUNCE_EVERY_RANGE, "the announcement interval (s)")
        _int_in(errors, "periodic_every", self.periodic_every, (5, 3600), "the periodic announcement interval (s)")
        _int_in(errors, "service_level", self.service_level, (1, 600), "the service level (s)")
        for name in ("join_empty", "leave_when_empty", "announce_position", "announce_wait", "announce_to_agent"):
            if not isinstance(getattr(self, name), bool):
                errors.append(ValidationError(name, "must be true or false"))
        for name in ("max_wait_destination", "max_callers_destination", "empty_destination", "exit_destination"):
            errors += destination_errors(name, getattr(self, name), optional=True)
            if getattr(self, name) == f"queue:{self.number}":
                errors.append(ValidationError(name, "sends the queue's callers back into the same queue: pick "
                                                    "another destination"))
        if self.exit_key and (not isinstance(self.exit_key, str) or len(self.exit_key) != 1
                              or self.exit_key not in EXIT_KEYS):
            errors.append(ValidationError("exit_key", f"{self.exit_key!r}: one key of {EXIT_KEYS}, or none"))
        if self.exit_key and not self.exit_destination:
            errors.append(ValidationError("exit_destination", f"the exit key {self.exit_key} needs a destination, "
                                                              "e.g. 'voicemail:1000'"))
        _text(errors, "caller_id_prefix", self.caller_id_prefix, _PREFIX_MAX, "Sales: ")
        _text(errors, "periodic_announcement", self.periodic_announcement, _TEXT_MAX,
              "Thank you for waiting. You can also reach us at sales at example dot com.")
        _text(errors, "music_class", self.music_class, 40, "default")
        if errors:
            raise ValidationErrors(errors)


@dataclass(frozen=True)
class AgentLogin:
    """An extension's dynamic queue memberships and its pause, kept in the config store so the
    phone (*45/*46/*47), the web page and the call service agree and a restart keeps them."""
    extension: str
    queues: tuple = ()            # queue numbers logged in to (dynamic membership, penalty 0)
    paused: bool = False
    reason: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "queues", tuple(str(q) for q in self.queues or ()))

    def validate(self) -> None:
        errors = []
        if not isinstance(self.extension, str) or not EXTENSION_NUMBER_RE.fullmatch(self.extension):
            errors.append(ValidationError("extension", f"{self.extension!r} is not an extension number"))
        if len(set(self.queues)) != len(self.queues):
            errors.append(ValidationError("queues", "a queue is listed twice"))
        if not isinstance(self.paused, bool):
            errors.append(ValidationError("paused", "must be true or false"))
        _text(errors, "reason", self.reason, 40, "lunch")
        if errors:
            raise ValidationErrors(errors)


def _references(q: Queue) -> list[Ref]:
    return [Ref("members", "extensions", m.extension) for m in q.members] + destination_refs(
        ("max_wait_destination", q.max_wait_destination), ("max_callers_destination", q.max_callers_destination),
        ("empty_destination", q.empty_destination), ("exit_destination", q.exit_destination))


QUEUES = register_records(RecordKind(Collection(TABLE, Queue, key="number", noun="queue", sort_key=int),
                                     references=_references))
AGENT_LOGINS = register_records(RecordKind(
    Collection(AGENTS_TABLE, AgentLogin, key="extension", noun="queue agent", sort_key=int),
    references=lambda a: [Ref("extension", "extensions", a.extension)] + [Ref("queues", TABLE, q) for q in a.queues]))
register_kind(DestinationKind("queue", "Queue", "500",
                              lambda t: None if EXTENSION_NUMBER_RE.fullmatch(t) else
                              f"'{t}' is not a queue number (2-6 digits)", refers_to=TABLE, forwardable=True))


# --- membership ---------------------------------------------------------------------------------
def queue_agents(queue: Queue, logins: Mapping[str, AgentLogin]) -> list[QueueMember]:
    """Who is in the queue now, in the listed order: its static members, then the extensions
    logged in to it (by number, penalty 0)."""
    static = list(queue.members)
    numbers = {m.extension for m in static}
    dynamic = sorted((a.extension for a in logins.values() if queue.number in a.queues
                      and a.extension not in numbers), key=lambda n: (len(n), n))
    return static + [QueueMember(n) for n in dynamic]


def login(current: AgentLogin | None, extension: str, queue: str) -> AgentLogin:
    current = current or AgentLogin(extension)
    return current if queue in current.queues else replace(current, queues=current.queues + (queue,))


def logout(current: AgentLogin | None, extension: str, queue: str) -> AgentLogin:
    current = current or AgentLogin(extension)
    return replace(current, queues=tuple(q for q in current.queues if q != queue))


def pause_reason(code: str) -> str:
    """*47N's reason: a known code's word, else 'code N'."""
    return PAUSE_REASONS.get(code, f"code {code}")


# --- agent state (pure state machine) ------------------------------------------------------------
AVAILABLE, RINGING, ON_CALL, WRAP_UP, PAUSED, LOGGED_OUT, BUSY = (
    "available", "ringing", "on_call", "wrap_up", "paused", "logged_out", "busy")


@dataclass(frozen=True)
class AgentState:
    """What the queue engine knows of one agent (shared by every queue the agent is in).

    `activity` is the engine's own: idle, ringing (offered a queue call), on_call (talking to a
    queue caller); `busy` is set from the box: on any other call, or ringing for one.
    """
    extension: str
    activity: str = "idle"            # idle | ringing | on_call
    wrap_up_until: float = 0.0
    paused: bool = False
    reason: str = ""
    logged_in: bool = True
    busy: bool = False
    last_call_end: float = 0.0        # when the last queue call it answered ended (least_recent)
    last_offer: float = 0.0
    calls: int = 0                    # queue calls answered (fewest_calls)
    no_answers: int = 0               # unanswered offers in a row

    def status(self, now: float) -> str:
        """What the wallboard shows."""
        if not self.logged_in:
            return LOGGED_OUT
        if self.activity == "ringing":
            return RINGING
        if self.activity == "on_call":
            return ON_CALL
        if self.paused:
            return PAUSED
        if self.busy:
            return BUSY
        if self.wrap_up_until > now:
            return WRAP_UP
        return AVAILABLE

    def available(self, now: float) -> bool:
        return self.status(now) == AVAILABLE


def offered(agent: AgentState, now: float) -> AgentState:
    return replace(agent, activity="ringing", last_offer=now)


def answered(agent: AgentState, now: float) -> AgentState:
    return replace(agent, activity="on_call", no_answers=0, calls=agent.calls + 1)


def not_answered(agent: AgentState, max_no_answer: int) -> AgentState:
    """An offer rang out or was refused: after max_no_answer in a row the agent is paused."""
    misses = agent.no_answers + 1
    if max_no_answer and misses >= max_no_answer and not agent.paused:
        return replace(agent, activity="idle", no_answers=0, paused=True, reason=PAUSE_REASONS["9"])
    return replace(agent, activity="idle", no_answers=misses)


def released(agent: AgentState) -> AgentState:
    """An offer ended without this agent (another agent took it, the caller left)."""
    return replace(agent, activity="idle") if agent.activity == "ringing" else agent


def call_ended(agent: AgentState, now: float, wrap_up: int) -> AgentState:
    return replace(agent, activity="idle", last_call_end=now, wrap_up_until=now + wrap_up)


# --- strategies: pure orderings ------------------------------------------------------------------
def order_agents(queue: Queue, members: Iterable[QueueMember], agents: Mapping[str, AgentState], now: float,
                 rng: random.Random | None = None, *, last_agent: str = "") -> list[QueueMember]:
    """The available members of `queue` in the order they are offered the next caller.

    `members` are queue_agents() in their listed order, `agents` each one's state (a member
    without a state is a fresh available agent), `last_agent` the one who answered the queue's
    previous call (round_robin_memory)."""
    rng = rng or random.Random()
    listed = list(members)
    position = {m.extension: i for i, m in enumerate(listed)}
    free = [m for m in listed if agents.get(m.extension, AgentState(m.extension)).available(now)]

    def state(m: QueueMember) -> AgentState:
        return agents.get(m.extension, AgentState(m.extension))

    s = queue.strategy
    if s == "weighted_random":
        # Asterisk's wrandom: a random number up to (penalty + 1), the smallest first
        keyed = [(rng.random() * (m.penalty + 1), m) for m in free]
        return [m for _, m in sorted(keyed, key=lambda km: km[0])]
    if s == "least_recent":
        key = lambda m: (m.penalty, state(m).last_call_end, position[m.extension])  # noqa: E731
    elif s == "fewest_calls":
        key = lambda m: (m.penalty, state(m).calls, position[m.extension])  # noqa: E731
    elif s == "round_robin_memory":
        start = position[last_agent] + 1 if last_agent in position else 0
        key = lambda m: (m.penalty, (position[m.extension] - start) % max(1, len(listed)))  # noqa: E731
    elif s == "random":
        draws = {m.extension: rng.random() for m in free}
        key = lambda m: (m.penalty, draws[m.extension])  # noqa: E731
    else:   # ring_all, linear
        key = lambda m: (m.penalty, position[m.extension])  # noqa: E731
    return sorted(free, key=key)


def to_ring(queue: Queue, ordered: list[QueueMember]) -> list[QueueMember]:
    """Who rings for one offer: ring_all rings every agent of the best penalty at once, the
    others ring the first agent of the order."""
    if not ordered:
        return []
    if queue.strategy == "ring_all":
        best = ordered[0].penalty
        return [m for m in ordered if m.penalty == best]
    return ordered[:1]


# --- what waiting callers hear ---------------------------------------------------------------------
def update_hold_time(average: float, wait: float) -> float:
    """Asterisk's running average of the time callers waited before an agent answered (3:1)."""
    return wait if average <= 0 else (3 * average + wait) / 4


def estimated_wait(position: int, average_hold: float, agents_logged_in: int) -> float:
    """Seconds the caller at `position` (1 = next) can expect to wait."""
    if average_hold <= 0:
        return 0.0
    return average_hold * position / max(1, agents_logged_in)


def position_words(position: int, estimate: float | None) -> str:
    """'You are caller number 2. Your estimated wait is about 3 minutes.'"""
    words = "You are the next caller." if position == 1 else f"You are caller number {position}."
    if estimate:
        minutes = max(1, round(estimate / 60))
        words += f" Your estimated wait is about {minutes} minute{'s' if minutes != 1 else ''}."
    return words


# --- the plan step -------------------------------------------------------------------------------
@dataclass(frozen=True)
class QueueCall:
    """Put the caller in `queue`. `skip` the members that must not be offered calls
    (disabled extensions, do-not-disturb); `caller_id_*` what agents see."""
    queue: Queue
    caller_id_number: str
    caller_id_name: str
    skip: tuple = ()
    on: Next = field(default=NOTHING_NEXT, kw_only=True)

    def describe(self) -> str:
        return f"queue {self.queue.number} ({self.queue.name}) {self.queue.strategy}"


@dataclass(frozen=True)
class QueueAgentCode:
    """*45QUEUE / *46QUEUE / *47[N] dialled by an agent: log in, log out, pause or resume."""
    action: str             # login | logout | pause
    queue: str              # the queue number ("" for pause: every queue)
    extension: str
    reason_code: str = ""
    on: Next = field(default=NOTHING_NEXT, kw_only=True)

    def describe(self) -> str:
        return f"queue agent {self.extension}: {self.action} {self.queue or self.reason_code}".rstrip()


def plan_queue(number: str, ctx: Context) -> Plan:
    queue = ctx.config.table(TABLE).get(number)
    if queue is None:
        return Reject(404, "not_found", f"no queue {number}", prompt="not_found")
    if f"queue:{number}" in ctx.seen:
        return Reject(482, "loop", f"queue {number} is already on this call's path")
    caller = ctx.caller
    if caller.kind == "extension":
        ext = ctx.config.extensions.get(caller.id)
        cid_number, cid_name = caller.id, (ext.name if ext is not None else caller.name)
    else:
        cid_number, cid_name = caller.number, caller.name
    name = f"{queue.caller_id_prefix}{cid_name or cid_number}" if queue.caller_id_prefix else cid_name
    skip = []
    for ext_number in {m.extension for m in queue.members} | {
            a.extension for a in ctx.config.table(AGENTS_TABLE).values() if number in a.queues}:
        ext = ctx.config.extensions.get(ext_number)
        if ext is None or not ext.enabled or ext.dnd or (caller.kind == "extension" and caller.id == ext_number):
            skip.append(ext_number)
    return QueueCall(queue, cid_number, name, tuple(sorted(skip)))


def _dialled(dialled: str, ctx: Context) -> Plan | None:
    if dialled in ctx.config.table(TABLE):
        return plan_queue(dialled, ctx)
    return None


def _agent_code(action: str):
    def plan(parsed, ctx: Context) -> Plan:
        me = ctx.caller.id
        if action == "pause":
            return QueueAgentCode("pause", "", me, parsed.argument)
        queue = parsed.argument
        if queue not in ctx.config.table(TABLE):
            return Reject(404, "not_found", f"{parsed.code}{queue}: no queue {queue}", prompt="not_found")
        return QueueAgentCode(action, queue, me)
    return plan


register_code(CodeDef(LOGIN_CODE, "queue_login", "Log in to queue NUM as an agent", takes_number=True,
                      plan=_agent_code("login"), group="Queues"))
register_code(CodeDef(LOGOUT_CODE, "queue_logout", "Log out of queue NUM", takes_number=True,
                      plan=_agent_code("logout"), group="Queues"))
register_code(CodeDef(PAUSE_CODE, "queue_pause", "Pause / resume queue calls (*47N: pause with reason N)",
                      takes_number=True, number_optional=True, plan=_agent_code("pause"), group="Queues"))


def _as_admin(ctx: Context) -> Context:
    return replace(ctx, dial_as=ADMIN)


def destination_plan(destination: str, ctx: Context) -> Plan:
    if not destination:
        return Reject(480, "no_answer", "the queue sent the call nowhere")
    try:
        return resolve(Destination.parse(destination), _as_admin(ctx))
    except ValueError as e:
        return Reject(404, "not_found", f"queue destination {destination!r}: {e}", prompt="not_found")


DESTINATION_HANDLERS["queue"] = lambda dest, ctx: plan_queue(dest.target, ctx)
NUMBER_HANDLERS.append(_dialled)

__all__ = ["Queue", "QueueMember", "AgentLogin", "AgentState", "QueueCall", "QueueAgentCode", "order_agents",
           "to_ring", "queue_agents", "STRATEGIES", "TABLE", "AGENTS_TABLE"]
