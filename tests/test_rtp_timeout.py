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
