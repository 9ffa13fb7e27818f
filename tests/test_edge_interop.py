"""Issue 8 section 8, the edge's part: interop defects seen with real phones (linphone) at the SIP edge.

1. GRUU (RFC 5627). A phone that REGISTERs with `Supported: gruu` and a `+sip.instance` was handed a
   pub-gruu without the edge's port; linphone then used it as its Contact, and the call service's
   in-dialog requests to that Contact went back to the edge itself (the caller never got the BYE).
   The edge does not offer GRUUs (registrar gruu_enabled 0); a phone keeps its own Contact and every
   in-dialog request reaches it. A GRUU that a phone still holds from an older edge resolves through
   the location table.
2. An in-dialog request for a dialog that does not exist, addressed to the box itself, is answered
   481 Call/Transaction Does Not Exist (RFC 3261 12.2.2), not 404 or 403. Requests aimed anywhere
   else stay refused as before (tests/test_edge_security.py: no open relay).

The PBX is the real one (`pbx run`, tests/pbxproc.py); the phones are raw SIP phones
(tests/phones/raw.py) whose Contact this file chooses, and the real linphone (linphone-daemon,
tests/phones/linphone.py) when it is installed. `make test` does not install it: Debian's
linphone-cli pulls 77 packages (~130 MB: Qt5, ffmpeg) for one test; the raw GruuPhone test covers
the same defect.
"""

from __future__ import annotations

import re
import secrets
import socket
import threading
import uuid

import pytest

from tests.pbxproc import PbxProcess
from tests.phones import linphone
from tests.phones.raw import Dialog, RawPhone, registered, sdp_body, udp_socket, wait_idle

pytestmark = pytest.mark.e2e

EXTS = ["2100", "2101", "2102", "2103", "2104", "2105"]


