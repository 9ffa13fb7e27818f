"""Music on hold: the class model (pure), uploads converted by ffmpeg, one shared stream per class,
and the web page (upload, listen, delete, refusals)."""
import asyncio
import random
import re
import socket
import subprocess

import numpy as np
import pytest
import uvloop

from firmware.config import ConfigStore, ValidationError
from firmware.features import moh as model
from services.media import moh as files
from services.media.wavfile import read_wav, write_wav
from tests.browser.webui_env import admin_client, make_app, post
from tests.pbxproc import free_rtp_range


def dominant_hz(pcm: bytes, rate: int = 8000) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def make_audio(path, hz=600, seconds=3, rate=44100, channels=2):
    """A real encoded file made by ffmpeg itself (MP3, OGG, FLAC, M4A by the path's suffix)."""
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                    f"sine=frequency={hz}:duration={seconds}:sample_rate={rate}", "-ac", str(channels),
                    "-y", str(path)], check=True, timeout=60)
    return path


# --- the model ---------------------------------------------------------------------------------
def test_the_class_a_held_party_hears_is_its_route_then_the_holders_extension_then_default():
    table = {"sales": model.MohClass("sales", extensions=("1001",)),
             "lobby": model.MohClass("lobby", routes=("01632960000",))}
    assert model.class_for(table, route="01632960000", extension="1001") == "lobby"
    assert model.class_for(table, extension="1001") == "sales"
    assert model.class_for(table, extension="1002") == "default"
    assert model.class_for({}, route="999") == "default"
    assert [c.name for c in model.classes(table)] == ["default", "lobby", "sales"]


def test_a_shuffled_class_plays_every_file_once_per_pass_and_an_ordered_one_in_order():
    cls = model.MohClass("x", order="shuffle", files=tuple(f"t{i}.wav" for i in range(8)))
    first, second = model.playlist(cls, random.Random(1)), model.playlist(cls, random.Random(2))
    assert sorted(first) == sorted(cls.files) and first != second
    assert model.playlist(model.MohClass("y", files=("b.wav", "a.wav"))) == ["b.wav", "a.wav"]


def test_bad_classes_are_refused_naming_the_field_and_the_fix(tmp_path):
    store = ConfigStore(tmp_path)
    store.add_extension("1000", "Reception")
    for record, field, words in (
            (model.MohClass("Sales Team"), "name", "lower-case"),
            (model.MohClass("a", order="random"), "order", "order, shuffle"),
            (model.MohClass("a", files=("../x.wav",)), "files", "file name"),
            (model.MohClass("a", extensions=("12a",)), "extensions", "extension number"),
            (model.MohClass("a", extensions=("1999",)), "extensions", "no extension 1999")):
        with pytest.raises(ValidationError) as e:
            store.add_record(model.TABLE, record)
        assert e.value.field == field and words in str(e.value), str(e.value)
    store.add_record(model.TABLE, model.MohClass("sales", extensions=("1000",)))
    assert store.record(model.TABLE, "sales").extensions == ("1000",)
    with pytest.raises(ValidationError, match="music on hold class"):
        store.remove_extension("1000")           # still named by the class
    clash = model.conflicts(model.MohClass("other", extensions=("1000",)),
                            {c.name: c for c in store.records(model.TABLE)})
    assert clash and "already in class 'sales'" in clash[0].message


def test_upload_names_and_sizes_are_checked_before_any_conversion():
    assert model.upload_error("tune.MP3", 1000) is None
    assert "not an audio file" in model.upload_error("report.pdf", 1000)
    assert "is empty" in model.upload_error("a.wav", 0)
    assert "limit is 20 MB" in model.upload_error("a.flac", model.MAX_UPLOAD_BYTES + 1)
    assert model.file_name_for("../../My Song (live).mp3", ["My-Song-live.wav"]) == "My-Song-live-2.wav"


