"""Call queues in the call service: one engine per queue holds its waiting callers in order and
offers them to the agents the queue's strategy picks (firmware/features/queues.py).

A caller's own flow (`run`, the QueueCall step) answers, joins the engine, hears music, "you
are caller number 2" and the periodic announcement, and waits for one of: an agent answered
(the DialResult goes back to the plan runner, which bridges the two with talk()), the caller
hung up (ABANDON), pressed the exit key (EXITWITHKEY), waited max_wait (EXITWITHTIMEOUT), or
the last agent logged out (EXITEMPTY); the last three carry on with the configured destination
(`svc.plan_for`). The engine (`QueueEngine.run`, a task per queue) offers the callers at the
head of the line to free agents with the dial primitive, in the caller's session, while the
caller keeps hearing music; the agent hears "call from <queue>" before the call is theirs.

Agent state is kept per call service (QueueHub.agents, firmware's AgentState transitions):
ringing, on a queue call, wrap-up until T; "busy" on any other call; logged in / paused from
the config store (AgentLogin records, written by *45/*46/*47 here and by the agent's web page).
Every event goes to the queue log (firmware/queue_log.py) beside the CDRs.

PBX_QUEUE_SEED (environment) seeds the random strategies, for reproducible runs.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import time
import weakref
from dataclasses import dataclass, field, replace

from firmware.cdr import Disposition
from firmware.features import queues as model
from firmware.features.queues import AgentLogin, AgentState, Queue, QueueAgentCode, QueueCall
from firmware.queue_log import QueueLog

from .. import hooks, moh
from ..channel import Channel
from ..dial import DialResult, Outcome, Target, dial
from ..media import MediaCapacityError, Player
from .plan import runs
from .ringgroups import busy_extensions
from .speech import say

log = logging.getLogger(__name__)

TICK = 1.0                 # the engine looks at its agents at least this often (wrap-up ends, logins)
FIRST_ANNOUNCEMENT = 1.5   # the position is said this long after a caller joins
DEFAULT_HOLD = 0.0

_HUBS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def hub_of(svc) -> "QueueHub":
    hub = _HUBS.get(svc)
    if hub is None:
        hub = _HUBS[svc] = QueueHub(svc)
    return hub


@dataclass(eq=False)
class Waiter:
    """A caller waiting in a queue."""
    channel: Channel
    step: QueueCall
    joined: float                                  # epoch seconds
    position: int                                  # at entry (1 = first)
    result: asyncio.Future = None                  # an agent answered: the DialResult
    kicked: asyncio.Future = None                  # the queue emptied: the caller must leave
    offer: asyncio.Task | None = None
    retry_at: float = 0.0
    aborting: bool = False
    skip: set = field(default_factory=set)

    @property
    def session(self):
        return self.channel.session

    @property
    def offering(self) -> bool:
        return self.offer is not None and not self.offer.done()


class QueueHub:
    """Every queue engine of one call service, the agents' live state and the queue log."""

    def __init__(self, svc):
        self.svc = svc
        self.engines: dict[str, QueueEngine] = {}
        self.agents: dict[str, AgentState] = {}
        seed = os.environ.get("PBX_QUEUE_SEED")
        self.rng = random.Random(int(seed)) if seed and seed.isdigit() else random.Random()
        self._log: QueueLog | None = None
        self._refreshed = 0.0

    # --- the queue log --------------------------------------------------------------------------
    def log(self, queue: str, event: str, *, callid: str = "", agent: str = "", data=()) -> None:
        try:
            if self._log is None:
                data_dir = getattr(self.svc.store, "data_dir", None)
                if data_dir is None:
                    return
                self._log = QueueLog(data_dir)
            self._log.write(queue, event, callid=callid, agent=agent, data=data)
        except Exception:   # the log must never stop a call
            log.exception("queue %s: cannot write %s to the queue log", queue, event)

    # --- config --------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-read the config when another process (the web UI) changed it; at most twice a second."""
        now = time.monotonic()
        if now - self._refreshed < 0.5:
            return
        self._refreshed = now
        try:
            self.svc.store.records(model.AGENTS_TABLE)   # notices a change on disk
        except Exception:
            log.exception("queues: cannot read the agents' logins")
        self.svc.refresh_config()

    def queues(self) -> dict[str, Queue]:
        view = self.svc.view
        return dict(view.table(model.TABLE)) if view is not None else {}

    def logins(self) -> dict[str, AgentLogin]:
        view = self.svc.view
        return dict(view.table(model.AGENTS_TABLE)) if view is not None else {}

    def engine(self, number: str) -> "QueueEngine":
        engine = self.engines.get(number)
        if engine is None or engine.task is None or engine.task.done():
            engine = self.engines[number] = QueueEngine(self, number)
            engine.start()
        return engine

    def start(self) -> None:
        for number in self.queues():
            self.engine(number)

    # --- agents --------------------------------------------------------------------------------
    def agent(self, extension: str) -> AgentState:
        state = self.agents.get(extension)
        if state is None:
            state = self.agents[extension] = AgentState(extension)
        return state

    def states(self, now: float) -> dict[str, AgentState]:
        """Every agent's state now: busy from the live calls, paused from the config."""
        busy = set(busy_extensions(self.svc)) | set(self.svc.ringing)
        logins = self.logins()
        out = {}
        members = set()
        for q in self.queues().values():
            members |= {m.extension for m in model.queue_agents(q, logins)}
        for ext in members | set(self.agents):
            login = logins.get(ext)
            state = replace(self.agent(ext), busy=ext in busy and self.agent(ext).activity == "idle",
                            paused=bool(login and login.paused), reason=login.reason if login else "",
                            logged_in=ext in members)
            out[ext] = state
        return out

    def set_pause(self, extension: str, paused: bool, reason: str = "") -> AgentLogin:
        """Store the pause (the web page and the phone see it) and log PAUSE / UNPAUSE."""
        store = self.svc.store
        current = store.record(model.AGENTS_TABLE, extension)
        record = replace(current or AgentLogin(extension), paused=paused, reason=reason if paused else "")
        if current is None:
            store.add_record(model.AGENTS_TABLE, record)
        else:
            store.replace_record(model.AGENTS_TABLE, record)
        self.log("", "PAUSE" if paused else "UNPAUSE", agent=extension, data=(reason,) if paused else ())
        self._refreshed = 0.0     # the next refresh (on the call loop) reads it back
        return record

    def wake_all(self) -> None:
        for engine in self.engines.values():
            engine.wake.set()

    def status(self) -> dict:
        """Queue state for the status command (wallboard, dashboard): callers waiting, agents."""
        self.refresh()
        now = time.time()
        states = self.states(now)
        logins = self.logins()
        names = {n: e.name for n, e in (self.svc.view.extensions.items() if self.svc.view else ())}
        queues = []
        for number, q in sorted(self.queues().items(), key=lambda kv: int(kv[0])):
            engine = self.engines.get(number)
            waiting = engine.waiting if engine is not None else []
            members = model.queue_agents(q, logins)
            agents = []
            for m in members:
                st = states.get(m.extension, AgentState(m.extension))
                agents.append({"extension": m.extension, "name": names.get(m.extension, ""),
                               "penalty": m.penalty, "static": m in q.members, "state": st.status(now),
                               "reason": st.reason if st.paused else "",
                               "wrap_up_left": max(0, round(st.wrap_up_until - now)),
                               "calls": st.calls})
            queues.append({"number": number, "name": q.name, "strategy": q.strategy,
                           "service_level_s": q.service_level,
                           "waiting": len(waiting),
                           "longest_wait": round(max((now - w.joined for w in waiting), default=0.0), 1),
                           "callers": [{"number": w.channel.number, "name": w.channel.name,
                                        "wait": round(now - w.joined, 1), "ringing": w.offering}
                                       for w in waiting],
                           "agents": agents})
        return {"queues": queues}


