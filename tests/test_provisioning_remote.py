"""Phones learn the remote standby (issue 14, item 3): with a remote standby configured (`pbx ha
set --remote`), the provisioning files name it as the account's second registrar where the vendor
has one, so the phone registers with both boxes and the standby can ring it after a takeover:

- Yealink: account.1.sip_server.2.* with fallback.redundancy_type 0 (concurrent registration);
- Poly: reg.1.server.2.* (the phone registers to every server configured);
- Cisco MPP: Alternate_Proxy_1_ with Dual_Registration_1_ Yes;
- Grandstream: P2312, the account's secondary SIP server (GRP/GXP register with both);
- Snom: the same account as identity 2 on the standby, named identity 1's user_failover_identity
  (Snom's "Failover Identity": both identities register; calls go out on identity 2 while
  identity 1 is unregistered).

Fanvil gets its single registrar as before (not done: its backup-server keys were not confirmed
from vendor documentation). Without a remote standby every file is as
before (tests/test_provisioning.py's golden files). Golden files here: tests/golden/provisioning/
<vendor>-backup-<file> (PBX_UPDATE_GOLDEN=1 rewrites them after a deliberate change).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from firmware.features import provisioning as prov
from tests.test_provisioning import BOX, MACS, NASTY

GOLDEN = Path(__file__).parent / "golden" / "provisioning"
BACKUP = dataclasses.replace(BOX, backup_host="203.0.113.7")
WITH_BACKUP = ("yealink", "poly", "cisco", "grandstream", "snom")


def _files(vendor: str, box) -> dict[str, str]:
    phone = prov.Phone(mac=MACS[vendor], vendor=vendor, extension="1000", model="M1", label="Desk",
                       token="T" * 22, username="phuser0001", password="P" * 20, admin_password="A" * 20)
    return {name: prov.render(phone, name, prov.Account("1000", "Ann & <Co>", NASTY), box,
                              prov.effective_settings(phone, {}), [("1000", "Ann"), ("1001", "Bob & Sons")])[1]
            for name in prov.files_of(phone)}


@pytest.mark.parametrize("vendor", WITH_BACKUP)
def test_the_remote_standby_is_the_second_registrar(vendor):
    files = _files(vendor, BACKUP)
    for name, text in files.items():
        golden = GOLDEN / f"{vendor}-backup-{name}"
        if os.environ.get("PBX_UPDATE_GOLDEN") == "1":
            golden.write_text(text)
        assert text == golden.read_text(), f"{golden} differs: review the change, then PBX_UPDATE_GOLDEN=1"
    assert "203.0.113.7" in "".join(files.values())


@pytest.mark.parametrize("vendor", list(prov.VENDORS))
def test_without_a_remote_standby_no_file_names_a_second_registrar(vendor):
    assert _files(vendor, BOX) == _files(vendor, dataclasses.replace(BOX, backup_host=""))
    assert "203.0.113.7" not in "".join(_files(vendor, BOX).values())
    if vendor not in WITH_BACKUP:
        assert _files(vendor, BACKUP) == _files(vendor, BOX)