# --- conversion ----------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", ["mp3", "ogg", "flac", "m4a", "wav"])
def test_an_upload_becomes_8khz_mono_16bit_wav_at_hold_music_loudness(tmp_path, suffix):
    src = make_audio(tmp_path / f"song.{suffix}", hz=600, seconds=3)
    dst = tmp_path / "out" / "song.wav"
    seconds = files.convert(src, dst)
    raw = dst.read_bytes()
    assert raw[:4] == b"RIFF" and int.from_bytes(raw[22:24], "little") == 1          # mono
    assert int.from_bytes(raw[24:28], "little") == 8000 and int.from_bytes(raw[34:36], "little") == 16
    assert 2.9 < seconds < 3.1
    pcm = read_wav(dst)
    assert abs(dominant_hz(pcm[8000:24000]) - 600) < 10
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    rms_dbfs = 20 * np.log10(np.sqrt(np.mean(x[4000:-4000] ** 2)) / 32768)
    assert -26 < rms_dbfs < -14, rms_dbfs                     # normalised, whatever the source level


def test_a_quiet_and_a_loud_upload_come_out_at_the_same_loudness(tmp_path):
    levels = []
    for gain in (0.02, 0.9):
        t = np.arange(8000 * 3) / 8000
        src = tmp_path / f"in-{gain}.wav"
        write_wav(src, (np.sin(2 * np.pi * 440 * t) * gain * 32767).astype("<i2").tobytes())
        files.convert(src, tmp_path / f"out-{gain}.wav")
        x = np.frombuffer(read_wav(tmp_path / f"out-{gain}.wav"), dtype="<i2").astype(np.float64)[4000:-4000]
        levels.append(20 * np.log10(np.sqrt(np.mean(x ** 2)) / 32768))
    assert abs(levels[0] - levels[1]) < 2, levels


def test_what_is_not_audio_is_refused_with_the_reason(tmp_path):
    fake = tmp_path / "notes.mp3"
    fake.write_bytes(b"Meeting notes: not a song at all\n" * 50)
    with pytest.raises(files.ConversionError, match="not in an audio format"):
        files.convert(fake, tmp_path / "x.wav", label="notes.mp3")
    video = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=duration=1",
                    "-y", str(video)], check=True, timeout=60)
    with pytest.raises(files.ConversionError, match="no audio stream"):
        files.convert(video, tmp_path / "y.wav")
    assert not list(tmp_path.glob("*.wav")) and not list(tmp_path.glob(".upload-*"))


# --- one stream per class -------------------------------------------------------------------------
def test_every_listener_of_a_class_gets_the_same_frame_made_once_per_tick(tmp_path):
    from services.callsvc.media import MediaEngine
    from services.callsvc.moh import MohService

    cls_dir = files.class_dir(tmp_path, "sales")
    cls_dir.mkdir(parents=True)
    t = np.arange(8000 * 2) / 8000
    write_wav(cls_dir / "a.wav", (np.sin(2 * np.pi * 600 * t) * 8000).astype("<i2").tobytes())

    class View:
        def table(self, name):
            return {"sales": model.MohClass("sales", files=("a.wav",), extensions=("1001",))}

    class Store:
        data_dir = tmp_path

    async def run():
        engine = MediaEngine("127.0.0.1", free_rtp_range(40))

        class Svc:
            media, view, store = engine, View(), Store()

        service = MohService(Svc())
        phones, channels = [], []
        for _ in range(10):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            leg = await engine.open_leg()
            leg.set_remote(sock.getsockname())
            phones.append(sock)
            channels.append(_Channel(leg))
        for ch in channels:
            assert service.listen(ch, "sales") == "sales"
        await asyncio.sleep(0.5)
        stream = service.streams["sales"]
        made, ticks, listeners = stream.frames_made, engine.ticks, stream.listeners
        service.unlisten(channels[0])
        await asyncio.sleep(0)
        left = stream.listeners
        for ch in channels:
            engine.close_leg(ch.rtp)
        engine.close()
        heard = []
        for sock in phones:
            got = []
            while True:
                try:
                    got.append(sock.recv(2048))
                except BlockingIOError:
                    break
            sock.close()
            heard.append(got)
        return made, ticks, listeners, left, heard

    made, ticks, listeners, left, heard = uvloop.run(run())
    assert listeners == 10 and left == 9
    assert made <= ticks + 1 and made >= 15          # once per tick, not once per listener
    payloads = [[p[12:] for p in got[:15]] for got in heard]
    assert all(len(p) == 15 for p in payloads)
    assert all(p == payloads[0] for p in payloads)   # everyone hears the same stream, in step
    from firmware.dsp import g711
    pcm = b"".join(g711.decoder("PCMU")(p) for p in payloads[0][2:14])
    assert abs(dominant_hz(pcm) - 600) < 15


