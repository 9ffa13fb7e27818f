"""Specs for what tests/bench/kernel_media.py computes from its probes and from /proc (no root needed)."""

import os
import socket

from tests.bench import kernel_media


def _probe(transits_ms: dict[str, list[float]]) -> kernel_media.Probe:
    """A Probe whose receivers saw packets sent every 20 ms with the given transit times."""
    probe = kernel_media.Probe()
    for n, (path, transits) in enumerate(transits_ms.items()):
        probe.streams.append((path, None, ("0.0.0.0", 0)))
        got = [(i * 20_000_000, i * 20_000_000 + int(t * 1e6)) for i, t in enumerate(transits)]
        probe.recv[n] = (path, got, None)
    probe.sent = max(len(t) for t in transits_ms.values())
    return probe


def test_steady_transit_has_no_jitter_and_alternating_transit_has_rfc3550_jitter():
    stats = _probe({"direct": [0.05] * 100, "pbx": [0.1, 1.1] * 50}).stats()
    assert stats["direct"]["jitter_ms"] == 0 and stats["direct"]["p99_ms"] == 0
    # |D| = 1 ms every packet: J converges to 1 ms (J += (|D| - J) / 16)
    assert 0.99 < stats["pbx"]["jitter_ms"] <= 1.0
    assert abs(stats["pbx"]["p99_ms"] - 1.0) < 1e-6 and abs(stats["pbx"]["max_ms"] - 1.0) < 1e-6
    assert stats["pbx"]["expected"] == stats["pbx"]["received"] == 100


def test_lost_packets_show_as_fewer_received_than_expected():
    stats = _probe({"pbx": [0.1] * 100, "direct": [0.1] * 90}).stats()
    assert stats["direct"]["expected"] == 100 and stats["direct"]["received"] == 90


def test_udp_counters_reads_this_namespace_sockets_with_their_drops():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        counters = kernel_media.udp_counters(os.getpid())
        assert port in counters and counters[port][1] == 0


def test_the_table_names_a_step_that_was_not_measured():
    steps = [kernel_media.Step("auto", 500, note="only 416 of 500 calls answered")]
    assert "only 416 of 500 calls answered" in kernel_media.table(steps)
