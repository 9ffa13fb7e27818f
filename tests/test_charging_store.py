"""Call charging's bookkeeping (services/charging.py): rating a record of each kind, the spend ledger
per payer, sheet versions on disk, alerts and their de-duplication. Pinned times, no PBX."""
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from firmware.cdr import CallRecord, CdrStore, Disposition
from firmware.rating import parse_sheet
from firmware.rating.limits import SITE
from services import charging

LONDON = ZoneInfo("Europe/London")
NOON = datetime(2026, 11, 25, 12, 0, tzinfo=LONDON).timestamp()
SHEET = replace(parse_sheet(charging.EXAMPLE.read_text()), version=4)


def rec(**kw):
    base = dict(call_id="c", src="1000", dst="07811123456", start=NOON, answer=NOON + 5, end=NOON + 65,
                disposition=Disposition.ANSWERED, src_kind="extension", dst_kind="trunk", dst_trunk="carrier",
                external_number="07811123456")
    base.update(kw)
    return CallRecord(**base)


def test_outbound_inbound_and_internal_records_are_rated():
    out = charging.rate_record(rec(), {"*": SHEET}, LONDON)
    assert (out.cost, out.currency, out.rate, out.dest_type, out.sheet_version) == \
        (Decimal("0.00550"), "GBP", "0.0055", "mobile", "uk-example@4")
    inbound = charging.rate_record(rec(src="07700900555", src_kind="trunk", src_trunk="carrier", dst="1000",
                                       dst_kind="extension", dst_trunk="", external_number=""), {"*": SHEET}, LONDON)
    assert (inbound.cost, inbound.dest_type) == (Decimal("0.00000"), "inbound")
    internal = charging.rate_record(rec(dst="1001", dst_kind="extension", dst_trunk="", external_number=""),
                                    {"*": SHEET}, LONDON)
    assert (internal.cost, internal.dest_type, internal.rate) == (Decimal("0.00000"), "internal", "0")
    unrated = charging.rate_record(rec(), {}, LONDON)
    assert (unrated.cost, unrated.dest_type, unrated.sheet_version) == (Decimal(0), "mobile", "")


def test_a_sheet_with_an_inbound_row_charges_calls_in_on_its_trunk():
    text = charging.EXAMPLE.read_text().replace(
        "prefix,description,type,rate_per_min,connection,increment,minimum,offpeak_rate,weekend_rate,blocked",
        "prefix,description,type,rate_per_min,connection,increment,minimum,offpeak_rate,weekend_rate,blocked,direction")
    text += "*,Our 0800 number (we pay),inbound,0.012,0,1/1,0,,,no,in\n"
    sheet = parse_sheet(text)
    inbound = charging.rate_record(rec(src="07700900555", src_kind="trunk", src_trunk="carrier", dst="1000",
                                       dst_kind="extension", dst_trunk="", external_number=""), {"carrier": sheet}, LONDON)
    assert (inbound.cost, inbound.dest_type) == (Decimal("0.01200"), "inbound")     # 60 s at 1.2p a minute


def test_every_import_is_a_new_version_kept_as_imported(tmp_path):
    store = charging.SheetStore(tmp_path)
    text = charging.EXAMPLE.read_text()
    assert store.import_text(text).version == 1
    assert store.import_text(text.replace("0.0055", "0.0050")).version == 2
    assert store.versions("uk-example") == [1, 2]
    assert store.load("uk-example").find("+447911123456", "mobile").rate == Decimal("0.0050")
    assert store.load("uk-example", 1).find("+447911123456", "mobile").rate == Decimal("0.0055")
    assert store.text("uk-example", 1) == text


def test_the_ledger_counts_spend_per_payer_and_for_the_site_by_day_and_month(tmp_path):
    earlier = NOON - 3 * 86400
    rows = [charging.rate_record(r, {"*": SHEET}, LONDON) for r in (
        rec(call_id="a"),                                                        # 1000 today
        rec(call_id="b", start=earlier, answer=earlier + 5, end=earlier + 65),  # 1000 this month
        rec(call_id="c", src="1001", forwarded_from="1002"),                     # 1002's forward
        rec(call_id="d", dst="1001", dst_kind="extension", dst_trunk="", external_number=""),   # internal
    )]
    with CdrStore(tmp_path) as cdr:
        cdr.write_many(rows[:2])
    ledger = charging.Ledger(tmp_path, LONDON, now=NOON + 100)
    for r in rows[2:]:
        ledger.add(r)
    spent = ledger.spent(NOON + 100)
    assert (spent["1000"].day, spent["1000"].month) == (Decimal("0.00550"), Decimal("0.01100"))
    assert spent["1002"].day == Decimal("0.00550") and "1001" not in spent
    assert (spent[SITE].day, spent[SITE].month) == (Decimal("0.01100"), Decimal("0.01650"))
    assert charging.spend_this_month(tmp_path, "1000", LONDON, now=NOON + 100) == (Decimal("0.01100"), "GBP", 2)


def test_alerts_are_kept_deduplicated_and_dismissed(tmp_path):
    assert charging.add_alert(tmp_path, "limit", "1000 refused", scope="1000", now=NOON)
    assert not charging.add_alert(tmp_path, "limit", "1000 refused again", scope="1000", now=NOON + 60)
    assert charging.add_alert(tmp_path, "limit", "1001 refused", scope="1001", now=NOON + 60)
    assert [a["text"] for a in charging.alerts(tmp_path, since=NOON - 1)] == ["1001 refused", "1000 refused"]
    charging.dismiss_alerts(tmp_path, now=NOON + 120)
    assert charging.alerts(tmp_path, since=NOON - 1) == []


def test_a_night_call_raises_an_unusual_pattern_alert(tmp_path):
    night = datetime(2026, 11, 25, 2, 30, tzinfo=LONDON).timestamp()
    ledger = charging.Ledger(tmp_path, LONDON, now=night)
    ledger.add(charging.rate_record(rec(start=night, answer=night + 5, end=night + 65), {"*": SHEET}, LONDON))
    texts = charging.check_patterns(tmp_path, ledger, night + 100)
    assert texts and "1 chargeable call(s) at night" in texts[0] and "1000" in texts[0]
    assert charging.check_patterns(tmp_path, ledger, night + 200) == []          # once, not per call
