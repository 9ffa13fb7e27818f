"""Specification of the call detail record store (firmware/cdr.py)."""
import math
import os
import select
import sqlite3
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path

import pytest

from firmware.cdr import MIGRATIONS, SCHEMA_VERSION, CallRecord, CdrStore, Disposition, whole_seconds
from firmware.config import SchemaVersionError, ValidationError

REPO = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000.0


def answered(call_id="c1", src="1000", dst="1001", start=T0, answer=T0 + 3.0, end=T0 + 65.4, **kw):
    legs = [{"leg": "a", "peer": src, "call_id": call_id + "-a", "codec": "PCMU", "final": 200,
             "hangup_by": "caller"},
            {"leg": "b", "peer": dst, "call_id": call_id + "-b", "codec": "PCMU", "final": 200}]
    return CallRecord(call_id, src, dst, start, answer, end, Disposition.ANSWERED, legs, **kw)


def busy(call_id="c2", src="1000", dst="1002", start=T0 + 100, end=T0 + 104):
    return CallRecord(call_id, src, dst, start, None, end, Disposition.BUSY, [], cause="486 Busy Here")


@pytest.fixture
def store(tmp_path):
    s = CdrStore(tmp_path)
    yield s
    s.close()


def test_record_round_trips_with_legs_cause_and_cost(store, tmp_path):
    rec = answered(cause="normal clearing", cost=0.125)
    store.write(rec)
    with CdrStore(tmp_path) as other:
        assert other.last() == [rec]
    got = store.last(1)[0]
    assert got.legs[1]["peer"] == "1001" and got.disposition is Disposition.ANSWERED


def test_duration_and_billsec_follow_answer_and_end_times():
    rec = answered(start=T0, answer=T0 + 3.0, end=T0 + 65.4)
    assert rec.duration == 65 and rec.billsec == 62
    assert math.isclose(rec.end - rec.start, 65.4, abs_tol=1e-3)    # the exact times are kept
    assert busy(start=T0, end=T0 + 4).duration == 4 and busy().billsec == 0


def test_billsec_never_exceeds_duration_one_rounding_rule_for_both():
    # issue 8 section 8: 1.51 s of talk was billsec 2 against a duration of 1.526
    rec = answered(start=T0, answer=T0 + 0.016, end=T0 + 1.526)
    assert (rec.duration, rec.billsec) == (2, 2)
    assert isinstance(rec.duration, int) and isinstance(rec.billsec, int)
    # half a second and more rounds up, less rounds down, for both (round() would give 2 and 0 here)
    assert whole_seconds(T0, T0 + 2.5) == 3 and whole_seconds(T0, T0 + 0.5) == 1
    assert whole_seconds(T0, T0 + 0.499) == 0 and whole_seconds(T0, T0) == 0
    for talk_ms in range(0, 3000, 7):
        for setup_ms in (0, 1, 16, 499, 500, 501, 999):
            r = answered(start=T0, answer=T0 + setup_ms / 1000, end=T0 + (setup_ms + talk_ms) / 1000)
            assert r.billsec <= r.duration, (setup_ms, talk_ms)


def test_disposition_names_match_asterisk_cdr():
    assert [d.value for d in Disposition] == ["ANSWERED", "BUSY", "NO ANSWER", "FAILED", "CANCELLED"]
    assert CallRecord("c", "1000", "1001", T0, None, T0 + 30, "NO ANSWER").disposition is Disposition.NO_ANSWER


def test_last_returns_newest_first_and_honours_n(store):
    for i in range(5):
        store.write(busy(call_id=f"c{i}", start=T0 + i * 10, end=T0 + i * 10 + 4))
    assert [r.call_id for r in store.last(3)] == ["c4", "c3", "c2"]
    assert len(store.last()) == 5


def test_query_filters_by_time_extension_and_disposition(store):
    store.write(answered("a1", src="1000", dst="1001", start=T0, answer=T0 + 1, end=T0 + 10))
    store.write(busy("b1", src="1001", dst="1002", start=T0 + 100, end=T0 + 104))
    store.write(CallRecord("n1", "1002", "1000", T0 + 200, None, T0 + 230, Disposition.NO_ANSWER))
    store.write(CallRecord("x1", "1003", "07700900123", T0 + 300, None, T0 + 301, Disposition.FAILED,
                           cause="503 Service Unavailable"))

    def ids(**kw):
        return [r.call_id for r in store.query(**kw)]

    assert ids() == ["x1", "n1", "b1", "a1"]
    assert ids(extension="1000") == ["n1", "a1"]          # as caller or as callee
    assert ids(since=T0 + 100, until=T0 + 300) == ["n1", "b1"]
    assert ids(since=datetime.fromtimestamp(T0 + 200, timezone.utc)) == ["x1", "n1"]
    assert ids(disposition=Disposition.BUSY) == ["b1"]
    assert ids(disposition="NO ANSWER", extension="1000") == ["n1"]
    assert ids(limit=2) == ["x1", "n1"]


