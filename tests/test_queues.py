"""Specification of call queues' pure part: the record, the strategies as orderings over a pinned
agent state, the agent state machine, announcements, the queue log and the statistics over it,
and the plan a dialled queue number, a "queue:N" destination or *45/*46/*47 becomes."""
import random
from datetime import date, datetime, timezone

import pytest

from firmware.config import ConfigStore, ValidationError
from firmware.config.model import Extension
from firmware.dialplan import Caller, ConfigView, Reject, route_call
from firmware.dialplan.router import plan_for_destination
from firmware.features import queues as q
from firmware.features.queues import AgentLogin, AgentState, Queue, QueueAgentCode, QueueCall, QueueMember
from firmware.features.queues_stats import agent_stats, daily, hourly, queue_stats
from firmware.queue_log import QueueEvent, QueueLog

NOW = 1_800_000_000.0
WHEN = datetime(2026, 11, 30, 10, 0)
SECRET = "long-enough-secret"
A, B, C = QueueMember("1001"), QueueMember("1002"), QueueMember("1003")


def queue(strategy="ring_all", members=(A, B, C), **kw):
    return Queue("500", "Sales", strategy, members, **kw)


def ext(members):
    return [m.extension for m in members]


def states(**by_ext):
    return {e.replace("a", ""): s for e, s in by_ext.items()}


# --- strategies: pure orderings over a pinned state ------------------------------------------------

PINNED = {
    "1001": AgentState("1001", last_call_end=NOW - 10, calls=5),
    "1002": AgentState("1002", last_call_end=NOW - 300, calls=1),
    "1003": AgentState("1003", last_call_end=NOW - 60, calls=3),
}


def test_ring_all_rings_every_free_agent_of_the_best_penalty_at_once():
    qu = queue("ring_all", (A, QueueMember("1002", 1), C))
    ordered = q.order_agents(qu, qu.members, PINNED, NOW)
    assert ext(ordered) == ["1001", "1003", "1002"]
    assert ext(q.to_ring(qu, ordered)) == ["1001", "1003"]


def test_least_recent_offers_the_agent_whose_last_call_ended_longest_ago():
    qu = queue("least_recent")
    assert ext(q.order_agents(qu, qu.members, PINNED, NOW)) == ["1002", "1003", "1001"]
    assert ext(q.to_ring(qu, q.order_agents(qu, qu.members, PINNED, NOW))) == ["1002"]


def test_fewest_calls_offers_the_agent_with_the_fewest_answered_calls():
    qu = queue("fewest_calls")
    assert ext(q.order_agents(qu, qu.members, PINNED, NOW)) == ["1002", "1003", "1001"]


def test_round_robin_memory_starts_after_whoever_answered_last_and_wraps_around():
    qu = queue("round_robin_memory")
    assert ext(q.order_agents(qu, qu.members, PINNED, NOW, last_agent="1002")) == ["1003", "1001", "1002"]
    assert ext(q.order_agents(qu, qu.members, PINNED, NOW, last_agent="1003")) == ["1001", "1002", "1003"]
    assert ext(q.order_agents(qu, qu.members, PINNED, NOW)) == ["1001", "1002", "1003"]


def test_linear_always_offers_in_the_listed_order():
    qu = queue("linear", (C, A, B))
    assert ext(q.order_agents(qu, qu.members, PINNED, NOW)) == ["1003", "1001", "1002"]


def test_random_is_a_shuffle_drawn_from_the_given_generator():
    qu = queue("random")
    first = ext(q.order_agents(qu, qu.members, PINNED, NOW, random.Random(7)))
    assert sorted(first) == ["1001", "1002", "1003"]
    assert ext(q.order_agents(qu, qu.members, PINNED, NOW, random.Random(7))) == first
    seen = {tuple(ext(q.order_agents(qu, qu.members, PINNED, NOW, random.Random(s)))) for s in range(40)}
    assert len(seen) >= 4


def test_weighted_random_prefers_a_low_penalty_but_lets_a_high_one_win_sometimes():
    qu = queue("weighted_random", (QueueMember("1001", 0), QueueMember("1002", 9)))
    rng = random.Random(3)
    firsts = [ext(q.order_agents(qu, qu.members, {}, NOW, rng))[0] for _ in range(1000)]
    share = firsts.count("1001") / 1000
    assert 0.85 < share < 0.99     # P(1002 first) = 1/20 for weights 1 and 10


def test_a_lower_penalty_is_offered_first_in_every_ordering_strategy():
    members = (QueueMember("1001", 2), QueueMember("1002", 0), QueueMember("1003", 1))
    for strategy in ("ring_all", "least_recent", "fewest_calls", "round_robin_memory", "linear", "random"):
        qu = queue(strategy, members)
        assert ext(q.order_agents(qu, members, PINNED, NOW, random.Random(1))) == ["1002", "1003", "1001"], strategy