# ----- helpers ----------------------------------------------------------------------------------
class GruuPhone(RawPhone):
    """A raw phone that registers as a GRUU-capable UA (RFC 5627: `Supported: gruu` and a
    `+sip.instance` on its Contact) and then uses whatever Contact the registrar's 200 offered:
    the pub-gruu if there was one (as linphone does), else its own address."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.instance = f"urn:uuid:{uuid.uuid4()}"
        self.contact = f"sip:{self.user}@{self.ip}:{self.port}"
        self.offered: dict[str, str] = {}  # pub-gruu / temp-gruu of the last 200 to a REGISTER

    def _request(self, method, uri, call_id, from_, to, cseq, **kw) -> str:
        text = super()._request(method, uri, call_id, from_, to, cseq, **kw)
        contact = f"<{self.contact}>"
        if method == "REGISTER":
            contact = f'<sip:{self.user}@{self.ip}:{self.port}>;+sip.instance="<{self.instance}>"'
            text = text.replace("Max-Forwards: 70\r\n", "Max-Forwards: 70\r\nSupported: gruu, path\r\n", 1)
        return text.replace(f"Contact: <sip:{self.user}@{self.ip}:{self.port}>", f"Contact: {contact}", 1)

    def reply(self, req, status, reason="OK", body="", tag=""):
        # answers to in-dialog requests carry the same Contact as the phone's requests
        saved, out = self.send, []
        self.send = out.append
        try:
            to = super().reply(req, status, reason, body, tag)
        finally:
            self.send = saved
        saved(out[0].replace(f"Contact: <sip:{self.user}@{self.ip}:{self.port}>",
                             f"Contact: <{self.contact}>", 1))
        return to

    def _final(self, call_id, cseq, timeout):
        resp = super()._final(call_id, cseq, timeout)
        if resp is not None and resp.method == "REGISTER" and resp.status == 200:
            mine = [c for c in resp.all("contact") if self.instance in c] or resp.all("contact")
            self.offered = dict(re.findall(r'(pub-gruu|temp-gruu)="([^"]*)"', " ".join(mine)))
            self.contact = self.offered.get("pub-gruu", self.contact)
        return resp


def call(a: RawPhone, b: RawPhone, a_rtp: socket.socket, b_rtp: socket.socket):
    """a calls b, b answers: (a's dialog, b's dialog)."""
    seen = {}

    def callee():
        req = b.wait_request("INVITE", 8)
        if req is not None:
            seen["dialog"] = b.answer(req, sdp_body("127.0.0.1", b_rtp.getsockname()[1]))

    t = threading.Thread(target=callee)
    t.start()
    status, dialog, _ = a.invite(b.user, sdp_body("127.0.0.1", a_rtp.getsockname()[1]))
    t.join(10)
    assert status == 200 and "dialog" in seen, f"call {a.user} -> {b.user}: {status}"
    return dialog, seen["dialog"]


def answer_in_dialog(phone: RawPhone, method: str, timeout: float = 6.0):
    """Wait for an in-dialog request (method) at phone and answer it 200; the request or None."""
    req = phone.wait_request(method, timeout)
    if req is not None:
        body = sdp_body("127.0.0.1", 4000) if method == "INVITE" and req.body else ""
        phone.reply(req, 200, "OK", body)
        if method == "INVITE":
            phone.wait_request("ACK", 3)
    return req


# ----- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def box(tmp_path_factory):
    pbx = PbxProcess(tmp_path_factory.mktemp("pbx"), extensions=EXTS)
    pbx.start()
    yield pbx
    pbx.stop()


@pytest.fixture
def rtp():
    socks = [udp_socket(), udp_socket()]
    yield socks
    for s in socks:
        s.close()


# ----- 1. GRUU ----------------------------------------------------------------------------------
def test_gruu_capable_phone_is_offered_no_gruu_and_its_call_completes_both_ways(box, rtp):
    """linphone over UDP as the caller: REGISTER with Supported: gruu + +sip.instance, then call
    with the Contact the 200 offered. The caller's hold re-INVITE is answered, the callee's hold
    re-INVITE and BYE reach the caller through the edge, and the caller's BYE of a second call is
    answered 200."""
    a = GruuPhone("2100", box.secrets["2100"], box.registrar)
    b = registered(box, "2101")
    try:
        assert a.register() == 200
        # what the edge offers: no GRUU (a pub-gruu without the edge's port led back to the edge)
        assert a.offered == {}, f"the edge offered GRUUs {a.offered}"
        assert a.contact == f"sip:2100@{a.ip}:{a.port}"

        a_dlg, b_dlg = call(a, b, *rtp)
        # the caller holds: answered by the call service through the edge
        assert a.in_dialog(a_dlg, "INVITE", sdp_body("127.0.0.1", rtp[0].getsockname()[1],
                                                     direction="sendonly")) == 200
        # the callee hangs up: the call service's BYE to the caller must reach it
        box_bye = {}
        t = threading.Thread(target=lambda: box_bye.setdefault("req", answer_in_dialog(a, "BYE", 8)))
        t.start()
        assert b.bye(b_dlg) == 200
        t.join(10)
        assert box_bye.get("req") is not None, f"the caller never got the BYE\n{box.log_tail()}"
        wait_idle(box)

        # second call: the caller hangs up
        a_dlg, b_dlg = call(a, b, *rtp)
        t = threading.Thread(target=lambda: answer_in_dialog(b, "BYE", 8))
        t.start()
        assert a.bye(a_dlg) == 200
        t.join(10)
        wait_idle(box)
    finally:
        a.close()
        b.close()


def test_a_gruu_held_from_an_older_edge_resolves_through_the_location_table(box, rtp):
    """A phone registered while the edge still offered GRUUs keeps using its pub-gruu as Contact
    until it registers again: the call service's in-dialog requests to it (Route: the edge,
    Request-URI: the box with ;gr=<instance>) go to the phone's registered address."""
    a = GruuPhone("2102", box.secrets["2102"], box.registrar)
    b = registered(box, "2103")
    try:
        assert a.register() == 200
        # the pub-gruu an edge on this port would have offered (RFC 5627: AOR + ;gr=instance)
        a.contact = f"sip:2102@{box.addr}:{box.sip_port};gr={a.instance}"
        a_dlg, b_dlg = call(a, b, *rtp)
        got = {}
        t = threading.Thread(target=lambda: got.setdefault("req", answer_in_dialog(a, "BYE", 8)))
        t.start()
        assert b.bye(b_dlg) == 200
        t.join(10)
        assert got.get("req") is not None, f"the caller never got the BYE\n{box.log_tail()}"
        wait_idle(box)
    finally:
        a.close()
        b.close()