class QueueEngine:
    """One queue: its waiting callers in order and the offers to its agents."""

    def __init__(self, hub: QueueHub, number: str):
        self.hub = hub
        self.svc = hub.svc
        self.number = number
        self.waiting: list[Waiter] = []
        self.last_agent = ""              # who answered the last call (round_robin_memory)
        self.average_hold = DEFAULT_HOLD
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None

    @property
    def queue(self) -> Queue | None:
        return self.hub.queues().get(self.number)

    def start(self) -> None:
        self.task = self.svc.spawn(self.run())

    def members(self, skip=()) -> list[model.QueueMember]:
        q = self.queue
        if q is None:
            return []
        return [m for m in model.queue_agents(q, self.hub.logins()) if m.extension not in skip]

    # --- callers -------------------------------------------------------------------------------
    def join(self, caller: Channel, step: QueueCall) -> Waiter:
        loop = self.svc.loop
        waiter = Waiter(caller, step, time.time(), len(self.waiting) + 1, loop.create_future(),
                        loop.create_future(), skip=set(step.skip))
        self.waiting.append(waiter)
        self.hub.log(self.number, "ENTERQUEUE", callid=caller.session.linkedid,
                     data=(caller.number, waiter.position))
        self.wake.set()
        return waiter

    def leave(self, waiter: Waiter) -> None:
        if waiter in self.waiting:
            self.waiting.remove(waiter)
        self.wake.set()

    def position(self, waiter: Waiter) -> int:
        return self.waiting.index(waiter) + 1 if waiter in self.waiting else 0

    # --- the engine ----------------------------------------------------------------------------
    async def run(self) -> None:
        log.info("queue %s: engine started", self.number)
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), TICK)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()
            try:
                self.hub.refresh()
                if self.queue is None and not self.waiting:
                    log.info("queue %s: removed from the config; engine stopped", self.number)
                    return
                self.dispatch()
            except Exception:
                log.exception("queue %s: dispatch failed", self.number)

    def dispatch(self) -> None:
        """Offer each waiting caller (in order) to the agents the strategy picks, while any is free."""
        q = self.queue
        if q is None:
            return
        now = time.time()
        members = self.members()
        if q.leave_when_empty and not members:
            for w in list(self.waiting):
                if not w.kicked.done() and not w.result.done():
                    w.kicked.set_result("empty")
            return
        for waiter in list(self.waiting):
            if waiter.offering or waiter.aborting or waiter.result.done() or waiter.channel.is_gone:
                continue
            if waiter.retry_at > now:
                continue
            states = self.hub.states(now)
            candidates = [m for m in members if m.extension not in waiter.skip]
            ordered = model.order_agents(q, candidates, states, now, self.hub.rng, last_agent=self.last_agent)
            ring = model.to_ring(q, ordered)
            if not ring:
                return     # no free agent: the callers behind this one wait too (first come, first served)
            for m in ring:
                self.hub.agents[m.extension] = model.offered(self.hub.agent(m.extension), now)
            waiter.offer = self.svc.spawn(self._offer(q, waiter, [m.extension for m in ring]))

    async def _offer(self, q: Queue, waiter: Waiter, extensions: list[str]) -> None:
        svc, hub, session = self.svc, self.hub, waiter.session
        step = waiter.step
        targets = [Target(f"sip:{ext}@{svc.edge[0]}:{svc.edge[1]}", ext, timeout=q.agent_timeout,
                          caller_number=step.caller_id_number or None, caller_name=step.caller_id_name,
                          confirm=self._agent_hears_queue_name(q) if q.announce_to_agent else None)
                   for ext in extensions]
        log.info("call %d: queue %s offers %s to %s", session.n, q.number, waiter.channel.number, ",".join(extensions))
        started = time.time()
        try:
            result = await dial(svc, session, waiter.channel, targets, timeout=q.agent_timeout, early_media=False)
        except MediaCapacityError:
            result = DialResult(Outcome.FAILED, status=480)
        except Exception:
            log.exception("call %d: queue %s offer failed", session.n, q.number)
            result = DialResult(Outcome.FAILED, status=500)
        now = time.time()
        winner = result.channel.number if result.outcome is Outcome.ANSWERED else ""
        for ext in extensions:
            agent = hub.agent(ext)
            if ext == winner:
                continue
            if result.outcome in (Outcome.ANSWERED, Outcome.CALLER_GONE) or waiter.aborting:
                hub.agents[ext] = model.released(agent)
                continue
            hub.log(q.number, "RINGNOANSWER", callid=session.linkedid, agent=ext,
                    data=(int((now - started) * 1000),))
            after = model.not_answered(agent, q.max_no_answer)
            hub.agents[ext] = after
            if after.paused and not agent.paused:
                log.info("queue %s: agent %s did not answer %d times: paused", q.number, ext, q.max_no_answer)
                hub.agents[ext] = replace(after, paused=False)   # the config holds the pause from now on
                try:
                    hub.set_pause(ext, True, model.PAUSE_REASONS["9"])
                except Exception:
                    log.exception("queue %s: cannot pause agent %s", q.number, ext)
        if result.outcome is Outcome.ANSWERED:
            if waiter.channel.is_gone or waiter.result.done():
                await result.channel.hangup("caller gone")
                hub.agents[winner] = model.released(hub.agent(winner))
                return
            hold = now - waiter.joined
            self.average_hold = model.update_hold_time(self.average_hold, hold)
            self.last_agent = winner
            hub.agents[winner] = model.answered(hub.agent(winner), now)
            hub.log(q.number, "CONNECT", callid=session.linkedid, agent=winner,
                    data=(round(hold), "", round(now - started)))
            self._watch_call(q, waiter, result.channel, hold, now)
            waiter.result.set_result(result)
        elif not waiter.channel.is_gone:
            waiter.retry_at = time.time() + q.retry
            if q.retry:
                self.svc.loop.call_later(q.retry + 0.05, self.wake.set)
        self.wake.set()

    def _agent_hears_queue_name(self, q: Queue):
        async def confirm(ch: Channel) -> bool:
            pcm = await say(f"Call from {q.name}.")
            if pcm and not ch.is_gone:
                log.info("call %d: queue %s: agent %s hears 'Call from %s.'", ch.session.n, q.number, ch.number,
                         q.name)
                await ch.play(Player(pcm=pcm))
            return not ch.is_gone
        return confirm

    def _watch_call(self, q: Queue, waiter: Waiter, agent_ch: Channel, hold: float, connected: float) -> None:
        """When the conversation ends: who hung up, or a transfer; the agent goes to wrap-up."""
        caller, hub, session = waiter.channel, self.hub, waiter.session
        done = {"logged": False}

        def ended(_f=None) -> None:
            if done["logged"]:
                return
            done["logged"] = True
            now = time.time()
            talk = round(now - connected)
            transfer = next((data for _t, what, n, data in session.events
                             if what.endswith("transfer") and n in (agent_ch.n, caller.n)), None)
            if transfer is not None:
                hub.log(q.number, "TRANSFER", callid=session.linkedid, agent=agent_ch.number,
                        data=(transfer.get("number", ""), "", round(hold), talk, waiter.position))
            else:
                event = "COMPLETEAGENT" if agent_ch.is_gone and agent_ch.hangup_by == "remote" else "COMPLETECALLER"
                hub.log(q.number, event, callid=session.linkedid, agent=agent_ch.number,
                        data=(round(hold), talk, waiter.position))
            hub.agents[agent_ch.number] = model.call_ended(hub.agent(agent_ch.number), now, q.wrap_up)
            self.svc.loop.call_later(q.wrap_up + 0.05, hub.wake_all)
            hub.wake_all()

        agent_ch.gone.add_done_callback(ended)
        caller.gone.add_done_callback(ended)

    def abort_offer(self, waiter: Waiter) -> None:
        """Stop the agents' phones ringing for this caller (exit key, time-out): the dial primitive
        ends a ring when the session's pickup future resolves; with None nobody wins."""
        waiter.aborting = True
        pickup = waiter.session.pickup
        if waiter.offering and pickup is not None and not pickup.done():
            pickup.set_result(None)


