"""Line ports page: what `pbx line add|list|rm` does, with the port's live state from the PBX."""
import re

import pytest

from firmware.config import ConfigStore
from tests.browser.webui_env import control_socket, form_error, post


@pytest.fixture
def store(data):
    s = ConfigStore(data)
    s.add_extension("201", "Reception")
    s.add_extension("301", "Fax corner")
    s.add_extension("390", "Exchange line")
    return s


def test_line_ports_are_added_edited_and_deleted_after_a_confirmation(admin, store, app):
    assert 'href="/lines"' in admin.get("/dashboard").text
    r = post(admin, "/lines/new", {"number": "1", "kind": "fxs", "extension": "301", "name": "fax"})
    assert r.status_code == 302 and r.location.endswith("/lines")
    r = post(admin, "/lines/new", {"number": "2", "kind": "fxo", "extension": "390", "destination": "201"})
    assert r.status_code == 302
    assert [(p.number, p.kind, p.extension, p.destination) for p in store.line_ports()] == [
        (1, "fxs", "301", ""), (2, "fxo", "390", "201")]
    page = admin.get("/lines").text
    assert "Fax corner" in page and re.search(r'<tr id="port-2">.*?201', page, re.S)
    assert post(admin, "/lines/2", {"kind": "fxo", "extension": "390", "destination": "301"}).status_code == 302
    assert store.get_line_port(2).destination == "301"
    confirm = admin.get("/lines/2/delete").text
    assert "Delete line port 2" in confirm and "no longer ring 301" in confirm
    assert store.get_line_port(2) is not None                 # asking deletes nothing
    assert post(admin, "/lines/2/delete").status_code == 302
    assert store.get_line_port(2) is None
    assert [a.event for a in app.extensions["pbx.accounts"].audit_log(4)][:1] == ["line_port_removed"]


def test_line_port_form_names_each_problem_at_its_field(admin, store):
    r = post(admin, "/lines/new", {"number": "x", "kind": "fxs", "extension": "301"})
    assert "not a port number" in form_error(r.text, "number")
    r = post(admin, "/lines/new", {"number": "40", "kind": "isdn", "extension": "999"})
    assert r.status_code == 400
    assert "port number 1-32" in form_error(r.text, "number")
    assert "not a port kind" in form_error(r.text, "kind")
    r = post(admin, "/lines/new", {"number": "2", "kind": "fxo", "extension": "390", "destination": ""})
    assert "needs the extension its incoming calls ring" in form_error(r.text, "destination")
    post(admin, "/lines/new", {"number": "1", "kind": "fxs", "extension": "301"})
    r = post(admin, "/lines/new", {"number": "3", "kind": "fxs", "extension": "301"})
    assert "already line port 1's account" in form_error(r.text, "extension")
    r = post(admin, "/lines/new", {"number": "1", "kind": "fxs", "extension": "201"})
    assert "already exists" in form_error(r.text, "number")
    assert [p.number for p in store.line_ports()] == [1]


def test_line_port_state_is_the_registration_of_its_account_and_hook_state_unknown(admin, store, data):
    store.add_line_port(1, "fxs", "301")
    store.add_line_port(2, "fxo", "390", "201")
    row = lambda html, n: re.search(rf'<tr id="port-{n}">.*?</tr>', html, re.S).group(0)  # noqa: E731
    html = admin.get("/lines").text
    assert "PBX not running" in html and ">unknown<" in row(html, 1)
    status = {"uptime": 5, "version": "t", "calls": [], "trunks": [],
              "registrations": [{"aor": "sip:301@pbx", "contact": "sip:301@127.0.0.1:5070",
                                 "expires": 60, "user_agent": "pbx-lines", "transport": "udp"}]}
    with control_socket(data, status):
        html = admin.get("/lines").text
    assert ">registered<" in row(html, 1) and ">not registered<" in row(html, 2)
    assert ">unknown<" in row(html, 1)            # hook state: the services do not report it
