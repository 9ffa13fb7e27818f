"""Specification of the CDR builder (firmware/cel.py): call records from hand-written event logs.

Each log is what the call service writes for one session (schema in firmware/cel.py): tuples of
(time, kind, channel id, data). The channels: 1 is the caller; 2, 3 ... the legs the PBX rang.
"""
import pytest

from firmware.cdr import CallRecord, Disposition
from firmware.cel import ChannelInfo, cdr_rows

T0 = 1_700_000_000.0


def start(t, ch, number, direction="out", **kw):
    data = {"number": number, "direction": direction, "call_id": f"call-{ch}", "kind": "extension", **kw}
    return (T0 + t, "chan_start", ch, data)


def ev(t, kind, ch, **data):
    return (T0 + t, kind, ch, data)


def bridged(t, bridge, a, b):
    """a and b into bridge at t (a first: b's entry names a as its peer)."""
    return [ev(t, "bridge_enter", a, bridge=bridge, peer=0), ev(t, "bridge_enter", b, bridge=bridge, peer=a)]


def hangs_up(t, ch, by="remote", cause="bye", bridge=None, **kw):
    out = [ev(t, "bridge_exit", ch, bridge=bridge)] if bridge else []
    return out + [ev(t, "hangup", ch, cause=cause, by=by, **kw)]


def caller(t=0.0, number="1000", dialled="1001"):
    return start(t, 1, number, "in", call_id="L1", dialled=dialled)


def plain_call(talk_until=60.0):
    return [caller(), start(0.1, 2, "1001"), ev(3.0, "answer", 2), *bridged(3.0, "call-1", 1, 2),
            ev(3.01, "answer", 1), *hangs_up(talk_until, 1, bridge="call-1"),
            *hangs_up(talk_until + 0.02, 2, by="pbx", cause="normal", bridge="call-1")]


def shape(rows):
    return [(r.seq, r.src, r.dst, r.disposition.value, r.transfer, r.transferred_by) for r in rows]


def test_a_plain_answered_call_is_one_row_from_invite_to_hangup():
    [row] = cdr_rows(plain_call(), {})
    assert isinstance(row, CallRecord)
    assert shape([row]) == [(1, "1000", "1001", "ANSWERED", "", "")]
    assert (row.call_id, row.linkedid, row.src_kind, row.dst_kind) == ("L1", "L1", "extension", "extension")
    assert (row.start, row.answer, row.end) == (T0, T0 + 3.01, T0 + 60.0)
    assert (row.duration, row.billsec) == (60, 57)
    assert row.legs[0] == {"leg": "a", "peer": "1000", "call_id": "L1", "hangup_by": "caller"}
    assert row.legs[1] == {"leg": "b", "peer": "1001", "call_id": "call-2", "final": 200}
    assert row.cause == "hangup by caller"
    assert (row.dst_trunk, row.external_number, row.forwarded_from) == ("", "", "")


def test_the_callee_hanging_up_is_named():
    events = [caller(), start(0.1, 2, "1001"), ev(3.0, "answer", 2), *bridged(3.0, "call-1", 1, 2),
              ev(3.0, "answer", 1), *hangs_up(20.0, 2, bridge="call-1"),
              *hangs_up(20.0, 1, by="pbx", cause="normal", bridge="call-1")]
    [row] = cdr_rows(events, {})
    assert row.legs[0]["hangup_by"] == "callee" and row.cause == "hangup by callee"


def test_busy_is_one_row_with_the_dialled_party():
    events = [caller(), start(0.1, 2, "1001"),
              *hangs_up(0.4, 2, cause="486 Busy Here", status=486),
              *hangs_up(3.4, 1, by="pbx", cause="486", status=486)]
    [row] = cdr_rows(events, {})
    assert shape([row]) == [(1, "1000", "1001", "BUSY", "", "")]
    assert row.answer is None and row.billsec == 0 and row.duration == 3
    assert row.cause == "486 Busy Here"
    assert row.legs[1] == {"leg": "attempt", "peer": "1001", "call_id": "call-2", "final": 486,
                           "cause": "486 Busy Here"}


def test_no_answer_when_the_ring_time_runs_out():
    events = [caller(), start(0.1, 2, "1001"),
              *hangs_up(30.1, 2, by="pbx", cause="cancelled", status=487),
              *hangs_up(30.1, 1, by="pbx", cause="480", status=480)]
    [row] = cdr_rows(events, {})
    assert shape([row]) == [(1, "1000", "1001", "NO ANSWER", "", "")]
    assert (row.duration, row.billsec) == (30, 0)


