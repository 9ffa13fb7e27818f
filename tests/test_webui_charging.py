"""Call charging and reports pages: sheet import (line by line problems, type and size checks,
versions), trunk assignments, spend limits, the dashboard's alert banner, the user's spend, and
the reports (tables, CSV, printable view, REST API) over a history rated by the rating code."""
import csv
import io
import time
from decimal import Decimal

import pytest

from firmware.cdr import CallRecord, CdrStore, Disposition
from firmware.config import ConfigStore
from firmware.features.charging import ASSIGNMENTS, LIMITS
from services import charging
from tests.browser.webui_env import api, form_error, make_app, post, user_client
from tests.charging_history import make_history


@pytest.fixture
def store(data):
    s = ConfigStore(data)
    s.update_settings(timezone="Europe/London")
    s.add_extension("1000", "Alice")
    s.add_trunk("carrier", "127.0.0.1:5099", register=False)
    return s


@pytest.fixture
def app(data, store):
    return make_app(data, STATUS_POLL_SECONDS=0.05, STREAM_MAX_SECONDS=2.0)


BAD_SHEET = b"""# sheet: acme
# currency: GBP
prefix,description,type,rate_per_min,connection,increment,minimum,offpeak_rate,weekend_rate,blocked
07,Mobile,mobile,0.0055,0,60/60,0,,,no
01,Landline,landline,0,18p,0,1/1,0,,,no
02,Landline,fixed,0.0018,0,1/1,0,,,no
"""


def test_an_import_lists_each_refused_line_with_the_reason_and_keeps_versions(admin, data):
    r = post(admin, "/charging/import", {"file": (io.BytesIO(BAD_SHEET), "acme.csv")},
             content_type="multipart/form-data")
    assert r.status_code == 200
    assert "Imported acme.csv as acme@1: 1 rates, 2 line(s) refused" in r.text
    assert "line 5: connection &#39;18p&#39; is not a decimal number" in r.text
    assert "line 6: type &#39;fixed&#39; is not one of" in r.text
    r = post(admin, "/charging/import", {"file": (io.BytesIO(BAD_SHEET), "acme.csv")},
             content_type="multipart/form-data")
    assert "as acme@2" in r.text and charging.SheetStore(data).versions("acme") == [1, 2]
    assert admin.get("/charging/sheet/acme/v1.csv").data == BAD_SHEET


def test_an_upload_of_the_wrong_type_or_without_rows_is_refused_and_nothing_is_stored(admin, data):
    r = post(admin, "/charging/import", {"file": (io.BytesIO(b"\x89PNG..."), "rates.png")},
             content_type="multipart/form-data")
    assert r.status_code == 400 and "rates.png is not a CSV file" in r.text
    r = post(admin, "/charging/import", {"file": (io.BytesIO(b"# sheet: x\n# currency: GBP\n" + BAD_SHEET.splitlines()[2]
                                                             + b"\n"), "x.csv")},
             content_type="multipart/form-data")
    assert r.status_code == 400 and "no usable rows" in r.text
    r = post(admin, "/charging/import", {"file": (io.BytesIO(b"\xff\xfe" * 100), "x.csv")},
             content_type="multipart/form-data")
    assert r.status_code == 400 and "not UTF-8" in r.text
    assert charging.SheetStore(data).names() == []


def test_a_trunk_is_given_a_sheet_and_limits_are_checked_field_by_field(admin, store, data):
    post(admin, "/charging/import", {"example": "1"})
    r = post(admin, "/charging/assign", {"trunk": "carrier", "sheet": "uk-example", "version": "0"})
    assert r.status_code == 302 and store.record(ASSIGNMENTS, "carrier").sheet == "uk-example"
    r = post(admin, "/charging/assign", {"trunk": "carrier", "sheet": "nope"})
    assert r.status_code == 400 and "there is no rate sheet nope" in r.text
    r = post(admin, "/charging/limits", {"scope": "1000", "per_day": "1,50", "per_month": "", "email": "not mail"})
    assert r.status_code == 400
    assert "is not an amount" in form_error(r.text, "per_day") and "not an e-mail" in form_error(r.text, "email")
    r = post(admin, "/charging/limits", {"scope": "1000", "per_day": "0.01", "per_month": "20", "email": "boss@example.com"})
    assert r.status_code == 302
    assert store.record(LIMITS, "1000").limit().per_day == Decimal("0.01")
    page = admin.get("/charging").text
    assert "Extension 1000" in page and "example: replace with your carrier" in page


def test_alerts_show_on_the_dashboard_until_dismissed(admin, data):
    charging.add_alert(data, "limit", "1000 called 07700900556 and was refused: call limit reached", scope="1000")
    page = admin.get("/dashboard").text
    assert 'id="charging-banner"' in page and "call limit reached" in page
    assert post(admin, "/charging/alerts/dismiss", {"next": "/dashboard"}).status_code == 302
    assert charging.alerts(data) == []


