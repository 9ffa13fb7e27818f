"""Specs for services/media: WAV reading/writing and the generated spoken prompts."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from firmware.dsp.detect import detect_dtmf, dominant_frequency
from firmware.dsp.levels import power_to_dbm0
from services.media import prompts
from services.media.wavfile import WavWriter, read_wav, resample, write_wav

REPO = Path(__file__).resolve().parents[1]


def sox(*args: str) -> None:
    subprocess.run(["sox", *args], check=True, capture_output=True, timeout=60)


def samples(data: bytes) -> np.ndarray:
    return np.frombuffer(data, "<i2").astype(np.float64)


def wav_params(path: Path) -> tuple[int, int, int, int]:
    with wave.open(str(path)) as w:
        return w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()


# --- reading WAV files -------------------------------------------------------------------

def test_a_44k1_stereo_24_bit_wav_becomes_8k_mono_16_bit(tmp_path):
    src = tmp_path / "hifi.wav"
    sox("-n", "-r", "44100", "-c", "2", "-b", "24", str(src), "synth", "1.5", "sine", "1000", "vol", "0.5")
    audio = read_wav(src)
    x = samples(audio)
    assert x.size == 12000
    assert dominant_frequency(audio) == pytest.approx(1000, abs=1)
    middle = x[2000:10000]
    assert np.abs(middle).max() == pytest.approx(0.5 * 32768, rel=0.02)


def test_content_above_4_khz_is_filtered_out_not_aliased(tmp_path):
    src = tmp_path / "whistle.wav"
    sox("-n", "-r", "48000", "-c", "1", "-b", "16", str(src), "synth", "1", "sine", "5000")
    x = samples(read_wav(src))
    # A 5 kHz tone would alias to 3 kHz at 8 kHz without the anti-alias roll-off.
    assert power_to_dbm0(np.mean(x[800:-800] ** 2)) < -50


def test_long_files_are_resampled_in_blocks_without_seams():
    rng = np.random.default_rng(7)
    x = rng.normal(0, 0.1, 44100 * 5)
    whole = resample(x, 44100, 8000, block_s=60)
    blocked = resample(x, 44100, 8000, block_s=1)
    assert blocked.size == whole.size == 40000
    assert np.abs(blocked - whole).max() < 1e-6
    # No timing drift: a 1 kHz sine lands on the exact 8 kHz sine, to the last sample.
    t = np.arange(44100 * 5) / 44100
    ideal = np.sin(2 * np.pi * 1000 * np.arange(40000) / 8000)
    assert np.abs(resample(np.sin(2 * np.pi * 1000 * t), 44100, 8000, block_s=1) - ideal)[100:-100].max() < 1e-4


@pytest.mark.parametrize("sox_format", [
    ["-r", "8000", "-b", "8", "-e", "unsigned-integer"],
    ["-r", "16000", "-e", "u-law"],
    ["-r", "11025", "-e", "a-law", "-c", "2"],
    ["-r", "22050", "-b", "32", "-e", "floating-point"],
    ["-r", "8000", "-b", "16", "-c", "4"],
])
def test_common_wav_encodings_read_as_the_same_tone(tmp_path, sox_format):
    src = tmp_path / "in.wav"
    sox("-n", *sox_format, str(src), "synth", "0.5", "sine", "700")
    audio = read_wav(src)
    assert len(audio) == 2 * 4000
    assert dominant_frequency(audio) == pytest.approx(700, abs=2)
    assert np.abs(samples(audio)).max() > 15000


def test_a_file_that_is_not_a_wav_is_named_in_the_error(tmp_path):
    bogus = tmp_path / "greeting.mp3"
    bogus.write_bytes(b"ID3\x03\x00" + bytes(500))
    with pytest.raises(ValueError, match=r"greeting\.mp3 is not a WAV file.*sox"):
        read_wav(bogus)


def test_an_empty_file_or_empty_wav_is_named_in_the_error(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.wav is empty"):
        read_wav(empty)
    no_audio = tmp_path / "no_audio.wav"
    write_wav(no_audio, b"")
    with pytest.raises(ValueError, match=r"no_audio\.wav holds no audio"):
        read_wav(no_audio)


def test_an_unsupported_encoding_says_how_to_convert(tmp_path):
    src = tmp_path / "adpcm.wav"
    sox("-n", "-r", "8000", "-e", "ima-adpcm", str(src), "synth", "0.2", "sine", "500")
    with pytest.raises(ValueError, match=r"adpcm\.wav uses WAV format 0x11.*16-bit PCM"):
        read_wav(src)


# --- writing WAV files -------------------------------------------------------------------

def test_write_wav_is_a_standard_8k_mono_16_bit_file_and_round_trips(tmp_path):
    audio = np.round(8000 * np.sin(np.arange(8000) * 0.3)).astype("<i2").tobytes()
    out = tmp_path / "out.wav"
    write_wav(out, audio)
    assert wav_params(out) == (1, 2, 8000, 8000)
    assert read_wav(out) == audio
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]  # no temp file left
    assert out.stat().st_mode & 0o777 == 0o644


def test_write_wav_replaces_a_file_atomically(tmp_path):
    out = tmp_path / "prompt.wav"
    write_wav(out, bytes(320))
    inode = out.stat().st_ino
    write_wav(out, b"\x01\x00" * 160)
    assert out.stat().st_ino != inode  # a new file renamed over the old one, never rewritten in place
    assert read_wav(out) == b"\x01\x00" * 160


def test_wav_writer_streams_frames_and_publishes_the_file_only_on_close(tmp_path):
    out = tmp_path / "voicemail.wav"
    frame = np.round(3000 * np.sin(np.arange(160) * 2 * math.pi * 400 / 8000)).astype("<i2").tobytes()
    with WavWriter(out) as rec:
        for _ in range(150):
            rec.write(frame)
        assert not out.exists()
        partial = [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
        assert len(partial) == 1
        # A recording cut off by a crash is still readable up to what reached the disk: the
        # header still says 0 bytes and the reader then takes the data to the end of the file.
        salvaged = read_wav(partial[0])
        assert len(salvaged) > len(frame) * 100 and salvaged == (frame * 150)[: len(salvaged)]
    assert rec.duration == pytest.approx(3.0)
    assert wav_params(out) == (1, 2, 8000, 24000)
    assert read_wav(out) == frame * 150
    assert [p.name for p in tmp_path.iterdir()] == ["voicemail.wav"]


def test_an_aborted_recording_leaves_nothing_behind(tmp_path):
    with pytest.raises(RuntimeError):
        with WavWriter(tmp_path / "rec.wav") as rec:
            rec.write(bytes(320))
            raise RuntimeError("caller hung up during the beep")
    assert list(tmp_path.iterdir()) == []


# --- prompts -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sounds(tmp_path_factory):
    out = tmp_path_factory.mktemp("sounds")
    lines: list[str] = []
    prompts.generate_prompts(out, progress=lines.append)
    assert len(lines) == len(prompts.PROMPTS)
    return out


def test_every_prompt_is_generated_as_8k_mono_16_bit_speech(sounds):
    for prompt_id, text in prompts.PROMPTS.items():
        path = prompts.prompt_path(prompt_id, sounds)
        channels, width, rate, frames = wav_params(path)
        assert (channels, width, rate) == (1, 2, 8000)
        # espeak-ng at 150 words per minute: about 0.4 s per word.
        assert 0.25 * len(text.split()) < frames / rate < 0.8 * len(text.split()) + 1
        x = samples(prompts.load_prompt(prompt_id, sounds))
        blocks = x[: x.size // 160 * 160].reshape(-1, 160)
        power = np.mean(blocks ** 2, axis=1)
        active = power[power > power.max() * 1e-4]
        assert power_to_dbm0(active.mean()) == pytest.approx(prompts.ACTIVE_LEVEL_DBM0, abs=1.0)
        assert np.abs(x).max() < 32000
        assert not x[:1600].any()  # lead-in silence so the first word is not clipped


def test_no_prompt_is_mistaken_for_a_dtmf_digit(sounds):
    for prompt_id in prompts.PROMPTS:
        assert detect_dtmf(prompts.load_prompt(prompt_id, sounds)) == ""


def test_load_prompt_reads_once_and_rereads_a_regenerated_file(sounds, tmp_path):
    assert prompts.load_prompt("busy", sounds) is prompts.load_prompt("busy", sounds)
    own = tmp_path / "own"
    own.mkdir()
    write_wav(own / "busy.wav", bytes(320))
    assert prompts.load_prompt("busy", own) == bytes(320)
    write_wav(own / "busy.wav", bytes(640))
    assert prompts.load_prompt("busy", own) == bytes(640)


def test_a_missing_prompt_says_to_run_make_prompts(tmp_path):
    with pytest.raises(FileNotFoundError, match="make prompts"):
        prompts.prompt_path("busy", tmp_path)
    with pytest.raises(ValueError, match="unknown prompt 'welcome'.*congestion"):
        prompts.prompt_path("welcome", tmp_path)


def test_the_command_is_idempotent_and_regenerates_only_changed_prompts(tmp_path):
    out = tmp_path / "sounds"
    cmd = [sys.executable, "-m", "services.media.prompts", "--out", str(out)]
    first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    assert first.stdout.count("generated") == len(prompts.PROMPTS)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.wav")}
    second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    assert second.stdout.count("up to date") == len(prompts.PROMPTS)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.wav")} == mtimes
    # A prompt whose wording changed (here: its recorded hash no longer matches) is redone.
    manifest_path = out / ".prompt-hashes.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["busy"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    third = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    assert third.stdout.count("generated") == 1 and "prompt busy: generated" in third.stdout


def test_the_sounds_folder_keeps_generated_files_out_of_git():
    ignore = (REPO / "services" / "media" / "sounds" / ".gitignore").read_text().split()
    assert "*.wav" in ignore and ".prompt-hashes.json" in ignore
