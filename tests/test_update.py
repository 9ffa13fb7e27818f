"""A/B updates (services/update.py, webui/system/update.py; decision 021): the boot entries RAUC's
backend writes and reads on the ESP, `rauc status` parsing, the checks a bundle passes, the copy
of the data taken before an install, the System page's slots and upload. The real thing (rauc
install under QEMU, a broken bundle rolling back) is tests/test_image_update.py."""
from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest

from services import update as upd
from tests.browser.webui_env import post


def esp_with_a(tmp_path: Path) -> Path:
    esp = tmp_path / "esp"
    (esp / "loader" / "entries").mkdir(parents=True)
    (esp / "a").mkdir()
    (esp / "loader" / "entries" / "pbx-a.conf").write_text(
        "title Office PBX (slot A)\nsort-key pbx\nversion 1\nlinux /a/vmlinuz\ninitrd /a/initrd.img\n"
        "options root=PARTUUID=aaaa ro rootwait console=ttyS0,115200 quiet rauc.slot=A\n")
    return esp


def test_entry_names_carry_the_boot_counter():
    assert upd.entry_name("A") == "pbx-a.conf"
    assert upd.entry_name("B", 3, 0) == "pbx-b+3-0.conf"
    assert upd.parse_entry_name("pbx-b+2-1.conf") == ("B", 2, 1)
    assert upd.parse_entry_name("pbx-b+3.conf") == ("B", 3, 0)
    assert upd.parse_entry_name("pbx-a.conf") == ("A", None, 0)
    assert upd.parse_entry_name("debian.conf") is None
    with pytest.raises(upd.UpdateError, match="slots are A and B"):
        upd.entry_name("C")


def test_set_primary_writes_a_counted_entry_that_boots_first_and_falls_back_when_bad(tmp_path):
    esp = esp_with_a(tmp_path)
    kernel, initrd = tmp_path / "vmlinuz-6.1.0-28-amd64", tmp_path / "initrd.img-6.1.0-28-amd64"
    kernel.write_bytes(b"kernel")
    initrd.write_bytes(b"initrd")
    boot = upd.SystemdBoot(esp)
    assert boot.get_primary() == "A" and boot.get_state("B") == "bad"
    opts = upd.slot_options("root=PARTUUID=aaaa ro rootwait quiet rauc.slot=A", "B", "bbbb")
    assert opts == "root=PARTUUID=bbbb ro rootwait quiet rauc.slot=B"
    name = boot.set_primary("B", kernel, initrd, opts)
    assert name == "pbx-b+3-0.conf"
    text = (esp / "loader/entries" / name).read_text()
    assert "version 2\n" in text and "linux /b/vmlinuz" in text and "rauc.slot=B" in text
    assert (esp / "b/vmlinuz").read_bytes() == b"kernel" and (esp / "b/initrd.img").read_bytes() == b"initrd"
    assert boot.get_primary() == "B" and boot.get_state("B") == "good"
    # systemd-boot counts a try down before booting it; then the check fails: marked bad
    (esp / "loader/entries" / name).rename(esp / "loader/entries/pbx-b+2-1.conf")
    assert boot.get_primary() == "B"
    boot.set_state("B", "bad")
    assert sorted(p.name for p in (esp / "loader/entries").iterdir()) == ["pbx-a.conf", "pbx-b+0-1.conf"]
    assert boot.get_primary() == "A" and boot.get_state("B") == "bad"


def test_a_blessed_update_stays_primary_and_the_next_one_goes_back_to_slot_a(tmp_path):
    esp = esp_with_a(tmp_path)
    boot = upd.SystemdBoot(esp)
    boot.set_primary("B", options="root=PARTUUID=bbbb ro rauc.slot=B")
    boot.set_state("B", "good")  # what systemd-bless-boot does: the counter goes
    assert (esp / "loader/entries/pbx-b.conf").exists() and boot.get_primary() == "B"
    boot.set_state("A", "bad")   # RAUC, before it writes slot A
    boot.set_primary("A", options="root=PARTUUID=aaaa ro rauc.slot=A")
    names = sorted(p.name for p in (esp / "loader/entries").iterdir())
    assert names == ["pbx-a+3-0.conf", "pbx-b.conf"]
    assert boot.get_primary() == "A"
    assert "version 3\n" in (esp / "loader/entries/pbx-a+3-0.conf").read_text()


