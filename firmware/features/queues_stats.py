"""Queue statistics: pure functions over the queue log's events (firmware/queue_log.py).

Per queue: offered (callers who entered), answered, abandoned, timed out, left with the exit
key, answered within the service level, average and longest wait, average talk time. Per agent:
calls answered, offers not answered, talk time, time logged in and paused, occupancy (talk time
over the time logged in and not paused). Each figure counts the events of the period given; an
agent whose first event in it is a log-off (or an unpause) was logged in (or paused) from the
start of the period, and a static member is logged in all along.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Iterable, Mapping

from firmware.queue_log import QueueEvent

COMPLETES = ("COMPLETECALLER", "COMPLETEAGENT", "TRANSFER")


@dataclass
class QueueStats:
    queue: str
    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    timed_out: int = 0
    exited_with_key: int = 0
    exited_empty: int = 0
    refused: int = 0                 # FULL or JOINEMPTY: never let in
    within_service_level: int = 0
    service_level_s: int = 20
    total_wait: float = 0.0          # of answered callers
    longest_wait: float = 0.0        # of anyone who waited (answered or not)
    total_talk: float = 0.0
    completed: int = 0

    @property
    def average_wait(self) -> float:
        return self.total_wait / self.answered if self.answered else 0.0

    @property
    def average_talk(self) -> float:
        return self.total_talk / self.completed if self.completed else 0.0

    @property
    def service_level(self) -> float | None:
        """Share of the callers who entered and were answered within the service level (0-1);
        None when nobody entered."""
        return self.within_service_level / self.offered if self.offered else None

    def as_dict(self) -> dict:
        return {"queue": self.queue, "offered": self.offered, "answered": self.answered, "abandoned": self.abandoned,
                "timed_out": self.timed_out, "exited_with_key": self.exited_with_key,
                "exited_empty": self.exited_empty, "refused": self.refused,
                "within_service_level": self.within_service_level, "service_level_s": self.service_level_s,
                "service_level": None if self.service_level is None else round(self.service_level, 4),
                "average_wait": round(self.average_wait, 1), "longest_wait": round(self.longest_wait, 1),
                "average_talk": round(self.average_talk, 1)}


@dataclass
class AgentStats:
    agent: str
    answered: int = 0
    not_answered: int = 0
    talk: float = 0.0
    completed: int = 0
    logged_in: float = 0.0
    paused: float = 0.0
    queues: set = field(default_factory=set)

    @property
    def average_talk(self) -> float:
        return self.talk / self.completed if self.completed else 0.0

    @property
    def occupancy(self) -> float | None:
        """Talk time over time logged in and not paused (0-1); None when never available."""
        available = self.logged_in - self.paused
        return min(1.0, self.talk / available) if available > 0 else None

    def as_dict(self) -> dict:
        return {"agent": self.agent, "answered": self.answered, "not_answered": self.not_answered,
                "talk": round(self.talk, 1), "average_talk": round(self.average_talk, 1),
                "logged_in": round(self.logged_in, 1), "paused": round(self.paused, 1),
                "occupancy": None if self.occupancy is None else round(self.occupancy, 4),
                "queues": sorted(self.queues, key=lambda q: (len(q), q))}


def queue_stats(events: Iterable[QueueEvent], service_levels: Mapping[str, int] | None = None,
                default_service_level: int = 20) -> dict[str, QueueStats]:
    """Statistics per queue number; `service_levels` maps a queue to its service level (s)."""
    service_levels = service_levels or {}
    out: dict[str, QueueStats] = {}

    def of(q: str) -> QueueStats:
        if q not in out:
            out[q] = QueueStats(q, service_level_s=int(service_levels.get(q, default_service_level)))
        return out[q]

    for ev in events:
        if ev.event in ("AGENTLOGIN", "AGENTLOGOFF", "PAUSE", "UNPAUSE", "RINGNOANSWER") or not ev.queue:
            if ev.queue and ev.event != "PAUSE" and ev.event != "UNPAUSE":
                of(ev.queue)
            continue
        s = of(ev.queue)
        if ev.event == "ENTERQUEUE":
            s.offered += 1
        elif ev.event == "CONNECT":
            s.answered += 1
            wait = ev.number("data1")
            s.total_wait += wait
            s.longest_wait = max(s.longest_wait, wait)
            if wait <= s.service_level_s:
                s.within_service_level += 1
        elif ev.event in COMPLETES:
            s.completed += 1
            s.total_talk += ev.number("data4" if ev.event == "TRANSFER" else "data2")
        elif ev.event == "ABANDON":
            s.abandoned += 1
            s.longest_wait = max(s.longest_wait, ev.number("data3"))
        elif ev.event == "EXITWITHTIMEOUT":
            s.timed_out += 1
            s.longest_wait = max(s.longest_wait, ev.number("data3"))
        elif ev.event == "EXITWITHKEY":
            s.exited_with_key += 1
            s.longest_wait = max(s.longest_wait, ev.number("data4"))
        elif ev.event == "EXITEMPTY":
            s.exited_empty += 1
            s.longest_wait = max(s.longest_wait, ev.number("data3"))
        elif ev.event in ("FULL", "JOINEMPTY"):
            s.refused += 1
    return out


def agent_stats(events: Iterable[QueueEvent], since: float, until: float,
                static_members: Mapping[str, Iterable[str]] | None = None,
                queue: str | None = None) -> dict[str, AgentStats]:
    """Statistics per agent extension over [since, until); `static_members` maps each queue to
    its static members (logged in all along); `queue` limits it to one queue's calls."""
    out: dict[str, AgentStats] = {}
    static = defaultdict(set)
    for q, members in (static_members or {}).items():
        if queue is None or q == queue:
            for ext in members:
                static[ext].add(q)

    def of(agent: str) -> AgentStats:
        if agent not in out:
            out[agent] = AgentStats(agent)
        return out[agent]

    logins: dict[str, set] = defaultdict(set)          # agent -> queues logged in to now
    login_at: dict[str, float] = {}                    # agent -> when it became logged in (dynamic)
    pause_at: dict[str, float] = {}
    seen_login: set = set()
    seen_pause: set = set()
    events = [e for e in events if since <= e.time < until]
    for ev in events:
        agent = ev.agent
        if agent in ("", "NONE"):
            continue
        if ev.event in ("AGENTLOGIN", "AGENTLOGOFF"):
            if queue is not None and ev.queue != queue:
                continue
            a = of(agent)
            a.queues.add(ev.queue)
            if agent not in seen_login:
                seen_login.add(agent)
                if ev.event == "AGENTLOGOFF":   # was logged in before the period began
                    logins[agent].add(ev.queue)
                    login_at[agent] = since
            before = bool(logins[agent])
            if ev.event == "AGENTLOGIN":
                logins[agent].add(ev.queue)
            else:
                logins[agent].discard(ev.queue)
            after = bool(logins[agent])
            if not before and after:
                login_at[agent] = ev.time
            elif before and not after:
                a.logged_in += ev.time - login_at.pop(agent, ev.time)
        elif ev.event in ("PAUSE", "UNPAUSE"):
            a = of(agent)
            if agent not in seen_pause:
                seen_pause.add(agent)
                if ev.event == "UNPAUSE":
                    pause_at[agent] = since
            if ev.event == "PAUSE" and agent not in pause_at:
                pause_at[agent] = ev.time
            elif ev.event == "UNPAUSE" and agent in pause_at:
                a.paused += ev.time - pause_at.pop(agent)
        elif queue is not None and ev.queue != queue:
            continue
        elif ev.event == "CONNECT":
            a = of(agent)
            a.answered += 1
            a.queues.add(ev.queue)
        elif ev.event == "RINGNOANSWER":
            a = of(agent)
            a.not_answered += 1
            a.queues.add(ev.queue)
        elif ev.event in COMPLETES:
            a = of(agent)
            a.completed += 1
            a.talk += ev.number("data4" if ev.event == "TRANSFER" else "data2")
    for agent, at in login_at.items():
        if agent not in static:
            of(agent).logged_in += until - at
    for agent, at in pause_at.items():
        of(agent).paused += until - at
    for agent, queues in static.items():
        a = of(agent)
        a.queues |= queues
        a.logged_in = until - since      # a static member is in the queue all along
    return out


