"""Call charging, pure part (firmware/rating): rate sheets, rating a table of calls to the exact
fraction of a penny, import problems line by line, spend limits and unusual patterns."""
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from firmware.cdr import CallRecord, Disposition
from firmware.rating import billed_seconds, classify, normalise, parse_sheet, rate_call
from firmware.rating.limits import SITE, Limit, SpendCheck, Spent, payer
from firmware.rating.patterns import CallSummary, unusual
from firmware.rating.sheet import SheetError

LONDON = ZoneInfo("Europe/London")
WEDNESDAY_10 = datetime(2026, 11, 25, 10, 0, tzinfo=LONDON)      # peak
WEDNESDAY_21 = datetime(2026, 11, 25, 21, 0, tzinfo=LONDON)      # off-peak
SATURDAY_10 = datetime(2026, 11, 28, 10, 0, tzinfo=LONDON)       # weekend
EXAMPLE = Path(__file__).resolve().parent.parent / "firmware" / "rating" / "sheets" / "uk-example.csv"

SHEET = """# sheet: test-carrier
# currency: GBP
# country: GB
# decimals: 5
# peak: mon-fri 08:00-18:00
prefix,description,type,rate_per_min,connection,increment,minimum,offpeak_rate,weekend_rate,blocked
01,UK landline,landline,0.0018,0,1/1,0,0.0012,0.0010,no
02,UK landline,landline,0.0018,0,1/1,0,0.0012,0.0010,no
07,UK mobile,mobile,0.0055,0,60/60,0,,,no
0800,Freephone,freephone,0,0,1/1,0,,,no
09,Premium,premium,1.50,0,60/60,0,,,yes
118,Directory,directory,0.90,0.50,60/60,2.00,,,no
+33,France,international,0.0110,0.02,30/6,0,,,no
+447700900000-+447700900999,Drama mobiles (range),mobile,0.0100,0,1/1,0,,,no
*,Rest of the world,international,0.25,0,60/60,0.05,,,no
"""


@pytest.fixture(scope="module")
def sheet():
    return parse_sheet(SHEET)


# (number as sent, talk seconds, when, cost, rate, destination type, row)
CALLS = [
    ("07811123456", 61, WEDNESDAY_10, "0.01100", "0.0055", "mobile", "+447"),            # 60/60: 120 s billed
    ("01632960123", 59, WEDNESDAY_10, "0.00177", "0.0018", "landline", "+441"),          # 1/1: 59 x 0.0018/60
    ("08001234567", 600, WEDNESDAY_10, "0.00000", "0", "freephone", "+44800"),
    ("09011234567", 60, WEDNESDAY_10, "1.50000", "1.50", "premium", "+449"),
    ("0033145678901", 31, WEDNESDAY_10, "0.02660", "0.0110", "international", "+33"),    # 30/6: 36 s + 2p connection
    ("01632960123", 100, WEDNESDAY_21, "0.00200", "0.0012", "landline", "+441"),         # off-peak band
    ("02079460000", 100, SATURDAY_10, "0.00167", "0.0010", "landline", "+442"),          # weekend band
    ("118118", 10, WEDNESDAY_10, "2.00000", "0.90", "directory", "+44118"),              # minimum 2.00 > 0.50+0.90
    ("118118", 130, WEDNESDAY_10, "3.20000", "0.90", "directory", "+44118"),             # 0.50 + 3 min x 0.90
    ("0081312345678", 1, WEDNESDAY_10, "0.25000", "0.25", "international", "*"),         # fallback row by type
    ("0081312345678", 0, WEDNESDAY_10, "0.00000", "0.25", "international", "*"),         # not answered: nothing
    ("07700900123", 61, WEDNESDAY_10, "0.01017", "0.0100", "mobile", "+447700900000-+447700900999"),  # range > 07
]


