"""Time conditions and day/night toggles: pure decisions with a pinned clock (no phone, no I/O)."""
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from firmware.config import ConfigStore, ValidationError
from firmware.config.model import Extension, Settings
from firmware.config.routing import InboundRoute, Trunk
from firmware.dialplan import Caller, ConfigView, Reject, Ring, route_call
from firmware.features.daynight import TABLE as TOGGLES, CallFlowToggle, ToggleDayNight, toggle_state
from firmware.features.timeconditions import TABLE, TimeCondition, day_plan, evaluate, preview

LONDON = "Europe/London"
SECRET = "long-enough-secret"


def at(text, tz=LONDON):
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz))


def utc(text):
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


OFFICE = TimeCondition("1", "Office hours", "extension:1000", "extension:1001",
                       hours=("mon-fri 09:00-12:30,13:30-17:30", "sat 10:00-13:00"),
                       holidays_country="GB", holidays_region="ENG")


def test_office_hours_on_a_weekday_with_a_lunch_break():
    assert evaluate(OFFICE, at("2026-11-30T09:00"), LONDON).open          # Monday, opening minute
    assert not evaluate(OFFICE, at("2026-11-30T08:59"), LONDON).open
    lunch = evaluate(OFFICE, at("2026-11-30T13:00"), LONDON)
    assert (lunch.open, lunch.destination, lunch.reason) == (False, "extension:1001", "outside office hours")
    assert evaluate(OFFICE, at("2026-11-30T17:29"), LONDON).open
    assert not evaluate(OFFICE, at("2026-11-30T17:30"), LONDON).open       # the end is exclusive
    assert evaluate(OFFICE, at("2026-12-05T11:00"), LONDON).open           # Saturday morning
    sunday = evaluate(OFFICE, at("2026-12-06T11:00"), LONDON)
    assert (sunday.open, sunday.reason) == (False, "closed on Sundays")


def test_christmas_day_is_closed_all_day():
    decision = evaluate(OFFICE, at("2026-12-25T10:00"), LONDON)             # a Friday
    assert (decision.open, decision.destination, decision.reason) == (False, "extension:1001", "closed: Christmas Day")


def test_early_may_bank_holiday_monday_closed_in_england_open_without_holidays():
    monday = at("2026-05-04T10:00")
    decision = evaluate(OFFICE, monday, LONDON)
    assert not decision.open and "May Day" in decision.reason
    no_holidays = TimeCondition("2", "No holidays", "extension:1000", "extension:1001", hours=OFFICE.hours)
    assert evaluate(no_holidays, monday, LONDON).open
    assert evaluate(OFFICE, at("2026-05-05T10:00"), LONDON).open             # the Tuesday after


def test_scotland_has_its_own_bank_holidays():
    scot = TimeCondition("3", "Glasgow", "extension:1000", "extension:1001", hours=OFFICE.hours,
                         holidays_country="GB", holidays_region="SCT")
    jan2 = at("2026-01-02T10:00")                                           # 2 January: Scotland only
    assert not evaluate(scot, jan2, LONDON).open
    assert evaluate(OFFICE, jan2, LONDON).open
    aug_eng = at("2026-08-31T10:00")                                        # England's summer bank holiday
    assert not evaluate(OFFICE, aug_eng, LONDON).open
    assert evaluate(scot, aug_eng, LONDON).open


def test_us_state_holidays():
    ny = TimeCondition("4", "NY", "extension:1000", "extension:1001", hours=("mon-fri 09:00-17:00",),
                       holidays_country="US", holidays_region="NY")
    july4 = datetime(2025, 7, 4, 10, 0, tzinfo=ZoneInfo("America/New_York"))
    assert not evaluate(ny, july4, "America/New_York").open
    assert "Independence Day" in evaluate(ny, july4, "America/New_York").reason


def test_time_is_judged_in_the_box_time_zone():
    # 08:30 UTC on 1 June is 09:30 in London (BST): open; the same instant read as UTC: closed
    instant = utc("2026-06-01T08:30")
    assert evaluate(OFFICE, instant, LONDON).open
    assert not evaluate(OFFICE, instant, "UTC").open


def test_dst_spring_forward_night_the_missing_hour_is_never_open():
    # 2026-03-29: at 01:00 GMT the clocks go to 02:00 BST
    night = TimeCondition("5", "Night line", "extension:1000", "extension:1001", hours=("sun 01:00-02:00", "sun 00:00-00:30"))
    assert evaluate(night, utc("2026-03-29T00:15"), LONDON).open             # 00:15 GMT
    assert not evaluate(night, utc("2026-03-29T00:59"), LONDON).open         # 00:59 GMT
    assert not evaluate(night, utc("2026-03-29T01:00"), LONDON).open         # 02:00 BST: the hour was skipped
    early = TimeCondition("6", "Early", "extension:1000", "extension:1001", hours=("sun 02:00-03:00",))
    assert evaluate(early, utc("2026-03-29T01:00"), LONDON).open              # 02:00 BST
    assert not evaluate(early, utc("2026-03-29T02:00"), LONDON).open          # 03:00 BST