def test_linphone_caller_holds_and_gets_the_callees_bye_then_hangs_up_itself(box, rtp, tmp_path):
    """The real linphone (linphone-daemon 5.1, UDP) calls through the edge as the defect report did:
    its hold re-INVITE completes (Paused), the callee's BYE reaches it (call ended), and on a second
    call its own BYE reaches the callee."""
    b = registered(box, "2105")
    try:
        with linphone.LinphonePhone(tmp_path / "linphone") as lp:
            assert lp.register("2104", box.secrets["2104"], box.registrar) == "LinphoneRegistrationOk"
            seen = {}

            def callee():
                req = b.wait_request("INVITE", 8)
                if req is not None:
                    seen["dialog"] = b.answer(req, sdp_body("127.0.0.1", rtp[1].getsockname()[1]))

            t = threading.Thread(target=callee)
            t.start()
            lp.call(box.uri("2105"))
            t.join(10)
            assert "dialog" in seen and lp.wait_event("LinphoneCallStreamsRunning"), lp.events
            mark = len(lp.events)
            lp.pause()
            assert lp.wait_event("LinphoneCallPaused", after=mark), f"hold never completed: {lp.events}"
            mark = len(lp.events)
            assert b.bye(seen["dialog"]) == 200
            assert lp.wait_event("LinphoneCallEnd", after=mark), \
                f"linphone never got the BYE: {lp.events}\n{box.log_tail()}"
            wait_idle(box)

            seen.clear()
            t = threading.Thread(target=callee)
            t.start()
            lp.call(box.uri("2105"))
            t.join(10)
            assert "dialog" in seen and lp.wait_event("LinphoneCallStreamsRunning", after=mark), lp.events
            mark = len(lp.events)
            got = {}
            t = threading.Thread(target=lambda: got.setdefault("bye", answer_in_dialog(b, "BYE", 8)))
            t.start()
            lp.terminate()
            t.join(10)
            assert got.get("bye") is not None, f"the callee never got linphone's BYE\n{box.log_tail()}"
            assert lp.wait_event("LinphoneCallEnd", after=mark), lp.events
            wait_idle(box)
    finally:
        b.close()


# ----- 2. 481 for an unknown dialog -------------------------------------------------------------
@pytest.mark.parametrize("method", ["BYE", "INVITE", "INFO"])
@pytest.mark.parametrize("shape", ["no-route", "edge-route"])
def test_in_dialog_request_for_an_unknown_dialog_at_the_box_gets_481(box, method, shape):
    """A To tag, a Request-URI of the box itself and no dialog there: 481 Call/Transaction Does
    Not Exist (RFC 3261 12.2.2), with or without the edge's own Route."""
    phone = RawPhone("2100", box.secrets["2100"], box.registrar)
    try:
        edge = f"{box.addr}:{box.sip_port}"
        routes = [f"<sip:{edge};lr;ftag=x>"] if shape == "edge-route" else []
        dialog = Dialog(secrets.token_hex(10), f"<sip:2100@{edge}>;tag={secrets.token_hex(4)}",
                        f"<sip:2101@{edge}>;tag=gone{secrets.token_hex(3)}", f"sip:2101@{edge}", routes, 1)
        body = sdp_body("127.0.0.1", 4000) if method == "INVITE" else ""
        status = phone.in_dialog(dialog, method, body, timeout=4.0)
        assert status == 481, f"{method} for an unknown dialog ({shape}): {status}"
    finally:
        phone.close()