def day_bounds(day, zone: tzinfo) -> tuple[float, float]:
    """Epoch seconds of the start of `day` (a date) and of the next day, in the box's time zone."""
    start = datetime(day.year, day.month, day.day, tzinfo=zone)
    return start.timestamp(), (start + timedelta(days=1)).timestamp()


def daily(events: Iterable[QueueEvent], zone: tzinfo, first, last) -> list[dict]:
    """Per day from `first` to `last` (dates): offered, answered, abandoned (for the charts)."""
    days = {}
    d = first
    while d <= last:
        days[d] = {"day": d.isoformat(), "offered": 0, "answered": 0, "abandoned": 0}
        d += timedelta(days=1)
    for ev in events:
        key = {"ENTERQUEUE": "offered", "CONNECT": "answered", "ABANDON": "abandoned"}.get(ev.event)
        if key is None:
            continue
        day = datetime.fromtimestamp(ev.time, zone).date()
        if day in days:
            days[day][key] += 1
    return list(days.values())


def hourly(events: Iterable[QueueEvent], zone: tzinfo) -> list[dict]:
    """Per hour of the day (0-23): offered, answered, abandoned."""
    hours = [{"hour": h, "offered": 0, "answered": 0, "abandoned": 0} for h in range(24)]
    for ev in events:
        key = {"ENTERQUEUE": "offered", "CONNECT": "answered", "ABANDON": "abandoned"}.get(ev.event)
        if key is not None:
            hours[datetime.fromtimestamp(ev.time, zone).hour][key] += 1
    return hours
