"""Recordings: each recorded call with its call record, played and downloaded only behind the
login, deleted after a confirmation, removed after the retention period, stored 0600."""
import os
import re
import stat
import time


from firmware.cdr import CallRecord, CdrStore, Disposition
from firmware.config import ConfigStore
from services.media.wavfile import WavWriter
from tests.browser.webui_env import post, user_client
from webui.recordings.library import delete_expired, expired

KEY = "20261120/20261120-100000-201-202-7"


def record_call(data, key=KEY, seconds=1.0, age_days=0.0):
    """Two WAVs written the way the call service writes them, and the call record naming them."""
    paths = []
    for side in ("caller", "callee"):
        path = data / "recordings" / f"{key}-{side}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        with WavWriter(path) as w:
            w.write(b"\x00\x01" * int(8000 * seconds))
        paths.append(path)
    end = time.time() - age_days * 86400
    for p in paths:
        os.utime(p, (end, end))
    legs = [{"leg": "a", "peer": "201", "recording": str(paths[0])},
            {"leg": "b", "peer": "202", "recording": str(paths[1])}]
    with CdrStore(data) as cdr:
        cdr.write(CallRecord("rec-" + key[-1], "201", "202", end - 60, end - 50, end, Disposition.ANSWERED,
                             legs=legs))
    return paths


def test_a_recording_is_written_readable_by_the_pbx_user_only(tmp_path):
    path = tmp_path / "call-caller.wav"
    with WavWriter(path) as w:
        w.write(b"\x00\x00" * 80)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_recordings_page_lists_each_call_with_its_record_and_plays_both_sides(admin, data):
    record_call(data)
    page = admin.get("/recordings").text
    assert "201 → 202" in page and "answered" in page and "1 recorded call" in page
    sources = re.findall(r'<audio controls preload="none" src="([^"]+)"', page)
    assert len(sources) == 2
    r = admin.get(sources[0].replace("&amp;", "&"))
    assert r.status_code == 200 and r.mimetype == "audio/wav" and r.data[:4] == b"RIFF"
    assert "attachment" not in r.headers.get("Content-Disposition", "")
    part = admin.get(sources[0].replace("&amp;", "&"), headers={"Range": "bytes=0-43"})
    assert part.status_code == 206 and len(part.data) == 44       # the player can seek
    r = admin.get(f"/recordings/file?key={KEY}&side=callee&download=1")
    assert r.headers["Content-Disposition"].startswith("attachment")


def test_recordings_are_served_only_to_administrators_and_only_from_their_folder(app, admin, data):
    record_call(data)
    (data / "config.json").exists()
    url = f"/recordings/file?key={KEY}&side=caller"
    assert app.test_client().get(url).status_code == 302                    # log in first
    ConfigStore(data).add_extension("201", "Ann")
    assert user_client(app, "201").get(url).status_code == 403
    for key in ("../config", "20261120/../../config", "/etc/passwd", "20261120/x/../../webui/secret-key"):
        assert admin.get(f"/recordings/file?key={key}&side=caller").status_code == 404


def test_old_recordings_get_world_readable_bits_removed_when_listed(admin, data):
    paths = record_call(data)
    os.chmod(paths[0], 0o644)
    admin.get("/recordings")
    assert stat.S_IMODE(paths[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(paths[0].parent.stat().st_mode) == 0o700


def test_deleting_a_recording_asks_first_then_removes_both_files(admin, data, app):
    paths = record_call(data)
    confirm = admin.get(f"/recordings/delete?key={KEY}")
    assert confirm.status_code == 200 and "Delete recording" in confirm.text
    assert all(p.exists() for p in paths)
    r = post(admin, f"/recordings/delete?key={KEY}")
    assert r.status_code == 302 and r.location.endswith("/recordings")
    assert not any(p.exists() for p in paths)
    assert app.extensions["pbx.accounts"].audit_log(1)[0].event == "recording_deleted"
    assert post(admin, f"/recordings/delete?key={KEY}").status_code == 404


def test_retention_selects_files_older_than_the_period_and_zero_keeps_everything():
    now = 1_000 * 86400.0
    files = [("new", now - 86400), ("edge", now - 30 * 86400 + 1), ("old", now - 31 * 86400)]
    assert expired(files, now, 30) == ["old"]
    assert expired(files, now, 0) == []


def test_opening_the_recordings_page_deletes_recordings_past_the_retention_period(admin, data):
    old = record_call(data, "20261001/20261001-090000-201-202-1", age_days=40)
    new = record_call(data, "20261120/20261120-090000-201-202-2", age_days=1)
    ConfigStore(data).update_settings(recording_retention_days=30)
    page = admin.get("/recordings").text
    assert not any(p.exists() for p in old) and not old[0].parent.exists()
    assert all(p.exists() for p in new)
    assert "1 recorded call" in page and "older than 30 days are deleted" in page
    assert delete_expired(data, 30) == []
