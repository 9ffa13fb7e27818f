"""At capacity (no RTP port left) a new call is refused with 480 and Retry-After, nothing breaks."""

import pytest

from firmware.cdr import Disposition
from tests.pbxproc import PbxProcess
from tests.phones.pj import PjPhone

pytestmark = pytest.mark.e2e


def test_call_beyond_the_rtp_port_range_gets_480_and_the_first_call_goes_on(tmp_path):
    # 4 ports = 2 even RTP ports = the two legs of exactly one call
    with PbxProcess(tmp_path / "pbx", extensions=["1000", "1001", "1002", "1003"], rtp_size=4) as pbx:
        phones = [PjPhone(user=n, secret=pbx.secrets[n], registrar=pbx.registrar, tone_hz=700,
                          record_dir=tmp_path) for n in ("1000", "1001", "1002", "1003")]
        for p in phones:
            p.start()
        try:
            a, b, c, d = phones
            assert all(p.register() == 200 for p in phones)
            b.auto_answer(200)
            d.auto_answer(200)
            a.call(pbx.uri("1001"))
            a.wait_state("CONFIRMED", timeout=5)
            c.call(pbx.uri("1003"))
            c.wait_state("DISCONNECTED", timeout=5)
            assert c.last_status == 480
            assert a.events()[-1]["state"] == "CONFIRMED"  # the first call is untouched
            a.hangup()
            b.wait_state("DISCONNECTED", timeout=5)
        finally:
            for p in phones:
                p.stop()
        rec = pbx.wait_cdr(lambda r: r.src == "1002")
        assert rec.disposition is Disposition.FAILED and rec.cause.startswith("480 no free RTP port")
        assert "Traceback" not in pbx.log_tail(300)