def test_the_user_sees_what_their_extension_spent_this_month(app, admin, data, store):
    now = time.time()
    with CdrStore(data) as cdr:
        for i, cost in enumerate(("0.01100", "0.00177")):
            cdr.write(CallRecord(f"c{i}", "1000", "07811123456", now - 100, now - 90, now - 30, Disposition.ANSWERED,
                                 src_kind="extension", dst_kind="trunk", dst_trunk="carrier", cost=Decimal(cost),
                                 currency="GBP", rate="0.0055", dest_type="mobile", sheet_version="uk-example@1"))
    client = user_client(app, "1000")
    page = client.get("/me").text
    assert "Spent this month on outside calls: <strong>0.01277 GBP</strong> (2 calls)" in page


def test_reports_tables_csv_print_and_api_agree_over_a_rated_history(admin, data):
    history = make_history(data, n=2000, days=40)
    r = admin.get("/reports?group=week")
    assert r.status_code == 200
    page = r.text
    for section in ("t-periods", "t-extensions", "t-dest-types", "t-trunks", "t-top", "t-hours", "chart-periods"):
        assert f'id="{section}"' in page
    report = api(admin, "GET", "/api/v1/reports?group=week").get_json()
    assert report["currency"] == "GBP" and report["group"] == "week"
    assert sum(Decimal(p["cost"]) for p in report["periods"]) == Decimal(report["totals"]["cost"])
    assert sum(Decimal(e["cost"]) for e in report["extensions"]) == Decimal(report["totals"]["cost"])
    assert f"cost <strong>{report['totals']['cost']} GBP</strong>" in page
    # the last 30 days by default: less than the 40 days of history, more than nothing
    assert 0 < Decimal(report["totals"]["cost"]) < history["total"]
    rows = list(csv.reader(io.StringIO(admin.get("/reports.csv?group=week").text)))
    assert rows[0] == ["section", "key", "detail", "calls", "answered", "minutes", "cost", "currency"]
    assert {r[0] for r in rows[1:]} >= {"periods", "extensions", "dest_types", "trunks", "top_destinations", "hours"}
    assert api(admin, "GET", "/api/v1/reports.csv?group=week").text == admin.get("/reports.csv?group=week").text
    printable = admin.get("/reports/print?group=week").text
    assert "Call report" in printable and "<nav>" not in printable and report["totals"]["cost"] in printable
    bad = api(admin, "GET", "/api/v1/reports?since=yesterday&group=year")
    assert bad.status_code == 400 and {e["field"] for e in bad.get_json()["errors"]} == {"since", "group"}


def test_pbx_cdr_rerate_rates_the_history_again_after_a_sheet_change(data, store, capsys):
    from services.cli import main
    history = make_history(data, n=300, days=10)
    cheap = charging.EXAMPLE.read_text().replace("07,UK mobile,mobile,0.0055", "07,UK mobile,mobile,0.0011")
    charging.SheetStore(data).import_text(cheap)
    store.add_record(ASSIGNMENTS, __import__("firmware.features.charging", fromlist=["x"]).RateAssignment("*", "uk-example"))
    day = time.strftime("%Y-%m-%d", time.localtime(history["since"] - 86400))
    assert main(["cdr", "rerate", "--from", day, "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "re-rated 300 call records" in out
    with CdrStore(data) as cdr:
        mobiles = [r for r in cdr.query(limit=1000) if r.dest_type == "mobile" and r.billsec]
    assert mobiles and all(r.rate == "0.0011" and r.sheet_version == "uk-example@1" for r in mobiles)


def test_reports_group_cost_per_department_set_on_the_extension_page(admin, data, store):
    store.add_extension("1001", "Bob")
    r = post(admin, "/extensions/1000", {"name": "Alice", "call_handling": "1", "department": "Sales"})
    assert r.status_code == 302, r.text
    assert store.get_extension("1000").department == "Sales"
    assert api(admin, "GET", "/api/v1/extensions/1000").get_json()["department"] == "Sales"
    r = api(admin, "PATCH", "/api/v1/extensions/1001", json={"department": "Support"})
    assert r.status_code == 200 and store.get_extension("1001").department == "Support"
    make_history(data, n=300, days=10, extensions=("1000", "1001"))
    report = api(admin, "GET", "/api/v1/reports").get_json()
    by_dept = {d["key"]: Decimal(d["cost"]) for d in report["departments"]}
    by_ext = {e["key"]: Decimal(e["cost"]) for e in report["extensions"]}
    assert by_dept == {"Sales": by_ext["1000"], "Support": by_ext["1001"]}
    page = admin.get("/reports").text
    assert 'id="t-departments"' in page and 'id="chart-departments"' in page
    bad = post(admin, "/extensions/1000", {"name": "Alice", "call_handling": "1", "department": "x" * 41})
    assert bad.status_code == 400 and "shorten it to at most 40" in form_error(bad.text, "department")
