"""Stopping the PBX with calls up: every phone gets its BYE, every call its CDR, and stop is quick."""

import time

import pytest

from firmware.cdr import Disposition
from tests.pbxproc import PbxProcess
from tests.phones.pj import PjPhone

pytestmark = pytest.mark.e2e


def test_stopping_the_pbx_hangs_up_active_calls_and_records_them(tmp_path):
    pbx = PbxProcess(tmp_path / "pbx", extensions=["1000", "1001"]).start()
    try:
        with PjPhone(user="1000", secret=pbx.secrets["1000"], registrar=pbx.registrar, tone_hz=700,
                     record_dir=tmp_path) as a, \
                PjPhone(user="1001", secret=pbx.secrets["1001"], registrar=pbx.registrar, tone_hz=900,
                        record_dir=tmp_path) as b:
            assert a.register() == 200 and b.register() == 200
            b.auto_answer(200)
            a.call(pbx.uri("1001"))
            a.wait_state("CONFIRMED", timeout=5)
            t0 = time.monotonic()
            pbx.stop()
            assert time.monotonic() - t0 < 6
            a.wait_state("DISCONNECTED", timeout=5)
            b.wait_state("DISCONNECTED", timeout=5)
        assert pbx.proc is None and "Traceback" not in pbx.log_tail(200)
        rec = pbx.wait_cdr(lambda r: r.src == "1000", timeout=2)
        assert rec.disposition is Disposition.ANSWERED
    finally:
        pbx.stop()
