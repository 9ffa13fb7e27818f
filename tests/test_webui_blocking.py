"""Call blocking page: block and unblock callers, bar prefixes, see the calls that were blocked."""
import time

import pytest

from firmware.cdr import CallRecord, CdrStore, Disposition
from firmware.config import ConfigStore
from firmware.features.blocking import INBOUND, OUTBOUND
from tests.browser.webui_env import admin_client, form_error, make_app, post


@pytest.fixture
def admin(data):
    return admin_client(make_app(data, STATUS_POLL_SECONDS=0.05, STREAM_MAX_SECONDS=2.0), data)


@pytest.fixture
def store(data):
    return ConfigStore(data)


def test_block_a_caller_then_unblock_it(admin, store):
    r = post(admin, "/blocking/callers", {"match": "07700 900123", "action": "busy", "note": "sales calls"})
    assert r.status_code == 302
    assert store.record(INBOUND, "07700900123").action == "busy"
    page = admin.get("/blocking").text
    assert "07700900123" in page and "Busy tone" in page and "sales calls" in page
    post(admin, "/blocking/callers/delete", {"match": "07700900123"})
    assert store.records(INBOUND) == []


def test_bad_block_entries_are_explained_at_their_field(admin, store):
    r = post(admin, "/blocking/callers", {"match": "call me", "action": "voicemail", "destination": ""})
    assert r.status_code == 400
    assert "prefix ending in *" in form_error(r.text, "match")
    assert "is empty" in form_error(r.text, "destination")
    r = post(admin, "/blocking/prefixes", {"prefix": "09", "allowed": "1999"})
    assert r.status_code == 400 and "no extension 1999" in form_error(r.text, "allowed")
    assert store.records(INBOUND) == [] and store.records(OUTBOUND) == []


def test_usual_prefixes_are_barred_with_one_click_and_allowed_extensions_kept(admin, store):
    store.add_extension("201", "Boss")
    post(admin, "/blocking/prefixes/usual", {})
    assert [p.prefix for p in store.records(OUTBOUND)] == ["00", "09"]
    post(admin, "/blocking/prefixes/delete", {"prefix": "00"})
    post(admin, "/blocking/prefixes", {"prefix": "00", "label": "International", "allowed": "201"})
    assert store.record(OUTBOUND, "00").allowed == ("201",)


def test_recent_blocked_calls_come_from_the_call_records(admin, data):
    cdr = CdrStore(data)
    now = time.time()
    cdr.write(CallRecord("b1", "07700900123", "02071234567", now - 60, None, now - 59, Disposition.FAILED,
                         cause="403 caller 07700900123 blocked by the entry '07700900123' (reject)"))
    cdr.write(CallRecord("ok1", "07700900999", "02071234567", now - 50, now - 49, now - 10, Disposition.ANSWERED))
    cdr.close()
    page = admin.get("/blocking").text
    section = page[page.index('id="blocked-calls"'):]
    assert "07700900123" in section and "07700900999" not in section