# --- the caller's side -------------------------------------------------------------------------
def _music(svc, waiter: Waiter) -> None:
    ch = waiter.channel
    if ch.rtp is None or ch.is_gone or waiter.result.done():
        return
    moh.service(svc).listen(ch, waiter.step.queue.music_class or None)


async def _announcements(svc, engine: QueueEngine, waiter: Waiter) -> None:
    """Position and estimated wait every announce_every s, and the periodic announcement."""
    q = waiter.step.queue
    loop = svc.loop
    next_position = loop.time() + FIRST_ANNOUNCEMENT if (q.announce_position or q.announce_wait) else None
    next_periodic = loop.time() + q.periodic_every if q.periodic_announcement else None
    while next_position is not None or next_periodic is not None:
        due = min(t for t in (next_position, next_periodic) if t is not None)
        await asyncio.sleep(max(0.0, due - loop.time()))
        if waiter.result.done() or waiter.channel.is_gone:
            return
        words = []
        if next_position is not None and loop.time() >= next_position - 0.01:
            position = engine.position(waiter)
            estimate = model.estimated_wait(position, engine.average_hold, max(1, len(engine.members()))) \
                if q.announce_wait else None
            if q.announce_position:
                words.append(model.position_words(position, estimate))
            elif estimate:
                words.append(model.position_words(position, estimate).split(". ", 1)[-1])
            next_position = loop.time() + q.announce_every if q.announce_every else None
        if next_periodic is not None and loop.time() >= next_periodic - 0.01:
            words.append(q.periodic_announcement)
            next_periodic = loop.time() + q.periodic_every
        pcm = await say(" ".join(w for w in words if w))
        if pcm and not waiter.result.done() and not waiter.channel.is_gone:
            log.info("call %d: queue %s tells %s: %s", waiter.session.n, q.number, waiter.channel.number,
                     " ".join(words))
            await waiter.channel.play(Player(pcm=pcm))
            _music(svc, waiter)