def test_negative_duration_is_refused():
    with pytest.raises(ValidationError, match="before start: negative duration") as exc:
        CallRecord("c", "1000", "1001", T0, None, T0 - 5, Disposition.CANCELLED)
    assert exc.value.field == "end"


def test_unknown_disposition_is_refused_listing_the_known_ones():
    with pytest.raises(ValidationError, match="unknown disposition 'HUNG UP'; use one of ANSWERED, BUSY"):
        CallRecord("c", "1000", "1001", T0, None, T0 + 5, "HUNG UP")


def test_record_changed_into_a_bad_one_is_not_written(store):
    rec = busy()
    rec.end = rec.start - 1
    with pytest.raises(ValidationError):
        store.write(rec)
    assert store.last() == []


@pytest.mark.parametrize("kw, field", [
    (dict(answer=None), "disposition"),                   # ANSWERED needs an answer time
    (dict(answer=T0 - 1), "answer"),                      # answered before the call started
    (dict(start=float("nan")), "start"),
    (dict(start="yesterday"), "start"),
    (dict(src=""), "src"),
    (dict(cost=-0.5), "cost"),
])
def test_bad_values_are_refused_naming_the_field(kw, field):
    with pytest.raises(ValidationError) as exc:
        answered(**kw)
    assert field in [e.field for e in exc.value.errors]


def test_unanswered_call_must_not_carry_an_answer_time():
    with pytest.raises(ValidationError, match="only ANSWERED calls have one"):
        CallRecord("c", "1000", "1001", T0, T0 + 1, T0 + 5, Disposition.BUSY)


def test_legs_must_be_json_dicts():
    with pytest.raises(ValidationError, match="legs"):
        CallRecord("c", "1000", "1001", T0, None, T0 + 5, Disposition.BUSY, legs=[{"peer": object()}])
    with pytest.raises(ValidationError, match="legs"):
        CallRecord("c", "1000", "1001", T0, None, T0 + 5, Disposition.BUSY, legs=["a"])


def test_bad_query_arguments_are_refused(store):
    with pytest.raises(ValidationError, match="unknown disposition"):
        store.query(disposition="LOST")
    with pytest.raises(ValidationError, match="limit"):
        store.query(limit=0)
    with pytest.raises(ValidationError, match="time zone"):
        store.query(since=datetime(2024, 1, 1))


def test_database_uses_wal_and_records_its_schema_version(store):
    db = sqlite3.connect(store.path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        db.close()


def test_database_from_newer_firmware_refuses_to_open(tmp_path):
    db = sqlite3.connect(tmp_path / "cdr.sqlite")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(SchemaVersionError, match=f"knows up to {SCHEMA_VERSION}; update the firmware"):
        CdrStore(tmp_path)


def test_writer_and_reader_processes_work_at_the_same_time(tmp_path):
    writer = """
        import sys
        from firmware.cdr import CallRecord, CdrStore, Disposition
        store = CdrStore(sys.argv[1])
        first = int(sys.argv[2])
        for i in range(first, first + 150):
            store.write(CallRecord(f"c{i}", "1000", "1001", 1e9 + i, None, 1e9 + i + 1, Disposition.BUSY))
        print("done", flush=True)
    """
    reader = """
        import sys, time
        from firmware.cdr import CdrStore
        store = CdrStore(sys.argv[1])
        deadline, seen = time.monotonic() + 30, 0
        while seen < 300 and time.monotonic() < deadline:
            seen = len(store.query(limit=1000))
        print(seen, flush=True)
    """
    CdrStore(tmp_path).close()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), str(tmp_path), *args], env=env,
                              text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for code, args in ((reader, []), (writer, ["0"]), (writer, ["1000"]))]
    try:
        outputs = []
        for p in procs:
            ready, _, _ = select.select([p.stdout], [], [], 60)
            assert ready, "child hung"
            outputs.append(p.stdout.readline().strip())
    finally:
        for p in procs:
            p.kill()
            _, err = p.communicate(timeout=10)
            assert "Traceback" not in err, err
    assert outputs == ["300", "done", "done"]
    with CdrStore(tmp_path) as store:
        assert len(store.query()) == 300