def test_cancelled_when_the_caller_gives_up_while_it_rings():
    events = [caller(), start(0.1, 2, "1001"),
              *hangs_up(7.0, 1, cause="cancel", status=487),
              *hangs_up(7.0, 2, by="pbx", cause="cancelled", status=487)]
    [row] = cdr_rows(events, {})
    assert shape([row]) == [(1, "1000", "1001", "CANCELLED", "", "")]
    assert row.legs[0]["hangup_by"] == "caller"


def test_the_call_services_own_verdict_wins_and_a_number_nobody_has_is_failed():
    events = [caller(dialled="1999"), *hangs_up(1.0, 1, by="pbx", cause="404 no such extension", status=404)]
    [row] = cdr_rows(events, {})
    assert (row.dst, row.disposition, row.cause) == ("1999", Disposition.FAILED, "404 no such extension")
    told = events[:-1] + [ev(1.0, "hangup", 1, cause="no answer", by="pbx", status=480, disposition="NO ANSWER")]
    [row] = cdr_rows(told, {})
    assert (row.disposition, row.cause) == (Disposition.NO_ANSWER, "no answer")


def test_a_call_the_pbx_answered_itself_is_answered_with_what_was_dialled():
    events = [caller(dialled="*78"), ev(0.2, "answer", 1), ev(0.2, "feature", 1, code="*78"),
              *hangs_up(2.6, 1, by="pbx", cause="feature done")]
    [row] = cdr_rows(events, {})
    assert shape([row]) == [(1, "1000", "*78", "ANSWERED", "", "")]
    assert (row.billsec, row.duration) == (2, 3)


def test_blind_transfer_gives_a_to_b_then_a_to_c_by_b():
    events = plain_call(talk_until=1e9)[:6] + [
        ev(20.0, "dtmf", 2, digit="#"), ev(20.1, "dtmf", 2, digit="#"),
        ev(22.0, "blind_transfer", 2, transferee=1, number="1002"),
        ev(22.0, "bridge_exit", 2, bridge="call-1"),
        start(22.1, 3, "1002"), ev(25.0, "answer", 3),
        ev(25.0, "bridge_exit", 1, bridge="call-1"), *bridged(25.0, "transferred-3", 1, 3),
        ev(25.0, "transfer_connect", 1, to=3),
        *hangs_up(27.0, 2, by="pbx", cause="transferred"),
        *hangs_up(80.0, 3, bridge="transferred-3"),
        *hangs_up(80.0, 1, by="pbx", cause="normal", bridge="transferred-3")]
    ab, ac = cdr_rows(events, {})
    assert shape([ab, ac]) == [(1, "1000", "1001", "ANSWERED", "", ""),
                               (2, "1000", "1002", "ANSWERED", "blind", "1001")]
    assert (ab.start, ab.answer, ab.end) == (T0, T0 + 3.01, T0 + 22.0)
    assert ab.legs[0]["hangup_by"] == "transfer" and ab.cause == "transferred"
    assert ab.legs[1]["dtmf"] == "##"
    assert (ac.start, ac.answer, ac.end) == (T0 + 22.1, T0 + 25.0, T0 + 80.0)
    assert ac.linkedid == ab.linkedid == "L1" and ac.call_id == "L1"
    assert ac.legs[0]["hangup_by"] == "callee"


def test_a_blind_transfer_to_a_busy_target_goes_back_to_the_same_row():
    events = plain_call(talk_until=1e9)[:6] + [
        ev(22.0, "blind_transfer", 2, transferee=1, number="1002"),
        ev(22.0, "bridge_exit", 2, bridge="call-1"),
        start(22.1, 3, "1002"), *hangs_up(22.5, 3, cause="486 Busy Here", status=486),
        ev(22.5, "bridge_enter", 2, bridge="call-1", peer=1),
        ev(22.5, "transfer_failed_back", 2, transferee=1, why="busy 486"),
        *hangs_up(40.0, 2, bridge="call-1"),
        *hangs_up(40.0, 1, by="pbx", cause="normal", bridge="call-1")]
    [row] = cdr_rows(events, {})
    assert shape([row]) == [(1, "1000", "1001", "ANSWERED", "", "")]
    assert (row.answer, row.end) == (T0 + 3.01, T0 + 40.0) and row.legs[0]["hangup_by"] == "callee"
    assert row.legs[2] == {"leg": "attempt", "peer": "1002", "call_id": "call-3", "final": 486,
                           "cause": "486 Busy Here"}