async def _exit_key(ch: Channel, key: str) -> str:
    while True:
        digit = await ch.digits.get()
        if digit == key:
            return digit


def _leave_to(svc, caller: Channel, destination: str, disposition: Disposition, cause: str):
    if destination:
        return svc.plan_for(caller.session, destination)
    caller.session.fail(disposition, cause)
    return None


@runs(QueueCall)
async def run(svc, caller: Channel, step: QueueCall):
    hub = hub_of(svc)
    hub.refresh()
    q = step.queue
    engine = hub.engine(q.number)
    session = caller.session
    callid = session.linkedid
    if not engine.members(skip=step.skip) and not q.join_empty:
        hub.log(q.number, "JOINEMPTY", callid=callid)
        return _leave_to(svc, caller, q.empty_destination, Disposition.NO_ANSWER, f"queue {q.number}: no agents")
    if q.max_callers and len(engine.waiting) >= q.max_callers:
        hub.log(q.number, "FULL", callid=callid)
        if q.max_callers_destination:
            return svc.plan_for(session, q.max_callers_destination)
        session.fail(Disposition.BUSY, f"queue {q.number} is full")
        caller.reject(486, "Busy Here (queue full)")
        return None
    caller.answer()
    session.state = "queued"
    caller.log("queue", queue=q.number)
    waiter = engine.join(caller, step)
    _music(svc, waiter)
    announcer = svc.spawn(_announcements(svc, engine, waiter))
    gone = asyncio.ensure_future(asyncio.shield(caller.gone))
    key = asyncio.ensure_future(_exit_key(caller, q.exit_key)) if q.exit_key else None
    kicked = asyncio.ensure_future(asyncio.shield(waiter.kicked))
    connected = asyncio.ensure_future(asyncio.shield(waiter.result))
    waits = {gone, kicked, connected} | ({key} if key is not None else set())
    timeout = q.max_wait if q.max_wait else None
    try:
        done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if connected not in done and not caller.is_gone:
            engine.abort_offer(waiter)
            if waiter.offer is not None:
                await asyncio.wait({waiter.offer})     # the agents' ringing has ended
        position = engine.position(waiter)
        wait = round(time.time() - waiter.joined)
        if waiter.result.done():
            moh.service(svc).unlisten(caller)
            return waiter.result.result()     # talk() bridges the caller and the agent
        if caller.is_gone:
            hub.log(q.number, "ABANDON", callid=callid, data=(position, waiter.position, wait))
            session.fail(Disposition.NO_ANSWER, f"abandoned in queue {q.number} after {wait} s")
            return None
        if key is not None and key in done:
            hub.log(q.number, "EXITWITHKEY", callid=callid, data=(q.exit_key, position, waiter.position, wait))
            moh.service(svc).unlisten(caller)
            return _leave_to(svc, caller, q.exit_destination, Disposition.NO_ANSWER, "exit key")
        if kicked in done:
            hub.log(q.number, "EXITEMPTY", callid=callid, data=(position, waiter.position, wait))
            moh.service(svc).unlisten(caller)
            return _leave_to(svc, caller, q.empty_destination, Disposition.NO_ANSWER, f"queue {q.number} emptied")
        hub.log(q.number, "EXITWITHTIMEOUT", callid=callid, data=(position, waiter.position, wait))
        moh.service(svc).unlisten(caller)
        return _leave_to(svc, caller, q.max_wait_destination, Disposition.NO_ANSWER,
                         f"no agent answered within {q.max_wait} s in queue {q.number}")
    finally:
        for task in waits:
            task.cancel()
        announcer.cancel()
        engine.leave(waiter)