def test_write_many_stores_a_batch_in_one_transaction_and_a_bad_record_stores_none(tmp_path):
    store = CdrStore(tmp_path)
    good = [CallRecord(call_id=f"b{i}", src="1000", dst="1001", start=1000.0 + i, answer=None,
                       end=1001.0 + i, disposition=Disposition.BUSY) for i in range(3)]
    store.write_many(good)
    assert {r.call_id for r in store.last(10)} == {"b0", "b1", "b2"}
    bad = CallRecord(call_id="bad", src="1000", dst="1001", start=10.0, answer=None, end=20.0,
                     disposition=Disposition.BUSY)
    bad.end = 5.0  # ends before it starts
    with pytest.raises(ValueError):
        store.write_many([CallRecord(call_id="ok", src="1000", dst="1001", start=1.0, answer=None,
                                     end=2.0, disposition=Disposition.BUSY), bad])
    assert "ok" not in {r.call_id for r in store.last(10)}
    store.close()


# Schema version 2: calls with many legs (linkedid, kinds, trunks, forward, transfer) ------------------
def forwarded_to_mobile(**kw):
    return answered("c9", src="1000", dst="907700900123", linkedid="c9", seq=2, src_kind="extension",
                    dst_kind="trunk", dst_trunk="carrier", external_number="07700900123",
                    forwarded_from="201", transfer="blind", transferred_by="1001", **kw)


def test_new_fields_round_trip_and_default_for_todays_callers(store):
    rec = forwarded_to_mobile()
    plain = answered("c1")
    store.write_many([plain, rec])
    got = {r.call_id: r for r in store.last()}
    assert got["c9"] == rec and got["c1"] == plain
    assert (plain.linkedid, plain.seq, plain.src_kind, plain.dst_trunk, plain.transfer) == ("c1", 1, "", "", "")


def test_query_by_linkedid_gives_the_rows_of_one_call(store):
    store.write(answered("a-leg", linkedid="L1", seq=1, start=T0, answer=T0 + 1, end=T0 + 10))
    store.write(answered("a-leg", src="1000", dst="1002", linkedid="L1", seq=2, start=T0 + 9, answer=T0 + 12,
                         end=T0 + 30, transfer="blind", transferred_by="1001"))
    store.write(answered("other", start=T0 + 5, answer=T0 + 6, end=T0 + 7))
    assert [(r.seq, r.dst) for r in store.query(linkedid="L1")] == [(2, "1002"), (1, "1001")]


@pytest.mark.parametrize("kw, field", [
    (dict(seq=0), "seq"),
    (dict(seq=True), "seq"),
    (dict(src_kind="mobile"), "src_kind"),
    (dict(dst_kind="phone"), "dst_kind"),
    (dict(transfer="sideways"), "transfer"),
    (dict(dst_trunk="x" * 256), "dst_trunk"),
    (dict(external_number="0770\n0"), "external_number"),
    (dict(forwarded_from=None), "forwarded_from"),
])
def test_bad_new_fields_are_refused_naming_the_field(kw, field):
    with pytest.raises(ValidationError) as exc:
        answered(**kw)
    assert field in [e.field for e in exc.value.errors]


def _version_1_file(tmp_path):
    """A cdr.sqlite as firmware before schema version 2 left it, with two calls in it."""
    db = sqlite3.connect(tmp_path / "cdr.sqlite")
    for statement in MIGRATIONS[0]:
        db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO calls (call_id, src, dst, start_time, answer_time, end_time, disposition, legs, cause)"
               " VALUES ('old1', '1000', '1001', ?, ?, ?, 'ANSWERED', '[{\"leg\": \"a\"}]', 'hangup by caller')",
               (T0, T0 + 2, T0 + 30))
    db.execute("INSERT INTO calls (call_id, src, dst, start_time, answer_time, end_time, disposition, cause)"
               " VALUES ('old2', '1001', '1002', ?, NULL, ?, 'BUSY', '486 Busy Here')", (T0 + 60, T0 + 64))
    db.commit()
    db.close()


