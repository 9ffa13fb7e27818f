"""A caller who gives up never leaves a call behind: resources an extension can tie up stay bounded.

Found by the fuzz (tests/security/test_fuzz.py, stuck calls after CANCELs): a CANCEL that arrives
while the caller hears the busy tone or the "not available" announcement after the callee said no
must end the call like any other CANCEL. A call that is never torn down keeps two RTP ports and its
call state for ever (the RTP inactivity sweep only looks at answered calls), so one registered
extension could drain the RTP port range with INVITE + CANCEL pairs: a denial of service.
"""

import socket
import time

import pytest

from tests.pbxproc import PbxProcess
from tests.security import fuzz

pytestmark = pytest.mark.e2e

EXTENSIONS = ["1000", "1001", "1002", "1003"]


@pytest.fixture(scope="module")
def pbx(tmp_path_factory):
    proc = PbxProcess(tmp_path_factory.mktemp("teardown"), extensions=EXTENSIONS,
                      settings={"busy_tone_seconds": 3, "no_answer_timeout": 20})
    proc.start()
    yield proc
    proc.stop()


def agent(pbx, user, **kw):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    ctx = fuzz.Ctx(target=(pbx.addr, pbx.sip_port), local=sock.getsockname(), user=user, media_host="127.0.0.1")
    return fuzz.Agent(sock, ctx, secret=pbx.secrets[user], mutator=fuzz.Mutator(1), **kw).start()


def wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("callee_answer,dialled", [
    (486, "1001"),   # the callee is busy: the caller hears the busy tone
    (None, "1003"),  # the extension is not registered: "not available" announcement
    (None, "1999"),  # no such number: "not found" announcement
])
def test_cancel_during_the_busy_tone_or_announcement_ends_the_call(pbx, callee_answer, dialled):
    callee = agent(pbx, "1001", role="callee", answer=486)
    caller = agent(pbx, "1000", role="caller", in_dialog_fuzz=False)
    try:
        assert callee.register() == 200 and caller.register() == 200
        legs_before = pbx.status()["rtp_legs"]  # (a call an earlier case left behind stays counted)
        # 127.0.0.1:9 (discard): the tone goes nowhere, what matters is the SIP
        caller.invite(dialled, fuzz.Mutator(2).sdp("127.0.0.1", 9, n=0), sip_level="none")
        assert wait_for(lambda: caller.codes[183] > 0, 8), f"no 183 with the tone: {caller.stats()}"
        legs_during = pbx.status()["rtp_legs"]
        caller.cancel_last()
        assert wait_for(lambda: caller.codes[487] > 0, 5), f"CANCEL not answered with 487: {caller.stats()}"
        call_id = next(iter(caller.dialogs))

        def gone(st):
            return all(c["call_id"] != call_id for c in st["calls"]) and st["rtp_legs"] == legs_before
        ended = wait_for(lambda: gone(pbx.status()), 6)
        st = pbx.status()
        assert ended, (f"cancelled call to {dialled} still up 6 s after the CANCEL: "
                       f"{[c for c in st['calls'] if c['call_id'] == call_id]}, RTP legs {legs_before} before the "
                       f"call, {legs_during} during the tone, {st['rtp_legs']} now")
    finally:
        caller.stop()
        callee.stop()