class _Session:
    n, dst, who, caller = 1, "1001", None, None


class _Channel:
    number = "1000"

    def __init__(self, leg):
        self.rtp, self.session, self.is_gone = leg, _Session(), False


# --- the web page -----------------------------------------------------------------------------------
@pytest.fixture
def web(tmp_path):
    data = tmp_path / "data"
    app = make_app(data)
    return admin_client(app, data), data


def test_an_uploaded_mp3_is_converted_listed_playable_and_deletable(web, tmp_path):
    client, data = web
    assert "Music on hold" in client.get("/moh").text
    mp3 = make_audio(tmp_path / "Our Jingle.mp3", hz=600, seconds=90)     # > 1 MB: the upload limit is raised here
    assert mp3.stat().st_size > 1024 * 1024
    with open(mp3, "rb") as f:
        r = post(client, "/moh/default/upload", {"file": (f, "Our Jingle.mp3")},
                 content_type="multipart/form-data", follow_redirects=True)
    assert r.status_code == 200 and "Our Jingle.mp3 added to default as Our-Jingle.wav" in r.text, r.text
    assert ConfigStore(data).record(model.TABLE, "default").files == ("Our-Jingle.wav",)
    src = re.search(r'<audio controls preload="none" src="([^"]+)"', r.text).group(1).replace("&amp;", "&")
    audio = client.get(src)
    assert audio.status_code == 200 and audio.mimetype == "audio/wav" and audio.data[:4] == b"RIFF"
    assert abs(dominant_hz(read_wav(files.class_dir(data, "default") / "Our-Jingle.wav")[8000:40000]) - 600) < 10
    r = post(client, "/moh/default/file/delete?file=Our-Jingle.wav", follow_redirects=True)
    assert "Our-Jingle.wav deleted from default" in r.text
    assert not (files.class_dir(data, "default") / "Our-Jingle.wav").exists()
    assert ConfigStore(data).record(model.TABLE, "default").files == ()


def test_uploads_that_are_not_audio_or_too_large_are_refused_with_the_reason(web, tmp_path):
    client, data = web
    r = post(client, "/moh/new", {"name": "sales", "order": "shuffle", "extensions": "", "routes": "01632960000"},
             follow_redirects=True)
    assert "Music on hold class sales created" in r.text
    for name, body, reason in (("minutes.mp3", b"not music\n" * 100, "not in an audio format"),
                               ("setup.exe", b"MZ" + b"\0" * 100, "not an audio file")):
        from io import BytesIO
        r = post(client, "/moh/sales/upload", {"file": (BytesIO(body), name)},
                 content_type="multipart/form-data", follow_redirects=True)
        assert f"Not added: &#39;{name}&#39;" in r.text and reason in r.text, r.text
    from io import BytesIO
    big = BytesIO(b"\0" * (model.MAX_UPLOAD_BYTES + 200 * 1024))
    r = post(client, "/moh/sales/upload", {"file": (big, "huge.wav")}, content_type="multipart/form-data")
    assert r.status_code == 413 and "20 MB" in r.text
    assert ConfigStore(data).record(model.TABLE, "sales").files == ()
    # elsewhere the app's 1 MB limit stands
    r = post(client, "/moh/new", {"name": "x", "description": "y" * (1024 * 1024 + 10)})
    assert r.status_code == 413


