"""The web UI's idle stop (webui/server.py IdleExit, decision 026): what counts as activity.

The UI in a process started on demand (pbx run, pbx-web.socket): tests/test_runner_supervision.py
and tests/test_systemd.py. Here the rule itself, on a fake clock.
"""
from __future__ import annotations

import pytest

from webui.server import IdleExit


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return iter([b"a", b"b"])


class Stream:
    """A response the server is still sending (a dashboard's event stream) until close()."""

    def __init__(self):
        self.closed = False

    def __iter__(self):
        return iter([b"data: 1\n\n"])

    def close(self):
        self.closed = True


def call(wrapped, path="/"):
    return wrapped({"PATH_INFO": path}, lambda status, headers: None)


def test_idle_only_after_the_seconds_since_the_last_request_ended():
    clock = Clock()
    idle = IdleExit(600, clock)
    wrapped = idle.wrap(app)
    clock.now += 599
    body = call(wrapped)
    clock.now += 700                  # a request being served is never idle, however long it takes
    assert not idle.idle()
    assert b"".join(body) == b"ab"
    body.close()                      # the server is done with it: the idle time starts now
    clock.now += 599
    assert not idle.idle()
    clock.now += 1
    assert idle.idle()


def test_the_watchdog_probe_does_not_count_as_a_request():
    clock = Clock()
    idle = IdleExit(10, clock)
    wrapped = idle.wrap(app)
    assert not idle.idle()            # just started: the idle time counts from the start
    for _ in range(5):
        clock.now += 3
        assert b"".join(call(wrapped, "/healthz")) == b"ab"
    assert idle.idle()


def test_an_open_event_stream_keeps_the_ui_up_until_it_closes():
    clock = Clock()
    idle = IdleExit(10, clock)
    stream = Stream()
    wrapped = idle.wrap(lambda environ, start_response: stream)
    body = call(wrapped, "/events")
    clock.now += 3600
    assert not idle.idle()
    body.close()
    assert stream.closed
    clock.now += 10
    assert idle.idle()


def test_a_request_that_fails_is_not_counted_for_ever():
    clock = Clock()
    idle = IdleExit(10, clock)

    def broken(environ, start_response):
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        call(idle.wrap(broken))
    clock.now += 10
    assert idle.idle()