def test_the_boot_backend_answers_rauc_and_refuses_unknown_calls(tmp_path, capsys):
    esp = esp_with_a(tmp_path)
    assert upd.boot_backend(["get-primary"], esp) == 0
    assert upd.boot_backend(["get-state", "A"], esp) == 0
    assert capsys.readouterr().out.split() == ["A", "good"]
    with pytest.raises(upd.UpdateError, match="unknown call"):
        upd.boot_backend(["frobnicate"], esp)
    with pytest.raises(upd.UpdateError, match="no pbx-\\*.conf boot entry"):
        upd.SystemdBoot(tmp_path / "empty").get_primary()
    assert upd._booted_slot("BOOT_IMAGE=/a/vmlinuz root=PARTUUID=x ro rauc.slot=B quiet") == "B"


RAUC_STATUS = {
    "compatible": "office-pbx-amd64", "variant": "", "booted": "A", "boot_primary": "rootfs.1",
    "slots": [
        {"rootfs.0": {"class": "rootfs", "device": "/dev/disk/by-partlabel/rootA", "type": "ext4",
                      "bootname": "A", "state": "booted", "parent": None, "mountpoint": "/",
                      "boot_status": "good"}},
        {"rootfs.1": {"class": "rootfs", "device": "/dev/disk/by-partlabel/rootB", "type": "ext4",
                      "bootname": "B", "state": "inactive", "parent": None, "boot_status": "good",
                      "slot_status": {"bundle": {"compatible": "office-pbx-amd64", "version": "20261128-abc"},
                                      "installed": {"timestamp": "2026-11-28T17:00:00Z", "count": 1},
                                      "status": "ok"}}},
    ]}


def test_rauc_status_json_gives_both_slots_and_which_boots_next():
    st = upd.parse_rauc_status(json.dumps(RAUC_STATUS))
    assert st["booted"] == "A" and st["compatible"] == "office-pbx-amd64"
    a, b = st["slots"]
    assert (a.bootname, a.state, a.primary, a.version) == ("A", "booted", False, "")
    assert (b.bootname, b.primary, b.version, b.installed) == ("B", True, "20261128-abc", "2026-11-28T17:00:00Z")


def test_a_bundle_is_checked_before_rauc_sees_it():
    upd.check_bundle_head("pbx-1-amd64.raucb", b"hsqs" + bytes(100), 300 << 20)
    with pytest.raises(upd.UpdateError, match="choose a .raucb file"):
        upd.check_bundle_head("backup.json", b"hsqs", 300 << 20)
    with pytest.raises(upd.UpdateError, match="no squashfs header"):
        upd.check_bundle_head("x.raucb", b"PK\x03\x04", 300 << 20)
    with pytest.raises(upd.UpdateError, match="larger than"):
        upd.check_bundle_head("x.raucb", b"hsqs", upd.MAX_BUNDLE_BYTES + 1)


def test_the_data_is_copied_before_an_install_and_old_copies_go(tmp_path):
    var = tmp_path / "var"
    var.mkdir()
    (var / "config.json").write_text('{"schema": 7}')
    db = sqlite3.connect(var / "cdr.sqlite")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE calls (id INTEGER)")
    db.execute("INSERT INTO calls VALUES (1), (2)")
    db.commit()  # still open: the copy must see the WAL's rows
    backups = tmp_path / "backup"
    for i in range(upd.BACKUP_KEEP + 1):
        dest = upd.backup_data(var, backups, "20261128-abc", now=1_700_000_000 + i)
    db.close()
    assert json.loads((dest / "config.json").read_text()) == {"schema": 7}
    copy = sqlite3.connect(dest / "cdr.sqlite")
    assert copy.execute("SELECT count(*) FROM calls").fetchone()[0] == 2
    copy.close()
    assert len(list(backups.iterdir())) == upd.BACKUP_KEEP


