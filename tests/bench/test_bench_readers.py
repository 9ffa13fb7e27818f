"""Specs for what the bench reads back: SIPp message logs, percentiles, /proc counters."""

import os
import socket
import time

from tests.bench import phases, procstat, report

MESSAGE_LOG = """\
----------------------------------------------- 2026-11-25 20:51:57.500000
UDP message sent (581 bytes):

INVITE sip:1001@127.0.0.1:5060;transport=UDP SIP/2.0
Call-ID: 1-99@127.0.0.1
CSeq: 1 INVITE

----------------------------------------------- 2026-11-25 20:51:57.501000
UDP message received [300] bytes :

SIP/2.0 407 Proxy Authentication Required
Call-ID: 1-99@127.0.0.1
CSeq: 1 INVITE

----------------------------------------------- 2026-11-25 20:51:57.502000
UDP message sent (700 bytes):

INVITE sip:1001@127.0.0.1:5060;transport=UDP SIP/2.0
Call-ID: 1-99@127.0.0.1
CSeq: 2 INVITE

----------------------------------------------- 2026-11-25 20:52:00.000000
UDP message sent (700 bytes):

INVITE sip:1001@127.0.0.1:5060;transport=UDP SIP/2.0
Call-ID: 1-99@127.0.0.1
CSeq: 2 INVITE

----------------------------------------------- 2026-11-25 20:51:57.505250
UDP message received [288] bytes :

SIP/2.0 180 Ringing
Call-ID: 1-99@127.0.0.1
CSeq: 2 INVITE

----------------------------------------------- 2026-11-25 20:51:57.600000
UDP message received [288] bytes :

SIP/2.0 180 Ringing
i: 2-99@127.0.0.1
CSeq: 1 INVITE

"""


def test_post_dial_delay_runs_from_the_first_sending_of_the_answered_invite_to_its_180(tmp_path):
    (tmp_path / "uac_setup_99_messages.log").write_text(MESSAGE_LOG)
    delays = phases.read_post_dial_delays(tmp_path)
    # CSeq 2 first sent at .502000, 180 at .505250; the challenged CSeq 1 and the retransmission
    # do not count, and a 180 for a call whose INVITE is not in the log is ignored
    assert len(delays) == 1 and abs(delays[0] - 3.25) < 1e-6


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert phases.percentile(values, 50) == 50
    assert phases.percentile(values, 99) == 99
    assert phases.percentile(values, 100) == 100
    assert phases.percentile([7.0], 99) == 7.0
    assert phases.percentile([], 50) is None


def test_sipp_errors_fold_into_counted_lines():
    one = ("2026-11-25\t20:57:50.445254\t1795640270.445254: Aborting call on unexpected message for "
           "Call-Id '5-1@127.0.0.1': while expecting '200' (index 11), received 'SIP/2.0 500 Oops\n"
           "Via: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bK-1\nCall-ID: 5-1@127.0.0.1\nCSeq: 3 BYE\n\n'")
    assert phases.summarize_sipp_errors(one + one) == [
        "2 x aborting call on unexpected message: expected 200, got 'SIP/2.0 500 Oops' (3 BYE)"]


def test_log_lines_are_counted_without_timestamps_pids_and_ports():
    lines = ["2026-11-25 21:03:55,381 ERROR edge: kamailio: 2(3969) ERROR: out of mem 127.0.0.1:4000",
             "2026-11-25 21:03:56,002 ERROR edge: kamailio: 3(3970) ERROR: out of mem 127.0.0.1:4002"]
    assert phases.summarize_log(lines) == [
        "2 x ERROR edge: kamailio: N(pid) ERROR: out of mem 127.0.0.1:PORT (first 2026-11-25 21:03:55,381)"]


def test_cpu_time_of_this_process_grows_while_it_computes():
    before = procstat.cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.1
    while time.process_time() < deadline:
        pass
    assert procstat.cpu_seconds(os.getpid()) - before >= 0.05


def test_memory_of_this_process_has_rss_and_pss():
    m = procstat.memory([os.getpid()])
    assert m.rss_kb > 1000 and 0 < m.pss_kb <= m.rss_kb


def test_datagrams_a_socket_never_reads_show_up_as_its_drops():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        rx.bind(("127.0.0.1", 0))
        inodes = procstat.socket_inodes(os.getpid())
        for _ in range(200):
            tx.sendto(b"x" * 160, rx.getsockname())
        drops = procstat.udp_drops(inodes=inodes)
        assert drops > 100
        assert procstat.udp_drops(ports=[rx.getsockname()[1]]) == drops


def test_footprint_counts_the_call_service_by_rss_and_kamailio_by_pss():
    groups = {"call service": procstat.Memory(rss_kb=40 * 1024, pss_kb=30 * 1024),
              "kamailio": procstat.Memory(rss_kb=90 * 1024, pss_kb=12 * 1024)}
    assert phases.footprint(groups) == 52.0