# --- agents' feature codes -------------------------------------------------------------------------
@runs(QueueAgentCode)
async def agent_code(svc, caller: Channel, step: QueueAgentCode) -> None:
    hub = hub_of(svc)
    store = svc.store
    loop = asyncio.get_running_loop()
    queue = hub.queues().get(step.queue)

    def change() -> str:
        current = store.record(model.AGENTS_TABLE, step.extension)
        if step.action == "pause":
            paused = not (current and current.paused) or bool(step.reason_code)
            reason = model.pause_reason(step.reason_code) if paused else ""
            hub.set_pause(step.extension, paused, reason)
            return f"Paused, {reason}." if paused else "Unpaused."
        if step.action == "login":
            if queue is not None and step.extension in {m.extension for m in queue.members}:
                return f"You are a permanent member of {queue.name}."
            record = model.login(current, step.extension, step.queue)
            event = "AGENTLOGIN"
        else:
            record = model.logout(current, step.extension, step.queue)
            event = "AGENTLOGOFF"
        if current is None:
            store.add_record(model.AGENTS_TABLE, record)
        else:
            store.replace_record(model.AGENTS_TABLE, record)
        if (step.queue in (current.queues if current else ())) != (step.queue in record.queues):
            hub.log(step.queue, event, agent=step.extension)
        name = queue.name if queue is not None else f"queue {step.queue}"
        return f"Logged in to {name}." if step.action == "login" else f"Logged out of {name}."

    try:
        words = await loop.run_in_executor(None, change)
    except Exception as exc:
        log.warning("call %d: queue code %s for %s failed: %s", caller.session.n, step.action, step.extension, exc)
        caller.session.fail(Disposition.FAILED, f"queue {step.action}: {exc}")
        caller.reject(403)
        return None
    hub._refreshed = 0.0
    hub.refresh()
    hub.wake_all()
    log.info("call %d: queue agent %s: %s", caller.session.n, step.extension, words)
    caller.log("feature", code=step.action, action=f"queue_{step.action}", argument=step.queue or step.reason_code)
    caller.answer()
    caller.session.answer = caller.answered_at
    caller.session.state = "answered"
    caller.session.fail(Disposition.ANSWERED, f"queue {step.action} {step.queue}")
    pcm = await say(words)
    if pcm:
        await caller.play(Player(pcm=pcm))
    await caller.hangup("feature done")
    return None


hooks.ON_START.append(lambda svc: hub_of(svc).start())
hooks.ON_CONFIG_CHANGE.append(lambda svc, view: hub_of(svc).start())
hooks.ON_STATUS["queues"] = lambda svc: hub_of(svc).status()["queues"]