@pytest.mark.parametrize("strategy", q.STRATEGIES)
def test_no_strategy_offers_a_paused_ringing_talking_busy_or_wrapping_up_agent(strategy):
    agents = {
        "1001": AgentState("1001", paused=True, reason="lunch"),
        "1002": AgentState("1002", activity="ringing"),
        "1003": AgentState("1003", activity="on_call"),
        "1004": AgentState("1004", busy=True),
        "1005": AgentState("1005", wrap_up_until=NOW + 5),
        "1006": AgentState("1006", wrap_up_until=NOW - 1),
    }
    members = tuple(QueueMember(n) for n in agents)
    qu = queue(strategy, members)
    assert ext(q.order_agents(qu, members, agents, NOW, random.Random(0))) == ["1006"]


def test_dynamic_agents_join_the_static_members_in_number_order_with_no_penalty():
    qu = queue("linear", (QueueMember("1003", 1),))
    logins = {"1010": AgentLogin("1010", ("500",)), "1002": AgentLogin("1002", ("500", "501")),
              "1004": AgentLogin("1004", ("501",)), "1003": AgentLogin("1003", ("500",))}
    assert q.queue_agents(qu, logins) == [QueueMember("1003", 1), QueueMember("1002"), QueueMember("1010")]


# --- the agent state machine --------------------------------------------------------------------------

def test_an_agent_goes_ringing_on_call_wrap_up_then_available():
    a = AgentState("1001")
    assert a.status(NOW) == "available"
    a = q.offered(a, NOW)
    assert a.status(NOW) == "ringing" and not a.available(NOW)
    a = q.answered(a, NOW + 3)
    assert (a.status(NOW + 3), a.calls) == ("on_call", 1)
    a = q.call_ended(a, NOW + 60, wrap_up=15)
    assert a.status(NOW + 70) == "wrap_up"
    assert a.status(NOW + 75) == "available" and a.last_call_end == NOW + 60


def test_an_agent_who_does_not_answer_n_times_in_a_row_is_paused():
    a = AgentState("1001")
    for _ in range(2):
        a = q.not_answered(q.offered(a, NOW), max_no_answer=3)
        assert a.status(NOW) == "available"
    a = q.not_answered(q.offered(a, NOW), max_no_answer=3)
    assert (a.status(NOW), a.reason) == ("paused", "no answer")


def test_an_answer_resets_the_count_of_unanswered_offers():
    a = q.not_answered(q.not_answered(AgentState("1001"), 3), 3)
    a = q.answered(q.offered(a, NOW), NOW)
    assert a.no_answers == 0


def test_released_returns_a_ringing_agent_to_idle_and_leaves_a_talking_one_alone():
    assert q.released(q.offered(AgentState("1001"), NOW)).status(NOW) == "available"
    talking = q.answered(AgentState("1001"), NOW)
    assert q.released(talking) is talking


def test_the_wallboard_state_of_a_logged_out_and_a_busy_agent():
    assert AgentState("1001", logged_in=False).status(NOW) == "logged_out"
    assert AgentState("1001", busy=True).status(NOW) == "busy"


# --- what callers hear ------------------------------------------------------------------------------

def test_position_and_estimated_wait_announcements():
    assert q.position_words(1, None) == "You are the next caller."
    assert q.position_words(3, 130) == "You are caller number 3. Your estimated wait is about 2 minutes."
    assert q.position_words(2, 20) == "You are caller number 2. Your estimated wait is about 1 minute."


def test_hold_time_is_asterisks_running_average_and_the_estimate_scales_with_position_and_agents():
    assert q.update_hold_time(0, 40) == 40
    assert q.update_hold_time(40, 80) == 50
    assert q.estimated_wait(3, 60, 2) == 90
    assert q.estimated_wait(3, 0, 2) == 0


# --- the record ----------------------------------------------------------------------------------------

def test_a_valid_queue_passes():
    queue(exit_key="1", exit_destination="extension:1000", max_wait=60, max_wait_destination="extension:1000").validate()


