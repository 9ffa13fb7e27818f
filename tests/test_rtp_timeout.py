"""A call whose phones stop sending RTP (power cut, lost BYE) is hung up instead of staying open."""

from pathlib import Path

import pytest

from firmware.cdr import Disposition
from tests.pbxproc import PbxProcess
from tests.phones.sipp import Sipp, free_port, run_sipp

pytestmark = pytest.mark.e2e


def test_answered_call_without_any_rtp_is_hung_up_after_the_rtp_timeout(tmp_path):
    with PbxProcess(tmp_path / "pbx", extensions=["1000", "1001"], env={"PBX_RTP_TIMEOUT": "3"}) as pbx:
        port = free_port()
        reg = run_sipp("register_auth.xml", pbx.registrar, users=[("1001", pbx.secrets["1001"])],
                       port=port, workdir=tmp_path, timeout=10)
        assert reg.ok, reg.log_tail()
        # both ends are SIPp without media: the call is answered, then nothing flows
        with Sipp("uas_answer.xml", port=port, workdir=tmp_path, timeout=30):
            caller = Sipp(str(Path(__file__).parent / "bench" / "uac_setup.xml"), pbx.registrar, service="1001",
                          users=[("1000", pbx.secrets["1000"])], duration_ms=20000, workdir=tmp_path,
                          timeout=30).start()
            try:
                rec = pbx.wait_cdr(lambda r: r.src == "1000", timeout=15)
            finally:
                caller.stop()
        assert rec.disposition is Disposition.ANSWERED
        assert 3 <= rec.billsec <= 8, rec.billsec
        assert "rtp timeout" in rec.cause
        assert pbx.status()["calls"] == []


def test_a_phone_that_vanished_ends_the_call_although_the_other_keeps_sending(tmp_path):
    """The caller's phone lost power (no BYE, no RTP); the callee's goes on sending: the call still
    ends after the RTP timeout (per phone, as Asterisk's rtptimeout), not at the session timer."""
    import threading
    import time
    from tests.phones.raw import raw_call, registered, rtp_packet, udp_socket
    with PbxProcess(tmp_path / "pbx", extensions=["1000", "1001"], env={"PBX_RTP_TIMEOUT": "3"}) as pbx:
        a, b = registered(pbx, "1000"), registered(pbx, "1001")
        a_rtp, b_rtp = udp_socket(), udp_socket()
        dialog, pbx_a, pbx_b, _ = raw_call(pbx, a, b, a_rtp, b_rtp)
        a_rtp.sendto(rtp_packet(b"\xff" * 160, 1), pbx_a)        # heard once, then gone
        stop = threading.Event()

        def callee_talks():
            seq = 0
            while not stop.is_set() and seq < 1000:
                b_rtp.sendto(rtp_packet(b"\xff" * 160, seq), pbx_b)
                seq += 1
                time.sleep(0.02)
        t = threading.Thread(target=callee_talks, daemon=True)
        t.start()
        try:
            rec = pbx.wait_cdr(lambda r: r.src == "1000" and r.dst == "1001", timeout=15)
        finally:
            stop.set()
            t.join(2)
        assert "rtp timeout" in rec.cause and 3 <= rec.billsec <= 8, (rec.cause, rec.billsec)
        assert pbx.status()["calls"] == []
        for s in (a_rtp, b_rtp):
            s.close()