def test_attended_transfer_gives_a_to_b_the_consultation_b_to_c_and_a_to_c():
    events = plain_call(talk_until=1e9)[:6] + [
        ev(30.0, "attended_transfer_start", 2, transferee=1, number="1002"),
        ev(30.0, "bridge_exit", 2, bridge="call-1"),                       # 1000 hears music
        start(30.5, 3, "1002"), ev(35.0, "answer", 3), *bridged(35.0, "consultation-4", 2, 3),
        *hangs_up(50.0, 2, bridge="consultation-4"),                     # 1001 hangs up to join them
        ev(50.0, "attended_transfer", 2, transferee=1, target=3),
        ev(50.0, "bridge_exit", 3, bridge="consultation-4"), ev(50.0, "bridge_exit", 1, bridge="call-1"),
        *bridged(50.0, "transferred-5", 1, 3),
        *hangs_up(100.0, 1, bridge="transferred-5"),
        *hangs_up(100.0, 3, by="pbx", cause="normal", bridge="transferred-5")]
    ab, bc, ac = cdr_rows(events, {})
    assert shape([ab, bc, ac]) == [(1, "1000", "1001", "ANSWERED", "", ""),
                                   (2, "1001", "1002", "ANSWERED", "consultation", ""),
                                   (3, "1000", "1002", "ANSWERED", "attended", "1001")]
    assert (ab.end, ab.legs[0]["hangup_by"]) == (T0 + 30.0, "transfer")
    assert (bc.start, bc.answer, bc.end, bc.call_id) == (T0 + 30.5, T0 + 35.0, T0 + 50.0, "call-2")
    assert bc.legs[0]["hangup_by"] == "transfer"
    assert (ac.start, ac.answer, ac.end, ac.billsec) == (T0 + 30.5, T0 + 50.0, T0 + 100.0, 50)
    assert ac.legs[0]["hangup_by"] == "caller"


def test_attended_transfer_by_refer_joins_a_target_from_the_transferrers_other_call():
    # channel 7 (1002) belongs to 1001's second call; the channels table describes it and the
    # peer of the transferee's bridge_enter names it
    events = plain_call(talk_until=1e9)[:6] + [
        ev(40.0, "attended_transfer", 2, transferee=1, target=7),
        ev(40.0, "bridge_exit", 2, bridge="call-1"), ev(40.0, "bridge_exit", 1, bridge="call-1"),
        ev(40.0, "bridge_enter", 1, bridge="transferred-9", peer=7),
        ev(40.0, "answer", 7),
        *hangs_up(42.0, 2, by="pbx", cause="transferred"),
        *hangs_up(70.0, 7, bridge="transferred-9"),
        *hangs_up(70.0, 1, by="pbx", cause="normal", bridge="transferred-9")]
    table = {7: ChannelInfo(number="1002", direction="out", call_id="second-call-b")}
    ab, ac = cdr_rows(events, table)
    assert shape([ab, ac]) == [(1, "1000", "1001", "ANSWERED", "", ""),
                               (2, "1000", "1002", "ANSWERED", "attended", "1001")]
    assert (ac.answer, ac.end) == (T0 + 40.0, T0 + 70.0) and ac.legs[1]["call_id"] == "second-call-b"


def test_a_forward_to_a_mobile_shows_whose_forward_the_trunk_and_the_external_number():
    events = [caller(dialled="201"),
              start(0.2, 2, "07700900123", kind="trunk", trunk="carrier", external="+447700900123",
                    forwarded_from="201"),
              *bridged(1.5, "early media-1", 1, 2),                # the carrier's ringback (183)
              ev(8.0, "answer", 2), ev(8.01, "answer", 1),
              *hangs_up(68.0, 2, bridge="early media-1"),
              *hangs_up(68.0, 1, by="pbx", cause="normal", bridge="early media-1")]
    [row] = cdr_rows(events, {})
    assert shape([row]) == [(1, "1000", "07700900123", "ANSWERED", "", "")]
    assert (row.dst_kind, row.dst_trunk, row.external_number, row.forwarded_from) == (
        "trunk", "carrier", "+447700900123", "201")
    assert (row.src_kind, row.src_trunk) == ("extension", "")
    assert (row.answer, row.billsec, row.duration) == (T0 + 8.01, 60, 68)   # early media is not talk


def test_the_channels_table_describes_channels_and_wins_over_chan_start():
    events = [(T0, "chan_start", 1, {"number": "+442071234567", "direction": "in"}),
              (T0 + 0.1, "chan_start", 2, {"number": "201"}),
              ev(1.0, "answer", 2), ev(1.0, "answer", 1), *bridged(1.0, "call", 1, 2),
              *hangs_up(9.0, 1, bridge="call"), *hangs_up(9.0, 2, by="pbx", bridge="call")]
    table = {1: {"number": "+442071234567", "direction": "in", "call_id": "sip-from-carrier", "kind": "trunk",
                 "trunk": "carrier"},
             2: ChannelInfo(number="201", call_id="to-201", forwarded_from="")}
    [row] = cdr_rows(events, table)
    assert (row.call_id, row.linkedid, row.src, row.src_kind, row.src_trunk) == (
        "sip-from-carrier", "sip-from-carrier", "+442071234567", "trunk", "carrier")
    assert (row.dst_kind, row.dst_trunk, row.external_number) == ("extension", "", "")
    [row] = cdr_rows(events, table, linkedid="given")
    assert row.linkedid == "given"