def test_system_page_shows_the_version_and_why_there_are_no_slots(admin):
    page = admin.get("/system").get_data(as_text=True)
    assert 'id="update"' in page and "running-version" in page
    assert 'id="slots-unavailable"' in page  # no rauc here: the page says so, it does not fail


def test_a_bundle_upload_lands_in_the_spool_for_the_root_service(admin, data):
    bundle = b"hsqs" + bytes(8192)
    r = post(admin, "/system/update", {"bundle_file": (io.BytesIO(bundle), "pbx-1-amd64.raucb")},
             content_type="multipart/form-data")
    assert r.status_code == 302, r.get_data(as_text=True)[:500]
    assert (data / "update" / "bundle.raucb").read_bytes() == bundle
    assert not (data / "update" / "bundle.raucb.part").exists()
    # a second one while the first is being installed is refused
    r = post(admin, "/system/update", {"bundle_file": (io.BytesIO(bundle), "pbx-2-amd64.raucb")},
             content_type="multipart/form-data")
    assert r.status_code == 400 and "being installed already" in r.get_data(as_text=True)


def test_an_upload_that_is_not_a_bundle_is_refused_and_removed(admin, data):
    r = post(admin, "/system/update", {"bundle_file": (io.BytesIO(b"{}" * 5000), "backup.json")},
             content_type="multipart/form-data")
    assert r.status_code == 400 and "choose a .raucb file" in r.get_data(as_text=True)
    assert not list((data / "update").iterdir())
    r = post(admin, "/system/update", {"bundle_file": (io.BytesIO(b"x" * 9000), "fake.raucb")},
             content_type="multipart/form-data")
    assert r.status_code == 400 and "no squashfs header" in r.get_data(as_text=True)


def test_an_upload_without_the_csrf_token_or_login_never_reaches_the_spool(app, admin, data):
    r = admin.post("/system/update", data={"bundle_file": (io.BytesIO(b"hsqs" + bytes(8192)), "a.raucb")},
                   content_type="multipart/form-data")
    assert r.status_code == 400
    anon = app.test_client()
    r = anon.post("/system/update", data={"bundle_file": (io.BytesIO(b"hsqs" + bytes(8192)), "a.raucb")},
                  content_type="multipart/form-data")
    assert r.status_code in (302, 401)
    assert not (data / "update" / "bundle.raucb").exists()


def test_after_a_rollback_data_migrated_by_the_newer_version_is_put_back(tmp_path):
    from firmware import cdr
    from firmware.config import migrations
    var, backups = tmp_path / "var", tmp_path / "backup"
    var.mkdir()
    mine = {"meta": {"1": {"schema_version": migrations.SCHEMA_VERSION}}, "extensions": {"1000": {}}}
    (var / "config.json").write_text(json.dumps(mine))
    db = sqlite3.connect(var / "cdr.sqlite")
    db.execute(f"PRAGMA user_version = {cdr.SCHEMA_VERSION}")
    db.close()
    upd.backup_data(var, backups, "old", now=1_700_000_000)
    assert upd.restore_newer(var, backups) == []  # nothing newer: nothing touched
    # the update migrated both files one step further, then was rolled back
    newer = {"meta": {"1": {"schema_version": migrations.SCHEMA_VERSION + 1}}}
    (var / "config.json").write_text(json.dumps(newer))
    db = sqlite3.connect(var / "cdr.sqlite")
    db.execute(f"PRAGMA user_version = {cdr.SCHEMA_VERSION + 1}")
    db.close()
    assert upd.newer_than_this_build(var) == ["config.json", "cdr.sqlite"]
    assert upd.restore_newer(var, backups, now=1_700_000_100) == ["config.json", "cdr.sqlite"]
    assert json.loads((var / "config.json").read_text()) == mine
    db = sqlite3.connect(var / "cdr.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == cdr.SCHEMA_VERSION
    db.close()
    assert json.loads((var / "config.json.newer-20231114-221500").read_text()) == newer
    assert upd.newer_than_this_build(var) == []
