"""An answered call survives a takeover (issue 14, item 2): two phones talk through the VIP on
box A; A's power is cut; box B, told of the call by A's replicator (services/ha/calls.py),
rebuilds both dialogs and binds the same RTP ports on the VIP, so the audio goes on (the gap is
measured from the packets the callee receives) and the caller's BYE after the takeover gets 200,
not 481, the callee gets a BYE, and B writes the call record.
"""
from __future__ import annotations

import subprocess
import threading
import time

import pytest

from tests.hanet import OfficeLan, PbxPair, RtpStream, wait_for
from tests.phones.raw import RawPhone, raw_call, sdp_body

SECRETS = {"1000": "Ann-ha-1000-secret", "1001": "Bob-ha-1001-secret"}


class _Log:
    def __init__(self, path):
        self.path = path

    def log_tail(self) -> str:
        return self.path.read_text(errors="replace")[-3000:]


@pytest.mark.e2e
def test_an_answered_call_goes_on_after_the_primarys_power_cut_and_ends_with_a_clean_bye(tmp_path):
    def seed(store):
        store.add_extension("1000", "Ann", secret=SECRETS["1000"])
        store.add_extension("1001", "Bob", secret=SECRETS["1001"])
    with OfficeLan() as lan, PbxPair(lan, tmp_path, seed=seed) as pair:
        pair.wait_ready()
        phones = {n: RawPhone(n, s, (lan.vip, 5060), sock=lan.phone.socket(), ip=lan.phone.addr)
                  for n, s in SECRETS.items()}
        assert [p.register() for p in phones.values()] == [200, 200]
        rtp = {n: lan.phone.socket() for n in SECRETS}
        rtp["1000"].bind((lan.phone.addr, 40000))
        rtp["1001"].bind((lan.phone.addr, 40002))
        ann, bob = phones["1000"], phones["1001"]
        dialog, pbx_ann, pbx_bob, bob_dialog = raw_call(
            _Log(tmp_path / "a.log"), ann, bob, rtp["1000"], rtp["1001"],
            offer=sdp_body(lan.phone.addr, 40000), answer=sdp_body(lan.phone.addr, 40002))
        streams = {"1000": RtpStream(rtp["1000"], pbx_ann), "1001": RtpStream(rtp["1001"], pbx_bob)}
        try:
            wait_for("audio both ways through A", lambda: len(streams["1000"].arrivals) > 20
                     and len(streams["1001"].arrivals) > 20, 10)
            from services.control import query
            wait_for("the call known to B", lambda: query(str(pair.data["b"]), "ha").get("answered_calls_held"), 10,
                     every=0.1)
            cut = lan.power_cut(lan.box_a)
            wait_for("B to take the call over",
                     lambda: query(str(pair.data["b"]), "ha").get("calls_taken_over") == 1, 15, every=0.1)
            time.sleep(2.0)
            end = time.monotonic()
            gaps = {n: s.largest_gap(cut - 0.5, end) for n, s in streams.items()}
            print(f"audio gap after the power cut: Bob hears Ann after {gaps['1001'] * 1000:.0f} ms, "
                  f"Ann hears Bob after {gaps['1000'] * 1000:.0f} ms")
            for n, s in streams.items():
                assert len([t for t in s.arrivals if t > end - 1.0]) > 40, f"{n} hears nothing on B"
            assert max(gaps.values()) < 2.0           # the target is < 1 s: see the printed gap
        finally:
            for s in streams.values():
                s.stop()
        got_bye = {}

        def bob_hangs_up():
            req = bob.wait_request("BYE", 8)
            if req is not None:
                bob.reply(req, 200)
                got_bye["bye"] = req
        t = threading.Thread(target=bob_hangs_up)
        t.start()
        assert ann.bye(dialog) == 200              # B knows the dialog: not 481
        t.join(10)
        assert "bye" in got_bye, "Bob got no BYE from B"
        from firmware.cdr import CdrStore

        def record():
            with CdrStore(pair.data["b"]) as cdr:
                return [r for r in cdr.last(5) if r.src == "1000" and r.dst == "1001"]
        rows = wait_for("the call record on B", record, 10)
        assert rows[0].disposition.value == "ANSWERED" and rows[0].end - rows[0].answer > 2.0
        for p in phones.values():
            p.close()