def test_a_forward_that_fails_is_one_row_naming_the_forward():
    events = [caller(dialled="201"),
              start(0.2, 2, "07700900123", kind="trunk", trunk="carrier", external="+447700900123",
                    forwarded_from="201"),
              *hangs_up(2.0, 2, cause="486 Busy Here", status=486),
              *hangs_up(5.0, 1, by="pbx", cause="486", status=486)]
    [row] = cdr_rows(events, {})
    assert (row.dst, row.disposition, row.forwarded_from, row.dst_trunk, row.external_number) == (
        "07700900123", Disposition.BUSY, "201", "carrier", "+447700900123")


def test_ringing_two_phones_at_once_one_answers_gives_one_row_with_the_other_as_an_attempt():
    events = [caller(dialled="600"), start(0.1, 2, "1001"), start(0.1, 3, "1002"),
              ev(4.0, "answer", 3), *hangs_up(4.0, 2, by="pbx", cause="completed elsewhere", status=487),
              *bridged(4.0, "call-4", 1, 3), ev(4.0, "answer", 1),
              *hangs_up(34.0, 1, bridge="call-4"), *hangs_up(34.0, 3, by="pbx", cause="normal", bridge="call-4")]
    [row] = cdr_rows(events, {})
    assert shape([row]) == [(1, "1000", "1002", "ANSWERED", "", "")]
    assert (row.start, row.answer, row.billsec) == (T0, T0 + 4.0, 30)
    assert [leg["peer"] for leg in row.legs] == ["1000", "1002", "1001"]
    assert row.legs[2] == {"leg": "attempt", "peer": "1001", "call_id": "call-2", "final": 487,
                           "cause": "completed elsewhere"}


def test_a_pickup_bridges_the_caller_with_the_phone_that_picked_up():
    events = [caller(), start(0.1, 2, "1001"),
              start(5.0, 3, "1005", "in", call_id="pickup-call", dialled="*8"), ev(5.0, "answer", 3),
              ev(5.0, "pickup", 3, by="1005", ringing="1001"),
              *hangs_up(5.0, 2, by="pbx", cause="completed elsewhere", status=487),
              *bridged(5.0, "call-6", 1, 3), ev(5.0, "answer", 1),
              *hangs_up(20.0, 3, bridge="call-6"), *hangs_up(20.0, 1, by="pbx", bridge="call-6")]
    [row] = cdr_rows(events, {})
    assert shape([row]) == [(1, "1000", "1005", "ANSWERED", "", "")]
    assert row.legs[2]["peer"] == "1001" and row.legs[0]["hangup_by"] == "callee"


def test_digits_and_recordings_go_to_the_legs_of_their_row():
    events = plain_call(talk_until=1e9)[:6] + [
        ev(4.0, "recording", 1, path="/rec/a.wav"), ev(4.0, "recording", 2, path="/rec/b.wav"),
        ev(10.0, "dtmf", 1, digit="5"), ev(11.0, "hold", 1), ev(15.0, "unhold", 1),
        *hangs_up(30.0, 1, bridge="call-1"), *hangs_up(30.0, 2, by="pbx", bridge="call-1")]
    [row] = cdr_rows(events, {})
    assert row.legs[0]["dtmf"] == "5" and row.legs[0]["recording"] == "/rec/a.wav"
    assert row.legs[1]["recording"] == "/rec/b.wav"
    assert row.billsec == 27                                          # held time is talk time


def test_the_log_order_does_not_matter_only_the_times_and_unknown_kinds_are_ignored():
    events = plain_call() + [ev(30.0, "something_new", 1, x=1)]
    assert cdr_rows(list(reversed(events)), {}) == cdr_rows(plain_call(), {})


def test_every_row_is_a_valid_record_even_from_odd_input():
    # over-long numbers, control characters, a log cut short while the two still talk
    events = [start(0, 1, "1" * 400, "in", call_id="x\x00y"), start(0.1, 2, ""),
              ev(1.0, "answer", 2), ev(1.0, "answer", 1), *bridged(1.0, "b", 1, 2), ev(9.0, "dtmf", 1, digit="1")]
    [row] = cdr_rows(events, {})
    row.validate()
    assert len(row.src) == 255 and row.call_id == "x?y" and row.dst == "unknown" and row.end == T0 + 9.0
    with pytest.raises(ValueError, match="no events"):
        cdr_rows([], {})
