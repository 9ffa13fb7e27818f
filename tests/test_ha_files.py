"""Failover pair: voicemail and recordings shipped to the standby without loss (issue 14, item 2).

The unit tests drive the standby's side (services/ha/files.py FileMirror) with the frames the
active box sends; the e2e test runs two real PBXes in network namespaces: a message left on A
(written the way the voicemail flow writes it) and a call recording are on B after a power cut
of A, listed with their caller and playable from B's web UI; a message deleted on A is gone on B.
"""
from __future__ import annotations

import hashlib
import os
import time

import numpy as np
import pytest

from firmware.features import voicemail as vm
from services.ha import files
from services.media.wavfile import RATE, read_wav, write_wav
from services.voicemail import VoicemailStore
from tests.hanet import OfficeLan, PbxPair, wait_for


def _tone(seconds: float, hz: int = 700) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * hz * t) * 8000).astype("<i2").tobytes()


def _ship(src, mirror: files.FileMirror, rel: str, *, drop: int | None = None) -> dict:
    """What the active box's Replicator sends for one file, chunk by chunk (drop: skip that chunk)."""
    size, mtime_ns = files.scan(src)[rel]
    answer = {}
    for n, (offset, data, sha) in enumerate(files.read_chunks(src, rel)):
        if n == drop:
            continue
        answer = mirror.chunk(files.chunk_frame(rel, size, mtime_ns, offset, data, sha))
        if answer.get("stored") or answer.get("restart"):
            return answer
    return answer


def test_a_file_arrives_whole_with_its_mtime_or_not_at_all(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "CHUNK", 4096)
    a, b = tmp_path / "a", tmp_path / "b"
    rec = a / "recordings" / "20261128" / "20261128-140000-1000-1001-7-caller.wav"
    rec.parent.mkdir(parents=True)
    write_wav(rec, _tone(1.5))                      # 24 kB: six chunks
    rel = rec.relative_to(a).as_posix()
    mirror = files.FileMirror(b)
    # a chunk lost on the way: refused at the next one, nothing in place, the sender starts over
    assert _ship(a, mirror, rel, drop=2) == {"restart": True}
    assert not (b / rel).exists()
    assert _ship(a, mirror, rel) == {"stored": rel}
    assert (b / rel).read_bytes() == rec.read_bytes()
    assert (b / rel).stat().st_mtime_ns == rec.stat().st_mtime_ns
    assert files.scan(b) == files.scan(a)
    assert mirror.listing()[rel][2] == 1                       # held from the peer
    assert not list((b / "ha" / "incoming").iterdir())        # no part file left
    # a frame whose content does not match its digest is refused
    size, mtime_ns = files.scan(a)[rel]
    bad = files.chunk_frame(rel, 3, mtime_ns, 0, b"abc", hashlib.sha256(b"abd").hexdigest())
    assert mirror.chunk(bad) == {"restart": True} and (b / rel).read_bytes() == rec.read_bytes()


@pytest.mark.parametrize("rel", ["../config.json", "voicemail/../../etc/passwd", "/etc/passwd", "config.json",
                                 "voicemail/messages.sqlite", "voicemail/1000/rec-1-2.wav", "ha/files.json",
                                 "recordings//x.wav", ""])
def test_a_path_outside_voicemail_and_recordings_is_refused(tmp_path, rel):
    with pytest.raises(ValueError, match="refused"):
        files.FileMirror(tmp_path).chunk(files.chunk_frame(rel, 1, 0, 0, b"x", hashlib.sha256(b"x").hexdigest()))
    assert not (tmp_path / "etc").exists()


def test_deletions_reach_only_files_held_from_the_peer(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "voicemail" / "1000").mkdir(parents=True)
    for name in ("m1.wav", "m2.wav"):
        write_wav(a / "voicemail" / "1000" / name, _tone(0.2))
    mirror = files.FileMirror(b)
    assert _ship(a, mirror, "voicemail/1000/m1.wav")["stored"]
    # B's own file (written while B was active, not shipped yet) and one it has just like A
    write_wav(b / "voicemail" / "1000" / "own.wav", _tone(0.2))
    (b / "voicemail" / "1000" / "m2.wav").write_bytes((a / "voicemail" / "1000" / "m2.wav").read_bytes())
    st = (a / "voicemail" / "1000" / "m2.wav").stat()
    os.utime(b / "voicemail" / "1000" / "m2.wav", ns=(st.st_mtime_ns, st.st_mtime_ns))
    assert mirror.listing()["voicemail/1000/m2.wav"][2] == 0
    assert mirror.confirm({"voicemail/1000/m2.wav": list(files.scan(a)["voicemail/1000/m2.wav"])}) == {"confirmed": 1}
    assert mirror.delete(["voicemail/1000/m1.wav", "voicemail/1000/m2.wav", "voicemail/1000/own.wav"]) \
        == {"deleted": 2}
    assert sorted(p.name for p in (b / "voicemail" / "1000").iterdir()) == ["own.wav"]