CARRIER_LOG = """\
----------------------------------------------- 2026-11-28 12:00:00.100000
UDP message sent (620 bytes):

INVITE sip:441632960999@127.0.0.1:5060;transport=UDP SIP/2.0
Call-ID: 7-42@127.0.0.61
CSeq: 1 INVITE

----------------------------------------------- 2026-11-28 12:00:00.101000
UDP message received [300] bytes :

SIP/2.0 100 Trying
Call-ID: 7-42@127.0.0.61
CSeq: 1 INVITE

----------------------------------------------- 2026-11-28 12:00:00.104500
UDP message received [300] bytes :

SIP/2.0 180 Ringing
Call-ID: 7-42@127.0.0.61
CSeq: 1 INVITE

"""


def test_a_carriers_post_dial_delay_runs_from_its_only_invite_to_the_180(tmp_path):
    # a trunk call is not challenged: the INVITE with CSeq 1 is the one the 180 answers
    (tmp_path / "carrier_setup_42_messages.log").write_text(CARRIER_LOG)
    delays = phases.read_post_dial_delays(tmp_path)
    assert len(delays) == 1 and abs(delays[0] - 4.5) < 1e-6


def test_callers_take_turns_so_no_account_passes_a_quarter_of_the_edges_limit():
    requests, seconds = phases.ACCOUNT_LIMIT
    for rate in (1, 20, 50, 500):
        numbers = phases.caller_numbers(rate)
        assert numbers[0] == phases.CALLER and phases.CALLEE not in numbers
        assert len(set(numbers)) == len(numbers)
        # round robin: each account sends rate / len(numbers) INVITEs with credentials per second
        assert rate * seconds / len(numbers) <= requests / 4
    assert phases.caller_numbers(0) == [phases.CALLER]


def _results():
    m = procstat.Memory
    calls = phases.CallsResult(idle={"call service": m(40 * 1024, 30 * 1024),
                                     "kamailio": m(90 * 1024, 12 * 1024)},
                               idle_cpu={"call service": 0.1, "kamailio": 0.0, "machine": 3},
                               event_loop="uvloop")
    for n in (50, 100):
        calls.steps.append(phases.CallStep(n, n, n, {"call service": n * 0.18, "kamailio": 0.05, "sipp": 7,
                                                      "machine": 30}, 20.0, 1.0, 1.0, 0, {}))
    setups = phases.SetupResult(
        steps=[phases.RateStep(100, 1000, 1000), phases.RateStep(200, 2000, 1990, 10)],
        pdd=phases.Delay(500, 3.8, 4.8, 7.9, 51.3), baseline=phases.Delay(250, 0.1, 0.2, 0.3, 1.5))
    trunk = phases.TrunkResult()
    trunk.calls.steps.append(phases.CallStep(100, 100, 100, {"call service": 15.0, "kamailio": 0.0}, 20.0))
    trunk.setups = phases.SetupResult(
        steps=[phases.RateStep(r, r * 10, r * 10) for r in (100, 200, 300)],
        pdd=phases.Delay(500, 3.0, 4.0, 6.0, 9.0), baseline=phases.Delay(250, 0.1, 0.2, 0.3, 1.0))
    trunk.setups.trouble.append(phases.Trouble("trunk -> extension, 300 setups/s: warnings in the PBX log"))
    return calls, setups, trunk


def test_the_trunk_section_adds_to_the_report_and_leaves_the_other_tables_as_they_were():
    calls, setups, trunk = _results()
    plan = phases.Plan()
    for markdown in (False, True):
        without = report.render(calls, setups, plan, markdown=markdown)
        with_trunk = report.render(calls, setups, plan, markdown=markdown, trunk=trunk)
        title = next(i for i, line in enumerate(with_trunk) if "5. Trunk to extension" in line)
        assert with_trunk[:title - 1] == without
        assert any("trunk -> extension, 300 setups/s" in line for line in with_trunk[title:])


def test_the_trunk_headline_sets_each_measure_beside_the_extension_calls_of_the_same_run():
    calls, setups, trunk = _results()
    rows = {r[0]: r[1:] for r in report.trunk_rows(trunk, calls, setups, phases.Plan())}
    cpu = rows["CPU per bridged call, call service (100 calls)"]
    assert cpu[:2] == ["0.150 %", "0.180 %"] and cpu[-1] == "SHORT"
    # every trunk step was clean: the ceiling lies higher than the bench tried
    # ... and the extension calls' first failure is named (issue 16: setups/s to the first failure)
    assert rows["Call setups/s to the first failure (no RTP)"] == [
        "300/s (highest step tried)", "100/s (200/s failed)", ">= 500/s", "SHORT"]
    assert rows["Post-dial delay INVITE -> 180, p99 at 100/s"][0] == "6.0 ms (p50 3.0 ms)"
