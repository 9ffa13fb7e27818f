"""Call queue pages and API over the Flask test client: the queue form (and its errors), the
statistics page, CSV export and REST API over a real queue log, the wallboard's state from the
PBX's control socket, and the agent's own page logging in, out and pausing."""
import csv
import io
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from firmware.features.queues import AgentLogin, Queue, QueueMember
from firmware.queue_log import QueueLog
from tests.browser.webui_env import admin_client, api, control_socket, form_error, make_app, post, user_client


@pytest.fixture
def app(tmp_path):
    app = make_app(tmp_path)
    app.config["DATA_DIR_PATH"] = tmp_path
    return app


@pytest.fixture
def admin(app, tmp_path):
    from firmware.config import ConfigStore
    store = ConfigStore(tmp_path)
    for n in ("1000", "1001", "1002", "1003"):
        store.add_extension(n, f"Ext {n}")
    store.add_record("queues", Queue("500", "Sales", "least_recent", (QueueMember("1001"), QueueMember("1002", 1)),
                                     service_level=20))
    return admin_client(app, tmp_path)


def fill_log(data_dir):
    now = time.time() - 600
    with QueueLog(data_dir) as log:
        log.write("500", "ENTERQUEUE", callid="a", data=("1000", 1), at=now)
        log.write("500", "CONNECT", callid="a", agent="1001", data=(8, "", 2), at=now + 8)
        log.write("500", "COMPLETECALLER", callid="a", agent="1001", data=(8, 50, 1), at=now + 58)
        log.write("500", "ENTERQUEUE", callid="b", data=("1003", 1), at=now + 100)
        log.write("500", "ABANDON", callid="b", data=(1, 1, 30), at=now + 130)


FORM = {"number": "501", "name": "Support", "strategy": "fewest_calls", "members": "1001\n1003 2",
        "agent_timeout": "15", "retry": "5", "wrap_up": "10", "max_no_answer": "3", "max_wait": "120",
        "max_callers": "0", "announce_every": "30", "periodic_every": "60", "service_level": "30",
        "announce_position": "on", "announce_wait": "on", "join_empty": "on", "exit_key": "1",
        "exit_destination_kind": "extension", "exit_destination_extension": "1000",
        "max_wait_destination_kind": "extension", "max_wait_destination_extension": "1000"}


def test_an_admin_adds_a_queue_and_a_mistake_is_named_at_its_field(admin, tmp_path):
    r = post(admin, "/queues/new", dict(FORM, members="1001\n1003 high", wrap_up="ten"))
    assert r.status_code == 400
    assert "penalty 'high'" in form_error(r.text, "members")
    assert "whole number" in form_error(r.text, "wrap_up")
    r = post(admin, "/queues/new", FORM)
    assert r.status_code == 302 and r.location.endswith("/queues/501")
    from firmware.config import ConfigStore
    q = ConfigStore(tmp_path).record("queues", "501")
    assert q.members == (QueueMember("1001"), QueueMember("1003", 2))
    assert (q.exit_key, q.exit_destination, q.max_wait, q.leave_when_empty) == ("1", "extension:1000", 120, False)
    page = admin.get("/queues").text
    assert "Support" in page and "Fewest calls" in page


def test_the_statistics_page_csv_and_api_count_from_the_queue_log(admin, tmp_path):
    fill_log(tmp_path)
    # from the day the log starts (10 min ago: yesterday, in the first minutes after midnight) to today
    from firmware.config import ConfigStore
    zone = ZoneInfo(ConfigStore(tmp_path).settings().timezone)
    since = f"from={datetime.fromtimestamp(time.time() - 600, zone).date().isoformat()}"
    page = admin.get(f"/queues/stats?{since}")
    assert page.status_code == 200
    assert 'data-queue="500"' in page.text and "50 %" in page.text      # 1 of 2 within 20 s
    rows = list(csv.DictReader(io.StringIO(admin.get(f"/queues/stats.csv?what=queues&{since}").text)))
    assert rows[0]["queue"] == "500" and (rows[0]["offered"], rows[0]["answered"], rows[0]["abandoned"]) == ("2", "1", "1")
    agents = list(csv.DictReader(io.StringIO(admin.get(f"/queues/stats.csv?what=agents&{since}").text)))
    assert {a["agent"]: a["answered"] for a in agents} == {"1001": "1", "1002": "0"}
    data = api(admin, "GET", f"/api/v1/queues/stats?{since}").get_json()
    assert data["queues"][0]["longest_wait"] == 30 and data["queues"][0]["average_talk"] == 50
    events = api(admin, "GET", f"/api/v1/queues/log?{since}").get_json()["events"]
    assert [e["event"] for e in events][:2] == ["ENTERQUEUE", "CONNECT"]


def test_a_bad_date_range_is_refused_saying_how_to_write_it(admin):
    r = admin.get("/queues/stats?from=yesterday")
    assert r.status_code == 400 and "YYYY-MM-DD" in r.text
    r = api(admin, "GET", "/api/v1/queues/stats?from=2026-03-02&to=2026-03-01")
    assert r.status_code == 400 and "swap them" in r.get_json()["error"]


def test_the_wallboard_shows_what_the_call_service_reports(admin, tmp_path):
    status = {"queues": [{"number": "500", "name": "Sales", "waiting": 2, "longest_wait": 42.0, "callers": [],
                          "agents": [{"extension": "1001", "name": "Ext 1001", "state": "on_call", "reason": ""},
                                     {"extension": "1002", "name": "Ext 1002", "state": "paused", "reason": "lunch"}]}]}
    with control_socket(tmp_path, status):
        state = api(admin, "GET", "/api/v1/queues/wallboard").get_json()
        page = admin.get("/queues/wallboard").text
    q = state["queues"][0]
    assert state["running"] and (q["waiting"], q["longest_wait"]) == (2, 42.0)
    assert [(a["extension"], a["label"]) for a in q["agents"]] == [("1001", "on call"), ("1002", "paused")]
    assert 'data-state="paused"' in page and "(lunch)" in page


def test_an_agent_logs_in_pauses_and_logs_out_from_their_own_page(app, admin, tmp_path):
    agent = user_client(app, "1003")
    page = agent.get("/queues/agent")
    assert page.status_code == 200 and 'data-queue="500"' in page.text
    assert post(agent, "/queues/agent", {"action": "login", "queue": "500"}).status_code == 302
    assert post(agent, "/queues/agent", {"action": "pause", "reason": "lunch"}).status_code == 302
    from firmware.config import ConfigStore
    assert ConfigStore(tmp_path).record("queue_agents", "1003") == AgentLogin("1003", ("500",), True, "lunch")
    assert post(agent, "/queues/agent", {"action": "unpause"}).status_code == 302
    assert post(agent, "/queues/agent", {"action": "logout", "queue": "500"}).status_code == 302
    assert ConfigStore(tmp_path).record("queue_agents", "1003") == AgentLogin("1003", (), False, "")
    with QueueLog(tmp_path) as log:
        assert [(e.event, e.agent, e.queue, e.data1) for e in log.events()] == [
            ("AGENTLOGIN", "1003", "500", ""), ("PAUSE", "1003", "", "lunch"), ("UNPAUSE", "1003", "", ""),
            ("AGENTLOGOFF", "1003", "500", "")]
    r = post(agent, "/queues/agent", {"action": "login", "queue": "599"})
    assert r.status_code == 302 and "no queue 599" in agent.get("/queues/agent").text
    assert agent.get("/queues/stats").status_code == 403           # statistics are for administrators