def test_the_voicemail_index_travels_as_rows_after_the_files(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    store_a = VoicemailStore(a)
    for n, who in enumerate(("1001", "1002", "1003")):
        rec = store_a.recording_path("1000")
        write_wav(rec, _tone(0.5 + n / 4))
        store_a.add("1000", rec, who, f"Caller {who}", 1000.0 + n, 0.5 + n / 4)
    msgs = store_a.messages("1000")
    store_a.mark("1000", msgs[0].id, "old")
    store_a.delete("1000", msgs[1].id)
    # B had an older index: it is replaced, not merged
    store_b = VoicemailStore(b)
    rec = store_b.recording_path("1000")
    write_wav(rec, _tone(0.2))
    store_b.add("1000", rec, "9999", "Stale", 1.0, 0.2)
    assert files.store_voicemail_rows(b, files.voicemail_rows(a)) == 2
    assert store_b.messages("1000") == store_a.messages("1000")
    assert store_b.counts("1000") == (1, 1)
    # the next message on B (after a takeover) gets a fresh id, not one of A's
    rec = store_b.recording_path("1000")
    write_wav(rec, _tone(0.2))
    assert store_b.add("1000", rec, "1004", "", 2000.0, 0.2).id == max(m.id for m in msgs) + 1


def _seed(store):
    from firmware.features.voicemail import Mailbox
    store.add_extension("1000", "Ann", secret="Ann-ha-1000-secret")
    store.add_extension("1001", "Bob", secret="Bob-ha-1001-secret")
    store.add_record(vm.TABLE, Mailbox("1000", generated_pin="123456"))


@pytest.mark.e2e
def test_voicemail_and_recordings_left_on_the_primary_are_on_the_backup_after_a_power_cut(tmp_path):
    with OfficeLan() as lan, PbxPair(lan, tmp_path, seed=_seed) as pair:
        pair.wait_ready()
        a, b = pair.data["a"], pair.data["b"]
        # a message left on A the way the voicemail flow leaves one: recorded, then indexed
        store_a = VoicemailStore(a)
        pcm = _tone(3.0)
        kept = []
        for who in ("1001", "0301234567"):
            rec = store_a.recording_path("1000")
            write_wav(rec, pcm)
            kept.append(store_a.add("1000", rec, who, "Bob" if who == "1001" else "", time.time(), 3.0))
        gone = kept.pop()
        store_a.mark("1000", kept[0].id, "old")
        # a call recording of 70 s (1.1 MB: two chunks), written in place as a call does
        day = a / "recordings" / time.strftime("%Y%m%d")
        day.mkdir(parents=True)
        recording = day / f"{time.strftime('%Y%m%d-%H%M%S')}-1000-1001-1-caller.wav"
        write_wav(recording, _tone(70.0, 440))
        began = time.monotonic()

        def on_b():
            msgs = VoicemailStore(b).messages("1000")
            return len(msgs) == 2 and all((b / "voicemail" / "1000" / m.file).exists() for m in msgs) \
                and (b / recording.relative_to(a)).exists()
        wait_for("the messages and the recording on the standby", on_b, 20)
        print(f"voicemail and recording on the standby {(time.monotonic() - began) * 1000:.0f} ms after writing")
        # a deletion on A reaches B (message file and index row)
        store_a.delete("1000", gone.id)
        wait_for("the deleted message gone on the standby",
                 lambda: not (b / "voicemail" / "1000" / gone.file).exists()
                 and [m.id for m in VoicemailStore(b).messages("1000")] == [kept[0].id], 20)
        from services.control import query
        status = query(str(b), "ha")              # the running PBX's failover status
        assert status["replication"]["file_received"] and status["replication"]["voicemail_index_received"]
        assert status["files_stored"] >= 3 and status["files_deleted"] == 1

        lan.power_cut(lan.box_a)
        wait_for("the backup to take over", lambda: pair.state("b") == "MASTER", 15)
        msgs = VoicemailStore(b).messages("1000")
        assert [(m.id, m.caller_number, m.caller_name, m.status) for m in msgs] == \
            [(kept[0].id, "1001", "Bob", "old")]
        assert read_wav(VoicemailStore(b).file_of(msgs[0])) == pcm
        assert (b / recording.relative_to(a)).read_bytes() == recording.read_bytes()
        # playable from the web UI of the box that now serves
        from tests.browser.webui_env import admin_client, make_app
        app = make_app(b)
        admin = admin_client(app, b)
        r = admin.get(f"/voicemail/1000/{kept[0].id}/audio")
        assert r.status_code == 200 and r.mimetype == "audio/wav"
        assert read_wav_bytes(r.data) == pcm
        # the box that took over stores its own messages under fresh ids
        store_b = VoicemailStore(b)
        rec = store_b.recording_path("1000")
        write_wav(rec, pcm)
        assert store_b.add("1000", rec, "1001", "Bob", time.time(), 3.0).id > gone.id


def read_wav_bytes(raw: bytes) -> bytes:
    from services.media.wavfile import parse_wav
    return parse_wav(raw, "the served message")