@pytest.mark.parametrize("changes, field", [
    ({"number": "05"}, "number"), ({"name": ""}, "name"), ({"strategy": "fastest"}, "strategy"),
    ({"agent_timeout": 2}, "agent_timeout"), ({"wrap_up": 9999}, "wrap_up"), ({"exit_key": "11"}, "exit_key"),
    ({"exit_key": "1"}, "exit_destination"), ({"max_wait_destination": "queue:500"}, "max_wait_destination"),
    ({"members": (A, A)}, "members"), ({"members": (QueueMember("1001", 200),)}, "members"),
    ({"max_callers_destination": "nowhere"}, "max_callers_destination"), ({"join_empty": "yes"}, "join_empty"),
])
def test_a_bad_queue_is_refused_naming_the_field(changes, field):
    kw = {"number": "500", "name": "Sales", "strategy": "ring_all", "members": (A,), **changes}
    with pytest.raises(ValidationError) as e:
        Queue(**kw).validate()
    assert field in {err.field for err in e.value.errors}


def test_parse_member_reads_an_extension_and_its_penalty():
    assert q.parse_member("1001 2") == QueueMember("1001", 2)
    assert q.parse_member("1002") == QueueMember("1002", 0)
    with pytest.raises(ValueError, match="penalty"):
        q.parse_member("1001 high")


def test_the_store_keeps_queues_and_logins_and_checks_their_references(tmp_path):
    store = ConfigStore(tmp_path)
    store.add_extension("1001", "Ann")
    store.add_extension("1002", "Bob")
    store.add_record(q.TABLE, queue(members=(QueueMember("1001", 1),), exit_key="1", exit_destination="extension:1002"))
    store.add_record(q.AGENTS_TABLE, AgentLogin("1002", ("500",)))
    assert store.record(q.TABLE, "500").members == (QueueMember("1001", 1),)
    assert store.record(q.AGENTS_TABLE, "1002").queues == ("500",)
    with pytest.raises(ValidationError, match="no queue 501"):
        store.add_record(q.AGENTS_TABLE, AgentLogin("1001", ("501",)))
    with pytest.raises(ValidationError, match="queue"):
        store.remove_record(q.TABLE, "500")       # 1002 is logged in to it


# --- the plan -------------------------------------------------------------------------------------------

def view(*queues, logins=(), dnd=()):
    exts = [Extension(n, f"User {n}", SECRET, dnd=n in dnd) for n in ("1000", "1001", "1002", "1003", "1009")]
    return ConfigView.of(exts, [], (), (), records={"queues": queues, "queue_agents": logins})


def test_dialling_a_queue_number_from_an_extension_puts_the_caller_in_the_queue():
    plan = route_call("500", Caller("extension", "1000"), view(queue(caller_id_prefix="Q: ")), WHEN)
    assert isinstance(plan, QueueCall)
    assert (plan.queue.number, plan.caller_id_number, plan.caller_id_name) == ("500", "1000", "Q: User 1000")


def test_members_on_dnd_and_the_caller_itself_are_skipped():
    plan = route_call("500", Caller("extension", "1001"), view(queue(), logins=(AgentLogin("1009", ("500",)),),
                                                                 dnd=("1009",)), WHEN)
    assert plan.skip == ("1001", "1009")


def test_the_queue_destination_resolves_to_the_queue():
    plan = plan_for_destination("queue:500", Caller("trunk", "carrier", number="0201"), view(queue()), WHEN)
    assert isinstance(plan, QueueCall) and plan.caller_id_number == "0201"


def test_an_unknown_queue_is_not_found():
    plan = plan_for_destination("queue:501", Caller("extension", "1000"), view(queue()), WHEN)
    assert isinstance(plan, Reject) and plan.code == 404


@pytest.mark.parametrize("dialled, expected", [
    ("*45500", QueueAgentCode("login", "500", "1002")),
    ("*46500", QueueAgentCode("logout", "500", "1002")),
    ("*47", QueueAgentCode("pause", "", "1002", "")),
    ("*472", QueueAgentCode("pause", "", "1002", "2")),
])
def test_agent_codes_log_in_log_out_and_pause(dialled, expected):
    assert route_call(dialled, Caller("extension", "1002"), view(queue()), WHEN) == expected


def test_logging_in_to_a_queue_that_does_not_exist_is_refused():
    plan = route_call("*45501", Caller("extension", "1002"), view(queue()), WHEN)
    assert isinstance(plan, Reject) and "no queue 501" in plan.reason


def test_login_and_logout_change_only_that_queue():
    a = q.login(None, "1002", "500")
    a = q.login(a, "1002", "501")
    assert q.login(a, "1002", "500").queues == ("500", "501")
    assert q.logout(a, "1002", "500").queues == ("501",)
    assert q.pause_reason("2") == "lunch" and q.pause_reason("7") == "code 7"


# --- the queue log and the statistics ----------------------------------------------------------------------

def ev(t, event, queue="500", agent="NONE", *data, callid="c"):
    return QueueEvent(NOW + t, callid, queue, agent, event, *[str(d) for d in data])