def test_todays_rows_migrate_each_its_own_call(tmp_path):
    _version_1_file(tmp_path)
    with CdrStore(tmp_path) as store:
        old2, old1 = store.last()
        assert (old1.call_id, old1.linkedid, old1.seq, old1.legs, old1.billsec) == ("old1", "old1", 1, [{"leg": "a"}], 28)
        assert (old2.linkedid, old2.disposition, old2.cause) == ("old2", Disposition.BUSY, "486 Busy Here")
        for rec in (old1, old2):
            assert (rec.src_kind, rec.dst_kind, rec.src_trunk, rec.dst_trunk, rec.external_number,
                    rec.forwarded_from, rec.transfer, rec.transferred_by) == ("",) * 8
        assert [r.call_id for r in store.query(linkedid="old1")] == ["old1"]
        store.write(forwarded_to_mobile())                 # and new rows go in beside them
        assert len(store.last()) == 3
    db = sqlite3.connect(tmp_path / "cdr.sqlite")
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 2
        assert "calls_linkedid" in {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    finally:
        db.close()


def test_a_migration_that_fails_leaves_the_file_at_version_1(tmp_path, monkeypatch):
    import firmware.cdr as cdr
    _version_1_file(tmp_path)
    monkeypatch.setattr(cdr, "MIGRATIONS", [MIGRATIONS[0], MIGRATIONS[1] + ("SELECT no_such_column FROM calls",)])
    with pytest.raises(Exception):
        CdrStore(tmp_path)
    db = sqlite3.connect(tmp_path / "cdr.sqlite")
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
        assert "linkedid" not in [r[1] for r in db.execute("PRAGMA table_info(calls)")]
    finally:
        db.close()


# The CDR page, its CSV export and `pbx cdr` show the new fields -----------------------------------
def _transferred_call(data):
    """1000 called 201, forwarded to a mobile over trunk carrier; 201's mobile then blind-transferred to 1002."""
    base = T0
    rows = [answered("L7", src="1000", dst="07700900123", start=base, answer=base + 8, end=base + 40,
                     linkedid="L7", seq=1, dst_kind="trunk", dst_trunk="carrier",
                     external_number="+447700900123", forwarded_from="201"),
            answered("L7", src="1000", dst="1002", start=base + 40, answer=base + 45, end=base + 100,
                     linkedid="L7", seq=2, transfer="blind", transferred_by="07700900123"),
            answered("plain", start=base + 200, answer=base + 201, end=base + 210)]
    with CdrStore(data) as cdr:
        cdr.write_many(rows)


def test_cdr_page_shows_trunk_forward_and_transfer_and_links_the_parts_of_a_call(tmp_path):
    from tests.browser.webui_env import admin_client, make_app
    data = tmp_path / "data"
    _transferred_call(data)
    admin = admin_client(make_app(data), data)
    html = admin.get("/cdr").text
    assert "via trunk carrier as +447700900123 · forwarded from 201" in html
    assert "blind transfer by 07700900123" in html
    assert html.count('href="/cdr?linkedid=L7"') == 2 and "part 2 of 2" in html and "part 1 of 2" in html
    plain_row = next(r for r in html.split("<tr>") if "0:09" in r or "9 s" in r)
    assert "part " not in plain_row                                  # a one-row call has no parts link
    one_call = admin.get("/cdr?linkedid=L7").text
    assert "<strong>2</strong> calls match these filters" in one_call and 'id="f-linkedid"' in one_call
    assert admin.get("/cdr?linkedid=%01bad").status_code == 400


def test_cdr_csv_keeps_its_old_columns_first_and_adds_the_new_fields(tmp_path):
    import csv
    import io
    from tests.browser.webui_env import admin_client, make_app
    data = tmp_path / "data"
    _transferred_call(data)
    admin = admin_client(make_app(data), data)
    rows = list(csv.DictReader(io.StringIO(admin.get("/cdr/export.csv").text)))
    assert list(rows[0])[:11] == ["call_id", "src", "dst", "start", "answer", "end", "duration", "billsec",
                                  "disposition", "cause", "cost"]
    by_seq = {(r["linkedid"], r["seq"]): r for r in rows}
    fwd, xfer = by_seq[("L7", "1")], by_seq[("L7", "2")]
    assert (fwd["dst_kind"], fwd["dst_trunk"], fwd["external_number"], fwd["forwarded_from"]) == (
        "trunk", "carrier", "+447700900123", "201")
    assert (xfer["transfer"], xfer["transferred_by"], xfer["billsec"], xfer["duration"]) == (
        "blind", "07700900123", "55", "60")
    assert by_seq[("plain", "1")]["transfer"] == "" and by_seq[("plain", "1")]["dst_trunk"] == ""


def test_pbx_cdr_shows_a_details_column_only_when_a_call_has_details(tmp_path, capsys):
    import json as json_
    from firmware.config import ConfigStore
    from services.cli import main
    data = tmp_path / "data"
    ConfigStore(data)
    with CdrStore(data) as cdr:
        cdr.write(answered("plain"))
    assert main(["cdr", "--data", str(data)]) == 0
    assert capsys.readouterr().out.splitlines()[0].split() == [
        "start", "src", "dst", "disposition", "dur", "bill", "cause"]
    _transferred_call(data)
    assert main(["cdr", "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[-1] == "details"
    assert "via trunk carrier as +447700900123, forwarded from 201" in out
    assert "blind transfer by 07700900123" in out
    assert main(["cdr", "--json", "--data", str(data)]) == 0
    got = {(r["linkedid"], r["seq"]): r for r in json_.loads(capsys.readouterr().out)}
    assert got[("L7", 1)]["dst_trunk"] == "carrier" and got[("L7", 2)]["transfer"] == "blind"
    assert isinstance(got[("L7", 2)]["duration"], int)