@pytest.mark.e2e
def test_the_primary_coming_back_takes_the_answered_call_back_without_ending_it(tmp_path):
    """After the takeover, A is powered on again: it starts as backup, B tells it of the call, A
    takes the VIP back (preempt_delay 3 s) and the call with it; B ends its copy without a BYE."""
    def seed(store):
        store.add_extension("1000", "Ann", secret=SECRETS["1000"])
        store.add_extension("1001", "Bob", secret=SECRETS["1001"])
    from services.control import query
    with OfficeLan() as lan, PbxPair(lan, tmp_path, seed=seed) as pair:
        pair.wait_ready()
        phones = {n: RawPhone(n, s, (lan.vip, 5060), sock=lan.phone.socket(), ip=lan.phone.addr)
                  for n, s in SECRETS.items()}
        assert [p.register() for p in phones.values()] == [200, 200]
        rtp = {n: lan.phone.socket() for n in SECRETS}
        rtp["1000"].bind((lan.phone.addr, 40000))
        rtp["1001"].bind((lan.phone.addr, 40002))
        ann, bob = phones["1000"], phones["1001"]
        dialog, pbx_ann, pbx_bob, _ = raw_call(
            _Log(tmp_path / "a.log"), ann, bob, rtp["1000"], rtp["1001"],
            offer=sdp_body(lan.phone.addr, 40000), answer=sdp_body(lan.phone.addr, 40002))
        streams = {"1000": RtpStream(rtp["1000"], pbx_ann), "1001": RtpStream(rtp["1001"], pbx_bob)}
        try:
            wait_for("the call known to B", lambda: query(str(pair.data["b"]), "ha").get("answered_calls_held"), 10,
                     every=0.1)
            lan.power_cut(lan.box_a)
            wait_for("B to take the call over",
                     lambda: query(str(pair.data["b"]), "ha").get("calls_taken_over") == 1, 15, every=0.1)
            # A's power comes back
            pair.procs["a"].wait(10)
            # a box starting after a power cut has an empty /run; here the edge's pid file is in
            # DATA and its number may be taken by now (a zombie, or another process on this busy
            # machine): Kamailio would refuse to start ("running process found in the pid file")
            (pair.data["a"] / "edge" / "kamailio.pid").unlink(missing_ok=True)
            subprocess.run(["ip", "-n", lan.switch, "link", "set", lan.box_a.if_out, "up"], check=True)
            pair.start_box("a")
            wait_for("A to know of the call", lambda: (_ha(pair.data["a"]) or {}).get("answered_calls_held"), 60,
                     every=0.2)
            back = wait_for("A to take the VIP back", lambda: lan.vip in lan.box_a.addresses() and time.monotonic(),
                            30, every=0.01)
            wait_for("A to take the call", lambda: (_ha(pair.data["a"]) or {}).get("calls_taken_over") == 1, 10,
                     every=0.1)
            time.sleep(2.0)
            end = time.monotonic()
            gaps = {n: s.largest_gap(back - 0.5, end) for n, s in streams.items()}
            print(f"audio gap at the hand-back: {max(gaps.values()) * 1000:.0f} ms")
            for n, s in streams.items():
                assert len([t for t in s.arrivals if t > end - 1.0]) > 40, f"{n} hears nothing after the hand-back"
            assert max(gaps.values()) < 2.0
            assert "handed to the peer (ended here without BYE)" in (tmp_path / "b.log").read_text()
        finally:
            for s in streams.values():
                s.stop()
        got_bye = {}

        def bob_hangs_up():
            req = bob.wait_request("BYE", 8)
            if req is not None:
                bob.reply(req, 200)
                got_bye["bye"] = req
        t = threading.Thread(target=bob_hangs_up)
        t.start()
        assert ann.bye(dialog) == 200
        t.join(10)
        assert "bye" in got_bye
        for p in phones.values():
            p.close()


def _ha(data):
    from services.control import ControlError, query
    try:
        return query(str(data), "ha", timeout=2.0)
    except ControlError:
        return None


@pytest.mark.e2e
def test_a_planned_stop_of_the_active_box_hands_its_answered_call_over(tmp_path):
    """Maintenance: `pbx run` on A is stopped (SIGTERM). keepalived goes first, B takes the VIP
    and the call; A's call service must not end the call with a BYE on its way down."""
    def seed(store):
        store.add_extension("1000", "Ann", secret=SECRETS["1000"])
        store.add_extension("1001", "Bob", secret=SECRETS["1001"])
    from services.control import query
    with OfficeLan() as lan, PbxPair(lan, tmp_path, seed=seed) as pair:
        pair.wait_ready()
        phones = {n: RawPhone(n, s, (lan.vip, 5060), sock=lan.phone.socket(), ip=lan.phone.addr)
                  for n, s in SECRETS.items()}
        assert [p.register() for p in phones.values()] == [200, 200]
        rtp = {n: lan.phone.socket() for n in SECRETS}
        rtp["1000"].bind((lan.phone.addr, 40000))
        rtp["1001"].bind((lan.phone.addr, 40002))
        ann, bob = phones["1000"], phones["1001"]
        dialog, pbx_ann, pbx_bob, _ = raw_call(
            _Log(tmp_path / "a.log"), ann, bob, rtp["1000"], rtp["1001"],
            offer=sdp_body(lan.phone.addr, 40000), answer=sdp_body(lan.phone.addr, 40002))
        streams = {"1000": RtpStream(rtp["1000"], pbx_ann), "1001": RtpStream(rtp["1001"], pbx_bob)}
        try:
            wait_for("the call known to B", lambda: query(str(pair.data["b"]), "ha").get("answered_calls_held"), 10,
                     every=0.1)
            stop = time.monotonic()
            pair.procs["a"].terminate()
            assert pair.procs["a"].wait(30) == 0
            wait_for("B to take the call over",
                     lambda: query(str(pair.data["b"]), "ha").get("calls_taken_over") == 1, 15, every=0.1)
            time.sleep(2.0)
            end = time.monotonic()
            gaps = {n: s.largest_gap(stop, end) for n, s in streams.items()}
            print(f"audio gap at the planned stop: {max(gaps.values()) * 1000:.0f} ms")
            for n, s in streams.items():
                assert len([t for t in s.arrivals if t > end - 1.0]) > 40, f"{n} hears nothing after the stop"
            assert max(gaps.values()) < 2.0
            assert bob.wait_request("BYE", 0.5) is None and ann.wait_request("BYE", 0.5) is None, \
                "the stopping box hung the call up"
        finally:
            for s in streams.values():
                s.stop()
        got_bye = {}

        def bob_hangs_up():
            req = bob.wait_request("BYE", 8)
            if req is not None:
                bob.reply(req, 200)
                got_bye["bye"] = req
        t = threading.Thread(target=bob_hangs_up)
        t.start()
        assert ann.bye(dialog) == 200
        t.join(10)
        assert "bye" in got_bye
        for p in phones.values():
            p.close()