def test_classes_are_created_edited_and_deleted_but_default_stays(web):
    client, data = web
    ConfigStore(data).add_extension("1001", "Sales")
    r = post(client, "/moh/new", {"name": "sales", "order": "order", "extensions": "1001"}, follow_redirects=True)
    assert r.status_code == 200
    r = post(client, "/moh/new", {"name": "other", "order": "order", "extensions": "1001"})
    assert r.status_code == 400 and "already in class" in r.text
    r = post(client, "/moh/sales", {"order": "shuffle", "extensions": "1001", "routes": "", "description": "Sales"},
             follow_redirects=True)
    assert ConfigStore(data).record(model.TABLE, "sales").order == "shuffle"
    assert post(client, "/moh/default/delete").status_code == 400
    r = post(client, "/moh/sales/delete", follow_redirects=True)
    assert "Music on hold class sales deleted" in r.text
    assert ConfigStore(data).record(model.TABLE, "sales") is None
    assert client.get("/moh/nope").status_code == 404


def test_a_caller_from_a_trunk_hears_the_class_of_the_inbound_route_it_came_in_on(tmp_path):
    from firmware.config.routing import InboundRoute
    from firmware.dialplan import Caller, ConfigView
    from services.callsvc.moh import MohService

    view = ConfigView.of(inbound_routes=[InboundRoute("441632960000", "extension:1001", match_national=True)],
                         records={model.TABLE: [model.MohClass("lobby", routes=("441632960000",)),
                                                model.MohClass("sales", extensions=("1001",))]})

    class Session:
        n, dst, who = 1, "01632960000", Caller("trunk", "carrier", number="07700900123")

    class Ch:
        number = "07700900123"

        def __init__(self, session):
            self.session = session

    class Svc:
        pass

    svc = Svc()
    svc.view = view
    held, holder = Ch(Session()), Ch(Session())
    held.session.caller = held
    holder.number = "1001"
    service = MohService(svc)
    assert service.class_for(held, holder) == "lobby"      # the route's class, in its national form too
    holder.session.caller = held                           # the extension's own leg: not the trunk caller
    assert service.class_for(holder, holder) == "sales"


def test_hostile_upload_names_and_values_are_refused_not_crashed_on(web):
    from io import BytesIO
    client, data = web
    for name in ("a\x00.mp3", "../../x.wav", "song.mp3\x00.exe", "ü" * 300 + ".ogg"):
        r = post(client, "/moh/default/upload", {"file": (BytesIO(b"not audio"), name)},
                 content_type="multipart/form-data", follow_redirects=True)
        assert r.status_code == 200 and "Not added:" in r.text, name
    for value in ("../../etc/passwd", "\x00", "x" * 500):
        assert client.get("/moh/default/file", query_string={"file": value}).status_code == 404
        assert post(client, "/moh/new", {"name": value, "order": value}).status_code == 400
    assert not list(files.moh_dir(data).rglob("*.wav"))      # nothing half-converted left behind


def test_a_class_stream_plays_its_files_one_after_another_and_starts_over(tmp_path):
    from services.callsvc.moh import MohStream

    cls_dir = files.class_dir(tmp_path, "sales")
    cls_dir.mkdir(parents=True)
    t = np.arange(800) / 8000                                   # 0.1 s = 5 frames each
    for name, hz in (("a.wav", 600), ("b.wav", 1000)):
        write_wav(cls_dir / name, (np.sin(2 * np.pi * hz * t) * 8000).astype("<i2").tobytes())

    class Engine:
        ticks = 0

    engine = Engine()
    stream = MohStream(engine, model.MohClass("sales", files=("a.wav", "b.wav")), tmp_path)
    heard = []
    for tick in range(20):
        engine.ticks = tick
        frame = stream.current()
        assert stream.current() is frame                          # a second listener, same tick
        heard.append(round(dominant_hz(bytes(frame)) / 100) * 100)
    assert heard == [600] * 5 + [1000] * 5 + [600] * 5 + [1000] * 5
    assert stream.frames_made == 20