@pytest.mark.parametrize("number,billsec,when,cost,rate,kind,prefix", CALLS)
def test_a_table_of_calls_is_rated_to_the_exact_fraction_of_a_penny(sheet, number, billsec, when, cost, rate,
                                                                      kind, prefix):
    charge = rate_call(sheet, number, billsec, when)
    assert charge.cost == Decimal(cost) and str(charge.cost) == cost       # rounded once, to 5 places
    assert isinstance(charge.cost, Decimal) and charge.currency == "GBP"
    assert (charge.rate, charge.dest_type, charge.prefix) == (Decimal(rate), kind, prefix)
    assert charge.sheet_version == "test-carrier@0"


def test_billing_increments():
    assert [billed_seconds(s, 60, 60) for s in (0, 1, 60, 61, 120, 121)] == [0, 60, 60, 120, 120, 180]
    assert [billed_seconds(s, 1, 1) for s in (0, 1, 59)] == [0, 1, 59]
    assert [billed_seconds(s, 30, 6) for s in (1, 30, 31, 36, 37)] == [30, 30, 36, 36, 42]


def test_the_longest_prefix_wins_and_the_library_classifies_what_no_prefix_names(sheet):
    assert rate_call(sheet, "07811123456", 60).prefix == "+447"
    assert rate_call(sheet, "0800123456", 60).prefix == "+44800"
    assert classify("+442079460000") == "landline" and classify("+448001234567") == "freephone"
    assert classify("+449011234567") == "premium" and classify("+33145678901") == "international"
    assert classify("+447911123456") == "mobile"
    # a UK 03 number is on no row of this sheet and no `*` row of its type: free, typed by the library
    charge = rate_call(sheet, "03001234567", 60)
    assert (charge.cost, charge.prefix, charge.dest_type) == (Decimal("0.00000"), "", "landline")


def test_numbers_are_normalised_to_e164():
    assert normalise("07700900123") == normalise("+447700900123") == normalise("447700900123") == "+447700900123"
    assert normalise("0033145678901") == "+33145678901"
    assert normalise("*78") == "" and normalise("abc") == ""


def test_the_import_reports_line_by_line_what_it_refused_and_why():
    text = SHEET.replace("118,Directory", "abc,Bad prefix,landline,0.1,0,1/1,0,,,no\n"
                                       "05,Bad rate,landline,0,05p,0,1/1,0,,,no\n"
                                       "06,Bad type,satellite,0.1,0,1/1,0,,,no\n"
                                       "061,Bad increment,landline,0.1,0,sixty,0,,,no\n"
                                       "07,Duplicate,mobile,0.1,0,1/1,0,,,no\n118,Directory")
    sheet = parse_sheet(text)
    reasons = {p.line: p.reason for p in sheet.problems}
    assert len(sheet.problems) == 5, sheet.problems
    assert "is not a prefix" in reasons[12]
    assert "not one of" in reasons[14] and "satellite" in reasons[14]
    assert "increment 'sixty'" in reasons[15]
    assert "already on line 9" in reasons[16]
    assert len(sheet.rates) == 9                                # the good rows are all kept


def test_a_sheet_without_currency_or_rows_is_refused_with_the_fix():
    with pytest.raises(SheetError, match="currency"):
        parse_sheet(SHEET.replace("# currency: GBP\n", ""))
    with pytest.raises(SheetError, match="no usable rows"):
        parse_sheet(SHEET.split("01,UK")[0])
    with pytest.raises(SheetError, match="lacks column"):
        parse_sheet("# sheet: x\n# currency: GBP\nprefix,rate\n07,1\n")


