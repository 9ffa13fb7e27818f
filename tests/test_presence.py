"""Lamps: the call service's presence publisher against the real Kamailio edge.

The publisher (services/callsvc/presence.py) runs on a real call-service SIP endpoint bound to the
address the edge trusts; phones are raw SIP UAs that register, SUBSCRIBE with digest auth and
read the NOTIFYs the edge's presence module sends.
"""
from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from services.callsvc.presence import REMOVE_AFTER_S, Presence
from services.callsvc.sip import SipEndpoint, new_branch
from services.edge import Edge, EdgeConfig
from tests.phones.raw import RawPhone
from tests.test_edge import free_port

SUBSCRIBERS = {"1000": "pw-presence-1000", "1001": "pw-presence-1001"}


class _PublisherHost:
    """What Presence needs of the call service: its SIP endpoint, the edge, a Via, a loop."""

    def __init__(self, cs_port: int, edge_port: int):
        self.edge = ("127.0.0.1", edge_port)
        self.listen = ("127.0.0.1", cs_port)
        self.loop = asyncio.new_event_loop()
        self.endpoint = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(5)

    def via(self) -> str:
        return f"SIP/2.0/UDP {self.listen[0]}:{self.listen[1]};branch={new_branch()};rport"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def start():
            _, self.endpoint = await self.loop.create_datagram_endpoint(
                lambda: SipEndpoint(self.edge, lambda req, tx: None), local_addr=self.listen)
            self.presence = Presence(self)
            self.presence.start()
            self.ready.set()
        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def call(self, fn, *args, **kw) -> None:
        self.loop.call_soon_threadsafe(lambda: fn(*args, **kw))

    def close(self) -> None:
        def stop():
            self.presence.stop()
            self.endpoint.close()
            self.loop.call_soon(self.loop.stop)   # let the publisher task see its cancellation
        self.loop.call_soon_threadsafe(stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def lamps(tmp_path_factory):
    cs_port = free_port()
    cfg = EdgeConfig(tmp_path_factory.mktemp("presence"), sip_port=free_port(), cs_port=cs_port)
    edge = Edge(cfg)
    edge.sync_subscribers(SUBSCRIBERS)
    edge.start()
    host = _PublisherHost(cs_port, cfg.sip_port)
    yield edge, host
    host.close()
    edge.stop()


def _phone(edge, user: str) -> RawPhone:
    phone = RawPhone(user, SUBSCRIBERS[user], ("127.0.0.1", edge.cfg.sip_port))
    assert phone.register() == 200
    return phone


def _published(host, count: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while host.presence.sent < count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert host.presence.sent >= count, "the edge did not accept the PUBLISH"


def test_message_waiting_lamp_follows_the_published_mailbox_counts(lamps):
    edge, host = lamps
    phone = _phone(edge, "1000")
    try:
        status, dialog = phone.subscribe("1000", "message-summary")
        assert status in (200, 202)
        assert phone.next_notify(dialog) is not None          # the initial state
        before = host.presence.sent
        host.call(host.presence.publish_mwi, "1000", new=1, old=2)
        _published(host, before + 1)
        lit = phone.next_notify(dialog, match=lambda body: "Messages-Waiting: yes" in body)
        assert lit is not None and "Voice-Message: 1/2" in lit.body
        assert lit.header("event").startswith("message-summary")
        host.call(host.presence.publish_mwi, "1000", new=0, old=3)
        off = phone.next_notify(dialog, match=lambda body: "Messages-Waiting: no" in body)
        assert off is not None and "Voice-Message: 0/3" in off.body
    finally:
        phone.close()


def test_a_phone_may_not_watch_another_extensions_mailbox(lamps):
    edge, _ = lamps
    phone = _phone(edge, "1001")
    try:
        status, _ = phone.subscribe("1000", "message-summary")
        assert status == 403
    finally:
        phone.close()


def test_blf_lamp_follows_the_published_dialog_state_and_a_late_watcher_gets_it_at_once(lamps):
    edge, host = lamps
    watcher = _phone(edge, "1001")
    try:
        status, dialog = watcher.subscribe("*33", "dialog")
        assert status in (200, 202)
        assert watcher.next_notify(dialog) is not None
        host.call(host.presence.publish_dialog, "*33", "confirmed")
        lit = watcher.next_notify(dialog, match=lambda body: "<state>confirmed</state>" in body)
        assert lit is not None and 'entity="sip:*33@' in lit.body
        host.call(host.presence.publish_dialog, "*33", "terminated")
        assert watcher.next_notify(dialog, match=lambda body: "<state>terminated</state>" in body)
        host.call(host.presence.publish_dialog, "*33", "confirmed")
        assert watcher.next_notify(dialog, match=lambda body: "<state>confirmed</state>" in body)
    finally:
        watcher.close()
    late = _phone(edge, "1000")
    try:
        status, dialog = late.subscribe("*33", "dialog")
        assert status in (200, 202)
        first = late.next_notify(dialog)
        assert first is not None and "<state>confirmed</state>" in first.body
    finally:
        late.close()


def test_each_call_does_not_leave_a_presentity_behind_in_the_edge(lamps):
    """Kamailio refuses updates of a terminated dialog presentity, so every call's lamp starts a new
    publication; the ended one is removed 1 s later (PUBLISH Expires 0), not kept for its 600 s
    in the edge's shared memory. A watcher still ends on the idle state."""
    edge, host = lamps
    watcher = _phone(edge, "1000")
    try:
        status, dialog = watcher.subscribe("1001", "dialog")
        assert status in (200, 202)
        for _ in range(4):                     # four calls: ringing, talking, idle
            for state in ("early", "confirmed", "terminated"):
                sent = host.presence.sent
                host.call(host.presence.publish_dialog, "1001", state)
                _published(host, sent + 1)
        deadline = time.monotonic() + 5
        while True:
            mine = [p for p in edge._rpc.call("presence.presentity_list")
                    if p.get("user") == "1001" and p.get("event") == "dialog"]
            if len(mine) == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(mine) == 1, f"{len(mine)} dialog presentities of 1001 in the edge after 4 calls"
        last = None
        while (msg := watcher.next_notify(dialog, timeout=1.5)) is not None:
            last = msg
        assert last is not None and "<state>terminated</state>" in last.body
    finally:
        watcher.close()


def test_the_refresh_of_an_idle_lamp_keeps_one_presentity_and_no_edge_error(lamps, caplog):
    """The 5-minute refresh re-publishes an idle lamp with the same dialog id; the edge replaces
    the old presentity itself, so nothing may try to remove it again (in the 100,000-call soak each
    refresh logged one "No E_Tag match" error per idle extension in Kamailio)."""
    edge, host = lamps
    for state in ("confirmed", "terminated"):
        sent = host.presence.sent
        host.call(host.presence.publish_dialog, "1000", state)
        _published(host, sent + 1)
    time.sleep(0.2)
    sent = host.presence.sent
    host.call(host.presence._refresh_all)
    _published(host, sent + 1)
    time.sleep(REMOVE_AFTER_S + 1.0)                 # when a removal would have gone out
    mine = [p for p in edge._rpc.call("presence.presentity_list")
            if p.get("user") == "1000" and p.get("event") == "dialog"]
    assert len(mine) == 1, mine
    assert "No E_Tag match" not in caplog.text


def test_unknown_event_packages_are_refused_and_phones_cannot_publish(lamps):
    edge, _ = lamps
    phone = _phone(edge, "1000")
    try:
        status, _ = phone.subscribe("1000", "presence.winfo")
        assert status == 489
        sock = phone.sock
        host = f"127.0.0.1:{edge.cfg.sip_port}"
        phone.send(phone._request("PUBLISH", f"sip:1000@{host}", "pub-1", f"<sip:1000@{host}>;tag=x",
                                  f"<sip:1000@{host}>", 1, extra=["Event: message-summary", "Expires: 60"]))
        resp = phone._final("pub-1", 1, 3.0)
        assert resp is not None and resp.status in (403, 407), resp and resp.start
        assert sock is phone.sock
    finally:
        phone.close()


def test_dialog_states_are_checked():
    with pytest.raises(ValueError, match="use one of"):
        Presence.publish_dialog(Presence.__new__(Presence), "1000", "ringing")