def test_dst_fall_back_night_the_repeated_hour_is_judged_by_the_wall_clock():
    # 2026-10-25: 01:00-02:00 happens twice (BST, then GMT)
    tc = TimeCondition("7", "Until half one", "extension:1000", "extension:1001", hours=("sun 00:00-01:30",))
    assert evaluate(tc, utc("2026-10-25T00:15"), LONDON).open                 # 01:15 BST
    assert not evaluate(tc, utc("2026-10-25T00:45"), LONDON).open             # 01:45 BST
    assert evaluate(tc, utc("2026-10-25T01:15"), LONDON).open                 # 01:15 GMT, again
    assert not evaluate(tc, utc("2026-10-25T01:45"), LONDON).open


def test_a_range_crossing_midnight_runs_into_the_next_morning():
    late = TimeCondition("8", "Late desk", "extension:1000", "extension:1001", hours=("fri 22:00-02:00",))
    assert evaluate(late, at("2026-12-04T23:30"), LONDON).open                # Friday night
    assert evaluate(late, at("2026-12-05T01:59"), LONDON).open                # Saturday 01:59
    assert not evaluate(late, at("2026-12-05T02:00"), LONDON).open
    assert not evaluate(late, at("2026-12-04T01:00"), LONDON).open            # Friday early morning: Thu had none
    assert day_plan(late, date(2026, 12, 5)).ranges == ((0, 120),)


def test_special_dates_short_day_and_custom_closure_win_over_the_week_and_holidays():
    tc = TimeCondition("9", "Office", "extension:1000", "extension:1001", hours=OFFICE.hours,
                       holidays_country="GB", holidays_region="ENG",
                       special=("2026-12-24 09:00-12:00 Christmas Eve", "2026-12-28..2026-12-31 closed stocktaking",
                                "2026-12-26 10:00-12:00 sale"))
    assert evaluate(tc, at("2026-12-24T11:00"), LONDON).open
    eve = evaluate(tc, at("2026-12-24T13:00"), LONDON)
    assert not eve.open and eve.reason == "outside office hours"
    closure = evaluate(tc, at("2026-12-29T10:00"), LONDON)
    assert (closure.open, closure.reason) == (False, "closed: stocktaking")
    assert evaluate(tc, at("2026-12-26T11:00"), LONDON).open                  # Boxing Day, but a special opening
    assert evaluate(tc, at("2027-01-04T10:00"), LONDON).open                   # after the closure


def test_night_mode_of_the_named_toggle_forces_closed_and_day_follows_the_schedule():
    tc = TimeCondition("10", "Office", "extension:1000", "extension:1001", hours=OFFICE.hours, toggle="1")
    tuesday_10 = at("2026-12-01T10:00")
    night = evaluate(tc, tuesday_10, LONDON, toggle_state="night")
    assert (night.open, night.reason) == (False, "night mode (toggle 1)")
    assert evaluate(tc, tuesday_10, LONDON, toggle_state="day").open
    assert not evaluate(tc, at("2026-12-01T20:00"), LONDON, toggle_state="day").open


def test_preview_14_days_says_which_destination_is_active_when():
    days = preview(OFFICE, date(2026, 12, 21), 14)
    assert len(days) == 14 and days[0].label == "Mon 21 Dec"
    monday = [(s.start, s.end, s.open, s.destination) for s in days[0].segments]
    assert monday == [("00:00", "09:00", False, "extension:1001"), ("09:00", "12:30", True, "extension:1000"),
                      ("12:30", "13:30", False, "extension:1001"), ("13:30", "17:30", True, "extension:1000"),
                      ("17:30", "24:00", False, "extension:1001")]
    christmas = days[4]
    assert christmas.day == date(2026, 12, 25)
    assert [(s.start, s.end, s.open, s.reason) for s in christmas.segments] == \
        [("00:00", "24:00", False, "closed: Christmas Day")]
    assert all(s.reason == "night mode (toggle 1)" for d in preview(
        TimeCondition("11", "x", "extension:1000", "extension:1001", hours=OFFICE.hours, toggle="1"),
        date(2026, 12, 21), 14, toggle_state="night") for s in d.segments)


@pytest.mark.parametrize("field,value,message", [
    ("hours", ("mon-fry 09:00-17:00",), "'mon-fry' is not a day"),
    ("hours", ("mon-fri 9-17",), "is not a time"),
    ("hours", ("mon-fri",), "needs days and times"),
    ("hours", ("mon 09:00-09:00",), "starts and ends at the same time"),
    ("special", ("2026-13-01 closed",), "not a date of the calendar"),
    ("special", ("2026-12-31..2026-12-01 closed",), "ends before it starts"),
    ("special", ("2026-12-24",), "needs 'closed' or opening times"),
    ("holidays_country", "XX", "not a country the holidays library knows"),
    ("holidays_region", "ZZZ", "is not a region of GB"),
    ("open_destination", "1000", "has no kind"),
])
def test_bad_input_names_the_field_and_the_fix(field, value, message):
    fields = dict(number="1", name="Office", open_destination="extension:1000", closed_destination="hangup",
                  holidays_country="GB")
    fields[field] = value
    with pytest.raises(ValidationError) as e:
        TimeCondition(**fields).validate()
    assert message in str(e.value)