def test_the_shipped_uk_example_is_marked_as_an_example_and_rates_as_the_product_promises():
    text = EXAMPLE.read_text()
    assert "EXAMPLE RATE SHEET - REPLACE IT WITH YOUR CARRIER'S OWN SHEET" in text
    sheet = parse_sheet(text)
    assert sheet.problems == () and sheet.name == "uk-example" and sheet.currency == "GBP"
    mobile, landline = rate_call(sheet, "07911123456", 60, WEDNESDAY_10), rate_call(sheet, "01632960123", 60, WEDNESDAY_10)
    assert mobile.rate == Decimal("0.0055") and landline.rate == Decimal("0.0018")       # ~0.55p and ~0.18p a minute
    assert rate_call(sheet, "08081570000", 60).cost == 0 and rate_call(sheet, "08001234567", 60).cost == 0
    assert rate_call(sheet, "09011234567", 60).blocked
    assert rate_call(sheet, "118500", 60).dest_type == "directory"
    assert rate_call(sheet, "0049301234567", 60).dest_type == "international"


def test_a_spend_limit_refuses_chargeable_calls_once_reached(sheet):
    check = SpendCheck(limits={"1000": Limit(Decimal("0.01"), None), SITE: Limit(None, Decimal("50"))},
                       spent={"1000": Spent(Decimal("0.011"), Decimal("0.011"))}, sheets={"*": sheet},
                       currency="GBP")
    refused = check.refusal("1000", "carrier", "07811123456")
    assert refused.kind == "limit" and "extension 1000 spent 0.011 GBP today (daily limit 0.01 GBP)" in refused.reason
    assert check.refusal("1000", "carrier", "08001234567") is None           # free numbers still go
    assert check.refusal("1001", "carrier", "07811123456") is None           # another extension has no limit
    assert check.refusal("1001", "carrier", "09011234567").kind == "barred"   # the sheet bars premium
    under = SpendCheck(limits={"1000": Limit(Decimal("0.01"), None)},
                       spent={"1000": Spent(Decimal("0.009"), Decimal("0.009"))}, sheets={"*": sheet})
    assert under.refusal("1000", "carrier", "07811123456") is None
    site = SpendCheck(limits={SITE: Limit(None, Decimal("50"))}, spent={SITE: Spent(Decimal("1"), Decimal("50"))},
                      sheets={"*": sheet})
    assert "the site spent 50 this month" in site.refusal("1001", "carrier", "07811123456").reason


def test_the_payer_is_who_forwarded_or_transferred_the_call_out():
    base = dict(call_id="c", src="1000", dst="07811123456", start=0, answer=1, end=5,
                disposition=Disposition.ANSWERED, src_kind="extension", dst_kind="trunk")
    assert payer(CallRecord(**base)) == "1000"
    assert payer(CallRecord(**base, forwarded_from="201")) == "201"
    assert payer(CallRecord(**{**base, "src": "07700900555", "src_kind": "trunk"})) == ""


def test_unusual_patterns_international_minutes_and_night_calls():
    now = datetime(2026, 11, 25, 23, 30, tzinfo=LONDON)
    history = [CallSummary(now - timedelta(days=d), 120, "international", "1000", "0033145678901")
               for d in (3, 9)]
    burst = [CallSummary(now - timedelta(minutes=m), 600, "international", "1002", "00881234")
             for m in (5, 20)]
    alerts = {a.kind: a.text for a in unusual(history + burst, now)}
    assert "20 international minutes in the last hour, more than the 4 of the 30 days before" == alerts["international"]
    assert "2 chargeable call(s) at night" in alerts["night"] and "1002" in alerts["night"]
    day = datetime(2026, 11, 25, 14, 0, tzinfo=LONDON)
    assert unusual([CallSummary(day - timedelta(hours=2), 60, "international", "1000", "0033")], day) == []


def test_call_records_keep_the_charge_exactly():
    rec = CallRecord("c", "1000", "07811123456", 0, 1, 62, Disposition.ANSWERED, cost=Decimal("0.01100"),
                     currency="GBP", rate="0.0055", dest_type="mobile", sheet_version="uk-example@2")
    assert rec.cost == Decimal("0.01100")
    with pytest.raises(ValueError, match="currency"):
        CallRecord("c", "1000", "x", 0, 1, 2, Disposition.ANSWERED, currency="pounds")