DAY = [
    ev(0, "ENTERQUEUE", "500", "NONE", "1000", 1, callid="c1"),
    ev(5, "CONNECT", "500", "1001", 5, "", 2, callid="c1"),
    ev(65, "COMPLETECALLER", "500", "1001", 5, 60, 1, callid="c1"),
    ev(10, "ENTERQUEUE", "500", "NONE", "1005", 1, callid="c2"),
    ev(40, "RINGNOANSWER", "500", "1002", 15000, callid="c2"),
    ev(45, "CONNECT", "500", "1003", 35, "", 1, callid="c2"),
    ev(165, "COMPLETEAGENT", "500", "1003", 35, 120, 1, callid="c2"),
    ev(20, "ENTERQUEUE", "500", "NONE", "1006", 2, callid="c3"),
    ev(30, "ABANDON", "500", "NONE", 1, 2, 10, callid="c3"),
    ev(50, "ENTERQUEUE", "500", "NONE", "1007", 1, callid="c4"),
    ev(110, "EXITWITHTIMEOUT", "500", "NONE", 1, 1, 60, callid="c4"),
    ev(60, "ENTERQUEUE", "501", "NONE", "1008", 1, callid="c5"),
    ev(62, "EXITWITHKEY", "501", "NONE", "1", 1, 1, 2, callid="c5"),
    ev(70, "FULL", "501", callid="c6"),
]


def test_queue_statistics_count_offered_answered_abandoned_and_the_service_level():
    stats = queue_stats(sorted(DAY, key=lambda e: e.time), {"500": 20})
    s = stats["500"]
    assert (s.offered, s.answered, s.abandoned, s.timed_out) == (4, 2, 1, 1)
    assert s.within_service_level == 1 and s.service_level == 0.25
    assert s.average_wait == 20 and s.longest_wait == 60
    assert s.average_talk == 90
    t = stats["501"]
    assert (t.offered, t.exited_with_key, t.refused, t.service_level) == (1, 1, 1, 0.0)


def test_agent_statistics_count_calls_missed_offers_talk_time_and_occupancy():
    events = sorted(DAY + [ev(-100, "AGENTLOGIN", "500", "1003"), ev(200, "AGENTLOGOFF", "500", "1003"),
                           ev(100, "PAUSE", "", "1001", "lunch")], key=lambda e: e.time)
    agents = agent_stats(events, NOW - 1000, NOW + 1000, static_members={"500": ["1001", "1002"]})
    assert (agents["1001"].answered, agents["1001"].talk) == (1, 60)
    assert agents["1001"].logged_in == 2000 and agents["1001"].paused == 900   # paused to the period's end
    assert agents["1001"].occupancy == pytest.approx(60 / 1100)
    assert agents["1002"].not_answered == 1 and agents["1002"].occupancy == 0
    assert agents["1003"].logged_in == 300 and agents["1003"].occupancy == pytest.approx(120 / 300)


def test_an_agent_whose_first_event_is_a_logoff_was_logged_in_from_the_start_of_the_period():
    agents = agent_stats([ev(50, "AGENTLOGOFF", "500", "1004")], NOW, NOW + 100)
    assert agents["1004"].logged_in == 50


def test_daily_and_hourly_series_for_the_charts():
    events = sorted(DAY, key=lambda e: e.time)
    day = datetime.fromtimestamp(NOW, timezone.utc).date()
    days = daily(events, timezone.utc, day, day)
    assert days == [{"day": day.isoformat(), "offered": 5, "answered": 2, "abandoned": 1}]
    hours = hourly(events, timezone.utc)
    assert sum(h["offered"] for h in hours) == 5 and len(hours) == 24
    assert daily([], timezone.utc, date(2026, 1, 30), date(2026, 2, 2))[-1]["day"] == "2026-02-02"


def test_the_queue_log_keeps_events_in_sqlite_beside_the_cdrs(tmp_path):
    with QueueLog(tmp_path) as log:
        log.write("500", "ENTERQUEUE", callid="x", data=("1000", 1), at=NOW)
        log.write("500", "CONNECT", callid="x", agent="1001", data=(4, "", 2), at=NOW + 4)
        log.write("501", "AGENTLOGIN", agent="1002", at=NOW + 5)
        with pytest.raises(ValueError, match="ENTERQUEUE"):
            log.write("500", "ENTERED")
    assert (tmp_path / "queue_log.sqlite").exists()
    with QueueLog(tmp_path) as log:
        rows = log.events(NOW, NOW + 10, queue="500")
    assert [(r.event, r.agent, r.data1) for r in rows] == [("ENTERQUEUE", "NONE", "1000"), ("CONNECT", "1001", "4")]