# --- the dialplan ---------------------------------------------------------------------------------

def view(toggles=(), conditions=(), mode="day"):
    exts = [Extension(n, f"User {n}", SECRET) for n in ("1000", "1001", "1002")]
    return ConfigView.of(exts, [Trunk("carrier", "sip.example.com", register=False)],
                         [InboundRoute("02071234567", "timecondition:1"), InboundRoute("02071234568", "daynight:2")],
                         (), Settings(timezone=LONDON, mode=mode),
                         records={TABLE: conditions, TOGGLES: toggles})


CALLER = Caller("trunk", "carrier", "07700900999", "Caller")


def test_an_inbound_route_to_a_time_condition_rings_the_open_or_closed_destination():
    config = view(conditions=[OFFICE])
    plan = route_call("02071234567", CALLER, config, at("2026-12-01T10:00"))
    assert isinstance(plan, Ring) and plan.extension == "1000"
    plan = route_call("02071234567", CALLER, config, at("2026-12-25T10:00"))
    assert isinstance(plan, Ring) and plan.extension == "1001"


def test_time_condition_follows_the_panel_toggle_night_mode():
    tc = TimeCondition("1", "Office", "extension:1000", "extension:1001", hours=OFFICE.hours, toggle="1")
    plan = route_call("02071234567", CALLER, view(conditions=[tc], mode="night"), at("2026-12-01T10:00"))
    assert plan.extension == "1001"
    plan = route_call("02071234567", CALLER, view(conditions=[tc], mode="day"), at("2026-12-01T10:00"))
    assert plan.extension == "1000"


def test_a_daynight_destination_sends_by_the_toggle_state():
    sales = CallFlowToggle("2", "Sales", "extension:1000", "extension:1002", state="night")
    plan = route_call("02071234568", CALLER, view(toggles=[sales]), at("2026-12-01T10:00"))
    assert plan.extension == "1002"
    plan = route_call("02071234568", CALLER, view(toggles=[CallFlowToggle("2", "Sales", "extension:1000",
                                                                          "extension:1002")]), at("2026-12-01T10:00"))
    assert plan.extension == "1000"


def test_toggle_one_is_the_settings_mode_the_front_panel_shows():
    assert toggle_state(view(mode="night"), "1") == "night"
    assert toggle_state(view(toggles=[CallFlowToggle("1", "Main", state="day")], mode="night"), "1") == "night"
    assert toggle_state(view(toggles=[CallFlowToggle("3", "x", state="night")]), "3") == "night"


def test_star33_toggles_and_star33n_toggles_n_with_its_pin():
    me = Caller("extension", "1000", "1000", "Alice")
    now = at("2026-12-01T10:00")
    assert route_call("*33", me, view(), now) == ToggleDayNight("1", "1000")
    config = view(toggles=[CallFlowToggle("2", "Sales", pin="4321")])
    assert route_call("*332", me, config, now) == ToggleDayNight("2", "1000", needs_pin=True)
    plan = route_call("*335", me, config, now)
    assert isinstance(plan, Reject) and plan.code == 404 and "no call-flow toggle 5" in plan.reason


def test_store_checks_references_of_time_conditions_and_toggles(tmp_path):
    store = ConfigStore(tmp_path)
    store.add_extension("1000", "Alice")
    with pytest.raises(ValidationError) as e:
        store.add_record(TABLE, TimeCondition("1", "Office", "extension:1000", "extension:1999"))
    assert "no extension 1999" in str(e.value)
    store.add_record(TOGGLES, CallFlowToggle("2", "Sales", "extension:1000", "hangup"))
    store.add_record(TABLE, TimeCondition("1", "Office", "extension:1000", "daynight:2", toggle="2",
                                          hours=["mon-fri 09:00-17:00"]))
    with pytest.raises(ValidationError) as e:
        store.remove_record(TOGGLES, "2")
    assert "time condition" in str(e.value)
    assert store.record(TABLE, "1").hours == ("mon-fri 09:00-17:00",)


def test_a_toggle_with_its_own_code_is_dialled_and_watched_by_that_code():
    from firmware.features.daynight import code_of
    me = Caller("extension", "1000", "1000", "Alice")
    config = view(toggles=[CallFlowToggle("2", "Sales", "extension:1000", "extension:1001", code="*34", pin="4321")])
    assert route_call("*34", me, config, at("2026-12-01T10:00")) == ToggleDayNight("2", "1000", needs_pin=True)
    assert route_call("*332", me, config, at("2026-12-01T10:00")) == ToggleDayNight("2", "1000", needs_pin=True)
    assert code_of("2", config) == "*34" and code_of("1", config) == "*33"
    for code, message in (("*78", "is taken"), ("*335", "is taken"), ("34", "is not a feature code")):
        with pytest.raises(ValidationError, match=message):
            CallFlowToggle("2", "Sales", code=code).validate()
